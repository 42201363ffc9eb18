//! The model upstreams: the configured models (`[[llm.models]]`), each an
//! OpenAI-compatible chat-completions endpoint (streaming included) or the built-in
//! extractive responder, with the roles that may use it.
//!
//! Failures are reduced to an [`LlmError`] kind: the upstream's body, headers and API key
//! never reach a client or a log line.

pub mod extractive;
pub mod message;
pub mod openai;
pub mod responses;

use futures_util::stream::BoxStream;
use std::sync::Arc;

use crate::config::{LlmConfig, ModelConfig};
use crate::model::ChunkHit;
pub use message::{
    ChatMessage, Choice, Completion, Content, ContentPart, Delta, FunctionCall, FunctionDef,
    Options, ReasoningEffort, ResponseFormat, ResponseFormatKind, RoleOnWire, Stop, ToolCall,
    ToolCallAssembler, ToolCallDelta, ToolChoice, ToolChoiceMode, ToolDef, ToolKind, Usage,
    Verbosity,
};

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

/// The pieces of a streamed completion; ends after the last one.
pub type DeltaStream = BoxStream<'static, Result<Delta, LlmError>>;

/// One upstream call: the prompt, the options, and the caller's subject id (sent as
/// `user`, whatever the client put there).
pub struct Call<'a> {
    pub messages: &'a [ChatMessage],
    pub options: &'a Options,
    pub user: &'a str,
    /// The retrieved passages already in `messages`; only the extractive responder
    /// uses them directly.
    pub passages: &'a [ChunkHit],
}

enum Upstream {
    OpenAi(openai::OpenAiClient),
    Extractive,
}

/// One model callers can name.
pub struct Model {
    name: String,
    upstream: Upstream,
    /// Roles that may use it; empty: every role.
    roles: Vec<String>,
    multimodal: bool,
    max_tokens: u32,
    /// Its context window (estimated prompt tokens).
    context_tokens: usize,
}

pub const EXTRACTIVE_MODEL: &str = "palisade-extractive";

impl Model {
    fn from_config(m: &ModelConfig, cfg: &LlmConfig) -> Result<Self, String> {
        Ok(Self {
            name: m.name.clone(),
            upstream: Upstream::OpenAi(openai::OpenAiClient::new(m, cfg)?),
            roles: m.roles.clone(),
            multimodal: m.multimodal,
            max_tokens: m.max_tokens.unwrap_or(cfg.max_tokens).min(cfg.max_tokens),
            context_tokens: m.context_tokens.unwrap_or(cfg.context_tokens),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether a caller holding `roles` may use this model.
    pub fn allows(&self, roles: &[String]) -> bool {
        self.roles.is_empty() || roles.iter().any(|r| self.roles.contains(r))
    }

    /// Whether image content parts may be sent to it.
    pub fn multimodal(&self) -> bool {
        self.multimodal
    }

    /// Its context window: the most estimated prompt tokens a request may hold.
    pub fn context_tokens(&self) -> usize {
        self.context_tokens
    }

    /// The most output tokens a request may ask for (and what is asked when it does not say).
    pub fn max_tokens(&self) -> u32 {
        self.max_tokens
    }

    /// Whether its upstream speaks the Responses API (which has no `stop`, `seed`,
    /// penalties, `logit_bias` or several choices).
    pub fn speaks_responses(&self) -> bool {
        matches!(&self.upstream, Upstream::OpenAi(c) if c.api() == crate::config::UpstreamApi::Responses)
    }

    /// Whether it calls tools at all (the extractive responder does not).
    pub fn calls_tools(&self) -> bool {
        matches!(self.upstream, Upstream::OpenAi(_))
    }

    /// An upstream call, counted and timed in the metrics under this model's name.
    async fn measured<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, LlmError>>,
    ) -> Result<T, LlmError> {
        let started = std::time::Instant::now();
        let res = call.await;
        crate::telemetry::upstream(self.name(), res.is_ok(), started.elapsed().as_secs_f64());
        res
    }

    pub async fn complete(&self, call: &Call<'_>) -> Result<Completion, LlmError> {
        match &self.upstream {
            Upstream::OpenAi(c) => self.measured(c.complete(call)).await,
            Upstream::Extractive => Ok(Completion {
                content: extractive::answer(call.passages),
                finish_reason: "stop".into(),
                ..Completion::default()
            }),
        }
    }

    pub async fn stream(&self, call: &Call<'_>) -> Result<DeltaStream, LlmError> {
        match &self.upstream {
            // Timed to the stream's start (the upstream's response head).
            Upstream::OpenAi(c) => self.measured(c.stream(call)).await,
            Upstream::Extractive => {
                let answer = extractive::answer(call.passages);
                Ok(Box::pin(futures_util::stream::iter([
                    Ok(Delta::Content(answer)),
                    Ok(Delta::Finish("stop".into())),
                ])))
            }
        }
    }
}

/// Every configured model, and the one used when a request names none.
pub struct Models {
    models: Vec<Arc<Model>>,
    default: usize,
}

impl Models {
    /// `[[llm.models]]`; or, without it, the single model of `llm.base_url` and
    /// `llm.model`; or, without either, the extractive responder.
    pub fn from_config(cfg: &LlmConfig) -> Result<Self, String> {
        let mut models = Vec::new();
        for m in cfg.effective_models() {
            models.push(Arc::new(Model::from_config(&m, cfg)?));
        }
        if models.is_empty() {
            models.push(Arc::new(Model {
                name: EXTRACTIVE_MODEL.into(),
                upstream: Upstream::Extractive,
                roles: Vec::new(),
                multimodal: false,
                max_tokens: cfg.max_tokens,
                context_tokens: cfg.context_tokens,
            }));
        }
        let default = match &cfg.default_model {
            Some(name) => models
                .iter()
                .position(|m| &m.name == name)
                .ok_or_else(|| format!("llm.default_model {name:?} is not a configured model"))?,
            None => 0,
        };
        Ok(Self { models, default })
    }

    /// The model `name` (or the default), if a caller with `roles` may use it. An
    /// unknown model and a forbidden one give the same answer.
    pub fn resolve(&self, name: Option<&str>, roles: &[String]) -> Option<Arc<Model>> {
        let m = match name {
            Some(n) => self.models.iter().find(|m| m.name == n)?,
            None => &self.models[self.default],
        };
        m.allows(roles).then(|| m.clone())
    }

    /// The models a caller with `roles` may use, default first.
    pub fn visible(&self, roles: &[String]) -> Vec<Arc<Model>> {
        let mut out: Vec<Arc<Model>> = Vec::new();
        let order = std::iter::once(self.default)
            .chain((0..self.models.len()).filter(|i| *i != self.default));
        for i in order {
            if self.models[i].allows(roles) {
                out.push(self.models[i].clone());
            }
        }
        out
    }

    pub fn default_name(&self) -> &str {
        &self.models[self.default].name
    }
}
