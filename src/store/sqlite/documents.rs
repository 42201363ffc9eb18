//! Documents, chunks and vectors (sqlite-vec) in SQLite.
//!
//! An ACL is stored once per distinct label set (`acls`); a chunk carries its
//! document's `acl_id`, so the visibility filter is a set of integers inside the KNN and
//! BM25 queries, resolved from the caller's labels once per search.
//!
//! Vectors are stored in one vec0 table per dimension, partitioned by (tenant, ACL)
//! and carrying the `acl_id` as metadata. They are searched in memory (`flat.rs`): the
//! tenant's vectors as 8-bit codes, scanned once with the visible ACL ids as the
//! filter, the best candidates re-scored exactly — the exact top k of the visible set
//! (no post-filter shortfall).
//!
//! Full text is searched in memory too (`lexical.rs`): an inverted index of the
//! tenant's chunk rows, ranked by BM25 with the statistics of the caller's visible
//! chunks only.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::epoch::{AddedChunk, ChunkChange, bump_epoch};
use super::flat::blob_f32;
use super::{SqliteStore, placeholders};
use crate::access::{AccessScope, DocumentAdmin};
use crate::model::ChunkHit;
use crate::model::{DocumentMeta, DocumentRecord, IngestState};
use crate::store::{
    DocumentStore, IngestClaim, IngestFailure, IngestJob, IngestLease, NewChunk, NewDocument,
    Rankings, SearchQuery, StoreResult,
};

/// Vectors per vec0 storage chunk. vec0 allocates whole chunks per partition, so with
/// the default (1024) a tenant with 2,000 small ACL partitions holds 2,000 mostly empty
/// 1.5 MiB blobs, and a KNN over 100 of them reads 150 MiB (BENCHMARKS.md). 64 keeps the
/// waste per partition small and the per-chunk overhead of big partitions low.
pub const VEC_CHUNK_SIZE: usize = 64;

/// The vec0 partition of a (tenant, ACL) pair.
fn acl_part(tenant: &str, acl_id: i64) -> String {
    format!("{tenant}/{acl_id}")
}

/// The vector table for one embedding dimension (created on first use). Vectors are
/// L2-normalised, so vec0's L2 distance (which has a SIMD kernel) ranks like cosine.
fn vec_table(dim: usize) -> String {
    format!("vectors_{dim}")
}

fn ensure_vec_table(c: &Connection, dim: usize) -> rusqlite::Result<()> {
    c.execute_batch(&format!(
        "CREATE VIRTUAL TABLE IF NOT EXISTS {} USING vec0(
            chunk_id INTEGER PRIMARY KEY,
            embedding float[{dim}],
            acl_part TEXT partition key,
            acl_id INTEGER,
            chunk_size={VEC_CHUNK_SIZE}
        )",
        vec_table(dim)
    ))
}

fn vec_tables(c: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = c.prepare_cached(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name GLOB 'vectors_[0-9]*'
         AND sql LIKE 'CREATE VIRTUAL TABLE%'",
    )?;
    stmt.query_map([], |r| r.get(0))?.collect()
}

fn vec_table_exists(c: &Connection, dim: usize) -> rusqlite::Result<bool> {
    c.prepare_cached("SELECT COUNT(*) FROM sqlite_master WHERE name = ?1")?
        .query_row([vec_table(dim)], |r| r.get::<_, i64>(0))
        .map(|n| n > 0)
}

/// The query behind [`visible_acls`] (run on every chat request).
pub(super) const VISIBLE_ACLS: &str =
    "SELECT DISTINCT a.id FROM acls a JOIN acl_labels l ON l.acl_id = a.id
     WHERE a.tenant = ?1 AND l.label IN (SELECT value FROM json_each(?2))
     ORDER BY a.id";

