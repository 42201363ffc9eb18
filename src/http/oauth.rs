//! palisade's OAuth face: the token endpoint (`POST /auth/token`), and the
//! authorization server of its own resources that MCP clients discover and use by
//! themselves (the MCP authorization specification): protected-resource metadata (RFC
//! 9728), authorization-server metadata (RFC 8414), dynamic client registration (RFC
//! 7591) and the consent page of the authorization code flow with PKCE.
//!
//! The token endpoint speaks three grants: `authorization_code` and `refresh_token` for
//! those clients, and token exchange (RFC 8693) for service accounts acting for users.
//! Requests are `application/x-www-form-urlencoded` and errors are RFC 6749 §5.2
//! objects (`{"error": "invalid_grant", "error_description": …}`), as OAuth clients
//! expect; a parameter given twice is refused.

use axum::Router;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::{Client, credentials};
use crate::auth::AuthError;
use crate::auth::exchange::{ACCESS_TOKEN_TYPE, ExchangeError, ID_TOKEN_TYPE, SubjectKind};
use crate::auth::oauth::{
    AuthorizationRequest, AuthorizeError, AuthorizeParams, GrantError, OAuthTokens, Resource,
};
use crate::secret::SecretString;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/auth/token", post(token))
        .route(
            "/.well-known/oauth-protected-resource",
            get(resource_metadata),
        )
        .route(
            "/.well-known/oauth-protected-resource/mcp",
            get(resource_metadata_mcp),
        )
        .route(
            "/.well-known/oauth-protected-resource/v1",
            get(api_resource_metadata),
        )
        .route(
            "/.well-known/oauth-authorization-server",
            get(server_metadata),
        )
        .route("/oauth/register", post(register))
        .route("/oauth/authorize", get(authorize).post(decide))
}

/// `grant_type` of a token exchange.
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// An error of the token endpoint (RFC 6749 §5.2).
#[derive(Debug, Serialize, ToSchema)]
pub struct OAuthError {
    /// `invalid_request`, `invalid_client`, `invalid_grant`, `unauthorized_client`,
    /// `unsupported_grant_type`, `server_error` or `temporarily_unavailable`.
    error: &'static str,
    error_description: &'static str,
}

impl OAuthError {
    fn new(error: &'static str, error_description: &'static str) -> Self {
        Self {
            error,
            error_description,
        }
    }

    fn status(&self) -> StatusCode {
        match self.error {
            "invalid_client" => StatusCode::UNAUTHORIZED,
            "server_error" => StatusCode::INTERNAL_SERVER_ERROR,
            "temporarily_unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut resp = (status, no_store(), axum::Json(self)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_client\""),
            );
        }
        resp
    }
}

fn no_store() -> [(header::HeaderName, HeaderValue); 2] {
    [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (header::PRAGMA, HeaderValue::from_static("no-cache")),
    ]
}

impl From<AuthError> for OAuthError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Unauthorized | AuthError::Dpop(_) | AuthError::InvalidCredentials => {
                OAuthError::new("invalid_client", "The client's API key is refused.")
            }
            AuthError::Store(_) | AuthError::Unavailable => OAuthError::new(
                "temporarily_unavailable",
                "A store is unavailable; retry later.",
            ),
            _ => OAuthError::new("server_error", "The token could not be issued."),
        }
    }
}

/// A form body's parameters, each at most once.
struct Form(Vec<(String, String)>);

impl Form {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads the form; a wrong media type or an unreadable body is the error contract's
/// 415/413/400 (as for JSON bodies), a repeated parameter an OAuth `invalid_request`.
async fn read_form(req: Request, state: &AppState) -> Result<Form, Response> {
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Err(ApiError::UnsupportedMediaType.into_response());
    }
    let bytes = axum::body::Bytes::from_request(req, state)
        .await
        .map_err(|rej| {
            if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge.into_response()
            } else {
                ApiError::BadRequest("The request body could not be read.".into()).into_response()
            }
        })?;
    let mut params: Vec<(String, String)> = Vec::new();
    for (k, v) in url::form_urlencoded::parse(&bytes) {
        if params.iter().any(|(seen, _)| *seen == k) {
            return Err(
                OAuthError::new("invalid_request", "A parameter is repeated.").into_response(),
            );
        }
        if v.contains('\0') {
            return Err(
                OAuthError::new("invalid_request", "A parameter holds a NUL character.")
                    .into_response(),
            );
        }
        params.push((k.into_owned(), v.into_owned()));
    }
    Ok(Form(params))
}

