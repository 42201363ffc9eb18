//! The HTTP contract: `/openapi.json` names every route the routers serve (and the
//! bearer scheme on every one that needs a token), and Schemathesis fuzzes the live
//! server against it with three users — finding no contract violation and no
//! object-level authorisation bug.

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeSet;

use crate::support::*;

/// Every `(METHOD, path)` the routers register, read from the source (as the layering
/// test reads it): `.route("/path", get(a).post(b))` and the MCP service nested at `/mcp`.
fn routes_in_source() -> BTreeSet<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_none_or(|x| x != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut rest = text.as_str();
        while let Some(i) = rest.find(".route(") {
            rest = &rest[i + ".route(".len()..];
            let Some(open) = rest.find('"') else { break };
            let Some(len) = rest[open + 1..].find('"') else {
                break;
            };
            // A catch-all segment (`{*id}`) is documented as the parameter it binds.
            let route = rest[open + 1..open + 1 + len].replace("{*", "{");
            // The handlers: up to the end of this `.route(…)` call.
            let mut depth = 1;
            let mut end = 0;
            for (j, c) in rest.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            end = j;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let call = &rest[..end];
            for method in ["get", "post", "put", "patch", "delete"] {
                let direct = format!(" {method}(");
                let chained = format!(".{method}(");
                let leading = format!("\n{method}(");
                let first = call
                    .trim_start_matches(|c: char| c != ',')
                    .trim_start_matches(',')
                    .trim_start();
                if first.starts_with(&format!("{method}("))
                    || call.contains(&direct)
                    || call.contains(&chained)
                    || call.contains(&leading)
                {
                    out.insert((method.to_uppercase(), route.clone()));
                }
            }
        }
    }
    out.insert(("POST".into(), "/mcp".into()));
    out
}

#[tokio::test]
async fn the_openapi_document_covers_every_route_and_declares_the_bearer_scheme() {
    let s = Server::start();
    let r = s.http.get(s.url("/openapi.json")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let doc: Value = r.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"],
        json!({"type": "http", "scheme": "bearer", "bearerFormat": "PASETO v4.local or JWE",
               "description": doc["components"]["securitySchemes"]["bearer"]["description"]})
    );
    let mut documented = BTreeSet::new();
    let mut public = BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let key = (method.to_uppercase(), path.clone());
            // Every operation states its security: [] (public) or a scheme.
            let security = op["security"]
                .as_array()
                .unwrap_or_else(|| panic!("{key:?} has no security"));
            if security
                .iter()
                .all(|s| s.as_object().is_some_and(|o| o.is_empty()))
            {
                public.insert(key.clone());
            }
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{key:?}"
            );
            documented.insert(key);
        }
    }
    let served = routes_in_source();
    assert!(
        served.len() >= 30,
        "the route scan found too little: {served:?}"
    );
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let phantom: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from /openapi.json: {undocumented:?}"
    );
    assert!(phantom.is_empty(), "documented but not served: {phantom:?}");

    // Exactly these are public; everything else declares a credential. And a public
    // route really is reachable without one, a protected one really is not.
    let expected_public: BTreeSet<(String, String)> = [
        ("GET", "/"),
        ("GET", "/app.js"),
        ("GET", "/app.css"),
        ("GET", "/favicon.svg"),
        ("GET", "/vendor/{file}"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/openapi.json"),
        ("POST", "/auth/login"),
        ("POST", "/auth/oidc/exchange"),
        ("GET", "/auth/oidc/providers"),
        ("GET", "/auth/oidc/login"),
        ("GET", "/auth/oidc/callback"),
        ("POST", "/auth/token"),
        ("GET", "/.well-known/oauth-protected-resource"),
        ("GET", "/.well-known/oauth-protected-resource/mcp"),
        ("GET", "/.well-known/oauth-protected-resource/v1"),
        ("GET", "/.well-known/oauth-authorization-server"),
        ("POST", "/oauth/register"),
        ("GET", "/oauth/authorize"),
        ("POST", "/oauth/authorize"),
    ]
    .into_iter()
    .map(|(m, p)| (m.to_owned(), p.to_owned()))
    .collect();
    assert_eq!(public, expected_public);
    for (method, path) in documented.difference(&public) {
        if path.contains('{') || path == "/mcp" || path == "/metrics" {
            continue;
        }
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = s
            .http
            .request(m, s.url(path))
            .header("origin", "http://localhost:8080")
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path} without a credential"
        );
    }
}

const USERS: [(&str, &str, &str); 3] = [
    ("alice", "employee,admin", "acme"),
    ("bob", "employee", "acme"),
    ("carol", "employee,admin", "globex"),
];

