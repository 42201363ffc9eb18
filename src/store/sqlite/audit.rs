//! The audit trail in SQLite: a hash chain appended by the one writer, so positions
//! are gapless and every record links to the one before it.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::SqliteStore;
use crate::model::{AuditEvent, AuditKind, AuditRecord, ChainHash};
use crate::store::{AuditQuery, AuditStore, ChainHead, LineageQuery, StoreError, StoreResult};

const COLS: &str = "ts, kind, tenant, subject, username, session_id, ip, reason, resource, \
                    request_id, count, thread, documents, seq, prev_hash, hash, actor";

fn kind_from_str(s: &str) -> Option<AuditKind> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
}

fn corrupt(col: usize, what: String) -> rusqlite::Error {
    rusqlite::Error::InvalidColumnType(col, what, rusqlite::types::Type::Text)
}

fn hash_col(r: &Row<'_>, i: usize) -> rusqlite::Result<Option<ChainHash>> {
    match r.get::<_, Option<Vec<u8>>>(i)? {
        None => Ok(None),
        Some(b) => ChainHash::from_slice(&b)
            .map(Some)
            .ok_or_else(|| corrupt(i, "audit hash length".into())),
    }
}

fn audit_row(r: &Row<'_>) -> rusqlite::Result<AuditRecord> {
    let kind: String = r.get(1)?;
    let kind = kind_from_str(&kind).ok_or_else(|| corrupt(1, format!("audit kind {kind}")))?;
    let documents: Option<String> = r.get(12)?;
    Ok(AuditRecord {
        event: AuditEvent {
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
            thread: r.get(11)?,
            documents: documents
                .filter(|d| !d.is_empty())
                .map(|d| d.split(',').map(str::to_owned).collect())
                .unwrap_or_default(),
            actor: r.get(16)?,
        },
        seq: r.get(13)?,
        prev_hash: hash_col(r, 14)?,
        hash: hash_col(r, 15)?,
    })
}

fn head(c: &Connection) -> StoreResult<Option<ChainHead>> {
    let row = c
        .prepare_cached("SELECT seq, hash, pruned_seq, pruned_hash FROM audit_chain WHERE id = 1")?
        .query_row([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Vec<u8>>(3)?,
            ))
        })
        .optional()?;
    let Some((seq, hash, pruned_seq, pruned_hash)) = row else {
        return Ok(None);
    };
    let (Some(hash), Some(pruned_hash)) = (
        ChainHash::from_slice(&hash),
        ChainHash::from_slice(&pruned_hash),
    ) else {
        return Err(StoreError::Corrupt("audit chain head".into()));
    };
    Ok(Some(ChainHead {
        seq,
        hash,
        pruned_seq,
        pruned_hash,
    }))
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn append(&self, e: &AuditEvent) -> StoreResult<()> {
        let e = e.clone();
        self.write(move |c| {
            // The writer is the only one appending: reading the head and moving it are
            // one step. A missing head refuses the write (fail closed, loudly).
            let h = head(c)?.ok_or_else(|| StoreError::Corrupt("audit chain head missing".into()))?;
            let seq = h.seq + 1;
            let hash = e.chain_hash(&h.hash, seq);
            let documents = (!e.documents.is_empty()).then(|| e.documents.join(","));
            c.prepare_cached(&format!(
                "INSERT INTO audit_events ({COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17)"
            ))?
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
                e.count.map(|n| n.min(i64::MAX as u64) as i64),
                e.thread,
                documents,
                seq,
                &h.hash.0[..],
                &hash.0[..],
                e.actor,
            ])?;
            let mut lineage = c.prepare_cached(
                "INSERT OR IGNORE INTO audit_lineage (tenant, document_id, seq) VALUES (?1, ?2, ?3)",
            )?;
            for d in &e.documents {
                lineage.execute(params![e.tenant, d, seq])?;
            }
            c.prepare_cached("UPDATE audit_chain SET seq = ?1, hash = ?2 WHERE id = 1")?
                .execute(params![seq, &hash.0[..]])?;
            Ok(())
        })
        .await
    }

    async fn query(&self, q: AuditQuery) -> StoreResult<Vec<AuditRecord>> {
        self.read_blocking(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {COLS} FROM audit_events
                 WHERE (?1 IS NULL OR tenant = ?1) AND (?2 IS NULL OR kind = ?2)
                   AND (?3 IS NULL OR request_id = ?3) AND (?4 IS NULL OR subject = ?4)
                   AND (?5 IS NULL OR ts >= ?5) AND (?6 IS NULL OR ts < ?6)
                 ORDER BY id DESC LIMIT ?7"
            ))?;
            let rows = stmt
                .query_map(
                    params![
                        q.tenant,
                        q.kind,
                        q.request_id,
                        q.subject,
                        q.since,
                        q.until,
                        q.limit
                    ],
                    audit_row,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn lineage(&self, q: LineageQuery) -> StoreResult<Vec<AuditRecord>> {
        self.read_blocking(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {COLS} FROM audit_events WHERE seq IN (
                    SELECT seq FROM audit_lineage
                    WHERE document_id = ?1 AND (?2 IS NULL OR tenant = ?2))
                 ORDER BY seq DESC LIMIT ?3"
            ))?;
            let rows = stmt
                .query_map(params![q.document_id, q.tenant, q.limit], audit_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn chain_page(&self, after: i64, limit: u32) -> StoreResult<Vec<AuditRecord>> {
        self.read_blocking(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {COLS} FROM audit_events WHERE seq > ?1 ORDER BY seq LIMIT ?2"
            ))?;
            let rows = stmt
                .query_map(params![after, limit], audit_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn chain_head(&self) -> StoreResult<Option<ChainHead>> {
        self.read_blocking(head).await
    }

    async fn lineage_rows(&self) -> StoreResult<u64> {
        self.read_blocking(|c| {
            Ok(c.query_row("SELECT count(*) FROM audit_lineage", [], |r| {
                r.get::<_, i64>(0)
            })?
            .max(0) as u64)
        })
        .await
    }

    async fn prune(&self, before: i64) -> StoreResult<u64> {
        self.write(move |c| {
            // Events written before the chain: by age.
            let mut n = c.execute(
                "DELETE FROM audit_events WHERE seq IS NULL AND ts < ?1",
                [before],
            )? as u64;
            // The chain is cut at its start only: up to the last record before the
            // first one that is still within retention.
            let keep_from: Option<i64> = c.query_row(
                "SELECT min(seq) FROM audit_events WHERE seq IS NOT NULL AND ts >= ?1",
                [before],
                |r| r.get(0),
            )?;
            let cut: Option<(i64, Vec<u8>)> = c
                .query_row(
                    "SELECT seq, hash FROM audit_events
                     WHERE seq IS NOT NULL AND (?1 IS NULL OR seq < ?1)
                     ORDER BY seq DESC LIMIT 1",
                    [keep_from],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            if let Some((last, hash)) = cut {
                n += c.execute(
                    "DELETE FROM audit_events WHERE seq IS NOT NULL AND seq <= ?1",
                    [last],
                )? as u64;
                c.execute("DELETE FROM audit_lineage WHERE seq <= ?1", [last])?;
                c.execute(
                    "UPDATE audit_chain SET pruned_seq = ?1, pruned_hash = ?2 WHERE id = 1",
                    params![last, hash],
                )?;
            }
            super::reclaim(c)?;
            Ok(n)
        })
        .await
    }
}
