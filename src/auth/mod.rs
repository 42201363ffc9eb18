//! Credentials → [`Principal`].
//!
//! This is the only module that can make a `Principal`: its fields are private and its
//! constructor is visible to `auth` alone. Everything downstream (threads, retrieval)
//! takes `&Principal`, so a code path that skipped verification does not compile.

pub mod keys;
pub mod password;
pub mod sessions;
pub mod throttle;
pub mod tokens;

use std::net::IpAddr;
use std::sync::Arc;

use crate::audit::{Audit, AuditEvent, AuditKind};
use crate::config::Config;
use crate::error::ApiError;
use crate::secret::{RefreshToken, SecretString};
use crate::store::{
    NewSession, RotateOutcome, RotateRequest, SessionRecord, SessionStore, UserRecord, UserStore,
};
use crate::timeutil::{ms, now_ms};

use password::PasswordVerifierPool;
use sessions::{Liveness, SessionCache};
use throttle::Throttle;
use tokens::{AccessClaims, TokenRejection, TokenService};

/// A verified caller. Exists only after a token was verified and its session found live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    tenant: String,
    subject: String,
    username: String,
    roles: Vec<String>,
    groups: Vec<String>,
    session_id: String,
}

impl Principal {
    fn from_claims(c: AccessClaims) -> Self {
        Self {
            tenant: c.tenant,
            subject: c.subject,
            username: c.username,
            roles: c.roles,
            groups: c.groups,
            session_id: c.session_id,
        }
    }
    /// For the crate's own unit tests of retrieval, which need principals without a
    /// running server. Not compiled into the library.
    #[cfg(test)]
    pub(crate) fn for_tests(tenant: &str, username: &str, roles: &[&str], groups: &[&str]) -> Self {
        Self {
            tenant: tenant.into(),
            subject: format!("id-{username}"),
            username: username.into(),
            roles: roles.iter().map(|s| s.to_string()).collect(),
            groups: groups.iter().map(|s| s.to_string()).collect(),
            session_id: "test-session".into(),
        }
    }
    pub fn tenant(&self) -> &str {
        &self.tenant
    }
    pub fn subject(&self) -> &str {
        &self.subject
    }
    pub fn username(&self) -> &str {
        &self.username
    }
    pub fn roles(&self) -> &[String] {
        &self.roles
    }
    pub fn groups(&self) -> &[String] {
        &self.groups
    }
    pub fn session_id(&self) -> &str {
        &self.session_id
    }
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// What this principal may retrieve: its tenant and its visibility labels. This is
    /// the only way to make an [`AccessScope`], so retrieval can only ever run for a
    /// verified caller, with labels taken from the verified token.
    pub fn access_scope(&self) -> AccessScope {
        let mut labels = Vec::with_capacity(2 + self.roles.len() + self.groups.len());
        labels.push(PUBLIC_LABEL.to_owned());
        labels.push(user_label(&self.username));
        labels.extend(self.roles.iter().map(|r| role_label(r)));
        labels.extend(self.groups.iter().map(|g| group_label(g)));
        labels.sort();
        labels.dedup();
        AccessScope {
            tenant: self.tenant.clone(),
            labels,
        }
    }
}

/// A document readable by everyone in its tenant carries this label.
pub const PUBLIC_LABEL: &str = "public";

pub fn role_label(role: &str) -> String {
    format!("role:{role}")
}
pub fn group_label(group: &str) -> String {
    format!("group:{group}")
}
pub fn user_label(username: &str) -> String {
    format!("user:{username}")
}

/// The retrieval filter of one caller: a tenant and a set of visibility labels. A chunk
/// is visible iff it is in the tenant and its document's ACL shares a label with the
/// scope. Fields are private and there is no public constructor: see
/// [`Principal::access_scope`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessScope {
    tenant: String,
    labels: Vec<String>,
}

impl AccessScope {
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The in-code re-check applied to every retrieved chunk before it may enter a
    /// prompt or a response. An empty label list permits nothing.
    pub fn permits(&self, tenant: &str, acl_labels: &[String]) -> bool {
        tenant == self.tenant && acl_labels.iter().any(|l| self.labels.contains(l))
    }
}

/// What login and refresh hand back: the access token, and the refresh token for the
/// cookie. Neither ever goes to a log.
pub struct IssuedTokens {
    pub access_token: String,
    pub expires_in: u64,
    pub session_id: String,
    pub refresh: RefreshToken,
    /// Seconds left in the session's absolute lifetime: the cookie's Max-Age.
    pub refresh_max_age: i64,
}

