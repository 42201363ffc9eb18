//! `/v1/documents` and `/v1/search`: only what the caller may see.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::extract::{Auth, Json};
use crate::error::ApiError;
use crate::store::{Acl, DocumentRecord};
use crate::timeutil::rfc3339;

#[derive(Deserialize)]
pub struct CreateDocument {
    title: String,
    text: String,
    acl: Acl,
}

fn summary(d: &DocumentRecord) -> serde_json::Value {
    json!({"id": d.id, "title": d.title, "created_at": rfc3339(d.created_at), "chunks": d.chunk_count})
}

pub async fn create(
    State(s): State<AppState>,
    Auth(p): Auth,
    Json(req): Json<CreateDocument>,
) -> Result<Response, ApiError> {
    // The tenant is the writer's; nothing in the body can choose another.
    let doc = s.rag.ingest(&p, &req.title, &req.text, req.acl).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"id": doc.id, "chunks": doc.chunk_count})),
    )
        .into_response())
}

pub async fn list(State(s): State<AppState>, Auth(p): Auth) -> Result<Response, ApiError> {
    let docs = s.rag.list(&p.access_scope()).await?;
    Ok(
        axum::Json(json!({"documents": docs.iter().map(summary).collect::<Vec<_>>()}))
            .into_response(),
    )
}

pub async fn get(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let d = s.rag.get(&p.access_scope(), &id).await?;
    let mut body = summary(&d);
    body["text"] = json!(d.text);
    // Who else may read it is the writers' business only.
    if s.rag.can_write(&p) {
        body["acl"] = json!(d.acl);
    }
    Ok(axum::Json(body).into_response())
}

pub async fn delete(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.rag.delete(&p, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Only `query` and `k` are read: `collection`, `filter`, `tenant`, `acl`, `user_id` and
/// the like in the body are ignored and cannot widen the scope.
#[derive(Deserialize)]
pub struct SearchRequest {
    query: String,
    k: Option<usize>,
}

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
