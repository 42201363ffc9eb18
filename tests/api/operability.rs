//! Operability: per-user and per-tenant budgets and rates (429 with `Retry-After`, the
//! model not called, audited, counted), shared across nodes; metrics that count exactly
//! what happened, served only to whom they are meant for.

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;

use crate::support::*;

const COMPLETIONS: &str = "/v1/chat/completions";

fn ask() -> Value {
    json!({"messages": [{"role": "user", "content": "How are flights booked?"}]})
}

/// The sum of every sample of `name` whose labels include all of `labels`.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = match series.split_once('{') {
                Some((n, rest)) => (n, rest),
                None => (series, ""),
            };
            (n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

#[tokio::test]
async fn a_user_over_the_daily_token_budget_gets_429_and_the_model_is_not_called() {
    // The mock reports 18 tokens per answer: two answers fit under 30, the third does not.
    let (s, mock) =
        start_process_with_mock(&[("PALISADE_LIMITS__USER_TOKENS_PER_DAY", "30")]).await;
    let acme = seed_acme(&s);
    let alice = s.login("alice", &acme.alice).await;
    for _ in 0..2 {
        let r = s.post_auth(COMPLETIONS, &alice.access, &ask()).await;
        assert_eq!(r.status(), StatusCode::OK);
    }
    assert_eq!(mock.count(), 2);
    for _ in 0..2 {
        let r = s.post_auth(COMPLETIONS, &alice.access, &ask()).await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        let retry: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=86_400).contains(&retry), "{retry}");
        assert_eq!(error_code(r).await.1, "budget_exceeded");
    }
    // A thread turn is refused the same way, before anything is stored.
    let t = s.new_thread(&alice.access, "budget").await;
    let r = s
        .post_auth(
            &format!("/v1/threads/{t}/messages"),
            &alice.access,
            &json!({"content": "and hotels?"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        s.thread_json(&alice.access, &t).await["messages"],
        json!([])
    );
    assert_eq!(mock.count(), 2, "the model was not called over budget");

    // Another user of the same tenant is unaffected.
    let hannah = s.login("hannah", &acme.hannah).await;
    let r = s.post_auth(COMPLETIONS, &hannah.access, &ask()).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(mock.count(), 3);

    // Audited once per user and limit per minute, however often the door is tried.
    let admin = s.login("adam", &acme.adam).await;
    let alice_id = s.user_id(&admin.access, "alice").await;
    let events = s.audit_events(&admin.access, "budget_exceeded").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["subject"], json!(alice_id));
    assert_eq!(events[0]["reason"], "user_tokens");
}

#[tokio::test]
async fn a_tenant_rate_and_budget_bind_all_its_users_and_no_one_else() {
    let (s, mock) = start_process_with_mock(&[
        ("PALISADE_LIMITS__TENANT_REQUESTS_PER_MINUTE", "3"),
        ("PALISADE_LIMITS__TENANT_TOKENS_PER_DAY", "1000000"),
    ])
    .await;
    let acme = seed_acme(&s);
    let gina_pw = s.add_user("gina", "employee", "", "globex");
    let alice = s.login("alice", &acme.alice).await;
    let hannah = s.login("hannah", &acme.hannah).await;
    let gina = s.login("gina", &gina_pw).await;
    // Three acme requests between two users, then acme is out for the minute.
    for token in [&alice.access, &hannah.access, &alice.access] {
        assert_eq!(
            s.post_auth(COMPLETIONS, token, &ask()).await.status(),
            StatusCode::OK
        );
    }
    let r = s.post_auth(COMPLETIONS, &hannah.access, &ask()).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(error_code(r).await.1, "too_many_requests");
    assert_eq!(mock.count(), 3);
    // Globex is another tenant.
    assert_eq!(
        s.post_auth(COMPLETIONS, &gina.access, &ask())
            .await
            .status(),
        StatusCode::OK
    );
    let admin = s.login("adam", &acme.adam).await;
    let events = s.audit_events(&admin.access, "budget_exceeded").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["reason"], "tenant_requests");

    // A tenant token budget, on a server of its own.
    let (s, mock) =
        start_process_with_mock(&[("PALISADE_LIMITS__TENANT_TOKENS_PER_DAY", "20")]).await;
    let acme = seed_acme(&s);
    let gina_pw = s.add_user("gina", "employee", "", "globex");
    let alice = s.login("alice", &acme.alice).await;
    let hannah = s.login("hannah", &acme.hannah).await;
    let gina = s.login("gina", &gina_pw).await;
    assert_eq!(
        s.post_auth(COMPLETIONS, &alice.access, &ask())
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        s.post_auth(COMPLETIONS, &hannah.access, &ask())
            .await
            .status(),
        StatusCode::OK
    );
    // 36 tokens used by acme: both of its users are out, globex is not.
    for token in [&alice.access, &hannah.access] {
        let r = s.post_auth(COMPLETIONS, token, &ask()).await;
        assert_eq!(
            error_code(r).await,
            (StatusCode::TOO_MANY_REQUESTS, "budget_exceeded".into())
        );
    }
    assert_eq!(
        s.post_auth(COMPLETIONS, &gina.access, &ask())
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(mock.count(), 3);
}

