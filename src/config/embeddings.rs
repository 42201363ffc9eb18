//! `[embeddings]`: the embedding model.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum EmbeddingsKind {
    /// all-MiniLM-L6-v2 in-process (candle); BM25 only if the model is missing.
    #[default]
    Local,
    /// An OpenAI-compatible `/v1/embeddings` endpoint.
    Openai,
    /// Deterministic feature hashing: for development and tests, not semantic.
    Hash,
    /// BM25 only.
    None,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbeddingsConfig {
    pub kind: EmbeddingsKind,
    pub model_dir: PathBuf,
    pub base_url: Option<String>,
    pub model: String,
    pub dim: usize,
    pub api_key_env: Option<String>,
    /// What that variable holds (read at load).
    #[serde(skip)]
    pub api_key: Option<Secret>,
    /// Roles that may call `POST /v1/embeddings` with this model; empty: every role.
    pub roles: Vec<String>,
}

impl Default for EmbeddingsConfig {
    fn default() -> Self {
        Self {
            kind: EmbeddingsKind::Local,
            model_dir: PathBuf::from("./models/all-MiniLM-L6-v2"),
            base_url: None,
            model: "text-embedding-3-small".into(),
            dim: 384,
            api_key_env: None,
            api_key: None,
            roles: Vec::new(),
        }
    }
}

impl EmbeddingsConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.kind == EmbeddingsKind::Openai && self.base_url.is_none() {
            return bad("embeddings.kind = \"openai\" needs embeddings.base_url");
        }
        if let Some(url) = &self.base_url
            && !plain_http_url(url)
        {
            return bad("embeddings.base_url must be an http(s) URL without credentials or query");
        }
        Ok(())
    }
}
