//! Hybrid retrieval within an `AccessScope`: exact KNN and BM25, each with the ACL
//! inside its query, fused by reciprocal rank, re-checked against the scope in code.

use std::collections::HashMap;

use super::{CANDIDATES_PER_RESULT, RRF_K, Rag, RagError, query_terms};
use crate::access::{AccessScope, Principal};
use crate::audit::{AuditEvent, AuditKind};
use crate::model::ClientInfo;
use crate::model::{ChunkHit, Citation};
use crate::store::SearchQuery;

impl Rag {
    /// Hybrid retrieval within `scope`: exact KNN and BM25, each with the ACL inside its
    /// query, fused by reciprocal rank, then re-checked against the scope in code.
    pub async fn retrieve(
        &self,
        scope: &AccessScope,
        query: &str,
        k: usize,
    ) -> Result<Vec<ChunkHit>, RagError> {
        let started = std::time::Instant::now();
        let hits = self.retrieve_unmeasured(scope, query, k).await?;
        crate::telemetry::retrieval(started.elapsed().as_secs_f64(), hits.len());
        Ok(hits)
    }

    async fn retrieve_unmeasured(
        &self,
        scope: &AccessScope,
        query: &str,
        k: usize,
    ) -> Result<Vec<ChunkHit>, RagError> {
        let k = k.clamp(1, 50);
        let candidates = k * CANDIDATES_PER_RESULT;
        // Nothing visible: no need to spend an embedding on the question.
        if !self.any_visible(scope).await? {
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
    /// documents went to the model, for whom, in which thread and request.
    pub async fn retrieve_for_prompt(
        &self,
        p: &Principal,
        query: &str,
        thread: Option<&str>,
        client: &ClientInfo,
    ) -> Result<Vec<ChunkHit>, RagError> {
        let hits = self
            .retrieve(&p.access_scope(), query, self.cfg.top_k)
            .await?;
        if !hits.is_empty() {
            self.audit
                .record(
                    lineage_event(p, thread, client)
                        .documents(hits.iter().map(|h| h.document_id.as_str())),
                )
                .await;
        }
        Ok(hits)
    }
}

/// A `retrieval` lineage record: documents put before the model for `p`.
fn lineage_event(p: &Principal, thread: Option<&str>, client: &ClientInfo) -> AuditEvent {
    AuditEvent::new(AuditKind::Retrieval)
        .by(p)
        .client(client)
        .thread(thread)
}

impl Rag {
    /// Data lineage for a turn whose history carries text drawn from `documents` (the
    /// provenance of the earlier answers in its prompt): they reach the model again,
    /// recorded like a retrieval, with the reason `history`.
    pub async fn record_history_lineage(
        &self,
        p: &Principal,
        documents: &crate::model::Provenance,
        thread: &str,
        client: &ClientInfo,
    ) {
        self.audit
            .record(
                lineage_event(p, Some(thread), client)
                    .reason("history")
                    .documents(documents.documents()),
            )
            .await;
    }

    /// `POST /v1/search`: retrieval within the caller's own scope, recorded (with the
    /// documents returned) for the lineage like a tool call.
    pub async fn search(
        &self,
        p: &Principal,
        query: &str,
        k: usize,
        client: &ClientInfo,
    ) -> Result<Vec<ChunkHit>, RagError> {
        let hits = self.retrieve(&p.access_scope(), query, k).await?;
        self.audit
            .record(
                AuditEvent::new(AuditKind::Search)
                    .by(p)
                    .client(client)
                    .documents(hits.iter().map(|h| h.document_id.as_str())),
            )
            .await;
        Ok(hits)
    }

    /// `search_documents`, as the model or an MCP client calls it: retrieval within the
    /// caller's own scope (nothing of the call's arguments but the query is read, so
    /// no argument can widen it), recorded as a `tool_call` audit event naming the
    /// caller, the channel (`via`), the thread (in a chat) and the documents returned.
    pub async fn tool_search(
        &self,
        p: &Principal,
        query: &str,
        via: &'static str,
        thread: Option<&str>,
        client: &ClientInfo,
    ) -> Result<Vec<ChunkHit>, RagError> {
        let hits = self
            .retrieve(&p.access_scope(), query, self.cfg.top_k)
            .await?;
        self.audit
            .record(
                AuditEvent::new(AuditKind::ToolCall)
                    .by(p)
                    .client(client)
                    .reason(via)
                    .thread(thread)
                    .documents(hits.iter().map(|h| h.document_id.as_str())),
            )
            .await;
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
