//! Credentials → [`Principal`].
//!
//! This is the only module that makes a `Principal` (`access::Principal::verified`):
//! after a token verified and its session was found live. Everything downstream
//! (threads, retrieval) takes `&Principal` or a capability derived from it, so a code
//! path that skipped verification does not compile.
//!
//! * `mod.rs` — the service, its errors, and the per-request verification.
//! * `session_ops.rs` — login, refresh, logout, the user's own sessions.
//! * `users.rs` — account administration (admins over HTTP, the operator's CLI).

pub mod keys;
pub mod password;
mod session_ops;
pub mod sessions;
pub mod throttle;
pub mod tokens;
mod users;

use std::sync::Arc;

pub use crate::access::{
    AccessScope, ClientInfo, PUBLIC_LABEL, Principal, group_label, role_label, user_label,
    valid_name,
};
use crate::audit::{Audit, AuditEvent, AuditKind};
use crate::config::Config;
use crate::secret::RefreshToken;
use crate::store::{SessionStore, StoreError, UserStore};
use crate::timeutil::ms;

use password::PasswordVerifierPool;
use sessions::{Liveness, SessionCache};
use throttle::Throttle;
use tokens::{AccessClaims, TokenRejection, TokenService};

pub use users::{AccessChange, NewAccount, UserView};

/// The role that may administer users and read the audit trail of its tenant.
pub const ADMIN_ROLE: &str = "admin";

/// What can go wrong in authentication and account administration. Mapped to HTTP
/// statuses once, in `http::error`.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid credentials")]
    InvalidCredentials,
    /// Missing, malformed, forged, expired or revoked access token.
    #[error("unauthorized")]
    Unauthorized,
    #[error("refresh token reused")]
    RefreshReused,
    #[error("refresh token invalid")]
    RefreshInvalid,
    #[error("refresh in progress")]
    RefreshInProgress,
    #[error("too many attempts")]
    Throttled { retry_after_secs: u64 },
    #[error("forbidden")]
    Forbidden,
    #[error("not found")]
    NotFound,
    #[error("invalid input: {0}")]
    Invalid(&'static str),
    #[error("token minting failed")]
    Mint,
    #[error(transparent)]
    Store(#[from] StoreError),
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
                t.session_cache_ttl,
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

    /// Verifies a bearer token and the liveness of its session: the one door through
    /// which every credential enters.
    pub async fn verify_access(
        &self,
        token: Option<&str>,
        client: &ClientInfo,
    ) -> Result<Principal, AuthError> {
        // A request without any credentials is not an attack worth a row.
        let Some(token) = token else {
            return Err(AuthError::Unauthorized);
        };
        let claims = match self.tokens.verify(token) {
            Ok(c) => c,
            Err(rejected) => {
                let mut ev = AuditEvent::new(AuditKind::TokenRejected)
                    .client(client)
                    .reason(rejected.why.reason());
                if let Some(c) = rejected.claims {
                    let c = *c;
                    ev = ev.tenant(c.tenant).subject(c.subject).session(c.session_id);
                }
                self.audit.record(ev).await;
                return Err(AuthError::Unauthorized);
            }
        };
        match self
            .cache
            .check(&claims.session_id, &claims.tenant, &claims.subject)
            .await
        {
            Ok(Liveness::Live) => Ok(principal_of(claims)),
            Ok(Liveness::Dead) => {
                self.audit
                    .record(
                        AuditEvent::new(AuditKind::TokenRejected)
                            .tenant(&claims.tenant)
                            .subject(&claims.subject)
                            .session(&claims.session_id)
                            .client(client)
                            .reason(TokenRejection::SessionNotLive.reason()),
                    )
                    .await;
                Err(AuthError::Unauthorized)
            }
            Err(e) => {
                tracing::error!(error = %e, "session check failed; denying");
                Err(AuthError::Store(e))
            }
        }
    }
}

fn principal_of(c: AccessClaims) -> Principal {
    Principal::verified(
        c.tenant,
        c.subject,
        c.username,
        c.roles,
        c.groups,
        c.session_id,
    )
}
