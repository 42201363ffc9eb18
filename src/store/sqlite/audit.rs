//! The audit trail in SQLite.

use async_trait::async_trait;
use rusqlite::{Row, params};

use super::SqliteStore;
use crate::store::{AuditEvent, AuditKind, AuditQuery, AuditStore, StoreResult};

fn kind_from_str(s: &str) -> Option<AuditKind> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
}

fn audit_row(r: &Row<'_>) -> rusqlite::Result<AuditEvent> {
    let kind: String = r.get(1)?;
    let kind = kind_from_str(&kind).ok_or_else(|| {
        rusqlite::Error::InvalidColumnType(
            1,
            format!("audit kind {kind}"),
            rusqlite::types::Type::Text,
        )
    })?;
    Ok(AuditEvent {
        ts: r.get(0)?,
        kind,
        tenant: r.get(2)?,
        subject: r.get(3)?,
        username: r.get(4)?,
        session_id: r.get(5)?,
        ip: r.get(6)?,
        reason: r.get(7)?,
        resource: r.get(8)?,
        request_id: r.get(9)?,
        count: r.get::<_, Option<i64>>(10)?.map(|n| n.max(0) as u64),
    })
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn append(&self, e: &AuditEvent) -> StoreResult<()> {
        let e = e.clone();
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO audit_events
                   (ts, kind, tenant, subject, username, session_id, ip, reason, resource, request_id, count)
                 VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)",
            )?
            .execute(params![
                e.ts,
                e.kind.as_str(),
                e.tenant,
                e.subject,
                e.username,
                e.session_id,
                e.ip,
                e.reason,
                e.resource,
                e.request_id,
                e.count.map(|n| n.min(i64::MAX as u64) as i64)
            ])?;
            Ok(())
        })
        .await
    }

    async fn query(&self, q: AuditQuery) -> StoreResult<Vec<AuditEvent>> {
        self.read_blocking(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT ts, kind, tenant, subject, username, session_id, ip, reason, resource, request_id, count
                 FROM audit_events
                 WHERE (?1 IS NULL OR tenant = ?1) AND (?2 IS NULL OR kind = ?2)
                   AND (?3 IS NULL OR request_id = ?3)
                 ORDER BY id DESC LIMIT ?4",
            )?;
            let rows = stmt
                .query_map(params![q.tenant, q.kind, q.request_id, q.limit], audit_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn prune(&self, before: i64) -> StoreResult<u64> {
        self.write(move |c| {
            Ok(c.execute("DELETE FROM audit_events WHERE ts < ?1", [before])? as u64)
        })
        .await
    }
}
