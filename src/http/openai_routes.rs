//! The OpenAI-compatible face: `POST /v1/chat/completions` and `GET /v1/models`,
//! authenticated by palisade's own bearer token, so existing SDKs and chat UIs work.
//!
//! With `X-Palisade-Thread: {id}` the exchange is persisted into one of the caller's
//! threads and the *stored* history replaces whatever history the client sent: only the
//! last user message of the request is taken (a peer shipped exactly this hole:
//! continuing another user's chat by naming its id; see docs/threat-model.md).

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::convert::Infallible;

use super::AppState;
use super::error::ApiError;
use super::extract::{Auth, Client, Json};
use crate::chat::{ChatEvent, ChatRequest, Conversation, TurnInput};
use crate::llm::{
    ChatMessage, Content, ContentPart, Delta, Options, ResponseFormat, Stop, ToolCall, ToolChoice,
    ToolDef,
};
use crate::store::Role;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
}

pub const THREAD_HEADER: &str = "x-palisade-thread";

/// The body of `POST /v1/chat/completions`. Fields not listed here are not forwarded;
/// `user` is read only to be replaced by the caller's subject id.
#[derive(Deserialize)]
pub struct CompletionRequest {
    messages: Vec<InMessage>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    n: Option<u32>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    stop: Option<Stop>,
    #[serde(default)]
    seed: Option<i64>,
    #[serde(default)]
    presence_penalty: Option<f64>,
    #[serde(default)]
    frequency_penalty: Option<f64>,
    #[serde(default)]
    response_format: Option<ResponseFormat>,
    #[serde(default)]
    tools: Option<Vec<ToolDef>>,
    #[serde(default)]
    tool_choice: Option<ToolChoice>,
    #[serde(default)]
    parallel_tool_calls: Option<bool>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize)]
struct InMessage {
    role: String,
    /// Kept raw and parsed by shape: a string, or an array of parts.
    #[serde(default)]
    content: Option<Box<RawValue>>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCall>>,
    #[serde(default)]
    tool_call_id: Option<String>,
}

fn unprocessable(m: &str) -> ApiError {
    ApiError::Unprocessable(m.to_owned())
}

impl InMessage {
    fn role(&self) -> Result<Role, ApiError> {
        match self.role.as_str() {
            "system" | "developer" => Ok(Role::System),
            "user" => Ok(Role::User),
            "assistant" => Ok(Role::Assistant),
            "tool" => Ok(Role::Tool),
            _ => Err(unprocessable(
                "A message's role must be system, developer, user, assistant or tool.",
            )),
        }
    }

    /// A string, or an array of text and image_url parts.
    fn content(&self) -> Result<Option<Content>, ApiError> {
        let Some(raw) = &self.content else {
            return Ok(None);
        };
        let text = raw.get().trim_start();
        if text.starts_with('"') {
            return serde_json::from_str(text)
                .map(|s| Some(Content::Text(s)))
                .map_err(|_| {
                    unprocessable("Message content must be a string or an array of parts.")
                });
        }
        if text.starts_with('[') {
            return serde_json::from_str::<Vec<ContentPart>>(text)
                .map(|parts| Some(Content::Parts(parts)))
                .map_err(|_| unprocessable("Only text and image_url content parts are accepted."));
        }
        if text == "null" {
            return Ok(None);
        }
        Err(unprocessable(
            "Message content must be a string or an array of parts.",
        ))
    }

    fn into_message(self) -> Result<ChatMessage, ApiError> {
        let role = self.role()?;
        let content = self.content()?;
        if role != Role::Assistant && content.is_none() {
            return Err(unprocessable(
                "Every message but an assistant's needs content.",
            ));
        }
        if role != Role::Assistant && self.tool_calls.as_ref().is_some_and(|c| !c.is_empty()) {
            return Err(unprocessable("Only assistant messages carry tool_calls."));
        }
        Ok(ChatMessage {
            role,
            content,
            tool_calls: self.tool_calls.unwrap_or_default(),
            tool_call_id: if role == Role::Tool {
                self.tool_call_id
            } else {
                None
            },
        })
    }
}

