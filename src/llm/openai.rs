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
    Call, Choice, Completion, Delta, DeltaStream, FunctionCall, LlmError, Options, ToolCall,
    ToolCallDelta, ToolKind, Usage,
};
use crate::config::{LlmConfig, ModelConfig, UpstreamApi};

pub struct OpenAiClient {
    http: reqwest::Client,
    /// Parsed once: parsing (and IDNA-mapping) the URL on every request showed up in
    /// the profile.
    url: reqwest::Url,
    model: String,
    max_retries: u32,
    api: UpstreamApi,
}

impl OpenAiClient {
    pub fn new(m: &ModelConfig, cfg: &LlmConfig) -> Result<Self, String> {
        let base = m.base_url.trim_end_matches('/');
        let mut headers = HeaderMap::new();
        if let Some(key) = &m.api_key {
            let var = m.api_key_env.as_deref().unwrap_or_default();
            let mut v = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
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
        let path = match m.api {
            UpstreamApi::ChatCompletions => "chat/completions",
            UpstreamApi::Responses => "responses",
        };
        Ok(Self {
            http,
            url: reqwest::Url::parse(&format!("{base}/{path}"))
                .map_err(|_| format!("the base_url of model {:?} is not a valid URL", m.name))?,
            model: m.upstream_model.clone().unwrap_or_else(|| m.name.clone()),
            max_retries: cfg.max_retries,
            api: m.api,
        })
    }

    /// The API this upstream speaks.
    pub fn api(&self) -> UpstreamApi {
        self.api
    }

    /// Sends the request, retrying what is safe to retry. Returns a response with a
    /// success status whose body has not been read yet.
    async fn send(&self, call: &Call<'_>, stream: bool) -> Result<reqwest::Response, LlmError> {
        let payload = match self.api {
            UpstreamApi::ChatCompletions => request_body(&self.model, call, stream),
            UpstreamApi::Responses => super::responses::request_body(&self.model, call, stream),
        }
        .map_err(|e| {
            tracing::error!(error = %e, "the upstream request could not be serialised");
            LlmError::Connect
        })?;
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
        if self.api == UpstreamApi::Responses {
            return super::responses::parse_completion(&bytes);
        }
        let parsed: CompletionResponse =
            serde_json::from_slice(&bytes).map_err(|_| LlmError::Malformed)?;
        let mut choices = parsed.choices.into_iter();
        let first = choices.next().ok_or(LlmError::Malformed)?.into_choice();
        if first.content.is_none() && first.tool_calls.is_empty() && first.refusal.is_none() {
            return Err(LlmError::Malformed);
        }
        Ok(Completion {
            content: first.content.unwrap_or_default(),
            tool_calls: first.tool_calls,
            finish_reason: first.finish_reason,
            refusal: first.refusal,
            logprobs: first.logprobs,
            usage: parsed.usage,
            system_fingerprint: parsed.system_fingerprint,
            more: choices.map(CompletionChoice::into_choice).collect(),
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
        if self.api == UpstreamApi::Responses {
            return Ok(Box::pin(responses_stream(events)));
        }
        let s = try_stream! {
            let mut done = false;
            let mut fingerprint: Option<String> = None;
            while let Some(event) = events.next().await {
                let event = event.map_err(event_error)?;
                let data = event.data.trim();
                if data == "[DONE]" {
                    done = true;
                    break;
                }
                if data.is_empty() {
                    continue;
                }
                let chunk: StreamChunk = serde_json::from_str(data).map_err(|_| LlmError::Malformed)?;
                if let Some(f) = chunk.system_fingerprint
                    && fingerprint.as_deref() != Some(f.as_str())
                {
                    fingerprint = Some(f.clone());
                    yield Delta::Fingerprint(f);
                }
                for choice in chunk.choices {
                    if choice.index != 0 {
                        yield Delta::Other {
                            index: choice.index,
                            delta: choice.delta.raw(),
                            finish_reason: choice.finish_reason,
                            logprobs: choice.logprobs,
                        };
                        continue;
                    }
                    if let Some(lp) = choice.logprobs {
                        yield Delta::Logprobs(lp);
                    }
                    if let Some(text) = choice.delta.content
                        && !text.is_empty()
                    {
                        yield Delta::Content(text);
                    }
                    if let Some(text) = choice.delta.refusal
                        && !text.is_empty()
                    {
                        yield Delta::Refusal(text);
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

/// A transport error as it came; anything else wrong with the event stream is malformed.
fn event_error(e: EventStreamError<LlmError>) -> LlmError {
    match e {
        EventStreamError::Transport(t) => t,
        _ => LlmError::Malformed,
    }
}

/// A streamed Responses answer as deltas; an end without `response.completed` (or
/// `.incomplete`) is an error, as a chat stream without `[DONE]` is.
fn responses_stream(
    mut events: impl futures_util::Stream<
        Item = Result<eventsource_stream::Event, EventStreamError<LlmError>>,
    > + Send
    + Unpin
    + 'static,
) -> impl futures_util::Stream<Item = Result<Delta, LlmError>> + Send + 'static {
    try_stream! {
        let mut reader = super::responses::EventReader::default();
        let mut done = false;
        while let Some(event) = events.next().await {
            let event = event.map_err(event_error)?;
            let data = event.data.trim();
            if data.is_empty() || data == "[DONE]" {
                continue;
            }
            match reader.read(data)? {
                super::responses::Step::Deltas(ds) => {
                    for d in ds {
                        yield d;
                    }
                }
                super::responses::Step::Done(ds) => {
                    for d in ds {
                        yield d;
                    }
                    done = true;
                    break;
                }
            }
        }
        if !done {
            Err(LlmError::Malformed)?;
        }
        while let Some(Ok(_)) = events.next().await {}
    }
}

/// The largest streamed answer accepted from the upstream.
const MAX_STREAM_BYTES: usize = 16 << 20;

/// The upstream request body, serialised once for every attempt.
///
/// Two serialisers, each only over types it understands. The messages (a thread's whole
/// history: most of the bytes) go through sonic-rs, whose SIMD string escaping writes
/// them about five times faster than serde_json (BENCHMARKS.md); they hold only plain
/// strings and numbers. Everything else goes through serde_json, because tool
/// `parameters` and `response_format.json_schema.schema` are serde_json `RawValue`s,
/// relayed byte for byte: serde_json writes a `RawValue` verbatim, while any other
/// serialiser sees its private wrapper struct and would send
/// `{"$serde_json::private::RawValue": "…"}` instead of the schema.
pub fn request_body(model: &str, call: &Call<'_>, stream: bool) -> Result<bytes::Bytes, String> {
    let rest = serde_json::to_vec(&Body {
        model,
        stream,
        options: call.options,
        user: call.user,
        stream_options: (stream && call.options.include_usage).then_some(StreamOptions {
            include_usage: true,
        }),
    })
    .map_err(|e| e.to_string())?;
    // `rest` is a JSON object with at least `model`: `{"model":…}`. The messages go in
    // front of its first member.
    let members = rest
        .strip_prefix(b"{")
        .ok_or_else(|| "the body is not an object".to_owned())?;
    let mut out = Vec::with_capacity(rest.len() + 256 * call.messages.len() + 16);
    out.extend_from_slice(b"{\"messages\":");
    sonic_rs::to_writer(&mut out, call.messages).map_err(|e| e.to_string())?;
    out.push(b',');
    out.extend_from_slice(members);
    Ok(bytes::Bytes::from(out))
}

/// Everything of the request body but the messages (see [`request_body`]).
#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
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
    #[serde(default)]
    system_fingerprint: Option<String>,
}

#[derive(Deserialize)]
struct CompletionChoice {
    message: AssistantMessage,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    logprobs: Option<serde_json::Value>,
}

impl CompletionChoice {
    fn into_choice(self) -> Choice {
        Choice {
            content: self.message.content,
            tool_calls: self
                .message
                .tool_calls
                .unwrap_or_default()
                .into_iter()
                .map(UpstreamToolCall::into_call)
                .collect(),
            finish_reason: self.finish_reason.unwrap_or_else(|| "stop".into()),
            refusal: self.message.refusal,
            logprobs: self.logprobs.filter(|l| !l.is_null()),
        }
    }
}

#[derive(Deserialize)]
struct AssistantMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
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
    #[serde(default)]
    system_fingerprint: Option<String>,
}

#[derive(Deserialize)]
struct StreamChoice {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    delta: StreamDelta,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    logprobs: Option<serde_json::Value>,
}

#[derive(Deserialize, Default)]
struct StreamDelta {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallPiece>>,
}

impl StreamDelta {
    /// The piece as JSON again, for a choice palisade relays without reading.
    fn raw(self) -> serde_json::Value {
        let mut d = serde_json::Map::new();
        if let Some(r) = self.role {
            d.insert("role".into(), r.into());
        }
        if let Some(c) = self.content {
            d.insert("content".into(), c.into());
        }
        if let Some(r) = self.refusal {
            d.insert("refusal".into(), r.into());
        }
        if let Some(calls) = self.tool_calls {
            let calls = calls
                .into_iter()
                .map(|t| {
                    let mut c = serde_json::json!({"index": t.index});
                    if let Some(id) = t.id {
                        c["id"] = id.into();
                        c["type"] = "function".into();
                    }
                    if let Some(f) = t.function {
                        let mut fm = serde_json::Map::new();
                        if let Some(n) = f.name {
                            fm.insert("name".into(), n.into());
                        }
                        if let Some(a) = f.arguments {
                            fm.insert("arguments".into(), a.into());
                        }
                        c["function"] = fm.into();
                    }
                    c
                })
                .collect::<Vec<_>>();
            d.insert("tool_calls".into(), calls.into());
        }
        d.into()
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::message::{FunctionDef, JsonSchemaFormat, ResponseFormat, ToolDef};
    use crate::llm::{ChatMessage, ResponseFormatKind};
    use crate::model::Role;
    use serde_json::value::RawValue;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    /// Every raw schema reaches the upstream as the schema itself, byte for byte, and the
    /// messages as sent (the `{"$serde_json::private::RawValue": …}` wrapper was what a
    /// single serialiser over both kinds of type once produced).
    #[test]
    fn raw_schemas_and_messages_reach_the_upstream_as_written() {
        let params = r#"{"type": "object", "properties": {"q": {"type": "string", "description": "é \" \\ 🦀"}}, "required": ["q"], "additionalProperties": false}"#;
        let schema = r##"{"$defs":{"A":{"type":"integer","maximum":1e3}},"type":"object","properties":{"a":{"$ref":"#/$defs/A"}}}"##;
        let options = Options {
            tools: vec![ToolDef {
                kind: ToolKind::Function,
                function: FunctionDef {
                    name: "lookup".into(),
                    description: Some("Look up".into()),
                    parameters: Some(raw(params)),
                    strict: Some(true),
                },
            }],
            response_format: Some(ResponseFormat {
                kind: ResponseFormatKind::JsonSchema,
                json_schema: Some(JsonSchemaFormat {
                    name: "out".into(),
                    description: None,
                    schema: Some(raw(schema)),
                    strict: Some(true),
                }),
            }),
            include_usage: true,
            ..Options::default()
        };
        let mut dev = ChatMessage::new(Role::System, "be brief");
        dev.role.developer = true;
        let messages = vec![
            dev,
            ChatMessage::new(Role::User, "line\nbreak \u{2028} \"q\" 🦀"),
        ];
        let call = Call {
            messages: &messages,
            options: &options,
            user: "alice",
            passages: &[],
        };
        let body = request_body("up-model", &call, true).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        // The raw text itself: not re-serialised, not wrapped.
        let text = std::str::from_utf8(&body).unwrap();
        assert!(text.contains(params), "{text}");
        assert!(text.contains(schema), "{text}");
        assert!(!text.contains("RawValue"));
        let expect_params: serde_json::Value = serde_json::from_str(params).unwrap();
        assert_eq!(v["tools"][0]["function"]["parameters"], expect_params);
        assert_eq!(
            v["response_format"]["json_schema"]["schema"],
            serde_json::from_str::<serde_json::Value>(schema).unwrap()
        );
        assert_eq!(v["messages"][0]["role"], "developer");
        assert_eq!(v["messages"][1]["content"], "line\nbreak \u{2028} \"q\" 🦀");
        assert_eq!(v["model"], "up-model");
        assert_eq!(v["user"], "alice");
        assert_eq!(v["stream"], true);
        assert_eq!(v["stream_options"]["include_usage"], true);
    }
}
