//! Liveness and readiness.

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::AppState;
use super::error::ApiError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

pub async fn healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

/// Ready only when the store answers a real query.
pub async fn readyz(State(s): State<AppState>) -> Result<Response, ApiError> {
    s.health.ping().await?;
    Ok(axum::Json(json!({"status": "ready"})).into_response())
}
