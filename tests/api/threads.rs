//! Owner-bound threads, from the attacker's side.

use crate::support::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn thread_lifecycle_with_server_side_history() {
    let (s, mock) = start_with_mock(&[]).await;
    let acme = seed_acme(&s);
    let a = s.login("alice", &acme.alice).await;

    let resp = s.post_auth("/v1/threads", &a.access, &json!({})).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let t: Value = resp.json().await.unwrap();
    let id = t["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 22, "128 random bits");
    assert_eq!(t["title"], "New conversation");

    let resp = s
        .post_auth(
            &format!("/v1/threads/{id}/messages"),
            &a.access,
            &json!({"content": "hello there"}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let m: Value = resp.json().await.unwrap();
    assert_eq!(m["message"]["role"], "assistant");
    assert_eq!(m["message"]["citations"], json!([]));
    let sent = mock.last_messages();
    assert_eq!(sent[0]["role"], "system");
    assert_eq!(sent.last().unwrap()["content"], "hello there");
    assert_eq!(
        m["message"]["content"],
        crate::mock::echo_of(&Value::Array(sent.clone()))
    );

    // The second turn carries the first from the server's store.
    s.post_auth(
        &format!("/v1/threads/{id}/messages"),
        &a.access,
        &json!({"content": "and again"}),
    )
    .await;
    let sent = mock.last_messages();
    let roles: Vec<&str> = sent.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);

    let full = s.thread_json(&a.access, &id).await;
    assert_eq!(full["messages"].as_array().unwrap().len(), 4);
    let list: Value = s.get("/v1/threads", &a.access).await.json().await.unwrap();
    assert_eq!(list["threads"].as_array().unwrap().len(), 1);

    assert_eq!(
        s.delete(&format!("/v1/threads/{id}"), &a.access)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        s.get(&format!("/v1/threads/{id}"), &a.access)
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.delete(&format!("/v1/threads/{id}"), &a.access)
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn another_users_thread_is_indistinguishable_from_a_missing_one() {
    let (s, mock) = start_with_mock(&[]).await;
    let acme = seed_acme(&s);
    s.add_user("eve", "employee,admin", "", "globex");
    let a = s.login("alice", &acme.alice).await;
    let h = s.login("hannah", &acme.hannah).await;
    let admin = s.login("adam", &acme.adam).await;
    let eve = s.login("eve", "pw-eve-correct-horse").await;

    let id = s.new_thread(&a.access, "salary negotiation").await;
    s.post_auth(
        &format!("/v1/threads/{id}/messages"),
        &a.access,
        &json!({"content": "my secret"}),
    )
    .await;
    let before = s.thread_json(&a.access, &id).await;
    let calls_before = mock.count();
    let random = random_id();

    for attacker in [&h, &admin, &eve] {
        // GET, POST a message, DELETE, and continue through the OpenAI face.
        let probes = |target: String| {
            let s = &s;
            let tok = attacker.access.clone();
            async move {
                let get = s.get(&format!("/v1/threads/{target}"), &tok).await;
                let post = s
                    .post_auth(
                        &format!("/v1/threads/{target}/messages"),
                        &tok,
                        &json!({"content": "continue"}),
                    )
                    .await;
                let del = s.delete(&format!("/v1/threads/{target}"), &tok).await;
                let cc = s
                    .http
                    .post(s.url("/v1/chat/completions"))
                    .bearer_auth(&tok)
                    .header("x-palisade-thread", &target)
                    .json(&json!({"messages": [{"role": "user", "content": "what did I say?"}]}))
                    .send()
                    .await
                    .unwrap();
                let mut out = Vec::new();
                for r in [get, post, del, cc] {
                    out.push((r.status(), r.bytes().await.unwrap()));
                }
                out
            }
        };
        let foreign = probes(id.clone()).await;
        let missing = probes(random.clone()).await;
        for ((fs, fb), (ms, mb)) in foreign.iter().zip(&missing) {
            assert_eq!(*fs, StatusCode::NOT_FOUND);
            assert_eq!(
                (fs, fb),
                (ms, mb),
                "foreign and missing ids answer identically"
            );
        }
    }
    // Nothing reached the model, nothing changed, and each refusal was audited.
    assert_eq!(
        mock.count(),
        calls_before,
        "no upstream call for a refused thread"
    );
    assert_eq!(s.thread_json(&a.access, &id).await, before);
    let denied = s.audit_cli("thread_access_denied");
    let on_target = denied
        .iter()
        .filter(|e| e["resource"] == id.as_str())
        .count();
    assert_eq!(on_target, 12, "3 attackers x 4 probes");
    assert!(denied.iter().any(|e| e["tenant"] == "globex"));
    // The victim's listing is untouched and the attackers' are empty.
    let list: Value = s.get("/v1/threads", &h.access).await.json().await.unwrap();
    assert_eq!(list["threads"], json!([]));
}

#[tokio::test]
async fn ten_thousand_random_ids_find_nothing() {
    let (s, mock) = start_with_mock(&[]).await;
    let acme = seed_acme(&s);
    let a = s.login("alice", &acme.alice).await;
    let h = s.login("hannah", &acme.hannah).await;
    for i in 0..5 {
        s.new_thread(&a.access, &format!("alice {i}")).await;
    }
    let found = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..16 {
        let http = s.http.clone();
        let base = s.base.clone();
        let tok = h.access.clone();
        let found = found.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..(10_000 / 16 + usize::from(w < 10_000 % 16)) {
                let r = http
                    .get(format!("{base}/v1/threads/{}", random_id()))
                    .bearer_auth(&tok)
                    .send()
                    .await
                    .unwrap();
                match r.status() {
                    StatusCode::NOT_FOUND => {}
                    other => {
                        found.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        panic!("probe answered {other}");
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(found.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(mock.count(), 0);
    assert_eq!(s.audit_cli("thread_access_denied").len(), 10_000);
}

#[tokio::test]
async fn strict_binding_confines_threads_to_their_session() {
    let (s, mock) = start_with_mock(&[("PALISADE_THREADS__BINDING", "session")]).await;
    let acme = seed_acme(&s);
    let one = s.login("alice", &acme.alice).await;
    let two = s.login("alice", &acme.alice).await;
    let id = s.new_thread(&one.access, "session one").await;

    let list: Value = s
        .get("/v1/threads", &two.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        list["threads"],
        json!([]),
        "listing hides other sessions' threads"
    );
    assert_eq!(
        s.get(&format!("/v1/threads/{id}"), &two.access)
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    let post = s
        .post_auth(
            &format!("/v1/threads/{id}/messages"),
            &two.access,
            &json!({"content": "hi"}),
        )
        .await;
    assert_eq!(post.status(), StatusCode::NOT_FOUND);
    assert_eq!(mock.count(), 0);
    assert_eq!(
        s.delete(&format!("/v1/threads/{id}"), &two.access)
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    s.thread_json(&one.access, &id).await;

    // A refreshed token of the same session keeps access; after logout nothing does.
    let refreshed = Session::from_response(s.refresh(&one.cookie).await).await;
    s.thread_json(&refreshed.access, &id).await;
    let resp = s
        .http
        .post(s.url("/auth/logout"))
        .bearer_auth(&one.access)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    for tok in [&one.access, &refreshed.access] {
        assert_eq!(
            s.get(&format!("/v1/threads/{id}"), tok).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
}

#[tokio::test]
async fn limits_answer_clearly_and_write_nothing() {
    let (s, mock) = start_with_mock(&[
        ("PALISADE_THREADS__MAX_MESSAGE_CHARS", "50"),
        ("PALISADE_THREADS__MAX_MESSAGES_PER_THREAD", "3"),
        ("PALISADE_THREADS__MAX_THREADS_PER_USER", "2"),
        ("PALISADE_THREADS__CHAT_REQUESTS_PER_MINUTE", "5"),
    ])
    .await;
    let acme = seed_acme(&s);
    let a = s.login("alice", &acme.alice).await;
    let id = s.new_thread(&a.access, "one").await;
    s.new_thread(&a.access, "two").await;
    let resp = s
        .post_auth("/v1/threads", &a.access, &json!({"title": "three"}))
        .await;
    assert_eq!(
        error_code(resp).await,
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "thread_limit_reached".into()
        )
    );
    let resp = s
        .post_auth("/v1/threads", &a.access, &json!({"title": "x".repeat(201)}))
        .await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let post = |content: String| {
        let s = &s;
        let tok = a.access.clone();
        let id = id.clone();
        async move {
            s.post_auth(
                &format!("/v1/threads/{id}/messages"),
                &tok,
                &json!({"content": content}),
            )
            .await
        }
    };
    assert_eq!(
        error_code(post("x".repeat(51)).await).await,
        (StatusCode::PAYLOAD_TOO_LARGE, "message_too_long".into())
    );
    assert_eq!(
        error_code(post("   ".into()).await).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        s.thread_json(&a.access, &id).await["messages"],
        json!([]),
        "nothing half-written"
    );
    assert_eq!(mock.count(), 0);

    assert_eq!(post("first".into()).await.status(), StatusCode::OK); // user + assistant = 2
    assert_eq!(post("second".into()).await.status(), StatusCode::OK); // 3 (+1 answer) = 4
    assert_eq!(
        error_code(post("third".into()).await).await,
        (StatusCode::UNPROCESSABLE_ENTITY, "thread_full".into())
    );
    assert_eq!(
        s.thread_json(&a.access, &id).await["messages"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert_eq!(mock.count(), 2);

    // 5 chat requests per minute: 5 were made above; the 6th is throttled.
    let resp = post("fourth".into()).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(mock.count(), 2);
}

/// The history this process keeps of a thread (so that a turn reads only what it has
/// not seen) never changes what the model is shown: every prompt holds exactly the
/// newest stored messages that fit the budget — through a run of turns, after a long
/// question (little history fits, little is kept) followed by short ones (their larger
/// budget), and after a restart (nothing kept). The reach past what is kept is
/// covered in `threads::history`'s unit tests.
#[tokio::test]
async fn every_turn_sees_exactly_the_newest_stored_history_that_fits_its_budget() {
    const BUDGET: usize = 1500;
    let (mut s, mock) =
        start_process_with_mock(&[("PALISADE_THREADS__HISTORY_BUDGET_TOKENS", "1500")]).await;
    // ~105 tokens an answer: about twelve turns fit the budget.
    mock.always(crate::mock::Reply::Text(
        "An answer of about one hundred tokens. ".repeat(11),
    ));
    let acme = seed_acme(&s);
    let a = s.login("alice", &acme.alice).await;
    let id = s.new_thread(&a.access, "budget").await;
    for i in 0..16 {
        ask(&s, &a.access, &id, &format!("short question {i}")).await;
        assert_prompt_history(&s, &mock, &a.access, &id, BUDGET).await;
    }
    // ~630 tokens: the history budget shrinks by as much, and so does what is kept.
    ask(&s, &a.access, &id, &"a long question ".repeat(160)).await;
    assert_prompt_history(&s, &mock, &a.access, &id, BUDGET).await;
    for i in 0..3 {
        ask(&s, &a.access, &id, &format!("short again {i}")).await;
        assert_prompt_history(&s, &mock, &a.access, &id, BUDGET).await;
    }
    assert!(s.terminate().success());
    s.restart();
    let a = s.login("alice", &acme.alice).await;
    ask(&s, &a.access, &id, "after a restart").await;
    assert_prompt_history(&s, &mock, &a.access, &id, BUDGET).await;
}

/// A thread whose history this process holds in memory is still nobody else's: after
/// its owner's turns, another user of the tenant, a user of another tenant and the
/// owner from another session (strict binding) all get the 404 of a missing thread;
/// nothing is stored, the model is not called, and each denial is audited.
#[tokio::test]
async fn a_thread_held_in_memory_is_still_refused_to_everyone_else() {
    let (s, mock) = start_with_mock(&[("PALISADE_THREADS__BINDING", "session")]).await;
    let acme = seed_acme(&s);
    let eve_password = s.add_user("eve", "employee", "", "globex");
    let owner = s.login("alice", &acme.alice).await;
    let id = s.new_thread(&owner.access, "held").await;
    for i in 0..3 {
        ask(&s, &owner.access, &id, &format!("private question {i}")).await;
    }
    let calls = mock.count();
    let denied = s.audit_cli("thread_access_denied").len();
    let strangers = [
        s.login("hannah", &acme.hannah).await,
        s.login("eve", &eve_password).await,
        s.login("alice", &acme.alice).await,
    ];
    for stranger in &strangers {
        let resp = s
            .post_auth(
                &format!("/v1/threads/{id}/messages"),
                &stranger.access,
                &json!({"content": "continue this conversation"}),
            )
            .await;
        assert_eq!(
            error_code(resp).await,
            (StatusCode::NOT_FOUND, "not_found".into())
        );
        let resp = s
            .http
            .post(s.url("/v1/chat/completions"))
            .bearer_auth(&stranger.access)
            .header("x-palisade-thread", &id)
            .json(&json!({"model": "mock-model", "messages": [{"role": "user", "content": "and now?"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(resp).await,
            (StatusCode::NOT_FOUND, "not_found".into())
        );
    }
    assert_eq!(mock.count(), calls, "the model was not called");
    assert_eq!(s.audit_cli("thread_access_denied").len(), denied + 6);
    let stored = s.thread_json(&owner.access, &id).await;
    assert_eq!(stored["messages"].as_array().unwrap().len(), 6);
    assert!(!stored.to_string().contains("continue this conversation"));
    // The owner's own next turn still sees its whole history.
    ask(&s, &owner.access, &id, "private question 3").await;
    let prompt = Value::Array(mock.last_messages()).to_string();
    for i in 0..3 {
        assert!(
            prompt.contains(&format!("private question {i}")),
            "{prompt}"
        );
    }
}

/// Rename and search, from the attacker's side too: another user's thread cannot be
/// renamed (404, as for a missing one, and its title is untouched) and never shows up
/// in a search; a search matches titles and the owner's own questions, never answers,
/// and takes `%` and `_` literally.
#[tokio::test]
async fn threads_are_renamed_and_searched_by_their_owner_only() {
    let (s, mock) = start_with_mock(&[]).await;
    mock.always(crate::mock::Reply::Text(
        "The answer mentions zanzibar only here.".into(),
    ));
    let acme = seed_acme(&s);
    let alice = s.login("alice", &acme.alice).await;
    let hannah = s.login("hannah", &acme.hannah).await;
    let mine = s.new_thread(&alice.access, "Travel plans").await;
    ask(&s, &alice.access, &mine, "Is 100% of the hotel refunded?").await;
    let other = s.new_thread(&alice.access, "Lunch").await;
    let hers = s.new_thread(&hannah.access, "Travel budget").await;

    let titles = |v: Value| -> Vec<String> {
        v["threads"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["title"].as_str().unwrap().to_owned())
            .collect()
    };
    let search = |token: String, q: &'static str| {
        let s = &s;
        async move {
            let r = s
                .http
                .get(s.url("/v1/threads"))
                .query(&[("q", q)])
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        }
    };
    let (st, v) = search(alice.access.clone(), "TRAVEL").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(titles(v), ["Travel plans"], "hannah's thread leaked");
    let (_, v) = search(alice.access.clone(), "hotel").await;
    assert_eq!(titles(v), ["Travel plans"], "by the owner's own question");
    let (_, v) = search(alice.access.clone(), "zanzibar").await;
    assert!(titles(v).is_empty(), "answers are not searched");
    let (_, v) = search(alice.access.clone(), "100%").await;
    assert_eq!(titles(v), ["Travel plans"]);
    let (_, v) = search(alice.access.clone(), "1_0").await;
    assert!(titles(v).is_empty(), "`_` is not a wildcard");
    let (st, _) = search(alice.access.clone(), "   ").await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);

    // Rename own; another's is refused exactly like a missing one.
    let rename = |token: String, id: String, body: Value| {
        let s = &s;
        async move {
            s.http
                .patch(s.url(&format!("/v1/threads/{id}")))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let r = rename(
        alice.access.clone(),
        other.clone(),
        json!({"title": "Lunch menus"}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["title"], "Lunch menus");
    let hijack = rename(
        alice.access.clone(),
        hers.clone(),
        json!({"title": "pwned"}),
    )
    .await;
    let missing = rename(alice.access.clone(), random_id(), json!({"title": "pwned"})).await;
    assert_eq!(error_code(hijack).await, error_code(missing).await);
    assert_eq!(
        s.thread_json(&hannah.access, &hers).await["title"],
        "Travel budget"
    );
    for bad in [
        json!({"title": ""}),
        json!({"title": "x".repeat(201)}),
        json!({"name": "x"}),
    ] {
        let r = rename(alice.access.clone(), other.clone(), bad.clone()).await;
        assert!(r.status().is_client_error(), "{bad}: {}", r.status());
    }
    assert_eq!(
        s.thread_json(&alice.access, &other).await["title"],
        "Lunch menus"
    );
}

/// Regenerate asks the last question again: the new answer replaces the old one in the
/// thread's view and in every later prompt (the earlier asking and its answer are out,
/// the question is sent once); twice in a row as well. Another user's thread is a 404
/// like a missing one; a thread without a question is a 422.
#[tokio::test]
async fn regenerate_replaces_the_last_answer_in_the_view_and_in_later_prompts() {
    use crate::mock::Reply;
    let (s, mock) = start_with_mock(&[]).await;
    let acme = seed_acme(&s);
    let alice = s.login("alice", &acme.alice).await;
    let hannah = s.login("hannah", &acme.hannah).await;
    let t = s.new_thread(&alice.access, "again").await;
    mock.push_reply(Reply::Text("ANSWER-ONE".into()));
    ask(&s, &alice.access, &t, "First question?").await;
    mock.push_reply(Reply::Text("ANSWER-TWO".into()));
    ask(&s, &alice.access, &t, "Second question?").await;

    let regenerate = |token: String, id: String, body: Option<Value>| {
        let s = &s;
        async move {
            let mut r = s
                .http
                .post(s.url(&format!("/v1/threads/{id}/regenerate")))
                .bearer_auth(token);
            if let Some(b) = body {
                r = r.json(&b);
            }
            r.send().await.unwrap()
        }
    };
    let shown = |t: Value| -> Vec<String> {
        t["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["content"].as_str().unwrap().to_owned())
            .collect()
    };
    let sent = || -> Vec<String> {
        mock.last_messages()
            .iter()
            .filter(|m| m["role"] != "system")
            .map(|m| m["content"].as_str().unwrap_or_default().to_owned())
            .collect()
    };

    mock.push_reply(Reply::Text("ANSWER-THREE".into()));
    let r = regenerate(alice.access.clone(), t.clone(), None).await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["message"]["content"], "ANSWER-THREE");
    assert_eq!(
        sent(),
        ["First question?", "ANSWER-ONE", "Second question?"],
        "the old answer is out of the prompt"
    );
    assert_eq!(
        shown(s.thread_json(&alice.access, &t).await),
        [
            "First question?",
            "ANSWER-ONE",
            "Second question?",
            "ANSWER-THREE"
        ]
    );

    // Again, streamed.
    mock.push_reply(Reply::Text("ANSWER-FOUR".into()));
    let r = regenerate(
        alice.access.clone(),
        t.clone(),
        Some(json!({"stream": true})),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let events = read_sse(r).await;
    assert!(events.iter().any(|e| e.event == "done"), "{events:?}");
    assert_eq!(
        sent(),
        ["First question?", "ANSWER-ONE", "Second question?"]
    );
    assert_eq!(
        shown(s.thread_json(&alice.access, &t).await),
        [
            "First question?",
            "ANSWER-ONE",
            "Second question?",
            "ANSWER-FOUR"
        ]
    );
    // The next question sees the conversation as shown.
    mock.push_reply(Reply::Text("ANSWER-FIVE".into()));
    ask(&s, &alice.access, &t, "Third question?").await;
    assert_eq!(
        sent(),
        [
            "First question?",
            "ANSWER-ONE",
            "Second question?",
            "ANSWER-FOUR",
            "Third question?"
        ]
    );

    // Someone else's thread, a missing one, an empty one.
    let hers = regenerate(hannah.access.clone(), t.clone(), None).await;
    let missing = regenerate(hannah.access.clone(), random_id(), None).await;
    assert_eq!(error_code(hers).await, error_code(missing).await);
    let calls = mock.count();
    let empty = s.new_thread(&alice.access, "empty").await;
    let (status, _) = error_code(regenerate(alice.access.clone(), empty, None).await).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        mock.count(),
        calls,
        "no model call for a refused regenerate"
    );
}
