//! `/v1/documents` and `/v1/search`: readers see only what they may read; holders of
//! `documents:write` also list (metadata only) and delete every document of their
//! tenant.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::{Auth, Client, Json};
use crate::access::Acl;
use crate::model::{DocumentMeta, DocumentRecord, IngestState};
use crate::rag::RagError;
use crate::timeutil::rfc3339;

pub fn router(max_document_body: usize) -> Router<AppState> {
    Router::new()
        .route(
            "/v1/documents",
            post(create)
                .layer(axum::extract::DefaultBodyLimit::max(max_document_body))
                .get(list),
        )
        .route("/v1/documents/{id}", get(get_document).delete(delete))
        .route("/v1/documents/{id}/passages/{chunk_id}", get(get_passage))
        .route(
            "/v1/documents/text",
            post(text_of_pdf).layer(axum::extract::DefaultBodyLimit::max(max_document_body)),
        )
        .route("/v1/search", post(search))
}

#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"title": "Travel policy", "text": "Flights are booked through the travel desk.", "acl": {"roles": ["employee"]}}))]
pub struct CreateDocument {
    #[schema(min_length = 1)]
    title: String,
    #[schema(min_length = 1)]
    text: String,
    acl: Acl,
}

/// Where a submitted document's ingestion stands: `queued`, `embedding` (with
/// `progress`), `ready` (searchable), or `failed` (with `failure`).
#[derive(Serialize, ToSchema)]
pub struct CreatedDocument {
    id: String,
    /// `queued` | `embedding` | `ready` | `failed`.
    state: &'static str,
    /// Chunks in the indexes (0 until `ready`).
    chunks: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    progress: Option<Progress>,
    /// Why a `failed` document was given up: `embedding_failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    failure: Option<String>,
}

/// Chunks embedded so far, of how many (0 until the text has been split).
#[derive(Serialize, ToSchema)]
pub struct Progress {
    done: u32,
    total: u32,
}

/// The `state`, `progress` and `failure` fields of an ingestion state.
fn job_fields(state: &IngestState) -> (&'static str, Option<Progress>, Option<String>) {
    match state {
        IngestState::Embedding { done, total } => (
            state.name(),
            Some(Progress {
                done: *done,
                total: *total,
            }),
            None,
        ),
        IngestState::Failed { reason } => (state.name(), None, Some(reason.clone())),
        other => (other.name(), None, None),
    }
}

/// A document as listed: readers get the first fields; writers get every document
/// of the tenant with its ACL and who added it.
#[derive(Serialize, ToSchema)]
pub struct DocumentSummary {
    id: String,
    title: String,
    /// RFC 3339.
    created_at: String,
    chunks: u32,
    /// `queued` | `embedding` | `ready` | `failed`: only a `ready` document is searched.
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    progress: Option<Progress>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    acl: Option<Acl>,
    /// The user id of who added it.
    #[serde(skip_serializing_if = "Option::is_none")]
    created_by: Option<String>,
}

impl From<&DocumentRecord> for DocumentSummary {
    fn from(d: &DocumentRecord) -> Self {
        let (state, progress, failure) = job_fields(&d.state);
        Self {
            id: d.id.clone(),
            title: d.title.clone(),
            created_at: rfc3339(d.created_at),
            chunks: d.chunk_count,
            state,
            progress,
            failure,
            acl: None,
            created_by: None,
        }
    }
}

