//! The audit trail in PostgreSQL.

use async_trait::async_trait;
use tokio_postgres::Row;

use super::{ClusterStore, timed};
use crate::store::{AuditEvent, AuditKind, AuditQuery, AuditStore, StoreError, StoreResult};

const AUDIT_COLS: &str =
    "ts, kind, tenant, subject, username, session_id, ip, reason, resource, request_id, count";

fn audit_row(r: &Row) -> StoreResult<AuditEvent> {
    let kind: String = r.try_get(1)?;
    let kind: AuditKind = serde_json::from_value(serde_json::Value::String(kind.clone()))
        .map_err(|_| StoreError::Corrupt(format!("audit kind {kind}")))?;
    Ok(AuditEvent {
        ts: r.try_get(0)?,
        kind,
        tenant: r.try_get(2)?,
        subject: r.try_get(3)?,
        username: r.try_get(4)?,
        session_id: r.try_get(5)?,
        ip: r.try_get(6)?,
        reason: r.try_get(7)?,
        resource: r.try_get(8)?,
        request_id: r.try_get(9)?,
        count: r.try_get::<_, Option<i64>>(10)?.map(|n| n.max(0) as u64),
    })
}

#[async_trait]
impl AuditStore for ClusterStore {
    async fn append(&self, e: &AuditEvent) -> StoreResult<()> {
        timed(async {
            let c = self.pg().await?;
            let stmt = c
                .prepare_cached(&format!(
                    "INSERT INTO audit_events ({AUDIT_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)"
                ))
                .await?;
            let count = e.count.map(|n| n.min(i64::MAX as u64) as i64);
            c.execute(
                &stmt,
                &[
                    &e.ts,
                    &e.kind.as_str(),
                    &e.tenant,
                    &e.subject,
                    &e.username,
                    &e.session_id,
                    &e.ip,
                    &e.reason,
                    &e.resource,
                    &e.request_id,
                    &count,
                ],
            )
            .await?;
            Ok(())
        })
        .await
    }

    async fn query(&self, q: AuditQuery) -> StoreResult<Vec<AuditEvent>> {
        timed(async {
            let c = self.pg().await?;
            c.query(
                &format!(
                    "SELECT {AUDIT_COLS} FROM audit_events
                     WHERE ($1::TEXT IS NULL OR tenant = $1) AND ($2::TEXT IS NULL OR kind = $2)
                       AND ($3::TEXT IS NULL OR request_id = $3)
                     ORDER BY id DESC LIMIT $4"
                ),
                &[&q.tenant, &q.kind, &q.request_id, &i64::from(q.limit)],
            )
            .await?
            .iter()
            .map(audit_row)
            .collect()
        })
        .await
    }

    async fn prune(&self, before: i64) -> StoreResult<u64> {
        timed(async {
            let c = self.pg().await?;
            Ok(
                c.execute("DELETE FROM audit_events WHERE ts < $1", &[&before])
                    .await?,
            )
        })
        .await
    }
}
