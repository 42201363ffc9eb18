//! Sender-constrained tokens (DPoP, RFC 9449), attacked from outside: a token bound to a
//! client key, copied and replayed without a proof, with another key's proof, a proof
//! for another method or URL, a replayed or expired proof, a wrong `ath`; a refresh
//! cookie stolen without the key; `dpop = "required"` refusing bearer logins; the
//! server nonce challenge.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::*;

/// The public origin the test servers run with: proofs name URLs on it.
const ORIGIN: &str = "http://localhost:8080";

pub(crate) struct DpopKey {
    key: EncodingKey,
    jwk: Value,
}

impl DpopKey {
    pub(crate) fn new() -> DpopKey {
        let key = ec_key();
        let jwk =
            serde_json::to_value(Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap()).unwrap();
        DpopKey { key, jwk }
    }

    fn sign(&self, claims: &Value) -> String {
        let header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk});
        let input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let sig =
            jsonwebtoken::crypto::sign(input.as_bytes(), &self.key, Algorithm::ES256).unwrap();
        format!("{input}.{sig}")
    }

    /// A fresh proof for `method path`, bound to `token` if given.
    /// The RFC 7638 thumbprint of the public key (`jkt`).
    pub(crate) fn thumbprint(&self) -> String {
        let j = &self.jwk;
        let canonical = format!(
            r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
            j["crv"].as_str().unwrap(),
            j["x"].as_str().unwrap(),
            j["y"].as_str().unwrap()
        );
        B64.encode(Sha256::digest(canonical.as_bytes()))
    }

    pub(crate) fn proof(&self, method: &str, path: &str, token: Option<&str>) -> String {
        self.proof_at(method, path, token, unix_now(), None)
    }

    fn proof_at(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        iat: i64,
        nonce: Option<&str>,
    ) -> String {
        let mut c = json!({"jti": random_id(), "htm": method, "htu": format!("{ORIGIN}{path}"), "iat": iat});
        if let Some(t) = token {
            c["ath"] = json!(B64.encode(Sha256::digest(t.as_bytes())));
        }
        if let Some(n) = nonce {
            c["nonce"] = json!(n);
        }
        self.sign(&c)
    }
}

async fn login_with(
    s: &Server,
    user: &str,
    password: &str,
    proof: Option<&str>,
) -> reqwest::Response {
    let mut req = s
        .http
        .post(s.url("/auth/login"))
        .json(&json!({"username": user, "password": password}));
    if let Some(p) = proof {
        req = req.header("DPoP", p);
    }
    req.send().await.unwrap()
}

async fn get(s: &Server, path: &str, auth: &str, proof: Option<&str>) -> reqwest::Response {
    let mut req = s.http.get(s.url(path)).header("authorization", auth);
    if let Some(p) = proof {
        req = req.header("DPoP", p);
    }
    req.send().await.unwrap()
}

async fn me(s: &Server, auth: &str, proof: Option<&str>) -> reqwest::Response {
    get(s, "/auth/me", auth, proof).await
}

/// 401, the DPoP challenge with `error`, and the same code in the body.
async fn assert_dpop_refusal(resp: reqwest::Response, error: &str, what: &str) {
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{what}");
    let challenge = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.starts_with("DPoP ") && challenge.contains(&format!("error=\"{error}\"")),
        "{what}: {challenge}"
    );
    let (_, code) = error_code(resp).await;
    assert_eq!(code, error, "{what}");
}

