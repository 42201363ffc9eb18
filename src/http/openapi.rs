//! `GET /openapi.json`: the HTTP contract, generated from the handlers' `#[utoipa::path]`
//! annotations and the wire-format types below (utoipa). Every route is in it (a test
//! compares it with the routers), with the bearer scheme on every route that needs a
//! token. Schemathesis fuzzes the live server against it in the test suite, checking
//! responses against these schemas, so the types here cannot drift from the wire.

use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

use super::AppState;

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

/// Every error: a stable machine-readable code and a human message.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// E.g. `unauthorized`, `not_found`, `too_many_requests`, `budget_exceeded`.
    pub code: String,
    pub message: String,
}

#[derive(Deserialize, ToSchema)]
pub struct LoginBody {
    pub username: String,
    #[schema(format = Password)]
    pub password: String,
}

#[derive(Deserialize, ToSchema)]
pub struct ExchangeBody {
    /// An ID token of a configured issuer.
    pub id_token: String,
}

#[derive(Serialize, ToSchema)]
pub struct TokenBody {
    pub access_token: String,
    /// `Bearer`, or `DPoP` for a DPoP-bound session.
    pub token_type: String,
    /// Seconds.
    pub expires_in: u64,
    pub session_id: String,
}

#[derive(Serialize, ToSchema)]
pub struct ProviderList {
    pub providers: Vec<ProviderView>,
}

