//! The one error type of the HTTP face: every service error becomes a status, a code
//! and a message here, and nowhere else.
//!
//! Messages are fixed strings chosen here, never formatted from inputs, tokens or
//! internal errors: an error body cannot echo a secret it never saw (peers have shipped
//! error bodies that echoed API keys). Internal causes are logged server-side, without
//! secrets.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::audit::AuditError;
use crate::auth::{AuthError, DpopChallenge};
use crate::chat::ChatError;
use crate::llm::LlmError;
use crate::model::StoreError;
use crate::rag::RagError;
use crate::threads::ThreadError;

/// Every error: a stable machine-readable code and a human message.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// E.g. `unauthorized`, `not_found`, `too_many_requests`, `budget_exceeded`.
    pub code: &'static str,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid credentials")]
    InvalidCredentials,
    /// Missing, malformed, forged, expired or revoked access token.
    #[error("unauthorized")]
    Unauthorized,
    #[error("refresh token reused")]
    RefreshReused,
    #[error("refresh token invalid")]
    RefreshInvalid,
    #[error("refresh in progress")]
    RefreshInProgress,
    /// DPoP refused the request: 401 with `WWW-Authenticate: DPoP error=…`.
    #[error("dpop: {}", .0.error())]
    Dpop(DpopChallenge),
    #[error("cross-site request")]
    CrossSite,
    /// A same-site request from an origin palisade is not configured for (the page was
    /// opened at another address than `public_origin`); holds the configured origin.
    #[error("origin mismatch")]
    OriginMismatch(String),
    #[error("forbidden")]
    Forbidden,
    /// A service's key, or a token a service exchanged, on a route for people only.
    #[error("person required")]
    PersonRequired,
    /// Separation of duties refused an access change.
    #[error("refused by separation of duties")]
    Duty(crate::auth::Duty),
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("conflict: {0}")]
    Conflict(&'static str),
    #[error("too many requests")]
    TooManyRequests { retry_after_secs: u64 },
    /// A user's or tenant's daily model-token budget is spent.
    #[error("budget exceeded")]
    BudgetExceeded { retry_after_secs: u64 },
    #[error("payload too large")]
    PayloadTooLarge,
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("unprocessable: {0}")]
    Unprocessable(String),
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("request timeout")]
    Timeout,
    #[error("message too long")]
    MessageTooLong,
    /// More messages or estimated prompt tokens than the model accepts.
    #[error("prompt too large")]
    PromptTooLarge,
    #[error("thread limit reached")]
    ThreadLimit,
    #[error("thread full")]
    ThreadFull,
    /// The model upstream failed; the client learns nothing more specific.
    #[error("upstream error")]
    Upstream,
    /// The named model is unknown or not for the caller's roles (one answer for both).
    #[error("model not allowed")]
    ModelNotAllowed,
    /// The model kept calling `search_documents` past the configured steps.
    #[error("tool steps exceeded")]
    ToolStepsExceeded,
    /// A store or dependency on the request path failed. Authorisation fails closed.
    #[error("unavailable")]
    Unavailable,
    /// A backing store (Redis, PostgreSQL, the database file) cannot be reached.
    #[error("store unavailable")]
    StoreUnavailable,
    #[error("internal error")]
    Internal,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        use ApiError::*;
        match self {
            InvalidCredentials | Unauthorized | RefreshReused | RefreshInvalid | Dpop(_) => {
                StatusCode::UNAUTHORIZED
            }
            RefreshInProgress | Conflict(_) => StatusCode::CONFLICT,
            CrossSite | OriginMismatch(_) | Forbidden | PersonRequired | ModelNotAllowed => {
                StatusCode::FORBIDDEN
            }
            Duty(crate::auth::Duty::Expired) => StatusCode::CONFLICT,
            Duty(_) => StatusCode::FORBIDDEN,
            NotFound => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            TooManyRequests { .. } | BudgetExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
            PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            BadRequest(_) => StatusCode::BAD_REQUEST,
            Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Timeout => StatusCode::REQUEST_TIMEOUT,
            MessageTooLong | PromptTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ThreadLimit | ThreadFull => StatusCode::UNPROCESSABLE_ENTITY,
            Upstream | ToolStepsExceeded => StatusCode::BAD_GATEWAY,
            Unavailable | StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        use ApiError::*;
        match self {
            InvalidCredentials => "invalid_credentials",
            Unauthorized => "unauthorized",
            RefreshReused => "refresh_reused",
            RefreshInvalid => "invalid_refresh_token",
            RefreshInProgress => "refresh_in_progress",
            Dpop(c) => c.error(),
            CrossSite => "cross_site_request",
            OriginMismatch(_) => "origin_mismatch",
            Forbidden => "forbidden",
            PersonRequired => "person_required",
            Duty(d) => match d {
                crate::auth::Duty::OwnAccess => "own_access",
                crate::auth::Duty::TwoPersonRule => "two_person_rule",
                crate::auth::Duty::IdpOnly => "idp_only",
                crate::auth::Duty::OwnProposal => "own_proposal",
                crate::auth::Duty::Expired => "grant_expired",
            },
            NotFound => "not_found",
            MethodNotAllowed => "method_not_allowed",
            Conflict(_) => "conflict",
            TooManyRequests { .. } => "too_many_requests",
            BudgetExceeded { .. } => "budget_exceeded",
            PayloadTooLarge => "payload_too_large",
            BadRequest(_) => "bad_request",
            Unprocessable(_) => "unprocessable_entity",
            UnsupportedMediaType => "unsupported_media_type",
            Timeout => "request_timeout",
            MessageTooLong => "message_too_long",
            PromptTooLarge => "prompt_too_large",
            ThreadLimit => "thread_limit_reached",
            ThreadFull => "thread_full",
            Upstream => "upstream_error",
            ModelNotAllowed => "model_not_allowed",
            ToolStepsExceeded => "tool_steps_exceeded",
            Unavailable => "service_unavailable",
            StoreUnavailable => "store_unavailable",
            Internal => "internal_error",
        }
    }

    pub fn public_message(&self) -> String {
        use ApiError::*;
        match self {
            InvalidCredentials => "Invalid username or password.".into(),
            Unauthorized => "A valid access token is required.".into(),
            RefreshReused => {
                "This refresh token was already used; the session has been revoked.".into()
            }
            RefreshInvalid => "The refresh token is missing, invalid or expired.".into(),
            RefreshInProgress => {
                "Another request is refreshing this session; retry with the newest cookie.".into()
            }
            Dpop(DpopChallenge::InvalidProof) => {
                "A valid DPoP proof by the token's key is required for this request.".into()
            }
            Dpop(DpopChallenge::InvalidToken) => {
                "This token must be presented with the DPoP scheme and a proof of its key (or, if unbound, as a Bearer token where bearer tokens are allowed).".into()
            }
            Dpop(DpopChallenge::UseNonce(_)) => {
                "Retry with the server nonce from the DPoP-Nonce header in the proof.".into()
            }
            CrossSite => "Cross-site requests are not allowed here.".into(),
            // The configured origin is public (it is where the page is meant to be).
            OriginMismatch(configured) => format!(
                "palisade is configured for {configured} (public_origin); open the page there, or change public_origin."
            ),
            Forbidden => "You do not have permission for this operation.".into(),
            PersonRequired => "This route is for people signed in to palisade: a service account's key, or a token a service obtained for a user, may not use it.".into(),
            Duty(d) => match d {
                crate::auth::Duty::OwnAccess => {
                    "No one changes their own roles or groups, nor approves their own access."
                }
                crate::auth::Duty::TwoPersonRule => {
                    "This role is privileged: propose it with POST /admin/grants; a second admin approves it."
                }
                crate::auth::Duty::IdpOnly => {
                    "This role is privileged and comes only from the identity provider."
                }
                crate::auth::Duty::OwnProposal => "A second admin must approve this proposal.",
                crate::auth::Duty::Expired => "This proposal expired; propose it again.",
            }
            .into(),
            NotFound => "Not found.".into(),
            MethodNotAllowed => "Method not allowed.".into(),
            Conflict(what) => format!("Conflict: {what}."),
            TooManyRequests { .. } => "Too many requests; retry later.".into(),
            BudgetExceeded { .. } => {
                "The daily model-token budget is spent; it resets at midnight UTC.".into()
            }
            PayloadTooLarge => "The request body is too large.".into(),
            BadRequest(m) | Unprocessable(m) => m.clone(),
            UnsupportedMediaType => "Expected Content-Type: application/json.".into(),
            Timeout => "The request took too long.".into(),
            MessageTooLong => "The message is longer than this gateway accepts.".into(),
            PromptTooLarge => {
                "The request holds more messages or prompt tokens than the model accepts (llm.max_messages, the model's context_tokens).".into()
            }
            ThreadLimit => "You have reached the maximum number of conversations.".into(),
            ThreadFull => "This conversation has reached its maximum length.".into(),
            Upstream => "The model is unavailable right now; try again later.".into(),
            ModelNotAllowed => "The model does not exist or you may not use it.".into(),
            ToolStepsExceeded => {
                "The model kept searching without answering; try a more specific question.".into()
            }
            Unavailable => "The service is temporarily unavailable.".into(),
            StoreUnavailable => "A backing store cannot be reached; try again shortly.".into(),
            Internal => "Internal error.".into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message: self.public_message(),
            },
        };
        let mut resp = (status, Json(body)).into_response();
        let headers = resp.headers_mut();
        match &self {
            ApiError::TooManyRequests { retry_after_secs }
            | ApiError::BudgetExceeded { retry_after_secs } => {
                if let Ok(v) = HeaderValue::from_str(&retry_after_secs.max(&1).to_string()) {
                    headers.insert(header::RETRY_AFTER, v);
                }
            }
            ApiError::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::Dpop(c) => {
                let challenge = format!("DPoP error=\"{}\", algs=\"ES256\"", c.error());
                if let Ok(v) = HeaderValue::from_str(&challenge) {
                    headers.insert(header::WWW_AUTHENTICATE, v);
                }
                if let DpopChallenge::UseNonce(n) = c
                    && let Ok(v) = HeaderValue::from_str(n)
                {
                    headers.insert("dpop-nonce", v);
                }
            }
            ApiError::StoreUnavailable => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        resp
    }
}

