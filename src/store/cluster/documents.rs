//! Documents, chunks, vectors (pgvector) and full text (tsvector) in PostgreSQL.
//!
//! As in the embedded store, an ACL is stored once per distinct label set and every
//! chunk carries its `acl_id`, so the visibility filter is `tenant = $ AND acl_id =
//! ANY($)` inside each query, never applied after ranking.
//!
//! Vectors live in one table per dimension (`vectors_<dim>`, created on first use) with
//! an HNSW index and a (tenant, acl_id) index. The plan depends on how many chunks the
//! caller may see (per-ACL counts kept at ingestion, summed over the visible ACLs):
//! * up to [`EXACT_MAX`]: exact search over the visible rows (the index scan is turned
//!   off for the query, so PostgreSQL reads them through the ACL index and sorts);
//! * above: HNSW with `hnsw.iterative_scan = strict_order`, which keeps scanning the
//!   graph until k visible rows are found in exact distance order (recall@10 0.996 at
//!   50 % of 100k clustered vectors, 3.3 ms); should it still come back short, the exact
//!   plan runs instead, so k visible rows always come back when k exist.
//!
//! Full text ranks with `ts_rank`, a function of the chunk's own words only: no
//! statistic of another tenant's or ACL's chunks moves a caller's ranking. Few visible
//! chunks ([`TEXT_SCAN_MAX`]) are each matched; otherwise the matches of the words come
//! from the GIN index and are filtered.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use pgvector::Vector;
use std::collections::HashMap;
use tokio_postgres::Row;

use super::{ClusterStore, DDL_LOCK, row, rows, timed};
use crate::access::{AccessScope, DocumentAdmin};
use crate::model::ChunkHit;
use crate::model::{DocumentMeta, DocumentRecord, IngestState};
use crate::store::{
    DocumentStore, IngestClaim, IngestFailure, IngestJob, IngestLease, NewChunk, NewDocument,
    Rankings, SearchQuery, StoreError, StoreResult,
};

/// Up to this many visible chunks, search exactly (BENCHMARKS.md: ~4 ms at 5,000 of
/// 100,000); above, HNSW with iterative scan. Not lower: on vectors without
/// neighbourhoods (uniformly random) HNSW's recall@10 at 5,000 of 10,000 is 0.6.
const EXACT_MAX: i64 = 20_000;

/// Up to this many visible chunks, full text matches each of them (read through the
/// ACL index); above, the chunks holding a word come from the full-text index first.
const TEXT_SCAN_MAX: i64 = 2_000;

/// Candidates HNSW keeps while searching (pgvector's default is 40); measured for
/// recall@10 in BENCHMARKS.md.
const EF_SEARCH: i64 = 100;

fn vec_table(dim: usize) -> String {
    format!("vectors_{dim}")
}

const DOC_COLS: &str = "id, title, body, acl, created_at, created_by, chunk_count, state, chunks_done, chunks_total, failure";
const META_COLS: &str = "id, title, acl, created_at, created_by, chunk_count, state, chunks_done, chunks_total, failure";

/// How long moving a document's staged chunks into the indexes may take.
const PUBLISH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// Key of the advisory lock under which jobs are claimed: the per-tenant bound is
/// counted and taken in one serial step.
const CLAIM_LOCK: i64 = 0x7061_6c69_696e_6a62; // "paliinjb"

/// The ingestion state in the four columns from `i` on.
fn state_at(r: &Row, i: usize) -> StoreResult<IngestState> {
    let name: String = r.try_get(i)?;
    IngestState::from_columns(
        &name,
        i64::from(r.try_get::<_, i32>(i + 1)?),
        i64::from(r.try_get::<_, i32>(i + 2)?),
        r.try_get(i + 3)?,
    )
    .ok_or_else(|| StoreError::Corrupt(format!("unknown document state {name:?}")))
}

fn acl_of(v: serde_json::Value) -> StoreResult<crate::access::Acl> {
    serde_json::from_value(v).map_err(|e| StoreError::Corrupt(format!("acl: {e}")))
}

