//! Sign-in through an IdP: the authorization code flow with PKCE (S256), `state` and
//! `nonce`, palisade being the IdP's client.
//!
//! * `/auth/oidc/login` draws a fresh `state`, `nonce` and PKCE verifier, seals them with
//!   the place to return to into an HttpOnly cookie ([`crate::auth::sealed`]) and sends
//!   the browser to the IdP. Nothing is stored server-side until the browser comes back.
//! * `/auth/oidc/callback` opens the cookie (so the response is bound to the browser that
//!   started the flow: a login-CSRF link carries no cookie), compares `state`, spends the
//!   `state` once (a shared one-time marker, so a replayed callback fails on any node),
//!   redeems the code with the verifier at the token endpoint (a stolen code is useless
//!   without it), verifies the ID token like any other and compares its `nonce`.
//! * The place to return to is a path on this site only ([`ReturnTo`]): never an open
//!   redirect. Tokens never appear in a URL: the session arrives as the refresh cookie.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use sha2::{Digest, Sha256};

use crate::config::{IssuerConfig, https_or_loopback};
use crate::secret::random_b64;

/// A path on this site to go to after sign-in: `/`, `/chat?x=1`; never `//host`,
/// `/\host`, a scheme, or anything with control characters or backslashes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReturnTo(String);

