//! Storage behind small traits, one per concern. Handlers never see SQL.
//!
//! The embedded implementation ([`sqlite::SqliteStore`]) keeps everything in one SQLite
//! file. A cluster implementation (PostgreSQL + Redis) will implement the same traits.

pub mod sqlite;

use async_trait::async_trait;

use crate::audit::AuditEvent;
use crate::auth::{AccessScope, Principal};
use crate::config::ThreadBinding;
use crate::secret::TokenHash;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("conflict: {0}")]
    Conflict(&'static str),
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, Clone)]
pub struct UserRecord {
    pub id: String,
    pub tenant: String,
    pub username: String,
    /// PHC string (argon2id). Never serialised into a response.
    pub password_hash: String,
    pub roles: Vec<String>,
    pub groups: Vec<String>,
    pub disabled: bool,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub tenant: String,
    pub username: String,
    pub password_hash: String,
    pub roles: Vec<String>,
    pub groups: Vec<String>,
}

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
}

/// What presenting a refresh token led to. Decided atomically inside the store.
#[derive(Debug)]
pub enum RotateOutcome {
    /// The token was current: it is now dead and `new_hash` is the family's head.
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
pub trait UserStore: Send + Sync {
    /// Fails with `Conflict` if the username is taken (usernames are unique per deployment).
    async fn create_user(&self, user: NewUser) -> StoreResult<UserRecord>;
    async fn user_by_username(&self, username: &str) -> StoreResult<Option<UserRecord>>;
    async fn user_by_id(&self, tenant: &str, id: &str) -> StoreResult<Option<UserRecord>>;
    async fn list_users(&self) -> StoreResult<Vec<UserRecord>>;
    /// Sets the disabled flag; disabling also revokes every session of the user in the
    /// same transaction. Returns the user and the ids of sessions it revoked.
    async fn set_disabled(
        &self,
        username: &str,
        disabled: bool,
        now: i64,
    ) -> StoreResult<Option<(UserRecord, Vec<String>)>>;
    /// Replaces roles and/or groups of (tenant, id) and, in the same transaction,
    /// revokes every session: tokens carry roles, so old tokens must not outlive a
    /// change of access. Returns the user and the revoked session ids.
    async fn update_access(
        &self,
        tenant: &str,
        id: &str,
        roles: Option<Vec<String>>,
        groups: Option<Vec<String>>,
        now: i64,
    ) -> StoreResult<Option<(UserRecord, Vec<String>)>>;
}

#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Creates a session and the head of its refresh family, atomically.
    async fn create_session(&self, s: NewSession) -> StoreResult<SessionRecord>;
    async fn session(&self, id: &str) -> StoreResult<Option<SessionRecord>>;
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
    /// The user's sessions that are not revoked and not past their absolute lifetime.
    async fn list_sessions(
        &self,
        tenant: &str,
        user_id: &str,
        now: i64,
    ) -> StoreResult<Vec<SessionRecord>>;
}

#[derive(Debug, Clone)]
pub struct ThreadRecord {
    pub id: String,
    pub title: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub message_count: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Citation {
    pub document_id: String,
    pub title: String,
    pub chunk_id: String,
}

#[derive(Debug, Clone)]
pub struct MessageRecord {
    pub id: String,
    pub role: Role,
    pub content: String,
    pub citations: Vec<Citation>,
    pub created_at: i64,
}

pub struct NewMessage {
    pub role: Role,
    pub content: String,
    pub citations: Vec<Citation>,
}

#[derive(Debug)]
pub enum CreateThread {
    Created(ThreadRecord),
    /// The owner already has `max_threads_per_user` threads.
    LimitReached,
}

#[derive(Debug)]
pub enum Append {
    Appended(MessageRecord),
    /// No such thread *for this owner*.
    NotFound,
    /// The thread already holds `max_messages_per_thread` messages.
    Full,
}

/// Conversation storage. There is deliberately no method that takes a thread id
/// without a `Principal`: every read and write is keyed by (tenant, owner, id), plus
/// the session under `ThreadBinding::Session`, inside the query itself.
#[async_trait]
pub trait ThreadStore: Send + Sync {
    async fn create_thread(
        &self,
        owner: &Principal,
        title: &str,
        max_threads: u32,
    ) -> StoreResult<CreateThread>;
    async fn list_threads(
        &self,
        owner: &Principal,
        binding: ThreadBinding,
    ) -> StoreResult<Vec<ThreadRecord>>;
    /// The thread and all its messages, oldest first; `None` if the thread is not the
    /// owner's.
    async fn thread_with_messages(
        &self,
        owner: &Principal,
        binding: ThreadBinding,
        id: &str,
    ) -> StoreResult<Option<(ThreadRecord, Vec<MessageRecord>)>>;
    async fn append_message(
        &self,
        owner: &Principal,
        binding: ThreadBinding,
        id: &str,
        msg: NewMessage,
        max_messages: u32,
    ) -> StoreResult<Append>;
    async fn delete_thread(
        &self,
        owner: &Principal,
        binding: ThreadBinding,
        id: &str,
    ) -> StoreResult<bool>;
}

/// Who may read a document. Labels are derived from it by `rag`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Acl {
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub public: bool,
}

