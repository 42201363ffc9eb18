//! The refresh cookie and the cross-site checks for cookie-authenticated routes.
//!
//! The refresh token lives only in `__Host-palisade_refresh`: HttpOnly (no script can
//! read it), Secure, SameSite=Strict, Path=/ and no Domain (the `__Host-` prefix makes
//! browsers enforce the last three). Routes that act on it are POST-only and refuse
//! cross-site requests by `Origin` and `Sec-Fetch-Site`.

use axum::http::{HeaderMap, HeaderValue, header};

use super::error::ApiError;
use crate::config::Origins;

pub const REFRESH_COOKIE: &str = "__Host-palisade_refresh";

pub fn refresh_cookie(value: &str, max_age_secs: i64) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{REFRESH_COOKIE}={value}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={max_age_secs}"
    ))
    .ok()
}

pub fn clear_refresh_cookie() -> HeaderValue {
    HeaderValue::from_static(
        "__Host-palisade_refresh=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0",
    )
}

/// The state of a sign-in through an IdP, sealed (`/auth/oidc/login` → callback).
/// SameSite=Lax, not Strict: the callback is a top-level navigation *from the IdP*,
/// which a Strict cookie would not accompany. It is useless to anyone else (sealed,
/// single-use, bound to its `state`) and lives ten minutes.
pub const SIGN_IN_COOKIE: &str = "__Host-palisade_oidc";

pub fn sign_in_cookie(value: &str, max_age_secs: u64) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{SIGN_IN_COOKIE}={value}; HttpOnly; Secure; SameSite=Lax; Path=/; Max-Age={max_age_secs}"
    ))
    .ok()
}

pub fn clear_sign_in_cookie() -> HeaderValue {
    HeaderValue::from_static(
        "__Host-palisade_oidc=; HttpOnly; Secure; SameSite=Lax; Path=/; Max-Age=0",
    )
}

/// The device cookie: a sealed value naming a user who signed in from this browser
/// before (OWASP's device cookies). It authorises nothing; it only lets its holder's
/// sign-ins be throttled on their own, not by the per-username allowance a stranger's
/// guesses use up. HttpOnly, Secure, SameSite=Strict, and scoped to the sign-in route.
pub const DEVICE_COOKIE: &str = "__Host-palisade_device";

pub fn device_cookie(value: &str, max_age_secs: i64) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{DEVICE_COOKIE}={value}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={max_age_secs}"
    ))
    .ok()
}

/// The refresh token from the `Cookie` header(s), if any.
pub fn read_refresh(headers: &HeaderMap) -> Option<String> {
    read_cookie(headers, REFRESH_COOKIE)
}

/// The cookie `name` from the `Cookie` header(s), if any. Each `name=value` pair is
/// parsed on its own (the `cookie` crate), so one malformed or non-ASCII cookie beside
/// ours cannot make the whole header unreadable and log the user out.
pub fn read_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
        .filter_map(|pair| std::str::from_utf8(pair).ok())
        .filter_map(|pair| cookie::Cookie::parse(pair.trim()).ok())
        .find(|c| c.name() == name)
        .map(|c| c.value().trim().to_owned())
}

/// Refuses requests a browser marks as cross-site, or whose `Origin` is not ours.
/// Requests with neither header (curl, SDKs) carry no ambient browser credentials
/// worth forging, and pass.
pub fn require_same_origin(headers: &HeaderMap, origins: &Origins) -> Result<(), ApiError> {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("invalid");
        if !matches!(site, "same-origin" | "none") {
            return Err(ApiError::CrossSite);
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN)
        && !origin.to_str().is_ok_and(|o| origins.accepts(o))
    {
        // A page of this gateway opened at an address it is not configured for: say
        // so (a cross-site page was refused above, by its browser's own word).
        return Err(if headers.contains_key("sec-fetch-site") {
            ApiError::OriginMismatch(origins.primary().to_owned())
        } else {
            ApiError::CrossSite
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_checks() {
        let configured = Origins::of(
            Some("https://chat.example.com"),
            "127.0.0.1:8080".parse().unwrap(),
        );
        let o = &configured;
        let mut h = HeaderMap::new();
        assert!(require_same_origin(&h, o).is_ok());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://chat.example.com"),
        );
        assert!(require_same_origin(&h, o).is_ok());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(require_same_origin(&h, o).is_err());
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(require_same_origin(&h, o).is_err());
        let mut h = HeaderMap::new();
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(require_same_origin(&h, o).is_err());
        h.insert("sec-fetch-site", HeaderValue::from_static("same-site"));
        assert!(require_same_origin(&h, o).is_err());
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(require_same_origin(&h, o).is_ok());
        // The page itself, opened at another address: named as such.
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(matches!(
            require_same_origin(&h, o),
            Err(ApiError::OriginMismatch(c)) if c == "https://chat.example.com"
        ));
        // Unset: both loopback names of the port listened on, nothing else.
        let derived = Origins::of(None, "127.0.0.1:8080".parse().unwrap());
        for ok in [
            "http://127.0.0.1:8080",
            "http://localhost:8080",
            "http://[::1]:8080",
        ] {
            h.insert(header::ORIGIN, HeaderValue::from_static(ok));
            assert!(require_same_origin(&h, &derived).is_ok(), "{ok}");
        }
        for bad in [
            "http://localhost:8081",
            "https://localhost:8080",
            "http://evil.example:8080",
        ] {
            h.insert(header::ORIGIN, HeaderValue::from_static(bad));
            assert!(require_same_origin(&h, &derived).is_err(), "{bad}");
        }
        assert_eq!(derived.primary(), "http://127.0.0.1:8080");
        assert_eq!(
            Origins::of(None, "10.0.0.5:9000".parse().unwrap()).all(),
            ["http://10.0.0.5:9000"]
        );
        let copied = Origins::of(
            Some("http://localhost:8080"),
            "127.0.0.1:9000".parse().unwrap(),
        );
        assert!(
            copied
                .disagreement("127.0.0.1:9000".parse().unwrap())
                .is_some()
        );
        assert!(o.disagreement("127.0.0.1:9000".parse().unwrap()).is_none());
    }

    #[test]
    fn reads_the_refresh_cookie_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-palisade_refresh=tok; b=2"),
        );
        assert_eq!(read_refresh(&h).as_deref(), Some("tok"));
    }

    #[test]
    fn a_non_ascii_cookie_beside_ours_does_not_hide_it() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_bytes(b"theme=d\xc3\xa9j\xe0; __Host-palisade_refresh=tok").unwrap(),
        );
        assert_eq!(read_refresh(&h).as_deref(), Some("tok"));
    }
}
