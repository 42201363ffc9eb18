//! `[admin]`: separation of duties for access administration.

use super::*;

/// How roles named in `admin.privileged_roles` are granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PrivilegedGrants {
    /// One admin proposes (`POST /admin/grants`), a different admin approves within
    /// `admin.grant_ttl`.
    #[default]
    TwoPerson,
    /// Only from the identity provider's claims (`oidc.issuers[].role_map`): the admin
    /// API never grants them.
    IdpOnly,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Roles no single admin grants (`admin` is always one of them). Removing them
    /// needs one admin.
    pub privileged_roles: Vec<String>,
    pub privileged_grants: PrivilegedGrants,
    /// How long a proposed grant waits for its second admin.
    #[serde(with = "humantime_serde")]
    pub grant_ttl: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            privileged_roles: Vec::new(),
            privileged_grants: PrivilegedGrants::TwoPerson,
            grant_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

impl AdminConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.grant_ttl < Duration::from_secs(60)
            || self.grant_ttl > Duration::from_secs(30 * 86_400)
        {
            return bad("admin.grant_ttl must be between 1 minute and 30 days");
        }
        Ok(())
    }

    /// Whether granting `role` takes more than one admin.
    pub fn is_privileged(&self, role: &str) -> bool {
        role == "admin" || self.privileged_roles.iter().any(|r| r == role)
    }
}
