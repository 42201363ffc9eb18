//! `GET /openapi.json`: the HTTP contract, generated from the handlers' `#[utoipa::path]`
//! annotations and the wire types the handlers themselves read and return (utoipa), so
//! there is no second copy of the contract to drift. Every route is in it (a test
//! compares it with the routers), with the bearer scheme on every route that needs a
//! token. Schemathesis fuzzes the live server against it in the test suite, checking
//! responses against these schemas.

use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::AppState;
use super::error::ErrorBody;

pub fn router() -> Router<AppState> {
    Router::new().route("/openapi.json", get(spec))
}

/// The OpenAPI document (3.1).
#[utoipa::path(get, path = "/openapi.json", tag = "ops", security(()),
    responses((status = 200, description = "This document.", content_type = "application/json")))]
pub async fn spec() -> Response {
    static SPEC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let body = SPEC.get_or_init(|| ApiDoc::openapi().to_json().unwrap_or_default());
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body.as_str(),
    )
        .into_response()
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "palisade",
        description = "Zero-trust gateway for LLM chat and RAG: authentication, per-user threads, \
                       retrieval within the caller's access scope, an OpenAI-compatible API. \
                       A NUL character anywhere in a JSON body (422) or a URL (400) is refused.",
    ),
    paths(
        spec,
        super::auth_routes::login,
        super::auth_routes::oidc_exchange,
        super::auth_routes::oidc_providers,
        super::auth_routes::oidc_login,
        super::auth_routes::oidc_callback,
        super::auth_routes::refresh,
        super::auth_routes::logout,
        super::auth_routes::logout_all,
        super::auth_routes::me,
        super::auth_routes::list_sessions,
        super::auth_routes::delete_session,
        super::threads_routes::create,
        super::threads_routes::list,
        super::threads_routes::get_thread,
        super::threads_routes::delete,
        super::threads_routes::post_message,
        super::openai_routes::chat_completions,
        super::openai_routes::models,
        super::openai_routes::model,
        super::responses_routes::responses,
        super::openai_routes::embeddings,
        super::documents_routes::create,
        super::documents_routes::list,
        super::documents_routes::get_document,
        super::documents_routes::delete,
        super::documents_routes::search,
        super::admin::list_users,
        super::admin::update_user,
        super::admin::audit,
        super::admin::lineage,
        super::ops::healthz,
        super::ops::readyz,
        super::ops::metrics,
        mcp,
        page,
        page_script,
        page_style,
        page_icon,
    ),
    modifiers(&Security),
    tags(
        (name = "auth", description = "Sign-in, tokens and sessions."),
        (name = "threads", description = "The caller's own conversations."),
        (name = "openai", description = "OpenAI-compatible chat completions."),
        (name = "documents", description = "Documents with ACLs, and retrieval within the caller's scope."),
        (name = "admin", description = "Users and the audit trail of the admin's own tenant."),
        (name = "ops", description = "Health, readiness, metrics, this document."),
        (name = "page", description = "The embedded chat page."),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("PASETO v4.local or JWE")
                    .description(Some(
                        "An access token from /auth/login, /auth/refresh or /auth/oidc/exchange \
                         (sent as `DPoP <token>` with a DPoP proof when the session is \
                         DPoP-bound), or an accepted IdP access token.",
                    ))
                    .build(),
            ),
        );
        c.add_security_scheme(
            "refresh_cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "__Host-palisade_refresh",
                "The HttpOnly refresh cookie; only with an Origin header equal to the public origin.",
            ))),
        );
        // Answers every route can give, declared once here: 400 (malformed input, for
        // one a NUL in the URL) everywhere; 415 and 422 wherever there is a JSON body.
        let error = |description: &str| -> utoipa::openapi::RefOr<utoipa::openapi::Response> {
            utoipa::openapi::ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    utoipa::openapi::ContentBuilder::new()
                        .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
                .into()
        };
        for item in doc.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                let json_body = op
                    .request_body
                    .as_ref()
                    .is_some_and(|b| b.content.contains_key("application/json"));
                let responses = &mut op.responses.responses;
                responses.entry("400".into()).or_insert_with(|| {
                    error("Malformed request (for one, a NUL character in the URL).")
                });
                if json_body {
                    responses
                        .entry("415".into())
                        .or_insert_with(|| error("The body is not application/json."));
                    responses
                        .entry("422".into())
                        .or_insert_with(|| error("The body does not fit the schema."));
                }
            }
        }
    }
}

/// The MCP endpoint (streamable HTTP, JSON responses): tools `search_documents`,
/// resources the caller's threads. A bearer token on every request.
#[utoipa::path(post, path = "/mcp", tag = "openai",
    request_body(content = serde_json::Value, description = "A JSON-RPC 2.0 message.", content_type = "application/json"),
    responses(
        (status = 200, description = "A JSON-RPC response.", content_type = "application/json"),
        (status = 202, description = "A notification was accepted."),
        (status = 401, description = "No valid token.", body = ErrorBody),
    ),
    security(("bearer" = [])))]
#[allow(dead_code)]
fn mcp() {}

/// The chat page.
#[utoipa::path(get, path = "/", tag = "page", security(()),
    responses((status = 200, description = "HTML.", content_type = "text/html")))]
#[allow(dead_code)]
fn page() {}

#[utoipa::path(get, path = "/app.js", tag = "page", security(()),
    responses((status = 200, description = "The page's script.", content_type = "text/javascript")))]
#[allow(dead_code)]
fn page_script() {}

#[utoipa::path(get, path = "/app.css", tag = "page", security(()),
    responses((status = 200, description = "The page's style.", content_type = "text/css")))]
#[allow(dead_code)]
fn page_style() {}

#[utoipa::path(get, path = "/favicon.svg", tag = "page", security(()),
    responses((status = 200, description = "The icon.", content_type = "image/svg+xml")))]
#[allow(dead_code)]
fn page_icon() {}