impl CompletionRequest {
    fn options(&mut self) -> Options {
        Options {
            temperature: self.temperature,
            top_p: self.top_p,
            max_tokens: self.max_tokens,
            max_completion_tokens: self.max_completion_tokens,
            stop: self.stop.take(),
            seed: self.seed,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            response_format: self.response_format.take(),
            tools: self.tools.take().unwrap_or_default(),
            tool_choice: self.tool_choice.take(),
            parallel_tool_calls: self.parallel_tool_calls,
            include_usage: self
                .stream_options
                .as_ref()
                .is_some_and(|o| o.include_usage),
        }
    }
}

/// The new messages of a thread turn: what follows the request's last assistant
/// message — tool results, and the last user message. Everything before it (history,
/// system prompts, assistant messages) is the stored thread's, not the client's.
fn thread_input(messages: Vec<InMessage>) -> Result<Vec<TurnInput>, ApiError> {
    let tail_start = messages
        .iter()
        .rposition(|m| m.role == "assistant")
        .map_or(0, |i| i + 1);
    let mut input = Vec::new();
    let mut question = None;
    for m in messages.into_iter().skip(tail_start) {
        let msg = m.into_message()?;
        match msg.role {
            Role::Tool => input.push(TurnInput::ToolResult {
                call_id: msg.tool_call_id.clone().unwrap_or_default(),
                content: msg.text().into_owned(),
            }),
            Role::User => {
                if msg.has_image() {
                    return Err(unprocessable(
                        "Images are not stored in threads; send them without X-Palisade-Thread.",
                    ));
                }
                question = Some(msg.text().into_owned());
            }
            _ => {}
        }
    }
    if input
        .iter()
        .any(|i| matches!(i, TurnInput::ToolResult { call_id, .. } if call_id.is_empty()))
    {
        return Err(unprocessable("A tool message needs a tool_call_id."));
    }
    input.extend(question.map(TurnInput::Question));
    if input.is_empty() {
        return Err(unprocessable("A user message is required."));
    }
    Ok(input)
}

