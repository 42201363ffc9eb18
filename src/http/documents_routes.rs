//! `/v1/documents` and `/v1/search`: readers see only what they may read; holders of
//! `documents:write` also list (metadata only) and delete every document of their
//! tenant.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use super::extract::{Auth, Client, Json};
use crate::access::Acl;
use crate::store::{DocumentMeta, DocumentRecord};
use crate::timeutil::rfc3339;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/documents", post(create).get(list))
        .route("/v1/documents/{id}", get(get_document).delete(delete))
        .route("/v1/search", post(search))
}

#[derive(Deserialize)]
pub struct CreateDocument {
    title: String,
    text: String,
    acl: Acl,
}

fn summary(d: &DocumentRecord) -> serde_json::Value {
    json!({"id": d.id, "title": d.title, "created_at": rfc3339(d.created_at), "chunks": d.chunk_count})
}

fn meta(d: &DocumentMeta) -> serde_json::Value {
    json!({
        "id": d.id, "title": d.title, "created_at": rfc3339(d.created_at), "chunks": d.chunk_count,
        "acl": d.acl, "created_by": d.created_by,
    })
}

#[utoipa::path(
    post, path = "/v1/documents", operation_id = "create_document", tag = "documents", security(("bearer" = [])),
    request_body = crate::http::openapi::CreateDocumentBody,
    responses(
        (status = 201, description = "Ingested.", body = crate::http::openapi::CreatedDocumentBody,
            headers(("location" = String, description = "The document's URL."))),
        (status = 400, description = "Malformed body.", body = crate::http::openapi::ErrorBody),
        (status = 401, description = "No valid token.", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "The caller may not add documents.", body = crate::http::openapi::ErrorBody),
        (status = 413, description = "Too large.", body = crate::http::openapi::ErrorBody),
        (status = 422, description = "Invalid document or ACL.", body = crate::http::openapi::ErrorBody),
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
        axum::Json(json!({"id": doc.id, "chunks": doc.chunk_count})),
    )
        .into_response())
}

/// Readers: the documents they may read. Writers: every document of the tenant, as
/// metadata (who may read it, who added it) — never the text of one they may not read.
#[utoipa::path(
    get, path = "/v1/documents", operation_id = "list_documents", tag = "documents", security(("bearer" = [])),
    responses(
        (status = 200, description = "What the caller may read (writers: every document of the tenant, metadata only).", body = crate::http::openapi::DocumentListBody),
        (status = 401, description = "No valid token.", body = crate::http::openapi::ErrorBody),
    )
)]
pub async fn list(State(s): State<AppState>, Auth(p): Auth) -> Result<Response, ApiError> {
    let documents: Vec<serde_json::Value> = if s.rag.admin_of(&p).is_some() {
        s.rag.manage_list(&p).await?.iter().map(meta).collect()
    } else {
        s.rag.list(&p).await?.iter().map(summary).collect()
    };
    Ok(axum::Json(json!({ "documents": documents })).into_response())
}

#[utoipa::path(
    get, path = "/v1/documents/{id}", tag = "documents", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses(
        (status = 200, description = "The document, if the caller may read it.", body = crate::http::openapi::DocumentBody),
        (status = 401, description = "No valid token.", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "Not readable by the caller (or no such document).", body = crate::http::openapi::ErrorBody),
    )
)]
pub async fn get_document(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let d = s.rag.get(&p, &id).await?;
    let mut body = summary(&d);
    body["text"] = json!(d.text);
    // Who else may read it is the writers' business only.
    if s.rag.admin_of(&p).is_some() {
        body["acl"] = json!(d.acl);
        body["created_by"] = json!(d.created_by);
    }
    Ok(axum::Json(body).into_response())
}

#[utoipa::path(
    delete, path = "/v1/documents/{id}", operation_id = "delete_document", tag = "documents", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses(
        (status = 204, description = "Deleted."),
        (status = 401, description = "No valid token.", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "Readable, but the caller may not delete documents.", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "Not readable by the caller.", body = crate::http::openapi::ErrorBody),
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
#[derive(Deserialize)]
pub struct SearchRequest {
    query: String,
    k: Option<usize>,
}

#[utoipa::path(
    post, path = "/v1/search", tag = "documents", security(("bearer" = [])),
    request_body = crate::http::openapi::SearchBody,
    responses(
        (status = 200, description = "Passages within the caller's scope.", body = crate::http::openapi::SearchResultsBody),
        (status = 400, description = "Malformed body.", body = crate::http::openapi::ErrorBody),
        (status = 401, description = "No valid token.", body = crate::http::openapi::ErrorBody),
        (status = 422, description = "Invalid query.", body = crate::http::openapi::ErrorBody),
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
    let results: Vec<_> = hits
        .iter()
        .map(|h| {
            json!({"document_id": h.document_id, "title": h.title, "chunk_id": h.chunk_id, "text": h.text, "score": h.score})
        })
        .collect();
    Ok(axum::Json(json!({"results": results})).into_response())
}