fn doc_row(r: &Row) -> StoreResult<DocumentRecord> {
    Ok(DocumentRecord {
        id: r.try_get(0)?,
        title: r.try_get(1)?,
        text: r.try_get(2)?,
        acl: acl_of(r.try_get(3)?)?,
        created_at: r.try_get(4)?,
        created_by: r.try_get(5)?,
        chunk_count: r.try_get::<_, i32>(6)?.max(0) as u32,
        state: state_at(r, 7)?,
    })
}

fn meta_row(r: &Row) -> StoreResult<DocumentMeta> {
    Ok(DocumentMeta {
        id: r.try_get(0)?,
        title: r.try_get(1)?,
        acl: acl_of(r.try_get(2)?)?,
        created_at: r.try_get(3)?,
        created_by: r.try_get(4)?,
        chunk_count: r.try_get::<_, i32>(5)?.max(0) as u32,
        state: state_at(r, 6)?,
    })
}

/// The ACL ids of the scope's tenant that share a label with it.
async fn visible_acls(c: &impl GenericClient, scope: &AccessScope) -> StoreResult<Vec<i64>> {
    if scope.labels().is_empty() {
        return Ok(Vec::new());
    }
    rows(
        c,
        "SELECT id FROM acls WHERE tenant = $1 AND labels && $2::TEXT[] ORDER BY id",
        &[&scope.tenant(), &scope.labels()],
    )
    .await?
    .iter()
    .map(|r| Ok(r.try_get(0)?))
    .collect()
}

async fn acl_id_for(c: &impl GenericClient, tenant: &str, labels: &[String]) -> StoreResult<i64> {
    let labels = labels.to_vec();
    if let Some(r) = c
        .query_opt(
            "INSERT INTO acls (tenant, labels) VALUES ($1, $2)
             ON CONFLICT (tenant, labels) DO NOTHING RETURNING id",
            &[&tenant, &labels],
        )
        .await?
    {
        return Ok(r.try_get(0)?);
    }
    Ok(c.query_one(
        "SELECT id FROM acls WHERE tenant = $1 AND labels = $2",
        &[&tenant, &labels],
    )
    .await?
    .try_get(0)?)
}

/// The document's row, in `state`, counting `chunk_count` chunks; its ACL's id.
async fn insert_row(
    c: &impl GenericClient,
    doc: &NewDocument,
    chunk_count: i32,
    state: &IngestState,
) -> StoreResult<i64> {
    let acl_id = acl_id_for(c, doc.tenant(), doc.labels()).await?;
    let acl_json =
        serde_json::to_value(doc.acl()).map_err(|e| StoreError::Corrupt(format!("acl: {e}")))?;
    c.execute(
        "INSERT INTO documents (id, tenant, title, body, acl, acl_id, created_by, created_at, chunk_count, state)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &[
            &doc.id(),
            &doc.tenant(),
            &doc.title(),
            &doc.text(),
            &acl_json,
            &acl_id,
            &doc.created_by(),
            &doc.now(),
            &chunk_count,
            &state.name(),
        ],
    )
    .await?;
    Ok(acl_id)
}

/// Whether the document is leased to the worker (and still being ingested); the row
/// stays locked until the transaction ends, so a deletion waits for the step.
async fn holds(c: &impl GenericClient, lease: &IngestLease) -> StoreResult<bool> {
    Ok(row(
        c,
        "SELECT 1 FROM documents WHERE id = $1 AND lease_owner = $2
         AND state IN ('queued', 'embedding') FOR UPDATE",
        &[&lease.document_id, &lease.worker],
    )
    .await?
    .is_some())
}

