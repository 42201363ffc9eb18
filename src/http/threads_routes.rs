//! `/v1/threads/*`: the caller's own conversations. Handlers shape the wire format;
//! the thread and chat services do the work.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::convert::Infallible;
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::{Auth, Client, Json, Query};
use crate::chat::{ChatEvent, ChatRequest, ShownMessage};
use crate::llm::Delta;
use crate::model::{Citation, MessageRecord, Role, ThreadRecord, ToolCall, ToolData};
use crate::timeutil::rfc3339;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/threads", post(create).get(list))
        .route(
            "/v1/threads/{id}",
            get(get_thread).patch(rename).delete(delete),
        )
        .route("/v1/threads/{id}/messages", post(post_message))
        .route("/v1/threads/{id}/regenerate", post(regenerate))
}

#[derive(Deserialize, Default, ToSchema)]
pub struct CreateThread {
    title: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ThreadView {
    id: String,
    title: String,
    /// RFC 3339.
    created_at: String,
    /// RFC 3339.
    updated_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct ThreadList {
    /// Newest activity first.
    threads: Vec<ThreadView>,
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

#[derive(Serialize, ToSchema)]
pub struct MessageView {
    id: String,
    /// `system`, `user`, `assistant` or `tool`.
    role: Role,
    content: String,
    /// RFC 3339.
    created_at: String,
    citations: Vec<Citation>,
    /// An assistant message asking for tool calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Vec<ToolCall>>,
    /// A tool message: the call it answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<String>,
    /// An answer: the documents whose text was in the model's context when it was
    /// written (the passages of its turn and what the earlier answers in its prompt
    /// drew on). Ids, sorted; absent when none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    sources: Vec<String>,
    /// `source_no_longer_accessible`: withheld because the caller can no longer read
    /// a document it drew on.
    #[serde(skip_serializing_if = "Option::is_none")]
    redacted: Option<&'static str>,
    /// An answer its reader stopped mid-stream: `content` is as far as it came.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stopped: bool,
}

/// One page of a thread.
#[derive(Serialize, ToSchema)]
pub struct ThreadPageView {
    id: String,
    title: String,
    /// RFC 3339.
    created_at: String,
    /// RFC 3339.
    updated_at: String,
    /// Oldest first.
    messages: Vec<MessageView>,
    /// The cursor of the page before, absent at the start of the thread.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// The stored answer to a posted message.
#[derive(Serialize, ToSchema)]
pub struct Posted {
    message: MessageView,
}

impl From<MessageRecord> for MessageView {
    fn from(m: MessageRecord) -> Self {
        let (tool_calls, tool_call_id) = match m.tool {
            Some(ToolData::Calls(c)) => (Some(c), None),
            Some(ToolData::Result { call_id }) => (None, Some(call_id)),
            None => (None, None),
        };
        Self {
            tool_calls,
            tool_call_id,
            id: m.id,
            role: m.role,
            content: m.content,
            created_at: rfc3339(m.created_at),
            citations: m.citations,
            sources: m.provenance.documents().map(str::to_owned).collect(),
            redacted: None,
            stopped: m.stopped,
        }
    }
}

impl From<ShownMessage> for MessageView {
    fn from(m: ShownMessage) -> Self {
        if !m.redacted {
            return m.record.into();
        }
        // Withheld, not deleted: the message is there; its text, tool calls and
        // sources are not.
        Self {
            content: String::new(),
            citations: Vec::new(),
            tool_calls: None,
            sources: Vec::new(),
            redacted: Some("source_no_longer_accessible"),
            ..m.record.into()
        }
    }
}

#[utoipa::path(
    post, path = "/v1/threads", operation_id = "create_thread", tag = "threads", security(("bearer" = [])),
    request_body(content = Option<CreateThread>, description = "Optional."),
    responses(
        (status = 201, description = "Created.", body = ThreadView,
            headers(("location" = String, description = "The thread's URL."))),
        (status = 400, description = "Malformed body.", body = ErrorBody),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 422, description = "Too many threads (`thread_limit_reached`).", body = ErrorBody),
    )
)]
pub async fn create(
    State(s): State<AppState>,
    Auth(p): Auth,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let req: CreateThread = optional_body(&body)?;
    let t = s.threads.create(&p, req.title.as_deref()).await?;
    let location = axum::http::HeaderValue::from_str(&format!("/v1/threads/{}", t.id))
        .map_err(|_| ApiError::Internal)?;
    Ok((
        StatusCode::CREATED,
        [(axum::http::header::LOCATION, location)],
        axum::Json(ThreadView::from(t)),
    )
        .into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only threads whose title or one of the caller's own questions contains this
    /// text (case-insensitive; answers are not searched). At most 100 results.
    #[param(min_length = 1, max_length = 200)]
    q: Option<String>,
}

#[utoipa::path(
    get, path = "/v1/threads", operation_id = "list_threads", tag = "threads", security(("bearer" = [])),
    params(ListParams),
    responses(
        (status = 200, description = "The caller's threads (matching `q`, if given).", body = ThreadList),
        (status = 400, description = "Invalid query parameters.", body = ErrorBody),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 422, description = "`q` is blank or longer than 200 characters.", body = ErrorBody),
    )
)]
pub async fn list(
    State(s): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<ListParams>,
) -> Result<Response, ApiError> {
    let found = match q.q.as_deref() {
        Some(text) => s.threads.search(&p, text).await?,
        None => s.threads.list(&p).await?,
    };
    let threads: Vec<ThreadView> = found.into_iter().map(Into::into).collect();
    Ok(axum::Json(ThreadList { threads }).into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameThread {
    #[schema(min_length = 1, max_length = 200)]
    title: String,
}

#[utoipa::path(
    patch, path = "/v1/threads/{id}", operation_id = "rename_thread", tag = "threads", security(("bearer" = [])),
    params(("id" = String, Path)),
    request_body = RenameThread,
    responses(
        (status = 200, description = "Renamed.", body = ThreadView),
        (status = 400, description = "Malformed body.", body = ErrorBody),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 404, description = "Not the caller's thread (or no such thread: one answer for both).", body = ErrorBody),
        (status = 422, description = "The title is blank or longer than 200 characters.", body = ErrorBody),
    )
)]
pub async fn rename(
    State(s): State<AppState>,
    Auth(p): Auth,
    Client(client): Client,
    Path(id): Path<String>,
    Json(req): Json<RenameThread>,
) -> Result<Response, ApiError> {
    let t = s.threads.rename(&p, &id, &req.title, &client).await?;
    Ok(axum::Json(ThreadView::from(t)).into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// The cursor `next` of the previous page.
    #[param(value_type = Option<i64>, minimum = 1)]
    before: Option<String>,
    /// Messages per page (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
}

/// One page of the thread: the newest `limit` messages (default 50) before the cursor
/// `before`, oldest first; `next` is the cursor for the page before (absent at the
/// start of the thread).
#[utoipa::path(
    get, path = "/v1/threads/{id}", tag = "threads", security(("bearer" = [])),
    params(("id" = String, Path), PageParams),
    responses(
        (status = 200, description = "One page of the thread.", body = ThreadPageView),
        (status = 422, description = "The cursor names no page.", body = ErrorBody),
        (status = 400, description = "Invalid query parameters.", body = ErrorBody),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 404, description = "Not the caller's thread (or no such thread: one answer for both).", body = ErrorBody),
    )
)]
pub async fn get_thread(
    State(s): State<AppState>,
    Auth(p): Auth,
    Client(client): Client,
    Path(id): Path<String>,
    Query(q): Query<PageParams>,
) -> Result<Response, ApiError> {
    if q.limit
        .is_some_and(|l| !(1..=crate::threads::MAX_PAGE).contains(&l))
    {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {}.",
            crate::threads::MAX_PAGE
        )));
    }
    let page = s
        .chat
        .thread_page(&p, &id, q.before.as_deref(), q.limit, &client)
        .await?;
    let messages: Vec<MessageView> = page.messages.into_iter().map(Into::into).collect();
    let t = ThreadView::from(page.thread);
    Ok(axum::Json(ThreadPageView {
        id: t.id,
        title: t.title,
        created_at: t.created_at,
        updated_at: t.updated_at,
        messages,
        next: page.next_before.map(|n| n.to_string()),
    })
    .into_response())
}

