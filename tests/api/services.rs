//! Service accounts and API keys, and services acting for users (RFC 8693), from the
//! side of a backend that holds a key and of an attacker who holds a copy: the key
//! works with the official OpenAI SDK on the model and retrieval routes and nowhere
//! else; a revoked, expired, wrongly bound key or a disabled account is refused; a
//! service acts for a user only when allowed, only while everything behind the token
//! is live, and the audit names both.

use crate::support::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

const HR_CANARY: &str = "CANARY-SERVICES-HR-5521";
const PUBLIC_FACT: &str = "The cafeteria opens at 8";

/// `palisade service add NAME --tenant acme ARGS…`.
fn add_service(s: &Server, name: &str, args: &[&str]) {
    let mut all = vec!["service", "add", name, "--tenant", "acme"];
    all.extend_from_slice(args);
    s.cli_ok(&all);
}

/// `palisade key create --service NAME ARGS…`: the key, printed once on stdout.
fn create_key(s: &Server, service: &str, args: &[&str]) -> String {
    let mut all = vec!["key", "create", "--service", service, "--tenant", "acme"];
    all.extend_from_slice(args);
    let out = s.cli_ok(&all);
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(
        key.starts_with("pal_") && key.len() == 4 + 24 + 1 + 43,
        "{key}"
    );
    key
}

/// Every chat request the stand-in upstream received, as text.
fn chat_requests(mock: &crate::mock::Mock) -> String {
    mock.requests()
        .iter()
        .filter(|r| r.get("messages").is_some())
        .map(|r| r.to_string())
        .collect()
}

/// `POST /admin/service-accounts` as `token`.
async fn new_service(s: &Server, token: &str, body: &Value) -> reqwest::Response {
    s.post_auth("/admin/service-accounts", token, body).await
}

fn key_id(key: &str) -> &str {
    &key[4..28]
}

async fn get_with(s: &Server, path: &str, auth: &str) -> reqwest::Response {
    s.http
        .get(s.url(path))
        .header("authorization", auth)
        .send()
        .await
        .unwrap()
}

async fn exchange(s: &Server, key: Option<&str>, form: &[(&str, &str)]) -> reqwest::Response {
    let mut req = s.http.post(s.url("/auth/token")).form(form);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    req.send().await.unwrap()
}

fn exchange_form(subject: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange".into(),
        ),
        ("subject_token", subject.to_owned()),
        (
            "subject_token_type",
            "urn:ietf:params:oauth:token-type:access_token".into(),
        ),
    ]
}

async fn exchanged(s: &Server, key: &str, subject: &str) -> reqwest::Response {
    let form = exchange_form(subject);
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    exchange(s, Some(key), &form).await
}

