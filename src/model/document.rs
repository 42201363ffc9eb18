//! A document as its readers and its administrators see it.

use crate::access::Acl;

#[derive(Debug, Clone)]
pub struct DocumentRecord {
    pub id: String,
    pub title: String,
    pub text: String,
    pub acl: Acl,
    pub created_at: i64,
    pub created_by: String,
    pub chunk_count: u32,
    pub state: IngestState,
}

/// What a document administrator sees of any document of the tenant: never its text.
#[derive(Debug, Clone)]
pub struct DocumentMeta {
    pub id: String,
    pub title: String,
    pub acl: Acl,
    pub created_at: i64,
    pub created_by: String,
    pub chunk_count: u32,
    pub state: IngestState,
}

/// Where a document's ingestion stands. Only a `Ready` document's passages are in the
/// indexes: retrieval never sees a document half-indexed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestState {
    /// Stored, waiting for a worker.
    Queued,
    /// A worker is chunking and embedding it; `done` of `total` chunks are embedded
    /// (`total` is 0 until the text has been split).
    Embedding {
        done: u32,
        total: u32,
    },
    Ready,
    /// Given up; `reason` is a fixed word (`embedding_failed`).
    Failed {
        reason: String,
    },
}

impl IngestState {
    /// The stored form: `state`, chunks done, chunks in all, the failure's reason.
    pub fn from_columns(
        state: &str,
        done: i64,
        total: i64,
        failure: Option<String>,
    ) -> Option<IngestState> {
        let n = |v: i64| u32::try_from(v.max(0)).unwrap_or(u32::MAX);
        Some(match state {
            "queued" => IngestState::Queued,
            "embedding" => IngestState::Embedding {
                done: n(done),
                total: n(total),
            },
            "ready" => IngestState::Ready,
            "failed" => IngestState::Failed {
                reason: failure.unwrap_or_else(|| "embedding_failed".into()),
            },
            _ => return None,
        })
    }

    /// The stored and the wire name of the state.
    pub fn name(&self) -> &'static str {
        match self {
            IngestState::Queued => "queued",
            IngestState::Embedding { .. } => "embedding",
            IngestState::Ready => "ready",
            IngestState::Failed { .. } => "failed",
        }
    }

    /// Whether no worker will touch the document again.
    pub fn is_final(&self) -> bool {
        matches!(self, IngestState::Ready | IngestState::Failed { .. })
    }
}
