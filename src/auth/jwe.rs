//! JWE compact serialization for palisade's own access tokens (`tokens.format = "jwe"`),
//! for deployments whose policy names JWE rather than PASETO.
//!
//! Exactly one form is minted and accepted: `alg: "dir"` (the key is shared, no key
//! wrapping) with `enc: "A256GCM"`. The protected header is parsed into a struct that
//! refuses every other field, so `zip` (compression before encryption), PBES2 parameters
//! (`p2s`, `p2c`), ephemeral keys (`epk`), `jku`/`jwk` and any other algorithm or
//! encryption are refused before a key is touched; the encrypted-key part must be
//! empty; the IV is 96 bits and the tag 128. AES-256-GCM is aws-lc-rs's (nothing
//! cryptographic is implemented here): the protected header is the additional
//! authenticated data, as RFC 7516 specifies, so a changed header fails the tag.
//!
//! The key is derived from the token key for this one purpose (HMAC-SHA-256 with a fixed
//! label), so the same key material is never used by two constructions.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

/// The protected header, exactly.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JweHeader {
    alg: String,
    enc: String,
    kid: String,
    typ: String,
}

const ALG: &str = "dir";
const ENC: &str = "A256GCM";
const TYP: &str = "at+jwt";
/// The longest token accepted (ours are about 500 bytes).
pub const MAX_LEN: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JweError {
    /// Not our shape: wrong part count or encoding, another algorithm or encryption, an
    /// extra header field, a wrapped key, a bad IV or tag length.
    Malformed,
    /// Authentic-looking but the tag does not verify (changed, or another key).
    Invalid,
}

/// The content-encryption key for JWE, derived from a token key.
pub fn derive_key(token_key: &[u8]) -> Option<[u8; 32]> {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(token_key).ok()?;
    mac.update(b"palisade:access-token:jwe:dir:A256GCM:v1");
    Some(mac.finalize().into_bytes().into())
}

fn aead(key: &[u8; 32]) -> Option<LessSafeKey> {
    UnboundKey::new(&AES_256_GCM, key)
        .ok()
        .map(LessSafeKey::new)
}

/// Encrypts `payload` under `key` (id `kid`).
pub fn seal(key: &[u8; 32], kid: &str, payload: &[u8]) -> Option<String> {
    let header = serde_json::to_vec(&JweHeader {
        alg: ALG.into(),
        enc: ENC.into(),
        kid: kid.into(),
        typ: TYP.into(),
    })
    .ok()?;
    let header_b64 = B64.encode(header);
    let mut iv = [0u8; 12];
    getrandom::fill(&mut iv).ok()?;
    let mut data = payload.to_vec();
    let tag = aead(key)?
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(iv),
            Aad::from(header_b64.as_bytes()),
            &mut data,
        )
        .ok()?;
    Some(format!(
        "{header_b64}..{}.{}.{}",
        B64.encode(iv),
        B64.encode(&data),
        B64.encode(tag.as_ref())
    ))
}

/// A token split into its parts, its header checked: what [`open`] needs, parsed once.
pub struct Parsed<'a> {
    /// The protected header as sent: the AAD.
    header_b64: &'a str,
    pub kid: String,
    iv: [u8; 12],
    ciphertext: Vec<u8>,
    tag: Vec<u8>,
}

/// Splits and checks `token`: five parts, the exact header, an empty encrypted key, a
/// 96-bit IV and a 128-bit tag. Nothing is decrypted.
pub fn parse(token: &str) -> Result<Parsed<'_>, JweError> {
    let parts: Vec<&str> = token.split('.').collect();
    if token.len() > MAX_LEN || parts.len() != 5 || !parts[1].is_empty() {
        return Err(JweError::Malformed);
    }
    let header = B64.decode(parts[0]).map_err(|_| JweError::Malformed)?;
    let h: JweHeader = serde_json::from_slice(&header).map_err(|_| JweError::Malformed)?;
    if h.alg != ALG || h.enc != ENC || h.typ != TYP || h.kid.is_empty() {
        return Err(JweError::Malformed);
    }
    let iv: [u8; 12] = B64
        .decode(parts[2])
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or(JweError::Malformed)?;
    let ciphertext = B64.decode(parts[3]).map_err(|_| JweError::Malformed)?;
    let tag = B64.decode(parts[4]).map_err(|_| JweError::Malformed)?;
    if tag.len() != 16 {
        return Err(JweError::Malformed);
    }
    Ok(Parsed {
        header_b64: parts[0],
        kid: h.kid,
        iv,
        ciphertext,
        tag,
    })
}