impl From<&DocumentMeta> for DocumentSummary {
    fn from(d: &DocumentMeta) -> Self {
        let (state, progress, failure) = job_fields(&d.state);
        Self {
            id: d.id.clone(),
            title: d.title.clone(),
            created_at: rfc3339(d.created_at),
            chunks: d.chunk_count,
            state,
            progress,
            failure,
            acl: Some(d.acl.clone()),
            created_by: Some(d.created_by.clone()),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct DocumentList {
    documents: Vec<DocumentSummary>,
}

/// A document the caller may read, with its text (and, for writers, its ACL and who
/// added it); for a writer, any document of the tenant, without the text of one it may
/// not read.
#[derive(Serialize, ToSchema)]
pub struct DocumentView {
    #[serde(flatten)]
    summary: DocumentSummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
}

/// The longest `Prefer: wait` honoured: a request may not outlive its timeout.
const MAX_WAIT: Duration = Duration::from_secs(25);

/// The seconds of an RFC 7240 `Prefer: wait=N`, if the request has one.
fn preferred_wait(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .find_map(|p| {
            let (k, v) = p.trim().split_once('=')?;
            (k.trim().eq_ignore_ascii_case("wait"))
                .then(|| v.trim().trim_matches('"').parse::<u64>().ok())
                .flatten()
        })
        .map(Duration::from_secs)
}

#[utoipa::path(
    post, path = "/v1/documents", operation_id = "create_document", tag = "documents", security(("bearer" = [])),
    request_body = CreateDocument,
    params(("prefer" = Option<String>, Header,
        description = "`wait=N` (RFC 7240): answer when ingestion is over or after N seconds (at most 25), whichever comes first.")),
    responses(
        (status = 201, description = "Ingested and searchable (only with `Prefer: wait`).", body = CreatedDocument,
            headers(("location" = String, description = "The document's URL."))),
        (status = 202, description = "Stored; ingestion runs as a job: follow `Location` for its state.", body = CreatedDocument,
            headers(("location" = String, description = "The document's URL, which shows the job's state."))),
        (status = 400, description = "Malformed body.", body = ErrorBody),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "The caller may not add documents.", body = ErrorBody),
        (status = 413, description = "Too large.", body = ErrorBody),
        (status = 422, description = "Invalid document or ACL.", body = ErrorBody),
    )
)]
pub async fn create(
    State(s): State<AppState>,
    Auth(p): Auth,
    Client(client): Client,
    headers: HeaderMap,
    Json(req): Json<CreateDocument>,
) -> Result<Response, ApiError> {
    // The tenant is the writer's; nothing in the body can choose another.
    let doc = s
        .rag
        .submit(&p, &req.title, &req.text, req.acl, &client)
        .await?;
    let mut state = doc.state;
    let mut chunks = doc.chunk_count;
    if let Some(wait) = preferred_wait(&headers)
        && let Some(admin) = s.rag.admin_of(&p)
    {
        let give_up = tokio::time::Instant::now() + wait.min(MAX_WAIT);
        let meta = s.rag.wait_for(&admin, &doc.id, give_up).await?;
        state = meta.state;
        chunks = meta.chunk_count;
    }
    let location = axum::http::HeaderValue::from_str(&format!("/v1/documents/{}", doc.id))
        .map_err(|_| ApiError::Internal)?;
    let status = if state == IngestState::Ready {
        StatusCode::CREATED
    } else {
        StatusCode::ACCEPTED
    };
    let (name, progress, failure) = job_fields(&state);
    Ok((
        status,
        [(axum::http::header::LOCATION, location)],
        axum::Json(CreatedDocument {
            id: doc.id,
            state: name,
            chunks,
            progress,
            failure,
        }),
    )
        .into_response())
}

/// Readers: the documents they may read. Writers: every document of the tenant, as
/// metadata (who may read it, who added it) — never the text of one they may not read.
#[utoipa::path(
    get, path = "/v1/documents", operation_id = "list_documents", tag = "documents", security(("bearer" = [])),
    responses(
        (status = 200, description = "What the caller may read (writers: every document of the tenant, metadata only).", body = DocumentList),
        (status = 401, description = "No valid token.", body = ErrorBody),
    )
)]
pub async fn list(State(s): State<AppState>, Auth(p): Auth) -> Result<Response, ApiError> {
    let documents: Vec<DocumentSummary> = if s.rag.admin_of(&p).is_some() {
        s.rag
            .manage_list(&p)
            .await?
            .iter()
            .map(Into::into)
            .collect()
    } else {
        s.rag.list(&p).await?.iter().map(Into::into).collect()
    };
    Ok(axum::Json(DocumentList { documents }).into_response())
}

#[utoipa::path(
    get, path = "/v1/documents/{id}", tag = "documents", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses(
        (status = 200, description = "The document with its ingestion state, if the caller may read it (writers: any document of the tenant, without the text of one they may not read).", body = DocumentView),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 404, description = "Not readable by the caller (or no such document).", body = ErrorBody),
    )
)]
pub async fn get_document(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let admin = s.rag.admin_of(&p);
    let view = match (s.rag.get(&p, &id).await, admin) {
        (Ok(d), admin) => {
            let mut summary = DocumentSummary::from(&d);
            // Who else may read it is the writers' business only.
            if admin.is_some() {
                summary.acl = Some(d.acl);
                summary.created_by = Some(d.created_by);
            }
            DocumentView {
                summary,
                text: Some(d.text),
            }
        }
        // A writer follows the job of a document it may not read itself.
        (Err(RagError::NotFound), Some(admin)) => DocumentView {
            summary: DocumentSummary::from(&s.rag.job_as(&admin, &id).await?),
            text: None,
        },
        (Err(e), _) => return Err(e.into()),
    };
    Ok(axum::Json(view).into_response())
}

