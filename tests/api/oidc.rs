//! Sign-in with an external IdP's ID token (`POST /auth/oidc/exchange`), end to end: the
//! IdP's JWKS is served over HTTP on 127.0.0.1 by the test, tokens are signed with keys
//! openssl makes (the IdP's, and an attacker's), and the palisade session that results
//! must behave exactly like a password session.

use std::sync::{Arc, Mutex};

use base64::Engine;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

struct Idp {
    key: EncodingKey,
    kid: String,
    issuer: String,
    jwks_url: String,
    _keys: Arc<Mutex<Vec<Jwk>>>,
}

async fn idp() -> Idp {
    let key = ec_key();
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap();
    jwk.common.key_id = Some("idp-1".into());
    let keys = Arc::new(Mutex::new(vec![jwk]));
    let k = keys.clone();
    let app = axum::Router::new().route(
        "/realms/acme/jwks",
        axum::routing::get(move || {
            let k = k.clone();
            async move {
                axum::Json(JwkSet {
                    keys: k.lock().unwrap().clone(),
                })
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Idp {
        key,
        kid: "idp-1".into(),
        issuer: format!("http://{addr}/realms/acme"),
        jwks_url: format!("http://{addr}/realms/acme/jwks"),
        _keys: keys,
    }
}

impl Idp {
    fn env(&self) -> String {
        self.env_with(false)
    }

    fn env_with(&self, accept_bearer: bool) -> String {
        format!(
            r#"[{{issuer="{}",audiences=["palisade"],jwks_url="{}",algorithms=["ES256"],roles_claim="realm_access.roles",groups_claim="groups",tenant="acme",role_map={{hrstaff="hr",staff="employee"}},accept_bearer={accept_bearer}}}]"#,
            self.issuer, self.jwks_url
        )
    }

    /// An access token (RFC 9068 `at+jwt`).
    fn access_token(&self, claims: &Value) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(self.kid.clone());
        h.typ = Some("at+jwt".into());
        jsonwebtoken::encode(&h, claims, &self.key).unwrap()
    }

    fn claims(&self, sub: &str, roles: &[&str], groups: Vec<String>) -> Value {
        let now = crate::support::unix_now();
        json!({"iss": self.issuer, "aud": "palisade", "sub": sub, "exp": now + 300, "iat": now,
               "preferred_username": "hannah.idp", "realm_access": {"roles": roles}, "groups": groups})
    }

    fn id_token(&self, claims: &Value) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&h, claims, &self.key).unwrap()
    }
}

async fn exchange(s: &Server, token: &str) -> reqwest::Response {
    s.post_json("/auth/oidc/exchange", &json!({"id_token": token}))
        .await
}

#[tokio::test]
async fn an_id_token_becomes_a_session_like_a_password_login() {
    let idp = idp().await;
    let s = Server::in_process_with(&[("PALISADE_OIDC__ISSUERS", &idp.env())]);
    let acme = seed_acme(&s);
    let admin = s.login("adam", &acme.adam).await;
    let hr_doc = s
        .post_document(&admin.access,
            &json!({"title": "Salary bands", "text": "Confidential salary bands CANARY-HR-7731.", "acl": {"roles": ["hr"]}}),
        )
        .await;
    assert_eq!(hr_doc.status(), StatusCode::CREATED);

    let token = idp.id_token(&idp.claims("kc-user-42", &["hrstaff", "staff", "admin"], vec![]));
    let resp = exchange(&s, &token).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let sess = Session::from_response(resp).await;
    let me: Value = s.get("/auth/me", &sess.access).await.json().await.unwrap();
    assert_eq!(me["tenant"], "acme");
    // Mapped roles only: the IdP's "admin" is not palisade's.
    assert_eq!(me["roles"], json!(["employee", "hr"]));
    assert!(me["username"].as_str().unwrap().starts_with("oidc:"));
    // The mapped roles scope retrieval.
    let found = search_text(&s, &sess.access, "salary bands").await;
    assert!(found.contains("CANARY-HR-7731"), "{found}");
    // The refresh cookie rotates like any other; logout ends the session.
    let r = s.refresh(&sess.cookie).await;
    assert_eq!(r.status(), StatusCode::OK);
    let again = Session::from_response(r).await;
    // The rotated cookie is spent (inside the reuse grace window: 409, as for any
    // session).
    assert_eq!(s.refresh(&sess.cookie).await.status(), StatusCode::CONFLICT);
    let out = s.post_auth("/auth/logout", &again.access, &json!({})).await;
    assert!(out.status().is_success());
    assert_eq!(
        s.get("/auth/me", &again.access).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // The same (issuer, sub) is the same account; a role removed at the IdP is gone at
    // the next sign-in, and with it the HR document.
    let token = idp.id_token(&idp.claims("kc-user-42", &["staff"], vec![]));
    let sess2 = Session::from_response(exchange(&s, &token).await).await;
    let me2: Value = s.get("/auth/me", &sess2.access).await.json().await.unwrap();
    assert_eq!(me2["subject"], me["subject"]);
    assert_eq!(me2["roles"], json!(["employee"]));
    let found = search_text(&s, &sess2.access, "salary bands").await;
    assert!(!found.contains("CANARY-HR-7731"));

    // The account has no password: a password login with its name fails.
    let name = me["username"].as_str().unwrap();
    assert_eq!(
        s.login_raw(name, "!external-identity").await.status(),
        StatusCode::UNAUTHORIZED
    );

    // A user in 300 groups signs in; palisade's own token stays small.
    let groups: Vec<String> = (0..300).map(|i| format!("team-{i}")).collect();
    let token = idp.id_token(&idp.claims("kc-user-300", &["staff"], groups));
    assert!(token.len() > 4000);
    let big = Session::from_response(exchange(&s, &token).await).await;
    assert!(big.access.len() < 1024, "{}", big.access.len());
    let me3: Value = s.get("/auth/me", &big.access).await.json().await.unwrap();
    assert_eq!(me3["groups"].as_array().unwrap().len(), 300);
}

#[tokio::test]
async fn forged_id_tokens_are_refused_and_create_nothing() {
    let idp = idp().await;
    let s = Server::in_process_with(&[("PALISADE_OIDC__ISSUERS", &idp.env())]);
    let acme = seed_acme(&s);
    let admin = s.login("adam", &acme.adam).await;
    let users_before: Value = s
        .get("/admin/users", &admin.access)
        .await
        .json()
        .await
        .unwrap();
    let claims = idp.claims("mallory", &["hrstaff"], vec![]);
    let attacker = ec_key();
    let b64 = |v: &Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
    };
    let mut forged: Vec<(&str, String)> = vec![
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "kid": "idp-1"})),
                b64(&claims)
            ),
        ),
        ("attacker's key, the IdP's kid", {
            let mut h = Header::new(Algorithm::ES256);
            h.kid = Some("idp-1".into());
            jsonwebtoken::encode(&h, &claims, &attacker).unwrap()
        }),
        ("garbage", "not.a.token".into()),
    ];
    let mut expired = claims.clone();
    expired["exp"] = json!(unix_now() - 600);
    forged.push(("expired", idp.id_token(&expired)));
    let mut wrong_aud = claims.clone();
    wrong_aud["aud"] = json!("another-app");
    forged.push(("wrong audience", idp.id_token(&wrong_aud)));
    let mut access = claims.clone();
    access["typ"] = json!("Bearer");
    forged.push(("an access token", idp.id_token(&access)));
    for (name, token) in forged {
        let (status, code) = error_code(exchange(&s, &token).await).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::UNAUTHORIZED, "unauthorized"),
            "{name}"
        );
    }
    let users_after: Value = s
        .get("/admin/users", &admin.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        users_before, users_after,
        "a refused token created an account"
    );
    // Refusals are audited (aggregated per kind).
    let events = s.audit_cli("token_rejected");
    assert!(
        events
            .iter()
            .any(|e| e["reason"].as_str().is_some_and(|r| r.starts_with("idp_"))),
        "{events:?}"
    );
}