/// Decrypts and authenticates a parsed token under `key`.
pub fn open(key: &[u8; 32], token: Parsed<'_>) -> Result<Vec<u8>, JweError> {
    let mut data = token.ciphertext;
    data.extend_from_slice(&token.tag);
    let plain = aead(key)
        .ok_or(JweError::Invalid)?
        .open_in_place(
            Nonce::assume_unique_for_key(token.iv),
            Aad::from(token.header_b64.as_bytes()),
            &mut data,
        )
        .map_err(|_| JweError::Invalid)?;
    Ok(plain.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KEY: [u8; 32] = [7u8; 32];

    fn open_str(key: &[u8; 32], token: &str) -> Result<Vec<u8>, JweError> {
        open(key, parse(token)?)
    }

    fn with_header(token: &str, header: serde_json::Value) -> String {
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[0] = B64.encode(header.to_string());
        parts.join(".")
    }

    #[test]
    fn round_trip_and_every_other_form_is_refused() {
        let t = seal(&KEY, "k1", b"{\"sub\":\"x\"}").unwrap();
        assert_eq!(t.split('.').count(), 5);
        assert_eq!(open_str(&KEY, &t).unwrap(), b"{\"sub\":\"x\"}");
        // Another key: the tag fails.
        assert_eq!(open_str(&[8u8; 32], &t), Err(JweError::Invalid));

        let base = json!({"alg": "dir", "enc": "A256GCM", "kid": "k1", "typ": "at+jwt"});
        let variant = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut h = base.clone();
            f(&mut h);
            with_header(&t, h)
        };
        let refused = [
            ("alg RSA-OAEP", variant(&|h| h["alg"] = json!("RSA-OAEP"))),
            ("alg A256KW", variant(&|h| h["alg"] = json!("A256KW"))),
            ("alg none", variant(&|h| h["alg"] = json!("none"))),
            (
                "PBES2",
                variant(&|h| {
                    h["alg"] = json!("PBES2-HS256+A128KW");
                    h["p2s"] = json!("c2FsdA");
                    h["p2c"] = json!(1_000_000_000u64);
                }),
            ),
            ("enc A128GCM", variant(&|h| h["enc"] = json!("A128GCM"))),
            ("enc CBC", variant(&|h| h["enc"] = json!("A256CBC-HS512"))),
            ("zip", variant(&|h| h["zip"] = json!("DEF"))),
            (
                "jku",
                variant(&|h| h["jku"] = json!("http://127.0.0.1:1/k")),
            ),
            ("typ", variant(&|h| h["typ"] = json!("JWT"))),
        ];
        for (name, token) in refused {
            assert_eq!(open_str(&KEY, &token), Err(JweError::Malformed), "{name}");
        }
        // The same header with its fields reordered is a different AAD: the tag fails.
        let mut p: Vec<String> = t.split('.').map(str::to_owned).collect();
        p[0] = B64.encode(r#"{"enc":"A256GCM","alg":"dir","kid":"k1","typ":"at+jwt"}"#);
        assert_eq!(open_str(&KEY, &p.join(".")), Err(JweError::Invalid));

        let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
        // A modified tag, a modified ciphertext, a wrapped key, a short IV.
        let flip = |s: &str| {
            let mut b = B64.decode(s).unwrap();
            b[0] ^= 1;
            B64.encode(b)
        };
        let mut tag = parts.clone();
        tag[4] = flip(&parts[4]);
        assert_eq!(open_str(&KEY, &tag.join(".")), Err(JweError::Invalid));
        let mut ct = parts.clone();
        ct[3] = flip(&parts[3]);
        assert_eq!(open_str(&KEY, &ct.join(".")), Err(JweError::Invalid));
        parts[1] = B64.encode([1u8; 32]);
        assert_eq!(open_str(&KEY, &parts.join(".")), Err(JweError::Malformed));
        let mut iv: Vec<String> = t.split('.').map(str::to_owned).collect();
        iv[2] = B64.encode([0u8; 8]);
        assert_eq!(open_str(&KEY, &iv.join(".")), Err(JweError::Malformed));
        assert_eq!(open_str(&KEY, "a.b.c"), Err(JweError::Malformed));
    }
}