impl std::fmt::Debug for IssuedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedTokens")
            .field("session_id", &self.session_id)
            .finish_non_exhaustive()
    }
}

/// Context of the request, for throttling and audit.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

pub struct AuthService {
    users: Arc<dyn UserStore>,
    sessions: Arc<dyn SessionStore>,
    cache: SessionCache,
    tokens: TokenService,
    passwords: PasswordVerifierPool,
    audit: Audit,
    user_throttle: Throttle,
    ip_throttle: Throttle,
    idle_ttl_ms: i64,
    absolute_ttl_ms: i64,
    grace_ms: i64,
}

impl AuthService {
    pub fn new(
        cfg: &Config,
        users: Arc<dyn UserStore>,
        sessions: Arc<dyn SessionStore>,
        keys: keys::Keyring,
        audit: Audit,
    ) -> Self {
        let t = &cfg.tokens;
        let l = &cfg.limits;
        Self {
            users,
            cache: SessionCache::new(
                sessions.clone(),
                ms(t.session_cache_ttl),
                ms(t.session_idle_ttl),
            ),
            sessions,
            tokens: TokenService::new(keys, t.access_ttl),
            passwords: PasswordVerifierPool::new(),
            audit,
            user_throttle: Throttle::new(l.login_failures_per_user, l.login_failure_window),
            ip_throttle: Throttle::new(l.login_attempts_per_ip, l.login_ip_window),
            idle_ttl_ms: ms(t.session_idle_ttl),
            absolute_ttl_ms: ms(t.session_absolute_ttl),
            grace_ms: ms(t.refresh_reuse_grace),
        }
    }

    pub fn audit(&self) -> &Audit {
        &self.audit
    }

    /// Verifies a bearer token and the liveness of its session.
    pub async fn verify_access(
        &self,
        token: Option<&str>,
        client: &ClientInfo,
    ) -> Result<Principal, ApiError> {
        // A request without any credentials is not an attack worth a row.
        let Some(token) = token else {
            return Err(ApiError::Unauthorized);
        };
        let claims = match self.tokens.verify(token) {
            Ok(c) => c,
            Err(rejected) => {
                let mut ev = AuditEvent::new(AuditKind::TokenRejected)
                    .ip(client.ip)
                    .reason(rejected.why.reason());
                if let Some(c) = rejected.claims {
                    let c = *c;
                    ev = ev.tenant(c.tenant).subject(c.subject).session(c.session_id);
                }
                self.audit.record(ev).await;
                return Err(ApiError::Unauthorized);
            }
        };
        match self
            .cache
            .check(&claims.session_id, &claims.tenant, &claims.subject)
            .await
        {
            Ok(Liveness::Live) => Ok(Principal::from_claims(claims)),
            Ok(Liveness::Dead) => {
                self.audit
                    .record(
                        AuditEvent::new(AuditKind::TokenRejected)
                            .tenant(&claims.tenant)
                            .subject(&claims.subject)
                            .session(&claims.session_id)
                            .ip(client.ip)
                            .reason(TokenRejection::SessionNotLive.reason()),
                    )
                    .await;
                Err(ApiError::Unauthorized)
            }
            Err(e) => {
                tracing::error!(error = %e, "session check failed; denying");
                Err(ApiError::Unavailable)
            }
        }
    }