/// `accept_bearer = true`: the IdP's access tokens work directly on the API, as the
/// account of (issuer, sub) with the token's own roles; ID tokens, forgeries and
/// disabled accounts do not.
#[tokio::test]
async fn idp_access_tokens_work_as_bearer_tokens_where_allowed() {
    let idp = idp().await;
    let s = Server::in_process_with(&[("PALISADE_OIDC__ISSUERS", &idp.env_with(true))]);
    let acme = seed_acme(&s);
    let admin = s.login("adam", &acme.adam).await;
    let at = idp.access_token(&idp.claims("kc-bearer-7", &["hrstaff"], vec!["hr".into()]));
    let me: Value = s.get("/auth/me", &at).await.json().await.unwrap();
    assert_eq!(me["tenant"], "acme");
    assert_eq!(me["roles"], json!(["hr"]));
    assert!(me["session_id"].as_str().unwrap().starts_with("idp:"));
    // The same (issuer, sub) through the exchange is the same account.
    let id_token = idp.id_token(&idp.claims("kc-bearer-7", &["hrstaff"], vec![]));
    let sess = Session::from_response(exchange(&s, &id_token).await).await;
    let me2: Value = s.get("/auth/me", &sess.access).await.json().await.unwrap();
    assert_eq!(me2["subject"], me["subject"]);
    // Threads work with it, and belong to the account.
    let t = s.new_thread(&at, "from an IdP token").await;
    let listed: Value = s
        .get("/v1/threads", &sess.access)
        .await
        .json()
        .await
        .unwrap();
    assert!(listed.to_string().contains(&t));

    // A user in 300 groups carries a large IdP token: accepted up to
    // `oidc.max_token_bytes` (32 KiB by default), refused past it.
    let groups: Vec<String> = (0..300).map(|i| format!("department-team-{i}")).collect();
    let big = idp.access_token(&idp.claims("kc-bearer-300", &["staff"], groups));
    assert!(big.len() > 8 * 1024, "{}", big.len());
    let me_big: Value = s.get("/auth/me", &big).await.json().await.unwrap();
    assert_eq!(me_big["groups"].as_array().unwrap().len(), 300);
    let groups: Vec<String> = (0..1500).map(|i| format!("department-team-{i}")).collect();
    let huge = idp.access_token(&idp.claims("kc-bearer-1500", &["staff"], groups));
    assert!(huge.len() > 32 * 1024, "{}", huge.len());
    assert_eq!(
        s.get("/auth/me", &huge).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // An ID token is not a bearer token; an attacker's signature is not the IdP's.
    assert_eq!(
        s.get("/auth/me", &id_token).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let forged = {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some("idp-1".into());
        h.typ = Some("at+jwt".into());
        jsonwebtoken::encode(
            &h,
            &idp.claims("kc-bearer-7", &["hrstaff"], vec![]),
            &ec_key(),
        )
        .unwrap()
    };
    assert_eq!(
        s.get("/auth/me", &forged).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // Disabling the account ends its IdP tokens too.
    let uid = me["subject"].as_str().unwrap();
    let r = s
        .http
        .patch(s.url(&format!("/admin/users/{uid}")))
        .bearer_auth(&admin.access)
        .json(&json!({"disabled": true}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(
        s.get("/auth/me", &at).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // Palisade's own tokens are unaffected.
    assert_eq!(
        s.get("/auth/me", &admin.access).await.status(),
        StatusCode::OK
    );

    // Where DPoP is required, an IdP access token is a bearer token like any other.
    let strict = Server::in_process_with(&[
        ("PALISADE_OIDC__ISSUERS", &idp.env_with(true)),
        ("PALISADE_TOKENS__DPOP", "required"),
    ]);
    let at = idp.access_token(&idp.claims("kc-bearer-8", &["staff"], vec![]));
    let (status, code) = error_code(strict.get("/auth/me", &at).await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNAUTHORIZED, "invalid_token")
    );
}