/// The token endpoint. `grant_type`:
/// * `authorization_code` (`code`, `redirect_uri`, `client_id`, `code_verifier`,
///   `resource`?) and `refresh_token` (`refresh_token`, `client_id`, `resource`?): the
///   tokens of an OAuth client (public, PKCE S256) for the resource it was approved for;
///   refresh tokens rotate, a reused one ends the grant.
/// * `urn:ietf:params:oauth:grant-type:token-exchange` (RFC 8693): a service account,
///   authenticated by its API key (`Authorization: Bearer pal_…`, or `DPoP` for a bound
///   key), exchanges a live user token of its tenant for one acting as that user.
///
/// Client authentication is part of each grant, hence no security scheme here.
#[utoipa::path(
    post, path = "/auth/token", tag = "auth", security(()),
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Tokens: for a client's grant with a rotated `refresh_token`; for an exchange, a token for the user acting as the service (`act`).", body = TokenAnswer),
        (status = 400, description = "`invalid_request` (a parameter missing or repeated), `unsupported_grant_type`, `invalid_grant` (a code or refresh token refused: wrong verifier, replayed, expired, another client's; a user token refused), `invalid_target` (another resource), `unauthorized_client` (the service may not act for users).", body = OAuthError),
        (status = 401, description = "`invalid_client`: an unknown client; no API key, or a refused one.", body = OAuthError),
        (status = 413, description = "Body too large.", body = ErrorBody),
        (status = 415, description = "Not a form.", body = ErrorBody),
        (status = 500, description = "`server_error`.", body = OAuthError),
        (status = 503, description = "`temporarily_unavailable`.", body = OAuthError),
    )
)]
pub async fn token(State(s): State<AppState>, Client(client): Client, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let form = match read_form(Request::from_parts(parts.clone(), body), &s).await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let answer = match form.get("grant_type") {
        Some(TOKEN_EXCHANGE) => exchange(&s, &parts, &form, &client)
            .await
            .map(|b| axum::Json(b).into_response()),
        Some("authorization_code") => redeem(&s, &form, &client).await,
        Some("refresh_token") => refresh(&s, &form, &client).await,
        Some(_) => Err(OAuthError::new(
            "unsupported_grant_type",
            "The grants are authorization_code, refresh_token and token exchange.",
        )),
        None => Err(OAuthError::new("invalid_request", "grant_type is missing.")),
    };
    match answer {
        Ok(mut resp) => {
            resp.headers_mut().extend(no_store());
            resp
        }
        Err(e) => e.into_response(),
    }
}

/// The token endpoint's form: the parameters of all three grants.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TokenForm {
    /// `authorization_code`, `refresh_token` or
    /// `urn:ietf:params:oauth:grant-type:token-exchange`.
    #[schema(
        pattern = "^(authorization_code|refresh_token|urn:ietf:params:oauth:grant-type:token-exchange)$"
    )]
    grant_type: String,
    code: Option<String>,
    redirect_uri: Option<String>,
    client_id: Option<String>,
    code_verifier: Option<String>,
    refresh_token: Option<String>,
    /// RFC 8707: `<origin>/mcp` (the default) or `<origin>/v1`.
    resource: Option<String>,
    /// Token exchange: the user's token.
    subject_token: Option<String>,
    /// Token exchange: `urn:ietf:params:oauth:token-type:access_token` (a palisade
    /// access token, or an IdP's where its issuer accepts them) or
    /// `urn:ietf:params:oauth:token-type:id_token`.
    #[schema(pattern = "^urn:ietf:params:oauth:token-type:(access_token|id_token)$")]
    subject_token_type: Option<String>,
    /// Token exchange: if given, `urn:ietf:params:oauth:token-type:access_token`.
    #[schema(pattern = "^urn:ietf:params:oauth:token-type:access_token$")]
    requested_token_type: Option<String>,
}

/// What the token endpoint answers.
#[derive(Serialize, ToSchema)]
pub struct TokenAnswer {
    access_token: String,
    /// `Bearer`.
    token_type: &'static str,
    /// Seconds.
    expires_in: u64,
    /// A client's grant: the next refresh token (the one presented is spent).
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    /// Token exchange: `urn:ietf:params:oauth:token-type:access_token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    issued_token_type: Option<&'static str>,
}

