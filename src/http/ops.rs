//! Liveness and readiness.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use crate::error::ApiError;

pub async fn healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

/// Ready only when the store answers.
pub async fn readyz(State(s): State<AppState>) -> Result<Response, ApiError> {
    s.health.ping().await?;
    Ok(axum::Json(json!({"status": "ready"})).into_response())
}