/// Hits by internal chunk id, in the given order, with the given scores.
async fn load_hits(c: &impl GenericClient, ranked: &[(i64, f64)]) -> StoreResult<Vec<ChunkHit>> {
    if ranked.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = ranked.iter().map(|(id, _)| *id).collect();
    let found = rows(
        c,
        "SELECT c.id, c.public_id, c.document_id, d.title, c.text, c.tenant, a.labels
         FROM chunks c JOIN documents d ON d.id = c.document_id JOIN acls a ON a.id = c.acl_id
         WHERE c.id = ANY($1)",
        &[&ids],
    )
    .await?;
    let mut by_id: HashMap<i64, ChunkHit> = HashMap::with_capacity(found.len());
    for r in found {
        by_id.insert(
            r.try_get(0)?,
            ChunkHit {
                chunk_id: r.try_get(1)?,
                document_id: r.try_get(2)?,
                title: r.try_get(3)?,
                text: r.try_get(4)?,
                tenant: r.try_get(5)?,
                labels: r.try_get(6)?,
                score: 0.0,
            },
        );
    }
    Ok(ranked
        .iter()
        .filter_map(|(id, score)| {
            by_id.remove(id).map(|mut h| {
                h.score = *score;
                h
            })
        })
        .collect())
}

impl ClusterStore {
    /// Creates the vector table of one dimension, once per process (and safely when
    /// several nodes try at once: DDL runs under the advisory lock).
    async fn ensure_vec_table(&self, dim: usize) -> StoreResult<()> {
        if self
            .known_dims
            .lock()
            .map(|d| d.contains(&dim))
            .unwrap_or(false)
        {
            return Ok(());
        }
        let mut c = self.pg().await?;
        let tx = c.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&DDL_LOCK])
            .await?;
        let t = vec_table(dim);
        tx.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {t} (
                chunk_id  BIGINT PRIMARY KEY REFERENCES chunks(id) ON DELETE CASCADE,
                tenant    TEXT NOT NULL,
                acl_id    BIGINT NOT NULL,
                embedding vector({dim}) NOT NULL
            );
            CREATE INDEX IF NOT EXISTS {t}_hnsw ON {t} USING hnsw (embedding vector_l2_ops);
            CREATE INDEX IF NOT EXISTS {t}_acl ON {t} (tenant, acl_id);"
        ))
        .await?;
        tx.commit().await?;
        if let Ok(mut d) = self.known_dims.lock() {
            d.insert(dim);
        }
        Ok(())
    }

    async fn vec_table_exists(&self, c: &impl GenericClient, dim: usize) -> StoreResult<bool> {
        if self
            .known_dims
            .lock()
            .map(|d| d.contains(&dim))
            .unwrap_or(false)
        {
            return Ok(true);
        }
        let found = c
            .query_opt("SELECT to_regclass($1)::TEXT", &[&vec_table(dim)])
            .await?
            .and_then(|r| r.get::<_, Option<String>>(0))
            .is_some();
        if found && let Ok(mut d) = self.known_dims.lock() {
            d.insert(dim);
        }
        Ok(found)
    }
}

/// How many chunks the caller may see: kept per ACL at ingestion, so no rows are
/// counted here.
struct Visibility {
    visible: i64,
}

async fn visibility(
    c: &impl GenericClient,
    scope: &AccessScope,
    acls: &[i64],
) -> StoreResult<Visibility> {
    let visible = row(
        c,
        "SELECT COALESCE(sum(chunk_count), 0)::BIGINT FROM acls WHERE tenant = $1 AND id = ANY($2)",
        &[&scope.tenant(), &acls],
    )
    .await?
    .map(|r| r.try_get(0))
    .transpose()?
    .unwrap_or(0);
    Ok(Visibility { visible })
}

