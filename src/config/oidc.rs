//! `[oidc]`: external identity providers (OpenID Connect).

use super::*;

/// External identity providers (OpenID Connect).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OidcConfig {
    pub issuers: Vec<IssuerConfig>,
    /// How often each issuer's JWKS is fetched in the background.
    #[serde(with = "humantime_serde")]
    pub jwks_refresh: Duration,
    /// A token naming an unknown `kid` triggers at most one fetch per this interval.
    #[serde(with = "humantime_serde")]
    pub jwks_min_refetch: Duration,
    /// The largest IdP token accepted (a user in hundreds of groups makes big tokens).
    pub max_token_bytes: usize,
    /// How long a browser has to come back from the IdP after `/auth/oidc/login`.
    #[serde(with = "humantime_serde")]
    pub sign_in_ttl: Duration,
}

impl Default for OidcConfig {
    fn default() -> Self {
        Self {
            issuers: Vec::new(),
            jwks_refresh: Duration::from_secs(3600),
            jwks_min_refetch: Duration::from_secs(60),
            max_token_bytes: 32 * 1024,
            sign_in_ttl: Duration::from_secs(600),
        }
    }
}

/// A JWS algorithm an issuer may sign with. HMAC and `none` are not representable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JwsAlgorithm {
    RS256,
    PS256,
    ES256,
    EdDSA,
}

/// One trusted issuer (`[[oidc.issuers]]`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The exact `iss` value.
    pub issuer: String,
    /// Accepted `aud` values (at least one).
    pub audiences: Vec<String>,
    /// The JWKS URL; absent: `jwks_uri` from the issuer's discovery document.
    #[serde(default)]
    pub jwks_url: Option<String>,
    pub algorithms: Vec<JwsAlgorithm>,
    /// Dotted path of the roles claim, e.g. `realm_access.roles`.
    #[serde(default)]
    pub roles_claim: Option<String>,
    #[serde(default)]
    pub groups_claim: Option<String>,
    /// A fixed tenant for every user of this issuer …
    #[serde(default)]
    pub tenant: Option<String>,
    /// … or the claim that names it.
    #[serde(default)]
    pub tenant_claim: Option<String>,
    /// IdP role → palisade role. When set, only mapped roles are granted.
    #[serde(default)]
    pub role_map: std::collections::BTreeMap<String, String>,
    /// Accept this issuer's access tokens directly as Bearer tokens on the API.
    #[serde(default)]
    pub accept_bearer: bool,
    /// Clock leeway for `exp`/`nbf`/`iat`, at most 60 s.
    #[serde(default = "default_leeway", with = "humantime_serde")]
    pub leeway: Duration,
    /// Sign-in through this issuer (authorization code flow with PKCE): its short name
    /// in `/auth/oidc/login?provider=NAME` and on the sign-in page.
    #[serde(default)]
    pub name: Option<String>,
    /// palisade's client registration at the IdP; sign-in is offered only when set.
    #[serde(default)]
    pub client_id: Option<String>,
    /// The environment variable holding the client secret (a confidential client,
    /// `client_secret_basic`); absent for a public client, which PKCE alone protects.
    /// Secrets stay out of config files, like the model keys.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// What that variable holds (read at load).
    #[serde(skip)]
    pub client_secret: Option<Secret>,
    /// palisade's callback as registered at the IdP, e.g.
    /// `https://chat.example.com/auth/oidc/callback`.
    #[serde(default)]
    pub redirect_uri: Option<String>,
    /// Scopes asked for (`openid` is always included).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The IdP's endpoints; absent: from its discovery document.
    #[serde(default)]
    pub authorization_endpoint: Option<String>,
    #[serde(default)]
    pub token_endpoint: Option<String>,
}

fn default_leeway() -> Duration {
    Duration::from_secs(30)
}

impl IssuerConfig {
    fn check(&self) -> Result<(), &'static str> {
        if self.audiences.is_empty() || self.algorithms.is_empty() {
            return Err("audiences and algorithms must not be empty");
        }
        if self.leeway > Duration::from_secs(60) {
            return Err("leeway is at most 60s");
        }
        if self.tenant.is_some() == self.tenant_claim.is_some() {
            return Err("exactly one of tenant and tenant_claim");
        }
        let url = self.jwks_url.as_deref().unwrap_or(&self.issuer);
        if !https_or_loopback(url) {
            return Err("the issuer and jwks_url must be https (http only on loopback)");
        }
        for u in [&self.authorization_endpoint, &self.token_endpoint]
            .into_iter()
            .flatten()
        {
            if !https_or_loopback(u) {
                return Err("the IdP endpoints must be https (http only on loopback)");
            }
        }
        if let Some(client_id) = &self.client_id {
            if !self.audiences.contains(client_id) {
                return Err("client_id must be one of the audiences (ID tokens are issued to it)");
            }
            let redirect = self
                .redirect_uri
                .as_deref()
                .ok_or("sign-in (client_id) needs redirect_uri")?;
            match url::Url::parse(redirect) {
                Ok(u) if u.path() == "/auth/oidc/callback" && https_or_loopback(redirect) => {}
                _ => {
                    return Err(
                        "redirect_uri must be https://<palisade>/auth/oidc/callback (http only on loopback)",
                    );
                }
            }
            if !self.name.as_deref().is_some_and(provider_name) {
                return Err("sign-in (client_id) needs a name (letters, digits, '-', '_')");
            }
        }
        Ok(())
    }
}

/// A sign-in provider's name: it goes into a URL (`?provider=`) and onto a button.
fn provider_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// `https:`, or `http:` to a loopback host (tests, a local IdP).
pub fn https_or_loopback(url: &str) -> bool {
    match url::Url::parse(url) {
        Ok(u) if u.scheme() == "https" => u.host().is_some(),
        Ok(u) if u.scheme() == "http" => match u.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d == "localhost",
            None => false,
        },
        _ => false,
    }
}

impl OidcConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        for i in &self.issuers {
            if let Err(m) = i.check() {
                return Err(ConfigError::Invalid(format!(
                    "oidc.issuers ({}): {m}",
                    i.issuer
                )));
            }
        }
        Ok(())
    }
}
