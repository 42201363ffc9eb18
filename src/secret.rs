//! Random identifiers and secret values.
//!
//! Every opaque id or secret that leaves the server carries at least 128 bits from a
//! CSPRNG (ASVS 7.2.3): the operating system's for anything that protects, the
//! thread's (seeded by the operating system) for ids that guard nothing. Secret-bearing types redact themselves in
//! `Debug` so that a stray `tracing::debug!(?x)` cannot leak them.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use std::fmt;

/// `n` bytes from the OS CSPRNG, base64url without padding.
///
/// # Panics
/// If the operating system cannot provide randomness. There is no safe fallback for
/// that: a gateway that cannot draw random numbers must not mint ids or keys.
pub fn random_b64(n: usize) -> String {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).expect("the OS CSPRNG is unavailable");
    URL_SAFE_NO_PAD.encode(buf)
}

/// A new 128-bit identifier (sessions, token ids, users, audit correlation).
pub fn new_id() -> String {
    random_b64(16)
}

/// A new 128-bit identifier that guards nothing (request ids, response and item ids of
/// an answer): from the thread's CSPRNG (ChaCha, seeded and reseeded by the operating
/// system), without a system call for every id — two a request were 2 % of a stateless
/// chat request. Anything that protects (sessions, tokens, keys, thread ids) takes
/// [`new_id`] or [`random_b64`].
pub fn public_id() -> String {
    let bytes: [u8; 16] = rand::random();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// An opaque refresh token: 256 random bits. Only its SHA-256 is ever stored.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshToken(String);

impl RefreshToken {
    pub fn generate() -> Self {
        Self(random_b64(32))
    }

    /// Accepts a presented value only if it has the exact shape we mint (43 base64url
    /// characters); anything else cannot be ours and is not even hashed.
    pub fn parse(raw: &str) -> Option<Self> {
        let ok = raw.len() == 43
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| Self(raw.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The at-rest form. A fast hash is right here: the input has 256 bits of entropy,
    /// so there is nothing for a slow KDF to protect against.
    pub fn hash(&self) -> TokenHash {
        TokenHash(Sha256::digest(self.0.as_bytes()).into())
    }
}

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshToken([redacted])")
    }
}

/// SHA-256 of a refresh token: what the store keys refresh families by.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TokenHash(pub [u8; 32]);

/// Equality of two secret-bearing strings in time independent of where they differ
/// (aws-lc-rs): `state`, `nonce`, DPoP thumbprints and token hashes.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
}

/// A password or other secret string: redacted in `Debug`, zeroed when dropped, and
/// read only through `expose_secret()` (the `secrecy` crate).
pub use secrecy::{ExposeSecret, SecretString};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_are_256_bit_and_redacted() {
        let t = RefreshToken::generate();
        assert_eq!(t.expose().len(), 43);
        assert!(RefreshToken::parse(t.expose()).is_some());
        assert!(!format!("{t:?}").contains(t.expose()));
        assert_ne!(t, RefreshToken::generate());
    }

    #[test]
    fn malformed_refresh_values_are_refused_before_hashing() {
        assert!(RefreshToken::parse("").is_none());
        assert!(RefreshToken::parse(&"a".repeat(42)).is_none());
        assert!(RefreshToken::parse(&format!("{}=", "a".repeat(42))).is_none());
    }

    #[test]
    fn ids_carry_128_bits() {
        assert_eq!(new_id().len(), 22);
    }
}
