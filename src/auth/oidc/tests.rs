//! The IdP-token verifier against an attack corpus. Keys are made by `openssl`; the JWKS
//! is served over real HTTP on 127.0.0.1 by a small server that counts its fetches and
//! can rotate keys; forged tokens are built here with the attacker's keys.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::*;
use crate::config::{IssuerConfig, JwsAlgorithm, OidcConfig};

const ISS_A: &str = "http://127.0.0.1/realms/acme";
const ISS_B: &str = "http://127.0.0.1/realms/other";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A private key made by openssl, as an encoding key and its public JWK.
pub(crate) struct Key {
    pub(crate) enc: EncodingKey,
    pem: Vec<u8>,
    alg: Algorithm,
}

fn openssl_key(args: &[&str], alg: Algorithm) -> Key {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key.pem");
    let ok = std::process::Command::new("openssl")
        .arg("genpkey")
        .args(args)
        .arg("-out")
        .arg(&path)
        .status()
        .expect("openssl")
        .success();
    assert!(ok);
    let pem = std::fs::read(&path).unwrap();
    let enc = match alg {
        Algorithm::RS256 | Algorithm::PS256 => EncodingKey::from_rsa_pem(&pem),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
        _ => EncodingKey::from_ed_pem(&pem),
    }
    .unwrap();
    Key { enc, pem, alg }
}

fn rsa() -> Key {
    openssl_key(
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        Algorithm::RS256,
    )
}
pub(crate) fn ec() -> Key {
    openssl_key(
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        Algorithm::ES256,
    )
}
fn ed() -> Key {
    openssl_key(&["-algorithm", "ED25519"], Algorithm::EdDSA)
}

impl Key {
    fn jwk(&self, kid: &str) -> Jwk {
        let mut j = Jwk::from_encoding_key(&self.enc, self.alg).unwrap();
        j.common.key_id = Some(kid.into());
        j.common.key_algorithm = None;
        j
    }

    fn sign(&self, alg: Algorithm, kid: &str, claims: &Value) -> String {
        let mut h = Header::new(alg);
        h.kid = Some(kid.into());
        jsonwebtoken::encode(&h, claims, &self.enc).unwrap()
    }

    fn public_pem(&self) -> String {
        let out = std::process::Command::new("openssl")
            .args(["pkey", "-pubout"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(&self.pem)?;
                c.wait_with_output()
            })
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    }
}

/// A JWKS endpoint on 127.0.0.1 that counts fetches and whose keys can be swapped.
struct JwksServer {
    url: String,
    keys: Arc<Mutex<Vec<Jwk>>>,
    fetches: Arc<AtomicUsize>,
}

