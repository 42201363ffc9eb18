//! `[rag]`: chunking and retrieval.

use super::*;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RagConfig {
    /// Passages retrieved per question.
    pub top_k: usize,
    /// Chunk size in tokens (model tokenizer) or, without one, in 4-character units.
    pub chunk_tokens: usize,
    pub chunk_overlap: usize,
    pub max_document_chars: usize,
    /// Roles holding the `documents:write` permission.
    pub writer_roles: Vec<String>,
    /// Offer the model a `search_documents` tool that palisade runs itself under the
    /// caller's scope, instead of retrieving before the model is asked.
    pub tool: bool,
    /// Rounds of `search_documents` calls per answer; the model is asked at most this
    /// many times plus one.
    pub tool_max_steps: u32,
    /// Ingestion jobs this process runs at once (chunking and embedding on the CPU, or
    /// calls to the embedding upstream); 0 leaves every job to other processes.
    pub ingest_workers: u32,
    /// Ingestion jobs of one tenant running at once, over all processes and nodes.
    pub ingest_per_tenant: u32,
    /// How long a job stays claimed by a worker that stops renewing it (each embedded
    /// batch renews it): after a crash, the job resumes elsewhere this much later.
    #[serde(with = "humantime_serde")]
    pub ingest_lease: Duration,
}

impl Default for RagConfig {
    fn default() -> Self {
        Self {
            top_k: 5,
            chunk_tokens: 200,
            chunk_overlap: 30,
            max_document_chars: 2_000_000,
            writer_roles: vec!["admin".into()],
            tool: false,
            tool_max_steps: 3,
            ingest_workers: 1,
            ingest_per_tenant: 1,
            ingest_lease: Duration::from_secs(30),
        }
    }
}

impl RagConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.tool_max_steps == 0 || self.tool_max_steps > 10 {
            return bad("rag.tool_max_steps must be between 1 and 10");
        }
        if self.ingest_workers > 64 || self.ingest_per_tenant == 0 || self.ingest_per_tenant > 64 {
            return bad(
                "rag: ingest_workers must be at most 64, ingest_per_tenant between 1 and 64",
            );
        }
        if self.ingest_lease < Duration::from_secs(1)
            || self.ingest_lease > Duration::from_secs(3600)
        {
            return bad("rag.ingest_lease must be between 1s and 1h");
        }
        if self.chunk_overlap >= self.chunk_tokens || self.top_k == 0 || self.top_k > 50 {
            return bad(
                "rag: chunk_overlap must be below chunk_tokens, and top_k between 1 and 50",
            );
        }
        Ok(())
    }
}
