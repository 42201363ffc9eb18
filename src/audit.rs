//! Security events: written to the store (queryable by admins) and emitted through
//! `tracing` under the `audit` target as structured JSON.
//!
//! An event carries who, what, why and which request — never a token, password or key.
//! Reasons are fixed machine-readable strings, not formatted from request input.

use std::sync::Arc;

use crate::access::Principal;
pub use crate::store::{AuditEvent, AuditKind};
use crate::store::{AuditQuery, AuditStore, StoreError};

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
    ) -> Result<Vec<AuditEvent>, AuditError> {
        if !admin.has_role(crate::access::ADMIN_ROLE) {
            return Err(AuditError::Forbidden);
        }
        Ok(self
            .store
            .query(AuditQuery {
                tenant: Some(admin.tenant().to_owned()),
                kind: f.kind,
                request_id: f.request_id,
                limit: f.limit.unwrap_or(100).clamp(1, 1000),
            })
            .await?)
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
    ) -> Result<Vec<AuditEvent>, AuditError> {
        Ok(self.store.query(q).await?)
    }
}