#[utoipa::path(
    delete, path = "/v1/threads/{id}", operation_id = "delete_thread", tag = "threads", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses(
        (status = 204, description = "Deleted."),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 404, description = "Not the caller's thread.", body = ErrorBody),
    )
)]
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
#[derive(Deserialize, ToSchema)]
pub struct PostMessage {
    /// Not blank; at most `threads.max_message_chars` characters (413 above).
    #[schema(min_length = 1, pattern = r"\S")]
    content: String,
    /// Answer as server-sent events.
    #[serde(default)]
    stream: Option<bool>,
}

#[utoipa::path(
    post, path = "/v1/threads/{id}/messages", tag = "threads", security(("bearer" = [])),
    params(("id" = String, Path)),
    request_body = PostMessage,
    responses(
        (status = 200, description = "The stored answer (or, with stream, server-sent events).", content(
            (Posted = "application/json"),
            (serde_json::Value = "text/event-stream"),
        )),
        (status = 400, description = "Malformed body.", body = ErrorBody),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 404, description = "Not the caller's thread.", body = ErrorBody),
        (status = 413, description = "The message is too long.", body = ErrorBody),
        (status = 422, description = "Invalid message, or the thread is full (`thread_full`).", body = ErrorBody),
        (status = 429, description = "A rate or token budget is spent.", body = ErrorBody, headers(("retry-after" = u64, description = "Seconds."))),
        (status = 502, description = "The model failed.", body = ErrorBody),
    )
)]
pub async fn post_message(
    State(s): State<AppState>,
    Auth(p): Auth,
    Client(client): Client,
    Path(id): Path<String>,
    Json(req): Json<PostMessage>,
) -> Result<Response, ApiError> {
    let conv = ChatRequest::thread_question(id, req.content);
    answer(&s, &p, &client, conv, req.stream.unwrap_or(false)).await
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Regenerate {
    /// Answer as server-sent events.
    #[serde(default)]
    stream: Option<bool>,
}

/// The thread's last question asked again for a new answer: the question is stored
/// once more, marked as asking again, and from then on the earlier askings and their
/// answers are out of the thread's view and of every prompt (the thread stays
/// append-only). Answers as `POST /v1/threads/{id}/messages` does.
#[utoipa::path(
    post, path = "/v1/threads/{id}/regenerate", operation_id = "regenerate_answer", tag = "threads", security(("bearer" = [])),
    params(("id" = String, Path)),
    request_body(content = Option<Regenerate>, description = "Optional."),
    responses(
        (status = 200, description = "The new stored answer (or, with stream, server-sent events).", content(
            (Posted = "application/json"),
            (serde_json::Value = "text/event-stream"),
        )),
        (status = 400, description = "Malformed body.", body = ErrorBody),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 404, description = "Not the caller's thread.", body = ErrorBody),
        (status = 409, description = "The thread has no question to ask again.", body = ErrorBody),
        (status = 422, description = "The thread is full (`thread_full`).", body = ErrorBody),
        (status = 429, description = "A rate or token budget is spent.", body = ErrorBody, headers(("retry-after" = u64, description = "Seconds."))),
        (status = 502, description = "The model failed.", body = ErrorBody),
    )
)]
pub async fn regenerate(
    State(s): State<AppState>,
    Auth(p): Auth,
    Client(client): Client,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let req: Regenerate = optional_body(&body)?;
    let conv = ChatRequest::thread_again(id);
    answer(&s, &p, &client, conv, req.stream.unwrap_or(false)).await
}

