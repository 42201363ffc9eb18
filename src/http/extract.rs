//! Typed extractors: the only way handlers receive input.
//!
//! * [`Json`] maps every body rejection (bad JSON, wrong type, non-UTF-8, too large) to
//!   the error contract instead of axum's plain-text replies, and refuses a NUL
//!   character (`\u0000`) anywhere in the body: no store keeps one (PostgreSQL refuses
//!   it in text), so it is bad input, answered 422 before anything is written.
//! * [`Query`] does the same for query strings (400).
//! * [`Auth`] verifies the bearer token and the session: a handler that takes it cannot
//!   run for an unauthenticated caller. Tokens are read from `Authorization: Bearer`
//!   only — never from the query string or a cookie.

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;
use std::net::{IpAddr, SocketAddr};

use super::AppState;
use super::error::ApiError;
use super::middleware::RequestId;
use crate::access::Principal;
use crate::auth::{Credentials, Scheme};
use crate::model::ClientInfo;

pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !json_content_type(req.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|rej| {
                if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge
                } else {
                    ApiError::BadRequest("The request body could not be read.".into())
                }
            })?;
        if has_escaped_nul(&bytes) {
            return Err(ApiError::Unprocessable(
                "Text must not contain NUL characters (\\u0000).".into(),
            ));
        }
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        let value = serde_path_to_error::deserialize(&mut de).map_err(|e| json_error(&e))?;
        // Trailing characters after the document: not valid JSON.
        de.end()
            .map_err(|_| ApiError::BadRequest("The request body is not valid JSON.".into()))?;
        Ok(Json(value))
    }
}

/// A body that does not parse, or has the wrong fields or types: the error names the
/// field and what was expected, never the value that was sent (it may be a secret
/// pasted into the wrong field).
fn json_error(e: &serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    use serde_json::error::Category;
    let inner = e.inner();
    if !matches!(inner.classify(), Category::Data) {
        return ApiError::BadRequest("The request body is not valid JSON.".into());
    }
    let path = e.path().to_string();
    let field = if path == "." || path.is_empty() {
        "The body".to_owned()
    } else {
        format!("`{path}`")
    };
    ApiError::Unprocessable(format!("{field} {}.", without_value(&inner.to_string())))
}

/// serde's words for what was expected, in JSON's: `u32` is "a non-negative integer",
/// `a sequence` "an array".
fn json_words(expected: &str) -> String {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a non-negative integer".into(),
        "i8" | "i16" | "i32" | "i64" | "isize" => "an integer".into(),
        "f32" | "f64" => "a number".into(),
        "a sequence" => "an array".into(),
        "a map" => "an object".into(),
        other => other.into(),
    }
}

/// What serde says was expected, without what it found: `invalid type: string
/// "sk-…", expected u32` becomes `must be a non-negative integer`. Messages
/// palisade's own types raise name no value and are kept.
fn without_value(message: &str) -> String {
    // serde_json appends the position; it says nothing the field does not.
    let message = message.rsplit_once(" at line ").map_or(message, |(m, _)| m);
    let bounded = |s: &str| s.chars().take(200).collect::<String>();
    for found in [
        "invalid type: ",
        "invalid value: ",
        "unknown variant ",
        "invalid length ",
    ] {
        if message.starts_with(found) {
            return match message.split_once("expected ") {
                Some((_, expected)) => format!("must be {}", json_words(&bounded(expected))),
                None => "has the wrong type or value".to_owned(),
            };
        }
    }
    if message.starts_with("unknown field ") {
        return "is not a known field".to_owned();
    }
    if let Some(rest) = message.strip_prefix("missing field ") {
        return format!("needs the field {}", bounded(rest));
    }
    if message.starts_with("duplicate field ") {
        return "holds a field twice".to_owned();
    }
    bounded(message)
}

/// A query string, deserialized; a malformed one (wrong type, a repeated or missing
/// field) is the error contract's 400, not axum's plain-text reply.
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Query(v))
            .map_err(|_| ApiError::BadRequest("Invalid query parameters.".into()))
    }
}

