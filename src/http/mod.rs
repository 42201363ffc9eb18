//! The HTTP face: routes, middleware and the state they share.

pub mod admin;
pub mod auth_routes;
pub mod cookies;
pub mod documents_routes;
pub mod extract;
pub mod openai_routes;
pub mod ops;
pub mod threads_routes;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use std::sync::Arc;
use tower_http::trace::TraceLayer;

use crate::auth::AuthService;
use crate::config::Config;
use crate::error::ApiError;
use crate::llm::Llm;
use crate::rag::Rag;
use crate::store::{AuditStore, Health, UserStore};
use crate::threads::Threads;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub auth: Arc<AuthService>,
    pub threads: Arc<Threads>,
    pub llm: Arc<Llm>,
    pub rag: Arc<Rag>,
    pub audit_log: Arc<dyn AuditStore>,
    pub users: Arc<dyn UserStore>,
    pub health: Arc<dyn Health>,
}

pub fn router(state: AppState) -> Router {
    let max_body = state.config.limits.max_body_bytes;
    Router::new()
        .route("/auth/login", post(auth_routes::login))
        .route("/auth/refresh", post(auth_routes::refresh))
        .route("/auth/logout", post(auth_routes::logout))
        .route("/auth/logout-all", post(auth_routes::logout_all))
        .route("/auth/me", get(auth_routes::me))
        .route("/auth/sessions", get(auth_routes::list_sessions))
        .route("/auth/sessions/{id}", delete(auth_routes::delete_session))
        .route(
            "/v1/threads",
            post(threads_routes::create).get(threads_routes::list),
        )
        .route(
            "/v1/threads/{id}",
            get(threads_routes::get).delete(threads_routes::delete),
        )
        .route(
            "/v1/threads/{id}/messages",
            post(threads_routes::post_message),
        )
        .route(
            "/v1/chat/completions",
            post(openai_routes::chat_completions),
        )
        .route("/v1/models", get(openai_routes::models))
        .route(
            "/v1/documents",
            post(documents_routes::create).get(documents_routes::list),
        )
        .route(
            "/v1/documents/{id}",
            get(documents_routes::get).delete(documents_routes::delete),
        )
        .route("/v1/search", post(documents_routes::search))
        .route("/admin/users", get(admin::list_users))
        .route(
            "/admin/users/{id}",
            axum::routing::patch(admin::update_user),
        )
        .route("/admin/audit", get(admin::audit))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(state.clone(), limits))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            // Path only: a query string could carry something secret.
            tracing::info_span!("http", method = %req.method(), path = %req.uri().path())
        }))
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Declared body size and total handling time, both answered in the error contract.
async fn limits(State(state): State<AppState>, req: Request, next: Next) -> Response {
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
    if resp.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// Every response: never cached (tokens and conversation text must not land in a shared
/// or browser cache — and unknown suffixes are 404s, so `/auth/me/x.css` caches nothing),
/// never sniffed, never framed, never leaking a referrer.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
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
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    );
    resp
}
