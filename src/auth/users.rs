//! Account administration: admins of a tenant over HTTP (always within their own
//! tenant, in the query itself), and the operator at the machine through the CLI.
//!
//! Any change of access ends the user's sessions: tokens carry roles and groups, so no
//! token with the old access may survive. The user is updated first, then the sessions
//! are revoked through the session store (no transaction spans the two stores); refresh
//! re-reads the user, so nothing in between can mint a token with the old access.

use serde::Serialize;

use super::password::hash_password;
use super::{ADMIN_ROLE, AuthError, AuthService, ClientInfo, Principal, valid_name};
use crate::access::Operator;
use crate::audit::{AuditEvent, AuditKind};
use crate::model::StoreError;
use crate::secret::{SecretString, new_id};
use crate::store::{NewUser, UserRecord};

/// A user as administrators see it: never the password hash.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UserView {
    pub id: String,
    pub username: String,
    pub tenant: String,
    pub roles: Vec<String>,
    pub groups: Vec<String>,
    pub disabled: bool,
}

impl From<UserRecord> for UserView {
    fn from(u: UserRecord) -> Self {
        Self {
            id: u.id,
            username: u.username,
            tenant: u.tenant,
            roles: u.roles,
            groups: u.groups,
            disabled: u.disabled,
        }
    }
}

/// A change of a user's access; absent fields stay as they are.
#[derive(Debug, Clone, Default)]
pub struct AccessChange {
    pub roles: Option<Vec<String>>,
    pub groups: Option<Vec<String>>,
    pub disabled: Option<bool>,
}

impl AccessChange {
    fn validate(&self) -> Result<(), AuthError> {
        let bad = self
            .roles
            .iter()
            .chain(self.groups.iter())
            .flatten()
            .any(|n| !valid_name(n));
        if bad {
            return Err(AuthError::Invalid("invalid role or group name"));
        }
        Ok(())
    }
}

/// A new local account, created by the operator.
pub struct NewAccount<'a> {
    pub username: &'a str,
    pub password: SecretString,
    pub tenant: &'a str,
    pub roles: Vec<String>,
    pub groups: Vec<String>,
}

fn require_admin(p: &Principal) -> Result<(), AuthError> {
    if p.has_role(ADMIN_ROLE) {
        Ok(())
    } else {
        Err(AuthError::Forbidden)
    }
}

impl AuthService {
    /// The users of the admin's own tenant.
    pub async fn list_users(&self, admin: &Principal) -> Result<Vec<UserView>, AuthError> {
        require_admin(admin)?;
        let users = self.users.list_users(Some(admin.tenant())).await?;
        Ok(users.into_iter().map(UserView::from).collect())
    }

    /// Changes roles, groups or the disabled flag of a user of the admin's tenant.
    /// Another tenant's user is not found, like an unknown one.
    pub async fn update_user(
        &self,
        admin: &Principal,
        user_id: &str,
        change: AccessChange,
        client: &ClientInfo,
    ) -> Result<UserView, AuthError> {
        require_admin(admin)?;
        change.validate()?;
        let user = self
            .users
            .user_by_id(admin.tenant(), user_id)
            .await?
            .ok_or(AuthError::NotFound)?;
        let updated = self.apply(user, change, admin.subject(), client).await?;
        Ok(updated.into())
    }

    /// The operator's `palisade user add`.
    pub async fn create_user(
        &self,
        _op: &Operator,
        a: NewAccount<'_>,
    ) -> Result<UserRecord, AuthError> {
        let names = [a.username, a.tenant]
            .into_iter()
            .chain(a.roles.iter().map(String::as_str))
            .chain(a.groups.iter().map(String::as_str));
        for name in names {
            if !valid_name(name) {
                return Err(AuthError::Invalid(
                    "names are 1-64 characters from [A-Za-z0-9_.@:-]",
                ));
            }
        }
        let pw = a.password;
        let hash = tokio::task::spawn_blocking(move || hash_password(&pw))
            .await
            .map_err(|_| AuthError::Mint)?
            .map_err(|_| AuthError::Mint)?;
        let rec = self
            .users
            .create_user(NewUser {
                id: new_id(),
                tenant: a.tenant.to_owned(),
                username: crate::access::canonical_username(a.username),
                password_hash: hash,
                roles: a.roles,
                groups: a.groups,
                now: self.clock.now_ms(),
            })
            .await
            .map_err(|e| match e {
                StoreError::Conflict(_) => AuthError::Invalid("that username is taken"),
                other => AuthError::Store(other),
            })?;
        self.audit
            .record(
                AuditEvent::new(AuditKind::UserCreated)
                    .tenant(&rec.tenant)
                    .subject(&rec.id)
                    .username(&rec.username)
                    .reason("cli"),
            )
            .await;
        Ok(rec)
    }

    /// Every user of every tenant, for the operator.
    pub async fn all_users(&self, _op: &Operator) -> Result<Vec<UserRecord>, AuthError> {
        Ok(self.users.list_users(None).await?)
    }

    /// The operator's `palisade user update|disable`, by username.
    pub async fn operator_update(
        &self,
        _op: &Operator,
        username: &str,
        change: AccessChange,
    ) -> Result<UserView, AuthError> {
        change.validate()?;
        let user = self
            .users
            .user_by_username(&crate::access::canonical_username(username))
            .await?
            .ok_or(AuthError::NotFound)?;
        let updated = self
            .apply(user, change, "cli", &ClientInfo::default())
            .await?;
        Ok(updated.into())
    }

    async fn apply(
        &self,
        user: UserRecord,
        change: AccessChange,
        actor: &str,
        client: &ClientInfo,
    ) -> Result<UserRecord, AuthError> {
        let (tenant, id) = (user.tenant.clone(), user.id.clone());
        let mut current = user;
        let access_changed = change.roles.is_some() || change.groups.is_some();
        if access_changed {
            current = self
                .users
                .update_access(&tenant, &id, change.roles, change.groups)
                .await?
                .ok_or(AuthError::NotFound)?;
            self.audit
                .record(
                    AuditEvent::new(AuditKind::UserAccessChanged)
                        .tenant(&tenant)
                        .subject(&id)
                        .username(&current.username)
                        .resource(actor)
                        .client(client),
                )
                .await;
        }
        if let Some(disabled) = change.disabled {
            current = self
                .users
                .set_disabled(&tenant, &id, disabled)
                .await?
                .ok_or(AuthError::NotFound)?;
            let kind = if disabled {
                AuditKind::UserDisabled
            } else {
                AuditKind::UserEnabled
            };
            self.audit
                .record(
                    AuditEvent::new(kind)
                        .tenant(&tenant)
                        .subject(&id)
                        .username(&current.username)
                        .resource(actor)
                        .client(client),
                )
                .await;
        }
        if access_changed || change.disabled == Some(true) {
            let reason = if change.disabled == Some(true) {
                "user_disabled"
            } else {
                "access_changed"
            };
            self.end_all_sessions(&tenant, &id, reason, client).await?;
        }
        Ok(current)
    }
}