    pub async fn login(
        &self,
        username: &str,
        password: &SecretString,
        client: &ClientInfo,
    ) -> Result<IssuedTokens, ApiError> {
        let user_key = username.to_lowercase();
        let ip_key = client.ip.map(|i| i.to_string()).unwrap_or_default();
        let throttled = self
            .ip_throttle
            .check(&ip_key)
            .and_then(|()| self.user_throttle.check(&user_key));
        if let Err(retry_after_secs) = throttled {
            self.audit
                .record(
                    AuditEvent::new(AuditKind::LoginThrottled)
                        .username(username)
                        .ip(client.ip),
                )
                .await;
            return Err(ApiError::TooManyRequests { retry_after_secs });
        }
        self.ip_throttle.hit(&ip_key);

        let user = self.users.user_by_username(username).await?;
        let password_ok = self
            .passwords
            .verify(password, user.as_ref().map(|u| u.password_hash.as_str()))
            .await;
        let failure = match &user {
            None => Some("unknown_user"),
            Some(_) if !password_ok => Some("bad_password"),
            Some(u) if u.disabled => Some("disabled"),
            Some(_) => None,
        };
        let user = match (failure, user) {
            (None, Some(u)) => u,
            (reason, user) => {
                self.user_throttle.hit(&user_key);
                let mut ev = AuditEvent::new(AuditKind::LoginFailed)
                    .username(username)
                    .ip(client.ip)
                    .reason(reason.unwrap_or("unknown_user"));
                if let Some(u) = user {
                    ev = ev.tenant(u.tenant).subject(u.id);
                }
                self.audit.record(ev).await;
                return Err(ApiError::InvalidCredentials);
            }
        };
        self.user_throttle.reset(&user_key);

        // Mint before persisting: if minting failed, no orphan session would remain.
        let now = now_ms();
        let session_id = crate::secret::new_id();
        let absolute_expires_at = now.saturating_add(self.absolute_ttl_ms);
        let refresh = RefreshToken::generate();
        let refresh_hash = refresh.hash();
        let issued = self.issue(&user, &session_id, absolute_expires_at, refresh, now)?;
        let session = self
            .sessions
            .create_session(NewSession {
                id: session_id,
                tenant: user.tenant.clone(),
                user_id: user.id.clone(),
                now,
                absolute_expires_at,
                user_agent: client.user_agent.clone(),
                refresh_hash,
            })
            .await?;
        self.audit
            .record(
                AuditEvent::new(AuditKind::LoginSucceeded)
                    .tenant(&user.tenant)
                    .subject(&user.id)
                    .username(&user.username)
                    .session(&session.id)
                    .ip(client.ip),
            )
            .await;
        Ok(issued)
    }

    fn issue(
        &self,
        user: &UserRecord,
        session_id: &str,
        absolute_expires_at: i64,
        refresh: RefreshToken,
        now: i64,
    ) -> Result<IssuedTokens, ApiError> {
        let access_token = self
            .tokens
            .mint(&AccessClaims {
                subject: user.id.clone(),
                username: user.username.clone(),
                tenant: user.tenant.clone(),
                roles: user.roles.clone(),
                groups: user.groups.clone(),
                session_id: session_id.to_owned(),
            })
            .map_err(|_| ApiError::Internal)?;
        Ok(IssuedTokens {
            access_token,
            expires_in: self.tokens.access_ttl().as_secs(),
            session_id: session_id.to_owned(),
            refresh,
            refresh_max_age: ((absolute_expires_at - now) / 1000).max(0),
        })
    }

    /// Rotates a refresh token. Reuse of a rotated one revokes the session.
    pub async fn refresh(
        &self,
        presented: Option<&str>,
        client: &ClientInfo,
    ) -> Result<IssuedTokens, ApiError> {
        let Some(presented) = presented.and_then(RefreshToken::parse) else {
            return Err(ApiError::RefreshInvalid);
        };
        let replacement = RefreshToken::generate();
        let now = now_ms();
        let outcome = self
            .sessions
            .rotate_refresh(RotateRequest {
                presented: presented.hash(),
                replacement: replacement.hash(),
                now,
                grace_ms: self.grace_ms,
                idle_ttl_ms: self.idle_ttl_ms,
            })
            .await?;
        match outcome {
            RotateOutcome::Rotated { session } => {
                self.cache.invalidate(&session.id);
                // Fresh roles and groups on every refresh; a user disabled since login has
                // no live session, but check anyway.
                let user = self
                    .users
                    .user_by_id(&session.tenant, &session.user_id)
                    .await?
                    .filter(|u| !u.disabled)
                    .ok_or(ApiError::RefreshInvalid)?;
                let issued = self.issue(
                    &user,
                    &session.id,
                    session.absolute_expires_at,
                    replacement,
                    now,
                )?;
                self.audit
                    .record(
                        AuditEvent::new(AuditKind::RefreshRotated)
                            .tenant(&session.tenant)
                            .subject(&session.user_id)
                            .session(&session.id)
                            .ip(client.ip),
                    )
                    .await;
                Ok(issued)
            }
            RotateOutcome::InProgress => Err(ApiError::RefreshInProgress),
            RotateOutcome::Reused { session } => {
                self.cache.invalidate(&session.id);
                self.audit
                    .record(
                        AuditEvent::new(AuditKind::RefreshReuseDetected)
                            .tenant(&session.tenant)
                            .subject(&session.user_id)
                            .session(&session.id)
                            .ip(client.ip)
                            .reason("rotated_token_presented"),
                    )
                    .await;
                Err(ApiError::RefreshReused)
            }
            RotateOutcome::Invalid => Err(ApiError::RefreshInvalid),
        }
    }

