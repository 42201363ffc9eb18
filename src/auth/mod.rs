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

pub mod dpop;
mod dpop_ops;
pub mod exchange;
mod jwe;
pub mod keys;
pub mod oauth;
pub mod oidc;
pub use dpop_ops::{Credentials, DpopChallenge, Scheme};
mod oidc_ops;
pub use oidc_ops::{CallbackParams, SignInStart};
pub mod password;
mod rejections;
pub mod sealed;
pub mod services;
mod session_ops;
pub mod sessions;
pub mod tokens;
mod users;

use std::sync::Arc;

pub use crate::access::{
    ADMIN_ROLE, AccessScope, PUBLIC_LABEL, Principal, group_label, role_label, user_label,
    valid_name,
};
use crate::audit::{Audit, AuditEvent, AuditKind};
use crate::config::Config;
pub use crate::model::ClientInfo;
use crate::model::StoreError;
use crate::secret::RefreshToken;
use crate::store::{Limit, LimitKind, LimitStore, SessionStore, Stores, UserStore};
use crate::timeutil::ms;

use password::PasswordVerifierPool;
use rejections::{Disposition, RejectionLog};
use sessions::{Liveness, SessionCache};
use tokens::{AccessClaims, TokenRejection, TokenService};

pub use oidc_ops::external_username;
pub use services::{IssuedKey, KeyOptions, KeyView, Manager, NewService, ServiceView};
pub use users::{AccessChange, GrantView, NewAccount, UserView};

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
    /// DPoP refused the request (401 with `WWW-Authenticate: DPoP`).
    #[error("dpop: {}", .0.error())]
    Dpop(DpopChallenge),
    /// A dependency outside the store (the IdP) could not be reached.
    #[error("unavailable")]
    Unavailable,
    /// Separation of duties refused an access change.
    #[error("refused: {0:?}")]
    Duty(Duty),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A rule of separation of duties that refused an access change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Duty {
    /// No one changes their own roles or groups, nor approves their own access.
    OwnAccess,
    /// A privileged role needs a second admin: propose it (`POST /admin/grants`).
    TwoPersonRule,
    /// Privileged roles come only from the identity provider.
    IdpOnly,
    /// The proposer may not approve their own proposal.
    OwnProposal,
    /// The proposal was not approved in time.
    Expired,
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
    /// The access token is bound to a DPoP key (`token_type` `DPoP`).
    pub dpop_bound: bool,
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
    /// Shared with every process on the store (every node, in cluster mode).
    limits: Arc<dyn LimitStore>,
    /// Failed logins per (canonical username, client address).
    pair_limit: Limit,
    /// Login attempts per client address.
    ip_limit: Limit,
    /// Login attempts per canonical username, from anywhere (GCRA: a burst, then a rate).
    user_ceiling: Limit,
    /// Failures of one known browser (a device cookie) for its user.
    device_limit: Limit,
    device_ttl_ms: i64,
    rejections: RejectionLog,
    /// The keys file and the modification time of the keys in use.
    keys_file: (
        std::path::PathBuf,
        std::sync::Mutex<Option<std::time::SystemTime>>,
    ),
    idle_ttl_ms: i64,
    absolute_ttl_ms: i64,
    grace_ms: i64,
    /// Verifier of external IdPs' tokens (empty without `[[oidc.issuers]]`).
    oidc: oidc::OidcVerifier,
    /// How long a sign-in through an IdP may take.
    sign_in_ttl: std::time::Duration,
    dpop: DpopSettings,
    /// What sessions, tokens, throttles and proofs are judged against.
    clock: Arc<dyn crate::timeutil::Clock>,
    /// Separation of duties for access changes.
    admin: crate::config::AdminConfig,
    /// Service accounts' API keys.
    keys: Arc<dyn crate::store::KeyStore>,
    key_cache: services::KeyCache,
    api_keys: services::KeySettings,
    oauth: oauth::OAuthSettings,
}

struct DpopSettings {
    mode: crate::config::DpopMode,
    window_secs: i64,
    nonce: bool,
    /// The accepted origins: a proof's `htu` is a path on one of them.
    origins: Vec<String>,
}