fn grant_error(e: GrantError) -> OAuthError {
    match e {
        GrantError::Grant => OAuthError::new(
            "invalid_grant",
            "The code or refresh token is invalid, expired, spent, or not this client's.",
        ),
        GrantError::Client => OAuthError::new(
            "invalid_client",
            "The client is not registered here, or its registration lapsed.",
        ),
        GrantError::Target => OAuthError::new(
            "invalid_target",
            "The resource is not the one the grant is for.",
        ),
        GrantError::Request(m) => OAuthError::new("invalid_request", m),
        GrantError::Auth(e) => e.into(),
    }
}

fn required<'a>(
    form: &'a Form,
    name: &'static str,
    why: &'static str,
) -> Result<&'a str, OAuthError> {
    form.get(name)
        .filter(|v| !v.is_empty())
        .ok_or(OAuthError::new("invalid_request", why))
}

fn client_tokens(t: OAuthTokens) -> Response {
    axum::Json(TokenAnswer {
        access_token: t.issued.access_token,
        token_type: "Bearer",
        expires_in: t.issued.expires_in,
        refresh_token: Some(t.issued.refresh.expose().to_owned()),
        issued_token_type: None,
    })
    .into_response()
}

async fn redeem(
    s: &AppState,
    form: &Form,
    client: &crate::model::ClientInfo,
) -> Result<Response, OAuthError> {
    let client_id = required(form, "client_id", "client_id is missing.")?;
    let code = required(form, "code", "code is missing.")?;
    let verifier = required(
        form,
        "code_verifier",
        "code_verifier is missing (PKCE is required).",
    )?;
    let tokens = s
        .auth
        .redeem_code(
            client_id,
            code,
            form.get("redirect_uri"),
            verifier,
            form.get("resource"),
            client,
        )
        .await
        .map_err(grant_error)?;
    Ok(client_tokens(tokens))
}

async fn refresh(
    s: &AppState,
    form: &Form,
    client: &crate::model::ClientInfo,
) -> Result<Response, OAuthError> {
    let client_id = required(form, "client_id", "client_id is missing.")?;
    let token = required(form, "refresh_token", "refresh_token is missing.")?;
    let tokens = s
        .auth
        .refresh_grant(client_id, token, form.get("resource"), client)
        .await
        .map_err(grant_error)?;
    Ok(client_tokens(tokens))
}

async fn exchange(
    s: &AppState,
    parts: &axum::http::request::Parts,
    form: &Form,
    client: &crate::model::ClientInfo,
) -> Result<TokenAnswer, OAuthError> {
    let kind = match form.get("subject_token_type") {
        Some(ACCESS_TOKEN_TYPE) => SubjectKind::AccessToken,
        Some(ID_TOKEN_TYPE) => SubjectKind::IdToken,
        Some(_) => {
            return Err(OAuthError::new(
                "invalid_request",
                "subject_token_type must be the access_token or id_token type.",
            ));
        }
        None => {
            return Err(OAuthError::new(
                "invalid_request",
                "subject_token_type is missing.",
            ));
        }
    };
    let Some(subject) = form.get("subject_token").filter(|t| !t.is_empty()) else {
        return Err(OAuthError::new(
            "invalid_request",
            "subject_token is missing.",
        ));
    };
    if form
        .get("requested_token_type")
        .is_some_and(|t| t != ACCESS_TOKEN_TYPE)
    {
        return Err(OAuthError::new(
            "invalid_request",
            "requested_token_type must be the access_token type.",
        ));
    }
    if form.get("actor_token").is_some() {
        return Err(OAuthError::new(
            "invalid_request",
            "The actor authenticates with its API key in the Authorization header, not actor_token.",
        ));
    }
    // The client: a service account's API key, checked like on any other route.
    let creds = credentials(parts);
    if creds
        .token
        .is_none_or(|t| !crate::auth::services::is_api_key(t))
    {
        return Err(OAuthError::new(
            "invalid_client",
            "Authenticate with the service account's API key.",
        ));
    }
    let actor = s.auth.verify_access(&creds, client).await?;
    let exchanged = s
        .auth
        .exchange(&actor, subject, kind, client)
        .await
        .map_err(|e| match e {
            ExchangeError::NotAllowed => OAuthError::new(
                "unauthorized_client",
                "This service account may not act for users.",
            ),
            ExchangeError::BadSubject => OAuthError::new(
                "invalid_grant",
                "The subject token is invalid, expired, revoked, bound to a key, or of another tenant.",
            ),
            ExchangeError::Auth(e) => e.into(),
        })?;
    Ok(TokenAnswer {
        access_token: exchanged.access_token,
        token_type: "Bearer",
        expires_in: exchanged.expires_in,
        refresh_token: None,
        issued_token_type: Some(ACCESS_TOKEN_TYPE),
    })
}