/// An optional JSON body: none, blank or `null` is the default.
fn optional_body<T: serde::de::DeserializeOwned + Default>(
    body: &axum::body::Bytes,
) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    Ok(serde_json::from_slice::<Option<T>>(body)
        .map_err(|_| ApiError::BadRequest("The request body is not valid JSON.".into()))?
        .unwrap_or_default())
}

/// A thread turn's answer: the stored message as JSON, or the stream of its deltas.
async fn answer(
    s: &AppState,
    p: &crate::access::Principal,
    client: &crate::model::ClientInfo,
    conv: ChatRequest,
    stream: bool,
) -> Result<Response, ApiError> {
    if !stream {
        let done = s.chat.complete(p, conv, client).await?;
        let msg = done.stored.ok_or(ApiError::Internal)?;
        return Ok(axum::Json(Posted {
            message: MessageView::from(msg),
        })
        .into_response());
    }
    let events = s.chat.stream(p, conv, client).await?.flat_map(|ev| {
        let out: Vec<Event> = match ev {
            ChatEvent::Delta(Delta::Content(d)) => vec![
                Event::default()
                    .event("delta")
                    .data(json!({"content": d}).to_string()),
            ],
            // This route declares no tools; a stray call piece is not shown.
            ChatEvent::Delta(_) => Vec::new(),
            ChatEvent::Done(answer) => match answer.stored {
                Some(msg) => vec![
                    Event::default()
                        .event("citations")
                        .data(json!({"citations": msg.citations}).to_string()),
                    Event::default()
                        .event("done")
                        .data(json!({"message": MessageView::from(msg)}).to_string()),
                ],
                None => vec![error_event(&ApiError::Internal)],
            },
            ChatEvent::Failed(e) => vec![error_event(&ApiError::from(e))],
        };
        futures_util::stream::iter(out.into_iter().map(Ok::<_, Infallible>))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

pub fn error_event(e: &ApiError) -> Event {
    Event::default()
        .event("error")
        .data(json!({"error": {"code": e.code()}}).to_string())
}