impl AuthService {
    pub fn new(
        cfg: &Config,
        stores: &Stores,
        keys: keys::Keyring,
        audit: Audit,
        oidc: oidc::OidcVerifier,
    ) -> Self {
        let users = stores.users.clone();
        let sessions = stores.sessions.clone();
        let limits = stores.limits.clone();
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
            tokens: TokenService::new(keys, t.access_ttl, t.format),
            passwords: PasswordVerifierPool::new(),
            audit,
            limits,
            pair_limit: Limit {
                name: "login_failures",
                kind: LimitKind::Window {
                    max: l.login_failures_per_user,
                    period: l.login_failure_window,
                },
            },
            ip_limit: Limit {
                name: "login_ip",
                kind: LimitKind::Window {
                    max: l.login_attempts_per_ip,
                    period: l.login_ip_window,
                },
            },
            user_ceiling: Limit {
                name: "login_user",
                kind: LimitKind::Rate {
                    burst: l.login_user_attempt_burst,
                    per_minute: l.login_user_attempts_per_minute,
                },
            },
            // A known browser's own allowance: as many failures as one address gets
            // for one account, then it is locked out like a stranger.
            device_limit: Limit {
                name: "login_device",
                kind: LimitKind::Window {
                    max: l.login_failures_per_user,
                    period: l.login_failure_window,
                },
            },
            device_ttl_ms: ms(l.device_cookie_ttl),
            rejections: RejectionLog::new(l.rejected_token_audit_window),
            keys_file: {
                let path = cfg.keys_path();
                let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
                (path, std::sync::Mutex::new(modified))
            },
            idle_ttl_ms: ms(t.session_idle_ttl),
            absolute_ttl_ms: ms(t.session_absolute_ttl),
            grace_ms: ms(t.refresh_reuse_grace),
            oidc,
            sign_in_ttl: cfg.oidc.sign_in_ttl,
            dpop: DpopSettings {
                mode: t.dpop,
                window_secs: t.dpop_proof_window.as_secs().clamp(1, 3600) as i64,
                nonce: t.dpop_nonce,
                origins: cfg.origins().all().to_vec(),
            },
            clock: Arc::new(crate::timeutil::SystemClock),
            admin: cfg.admin.clone(),
            keys: stores.keys.clone(),
            key_cache: services::KeyCache::new(
                t.session_cache_ttl,
                stores.sessions.revocation_feed(),
            ),
            api_keys: services::KeySettings {
                default_ttl: t.api_key_ttl,
                max_ttl: t.api_key_max_ttl,
            },
            oauth: oauth::OAuthSettings {
                unapproved_client_ttl_ms: ms(cfg.oauth.unapproved_client_ttl),
                unused_client_ttl_ms: ms(cfg.oauth.unused_client_ttl),
                code_ttl_ms: ms(cfg.oauth.code_ttl),
                registrations_per_hour: cfg.oauth.registrations_per_hour,
                origins: cfg.origins().all().to_vec(),
            },
        }
    }

    /// The same service judging time by `clock` (tests move it instead of waiting).
    pub fn with_clock(mut self, clock: Arc<dyn crate::timeutil::Clock>) -> Self {
        self.tokens = self.tokens.with_clock(clock.clone());
        self.cache.clock = clock.clone();
        self.clock = clock;
        self
    }

    /// Verifies a bearer token and the liveness of its session: the one door through
    /// which every credential enters.
    pub async fn verify_access(
        &self,
        creds: &Credentials<'_>,
        client: &ClientInfo,
    ) -> Result<Principal, AuthError> {
        // A request without any credentials is not an attack worth a row.
        let Some(token) = creds.token else {
            return Err(AuthError::Unauthorized);
        };
        if services::is_api_key(token) {
            return self.verify_api_key(creds, token, client).await;
        }
        // An IdP access token, where an issuer allows them (`accept_bearer`).
        if creds.scheme == Scheme::Bearer && self.oidc.routes_bearer(token) {
            // An IdP access token is a bearer token: not where DPoP is required.
            self.check_binding(None, creds, client).await?;
            return self.verify_idp_bearer(token, client).await;
        }
        let claims = match self.tokens.verify(token) {
            Ok(c) => c,
            Err(rejected) => {
                let reason = rejected.why.reason();
                let mut ev = AuditEvent::new(AuditKind::TokenRejected)
                    .client(client)
                    .reason(reason);
                if let Some(c) = rejected.claims {
                    let c = *c;
                    ev = ev.tenant(c.tenant).subject(c.subject).session(c.session_id);
                }
                self.record_rejection(ev, reason).await;
                return Err(AuthError::Unauthorized);
            }
        };
        self.check_binding(claims.jkt.as_deref(), creds, client)
            .await?;
        match self
            .cache
            .check(&claims.session_id, &claims.tenant, &claims.subject)
            .await
        {
            Ok(Liveness::Live(grants)) => {
                if let Some((client_id, resource)) = oauth::grant_of_session(&claims.session_id) {
                    // An OAuth client's token works on the resource it was issued for.
                    if oauth::Resource::of_path(creds.path) != Some(resource) {
                        let ev = AuditEvent::new(AuditKind::TokenRejected)
                            .tenant(&claims.tenant)
                            .subject(&claims.subject)
                            .session(&claims.session_id)
                            .client(client)
                            .reason("wrong_resource");
                        self.record_rejection(ev, "wrong_resource").await;
                        return Err(AuthError::Unauthorized);
                    }
                    let client_id = client_id.to_owned();
                    return Ok(principal_of(claims, grants)
                        .through(crate::access::Caller::Client { client_id }));
                }
                match claims.actor.clone() {
                    None => Ok(principal_of(claims, grants)),
                    Some(act) => self.acting(principal_of(claims, grants), act, client).await,
                }
            }
            Ok(Liveness::Dead) => {
                let reason = TokenRejection::SessionNotLive.reason();
                let ev = AuditEvent::new(AuditKind::TokenRejected)
                    .tenant(&claims.tenant)
                    .subject(&claims.subject)
                    .session(&claims.session_id)
                    .client(client)
                    .reason(reason);
                self.record_rejection(ev, reason).await;
                Err(AuthError::Unauthorized)
            }
            Err(e) => {
                tracing::error!(error = %e, "session check failed; denying");
                Err(AuthError::Store(e))
            }
        }
    }
}