#[tokio::test]
async fn schemathesis_finds_no_contract_or_authorisation_bug_with_three_users() {
    let Ok(python) = std::env::var("PALISADE_TEST_PYTHON") else {
        panic!("PALISADE_TEST_PYTHON is not set: run the suite through scripts/test.sh");
    };
    let st = std::path::Path::new(&python).with_file_name("schemathesis");
    assert!(
        st.exists(),
        "{} is missing: scripts/test.sh installs schemathesis into the test venv",
        st.display()
    );
    let s = Server::start_with(&[
        // Fuzzing sends thousands of requests from one address: the throttles would
        // answer most of them 429 and hide the code behind them.
        ("PALISADE_THREADS__CHAT_REQUESTS_PER_MINUTE", "1000000"),
        ("PALISADE_LIMITS__LOGIN_ATTEMPTS_PER_IP", "1000000"),
        ("PALISADE_LIMITS__LOGIN_USER_ATTEMPT_BURST", "1000000"),
        ("PALISADE_LIMITS__LOGIN_FAILURES_PER_USER", "1000000"),
        // /metrics on the main address, behind its token: fuzzed like any other route.
        ("PALISADE_METRICS__BEARER_TOKEN_ENV", "PALISADE_TEST_SCRAPE"),
        (
            "PALISADE_TEST_SCRAPE",
            "scrape-token-for-the-contract-test-0123456789",
        ),
    ]);
    let mut auth = Vec::new();
    for (name, roles, tenant) in USERS {
        let pw = s.add_user(name, roles, "", tenant);
        auth.push(json!({
            "name": name,
            "loginEndpointAuth": {
                "endpoint": "/auth/login", "verb": "POST", "contentType": "application/json",
                "payloadUserPwd": {"username": name, "password": pw,
                                   "usernameField": "username", "passwordField": "password"},
                "token": {"extractFrom": "body", "extractSelector": "/access_token",
                          "sendIn": "header", "sendName": "Authorization",
                          "sendTemplate": "Bearer {token}"}
            }
        }));
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("auth.json"),
        serde_json::to_vec(&json!({"schemaVersion": "1.0", "auth": auth})).unwrap(),
    )
    .unwrap();
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/schemathesis/schemathesis.toml");
    std::fs::copy(&config, dir.path().join("schemathesis.toml")).unwrap();
    let schema = s.url("/openapi.json");
    let cwd = dir.path().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(st)
            .current_dir(cwd)
            .args(["--config-file", "schemathesis.toml", "run", &schema])
            .args(["--workers", "1", "--no-color"])
            .env("NO_COLOR", "1")
            .output()
    })
    .await
    .unwrap()
    .expect("run schemathesis");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It really ran: every phase, the stateful one over inferred links.
    for phase in ["Examples", "Coverage", "Fuzzing", "Stateful"] {
        assert!(
            report.contains(&format!("✅ {phase}")),
            "{phase} did not pass:\n{report}"
        );
    }
    assert!(report.contains("Scenarios:"), "{report}");
    // No secret of the run reached the server's log.
    for (name, _, _) in USERS {
        assert!(!s.log().contains(&format!("pw-{name}-correct-horse")));
    }
}

/// Found by Schemathesis on the cluster store: PostgreSQL refuses NUL in text, so a
/// document or message holding one failed as a store error (503). It is bad input: a
/// clear 4xx on every store, nothing written, the store still healthy.
#[tokio::test]
async fn a_nul_character_is_bad_input_not_a_store_failure() {
    let s = Server::start();
    let acme = seed_acme(&s);
    let admin = s.login("adam", &acme.adam).await;
    let raw = |path: &str, body: &'static str| {
        s.http
            .post(s.url(path))
            .bearer_auth(&admin.access)
            .header("content-type", "application/json")
            .body(body)
    };
    let r = raw(
        "/v1/documents",
        r#"{"title": "Travel", "text": "Flights\u0000 are booked.", "acl": {"public": true}}"#,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(
        error_code(r).await,
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable_entity".into()
        )
    );
    let t = s.new_thread(&admin.access, "nul").await;
    let r = raw(
        &format!("/v1/threads/{t}/messages"),
        r#"{"content": "hi\u0000"}"#,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // An escaped backslash followed by "u0000" is text, and fine.
    let r = raw(
        &format!("/v1/threads/{t}/messages"),
        r#"{"content": "a path C:\\u0000"}"#,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    for url in [
        "/v1/threads/%00",
        "/v1/documents/a%00b",
        "/admin/audit?kind=%00",
    ] {
        let r = s.get(url, &admin.access).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{url}");
    }
    // The CLI's way in refuses it too (the cluster store would otherwise fail on it).
    let file = s.data_dir().join("nul.txt");
    std::fs::write(&file, "Flights\0 are booked.").unwrap();
    let out = s.cli(
        &[
            "doc",
            "add",
            file.to_str().unwrap(),
            "--title",
            "NUL",
            "--public",
            "--tenant",
            "acme",
        ],
        None,
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("NUL"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Nothing was written but the one good turn, and the store is healthy.
    let docs: Value = s
        .get("/v1/documents", &admin.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(docs["documents"], json!([]));
    assert_eq!(
        s.thread_json(&admin.access, &t).await["messages"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let ready = s.http.get(s.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
}