/// The ACL ids whose label sets intersect the scope's labels, in the scope's tenant.
/// The labels travel as one bound JSON parameter, never as SQL text.
pub(super) fn visible_acls(c: &Connection, scope: &AccessScope) -> rusqlite::Result<Vec<i64>> {
    if scope.labels().is_empty() {
        return Ok(Vec::new());
    }
    let labels = serde_json::to_string(scope.labels()).unwrap_or_else(|_| "[]".into());
    let mut stmt = c.prepare_cached(VISIBLE_ACLS)?;
    let ids = stmt
        .query_map(params![scope.tenant(), labels], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<i64>>>()?;
    Ok(ids)
}

fn acl_id_for(c: &Connection, tenant: &str, labels: &[String]) -> rusqlite::Result<i64> {
    let canonical = serde_json::to_string(labels).unwrap_or_else(|_| "[]".into());
    if let Some(id) = c
        .prepare_cached("SELECT id FROM acls WHERE tenant = ?1 AND labels = ?2")?
        .query_row(params![tenant, canonical], |r| r.get(0))
        .optional()?
    {
        return Ok(id);
    }
    c.execute(
        "INSERT INTO acls (tenant, labels) VALUES (?1, ?2)",
        params![tenant, canonical],
    )?;
    let id = c.last_insert_rowid();
    for l in labels {
        c.execute(
            "INSERT INTO acl_labels (acl_id, label) VALUES (?1, ?2)",
            params![id, l],
        )?;
    }
    Ok(id)
}

fn f32_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

const DOC_COLS: &str = "id, title, body, acl, created_at, created_by, chunk_count, state, chunks_done, chunks_total, failure";

/// The ingestion state in the four columns from `i` on.
fn state_at(r: &Row<'_>, i: usize) -> rusqlite::Result<IngestState> {
    let name: String = r.get(i)?;
    IngestState::from_columns(&name, r.get(i + 1)?, r.get(i + 2)?, r.get(i + 3)?).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("unknown document state {name:?}").into(),
        )
    })
}

fn doc_row(r: &Row<'_>) -> rusqlite::Result<DocumentRecord> {
    let acl: String = r.get(3)?;
    Ok(DocumentRecord {
        id: r.get(0)?,
        title: r.get(1)?,
        text: r.get(2)?,
        acl: serde_json::from_str(&acl).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, Box::new(e))
        })?,
        created_at: r.get(4)?,
        created_by: r.get(5)?,
        chunk_count: r.get(6)?,
        state: state_at(r, 7)?,
    })
}

const META_COLS: &str = "id, title, acl, created_at, created_by, chunk_count, state, chunks_done, chunks_total, failure";

fn meta_row(r: &Row<'_>) -> rusqlite::Result<DocumentMeta> {
    let acl: String = r.get(2)?;
    Ok(DocumentMeta {
        id: r.get(0)?,
        title: r.get(1)?,
        acl: serde_json::from_str(&acl).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, Box::new(e))
        })?,
        created_at: r.get(3)?,
        created_by: r.get(4)?,
        chunk_count: r.get(5)?,
        state: state_at(r, 6)?,
    })
}

/// Loads hits by internal chunk id, keeping the given order and scores.
fn load_hits(c: &Connection, ranked: &[(i64, f64)]) -> rusqlite::Result<Vec<ChunkHit>> {
    let mut stmt = c.prepare_cached(
        "SELECT c.public_id, c.document_id, d.title, c.text, c.tenant, a.labels
         FROM chunks c JOIN documents d ON d.id = c.document_id JOIN acls a ON a.id = c.acl_id
         WHERE c.id = ?1",
    )?;
    let mut out = Vec::with_capacity(ranked.len());
    for (id, score) in ranked {
        if let Some(hit) = stmt
            .query_row([id], |r| {
                let labels: String = r.get(5)?;
                Ok(ChunkHit {
                    chunk_id: r.get(0)?,
                    document_id: r.get(1)?,
                    title: r.get(2)?,
                    text: r.get(3)?,
                    tenant: r.get(4)?,
                    // Unparseable labels permit nothing in the in-code re-check.
                    labels: serde_json::from_str(&labels).unwrap_or_default(),
                    score: *score,
                })
            })
            .optional()?
        {
            out.push(hit);
        }
    }
    Ok(out)
}

