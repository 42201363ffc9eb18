//! Typed extractors: the only way handlers receive input.
//!
//! * [`Json`] maps every body rejection (bad JSON, wrong type, non-UTF-8, too large) to
//!   the error contract instead of axum's plain-text replies.
//! * [`Auth`] verifies the bearer token and the session: a handler that takes it cannot
//!   run for an unauthenticated caller. Tokens are read from `Authorization: Bearer`
//!   only — never from the query string or a cookie.

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;
use std::net::SocketAddr;

use super::AppState;
use crate::auth::{ClientInfo, Principal};
use crate::error::ApiError;

pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(rej) => Err(map_json_rejection(&rej)),
        }
    }
}

fn map_json_rejection(rej: &JsonRejection) -> ApiError {
    match rej {
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
        _ if rej.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        JsonRejection::JsonDataError(_) => ApiError::Unprocessable(
            "The JSON body does not have the expected fields or types.".into(),
        ),
        _ => ApiError::BadRequest("The request body is not valid JSON.".into()),
    }
}

/// The peer address and user agent, for throttling and audit. The IP is the socket's;
/// forwarded-for headers are not trusted.
pub struct Client(pub ClientInfo);

impl<S: Send + Sync> FromRequestParts<S> for Client {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Client(client_info(parts)))
    }
}

fn client_info(parts: &Parts) -> ClientInfo {
    let ip = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let user_agent = parts
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(256).collect());
    ClientInfo { ip, user_agent }
}

/// `Authorization: Bearer <token>`, or `None`.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// An authenticated caller.
pub struct Auth(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let client = client_info(parts);
        let p = state
            .auth
            .verify_access(bearer(&parts.headers), &client)
            .await?;
        Ok(Auth(p))
    }
}

/// Like [`Auth`] but absent credentials are not an error (logout with only a cookie).
/// Present-but-invalid credentials still fail.
pub struct MaybeAuth(pub Option<Principal>);

impl FromRequestParts<AppState> for MaybeAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        match bearer(&parts.headers) {
            None => Ok(MaybeAuth(None)),
            Some(t) => {
                let client = client_info(parts);
                Ok(MaybeAuth(Some(
                    state.auth.verify_access(Some(t), &client).await?,
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer abc"),
        );
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&h), None);
    }
}