/// Every upstream failure is the same 502 to the client: which one it was (status,
/// timeout, garbage) is logged by the client code, never echoed.
impl From<LlmError> for ApiError {
    fn from(_: LlmError) -> Self {
        ApiError::Upstream
    }
}

/// Any store failure on a request path fails closed: 503, with the cause logged.
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => ApiError::Conflict(what),
            StoreError::Unavailable(cause) => {
                tracing::error!(error = %cause, "store unavailable");
                ApiError::StoreUnavailable
            }
            corrupt @ StoreError::Corrupt(_) => {
                tracing::error!(error = %corrupt, "store failure");
                ApiError::Unavailable
            }
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::InvalidCredentials => ApiError::InvalidCredentials,
            AuthError::Unauthorized => ApiError::Unauthorized,
            AuthError::RefreshReused => ApiError::RefreshReused,
            AuthError::RefreshInvalid => ApiError::RefreshInvalid,
            AuthError::RefreshInProgress => ApiError::RefreshInProgress,
            AuthError::Throttled { retry_after_secs } => {
                ApiError::TooManyRequests { retry_after_secs }
            }
            AuthError::Forbidden => ApiError::Forbidden,
            AuthError::Duty(d) => ApiError::Duty(d),
            AuthError::NotFound => ApiError::NotFound,
            AuthError::Invalid(m) => ApiError::Unprocessable(m.to_owned()),
            AuthError::Mint => {
                tracing::error!("token minting failed");
                ApiError::Internal
            }
            AuthError::Unavailable => ApiError::Unavailable,
            AuthError::Dpop(c) => ApiError::Dpop(c),
            AuthError::Store(s) => s.into(),
        }
    }
}

