//! `/v1/threads/*`: the caller's own conversations.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::convert::Infallible;

use super::AppState;
use super::extract::{Auth, Client, Json};
use crate::error::ApiError;
use crate::rag;
use crate::store::{Citation, MessageRecord, ThreadRecord};
use crate::timeutil::rfc3339;

#[derive(Deserialize, Default)]
pub struct CreateThread {
    title: Option<String>,
}

#[derive(Serialize)]
pub struct ThreadView {
    id: String,
    title: String,
    created_at: String,
    updated_at: String,
}

impl From<ThreadRecord> for ThreadView {
    fn from(t: ThreadRecord) -> Self {
        Self {
            created_at: rfc3339(t.created_at),
            updated_at: rfc3339(t.updated_at),
            id: t.id,
            title: t.title,
        }
    }
}

#[derive(Serialize)]
pub struct MessageView {
    id: String,
    role: &'static str,
    content: String,
    created_at: String,
    citations: Vec<Citation>,
}

impl From<MessageRecord> for MessageView {
    fn from(m: MessageRecord) -> Self {
        Self {
            id: m.id,
            role: m.role.as_str(),
            content: m.content,
            created_at: rfc3339(m.created_at),
            citations: m.citations,
        }
    }
}

pub async fn create(
    State(s): State<AppState>,
    Auth(p): Auth,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    // The body is optional: an empty one means "no title".
    let req: CreateThread = if body.iter().all(u8::is_ascii_whitespace) {
        CreateThread::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|_| ApiError::BadRequest("The request body is not valid JSON.".into()))?
    };
    let t = s.threads.create(&p, req.title.as_deref()).await?;
    Ok((StatusCode::CREATED, axum::Json(ThreadView::from(t))).into_response())
}

pub async fn list(State(s): State<AppState>, Auth(p): Auth) -> Result<Response, ApiError> {
    let threads: Vec<ThreadView> = s
        .threads
        .list(&p)
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(axum::Json(json!({ "threads": threads })).into_response())
}

pub async fn get(
    State(s): State<AppState>,
    Auth(p): Auth,
    Client(client): Client,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (t, messages) = s.threads.get(&p, &id, &client).await?;
    let messages: Vec<MessageView> = messages.into_iter().map(Into::into).collect();
    let t = ThreadView::from(t);
    Ok(axum::Json(json!({
        "id": t.id, "title": t.title, "created_at": t.created_at, "updated_at": t.updated_at,
        "messages": messages,
    }))
    .into_response())
}

pub async fn delete(
    State(s): State<AppState>,
    Auth(p): Auth,
    Client(client): Client,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.threads.delete(&p, &id, &client).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Only `content` and `stream` are read: roles, history, system prompts or owners in
/// the body change nothing.
#[derive(Deserialize)]
pub struct PostMessage {
    content: String,
    #[serde(default)]
    stream: bool,
}

pub async fn post_message(
    State(s): State<AppState>,
    Auth(p): Auth,
    Client(client): Client,
    Path(id): Path<String>,
    Json(req): Json<PostMessage>,
) -> Result<Response, ApiError> {
    s.threads.admit(&p)?;
    // Ownership first: a refused thread gets no retrieval and no model call.
    let turn = s.threads.begin_turn(&p, &id, req.content, &client).await?;
    let question = turn.user_message.content.clone();
    let passages = s.rag.retrieve_for_prompt(&p, &question).await?;
    let cites = rag::citations(&passages);
    let prompt = s
        .threads
        .prompt(&turn.history, &question, rag::context_block(&passages));

    if !req.stream {
        let completion = s.llm.complete(&prompt, &passages).await?;
        let msg = s
            .threads
            .finish_turn(&p, &id, completion.content, cites, &client)
            .await?;
        return Ok(axum::Json(json!({ "message": MessageView::from(msg) })).into_response());
    }

    // Errors before the first byte are still a proper 502; after it, an `error` event.
    let mut upstream = s.llm.stream(&prompt, &passages).await?;
    let events = async_stream::stream! {
        let mut full = String::new();
        while let Some(item) = upstream.next().await {
            match item {
                Ok(delta) => {
                    full.push_str(&delta);
                    yield Ok::<_, Infallible>(Event::default().event("delta").data(json!({"content": delta}).to_string()));
                }
                Err(_) => {
                    yield Ok(error_event(&ApiError::Upstream));
                    return;
                }
            }
        }
        // Stored only when the answer is complete; a client that disconnected dropped
        // this stream (and the upstream request) before reaching here.
        match s.threads.finish_turn(&p, &id, full, cites, &client).await {
            Ok(msg) => {
                yield Ok(Event::default().event("citations").data(json!({"citations": msg.citations}).to_string()));
                yield Ok(Event::default().event("done").data(json!({"message": MessageView::from(msg)}).to_string()));
            }
            Err(e) => yield Ok(error_event(&e)),
        }
    };
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

pub fn error_event(e: &ApiError) -> Event {
    Event::default()
        .event("error")
        .data(json!({"error": {"code": e.code()}}).to_string())
}
