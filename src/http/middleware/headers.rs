//! Security headers on every response.

use axum::http::{HeaderValue, header};
use axum::response::Response;

/// Every response: never cached (tokens and conversation text must not land in a shared
/// or browser cache — and unknown suffixes are 404s, so `/auth/me/x.css` caches nothing),
/// never sniffed, never framed, never leaking a referrer.
pub fn secure(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // The chat page sets its own (still strict) policy; everything else loads nothing.
    h.entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(
            "default-src 'none'; frame-ancestors 'none'",
        ));
}
