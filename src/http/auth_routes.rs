//! `/auth/*`: login, refresh, logout, identity and session management.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::cookies::{
    DEVICE_COOKIE, SIGN_IN_COOKIE, clear_refresh_cookie, clear_sign_in_cookie, device_cookie,
    read_cookie, read_refresh, refresh_cookie, require_same_origin, sign_in_cookie,
};
use super::error::{ApiError, ErrorBody};
use super::extract::{Client, Json, MaybeAuth, Person, Query, dpop_proof};
use crate::auth::oidc::signin::ReturnTo;
use crate::auth::{AuthError, CallbackParams, IssuedTokens};
use crate::secret::SecretString;
use crate::timeutil::rfc3339;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/auth/login", post(login))
        .route("/auth/oidc/exchange", post(oidc_exchange))
        .route("/auth/oidc/providers", get(oidc_providers))
        .route("/auth/oidc/login", get(oidc_login))
        .route("/auth/oidc/callback", get(oidc_callback))
        .route("/auth/refresh", post(refresh))
        .route("/auth/logout", post(logout))
        .route("/auth/logout-all", post(logout_all))
        .route("/auth/me", get(me))
        .route("/auth/sessions", get(list_sessions))
        .route("/auth/sessions/{id}", delete(delete_session))
}

/// Only these two fields are read; anything else in the body (tenant, roles, …) is
/// ignored and can change nothing.
#[derive(Deserialize, ToSchema)]
pub struct LoginRequest {
    username: String,
    #[schema(value_type = String, format = Password)]
    password: SecretString,
}

#[derive(Serialize, ToSchema)]
pub struct TokenResponse<'a> {
    access_token: &'a str,
    /// `Bearer`, or `DPoP` for a DPoP-bound session.
    token_type: &'static str,
    /// Seconds.
    expires_in: u64,
    session_id: &'a str,
}

fn token_response(t: &IssuedTokens) -> Response {
    let body = TokenResponse {
        access_token: &t.access_token,
        token_type: if t.dpop_bound { "DPoP" } else { "Bearer" },
        expires_in: t.expires_in,
        session_id: &t.session_id,
    };
    let mut resp = axum::Json(body).into_response();
    match refresh_cookie(t.refresh.expose(), t.refresh_max_age) {
        Some(c) => {
            resp.headers_mut().insert(header::SET_COOKIE, c);
            resp
        }
        None => ApiError::Internal.into_response(),
    }
}

#[utoipa::path(
    post, path = "/auth/login", tag = "auth", security(()),
    request_body = LoginRequest,
    params(("DPoP" = Option<String>, Header, description = "A DPoP proof: binds the session to its key.")),
    responses(
        (status = 200, description = "Signed in; the refresh token is in an HttpOnly cookie.", body = TokenResponse),
        (status = 400, description = "Malformed body or DPoP proof.", body = ErrorBody),
        (status = 401, description = "Wrong username or password (one answer for both).", body = ErrorBody),
        (status = 403, description = "From another site's page, or from a page at an address other than `public_origin`.", body = ErrorBody),
        (status = 429, description = "Too many attempts.", body = ErrorBody, headers(("retry-after" = u64, description = "Seconds."))),
    )
)]
pub async fn login(
    State(s): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    Json(req): Json<LoginRequest>,
) -> Result<Response, ApiError> {
    // A browser signs in only from the gateway's own page: no login CSRF, and a page
    // opened at another address is told so (not "wrong password").
    require_same_origin(&headers, &s.origins)?;
    if req.username.is_empty() || req.username.len() > 256 {
        // Same answer as a wrong password: the shape of a username reveals nothing.
        return Err(ApiError::InvalidCredentials);
    }
    let key = s
        .auth
        .token_request_key(dpop_proof(&headers), "/auth/login", &client)
        .await?;
    let device = read_cookie(&headers, DEVICE_COOKIE);
    let (issued, device) = s
        .auth
        .login(
            &req.username,
            &req.password,
            &client,
            key,
            device.as_deref(),
        )
        .await?;
    let mut resp = token_response(&issued);
    match device_cookie(&device, s.auth.device_cookie_max_age()) {
        Some(c) => {
            resp.headers_mut().append(header::SET_COOKIE, c);
            Ok(resp)
        }
        None => Err(ApiError::Internal),
    }
}

