//! `/v1/documents` and `/v1/search`: readers see only what they may read; holders of
//! `documents:write` also list (metadata only) and delete every document of their
//! tenant.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::{Auth, Client, Json};
use crate::access::Acl;
use crate::model::{DocumentMeta, DocumentRecord};
use crate::timeutil::rfc3339;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/documents", post(create).get(list))
        .route("/v1/documents/{id}", get(get_document).delete(delete))
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

#[derive(Serialize, ToSchema)]
pub struct CreatedDocument {
    id: String,
    chunks: u32,
}

/// A document as listed: readers get the first four fields; writers get every document
/// of the tenant with its ACL and who added it.
#[derive(Serialize, ToSchema)]
pub struct DocumentSummary {
    id: String,
    title: String,
    /// RFC 3339.
    created_at: String,
    chunks: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    acl: Option<Acl>,
    /// The user id of who added it.
    #[serde(skip_serializing_if = "Option::is_none")]
    created_by: Option<String>,
}

impl From<&DocumentRecord> for DocumentSummary {
    fn from(d: &DocumentRecord) -> Self {
        Self {
            id: d.id.clone(),
            title: d.title.clone(),
            created_at: rfc3339(d.created_at),
            chunks: d.chunk_count,
            acl: None,
            created_by: None,
        }
    }
}

impl From<&DocumentMeta> for DocumentSummary {
    fn from(d: &DocumentMeta) -> Self {
        Self {
            id: d.id.clone(),
            title: d.title.clone(),
            created_at: rfc3339(d.created_at),
            chunks: d.chunk_count,
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
/// added it).
#[derive(Serialize, ToSchema)]
pub struct DocumentView {
    #[serde(flatten)]
    summary: DocumentSummary,
    text: String,
}

#[utoipa::path(
    post, path = "/v1/documents", operation_id = "create_document", tag = "documents", security(("bearer" = [])),
    request_body = CreateDocument,
    responses(
        (status = 201, description = "Ingested.", body = CreatedDocument,
            headers(("location" = String, description = "The document's URL."))),
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
    Json(req): Json<CreateDocument>,
) -> Result<Response, ApiError> {
    // The tenant is the writer's; nothing in the body can choose another.
    let doc = s
        .rag
        .ingest(&p, &req.title, &req.text, req.acl, &client)
        .await?;
    let location = axum::http::HeaderValue::from_str(&format!("/v1/documents/{}", doc.id))
        .map_err(|_| ApiError::Internal)?;
    Ok((
        StatusCode::CREATED,
        [(axum::http::header::LOCATION, location)],
        axum::Json(CreatedDocument {
            id: doc.id,
            chunks: doc.chunk_count,
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
        (status = 200, description = "The document, if the caller may read it.", body = DocumentView),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 404, description = "Not readable by the caller (or no such document).", body = ErrorBody),
    )
)]
pub async fn get_document(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let d = s.rag.get(&p, &id).await?;
    let mut summary = DocumentSummary::from(&d);
    // Who else may read it is the writers' business only.
    if s.rag.admin_of(&p).is_some() {
        summary.acl = Some(d.acl);
        summary.created_by = Some(d.created_by);
    }
    Ok(axum::Json(DocumentView {
        summary,
        text: d.text,
    })
    .into_response())
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
        .retrieve(&p.access_scope(), &req.query, req.k.unwrap_or(10))
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
