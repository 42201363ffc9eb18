//! Permission-aware retrieval: documents with ACLs, chunking, embeddings, hybrid
//! (vector + BM25, reciprocal-rank fused) retrieval whose ACL filter is inside both
//! queries, and the assembly of retrieved passages into prompts with citations.
//!
//! Every read takes an `&AccessScope`, which only `Principal::access_scope` can make.
//! Nothing in a request body (collection names, filters, entity ids) reaches the filter.

pub mod embed;
mod ingest;
mod jobs;
mod manage;
mod retrieve;

pub use retrieve::citations;

use std::sync::Arc;

use crate::access::{AccessScope, DocumentAdmin, Principal};
use crate::audit::Audit;
use crate::audit::{AuditEvent, AuditKind};
use crate::config::{EmbeddingsConfig, EmbeddingsKind, RagConfig};
use crate::model::ClientInfo;
use crate::model::StoreError;
use crate::store::DocumentStore;
use embed::{Embedder, HashingEmbedder, MiniLm, OpenAiEmbedder};

#[derive(Debug, thiserror::Error)]
pub enum RagError {
    /// The caller lacks `documents:write`.
    #[error("forbidden")]
    Forbidden,
    /// Unknown, another tenant's, or not readable by the caller: one answer for all.
    #[error("not found")]
    NotFound,
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("document too large")]
    TooLarge,
    #[error("embedding failed")]
    Embedding,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Reciprocal-rank-fusion constant (Cormack et al.).
const RRF_K: f64 = 60.0;
/// Each ranker contributes this many candidates per requested result.
const CANDIDATES_PER_RESULT: usize = 4;

pub struct Rag {
    store: Arc<dyn DocumentStore>,
    embedder: Option<Arc<dyn Embedder>>,
    cfg: RagConfig,
    audit: Audit,
    /// This process's side of the ingestion queue.
    jobs: jobs::Jobs,
    /// PDFs read at once for uploads (each takes a blocking thread).
    pdf_slots: tokio::sync::Semaphore,
    /// Whether a scope can see any document at all, remembered for
    /// [`VISIBILITY_TTL`]: the shortcut that spares a chat with nothing to retrieve a
    /// store round trip. It never widens access: a stale `true` only lets the search
    /// run, and the search applies the scope itself; a stale `false` (a document just
    /// added by another process or node) skips retrieval for at most the TTL. This
    /// process's own ingestions and deletions clear it at once.
    visible: moka::sync::Cache<AccessScope, bool>,
    /// What documents are stamped with.
    clock: Arc<dyn crate::timeutil::Clock>,
}

/// How long [`Rag::visible`] remembers an answer.
const VISIBILITY_TTL: std::time::Duration = std::time::Duration::from_secs(1);
/// The most scopes it remembers (each entry is a tenant and a few labels).
const VISIBILITY_SCOPES: u64 = 10_000;

/// Builds the configured embedder. A missing local model is not fatal: retrieval falls
/// back to BM25 and says so in the log.
pub fn embedder_from_config(cfg: &EmbeddingsConfig) -> Result<Option<Arc<dyn Embedder>>, String> {
    Ok(match cfg.kind {
        EmbeddingsKind::None => None,
        EmbeddingsKind::Hash => Some(Arc::new(HashingEmbedder::new(cfg.dim))),
        EmbeddingsKind::Openai => Some(Arc::new(
            OpenAiEmbedder::new(
                cfg.base_url.as_deref().unwrap_or_default(),
                &cfg.model,
                cfg.dim,
                cfg.api_key.as_ref(),
            )
            .map_err(|e| e.to_string())?,
        )),
        EmbeddingsKind::Local => {
            if cfg.model_dir.join("model.safetensors").exists() {
                Some(Arc::new(
                    MiniLm::load(&cfg.model_dir).map_err(|e| e.to_string())?,
                ))
            } else {
                tracing::warn!(
                    model_dir = %cfg.model_dir.display(),
                    "embedding model not found (run scripts/fetch-model.sh); retrieval is BM25 only"
                );
                None
            }
        }
    })
}

/// English function words: they carry no topic, and in an OR-query they let BM25 rank
/// a document first for sharing "is" with the question.
const STOPWORDS: &[&str] = &[
    "a", "about", "am", "an", "and", "are", "as", "at", "be", "by", "can", "do", "does", "for",
    "from", "has", "have", "how", "i", "in", "is", "it", "me", "my", "of", "on", "or", "our",
    "the", "this", "to", "was", "we", "what", "when", "where", "which", "who", "why", "with",
    "you", "your",
];

/// Search terms for BM25: plain words without stopwords, at most 32, each at most 64
/// characters.
pub fn query_terms(q: &str) -> Vec<String> {
    let mut terms: Vec<String> = embed::words(q)
        .filter(|w| w.chars().count() <= 64 && !STOPWORDS.contains(&w.as_str()))
        .collect();
    terms.sort();
    terms.dedup();
    terms.truncate(32);
    terms
}

impl Rag {
    pub fn new(
        store: Arc<dyn DocumentStore>,
        embedder: Option<Arc<dyn Embedder>>,
        cfg: RagConfig,
        audit: Audit,
    ) -> Self {
        Self {
            store,
            embedder,
            cfg,
            audit,
            jobs: jobs::Jobs::new(),
            pdf_slots: tokio::sync::Semaphore::new(1),
            visible: moka::sync::Cache::builder()
                .max_capacity(VISIBILITY_SCOPES)
                .time_to_live(VISIBILITY_TTL)
                .build(),
            clock: Arc::new(crate::timeutil::SystemClock),
        }
    }

    /// The same service stamping documents with `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn crate::timeutil::Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Whether `scope` can see any document (see [`Rag::visible`]).
    async fn any_visible(&self, scope: &AccessScope) -> Result<bool, RagError> {
        if let Some(known) = self.visible.get(scope) {
            return Ok(known);
        }
        let any = self.store.any_visible(scope).await?;
        self.visible.insert(scope.clone(), any);
        Ok(any)
    }

    /// The set of documents changed here: forget every remembered visibility.
    fn documents_changed(&self) {
        self.visible.invalidate_all();
    }

    /// The `documents:write` capability of `p` over its own tenant, if it has one.
    pub fn admin_of(&self, p: &Principal) -> Option<DocumentAdmin> {
        p.document_admin(&self.cfg.writer_roles)
    }

    fn require_admin(&self, p: &Principal) -> Result<DocumentAdmin, RagError> {
        self.admin_of(p).ok_or(RagError::Forbidden)
    }

    /// Texts embedded for `p` (`POST /v1/embeddings`) by the configured embedding model,
    /// in-process or upstream; audited with the count of texts (never the texts).
    /// `None`: no embedding model is configured.
    pub async fn embed_for(
        &self,
        p: &Principal,
        texts: Vec<String>,
        client: &ClientInfo,
    ) -> Result<Option<Vec<Vec<f32>>>, RagError> {
        let Some(e) = &self.embedder else {
            return Ok(None);
        };
        let count = texts.len();
        let vectors = e.embed(texts).await.map_err(|_| RagError::Embedding)?;
        self.audit
            .record(
                AuditEvent::new(AuditKind::Embeddings)
                    .by(p)
                    .client(client)
                    .reason(if count == 1 { "one_text" } else { "texts" }),
            )
            .await;
        Ok(Some(vectors))
    }

    pub fn embedder_name(&self) -> &str {
        self.embedder
            .as_ref()
            .map_or("none (BM25 only)", |e| e.name())
    }
}

#[cfg(test)]
mod tests;
