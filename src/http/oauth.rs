//! `POST /auth/token`: the OAuth 2.0 token endpoint. Today it speaks one grant, token
//! exchange (RFC 8693): a service account, authenticated by its API key, exchanges a
//! user's token for a short-lived palisade token that acts as that user.
//!
//! Requests are `application/x-www-form-urlencoded` and errors are RFC 6749 §5.2
//! objects (`{"error": "invalid_grant", "error_description": …}`), as OAuth clients
//! expect; a parameter given twice is refused.

use axum::Router;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::{Client, credentials};
use crate::auth::AuthError;
use crate::auth::exchange::{ACCESS_TOKEN_TYPE, ExchangeError, ID_TOKEN_TYPE, SubjectKind};

pub fn router() -> Router<AppState> {
    Router::new().route("/auth/token", post(token))
}

/// `grant_type` of a token exchange.
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// The form of a token exchange (RFC 8693 §2.1).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TokenExchangeForm {
    #[schema(pattern = "^urn:ietf:params:oauth:grant-type:token-exchange$")]
    grant_type: String,
    /// The user's token.
    #[schema(min_length = 1)]
    subject_token: String,
    /// `urn:ietf:params:oauth:token-type:access_token` (a palisade access token, or an
    /// IdP's where its issuer accepts them) or `urn:ietf:params:oauth:token-type:id_token`.
    #[schema(pattern = "^urn:ietf:params:oauth:token-type:(access_token|id_token)$")]
    subject_token_type: String,
    /// If given, `urn:ietf:params:oauth:token-type:access_token`.
    #[schema(pattern = "^urn:ietf:params:oauth:token-type:access_token$")]
    requested_token_type: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct TokenExchangeResponse {
    access_token: String,
    /// `urn:ietf:params:oauth:token-type:access_token`.
    issued_token_type: &'static str,
    /// `Bearer`.
    token_type: &'static str,
    /// Seconds.
    expires_in: u64,
}

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

/// Exchanges a user's token for one acting as that user (RFC 8693). The service
/// authenticates with its API key (`Authorization: Bearer pal_…`, or `DPoP` for a
/// bound key: client authentication, part of the grant, hence no security scheme
/// here) and must be allowed to act for users; the user's token must be live and of
/// the service's tenant.
#[utoipa::path(
    post, path = "/auth/token", tag = "auth", security(()),
    request_body(content = TokenExchangeForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "A token for the user, acting as the service (`act`).", body = TokenExchangeResponse),
        (status = 400, description = "`invalid_request` (a parameter missing, repeated or unknown in kind), `unsupported_grant_type`, `invalid_grant` (the user's token is refused), `unauthorized_client` (the service may not act for users).", body = OAuthError),
        (status = 401, description = "`invalid_client`: no API key, or a refused one.", body = OAuthError),
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
    match exchange(&s, &parts, &form, &client).await {
        Ok(body) => (no_store(), axum::Json(body)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn exchange(
    s: &AppState,
    parts: &axum::http::request::Parts,
    form: &Form,
    client: &crate::model::ClientInfo,
) -> Result<TokenExchangeResponse, OAuthError> {
    match form.get("grant_type") {
        Some(TOKEN_EXCHANGE) => {}
        Some(_) => {
            return Err(OAuthError::new(
                "unsupported_grant_type",
                "Only urn:ietf:params:oauth:grant-type:token-exchange is supported here.",
            ));
        }
        None => return Err(OAuthError::new("invalid_request", "grant_type is missing.")),
    }
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
    Ok(TokenExchangeResponse {
        access_token: exchanged.access_token,
        issued_token_type: ACCESS_TOKEN_TYPE,
        token_type: "Bearer",
        expires_in: exchanged.expires_in,
    })
}
