//! One issuer's signing keys (JWKS), cached.
//!
//! * Fetched only from the configured URL (or the issuer's discovery document), over
//!   HTTPS — plain HTTP only to a loopback host. Never from anything a token names: `jku`,
//!   `x5u`, `jwk` and `x5c` are refused by the verifier before a key is looked up.
//! * A `kid` is only a lookup key. An unknown one triggers at most one fetch per
//!   `min_refetch` (concurrent requests share it), so a flood of made-up kids costs the
//!   IdP one request per interval.
//! * Only signature keys of the families palisade accepts are kept (RSA, EC P-256,
//!   Ed25519); symmetric (`oct`) keys are ignored, so no token can be checked as HMAC.
//! * A fetch that fails keeps the last good key set.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse,
};

use crate::config::https_or_loopback;

/// The key families palisade verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFamily {
    Rsa,
    P256,
    Ed25519,
}

pub struct VerifyKey {
    pub key: DecodingKey,
    pub family: KeyFamily,
    /// The `alg` the JWK is restricted to, if it says.
    pub alg: Option<KeyAlgorithm>,
}

#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, Arc<VerifyKey>>,
}

pub struct Jwks {
    http: reqwest::Client,
    /// The JWKS URL, or the issuer (whose discovery document names it).
    source: Source,
    keys: RwLock<Arc<KeySet>>,
    /// When the last fetch started; guards and serialises refetches.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    min_refetch: Duration,
}

enum Source {
    Url(String),
    Discovery { issuer: String },
}

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("the JWKS could not be fetched")]
    Fetch,
    #[error("the JWKS URL is not https (or loopback http)")]
    Insecure,
}

impl Jwks {
    pub fn new(
        issuer: &str,
        jwks_url: Option<&str>,
        min_refetch: Duration,
        http: reqwest::Client,
    ) -> Self {
        Self {
            http,
            source: match jwks_url {
                Some(u) => Source::Url(u.to_owned()),
                None => Source::Discovery {
                    issuer: issuer.trim_end_matches('/').to_owned(),
                },
            },
            keys: RwLock::new(Arc::new(KeySet::default())),
            last_fetch: tokio::sync::Mutex::new(None),
            min_refetch,
        }
    }

    fn cached(&self, kid: &str) -> Option<Arc<VerifyKey>> {
        let set = self.keys.read().map(|k| k.clone()).ok()?;
        set.by_kid.get(kid).cloned()
    }

    /// The key `kid`: from the cache, or after one refetch if it is unknown and the last
    /// fetch is older than `min_refetch`.
    pub async fn key(&self, kid: &str) -> Option<Arc<VerifyKey>> {
        if let Some(k) = self.cached(kid) {
            return Some(k);
        }
        let mut last = self.last_fetch.lock().await;
        // Someone may have fetched while we waited for the lock.
        if let Some(k) = self.cached(kid) {
            return Some(k);
        }
        if last.is_some_and(|t| t.elapsed() < self.min_refetch) {
            return None;
        }
        *last = Some(Instant::now());
        if let Err(e) = self.fetch().await {
            tracing::warn!(error = %e, "JWKS fetch failed; keeping the last key set");
        }
        self.cached(kid)
    }

    /// Fetches now (background refresh), whatever the interval.
    pub async fn refresh(&self) -> Result<(), JwksError> {
        let mut last = self.last_fetch.lock().await;
        *last = Some(Instant::now());
        self.fetch().await
    }

    async fn jwks_url(&self) -> Result<String, JwksError> {
        match &self.source {
            Source::Url(u) => Ok(u.clone()),
            Source::Discovery { issuer } => {
                #[derive(serde::Deserialize)]
                struct Discovery {
                    jwks_uri: String,
                }
                let url = format!("{issuer}/.well-known/openid-configuration");
                let d: Discovery = self.get_json(&url).await?;
                Ok(d.jwks_uri)
            }
        }
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, JwksError> {
        if !https_or_loopback(url) {
            return Err(JwksError::Insecure);
        }
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|_| JwksError::Fetch)?;
        if !resp.status().is_success() {
            return Err(JwksError::Fetch);
        }
        let bytes = resp.bytes().await.map_err(|_| JwksError::Fetch)?;
        if bytes.len() > MAX_JWKS_BYTES {
            return Err(JwksError::Fetch);
        }
        serde_json::from_slice(&bytes).map_err(|_| JwksError::Fetch)
    }

    async fn fetch(&self) -> Result<(), JwksError> {
        let url = self.jwks_url().await?;
        let set: JwkSet = self.get_json(&url).await?;
        let by_kid = set
            .keys
            .iter()
            .filter_map(|jwk| {
                let key = import(jwk)?;
                Some((jwk.common.key_id.clone()?, Arc::new(key)))
            })
            .collect();
        if let Ok(mut k) = self.keys.write() {
            *k = Arc::new(KeySet { by_kid });
        }
        Ok(())
    }
}

/// A JWK as a verification key, if it is one palisade uses: a signature key (no `use`,
/// or `sig`) of a family palisade verifies (RSA, EC P-256, Ed25519). Symmetric (`oct`)
/// keys and other curves are never imported, so nothing can be checked as HMAC.
pub fn import(jwk: &Jwk) -> Option<VerifyKey> {
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return None;
    }
    let family = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => KeyFamily::Rsa,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => KeyFamily::P256,
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            KeyFamily::Ed25519
        }
        _ => return None,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(VerifyKey {
        key,
        family,
        alg: jwk.common.key_algorithm,
    })
}

/// The largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 256 * 1024;
