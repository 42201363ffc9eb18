use super::*;
use jsonwebtoken::EncodingKey;
use serde_json::json;

/// RFC 9449 §4.1, Figure 2: a proof for `POST https://server.example.com/token`, made at
/// iat 1562262616; and §6.1, Figure 9: the thumbprint of its key.
const RFC_PROOF: &str = "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiItQndDM0VTYzZhY2MybFRjIiwiaHRtIjoiUE9TVCIsImh0dSI6Imh0dHBzOi8vc2VydmVyLmV4YW1wbGUuY29tL3Rva2VuIiwiaWF0IjoxNTYyMjYyNjE2fQ.2-GxA6T8lP4vfrg8v-FdWP0A0zdrj8igiMLvqRMUvwnQg4PtFLbdLXiOSsX0x7NVY-FNyJK70nfbV37xRZT3Lg";
const RFC_JKT: &str = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I";
const RFC_IAT: i64 = 1562262616;

fn rfc_request(now: i64) -> ProofFor<'static> {
    ProofFor {
        method: "POST",
        urls: &["https://server.example.com/token"],
        access_token: None,
        now,
        window_secs: 60,
    }
}

#[test]
fn the_rfc_9449_example_proof_verifies_with_its_published_thumbprint() {
    let p = verify_proof(RFC_PROOF, &rfc_request(RFC_IAT + 10)).unwrap();
    assert_eq!(p.jkt, RFC_JKT);
    assert_eq!(p.jti, "-BwC3ESc6acc2lTc");
    // The same proof for another method or URL, or too late, or from the future.
    let mut w = rfc_request(RFC_IAT);
    w.method = "GET";
    assert_eq!(verify_proof(RFC_PROOF, &w), Err(ProofError::Method));
    let mut w = rfc_request(RFC_IAT);
    w.urls = &["https://server.example.com/resource"];
    assert_eq!(verify_proof(RFC_PROOF, &w), Err(ProofError::Url));
    let mut w = rfc_request(RFC_IAT);
    w.urls = &["https://evil.example.com/token"];
    assert_eq!(verify_proof(RFC_PROOF, &w), Err(ProofError::Url));
    // Query and fragment are not part of htu (RFC 9449 §4.3 point 9).
    let mut w = rfc_request(RFC_IAT);
    w.urls = &["https://server.example.com/token?x=1#f"];
    assert!(verify_proof(RFC_PROOF, &w).is_ok());
    assert_eq!(
        verify_proof(RFC_PROOF, &rfc_request(RFC_IAT + 61)),
        Err(ProofError::Time)
    );
    assert_eq!(
        verify_proof(RFC_PROOF, &rfc_request(RFC_IAT - 6)),
        Err(ProofError::Time)
    );
    // With an access token it needs `ath`, which this token-request proof lacks.
    let mut w = rfc_request(RFC_IAT);
    w.access_token = Some("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU");
    assert_eq!(verify_proof(RFC_PROOF, &w), Err(ProofError::TokenHash));
}

#[test]
fn the_rfc_9449_ath_example() {
    // §7.1, Figure 13: the access token and its hash.
    assert_eq!(
        token_hash("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"),
        "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
    );
}

struct Client {
    key: EncodingKey,
    jwk: Value,
}

fn client() -> Client {
    let key = crate::auth::oidc::tests::ec().enc;
    let jwk =
        serde_json::to_value(Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap()).unwrap();
    Client { key, jwk }
}

impl Client {
    fn proof_with(&self, header: Value, claims: Value) -> String {
        let h = B64.encode(header.to_string());
        let c = B64.encode(claims.to_string());
        let input = format!("{h}.{c}");
        let sig =
            jsonwebtoken::crypto::sign(input.as_bytes(), &self.key, Algorithm::ES256).unwrap();
        format!("{input}.{sig}")
    }

    fn header(&self) -> Value {
        json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk})
    }

    fn claims(&self, now: i64) -> Value {
        json!({"jti": crate::secret::new_id(), "htm": "GET", "htu": "https://chat.example.com/v1/threads", "iat": now})
    }
}

