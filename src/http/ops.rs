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

/// Ready only when the store works for real: a fresh connection reads the real tables
/// and a durable write succeeds. Names the failing part, never its internals.
pub async fn readyz(State(s): State<AppState>) -> Response {
    let checks = s.health.check().await;
    let ok = checks.iter().all(|c| c.ok) && !s.health.degraded() && !s.health.unreachable();
    let report: serde_json::Map<String, serde_json::Value> = checks
        .iter()
        .map(|c| (c.name.to_owned(), json!(c.detail)))
        .collect();
    if ok {
        return axum::Json(json!({"status": "ready", "checks": report})).into_response();
    }
    // Damaged data is the operator's to repair; an unreachable store comes back.
    let e = if s.health.degraded() || checks.iter().any(|c| c.detail == "corrupt") {
        ApiError::Unavailable
    } else {
        ApiError::StoreUnavailable
    };
    (
        e.status(),
        axum::Json(json!({
            "error": {"code": e.code(), "message": e.public_message()},
            "status": "unavailable",
            "checks": report,
            "degraded": s.health.degraded(),
            "unreachable": s.health.unreachable(),
        })),
    )
        .into_response()
}
