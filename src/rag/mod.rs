//! Permission-aware retrieval: documents with ACLs, chunking, embeddings, hybrid
//! (vector + BM25, reciprocal-rank fused) retrieval whose ACL filter is inside both
//! queries, and the assembly of retrieved passages into prompts with citations.
//!
//! Every read takes an `&AccessScope`, which only `Principal::access_scope` can make.
//! Nothing in a request body (collection names, filters, entity ids) reaches the filter.

pub mod embed;

use std::collections::HashMap;
use std::sync::Arc;

use crate::access::{AccessScope, Acl, ClientInfo, DocumentAdmin, Principal};
use crate::audit::{Audit, AuditEvent, AuditKind};
use crate::config::{EmbeddingsConfig, EmbeddingsKind, RagConfig};
use crate::secret::new_id;
use crate::store::{
    ChunkHit, Citation, DocumentMeta, DocumentRecord, DocumentStore, NewChunk, NewDocument,
    SearchQuery, StoreError,
};
use crate::timeutil::now_ms;
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
}

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
                cfg.api_key_env.as_deref(),
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
        }
    }

    /// The `documents:write` capability of `p` over its own tenant, if it has one.
    pub fn admin_of(&self, p: &Principal) -> Option<DocumentAdmin> {
        p.document_admin(&self.cfg.writer_roles)
    }

    fn require_admin(&self, p: &Principal) -> Result<DocumentAdmin, RagError> {
        self.admin_of(p).ok_or(RagError::Forbidden)
    }

    pub fn embedder_name(&self) -> &str {
        self.embedder
            .as_ref()
            .map_or("none (BM25 only)", |e| e.name())
    }

    /// Ingestion by an authenticated writer, into the writer's own tenant.
    pub async fn ingest(
        &self,
        p: &Principal,
        title: &str,
        text: &str,
        acl: Acl,
        client: &ClientInfo,
    ) -> Result<DocumentRecord, RagError> {
        let admin = self.require_admin(p)?;
        self.ingest_as(&admin, title, text, acl, client).await
    }

    /// Ingestion under a `documents:write` capability (a verified writer, or the
    /// operator's CLI for a tenant it names).
    pub async fn ingest_as(
        &self,
        admin: &DocumentAdmin,
        title: &str,
        text: &str,
        acl: Acl,
        client: &ClientInfo,
    ) -> Result<DocumentRecord, RagError> {
        let title = title.trim();
        if title.is_empty() || title.chars().count() > 300 {
            return Err(RagError::Invalid(
                "A title of 1 to 300 characters is required.".into(),
            ));
        }
        if text.trim().is_empty() {
            return Err(RagError::Invalid("The document has no text.".into()));
        }
        if text.chars().count() > self.cfg.max_document_chars {
            return Err(RagError::TooLarge);
        }
        let names = acl.roles.iter().chain(&acl.groups).chain(&acl.users);
        if let Some(bad) = names.clone().find(|n| !crate::access::valid_name(n)) {
            let shown: String = bad.chars().take(64).collect();
            return Err(RagError::Invalid(format!(
                "Invalid name in the ACL: {shown:?}."
            )));
        }
        if crate::access::Labels::of(&acl).is_none() {
            return Err(RagError::Invalid(
                "The ACL names nobody: give roles, groups, users or public.".into(),
            ));
        }
        let pieces = self.chunk(text);
        let embeddings = match &self.embedder {
            Some(e) => Some(e.embed(pieces.clone()).await.map_err(|err| {
                tracing::error!(error = %err, "embedding failed");
                RagError::Embedding
            })?),
            None => None,
        };
        let chunks = pieces
            .into_iter()
            .enumerate()
            .map(|(i, text)| NewChunk {
                id: new_id(),
                text,
                embedding: embeddings.as_ref().map(|e| e[i].clone()),
            })
            .collect();
        let doc = NewDocument::new(
            admin,
            new_id(),
            title.to_owned(),
            text.to_owned(),
            acl,
            chunks,
            now_ms(),
        )
        .ok_or_else(|| RagError::Invalid("The ACL names nobody.".into()))?;
        let doc = self.store.insert_document(doc).await?;
        self.audit
            .record(
                AuditEvent::new(AuditKind::DocumentCreated)
                    .tenant(admin.tenant())
                    .subject(admin.actor())
                    .resource(&doc.id)
                    .client(client),
            )
            .await;
        Ok(doc)
    }

    /// Splits on paragraphs, then sentences, then words, with overlap; sized in model
    /// tokens when the embedder has a tokenizer, otherwise in 4-character units.
    pub fn chunk(&self, text: &str) -> Vec<String> {
        use text_splitter::{ChunkConfig, TextSplitter};
        let (size, overlap) = (self.cfg.chunk_tokens, self.cfg.chunk_overlap);
        let chunks: Vec<String> = match self.embedder.as_ref().and_then(|e| e.tokenizer()) {
            Some(tok) => match ChunkConfig::new(size).with_overlap(overlap) {
                Ok(c) => TextSplitter::new(c.with_sizer(tok.clone()))
                    .chunks(text)
                    .map(str::to_owned)
                    .collect(),
                Err(_) => vec![text.to_owned()],
            },
            None => match ChunkConfig::new(size * 4).with_overlap(overlap * 4) {
                Ok(c) => TextSplitter::new(c)
                    .chunks(text)
                    .map(str::to_owned)
                    .collect(),
                Err(_) => vec![text.to_owned()],
            },
        };
        chunks
            .into_iter()
            .filter(|c| !c.trim().is_empty())
            .collect()
    }

    /// The documents the caller may read.
    pub async fn list(&self, p: &Principal) -> Result<Vec<DocumentRecord>, RagError> {
        Ok(self.store.list_documents(&p.access_scope()).await?)
    }

    /// Every document of the writer's tenant, metadata only (not the text).
    pub async fn manage_list(&self, p: &Principal) -> Result<Vec<DocumentMeta>, RagError> {
        let admin = self.require_admin(p)?;
        self.list_as(&admin).await
    }

    pub async fn list_as(&self, admin: &DocumentAdmin) -> Result<Vec<DocumentMeta>, RagError> {
        Ok(self.store.list_all_documents(admin).await?)
    }

    /// A document the caller may read, with its text.
    pub async fn get(&self, p: &Principal, id: &str) -> Result<DocumentRecord, RagError> {
        if id.len() > 64 {
            return Err(RagError::NotFound);
        }
        self.store
            .document(&p.access_scope(), id)
            .await?
            .ok_or(RagError::NotFound)
    }

    /// Deletes any document of the writer's tenant, readable by the writer or not.
    /// A non-writer learns nothing: a document they cannot read is `NotFound`, one they
    /// can read is `Forbidden`.
    pub async fn delete(
        &self,
        p: &Principal,
        id: &str,
        client: &ClientInfo,
    ) -> Result<(), RagError> {
        let Some(admin) = self.admin_of(p) else {
            self.get(p, id).await?;
            return Err(RagError::Forbidden);
        };
        self.delete_as(&admin, id, client).await
    }

    pub async fn delete_as(
        &self,
        admin: &DocumentAdmin,
        id: &str,
        client: &ClientInfo,
    ) -> Result<(), RagError> {
        if id.len() > 64 || !self.store.delete_document(admin, id).await? {
            return Err(RagError::NotFound);
        }
        self.audit
            .record(
                AuditEvent::new(AuditKind::DocumentDeleted)
                    .tenant(admin.tenant())
                    .subject(admin.actor())
                    .resource(id)
                    .client(client),
            )
            .await;
        Ok(())
    }

    /// Hybrid retrieval within `scope`: exact KNN and BM25, each with the ACL inside its
    /// query, fused by reciprocal rank, then re-checked against the scope in code.
    pub async fn retrieve(
        &self,
        scope: &AccessScope,
        query: &str,
        k: usize,
    ) -> Result<Vec<ChunkHit>, RagError> {
        let k = k.clamp(1, 50);
        let candidates = k * CANDIDATES_PER_RESULT;
        // Nothing visible: no need to spend an embedding on the question.
        if !self.store.any_visible(scope).await? {
            return Ok(Vec::new());
        }
        let vector = match &self.embedder {
            Some(e) => {
                let q = e
                    .embed(vec![query.to_owned()])
                    .await
                    .map_err(|err| {
                        tracing::error!(error = %err, "query embedding failed");
                        RagError::Embedding
                    })?
                    .pop()
                    .unwrap_or_default();
                Some(q)
            }
            None => None,
        };
        let rankings = self
            .store
            .search(
                scope,
                SearchQuery {
                    vector,
                    terms: query_terms(query),
                    k: candidates,
                },
            )
            .await?;

        let mut fused: HashMap<String, (f64, ChunkHit)> = HashMap::new();
        for list in [rankings.vector, rankings.text] {
            for (rank, hit) in list.into_iter().enumerate() {
                let add = 1.0 / (RRF_K + rank as f64 + 1.0);
                fused
                    .entry(hit.chunk_id.clone())
                    .and_modify(|(s, _)| *s += add)
                    .or_insert((add, hit));
            }
        }
        let mut ranked: Vec<(f64, ChunkHit)> = fused.into_values().collect();
        ranked.sort_by(|a, b| {
            b.0.total_cmp(&a.0)
                .then_with(|| a.1.chunk_id.cmp(&b.1.chunk_id))
        });
        let mut out = Vec::with_capacity(k);
        for (score, mut hit) in ranked {
            // Defence in depth: the SQL already filtered; a chunk that fails this check
            // means a bug, and it is dropped and logged rather than shown.
            if !scope.permits(&hit.tenant, &hit.labels) {
                tracing::error!(chunk = %hit.chunk_id, "retrieval returned a chunk outside the scope; dropped");
                continue;
            }
            hit.score = score;
            out.push(hit);
            if out.len() == k {
                break;
            }
        }
        Ok(out)
    }

    /// Retrieval for a prompt, recorded in the audit trail as data lineage: which
    /// documents went to the model, for whom, in which request.
    pub async fn retrieve_for_prompt(
        &self,
        p: &Principal,
        query: &str,
        client: &ClientInfo,
    ) -> Result<Vec<ChunkHit>, RagError> {
        let hits = self
            .retrieve(&p.access_scope(), query, self.cfg.top_k)
            .await?;
        if !hits.is_empty() {
            let mut docs: Vec<&str> = hits.iter().map(|h| h.document_id.as_str()).collect();
            docs.sort();
            docs.dedup();
            self.audit
                .record(
                    AuditEvent::new(AuditKind::Retrieval)
                        .tenant(p.tenant())
                        .subject(p.subject())
                        .session(p.session_id())
                        .client(client)
                        .resource(docs.join(",")),
                )
                .await;
        }
        Ok(hits)
    }
}

/// Citations for the passages that were put into a prompt, one per chunk.
pub fn citations(hits: &[ChunkHit]) -> Vec<Citation> {
    hits.iter()
        .map(|h| Citation {
            document_id: h.document_id.clone(),
            title: h.title.clone(),
            chunk_id: h.chunk_id.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests;