/// palisade's issuer identifier: its origin with the root path written out. Clients
/// compare `iss` with the metadata's issuer as strings, and common ones (pydantic's URL
/// type in the MCP SDK) write a bare origin with its `/`.
fn issuer(s: &AppState) -> String {
    format!("{}/", s.origins.primary())
}

/// Protected-resource metadata (RFC 9728).
#[derive(Serialize, ToSchema)]
pub struct ResourceMetadata {
    resource: String,
    authorization_servers: Vec<String>,
    bearer_methods_supported: [&'static str; 1],
    resource_name: &'static str,
}

fn metadata_of(s: &AppState, resource: Resource) -> Response {
    let origin = s.origins.primary();
    axum::Json(ResourceMetadata {
        resource: format!("{origin}{}", resource.path()),
        authorization_servers: vec![issuer(s)],
        bearer_methods_supported: ["header"],
        resource_name: "palisade",
    })
    .into_response()
}

/// The metadata of `/mcp` as a protected resource (RFC 9728): palisade is its
/// authorization server. `/mcp` names it in `WWW-Authenticate` on a 401.
#[utoipa::path(get, path = "/.well-known/oauth-protected-resource", tag = "oauth", security(()),
    responses((status = 200, description = "The metadata of the `/mcp` resource.", body = ResourceMetadata)))]
pub async fn resource_metadata(State(s): State<AppState>) -> Response {
    metadata_of(&s, Resource::Mcp)
}

/// The same metadata at its RFC 9728 path for the resource `/mcp`.
#[utoipa::path(get, path = "/.well-known/oauth-protected-resource/mcp", tag = "oauth", security(()),
    responses((status = 200, description = "The metadata of the `/mcp` resource.", body = ResourceMetadata)))]
pub async fn resource_metadata_mcp(State(s): State<AppState>) -> Response {
    metadata_of(&s, Resource::Mcp)
}

/// The metadata of the API (`/v1`) as a protected resource.
#[utoipa::path(get, path = "/.well-known/oauth-protected-resource/v1", tag = "oauth", security(()),
    responses((status = 200, description = "The metadata of the `/v1` resource.", body = ResourceMetadata)))]
pub async fn api_resource_metadata(State(s): State<AppState>) -> Response {
    metadata_of(&s, Resource::Api)
}

