//! OpenAI-compatible `/chat/completions` over reqwest (rustls).
//!
//! * Connect and read timeouts; the read timeout bounds every wait for the next byte.
//! * Bounded retries with exponential backoff for connect errors, 429 and 5xx — only
//!   before the first byte of a response body, so nothing is ever sent twice to a client.
//! * Dropping a [`DeltaStream`] drops the upstream response and closes its connection:
//!   a client that goes away cancels the model's work.

use async_stream::try_stream;
use eventsource_stream::{EventStreamError, Eventsource};
use futures_util::StreamExt;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};
use std::time::Duration;

use super::{
    Call, ChatMessage, Completion, Delta, DeltaStream, FunctionCall, LlmError, Options, ToolCall,
    ToolCallDelta, ToolKind, Usage,
};
use crate::config::{LlmConfig, ModelConfig};

pub struct OpenAiClient {
    http: reqwest::Client,
    /// Parsed once: parsing (and IDNA-mapping) the URL on every request showed up in
    /// the profile.
    url: reqwest::Url,
    model: String,
    max_retries: u32,
}

impl OpenAiClient {
    pub fn new(m: &ModelConfig, cfg: &LlmConfig) -> Result<Self, String> {
        let base = m.base_url.trim_end_matches('/');
        let mut headers = HeaderMap::new();
        if let Some(var) = &m.api_key_env
            && let Ok(key) = std::env::var(var)
            && !key.is_empty()
        {
            let mut v = HeaderValue::from_str(&format!("Bearer {key}"))
                .map_err(|_| format!("the value of {var} is not a valid header value"))?;
            // Marked sensitive: hyper and reqwest leave it out of any debug output.
            v.set_sensitive(true);
            headers.insert(AUTHORIZATION, v);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(cfg.connect_timeout)
            .read_timeout(cfg.read_timeout)
            // A redirect is an error, never followed: following a 307/308 would send the
            // prompt (retrieved passages included) to wherever the upstream points.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|_| "cannot build the upstream HTTP client".to_owned())?;
        Ok(Self {
            http,
            url: reqwest::Url::parse(&format!("{base}/chat/completions"))
                .map_err(|_| format!("the base_url of model {:?} is not a valid URL", m.name))?,
            model: m.upstream_model.clone().unwrap_or_else(|| m.name.clone()),
            max_retries: cfg.max_retries,
        })
    }

    /// Sends the request, retrying what is safe to retry. Returns a response with a
    /// success status whose body has not been read yet.
    async fn send(&self, call: &Call<'_>, stream: bool) -> Result<reqwest::Response, LlmError> {
        let body = Body {
            model: &self.model,
            messages: call.messages,
            stream,
            options: call.options,
            user: call.user,
            stream_options: (stream && call.options.include_usage).then_some(StreamOptions {
                include_usage: true,
            }),
        };
        // Serialised once for every attempt, with sonic-rs: its SIMD string escaping
        // writes a long prompt (a thread's whole history) about five times faster than
        // serde_json, whose escaping was the largest single item of a thread-bound turn
        // (BENCHMARKS.md). Same serde `Serialize`, same JSON.
        let payload = bytes::Bytes::from(sonic_rs::to_vec(&body).map_err(|e| {
            tracing::error!(error = %e, "the upstream request could not be serialised");
            LlmError::Connect
        })?);
        let mut attempt = 0;
        loop {
            let result = self
                .http
                .post(self.url.clone())
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(payload.clone())
                .send()
                .await;
            let err = match result {
                Ok(resp) if resp.status().is_success() => return Ok(resp),
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    if status == 429 || status >= 500 {
                        LlmError::Status(status)
                    } else {
                        return Err(LlmError::Status(status));
                    }
                }
                Err(e) if e.is_timeout() => LlmError::Timeout,
                Err(_) => LlmError::Connect,
            };
            // A timeout may already have cost the client a long wait; do not double it.
            if attempt >= self.max_retries || err == LlmError::Timeout {
                tracing::warn!(error = %err, attempts = attempt + 1, "upstream request failed");
                return Err(err);
            }
            tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            attempt += 1;
        }
    }

