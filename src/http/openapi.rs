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
        super::threads_routes::rename,
        super::threads_routes::delete,
        super::threads_routes::post_message,
        super::threads_routes::regenerate,
        super::openai_routes::chat_completions,
        super::openai_routes::models,
        super::openai_routes::model,
        super::responses_routes::responses,
        super::openai_routes::embeddings,
        super::documents_routes::create,
        super::documents_routes::list,
        super::documents_routes::get_document,
        super::documents_routes::get_passage,
        super::documents_routes::text_of_pdf,
        super::documents_routes::delete,
        super::documents_routes::search,
        super::admin::list_users,
        super::admin::update_user,
        super::admin::propose_grant,
        super::admin::list_grants,
        super::admin::approve_grant,
        super::admin::audit,
        super::admin::lineage,
        super::services_routes::create_service,
        super::services_routes::list_services,
        super::services_routes::update_service,
        super::services_routes::create_key,
        super::services_routes::list_keys,
        super::services_routes::revoke_key,
        super::oauth::token,
        super::oauth::resource_metadata,
        super::oauth::resource_metadata_mcp,
        super::oauth::api_resource_metadata,
        super::oauth::server_metadata,
        super::oauth::register,
        super::oauth::authorize,
        super::oauth::decide,
        super::ops::healthz,
        super::ops::readyz,
        super::ops::metrics,
        mcp,
        page,
        page_script,
        page_style,
        page_icon,
        page_vendor,
    ),
    modifiers(&Security),
    tags(
        (name = "auth", description = "Sign-in, tokens and sessions."),
        (name = "threads", description = "The caller's own conversations."),
        (name = "openai", description = "OpenAI-compatible chat completions."),
        (name = "documents", description = "Documents with ACLs, and retrieval within the caller's scope."),
        (name = "oauth", description = "palisade as the OAuth 2.1 authorization server of its own resources (MCP clients): metadata, client registration, consent."),
        (name = "admin", description = "Users and the audit trail of the admin's own tenant."),
        (name = "ops", description = "Health, readiness, metrics, this document."),
        (name = "page", description = "The embedded chat page."),
    )
)]
pub struct ApiDoc;

struct Security;

/// An answer declared for every route (or every route with a JSON body) unless the
/// route declares its own.
struct Generic {
    status: &'static str,
    description: &'static str,
    json_body_only: bool,
}

const GENERIC: [Generic; 6] = [
    Generic {
        status: "400",
        description: "Malformed request (for one, a NUL character in the URL).",
        json_body_only: false,
    },
    Generic {
        status: "413",
        description: "The body is too large.",
        json_body_only: true,
    },
    Generic {
        status: "415",
        description: "The body is not application/json.",
        json_body_only: true,
    },
    Generic {
        status: "422",
        description: "The body does not fit the schema.",
        json_body_only: true,
    },
    // Fail closed: any route may refuse when a store cannot be reached or its data
    // cannot be trusted, or when something cannot be done safely.
    Generic {
        status: "500",
        description: "Internal error: nothing was done.",
        json_body_only: false,
    },
    Generic {
        status: "503",
        description: "A store cannot be reached or its data cannot be trusted; nothing was done.",
        json_body_only: false,
    },
];

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
                for g in GENERIC.iter().filter(|g| json_body || !g.json_body_only) {
                    responses
                        .entry(g.status.into())
                        .or_insert_with(|| error(g.description));
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

/// The page's third-party scripts and styles (Markdown renderer, sanitizer, syntax
/// highlighter) and their licenses, vendored at pinned versions.
#[utoipa::path(get, path = "/vendor/{file}", tag = "page", security(()),
    params(("file" = String, Path, description = "`marked.esm.js`, `purify.es.mjs`, `highlight.min.js`, `highlight-light.min.css`, `highlight-dark.min.css` or `LICENSES.txt`.")),
    responses(
        (status = 200, description = "The file.", content_type = "text/javascript"),
        (status = 404, description = "No such file.", body = ErrorBody),
    ))]
#[allow(dead_code)]
fn page_vendor() {}

