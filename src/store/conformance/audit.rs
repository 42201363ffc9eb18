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

/// Appends arriving together, on two handles of one store (two nodes of a cluster, or
/// two openings of one embedded file), form one gapless chain that verifies, each
/// event stored once with its lineage.
#[tokio::test]
async fn concurrent_appends_from_two_handles_form_one_chain() {
    let o = open().await;
    let second = reopen(&o).await;
    let mut appends = Vec::new();
    for i in 0..300 {
        let audit = if i % 2 == 0 {
            o.stores.audit.clone()
        } else {
            second.audit.clone()
        };
        appends.push(tokio::spawn(async move {
            let mut ev = AuditEvent::new(AuditKind::Retrieval).tenant("acme");
            ev.request_id = Some(format!("req-{i}"));
            if i % 3 == 0 {
                ev.documents = vec![format!("doc-{i}"), "doc-shared".into()];
            }
            audit.append(&ev).await
        }));
    }
    for a in appends {
        a.await.unwrap().unwrap();
    }
    // Each position once, each record linked to the one before, the head on the last.
    let chain = o.stores.audit.chain_page(0, 1000).await.unwrap();
    assert_eq!(chain.len(), 300);
    let head = o.stores.audit.chain_head().await.unwrap().unwrap();
    let mut prev = head.pruned_hash;
    for (i, r) in chain.iter().enumerate() {
        let seq = i as i64 + 1;
        assert_eq!(r.seq, Some(seq));
        assert_eq!(r.prev_hash, Some(prev), "{seq}");
        prev = r.event.chain_hash(&prev, seq);
        assert_eq!(r.hash, Some(prev), "{seq}");
    }
    assert_eq!((head.seq, head.hash), (300, prev));
    for i in [0, 1, 150, 299] {
        let found = o
            .stores
            .audit
            .query(AuditQuery {
                request_id: Some(format!("req-{i}")),
                limit: 10,
                ..AuditQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(found.len(), 1, "req-{i}");
    }
    assert_eq!(o.stores.audit.lineage_rows().await.unwrap(), 200);
}