impl From<ThreadError> for ApiError {
    fn from(e: ThreadError) -> Self {
        match e {
            ThreadError::NotFound => ApiError::NotFound,
            ThreadError::LimitReached => ApiError::ThreadLimit,
            ThreadError::Full => ApiError::ThreadFull,
            ThreadError::MessageTooLong => ApiError::MessageTooLong,
            ThreadError::Invalid(m) => ApiError::Unprocessable(m.to_owned()),
            // The thread's state, not the request, is what does not fit.
            ThreadError::NoQuestion => {
                ApiError::Conflict("the thread has no question to ask again")
            }
            ThreadError::Store(s) => s.into(),
        }
    }
}

impl From<RagError> for ApiError {
    fn from(e: RagError) -> Self {
        match e {
            RagError::Forbidden => ApiError::Forbidden,
            RagError::NotFound => ApiError::NotFound,
            RagError::Invalid(m) => ApiError::Unprocessable(m),
            RagError::TooLarge => ApiError::PayloadTooLarge,
            RagError::Embedding => ApiError::Unavailable,
            RagError::Store(s) => s.into(),
        }
    }
}

impl From<ChatError> for ApiError {
    fn from(e: ChatError) -> Self {
        match e {
            ChatError::RateLimited { retry_after_secs } => {
                ApiError::TooManyRequests { retry_after_secs }
            }
            ChatError::BudgetExceeded { retry_after_secs } => {
                ApiError::BudgetExceeded { retry_after_secs }
            }
            ChatError::Invalid(m) => ApiError::Unprocessable(m.to_owned()),
            ChatError::ModelNotAllowed => ApiError::ModelNotAllowed,
            ChatError::ToolStepsExceeded => ApiError::ToolStepsExceeded,
            ChatError::PromptTooLarge => ApiError::PromptTooLarge,
            ChatError::Thread(t) => t.into(),
            ChatError::Rag(r) => r.into(),
            ChatError::Llm(l) => l.into(),
        }
    }
}

