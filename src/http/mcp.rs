//! `/mcp`: a Model Context Protocol server (Streamable HTTP transport, rmcp) for agents
//! and desktop assistants, authenticated by palisade's own access token.
//!
//! * Every request carries `Authorization: Bearer <palisade access token>`; the token is
//!   verified before the protocol sees the request (401 otherwise), and the verified
//!   `Principal` travels with the request into the handler. There is no MCP session
//!   state: each request stands alone (rmcp's stateless mode), so a session id can
//!   never carry one caller's identity into another's request, and any node of a
//!   cluster can serve any request.
//! * Tools: `search_documents`, run under the caller's `AccessScope` exactly as the
//!   model's tool in a chat (only `query` is read), audited as a `tool_call` event.
//! * Resources: the caller's threads, `palisade://threads/{id}`, as JSON; a message
//!   citing a document the caller can no longer read is withheld as in the API.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListResourcesResult, ListToolsResult, PaginatedRequestParams, ReadResourceRequestParams,
    ReadResourceResponse, ReadResourceResult, Resource, ResourceContents, ServerCapabilities,
    ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use super::extract::{client_info, credentials};
use crate::access::Principal;
use crate::chat::tools::{
    BAD_ARGUMENTS, SEARCH_TOOL, render_results, search_query, search_tool_def,
};
use crate::model::ClientInfo;
use crate::threads::MAX_PAGE;

const THREAD_URI: &str = "palisade://threads/";

/// The caller, as the authentication layer verified it.
#[derive(Clone)]
struct Caller {
    principal: Principal,
    client: ClientInfo,
}

pub fn router(state: AppState) -> Router<AppState> {
    let handler_state = state.clone();
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        // A bearer token is required on every request, so a page that rebinds DNS to
        // reach this endpoint has nothing to send; the Host check would only stand in
        // the way of deployments behind their own host names.
        .disable_allowed_hosts()
        .with_max_request_body_bytes(state.config.limits.max_body_bytes);
    let service = StreamableHttpService::new(
        move || {
            Ok(Mcp {
                state: handler_state.clone(),
            })
        },
        Arc::new(NeverSessionManager::default()),
        config,
    );
    Router::new().nest_service(
        "/mcp",
        tower::ServiceBuilder::new()
            .layer(axum::middleware::from_fn_with_state(state, authenticate))
            .service(service),
    )
}

/// Verifies the bearer token before anything of the protocol runs (as the `Auth`
/// extractor does, through the same `verify_access`).
async fn authenticate(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let client = client_info(&parts, &s.config.trusted_proxies);
    let principal = match s.auth.verify_access(&credentials(&parts), &client).await {
        Ok(p) => p,
        Err(e) => {
            let mut resp = ApiError::from(e).into_response();
            // Where an MCP client learns how to sign in (RFC 9728, the MCP
            // authorization specification).
            if resp.status() == axum::http::StatusCode::UNAUTHORIZED
                && !resp
                    .headers()
                    .get(axum::http::header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with("DPoP"))
                && let Ok(v) = axum::http::HeaderValue::from_str(&format!(
                    "Bearer resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp\"",
                    s.origins.primary()
                ))
            {
                resp.headers_mut()
                    .insert(axum::http::header::WWW_AUTHENTICATE, v);
            }
            return resp;
        }
    };
    parts.extensions.insert(Caller { principal, client });
    next.run(Request::from_parts(parts, body)).await
}

#[derive(Clone)]
struct Mcp {
    state: AppState,
}

/// The verified caller of a request; none means the layer was bypassed: refuse.
fn caller(ctx: &RequestContext<RoleServer>) -> Result<Caller, ErrorData> {
    ctx.extensions
        .get::<axum::http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<Caller>())
        .cloned()
        .ok_or_else(|| ErrorData::invalid_request("not authenticated", None))
}

fn unavailable() -> ErrorData {
    ErrorData::internal_error("the service is temporarily unavailable", None)
}

impl ServerHandler for Mcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .build(),
        )
        .with_server_info(Implementation::new("palisade", env!("CARGO_PKG_VERSION")))
        .with_instructions(
            "search_documents searches the documents the signed-in user may read; \
             the user's conversations are resources under palisade://threads/.",
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        caller(&ctx)?;
        let def = search_tool_def();
        let schema: rmcp::model::JsonObject = def
            .function
            .parameters
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
            .unwrap_or_default();
        let schema = Arc::new(schema);
        let tool = Tool::new(
            SEARCH_TOOL,
            def.function.description.unwrap_or_default(),
            schema,
        );
        Ok(ListToolsResult::with_all_items(vec![tool]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let c = caller(&ctx)?;
        if request.name != SEARCH_TOOL {
            return Err(ErrorData::invalid_params("unknown tool", None));
        }
        // Only `query` is read; whatever else the arguments hold cannot reach the scope.
        let args = serde_json::Value::Object(request.arguments.unwrap_or_default()).to_string();
        let Some(query) = search_query(&args) else {
            return Ok(CallToolResult::error(vec![ContentBlock::text(BAD_ARGUMENTS)]).into());
        };
        let hits = match self
            .state
            .chat
            .search_tool(&c.principal, &query, "mcp", &c.client)
            .await
        {
            Ok(hits) => hits,
            Err(crate::chat::ChatError::RateLimited { .. }) => {
                return Ok(CallToolResult::error(vec![ContentBlock::text(
                    "Too many requests; retry later.",
                )])
                .into());
            }
            Err(_) => return Err(unavailable()),
        };
        let passages: Vec<_> = hits
            .iter()
            .map(|h| {
                json!({"document_id": h.document_id, "title": h.title, "chunk_id": h.chunk_id, "text": h.text})
            })
            .collect();
        let mut result = CallToolResult::success(vec![ContentBlock::text(render_results(&hits))]);
        result.structured_content = Some(json!({ "passages": passages }));
        Ok(result.into())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let c = caller(&ctx)?;
        let threads = self
            .state
            .threads
            .list(&c.principal)
            .await
            .map_err(|_| unavailable())?;
        let resources = threads
            .into_iter()
            .map(|t| {
                Resource::new(format!("{THREAD_URI}{}", t.id), t.title)
                    .with_mime_type("application/json")
            })
            .collect();
        Ok(ListResourcesResult::with_all_items(resources))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let c = caller(&ctx)?;
        let not_found = || ErrorData::resource_not_found("no such resource", None);
        let id = request.uri.strip_prefix(THREAD_URI).ok_or_else(not_found)?;
        // Another's thread and a missing one are the same answer (and audited as a
        // denied access by the thread service).
        let page = self
            .state
            .chat
            .thread_page(&c.principal, id, None, Some(MAX_PAGE), &c.client)
            .await
            .map_err(|e| match e {
                crate::chat::ChatError::Thread(crate::threads::ThreadError::NotFound) => {
                    not_found()
                }
                _ => unavailable(),
            })?;
        let messages: Vec<_> = page
            .messages
            .into_iter()
            .map(|m| {
                if m.redacted {
                    json!({"role": m.record.role.as_str(), "content": "", "redacted": "source_no_longer_accessible"})
                } else {
                    json!({"role": m.record.role.as_str(), "content": m.record.content, "citations": m.record.citations, "sources": m.record.provenance})
                }
            })
            .collect();
        let body = json!({"id": page.thread.id, "title": page.thread.title, "messages": messages});
        let contents = ResourceContents::text(body.to_string(), request.uri)
            .with_mime_type("application/json");
        Ok(ReadResourceResult::new(vec![contents]).into())
    }
}
