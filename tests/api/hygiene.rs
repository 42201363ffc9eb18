//! Bad input, HTTP hygiene and secrets in logs.

use crate::support::*;
use reqwest::StatusCode;
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;

/// Sends raw bytes and returns the status line's code (0 if the connection closed).
fn raw_request(base: &str, bytes: &[u8]) -> u16 {
    let addr = base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let _ = stream.write_all(bytes);
    let mut buf = Vec::new();
    let _ = stream.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_the_server_lives() {
    let s = Server::in_process_with(&[("PALISADE_LIMITS__MAX_BODY_BYTES", "65536")]);
    let acme = seed_acme(&s);
    let login = s.url("/auth/login");

    let send = |body: Vec<u8>, ct: &'static str| {
        let http = s.http.clone();
        let url = login.clone();
        async move {
            http.post(url)
                .header("content-type", ct)
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    let cases: Vec<(&str, Vec<u8>, &str, StatusCode, &str)> = vec![
        (
            "malformed JSON",
            b"{\"username\": ".to_vec(),
            "application/json",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "not JSON",
            b"hello".to_vec(),
            "application/json",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "non-UTF-8",
            b"{\"username\":\"\xff\xfe\",\"password\":\"x\"}".to_vec(),
            "application/json",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "wrong types",
            br#"{"username":1,"password":[]}"#.to_vec(),
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable_entity",
        ),
        (
            "missing field",
            br#"{"username":"alice"}"#.to_vec(),
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable_entity",
        ),
        (
            "wrong content type",
            br#"{"username":"alice","password":"x"}"#.to_vec(),
            "text/plain",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "oversized body",
            format!(
                r#"{{"username":"alice","password":"{}"}}"#,
                "x".repeat(100_000)
            )
            .into_bytes(),
            "application/json",
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ];
    for (name, body, ct, status, code) in cases {
        let resp = send(body, ct).await;
        assert_eq!(error_code(resp).await, (status, code.to_owned()), "{name}");
    }

    // Chunked upload without Content-Length, over the limit.
    let mut req = b"POST /auth/login HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n".to_vec();
    let data = format!("{{\"username\":\"{}", "a".repeat(100_000));
    req.extend(format!("{:x}\r\n{data}\r\n0\r\n\r\n", data.len()).into_bytes());
    assert_eq!(
        raw_request(&s.base, &req),
        413,
        "chunked body over the limit"
    );

    // Huge headers and a non-UTF-8 request line from a raw socket.
    let huge = format!(
        "GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(512 * 1024)
    );
    let code = raw_request(&s.base, huge.as_bytes());
    assert!(
        code == 431 || code == 400 || code == 0,
        "huge header → {code}"
    );
    let code = raw_request(&s.base, b"GET /\xff\xfe HTTP/1.1\r\nhost: x\r\n\r\n");
    assert!((400..500).contains(&code), "non-UTF-8 path → {code}");
    let code = raw_request(&s.base, b"NOT HTTP AT ALL\r\n\r\n");
    assert!(code == 400 || code == 0, "garbage → {code}");

    // Unknown paths and suffixes (web-cache deception) are plain 404s, never cacheable.
    let a = s.login("alice", &acme.alice).await;
    for path in [
        "/auth/me/x.css",
        "/auth/me.css",
        "/auth/sessions/x/y.js",
        "/nope",
    ] {
        let resp = s.get(path, &a.access).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(resp.headers()["cache-control"], "no-store");
        assert_eq!(error_code(resp).await.1, "not_found");
    }

    // Still alive and serving.
    let resp = s.http.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(s.get("/auth/me", &a.access).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn security_headers_on_every_response() {
    let s = Server::in_process();
    let acme = seed_acme(&s);
    let ok = s.login_raw("alice", &acme.alice).await;
    let err = s.login_raw("alice", "wrong").await;
    let health = s.http.get(s.url("/healthz")).send().await.unwrap();
    for resp in [&ok, &err, &health] {
        let h = resp.headers();
        assert_eq!(h["cache-control"], "no-store");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert_eq!(h["x-frame-options"], "DENY");
    }
    let ready = s.http.get(s.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
}

#[tokio::test]
async fn secrets_never_reach_the_logs() {
    let mut s = Server::start_with(&[("PALISADE_LOG__LEVEL", "trace")]);
    let acme = seed_acme(&s);
    let a = s.login("alice", &acme.alice).await;
    let resp = s.refresh(&a.cookie).await;
    let b = Session::from_response(resp).await;
    s.login_raw("hannah", "a-wrong-password-123").await;
    s.get("/auth/me", &format!("{}x", b.access)).await;
    s.post_json(
        "/auth/login",
        &json!({"username": "adam", "password": acme.adam}),
    )
    .await;
    s.http
        .get(s.url(&format!("/auth/me?token={}", b.access)))
        .send()
        .await
        .unwrap();
    assert!(s.terminate().success());

    let log = s.log();
    assert!(log.contains("login_succeeded"), "the log is being written");
    let keys = std::fs::read_to_string(s.data_dir().join("keys.json")).unwrap();
    let kf: serde_json::Value = serde_json::from_str(&keys).unwrap();
    let secret = kf["keys"][0]["secret"].as_str().unwrap().to_owned();
    for (what, needle) in [
        ("alice's password", acme.alice.as_str()),
        ("adam's password", acme.adam.as_str()),
        ("a wrong password", "a-wrong-password-123"),
        ("access token", a.access.as_str()),
        ("rotated access token", b.access.as_str()),
        ("refresh token", a.cookie.as_str()),
        ("rotated refresh token", b.cookie.as_str()),
        ("token key", secret.as_str()),
    ] {
        assert!(!log.contains(needle), "{what} leaked into the log");
    }
    // And never into the stores in the clear.
    for blob in s.stored_bytes() {
        let text = String::from_utf8_lossy(&blob);
        assert!(!text.contains(&a.cookie) && !text.contains(&b.cookie));
        assert!(!text.contains(&acme.alice));
    }
}

#[tokio::test]
async fn refuses_to_start_with_weak_configuration_or_exposed_keys() {
    use std::os::unix::fs::PermissionsExt;
    let run = |args: &[&str], envs: &[(&str, &str)]| {
        palisade()
            .args(args)
            .envs(envs.iter().copied())
            .output()
            .unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = run(
        &["serve", "--data-dir", d, "--listen", "127.0.0.1:0"],
        &[("PALISADE_TOKENS__ACCESS_TTL", "24h")],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("access_ttl"));

    // An OTLP endpoint on a build without the `otlp` feature: refused, not silently
    // ignored (the test suite builds without it).
    let out = run(
        &["serve", "--data-dir", d, "--listen", "127.0.0.1:0"],
        &[(
            "PALISADE_LOG__OTLP_ENDPOINT",
            "http://127.0.0.1:4318/v1/traces",
        )],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--features otlp"), "{err}");

    // A keys file readable by others is refused, without printing its content.
    let s = Server::in_process();
    let keys = s.data_dir().join("keys.json");
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o644)).unwrap();
    let d = s.data_dir().to_str().unwrap();
    let out = run(&["serve", "--data-dir", d, "--listen", "127.0.0.1:0"], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("chmod 600"), "{err}");
    let kf: serde_json::Value = serde_json::from_slice(&std::fs::read(&keys).unwrap()).unwrap();
    assert!(!err.contains(kf["keys"][0]["secret"].as_str().unwrap()));
}

/// A typo in the configuration refuses to start, naming the offending key, section or
/// variable and the nearest valid one — never the gateway running on a default the
/// operator meant to change.
#[test]
fn a_configuration_typo_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let start = |file: Option<&str>, env: &[(&str, &str)]| {
        let mut c = palisade();
        c.arg("--data-dir").arg(dir.path());
        if let Some(text) = file {
            let path = dir.path().join("palisade.toml");
            std::fs::write(&path, text).unwrap();
            c.arg("--config").arg(path);
        }
        let out = c
            .env("PALISADE_EMBEDDINGS__KIND", "none")
            .envs(env.iter().copied())
            .args(["user", "list"])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    type Case<'a> = (Option<&'a str>, &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 4] = [
        (
            Some("[tokens]\naccess_tll = \"5m\"\n"),
            &[],
            "`tokens.access_tll` is not a setting",
        ),
        (
            Some("[tokenz]\naccess_ttl = \"5m\"\n"),
            &[],
            "`tokenz` is not a setting",
        ),
        (
            None,
            &[("PALISADE_TOKENS__ACESS_TTL", "5m")],
            "PALISADE_TOKENS__ACESS_TTL is not a setting",
        ),
        (
            None,
            &[("PALISADE_TOKENZ__ACCESS_TTL", "5m")],
            "PALISADE_TOKENZ__ACCESS_TTL is not a setting (did you mean PALISADE_TOKENS?)",
        ),
    ];
    for (file, env, says) in cases {
        let (code, stderr) = start(file, env);
        assert_ne!(code, Some(0), "started despite {says}");
        assert!(stderr.contains(says), "{says}: {stderr}");
        assert!(stderr.contains("did you mean"), "no suggestion: {stderr}");
    }
    // Refused before anything was opened; the same settings spelled right start.
    assert!(!dir.path().join("palisade.db").exists());
    let (code, stderr) = start(
        Some("[tokens]\naccess_ttl = \"5m\"\n"),
        &[("PALISADE_TOKENS__ACCESS_TTL", "5m")],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(dir.path().join("palisade.db").exists());
}

/// A value sent in the wrong field (a key pasted into `k`, say) is never echoed: every
/// 4xx names the field and what it expects. Errors that other components answer (the
/// MCP transport) come in the same JSON shape, with the security headers.
#[tokio::test]
async fn errors_name_the_field_and_never_echo_the_value() {
    const SECRET: &str = "sk-live-SECRET-123";
    let s = Server::in_process();
    let acme = seed_acme(&s);
    let alice = s.login("alice", &acme.alice).await;
    let adam = s.login("adam", &acme.adam).await;
    let alice_id = s.user_id(&adam.access, "alice").await;
    let cases: Vec<(&str, reqwest::Method, String, serde_json::Value, &str, &str)> = vec![
        (
            "search k",
            reqwest::Method::POST,
            "/v1/search".into(),
            json!({"query": "x", "k": SECRET}),
            "`k`",
            &alice.access,
        ),
        (
            "temperature",
            reqwest::Method::POST,
            "/v1/chat/completions".into(),
            json!({"messages": [{"role": "user", "content": "hi"}], "temperature": SECRET}),
            "`temperature`",
            &alice.access,
        ),
        (
            "response_format.type",
            reqwest::Method::POST,
            "/v1/chat/completions".into(),
            json!({"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": SECRET}}),
            "`response_format.type`",
            &alice.access,
        ),
        (
            "acl.roles",
            reqwest::Method::POST,
            "/v1/documents".into(),
            json!({"title": "t", "text": "some text", "acl": {"roles": [format!("a {SECRET}")]}}),
            "`acl.roles`",
            &adam.access,
        ),
        (
            "admin roles",
            reqwest::Method::PATCH,
            format!("/admin/users/{alice_id}"),
            json!({"roles": SECRET}),
            "`roles`",
            &adam.access,
        ),
    ];
    for (name, method, path, body, field, token) in cases {
        let r = s
            .http
            .request(method, s.url(&path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{name}");
        let text = r.text().await.unwrap();
        assert!(!text.contains(SECRET), "{name} echoed the value: {text}");
        assert!(text.contains(field), "{name} does not name {field}: {text}");
    }

    // The MCP transport's own refusals, in the JSON error shape.
    for (method, ct, status) in [
        (
            reqwest::Method::POST,
            "text/plain",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            reqwest::Method::PUT,
            "application/json",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
    ] {
        let r = s
            .http
            .request(method.clone(), s.url("/mcp"))
            .bearer_auth(&alice.access)
            .header("content-type", ct)
            .header("accept", "application/json, text/event-stream")
            .body(format!("{{\"jsonrpc\":\"2.0\",\"method\":\"{SECRET}\"}}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{method} {ct}");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json")
        );
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(body["error"]["code"].is_string(), "{body}");
        assert!(!body.to_string().contains(SECRET));
    }
}

/// A request with more messages, or more estimated prompt tokens, than the model takes
/// is refused (413 `prompt_too_large`) before any retrieval or upstream call — the body
/// limit alone let 10,001 small messages through.
#[tokio::test]
async fn message_count_and_prompt_size_are_bounded_per_model() {
    let (s, mock) = start_with_mock(&[
        // One model with a small context window, one with the defaults.
        ("PALISADE_LLM__CONTEXT_TOKENS", "2000"),
    ])
    .await;
    let acme = seed_acme(&s);
    let alice = s.login("alice", &acme.alice).await;
    let adam = s.login("adam", &acme.adam).await;
    let many: Vec<serde_json::Value> = (0..10_001)
        .map(|i| json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": "hi"}))
        .collect();
    let big = "word ".repeat(2000); // ~2,500 estimated tokens
    let cases = [
        ("10,001 messages", json!({"messages": many})),
        (
            "a prompt over the window",
            json!({"messages": [{"role": "user", "content": big}]}),
        ),
        (
            "instructions over the window",
            json!({"messages": [{"role": "system", "content": big}, {"role": "user", "content": "hi"}]}),
        ),
    ];
    for (name, body) in cases {
        let r = s
            .post_auth("/v1/chat/completions", &alice.access, &body)
            .await;
        assert_eq!(
            error_code(r).await,
            (StatusCode::PAYLOAD_TOO_LARGE, "prompt_too_large".into()),
            "{name}"
        );
    }
    // A thread turn is bounded the same way, before anything is stored.
    let t = s.new_thread(&alice.access, "bounded").await;
    let r = s
        .http
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(&alice.access)
        .header("x-palisade-thread", &t)
        .json(&json!({"messages": [{"role": "system", "content": big}, {"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        s.thread_json(&alice.access, &t).await["messages"],
        json!([])
    );
    // Nothing went upstream, nothing was retrieved.
    assert_eq!(mock.count(), 0);
    assert!(s.audit_events(&adam.access, "retrieval").await.is_empty());
    // Just inside the bounds still works.
    let r = s
        .post_auth(
            "/v1/chat/completions",
            &alice.access,
            &json!({"messages": [{"role": "user", "content": "word ".repeat(1000)}]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(mock.count(), 1);
}
