//! Security events: written to the store (queryable by admins) and emitted through
//! `tracing` under the `audit` target as structured JSON.
//!
//! An event carries who, what, why and which request — never a token, password or key.
//! Reasons are fixed machine-readable strings, not formatted from request input.

use std::sync::Arc;

use crate::access::Principal;
pub use crate::store::{AuditEvent, AuditKind, AuditRecord, ChainHash, ChainHead};
use crate::store::{AuditQuery, AuditStore, LineageQuery, StoreError};

/// The audit sink handed to services, and the admins' view of the trail.
#[derive(Clone)]
pub struct Audit {
    store: Arc<dyn AuditStore>,
}

/// Filters an admin may set; the tenant is always the admin's own.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub kind: Option<String>,
    pub request_id: Option<String>,
    /// Events about one user (their id).
    pub subject: Option<String>,
    /// Unix milliseconds, inclusive.
    pub since: Option<i64>,
    /// Unix milliseconds, exclusive.
    pub until: Option<i64>,
    pub limit: Option<u32>,
}

/// What `verify` found wrong first, naming the record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainFault {
    #[error("the chain head is missing")]
    HeadMissing,
    #[error("record {seq} is missing (deleted, or its position was changed)")]
    Missing { seq: i64 },
    #[error("record {seq} does not match its hash (edited)")]
    Edited { seq: i64 },
    #[error("record {seq} does not link to record {}", seq - 1)]
    Unlinked { seq: i64 },
    #[error("the chain ends at record {found}, but its head says {head} (records deleted from the end, or the head edited)")]
    Truncated { found: i64, head: i64 },
    #[error("the lineage index has {found} entries, the chained records name {expected}")]
    LineageIndex { expected: u64, found: u64 },
}

impl ChainFault {
    /// The first record that failed, where one can be named.
    pub fn seq(&self) -> Option<i64> {
        match self {
            Self::Missing { seq } | Self::Edited { seq } | Self::Unlinked { seq } => Some(*seq),
            Self::Truncated { found, .. } => Some(found + 1),
            Self::HeadMissing | Self::LineageIndex { .. } => None,
        }
    }
}

/// The outcome of walking the whole chain.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChainReport {
    /// Chained records checked.
    pub records: u64,
    /// The first position still kept (earlier ones were pruned by retention).
    pub first_seq: i64,
    pub last_seq: i64,
    /// The head's hash: record it elsewhere to detect a rewrite of the whole chain.
    pub head_hash: String,
}