impl From<AuditError> for ApiError {
    fn from(e: AuditError) -> Self {
        match e {
            AuditError::Forbidden => ApiError::Forbidden,
            AuditError::Store(s) => s.into(),
        }
    }
}

/// Every error answer in the JSON error shape: one a component answered in its own
/// words (the MCP transport's plain-text 405/406/415, a framework rejection) is
/// re-worded by its status alone — its original text may quote the request. Its
/// headers (`Allow`, `WWW-Authenticate`, `Retry-After`) are kept.
pub fn json_shaped(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        // HTML is only ever palisade's own page (the OAuth consent page's errors).
        .is_some_and(|ct| ct == "application/json" || ct.ends_with("+json") || ct == "text/html");
    if is_json {
        return resp;
    }
    let known = match status {
        StatusCode::BAD_REQUEST => Some(ApiError::BadRequest("The request is malformed.".into())),
        StatusCode::NOT_FOUND => Some(ApiError::NotFound),
        StatusCode::METHOD_NOT_ALLOWED => Some(ApiError::MethodNotAllowed),
        StatusCode::PAYLOAD_TOO_LARGE => Some(ApiError::PayloadTooLarge),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => Some(ApiError::UnsupportedMediaType),
        StatusCode::REQUEST_TIMEOUT => Some(ApiError::Timeout),
        StatusCode::INTERNAL_SERVER_ERROR => Some(ApiError::Internal),
        StatusCode::SERVICE_UNAVAILABLE => Some(ApiError::Unavailable),
        _ => None,
    };
    let (code, message) = match &known {
        Some(e) => (e.code(), e.public_message()),
        None => (
            match status {
                StatusCode::NOT_ACCEPTABLE => "not_acceptable",
                StatusCode::CONFLICT => "conflict",
                StatusCode::UNAUTHORIZED => "unauthorized",
                StatusCode::FORBIDDEN => "forbidden",
                _ if status.is_client_error() => "bad_request",
                _ => "internal_error",
            },
            status
                .canonical_reason()
                .map_or_else(|| "Error.".to_owned(), |r| format!("{r}.")),
        ),
    };
    let (mut parts, _) = resp.into_parts();
    let body = ErrorBody {
        error: ErrorDetail { code, message },
    };
    let json = (status, Json(body)).into_response();
    let (fresh, body) = json.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    for (name, value) in fresh.headers.iter() {
        parts.headers.insert(name, value.clone());
    }
    Response::from_parts(parts, body)
}
