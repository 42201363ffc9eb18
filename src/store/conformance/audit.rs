//! The audit trail as stored: per tenant, per request.

use super::*;
use crate::model::{AuditEvent, AuditKind};

#[tokio::test]
async fn audit_events_are_kept_per_tenant_and_request() {
    let o = open().await;
    let s = &o.stores;
    let mut ev = AuditEvent::new(AuditKind::Retrieval).tenant("acme");
    ev.request_id = Some("req-1".into());
    s.audit.append(&ev).await.unwrap();
    s.audit
        .append(&AuditEvent::new(AuditKind::Retrieval).tenant("globex"))
        .await
        .unwrap();
    let acme = tenant_events(s, "acme").await;
    assert_eq!(acme.len(), 1);
    let by_req = s
        .audit
        .query(AuditQuery {
            request_id: Some("req-1".into()),
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(by_req.len(), 1);
    assert_eq!(by_req[0].event.tenant.as_deref(), Some("acme"));
    let checks = s.health.check(std::time::Duration::from_secs(5)).await;
    assert!(checks.iter().all(|c| c.ok), "{checks:?}");
    assert!(!s.health.degraded());
}
