//! The model upstream: an OpenAI-compatible chat-completions client (streaming
//! included), or the built-in extractive responder when none is configured.
//!
//! Failures are reduced to an [`LlmError`] kind: the upstream's body, headers and API key
//! never reach a client or a log line.

pub mod extractive;
pub mod openai;

use futures_util::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::config::LlmConfig;
use crate::store::{ChunkHit, Role};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LlmError {
    #[error("upstream unreachable")]
    Connect,
    #[error("upstream timed out")]
    Timeout,
    #[error("upstream answered with status {0}")]
    Status(u16),
    #[error("upstream answered with something that is not a chat completion")]
    Malformed,
}

/// A finished, non-streamed completion.
#[derive(Debug, Clone)]
pub struct Completion {
    pub content: String,
}

/// Text deltas of a streamed completion; ends after the last delta.
pub type DeltaStream = BoxStream<'static, Result<String, LlmError>>;

pub enum Llm {
    OpenAi(openai::OpenAiClient),
    Extractive,
}

impl Llm {
    pub fn from_config(cfg: &LlmConfig) -> Result<Self, String> {
        match &cfg.base_url {
            Some(_) => Ok(Llm::OpenAi(openai::OpenAiClient::new(cfg)?)),
            None => Ok(Llm::Extractive),
        }
    }

    pub fn model_name(&self) -> &str {
        match self {
            Llm::OpenAi(c) => c.model(),
            Llm::Extractive => "palisade-extractive",
        }
    }

    /// `passages` are the retrieved chunks already in `messages`; only the extractive
    /// responder uses them directly.
    pub async fn complete(
        &self,
        messages: &[ChatMessage],
        passages: &[ChunkHit],
    ) -> Result<Completion, LlmError> {
        match self {
            Llm::OpenAi(c) => c.complete(messages).await,
            Llm::Extractive => Ok(Completion {
                content: extractive::answer(passages),
            }),
        }
    }

    pub async fn stream(
        &self,
        messages: &[ChatMessage],
        passages: &[ChunkHit],
    ) -> Result<DeltaStream, LlmError> {
        match self {
            Llm::OpenAi(c) => c.stream(messages).await,
            Llm::Extractive => {
                let answer = extractive::answer(passages);
                Ok(Box::pin(futures_util::stream::once(
                    async move { Ok(answer) },
                )))
            }
        }
    }
}
