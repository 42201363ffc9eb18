//! Account administration: admins of a tenant over HTTP (always within their own
//! tenant, in the query itself), and the operator at the machine through the CLI.
//!
//! Any change of access ends the user's sessions: tokens carry roles and groups, so no
//! token with the old access may survive. The user is updated first, then the sessions
//! are revoked through the session store (no transaction spans the two stores); refresh
//! re-reads the user, so nothing in between can mint a token with the old access.

use serde::Serialize;

use super::password::hash_password;
use super::{ADMIN_ROLE, AuthError, AuthService, ClientInfo, Duty, Principal, valid_name};
use crate::access::Operator;
use crate::audit::{AuditEvent, AuditKind};
use crate::config::PrivilegedGrants;
use crate::model::StoreError;
use crate::secret::{SecretString, new_id};
use crate::store::{GrantApproval, GrantRecord, GrantRefusal, NewUser, UserRecord};

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

/// A proposal to grant a privileged role, as admins see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct GrantView {
    pub id: String,
    /// The user who would get the role.
    pub user_id: String,
    pub role: String,
    /// The admin who proposed it (a different admin must approve it).
    pub proposed_by: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339: unapproved by then, the proposal lapses.
    pub expires_at: String,
}

impl From<GrantRecord> for GrantView {
    fn from(g: GrantRecord) -> Self {
        Self {
            id: g.id,
            user_id: g.user_id,
            role: g.role,
            proposed_by: g.proposed_by,
            created_at: crate::timeutil::rfc3339(g.created_at),
            expires_at: crate::timeutil::rfc3339(g.expires_at),
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
        if user_id == admin.subject() && (change.roles.is_some() || change.groups.is_some()) {
            return Err(self
                .refuse_change(admin, user_id, Duty::OwnAccess, client)
                .await);
        }
        let user = self
            .users
            .user_by_id(admin.tenant(), user_id)
            .await?
            .ok_or(AuthError::NotFound)?;
        // A privileged role the user lacks is never added by one admin; removing one is.
        let added_privilege = change
            .roles
            .iter()
            .flatten()
            .any(|r| !user.roles.contains(r) && self.admin.is_privileged(r));
        if added_privilege {
            let rule = match self.admin.privileged_grants {
                PrivilegedGrants::TwoPerson => Duty::TwoPersonRule,
                PrivilegedGrants::IdpOnly => Duty::IdpOnly,
            };
            return Err(self.refuse_change(admin, user_id, rule, client).await);
        }
        let updated = self.apply(user, change, admin.subject(), client).await?;
        Ok(updated.into())
    }

    /// The first admin of the two-person rule proposes granting a privileged role.
    pub async fn propose_grant(
        &self,
        admin: &Principal,
        user_id: &str,
        role: &str,
        client: &ClientInfo,
    ) -> Result<GrantView, AuthError> {
        require_admin(admin)?;
        if !valid_name(role) {
            return Err(AuthError::Invalid("invalid role name"));
        }
        if !self.admin.is_privileged(role) {
            return Err(AuthError::Invalid(
                "not a privileged role: one admin sets it with PATCH /admin/users/{id}",
            ));
        }
        if self.admin.privileged_grants == PrivilegedGrants::IdpOnly {
            return Err(self
                .refuse_change(admin, user_id, Duty::IdpOnly, client)
                .await);
        }
        if user_id == admin.subject() {
            return Err(self
                .refuse_change(admin, user_id, Duty::OwnAccess, client)
                .await);
        }
        let user = self
            .users
            .user_by_id(admin.tenant(), user_id)
            .await?
            .ok_or(AuthError::NotFound)?;
        if user.roles.iter().any(|r| r == role) {
            return Err(AuthError::Invalid("the user has this role already"));
        }
        let now = self.clock.now_ms();
        let ttl = i64::try_from(self.admin.grant_ttl.as_millis()).unwrap_or(i64::MAX);
        let grant = GrantRecord {
            id: new_id(),
            tenant: user.tenant.clone(),
            user_id: user.id.clone(),
            role: role.to_owned(),
            proposed_by: admin.subject().to_owned(),
            created_at: now,
            expires_at: now.saturating_add(ttl),
        };
        self.users.propose_grant(grant.clone()).await?;
        self.grant_event(AuditKind::GrantProposed, &user, &grant, admin, client)
            .await;
        Ok(grant.into())
    }

    /// The proposals of the admin's tenant waiting for a second admin.
    pub async fn pending_grants(&self, admin: &Principal) -> Result<Vec<GrantView>, AuthError> {
        require_admin(admin)?;
        let grants = self
            .users
            .pending_grants(admin.tenant(), self.clock.now_ms())
            .await?;
        Ok(grants.into_iter().map(GrantView::from).collect())
    }

    /// The second admin approves a proposal: the role is the user's at once and the
    /// user's sessions end (their tokens carry the old roles).
    pub async fn approve_grant(
        &self,
        admin: &Principal,
        grant_id: &str,
        client: &ClientInfo,
    ) -> Result<UserView, AuthError> {
        require_admin(admin)?;
        if self.admin.privileged_grants == PrivilegedGrants::IdpOnly {
            return Err(self
                .refuse_change(admin, grant_id, Duty::IdpOnly, client)
                .await);
        }
        let outcome = self
            .users
            .approve_grant(
                admin.tenant(),
                grant_id,
                admin.subject(),
                self.clock.now_ms(),
            )
            .await?;
        let (user, grant) = match outcome {
            GrantApproval::Approved(done) => *done,
            GrantApproval::Refused(GrantRefusal::NotFound) => return Err(AuthError::NotFound),
            GrantApproval::Refused(why) => {
                let duty = match why {
                    GrantRefusal::Expired => Duty::Expired,
                    GrantRefusal::OwnProposal => Duty::OwnProposal,
                    _ => Duty::OwnAccess,
                };
                return Err(self.refuse_change(admin, grant_id, duty, client).await);
            }
        };
        self.grant_event(AuditKind::GrantApproved, &user, &grant, admin, client)
            .await;
        self.end_all_sessions(&user.tenant, &user.id, "access_changed", client)
            .await?;
        if user.service.is_some() {
            self.forget_keys_of(&user.tenant, &user.id).await?;
        }
        Ok(user.into())
    }

    /// A grant proposed or approved: about the grantee, naming the proposal, by the
    /// admin's session.
    async fn grant_event(
        &self,
        kind: AuditKind,
        user: &UserRecord,
        grant: &GrantRecord,
        admin: &Principal,
        client: &ClientInfo,
    ) {
        self.audit
            .record(
                AuditEvent::new(kind)
                    .tenant(&user.tenant)
                    .subject(&user.id)
                    .username(&user.username)
                    .resource(&grant.id)
                    .session(admin.session_id())
                    .client(client),
            )
            .await;
    }

    /// Audits a change refused by separation of duties, and the error for it.
    pub(super) async fn refuse_change(
        &self,
        admin: &Principal,
        about: &str,
        duty: Duty,
        client: &ClientInfo,
    ) -> AuthError {
        let reason = match duty {
            Duty::OwnAccess => "own_access",
            Duty::TwoPersonRule => "two_person_rule",
            Duty::IdpOnly => "idp_only",
            Duty::OwnProposal => "own_proposal",
            Duty::Expired => "grant_expired",
        };
        // `about` is a path parameter: only its length-bounded form is recorded.
        let shown: String = about.chars().take(64).collect();
        self.audit
            .record(
                AuditEvent::new(AuditKind::AccessChangeRefused)
                    .by(admin)
                    .resource(shown)
                    .reason(reason)
                    .client(client),
            )
            .await;
        AuthError::Duty(duty)
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
                service: None,
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
            // The operator at the machine is the break-glass path: no second admin,
            // recorded as such.
            let via = if actor == "cli" {
                "break_glass"
            } else {
                "admin"
            };
            self.audit
                .record(
                    AuditEvent::new(AuditKind::UserAccessChanged)
                        .tenant(&tenant)
                        .subject(&id)
                        .username(&current.username)
                        .resource(actor)
                        .reason(via)
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
        // A service account's keys carry its access: they are read again everywhere.
        if current.service.is_some() && (access_changed || change.disabled.is_some()) {
            self.forget_keys_of(&tenant, &id).await?;
        }
        Ok(current)
    }
}
