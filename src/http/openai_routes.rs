//! The OpenAI-compatible face: `POST /v1/chat/completions` and `GET /v1/models`,
//! authenticated by palisade's own bearer token, so existing SDKs and chat UIs work.
//!
//! With `X-Palisade-Thread: {id}` the exchange is persisted into one of the caller's
//! threads and the *stored* history replaces whatever history the client sent: only the
//! last user message of the request is taken (SECURITY #26; Open WebUI CVE-2026-45349).

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use std::convert::Infallible;

use super::AppState;
use super::extract::{Auth, Client, Json};
use crate::auth::{ClientInfo, Principal};
use crate::error::ApiError;
use crate::llm::ChatMessage;
use crate::rag;
use crate::store::{Citation, Role};

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

/// The prompt for a stateless completion: our system prompt first, then the client's
/// own conversation (it is the caller's to send; nothing is stored).
fn stateless_prompt(
    s: &AppState,
    messages: &[InMessage],
    context: Option<String>,
) -> Result<Vec<ChatMessage>, ApiError> {
    let mut prompt = vec![ChatMessage::new(Role::System, s.threads.system_prompt())];
    if let Some(c) = context {
        prompt.push(ChatMessage::new(Role::System, c));
    }
    for m in messages {
        let text = m.text()?;
        s.threads.validate_content(&text)?;
        prompt.push(ChatMessage::new(m.role()?, text));
    }
    Ok(prompt)
}

pub async fn chat_completions(
    State(s): State<AppState>,
    Auth(p): Auth,
    Client(client): Client,
    headers: HeaderMap,
    Json(req): Json<CompletionRequest>,
) -> Result<Response, ApiError> {
    s.threads.admit(&p)?;
    if req.messages.is_empty() {
        return Err(ApiError::Unprocessable(
            "messages must not be empty.".into(),
        ));
    }
    let thread = match headers.get(THREAD_HEADER) {
        Some(v) => Some(v.to_str().map_err(|_| ApiError::NotFound)?.to_owned()),
        None => None,
    };
    let question = req
        .messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .ok_or_else(|| ApiError::Unprocessable("A user message is required.".into()))?
        .text()?;
    // Ownership of the thread is settled before any retrieval or model call.
    let turn = match &thread {
        Some(id) => Some(
            s.threads
                .begin_turn(&p, id, question.clone(), &client)
                .await?,
        ),
        None => None,
    };
    let passages = s.rag.retrieve_for_prompt(&p, &question).await?;
    let cites = rag::citations(&passages);
    let context = rag::context_block(&passages);
    let prompt = match &turn {
        Some(t) => s.threads.prompt(&t.history, &question, context),
        None => stateless_prompt(&s, &req.messages, context)?,
    };
    let model = s.llm.model_name().to_owned();
    let id = format!("chatcmpl-{}", crate::secret::new_id());
    let created = crate::timeutil::now_ms() / 1000;

    if !req.stream {
        let completion = s.llm.complete(&prompt, &passages).await?;
        if let Some(tid) = &thread {
            persist(
                &s,
                &p,
                tid,
                completion.content.clone(),
                cites.clone(),
                &client,
            )
            .await?;
        }
        return Ok(axum::Json(json!({
            "id": id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": completion.content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            "citations": cites,
        }))
        .into_response());
    }

    let mut upstream = s.llm.stream(&prompt, &passages).await?;
    let chunk = move |delta: Value, finish: Value| {
        json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
        .to_string()
    };
    let events = async_stream::stream! {
        let mut full = String::new();
        yield Ok::<_, Infallible>(Event::default().data(chunk(json!({"role": "assistant", "content": ""}), Value::Null)));
        while let Some(item) = upstream.next().await {
            match item {
                Ok(delta) => {
                    full.push_str(&delta);
                    yield Ok(Event::default().data(chunk(json!({"content": delta}), Value::Null)));
                }
                Err(_) => {
                    yield Ok(Event::default().data(json!({"error": {"code": "upstream_error", "message": "The model is unavailable right now; try again later."}}).to_string()));
                    return;
                }
            }
        }
        if let Some(tid) = &thread
            && let Err(e) = persist(&s, &p, tid, full, cites, &client).await
        {
            yield Ok(Event::default().data(json!({"error": {"code": e.code()}}).to_string()));
            return;
        }
        yield Ok(Event::default().data(chunk(json!({}), json!("stop"))));
        yield Ok(Event::default().data("[DONE]"));
    };
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

async fn persist(
    s: &AppState,
    p: &Principal,
    thread: &str,
    content: String,
    cites: Vec<Citation>,
    client: &ClientInfo,
) -> Result<(), ApiError> {
    s.threads
        .finish_turn(p, thread, content, cites, client)
        .await
        .map(|_| ())
}
pub async fn models(State(s): State<AppState>, Auth(_): Auth) -> Response {
    axum::Json(json!({
        "object": "list",
        "data": [{"id": s.llm.model_name(), "object": "model", "created": 0, "owned_by": "palisade"}],
    }))
    .into_response()
}
