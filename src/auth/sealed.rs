//! Small values palisade hands to a browser and must get back unchanged and unread: the
//! state of a sign-in in flight (`state`, `nonce`, PKCE verifier, where to return).
//!
//! `iv.ciphertext.kid` (base64url; the key id last, as it may itself contain dots): AES-256-GCM (aws-lc-rs) under a key derived from the
//! token key for one purpose (HMAC-SHA-256 with a fixed label), the purpose label as
//! additional data. A value sealed for one purpose cannot be opened for another, nor as
//! an access token; after a key rotation, values sealed under a key still in the keyring
//! open. Freshness is the payload's business (it carries its own expiry).

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};

/// What a sealed value is for; each has its own key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The sign-in cookie of the authorization code flow.
    OidcSignIn,
    /// A device cookie: this browser signed in as this user before.
    Device,
    /// A checked OAuth authorization request, carried by the consent form.
    OAuthRequest,
    /// An OAuth authorization code.
    OAuthCode,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::OidcSignIn => b"palisade:sealed:oidc-sign-in:v1",
            Purpose::Device => b"palisade:sealed:device:v1",
            Purpose::OAuthRequest => b"palisade:sealed:oauth-request:v1",
            Purpose::OAuthCode => b"palisade:sealed:oauth-code:v1",
        }
    }
}

/// The longest sealed value accepted.
pub const MAX_LEN: usize = 4096;

fn aead(token_key: &[u8], purpose: Purpose) -> Option<LessSafeKey> {
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(token_key).ok()?;
    mac.update(purpose.label());
    let key = mac.finalize().into_bytes();
    UnboundKey::new(&AES_256_GCM, &key)
        .ok()
        .map(LessSafeKey::new)
}

pub fn seal(token_key: &[u8], kid: &str, purpose: Purpose, payload: &[u8]) -> Option<String> {
    let mut iv = [0u8; 12];
    getrandom::fill(&mut iv).ok()?;
    let mut data = payload.to_vec();
    aead(token_key, purpose)?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(iv),
            Aad::from(purpose.label()),
            &mut data,
        )
        .ok()?;
    Some(format!("{}.{}.{kid}", B64.encode(iv), B64.encode(&data)))
}

/// The key id a sealed value names (to find its key), if it has our shape.
pub fn key_id(sealed: &str) -> Option<&str> {
    if sealed.len() > MAX_LEN {
        return None;
    }
    sealed.splitn(3, '.').nth(2).filter(|k| !k.is_empty())
}

pub fn open(token_key: &[u8], purpose: Purpose, sealed: &str) -> Option<Vec<u8>> {
    if sealed.len() > MAX_LEN {
        return None;
    }
    let mut parts = sealed.splitn(3, '.');
    let (iv, ct, _kid) = (parts.next()?, parts.next()?, parts.next()?);
    let iv: [u8; 12] = B64.decode(iv).ok()?.try_into().ok()?;
    let mut data = B64.decode(ct).ok()?;
    let plain = aead(token_key, purpose)?
        .open_in_place(
            Nonce::assume_unique_for_key(iv),
            Aad::from(purpose.label()),
            &mut data,
        )
        .ok()?;
    Some(plain.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_changes_and_other_keys() {
        let key = [7u8; 32];
        let s = seal(&key, "k4.lid.abc", Purpose::OidcSignIn, b"hello").unwrap();
        assert_eq!(key_id(&s), Some("k4.lid.abc"));
        assert_eq!(
            open(&key, Purpose::OidcSignIn, &s).as_deref(),
            Some(&b"hello"[..])
        );
        assert!(open(&[8u8; 32], Purpose::OidcSignIn, &s).is_none());
        // Any flipped character of the ciphertext fails the tag.
        let mut parts: Vec<String> = s.splitn(3, '.').map(str::to_owned).collect();
        let mut t: Vec<u8> = parts[1].bytes().collect();
        t[0] = if t[0] == b'A' { b'B' } else { b'A' };
        parts[1] = String::from_utf8(t).unwrap();
        assert!(open(&key, Purpose::OidcSignIn, &parts.join(".")).is_none());
        assert!(open(&key, Purpose::OidcSignIn, "AAAA.k1").is_none());
        assert!(open(&key, Purpose::OidcSignIn, "").is_none());
    }
}
