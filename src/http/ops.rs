//! Liveness and readiness.

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ErrorDetail};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// `/metrics` on the main address: only with `metrics.bearer_token_env` configured, and
/// only to a request bearing that token (compared in constant time). Otherwise it does
/// not exist here (404), whatever is sent.
#[utoipa::path(
    get, path = "/metrics", tag = "ops", security(("bearer" = [])),
    responses(
        (status = 200, description = "Prometheus text (only with metrics.bearer_token_env, to that token).", content_type = "text/plain"),
        (status = 401, description = "Not the scrape token.", body = crate::http::error::ErrorBody),
        (status = 404, description = "Metrics are not served on this address.", body = crate::http::error::ErrorBody),
    )
)]
pub async fn metrics(State(s): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    use crate::secret::ExposeSecret;
    let Some(expected) = &s.metrics_token else {
        return ApiError::NotFound.into_response();
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !crate::secret::constant_time_eq(given, expected.expose_secret()) {
        return ApiError::Unauthorized.into_response();
    }
    exposition()
}

/// The Prometheus text exposition.
pub fn exposition() -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::telemetry::render(),
    )
        .into_response()
}

/// The router of the separate metrics address (`metrics.listen`): `/metrics` only.
pub fn metrics_only() -> axum::Router {
    axum::Router::new().route("/metrics", get(|| async { exposition() }))
}

#[derive(Serialize, ToSchema)]
pub struct Liveness {
    /// `ok`.
    status: &'static str,
}

#[utoipa::path(
    get, path = "/healthz", tag = "ops", security(()),
    responses((status = 200, description = "The process is up.", body = Liveness))
)]
pub async fn healthz() -> Response {
    axum::Json(Liveness { status: "ok" }).into_response()
}

/// Each part of the store and whether it works: `ok`, `unavailable` or `corrupt`.
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// Only when not ready: why, as every error says it.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorDetail>,
    /// `ready` or `unavailable`.
    status: &'static str,
    checks: BTreeMap<&'static str, &'static str>,
    /// Only when not ready: the store has shown corruption (service stops until an
    /// operator restarts on repaired data).
    #[serde(skip_serializing_if = "Option::is_none")]
    degraded: Option<bool>,
    /// Only when not ready: a network store cannot be reached (service resumes when it is
    /// back).
    #[serde(skip_serializing_if = "Option::is_none")]
    unreachable: Option<bool>,
}

/// Ready only when the store works for real: a fresh connection reads the real tables
/// and a durable write succeeds. Names the failing part, never its internals.
#[utoipa::path(
    get, path = "/readyz", tag = "ops", security(()),
    responses(
        (status = 200, description = "The store works for real.", body = Readiness),
        (status = 503, description = "Not ready; the failing part is named.", body = Readiness),
    )
)]
pub async fn readyz(State(s): State<AppState>) -> Response {
    let checks = s.health.check(s.config.store.probe_timeout).await;
    let ok = checks.iter().all(|c| c.ok) && !s.health.degraded() && !s.health.unreachable();
    let report: BTreeMap<&'static str, &'static str> =
        checks.iter().map(|c| (c.name, c.detail)).collect();
    if ok {
        return axum::Json(Readiness {
            error: None,
            status: "ready",
            checks: report,
            degraded: None,
            unreachable: None,
        })
        .into_response();
    }
    // Damaged data is the operator's to repair; an unreachable store comes back.
    let e = if s.health.degraded() || checks.iter().any(|c| c.detail == "corrupt") {
        ApiError::Unavailable
    } else {
        ApiError::StoreUnavailable
    };
    (
        e.status(),
        axum::Json(Readiness {
            error: Some(ErrorDetail {
                code: e.code(),
                message: e.public_message(),
            }),
            status: "unavailable",
            checks: report,
            degraded: Some(s.health.degraded()),
            unreachable: Some(s.health.unreachable()),
        }),
    )
        .into_response()
}
