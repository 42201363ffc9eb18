//! The audit trail in PostgreSQL: a hash chain shared by every node. An append locks
//! the chain head's one row (`SELECT … FOR UPDATE`), so appends from all nodes are
//! serialised into one gapless chain; the lock is held for one insert and one update.

use async_trait::async_trait;
use tokio_postgres::Row;

use super::{ClusterStore, timed};
use crate::model::{AuditEvent, AuditKind, AuditRecord, ChainHash};
use crate::store::{AuditQuery, AuditStore, ChainHead, LineageQuery, StoreError, StoreResult};

const AUDIT_COLS: &str = "ts, kind, tenant, subject, username, session_id, ip, reason, resource, \
                          request_id, count, thread, documents, seq, prev_hash, hash, actor";

fn hash_col(r: &Row, i: usize) -> StoreResult<Option<ChainHash>> {
    match r.try_get::<_, Option<Vec<u8>>>(i)? {
        None => Ok(None),
        Some(b) => ChainHash::from_slice(&b)
            .map(Some)
            .ok_or_else(|| StoreError::Corrupt("audit hash length".into())),
    }
}

fn audit_row(r: &Row) -> StoreResult<AuditRecord> {
    let kind: String = r.try_get(1)?;
    let kind: AuditKind = serde_json::from_value(serde_json::Value::String(kind.clone()))
        .map_err(|_| StoreError::Corrupt(format!("audit kind {kind}")))?;
    Ok(AuditRecord {
        event: AuditEvent {
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
            thread: r.try_get(11)?,
            documents: r.try_get::<_, Option<Vec<String>>>(12)?.unwrap_or_default(),
            actor: r.try_get(16)?,
        },
        seq: r.try_get(13)?,
        prev_hash: hash_col(r, 14)?,
        hash: hash_col(r, 15)?,
    })
}

fn head_row(r: &Row) -> StoreResult<ChainHead> {
    let bad = || StoreError::Corrupt("audit chain head".into());
    Ok(ChainHead {
        seq: r.try_get(0)?,
        hash: ChainHash::from_slice(&r.try_get::<_, Vec<u8>>(1)?).ok_or_else(bad)?,
        pruned_seq: r.try_get(2)?,
        pruned_hash: ChainHash::from_slice(&r.try_get::<_, Vec<u8>>(3)?).ok_or_else(bad)?,
    })
}

