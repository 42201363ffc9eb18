//! `x-request-id` on every request and response (tower-http's request-id layers).
//!
//! An id sent by the client (or a proxy in front) is kept only if it is short and
//! plain (`[A-Za-z0-9._-]{1,64}`): it ends up in log lines and audit rows, so nothing
//! else may pass. Otherwise palisade mints a 128-bit random one. Handlers read it as the
//! [`RequestId`] extension (through `ClientInfo`), so every audit event of the request
//! carries it; the tracing span of the request carries it for every log line.

use axum::extract::Request;
use axum::http::HeaderValue;
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, SetRequestIdLayer};

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The request id, as an extension of the request.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

#[derive(Clone, Copy, Default)]
pub struct MintRequestId;

impl MakeRequestId for MintRequestId {
    fn make_request_id<B>(
        &mut self,
        _: &axum::http::Request<B>,
    ) -> Option<tower_http::request_id::RequestId> {
        HeaderValue::from_str(&crate::secret::public_id())
            .ok()
            .map(tower_http::request_id::RequestId::new)
    }
}

fn acceptable(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// Exposes the final id as an extension. Runs inside [`SetRequestIdLayer`], after it
/// has set the header.
pub fn expose(req: &mut Request) {
    if let Some(v) = req.headers().get(REQUEST_ID_HEADER).cloned() {
        req.extensions_mut().insert(RequestId(
            String::from_utf8_lossy(v.as_bytes()).into_owned(),
        ));
    }
}

/// Strips an unacceptable inbound id before the set layer sees it (so one is minted).
pub fn sanitize_inbound(req: &mut Request) {
    if req
        .headers()
        .get(REQUEST_ID_HEADER)
        .is_some_and(|v| !acceptable(v))
    {
        req.headers_mut().remove(REQUEST_ID_HEADER);
    }
}

/// The layers in application order (outermost first): sanitise, set, propagate.
pub fn request_id_layers() -> (SetRequestIdLayer<MintRequestId>, PropagateRequestIdLayer) {
    let name = axum::http::HeaderName::from_static(REQUEST_ID_HEADER);
    (
        SetRequestIdLayer::new(name.clone(), MintRequestId),
        PropagateRequestIdLayer::new(name),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_short_ids_are_kept() {
        assert!(acceptable(&HeaderValue::from_static("abc-123_x.y")));
        assert!(!acceptable(&HeaderValue::from_static("")));
        assert!(!acceptable(&HeaderValue::from_static("a b")));
        assert!(!acceptable(&HeaderValue::from_static("x\"}{injected")));
        assert!(!acceptable(
            &HeaderValue::from_str(&"a".repeat(65)).unwrap()
        ));
    }
}
