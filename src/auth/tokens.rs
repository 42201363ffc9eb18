//! Access tokens: PASETO v4.local (XChaCha20 + BLAKE2b-MAC via pasetors).
//!
//! * The footer carries only the PASERK key id (`kid`), so keys can rotate.
//! * The implicit assertion binds every token to this deployment and to the purpose
//!   "access": a token from another deployment, or any other kind of token we may mint
//!   later, fails authentication even under the same key.
//! * `v4.local.` is the only accepted header: `v4.public`, `v3.*` and JWTs are not
//!   even parsed (there is no algorithm field to confuse).
//! * The token names the user and the session, nothing more: roles and groups live in
//!   the session record that every request checks anyway. A token stays about 560 bytes
//!   whatever the user belongs to (a user in 300 directory groups once got a 6.6 KB
//!   token that every request refused), and it cannot carry access of its own.

use pasetors::claims::Claims;
use pasetors::footer::Footer;
use pasetors::paserk::Id;
use pasetors::token::UntrustedToken;
use pasetors::version4::{LocalToken, V4};
use pasetors::{Local, local};
use std::time::Duration;

use super::jwe;
use super::keys::Keyring;
use crate::config::TokenFormat;

const ISSUER: &str = "palisade";
const TOKEN_TYPE: &str = "access";

/// The identity an access token asserts. Only [`TokenService::verify`] produces one
/// from a token; the session-liveness check turns it into a `Principal`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessClaims {
    pub subject: String,
    pub username: String,
    pub tenant: String,
    pub session_id: String,
    /// DPoP: the thumbprint of the key the token is bound to (`cnf.jkt`, RFC 9449).
    pub jkt: Option<String>,
    /// The service acting for the subject (`act`, RFC 8693 §4.1): a token a service
    /// exchanged for a user's.
    pub actor: Option<ActClaim>,
}

/// The `act` claim: the acting service account, and the API key it authenticated with
/// (revoking that key stops the token).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActClaim {
    pub sub: String,
    pub username: String,
    pub kid: String,
}

/// Why a token was refused. Goes to the audit trail as a fixed reason; the client
/// only ever sees `401 unauthorized`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRejection {
    Missing,
    Malformed,
    UnknownKey,
    Invalid,
    Expired,
    NotYetValid,
    WrongType,
    SessionNotLive,
}

impl TokenRejection {
    pub fn reason(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::UnknownKey => "unknown_key",
            Self::Invalid => "invalid",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongType => "wrong_type",
            Self::SessionNotLive => "session_not_live",
        }
    }
}

pub struct TokenService {
    /// Swapped whole when the keys file changes (a rotation by the CLI or another node).
    keys: std::sync::RwLock<std::sync::Arc<Keyring>>,
    deployment_id: String,
    access_ttl: Duration,
    implicit: Vec<u8>,
    audience: String,
    /// The one format minted and accepted.
    format: TokenFormat,
    /// PASETO tokens already authenticated, by the SHA-256 of their exact text (the
    /// tokens themselves are not kept), with the keys that authenticated them:
    /// decrypting one (base64, XChaCha20, BLAKE2b, JSON) was the largest part of
    /// palisade's own work in a stateless request. Only authentic tokens enter; the
    /// claims are validated again on every use (expiry, audience, type); an entry made
    /// under other keys than the current ones is not used, and a key change clears
    /// them all.
    verified: moka::sync::Cache<[u8; 32], Verified>,
    /// What `iat`, `nbf` and `exp` are minted and checked against.
    clock: std::sync::Arc<dyn crate::timeutil::Clock>,
}

/// A [`TokenService::verified`] entry.
#[derive(Clone)]
struct Verified {
    keys: std::sync::Arc<Keyring>,
    payload: Payload,
}

/// The most authenticated tokens remembered (about 0.5 KiB each): one per active user.
const VERIFIED_TOKENS: u64 = 2_048;

#[derive(Debug, thiserror::Error)]
#[error("token minting failed")]
pub struct MintError;

impl TokenService {
    pub fn new(keys: Keyring, access_ttl: Duration, format: TokenFormat) -> Self {
        let implicit = format!("palisade:{TOKEN_TYPE}:{}", keys.deployment_id).into_bytes();
        let audience = format!("palisade:{}", keys.deployment_id);
        Self {
            deployment_id: keys.deployment_id.clone(),
            keys: std::sync::RwLock::new(std::sync::Arc::new(keys)),
            access_ttl,
            implicit,
            audience,
            format,
            verified: moka::sync::Cache::builder()
                .max_capacity(VERIFIED_TOKENS)
                .time_to_live(access_ttl)
                .build(),
            clock: std::sync::Arc::new(crate::timeutil::SystemClock),
        }
    }

