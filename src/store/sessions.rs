//! Sessions and their refresh families.

use async_trait::async_trait;

use super::StoreResult;
use crate::secret::TokenHash;

#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub id: String,
    pub tenant: String,
    pub user_id: String,
    pub created_at: i64,
    /// Last login or refresh; the idle timeout counts from here.
    pub last_seen_at: i64,
    pub absolute_expires_at: i64,
    pub revoked_at: Option<i64>,
    pub user_agent: Option<String>,
    /// The user's roles and groups when the session began. A change of access ends
    /// every session of the user, so these are always current for a live session.
    pub roles: Vec<String>,
    pub groups: Vec<String>,
    /// The DPoP key the session is bound to: a refresh must prove possession of it.
    pub dpop_jkt: Option<String>,
}

impl SessionRecord {
    /// When this session stops being usable, whichever limit comes first.
    pub fn deadline(&self, idle_ttl_ms: i64) -> i64 {
        self.absolute_expires_at
            .min(self.last_seen_at.saturating_add(idle_ttl_ms))
    }

    pub fn is_live(&self, now: i64, idle_ttl_ms: i64) -> bool {
        self.revoked_at.is_none() && now < self.deadline(idle_ttl_ms)
    }
}

#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: String,
    pub tenant: String,
    pub user_id: String,
    pub now: i64,
    pub absolute_expires_at: i64,
    pub user_agent: Option<String>,
    pub refresh_hash: TokenHash,
    pub roles: Vec<String>,
    pub groups: Vec<String>,
    /// The DPoP key (RFC 7638 thumbprint) the refresh family is bound to, if any.
    pub dpop_jkt: Option<String>,
}

/// What presenting a refresh token led to. Decided atomically inside the store.
#[derive(Debug)]
pub enum RotateOutcome {
    /// The token was current: it is now dead and `replacement` is the family's head.
    Rotated { session: SessionRecord },
    /// The token was rotated moments ago (within the grace window): a concurrent tab.
    InProgress,
    /// The token was rotated long ago: theft. The session has been revoked.
    Reused { session: SessionRecord },
    /// Unknown token, or its session is revoked or expired.
    Invalid,
}

pub struct RotateRequest {
    pub presented: TokenHash,
    pub replacement: TokenHash,
    pub now: i64,
    pub grace_ms: i64,
    pub idle_ttl_ms: i64,
}

#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Creates a session and the head of its refresh family, atomically.
    async fn create_session(&self, s: NewSession) -> StoreResult<SessionRecord>;
    async fn session(&self, id: &str) -> StoreResult<Option<SessionRecord>>;
    /// One atomic step: of any number of concurrent rotations of one token, exactly one
    /// sees it current.
    async fn rotate_refresh(&self, req: RotateRequest) -> StoreResult<RotateOutcome>;
    /// The session a refresh token (current or rotated) belongs to.
    async fn session_for_refresh(&self, hash: TokenHash) -> StoreResult<Option<SessionRecord>>;
    /// Revokes one session of (tenant, user). Returns false if no such live session.
    async fn revoke_session(
        &self,
        tenant: &str,
        user_id: &str,
        session_id: &str,
        reason: &str,
        now: i64,
    ) -> StoreResult<bool>;
    /// Revokes every live session of a user; returns the revoked ids.
    async fn revoke_user_sessions(
        &self,
        tenant: &str,
        user_id: &str,
        reason: &str,
        now: i64,
    ) -> StoreResult<Vec<String>>;
    /// Deletes sessions that ended (revoked, idle or past their absolute lifetime) before
    /// `ended_before`, with their refresh families, and rotated refresh tokens issued
    /// before `rotated_before` (reuse of one older than that is refused, just no longer
    /// recognised as theft). Returns (sessions, refresh tokens) deleted.
    async fn prune(
        &self,
        ended_before: i64,
        idle_ttl_ms: i64,
        rotated_before: i64,
    ) -> StoreResult<(u64, u64)>;
    /// The user's sessions that are not revoked and not past their absolute lifetime.
    async fn list_sessions(
        &self,
        tenant: &str,
        user_id: &str,
        now: i64,
    ) -> StoreResult<Vec<SessionRecord>>;
    /// Ids of sessions revoked by any process sharing this store, as they happen
    /// (`"*"`: some may have been missed; forget every cached session). `None` for a
    /// store without such a feed: other processes' revocations are then seen when a
    /// cached answer expires (`tokens.session_cache_ttl`).
    fn revocation_feed(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        None
    }
}
