//! Declared body size and total handling time, both answered in the error contract.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::http::AppState;
use crate::http::error::ApiError;

pub async fn limits(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let max = state.config.limits.max_body_bytes;
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
