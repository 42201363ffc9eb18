//! Middleware, one concern per file, run as two steps around tower-http's request-id
//! and trace layers: [`outer`] and [`inner`]. (Each `from_fn` step clones the service
//! stack inside it for every request; as seven nested steps they cost a stateless chat
//! request about 6 % of its CPU.)

mod headers;
mod input;
mod limits;
mod metrics;
mod request_id;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;

pub use request_id::{REQUEST_ID_HEADER, RequestId, request_id_layers};

/// Outermost, in order: count and time the request (after routing, so by its route
/// template), set the security headers on its response, and drop an unacceptable
/// inbound request id before the id layers see it.
pub async fn outer(mut req: Request, next: Next) -> Response {
    let tracked = metrics::Tracked::start(&req);
    request_id::sanitize_inbound(&mut req);
    let mut resp = super::error::json_shaped(next.run(req).await);
    headers::secure(&mut resp);
    tracked.finish(resp.status().as_u16());
    resp
}

/// Innermost, in order: expose the request id to handlers, refuse a NUL in the URL,
/// refuse service from a degraded store, then bound the body and the handling time.
pub async fn inner(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    request_id::expose(&mut req);
    if let Err(e) = input::refuse_nul(req.uri()) {
        return e.into_response();
    }
    if let Err(e) = limits::refuse_when_degraded(&state, &req) {
        return e.into_response();
    }
    limits::limits(&state, req, next).await
}