fn api_request(now: i64, token: Option<&'static str>) -> ProofFor<'static> {
    ProofFor {
        method: "GET",
        urls: &["https://chat.example.com/v1/threads"],
        access_token: token,
        now,
        window_secs: 60,
    }
}

#[test]
fn proofs_are_checked_field_by_field() {
    let c = client();
    let now = 1_800_000_000;
    let ok = c.proof_with(c.header(), c.claims(now));
    let p = verify_proof(&ok, &api_request(now, None)).unwrap();
    assert_eq!(p.jkt.len(), 43);
    // ath binds the proof to the token.
    let token = "v4.local.some-token";
    let mut claims = c.claims(now);
    claims["ath"] = json!(token_hash(token));
    let with_ath = c.proof_with(c.header(), claims.clone());
    assert!(verify_proof(&with_ath, &api_request(now, Some(token))).is_ok());
    assert_eq!(
        verify_proof(&with_ath, &api_request(now, Some("v4.local.another"))),
        Err(ProofError::TokenHash)
    );

    let cases: Vec<(&str, Value, Value, ProofError)> = vec![
        (
            "typ JWT",
            json!({"typ": "JWT", "alg": "ES256", "jwk": c.jwk}),
            c.claims(now),
            ProofError::Type,
        ),
        (
            "no typ",
            json!({"alg": "ES256", "jwk": c.jwk}),
            c.claims(now),
            ProofError::Type,
        ),
        (
            "alg none",
            json!({"typ": "dpop+jwt", "alg": "none", "jwk": c.jwk}),
            c.claims(now),
            ProofError::Algorithm,
        ),
        (
            "alg HS256",
            json!({"typ": "dpop+jwt", "alg": "HS256", "jwk": c.jwk}),
            c.claims(now),
            ProofError::Algorithm,
        ),
        (
            "no jwk",
            json!({"typ": "dpop+jwt", "alg": "ES256"}),
            c.claims(now),
            ProofError::Key,
        ),
        (
            "private jwk",
            json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": {"d": "AAAA", "kty": "EC", "crv": "P-256", "x": c.jwk["x"], "y": c.jwk["y"]}}),
            c.claims(now),
            ProofError::Key,
        ),
        (
            "jku",
            json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": c.jwk, "jku": "https://evil.example/jwks"}),
            c.claims(now),
            ProofError::Key,
        ),
        (
            "x5c",
            json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": c.jwk, "x5c": ["MII"]}),
            c.claims(now),
            ProofError::Key,
        ),
        (
            "P-384 key",
            json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": {"kty": "EC", "crv": "P-384", "x": c.jwk["x"], "y": c.jwk["y"]}}),
            c.claims(now),
            ProofError::Key,
        ),
        (
            "no jti",
            c.header(),
            json!({"htm": "GET", "htu": "https://chat.example.com/v1/threads", "iat": now}),
            ProofError::Malformed,
        ),
        (
            "empty jti",
            c.header(),
            json!({"jti": "", "htm": "GET", "htu": "https://chat.example.com/v1/threads", "iat": now}),
            ProofError::Malformed,
        ),
        (
            "POST",
            c.header(),
            json!({"jti": "j", "htm": "POST", "htu": "https://chat.example.com/v1/threads", "iat": now}),
            ProofError::Method,
        ),
        (
            "lowercase method",
            c.header(),
            json!({"jti": "j", "htm": "get", "htu": "https://chat.example.com/v1/threads", "iat": now}),
            ProofError::Method,
        ),
        (
            "other path",
            c.header(),
            json!({"jti": "j", "htm": "GET", "htu": "https://chat.example.com/v1/documents", "iat": now}),
            ProofError::Url,
        ),
        (
            "http",
            c.header(),
            json!({"jti": "j", "htm": "GET", "htu": "http://chat.example.com/v1/threads", "iat": now}),
            ProofError::Url,
        ),
        (
            "other port",
            c.header(),
            json!({"jti": "j", "htm": "GET", "htu": "https://chat.example.com:8443/v1/threads", "iat": now}),
            ProofError::Url,
        ),
        (
            "expired",
            c.header(),
            json!({"jti": "j", "htm": "GET", "htu": "https://chat.example.com/v1/threads", "iat": now - 61}),
            ProofError::Time,
        ),
        (
            "future",
            c.header(),
            json!({"jti": "j", "htm": "GET", "htu": "https://chat.example.com/v1/threads", "iat": now + 30}),
            ProofError::Time,
        ),
    ];
    for (name, header, claims, want) in cases {
        let proof = c.proof_with(header, claims);
        assert_eq!(
            verify_proof(&proof, &api_request(now, None)),
            Err(want),
            "{name}"
        );
    }
    // Another key's signature over this key's header.
    let other = client();
    let forged = {
        let h = B64.encode(c.header().to_string());
        let b = B64.encode(c.claims(now).to_string());
        let input = format!("{h}.{b}");
        let sig =
            jsonwebtoken::crypto::sign(input.as_bytes(), &other.key, Algorithm::ES256).unwrap();
        format!("{input}.{sig}")
    };
    assert_eq!(
        verify_proof(&forged, &api_request(now, None)),
        Err(ProofError::Signature)
    );
    // r = s = 0.
    let zero = format!(
        "{}.{}",
        ok.rsplit_once('.').unwrap().0,
        B64.encode([0u8; 64])
    );
    assert!(verify_proof(&zero, &api_request(now, None)).is_err());
    assert_eq!(
        verify_proof("a.b", &api_request(now, None)),
        Err(ProofError::Malformed)
    );
    assert_eq!(
        verify_proof(&"x".repeat(5000), &api_request(now, None)),
        Err(ProofError::Malformed)
    );
}