    /// Revokes the caller's current session.
    pub async fn logout(&self, p: &Principal, client: &ClientInfo) -> Result<(), ApiError> {
        self.revoke_own(p, p.session_id(), "logout", client).await?;
        Ok(())
    }

    /// Logout with only the refresh cookie (the access token may have expired).
    pub async fn logout_with_refresh(
        &self,
        presented: &str,
        client: &ClientInfo,
    ) -> Result<(), ApiError> {
        let Some(token) = RefreshToken::parse(presented) else {
            return Ok(());
        };
        if let Some(s) = self.sessions.session_for_refresh(token.hash()).await?
            && s.revoked_at.is_none()
        {
            self.sessions
                .revoke_session(&s.tenant, &s.user_id, &s.id, "logout", now_ms())
                .await?;
            self.cache.invalidate(&s.id);
            self.audit
                .record(
                    AuditEvent::new(AuditKind::Logout)
                        .tenant(&s.tenant)
                        .subject(&s.user_id)
                        .session(&s.id)
                        .ip(client.ip),
                )
                .await;
        }
        Ok(())
    }

    /// Revokes one of the caller's own sessions. Another user's id is indistinguishable
    /// from an unknown one: `NotFound`.
    pub async fn revoke_own(
        &self,
        p: &Principal,
        session_id: &str,
        reason: &'static str,
        client: &ClientInfo,
    ) -> Result<(), ApiError> {
        let revoked = self
            .sessions
            .revoke_session(p.tenant(), p.subject(), session_id, reason, now_ms())
            .await?;
        if !revoked {
            return Err(ApiError::NotFound);
        }
        self.cache.invalidate(session_id);
        let kind = if reason == "logout" {
            AuditKind::Logout
        } else {
            AuditKind::SessionRevoked
        };
        self.audit
            .record(
                AuditEvent::new(kind)
                    .tenant(p.tenant())
                    .subject(p.subject())
                    .session(session_id)
                    .ip(client.ip)
                    .reason(reason),
            )
            .await;
        Ok(())
    }

    pub async fn logout_all(&self, p: &Principal, client: &ClientInfo) -> Result<(), ApiError> {
        let ids = self
            .sessions
            .revoke_user_sessions(p.tenant(), p.subject(), "logout_all", now_ms())
            .await?;
        self.cache.invalidate_many(&ids);
        for sid in &ids {
            self.audit
                .record(
                    AuditEvent::new(AuditKind::SessionRevoked)
                        .tenant(p.tenant())
                        .subject(p.subject())
                        .session(sid)
                        .ip(client.ip)
                        .reason("logout_all"),
                )
                .await;
        }
        Ok(())
    }

    pub async fn sessions_of(&self, p: &Principal) -> Result<Vec<SessionRecord>, ApiError> {
        let now = now_ms();
        let mut list = self
            .sessions
            .list_sessions(p.tenant(), p.subject(), now)
            .await?;
        list.retain(|s| s.is_live(now, self.idle_ttl_ms));
        Ok(list)
    }

    /// Changes a user's roles and/or groups and ends every session of theirs at once,
    /// so no token with the old access survives.
    pub async fn update_access(
        &self,
        tenant: &str,
        user_id: &str,
        roles: Option<Vec<String>>,
        groups: Option<Vec<String>>,
    ) -> Result<Option<UserRecord>, ApiError> {
        let Some((user, revoked)) = self
            .users
            .update_access(tenant, user_id, roles, groups, now_ms())
            .await?
        else {
            return Ok(None);
        };
        self.cache.invalidate_many(&revoked);
        self.audit
            .record(
                AuditEvent::new(AuditKind::UserAccessChanged)
                    .tenant(&user.tenant)
                    .subject(&user.id)
                    .username(&user.username),
            )
            .await;
        Ok(Some(user))
    }

    /// Disables or enables a user; disabling ends every session at once.
    pub async fn set_disabled(
        &self,
        username: &str,
        disabled: bool,
    ) -> Result<Option<UserRecord>, ApiError> {
        let Some((user, revoked)) = self
            .users
            .set_disabled(username, disabled, now_ms())
            .await?
        else {
            return Ok(None);
        };
        self.cache.invalidate_many(&revoked);
        let kind = if disabled {
            AuditKind::UserDisabled
        } else {
            AuditKind::UserEnabled
        };
        self.audit
            .record(
                AuditEvent::new(kind)
                    .tenant(&user.tenant)
                    .subject(&user.id)
                    .username(&user.username),
            )
            .await;
        Ok(Some(user))
    }
}