/// Authorization-server metadata (RFC 8414).
#[derive(Serialize, ToSchema)]
pub struct ServerMetadata {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    registration_endpoint: String,
    response_types_supported: [&'static str; 1],
    grant_types_supported: [&'static str; 3],
    code_challenge_methods_supported: [&'static str; 1],
    token_endpoint_auth_methods_supported: [&'static str; 1],
    authorization_response_iss_parameter_supported: bool,
}

#[utoipa::path(get, path = "/.well-known/oauth-authorization-server", tag = "oauth", security(()),
    responses((status = 200, description = "How to register, authorize and get tokens.", body = ServerMetadata)))]
pub async fn server_metadata(State(s): State<AppState>) -> Response {
    let origin = s.origins.primary();
    axum::Json(ServerMetadata {
        issuer: issuer(&s),
        authorization_endpoint: format!("{origin}/oauth/authorize"),
        token_endpoint: format!("{origin}/auth/token"),
        registration_endpoint: format!("{origin}/oauth/register"),
        response_types_supported: ["code"],
        grant_types_supported: ["authorization_code", "refresh_token", TOKEN_EXCHANGE],
        code_challenge_methods_supported: ["S256"],
        token_endpoint_auth_methods_supported: ["none"],
        authorization_response_iss_parameter_supported: true,
    })
    .into_response()
}

/// A registered client (RFC 7591 §3.2.1): public, so no secret.
#[derive(Serialize, ToSchema)]
pub struct RegisteredClient {
    client_id: String,
    /// Unix seconds.
    client_id_issued_at: i64,
    client_name: String,
    redirect_uris: Vec<String>,
    grant_types: [&'static str; 2],
    response_types: [&'static str; 1],
    /// `none`: a public client; PKCE binds its codes.
    token_endpoint_auth_method: &'static str,
}

/// An error of client registration (RFC 7591 §3.2.2).
#[derive(Serialize, ToSchema)]
pub struct RegistrationErrorBody {
    /// `invalid_redirect_uri` or `invalid_client_metadata`.
    error: &'static str,
    error_description: &'static str,
}

/// Dynamic client registration (RFC 7591) for public clients (MCP clients): https or
/// loopback redirect URIs, the authorization code grant with PKCE. Throttled per client
/// address (`oauth.registrations_per_hour`); a client no user approves within
/// `oauth.unapproved_client_ttl` lapses, and the first user to approve it binds it to
/// their tenant.
#[utoipa::path(post, path = "/oauth/register", tag = "oauth", security(()),
    request_body = crate::auth::oauth::Registration,
    responses(
        (status = 201, description = "Registered.", body = RegisteredClient),
        (status = 400, description = "`invalid_redirect_uri` or `invalid_client_metadata` (also for a body that is not the metadata).", body = RegistrationErrorBody),
        (status = 413, description = "Body too large.", body = ErrorBody),
        (status = 415, description = "Not JSON.", body = ErrorBody),
        (status = 429, description = "Too many registrations from this address.", body = ErrorBody, headers(("retry-after" = u64, description = "Seconds."))),
    ))]
pub async fn register(
    State(s): State<AppState>,
    Client(client): Client,
    body: Result<super::extract::Json<crate::auth::oauth::Registration>, ApiError>,
) -> Result<Response, ApiError> {
    use crate::auth::oauth::RegistrationError as E;
    let invalid = |error, error_description| {
        Ok((
            StatusCode::BAD_REQUEST,
            axum::Json(RegistrationErrorBody {
                error,
                error_description,
            }),
        )
            .into_response())
    };
    // A body that is not the metadata is RFC 7591's error; size and media type are
    // the error contract's.
    let reg = match body {
        Ok(super::extract::Json(reg)) => reg,
        Err(e)
            if matches!(
                e.status(),
                StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY
            ) =>
        {
            return invalid(
                "invalid_client_metadata",
                "The body must be a JSON object with redirect_uris (an array of URIs).",
            );
        }
        Err(e) => return Err(e),
    };
    let rec = match s.auth.register_client(reg, &client).await {
        Ok(r) => r,
        Err(E::RedirectUri(m)) => return invalid("invalid_redirect_uri", m),
        Err(E::Metadata(m)) => return invalid("invalid_client_metadata", m),
        Err(E::Throttled { retry_after_secs }) => {
            return Err(ApiError::TooManyRequests { retry_after_secs });
        }
        Err(E::Auth(e)) => return Err(e.into()),
    };
    Ok((
        StatusCode::CREATED,
        no_store(),
        axum::Json(RegisteredClient {
            client_id: rec.id,
            client_id_issued_at: rec.created_at / 1000,
            client_name: rec.name,
            redirect_uris: rec.redirect_uris,
            grant_types: ["authorization_code", "refresh_token"],
            response_types: ["code"],
            token_endpoint_auth_method: "none",
        }),
    )
        .into_response())
}

/// The consent page loads nothing and runs nothing; it may not be framed (a consent
/// click-jacked is a consent given). No `form-action`: the approval redirects to the
/// application.
const CONSENT_CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'";

fn page(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONSENT_CSP),
            ),
        ],
        body,
    )
        .into_response()
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const PAGE_STYLE: &str = "body{font:16px/1.5 system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem;color:#1b1b1f}\
h1{font-size:1.3rem}.app{font-weight:600}.where{color:#555;font-size:.9rem;word-break:break-all}\
label{display:block;margin:.8rem 0 .2rem}input{width:100%;padding:.5rem;font:inherit;box-sizing:border-box}\
.actions{display:flex;gap:.8rem;margin-top:1.2rem}button{padding:.6rem 1.2rem;font:inherit;border-radius:.4rem;border:1px solid #888;background:#fff}\
button.allow{background:#1d4ed8;color:#fff;border-color:#1d4ed8}.error{color:#b91c1c}.sso{margin-top:2rem;border-top:1px solid #ccc}\
@media (prefers-color-scheme:dark){body{background:#111;color:#eee}.where{color:#aaa}button{background:#222;color:#eee}}";

