//! DPoP proofs (RFC 9449): the client holds a P-256 key (in a browser, a non-extractable
//! WebCrypto key) and signs a fresh proof JWT for every request; tokens are bound to the
//! key's thumbprint, so a copied token is useless without the key.
//!
//! [`verify_proof`] checks one proof, exactly as §4.3 lists, and nothing else: the
//! header (`typ` `dpop+jwt`, `alg` ES256, a public P-256 `jwk` and no private part, no
//! key URLs), the signature with that key (jsonwebtoken, aws-lc-rs), `htm` and `htu`
//! against the request, `iat` inside the proof window (and at most a few seconds ahead),
//! `jti` present, `ath` = SHA-256 of the access token when one is presented. The replay
//! cache (a `jti` once per window, shared by every node) and the server nonce live in
//! the auth service, which owns the stores and keys.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The longest proof accepted.
pub const MAX_PROOF_LEN: usize = 4096;
/// How far in the future a proof's `iat` may be (client clocks run fast).
pub const MAX_CLOCK_AHEAD_SECS: i64 = 5;

/// What a valid proof tells: the key (its RFC 7638 thumbprint) and what to remember.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    pub jkt: String,
    pub jti: String,
    pub nonce: Option<String>,
}

/// The request a proof must be for.
#[derive(Debug, Clone, Copy)]
pub struct ProofFor<'a> {
    pub method: &'a str,
    /// The request's URL on each origin the client may have addressed it at (query
    /// and fragment are ignored).
    pub urls: &'a [&'a str],
    /// The access token presented with the proof (`ath`), if any.
    pub access_token: Option<&'a str>,
    /// Unix seconds.
    pub now: i64,
    /// How old `iat` may be, seconds.
    pub window_secs: i64,
}

/// Why a proof was refused: the audit reason. The client sees `invalid_dpop_proof`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("malformed proof")]
    Malformed,
    #[error("not a dpop+jwt")]
    Type,
    #[error("algorithm not allowed")]
    Algorithm,
    #[error("bad key in the proof")]
    Key,
    #[error("bad signature")]
    Signature,
    #[error("wrong method")]
    Method,
    #[error("wrong URL")]
    Url,
    #[error("too old or from the future")]
    Time,
    #[error("access token hash mismatch")]
    TokenHash,
}

impl ProofError {
    pub fn reason(self) -> &'static str {
        use ProofError::*;
        match self {
            Malformed => "dpop_malformed",
            Type => "dpop_wrong_type",
            Algorithm => "dpop_algorithm",
            Key => "dpop_bad_key",
            Signature => "dpop_bad_signature",
            Method => "dpop_wrong_method",
            Url => "dpop_wrong_url",
            Time => "dpop_stale",
            TokenHash => "dpop_wrong_ath",
        }
    }
}

#[derive(serde::Deserialize)]
struct Claims {
    jti: String,
    htm: String,
    htu: String,
    iat: i64,
    #[serde(default)]
    ath: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
}

/// `base64url(SHA-256(token))`: the `ath` a proof carries for `token`.
pub fn token_hash(token: &str) -> String {
    B64.encode(Sha256::digest(token.as_bytes()))
}

/// Scheme, host, port and path: what `htu` is compared on.
fn target(url: &str) -> Option<(String, String, Option<u16>, String)> {
    let u = url::Url::parse(url).ok()?;
    Some((
        u.scheme().to_owned(),
        u.host_str()?.to_ascii_lowercase(),
        u.port_or_known_default(),
        u.path().to_owned(),
    ))
}

pub fn verify_proof(proof: &str, want: &ProofFor<'_>) -> Result<Proof, ProofError> {
    if proof.len() > MAX_PROOF_LEN || proof.split('.').count() != 3 {
        return Err(ProofError::Malformed);
    }
    // The header is read as JSON first: its shape is checked before any key is built.
    let header_b64 = proof.split('.').next().ok_or(ProofError::Malformed)?;
    let header: Value = B64
        .decode(header_b64)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(ProofError::Malformed)?;
    if header.get("typ").and_then(Value::as_str) != Some("dpop+jwt") {
        return Err(ProofError::Type);
    }
    if header.get("alg").and_then(Value::as_str) != Some("ES256") {
        return Err(ProofError::Algorithm);
    }
    for never in ["jku", "x5u", "x5c", "kid", "crit"] {
        if header.get(never).is_some() {
            return Err(ProofError::Key);
        }
    }
    let jwk_value = header.get("jwk").ok_or(ProofError::Key)?;
    // A private key in the header is a client bug that leaks the key: refuse it.
    if jwk_value.get("d").is_some()
        || jwk_value.get("kty").and_then(Value::as_str) != Some("EC")
        || jwk_value.get("crv").and_then(Value::as_str) != Some("P-256")
    {
        return Err(ProofError::Key);
    }
    let jwk: Jwk = serde_json::from_value(jwk_value.clone()).map_err(|_| ProofError::Key)?;
    let key = DecodingKey::from_jwk(&jwk).map_err(|_| ProofError::Key)?;
    let mut v = Validation::new(Algorithm::ES256);
    v.required_spec_claims.clear();
    v.validate_exp = false;
    v.validate_aud = false;
    let claims = jsonwebtoken::decode::<Claims>(proof, &key, &v)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => ProofError::Signature,
            _ => ProofError::Malformed,
        })?
        .claims;
    if claims.jti.is_empty() || claims.jti.len() > 256 {
        return Err(ProofError::Malformed);
    }
    if claims.htm != want.method {
        return Err(ProofError::Method);
    }
    let named = target(&claims.htu).ok_or(ProofError::Url)?;
    if !want
        .urls
        .iter()
        .any(|u| target(u).is_some_and(|t| t == named))
    {
        return Err(ProofError::Url);
    }
    if claims.iat < want.now - want.window_secs || claims.iat > want.now + MAX_CLOCK_AHEAD_SECS {
        return Err(ProofError::Time);
    }
    if let Some(token) = want.access_token {
        let ok = claims
            .ath
            .as_deref()
            .is_some_and(|ath| crate::secret::constant_time_eq(ath, &token_hash(token)));
        if !ok {
            return Err(ProofError::TokenHash);
        }
    }
    let jkt = jwk
        .thumbprint(ThumbprintHash::SHA256)
        .map_err(|_| ProofError::Key)?;
    Ok(Proof {
        jkt,
        jti: claims.jti,
        nonce: claims.nonce,
    })
}

#[cfg(test)]
mod tests;