/// One chunk on its way into the indexes.
struct IndexChunk<'a> {
    seq: i64,
    public_id: &'a str,
    text: &'a str,
    embedding: Option<&'a [f32]>,
}

/// Adds chunks to a document's partition: the chunk rows and the vector table of each
/// embedding's dimension; moves the tenant's epoch.
fn index_chunks<'a>(
    c: &Connection,
    doc_id: &str,
    tenant: &str,
    acl_id: i64,
    chunks: impl Iterator<Item = IndexChunk<'a>>,
) -> rusqlite::Result<(u32, Option<ChunkChange>)> {
    let part = acl_part(tenant, acl_id);
    let mut chunk_stmt = c.prepare_cached(
        "INSERT INTO chunks (public_id, document_id, tenant, acl_id, seq, text)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    let mut count = 0;
    let mut change: Option<ChunkChange> = None;
    for chunk in chunks {
        chunk_stmt.execute(params![
            chunk.public_id,
            doc_id,
            tenant,
            acl_id,
            chunk.seq,
            chunk.text
        ])?;
        let rowid = c.last_insert_rowid();
        if change.is_none() {
            change = Some(ChunkChange::new(tenant, bump_epoch(c, tenant)?));
        }
        if let Some(v) = chunk.embedding {
            ensure_vec_table(c, v.len())?;
            c.prepare_cached(&format!(
                "INSERT INTO {} (chunk_id, embedding, acl_part, acl_id) VALUES (?1, ?2, ?3, ?4)",
                vec_table(v.len())
            ))?
            .execute(params![rowid, f32_blob(v), part, acl_id])?;
        }
        if let Some(change) = change.as_mut() {
            change.added.push(AddedChunk {
                id: rowid,
                acl_id,
                text: chunk.text.to_owned(),
                vector: chunk.embedding.map(<[f32]>::to_vec),
            });
        }
        count += 1;
    }
    Ok((count, change))
}

/// The document's row, in `state`; its ACL's id.
fn insert_row(c: &Connection, doc: &NewDocument, state: &IngestState) -> StoreResult<i64> {
    let acl_id = acl_id_for(c, doc.tenant(), doc.labels())?;
    let acl_json = serde_json::to_string(doc.acl())?;
    c.execute(
        "INSERT INTO documents (id, tenant, title, body, acl, acl_id, created_by, created_at, chunk_count, state)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            doc.id(),
            doc.tenant(),
            doc.title(),
            doc.text(),
            acl_json,
            acl_id,
            doc.created_by(),
            doc.now(),
            doc.chunks().len() as i64,
            state.name()
        ],
    )?;
    Ok(acl_id)
}

fn insert(c: &Connection, doc: &NewDocument) -> StoreResult<(DocumentRecord, Option<ChunkChange>)> {
    let acl_id = insert_row(c, doc, &IngestState::Ready)?;
    let (count, change) = index_chunks(
        c,
        doc.id(),
        doc.tenant(),
        acl_id,
        doc.chunks()
            .iter()
            .enumerate()
            .map(|(seq, chunk)| IndexChunk {
                seq: seq as i64,
                public_id: &chunk.id,
                text: &chunk.text,
                embedding: chunk.embedding.as_deref(),
            }),
    )?;
    Ok((doc.record(count, IngestState::Ready), change))
}

fn enqueue(c: &Connection, doc: &NewDocument) -> StoreResult<DocumentRecord> {
    // A job's chunks are made by its worker: any given here are not stored.
    insert_row(c, doc, &IngestState::Queued)?;
    c.execute(
        "UPDATE documents SET chunk_count = 0 WHERE id = ?1",
        [doc.id()],
    )?;
    Ok(doc.record(0, IngestState::Queued))
}

/// Whether the document is leased to the worker (and still being ingested).
fn holds(c: &Connection, lease: &IngestLease) -> rusqlite::Result<bool> {
    Ok(c.prepare_cached(
        "SELECT 1 FROM documents WHERE id = ?1 AND lease_owner = ?2
             AND state IN ('queued', 'embedding')",
    )?
    .query_row(params![lease.document_id, lease.worker], |_| Ok(()))
    .optional()?
    .is_some())
}