#[derive(Debug, Clone)]
pub struct NewDocument {
    pub id: String,
    pub tenant: String,
    pub title: String,
    pub text: String,
    pub acl: Acl,
    /// Sorted, de-duplicated visibility labels of `acl`; never empty.
    pub labels: Vec<String>,
    pub created_by: String,
    pub chunks: Vec<NewChunk>,
}

#[derive(Debug, Clone)]
pub struct NewChunk {
    pub id: String,
    pub text: String,
    /// Absent when no embedder is configured (BM25 only).
    pub embedding: Option<Vec<f32>>,
}

#[derive(Debug, Clone)]
pub struct DocumentRecord {
    pub id: String,
    pub title: String,
    pub text: String,
    pub acl: Acl,
    pub created_at: i64,
    pub chunk_count: u32,
}

/// A retrieved chunk, with what the in-code re-check needs.
#[derive(Debug, Clone)]
pub struct ChunkHit {
    pub chunk_id: String,
    pub document_id: String,
    pub title: String,
    pub text: String,
    pub tenant: String,
    pub labels: Vec<String>,
    /// Rank-specific score: L2 distance of unit vectors (vector) or BM25 (text); lower is better.
    pub score: f64,
}

/// Documents and retrieval. Every read takes an `&AccessScope`, and the scope is part of
/// the SQL of the KNN and BM25 queries themselves (tenant partition + visible ACL ids),
/// never a filter applied after ranking.
#[async_trait]
pub trait DocumentStore: Send + Sync {
    /// Inserts a document with all its chunks (and vectors) atomically.
    async fn insert_document(&self, doc: NewDocument) -> StoreResult<DocumentRecord>;
    async fn list_documents(&self, scope: &AccessScope) -> StoreResult<Vec<DocumentRecord>>;
    async fn document(&self, scope: &AccessScope, id: &str) -> StoreResult<Option<DocumentRecord>>;
    /// Deletes a document visible in `scope`, with its chunks and vectors.
    async fn delete_document(&self, scope: &AccessScope, id: &str) -> StoreResult<bool>;
    /// Whether `scope` can see any document at all (lets retrieval skip embedding).
    async fn any_visible(&self, scope: &AccessScope) -> StoreResult<bool>;
    /// Both rankings over the chunks visible in `scope`, resolving the scope once:
    /// exact KNN for `query.vector` (if any) and BM25 for `query.terms`.
    async fn search(&self, scope: &AccessScope, query: SearchQuery) -> StoreResult<Rankings>;
}

pub struct SearchQuery {
    pub vector: Option<Vec<f32>>,
    /// Plain words; the store quotes each one, so no FTS5 syntax can be injected.
    pub terms: Vec<String>,
    /// Results per ranking.
    pub k: usize,
}

#[derive(Debug, Default)]
pub struct Rankings {
    pub vector: Vec<ChunkHit>,
    pub text: Vec<ChunkHit>,
}

#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub tenant: Option<String>,
    pub kind: Option<String>,
    pub limit: u32,
}

#[async_trait]
pub trait AuditStore: Send + Sync {
    async fn append(&self, event: &AuditEvent) -> StoreResult<()>;
    async fn query(&self, q: AuditQuery) -> StoreResult<Vec<AuditEvent>>;
}

/// Liveness of the backing store, for `/readyz`.
#[async_trait]
pub trait Health: Send + Sync {
    async fn ping(&self) -> StoreResult<()>;
}