/// Exact top k of the visible vectors, or HNSW with iterative scan when there are many.
async fn knn(
    store: &ClusterStore,
    c: &mut deadpool_postgres::Object,
    scope: &AccessScope,
    acls: &[i64],
    seen: &Visibility,
    query: &[f32],
    k: usize,
) -> StoreResult<Vec<(i64, f64)>> {
    let dim = query.len();
    if !store.vec_table_exists(&*c, dim).await? {
        return Ok(Vec::new());
    }
    let t = vec_table(dim);
    let v = Vector::from(query.to_vec());
    let k = k as i64;
    let visible = seen.visible;
    if visible == 0 {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT chunk_id, (embedding <-> $3)::FLOAT8 FROM {t}
         WHERE tenant = $1 AND acl_id = ANY($2) ORDER BY embedding <-> $3, chunk_id LIMIT $4"
    );
    let tenant = scope.tenant();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [&tenant, &acls, &v, &k];
    let tx = c.transaction().await?;
    if visible > EXACT_MAX {
        // The graph, walked until k visible rows are found in exact distance order.
        // The planner is kept from a full sort of the visible rows, which it picks
        // when its statistics lag behind a freshly loaded table.
        tx.batch_execute(&format!(
            "SET LOCAL hnsw.iterative_scan = strict_order; SET LOCAL hnsw.ef_search = {};
             SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off;
             SET LOCAL enable_sort = off",
            EF_SEARCH.max(k * 2).min(1000)
        ))
        .await?;
        // The secondary sort key would stop the HNSW index from serving the order.
        let hnsw = format!(
            "SELECT chunk_id, (embedding <-> $3)::FLOAT8 FROM {t}
             WHERE tenant = $1 AND acl_id = ANY($2) ORDER BY embedding <-> $3 LIMIT $4"
        );
        let found = rows(&tx, &hnsw, &params).await?;
        if found.len() as i64 >= k.min(visible) {
            tx.commit().await?;
            return found
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect();
        }
    }
    // Exact: no index may serve the ORDER BY, so every visible row is ranked.
    tx.batch_execute(
        "SET LOCAL enable_indexscan = off; SET LOCAL enable_seqscan = on;
         SET LOCAL enable_bitmapscan = on; SET LOCAL enable_sort = on",
    )
    .await?;
    let found = rows(&tx, &sql, &params).await?;
    tx.commit().await?;
    found
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// Full-text ranking within the visible chunks. Each term is its own bound
/// `plainto_tsquery` (OR-ed): user text never becomes tsquery syntax.
async fn text_rank(
    c: &mut deadpool_postgres::Object,
    scope: &AccessScope,
    acls: &[i64],
    seen: &Visibility,
    terms: &[String],
    k: usize,
) -> StoreResult<Vec<(i64, f64)>> {
    if terms.is_empty() || seen.visible == 0 {
        return Ok(Vec::new());
    }
    let q = (0..terms.len())
        .map(|i| format!("plainto_tsquery('simple', ${})", i + 4))
        .collect::<Vec<_>>()
        .join(" || ");
    // Materialised, so that each plan is the one chosen here whatever the planner's
    // statistics say (right after a bulk load they say a tenant has two chunks).
    let sql = if seen.visible <= TEXT_SCAN_MAX {
        format!(
            "WITH v AS MATERIALIZED (
                 SELECT id, tsv FROM chunks WHERE tenant = $1 AND acl_id = ANY($2))
             SELECT v.id, ts_rank(v.tsv, q.q)::FLOAT8 AS score
             FROM v, (SELECT {q} AS q) q WHERE v.tsv @@ q.q
             ORDER BY score DESC, v.id LIMIT $3"
        )
    } else {
        format!(
            "WITH m AS MATERIALIZED (
                 SELECT c.id, c.tenant, c.acl_id, c.tsv FROM chunks c, (SELECT {q} AS q) q
                 WHERE c.tsv @@ q.q)
             SELECT m.id, ts_rank(m.tsv, q.q)::FLOAT8 AS score
             FROM m, (SELECT {q} AS q) q WHERE m.tenant = $1 AND m.acl_id = ANY($2)
             ORDER BY score DESC, m.id LIMIT $3"
        )
    };
    let k = k as i64;
    let tenant = scope.tenant();
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&tenant, &acls, &k];
    for t in terms {
        params.push(t);
    }
    let tx = c.transaction().await?;
    // The words' matches from the GIN index, not a scan of every chunk: a RAG question
    // holds few common words once stopwords are gone (1.2 ms against 11 ms over 10,000
    // chunks, BENCHMARKS.md).
    tx.batch_execute("SET LOCAL enable_seqscan = off").await?;
    let found = rows(&tx, &sql, &params).await?;
    tx.commit().await?;
    found
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