#[utoipa::path(
    post, path = "/v1/chat/completions", tag = "openai", security(("bearer" = [])),
    params(("x-palisade-thread" = Option<String>, Header, description = "Continue one of the caller's threads.")),
    request_body = crate::http::openapi::CompletionBody,
    responses(
        (status = 200, description = "A chat.completion (or, with stream, server-sent chunks).", content(
            (crate::http::openapi::CompletionResponseBody = "application/json"),
            (serde_json::Value = "text/event-stream"),
        )),
        (status = 400, description = "Malformed body.", body = crate::http::openapi::ErrorBody),
        (status = 401, description = "No valid token.", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "The model is not allowed for the caller.", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "Not the caller's thread.", body = crate::http::openapi::ErrorBody),
        (status = 413, description = "Too large.", body = crate::http::openapi::ErrorBody),
        (status = 422, description = "Invalid request.", body = crate::http::openapi::ErrorBody),
        (status = 429, description = "A rate or token budget is spent.", body = crate::http::openapi::ErrorBody, headers(("retry-after" = u64, description = "Seconds."))),
        (status = 502, description = "The model failed.", body = crate::http::openapi::ErrorBody),
    )
)]
pub async fn chat_completions(
    State(s): State<AppState>,
    Auth(p): Auth,
    Client(client): Client,
    headers: HeaderMap,
    Json(mut req): Json<CompletionRequest>,
) -> Result<Response, ApiError> {
    if req.messages.is_empty() {
        return Err(unprocessable("messages must not be empty."));
    }
    if req.n.is_some_and(|n| n != 1) {
        return Err(unprocessable(
            "n other than 1 is not supported; send separate requests.",
        ));
    }
    let options = req.options();
    let include_usage = options.include_usage;
    let messages = std::mem::take(&mut req.messages);
    let conversation = match headers.get(THREAD_HEADER) {
        // A stored thread: only the turn's new messages are taken; the stored history
        // replaces whatever the client sent.
        Some(v) => {
            let id = v.to_str().map_err(|_| ApiError::NotFound)?.to_owned();
            Conversation::Thread {
                id,
                input: thread_input(messages)?,
            }
        }
        None => Conversation::Stateless {
            messages: messages
                .into_iter()
                .map(InMessage::into_message)
                .collect::<Result<Vec<_>, ApiError>>()?,
        },
    };
    let chat_req = ChatRequest {
        conversation,
        model: req.model.take(),
        options,
    };
    let id = format!("chatcmpl-{}", crate::secret::new_id());
    let created = crate::timeutil::now_ms() / 1000;

    if !req.stream.unwrap_or(false) {
        let a = s.chat.complete(&p, chat_req, &client).await?;
        let mut message = json!({
            "role": "assistant",
            "content": if a.content.is_empty() && !a.tool_calls.is_empty() { Value::Null } else { json!(a.content) },
            "refusal": Value::Null,
        });
        if !a.tool_calls.is_empty() {
            message["tool_calls"] = json!(a.tool_calls);
        }
        return Ok(axum::Json(json!({
            "id": id, "object": "chat.completion", "created": created, "model": a.model,
            "choices": [{"index": 0, "message": message, "logprobs": Value::Null, "finish_reason": a.finish_reason}],
            "usage": a.usage.unwrap_or_default(),
            "citations": a.citations,
        }))
        .into_response());
    }

    // The model the chunks name: the caller's, or the default (which the chat service
    // resolved, and refused if the caller may not use it, before the stream starts).
    let shown = chat_req
        .model
        .clone()
        .unwrap_or_else(|| s.chat.default_model().to_owned());
    let stream = s.chat.stream(&p, chat_req, &client).await?;
    let chunk = move |model: &str, delta: Value, finish: Value| {
        json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": Value::Null, "finish_reason": finish}],
        })
    };
    let first = Event::default().data(
        chunk(
            &shown,
            json!({"role": "assistant", "content": ""}),
            Value::Null,
        )
        .to_string(),
    );
    let body = stream.flat_map(move |ev| {
        let out: Vec<Event> = match ev {
            ChatEvent::Delta(Delta::Content(d)) => {
                vec![
                    Event::default()
                        .data(chunk(&shown, json!({"content": d}), Value::Null).to_string()),
                ]
            }
            ChatEvent::Delta(Delta::ToolCall(t)) => {
                let mut call = json!({"index": t.index});
                if let Some(id) = t.id {
                    call["id"] = json!(id);
                    call["type"] = json!("function");
                }
                let mut function = serde_json::Map::new();
                if let Some(n) = t.name {
                    function.insert("name".into(), json!(n));
                }
                if let Some(a) = t.arguments {
                    function.insert("arguments".into(), json!(a));
                }
                call["function"] = Value::Object(function);
                vec![
                    Event::default().data(
                        chunk(&shown, json!({"tool_calls": [call]}), Value::Null).to_string(),
                    ),
                ]
            }
            ChatEvent::Delta(_) => Vec::new(),
            ChatEvent::Done(a) => {
                let mut last = chunk(&shown, json!({}), json!(a.finish_reason));
                if !a.citations.is_empty() {
                    last["citations"] = json!(a.citations);
                }
                let mut out = vec![Event::default().data(last.to_string())];
                if include_usage {
                    let mut u = chunk(&shown, json!({}), Value::Null);
                    u["choices"] = json!([]);
                    u["usage"] = json!(a.usage.unwrap_or_default());
                    out.push(Event::default().data(u.to_string()));
                }
                out.push(Event::default().data("[DONE]"));
                out
            }
            ChatEvent::Failed(e) => {
                let e = ApiError::from(e);
                vec![Event::default().data(
                    json!({"error": {"code": e.code(), "message": e.public_message()}}).to_string(),
                )]
            }
        };
        futures_util::stream::iter(out.into_iter().map(Ok::<_, Infallible>))
    });
    let events = futures_util::stream::once(async move { Ok::<_, Infallible>(first) }).chain(body);
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// The models the caller may use: what `model` may name.
#[utoipa::path(
    get, path = "/v1/models", tag = "openai", security(("bearer" = [])),
    responses(
        (status = 200, description = "The models the caller may use.", body = crate::http::openapi::ModelListBody),
        (status = 401, description = "No valid token.", body = crate::http::openapi::ErrorBody),
    )
)]
pub async fn models(State(s): State<AppState>, Auth(p): Auth) -> Response {
    let data: Vec<Value> = s
        .chat
        .models_for(&p)
        .iter()
        .map(|m| json!({"id": m.name(), "object": "model", "created": 0, "owned_by": "palisade"}))
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}