#[tokio::test]
async fn budgets_are_shared_by_every_node_of_a_cluster() {
    // Two nodes on one store (the cluster store, whatever pass this is).
    let mock = crate::mock::Mock::start().await;
    let space = Arc::new(ClusterSpace::create());
    let keys = tempfile::tempdir().unwrap();
    let file = keys.path().join("keys.json");
    let env = [
        ("PALISADE_LLM__BASE_URL", mock.base_url.as_str()),
        ("PALISADE_LLM__MODEL", "mock-model"),
        ("PALISADE_LIMITS__USER_TOKENS_PER_DAY", "30"),
    ];
    let a = Server::start_node(&space, &file, &env);
    let b = Server::start_node(&space, &file, &env);
    let acme = seed_acme(&a);
    let alice = a.login("alice", &acme.alice).await;
    assert_eq!(
        a.post_auth(COMPLETIONS, &alice.access, &ask())
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        b.post_auth(COMPLETIONS, &alice.access, &ask())
            .await
            .status(),
        StatusCode::OK
    );
    // 36 tokens, spent half on each node: both refuse.
    for node in [&a, &b] {
        let r = node.post_auth(COMPLETIONS, &alice.access, &ask()).await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    }
    assert_eq!(mock.count(), 2);
}

#[tokio::test]
async fn metrics_count_exactly_what_a_scripted_scenario_caused() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let (s, mock) = start_process_with_mock(&[
        ("PALISADE_METRICS__LISTEN", listen.as_str()),
        ("PALISADE_TOKENS__REFRESH_REUSE_GRACE", "0s"),
    ])
    .await;
    let acme = seed_acme(&s);
    let admin = s.login("adam", &acme.adam).await;
    let r = s
        .post_document(&admin.access,
            &json!({"title": "Travel", "text": "Flights are booked through the travel desk.", "acl": {"public": true}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let alice = s.login("alice", &acme.alice).await;

    // The scenario: 3 wrong passwords, 4 garbage tokens, 2 foreign thread ids,
    // 1 refresh replay, 2 completions (each retrieving the travel document).
    for _ in 0..3 {
        assert_eq!(
            s.login_raw("hannah", "wrong").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    for i in 0..4 {
        let r = s.get("/auth/me", &format!("v4.local.garbage{i}")).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let hannah = s.login("hannah", &acme.hannah).await;
    let t = s.new_thread(&hannah.access, "mine").await;
    for _ in 0..2 {
        let r = s.get(&format!("/v1/threads/{t}"), &alice.access).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
    let r = s.refresh(&hannah.cookie).await;
    assert_eq!(r.status(), StatusCode::OK);
    // Replayed outside the grace window (0 s here).
    let r = s.refresh(&hannah.cookie).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    for _ in 0..2 {
        let r = s.post_auth(COMPLETIONS, &alice.access, &ask()).await;
        assert_eq!(r.status(), StatusCode::OK);
    }
    assert_eq!(mock.count(), 2);

    let body = reqwest::get(format!("http://{listen}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let m = |name: &str, labels: &[(&str, &str)]| metric(&body, name, labels);
    assert_eq!(
        m("palisade_auth_failures_total", &[("event", "login_failed")]),
        3.0,
        "{body}"
    );
    assert_eq!(
        m(
            "palisade_auth_failures_total",
            &[("event", "token_rejected")]
        ),
        4.0
    );
    assert_eq!(m("palisade_thread_access_denied_total", &[]), 2.0);
    assert_eq!(m("palisade_refresh_reuse_detected_total", &[]), 1.0);
    assert_eq!(
        m(
            "palisade_upstream_requests_total",
            &[("model", "mock-model"), ("outcome", "ok")]
        ),
        2.0
    );
    assert_eq!(
        m(
            "palisade_upstream_duration_seconds_count",
            &[("model", "mock-model")]
        ),
        2.0
    );
    // The mock reports 11 prompt and 7 completion tokens per answer.
    assert_eq!(
        m("palisade_model_tokens_total", &[("kind", "prompt")]),
        22.0
    );
    assert_eq!(
        m("palisade_model_tokens_total", &[("kind", "completion")]),
        14.0
    );
    assert_eq!(m("palisade_retrievals_total", &[]), 2.0);
    assert_eq!(m("palisade_retrieval_chunks_sum", &[]), 2.0);
    assert_eq!(m("palisade_retrieval_duration_seconds_count", &[]), 2.0);
    // Requests by route template (never an id) and status.
    assert_eq!(
        m(
            "palisade_http_requests_total",
            &[
                ("route", "/v1/threads/{id}"),
                ("method", "GET"),
                ("status", "404")
            ]
        ),
        2.0
    );
    assert_eq!(
        m(
            "palisade_http_requests_total",
            &[("route", "/auth/login"), ("status", "401")]
        ),
        3.0
    );
    assert_eq!(
        m(
            "palisade_http_requests_total",
            &[("route", "/v1/chat/completions"), ("status", "200")]
        ),
        2.0
    );
    assert_eq!(
        m(
            "palisade_http_request_duration_seconds_count",
            &[("route", "/v1/chat/completions")]
        ),
        2.0
    );
    assert!(!body.contains(&t), "a thread id became a label");
    assert!(!body.contains("garbage"), "request input became a label");

    // The separate address serves nothing else; the main one does not serve metrics.
    let other = reqwest::get(format!("http://{listen}/auth/me"))
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
    let main = s.http.get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(main.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn metrics_on_the_main_address_need_the_configured_token() {
    const TOKEN: &str = "metrics-scrape-token-0123456789abcdef";
    let s = Server::start_with(&[
        ("PALISADE_METRICS__BEARER_TOKEN_ENV", "SCRAPE_TOKEN"),
        ("SCRAPE_TOKEN", TOKEN),
    ]);
    let get = |auth: Option<String>| {
        let mut r = s.http.get(s.url("/metrics"));
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        async move { r.send().await.unwrap() }
    };
    assert_eq!(get(None).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        get(Some(format!("Bearer {TOKEN}x"))).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(Some(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1])))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    // A user's access token is not the scrape token.
    let acme = seed_acme(&s);
    let admin = s.login("adam", &acme.adam).await;
    assert_eq!(
        get(Some(format!("Bearer {}", admin.access))).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let ok = get(Some(format!("Bearer {TOKEN}"))).await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert!(
        ok.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let body = ok.text().await.unwrap();
    assert!(body.contains("palisade_http_requests_total"), "{body}");
    assert!(!body.contains(TOKEN));
    // The token never reaches the log.
    assert!(!s.log().contains(TOKEN));

    // A token too short to be a secret refuses to start.
    let out = palisade()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("PALISADE_METRICS__BEARER_TOKEN_ENV", "SCRAPE_TOKEN")
        .env("SCRAPE_TOKEN", "short")
        .env("PALISADE_DATA_DIR", s.data_dir())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("metrics.bearer_token_env"));
    // The CLI's commands that serve nothing need no scrape token.
    for args in [&["audit", "verify"][..], &["audit", "list", "--limit", "1"]] {
        let out = palisade()
            .args(args)
            .env("PALISADE_METRICS__BEARER_TOKEN_ENV", "SCRAPE_TOKEN")
            .env("PALISADE_DATA_DIR", s.data_dir())
            .env("PALISADE_STORE__KIND", store_kind())
            .envs(
                s.env_of("PALISADE_STORE__POSTGRES_URL")
                    .map(|v| ("PALISADE_STORE__POSTGRES_URL", v)),
            )
            .envs(
                s.env_of("PALISADE_STORE__REDIS_PREFIX")
                    .map(|v| ("PALISADE_STORE__REDIS_PREFIX", v)),
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test]
async fn a_client_that_disconnects_mid_stream_still_pays_for_what_it_used() {
    // 100 tokens a day; the streamed question alone is estimated above that.
    let (s, mock) =
        start_process_with_mock(&[("PALISADE_LIMITS__USER_TOKENS_PER_DAY", "100")]).await;
    mock.set_chunk_delay(300);
    let acme = seed_acme(&s);
    let alice = s.login("alice", &acme.alice).await;
    let long = "Please summarise the whole travel policy for me, every section of it. ".repeat(6);
    let body = json!({"stream": true, "messages": [{"role": "user", "content": long}]});
    // Read the first chunk, then hang up long before the answer ends (and before the
    // upstream's usage chunk, which would have been the count charged).
    let mut r = s.post_auth(COMPLETIONS, &alice.access, &body).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.chunk().await.unwrap().is_some());
    drop(r);
    // The server notices at its next write (one chunk delay); the meter then charges
    // the dropped stream, and the very next request finds the day's budget spent.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let r = s
        .post_auth(
            COMPLETIONS,
            &alice.access,
            &json!({"messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(
        error_code(r).await,
        (StatusCode::TOO_MANY_REQUESTS, "budget_exceeded".into()),
        "hanging up mid-stream must not make answers free"
    );
    assert_eq!(mock.count(), 1);
}

/// Requests in flight together cannot overshoot a token budget: each holds its prompt
/// estimate and output cap before the model is called, and one that does not fit is
/// refused (429) without an upstream call. The stand-in holds every request until
/// palisade gives up on it, so all of them are in flight at once.
#[tokio::test]
async fn concurrent_requests_reserve_the_budget_before_the_model_is_called() {
    // Three requests' worth: each reserves its output cap (1,000) plus its prompt
    // estimate (a little over a thousand with the retrieval allowance).
    for (budget, max_tokens, parallel, reach) in [("7000", 1_000, 20, 3), ("1000", 0, 5, 1)] {
        let (s, mock) = start_with_mock(&[("PALISADE_LIMITS__USER_TOKENS_PER_DAY", budget)]).await;
        mock.set_mode(crate::mock::Mode::Hang);
        let acme = seed_acme(&s);
        let alice = s.login("alice", &acme.alice).await;
        let mut body = ask();
        if max_tokens > 0 {
            body["max_tokens"] = json!(max_tokens);
        }
        let calls = (0..parallel).map(|_| s.post_auth(COMPLETIONS, &alice.access, &body));
        let statuses: Vec<StatusCode> = futures_util::future::join_all(calls)
            .await
            .iter()
            .map(|r| r.status())
            .collect();
        let refused = statuses
            .iter()
            .filter(|st| **st == StatusCode::TOO_MANY_REQUESTS)
            .count();
        assert_eq!(mock.count(), reach, "budget {budget}: {statuses:?}");
        assert_eq!(refused, parallel - reach, "{statuses:?}");
        // The refusal is audited (once per user, limit and minute).
        let admin = s.login("adam", &acme.adam).await;
        let events = s.audit_events(&admin.access, "budget_exceeded").await;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["reason"], "user_tokens");
        // The failed calls gave their holds back: the next request is let through.
        mock.set_mode(crate::mock::Mode::Echo);
        eventually(
            std::time::Duration::from_secs(5),
            "a request after the holds are given back",
            || async {
                let r = s.post_auth(COMPLETIONS, &alice.access, &body).await;
                (r.status() == StatusCode::OK).then_some(())
            },
        )
        .await;
    }
}
