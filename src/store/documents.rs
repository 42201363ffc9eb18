//! Documents and retrieval. Every read takes an [`AccessScope`] that is part of the
//! SQL of the KNN and BM25 queries themselves (tenant partition + visible ACL ids),
//! never a filter applied after ranking. Management (ingest, list every document's
//! metadata, delete) takes a [`DocumentAdmin`].

use async_trait::async_trait;

use super::StoreResult;
use crate::access::{AccessScope, Acl, DocumentAdmin, Labels};
use crate::model::{ChunkHit, DocumentMeta, DocumentRecord, IngestState};

/// A document ready to be stored. Its tenant comes from the [`DocumentAdmin`] and its
/// labels from its ACL: neither can be passed in separately.
#[derive(Debug, Clone)]
pub struct NewDocument {
    id: String,
    tenant: String,
    created_by: String,
    title: String,
    text: String,
    acl: Acl,
    labels: Labels,
    chunks: Vec<NewChunk>,
    now: i64,
}

impl NewDocument {
    /// `None` if the ACL names nobody.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        admin: &DocumentAdmin,
        id: String,
        title: String,
        text: String,
        acl: Acl,
        chunks: Vec<NewChunk>,
        now: i64,
    ) -> Option<NewDocument> {
        let labels = Labels::of(&acl)?;
        Some(NewDocument {
            id,
            tenant: admin.tenant().to_owned(),
            created_by: admin.actor().to_owned(),
            title,
            text,
            acl,
            labels,
            chunks,
            now,
        })
    }
    pub fn id(&self) -> &str {
        &self.id
    }
    pub fn tenant(&self) -> &str {
        &self.tenant
    }
    pub fn created_by(&self) -> &str {
        &self.created_by
    }
    pub fn title(&self) -> &str {
        &self.title
    }
    pub fn text(&self) -> &str {
        &self.text
    }
    pub fn acl(&self) -> &Acl {
        &self.acl
    }
    pub fn labels(&self) -> &[String] {
        self.labels.as_slice()
    }
    pub fn chunks(&self) -> &[NewChunk] {
        &self.chunks
    }
    pub fn now(&self) -> i64 {
        self.now
    }

    /// The document as stored, with `chunk_count` chunks in the indexes.
    pub fn record(&self, chunk_count: u32, state: IngestState) -> DocumentRecord {
        DocumentRecord {
            id: self.id.clone(),
            title: self.title.clone(),
            text: self.text.clone(),
            acl: self.acl.clone(),
            created_at: self.now,
            created_by: self.created_by.clone(),
            chunk_count,
            state,
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewChunk {
    pub id: String,
    pub text: String,
    /// Absent when no embedder is configured (BM25 only).
    pub embedding: Option<Vec<f32>>,
}

/// What a worker asks for when it looks for an ingestion job.
#[derive(Debug, Clone)]
pub struct IngestClaim {
    /// Who holds the lease (a process-unique id).
    pub worker: String,
    /// Milliseconds since the epoch, from the service's clock.
    pub now: i64,
    /// How long the claim holds without being renewed by a staged batch.
    pub lease_ms: i64,
    /// No job is claimed for a tenant that already has this many leased.
    pub per_tenant: u32,
    /// Only this document (the CLI running the job it just submitted).
    pub only: Option<String>,
}

/// A claimed job: the document's text and how far earlier attempts got.
#[derive(Debug, Clone)]
pub struct IngestJob {
    pub lease: IngestLease,
    pub text: String,
    /// Chunks staged by earlier attempts (chunk `seq`s `0..done`).
    pub done: u32,
    /// Attempts that failed before this one.
    pub attempts: u32,
}

/// Proof of a claim: every later step of the job checks that the document is still
/// leased to this worker, so a worker that lost its lease (or whose document was
/// deleted) stops without writing.
#[derive(Debug, Clone)]
pub struct IngestLease {
    pub document_id: String,
    pub worker: String,
}

/// How an attempt ended when it did not finish.
#[derive(Debug, Clone)]
pub enum IngestFailure {
    /// Release the job; it may be claimed again from this time (ms) on.
    RetryAt(i64),
    /// The job is over: `failed`, with this fixed reason; staged chunks are dropped.
    GiveUp(&'static str),
}

pub struct SearchQuery {
    pub vector: Option<Vec<f32>>,
    /// Plain words; the store quotes each one, so no query syntax can be injected.
    pub terms: Vec<String>,
    /// Results per ranking.
    pub k: usize,
}

#[derive(Debug, Default)]
pub struct Rankings {
    pub vector: Vec<ChunkHit>,
    pub text: Vec<ChunkHit>,
}

#[async_trait]
pub trait DocumentStore: Send + Sync {
    /// Inserts a document with all its chunks (and vectors) atomically, `ready`.
    async fn insert_document(&self, doc: NewDocument) -> StoreResult<DocumentRecord>;
    /// Stores a document as an ingestion job (`queued`, nothing in the indexes); its
    /// chunks, if any, are ignored.
    async fn enqueue_document(&self, doc: NewDocument) -> StoreResult<DocumentRecord>;
    /// Leases the oldest job whose lease has lapsed, within the claim's bounds.
    async fn claim_ingest(&self, claim: IngestClaim) -> StoreResult<Option<IngestJob>>;
    /// Stages chunks `first..` (with their vectors) of `total`, and renews the lease
    /// until `lease_until`. A chunk already staged is kept as it was. `false`: the
    /// lease is lost or the document deleted; nothing was written.
    async fn stage_chunks(
        &self,
        lease: &IngestLease,
        first: u32,
        total: u32,
        chunks: Vec<NewChunk>,
        lease_until: i64,
    ) -> StoreResult<bool>;
    /// Moves every staged chunk into the indexes and marks the document `ready`, in
    /// one transaction. `false`: the lease is lost or the document deleted.
    async fn publish_ingest(&self, lease: &IngestLease) -> StoreResult<bool>;
    /// Ends an attempt that did not finish.
    async fn fail_ingest(&self, lease: &IngestLease, failure: IngestFailure) -> StoreResult<()>;
    /// Any document of the administrator's tenant, metadata only.
    async fn document_meta(
        &self,
        admin: &DocumentAdmin,
        id: &str,
    ) -> StoreResult<Option<DocumentMeta>>;
    /// The documents `scope` may read, newest first.
    async fn list_documents(&self, scope: &AccessScope) -> StoreResult<Vec<DocumentRecord>>;
    async fn document(&self, scope: &AccessScope, id: &str) -> StoreResult<Option<DocumentRecord>>;
    /// Every document of the administrator's tenant, metadata only, newest first.
    async fn list_all_documents(&self, admin: &DocumentAdmin) -> StoreResult<Vec<DocumentMeta>>;
    /// Deletes a document of the administrator's tenant with its chunks and vectors.
    async fn delete_document(&self, admin: &DocumentAdmin, id: &str) -> StoreResult<bool>;
    /// The text of one passage (chunk) of a document `scope` may read.
    async fn passage(
        &self,
        scope: &AccessScope,
        document_id: &str,
        chunk_id: &str,
    ) -> StoreResult<Option<String>>;
    /// Which of `ids` `scope` may still read (for re-checking citations in history).
    async fn readable_ids(
        &self,
        scope: &AccessScope,
        ids: Vec<String>,
    ) -> StoreResult<std::collections::HashSet<String>>;
    /// Whether `scope` can see any document at all (lets retrieval skip embedding).
    async fn any_visible(&self, scope: &AccessScope) -> StoreResult<bool>;
    /// Both rankings over the chunks visible in `scope`, resolving the scope once:
    /// exact KNN for `query.vector` (if any) and BM25 for `query.terms`.
    async fn search(&self, scope: &AccessScope, query: SearchQuery) -> StoreResult<Rankings>;
}