    /// The same service reading the time from `clock`.
    pub fn with_clock(mut self, clock: std::sync::Arc<dyn crate::timeutil::Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn now(&self) -> time::OffsetDateTime {
        crate::timeutil::instant_of(self.clock.now_ms())
    }

    /// A stable pseudonym of `value` for the audit trail (e.g. a username that matches
    /// no account, which may be a password typed in the wrong field): HMAC-SHA-256 under
    /// a key derived from the active token key for this one purpose. It changes when the
    /// keys rotate.
    pub fn pseudonym(&self, value: &str) -> String {
        let digest = self.keyed_digest(b"palisade:audit-pseudonym:v1", value.as_bytes());
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        format!("unknown:{hex}")
    }

    fn keys(&self) -> std::sync::Arc<Keyring> {
        match self.keys.read() {
            Ok(k) => k.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the keys with `fresh` (read from the keys file after a rotation). A file
    /// of another deployment is refused: it would make every live token unverifiable.
    pub fn replace_keys(&self, fresh: Keyring) -> Result<(), &'static str> {
        if fresh.deployment_id != self.deployment_id {
            return Err("the keys file now belongs to another deployment; keeping the loaded keys");
        }
        if let Ok(mut k) = self.keys.write() {
            *k = std::sync::Arc::new(fresh);
        }
        self.verified.invalidate_all();
        Ok(())
    }

    /// The id of the key new tokens are minted with.
    pub fn active_key_id(&self) -> String {
        self.keys().active().0.to_owned()
    }

    /// HMAC-SHA-256 of `data` under a key derived from the active token key for
    /// `purpose` (e.g. the stateless DPoP nonce).
    pub fn keyed_digest(&self, purpose: &[u8], data: &[u8]) -> [u8; 32] {
        use hmac::{Hmac, Mac};
        type H = Hmac<sha2::Sha256>;
        let keys = self.keys();
        let (_, key) = keys.active();
        let Ok(mut kdf) = <H as Mac>::new_from_slice(key.as_bytes()) else {
            return [0; 32];
        };
        kdf.update(purpose);
        let subkey = kdf.finalize().into_bytes();
        let Ok(mut mac) = <H as Mac>::new_from_slice(&subkey) else {
            return [0; 32];
        };
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    /// `payload` sealed for `purpose` under the active key ([`super::sealed`]).
    pub fn seal(&self, purpose: super::sealed::Purpose, payload: &[u8]) -> Option<String> {
        let keys = self.keys();
        let (kid, key) = keys.active();
        super::sealed::seal(key.as_bytes(), kid, purpose, payload)
    }

    /// A value [`Self::seal`] made for `purpose`, under any key still in the keyring.
    pub fn open(&self, purpose: super::sealed::Purpose, sealed: &str) -> Option<Vec<u8>> {
        let keys = self.keys();
        let key = keys.find(super::sealed::key_id(sealed)?)?;
        super::sealed::open(key.as_bytes(), purpose, sealed)
    }

    pub fn access_ttl(&self) -> Duration {
        self.access_ttl
    }

    pub fn mint(&self, c: &AccessClaims) -> Result<String, MintError> {
        if self.format == TokenFormat::Jwe {
            return self.mint_jwe(c);
        }
        use time::format_description::well_known::Rfc3339;
        let now = self.now();
        let ttl = time::Duration::try_from(self.access_ttl).map_err(|_| MintError)?;
        let t = |d: time::OffsetDateTime| d.format(&Rfc3339).map_err(|_| MintError);
        let mut claims = Claims::new().map_err(|_| MintError)?;
        claims.issued_at(&t(now)?).map_err(|_| MintError)?;
        claims.not_before(&t(now)?).map_err(|_| MintError)?;
        claims.expiration(&t(now + ttl)?).map_err(|_| MintError)?;
        claims.issuer(ISSUER).map_err(|_| MintError)?;
        claims.audience(&self.audience).map_err(|_| MintError)?;
        claims.subject(&c.subject).map_err(|_| MintError)?;
        claims
            .token_identifier(&crate::secret::new_id())
            .map_err(|_| MintError)?;
        claims
            .add_additional("typ", TOKEN_TYPE)
            .map_err(|_| MintError)?;
        claims
            .add_additional("tenant", c.tenant.as_str())
            .map_err(|_| MintError)?;
        claims
            .add_additional("username", c.username.as_str())
            .map_err(|_| MintError)?;
        claims
            .add_additional("sid", c.session_id.as_str())
            .map_err(|_| MintError)?;
        if let Some(jkt) = &c.jkt {
            claims
                .add_additional("cnf", serde_json::json!({ "jkt": jkt }))
                .map_err(|_| MintError)?;
        }
        if let Some(act) = &c.actor {
            let act = serde_json::to_value(act).map_err(|_| MintError)?;
            claims.add_additional("act", act).map_err(|_| MintError)?;
        }

        let keys = self.keys();
        let (_, key) = keys.active();
        let mut footer = Footer::new();
        footer.key_id(&Id::from(key));
        local::encrypt(key, &claims, Some(&footer), Some(&self.implicit)).map_err(|_| MintError)
    }

    /// The same claims as the PASETO payload, as a JWE (`dir` + `A256GCM`).
    fn mint_jwe(&self, c: &AccessClaims) -> Result<String, MintError> {
        use time::OffsetDateTime;
        use time::format_description::well_known::Rfc3339;
        let now = self.now();
        let ttl = time::Duration::try_from(self.access_ttl).map_err(|_| MintError)?;
        let t = |d: OffsetDateTime| d.format(&Rfc3339).map_err(|_| MintError);
        let mut payload = serde_json::json!({
            "iss": ISSUER, "aud": self.audience, "sub": c.subject,
            "iat": t(now)?, "nbf": t(now)?, "exp": t(now + ttl)?,
            "jti": crate::secret::new_id(), "typ": TOKEN_TYPE,
            "tenant": c.tenant, "username": c.username, "sid": c.session_id,
        });
        if let Some(jkt) = &c.jkt {
            payload["cnf"] = serde_json::json!({ "jkt": jkt });
        }
        if let Some(act) = &c.actor {
            payload["act"] = serde_json::to_value(act).map_err(|_| MintError)?;
        }
        let keys = self.keys();
        let (kid, key) = keys.active();
        let cek = jwe::derive_key(key.as_bytes()).ok_or(MintError)?;
        jwe::seal(&cek, kid, payload.to_string().as_bytes()).ok_or(MintError)
    }

    fn verify_jwe(&self, token: &str) -> Result<AccessClaims, Rejected> {
        let parsed = jwe::parse(token).map_err(|_| TokenRejection::Malformed)?;
        let keys = self.keys();
        let key = keys.find(&parsed.kid).ok_or(TokenRejection::UnknownKey)?;
        let cek = jwe::derive_key(key.as_bytes()).ok_or(TokenRejection::Invalid)?;
        let plain = jwe::open(&cek, parsed).map_err(|e| match e {
            jwe::JweError::Malformed => TokenRejection::Malformed,
            jwe::JweError::Invalid => TokenRejection::Invalid,
        })?;
        let payload: Payload =
            serde_json::from_slice(&plain).map_err(|_| TokenRejection::Invalid)?;
        payload.validate(&self.audience, self.now())
    }

    pub fn verify(&self, token: &str) -> Result<AccessClaims, Rejected> {
        if self.format == TokenFormat::Jwe {
            return self.verify_jwe(token);
        }
        // Cheap shape checks before any parsing: only our exact header, bounded size.
        if token.len() > 4096 || !token.starts_with("v4.local.") {
            return Err(TokenRejection::Malformed.into());
        }
        let keys = self.keys();
        let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(token.as_bytes()).into();
        if let Some(known) = self.verified.get(&digest)
            && std::sync::Arc::ptr_eq(&known.keys, &keys)
        {
            return known.payload.validate(&self.audience, self.now());
        }
        let untrusted =
            UntrustedToken::<Local, V4>::try_from(token).map_err(|_| TokenRejection::Malformed)?;

        // The footer is authenticated by the tag; reading the kid before verifying only
        // selects which of our own keys to try. Parsed with a typed serde struct rather
        // than pasetors' `Footer`, whose parser compiles a regex on every call (~120 µs).
        let footer = untrusted.untrusted_footer();
        if footer.len() > 256 {
            return Err(TokenRejection::Malformed.into());
        }
        let footer: KeyFooter =
            serde_json::from_slice(footer).map_err(|_| TokenRejection::Malformed)?;
        let kid = footer.kid.as_str();
        let key = keys.find(kid).ok_or(TokenRejection::UnknownKey)?;

        // Authenticate first (the low-level decrypt checks only the tag), then validate
        // the claims ourselves, so that an authentic but expired token can still be
        // attributed to its session in the audit trail.
        let trusted = LocalToken::decrypt(key, &untrusted, None, Some(&self.implicit))
            .map_err(|_| TokenRejection::Invalid)?;
        let payload: Payload =
            serde_json::from_str(trusted.payload()).map_err(|_| TokenRejection::Invalid)?;
        self.verified.insert(
            digest,
            Verified {
                keys: keys.clone(),
                payload: payload.clone(),
            },
        );
        payload.validate(&self.audience, self.now())
    }
}

/// The payload we mint, parsed into a typed struct in one pass. Unknown fields are
/// refused: a token carrying claims we never write is not one of ours.
#[derive(Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    iss: String,
    aud: String,
    sub: String,
    iat: String,
    nbf: String,
    exp: String,
    jti: String,
    typ: String,
    tenant: String,
    username: String,
    sid: String,
    #[serde(default)]
    cnf: Option<Confirmation>,
    #[serde(default)]
    act: Option<ActClaim>,
}

/// RFC 7800 confirmation: the DPoP key a token is bound to.
#[derive(Clone, serde::Deserialize)]
struct Confirmation {
    jkt: String,
}

impl Payload {
    /// Registered-claim checks of PASETO (iss, aud exact; iat/nbf not in the future;
    /// exp in the future; RFC 3339 times), then our own type claim.
    fn validate(self, audience: &str, now: time::OffsetDateTime) -> Result<AccessClaims, Rejected> {
        use time::OffsetDateTime;
        use time::format_description::well_known::Rfc3339;
        if self.iss != ISSUER || self.aud != audience || self.jti.is_empty() {
            return Err(TokenRejection::Invalid.into());
        }
        if self.typ != TOKEN_TYPE {
            return Err(TokenRejection::WrongType.into());
        }
        let parse =
            |t: &str| OffsetDateTime::parse(t, &Rfc3339).map_err(|_| TokenRejection::Invalid);
        let (iat, nbf, exp) = (parse(&self.iat)?, parse(&self.nbf)?, parse(&self.exp)?);
        let why = if exp <= now {
            Some(TokenRejection::Expired)
        } else if nbf > now || iat > now {
            Some(TokenRejection::NotYetValid)
        } else {
            None
        };
        let claims = AccessClaims {
            subject: self.sub,
            username: self.username,
            tenant: self.tenant,
            session_id: self.sid,
            jkt: self.cnf.map(|c| c.jkt),
            actor: self.act,
        };
        match why {
            None => Ok(claims),
            Some(why) => Err(Rejected::attributed(why, claims)),
        }
    }
}

#[derive(serde::Deserialize)]
struct KeyFooter {
    kid: String,
}

/// A refused token, with its claims when it was authentic (expired, not yet valid) so
/// the audit trail can name the session. Never includes the token itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub why: TokenRejection,
    pub claims: Option<Box<AccessClaims>>,
}

impl Rejected {
    fn attributed(why: TokenRejection, claims: AccessClaims) -> Self {
        Self {
            why,
            claims: Some(Box::new(claims)),
        }
    }
}

impl From<TokenRejection> for Rejected {
    fn from(why: TokenRejection) -> Self {
        Self { why, claims: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(dir: &std::path::Path, ttl: Duration) -> TokenService {
        TokenService::new(
            Keyring::load_or_create(&dir.join("keys.json")).unwrap(),
            ttl,
            TokenFormat::Paseto,
        )
    }

    fn claims() -> AccessClaims {
        AccessClaims {
            subject: "u1".into(),
            username: "alice".into(),
            tenant: "acme".into(),
            session_id: "s1".into(),
            jkt: None,
            actor: None,
        }
    }

    #[test]
    fn roundtrip_and_tamper() {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path(), Duration::from_secs(60));
        let t = svc.mint(&claims()).unwrap();
        assert_eq!(svc.verify(&t).unwrap(), claims());

        // Flip one character of the body (not the header).
        let mut bytes = t.clone().into_bytes();
        let i = 20;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(bytes).unwrap();
        assert!(svc.verify(&flipped).is_err());

        // Another deployment's keys.
        let other = tempfile::tempdir().unwrap();
        let svc2 = service(other.path(), Duration::from_secs(60));
        assert!(svc2.verify(&t).is_err());
    }

    #[test]
    fn expired_and_not_yet_valid_are_reported_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let clock = std::sync::Arc::new(crate::timeutil::ManualClock::at(1_800_000_000_000));
        let svc = service(dir.path(), Duration::from_secs(60)).with_clock(clock.clone());
        let t = svc.mint(&claims()).unwrap();
        assert_eq!(svc.verify(&t).unwrap(), claims());
        clock.advance(Duration::from_millis(59_999));
        assert_eq!(svc.verify(&t).unwrap(), claims());
        clock.advance(Duration::from_millis(1));
        assert_eq!(svc.verify(&t).unwrap_err().why, TokenRejection::Expired);
        assert_eq!(svc.verify(&t).unwrap_err().claims, Some(Box::new(claims())));
        // Minted in what is still the future for the verifier.
        clock.set(1_800_000_000_000 - 1_000);
        assert_eq!(svc.verify(&t).unwrap_err().why, TokenRejection::NotYetValid);
    }
}