impl AuthService {
    /// The first rejection of its kind in the window is written; repeats are counted.
    async fn record_rejection(&self, ev: AuditEvent, reason: &'static str) {
        for aggregated in self.rejections.flush(false) {
            self.audit.record(aggregated).await;
        }
        let kind = ev.kind;
        match self.rejections.note(ev, reason) {
            Disposition::Record(ev) => self.audit.record(*ev).await,
            Disposition::Counted => self.audit.count_repeat(kind, reason),
        }
    }

    /// Picks up a rotation made by `palisade keys rotate` (or another node): when the
    /// keys file changed, new tokens are minted with its active key and every key in it
    /// verifies. A file that cannot be read or belongs to another deployment is ignored
    /// (the keys in use stay) and logged.
    pub fn reload_keys_if_changed(&self) {
        let (path, seen) = &self.keys_file;
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let Ok(mut seen) = seen.lock() else { return };
        if modified.is_none() || modified == *seen {
            return;
        }
        match keys::Keyring::load(path) {
            Ok(fresh) => match self.tokens.replace_keys(fresh) {
                Ok(()) => {
                    *seen = modified;
                    tracing::info!(active = %self.tokens.active_key_id(), "token keys reloaded");
                }
                Err(why) => tracing::error!(why, "token keys not reloaded"),
            },
            Err(e) => tracing::error!(error = %e, "token keys not reloaded"),
        }
    }

    /// Deletes sessions that ended over an hour ago with their refresh families, and
    /// rotated refresh tokens older than the idle timeout.
    pub async fn prune_sessions(&self) -> Result<(u64, u64), AuthError> {
        let now = self.clock.now_ms();
        Ok(self
            .sessions
            .prune(now - 3_600_000, self.idle_ttl_ms, now - self.idle_ttl_ms)
            .await?)
    }

    /// Writes the counts of repeated rejections whose window has closed (`force`: all
    /// of them, at shutdown).
    pub async fn flush_rejections(&self, force: bool) {
        for aggregated in self.rejections.flush(force) {
            self.audit.record(aggregated).await;
        }
    }
}

/// Who the token names, with what its live session grants.
fn principal_of(c: AccessClaims, grants: std::sync::Arc<crate::access::Grants>) -> Principal {
    Principal::verified(c.tenant, c.subject, c.username, grants, c.session_id)
}
