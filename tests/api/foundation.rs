//! Document management by writers, atomic rate limits, request ids, trusted proxies,
//! thread pagination and the operator's document commands.

use crate::support::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

const HR_CANARY: &str = "CANARY-HR-WRITER-5150";

async fn hr_document(s: &Server, writer: &str) -> String {
    let r = s
        .post_document(writer,
            &json!({"title": "HR bonus plan", "text": format!("The bonus plan pays twelve percent. Reference {HR_CANARY}."), "acl": {"roles": ["hr"]}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_writer_lists_and_deletes_a_document_they_cannot_read() {
    let (s, mock) = start_with_mock(&[]).await;
    let acme = seed_acme(&s);
    let adam = s.login("adam", &acme.adam).await; // admin, not hr
    let hannah = s.login("hannah", &acme.hannah).await;
    let alice = s.login("alice", &acme.alice).await;
    let id = hr_document(&s, &adam.access).await;

    // adam cannot read it, but lists it as metadata.
    assert!(
        !search_text(&s, &adam.access, "bonus plan")
            .await
            .contains(HR_CANARY)
    );
    // Its metadata and ingestion state, never its text.
    let r = s.get(&format!("/v1/documents/{id}"), &adam.access).await;
    assert_eq!(r.status(), StatusCode::OK);
    let meta: Value = r.json().await.unwrap();
    assert_eq!(meta["state"], "ready");
    assert!(meta.get("text").is_none(), "{meta}");
    assert!(!meta.to_string().contains(HR_CANARY));
    let listing: Value = s
        .get("/v1/documents", &adam.access)
        .await
        .json()
        .await
        .unwrap();
    let entry = listing["documents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == id.as_str())
        .expect("the writer lists every document of the tenant");
    assert_eq!(entry["acl"]["roles"], json!(["hr"]));
    assert_eq!(entry["created_by"].as_str().unwrap().len(), 22);
    assert!(
        !listing.to_string().contains(HR_CANARY),
        "no text in the listing"
    );

    // hannah reads it; alice (no writer) cannot delete it and learns nothing.
    assert!(
        search_text(&s, &hannah.access, "bonus plan")
            .await
            .contains(HR_CANARY)
    );
    let (st, code) = error_code(
        s.delete(&format!("/v1/documents/{id}"), &alice.access)
            .await,
    )
    .await;
    assert_eq!((st, code.as_str()), (StatusCode::NOT_FOUND, "not_found"));
    let unknown = s
        .delete(&format!("/v1/documents/{}", random_id()), &alice.access)
        .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    // A document alice can read but not write: forbidden.
    let public = s
        .post_document(&adam.access, &json!({"title": "Canteen", "text": "Lunch is served at noon.", "acl": {"public": true}}))
        .await
        .json::<Value>()
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        s.delete(&format!("/v1/documents/{public}"), &alice.access)
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    // A writer of another tenant cannot touch it.
    let g = s.add_user("gadmin", "admin,hr", "", "globex");
    let gadmin = s.login("gadmin", &g).await;
    assert_eq!(
        s.delete(&format!("/v1/documents/{id}"), &gadmin.access)
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    assert!(
        search_text(&s, &hannah.access, "bonus plan")
            .await
            .contains(HR_CANARY)
    );

    // adam deletes it: gone from the next search and the next chat.
    assert_eq!(
        s.delete(&format!("/v1/documents/{id}"), &adam.access)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert!(
        !search_text(&s, &hannah.access, "bonus plan")
            .await
            .contains(HR_CANARY)
    );
    let t = s.new_thread(&hannah.access, "bonus").await;
    let r = s
        .post_auth(
            &format!("/v1/threads/{t}/messages"),
            &hannah.access,
            &json!({"content": "What does the bonus plan pay?"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(!mock.everything_seen().contains(HR_CANARY));
    let deleted = s.audit_events(&adam.access, "document_deleted").await;
    assert!(deleted.iter().any(|e| e["resource"] == id.as_str()));
}

#[tokio::test]
async fn twenty_concurrent_chats_against_a_limit_of_five_admit_exactly_five() {
    let (s, mock) = start_with_mock(&[("PALISADE_THREADS__CHAT_REQUESTS_PER_MINUTE", "5")]).await;
    let acme = seed_acme(&s);
    let a = s.login("alice", &acme.alice).await;
    let body = json!({"messages": [{"role": "user", "content": "hello"}]});
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let http = s.http.clone();
        let url = s.url("/v1/chat/completions");
        let (tok, body) = (a.access.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            http.post(url)
                .bearer_auth(tok)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    let mut ok = 0;
    let mut limited = 0;
    for t in tasks {
        match t.await.unwrap() {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => limited += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((ok, limited), (5, 15));
    assert_eq!(
        mock.count(),
        5,
        "the throttled requests never reached the model"
    );
    // Another user is unaffected.
    let h = s.login("hannah", &acme.hannah).await;
    let r = s.post_auth("/v1/chat/completions", &h.access, &body).await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_its_audit_events_do_too() {
    let s = Server::start();
    let acme = seed_acme(&s);
    let admin = s.login("adam", &acme.adam).await;
    // Minted when absent: 128 random bits.
    for path in ["/healthz", "/no/such/path"] {
        let r = s.http.get(s.url(path)).send().await.unwrap();
        let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert_eq!(id.len(), 22, "{path}");
    }
    let other = s.http.get(s.url("/healthz")).send().await.unwrap();
    let again = s.http.get(s.url("/healthz")).send().await.unwrap();
    assert_ne!(
        other.headers()["x-request-id"],
        again.headers()["x-request-id"]
    );

    // A plain inbound id is kept (a proxy's correlation id), on the response and in
    // the audit event of that request.
    let r = s
        .http
        .get(s.url(&format!("/v1/threads/{}", random_id())))
        .bearer_auth(&admin.access)
        .header("x-request-id", "probe-7f3a")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.headers()["x-request-id"], "probe-7f3a");
    let denied = s.audit_events(&admin.access, "thread_access_denied").await;
    assert!(denied.iter().any(|e| e["request_id"] == "probe-7f3a"));
    let by_id: Value = s
        .get("/admin/audit?request_id=probe-7f3a", &admin.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(by_id["events"].as_array().unwrap().len(), 1);

    // Anything else that could forge a log line is replaced by a minted id.
    let r = s
        .http
        .get(s.url("/healthz"))
        .header("x-request-id", "a\"}{\"kind\":\"forged")
        .send()
        .await
        .unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap();
    assert_eq!(id.len(), 22);
    assert!(!id.contains('"'));
    // And the server log carries the id of the request it describes.
    assert!(s.log().contains("probe-7f3a"));
}

async fn failed_login_ips(s: &Server, xff: &str) -> Vec<String> {
    let r = s
        .http
        .post(s.url("/auth/login"))
        .header("x-forwarded-for", xff)
        .json(&json!({"username": "alice", "password": "wrong password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    s.audit_cli("login_failed")
        .iter()
        .map(|e| e["ip"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[tokio::test]
async fn forwarded_for_is_ignored_from_an_untrusted_peer() {
    let s = Server::in_process_with(&[("PALISADE_LIMITS__LOGIN_ATTEMPTS_PER_IP", "3")]);
    seed_acme(&s);
    assert_eq!(failed_login_ips(&s, "203.0.113.5").await, ["127.0.0.1"]);
    // Rotating the header does not buy more attempts from one address.
    failed_login_ips(&s, "203.0.113.6").await;
    failed_login_ips(&s, "203.0.113.7").await;
    let r = s
        .http
        .post(s.url("/auth/login"))
        .header("x-forwarded-for", "203.0.113.8")
        .json(&json!({"username": "alice", "password": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn forwarded_for_is_believed_behind_a_trusted_proxy() {
    let s = Server::in_process_with(&[("PALISADE_TRUSTED_PROXIES", "[\"127.0.0.0/8\"]")]);
    seed_acme(&s);
    // The rightmost address our proxy did not add itself.
    assert_eq!(
        failed_login_ips(&s, "198.51.100.1, 203.0.113.5, 127.0.0.2").await,
        ["203.0.113.5"]
    );
}

#[tokio::test]
async fn thread_pages_join_up_to_the_whole_thread() {
    let s = Server::in_process_with(&[("PALISADE_THREADS__CHAT_REQUESTS_PER_MINUTE", "1000")]);
    let acme = seed_acme(&s);
    let a = s.login("alice", &acme.alice).await;
    let id = s.new_thread(&a.access, "long").await;
    for i in 0..30 {
        let r = s
            .post_auth(
                &format!("/v1/threads/{id}/messages"),
                &a.access,
                &json!({"content": format!("question {i}")}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
    }
    // The default page is the newest 50 of 60, with a cursor to the rest.
    let first = s.thread_json(&a.access, &id).await;
    assert_eq!(first["messages"].as_array().unwrap().len(), 50);
    assert!(first["next"].is_string());

    let mut all: Vec<Value> = Vec::new();
    let mut url = format!("/v1/threads/{id}?limit=7");
    loop {
        let page: Value = s.get(&url, &a.access).await.json().await.unwrap();
        let mut msgs = page["messages"].as_array().unwrap().clone();
        assert!(msgs.len() <= 7);
        msgs.extend(all);
        all = msgs;
        match page["next"].as_str() {
            Some(n) => url = format!("/v1/threads/{id}?limit=7&before={n}"),
            None => break,
        }
    }
    assert_eq!(all.len(), 60);
    let questions: Vec<String> = all
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = (0..30).map(|i| format!("question {i}")).collect();
    assert_eq!(questions, expected);
    let ids: std::collections::HashSet<&str> =
        all.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 60, "no message twice");

    // A cursor is no key: another user with a valid cursor still gets 404.
    let h = s.login("hannah", &acme.hannah).await;
    let r = s
        .get(&format!("/v1/threads/{id}?before=10"), &h.access)
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = s
        .get(&format!("/v1/threads/{id}?before=abc"), &a.access)
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn the_operator_lists_and_removes_documents_from_the_cli() {
    let s = Server::in_process();
    let acme = seed_acme(&s);
    let adam = s.login("adam", &acme.adam).await;
    let hannah = s.login("hannah", &acme.hannah).await;
    let id = hr_document(&s, &adam.access).await;

    let out = s.cli(&["doc", "list", "--tenant", "acme"], None);
    assert!(out.status.success());
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["id"], id.as_str());
    assert_eq!(lines[0]["acl"]["roles"], json!(["hr"]));
    assert!(!lines[0].to_string().contains(HR_CANARY));

    // The wrong tenant finds nothing to remove; the right one removes it.
    let out = s.cli(&["doc", "rm", &id, "--tenant", "globex"], None);
    assert!(!out.status.success());
    // Refused because the document is not that tenant's, not for any other reason (an
    // id may begin with '-').
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no document"), "{err}");
    assert!(
        search_text(&s, &hannah.access, "bonus plan")
            .await
            .contains(HR_CANARY)
    );
    let out = s.cli(&["doc", "rm", &id, "--tenant", "acme"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !search_text(&s, &hannah.access, "bonus plan")
            .await
            .contains(HR_CANARY)
    );
    let removed = s.audit_cli("document_deleted");
    assert!(
        removed
            .iter()
            .any(|e| e["resource"] == id.as_str() && e["subject"] == "cli")
    );
}

#[tokio::test]
async fn acknowledged_turns_survive_kill_9_under_concurrent_load() {
    // Writes are group-committed: many turns share one fsync. "Acknowledged" must still
    // mean "on disk": kill -9 right after the last 200 loses nothing.
    let mut s = Server::start_with(&[("PALISADE_THREADS__CHAT_REQUESTS_PER_MINUTE", "100000")]);
    let acme = seed_acme(&s);
    let a = s.login("alice", &acme.alice).await;
    let mut threads = Vec::new();
    for i in 0..8 {
        threads.push(s.new_thread(&a.access, &format!("t{i}")).await);
    }
    let mut tasks = Vec::new();
    for (ti, id) in threads.iter().enumerate() {
        for n in 0..15 {
            let http = s.http.clone();
            let url = s.url(&format!("/v1/threads/{id}/messages"));
            let tok = a.access.clone();
            tasks.push(tokio::spawn(async move {
                let content = format!("durable {ti}-{n}");
                let r = http
                    .post(url)
                    .bearer_auth(tok)
                    .json(&json!({ "content": content }))
                    .send()
                    .await
                    .unwrap();
                (r.status() == StatusCode::OK).then_some((ti, content))
            }));
        }
    }
    let mut acknowledged = Vec::new();
    for t in tasks {
        if let Some(ok) = t.await.unwrap() {
            acknowledged.push(ok);
        }
    }
    s.kill9();
    assert_eq!(acknowledged.len(), 120, "every turn was answered");
    s.restart();
    let a = s.login("alice", &acme.alice).await;
    for (ti, id) in threads.iter().enumerate() {
        let page: Value = s
            .get(&format!("/v1/threads/{id}?limit=200"), &a.access)
            .await
            .json()
            .await
            .unwrap();
        let stored: Vec<&str> = page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["role"] == "user")
            .map(|m| m["content"].as_str().unwrap())
            .collect();
        for (_, content) in acknowledged.iter().filter(|(t, _)| *t == ti) {
            assert!(stored.contains(&content.as_str()), "{content} was lost");
        }
        assert_eq!(page["messages"].as_array().unwrap().len(), 30);
    }
}