/// `application/json` or `application/<something>+json`, as axum's own extractor accepts.
fn json_content_type(headers: &HeaderMap) -> bool {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Whether a JSON text holds the escape `\u0000` (a raw NUL byte is not valid JSON at
/// all). Escapes are followed one by one, so an escaped backslash before `u0000` is
/// text, not a NUL.
fn has_escaped_nul(json: &[u8]) -> bool {
    let mut i = 0;
    while i < json.len() {
        if json[i] == b'\\' {
            if json.get(i + 1) == Some(&b'u') && json.get(i + 2..i + 6) == Some(b"0000") {
                return true;
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    false
}

/// Where the request came from, computed once per request in one place: the client
/// address, the user agent and the request id. The address is the socket's; only when
/// the socket's peer is a configured trusted proxy is `X-Forwarded-For` read (right to
/// left, skipping trusted proxies), so a client cannot choose the address it is
/// throttled and audited under.
pub struct Client(pub ClientInfo);

impl FromRequestParts<AppState> for Client {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Client(client_info(parts, &state.config.trusted_proxies)))
    }
}

pub(super) fn client_info(parts: &Parts, trusted: &[ipnet::IpNet]) -> ClientInfo {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let ip = peer.map(|peer| client_ip(peer, &parts.headers, trusted));
    let user_agent = parts
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(256).collect());
    let request_id = parts.extensions.get::<RequestId>().map(|r| r.0.clone());
    ClientInfo {
        ip,
        user_agent,
        request_id,
    }
}

/// The client address behind trusted proxies.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) if is_trusted(&ip) => continue,
            Ok(ip) => return ip,
            // A malformed hop: stop trusting the chain here.
            Err(_) => return peer,
        }
    }
    peer
}

/// `Authorization: Bearer <token>`, or `None`.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    match authorization(headers)? {
        (Scheme::Bearer, t) => Some(t),
        (Scheme::Dpop, _) => None,
    }
}

/// `Authorization: Bearer <token>` or `Authorization: DPoP <token>`.
fn authorization(headers: &HeaderMap) -> Option<(Scheme, &str)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    let scheme = if scheme.eq_ignore_ascii_case("bearer") {
        Scheme::Bearer
    } else if scheme.eq_ignore_ascii_case("dpop") {
        Scheme::Dpop
    } else {
        return None;
    };
    Some((scheme, token.trim())).filter(|(_, t)| !t.is_empty())
}

/// The one `DPoP` proof header; two or more count as none (and fail a bound token).
pub fn dpop_proof(headers: &HeaderMap) -> Option<&str> {
    let mut all = headers.get_all("dpop").iter();
    match (all.next(), all.next()) {
        (Some(v), None) => v.to_str().ok(),
        _ => None,
    }
}

/// What a request presents to authenticate: token, scheme, DPoP proof, and the method
/// and path the proof must be for (the path as the client sent it, also under a nested
/// router).
pub fn credentials(parts: &Parts) -> Credentials<'_> {
    let (scheme, token) = match authorization(&parts.headers) {
        Some((s, t)) => (s, Some(t)),
        None => (Scheme::Bearer, None),
    };
    let path = parts
        .extensions
        .get::<axum::extract::OriginalUri>()
        .map(|u| u.path())
        .unwrap_or_else(|| parts.uri.path());
    Credentials {
        token,
        scheme,
        proof: dpop_proof(&parts.headers),
        method: parts.method.as_str(),
        path,
    }
}

/// An authenticated caller.
pub struct Auth(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let client = client_info(parts, &state.config.trusted_proxies);
        let p = state
            .auth
            .verify_access(&credentials(parts), &client)
            .await?;
        Ok(Auth(p))
    }
}

/// A person through their own session: what the session and admin routes take. A
/// service account's key, or a token a service exchanged for a user, is refused (403).
pub struct Person(pub Principal);

impl FromRequestParts<AppState> for Person {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Auth(p) = Auth::from_request_parts(parts, state).await?;
        if !p.is_person() {
            return Err(ApiError::PersonRequired);
        }
        Ok(Person(p))
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
        let creds = credentials(parts);
        match creds.token {
            None => Ok(MaybeAuth(None)),
            Some(_) => {
                let client = client_info(parts, &state.config.trusted_proxies);
                Ok(MaybeAuth(Some(
                    state.auth.verify_access(&creds, &client).await?,
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

    #[test]
    fn forwarded_for_is_read_only_behind_a_trusted_proxy() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.9, 198.51.100.7, 10.0.0.2"),
        );
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let stranger: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(client_ip(stranger, &h, &trusted), stranger);
        // The rightmost untrusted hop: what our proxy saw, not what the client wrote.
        assert_eq!(
            client_ip(proxy, &h, &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("junk, 10.0.0.2"),
        );
        assert_eq!(client_ip(proxy, &h, &trusted), proxy);
    }

    #[test]
    fn an_escaped_nul_is_found_and_an_escaped_backslash_is_not_one() {
        assert!(has_escaped_nul(br#"{"a": "x\u0000y"}"#));
        assert!(has_escaped_nul(br#"{"\u0000": 1}"#));
        assert!(!has_escaped_nul(br#"{"a": "x\\u0000y"}"#));
        assert!(has_escaped_nul(br#"{"a": "x\\\u0000y"}"#));
        assert!(!has_escaped_nul(br#"{"a": "\u00001"}"#.split_at(8).0));
        assert!(!has_escaped_nul(br#"{"a": "\u0001"}"#));
    }
}