fn error_page(status: StatusCode, message: &str) -> Response {
    page(
        status,
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>palisade</title><style>{PAGE_STYLE}</style></head><body><main><h1>This application cannot sign in</h1>\
<p class=\"error\" role=\"alert\">{}</p><p>Nothing was shared. Close this window and try again from the application.</p></main></body></html>",
            escape(message)
        ),
    )
}

/// The consent page: who asks, where the answer goes, what it may do, and either the
/// signed-in user or a sign-in form.
fn consent_page(
    status: StatusCode,
    client_name: &str,
    req: &AuthorizationRequest,
    sealed: &str,
    signed_in: Option<&str>,
    sso: Option<&SsoChoice<'_>>,
    problem: Option<&str>,
) -> Response {
    let host = url::Url::parse(&req.redirect_uri)
        .ok()
        .and_then(|u| {
            u.host_str().map(|h| match u.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_owned(),
            })
        })
        .unwrap_or_default();
    let what = match req.resource {
        Resource::Mcp => {
            "search the documents you may read and read your conversations, as you (MCP)"
        }
        Resource::Api => {
            "chat, search the documents you may read and use your conversations, as you (the API)"
        }
    };
    let who = match signed_in {
        Some(u) => format!("<p>Signed in as <strong>{}</strong>.</p>", escape(u)),
        None => "<label for=\"username\">Username</label><input id=\"username\" name=\"username\" autocomplete=\"username\" required>\
<label for=\"password\">Password</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>"
            .to_owned(),
    };
    let problem = problem
        .map(|p| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(p)))
        .unwrap_or_default();
    // Signing in through an IdP comes back to this page with a palisade session; the
    // browser may not show it this page (a SameSite=Strict cookie after a cross-site
    // redirect), but it sends it with the form: "continue" answers with it.
    let sso = match (signed_in, sso) {
        (None, Some(c)) if !c.providers.is_empty() => {
            let links: String = c
                .providers
                .iter()
                .map(|p| {
                    let href = format!(
                        "/auth/oidc/login?{}",
                        url::form_urlencoded::Serializer::new(String::new())
                            .append_pair("provider", p)
                            .append_pair("return_to", c.return_to)
                            .finish()
                    );
                    format!(
                        "<li><a href=\"{}\">Sign in with {}</a></li>",
                        escape(&href),
                        escape(p)
                    )
                })
                .collect();
            format!(
                "<div class=\"sso\"><p>Or sign in with your organisation's account, then come back here:</p><ul>{links}</ul>\
<button form=\"consent\" name=\"decision\" value=\"allow\" formnovalidate>I signed in: allow as that account</button></div>"
            )
        }
        _ => String::new(),
    };
    page(
        status,
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>Allow {name}? · palisade</title><style>{PAGE_STYLE}</style></head><body><main>\
<h1><span class=\"app\">{name}</span> wants to use palisade</h1>\
<p>It will be able to {what}.</p><p class=\"where\">Your answer goes to {host}.</p>{problem}\
<form id=\"consent\" method=\"post\" action=\"/oauth/authorize\"><input type=\"hidden\" name=\"request\" value=\"{sealed}\">{who}\
<div class=\"actions\"><button class=\"allow\" name=\"decision\" value=\"allow\">Allow</button>\
<button name=\"decision\" value=\"deny\" formnovalidate>Deny</button></div></form>{sso}</main></body></html>",
            name = escape(client_name),
            what = what,
            host = escape(&host),
            sealed = escape(sealed),
        ),
    )
}

/// The IdPs offered on the consent page, and the way back to it.
struct SsoChoice<'a> {
    providers: Vec<String>,
    return_to: &'a str,
}

/// Where the answer goes: the client's redirect URI with `params`, and `iss` (RFC 9207).
fn back_to(s: &AppState, redirect_uri: &str, params: &[(&str, &str)]) -> Response {
    let Ok(mut url) = url::Url::parse(redirect_uri) else {
        return error_page(StatusCode::BAD_REQUEST, "The return address is invalid.");
    };
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
        q.append_pair("iss", &issuer(s));
    }
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(url.as_str()) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

