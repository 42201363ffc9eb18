//! The audit trail's records and their storage.

use async_trait::async_trait;

use super::StoreResult;
use crate::model::{AuditEvent, AuditRecord, ChainHash};

/// The chain's end as the store last wrote it, and where retention cut its start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChainHead {
    /// The last record's position (0: nothing written yet).
    pub seq: i64,
    pub hash: ChainHash,
    /// Records up to this position were pruned by retention; the first kept record's
    /// `prev` is `pruned_hash`.
    pub pruned_seq: i64,
    pub pruned_hash: ChainHash,
}

#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// `None` only for the operator's CLI: every tenant, including events no tenant
    /// could be named for.
    pub tenant: Option<String>,
    pub kind: Option<String>,
    pub request_id: Option<String>,
    /// Events about one user (their id).
    pub subject: Option<String>,
    /// Unix milliseconds, inclusive.
    pub since: Option<i64>,
    /// Unix milliseconds, exclusive.
    pub until: Option<i64>,
    pub limit: u32,
}

/// Which uses of a document to list: one tenant's (an admin's), or every tenant's
/// (the operator's CLI).
#[derive(Debug, Clone)]
pub struct LineageQuery {
    pub tenant: Option<String>,
    pub document_id: String,
    pub limit: u32,
}

/// The audit trail: append-only, each record chained to the one before.
///
/// `append` assigns the next position and links the record to its predecessor
/// atomically (one writer in SQLite, a row lock on the chain head in PostgreSQL), so
/// concurrent appends — on one node or several — form one unbroken chain.
#[async_trait]
pub trait AuditStore: Send + Sync {
    async fn append(&self, event: &AuditEvent) -> StoreResult<()>;
    /// Newest first.
    async fn query(&self, q: AuditQuery) -> StoreResult<Vec<AuditRecord>>;
    /// The events that put `document_id` in front of a model, newest first.
    async fn lineage(&self, q: LineageQuery) -> StoreResult<Vec<AuditRecord>>;
    /// Chained records with `seq > after`, in chain order, at most `limit`.
    async fn chain_page(&self, after: i64, limit: u32) -> StoreResult<Vec<AuditRecord>>;
    /// The chain head; `None` if it is missing (a trail that was never written has a
    /// head at position 0).
    async fn chain_head(&self) -> StoreResult<Option<ChainHead>>;
    /// How many lineage index rows exist (each record's documents are indexed once).
    async fn lineage_rows(&self) -> StoreResult<u64>;
    /// Deletes events older than `before` (the configured retention), from the start of
    /// the chain only, and remembers where the kept chain begins. Returns how many.
    async fn prune(&self, before: i64) -> StoreResult<u64>;
}
