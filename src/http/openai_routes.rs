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
use serde_json::{Value, json};
use std::convert::Infallible;

use super::AppState;
use super::error::ApiError;
use super::extract::{Auth, Client, Json};
use crate::chat::{ChatEvent, Conversation};
use crate::llm::ChatMessage;
use crate::store::Role;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
}

pub const THREAD_HEADER: &str = "x-palisade-thread";

#[derive(Deserialize)]
pub struct CompletionRequest {
    messages: Vec<InMessage>,
    #[serde(default)]
    stream: bool,
}

#[derive(Deserialize)]
struct InMessage {
    role: String,
    content: Value,
}

impl InMessage {
    fn role(&self) -> Result<Role, ApiError> {
        match self.role.as_str() {
            "system" | "developer" => Ok(Role::System),
            "user" => Ok(Role::User),
            "assistant" => Ok(Role::Assistant),
            _ => Err(ApiError::Unprocessable(
                "Only system, user and assistant messages are accepted.".into(),
            )),
        }
    }

    /// A string, or an array of `{"type":"text","text":…}` parts.
    fn text(&self) -> Result<String, ApiError> {
        match &self.content {
            Value::String(s) => Ok(s.clone()),
            Value::Array(parts) => parts
                .iter()
                .map(|p| {
                    match (
                        p.get("type").and_then(Value::as_str),
                        p.get("text").and_then(Value::as_str),
                    ) {
                        (Some("text"), Some(t)) => Ok(t.to_owned()),
                        _ => Err(ApiError::Unprocessable(
                            "Only text content parts are accepted.".into(),
                        )),
                    }
                })
                .collect::<Result<Vec<_>, _>>()
                .map(|v| v.join("\n")),
            _ => Err(ApiError::Unprocessable(
                "Message content must be text.".into(),
            )),
        }
    }
}

pub async fn chat_completions(
    State(s): State<AppState>,
    Auth(p): Auth,
    Client(client): Client,
    headers: HeaderMap,
    Json(req): Json<CompletionRequest>,
) -> Result<Response, ApiError> {
    if req.messages.is_empty() {
        return Err(ApiError::Unprocessable(
            "messages must not be empty.".into(),
        ));
    }
    let conv = match headers.get(THREAD_HEADER) {
        // A stored thread: only the last user message is taken; the stored history
        // replaces whatever the client sent.
        Some(v) => {
            let id = v.to_str().map_err(|_| ApiError::NotFound)?.to_owned();
            let question = req
                .messages
                .iter()
                .rev()
                .find(|m| m.role == "user")
                .ok_or_else(|| ApiError::Unprocessable("A user message is required.".into()))?
                .text()?;
            Conversation::Thread { id, question }
        }
        None => Conversation::Stateless {
            messages: req
                .messages
                .iter()
                .map(|m| Ok(ChatMessage::new(m.role()?, m.text()?)))
                .collect::<Result<Vec<_>, ApiError>>()?,
        },
    };
    let model = s.chat.model_name().to_owned();
    let id = format!("chatcmpl-{}", crate::secret::new_id());
    let created = crate::timeutil::now_ms() / 1000;

    if !req.stream {
        let answer = s.chat.complete(&p, conv, &client).await?;
        return Ok(axum::Json(json!({
            "id": id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            "citations": answer.citations,
        }))
        .into_response());
    }

    let stream = s.chat.stream(&p, conv, &client).await?;
    let chunk = move |delta: Value, finish: Value| {
        json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
        .to_string()
    };
    let first = Event::default().data(chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    ));
    let body = stream.flat_map(move |ev| {
        let out: Vec<Event> = match ev {
            ChatEvent::Delta(d) => {
                vec![Event::default().data(chunk(json!({"content": d}), Value::Null))]
            }
            ChatEvent::Done(_) => vec![
                Event::default().data(chunk(json!({}), json!("stop"))),
                Event::default().data("[DONE]"),
            ],
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

pub async fn models(State(s): State<AppState>, Auth(_): Auth) -> Response {
    axum::Json(json!({
        "object": "list",
        "data": [{"id": s.chat.model_name(), "object": "model", "created": 0, "owned_by": "palisade"}],
    }))
    .into_response()
}
