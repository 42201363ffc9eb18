use crate::support::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

#[tokio::test]
async fn login_issues_token_and_exact_refresh_cookie() {
    let s = Server::in_process();
    let acme = seed_acme(&s);
    let resp = s.login_raw("alice", &acme.alice).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let sc = set_cookie(&resp).unwrap();
    let value = cookie_value(&sc);
    assert_eq!(value.len(), 43, "256-bit refresh token, base64url");
    assert_eq!(
        sc,
        format!(
            "__Host-palisade_refresh={value}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=2592000"
        )
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 600);
    let token = body["access_token"].as_str().unwrap();
    assert!(token.starts_with("v4.local."));
    assert!(
        !body.to_string().contains(&value),
        "refresh token only in the cookie"
    );

    let me: Value = s.get("/auth/me", token).await.json().await.unwrap();
    assert_eq!(me["username"], "alice");
    assert_eq!(me["tenant"], "acme");
    assert_eq!(me["roles"], json!(["employee"]));
    assert_eq!(me["groups"], json!(["engineering"]));
    assert_eq!(me["session_id"], body["session_id"]);
}

#[tokio::test]
async fn wrong_password_and_unknown_user_are_indistinguishable() {
    let s = Server::in_process();
    let acme = seed_acme(&s);
    let wrong = s.login_raw("alice", "not-her-password").await;
    let unknown = s.login_raw("mallory", "not-her-password").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie(&wrong).is_none() && set_cookie(&unknown).is_none());
    let (a, b) = (wrong.bytes().await.unwrap(), unknown.bytes().await.unwrap());
    assert_eq!(a, b, "byte-identical bodies");
    assert_eq!(
        serde_json::from_slice::<Value>(&a).unwrap()["error"]["code"],
        "invalid_credentials"
    );

    // Timing: the unknown user is verified against a dummy hash, so both take the
    // argon2 time (~20 ms); without it an unknown user would answer ~100x faster.
    // Compare medians loosely (4x) to stay robust on a loaded machine.
    let mut t_wrong = Vec::new();
    let mut t_unknown = Vec::new();
    for i in 0..3 {
        let t = std::time::Instant::now();
        s.login_raw("hannah", &format!("nope-{i}")).await;
        t_wrong.push(t.elapsed());
        let t = std::time::Instant::now();
        s.login_raw(&format!("ghost{i}"), "nope").await;
        t_unknown.push(t.elapsed());
    }
    t_wrong.sort();
    t_unknown.sort();
    let (w, u) = (t_wrong[1].as_secs_f64(), t_unknown[1].as_secs_f64());
    assert!(u > w / 4.0 && u < w * 4.0, "wrong={w:.4}s unknown={u:.4}s");

    // The user still logs in with the right password.
    s.login("alice", &acme.alice).await;
}

#[tokio::test]
async fn repeated_failures_are_throttled_per_username_and_per_ip() {
    let s = Server::in_process_with(&[
        ("PALISADE_LIMITS__LOGIN_FAILURES_PER_USER", "3"),
        ("PALISADE_LIMITS__LOGIN_ATTEMPTS_PER_IP", "6"),
    ]);
    let acme = seed_acme(&s);
    for _ in 0..3 {
        assert_eq!(
            s.login_raw("alice", "wrong").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let resp = s.login_raw("alice", &acme.alice).await;
    assert_eq!(
        resp.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "even the right password waits"
    );
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=900).contains(&retry));
    assert!(set_cookie(&resp).is_none());
    assert_eq!(error_code(resp).await.1, "too_many_requests");

    // Another username from the same IP is unaffected until the IP budget (6) is spent.
    // Attempts refused by the throttle are not counted.
    s.login("hannah", &acme.hannah).await; // attempt 4
    for _ in 0..2 {
        s.login_raw("adam", "wrong").await; // 5, 6 (adam's own failures: 2 < 3)
    }
    let resp = s.login_raw("adam", &acme.adam).await;
    assert_eq!(
        resp.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "per-IP budget spent"
    );
}