#[derive(Deserialize, ToSchema)]
pub struct ExchangeRequest {
    /// An ID token of a configured issuer.
    id_token: String,
}

/// An ID token of a configured IdP for a palisade session, answered exactly like a
/// password login. Every refusal is the same 401.
#[utoipa::path(
    post, path = "/auth/oidc/exchange", tag = "auth", security(()),
    request_body = ExchangeRequest,
    responses(
        (status = 200, description = "Signed in.", body = TokenResponse),
        (status = 400, description = "Malformed body.", body = ErrorBody),
        (status = 401, description = "The ID token is refused.", body = ErrorBody),
    )
)]
pub async fn oidc_exchange(
    State(s): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    Json(req): Json<ExchangeRequest>,
) -> Result<Response, ApiError> {
    let key = s
        .auth
        .token_request_key(dpop_proof(&headers), "/auth/oidc/exchange", &client)
        .await?;
    let issued = s
        .auth
        .exchange_id_token(&req.id_token, &client, key)
        .await?;
    Ok(token_response(&issued))
}

#[derive(Serialize, ToSchema)]
pub struct Provider<'a> {
    name: &'a str,
    issuer: &'a str,
}

#[derive(Serialize, ToSchema)]
pub struct ProviderList<'a> {
    providers: Vec<Provider<'a>>,
}

/// The IdPs offered for sign-in (the sign-in page shows a button for each).
#[utoipa::path(
    get, path = "/auth/oidc/providers", tag = "auth", security(()),
    responses((status = 200, description = "The issuers offered for sign-in.", body = ProviderList))
)]
pub async fn oidc_providers(State(s): State<AppState>) -> Response {
    let clients = s.auth.oidc().sign_in_clients();
    let providers: Vec<Provider<'_>> = clients
        .iter()
        .map(|c| Provider {
            name: &c.name,
            issuer: &c.issuer,
        })
        .collect();
    axum::Json(ProviderList { providers }).into_response()
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LoginQuery {
    /// The issuer's configured `name`.
    provider: Option<String>,
    /// A path on this site to return to (default `/`).
    #[param(pattern = r"^/([^/\\\s\x00-\x1f\x7f-\x9f][^\\\s\x00-\x1f\x7f-\x9f]{0,1022})?$")]
    return_to: Option<String>,
}

/// Sends the browser to the IdP, with the flow's state sealed in an HttpOnly cookie.
#[utoipa::path(
    get, path = "/auth/oidc/login", tag = "auth", security(()),
    params(LoginQuery),
    responses(
        (status = 303, description = "To the IdP, with the flow sealed in an HttpOnly cookie."),
        (status = 400, description = "return_to is not a path on this site.", body = ErrorBody),
        (status = 404, description = "No such provider.", body = ErrorBody),
    )
)]
pub async fn oidc_login(
    State(s): State<AppState>,
    Query(q): Query<LoginQuery>,
) -> Result<Response, ApiError> {
    let return_to = match q.return_to.as_deref().filter(|r| !r.is_empty()) {
        None => ReturnTo::default(),
        Some(raw) => ReturnTo::parse(raw).ok_or_else(|| {
            ApiError::BadRequest("return_to must be a path on this site, such as /chat".into())
        })?,
    };
    let start = s
        .auth
        .begin_sign_in(q.provider.as_deref(), return_to)
        .await?;
    let cookie = sign_in_cookie(&start.cookie, start.max_age_secs).ok_or(ApiError::Internal)?;
    let location =
        axum::http::HeaderValue::from_str(&start.location).map_err(|_| ApiError::Internal)?;
    Ok((
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, location),
            (header::SET_COOKIE, cookie),
            (header::CACHE_CONTROL, no_store()),
        ],
    )
        .into_response())
}

fn no_store() -> axum::http::HeaderValue {
    axum::http::HeaderValue::from_static("no-store")
}

