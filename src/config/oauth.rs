//! `[oauth]`: palisade as the authorization server of its own resources (MCP clients).

use super::*;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OAuthConfig {
    /// A client registered dynamically that no user approved within this lapses.
    #[serde(with = "humantime_serde")]
    pub unapproved_client_ttl: Duration,
    /// An approved client that gets no token for this long lapses (its user approves it
    /// again, as a new registration).
    #[serde(with = "humantime_serde")]
    pub unused_client_ttl: Duration,
    /// How long an authorization code may wait to be redeemed.
    #[serde(with = "humantime_serde")]
    pub code_ttl: Duration,
    /// Client registrations per client address per hour.
    pub registrations_per_hour: u32,
}

impl Default for OAuthConfig {
    fn default() -> Self {
        Self {
            unapproved_client_ttl: Duration::from_secs(24 * 3600),
            unused_client_ttl: Duration::from_secs(90 * 24 * 3600),
            code_ttl: Duration::from_secs(60),
            registrations_per_hour: 10,
        }
    }
}

impl OAuthConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.code_ttl.is_zero() || self.code_ttl > Duration::from_secs(600) {
            return bad("oauth.code_ttl must be between 1s and 10m");
        }
        if self.unapproved_client_ttl < Duration::from_secs(60) {
            return bad("oauth.unapproved_client_ttl must be at least 1m");
        }
        if self.unused_client_ttl < Duration::from_secs(3600) {
            return bad("oauth.unused_client_ttl must be at least 1h");
        }
        if self.registrations_per_hour == 0 {
            return bad("oauth.registrations_per_hour must be at least 1");
        }
        Ok(())
    }
}