#[async_trait]
impl DocumentStore for ClusterStore {
    async fn insert_document(&self, doc: NewDocument) -> StoreResult<DocumentRecord> {
        let dims: std::collections::BTreeSet<usize> = doc
            .chunks()
            .iter()
            .filter_map(|c| c.embedding.as_ref().map(Vec::len))
            .collect();
        for dim in dims {
            timed(self.ensure_vec_table(dim)).await?;
        }
        timed(async {
            let mut c = self.pg().await?;
            let tx = c.transaction().await?;
            let chunks = doc.chunks();
            let count = chunks.len() as i32;
            let acl_id = insert_row(&tx, &doc, count, &IngestState::Ready).await?;
            // All chunks in one statement (arrays unnested), ids back in order.
            let public: Vec<&str> = chunks.iter().map(|c| c.id.as_str()).collect();
            let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
            let seqs: Vec<i32> = (0..count).collect();
            let rows = tx
                .query(
                    "INSERT INTO chunks (public_id, document_id, tenant, acl_id, seq, text)
                     SELECT p, $2, $3, $4, s, t FROM unnest($1::TEXT[], $5::INT4[], $6::TEXT[]) AS u(p, s, t)
                     RETURNING id, seq",
                    &[&public, &doc.id(), &doc.tenant(), &acl_id, &seqs, &texts],
                )
                .await?;
            let mut ids = vec![0i64; chunks.len()];
            for r in rows {
                let seq: i32 = r.try_get(1)?;
                if let Some(slot) = ids.get_mut(seq as usize) {
                    *slot = r.try_get(0)?;
                }
            }
            let mut by_dim: HashMap<usize, (Vec<i64>, Vec<Vector>)> = HashMap::new();
            for (chunk, id) in chunks.iter().zip(&ids) {
                if let Some(e) = &chunk.embedding {
                    let entry = by_dim.entry(e.len()).or_default();
                    entry.0.push(*id);
                    entry.1.push(Vector::from(e.clone()));
                }
            }
            for (dim, (ids, vectors)) in by_dim {
                tx.execute(
                    &format!(
                        "INSERT INTO {} (chunk_id, tenant, acl_id, embedding)
                         SELECT i, $2, $3, v FROM unnest($1::INT8[], $4::vector[]) AS u(i, v)",
                        vec_table(dim)
                    ),
                    &[&ids, &doc.tenant(), &acl_id, &vectors],
                )
                .await?;
            }
            // Last, so that concurrent ingestions into one ACL wait on its row briefly.
            tx.execute(
                "UPDATE acls SET chunk_count = chunk_count + $2 WHERE id = $1",
                &[&acl_id, &i64::from(count)],
            )
            .await?;
            tx.commit().await?;
            Ok(doc.record(chunks.len() as u32, IngestState::Ready))
        })
        .await
    }

    async fn enqueue_document(&self, doc: NewDocument) -> StoreResult<DocumentRecord> {
        timed(async {
            let mut c = self.pg().await?;
            let tx = c.transaction().await?;
            // A job's chunks are made by its worker: any given here are not stored.
            insert_row(&tx, &doc, 0, &IngestState::Queued).await?;
            tx.commit().await?;
            Ok(doc.record(0, IngestState::Queued))
        })
        .await
    }

