//! Security events: written to the store (queryable by admins) and emitted through
//! `tracing` under the `audit` target as structured JSON.
//!
//! An event carries who, what, why and which request — never a token, password or key.
//! Reasons are fixed machine-readable strings, not formatted from request input.

use std::sync::Arc;

use crate::access::Principal;
use crate::model::StoreError;
pub use crate::model::{AuditEvent, AuditKind, AuditRecord, ChainFault, ChainHash, ChainReport};
use crate::store::{AuditQuery, AuditStore, LineageQuery};

/// The audit sink handed to services, and the admins' view of the trail.
#[derive(Clone)]
pub struct Audit {
    store: Arc<dyn AuditStore>,
    /// What events are stamped with and retention is counted from.
    clock: Arc<dyn crate::timeutil::Clock>,
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

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("forbidden")]
    Forbidden,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Audit {
    pub fn new(store: Arc<dyn AuditStore>) -> Self {
        Self {
            store,
            clock: Arc::new(crate::timeutil::SystemClock),
        }
    }

    /// The same sink stamping events with `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn crate::timeutil::Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Records an event. A failure to persist is logged loudly but does not turn a
    /// denial into something else: callers that deny keep denying.
    pub async fn record(&self, mut ev: AuditEvent) {
        ev.ts = self.clock.now_ms();
        // An aggregated record (with a count) stands for repeats already counted as
        // they happened (see `count_repeat`).
        if ev.count.is_none() {
            crate::telemetry::security_event(ev.kind.as_str(), ev.reason.as_deref(), 1);
        }
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
            documents = (!ev.documents.is_empty())
                .then(|| ev.documents.join(","))
                .as_deref(),
            "audit event"
        );
        if let Err(e) = self.store.append(&ev).await {
            tracing::error!(error = %e, kind = ev.kind.as_str(), "failed to persist audit event");
        }
    }

    /// Counts a repeat that is not written now (it will be part of an aggregated
    /// record), so that metrics see every event when it happens.
    pub fn count_repeat(&self, kind: AuditKind, reason: &str) {
        crate::telemetry::security_event(kind.as_str(), Some(reason), 1);
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

    /// Walks the whole chain from its (possibly pruned) start to its head (see
    /// [`verify_chain`]); the inner `Err` is the first fault.
    pub async fn verify(
        &self,
        _op: &crate::access::Operator,
    ) -> Result<Result<ChainReport, ChainFault>, AuditError> {
        Ok(verify_chain(self.store.as_ref()).await?)
    }

    /// Deletes events older than `retention` (zero: keep everything).
    pub async fn prune(&self, retention: std::time::Duration) -> Result<u64, AuditError> {
        if retention.is_zero() {
            return Ok(0);
        }
        let before = self.clock.now_ms() - crate::timeutil::ms(retention);
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

/// Records read per page while verifying.
const VERIFY_PAGE: u32 = 2000;

/// Walks the whole chain from its (possibly pruned) start to its head: every position
/// present once, every record linked to the one before and matching its own hash, the
/// last one equal to the head, the lineage index complete. The inner `Err` is the first
/// fault, naming the record.
pub async fn verify_chain(
    store: &dyn AuditStore,
) -> Result<Result<ChainReport, ChainFault>, StoreError> {
    let Some(head) = store.chain_head().await? else {
        return Ok(Err(ChainFault::HeadMissing));
    };
    let mut prev = head.pruned_hash;
    let mut last = head.pruned_seq;
    let mut records = 0u64;
    let mut documents = 0u64;
    loop {
        let page = store.chain_page(last, VERIFY_PAGE).await?;
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
    let found = store.lineage_rows().await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::open;

    #[tokio::test]
    async fn concurrent_appends_form_one_verifiable_chain_and_lineage_finds_its_documents() {
        let o = open().await;
        let s = &o.stores;
        let verify = || verify_chain(s.audit.as_ref());
        // An empty trail verifies.
        assert_eq!(verify().await.unwrap().unwrap().records, 0);
        // Ten old events, then 64 appended at once.
        for i in 0..10 {
            let mut ev = AuditEvent::new(AuditKind::Logout).tenant("acme");
            ev.ts = 1_000 + i;
            s.audit.append(&ev).await.unwrap();
        }
        let mut tasks = Vec::new();
        for i in 0..64 {
            let store = s.audit.clone();
            tasks.push(tokio::spawn(async move {
                let tenant = if i % 2 == 0 { "acme" } else { "globex" };
                let ev = AuditEvent::new(AuditKind::Retrieval)
                    .tenant(tenant)
                    .subject(format!("u{i}"))
                    .thread(Some(&format!("t{i}")))
                    .documents(["doc-b", "doc-a", "doc-b"]);
                store.append(&ev).await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let report = verify().await.unwrap().unwrap();
        assert_eq!(
            (report.records, report.first_seq, report.last_seq),
            (74, 1, 74)
        );
        let acme = s
            .audit
            .lineage(crate::store::LineageQuery {
                tenant: Some("acme".into()),
                document_id: "doc-a".into(),
                limit: 1000,
            })
            .await
            .unwrap();
        assert_eq!(acme.len(), 32);
        assert!(
            acme.iter()
                .all(|r| r.event.tenant.as_deref() == Some("acme")
                    && r.event.documents == ["doc-a", "doc-b"]
                    && r.event.thread.is_some())
        );
        // Retention cuts the start of the chain; what is kept still verifies.
        assert_eq!(s.audit.prune(2_000).await.unwrap(), 10);
        let report = verify().await.unwrap().unwrap();
        assert_eq!(
            (report.records, report.first_seq, report.last_seq),
            (64, 11, 74)
        );
        s.audit
            .append(&AuditEvent::new(AuditKind::Logout).tenant("acme"))
            .await
            .unwrap();
        assert_eq!(verify().await.unwrap().unwrap().last_seq, 75);
    }
}