fn claim(c: &Connection, claim: &IngestClaim) -> StoreResult<Option<IngestJob>> {
    let found: Option<(String, String, i64)> = c
        .prepare_cached(
            "SELECT d.id, d.body, d.attempts FROM documents d
             WHERE d.state IN ('queued', 'embedding') AND d.lease_until <= ?1
               AND (?2 IS NULL OR d.id = ?2)
               AND (SELECT count(*) FROM documents o
                    WHERE o.tenant = d.tenant AND o.state IN ('queued', 'embedding')
                      AND o.lease_owner IS NOT NULL AND o.lease_until > ?1) < ?3
             ORDER BY d.created_at, d.id LIMIT 1",
        )?
        .query_row(
            params![claim.now, claim.only, i64::from(claim.per_tenant)],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((id, text, attempts)) = found else {
        return Ok(None);
    };
    let done: i64 = c
        .prepare_cached("SELECT count(*) FROM ingest_chunks WHERE document_id = ?1")?
        .query_row([&id], |r| r.get(0))?;
    c.execute(
        "UPDATE documents SET state = 'embedding', chunks_done = ?2, lease_owner = ?3,
                lease_until = ?4
         WHERE id = ?1",
        params![id, done, claim.worker, claim.now + claim.lease_ms],
    )?;
    Ok(Some(IngestJob {
        lease: IngestLease {
            document_id: id,
            worker: claim.worker.clone(),
        },
        text,
        done: u32::try_from(done).unwrap_or(0),
        attempts: u32::try_from(attempts).unwrap_or(0),
    }))
}

fn stage(
    c: &Connection,
    lease: &IngestLease,
    first: u32,
    total: u32,
    chunks: &[NewChunk],
    lease_until: i64,
) -> StoreResult<bool> {
    if !holds(c, lease)? {
        return Ok(false);
    }
    let mut stmt = c.prepare_cached(
        "INSERT INTO ingest_chunks (document_id, seq, public_id, text, embedding)
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (document_id, seq) DO NOTHING",
    )?;
    for (i, chunk) in chunks.iter().enumerate() {
        stmt.execute(params![
            lease.document_id,
            i64::from(first) + i as i64,
            chunk.id,
            chunk.text,
            chunk.embedding.as_deref().map(f32_blob)
        ])?;
    }
    c.execute(
        "UPDATE documents SET chunks_done = (SELECT count(*) FROM ingest_chunks WHERE document_id = ?1),
                chunks_total = ?2, lease_until = ?3
         WHERE id = ?1",
        params![lease.document_id, i64::from(total), lease_until],
    )?;
    Ok(true)
}

fn publish(c: &Connection, lease: &IngestLease) -> StoreResult<(bool, Option<ChunkChange>)> {
    if !holds(c, lease)? {
        return Ok((false, None));
    }
    let (tenant, acl_id): (String, i64) = c
        .prepare_cached("SELECT tenant, acl_id FROM documents WHERE id = ?1")?
        .query_row([&lease.document_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    type Staged = (i64, String, String, Option<Vec<u8>>);
    let staged: Vec<Staged> = c
        .prepare_cached(
            "SELECT seq, public_id, text, embedding FROM ingest_chunks
             WHERE document_id = ?1 ORDER BY seq",
        )?
        .query_map([&lease.document_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let vectors: Vec<Option<Vec<f32>>> = staged
        .iter()
        .map(|(_, _, _, e)| e.as_deref().map(blob_f32))
        .collect();
    let (count, change) = index_chunks(
        c,
        &lease.document_id,
        &tenant,
        acl_id,
        staged
            .iter()
            .zip(&vectors)
            .map(|((seq, public_id, text, _), v)| IndexChunk {
                seq: *seq,
                public_id,
                text,
                embedding: v.as_deref(),
            }),
    )?;
    c.execute(
        "DELETE FROM ingest_chunks WHERE document_id = ?1",
        [&lease.document_id],
    )?;
    c.execute(
        "UPDATE documents SET state = 'ready', chunk_count = ?2, chunks_done = ?2,
                chunks_total = ?2, lease_owner = NULL, lease_until = 0
         WHERE id = ?1",
        params![lease.document_id, count],
    )?;
    Ok((true, change))
}

fn fail(c: &Connection, lease: &IngestLease, failure: &IngestFailure) -> StoreResult<()> {
    if !holds(c, lease)? {
        return Ok(());
    }
    match failure {
        IngestFailure::RetryAt(at) => {
            c.execute(
                "UPDATE documents SET state = 'queued', lease_owner = NULL, lease_until = ?2,
                        attempts = attempts + 1
                 WHERE id = ?1",
                params![lease.document_id, at],
            )?;
        }
        IngestFailure::GiveUp(reason) => {
            c.execute(
                "DELETE FROM ingest_chunks WHERE document_id = ?1",
                [&lease.document_id],
            )?;
            c.execute(
                "UPDATE documents SET state = 'failed', failure = ?2, lease_owner = NULL,
                        lease_until = 0, attempts = attempts + 1
                 WHERE id = ?1",
                params![lease.document_id, reason],
            )?;
        }
    }
    Ok(())
}

impl SqliteStore {
    /// Brings this process's in-memory indexes up to a write it committed.
    fn applied(&self, change: Option<ChunkChange>) {
        if let Some(change) = change {
            self.inner.flat.apply(&change);
            self.inner.text.apply(&change);
        }
    }
}

#[async_trait]
impl DocumentStore for SqliteStore {
    async fn insert_document(&self, doc: NewDocument) -> StoreResult<DocumentRecord> {
        let (record, change) = self.write(move |c| insert(c, &doc)).await?;
        self.applied(change);
        Ok(record)
    }

    async fn enqueue_document(&self, doc: NewDocument) -> StoreResult<DocumentRecord> {
        self.write(move |c| enqueue(c, &doc)).await
    }

    async fn claim_ingest(&self, c: IngestClaim) -> StoreResult<Option<IngestJob>> {
        self.write(move |conn| claim(conn, &c)).await
    }

    async fn stage_chunks(
        &self,
        lease: &IngestLease,
        first: u32,
        total: u32,
        chunks: Vec<NewChunk>,
        lease_until: i64,
    ) -> StoreResult<bool> {
        let lease = lease.clone();
        self.write(move |c| stage(c, &lease, first, total, &chunks, lease_until))
            .await
    }

    async fn publish_ingest(&self, lease: &IngestLease) -> StoreResult<bool> {
        let lease = lease.clone();
        let (published, change) = self.write(move |c| publish(c, &lease)).await?;
        self.applied(change);
        Ok(published)
    }

    async fn fail_ingest(&self, lease: &IngestLease, failure: IngestFailure) -> StoreResult<()> {
        let lease = lease.clone();
        self.write(move |c| fail(c, &lease, &failure)).await
    }

    async fn document_meta(
        &self,
        admin: &DocumentAdmin,
        id: &str,
    ) -> StoreResult<Option<DocumentMeta>> {
        let tenant = admin.tenant().to_owned();
        let id = id.to_owned();
        self.read(move |c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {META_COLS} FROM documents WHERE id = ?1 AND tenant = ?2"
            ))?
            .query_row(params![id, tenant], meta_row)
            .optional()?)
        })
        .await
    }

    async fn list_documents(&self, scope: &AccessScope) -> StoreResult<Vec<DocumentRecord>> {
        let scope = scope.clone();
        self.read_blocking(move |c| {
            let acls = visible_acls(c, &scope)?;
            if acls.is_empty() {
                return Ok(Vec::new());
            }
            let sql = format!(
                "SELECT {DOC_COLS} FROM documents WHERE tenant = ?1 AND acl_id IN ({})
                 ORDER BY created_at DESC",
                placeholders(2, acls.len())
            );
            let mut stmt = c.prepare(&sql)?;
            let mut values: Vec<rusqlite::types::Value> = vec![scope.tenant().to_owned().into()];
            values.extend(acls.iter().map(|a| rusqlite::types::Value::Integer(*a)));
            let rows = stmt
                .query_map(rusqlite::params_from_iter(values), doc_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn document(&self, scope: &AccessScope, id: &str) -> StoreResult<Option<DocumentRecord>> {
        let scope = scope.clone();
        let id = id.to_owned();
        self.read(move |c| {
            let acls = visible_acls(c, &scope)?;
            let row: Option<(DocumentRecord, i64)> = c
                .prepare_cached(&format!(
                    "SELECT {DOC_COLS}, acl_id FROM documents WHERE id = ?1 AND tenant = ?2"
                ))?
                .query_row(params![id, scope.tenant()], |r| {
                    Ok((doc_row(r)?, r.get(11)?))
                })
                .optional()?;
            Ok(row.filter(|(_, acl)| acls.contains(acl)).map(|(d, _)| d))
        })
        .await
    }

    async fn passage(
        &self,
        scope: &AccessScope,
        document_id: &str,
        chunk_id: &str,
    ) -> StoreResult<Option<String>> {
        let scope = scope.clone();
        let (document_id, chunk_id) = (document_id.to_owned(), chunk_id.to_owned());
        self.read(move |c| {
            let acls = visible_acls(c, &scope)?;
            let found: Option<(String, i64)> = c
                .prepare_cached(
                    "SELECT text, acl_id FROM chunks
                     WHERE public_id = ?1 AND document_id = ?2 AND tenant = ?3",
                )?
                .query_row(params![chunk_id, document_id, scope.tenant()], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            Ok(found.filter(|(_, acl)| acls.contains(acl)).map(|(t, _)| t))
        })
        .await
    }

    async fn list_all_documents(&self, admin: &DocumentAdmin) -> StoreResult<Vec<DocumentMeta>> {
        let tenant = admin.tenant().to_owned();
        self.read_blocking(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {META_COLS} FROM documents WHERE tenant = ?1 ORDER BY created_at DESC"
            ))?;
            let rows = stmt
                .query_map([tenant], meta_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn delete_document(&self, admin: &DocumentAdmin, id: &str) -> StoreResult<bool> {
        let tenant = admin.tenant().to_owned();
        let id = id.to_owned();
        let change = self.write(move |c| {
            let Some(()) = c
                .prepare_cached("SELECT 1 FROM documents WHERE id = ?1 AND tenant = ?2")?
                .query_row(params![id, tenant], |_| Ok(()))
                .optional()?
            else {
                return Ok(None);
            };
            // Vectors first (they have no foreign key), then chunks, then the document:
            // all or nothing (one savepoint).
            let mut change = ChunkChange::new(&tenant, bump_epoch(c, &tenant)?);
            change.removed = c
                .prepare_cached("SELECT id FROM chunks WHERE document_id = ?1")?
                .query_map([&id], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            for t in vec_tables(c)? {
                c.execute(
                    &format!(
                        "DELETE FROM {t} WHERE chunk_id IN (SELECT id FROM chunks WHERE document_id = ?1)"
                    ),
                    [&id],
                )?;
            }
            c.execute("DELETE FROM chunks WHERE document_id = ?1", [&id])?;
            c.execute(
                "DELETE FROM documents WHERE id = ?1 AND tenant = ?2",
                params![id, tenant],
            )?;
            Ok(Some(change))
        })
        .await?;
        let deleted = change.is_some();
        self.applied(change);
        Ok(deleted)
    }

    async fn readable_ids(
        &self,
        scope: &AccessScope,
        ids: Vec<String>,
    ) -> StoreResult<std::collections::HashSet<String>> {
        let scope = scope.clone();
        self.read(move |c| {
            let acls = visible_acls(c, &scope)?;
            if acls.is_empty() || ids.is_empty() {
                return Ok(Default::default());
            }
            let ids_json = serde_json::to_string(&ids)?;
            let sql = format!(
                "SELECT id FROM documents WHERE tenant = ?1
                   AND id IN (SELECT value FROM json_each(?2)) AND acl_id IN ({})",
                placeholders(3, acls.len())
            );
            let mut values: Vec<rusqlite::types::Value> =
                vec![scope.tenant().to_owned().into(), ids_json.into()];
            values.extend(acls.iter().map(|a| rusqlite::types::Value::Integer(*a)));
            let mut stmt = c.prepare(&sql)?;
            let found = stmt
                .query_map(rusqlite::params_from_iter(values), |r| r.get(0))?
                .collect::<rusqlite::Result<std::collections::HashSet<String>>>()?;
            Ok(found)
        })
        .await
    }

    async fn any_visible(&self, scope: &AccessScope) -> StoreResult<bool> {
        let scope = scope.clone();
        self.read(move |c| Ok(!visible_acls(c, &scope)?.is_empty()))
            .await
    }

    async fn search(&self, scope: &AccessScope, query: SearchQuery) -> StoreResult<Rankings> {
        let scope = scope.clone();
        let flat = self.inner.flat.clone();
        let lexical = self.inner.text.clone();
        self.read_blocking(move |c| {
            let acls = visible_acls(c, &scope)?;
            if acls.is_empty() || query.k == 0 {
                return Ok(Rankings::default());
            }
            let vector = match &query.vector {
                Some(v) => knn(c, &flat, &scope, &acls, v, query.k)?,
                None => Vec::new(),
            };
            let ranked = lexical.search(c, scope.tenant(), &acls, &query.terms, query.k)?;
            let text = load_hits(c, &ranked)?;
            Ok(Rankings { vector, text })
        })
        .await
    }
}

/// Exact KNN over the visible set.
fn knn(
    c: &Connection,
    flat: &super::flat::FlatVectors,
    scope: &AccessScope,
    acls: &[i64],
    query: &[f32],
    k: usize,
) -> rusqlite::Result<Vec<ChunkHit>> {
    if !vec_table_exists(c, query.len())? {
        return Ok(Vec::new());
    }
    let ranked = flat.knn(c, scope.tenant(), &vec_table(query.len()), acls, query, k)?;
    load_hits(c, &ranked)
}

/// The virtual tables whose names match a GLOB pattern (their shadow tables are not).
fn virtual_tables(c: &Connection, pattern: &str) -> rusqlite::Result<Vec<String>> {
    c.prepare(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name GLOB ?1
         AND sql LIKE 'CREATE VIRTUAL TABLE%'",
    )?
    .query_map([pattern], |r| r.get(0))?
    .collect()
}

/// Drops the per-ACL full-text indexes of earlier versions (`text_<acl id>`; full text
/// is indexed in memory now), once, at start-up.
pub(super) fn drop_text_partitions(c: &Connection) -> StoreResult<()> {
    let tables = virtual_tables(c, "text_[0-9]*")?;
    if tables.is_empty() {
        return Ok(());
    }
    let tx = c.unchecked_transaction()?;
    for t in &tables {
        tx.execute_batch(&format!("DROP TABLE {t}"))?;
    }
    tx.commit()?;
    tracing::info!(
        tables = tables.len(),
        "dropped the per-partition full-text indexes"
    );
    Ok(())
}

/// Moves vectors from the tables of earlier versions (`chunks_vec_N`, no `acl_id`
/// metadata, default chunk size) into the current ones, once, at start-up.
pub(super) fn upgrade_legacy_vectors(c: &Connection) -> StoreResult<()> {
    let legacy = virtual_tables(c, "chunks_vec_[0-9]*")?;
    for old in legacy {
        let Some(dim) = old
            .strip_prefix("chunks_vec_")
            .and_then(|d| d.parse::<usize>().ok())
        else {
            continue;
        };
        let tx = c.unchecked_transaction()?;
        ensure_vec_table(&tx, dim)?;
        tx.execute_batch(&format!(
            "INSERT INTO {new} (chunk_id, embedding, acl_part, acl_id)
               SELECT v.chunk_id, v.embedding, v.acl_part, c.acl_id
               FROM {old} v JOIN chunks c ON c.id = v.chunk_id;
             DROP TABLE {old};",
            new = vec_table(dim)
        ))?;
        tx.commit()?;
        tracing::info!(table = %old, "moved vectors to the current vector table");
    }
    Ok(())
}