    pub async fn complete(&self, call: &Call<'_>) -> Result<Completion, LlmError> {
        let resp = self.send(call, false).await?;
        let bytes = resp.bytes().await.map_err(|e| {
            if e.is_timeout() {
                LlmError::Timeout
            } else {
                LlmError::Connect
            }
        })?;
        let parsed: CompletionResponse =
            serde_json::from_slice(&bytes).map_err(|_| LlmError::Malformed)?;
        let choice = parsed
            .choices
            .into_iter()
            .next()
            .ok_or(LlmError::Malformed)?;
        let tool_calls: Vec<ToolCall> = choice
            .message
            .tool_calls
            .unwrap_or_default()
            .into_iter()
            .map(UpstreamToolCall::into_call)
            .collect();
        if choice.message.content.is_none() && tool_calls.is_empty() {
            return Err(LlmError::Malformed);
        }
        Ok(Completion {
            content: choice.message.content.unwrap_or_default(),
            tool_calls,
            finish_reason: choice.finish_reason.unwrap_or_else(|| "stop".into()),
            usage: parsed.usage,
        })
    }

    pub async fn stream(&self, call: &Call<'_>) -> Result<DeltaStream, LlmError> {
        let resp = self.send(call, true).await?;
        // Transport errors become our kinds; the whole answer is bounded in size, so an
        // upstream that never ends an event cannot grow the parser's buffer forever.
        let bytes = resp
            .bytes_stream()
            .map(|r| {
                r.map_err(|e| {
                    if e.is_timeout() {
                        LlmError::Timeout
                    } else {
                        LlmError::Connect
                    }
                })
            })
            .scan(0usize, |seen, r| {
                let r = r.and_then(|chunk| {
                    *seen += chunk.len();
                    if *seen > MAX_STREAM_BYTES {
                        Err(LlmError::Malformed)
                    } else {
                        Ok(chunk)
                    }
                });
                std::future::ready(Some(r))
            });
        let mut events = bytes.eventsource();
        let s = try_stream! {
            let mut done = false;
            while let Some(event) = events.next().await {
                let event = event.map_err(|e| match e {
                    EventStreamError::Transport(t) => t,
                    _ => LlmError::Malformed,
                })?;
                let data = event.data.trim();
                if data == "[DONE]" {
                    done = true;
                    break;
                }
                if data.is_empty() {
                    continue;
                }
                let chunk: StreamChunk = serde_json::from_str(data).map_err(|_| LlmError::Malformed)?;
                if let Some(choice) = chunk.choices.into_iter().next() {
                    if let Some(text) = choice.delta.content
                        && !text.is_empty()
                    {
                        yield Delta::Content(text);
                    }
                    for t in choice.delta.tool_calls.unwrap_or_default() {
                        yield Delta::ToolCall(ToolCallDelta {
                            index: t.index,
                            id: t.id,
                            name: t.function.as_ref().and_then(|f| f.name.clone()),
                            arguments: t.function.and_then(|f| f.arguments),
                        });
                    }
                    if let Some(reason) = choice.finish_reason {
                        yield Delta::Finish(reason);
                    }
                }
                if let Some(usage) = chunk.usage {
                    yield Delta::Usage(usage);
                }
            }
            if !done {
                // The upstream closed without [DONE]: a truncated answer is an error.
                Err(LlmError::Malformed)?;
            }
            // Read the body to its end (a few bytes of chunked framing at most) so the
            // connection goes back to the pool instead of being torn down.
            while let Some(Ok(_)) = events.next().await {}
        };
        Ok(Box::pin(s))
    }
}

/// The largest streamed answer accepted from the upstream.
const MAX_STREAM_BYTES: usize = 16 << 20;

#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
    stream: bool,
    #[serde(flatten)]
    options: &'a Options,
    user: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Deserialize)]
struct CompletionResponse {
    choices: Vec<CompletionChoice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct CompletionChoice {
    message: AssistantMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct AssistantMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<UpstreamToolCall>>,
}

/// A tool call as upstreams send it (some leave out `type`).
#[derive(Deserialize)]
struct UpstreamToolCall {
    id: String,
    function: UpstreamFunction,
}

#[derive(Deserialize)]
struct UpstreamFunction {
    name: String,
    #[serde(default)]
    arguments: String,
}

impl UpstreamToolCall {
    fn into_call(self) -> ToolCall {
        ToolCall {
            id: self.id,
            kind: ToolKind::Function,
            function: FunctionCall {
                name: self.function.name,
                arguments: self.function.arguments,
            },
        }
    }
}

#[derive(Deserialize)]
struct StreamChunk {
    #[serde(default)]
    choices: Vec<StreamChoice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct StreamChoice {
    #[serde(default)]
    delta: StreamDelta,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct StreamDelta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallPiece>>,
}

#[derive(Deserialize)]
struct ToolCallPiece {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FunctionPiece>,
}

#[derive(Deserialize)]
struct FunctionPiece {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}
