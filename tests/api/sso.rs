//! Sign-in through a real OpenID provider (panva's `oidc-provider`, started from
//! `tests/oidc/provider.mjs`): the authorization code flow with PKCE, `state` and `nonce`,
//! driven by a scripted browser-less client through the provider's login and consent
//! forms — and every way an attacker bends it: a forged `state`, a callback without the
//! browser's flow cookie, a replayed callback, a replayed `state`/`nonce` with a fresh
//! code, a stolen code injected into another flow (wrong `code_verifier`), a `nonce`
//! swapped at the IdP, a tampered cookie, an IdP error, a mixed-up issuer, open redirects.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::{Value, json};

use crate::support::*;

const REDIRECT_URI: &str = "http://localhost:8080/auth/oidc/callback";
const CLIENT_SECRET: &str = "palisade-test-client-secret-0123456789";

/// The provider process; stopped when dropped.
struct OpenIdProvider {
    child: Child,
    issuer: String,
    /// Held open: the provider must not write into a closed pipe.
    _stdout: BufReader<std::process::ChildStdout>,
}

impl OpenIdProvider {
    fn start() -> OpenIdProvider {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc");
        assert!(
            dir.join("node_modules/oidc-provider").exists(),
            "oidc-provider is not installed: run `npm ci --prefix tests/oidc` (scripts/test.sh does)"
        );
        let mut child = Command::new("node")
            .arg(dir.join("provider.mjs"))
            .env("OIDC_REDIRECT_URI", REDIRECT_URI)
            .env("OIDC_CLIENT_SECRET", CLIENT_SECRET)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node is on the machine");
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut line).unwrap();
        let v: Value = serde_json::from_str(&line).expect("the provider's ready line");
        OpenIdProvider {
            child,
            issuer: v["issuer"].as_str().unwrap().to_owned(),
            _stdout: stdout,
        }
    }

    /// The palisade issuer config for client `client_id`.
    fn issuer_env(&self, client_id: &str, alg: &str) -> String {
        format!(
            r#"[{{issuer="{iss}",name="acme-sso",audiences=["{client_id}"],algorithms=["{alg}"],client_id="{client_id}",client_secret_env="PALISADE_TEST_OIDC_SECRET",redirect_uri="{REDIRECT_URI}",scopes=["palisade"],roles_claim="roles",groups_claim="groups",tenant="acme",role_map={{hrstaff="hr",staff="employee"}}}}]"#,
            iss = self.issuer
        )
    }

    async fn set_account(&self, id: &str, roles: &[&str], groups: Vec<String>) {
        let r = reqwest::Client::new()
            .put(format!("{}/test/accounts/{id}", self.issuer))
            .json(&json!({"roles": roles, "groups": groups}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    }
}

impl Drop for OpenIdProvider {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sso_server(op: &OpenIdProvider, client_id: &str, alg: &str) -> Server {
    Server::start_with(&[
        ("PALISADE_OIDC__ISSUERS", &op.issuer_env(client_id, alg)),
        ("PALISADE_TEST_OIDC_SECRET", CLIENT_SECRET),
    ])
}

/// A browser without a browser: no automatic redirects, cookies kept per origin.
struct Agent {
    http: reqwest::Client,
    idp_cookies: BTreeMap<String, String>,
}

/// A flow started at palisade: the IdP URL and the sealed flow cookie.
struct Started {
    authorize_url: String,
    cookie: String,
}

impl Agent {
    fn new() -> Agent {
        Agent {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            idp_cookies: BTreeMap::new(),
        }
    }

    async fn start(&self, s: &Server, return_to: &str) -> Started {
        let r = self
            .http
            .get(s.url("/auth/oidc/login"))
            .query(&[("provider", "acme-sso"), ("return_to", return_to)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let cookie = r
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .find(|c| c.starts_with("__Host-palisade_oidc="))
            .expect("the flow cookie");
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"));
        Started {
            authorize_url: r.headers()[LOCATION].to_str().unwrap().to_owned(),
            cookie: cookie_value(cookie),
        }
    }

    fn keep_cookies(&mut self, r: &reqwest::Response) {
        for c in r.headers().get_all(SET_COOKIE) {
            let c = c.to_str().unwrap();
            let pair = c.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() || c.contains("expires=Thu, 01 Jan 1970") {
                self.idp_cookies.remove(name);
            } else {
                self.idp_cookies.insert(name.to_owned(), value.to_owned());
            }
        }
    }

    fn cookie_header(&self) -> String {
        self.idp_cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Follows the IdP from `url` through its login and consent forms, as `account`,
    /// until it redirects to palisade's callback; returns the callback's query string.
    async fn at_idp(&mut self, op: &OpenIdProvider, url: &str, account: &str) -> String {
        let mut next = url.to_owned();
        for _ in 0..20 {
            if let Some(query) = next.strip_prefix(&format!("{REDIRECT_URI}?")) {
                return query.to_owned();
            }
            let abs = if next.starts_with('/') {
                format!("{}{next}", op.issuer)
            } else {
                next.clone()
            };
            let r = self
                .http
                .get(&abs)
                .header(COOKIE, self.cookie_header())
                .send()
                .await
                .unwrap();
            self.keep_cookies(&r);
            if r.status().is_redirection() {
                next = r.headers()[LOCATION].to_str().unwrap().to_owned();
                continue;
            }
            assert_eq!(r.status(), StatusCode::OK, "{abs}");
            let html = r.text().await.unwrap();
            let action = html
                .split("action=\"")
                .nth(1)
                .and_then(|t| t.split('"').next())
                .expect("a form")
                .to_owned();
            let form: Vec<(&str, &str)> = if html.contains(r#"value="login""#) {
                vec![("prompt", "login"), ("login", account), ("password", "any")]
            } else {
                vec![("prompt", "consent")]
            };
            let action = if action.starts_with('/') {
                format!("{}{action}", op.issuer)
            } else {
                action
            };
            let r = self
                .http
                .post(action)
                .header(COOKIE, self.cookie_header())
                .form(&form)
                .send()
                .await
                .unwrap();
            self.keep_cookies(&r);
            assert!(r.status().is_redirection(), "{}", r.status());
            next = r.headers()[LOCATION].to_str().unwrap().to_owned();
        }
        panic!("the IdP never sent the browser back");
    }
}

/// The callback, as the browser would make it: the IdP's query and the flow cookie.
async fn callback(s: &Server, query: &str, cookie: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}?{query}", s.url("/auth/oidc/callback")));
    if let Some(c) = cookie {
        req = req.header(COOKIE, format!("theme=dark; __Host-palisade_oidc={c}"));
    }
    req.send().await.unwrap()
}

fn set_cookies(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// The refresh cookie a successful callback set.
fn refresh_cookie_of(r: &reqwest::Response) -> Option<String> {
    set_cookies(r)
        .iter()
        .find(|c| c.starts_with("__Host-palisade_refresh=") && !c.contains("Max-Age=0"))
        .map(|c| cookie_value(c))
}

/// A full sign-in as `account`: the session it ends in (through `/auth/refresh`).
async fn sign_in(s: &Server, op: &OpenIdProvider, account: &str) -> Session {
    let mut agent = Agent::new();
    let started = agent.start(s, "/chat?t=1").await;
    let query = agent.at_idp(op, &started.authorize_url, account).await;
    let r = callback(s, &query, Some(&started.cookie)).await;
    assert_eq!(
        r.status(),
        StatusCode::SEE_OTHER,
        "{:?} {:?}",
        s.audit_cli("login_failed"),
        s.audit_cli("token_rejected")
    );
    assert_eq!(r.headers()[LOCATION], "/chat?t=1");
    let cookies = set_cookies(&r);
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("__Host-palisade_oidc=;") && c.contains("Max-Age=0")),
        "the flow cookie is cleared: {cookies:?}"
    );
    let refresh = refresh_cookie_of(&r).expect("a refresh cookie");
    let r = s.refresh(&refresh).await;
    assert_eq!(r.status(), StatusCode::OK);
    Session::from_response(r).await
}

async fn user_count(s: &Server, admin: &str) -> usize {
    let users: Value = s.get("/admin/users", admin).await.json().await.unwrap();
    users["users"]
        .as_array()
        .or(users.as_array())
        .expect("a user list")
        .len()
}

#[tokio::test]
async fn sso_sign_in_ends_in_a_session_like_a_password_login() {
    let op = OpenIdProvider::start();
    let s = sso_server(&op, "palisade-es", "ES256");
    let acme = seed_acme(&s);
    let admin = s.login("adam", &acme.adam).await;
    let hr_doc = s
        .post_document(&admin.access,
            &json!({"title": "Salary bands", "text": "Confidential salary bands CANARY-SSO-5521.", "acl": {"roles": ["hr"]}}),
        )
        .await;
    assert_eq!(hr_doc.status(), StatusCode::CREATED);

    // The login redirect carries PKCE (S256), state and nonce, and no token.
    let agent = Agent::new();
    let started = agent.start(&s, "/").await;
    let url = reqwest::Url::parse(&started.authorize_url).unwrap();
    let q: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["client_id"], "palisade-es");
    assert!(q["state"].len() >= 43 && q["nonce"].len() >= 43 && q["code_challenge"].len() == 43);
    assert!(url.as_str().starts_with(&op.issuer));

    op.set_account(
        "hilde",
        &["hrstaff", "staff", "admin"],
        vec!["/people".into()],
    )
    .await;
    let sess = sign_in(&s, &op, "hilde").await;
    let me: Value = s.get("/auth/me", &sess.access).await.json().await.unwrap();
    assert_eq!(me["tenant"], "acme");
    // Mapped roles only: the IdP's "admin" is not palisade's.
    assert_eq!(me["roles"], json!(["employee", "hr"]));
    assert_eq!(me["groups"], json!(["people"]));
    assert!(me["username"].as_str().unwrap().starts_with("oidc:"));
    // Retrieval is scoped by the mapped roles.
    let found = search_text(&s, &sess.access, "salary bands").await;
    assert!(found.contains("CANARY-SSO-5521"), "{found}");
    // Threads bind to the account like any other.
    let thread = s.new_thread(&sess.access, "sso thread").await;
    let alice = s.login("alice", &acme.alice).await;
    assert_eq!(
        s.get(&format!("/v1/threads/{thread}"), &alice.access)
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.get(&format!("/v1/threads/{thread}"), &sess.access)
            .await
            .status(),
        StatusCode::OK
    );
    // Refresh rotation and logout as for a password session.
    let r = s.refresh(&sess.cookie).await;
    assert_eq!(r.status(), StatusCode::OK);
    let rotated = Session::from_response(r).await;
    assert_eq!(s.refresh(&sess.cookie).await.status(), StatusCode::CONFLICT);
    let out = s
        .post_auth("/auth/logout", &rotated.access, &json!({}))
        .await;
    assert!(out.status().is_success());
    assert_eq!(
        s.get("/auth/me", &rotated.access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let events = s.audit_cli("login_succeeded");
    assert!(
        events.iter().any(|e| e["reason"] == "oidc_sign_in"),
        "{events:?}"
    );

    // A role removed at the IdP is gone at the next sign-in, and the HR document with it.
    op.set_account("hilde", &["staff"], vec![]).await;
    let again = sign_in(&s, &op, "hilde").await;
    let me2: Value = s.get("/auth/me", &again.access).await.json().await.unwrap();
    assert_eq!(me2["subject"], me["subject"]);
    assert_eq!(me2["roles"], json!(["employee"]));
    let found = search_text(&s, &again.access, "salary bands").await;
    assert!(!found.contains("CANARY-SSO-5521"));

    // A user in 300 groups signs in; palisade's own token stays small.
    let groups: Vec<String> = (0..300).map(|i| format!("team-{i}")).collect();
    op.set_account("grace", &["staff"], groups).await;
    let big = sign_in(&s, &op, "grace").await;
    assert!(big.access.len() < 1024, "{}", big.access.len());
    let me3: Value = s.get("/auth/me", &big.access).await.json().await.unwrap();
    assert_eq!(me3["groups"].as_array().unwrap().len(), 300);
}

#[tokio::test]
async fn sso_sign_in_with_an_rs256_client() {
    let op = OpenIdProvider::start();
    let s = sso_server(&op, "palisade-rs", "RS256");
    op.set_account("ruth", &["staff"], vec![]).await;
    let sess = sign_in(&s, &op, "ruth").await;
    let me: Value = s.get("/auth/me", &sess.access).await.json().await.unwrap();
    assert_eq!(me["roles"], json!(["employee"]));
    // The RS256 client's ID tokens are not accepted by a deployment that allows only
    // ES256 for this issuer.
    let es_only = sso_server(&op, "palisade-rs", "ES256");
    let mut agent = Agent::new();
    let started = agent.start(&es_only, "/").await;
    let query = agent.at_idp(&op, &started.authorize_url, "ruth").await;
    let r = callback(&es_only, &query, Some(&started.cookie)).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(refresh_cookie_of(&r).is_none());
}

/// The `state`/`nonce`/PKCE values of an authorization URL, and the URL with one of them
/// replaced.
fn with_param(url: &str, name: &str, value: &str) -> String {
    let mut u = reqwest::Url::parse(url).unwrap();
    let pairs: Vec<(String, String)> = u
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == name {
                value.to_owned()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    u.query_pairs_mut().clear().extend_pairs(pairs);
    u.into()
}

fn param(query: &str, name: &str) -> String {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn query_with(query: &str, name: &str, value: &str) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        out.append_pair(&k, if k == name { value } else { &v });
    }
    out.finish()
}

#[tokio::test]
async fn sso_attacks_are_refused_and_create_nothing() {
    let op = OpenIdProvider::start();
    let s = sso_server(&op, "palisade-es", "ES256");
    let acme = seed_acme(&s);
    let admin = s.login("adam", &acme.adam).await;
    op.set_account("mallory", &["hrstaff"], vec![]).await;
    let users_before = user_count(&s, &admin.access).await;
    let sessions_refused = |r: &reqwest::Response| {
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(
            refresh_cookie_of(r).is_none(),
            "a refused callback set a session"
        );
    };

    // Open redirects: refused before anything starts (no flow cookie).
    for bad in [
        "https://evil.example/",
        "//evil.example/x",
        "/\\evil.example",
        "javascript:alert(1)",
        "http:evil.example",
        "/%0d%0aSet-Cookie:x=1",
    ] {
        let r = Agent::new()
            .http
            .get(s.url("/auth/oidc/login"))
            .query(&[("provider", "acme-sso"), ("return_to", bad)])
            .send()
            .await
            .unwrap();
        if bad.starts_with("/%0d") {
            // Percent-encoded stays encoded: a harmless path on this site.
            assert_eq!(r.status(), StatusCode::SEE_OTHER, "{bad}");
            continue;
        }
        let (status, code) = error_code(r).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::BAD_REQUEST, "bad_request"),
            "{bad}"
        );
    }
    // An unknown provider.
    let r = Agent::new()
        .http
        .get(s.url("/auth/oidc/login?provider=nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    let mut agent = Agent::new();
    let a = agent.start(&s, "/").await;
    let qa = agent.at_idp(&op, &a.authorize_url, "mallory").await;
    assert_eq!(param(&qa, "iss"), op.issuer);

    // A forged state; the right state without the browser's cookie (login CSRF); a
    // tampered cookie; an IdP error; a mixed-up issuer.
    sessions_refused(
        &callback(
            &s,
            &query_with(&qa, "state", "forged-state-0123456789"),
            Some(&a.cookie),
        )
        .await,
    );
    sessions_refused(&callback(&s, &qa, None).await);
    let mut tampered: Vec<u8> = a.cookie.clone().into_bytes();
    let i = a.cookie.find('.').unwrap() + 5;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    sessions_refused(&callback(&s, &qa, Some(std::str::from_utf8(&tampered).unwrap())).await);
    let err = format!("error=access_denied&state={}", param(&qa, "state"));
    sessions_refused(&callback(&s, &err, Some(&a.cookie)).await);
    sessions_refused(
        &callback(
            &s,
            &query_with(&qa, "iss", "http://127.0.0.1:1/evil"),
            Some(&a.cookie),
        )
        .await,
    );

    // The genuine callback works once; replayed as is, it is refused.
    let ok = callback(&s, &qa, Some(&a.cookie)).await;
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    assert!(refresh_cookie_of(&ok).is_some());
    let users_after_one = user_count(&s, &admin.access).await;
    assert_eq!(users_after_one, users_before + 1);
    sessions_refused(&callback(&s, &qa, Some(&a.cookie)).await);

    // The same authorization request again (same state, nonce and PKCE challenge) gets
    // a fresh code from the IdP; the spent state still refuses it.
    let replay = agent.at_idp(&op, &a.authorize_url, "mallory").await;
    assert_ne!(param(&replay, "code"), param(&qa, "code"));
    sessions_refused(&callback(&s, &replay, Some(&a.cookie)).await);

    // A code stolen from flow C, injected into flow B: palisade redeems it with B's
    // verifier, and the IdP refuses (PKCE).
    let b = agent.start(&s, "/").await;
    let c = agent.start(&s, "/").await;
    let qc = agent.at_idp(&op, &c.authorize_url, "mallory").await;
    let b_state = param(
        reqwest::Url::parse(&b.authorize_url)
            .unwrap()
            .query()
            .unwrap(),
        "state",
    );
    sessions_refused(&callback(&s, &query_with(&qc, "state", &b_state), Some(&b.cookie)).await);

    // An authorization request for flow D with the attacker's nonce (same state and
    // challenge): PKCE passes, the ID token's nonce is not D's.
    let d = agent.start(&s, "/").await;
    let swapped = with_param(&d.authorize_url, "nonce", "attacker-nonce-0123456789abcdef");
    let qd = agent.at_idp(&op, &swapped, "mallory").await;
    sessions_refused(&callback(&s, &qd, Some(&d.cookie)).await);

    // Nothing was created by any refused attempt, and each is audited with its reason.
    assert_eq!(user_count(&s, &admin.access).await, users_after_one);
    let reasons: Vec<String> = s
        .audit_cli("login_failed")
        .iter()
        .filter_map(|e| e["reason"].as_str().map(str::to_owned))
        .collect();
    for want in [
        "sign_in_state_mismatch",
        "sign_in_no_flow",
        "sign_in_idp_error",
        "sign_in_issuer_mismatch",
        "sign_in_replayed",
        "sign_in_code_refused",
        "sign_in_nonce_mismatch",
    ] {
        assert!(
            reasons.iter().any(|r| r == want),
            "{want} not in {reasons:?}"
        );
    }
    // Only one session was ever opened through SSO.
    let opened = s
        .audit_cli("login_succeeded")
        .iter()
        .filter(|e| e["reason"] == "oidc_sign_in")
        .count();
    assert_eq!(opened, 1);
}

/// An ID token for `account`, obtained from the provider the way a backend's own OIDC
/// client would: its authorization code flow (PKCE) through the provider's forms, then
/// the code for tokens at the provider's token endpoint.
async fn id_token_from_provider(op: &OpenIdProvider, client_id: &str, account: &str) -> String {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let verifier = format!("{}{}", random_id(), random_id());
    let challenge = b64.encode(Sha256::digest(verifier.as_bytes()));
    let mut url = reqwest::Url::parse(&format!("{}/auth", op.issuer)).unwrap();
    url.query_pairs_mut()
        .append_pair("client_id", client_id)
        .append_pair("response_type", "code")
        .append_pair("scope", "openid palisade")
        .append_pair("redirect_uri", REDIRECT_URI)
        .append_pair("state", &random_id())
        .append_pair("nonce", &random_id())
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    let mut agent = Agent::new();
    let query = agent.at_idp(op, url.as_str(), account).await;
    let code = param(&query, "code");
    let r = reqwest::Client::new()
        .post(format!("{}/token", op.issuer))
        .basic_auth(client_id, Some(CLIENT_SECRET))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT_URI),
            ("code_verifier", verifier.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json::<Value>().await.unwrap()["id_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A backend that signed its user in at the IdP exchanges the user's ID token (RFC 8693)
/// for a palisade token acting as that user: the user's scope, `act` naming the
/// service; a service without `act_for_users` is refused; signing the user out
/// everywhere ends the exchanged token.
#[tokio::test]
async fn a_service_exchanges_a_users_id_token_from_the_provider() {
    let op = OpenIdProvider::start();
    op.set_account("hanna.sso", &["staff", "hrstaff"], vec![])
        .await;
    let s = sso_server(&op, "palisade-es", "ES256");
    let acme = seed_acme(&s);
    let admin = s.login("adam", &acme.adam).await;
    let r = s
        .post_document(&admin.access,
            &json!({"title": "Salary bands", "text": "Confidential salary bands CANARY-SSO-EXCHANGE-7.", "acl": {"roles": ["hr"]}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    s.cli_ok(&[
        "service",
        "add",
        "portal",
        "--tenant",
        "acme",
        "--act-for-users",
    ]);
    s.cli_ok(&["service", "add", "bot", "--tenant", "acme", "--roles", "hr"]);
    let key_of = |name: &str| {
        let out = s.cli_ok(&["key", "create", "--service", name, "--tenant", "acme"]);
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let (portal, bot) = (key_of("portal"), key_of("bot"));
    let id_token = id_token_from_provider(&op, "palisade-es", "hanna.sso").await;
    let exchange = |key: String, token: String| {
        let s = &s;
        async move {
            s.http
                .post(s.url("/auth/token"))
                .bearer_auth(key)
                .form(&[
                    (
                        "grant_type",
                        "urn:ietf:params:oauth:grant-type:token-exchange",
                    ),
                    ("subject_token", token.as_str()),
                    (
                        "subject_token_type",
                        "urn:ietf:params:oauth:token-type:id_token",
                    ),
                ])
                .send()
                .await
                .unwrap()
        }
    };
    let r = exchange(bot, id_token.clone()).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "unauthorized_client"
    );
    // A token of the provider, but not an ID token of a configured client.
    let mut forged = id_token.clone();
    forged.truncate(forged.len() - 4);
    forged.push_str("AAAA");
    let r = exchange(portal.clone(), forged).await;
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");

    let r = exchange(portal, id_token).await;
    assert_eq!(r.status(), StatusCode::OK);
    let token = r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // The user's scope (hr, from the IdP's roles), not the service's (none).
    assert!(
        search_text(&s, &token, "salary bands")
            .await
            .contains("CANARY-SSO-EXCHANGE-7")
    );
    let ex = s.audit_cli("token_exchanged");
    assert_eq!(ex.len(), 1, "{ex:?}");
    let user = ex[0]["subject"].as_str().unwrap().to_owned();
    assert!(ex[0]["actor"].is_string());
    assert_ne!(ex[0]["actor"], ex[0]["subject"]);

    // The user's sessions end (an admin disables and re-enables her): so does the token.
    for disabled in [true, false] {
        let r = s
            .http
            .patch(s.url(&format!("/admin/users/{user}")))
            .bearer_auth(&admin.access)
            .json(&json!({ "disabled": disabled }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    assert_eq!(
        s.get("/v1/models", &token).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

/// An MCP client's user signs in on palisade's consent page through the IdP: the page
/// links to the provider with the way back; after the callback the browser has a
/// palisade session, and the consent form (which carries it) allows as that account.
#[tokio::test]
async fn an_mcp_client_is_approved_after_signing_in_through_the_provider() {
    let op = OpenIdProvider::start();
    op.set_account("hanna.sso", &["staff"], vec![]).await;
    let s = sso_server(&op, "palisade-es", "ES256");
    let redirect = "http://127.0.0.1:9/callback";
    let r = s
        .post_json(
            "/oauth/register",
            &json!({"client_name": "IDE", "redirect_uris": [redirect]}),
        )
        .await;
    let client_id = r.json::<Value>().await.unwrap()["client_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let authorize = format!(
        "/oauth/authorize?response_type=code&client_id={client_id}&redirect_uri={}&code_challenge={}&code_challenge_method=S256&state=s9",
        url::form_urlencoded::byte_serialize(redirect.as_bytes()).collect::<String>(),
        "E".repeat(43)
    );
    let page = s.http.get(s.url(&authorize)).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap().replace("&amp;", "&");
    let sealed = html
        .split("name=\"request\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let link = html
        .split("href=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    assert!(
        link.starts_with("/auth/oidc/login?provider=acme-sso&return_to="),
        "{link}"
    );
    assert_eq!(
        param(link.split_once('?').unwrap().1, "return_to"),
        authorize
    );

    // Through the provider and back: the browser lands on the consent page, signed in.
    let mut agent = Agent::new();
    let started = agent.start(&s, &authorize).await;
    let query = agent.at_idp(&op, &started.authorize_url, "hanna.sso").await;
    let r = callback(&s, &query, Some(&started.cookie)).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], authorize.as_str());
    let refresh = refresh_cookie_of(&r).expect("a palisade session");

    // Without the session the form asks to sign in; with it, it allows.
    let allow = |cookie: Option<String>| {
        let mut req = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .post(s.url("/oauth/authorize"))
            .header("origin", "http://localhost:8080")
            .form(&[("request", sealed.as_str()), ("decision", "allow")]);
        if let Some(c) = cookie {
            req = req.header(COOKIE, format!("__Host-palisade_refresh={c}"));
        }
        req.send()
    };
    assert_eq!(
        allow(None).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let r = allow(Some(refresh)).await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let location = r.headers()[LOCATION].to_str().unwrap().to_owned();
    assert!(
        location.starts_with(redirect)
            && location.contains("code=")
            && location.contains("state=s9"),
        "{location}"
    );
    let approved = s.audit_cli("client_approved");
    assert_eq!(approved.len(), 1);
    assert!(
        approved[0]["username"]
            .as_str()
            .unwrap()
            .starts_with("oidc:")
    );
}
