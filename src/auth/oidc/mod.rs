//! Tokens of external OpenID providers (Keycloak, Entra ID, Okta, Auth0), verified
//! without the mistakes peers have shipped:
//!
//! * The issuer is looked up by the token's `iss` among the configured ones, and only
//!   that issuer's keys can verify it (a token signed by issuer B's key claiming issuer A
//!   finds no key).
//! * `alg` must be one the issuer is configured for — RS256, PS256, ES256 or EdDSA; `none`
//!   and HMAC cannot even be configured — and must match the family of the key it is
//!   checked with (an RSA key never checks an ES256 or HS256 signature).
//! * Keys come only from the issuer's JWKS ([`jwks`]); a token carrying `jku`, `jwk`,
//!   `x5u` or `x5c` is refused, and `kid` is only a lookup key.
//! * `iss`, `aud`, `exp` and `sub` are required; `nbf` is checked; leeway ≤ 60 s.
//! * An ID token is not accepted where an access token is required, nor the reverse
//!   (`typ` header `at+jwt`, or the `typ` claim Keycloak sets).
//! * Roles, groups and the tenant come from configured claim paths, roles through the
//!   issuer's `role_map`.
//!
//! Signature checks are jsonwebtoken's (aws-lc-rs); nothing cryptographic is done here.

pub mod jwks;
pub mod signin;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use jsonwebtoken::jwk::KeyAlgorithm;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use crate::access::valid_name;
use crate::config::{IssuerConfig, JwsAlgorithm, OidcConfig};
use jwks::{Jwks, KeyFamily};

/// Which kind of token a caller needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenUse {
    /// An OpenID Connect ID token (sign-in, the exchange endpoint).
    IdToken,
    /// An OAuth access token (Bearer on the API, with `accept_bearer`).
    AccessToken,
}

/// Why a token was refused. Never shown to the client (every case is a plain 401);
/// recorded as the audit reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OidcRejection {
    #[error("token too large")]
    TooLarge,
    #[error("malformed token")]
    Malformed,
    #[error("a key or key URL in the token header")]
    EmbeddedKey,
    #[error("unknown issuer")]
    UnknownIssuer,
    #[error("algorithm not allowed")]
    AlgorithmNotAllowed,
    #[error("unknown key")]
    UnknownKey,
    #[error("algorithm does not match the key")]
    KeyMismatch,
    #[error("bad signature")]
    Signature,
    #[error("expired")]
    Expired,
    #[error("not yet valid")]
    NotYetValid,
    #[error("wrong audience")]
    Audience,
    #[error("invalid claims")]
    Claims,
    #[error("wrong token type")]
    TokenType,
    #[error("no tenant")]
    NoTenant,
}

impl OidcRejection {
    pub fn reason(self) -> &'static str {
        use OidcRejection::*;
        match self {
            TooLarge => "idp_token_too_large",
            Malformed => "idp_token_malformed",
            EmbeddedKey => "idp_token_embedded_key",
            UnknownIssuer => "idp_unknown_issuer",
            AlgorithmNotAllowed => "idp_algorithm_not_allowed",
            UnknownKey => "idp_unknown_key",
            KeyMismatch => "idp_key_mismatch",
            Signature => "idp_bad_signature",
            Expired => "idp_token_expired",
            NotYetValid => "idp_token_not_yet_valid",
            Audience => "idp_wrong_audience",
            Claims => "idp_invalid_claims",
            TokenType => "idp_wrong_token_type",
            NoTenant => "idp_no_tenant",
        }
    }
}

/// Who an IdP token says the caller is, after every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalIdentity {
    pub issuer: String,
    pub subject: String,
    pub tenant: String,
    pub roles: Vec<String>,
    pub groups: Vec<String>,
    /// `preferred_username`, if the IdP sent a usable one.
    pub username: Option<String>,
    /// The ID token's `nonce` (the sign-in flow compares it).
    pub nonce: Option<String>,
    /// `aud`, and `azp` if present (the sign-in flow checks the token is for its client).
    pub audiences: Vec<String>,
    pub authorized_party: Option<String>,
    /// `exp`, Unix seconds.
    pub expires_at: i64,
}

struct Issuer {
    cfg: IssuerConfig,
    jwks: Jwks,
    algorithms: Vec<Algorithm>,
}

pub struct OidcVerifier {
    issuers: Vec<Arc<Issuer>>,
    /// Issuers palisade can send a browser to for sign-in.
    sign_in: Vec<Arc<signin::SignInClient>>,
    max_token_bytes: usize,
    /// Some issuer has `accept_bearer`: only then does a request's token get a look.
    any_bearer: bool,
}