/// The token of an exchange that must succeed.
async fn exchanged_token(s: &Server, key: &str, subject: &str) -> String {
    let r = exchanged(s, key, subject).await;
    assert_eq!(r.status(), StatusCode::OK);
    r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn oauth_error(r: reqwest::Response) -> (StatusCode, String) {
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    (status, v["error"].as_str().unwrap_or_default().to_owned())
}

async fn seed_documents(s: &Server, admin: &str) {
    for (title, text, acl) in [
        (
            "Salary bands",
            format!("Salary bands for engineers. Reference {HR_CANARY}."),
            json!({"roles": ["hr"]}),
        ),
        (
            "Cafeteria",
            format!("{PUBLIC_FACT} every weekday."),
            json!({"public": true}),
        ),
    ] {
        let r = s
            .post_document(admin, &json!({"title": title, "text": text, "acl": acl}))
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
}

#[tokio::test]
async fn a_service_key_works_with_the_official_openai_sdk_on_the_model_routes_only() {
    // The stand-in upstream serves the embeddings too, so the SDK's embeddings call
    // reaches a checked upstream.
    let mock = crate::mock::Mock::start().await;
    let s = Server::in_process_with(&[
        ("PALISADE_LLM__BASE_URL", mock.base_url.as_str()),
        ("PALISADE_LLM__MODEL", "mock-model"),
        ("PALISADE_LLM__API_KEY_ENV", "PALISADE_TEST_UPSTREAM_KEY"),
        ("PALISADE_TEST_UPSTREAM_KEY", UPSTREAM_KEY),
        ("PALISADE_EMBEDDINGS__KIND", "openai"),
        ("PALISADE_EMBEDDINGS__BASE_URL", mock.base_url.as_str()),
        ("PALISADE_EMBEDDINGS__MODEL", "text-embedding-3-small"),
        ("PALISADE_EMBEDDINGS__DIM", "8"),
        (
            "PALISADE_EMBEDDINGS__API_KEY_ENV",
            "PALISADE_TEST_UPSTREAM_KEY",
        ),
    ]);
    let acme = seed_acme(&s);
    let adam = s.login("adam", &acme.adam).await;
    seed_documents(&s, &adam.access).await;
    add_service(
        &s,
        "slackbot",
        &[
            "--roles",
            "employee",
            "--models",
            "mock-model,text-embedding-3-small",
        ],
    );
    let key = create_key(&s, "slackbot", &[]);

    // The official SDK with a static api_key: chat, streaming, models.
    let out =
        crate::agents::run_python("service_key.py", &[("BASE", &s.url("")), ("KEY", &key)]).await;
    let v: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(v["models"], json!(["mock-model"]), "{v}");
    assert_eq!(v["embeddings"], json!([8, 8]), "{v}");
    assert!(v["chat"].as_str().unwrap().contains("cafeteria"), "{v}");
    assert!(v["stream"].as_str().unwrap().len() > 10, "{v}");
    assert!(v["stream_chunks"].as_u64().unwrap() > 1, "{v}");
    // What reached the upstream: the gateway's own key, never the service's.
    for h in mock.auth_headers() {
        assert_eq!(h, format!("Bearer {UPSTREAM_KEY}"));
    }
    assert!(!mock.everything_seen().contains(&key[28..]));
    // The public passage went to the model; the HR one never did (the documents'
    // texts went to the same stand-in as embedding inputs: only chat requests count).
    let prompts = chat_requests(&mock);
    assert!(prompts.contains(PUBLIC_FACT));
    assert!(!prompts.contains(HR_CANARY));

    // A model outside its own list is refused before any upstream call.
    let before = mock.count();
    let r = s
        .post_auth(
            "/v1/chat/completions",
            &key,
            &json!({"model": "other-model", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(
        error_code(r).await,
        (StatusCode::FORBIDDEN, "model_not_allowed".into())
    );
    assert_eq!(mock.count(), before);

    // Retrieval within its own scope, and the lineage of what it was given.
    let found = search_text(&s, &key, "cafeteria opens").await;
    assert!(found.contains(PUBLIC_FACT));
    let cafeteria: Value = serde_json::from_str(&found).unwrap();
    let doc = cafeteria["results"][0]["document_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let lineage: Value = s
        .get(&format!("/admin/lineage?document={doc}"), &adam.access)
        .await
        .json()
        .await
        .unwrap();
    assert!(
        lineage["uses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["kind"] == "search" && u["session_id"] == format!("key:{}", key_id(&key))),
        "{lineage}"
    );
    assert!(
        !search_text(&s, &key, "salary bands")
            .await
            .contains(HR_CANARY)
    );

    // Its threads are its own: nobody else sees them.
    let thread = s.new_thread(&key, "nightly digest").await;
    let alice = s.login("alice", &acme.alice).await;
    assert_eq!(
        s.get(&format!("/v1/threads/{thread}"), &alice.access)
            .await
            .status(),
        StatusCode::NOT_FOUND
    );

    // Not the session routes, not the admin routes.
    for path in [
        "/auth/me",
        "/auth/sessions",
        "/admin/users",
        "/admin/service-accounts",
        "/admin/audit",
    ] {
        let r = s.get(path, &key).await;
        assert_eq!(
            error_code(r).await,
            (StatusCode::FORBIDDEN, "person_required".into()),
            "{path}"
        );
    }
    for path in ["/auth/logout", "/auth/logout-all"] {
        let r = s.post_auth(path, &key, &json!({})).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{path}");
    }
    // A service never signs in: not with its name, not with its key as a password.
    let r = s.login_raw("slackbot", &key).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Creation and use are audited, naming the service; its last use is recorded.
    let created = s.audit_events(&adam.access, "api_key_created").await;
    assert_eq!(created.len(), 1, "{created:?}");
    assert_eq!(created[0]["session_id"], format!("key:{}", key_id(&key)));
    let keys = s
        .get("/admin/service-accounts/slackbot/keys", &adam.access)
        .await;
    assert_eq!(keys.status(), StatusCode::OK);
    let body = keys.text().await.unwrap();
    assert!(!body.contains(&key[28..]), "a key's secret is never listed");
    let listed: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(listed["keys"][0]["id"], key_id(&key));
    eventually(
        Duration::from_secs(10),
        "the last use is recorded",
        || async {
            let v: Value = s
                .get("/admin/service-accounts/slackbot/keys", &adam.access)
                .await
                .json()
                .await
                .unwrap();
            (v["keys"][0]["last_used_ip"] == "127.0.0.1").then_some(())
        },
    )
    .await;
    let retrievals = s.audit_events(&adam.access, "retrieval").await;
    let slackbot = s
        .get("/admin/service-accounts", &adam.access)
        .await
        .json::<Value>()
        .await
        .unwrap()["services"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        retrievals.iter().any(|e| e["subject"] == slackbot.as_str()),
        "{retrievals:?}"
    );
    // The key never appears in the trail or the log.
    let trail = s
        .get("/admin/audit?limit=1000", &adam.access)
        .await
        .text()
        .await
        .unwrap();
    assert!(!trail.contains(&key[28..]));
}

#[tokio::test]
async fn revoked_expired_forged_and_disabled_keys_are_refused() {
    let now = unix_now() * 1000;
    let clock = Arc::new(palisade::timeutil::ManualClock::at(now));
    let s = Server::in_process_at(&[], clock.clone());
    let acme = seed_acme(&s);
    add_service(&s, "nightly", &["--roles", "employee"]);
    let key = create_key(&s, "nightly", &["--expires", "1h"]);
    assert_eq!(s.get("/v1/models", &key).await.status(), StatusCode::OK);

    // Forged: the right id with another secret, an unknown id, a truncated key, our
    // prefix on garbage. One answer for all, nothing about why.
    let wrong_secret = format!("{}{}", &key[..29], "A".repeat(43));
    let unknown_id = format!("pal_{}_{}", "0".repeat(24), &key[29..]);
    let mut bodies = Vec::new();
    for forged in [
        wrong_secret.as_str(),
        unknown_id.as_str(),
        &key[..40],
        "pal_x",
    ] {
        let r = s.get("/v1/models", forged).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{forged}");
        bodies.push(r.text().await.unwrap());
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "{bodies:?}");
    let reasons: Vec<String> = s
        .audit_cli("token_rejected")
        .iter()
        .map(|e| e["reason"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(reasons.contains(&"invalid".to_owned()), "{reasons:?}");
    assert!(reasons.contains(&"unknown_key".to_owned()), "{reasons:?}");
    assert!(reasons.contains(&"malformed".to_owned()), "{reasons:?}");

    // Expiry, judged by the gateway's clock: the last millisecond, then the first
    // one past it.
    let adam = s.login("adam", &acme.adam).await;
    let listed: Value = s
        .get("/admin/service-accounts/nightly/keys", &adam.access)
        .await
        .json()
        .await
        .unwrap();
    let expires_at = listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == key_id(&key))
        .unwrap()["expires_at"]
        .as_str()
        .unwrap()
        .to_owned();
    let expires_at = palisade::timeutil::parse_rfc3339(&expires_at).unwrap();
    assert!(
        (expires_at - now - 3_600_000).abs() < 60_000,
        "{expires_at}"
    );
    clock.set(expires_at - 1);
    assert_eq!(s.get("/v1/models", &key).await.status(), StatusCode::OK);
    clock.set(expires_at);
    assert_eq!(
        s.get("/v1/models", &key).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert!(
        s.audit_cli("token_rejected")
            .iter()
            .any(|e| e["reason"] == "expired" && e["session_id"] == format!("key:{}", key_id(&key)))
    );

    // Revocation by an admin: at once, audited; a second revocation finds nothing.
    let adam = s.login("adam", &acme.adam).await;
    let other = create_key(&s, "nightly", &[]);
    assert_eq!(s.get("/v1/models", &other).await.status(), StatusCode::OK);
    let r = s
        .delete(&format!("/admin/api-keys/{}", key_id(&other)), &adam.access)
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        s.get("/v1/models", &other).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let r = s
        .delete(&format!("/admin/api-keys/{}", key_id(&other)), &adam.access)
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        s.audit_events(&adam.access, "api_key_revoked").await.len(),
        1
    );

    // Disabling the account stops its keys; enabling brings them back.
    let live = create_key(&s, "nightly", &[]);
    assert_eq!(s.get("/v1/models", &live).await.status(), StatusCode::OK);
    let patch = |disabled: bool| {
        s.http
            .patch(s.url("/admin/service-accounts/nightly"))
            .bearer_auth(&adam.access)
            .json(&json!({ "disabled": disabled }))
            .send()
    };
    assert_eq!(patch(true).await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        s.get("/v1/models", &live).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(patch(false).await.unwrap().status(), StatusCode::OK);
    assert_eq!(s.get("/v1/models", &live).await.status(), StatusCode::OK);

    // Another tenant's admin can neither see nor revoke it.
    let eve_pw = s.add_user("eve", "admin", "", "globex");
    let eve = s.login("eve", &eve_pw).await;
    let r = s
        .delete(&format!("/admin/api-keys/{}", key_id(&live)), &eve.access)
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = s
        .get("/admin/service-accounts/nightly/keys", &eve.access)
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(s.get("/v1/models", &live).await.status(), StatusCode::OK);

    // An employee is no admin.
    let alice = s.login("alice", &acme.alice).await;
    let r = new_service(&s, &alice.access, &json!({"name": "mine"})).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn keys_bound_to_networks_or_a_dpop_key_work_only_there() {
    let s = Server::in_process();
    let acme = seed_acme(&s);
    let adam = s.login("adam", &acme.adam).await;
    add_service(&s, "portal", &["--roles", "employee"]);
    let elsewhere = create_key(&s, "portal", &["--allow-cidr", "10.0.0.0/8,192.168.0.0/16"]);
    let here = create_key(&s, "portal", &["--allow-cidr", "127.0.0.0/8"]);
    assert_eq!(
        s.get("/v1/models", &elsewhere).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(s.get("/v1/models", &here).await.status(), StatusCode::OK);
    assert!(
        s.audit_events(&adam.access, "token_rejected")
            .await
            .iter()
            .any(|e| e["reason"] == "address_not_allowed")
    );

    // Over HTTP, an invalid network or thumbprint names the field; nothing is made.
    for (body, field) in [
        (json!({"allow_cidrs": ["not-a-net"]}), "allow_cidrs"),
        (json!({"dpop_jkt": "short"}), "dpop_jkt"),
        (json!({"expires_in": "forever"}), "expires_in"),
        (json!({"expires_in": "20years"}), "expires"),
    ] {
        let r = s
            .post_auth("/admin/service-accounts/portal/keys", &adam.access, &body)
            .await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let text = r.text().await.unwrap();
        assert!(text.contains(field), "{text}");
    }

    // Bound to a DPoP key: useless as a bearer token, and with another key's proofs.
    let dpop = crate::dpop::DpopKey::new();
    let other = crate::dpop::DpopKey::new();
    let r = s
        .post_auth(
            "/admin/service-accounts/portal/keys",
            &adam.access,
            &json!({"dpop_jkt": dpop.thumbprint()}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let bound = r.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        s.get("/v1/models", &bound).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let with_proof = |k: &crate::dpop::DpopKey| {
        let proof = k.proof("GET", "/v1/models", Some(&bound));
        s.http
            .get(s.url("/v1/models"))
            .header("authorization", format!("DPoP {bound}"))
            .header("dpop", proof)
            .send()
    };
    assert_eq!(
        with_proof(&other).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(with_proof(&dpop).await.unwrap().status(), StatusCode::OK);
    // An unbound key presented under the DPoP scheme is refused too.
    let r = get_with(&s, "/v1/models", &format!("DPoP {here}")).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_service_acts_for_a_user_only_when_allowed_and_only_while_everything_is_live() {
    let (s, mock) = start_with_mock(&[]).await;
    let acme = seed_acme(&s);
    let adam = s.login("adam", &acme.adam).await;
    seed_documents(&s, &adam.access).await;
    add_service(&s, "portal", &["--act-for-users"]);
    add_service(&s, "bot", &["--roles", "employee,hr"]);
    let portal = create_key(&s, "portal", &[]);
    let bot = create_key(&s, "bot", &[]);
    let alice = s.login("alice", &acme.alice).await;

    // A service not allowed to act for users: refused, nothing issued, audited.
    assert_eq!(
        oauth_error(exchanged(&s, &bot, &alice.access).await).await,
        (StatusCode::BAD_REQUEST, "unauthorized_client".into())
    );
    // No key, a user's token as the client, a forged key: invalid_client.
    let form = exchange_form(&alice.access);
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = exchange(&s, None, &form).await;
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer error=\"invalid_client\""
    );
    assert_eq!(
        oauth_error(r).await,
        (StatusCode::UNAUTHORIZED, "invalid_client".into())
    );
    assert_eq!(
        oauth_error(exchange(&s, Some(&alice.access), &form).await).await,
        (StatusCode::UNAUTHORIZED, "invalid_client".into())
    );
    // Malformed requests.
    let mut twice = form.clone();
    twice.push(("subject_token", "x"));
    assert_eq!(
        oauth_error(exchange(&s, Some(&portal), &twice).await).await,
        (StatusCode::BAD_REQUEST, "invalid_request".into())
    );
    let mut other_grant = form.clone();
    other_grant[0] = ("grant_type", "password");
    assert_eq!(
        oauth_error(exchange(&s, Some(&portal), &other_grant).await).await,
        (StatusCode::BAD_REQUEST, "unsupported_grant_type".into())
    );
    // A subject token that is not a live token of this tenant.
    let eve_pw = s.add_user("eve", "employee", "", "globex");
    let eve = s.login("eve", &eve_pw).await;
    for subject in ["v4.local.forged", &eve.access, &portal] {
        assert_eq!(
            oauth_error(exchanged(&s, &portal, subject).await).await,
            (StatusCode::BAD_REQUEST, "invalid_grant".into()),
            "{subject}"
        );
    }

    // Allowed: a token for alice, acting as the portal.
    let r = exchanged(&s, &portal, &alice.access).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    assert_eq!(v["token_type"], "Bearer");
    let as_alice = v["access_token"].as_str().unwrap().to_owned();
    // It is alice's scope, not the portal's (which has no roles) nor more.
    assert!(
        search_text(&s, &as_alice, "cafeteria opens")
            .await
            .contains(PUBLIC_FACT)
    );
    assert!(
        !search_text(&s, &as_alice, "salary bands")
            .await
            .contains(HR_CANARY)
    );
    // Her threads: one made through the portal is hers.
    let thread = s.new_thread(&as_alice, "via the portal").await;
    ask(&s, &as_alice, &thread, "When does the cafeteria open?").await;
    assert_eq!(
        s.thread_json(&alice.access, &thread).await["title"],
        "via the portal"
    );
    assert!(mock.everything_seen().contains(PUBLIC_FACT));
    assert!(!mock.everything_seen().contains(HR_CANARY));
    // Not a person: no session or admin routes.
    assert_eq!(
        error_code(s.get("/auth/me", &as_alice).await).await,
        (StatusCode::FORBIDDEN, "person_required".into())
    );
    // Not exchanged again (no chains of services).
    assert_eq!(
        oauth_error(exchanged(&s, &portal, &as_alice).await).await,
        (StatusCode::BAD_REQUEST, "invalid_grant".into())
    );

    // The audit names both: the exchange, and what was done with the token.
    let alice_id = s.user_id(&adam.access, "alice").await;
    let portal_id = s
        .get("/admin/service-accounts", &adam.access)
        .await
        .json::<Value>()
        .await
        .unwrap()["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "portal")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ex = s.audit_events(&adam.access, "token_exchanged").await;
    assert_eq!(ex.len(), 1, "{ex:?}");
    assert_eq!(ex[0]["subject"], alice_id.as_str());
    assert_eq!(ex[0]["actor"], portal_id.as_str());
    let retrievals = s.audit_events(&adam.access, "retrieval").await;
    assert!(
        retrievals
            .iter()
            .any(|e| e["subject"] == alice_id.as_str() && e["actor"] == portal_id.as_str()),
        "{retrievals:?}"
    );
    let refused = s.audit_events(&adam.access, "token_rejected").await;
    assert!(refused.iter().any(|e| e["reason"] == "not_allowed_to_act"));

    // Revoking the portal's key stops the exchanged token at once.
    let r = s
        .delete(
            &format!("/admin/api-keys/{}", key_id(&portal)),
            &adam.access,
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        s.get("/v1/models", &as_alice).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // Disabling the portal stops what it exchanged; enabling it brings it back.
    let portal = create_key(&s, "portal", &[]);
    let held = exchanged_token(&s, &portal, &alice.access).await;
    assert_eq!(s.get("/v1/models", &held).await.status(), StatusCode::OK);
    s.cli_ok(&["service", "disable", "portal", "--tenant", "acme"]);
    eventually(
        Duration::from_secs(5),
        "the disabled service's token is refused",
        || async {
            (s.get("/v1/models", &held).await.status() == StatusCode::UNAUTHORIZED).then_some(())
        },
    )
    .await;
    s.cli_ok(&["service", "enable", "portal", "--tenant", "acme"]);

    // Alice signing out stops a fresh one; so does disabling her. (The CLI's change
    // reaches this gateway within `tokens.session_cache_ttl`.)
    let fresh = eventually(
        Duration::from_secs(5),
        "the enabled service exchanges again",
        || async {
            let r = exchanged(&s, &portal, &alice.access).await;
            if r.status() != StatusCode::OK {
                return None;
            }
            Some(
                r.json::<Value>().await.unwrap()["access_token"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        },
    )
    .await;
    assert_eq!(s.get("/v1/models", &fresh).await.status(), StatusCode::OK);
    assert!(
        s.post_auth("/auth/logout", &alice.access, &json!({}))
            .await
            .status()
            .is_success()
    );
    assert_eq!(
        s.get("/v1/models", &fresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        oauth_error(exchanged(&s, &portal, &alice.access).await).await,
        (StatusCode::BAD_REQUEST, "invalid_grant".into())
    );
    let alice2 = s.login("alice", &acme.alice).await;
    let fresh = exchanged_token(&s, &portal, &alice2.access).await;
    let r = s
        .http
        .patch(s.url(&format!("/admin/users/{alice_id}")))
        .bearer_auth(&adam.access)
        .json(&json!({"disabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        s.get("/v1/models", &fresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn over_http_one_admin_cannot_make_a_privileged_or_impersonating_service() {
    let s = Server::in_process_with(&[("PALISADE_ADMIN__PRIVILEGED_ROLES", "[\"hr\"]")]);
    let acme = seed_acme(&s);
    let adam = s.login("adam", &acme.adam).await;
    for body in [
        json!({"name": "hrbot", "roles": ["hr"]}),
        json!({"name": "root", "roles": ["admin"]}),
    ] {
        let r = s
            .post_auth("/admin/service-accounts", &adam.access, &body)
            .await;
        assert_eq!(
            error_code(r).await,
            (StatusCode::FORBIDDEN, "two_person_rule".into()),
            "{body}"
        );
    }
    // Acting for users is not a field an admin can set at all.
    let r = new_service(
        &s,
        &adam.access,
        &json!({"name": "imp", "act_for_users": true}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // Names of IdP accounts are not for services.
    let r = new_service(
        &s,
        &adam.access,
        &json!({"name": "oidc:0123456789abcdef01234567"}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let listed: Value = s
        .get("/admin/service-accounts", &adam.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["services"], json!([]));

    // An ordinary one is made, and its privileged role goes through two admins.
    let r = new_service(&s, &adam.access, &json!({"name": "digest", "roles": ["employee"], "models": ["m1"], "requests_per_minute": 5})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["profile"]["models"], json!(["m1"]));
    assert_eq!(v["profile"]["act_for_users"], false);
    let r = s
        .post_auth(
            "/admin/grants",
            &adam.access,
            &json!({"user_id": v["id"], "role": "hr"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);

    // A change of its access reaches its keys at once, not after a cache lapses.
    let r = s
        .post_document(
            &adam.access,
            &json!({"title": "Q3 close", "text": "Quarter close checklist FINANCE-CANARY-19.", "acl": {"groups": ["finance"]}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = s
        .post_auth(
            "/admin/service-accounts/digest/keys",
            &adam.access,
            &json!({}),
        )
        .await;
    let key = r.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        !search_text(&s, &key, "quarter close checklist")
            .await
            .contains("FINANCE-CANARY-19")
    );
    let r = s
        .http
        .patch(s.url(&format!("/admin/users/{}", v["id"].as_str().unwrap())))
        .bearer_auth(&adam.access)
        .json(&json!({"groups": ["finance"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        search_text(&s, &key, "quarter close checklist")
            .await
            .contains("FINANCE-CANARY-19")
    );
}
