//! The HTTP face: routes per resource (each module exports `router()`), typed
//! extractors, the one error type, and middleware. The only place where service errors
//! become statuses (`error.rs`).

pub mod admin;
pub mod auth_routes;
pub mod cookies;
pub mod documents_routes;
pub mod error;
pub mod extract;
pub mod mcp;
pub mod middleware;
pub mod oauth;
pub mod openai_routes;
pub mod openapi;
pub mod ops;
pub mod responses_routes;
pub mod server;
pub mod services_routes;
pub mod threads_routes;
pub mod web;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use std::sync::Arc;
use tower_http::trace::TraceLayer;

use crate::audit::Audit;
use crate::auth::AuthService;
use crate::chat::ChatService;
use crate::config::Config;
use crate::model::Health;
use crate::rag::Rag;
use crate::threads::Threads;
use error::ApiError;

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

/// What every handler and middleware reads: one pointer, so that handing it to each
/// layer of a request is one reference count, not one per service.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    pub fn new(services: Services) -> Self {
        Self(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// The services behind [`AppState`].
pub struct Services {
    pub config: Arc<Config>,
    /// The origins browsers may use (`Config::origins`).
    pub origins: crate::config::Origins,
    pub auth: Arc<AuthService>,
    pub threads: Arc<Threads>,
    pub chat: Arc<ChatService>,
    pub rag: Arc<Rag>,
    pub audit: Audit,
    pub health: Arc<dyn Health>,
    /// The bearer token that opens `/metrics` on the main address (`None`: it is not
    /// served there).
    pub metrics_token: Option<Arc<crate::secret::SecretString>>,
}

pub fn router(state: AppState) -> Router {
    let max_body = state.config.limits.max_body_bytes;
    let (set_id, propagate_id) = middleware::request_id_layers();
    Router::new()
        .merge(auth_routes::router())
        .merge(threads_routes::router())
        .merge(openai_routes::router())
        .merge(responses_routes::router())
        .merge(documents_routes::router(
            state.config.limits.max_document_body_bytes,
        ))
        .merge(admin::router())
        .merge(services_routes::router())
        .merge(oauth::router())
        .merge(ops::router())
        .merge(mcp::router(state.clone()))
        .merge(web::router())
        .merge(openapi::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::inner,
        ))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            // Path only: a query string could carry something secret.
            let id = req
                .headers()
                .get(middleware::REQUEST_ID_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }))
        // Outermost first on the way in: sanitise the inbound id (in `outer`), set (or
        // mint) it, then copy it onto the response.
        .layer(propagate_id)
        .layer(set_id)
        .layer(axum::middleware::from_fn(middleware::outer))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