fn algorithm(a: JwsAlgorithm) -> Algorithm {
    match a {
        JwsAlgorithm::RS256 => Algorithm::RS256,
        JwsAlgorithm::PS256 => Algorithm::PS256,
        JwsAlgorithm::ES256 => Algorithm::ES256,
        JwsAlgorithm::EdDSA => Algorithm::EdDSA,
    }
}

fn family(a: Algorithm) -> Option<KeyFamily> {
    match a {
        Algorithm::RS256 | Algorithm::PS256 => Some(KeyFamily::Rsa),
        Algorithm::ES256 => Some(KeyFamily::P256),
        Algorithm::EdDSA => Some(KeyFamily::Ed25519),
        _ => None,
    }
}

/// The value at a dotted path (`realm_access.roles`).
fn at_path<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut v = claims.get(parts.next()?)?;
    for p in parts {
        v = v.get(p)?;
    }
    Some(v)
}

/// Strings at a path: an array of strings, or one string.
fn strings_at(claims: &Map<String, Value>, path: Option<&str>) -> Vec<String> {
    match path.and_then(|p| at_path(claims, p)) {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

impl OidcVerifier {
    pub fn new(cfg: &OidcConfig) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            // A JWKS URL never redirects us somewhere else.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|_| "cannot build the JWKS client".to_owned())?;
        let issuers = cfg
            .issuers
            .iter()
            .map(|i| {
                Arc::new(Issuer {
                    jwks: Jwks::new(
                        &i.issuer,
                        i.jwks_url.as_deref(),
                        cfg.jwks_min_refetch,
                        http.clone(),
                    ),
                    algorithms: i.algorithms.iter().copied().map(algorithm).collect(),
                    cfg: i.clone(),
                })
            })
            .collect();
        let mut sign_in = Vec::new();
        for i in &cfg.issuers {
            if let Some(c) = signin::SignInClient::new(i, http.clone())? {
                sign_in.push(Arc::new(c));
            }
        }
        Ok(Self {
            issuers,
            sign_in,
            max_token_bytes: cfg.max_token_bytes,
            any_bearer: cfg.issuers.iter().any(|i| i.accept_bearer),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty()
    }

    /// The issuers offered for sign-in.
    pub fn sign_in_clients(&self) -> &[Arc<signin::SignInClient>] {
        &self.sign_in
    }

    /// The sign-in client named `name`; without a name, the only one there is.
    pub fn sign_in_client(&self, name: Option<&str>) -> Option<&Arc<signin::SignInClient>> {
        match name {
            Some(n) => self.sign_in.iter().find(|c| c.name == n),
            None if self.sign_in.len() == 1 => self.sign_in.first(),
            None => None,
        }
    }

    /// Fetches every issuer's keys now (at start and periodically).
    pub async fn refresh_all(&self) {
        for i in &self.issuers {
            if let Err(e) = i.jwks.refresh().await {
                tracing::warn!(issuer = %i.cfg.issuer, error = %e, "JWKS refresh failed");
            }
        }
    }

    /// Whether `token` should go to the IdP path: a JWS (three parts; palisade's own
    /// tokens have four or five) claiming an issuer with `accept_bearer`. Only a cheap
    /// look to route it; [`Self::verify`] decides.
    pub fn routes_bearer(&self, token: &str) -> bool {
        // Every authenticated request passes here: without such an issuer, nothing more.
        self.any_bearer
            && token.len() <= self.max_token_bytes
            && token.split('.').count() == 3
            && unverified_issuer(token).is_some_and(|iss| {
                self.issuers
                    .iter()
                    .any(|i| i.cfg.accept_bearer && i.cfg.issuer == iss)
            })
    }

    pub async fn verify(
        &self,
        token: &str,
        want: TokenUse,
    ) -> Result<ExternalIdentity, OidcRejection> {
        if token.len() > self.max_token_bytes {
            return Err(OidcRejection::TooLarge);
        }
        if token.split('.').count() != 3 {
            return Err(OidcRejection::Malformed);
        }
        // Unknown or unsupported `alg` (none, None, …) does not even parse.
        let header = jsonwebtoken::decode_header(token).map_err(|_| OidcRejection::Malformed)?;
        if header.jku.is_some()
            || header.jwk.is_some()
            || header.x5u.is_some()
            || header.x5c.is_some()
        {
            return Err(OidcRejection::EmbeddedKey);
        }
        if header.crit.is_some() {
            return Err(OidcRejection::Malformed);
        }
        let iss = unverified_issuer(token).ok_or(OidcRejection::Malformed)?;
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.cfg.issuer == iss)
            .ok_or(OidcRejection::UnknownIssuer)?;
        if !issuer.algorithms.contains(&header.alg) {
            return Err(OidcRejection::AlgorithmNotAllowed);
        }
        let kid = header.kid.as_deref().ok_or(OidcRejection::UnknownKey)?;
        if kid.is_empty() || kid.len() > 256 {
            return Err(OidcRejection::UnknownKey);
        }
        let key = issuer
            .jwks
            .key(kid)
            .await
            .ok_or(OidcRejection::UnknownKey)?;
        if family(header.alg) != Some(key.family)
            || key.alg.is_some_and(|a| a != KeyAlgorithm::from(header.alg))
        {
            return Err(OidcRejection::KeyMismatch);
        }
        let mut v = Validation::new(header.alg);
        v.set_issuer(&[&issuer.cfg.issuer]);
        v.set_audience(&issuer.cfg.audiences);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v.leeway = issuer.cfg.leeway.as_secs().min(60);
        v.validate_nbf = true;
        let data =
            jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &v).map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as K;
                match e.kind() {
                    K::ExpiredSignature => OidcRejection::Expired,
                    K::ImmatureSignature => OidcRejection::NotYetValid,
                    K::InvalidAudience => OidcRejection::Audience,
                    K::InvalidIssuer | K::MissingRequiredClaim(_) | K::InvalidClaimFormat(_) => {
                        OidcRejection::Claims
                    }
                    K::InvalidAlgorithm => OidcRejection::KeyMismatch,
                    _ => OidcRejection::Signature,
                }
            })?;
        let claims = data.claims;
        // ID token or access token: the `at+jwt` header (RFC 9068) or Keycloak's `typ`
        // claim says which.
        let header_typ = header.typ.as_deref().map(str::to_ascii_lowercase);
        let is_access = matches!(header_typ.as_deref(), Some("at+jwt" | "application/at+jwt"))
            || claims.get("typ").and_then(Value::as_str) == Some("Bearer");
        let is_id = !is_access
            && claims
                .get("typ")
                .and_then(Value::as_str)
                .is_none_or(|t| t == "ID");
        match want {
            TokenUse::AccessToken if !is_access => return Err(OidcRejection::TokenType),
            TokenUse::IdToken if !is_id => return Err(OidcRejection::TokenType),
            _ => {}
        }
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= 255)
            .ok_or(OidcRejection::Claims)?
            .to_owned();
        let tenant = match (&issuer.cfg.tenant, &issuer.cfg.tenant_claim) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(path)) => at_path(&claims, path)
                .and_then(Value::as_str)
                .map(str::to_owned),
            (None, None) => None,
        }
        .filter(|t| valid_name(t))
        .ok_or(OidcRejection::NoTenant)?;
        let raw_roles = strings_at(&claims, issuer.cfg.roles_claim.as_deref());
        let mut roles: Vec<String> = if issuer.cfg.role_map.is_empty() {
            raw_roles.into_iter().filter(|r| valid_name(r)).collect()
        } else {
            raw_roles
                .iter()
                .filter_map(|r| issuer.cfg.role_map.get(r).cloned())
                .collect()
        };
        roles.sort();
        roles.dedup();
        let mut groups: Vec<String> = strings_at(&claims, issuer.cfg.groups_claim.as_deref())
            .into_iter()
            .map(|g| g.trim_start_matches('/').to_owned())
            .filter(|g| valid_name(g))
            .collect();
        groups.sort();
        groups.dedup();
        Ok(ExternalIdentity {
            issuer: issuer.cfg.issuer.clone(),
            subject,
            tenant,
            roles,
            groups,
            username: claims
                .get("preferred_username")
                .and_then(Value::as_str)
                .filter(|u| valid_name(u))
                .map(str::to_owned),
            nonce: claims
                .get("nonce")
                .and_then(Value::as_str)
                .map(str::to_owned),
            audiences: strings_at(&claims, Some("aud")),
            authorized_party: claims.get("azp").and_then(Value::as_str).map(str::to_owned),
            expires_at: claims
                .get("exp")
                .and_then(Value::as_i64)
                .unwrap_or_default(),
        })
    }
}

/// The `iss` a token claims, read without verification — only to pick the issuer whose
/// keys will verify it.
fn unverified_issuer(token: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Iss {
        iss: String,
    }
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice::<Iss>(&bytes).ok().map(|i| i.iss)
}

#[cfg(test)]
pub(crate) mod tests;