/// The documented statuses of every route against what its handler can answer: each
/// `ApiError` the handler (or a helper of its file) names, each service error named in
/// the service methods it calls (one level deep), and what its extractors refuse with.
/// A drift such as a 409 documented for an error the code answers with 422 fails here.
#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    use super::ApiDoc;
    use crate::audit::AuditError;
    use crate::auth::{AuthError, DpopChallenge};
    use crate::chat::ChatError;
    use crate::http::error::ApiError;
    use crate::rag::RagError;
    use crate::threads::ThreadError;
    use utoipa::OpenApi;

    /// The status of `Enum::Variant` as the HTTP face answers it; `None` for a name that
    /// is not a variant. Each arm list is checked exhaustive by the `match` below it.
    fn status_of(kind: &str, variant: &str) -> Option<u16> {
        let e: ApiError = match kind {
            "ApiError" => api_error(variant)?,
            "ThreadError" => thread_error(variant)?.into(),
            "RagError" => rag_error(variant)?.into(),
            "AuthError" => auth_error(variant)?.into(),
            "ChatError" => chat_error(variant)?.into(),
            "AuditError" => match variant {
                "Forbidden" => AuditError::Forbidden.into(),
                _ => return None,
            },
            _ => return None,
        };
        Some(e.status().as_u16())
    }

    fn api_error(v: &str) -> Option<ApiError> {
        use ApiError::*;
        let e = match v {
            "InvalidCredentials" => InvalidCredentials,
            "Unauthorized" => Unauthorized,
            "RefreshReused" => RefreshReused,
            "RefreshInvalid" => RefreshInvalid,
            "RefreshInProgress" => RefreshInProgress,
            "Dpop" => Dpop(DpopChallenge::InvalidProof),
            "CrossSite" => CrossSite,
            "Forbidden" => Forbidden,
            "PersonRequired" => PersonRequired,
            "NotFound" => NotFound,
            "MethodNotAllowed" => MethodNotAllowed,
            "Conflict" => Conflict("x"),
            "TooManyRequests" => TooManyRequests {
                retry_after_secs: 1,
            },
            "BudgetExceeded" => BudgetExceeded {
                retry_after_secs: 1,
            },
            "PayloadTooLarge" => PayloadTooLarge,
            "BadRequest" => BadRequest(String::new()),
            "Unprocessable" => Unprocessable(String::new()),
            "UnsupportedMediaType" => UnsupportedMediaType,
            "Timeout" => Timeout,
            "MessageTooLong" => MessageTooLong,
            "PromptTooLarge" => PromptTooLarge,
            "ThreadLimit" => ThreadLimit,
            "ThreadFull" => ThreadFull,
            "Upstream" => Upstream,
            "ModelNotAllowed" => ModelNotAllowed,
            "ToolStepsExceeded" => ToolStepsExceeded,
            "Unavailable" => Unavailable,
            "StoreUnavailable" => StoreUnavailable,
            "Internal" => Internal,
            "Duty" => Duty(crate::auth::Duty::OwnAccess),
            "OriginMismatch" => OriginMismatch(String::new()),
            _ => return None,
        };
        // A new variant must be added above: this match has no wildcard.
        match &e {
            Duty(_) => {}
            InvalidCredentials
            | Unauthorized
            | RefreshReused
            | RefreshInvalid
            | RefreshInProgress
            | Dpop(_)
            | CrossSite
            | OriginMismatch(_)
            | Forbidden
            | PersonRequired
            | NotFound
            | MethodNotAllowed
            | Conflict(_)
            | TooManyRequests { .. }
            | BudgetExceeded { .. }
            | PayloadTooLarge
            | BadRequest(_)
            | Unprocessable(_)
            | UnsupportedMediaType
            | Timeout
            | MessageTooLong
            | PromptTooLarge
            | ThreadLimit
            | ThreadFull
            | Upstream
            | ModelNotAllowed
            | ToolStepsExceeded
            | Unavailable
            | StoreUnavailable
            | Internal => {}
        }
        Some(e)
    }

    fn thread_error(v: &str) -> Option<ThreadError> {
        use ThreadError::*;
        let e = match v {
            "NotFound" => NotFound,
            "LimitReached" => LimitReached,
            "Full" => Full,
            "MessageTooLong" => MessageTooLong,
            "Invalid" => Invalid("x"),
            "NoQuestion" => NoQuestion,
            _ => return None,
        };
        match &e {
            NotFound | LimitReached | Full | MessageTooLong | Invalid(_) | NoQuestion
            | Store(_) => {}
        }
        Some(e)
    }

    fn rag_error(v: &str) -> Option<RagError> {
        use RagError::*;
        let e = match v {
            "Forbidden" => Forbidden,
            "NotFound" => NotFound,
            "Invalid" => Invalid(String::new()),
            "TooLarge" => TooLarge,
            "Embedding" => Embedding,
            _ => return None,
        };
        match &e {
            Forbidden | NotFound | Invalid(_) | TooLarge | Embedding | Store(_) => {}
        }
        Some(e)
    }

    fn auth_error(v: &str) -> Option<AuthError> {
        use AuthError::*;
        let e = match v {
            "InvalidCredentials" => InvalidCredentials,
            "Unauthorized" => Unauthorized,
            "RefreshReused" => RefreshReused,
            "RefreshInvalid" => RefreshInvalid,
            "RefreshInProgress" => RefreshInProgress,
            "Throttled" => Throttled {
                retry_after_secs: 1,
            },
            "Forbidden" => Forbidden,
            "NotFound" => NotFound,
            "Invalid" => Invalid("x"),
            "Mint" => Mint,
            "Dpop" => Dpop(DpopChallenge::InvalidProof),
            "Unavailable" => Unavailable,
            "Duty" => Duty(crate::auth::Duty::OwnAccess),
            _ => return None,
        };
        match &e {
            Duty(_) => {}
            InvalidCredentials
            | Unauthorized
            | RefreshReused
            | RefreshInvalid
            | RefreshInProgress
            | Throttled { .. }
            | Forbidden
            | NotFound
            | Invalid(_)
            | Mint
            | Dpop(_)
            | Unavailable
            | Store(_) => {}
        }
        Some(e)
    }

    fn chat_error(v: &str) -> Option<ChatError> {
        use ChatError::*;
        let e = match v {
            "RateLimited" => RateLimited {
                retry_after_secs: 1,
            },
            "BudgetExceeded" => BudgetExceeded {
                retry_after_secs: 1,
            },
            "Invalid" => Invalid("x"),
            "ModelNotAllowed" => ModelNotAllowed,
            "ToolStepsExceeded" => ToolStepsExceeded,
            "PromptTooLarge" => PromptTooLarge,
            _ => return None,
        };
        match &e {
            RateLimited { .. }
            | BudgetExceeded { .. }
            | Invalid(_)
            | ModelNotAllowed
            | ToolStepsExceeded
            | PromptTooLarge
            | Thread(_)
            | Rag(_)
            | Llm(_) => {}
        }
        Some(e)
    }

    /// The text of the block that starts at the first `{` at or after `from`.
    fn block(text: &str, from: usize) -> &str {
        let Some(open) = text[from..].find('{').map(|i| from + i) else {
            return "";
        };
        let mut depth = 0;
        for (i, c) in text[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        return &text[open..open + i + 1];
                    }
                }
                _ => {}
            }
        }
        &text[open..]
    }

    /// The bodies of every `fn name(` in `text`.
    fn fn_bodies<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        let pat = format!("fn {name}(");
        let mut out = Vec::new();
        let mut at = 0;
        while let Some(i) = text[at..].find(&pat) {
            let start = at + i;
            // Past the parameter list, whose types may hold braces of their own.
            let mut depth = 0;
            let mut end = start;
            for (j, c) in text[start..].char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            end = start + j;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            out.push(block(text, end));
            at = end.max(start + 1);
        }
        out
    }

    /// The names called in `text` right after `prefix` (`s.threads.` → `create`), or,
    /// without one, the free functions called (`name(` not after `.` or `::`).
    fn calls(text: &str, prefix: Option<&str>) -> BTreeSet<String> {
        let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
        let mut out = BTreeSet::new();
        match prefix {
            Some(p) => {
                let mut rest = text;
                while let Some(j) = rest.find(p) {
                    rest = &rest[j + p.len()..];
                    let m: String = rest.chars().take_while(|c| ident(*c)).collect();
                    if rest[m.len()..].starts_with('(') {
                        out.insert(m);
                    }
                }
            }
            None => {
                for (j, _) in text.match_indices('(') {
                    let before = &text[..j];
                    let start = before.trim_end_matches(ident).len();
                    let name = &before[start..];
                    let prev = before[..start].chars().next_back();
                    if !name.is_empty() && !matches!(prev, Some('.') | Some(':')) {
                        out.insert(name.to_owned());
                    }
                }
            }
        }
        out
    }

    /// Every `Kind::Variant` in `text` for the error kinds above.
    fn named_errors(text: &str) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for kind in [
            "ApiError",
            "ThreadError",
            "RagError",
            "AuthError",
            "ChatError",
            "AuditError",
        ] {
            let pat = format!("{kind}::");
            let mut rest = text;
            while let Some(i) = rest.find(&pat) {
                rest = &rest[i + pat.len()..];
                let v: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric())
                    .collect();
                out.insert((kind.to_owned(), v));
            }
        }
        out
    }

    fn source(rel: &str) -> String {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut text = String::new();
        let mut stack = vec![root.join(rel)];
        while let Some(p) = stack.pop() {
            if p.is_dir() {
                stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            } else if p.extension().is_some_and(|x| x == "rs") {
                text.push_str(&std::fs::read_to_string(&p).unwrap());
            }
        }
        text
    }

    #[test]
    fn every_status_a_route_can_answer_is_documented() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let services: BTreeMap<&str, String> = [
            ("threads", source("threads")),
            ("chat", source("chat")),
            ("rag", source("rag")),
            ("auth", source("auth")),
            ("audit", source("audit.rs")),
        ]
        .into_iter()
        .collect();
        let http_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
        let mut checked = 0;
        let mut missing = Vec::new();
        for entry in std::fs::read_dir(&http_dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|x| x != "rs") || path.ends_with("openapi.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let mut at = 0;
            while let Some(i) = text[at..].find("#[utoipa::path(") {
                let attr_at = at + i;
                let attr = &text[attr_at..];
                let method = attr["#[utoipa::path(".len()..]
                    .trim_start()
                    .split(',')
                    .next()
                    .unwrap()
                    .trim()
                    .to_owned();
                let route = attr
                    .split("path = \"")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .unwrap()
                    .to_owned();
                let fn_at = attr_at + attr.find("pub async fn ").unwrap();
                let name: String = text[fn_at + "pub async fn ".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let body = fn_bodies(&text[fn_at..], &name)[0];
                let signature = &text[fn_at..fn_at + text[fn_at..].find(body).unwrap()];
                at = fn_at + 1;

                // What the handler can answer.
                let mut expected: BTreeMap<u16, String> = BTreeMap::new();
                let mut errors = named_errors(body);
                // Helpers of the same file that the handler calls (`helper(`, not a
                // method or a field of the same name).
                for helper in calls(body, None) {
                    if helper != name {
                        for b in fn_bodies(&text, &helper) {
                            errors.extend(named_errors(b));
                        }
                    }
                }
                // The service methods it calls (`s.<service>.<method>(`), and the methods
                // those call on the services they hold (`self.<service>.<method>(`).
                for (service, src) in &services {
                    for method in calls(body, Some(&format!("s.{service}."))) {
                        for b in fn_bodies(src, &method) {
                            errors.extend(named_errors(b));
                            for (inner, inner_src) in &services {
                                for m in calls(b, Some(&format!("self.{inner}."))) {
                                    for ib in fn_bodies(inner_src, &m) {
                                        errors.extend(named_errors(ib));
                                    }
                                }
                            }
                        }
                    }
                }
                // An error of the handler's own must be declared by the handler, not
                // only by a generic answer every route gets (a 409 documented where
                // the code answers 422 would hide behind the generic 422).
                let mut specific: BTreeMap<u16, String> = BTreeMap::new();
                for (kind, variant) in &errors {
                    if let Some(status) = status_of(kind, variant) {
                        let why = format!("{kind}::{variant}");
                        if matches!(status, 500 | 503) {
                            expected.insert(status, why);
                        } else {
                            specific.insert(status, why);
                        }
                    }
                }
                if signature.contains("Auth(") && !signature.contains("MaybeAuth(") {
                    expected.insert(401, "the bearer token".into());
                }
                if signature.contains("Person(") {
                    expected.insert(401, "the bearer token".into());
                    specific.insert(403, "a person's own session".into());
                }
                if signature.contains("Json(") {
                    for s in [400, 413, 415, 422] {
                        expected.insert(s, "the JSON body".into());
                    }
                }
                if signature.contains("Query(") {
                    expected.insert(400, "the query string".into());
                }

                let key = route.replace("{*", "{");
                let op = &doc["paths"][&key][&method];
                assert!(op.is_object(), "{method} {key} is not documented");
                let responses = op["responses"].as_object().unwrap();
                let declared: BTreeSet<u16> =
                    responses.keys().filter_map(|k| k.parse().ok()).collect();
                let own: BTreeSet<u16> = responses
                    .iter()
                    .filter(|(_, r)| {
                        !super::GENERIC
                            .iter()
                            .any(|g| Some(g.description) == r["description"].as_str())
                    })
                    .filter_map(|(k, _)| k.parse().ok())
                    .collect();
                for (status, why) in expected {
                    if !declared.contains(&status) {
                        missing.push(format!("{method} {key}: {status} ({why})"));
                    }
                }
                for (status, why) in specific {
                    if !own.contains(&status) {
                        missing.push(format!(
                            "{method} {key}: {status} ({why}), declared by the route"
                        ));
                    }
                }
                checked += 1;
            }
        }
        assert!(checked >= 30, "only {checked} routes found");
        assert!(
            missing.is_empty(),
            "statuses a route can answer but does not document:\n{}",
            missing.join("\n")
        );
    }
}
