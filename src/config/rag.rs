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
        }
    }
}

impl RagConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.tool_max_steps == 0 || self.tool_max_steps > 10 {
            return bad("rag.tool_max_steps must be between 1 and 10");
        }
        if self.chunk_overlap >= self.chunk_tokens || self.top_k == 0 || self.top_k > 50 {
            return bad(
                "rag: chunk_overlap must be below chunk_tokens, and top_k between 1 and 50",
            );
        }
        Ok(())
    }
}