/// The IdP's redirect back. Success: the refresh cookie is set and the browser goes to
/// its `return_to`, where the page gets an access token through `POST /auth/refresh`
/// — no token ever rides in a URL. The flow cookie is cleared either way.
#[utoipa::path(
    get, path = "/auth/oidc/callback", tag = "auth", security(()),
    params(CallbackParams),
    responses(
        (status = 303, description = "Signed in: to return_to, with the refresh cookie."),
        (status = 400, description = "Malformed query.", body = ErrorBody),
        (status = 401, description = "Forged, replayed or refused sign-in.", body = ErrorBody),
    )
)]
pub async fn oidc_callback(
    State(s): State<AppState>,
    Client(client): Client,
    // Not the `Query` extractor: the flow cookie is cleared on every outcome, this
    // one included.
    params: Result<axum::extract::Query<CallbackParams>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let Ok(axum::extract::Query(answer)) = params else {
        let mut resp = ApiError::BadRequest("Invalid query parameters.".into()).into_response();
        resp.headers_mut()
            .append(header::SET_COOKIE, clear_sign_in_cookie());
        return resp;
    };
    let cookie = read_cookie(&headers, SIGN_IN_COOKIE);
    let result = s
        .auth
        .finish_sign_in(cookie.as_deref(), &answer, &client)
        .await;
    let mut resp = match result {
        Ok((issued, return_to)) => {
            match (
                refresh_cookie(issued.refresh.expose(), issued.refresh_max_age),
                axum::http::HeaderValue::from_str(return_to.as_str()),
            ) {
                (Some(refresh), Ok(location)) => {
                    let mut r = (
                        StatusCode::SEE_OTHER,
                        [
                            (header::LOCATION, location),
                            (header::CACHE_CONTROL, no_store()),
                        ],
                    )
                        .into_response();
                    r.headers_mut().append(header::SET_COOKIE, refresh);
                    r
                }
                _ => ApiError::Internal.into_response(),
            }
        }
        Err(e) => ApiError::from(e).into_response(),
    };
    resp.headers_mut()
        .append(header::SET_COOKIE, clear_sign_in_cookie());
    resp
}

#[utoipa::path(
    post, path = "/auth/refresh", tag = "auth", security(("refresh_cookie" = [])),
    params(("Origin" = String, Header, description = "Must equal the public origin.")),
    responses(
        (status = 200, description = "A new access token; the refresh cookie is rotated.", body = TokenResponse),
        (status = 401, description = "No, an expired, or a reused refresh token.", body = ErrorBody),
        (status = 403, description = "Cross-site request; or a service account's key, or a token a service exchanged (`person_required`).", body = ErrorBody),
        (status = 409, description = "A concurrent refresh of the same token won.", body = ErrorBody),
    )
)]
pub async fn refresh(
    State(s): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
) -> Result<Response, Response> {
    require_same_origin(&headers, &s.origins).map_err(IntoResponse::into_response)?;
    match s
        .auth
        .refresh(
            read_refresh(&headers).as_deref(),
            &client,
            dpop_proof(&headers),
        )
        .await
    {
        Ok(issued) => Ok(token_response(&issued)),
        // A dead token is cleared from the browser; a race loser keeps its cookie
        // because the winner's response is about to replace it.
        Err(e @ (AuthError::RefreshReused | AuthError::RefreshInvalid)) => Err((
            [(header::SET_COOKIE, clear_refresh_cookie())],
            ApiError::from(e),
        )
            .into_response()),
        Err(e) => Err(ApiError::from(e).into_response()),
    }
}