async fn refresh_with_proof(s: &Server, cookie: &str, proof: Option<&str>) -> reqwest::Response {
    let mut req = s
        .http
        .post(s.url("/auth/refresh"))
        .header("cookie", format!("__Host-palisade_refresh={cookie}"));
    if let Some(p) = proof {
        req = req.header("DPoP", p);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn a_dpop_bound_token_is_useless_without_its_key() {
    let s = Server::in_process();
    let acme = seed_acme(&s);
    let key = DpopKey::new();
    let resp = login_with(
        &s,
        "alice",
        &acme.alice,
        Some(&key.proof("POST", "/auth/login", None)),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let cookie = cookie_value(&set_cookie(&resp).unwrap());
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["token_type"], "DPoP");
    let token = body["access_token"].as_str().unwrap().to_owned();
    let dpop = format!("DPoP {token}");

    // The page's own call: a fresh proof by the key, for this request and token.
    let good = key.proof("GET", "/auth/me", Some(&token));
    assert_eq!(me(&s, &dpop, Some(&good)).await.status(), StatusCode::OK);

    // The token copied out and replayed.
    assert_dpop_refusal(
        me(&s, &format!("Bearer {token}"), None).await,
        "invalid_token",
        "as a bearer token",
    )
    .await;
    assert_dpop_refusal(me(&s, &dpop, None).await, "invalid_dpop_proof", "no proof").await;
    let thief = DpopKey::new();
    assert_dpop_refusal(
        me(
            &s,
            &dpop,
            Some(&thief.proof("GET", "/auth/me", Some(&token))),
        )
        .await,
        "invalid_dpop_proof",
        "another key's proof",
    )
    .await;
    assert_dpop_refusal(
        me(
            &s,
            &dpop,
            Some(&key.proof("POST", "/auth/me", Some(&token))),
        )
        .await,
        "invalid_dpop_proof",
        "a proof for another method",
    )
    .await;
    assert_dpop_refusal(
        me(
            &s,
            &dpop,
            Some(&key.proof("GET", "/v1/threads", Some(&token))),
        )
        .await,
        "invalid_dpop_proof",
        "a proof for another URL",
    )
    .await;
    assert_dpop_refusal(
        me(&s, &dpop, Some(&good)).await,
        "invalid_dpop_proof",
        "a replayed proof",
    )
    .await;
    assert_dpop_refusal(
        me(
            &s,
            &dpop,
            Some(&key.proof_at("GET", "/auth/me", Some(&token), unix_now() - 120, None)),
        )
        .await,
        "invalid_dpop_proof",
        "an expired proof",
    )
    .await;
    assert_dpop_refusal(
        me(&s, &dpop, Some(&key.proof("GET", "/auth/me", None))).await,
        "invalid_dpop_proof",
        "a proof without ath",
    )
    .await;
    assert_dpop_refusal(
        me(
            &s,
            &dpop,
            Some(&key.proof("GET", "/auth/me", Some("another-token"))),
        )
        .await,
        "invalid_dpop_proof",
        "a proof for another token",
    )
    .await;
    // The API behind the same door: a thread list needs the proof too.
    let bearer = format!("Bearer {token}");
    let r = get(&s, "/v1/threads", &bearer, None).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let proof = key.proof("GET", "/v1/threads", Some(&token));
    let r = get(&s, "/v1/threads", &dpop, Some(&proof)).await;
    assert_eq!(r.status(), StatusCode::OK);
    // The refusals are audited with their reasons.
    let reasons: Vec<String> = s
        .audit_cli("token_rejected")
        .iter()
        .filter_map(|e| e["reason"].as_str().map(str::to_owned))
        .collect();
    for want in [
        "dpop_bound_token_as_bearer",
        "dpop_missing_proof",
        "dpop_other_key",
        "dpop_wrong_method",
        "dpop_wrong_url",
        "dpop_replayed",
        "dpop_stale",
        "dpop_wrong_ath",
    ] {
        assert!(
            reasons.iter().any(|r| r == want),
            "{want} not in {reasons:?}"
        );
    }

    // The refresh family is bound too: with the key's proof it rotates (and the new
    // token is bound); the cookie stolen and presented with another key (or none) is a
    // theft: refused, and the session ends.
    let r = refresh_with_proof(&s, &cookie, Some(&key.proof("POST", "/auth/refresh", None))).await;
    assert_eq!(r.status(), StatusCode::OK);
    let cookie2 = cookie_value(&set_cookie(&r).unwrap());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["token_type"], "DPoP");
    let token2 = body["access_token"].as_str().unwrap().to_owned();
    assert_dpop_refusal(
        refresh_with_proof(
            &s,
            &cookie2,
            Some(&thief.proof("POST", "/auth/refresh", None)),
        )
        .await,
        "invalid_dpop_proof",
        "a stolen refresh cookie with the thief's key",
    )
    .await;
    assert_eq!(
        me(
            &s,
            &format!("DPoP {token2}"),
            Some(&key.proof("GET", "/auth/me", Some(&token2)))
        )
        .await
        .status(),
        StatusCode::UNAUTHORIZED,
        "the session survived a refresh without its key"
    );

    // An SDK client without DPoP keeps plain bearer tokens (dpop = "optional").
    let plain = s.login("hannah", &acme.hannah).await;
    assert_eq!(
        s.get("/auth/me", &plain.access).await.status(),
        StatusCode::OK
    );
    // ...but may not present its unbound token under the DPoP scheme.
    assert_dpop_refusal(
        me(
            &s,
            &format!("DPoP {}", plain.access),
            Some(&key.proof("GET", "/auth/me", Some(&plain.access))),
        )
        .await,
        "invalid_token",
        "an unbound token as DPoP",
    )
    .await;
}

#[tokio::test]
async fn dpop_required_refuses_bearer_logins_and_tokens() {
    let s = Server::in_process_with(&[("PALISADE_TOKENS__DPOP", "required")]);
    let acme = seed_acme(&s);
    assert_dpop_refusal(
        login_with(&s, "alice", &acme.alice, None).await,
        "invalid_dpop_proof",
        "a bearer-only login",
    )
    .await;
    let key = DpopKey::new();
    let resp = login_with(
        &s,
        "alice",
        &acme.alice,
        Some(&key.proof("POST", "/auth/login", None)),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let cookie = cookie_value(&set_cookie(&resp).unwrap());
    let token = resp.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        me(
            &s,
            &format!("DPoP {token}"),
            Some(&key.proof("GET", "/auth/me", Some(&token)))
        )
        .await
        .status(),
        StatusCode::OK
    );
    // A refresh without a proof is refused, and it ends the session (as the contract
    // says): a session's cookie without its key is a stolen cookie. Neither the cookie
    // (now with a proof) nor the access token works any more.
    assert_dpop_refusal(
        refresh_with_proof(&s, &cookie, None).await,
        "invalid_dpop_proof",
        "a bearer refresh",
    )
    .await;
    let r = refresh_with_proof(&s, &cookie, Some(&key.proof("POST", "/auth/refresh", None))).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        me(
            &s,
            &format!("DPoP {token}"),
            Some(&key.proof("GET", "/auth/me", Some(&token)))
        )
        .await
        .status(),
        StatusCode::UNAUTHORIZED
    );
    let theft = s.audit_cli("refresh_reuse_detected");
    assert!(
        theft
            .iter()
            .any(|e| e["reason"] == "refresh_without_dpop_key"),
        "{theft:?}"
    );
}

#[tokio::test]
async fn the_dpop_nonce_challenge() {
    let s = Server::in_process_with(&[("PALISADE_TOKENS__DPOP_NONCE", "true")]);
    let acme = seed_acme(&s);
    let key = DpopKey::new();
    let resp = login_with(
        &s,
        "alice",
        &acme.alice,
        Some(&key.proof("POST", "/auth/login", None)),
    )
    .await;
    let nonce = resp.headers()["dpop-nonce"].to_str().unwrap().to_owned();
    assert_dpop_refusal(resp, "use_dpop_nonce", "a proof without the server nonce").await;
    let forged = format!(
        "{}.AAAAAAAAAAAAAAAAAAAAAA",
        nonce.split('.').next().unwrap()
    );
    let resp = login_with(
        &s,
        "alice",
        &acme.alice,
        Some(&key.proof_at("POST", "/auth/login", None, unix_now(), Some(&forged))),
    )
    .await;
    assert_dpop_refusal(resp, "use_dpop_nonce", "a made-up nonce").await;
    let resp = login_with(
        &s,
        "alice",
        &acme.alice,
        Some(&key.proof_at("POST", "/auth/login", None, unix_now(), Some(&nonce))),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
}
