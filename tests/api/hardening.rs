//! Attacks from the hardening pass, each reproduced: world-readable store files, a
//! forced logout through one malformed cookie, logout of the wrong session, work done
//! before validation.

use crate::support::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn store_files_are_private_even_in_a_preexisting_open_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let run = |args: &[&str]| {
        palisade()
            .env("PALISADE_EMBEDDINGS__KIND", "none")
            .arg("--data-dir")
            .arg(&data)
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["user", "list"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let db = data.join("palisade.db");
    assert_eq!(mode(&db), 0o600);
    for side in ["palisade.db-wal", "palisade.db-shm"] {
        let p = data.join(side);
        if p.exists() {
            assert_eq!(mode(&p), 0o600, "{side}");
        }
    }
    assert_eq!(mode(&data.join("keys.json")), 0o600);

    // A store file someone made readable by others is refused, not used.
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(&["user", "list"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600)).unwrap();
    // So is a data directory others may write to.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = run(&["user", "list"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 700"));
}

#[tokio::test]
async fn a_malformed_cookie_beside_ours_does_not_log_the_user_out() {
    let s = Server::start();
    let acme = seed_acme(&s);
    let a = s.login("alice", &acme.alice).await;
    let resp = s
        .http
        .post(s.url("/auth/refresh"))
        .header(
            "cookie",
            reqwest::header::HeaderValue::from_bytes(
                format!(
                    "theme=d\u{e9}j\u{e0}; __Host-palisade_refresh={}; x=\"unclosed",
                    a.cookie
                )
                .as_bytes(),
            )
            .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "the refresh cookie was read");
    let set = set_cookie(&resp).unwrap();
    assert!(!set.contains("Max-Age=0"), "the cookie was not cleared");
}

#[tokio::test]
async fn logout_with_another_sessions_cookie_ends_both_sessions() {
    let s = Server::start();
    let acme = seed_acme(&s);
    let one = s.login("alice", &acme.alice).await;
    let two = s.login("alice", &acme.alice).await;
    let resp = s
        .http
        .post(s.url("/auth/logout"))
        .bearer_auth(&one.access)
        .header("cookie", format!("__Host-palisade_refresh={}", two.cookie))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(set_cookie(&resp).unwrap().contains("Max-Age=0"));
    // The bearer's session is over, and the session whose cookie was cleared too: no
    // live session is left behind a cookie the browser no longer has.
    assert_eq!(
        s.get("/auth/me", &one.access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let (st, _) = error_code(s.refresh(&two.cookie).await).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(
        s.get("/auth/me", &two.access).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn an_oversized_completion_is_refused_before_any_retrieval_or_audit() {
    let (s, mock) = start_with_mock(&[("PALISADE_THREADS__MAX_MESSAGE_CHARS", "1000")]).await;
    let acme = seed_acme(&s);
    let adam = s.login("adam", &acme.adam).await;
    let r = s
        .post_document(&adam.access, &json!({"title": "Travel", "text": "Flights are booked in economy class.", "acl": {"public": true}}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let a = s.login("alice", &acme.alice).await;
    let huge = format!("flights economy {}", "x".repeat(40_000));
    let r = s
        .post_auth(
            "/v1/chat/completions",
            &a.access,
            &json!({"messages": [{"role": "user", "content": huge}]}),
        )
        .await;
    let (st, code) = error_code(r).await;
    assert_eq!(
        (st, code.as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "message_too_long")
    );
    // An oversized message earlier in the history is refused the same way.
    let r = s
        .post_auth(
            "/v1/chat/completions",
            &a.access,
            &json!({"messages": [{"role": "assistant", "content": huge}, {"role": "user", "content": "flights?"}]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(mock.count(), 0);
    let retrievals: Vec<Value> = s.audit_cli("retrieval");
    assert!(
        retrievals.is_empty(),
        "no documents went anywhere: {retrievals:?}"
    );
}

#[tokio::test]
async fn a_hundred_concurrent_guesses_evaluate_at_most_the_limit() {
    let s = Server::start_with(&[("PALISADE_LIMITS__LOGIN_ATTEMPTS_PER_IP", "1000")]);
    let acme = seed_acme(&s);
    let mut tasks = Vec::new();
    for i in 0..100 {
        let http = s.http.clone();
        let url = s.url("/auth/login");
        // The right password is among them.
        let pw = if i == 57 {
            acme.alice.clone()
        } else {
            format!("guess-{i}")
        };
        tasks.push(tokio::spawn(async move {
            http.post(url)
                .json(&json!({"username": "alice", "password": pw}))
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    let mut throttled = 0;
    for t in tasks {
        if t.await.unwrap() == StatusCode::TOO_MANY_REQUESTS {
            throttled += 1;
        }
    }
    // Each evaluated guess leaves a login_failed or login_succeeded event.
    let evaluated = s.audit_cli("login_failed").len() + s.audit_cli("login_succeeded").len();
    assert!(evaluated <= 5, "{evaluated} passwords were evaluated");
    assert_eq!(throttled, 100 - evaluated);
}

async fn login_from(s: &Server, user: &str, password: &str, ip: &str) -> StatusCode {
    s.http
        .post(s.url("/auth/login"))
        .header("x-forwarded-for", ip)
        .json(&json!({"username": user, "password": password}))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn a_stranger_cannot_lock_an_account_with_case_variants() {
    // Two client addresses, as seen behind a trusted proxy.
    let s = Server::start_with(&[("PALISADE_TRUSTED_PROXIES", "[\"127.0.0.0/8\"]")]);
    let acme = seed_acme(&s);
    for variant in ["ALICE", "Alice", "alice", " aLiCe ", "ALICE", "alice"] {
        login_from(&s, variant, "wrong", "203.0.113.66").await;
    }
    // The attacker's address is throttled for this account, under every spelling…
    assert_eq!(
        login_from(&s, "Alice", &acme.alice, "203.0.113.66").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // …and the real user, elsewhere, is not.
    assert_eq!(
        login_from(&s, "alice", &acme.alice, "198.51.100.7").await,
        StatusCode::OK
    );
    // One canonical form: the variants were counted as one account in the audit trail.
    let failed = s.audit_cli("login_failed");
    assert!(
        failed.iter().all(|e| e["username"] == "alice"),
        "{failed:?}"
    );
}

#[tokio::test]
async fn a_password_typed_as_the_username_never_reaches_the_audit_trail() {
    let s = Server::start();
    seed_acme(&s);
    let secret = "Tr0ub4dor&3-typed-in-the-wrong-field";
    for _ in 0..2 {
        let r = s.login_raw(secret, "whatever").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let failed = s.audit_cli("login_failed");
    assert_eq!(failed.len(), 2);
    let names: Vec<&str> = failed
        .iter()
        .map(|e| e["username"].as_str().unwrap())
        .collect();
    assert!(names[0].starts_with("unknown:"), "{names:?}");
    assert_eq!(
        names[0], names[1],
        "a stable pseudonym, so repeats can be correlated"
    );
    let everything =
        String::from_utf8(s.cli(&["audit", "list", "--limit", "10000"], None).stdout).unwrap();
    assert!(!everything.to_lowercase().contains(&secret.to_lowercase()));
    assert!(!s.log().to_lowercase().contains(&secret.to_lowercase()));
    // A known user's failures still name the account.
    s.login_raw("Hannah", "wrong").await;
    assert!(
        s.audit_cli("login_failed")
            .iter()
            .any(|e| e["username"] == "hannah")
    );
}

#[tokio::test]
async fn parallel_key_rotations_keep_every_key_and_the_server_follows() {
    let s = Server::start();
    let acme = seed_acme(&s);
    let before = s.login("alice", &acme.alice).await;
    // The footer is base64url JSON carrying the key id.
    let kid = |t: &str| {
        use base64::Engine;
        let footer = t.rsplit_once('.').unwrap().1;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(footer)
            .unwrap();
        serde_json::from_slice::<Value>(&raw).unwrap()["kid"]
            .as_str()
            .unwrap()
            .to_owned()
    };

    // Eight operators rotate at once: each new key lands in the file.
    let children: Vec<_> = (0..8)
        .map(|_| {
            let mut c = palisade();
            c.env("PALISADE_EMBEDDINGS__KIND", "none")
                .arg("--data-dir")
                .arg(s.data_dir())
                .args(["keys", "rotate"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            c.spawn().unwrap()
        })
        .collect();
    let mut new_ids = Vec::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8(out.stdout).unwrap();
        new_ids.push(
            line.split_whitespace()
                .nth(3)
                .unwrap()
                .trim_end_matches(';')
                .to_owned(),
        );
    }
    let file: Value =
        serde_json::from_slice(&std::fs::read(s.data_dir().join("keys.json")).unwrap()).unwrap();
    let stored: Vec<&str> = file["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert_eq!(stored.len(), 9, "the first key and eight new ones");
    for id in &new_ids {
        assert!(stored.contains(&id.as_str()), "{id} was lost");
    }
    let active = file["active"].as_str().unwrap().to_owned();

    // The running server mints with the newest key within a second or two, and still
    // verifies tokens of the old one.
    let mut minted = String::new();
    for _ in 0..30 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let t = s.login("hannah", &acme.hannah).await;
        minted = kid(&t.access);
        if minted == active {
            break;
        }
    }
    assert_eq!(minted, active, "the server mints with the newest key");
    assert_ne!(kid(&before.access), active);
    assert_eq!(
        s.get("/auth/me", &before.access).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn readiness_exercises_the_store_and_a_truncated_database_stops_all_service() {
    // A damaged local file: the embedded store's fault, whatever store the suite runs on.
    let s = Server::start_with(&[("PALISADE_STORE__KIND", "embedded")]);
    let acme = seed_acme(&s);
    let a = s.login("alice", &acme.alice).await;
    let r = s.http.get(s.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["checks"], json!({"read": "ok", "write": "ok"}));

    // Someone truncates the database under the running server.
    std::fs::OpenOptions::new()
        .write(true)
        .open(s.data_dir().join("palisade.db"))
        .unwrap()
        .set_len(0)
        .unwrap();
    let r = s.http.get(s.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["checks"]["read"], "corrupt");
    assert_eq!(body["error"]["code"], "service_unavailable");
    // From then on every protected request is refused alike — even one the caches
    // could still have answered.
    for path in ["/auth/me", "/v1/threads", "/v1/documents"] {
        let r = s.get(path, &a.access).await;
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
    }
    let r = s.login_raw("alice", &acme.alice).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(!s.log().contains("panicked"));
}

// Multi-threaded, with bodies serialised beforehand: the probe must not wait behind
// this test's own upload traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_large_uploads_do_not_stall_other_requests() {
    let s = Server::start();
    let acme = seed_acme(&s);
    let adam = s.login("adam", &acme.adam).await;
    let para =
        "Expenses are reimbursed within thirty days when submitted with receipts. ".repeat(12);
    let text: String = std::iter::repeat_n(para.as_str(), 1050)
        .collect::<Vec<_>>()
        .join("\n\n");
    assert!(text.len() > 900_000 && text.len() < 1_000_000);
    let upload = |title: &'static str| {
        let http = s.http.clone();
        let url = s.url("/v1/documents");
        let tok = adam.access.clone();
        let body =
            serde_json::to_vec(&json!({"title": title, "text": text, "acl": {"public": true}}))
                .unwrap();
        tokio::spawn(async move {
            http.post(url)
                .bearer_auth(tok)
                .header("content-type", "application/json")
                .header("prefer", "wait=25")
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    let started = std::time::Instant::now();
    let (a, b) = (upload("big one"), upload("big two"));
    let mut worst = std::time::Duration::ZERO;
    let mut probes = 0;
    while !(a.is_finished() && b.is_finished()) {
        let t = std::time::Instant::now();
        let r = s.http.get(s.url("/healthz")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        worst = worst.max(t.elapsed());
        probes += 1;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(a.await.unwrap(), StatusCode::CREATED);
    assert_eq!(b.await.unwrap(), StatusCode::CREATED);
    eprintln!(
        "worst /healthz {worst:?} over {probes} probes; uploads took {:?}",
        started.elapsed()
    );
    assert!(probes >= 3, "the uploads took {:?}", started.elapsed());
    // A stall is seconds (the whole ingestion); the bound leaves room for a loaded
    // two-core machine running the suite four tests at a time.
    assert!(
        worst < std::time::Duration::from_millis(500),
        "/healthz took {worst:?} while two 1 MB documents were ingested"
    );
}

#[tokio::test]
async fn history_that_quotes_a_document_no_longer_readable_is_withheld_and_redacted() {
    const CANARY: &str = "CANARY-HISTORY-8812";
    let (s, mock) = start_with_mock(&[]).await;
    let acme = seed_acme(&s);
    let adam = s.login("adam", &acme.adam).await;
    let r = s
        .post_document(&adam.access, &json!({"title": "Salary bands", "text": format!("Senior engineers earn 105,000 to 135,000. Reference {CANARY}."), "acl": {"roles": ["hr"]}}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let hannah = s.login("hannah", &acme.hannah).await;
    let t = s.new_thread(&hannah.access, "pay").await;
    let ask = |tok: String, q: &'static str| {
        let s = &s;
        let t = t.clone();
        async move {
            s.post_auth(
                &format!("/v1/threads/{t}/messages"),
                &tok,
                &json!({"content": q}),
            )
            .await
        }
    };
    assert_eq!(
        ask(hannah.access.clone(), "What do senior engineers earn?")
            .await
            .status(),
        StatusCode::OK
    );
    assert!(
        mock.everything_seen().contains(CANARY),
        "positive control: HR could read it"
    );
    let before = s.thread_json(&hannah.access, &t).await;
    assert!(before.to_string().contains(CANARY));

    // HR's role is removed (which ends her sessions); she signs in again.
    let id = s.user_id(&adam.access, "hannah").await;
    let r = s
        .http
        .patch(s.url(&format!("/admin/users/{id}")))
        .bearer_auth(&adam.access)
        .json(&json!({"roles": ["employee"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let hannah = s.login("hannah", &acme.hannah).await;

    // The next turn's prompt carries none of the old answer that quoted the document.
    let seen_before = mock.count();
    assert_eq!(
        ask(hannah.access.clone(), "And what about travel?")
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(mock.count(), seen_before + 1);
    let last = serde_json::to_string(&mock.last_messages()).unwrap();
    assert!(
        !last.contains(CANARY),
        "the withheld answer reached the model: {last}"
    );

    // The thread keeps every message; the one quoting the document is shown redacted.
    let after = s.thread_json(&hannah.access, &t).await;
    let msgs = after["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 4, "nothing deleted");
    assert!(!after.to_string().contains(CANARY));
    assert_eq!(msgs[1]["redacted"], "source_no_longer_accessible");
    assert_eq!(msgs[1]["content"], "");
    assert_eq!(msgs[0]["content"], "What do senior engineers earn?");
    assert!(msgs[0].get("redacted").is_none());
}

#[tokio::test]
async fn a_user_in_300_groups_gets_a_small_token_that_works() {
    let s = Server::start();
    let acme = seed_acme(&s);
    // Directory groups of ~25 characters, as enterprise IdPs send them.
    let groups: Vec<String> = (0..300)
        .map(|i| format!("dir-group-engineering-{i:03}"))
        .collect();
    let pw = s.add_user("gina", "employee", &groups.join(","), "acme");
    let g = s.login("gina", &pw).await;
    assert!(g.access.len() < 1024, "token of {} bytes", g.access.len());
    let me: Value = s.get("/auth/me", &g.access).await.json().await.unwrap();
    assert_eq!(me["groups"].as_array().unwrap().len(), 300);
    // The groups count for retrieval: a document for the last one is found.
    let adam = s.login("adam", &acme.adam).await;
    let r = s
        .post_document(&adam.access, &json!({"title": "Team 299 roster", "text": "The roster of team two hundred ninety nine.", "acl": {"groups": ["dir-group-engineering-299"]}}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let found = s
        .post_auth("/v1/search", &g.access, &json!({"query": "roster team"}))
        .await
        .text()
        .await
        .unwrap();
    assert!(found.contains("Team 299 roster"));
    // And a token cannot carry access of its own: alice's token says nothing of roles.
    let alice = s.login("alice", &acme.alice).await;
    assert!(alice.access.len() < 1024);
}

/// The ranking oracle (item 5): a writer plants two documents and reads the order of its
/// own results to learn whether a guessed word occurs in documents it may not read —
/// another tenant's, or another ACL's in its own tenant. The order (and the scores) must
/// be the same whether or not the word exists there.
#[tokio::test]
async fn ranking_reveals_nothing_about_documents_the_caller_cannot_read() {
    let s = Server::start_with(&[("PALISADE_EMBEDDINGS__KIND", "none")]);
    let acme = seed_acme(&s);
    let eve_pw = s.add_user("eve", "employee,admin", "executives", "globex");
    let eve = s.login("eve", &eve_pw).await;
    let adam = s.login("adam", &acme.adam).await;
    let post = |token: String, title: &'static str, text: String, acl: Value| {
        let s = &s;
        async move {
            let resp = s
                .post_document(&token, &json!({"title": title, "text": text, "acl": acl}))
                .await;
            assert_eq!(resp.status(), StatusCode::CREATED, "{title}");
        }
    };
    // Equal but for the guessed word and length: the shorter one wins while the two
    // words are equally rare.
    post(
        eve.access.clone(),
        "probe-a",
        "7731 report".into(),
        json!({"public": true}),
    )
    .await;
    post(
        eve.access.clone(),
        "probe-b",
        "zebra quarterly report notes".into(),
        json!({"public": true}),
    )
    .await;
    let ranking = || async {
        let resp = s
            .post_auth(
                "/v1/search",
                &eve.access,
                &json!({"query": "7731 zebra", "k": 5}),
            )
            .await;
        assert_eq!(resp.status(), StatusCode::OK);
        let body: Value = resp.json().await.unwrap();
        body["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["title"].as_str().unwrap().to_owned(),
                    r["score"].as_f64().unwrap(),
                )
            })
            .collect::<Vec<_>>()
    };
    let before = ranking().await;
    assert_eq!(
        before.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(),
        ["probe-a", "probe-b"]
    );

    // The word becomes common where eve cannot look: in another tenant, and behind an
    // ACL of her own tenant that she may write to but not read.
    for i in 0..20 {
        post(
            adam.access.clone(),
            "acme secret",
            format!("Project 7731 acquisition budget line {i}"),
            json!({"roles": ["hr"]}),
        )
        .await;
    }
    for i in 0..20 {
        post(
            eve.access.clone(),
            "globex hr only",
            format!("7731 severance plan {i}"),
            json!({"roles": ["hr"]}),
        )
        .await;
    }
    let after = ranking().await;
    assert_eq!(
        after, before,
        "the order of eve's results moved with unreadable text"
    );
}

/// The device cookie a sign-in sets, as a `Cookie` header value.
fn device_cookie_of(resp: &reqwest::Response) -> String {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|c| c.starts_with("__Host-palisade_device="))
        .map(|c| {
            assert!(
                c.contains("HttpOnly") && c.contains("Secure") && c.contains("SameSite=Strict"),
                "{c}"
            );
            c.split(';').next().unwrap().to_owned()
        })
        .expect("a device cookie")
}

async fn login_with(
    s: &Server,
    user: &str,
    password: &str,
    ip: &str,
    cookie: Option<&str>,
) -> reqwest::Response {
    let mut req = s
        .http
        .post(s.url("/auth/login"))
        .header("x-forwarded-for", ip)
        .json(&json!({"username": user, "password": password}));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    req.send().await.unwrap()
}

/// A stranger spends the per-username allowance from 25 addresses and keeps trickling
/// guesses; the owner, from the browser she signed in with before, gets in every time.
/// The stranger stays throttled, with or without a device cookie of his own account,
/// and a device cookie that guesses wrong is throttled on its own.
#[tokio::test]
async fn a_stranger_cannot_lock_the_owner_out_of_her_known_browser() {
    let s = Server::in_process_with(&[
        ("PALISADE_TRUSTED_PROXIES", "[\"127.0.0.0/8\"]"),
        // The shared ceiling barely refills while the test runs.
        ("PALISADE_LIMITS__LOGIN_USER_ATTEMPTS_PER_MINUTE", "1"),
    ]);
    let acme = seed_acme(&s);
    let home = "198.51.100.7";
    let r = login_with(&s, "alice", &acme.alice, home, None).await;
    assert_eq!(r.status(), StatusCode::OK);
    let alices_browser = device_cookie_of(&r);
    let r = login_with(&s, "hannah", &acme.hannah, "203.0.113.200", None).await;
    let strangers_own = device_cookie_of(&r);

    // 125 wrong passwords from 25 addresses: the per-username allowance is spent.
    for i in 0..125 {
        let ip = format!("203.0.113.{}", i % 25);
        let st = login_with(&s, "alice", "wrong", &ip, None).await.status();
        assert!(
            st == StatusCode::UNAUTHORIZED || st == StatusCode::TOO_MANY_REQUESTS,
            "{st}"
        );
    }
    // Control: without her browser's cookie, even the owner's right password is
    // throttled, from an address never used before.
    assert_eq!(
        login_with(&s, "alice", &acme.alice, "192.0.2.50", None)
            .await
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    let mut cookie = alices_browser.clone();
    for round in 0..12 {
        // The stranger keeps trickling, from fresh addresses and with a device cookie
        // of another account: throttled.
        let ip = format!("203.0.113.{}", 100 + round);
        for c in [None, Some(strangers_own.as_str())] {
            assert_eq!(
                login_with(&s, "alice", "guess", &ip, c).await.status(),
                StatusCode::TOO_MANY_REQUESTS,
                "round {round}"
            );
        }
        // The owner signs in every time from her known browser.
        let r = login_with(&s, "alice", &acme.alice, home, Some(&cookie)).await;
        assert_eq!(r.status(), StatusCode::OK, "round {round}");
        cookie = device_cookie_of(&r);
    }
    // A forged or tampered cookie is a stranger's.
    let tampered = format!("{}x", &alices_browser);
    assert_eq!(
        login_with(&s, "alice", &acme.alice, "192.0.2.51", Some(&tampered))
            .await
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // Her browser's cookie guessing wrong is throttled on its own after five failures
    // (from five addresses, so no address limit is what stops it).
    for i in 0..5 {
        let ip = format!("192.0.2.{}", 60 + i);
        assert_eq!(
            login_with(&s, "alice", "wrong", &ip, Some(&cookie))
                .await
                .status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        login_with(&s, "alice", &acme.alice, home, Some(&cookie))
            .await
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

/// The embedded store's write-ahead log is deleted while ten clients post chat turns
/// (committed pages live in it until a checkpoint). The writer notices within one
/// commit or 50 ms, copies the log's contents into the database file through its open
/// handle, and refuses every write from then on; after kill -9 and a restart every
/// acknowledged turn is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_write_ahead_log_loses_no_acknowledged_write() {
    let (mut s, _mock) = start_process_with_mock(&[
        ("PALISADE_STORE__KIND", "embedded"),
        ("PALISADE_THREADS__CHAT_REQUESTS_PER_MINUTE", "100000"),
    ])
    .await;
    let acme = seed_acme(&s);
    let alice = s.login("alice", &acme.alice).await;
    let mut threads = Vec::new();
    for i in 0..10 {
        threads.push(s.new_thread(&alice.access, &format!("t{i}")).await);
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for t in threads.clone() {
        let (http, url, tok, stop) = (
            s.http.clone(),
            s.url(&format!("/v1/threads/{t}/messages")),
            alice.access.clone(),
            stop.clone(),
        );
        clients.push(tokio::spawn(async move {
            let (mut acked, mut refused) = (Vec::new(), 0usize);
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                n += 1;
                let q = format!("question {n}");
                let r = http
                    .post(&url)
                    .bearer_auth(&tok)
                    .json(&json!({ "content": q }))
                    .send()
                    .await;
                match r.map(|r| r.status()) {
                    Ok(StatusCode::OK) => acked.push(q),
                    Ok(StatusCode::SERVICE_UNAVAILABLE) => refused += 1,
                    other => panic!("unexpected {other:?}"),
                }
            }
            (acked, refused)
        }));
    }
    let before = eventually(Duration::from_secs(10), "some turns answered", || async {
        let shown = s.thread_json(&alice.access, &threads[0]).await;
        (shown["messages"].as_array().unwrap().len() >= 6).then_some(())
    });
    before.await;
    std::fs::remove_file(s.data_dir().join("palisade.db-wal")).unwrap();
    // Detected: readiness is red and writes are refused.
    eventually(Duration::from_secs(2), "readiness red", || async {
        let r = s.http.get(s.url("/readyz")).send().await.unwrap();
        (r.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(())
    })
    .await;
    let refused_seen = eventually(Duration::from_secs(5), "writes refused", || async {
        let r = s
            .post_auth(
                &format!("/v1/threads/{}/messages", threads[0]),
                &alice.access,
                &json!({"content": "after"}),
            )
            .await;
        (r.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(())
    });
    refused_seen.await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut acked = Vec::new();
    let mut refused = 0;
    for (t, c) in threads.iter().zip(clients) {
        let (a, r) = c.await.unwrap();
        refused += r;
        acked.push((t.clone(), a));
    }
    let total: usize = acked.iter().map(|(_, a)| a.len()).sum();
    assert!(total >= 10, "{total} turns acknowledged");

    s.kill9();
    s.restart();
    let alice = s.login("alice", &acme.alice).await;
    let mut lost = 0;
    for (t, questions) in &acked {
        let page = s
            .thread_json(&alice.access, &format!("{t}?limit=200"))
            .await;
        let stored: Vec<&str> = page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["role"] == "user")
            .map(|m| m["content"].as_str().unwrap())
            .collect();
        lost += questions
            .iter()
            .filter(|q| !stored.contains(&q.as_str()))
            .count();
    }
    eprintln!("{total} turns acknowledged, {refused} refused after the loss, {lost} lost");
    assert_eq!(lost, 0, "acknowledged turns lost");
}

/// A thousand concurrent readiness probes of a healthy node: every one is green (on
/// the cluster store, concurrent probes once read back each other's Redis writes and
/// queued for the pool, reporting a healthy store as down).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_probes_of_a_healthy_node_are_all_green() {
    let s = Server::in_process();
    let probes = (0..1000).map(|_| {
        let (http, url) = (s.http.clone(), s.url("/readyz"));
        tokio::spawn(async move {
            let r = http.get(url).send().await.unwrap();
            let st = r.status();
            (st, r.text().await.unwrap())
        })
    });
    let mut red = Vec::new();
    for p in probes.collect::<Vec<_>>() {
        let (st, body) = p.await.unwrap();
        if st != StatusCode::OK {
            red.push(body);
        }
    }
    assert!(
        red.is_empty(),
        "{} false reds, e.g. {:?}",
        red.len(),
        red.first()
    );
}
