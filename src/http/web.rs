//! The reference chat page: `/`, `/app.js`, `/app.css` and the vendored renderer,
//! sanitizer and highlighter under `/vendor/`, embedded in the binary (no CDN, no
//! third-party request, no Node at run time). The page's policy allows scripts,
//! styles and connections to this origin only — no inline script or style, no plugin,
//! no `<base>`, no framing, forms posting only here.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;

const INDEX: &str = include_str!("../../web/index.html");
const APP_JS: &str = include_str!("../../web/app.js");
const APP_CSS: &str = include_str!("../../web/app.css");
const FAVICON: &str = include_str!("../../web/favicon.svg");
// Third-party, vendored at pinned versions by scripts/vendor-web.sh (licenses in
// web/vendor/LICENSES.txt).
const MARKED: &str = include_str!("../../web/vendor/marked.esm.js");
const PURIFY: &str = include_str!("../../web/vendor/purify.es.mjs");
const HIGHLIGHT: &str = include_str!("../../web/vendor/highlight.min.js");
const HIGHLIGHT_LIGHT: &str = include_str!("../../web/vendor/highlight-light.min.css");
const HIGHLIGHT_DARK: &str = include_str!("../../web/vendor/highlight-dark.min.css");
const LICENSES: &str = include_str!("../../web/vendor/LICENSES.txt");

/// The Content-Security-Policy of the page and its assets.
pub const PAGE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/",
            get(|| async { asset(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/app.js",
            get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/app.css",
            get(|| async { asset(APP_CSS, "text/css; charset=utf-8") }),
        )
        .route(
            "/favicon.svg",
            get(|| async { asset(FAVICON, "image/svg+xml") }),
        )
        .route("/vendor/{file}", get(vendored))
}

/// A vendored file by its name; anything else is a 404.
async fn vendored(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "marked.esm.js" => (MARKED, "text/javascript; charset=utf-8"),
        "purify.es.mjs" => (PURIFY, "text/javascript; charset=utf-8"),
        "highlight.min.js" => (HIGHLIGHT, "text/javascript; charset=utf-8"),
        "highlight-light.min.css" => (HIGHLIGHT_LIGHT, "text/css; charset=utf-8"),
        "highlight-dark.min.css" => (HIGHLIGHT_DARK, "text/css; charset=utf-8"),
        "LICENSES.txt" => (LICENSES, "text/plain; charset=utf-8"),
        _ => return super::error::ApiError::NotFound.into_response(),
    };
    asset(body, kind)
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(PAGE_CSP),
            ),
        ],
        body,
    )
        .into_response()
}