/// One passage of a document: what a citation names.
#[derive(Serialize, ToSchema)]
pub struct PassageView {
    chunk_id: String,
    /// Exactly as it stands in the document's text.
    text: String,
}

#[utoipa::path(
    get, path = "/v1/documents/{id}/passages/{chunk_id}", operation_id = "get_passage", tag = "documents", security(("bearer" = [])),
    params(("id" = String, Path), ("chunk_id" = String, Path)),
    responses(
        (status = 200, description = "The passage, if the caller may read the document.", body = PassageView),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 404, description = "Not readable by the caller (or no such passage).", body = ErrorBody),
    )
)]
pub async fn get_passage(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path((id, chunk_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let text = s.rag.passage(&p, &id, &chunk_id).await?;
    Ok(axum::Json(PassageView { chunk_id, text }).into_response())
}

/// The text of a PDF.
#[derive(Serialize, ToSchema)]
pub struct ExtractedText {
    text: String,
}

/// The text of a PDF, to be submitted as a document: for writers, whose page uploads
/// PDF files. Nothing is stored.
#[utoipa::path(
    post, path = "/v1/documents/text", operation_id = "text_of_pdf", tag = "documents", security(("bearer" = [])),
    request_body(content = Vec<u8>, content_type = "application/pdf", description = "A PDF file."),
    responses(
        (status = 200, description = "Its text.", body = ExtractedText),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "The caller may not add documents.", body = ErrorBody),
        (status = 413, description = "Too large.", body = ErrorBody),
        (status = 415, description = "Not sent as `application/pdf`.", body = ErrorBody),
        (status = 422, description = "Not a PDF with text in it.", body = ErrorBody),
    )
)]
pub async fn text_of_pdf(
    State(s): State<AppState>,
    Auth(p): Auth,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let pdf = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/pdf"))
        });
    if !pdf {
        return Err(ApiError::UnsupportedMediaType);
    }
    let text = s.rag.text_of_pdf(&p, body.to_vec()).await?;
    Ok(axum::Json(ExtractedText { text }).into_response())
}

#[utoipa::path(
    delete, path = "/v1/documents/{id}", operation_id = "delete_document", tag = "documents", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses(
        (status = 204, description = "Deleted."),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "Readable, but the caller may not delete documents.", body = ErrorBody),
        (status = 404, description = "Not readable by the caller.", body = ErrorBody),
    )
)]
pub async fn delete(
    State(s): State<AppState>,
    Auth(p): Auth,
    Client(client): Client,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.rag.delete(&p, &id, &client).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Only `query` and `k` are read: `collection`, `filter`, `tenant`, `acl`, `user_id` and
/// the like in the body are ignored and cannot widen the scope.
#[derive(Deserialize, ToSchema)]
pub struct SearchRequest {
    /// Not blank.
    #[schema(min_length = 1, max_length = 4000, pattern = r"\S")]
    query: String,
    /// Results (default 10).
    #[schema(minimum = 1, maximum = 50)]
    k: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub struct SearchResults {
    results: Vec<SearchHit>,
}

/// A passage within the caller's scope.
#[derive(Serialize, ToSchema)]
pub struct SearchHit {
    document_id: String,
    title: String,
    chunk_id: String,
    text: String,
    /// The score of the passage in the fused ranking.
    score: f64,
}

#[utoipa::path(
    post, path = "/v1/search", tag = "documents", security(("bearer" = [])),
    request_body = SearchRequest,
    responses(
        (status = 200, description = "Passages within the caller's scope.", body = SearchResults),
        (status = 400, description = "Malformed body.", body = ErrorBody),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 422, description = "Invalid query.", body = ErrorBody),
    )
)]
pub async fn search(
    State(s): State<AppState>,
    Auth(p): Auth,
    Client(client): Client,
    Json(req): Json<SearchRequest>,
) -> Result<Response, ApiError> {
    if req.query.trim().is_empty() || req.query.chars().count() > 4000 {
        return Err(ApiError::Unprocessable(
            "query must be 1 to 4000 characters.".into(),
        ));
    }
    if req.k.is_some_and(|k| !(1..=50).contains(&k)) {
        return Err(ApiError::Unprocessable(
            "k must be between 1 and 50.".into(),
        ));
    }
    let hits = s
        .rag
        .search(&p, &req.query, req.k.unwrap_or(10), &client)
        .await?;
    let results = hits
        .into_iter()
        .map(|h| SearchHit {
            document_id: h.document_id,
            title: h.title,
            chunk_id: h.chunk_id,
            text: h.text,
            score: h.score,
        })
        .collect();
    Ok(axum::Json(SearchResults { results }).into_response())
}