fn refused(s: &AppState, e: AuthorizeError) -> Response {
    match e {
        AuthorizeError::Page(m) => error_page(StatusCode::BAD_REQUEST, m),
        AuthorizeError::Redirect {
            redirect_uri,
            state,
            error,
        } => {
            let mut p = vec![("error", error)];
            if let Some(st) = state.as_deref() {
                p.push(("state", st));
            }
            back_to(s, &redirect_uri, &p)
        }
        AuthorizeError::Auth(e) => ApiError::from(e).into_response(),
    }
}

/// The authorization endpoint: checks the request (a client and redirect URI that
/// cannot be trusted get a page, never a redirect; PKCE S256 is required) and shows the
/// consent page — with the browser's palisade session if it has one, else a sign-in.
#[utoipa::path(get, path = "/oauth/authorize", tag = "oauth", security(()),
    params(
        ("response_type" = String, Query, description = "`code`."),
        ("client_id" = String, Query),
        ("redirect_uri" = Option<String>, Query, description = "One the client registered (may be left out if it registered one)."),
        ("code_challenge" = String, Query, description = "BASE64URL(SHA-256(code_verifier)), 43 characters."),
        ("code_challenge_method" = String, Query, description = "`S256`."),
        ("state" = Option<String>, Query),
        ("resource" = Option<String>, Query, description = "RFC 8707: `<origin>/mcp` (the default) or `<origin>/v1`."),
        ("scope" = Option<String>, Query, description = "Ignored: a grant is the user's own scope on one resource."),
    ),
    responses(
        (status = 200, description = "The consent page.", content_type = "text/html"),
        (status = 303, description = "Back to the client with `error` (a request the client got wrong)."),
        (status = 400, description = "An unknown client, or a redirect URI it did not register: a page, no redirect.", content_type = "text/html"),
    ))]
pub async fn authorize(
    State(s): State<AppState>,
    headers: axum::http::HeaderMap,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let params: AuthorizeParams =
        match serde_urlencoded_params(query.as_deref().unwrap_or_default()) {
            Some(p) => p,
            None => return error_page(StatusCode::BAD_REQUEST, "The request is malformed."),
        };
    let (client, req) = match s.auth.check_authorization(params).await {
        Ok(ok) => ok,
        Err(e) => return refused(&s, e),
    };
    let Some(sealed) = s.auth.seal_request(&req) else {
        return ApiError::Internal.into_response();
    };
    let user = s
        .auth
        .signed_in_user(super::cookies::read_refresh(&headers).as_deref())
        .await;
    let return_to = format!("/oauth/authorize?{}", query.as_deref().unwrap_or_default());
    let sso = SsoChoice {
        providers: s
            .auth
            .oidc()
            .sign_in_clients()
            .iter()
            .map(|c| c.name.clone())
            .collect(),
        return_to: &return_to,
    };
    consent_page(
        StatusCode::OK,
        &client.name,
        &req,
        &sealed,
        user.as_ref().map(|u| u.username.as_str()),
        (return_to.len() <= 1024).then_some(&sso),
        None,
    )
}

/// The query of an authorization request, each parameter at most once.
fn serde_urlencoded_params(query: &str) -> Option<AuthorizeParams> {
    let mut p = AuthorizeParams::default();
    let mut seen = std::collections::HashSet::new();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        if !seen.insert(k.clone().into_owned()) || v.contains('\0') || v.len() > 2048 {
            return None;
        }
        let v = Some(v.into_owned());
        match k.as_ref() {
            "response_type" => p.response_type = v,
            "client_id" => p.client_id = v,
            "redirect_uri" => p.redirect_uri = v,
            "code_challenge" => p.code_challenge = v,
            "code_challenge_method" => p.code_challenge_method = v,
            "state" => p.state = v,
            "resource" => p.resource = v,
            "scope" => p.scope = v,
            _ => {}
        }
    }
    Some(p)
}

/// Whether the consent form came from palisade's own page. A browser says so in
/// `Sec-Fetch-Site` (which no page can set); its `Origin` is `null` here, as the page's
/// referrer policy (`no-referrer`) makes a form post's. Without `Sec-Fetch-Site` (not a
/// browser, or an old one) the `Origin` must be one of palisade's.
fn from_this_site(headers: &axum::http::HeaderMap, origins: &crate::config::Origins) -> bool {
    match headers.get("sec-fetch-site") {
        Some(site) => site.as_bytes() == b"same-origin",
        None => headers
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok())
            .is_some_and(|o| origins.accepts(o)),
    }
}