async fn jwks_server(keys: Vec<Jwk>) -> JwksServer {
    let keys = Arc::new(Mutex::new(keys));
    let fetches = Arc::new(AtomicUsize::new(0));
    let (k, f) = (keys.clone(), fetches.clone());
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            let (k, f) = (k.clone(), f.clone());
            async move {
                f.fetch_add(1, Ordering::SeqCst);
                let set = JwkSet {
                    keys: k.lock().unwrap().clone(),
                };
                axum::Json(set)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // The discovery document, for issuers configured without jwks_url.
    let base = format!("http://{addr}");
    let discovery = json!({"issuer": base, "jwks_uri": format!("{base}/jwks")});
    let app = app.route(
        "/.well-known/openid-configuration",
        axum::routing::get(move || {
            let d = discovery.clone();
            async move { axum::Json(d) }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    JwksServer {
        url: format!("http://{addr}/jwks"),
        keys,
        fetches,
    }
}

fn issuer(iss: &str, jwks_url: &str, algs: &[JwsAlgorithm]) -> IssuerConfig {
    IssuerConfig {
        issuer: iss.into(),
        audiences: vec!["palisade".into()],
        jwks_url: Some(jwks_url.into()),
        algorithms: algs.to_vec(),
        roles_claim: Some("realm_access.roles".into()),
        groups_claim: Some("groups".into()),
        tenant: Some("acme".into()),
        tenant_claim: None,
        role_map: [
            ("hr-staff".to_string(), "hr".to_string()),
            ("staff".into(), "employee".into()),
        ]
        .into_iter()
        .collect(),
        accept_bearer: false,
        leeway: Duration::from_secs(30),
        ..IssuerConfig::default()
    }
}

fn verifier(issuers: Vec<IssuerConfig>, min_refetch: Duration) -> OidcVerifier {
    OidcVerifier::new(&OidcConfig {
        issuers,
        jwks_min_refetch: min_refetch,
        ..OidcConfig::default()
    })
    .unwrap()
}

fn now() -> i64 {
    crate::timeutil::now_ms() / 1000
}

fn id_claims(iss: &str) -> Value {
    json!({"iss": iss, "aud": "palisade", "sub": "user-123", "exp": now() + 300, "iat": now(),
           "nonce": "n-1", "preferred_username": "hannah",
           "realm_access": {"roles": ["hr-staff", "staff", "admin"]}, "groups": ["/hr", "x y"]})
}

fn access_claims(iss: &str) -> Value {
    let mut c = id_claims(iss);
    c["typ"] = json!("Bearer");
    c
}

/// A token with this header and payload and a given signature part.
fn raw(header: &Value, payload: &Value, sig: &str) -> String {
    format!(
        "{}.{}.{sig}",
        b64(header.to_string().as_bytes()),
        b64(payload.to_string().as_bytes())
    )
}

#[tokio::test]
async fn genuine_tokens_of_every_family_verify_and_map_claims() {
    let (r, e, d) = (rsa(), ec(), ed());
    let p = rsa();
    let srv = jwks_server(vec![r.jwk("r1"), e.jwk("e1"), d.jwk("d1"), p.jwk("p1")]).await;
    let v = verifier(
        vec![issuer(
            ISS_A,
            &srv.url,
            &[
                JwsAlgorithm::RS256,
                JwsAlgorithm::PS256,
                JwsAlgorithm::ES256,
                JwsAlgorithm::EdDSA,
            ],
        )],
        Duration::from_secs(60),
    );
    for (key, alg, kid) in [
        (&r, Algorithm::RS256, "r1"),
        (&p, Algorithm::PS256, "p1"),
        (&e, Algorithm::ES256, "e1"),
        (&d, Algorithm::EdDSA, "d1"),
    ] {
        let id = v
            .verify(&key.sign(alg, kid, &id_claims(ISS_A)), TokenUse::IdToken)
            .await
            .unwrap_or_else(|err| panic!("{alg:?}: {err:?}"));
        assert_eq!(id.subject, "user-123");
        assert_eq!(id.tenant, "acme");
        // Mapped roles only: the IdP's "admin" is not palisade's admin.
        assert_eq!(id.roles, ["employee", "hr"]);
        assert_eq!(id.groups, ["hr"]);
        assert_eq!(id.username.as_deref(), Some("hannah"));
        assert_eq!(id.nonce.as_deref(), Some("n-1"));
    }
    // One fetch served all four keys.
    assert_eq!(srv.fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_attack_corpus_is_refused() {
    let good = rsa();
    let e = ec();
    let attacker = rsa();
    // A key whose JWK pins RS256: a PS256 token under it is refused, though both are RSA.
    let pinned = rsa();
    let mut pinned_jwk = pinned.jwk("pin");
    pinned_jwk.common.key_algorithm = Some(jsonwebtoken::jwk::KeyAlgorithm::RS256);
    let srv = jwks_server(vec![good.jwk("k1"), e.jwk("e1"), pinned_jwk]).await;
    let other = rsa();
    let srv_b = jwks_server(vec![other.jwk("b1")]).await;
    let v = verifier(
        vec![
            issuer(
                ISS_A,
                &srv.url,
                &[
                    JwsAlgorithm::RS256,
                    JwsAlgorithm::PS256,
                    JwsAlgorithm::ES256,
                ],
            ),
            issuer(ISS_B, &srv_b.url, &[JwsAlgorithm::RS256]),
        ],
        Duration::from_secs(3600),
    );
    let claims = id_claims(ISS_A);
    let genuine = good.sign(Algorithm::RS256, "k1", &claims);
    let sig = genuine.rsplit('.').next().unwrap().to_owned();
    assert!(v.verify(&genuine, TokenUse::IdToken).await.is_ok());

    let mut cases: Vec<(&str, String, OidcRejection)> = Vec::new();
    for none in ["none", "None", "NONE", "nOnE"] {
        cases.push((
            "alg none",
            raw(
                &json!({"alg": none, "kid": "k1", "typ": "JWT"}),
                &claims,
                "",
            ),
            OidcRejection::Malformed,
        ));
    }
    // HS256 keyed with the issuer's RSA public key (algorithm confusion), and with "".
    let pubkey = good.public_pem();
    for secret in [pubkey.as_bytes(), b"".as_slice()] {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("k1".into());
        let t = jsonwebtoken::encode(&h, &claims, &EncodingKey::from_secret(secret)).unwrap();
        cases.push(("HS256 confusion", t, OidcRejection::AlgorithmNotAllowed));
    }
    let header = json!({"alg": "RS256", "kid": "k1", "typ": "JWT"});
    cases.push((
        "blank signature",
        raw(&header, &claims, ""),
        OidcRejection::Signature,
    ));
    cases.push((
        "null signature",
        raw(&header, &claims, "AAAA"),
        OidcRejection::Signature,
    ));
    // The genuine signature over a changed payload.
    let mut richer = claims.clone();
    richer["realm_access"]["roles"] = json!(["hr-staff", "staff", "admin", "exec"]);
    cases.push((
        "payload swap",
        raw(&header, &richer, &sig),
        OidcRejection::Signature,
    ));
    for kid in [
        "../../../../etc/passwd",
        "' OR '1'='1' --",
        "$(id)`id`;rm -rf /",
        "k1\0",
    ] {
        cases.push((
            "hostile kid",
            attacker.sign(Algorithm::RS256, kid, &claims),
            OidcRejection::UnknownKey,
        ));
    }
    // The attacker's own key smuggled in the header (jwk, jku, x5u, x5c).
    let smuggled = serde_json::to_value(attacker.jwk("k1")).unwrap();
    for (field, value) in [
        ("jwk", smuggled),
        ("jku", json!("http://127.0.0.1:1/evil.json")),
        ("x5u", json!("http://127.0.0.1:1/evil.pem")),
        (
            "x5c",
            json!(["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]),
        ),
    ] {
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some("k1".into());
        let mut hv = serde_json::to_value(&h).unwrap();
        hv[field] = value;
        let signing_input = format!(
            "{}.{}",
            b64(hv.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let s =
            jsonwebtoken::crypto::sign(signing_input.as_bytes(), &attacker.enc, Algorithm::RS256)
                .unwrap();
        cases.push((
            "embedded key",
            format!("{signing_input}.{s}"),
            OidcRejection::EmbeddedKey,
        ));
    }
    // ECDSA r = s = 0 ("psychic signature").
    cases.push((
        "psychic signature",
        raw(
            &json!({"alg": "ES256", "kid": "e1"}),
            &claims,
            &b64(&[0u8; 64]),
        ),
        OidcRejection::Signature,
    ));
    // An ES256 header checked against the RSA key (family confusion).
    cases.push((
        "family confusion",
        raw(&json!({"alg": "ES256", "kid": "k1"}), &claims, &sig),
        OidcRejection::KeyMismatch,
    ));
    cases.push((
        "JWK alg pin",
        pinned.sign(Algorithm::PS256, "pin", &claims),
        OidcRejection::KeyMismatch,
    ));
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims.clone();
        f(&mut c);
        good.sign(Algorithm::RS256, "k1", &c)
    };
    cases.push((
        "expired",
        with(&|c| c["exp"] = json!(now() - 120)),
        OidcRejection::Expired,
    ));
    cases.push((
        "not yet valid",
        with(&|c| c["nbf"] = json!(now() + 600)),
        OidcRejection::NotYetValid,
    ));
    cases.push((
        "wrong aud",
        with(&|c| c["aud"] = json!("someone-else")),
        OidcRejection::Audience,
    ));
    cases.push((
        "unknown iss",
        with(&|c| c["iss"] = json!("http://127.0.0.1/realms/evil")),
        OidcRejection::UnknownIssuer,
    ));
    cases.push((
        "missing sub",
        with(&|c| {
            c.as_object_mut().unwrap().remove("sub");
        }),
        OidcRejection::Claims,
    ));
    cases.push((
        "missing exp",
        with(&|c| {
            c.as_object_mut().unwrap().remove("exp");
        }),
        OidcRejection::Claims,
    ));
    cases.push((
        "access token as ID token",
        with(&|c| c["typ"] = json!("Bearer")),
        OidcRejection::TokenType,
    ));
    // Issuer B's key, claiming issuer A (B's kid is not in A's JWKS).
    cases.push((
        "cross-issuer key",
        other.sign(Algorithm::RS256, "b1", &claims),
        OidcRejection::UnknownKey,
    ));
    cases.push((
        "JWE shape",
        format!("{genuine}.x.y"),
        OidcRejection::Malformed,
    ));
    cases.push(("oversized", "a".repeat(40_000), OidcRejection::TooLarge));

    for (name, token, want) in cases {
        assert_eq!(
            v.verify(&token, TokenUse::IdToken).await,
            Err(want),
            "{name}"
        );
    }
    // An ID token where an access token is required, and the reverse.
    assert_eq!(
        v.verify(&genuine, TokenUse::AccessToken).await,
        Err(OidcRejection::TokenType)
    );
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some("k1".into());
    h.typ = Some("at+jwt".into());
    let at = jsonwebtoken::encode(&h, &claims, &good.enc).unwrap();
    assert!(v.verify(&at, TokenUse::AccessToken).await.is_ok());
    assert_eq!(
        v.verify(&at, TokenUse::IdToken).await,
        Err(OidcRejection::TokenType)
    );
    let bearer = good.sign(Algorithm::RS256, "k1", &access_claims(ISS_A));
    assert!(v.verify(&bearer, TokenUse::AccessToken).await.is_ok());
    // Every hostile kid above cost at most one JWKS fetch (min refetch: an hour).
    assert!(
        srv.fetches.load(Ordering::SeqCst) <= 2,
        "{}",
        srv.fetches.load(Ordering::SeqCst)
    );
}

#[tokio::test]
async fn a_rotation_drops_old_keys_and_fetches_a_new_kid_once() {
    let (old, new) = (ec(), ec());
    let srv = jwks_server(vec![old.jwk("2026-01")]).await;
    let v = verifier(
        vec![issuer(ISS_A, &srv.url, &[JwsAlgorithm::ES256])],
        Duration::from_millis(300),
    );
    let claims = id_claims(ISS_A);
    let old_token = old.sign(Algorithm::ES256, "2026-01", &claims);
    assert!(v.verify(&old_token, TokenUse::IdToken).await.is_ok());
    assert_eq!(srv.fetches.load(Ordering::SeqCst), 1);

    // The IdP rotates: the old kid is gone, a new one signs.
    *srv.keys.lock().unwrap() = vec![new.jwk("2026-02")];
    tokio::time::sleep(Duration::from_millis(350)).await;
    let new_token = new.sign(Algorithm::ES256, "2026-02", &claims);
    // Twenty concurrent requests with the new kid: one fetch between them.
    let results =
        futures_util::future::join_all((0..20).map(|_| v.verify(&new_token, TokenUse::IdToken)))
            .await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(srv.fetches.load(Ordering::SeqCst), 2);
    // The old key is no longer trusted.
    assert_eq!(
        v.verify(&old_token, TokenUse::IdToken).await,
        Err(OidcRejection::UnknownKey)
    );
    // Made-up kids in a burst: no more than one fetch per interval.
    for i in 0..50 {
        let t = new.sign(Algorithm::ES256, &format!("made-up-{i}"), &claims);
        assert_eq!(
            v.verify(&t, TokenUse::IdToken).await,
            Err(OidcRejection::UnknownKey)
        );
    }
    assert!(srv.fetches.load(Ordering::SeqCst) <= 3);
}

#[tokio::test]
async fn keys_are_found_through_discovery_when_no_jwks_url_is_set() {
    let k = ec();
    let srv = jwks_server(vec![k.jwk("d1")]).await;
    let base = srv.url.trim_end_matches("/jwks").to_owned();
    let mut cfg = issuer(&base, &srv.url, &[JwsAlgorithm::ES256]);
    cfg.jwks_url = None;
    let v = verifier(vec![cfg], Duration::from_secs(60));
    let token = k.sign(Algorithm::ES256, "d1", &id_claims(&base));
    assert!(v.verify(&token, TokenUse::IdToken).await.is_ok());
    assert_eq!(srv.fetches.load(Ordering::SeqCst), 1);
}

#[test]
fn http_jwks_is_allowed_only_on_loopback() {
    use crate::config::https_or_loopback;
    assert!(https_or_loopback("https://idp.example.com/jwks"));
    assert!(https_or_loopback("http://127.0.0.1:8080/jwks"));
    assert!(https_or_loopback("http://localhost/jwks"));
    assert!(!https_or_loopback("http://idp.example.com/jwks"));
    assert!(!https_or_loopback("http://10.0.0.1/jwks"));
    assert!(!https_or_loopback("file:///etc/passwd"));
}
