//! The audit trail in PostgreSQL: a hash chain shared by every node. A node's appends
//! are written in batches (`AuditWriter`); a batch locks the chain head's one row
//! (`SELECT … FOR UPDATE`), so the batches of all nodes are serialised into one gapless
//! chain; the lock is held for the batch's inserts and one update.

use async_trait::async_trait;
use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};
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

/// Most appends written in one transaction.
const MAX_BATCH: usize = 256;

/// Writes the appends of this node in batches: whatever arrived while the previous
/// batch was being committed goes in the next, under one lock of the chain head and one
/// commit (one WAL flush) for all of them. One append at a time held the head for four
/// round trips and a flush, so every node together wrote a few hundred events a second;
/// batched, the rate grows with the number waiting. Each caller still returns only once
/// its own event is committed (or with the batch's error: fail closed).
#[derive(Clone)]
pub(super) struct AuditWriter {
    queue: mpsc::Sender<Pending>,
}

struct Pending {
    event: AuditEvent,
    done: oneshot::Sender<StoreResult<()>>,
}

impl AuditWriter {
    pub(super) fn start(pg: Pool) -> AuditWriter {
        let (queue, mut arrivals) = mpsc::channel::<Pending>(4 * MAX_BATCH);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while arrivals.recv_many(&mut batch, MAX_BATCH).await > 0 {
                let result = timed(append_batch(&pg, &batch)).await;
                for p in batch.drain(..) {
                    let _ = p.done.send(match &result {
                        Ok(()) => Ok(()),
                        Err(e) => Err(e.again()),
                    });
                }
            }
        });
        AuditWriter { queue }
    }

    async fn append(&self, event: AuditEvent) -> StoreResult<()> {
        let stopped = || StoreError::Unavailable("audit writer stopped".into());
        let (done, committed) = oneshot::channel();
        self.queue
            .send(Pending { event, done })
            .await
            .map_err(|_| stopped())?;
        // The batch runs under its own deadline; this one only bounds the queue.
        timed(async { committed.await.unwrap_or_else(|_| Err(stopped())) }).await
    }
}

/// One transaction: the head locked (`FOR UPDATE`: the other nodes' writers wait), each
/// event chained to the one before, the inserts pipelined on the connection, the head
/// moved to the last, one commit.
async fn append_batch(pg: &Pool, batch: &[Pending]) -> StoreResult<()> {
    let mut c = pg.get().await?;
    let tx = c.transaction().await?;
    let head = tx
        .query_opt(
            "SELECT seq, hash, pruned_seq, pruned_hash FROM audit_chain WHERE id = 1 FOR UPDATE",
            &[],
        )
        .await?
        .ok_or_else(|| StoreError::Corrupt("audit chain head missing".into()))?;
    let head = head_row(&head)?;
    let insert = tx
        .prepare_cached(&format!(
            "INSERT INTO audit_events ({AUDIT_COLS})
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17)"
        ))
        .await?;
    let lineage = tx
        .prepare_cached(
            "INSERT INTO audit_lineage (tenant, document_id, seq)
             SELECT $1, d, $3 FROM unnest($2::TEXT[]) AS d ON CONFLICT DO NOTHING",
        )
        .await?;
    struct Row<'a> {
        e: &'a AuditEvent,
        seq: i64,
        prev: ChainHash,
        hash: ChainHash,
        count: Option<i64>,
        documents: Option<&'a Vec<String>>,
    }
    let mut rows = Vec::with_capacity(batch.len());
    let (mut seq, mut prev) = (head.seq, head.hash);
    for p in batch {
        let e = &p.event;
        seq += 1;
        let hash = e.chain_hash(&prev, seq);
        rows.push(Row {
            e,
            seq,
            prev,
            hash,
            count: e.count.map(|n| n.min(i64::MAX as u64) as i64),
            documents: (!e.documents.is_empty()).then_some(&e.documents),
        });
        prev = hash;
    }
    let kinds: Vec<&str> = rows.iter().map(|r| r.e.kind.as_str()).collect();
    let writes = rows.iter().zip(&kinds).map(|(r, kind)| {
        let (e, insert, lineage, tx) = (r.e, &insert, &lineage, &tx);
        async move {
            tx.execute(
                insert,
                &[
                    &e.ts,
                    kind,
                    &e.tenant,
                    &e.subject,
                    &e.username,
                    &e.session_id,
                    &e.ip,
                    &e.reason,
                    &e.resource,
                    &e.request_id,
                    &r.count,
                    &e.thread,
                    &r.documents,
                    &r.seq,
                    &&r.prev.0[..],
                    &&r.hash.0[..],
                    &e.actor,
                ],
            )
            .await?;
            if r.documents.is_some() {
                tx.execute(lineage, &[&e.tenant, &e.documents, &r.seq])
                    .await?;
            }
            Ok::<_, tokio_postgres::Error>(())
        }
    });
    futures_util::future::try_join_all(writes).await?;
    tx.execute(
        "UPDATE audit_chain SET seq = $1, hash = $2 WHERE id = 1",
        &[&seq, &&prev.0[..]],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

#[async_trait]
impl AuditStore for ClusterStore {
    async fn append(&self, e: &AuditEvent) -> StoreResult<()> {
        self.audit.append(e.clone()).await
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