#[async_trait]
impl AuditStore for ClusterStore {
    async fn append(&self, e: &AuditEvent) -> StoreResult<()> {
        timed(async {
            let mut c = self.pg().await?;
            let tx = c.transaction().await?;
            let head = tx
                .query_opt(
                    "SELECT seq, hash, pruned_seq, pruned_hash FROM audit_chain WHERE id = 1 FOR UPDATE",
                    &[],
                )
                .await?
                .ok_or_else(|| StoreError::Corrupt("audit chain head missing".into()))?;
            let h = head_row(&head)?;
            let seq = h.seq + 1;
            let hash = e.chain_hash(&h.hash, seq);
            let count = e.count.map(|n| n.min(i64::MAX as u64) as i64);
            let documents = (!e.documents.is_empty()).then_some(&e.documents);
            let insert = tx
                .prepare_cached(&format!(
                    "INSERT INTO audit_events ({AUDIT_COLS})
                     VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17)"
                ))
                .await?;
            tx.execute(
                &insert,
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
                    &e.thread,
                    &documents,
                    &seq,
                    &&h.hash.0[..],
                    &&hash.0[..],
                    &e.actor,
                ],
            )
            .await?;
            if !e.documents.is_empty() {
                tx.execute(
                    "INSERT INTO audit_lineage (tenant, document_id, seq)
                     SELECT $1, d, $3 FROM unnest($2::TEXT[]) AS d ON CONFLICT DO NOTHING",
                    &[&e.tenant, &e.documents, &seq],
                )
                .await?;
            }
            tx.execute(
                "UPDATE audit_chain SET seq = $1, hash = $2 WHERE id = 1",
                &[&seq, &&hash.0[..]],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    async fn query(&self, q: AuditQuery) -> StoreResult<Vec<AuditRecord>> {
        timed(async {
            let c = self.pg().await?;
            c.query(
                &format!(
                    "SELECT {AUDIT_COLS} FROM audit_events
                     WHERE ($1::TEXT IS NULL OR tenant = $1) AND ($2::TEXT IS NULL OR kind = $2)
                       AND ($3::TEXT IS NULL OR request_id = $3)
                       AND ($4::TEXT IS NULL OR subject = $4)
                       AND ($5::BIGINT IS NULL OR ts >= $5) AND ($6::BIGINT IS NULL OR ts < $6)
                     ORDER BY id DESC LIMIT $7"
                ),
                &[
                    &q.tenant,
                    &q.kind,
                    &q.request_id,
                    &q.subject,
                    &q.since,
                    &q.until,
                    &i64::from(q.limit),
                ],
            )
            .await?
            .iter()
            .map(audit_row)
            .collect()
        })
        .await
    }

    async fn lineage(&self, q: LineageQuery) -> StoreResult<Vec<AuditRecord>> {
        timed(async {
            let c = self.pg().await?;
            c.query(
                &format!(
                    "SELECT {AUDIT_COLS} FROM audit_events WHERE seq IN (
                        SELECT seq FROM audit_lineage
                        WHERE document_id = $1 AND ($2::TEXT IS NULL OR tenant = $2))
                     ORDER BY seq DESC LIMIT $3"
                ),
                &[&q.document_id, &q.tenant, &i64::from(q.limit)],
            )
            .await?
            .iter()
            .map(audit_row)
            .collect()
        })
        .await
    }

    async fn chain_page(&self, after: i64, limit: u32) -> StoreResult<Vec<AuditRecord>> {
        timed(async {
            let c = self.pg().await?;
            c.query(
                &format!(
                    "SELECT {AUDIT_COLS} FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2"
                ),
                &[&after, &i64::from(limit)],
            )
            .await?
            .iter()
            .map(audit_row)
            .collect()
        })
        .await
    }

    async fn chain_head(&self) -> StoreResult<Option<ChainHead>> {
        timed(async {
            let c = self.pg().await?;
            c.query_opt(
                "SELECT seq, hash, pruned_seq, pruned_hash FROM audit_chain WHERE id = 1",
                &[],
            )
            .await?
            .as_ref()
            .map(head_row)
            .transpose()
        })
        .await
    }

    async fn lineage_rows(&self) -> StoreResult<u64> {
        timed(async {
            let c = self.pg().await?;
            let n: i64 = c
                .query_one("SELECT count(*) FROM audit_lineage", &[])
                .await?
                .try_get(0)?;
            Ok(n.max(0) as u64)
        })
        .await
    }

    async fn prune(&self, before: i64) -> StoreResult<u64> {
        timed(async {
            let mut c = self.pg().await?;
            let tx = c.transaction().await?;
            // Appends wait while the start of the chain is cut.
            tx.query_opt("SELECT 1 FROM audit_chain WHERE id = 1 FOR UPDATE", &[])
                .await?;
            let mut n = tx
                .execute(
                    "DELETE FROM audit_events WHERE seq IS NULL AND ts < $1",
                    &[&before],
                )
                .await?;
            let keep_from: Option<i64> = tx
                .query_one(
                    "SELECT min(seq) FROM audit_events WHERE seq IS NOT NULL AND ts >= $1",
                    &[&before],
                )
                .await?
                .try_get(0)?;
            let cut = tx
                .query_opt(
                    "SELECT seq, hash FROM audit_events
                     WHERE seq IS NOT NULL AND ($1::BIGINT IS NULL OR seq < $1)
                     ORDER BY seq DESC LIMIT 1",
                    &[&keep_from],
                )
                .await?;
            if let Some(row) = cut {
                let last: i64 = row.try_get(0)?;
                let hash: Vec<u8> = row.try_get(1)?;
                n += tx
                    .execute(
                        "DELETE FROM audit_events WHERE seq IS NOT NULL AND seq <= $1",
                        &[&last],
                    )
                    .await?;
                tx.execute("DELETE FROM audit_lineage WHERE seq <= $1", &[&last])
                    .await?;
                tx.execute(
                    "UPDATE audit_chain SET pruned_seq = $1, pruned_hash = $2 WHERE id = 1",
                    &[&last, &hash],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(n)
        })
        .await
    }
}
