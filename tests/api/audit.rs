//! The audit trail as evidence: a hash chain that `palisade audit verify` checks
//! (attacked by editing, deleting, reordering and forging records directly in the
//! store), filters on `/admin/audit`, and data-access lineage.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

/// `palisade audit verify`: Ok(stdout) or Err(stderr).
fn verify(s: &Server) -> Result<String, String> {
    let out = s.cli(&["audit", "verify"], None);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Every chained record through the CLI, oldest first.
fn chain(s: &Server) -> Vec<Value> {
    let out = s.cli(&["audit", "list", "--limit", "100000"], None);
    assert!(out.status.success());
    let mut v: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    v.reverse();
    v
}

fn assert_fails_at(s: &Server, seq: i64, what: &str) {
    let err = verify(s).expect_err(what);
    assert!(
        err.contains(&format!("FAILED at record {seq}")),
        "{what}: expected record {seq} to be named: {err}"
    );
}

#[tokio::test]
async fn editing_or_deleting_any_audit_record_is_detected_and_named() {
    let s = Server::in_process();
    let acme = seed_acme(&s);
    let admin = s.login("adam", &acme.adam).await;
    assert_eq!(
        s.login_raw("mallory", "guess").await.status(),
        StatusCode::UNAUTHORIZED
    );
    // An admin action and a new document (with its ACL) are security events too.
    let alice_id = s.user_id(&admin.access, "alice").await;
    let r = s
        .http
        .patch(s.url(&format!("/admin/users/{alice_id}")))
        .bearer_auth(&admin.access)
        .json(&json!({"groups": ["engineering", "finance"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = s
        .post_document(&admin.access,
            &json!({"title": "Payroll", "text": "Payroll runs on the 25th.", "acl": {"public": true}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    // (The change ended alice's sessions.)
    let alice = s.login("alice", &acme.alice).await;
    let t = s.new_thread(&alice.access, "mine").await;
    let _ = s
        .post_auth(
            &format!("/v1/threads/{t}/messages"),
            &alice.access,
            &json!({"content": "When does payroll run?"}),
        )
        .await;

    let records = chain(&s);
    let kinds: Vec<&str> = records
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    for k in [
        "user_created",
        "login_succeeded",
        "login_failed",
        "user_access_changed",
        "document_created",
        "retrieval",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    // Untouched, the trail verifies, and every record carries its place and hash.
    let n = records.len() as i64;
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["seq"], json!(i as i64 + 1));
        assert_eq!(r["hash"].as_str().unwrap().len(), 64);
    }
    let ok = verify(&s).expect("an untouched trail verifies");
    assert!(ok.contains(&format!("{n} records (1..={n})")), "{ok}");

    let failed = records
        .iter()
        .find(|r| r["kind"] == "login_failed")
        .unwrap()["seq"]
        .as_i64()
        .unwrap();
    let changed = records
        .iter()
        .find(|r| r["kind"] == "user_access_changed")
        .unwrap()["seq"]
        .as_i64()
        .unwrap();

    // 1. A field edited (covering up whose login failed), then put back.
    s.sql(&format!(
        "UPDATE audit_events SET reason = 'bad_password' WHERE seq = {failed}"
    ));
    assert_fails_at(&s, failed, "an edited reason");
    s.sql(&format!(
        "UPDATE audit_events SET reason = '{}' WHERE seq = {failed}",
        records[failed as usize - 1]["reason"].as_str().unwrap()
    ));
    verify(&s).expect("restored");

    // 2. Back-dated.
    s.sql(&format!(
        "UPDATE audit_events SET ts = ts - 86400000 WHERE seq = {changed}"
    ));
    assert_fails_at(&s, changed, "a back-dated record");
    s.sql(&format!(
        "UPDATE audit_events SET ts = ts + 86400000 WHERE seq = {changed}"
    ));
    verify(&s).expect("restored");

    // 3. A record deleted from the middle, then put back.
    let hide = |seq: i64| {
        s.sql(&format!(
            "CREATE TABLE audit_bak AS SELECT * FROM audit_events WHERE seq = {seq};
             DELETE FROM audit_events WHERE seq = {seq};"
        ))
    };
    let unhide =
        || s.sql("INSERT INTO audit_events SELECT * FROM audit_bak; DROP TABLE audit_bak;");
    hide(changed);
    assert_fails_at(&s, changed, "a deleted admin action");
    unhide();
    verify(&s).expect("restored");

    // 4. The newest record deleted (the end of the chain no longer meets its head).
    hide(n);
    assert_fails_at(&s, n, "a deleted last record");
    unhide();
    verify(&s).expect("restored");

    // 5. Two records swapped (each keeps its hash, at the other's place).
    s.sql(&format!(
        "UPDATE audit_events SET seq = -1 WHERE seq = {failed};
         UPDATE audit_events SET seq = {failed} WHERE seq = {changed};
         UPDATE audit_events SET seq = {changed} WHERE seq = -1;"
    ));
    assert_fails_at(&s, failed.min(changed), "swapped records");
    s.sql(&format!(
        "UPDATE audit_events SET seq = -1 WHERE seq = {failed};
         UPDATE audit_events SET seq = {failed} WHERE seq = {changed};
         UPDATE audit_events SET seq = {changed} WHERE seq = -1;"
    ));
    verify(&s).expect("restored");

    // 6. An edit by someone who knows the format: the record re-hashed to match (with
    //    palisade's own code), so it checks out by itself — but the next record no
    //    longer links to it.
    let hex = |v: &Value| -> Vec<u8> {
        let h = v.as_str().unwrap();
        (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
            .collect()
    };
    let mut forged: palisade::model::AuditEvent =
        serde_json::from_value(records[failed as usize - 1].clone()).unwrap();
    forged.username = Some("someone-else".into());
    let prev = palisade::model::ChainHash::from_slice(&hex(&records[failed as usize - 2]["hash"]))
        .unwrap();
    let rehashed = forged.chain_hash(&prev, failed).hex();
    let blob = |h: &str| {
        if store_kind() == "cluster" {
            format!("decode('{h}', 'hex')")
        } else {
            format!("X'{h}'")
        }
    };
    s.sql(&format!(
        "UPDATE audit_events SET username = 'someone-else', hash = {} WHERE seq = {failed}",
        blob(&rehashed)
    ));
    assert_fails_at(&s, failed + 1, "a re-hashed edit");
    let original = &records[failed as usize - 1];
    s.sql(&format!(
        "UPDATE audit_events SET username = '{}', hash = {} WHERE seq = {failed}",
        original["username"].as_str().unwrap(),
        blob(original["hash"].as_str().unwrap())
    ));
    verify(&s).expect("restored");

    // 7. The lineage index thinned (hiding who saw a document).
    s.sql(
        "CREATE TABLE lineage_bak AS SELECT * FROM audit_lineage;
         DELETE FROM audit_lineage;",
    );
    let err = verify(&s).expect_err("a thinned lineage index");
    assert!(err.contains("lineage index"), "{err}");
    s.sql("INSERT INTO audit_lineage SELECT * FROM lineage_bak; DROP TABLE lineage_bak;");

    // After every repair, the trail verifies again and the server goes on appending to it.
    verify(&s).expect("restored");
    assert_eq!(
        s.login_raw("alice", "wrong").await.status(),
        StatusCode::UNAUTHORIZED
    );
    let ok = verify(&s).expect("appends continue the chain");
    assert!(ok.contains(&format!("(1..={})", n + 1)), "{ok}");
}

#[tokio::test]
async fn the_admin_audit_view_filters_by_user_event_and_time() {
    let s = Server::in_process();
    let acme = seed_acme(&s);
    let admin = s.login("adam", &acme.adam).await;
    let _ = s.login("alice", &acme.alice).await;
    let _ = s.login("hannah", &acme.hannah).await;
    let alice_id = s.user_id(&admin.access, "alice").await;
    let get = |q: String| {
        let s = &s;
        let token = admin.access.clone();
        async move {
            let r = s.get(&format!("/admin/audit?{q}"), &token).await;
            let status = r.status();
            let body: Value = r.json().await.unwrap();
            (status, body)
        }
    };
    let (st, body) = get(format!("user={alice_id}&event=login_succeeded")).await;
    assert_eq!(st, StatusCode::OK);
    let events = body["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{body}");
    assert_eq!(events[0]["subject"], json!(alice_id));
    assert!(events[0]["seq"].is_i64() && events[0]["hash"].is_string());
    let (_, body) = get(format!("user={alice_id}")).await;
    let kinds: Vec<&str> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["login_succeeded", "user_created"]);
    // Time (RFC 3339): nothing in the future, everything since 2020.
    let future = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    let future = future
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (_, body) = get(format!("since={}", future.replace('+', "%2B"))).await;
    assert_eq!(body["events"], json!([]));
    let (_, body) = get("since=2020-01-01T00:00:00Z&event=login_succeeded".into()).await;
    assert_eq!(body["events"].as_array().unwrap().len(), 3);
    let (_, body) = get("until=2020-01-01T00:00:00Z".into()).await;
    assert_eq!(body["events"], json!([]));
    for bad in ["yesterday", "1700000000000", ""] {
        let (st, body) = get(format!("since={bad}")).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    // Not an admin: 403.
    let alice = s.login("alice", &acme.alice).await;
    let r = s.get("/admin/audit", &alice.access).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn lineage_names_who_had_a_document_in_a_prompt_and_in_which_thread() {
    let s = Server::in_process();
    let acme = seed_acme(&s);
    let gina_pw = s.add_user("gina", "employee,admin", "", "globex");
    let admin = s.login("adam", &acme.adam).await;
    let post = |title: &str, text: &str, acl: Value| {
        let body = json!({"title": title, "text": text, "acl": acl});
        let s = &s;
        let token = admin.access.clone();
        async move {
            let r = s.post_document(&token, &body).await;
            assert_eq!(r.status(), StatusCode::CREATED);
            let v: Value = r.json().await.unwrap();
            v["id"].as_str().unwrap().to_owned()
        }
    };
    let hr = post(
        "Salary bands 2026",
        "Salary bands for 2026: engineers 90k to 140k, managers 120k to 180k.",
        json!({"roles": ["hr"]}),
    )
    .await;
    let handbook = post(
        "Handbook",
        "Salary reviews happen every spring; ask your manager about the salary process.",
        json!({"public": true}),
    )
    .await;

    // The employee and the HR user each ask about salaries, in threads of their own.
    let mut turns = Vec::new();
    for (name, pw) in [("alice", &acme.alice), ("hannah", &acme.hannah)] {
        let u = s.login(name, pw).await;
        let t = s.new_thread(&u.access, "salaries").await;
        let r = s
            .post_auth(
                &format!("/v1/threads/{t}/messages"),
                &u.access,
                &json!({"content": "What are the salary bands?"}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let request = r.headers()["x-request-id"].to_str().unwrap().to_owned();
        turns.push((s.user_id(&admin.access, name).await, t, request));
    }
    let (alice_id, alice_thread, alice_req) = &turns[0];
    let (hannah_id, hannah_thread, hannah_req) = &turns[1];

    // The HR document: hannah's thread and request only.
    let r = s
        .get(&format!("/admin/lineage?document={hr}"), &admin.access)
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["document"], json!(hr));
    let uses = body["uses"].as_array().unwrap();
    assert_eq!(uses.len(), 1, "{body}");
    assert_eq!(uses[0]["user"], json!(hannah_id));
    assert_eq!(uses[0]["thread"], json!(hannah_thread));
    assert_eq!(uses[0]["request_id"], json!(hannah_req));
    assert_eq!(uses[0]["kind"], "retrieval");
    // Ids only: no text of the document or the question anywhere.
    let raw = body.to_string();
    assert!(
        !raw.contains("140k") && !raw.contains("salary bands?"),
        "{raw}"
    );

    // The public handbook went to both.
    let r = s
        .get(
            &format!("/admin/lineage?document={handbook}"),
            &admin.access,
        )
        .await;
    let body: Value = r.json().await.unwrap();
    let mut who: Vec<(String, String, String)> = body["uses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["user"].as_str().unwrap().to_owned(),
                u["thread"].as_str().unwrap().to_owned(),
                u["request_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    who.sort();
    let mut expected = vec![
        (alice_id.clone(), alice_thread.clone(), alice_req.clone()),
        (hannah_id.clone(), hannah_thread.clone(), hannah_req.clone()),
    ];
    expected.sort();
    assert_eq!(who, expected);

    // An admin of another tenant gets nothing, not even for the right id; a non-admin
    // is refused; the document parameter is required.
    let gina = s.login("gina", &gina_pw).await;
    let r = s
        .get(&format!("/admin/lineage?document={hr}"), &gina.access)
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["uses"], json!([]));
    let hannah = s.login("hannah", &acme.hannah).await;
    let r = s
        .get(&format!("/admin/lineage?document={hr}"), &hannah.access)
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = s.get("/admin/lineage", &admin.access).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // The operator's CLI answers the same question.
    let out = s.cli(&["audit", "lineage", &hr], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["thread"], json!(hannah_thread));
    assert_eq!(lines[0]["user"], json!(hannah_id));
    assert_eq!(lines[0]["tenant"], "acme");
    verify(&s).expect("the trail verifies");
}