#[tokio::test]
async fn disabled_user_is_refused_and_cli_disable_kills_live_sessions() {
    let s = Server::in_process();
    let acme = seed_acme(&s);
    let a = s.login("alice", &acme.alice).await;
    let b = s.login("alice", &acme.alice).await;
    assert_eq!(s.get("/auth/me", &a.access).await.status(), StatusCode::OK);

    let out = s.cli(&["user", "disable", "alice"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The CLI is another process: the server sees it within session_cache_ttl (1 s).
    for sess in [&a, &b] {
        eventually(Duration::from_secs(3), "the CLI's disable seen", || async {
            (s.get("/auth/me", &sess.access).await.status() == StatusCode::UNAUTHORIZED)
                .then_some(())
        })
        .await;
        assert_eq!(
            s.get("/auth/me", &sess.access).await.status(),
            StatusCode::UNAUTHORIZED
        );
        let (status, code) = error_code(s.refresh(&sess.cookie).await).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::UNAUTHORIZED, "invalid_refresh_token")
        );
    }
    let resp = s.login_raw("alice", &acme.alice).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(resp).await.1, "invalid_credentials");

    let list = String::from_utf8(s.cli(&["user", "list"], None).stdout).unwrap();
    assert!(
        list.lines()
            .any(|l| l.starts_with("alice") && l.contains("disabled"))
    );

    let admin = s.login("adam", &acme.adam).await;
    let failed = s.audit_events(&admin.access, "login_failed").await;
    assert!(
        failed
            .iter()
            .any(|e| e["username"] == "alice" && e["reason"] == "disabled")
    );
    assert_eq!(
        s.audit_events(&admin.access, "user_disabled").await.len(),
        1
    );
}