#[utoipa::path(
    post, path = "/auth/logout", tag = "auth", security(("bearer" = []), ("refresh_cookie" = [])),
    responses(
        (status = 204, description = "The session is over; the cookie is cleared."),
        (status = 401, description = "Neither a token nor a cookie.", body = ErrorBody),
        (status = 403, description = "Cross-site request.", body = ErrorBody),
    )
)]
pub async fn logout(
    State(s): State<AppState>,
    Client(client): Client,
    MaybeAuth(principal): MaybeAuth,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require_same_origin(&headers, &s.origins)?;
    let cookie = read_refresh(&headers);
    if principal.is_none() && cookie.is_none() {
        return Err(ApiError::Unauthorized);
    }
    // A service (or a token it exchanged) has no session of its own to end here.
    if principal.as_ref().is_some_and(|p| !p.is_person()) {
        return Err(ApiError::PersonRequired);
    }
    if let Some(p) = &principal {
        s.auth.logout(p, &client).await?;
    }
    // The cookie is cleared below, so its session ends too — even when it is not the
    // bearer token's session: never leave a live session behind a cleared cookie.
    if let Some(cookie) = &cookie {
        let ended = s.auth.logout_with_refresh(cookie, &client).await?;
        // A cookie alone that names no live session authenticates nothing: 401, and
        // the dead cookie is cleared all the same.
        if principal.is_none() && !ended {
            return Ok((
                [(header::SET_COOKIE, clear_refresh_cookie())],
                ApiError::Unauthorized,
            )
                .into_response());
        }
    }
    Ok((
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, clear_refresh_cookie())],
    )
        .into_response())
}

#[utoipa::path(
    post, path = "/auth/logout-all", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 204, description = "Every session of the caller is over."),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "A service account's key, or a token a service exchanged (`person_required`).", body = ErrorBody),
    )
)]
pub async fn logout_all(
    State(s): State<AppState>,
    Client(client): Client,
    Person(p): Person,
) -> Result<Response, ApiError> {
    s.auth.logout_all(&p, &client).await?;
    Ok((
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, clear_refresh_cookie())],
    )
        .into_response())
}

#[derive(Serialize, ToSchema)]
pub struct Me<'a> {
    subject: &'a str,
    username: &'a str,
    tenant: &'a str,
    roles: &'a [String],
    groups: &'a [String],
    session_id: &'a str,
    /// Whether the caller may add and delete documents (`documents:write`).
    can_write_documents: bool,
}

#[utoipa::path(
    get, path = "/auth/me", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 200, description = "Who the token names.", body = Me),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "A service account's key, or a token a service exchanged (`person_required`).", body = ErrorBody),
    )
)]
pub async fn me(State(s): State<AppState>, Person(p): Person) -> Response {
    axum::Json(Me {
        subject: p.subject(),
        username: p.username(),
        tenant: p.tenant(),
        roles: p.roles(),
        groups: p.groups(),
        session_id: p.session_id(),
        can_write_documents: s.rag.admin_of(&p).is_some(),
    })
    .into_response()
}

#[derive(Serialize, ToSchema)]
pub struct SessionView {
    id: String,
    created_at: String,
    last_seen_at: String,
    expires_at: String,
    user_agent: Option<String>,
    current: bool,
}

#[derive(Serialize, ToSchema)]
pub struct SessionList {
    sessions: Vec<SessionView>,
}

#[utoipa::path(
    get, path = "/auth/sessions", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's live sessions.", body = SessionList),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "A service account's key, or a token a service exchanged (`person_required`).", body = ErrorBody),
    )
)]
pub async fn list_sessions(
    State(s): State<AppState>,
    Person(p): Person,
) -> Result<Response, ApiError> {
    let sessions = s
        .auth
        .sessions_of(&p)
        .await?
        .into_iter()
        .map(|r| SessionView {
            current: r.id == p.session_id(),
            created_at: rfc3339(r.created_at),
            last_seen_at: rfc3339(r.last_seen_at),
            expires_at: rfc3339(r.absolute_expires_at),
            user_agent: r.user_agent,
            id: r.id,
        })
        .collect();
    Ok(axum::Json(SessionList { sessions }).into_response())
}

#[utoipa::path(
    delete, path = "/auth/sessions/{id}", tag = "auth", security(("bearer" = [])),
    params(("id" = String, Path, description = "One of the caller's sessions.")),
    responses(
        (status = 204, description = "Revoked."),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "A service account's key, or a token a service exchanged (`person_required`).", body = ErrorBody),
        (status = 404, description = "Not one of the caller's sessions.", body = ErrorBody),
    )
)]
pub async fn delete_session(
    State(s): State<AppState>,
    Client(client): Client,
    Person(p): Person,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.auth
        .revoke_own(&p, &id, "revoked_by_user", &client)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