/// Records read per page while verifying.
const VERIFY_PAGE: u32 = 2000;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("forbidden")]
    Forbidden,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Audit {
    pub fn new(store: Arc<dyn AuditStore>) -> Self {
        Self { store }
    }

    /// Records an event. A failure to persist is logged loudly but does not turn a
    /// denial into something else: callers that deny keep denying.
    pub async fn record(&self, ev: AuditEvent) {
        tracing::info!(
            target: "audit",
            kind = ev.kind.as_str(),
            tenant = ev.tenant.as_deref(),
            subject = ev.subject.as_deref(),
            username = ev.username.as_deref(),
            session_id = ev.session_id.as_deref(),
            ip = ev.ip.as_deref(),
            reason = ev.reason.as_deref(),
            resource = ev.resource.as_deref(),
            request_id = ev.request_id.as_deref(),
            thread = ev.thread.as_deref(),
            documents = ?ev.documents,
            "audit event"
        );
        if let Err(e) = self.store.append(&ev).await {
            tracing::error!(error = %e, kind = ev.kind.as_str(), "failed to persist audit event");
        }
    }

    /// The admin's own tenant's events, newest first.
    pub async fn events_for(
        &self,
        admin: &Principal,
        f: AuditFilter,
    ) -> Result<Vec<AuditRecord>, AuditError> {
        if !admin.has_role(crate::access::ADMIN_ROLE) {
            return Err(AuditError::Forbidden);
        }
        Ok(self
            .store
            .query(AuditQuery {
                tenant: Some(admin.tenant().to_owned()),
                kind: f.kind,
                request_id: f.request_id,
                subject: f.subject,
                since: f.since,
                until: f.until,
                limit: f.limit.unwrap_or(100).clamp(1, 1000),
            })
            .await?)
    }

    /// Data lineage for an admin: the events of the admin's own tenant that put
    /// `document_id` in front of a model (or an MCP client), newest first.
    pub async fn lineage_for(
        &self,
        admin: &Principal,
        document_id: &str,
        limit: Option<u32>,
    ) -> Result<Vec<AuditRecord>, AuditError> {
        if !admin.has_role(crate::access::ADMIN_ROLE) {
            return Err(AuditError::Forbidden);
        }
        Ok(self
            .store
            .lineage(LineageQuery {
                tenant: Some(admin.tenant().to_owned()),
                document_id: document_id.to_owned(),
                limit: limit.unwrap_or(100).clamp(1, 1000),
            })
            .await?)
    }

    /// Data lineage across every tenant, for the operator's CLI.
    pub async fn lineage(
        &self,
        _op: &crate::access::Operator,
        document_id: &str,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, AuditError> {
        Ok(self
            .store
            .lineage(LineageQuery {
                tenant: None,
                document_id: document_id.to_owned(),
                limit: limit.max(1),
            })
            .await?)
    }

    /// Walks the whole chain from its (possibly pruned) start to its head: every
    /// position present once, every record linked to the one before and matching its
    /// own hash, the last one equal to the head, the lineage index complete. The first
    /// fault is returned, naming the record.
    pub async fn verify(
        &self,
        _op: &crate::access::Operator,
    ) -> Result<Result<ChainReport, ChainFault>, AuditError> {
        let Some(head) = self.store.chain_head().await? else {
            return Ok(Err(ChainFault::HeadMissing));
        };
        let mut prev = head.pruned_hash;
        let mut last = head.pruned_seq;
        let mut records = 0u64;
        let mut documents = 0u64;
        loop {
            let page = self.store.chain_page(last, VERIFY_PAGE).await?;
            let full = page.len() == VERIFY_PAGE as usize;
            for r in page {
                let expected = last + 1;
                let seq = r.seq.unwrap_or_default();
                if seq != expected {
                    return Ok(Err(ChainFault::Missing { seq: expected }));
                }
                if r.prev_hash != Some(prev) {
                    return Ok(Err(ChainFault::Unlinked { seq }));
                }
                let hash = r.event.chain_hash(&prev, seq);
                if r.hash != Some(hash) {
                    return Ok(Err(ChainFault::Edited { seq }));
                }
                prev = hash;
                last = seq;
                records += 1;
                documents += r.event.documents.len() as u64;
            }
            if !full {
                break;
            }
        }
        if last != head.seq || prev != head.hash {
            return Ok(Err(ChainFault::Truncated {
                found: last,
                head: head.seq,
            }));
        }
        let found = self.store.lineage_rows().await?;
        if found != documents {
            return Ok(Err(ChainFault::LineageIndex {
                expected: documents,
                found,
            }));
        }
        Ok(Ok(ChainReport {
            records,
            first_seq: head.pruned_seq + 1,
            last_seq: last,
            head_hash: prev.hex(),
        }))
    }

    /// Deletes events older than `retention` (zero: keep everything).
    pub async fn prune(&self, retention: std::time::Duration) -> Result<u64, AuditError> {
        if retention.is_zero() {
            return Ok(0);
        }
        let before = crate::timeutil::now_ms() - crate::timeutil::ms(retention);
        Ok(self.store.prune(before).await?)
    }

    /// Every tenant's events, for the operator's CLI.
    pub async fn all_events(
        &self,
        _op: &crate::access::Operator,
        q: AuditQuery,
    ) -> Result<Vec<AuditRecord>, AuditError> {
        Ok(self.store.query(q).await?)
    }
}