#[derive(Serialize, ToSchema)]
pub struct ProviderView {
    pub name: String,
    pub issuer: String,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SignInQuery {
    /// The issuer's configured `name`.
    pub provider: Option<String>,
    /// A path on this site to return to (default `/`).
    #[param(pattern = r"^/([^/\\\s\x00-\x1f\x7f-\x9f][^\\\s\x00-\x1f\x7f-\x9f]{0,1022})?$")]
    pub return_to: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackQuery {
    pub code: Option<String>,
    pub state: Option<String>,
    pub iss: Option<String>,
    pub error: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct MeBody {
    pub subject: String,
    pub username: String,
    pub tenant: String,
    pub roles: Vec<String>,
    pub groups: Vec<String>,
    pub session_id: String,
}

#[derive(Deserialize, ToSchema)]
pub struct CreateThreadBody {
    pub title: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ThreadListBody {
    pub threads: Vec<super::threads_routes::ThreadView>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// The cursor `next` of the previous page.
    #[param(minimum = 1)]
    pub before: Option<i64>,
    /// Messages per page (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct ThreadPageBody {
    pub id: String,
    pub title: String,
    pub created_at: String,
    pub updated_at: String,
    /// Oldest first.
    pub messages: Vec<MessageBody>,
    /// The cursor of the page before, absent at the start of the thread.
    pub next: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CitationBody {
    pub document_id: String,
    pub title: String,
    pub chunk_id: String,
}

#[derive(Serialize, ToSchema)]
pub struct ToolCallBody {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub function: ToolFunctionBody,
}

#[derive(Serialize, ToSchema)]
pub struct ToolFunctionBody {
    pub name: String,
    pub arguments: String,
}

#[derive(Serialize, ToSchema)]
pub struct MessageBody {
    pub id: String,
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    pub content: String,
    pub created_at: String,
    pub citations: Vec<CitationBody>,
    pub tool_calls: Option<Vec<ToolCallBody>>,
    pub tool_call_id: Option<String>,
    /// `source_no_longer_accessible`: withheld because the caller can no longer read
    /// a document it cites.
    pub redacted: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct PostMessageBody {
    /// Not blank; at most `threads.max_message_chars` characters (413 above).
    #[schema(min_length = 1, pattern = r"\S")]
    pub content: String,
    /// Answer as server-sent events.
    pub stream: Option<bool>,
}

#[derive(Serialize, ToSchema)]
pub struct PostedBody {
    /// The stored answer.
    pub message: MessageBody,
}

/// The OpenAI chat-completions request; only the fields listed are read (and `user`,
/// which is replaced by the caller's id).
#[derive(Deserialize, ToSchema)]
pub struct CompletionBody {
    #[schema(min_items = 1)]
    pub messages: Vec<InMessageBody>,
    pub model: Option<String>,
    pub stream: Option<bool>,
    pub stream_options: Option<serde_json::Value>,
    pub n: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_tokens: Option<u32>,
    pub max_completion_tokens: Option<u32>,
    /// A string or an array of strings.
    pub stop: Option<serde_json::Value>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub response_format: Option<serde_json::Value>,
    pub tools: Option<Vec<serde_json::Value>>,
    pub tool_choice: Option<serde_json::Value>,
    pub parallel_tool_calls: Option<bool>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<u32>,
    /// Token ids (decimal strings) to whole numbers from -100 to 100.
    pub logit_bias: Option<serde_json::Value>,
    /// `none`, `minimal`, `low`, `medium`, `high`, `xhigh` or `max`.
    pub reasoning_effort: Option<String>,
    /// `low`, `medium` or `high`.
    pub verbosity: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct InMessageBody {
    pub role: RoleBody,
    /// A string, or an array of `text` and `image_url` (and, for an assistant,
    /// `refusal`) parts.
    pub content: Option<serde_json::Value>,
    pub name: Option<String>,
    pub refusal: Option<String>,
    pub tool_calls: Option<Vec<serde_json::Value>>,
    pub tool_call_id: Option<String>,
}

/// The OpenAI embeddings request.
#[derive(Deserialize, ToSchema)]
pub struct EmbeddingsBody {
    /// The embedding model's name (`GET /v1/models` does not list it); absent: it.
    pub model: Option<String>,
    /// A text, or an array of 1 to 2048 texts (token arrays are refused).
    pub input: EmbeddingInputBody,
    pub encoding_format: Option<EncodingFormatBody>,
    /// Only the model's own dimension (422 otherwise).
    pub dimensions: Option<u32>,
}

#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub enum EmbeddingInputBody {
    One(String),
    Many(Vec<String>),
}

/// `float` (the default) or `base64` (little-endian `f32`s).
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EncodingFormatBody {
    Float,
    Base64,
}

/// The OpenAI Responses request; only the fields listed are read.
#[derive(Deserialize, ToSchema)]
pub struct ResponsesBody {
    pub model: Option<String>,
    /// A string, or an array of input items (`message`, `function_call`,
    /// `function_call_output`, `reasoning`).
    pub input: serde_json::Value,
    pub instructions: Option<String>,
    /// Function tools (`{"type": "function", "name", "parameters", "strict"}`).
    pub tools: Option<Vec<serde_json::Value>>,
    pub tool_choice: Option<serde_json::Value>,
    pub parallel_tool_calls: Option<bool>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_output_tokens: Option<u32>,
    pub stream: Option<bool>,
    /// Keep the conversation (as one of the caller's threads); off unless set.
    pub store: Option<bool>,
    /// Continue a kept conversation (404 unless it is one of the caller's).
    pub previous_response_id: Option<String>,
    /// `{"format": {"type": "text" | "json_object" | "json_schema", …}, "verbosity"}`.
    pub text: Option<serde_json::Value>,
    /// `{"effort": …}`.
    pub reasoning: Option<serde_json::Value>,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RoleBody {
    System,
    Developer,
    User,
    Assistant,
    Tool,
}

/// An OpenAI `chat.completion` object, with palisade's `citations`.
#[derive(Serialize, ToSchema)]
pub struct CompletionResponseBody {
    pub id: String,
    pub object: String,
    pub created: i64,
    pub model: String,
    pub choices: Vec<serde_json::Value>,
    pub usage: Option<serde_json::Value>,
    pub system_fingerprint: Option<String>,
    pub citations: Option<Vec<CitationBody>>,
}

#[derive(Serialize, ToSchema)]
pub struct ModelListBody {
    pub object: String,
    pub data: Vec<ModelBody>,
}

#[derive(Serialize, ToSchema)]
pub struct ModelBody {
    pub id: String,
    pub object: String,
    pub created: i64,
    pub owned_by: String,
}

#[derive(Deserialize, ToSchema)]
pub struct AclBody {
    #[schema(nullable = false)]
    pub roles: Option<Vec<String>>,
    #[schema(nullable = false)]
    pub groups: Option<Vec<String>>,
    /// User ids.
    #[schema(nullable = false)]
    pub users: Option<Vec<String>>,
    #[schema(nullable = false)]
    pub public: Option<bool>,
}

/// The ACL must grant someone: `public`, or at least one role, group or user.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"title": "Travel policy", "text": "Flights are booked through the travel desk.", "acl": {"roles": ["employee"]}}))]
pub struct CreateDocumentBody {
    #[schema(min_length = 1)]
    pub title: String,
    #[schema(min_length = 1)]
    pub text: String,
    pub acl: AclBody,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedDocumentBody {
    pub id: String,
    pub chunks: u32,
}

/// A document as listed: readers get the first four fields; writers get every document
/// of the tenant with its ACL and who added it.
#[derive(Serialize, ToSchema)]
pub struct DocumentSummaryBody {
    pub id: String,
    pub title: String,
    pub created_at: String,
    pub chunks: u32,
    pub acl: Option<serde_json::Value>,
    pub created_by: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct DocumentListBody {
    pub documents: Vec<DocumentSummaryBody>,
}

#[derive(Serialize, ToSchema)]
pub struct DocumentBody {
    pub id: String,
    pub title: String,
    pub created_at: String,
    pub chunks: u32,
    pub text: String,
}

#[derive(Deserialize, ToSchema)]
pub struct SearchBody {
    /// Not blank.
    #[schema(min_length = 1, max_length = 4000, pattern = r"\S")]
    pub query: String,
    /// Results (default 10).
    #[schema(minimum = 1, maximum = 50)]
    pub k: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct SearchResultsBody {
    pub results: Vec<SearchHitBody>,
}

#[derive(Serialize, ToSchema)]
pub struct SearchHitBody {
    pub document_id: String,
    pub title: String,
    pub chunk_id: String,
    pub text: String,
    pub score: f64,
}

#[derive(Serialize, ToSchema)]
pub struct UserListBody {
    pub users: Vec<crate::auth::UserView>,
}

#[derive(Deserialize, ToSchema)]
pub struct UpdateUserBody {
    pub roles: Option<Vec<String>>,
    pub groups: Option<Vec<String>>,
    pub disabled: Option<bool>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQueryParams {
    /// The event kind, e.g. `login_failed` (`event` is accepted as well).
    pub kind: Option<String>,
    pub request_id: Option<String>,
    /// A user id.
    pub user: Option<String>,
    /// RFC 3339, inclusive.
    #[param(format = DateTime)]
    pub since: Option<String>,
    /// RFC 3339, exclusive.
    #[param(format = DateTime)]
    pub until: Option<String>,
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditListBody {
    /// Newest first.
    pub events: Vec<crate::store::AuditRecord>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LineageQueryParams {
    /// A document id.
    pub document: String,
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct LineageBody {
    pub document: String,
    /// Newest first.
    pub uses: Vec<LineageUseBody>,
}

#[derive(Serialize, ToSchema)]
pub struct LineageUseBody {
    pub seq: Option<i64>,
    /// RFC 3339.
    pub at: String,
    pub ts: i64,
    /// `retrieval` or `tool_call`.
    pub kind: String,
    /// For a tool call: `chat` or `mcp`.
    pub via: Option<String>,
    pub user: Option<String>,
    pub session_id: Option<String>,
    pub thread: Option<String>,
    pub request_id: Option<String>,
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
