//! Declared body size and total handling time, both answered in the error contract;
//! and no service from a store that has shown corruption.

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::http::AppState;
use crate::http::error::ApiError;

/// Data that cannot be trusted is not served: once the store has shown corruption,
/// every request but the health probes answers 503 alike — never a mix of answers and
/// errors. The same while a network store is known to be unreachable (503
/// `store_unavailable`): no request is answered from caches alone.
pub fn refuse_when_degraded(state: &AppState, req: &Request) -> Result<(), ApiError> {
    let probe = matches!(req.uri().path(), "/healthz" | "/readyz");
    if !probe && state.health.degraded() {
        return Err(ApiError::Unavailable);
    }
    if !probe && state.health.unreachable() {
        return Err(ApiError::StoreUnavailable);
    }
    Ok(())
}

/// The declared body size, then the rest of the request within the total time.
pub async fn limits(state: &AppState, req: Request, next: Next) -> Response {
    let max = if req.method() == axum::http::Method::POST && req.uri().path() == "/v1/documents" {
        state.config.limits.max_document_body_bytes
    } else {
        state.config.limits.max_body_bytes
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut resp = if declared.is_some_and(|n| n > max as u64) {
        ApiError::PayloadTooLarge.into_response()
    } else {
        match tokio::time::timeout(state.config.limits.request_timeout, next.run(req)).await {
            Ok(resp) => resp,
            Err(_) => ApiError::Timeout.into_response(),
        }
    };
    // The rest of an oversized body was never read, so this connection cannot carry
    // another request: tell the client instead of letting it reuse a dead socket.
    if resp.status() == StatusCode::PAYLOAD_TOO_LARGE {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}