#[tokio::test]
async fn each_login_is_a_new_session_and_sessions_are_private() {
    let s = Server::in_process();
    let acme = seed_acme(&s);
    let a1 = s.login("alice", &acme.alice).await;
    let a2 = s.login("alice", &acme.alice).await;
    let h = s.login("hannah", &acme.hannah).await;
    assert_ne!(a1.session_id, a2.session_id);

    let list: Value = s
        .get("/auth/sessions", &a1.access)
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&a1.session_id.as_str()) && ids.contains(&a2.session_id.as_str()));
    assert!(!ids.contains(&h.session_id.as_str()));

    // Hannah cannot end Alice's session: 404 like an unknown id, and nothing changes.
    let del = |tok: String, id: String| {
        let s = &s;
        async move {
            s.http
                .delete(s.url(&format!("/auth/sessions/{id}")))
                .bearer_auth(tok)
                .send()
                .await
                .unwrap()
        }
    };
    let foreign = del(h.access.clone(), a1.session_id.clone()).await;
    let unknown = del(h.access.clone(), "AAAAAAAAAAAAAAAAAAAAAA".into()).await;
    assert_eq!(foreign.status(), StatusCode::NOT_FOUND);
    let (fb, ub) = (
        foreign.bytes().await.unwrap(),
        unknown.bytes().await.unwrap(),
    );
    assert_eq!(fb, ub);
    assert_eq!(s.get("/auth/me", &a1.access).await.status(), StatusCode::OK);

    // Alice ends her other session: its access token and refresh cookie die at once.
    assert_eq!(
        del(a1.access.clone(), a2.session_id.clone()).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        s.get("/auth/me", &a2.access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        s.refresh(&a2.cookie).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(s.get("/auth/me", &a1.access).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn logout_and_logout_all_revoke_immediately() {
    let s = Server::in_process();
    let acme = seed_acme(&s);
    let a1 = s.login("alice", &acme.alice).await;
    let a2 = s.login("alice", &acme.alice).await;
    let a3 = s.login("alice", &acme.alice).await;

    let resp = s
        .http
        .post(s.url("/auth/logout"))
        .bearer_auth(&a1.access)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(set_cookie(&resp).unwrap().contains("Max-Age=0"));
    assert_eq!(
        s.get("/auth/me", &a1.access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        s.refresh(&a1.cookie).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(s.get("/auth/me", &a2.access).await.status(), StatusCode::OK);

    // Logout with only the cookie (e.g. the access token already expired).
    let resp = s
        .http
        .post(s.url("/auth/logout"))
        .header("cookie", format!("__Host-palisade_refresh={}", a2.cookie))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        s.get("/auth/me", &a2.access).await.status(),
        StatusCode::UNAUTHORIZED
    );

    let a4 = s.login("alice", &acme.alice).await;
    let resp = s
        .http
        .post(s.url("/auth/logout-all"))
        .bearer_auth(&a3.access)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    for sess in [&a3, &a4] {
        assert_eq!(
            s.get("/auth/me", &sess.access).await.status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            s.refresh(&sess.cookie).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    // Other users are untouched.
    let h = s.login("hannah", &acme.hannah).await;
    assert_eq!(s.get("/auth/me", &h.access).await.status(), StatusCode::OK);

    // Logout without any credential is refused, not silently accepted.
    let resp = s.http.post(s.url("/auth/logout")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn admin_audit_needs_the_admin_role() {
    let s = Server::in_process();
    let acme = seed_acme(&s);
    let a = s.login("alice", &acme.alice).await;
    let resp = s.get("/admin/audit", &a.access).await;
    assert_eq!(
        error_code(resp).await,
        (StatusCode::FORBIDDEN, "forbidden".into())
    );
    let resp = s.http.get(s.url("/admin/audit")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // Roles in a login body change nothing.
    let resp = s
        .post_json(
            "/auth/login",
            &json!({"username":"alice","password":acme.alice,"roles":["admin"],"tenant":"other"}),
        )
        .await;
    let sess = Session::from_response(resp).await;
    let me: Value = s.get("/auth/me", &sess.access).await.json().await.unwrap();
    assert_eq!(me["roles"], json!(["employee"]));
    assert_eq!(me["tenant"], "acme");
    assert_eq!(
        s.get("/admin/audit", &sess.access).await.status(),
        StatusCode::FORBIDDEN
    );
}

/// Sign-in checks the page's origin: another site's page is refused (no login CSRF); a
/// page of this gateway opened at an address it is not configured for is told which
/// one it is configured for, not "wrong password"; nothing is signed in either way.
/// Without `public_origin`, both loopback names of the port listened on work, and a
/// `public_origin` naming this machine at another port is warned about at start-up.
#[tokio::test]
async fn sign_in_names_the_configured_origin_and_unset_means_the_listen_address() {
    let s = Server::start();
    let acme = seed_acme(&s);
    let login = |origin: String, site: &'static str| {
        let s = &s;
        let password = acme.alice.clone();
        async move {
            s.http
                .post(s.url("/auth/login"))
                .header("origin", origin)
                .header("sec-fetch-site", site)
                .json(&json!({"username": "alice", "password": password}))
                .send()
                .await
                .unwrap()
        }
    };
    let r = login("http://127.0.0.1:1234".into(), "same-origin").await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.headers().get("set-cookie").is_none());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "origin_mismatch");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("http://localhost:8080"), "{message}");
    assert!(
        !message.contains("127.0.0.1:1234"),
        "the request's origin is not echoed"
    );
    let (status, code) = error_code(login("https://evil.example".into(), "cross-site").await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::FORBIDDEN, "cross_site_request")
    );
    assert!(
        s.audit_cli("login_succeeded").is_empty(),
        "nobody was signed in"
    );
    assert_eq!(
        login("http://localhost:8080".into(), "same-origin")
            .await
            .status(),
        StatusCode::OK
    );
    // The suite's servers name localhost:8080 but listen elsewhere: said at start-up.
    assert!(
        s.log()
            .contains("public_origin is http://localhost:8080 but palisade listens on"),
        "no start-up warning"
    );

    // Unset: the address listened on, by either loopback name.
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let open = Server::start_with(&[
        ("PALISADE_TEST_LISTEN", listen.as_str()),
        ("PALISADE_PUBLIC_ORIGIN", ""),
    ]);
    let acme = seed_acme(&open);
    for (origin, want) in [
        (format!("http://127.0.0.1:{port}"), StatusCode::OK),
        (format!("http://localhost:{port}"), StatusCode::OK),
        (
            format!("http://localhost:{}", port + 1),
            StatusCode::FORBIDDEN,
        ),
        (format!("https://127.0.0.1:{port}"), StatusCode::FORBIDDEN),
    ] {
        let r = open
            .http
            .post(open.url("/auth/login"))
            .header("origin", &origin)
            .header("sec-fetch-site", "same-origin")
            .json(&json!({"username": "alice", "password": acme.alice}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "{origin}");
    }
    assert!(!open.log().contains("but palisade listens on"));
}