/// The consent form's fields.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ConsentForm {
    /// The sealed request the page carried.
    request: String,
    /// `allow` or `deny`.
    decision: String,
    username: Option<String>,
    password: Option<String>,
}

/// The user's answer on the consent page: from this site only (a cross-site form is
/// refused, and the session cookie is `SameSite=Strict`); a sign-in here is throttled
/// and audited like any other. Allowed: back to the client with a one-time code.
#[utoipa::path(post, path = "/oauth/authorize", tag = "oauth", security(()),
    request_body(content = ConsentForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Back to the client: `code` (allowed) or `error=access_denied`, with `state` and `iss`."),
        (status = 400, description = "A stale or forged form, or a client that lapsed.", content_type = "text/html"),
        (status = 401, description = "Wrong username or password: the page again.", content_type = "text/html"),
        (status = 403, description = "From another site.", content_type = "text/html"),
        (status = 413, description = "Body too large.", body = ErrorBody),
        (status = 415, description = "Not a form.", body = ErrorBody),
        (status = 429, description = "Too many sign-in attempts: the page again.", content_type = "text/html"),
    ))]
pub async fn decide(State(s): State<AppState>, Client(client): Client, req: Request) -> Response {
    let headers = req.headers().clone();
    if !from_this_site(&headers, &s.origins) {
        return error_page(
            StatusCode::FORBIDDEN,
            "This form was sent from another site.",
        );
    }
    let form = match read_form(req, &s).await {
        Ok(f) => f,
        Err(resp) if resp.status() == StatusCode::BAD_REQUEST => {
            return error_page(StatusCode::BAD_REQUEST, "The form is malformed.");
        }
        Err(resp) => return resp,
    };
    let Some(req) = form.get("request").and_then(|r| s.auth.open_request(r)) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "This page expired or was changed. Start again from the application.",
        );
    };
    let client_rec = match s.auth.client_of(&req.client_id).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "The application is not registered here, or its registration lapsed.",
            );
        }
        Err(e) => return ApiError::from(e).into_response(),
    };
    let state = req.state.clone();
    let with_state = |mut p: Vec<(&'static str, String)>| {
        if let Some(st) = &state {
            p.push(("state", st.clone()));
        }
        p
    };
    if form.get("decision") != Some("allow") {
        s.auth.deny(&req, &client).await;
        let p = with_state(vec![("error", "access_denied".to_owned())]);
        let p: Vec<(&str, &str)> = p.iter().map(|(k, v)| (*k, v.as_str())).collect();
        return back_to(&s, &req.redirect_uri, &p);
    }
    let sealed = form.get("request").unwrap_or_default().to_owned();
    let again = |status, problem| {
        consent_page(
            status,
            &client_rec.name,
            &req,
            &sealed,
            None,
            None,
            Some(problem),
        )
    };
    let user = match (form.get("username"), form.get("password")) {
        (Some(u), Some(pw)) if !u.is_empty() => {
            let device = super::cookies::read_cookie(&headers, super::cookies::DEVICE_COOKIE);
            match s
                .auth
                .consenting_user(
                    u,
                    &SecretString::from(pw.to_owned()),
                    &client,
                    device.as_deref(),
                )
                .await
            {
                Ok(user) => user,
                Err(AuthError::InvalidCredentials) => {
                    return again(StatusCode::UNAUTHORIZED, "Wrong username or password.");
                }
                Err(AuthError::Throttled { .. }) => {
                    return again(
                        StatusCode::TOO_MANY_REQUESTS,
                        "Too many attempts. Wait a while and try again.",
                    );
                }
                Err(e) => return ApiError::from(e).into_response(),
            }
        }
        _ => match s
            .auth
            .signed_in_user(super::cookies::read_refresh(&headers).as_deref())
            .await
        {
            Some(u) => u,
            None => return again(StatusCode::UNAUTHORIZED, "Sign in to answer."),
        },
    };
    match s.auth.approve(&req, &user, &client).await {
        Ok(code) => {
            let p = with_state(vec![("code", code)]);
            let p: Vec<(&str, &str)> = p.iter().map(|(k, v)| (*k, v.as_str())).collect();
            back_to(&s, &req.redirect_uri, &p)
        }
        Err(e) => refused(&s, e),
    }
}
