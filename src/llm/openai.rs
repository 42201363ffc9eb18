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
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;

use super::{ChatMessage, Completion, DeltaStream, LlmError};
use crate::config::LlmConfig;

pub struct OpenAiClient {
    http: reqwest::Client,
    /// Parsed once: parsing (and IDNA-mapping) the URL on every request showed up in
    /// the profile.
    url: reqwest::Url,
    model: String,
    max_retries: u32,
}

impl OpenAiClient {
    pub fn new(cfg: &LlmConfig) -> Result<Self, String> {
        let base = cfg
            .base_url
            .as_deref()
            .unwrap_or_default()
            .trim_end_matches('/');
        let mut headers = HeaderMap::new();
        if let Some(var) = &cfg.api_key_env
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
            .build()
            .map_err(|_| "cannot build the upstream HTTP client".to_owned())?;
        Ok(Self {
            http,
            url: reqwest::Url::parse(&format!("{base}/chat/completions"))
                .map_err(|_| "llm.base_url is not a valid URL".to_owned())?,
            model: cfg.model.clone(),
            max_retries: cfg.max_retries,
        })
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    /// Sends the request, retrying what is safe to retry. Returns a response with a
    /// success status whose body has not been read yet.
    async fn send(
        &self,
        messages: &[ChatMessage],
        stream: bool,
    ) -> Result<reqwest::Response, LlmError> {
        let body = json!({"model": self.model, "messages": messages, "stream": stream});
        let mut attempt = 0;
        loop {
            let result = self.http.post(self.url.clone()).json(&body).send().await;
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

    pub async fn complete(&self, messages: &[ChatMessage]) -> Result<Completion, LlmError> {
        let resp = self.send(messages, false).await?;
        let bytes = resp.bytes().await.map_err(|e| {
            if e.is_timeout() {
                LlmError::Timeout
            } else {
                LlmError::Connect
            }
        })?;
        let parsed: CompletionResponse =
            serde_json::from_slice(&bytes).map_err(|_| LlmError::Malformed)?;
        let content = parsed
            .choices
            .into_iter()
            .next()
            .and_then(|c| c.message.content)
            .ok_or(LlmError::Malformed)?;
        Ok(Completion { content })
    }

    pub async fn stream(&self, messages: &[ChatMessage]) -> Result<DeltaStream, LlmError> {
        let resp = self.send(messages, true).await?;
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
                if let Some(delta) = chunk.choices.into_iter().next().and_then(|c| c.delta.content)
                    && !delta.is_empty()
                {
                    yield delta;
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

#[derive(Deserialize)]
struct CompletionResponse {
    choices: Vec<CompletionChoice>,
}

#[derive(Deserialize)]
struct CompletionChoice {
    message: AssistantMessage,
}

#[derive(Deserialize)]
struct AssistantMessage {
    content: Option<String>,
}

#[derive(Deserialize)]
struct StreamChunk {
    choices: Vec<StreamChoice>,
}

#[derive(Deserialize)]
struct StreamChoice {
    delta: Delta,
}

#[derive(Deserialize)]
struct Delta {
    content: Option<String>,
}