impl ReturnTo {
    pub fn parse(raw: &str) -> Option<Self> {
        let ok = raw.starts_with('/')
            && !raw.starts_with("//")
            && raw.len() <= 1024
            && !raw
                .chars()
                .any(|c| c == '\\' || c.is_control() || c.is_whitespace());
        if !ok {
            return None;
        }
        // Whatever a browser makes of it, it stays on this origin.
        let base = url::Url::parse("https://palisade.invalid/").ok()?;
        let joined = base.join(raw).ok()?;
        (joined.origin() == base.origin()).then(|| Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for ReturnTo {
    fn default() -> Self {
        Self("/".into())
    }
}

/// What the browser carries between login and callback, sealed.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Pending {
    pub provider: String,
    pub state: String,
    pub nonce: String,
    pub verifier: String,
    pub return_to: ReturnTo,
    /// Unix seconds.
    pub expires_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignInError {
    /// The IdP's discovery document or token endpoint could not be reached or read.
    #[error("the identity provider is unavailable")]
    Unavailable,
    /// The token endpoint refused the code (spent, stolen, wrong verifier, expired).
    #[error("the identity provider refused the code")]
    CodeRefused,
}

#[derive(Clone)]
struct Endpoints {
    authorization: url::Url,
    token: String,
}

/// palisade's registration at one IdP.
pub struct SignInClient {
    pub name: String,
    pub issuer: String,
    pub client_id: String,
    client_secret: Option<String>,
    redirect_uri: String,
    scope: String,
    configured: Option<Endpoints>,
    discovered: tokio::sync::OnceCell<Endpoints>,
    http: reqwest::Client,
}

impl std::fmt::Debug for SignInClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignInClient")
            .field("name", &self.name)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// The largest token-endpoint response read (a user in hundreds of groups makes a big
/// ID token).
const MAX_TOKEN_RESPONSE: usize = 128 * 1024;

impl SignInClient {
    /// The client of `cfg`, if sign-in is configured for it.
    pub fn new(cfg: &IssuerConfig, http: reqwest::Client) -> Result<Option<Self>, String> {
        let (Some(client_id), Some(name), Some(redirect_uri)) =
            (&cfg.client_id, &cfg.name, &cfg.redirect_uri)
        else {
            return Ok(None);
        };
        let client_secret = match (&cfg.client_secret_env, &cfg.client_secret) {
            (Some(_), Some(secret)) => Some(secret.expose().to_owned()),
            (Some(var), None) => return Err(format!("oidc issuer {name}: {var} is not set")),
            (None, _) => None,
        };
        let configured = match (&cfg.authorization_endpoint, &cfg.token_endpoint) {
            (Some(a), Some(t)) => Some(Endpoints {
                authorization: url::Url::parse(a)
                    .map_err(|_| format!("oidc issuer {name}: bad authorization_endpoint"))?,
                token: t.clone(),
            }),
            _ => None,
        };
        let mut scopes = vec!["openid".to_owned()];
        scopes.extend(cfg.scopes.iter().filter(|s| *s != "openid").cloned());
        Ok(Some(Self {
            name: name.clone(),
            issuer: cfg.issuer.clone(),
            client_id: client_id.clone(),
            client_secret,
            redirect_uri: redirect_uri.clone(),
            scope: scopes.join(" "),
            configured,
            discovered: tokio::sync::OnceCell::new(),
            http,
        }))
    }

    async fn endpoints(&self) -> Result<Endpoints, SignInError> {
        if let Some(e) = &self.configured {
            return Ok(e.clone());
        }
        // Only a success is kept: a failed discovery is tried again next time.
        self.discovered
            .get_or_try_init(|| self.discover())
            .await
            .cloned()
    }

    async fn discover(&self) -> Result<Endpoints, SignInError> {
        #[derive(serde::Deserialize)]
        struct Discovery {
            issuer: String,
            authorization_endpoint: String,
            token_endpoint: String,
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        );
        let d: Discovery = serde_json::from_slice(&self.get_bounded(&url).await?)
            .map_err(|_| SignInError::Unavailable)?;
        // OpenID Connect Discovery §4.3: the document must name the issuer it is for.
        if d.issuer != self.issuer
            || !https_or_loopback(&d.authorization_endpoint)
            || !https_or_loopback(&d.token_endpoint)
        {
            tracing::warn!(issuer = %self.issuer, "discovery document refused");
            return Err(SignInError::Unavailable);
        }
        Ok(Endpoints {
            authorization: url::Url::parse(&d.authorization_endpoint)
                .map_err(|_| SignInError::Unavailable)?,
            token: d.token_endpoint,
        })
    }

    async fn get_bounded(&self, url: &str) -> Result<Vec<u8>, SignInError> {
        if !https_or_loopback(url) {
            return Err(SignInError::Unavailable);
        }
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|_| SignInError::Unavailable)?;
        if !resp.status().is_success() {
            return Err(SignInError::Unavailable);
        }
        read_bounded(resp).await.ok_or(SignInError::Unavailable)
    }

    /// A new flow: the IdP URL to send the browser to, and what it must bring back.
    pub async fn start(
        &self,
        return_to: ReturnTo,
        ttl: Duration,
        now_secs: i64,
    ) -> Result<(String, Pending), SignInError> {
        let endpoints = self.endpoints().await?;
        let pending = Pending {
            provider: self.name.clone(),
            state: random_b64(32),
            nonce: random_b64(32),
            verifier: random_b64(32),
            return_to,
            expires_at: now_secs.saturating_add(ttl.as_secs() as i64),
        };
        let challenge = B64.encode(Sha256::digest(pending.verifier.as_bytes()));
        let mut url = endpoints.authorization;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", &self.redirect_uri)
            .append_pair("scope", &self.scope)
            .append_pair("state", &pending.state)
            .append_pair("nonce", &pending.nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        Ok((url.into(), pending))
    }

    /// The ID token for `code`, from the token endpoint (with the PKCE verifier).
    pub async fn redeem(&self, code: &str, verifier: &str) -> Result<String, SignInError> {
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            id_token: String,
        }
        let endpoints = self.endpoints().await?;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.redirect_uri.as_str()),
            ("code_verifier", verifier),
        ];
        let mut req = self.http.post(&endpoints.token);
        match &self.client_secret {
            Some(secret) => {
                req = req.basic_auth(form_encode(&self.client_id), Some(form_encode(secret)))
            }
            None => form.push(("client_id", self.client_id.as_str())),
        }
        let resp = req
            .form(&form)
            .send()
            .await
            .map_err(|_| SignInError::Unavailable)?;
        let status = resp.status();
        if status.is_client_error() {
            // invalid_grant and friends: the IdP's reason stays in its own logs.
            return Err(SignInError::CodeRefused);
        }
        if !status.is_success() {
            return Err(SignInError::Unavailable);
        }
        let body = read_bounded(resp).await.ok_or(SignInError::Unavailable)?;
        let t: TokenResponse =
            serde_json::from_slice(&body).map_err(|_| SignInError::CodeRefused)?;
        Ok(t.id_token)
    }
}

/// RFC 6749 §2.3.1: the client id and secret are form-encoded before Basic auth.
fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn read_bounded(mut resp: reqwest::Response) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.ok()? {
        if body.len() + chunk.len() > MAX_TOKEN_RESPONSE {
            return None;
        }
        body.extend_from_slice(&chunk);
    }
    Some(body)
}

#[cfg(test)]
mod tests {
    use super::ReturnTo;

    #[test]
    fn return_to_is_a_path_on_this_site_only() {
        for ok in [
            "/",
            "/chat",
            "/chat?thread=abc&x=1",
            "/a/b#frag",
            "/%2F%2Fx",
        ] {
            assert!(ReturnTo::parse(ok).is_some(), "{ok}");
        }
        for bad in [
            "",
            "chat",
            "//evil.example",
            "//evil.example/path",
            "/\\evil.example",
            "\\\\evil.example",
            "https://evil.example/",
            "javascript:alert(1)",
            "/\t/evil.example",
            "/ /evil.example",
            "/\n/evil.example",
            "http:evil.example",
        ] {
            assert!(ReturnTo::parse(bad).is_none(), "{bad:?}");
        }
        assert!(ReturnTo::parse(&format!("/{}", "a".repeat(2000))).is_none());
    }
}