    async fn claim_ingest(&self, claim: IngestClaim) -> StoreResult<Option<IngestJob>> {
        timed(async {
            let mut c = self.pg().await?;
            let tx = c.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CLAIM_LOCK])
                .await?;
            let per_tenant = i64::from(claim.per_tenant);
            let Some(r) = row(
                &tx,
                "SELECT d.id, d.body, d.attempts FROM documents d
                 WHERE d.state IN ('queued', 'embedding') AND d.lease_until <= $1
                   AND ($2::TEXT IS NULL OR d.id = $2)
                   AND (SELECT count(*) FROM documents o
                        WHERE o.tenant = d.tenant AND o.state IN ('queued', 'embedding')
                          AND o.lease_owner IS NOT NULL AND o.lease_until > $1) < $3
                 ORDER BY d.created_at, d.id LIMIT 1
                 FOR UPDATE SKIP LOCKED",
                &[&claim.now, &claim.only, &per_tenant],
            )
            .await?
            else {
                return Ok(None);
            };
            let id: String = r.try_get(0)?;
            let text: String = r.try_get(1)?;
            let attempts: i32 = r.try_get(2)?;
            let done: i64 = tx
                .query_one(
                    "SELECT count(*) FROM ingest_chunks WHERE document_id = $1",
                    &[&id],
                )
                .await?
                .try_get(0)?;
            tx.execute(
                "UPDATE documents SET state = 'embedding', chunks_done = $2, lease_owner = $3,
                        lease_until = $4
                 WHERE id = $1",
                &[
                    &id,
                    &(done as i32),
                    &claim.worker,
                    &(claim.now + claim.lease_ms),
                ],
            )
            .await?;
            tx.commit().await?;
            Ok(Some(IngestJob {
                lease: IngestLease {
                    document_id: id,
                    worker: claim.worker.clone(),
                },
                text,
                done: u32::try_from(done).unwrap_or(0),
                attempts: u32::try_from(attempts).unwrap_or(0),
            }))
        })
        .await
    }

    async fn stage_chunks(
        &self,
        lease: &IngestLease,
        first: u32,
        total: u32,
        chunks: Vec<NewChunk>,
        lease_until: i64,
    ) -> StoreResult<bool> {
        timed(async {
            let mut c = self.pg().await?;
            let tx = c.transaction().await?;
            if !holds(&tx, lease).await? {
                return Ok(false);
            }
            let first = i32::try_from(first).unwrap_or(i32::MAX);
            let seqs: Vec<i32> = (0..chunks.len() as i32).map(|i| first + i).collect();
            let public: Vec<&str> = chunks.iter().map(|c| c.id.as_str()).collect();
            let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
            let vectors: Vec<Option<Vector>> = chunks
                .iter()
                .map(|c| c.embedding.clone().map(Vector::from))
                .collect();
            tx.execute(
                "INSERT INTO ingest_chunks (document_id, seq, public_id, text, embedding)
                 SELECT $1, s, p, t, v
                 FROM unnest($2::INT4[], $3::TEXT[], $4::TEXT[], $5::vector[]) AS u(s, p, t, v)
                 ON CONFLICT (document_id, seq) DO NOTHING",
                &[&lease.document_id, &seqs, &public, &texts, &vectors],
            )
            .await?;
            tx.execute(
                "UPDATE documents SET
                    chunks_done = (SELECT count(*) FROM ingest_chunks WHERE document_id = $1),
                    chunks_total = $2, lease_until = $3
                 WHERE id = $1",
                &[
                    &lease.document_id,
                    &i32::try_from(total).unwrap_or(i32::MAX),
                    &lease_until,
                ],
            )
            .await?;
            tx.commit().await?;
            Ok(true)
        })
        .await
    }

    async fn publish_ingest(&self, lease: &IngestLease) -> StoreResult<bool> {
        let dims: Vec<i32> = timed(async {
            let c = self.pg().await?;
            c.query(
                "SELECT DISTINCT vector_dims(embedding) FROM ingest_chunks
                 WHERE document_id = $1 AND embedding IS NOT NULL",
                &[&lease.document_id],
            )
            .await?
            .iter()
            .map(|r| Ok(r.try_get(0)?))
            .collect()
        })
        .await?;
        for dim in &dims {
            timed(self.ensure_vec_table(*dim as usize)).await?;
        }
        // Thousands of chunks go into the HNSW graph here: more than one call's
        // deadline, and no request waits on it.
        let publish = async {
            let mut c = self.pg().await?;
            let tx = c.transaction().await?;
            let Some(r) = row(
                &tx,
                "SELECT tenant, acl_id FROM documents WHERE id = $1 AND lease_owner = $2
                 AND state IN ('queued', 'embedding') FOR UPDATE",
                &[&lease.document_id, &lease.worker],
            )
            .await?
            else {
                return Ok(false);
            };
            let tenant: String = r.try_get(0)?;
            let acl_id: i64 = r.try_get(1)?;
            let count = tx
                .execute(
                    "INSERT INTO chunks (public_id, document_id, tenant, acl_id, seq, text)
                     SELECT public_id, document_id, $2, $3, seq, text FROM ingest_chunks
                     WHERE document_id = $1 ORDER BY seq",
                    &[&lease.document_id, &tenant, &acl_id],
                )
                .await?;
            for dim in &dims {
                tx.execute(
                    &format!(
                        "INSERT INTO {} (chunk_id, tenant, acl_id, embedding)
                         SELECT c.id, $2, $3, s.embedding FROM chunks c
                         JOIN ingest_chunks s ON s.document_id = c.document_id AND s.seq = c.seq
                         WHERE c.document_id = $1 AND vector_dims(s.embedding) = $4",
                        vec_table(*dim as usize)
                    ),
                    &[&lease.document_id, &tenant, &acl_id, dim],
                )
                .await?;
            }
            tx.execute(
                "DELETE FROM ingest_chunks WHERE document_id = $1",
                &[&lease.document_id],
            )
            .await?;
            let n = i32::try_from(count).unwrap_or(i32::MAX);
            tx.execute(
                "UPDATE documents SET state = 'ready', chunk_count = $2, chunks_done = $2,
                        chunks_total = $2, lease_owner = NULL, lease_until = 0
                 WHERE id = $1",
                &[&lease.document_id, &n],
            )
            .await?;
            tx.execute(
                "UPDATE acls SET chunk_count = chunk_count + $2 WHERE id = $1",
                &[&acl_id, &(count as i64)],
            )
            .await?;
            tx.commit().await?;
            Ok(true)
        };
        tokio::time::timeout(PUBLISH_TIMEOUT, publish)
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("publishing timed out".into())))
    }

    async fn fail_ingest(&self, lease: &IngestLease, failure: IngestFailure) -> StoreResult<()> {
        timed(async {
            let mut c = self.pg().await?;
            let tx = c.transaction().await?;
            if !holds(&tx, lease).await? {
                return Ok(());
            }
            match &failure {
                IngestFailure::RetryAt(at) => {
                    tx.execute(
                        "UPDATE documents SET state = 'queued', lease_owner = NULL,
                                lease_until = $2, attempts = attempts + 1
                         WHERE id = $1",
                        &[&lease.document_id, at],
                    )
                    .await?;
                }
                IngestFailure::GiveUp(reason) => {
                    tx.execute(
                        "DELETE FROM ingest_chunks WHERE document_id = $1",
                        &[&lease.document_id],
                    )
                    .await?;
                    tx.execute(
                        "UPDATE documents SET state = 'failed', failure = $2, lease_owner = NULL,
                                lease_until = 0, attempts = attempts + 1
                         WHERE id = $1",
                        &[&lease.document_id, reason],
                    )
                    .await?;
                }
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    async fn document_meta(
        &self,
        admin: &DocumentAdmin,
        id: &str,
    ) -> StoreResult<Option<DocumentMeta>> {
        timed(async {
            let c = self.pg().await?;
            c.query_opt(
                &format!("SELECT {META_COLS} FROM documents WHERE id = $1 AND tenant = $2"),
                &[&id, &admin.tenant()],
            )
            .await?
            .map(|r| meta_row(&r))
            .transpose()
        })
        .await
    }

    async fn list_documents(&self, scope: &AccessScope) -> StoreResult<Vec<DocumentRecord>> {
        timed(async {
            let c = self.pg().await?;
            let acls = visible_acls(&c, scope).await?;
            if acls.is_empty() {
                return Ok(Vec::new());
            }
            c.query(
                &format!(
                    "SELECT {DOC_COLS} FROM documents WHERE tenant = $1 AND acl_id = ANY($2)
                     ORDER BY created_at DESC"
                ),
                &[&scope.tenant(), &acls],
            )
            .await?
            .iter()
            .map(doc_row)
            .collect()
        })
        .await
    }

    async fn document(&self, scope: &AccessScope, id: &str) -> StoreResult<Option<DocumentRecord>> {
        timed(async {
            let c = self.pg().await?;
            let acls = visible_acls(&c, scope).await?;
            if acls.is_empty() {
                return Ok(None);
            }
            c.query_opt(
                &format!(
                    "SELECT {DOC_COLS} FROM documents
                     WHERE id = $1 AND tenant = $2 AND acl_id = ANY($3)"
                ),
                &[&id, &scope.tenant(), &acls],
            )
            .await?
            .map(|r| doc_row(&r))
            .transpose()
        })
        .await
    }

    async fn passage(
        &self,
        scope: &AccessScope,
        document_id: &str,
        chunk_id: &str,
    ) -> StoreResult<Option<String>> {
        timed(async {
            let c = self.pg().await?;
            let acls = visible_acls(&c, scope).await?;
            if acls.is_empty() {
                return Ok(None);
            }
            Ok(row(
                &c,
                "SELECT text FROM chunks
                 WHERE public_id = $1 AND document_id = $2 AND tenant = $3 AND acl_id = ANY($4)",
                &[&chunk_id, &document_id, &scope.tenant(), &acls],
            )
            .await?
            .map(|r| r.try_get(0))
            .transpose()?)
        })
        .await
    }

    async fn list_all_documents(&self, admin: &DocumentAdmin) -> StoreResult<Vec<DocumentMeta>> {
        timed(async {
            let c = self.pg().await?;
            c.query(
                &format!(
                    "SELECT {META_COLS} FROM documents WHERE tenant = $1 ORDER BY created_at DESC"
                ),
                &[&admin.tenant()],
            )
            .await?
            .iter()
            .map(meta_row)
            .collect()
        })
        .await
    }

    async fn delete_document(&self, admin: &DocumentAdmin, id: &str) -> StoreResult<bool> {
        timed(async {
            let c = self.pg().await?;
            // Chunks and their vectors go with it (ON DELETE CASCADE), and its ACL's
            // count goes down, in one statement.
            let n = c
                .query(
                    "WITH d AS (
                        DELETE FROM documents WHERE id = $1 AND tenant = $2
                        RETURNING acl_id, chunk_count
                     )
                     UPDATE acls SET chunk_count = acls.chunk_count - d.chunk_count
                     FROM d WHERE acls.id = d.acl_id RETURNING acls.id",
                    &[&id, &admin.tenant()],
                )
                .await?
                .len();
            Ok(n == 1)
        })
        .await
    }

    async fn readable_ids(
        &self,
        scope: &AccessScope,
        ids: Vec<String>,
    ) -> StoreResult<std::collections::HashSet<String>> {
        timed(async {
            let c = self.pg().await?;
            let acls = visible_acls(&c, scope).await?;
            if acls.is_empty() || ids.is_empty() {
                return Ok(Default::default());
            }
            c.query(
                "SELECT id FROM documents WHERE tenant = $1 AND id = ANY($2) AND acl_id = ANY($3)",
                &[&scope.tenant(), &ids, &acls],
            )
            .await?
            .iter()
            .map(|r| Ok(r.try_get(0)?))
            .collect()
        })
        .await
    }

    async fn any_visible(&self, scope: &AccessScope) -> StoreResult<bool> {
        timed(async {
            let c = self.pg().await?;
            Ok(!visible_acls(&c, scope).await?.is_empty())
        })
        .await
    }

    async fn search(&self, scope: &AccessScope, query: SearchQuery) -> StoreResult<Rankings> {
        timed(async {
            let mut c = self.pg().await?;
            let acls = visible_acls(&c, scope).await?;
            if acls.is_empty() || query.k == 0 {
                return Ok(Rankings::default());
            }
            let seen = visibility(&c, scope, &acls).await?;
            let vector = match &query.vector {
                Some(v) => knn(self, &mut c, scope, &acls, &seen, v, query.k).await?,
                None => Vec::new(),
            };
            let text = text_rank(&mut c, scope, &acls, &seen, &query.terms, query.k).await?;
            Ok(Rankings {
                vector: load_hits(&c, &vector).await?,
                text: load_hits(&c, &text).await?,
            })
        })
        .await
    }
}
