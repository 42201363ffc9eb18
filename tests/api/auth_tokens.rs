//! Forged, foreign, expired, revoked and misplaced access tokens.

use crate::support::*;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use pasetors::claims::Claims;
use pasetors::footer::Footer;
use pasetors::keys::{AsymmetricKeyPair, Generate, SymmetricKey};
use pasetors::paserk::Id;
use pasetors::version4::V4;
use reqwest::StatusCode;
use serde_json::Value;
use std::time::Duration;

/// The server's own active key and deployment id, read from its keys file: the
/// strongest attacker model short of owning the box.
fn server_key(s: &Server) -> (SymmetricKey<V4>, String) {
    let raw = std::fs::read(s.data_dir().join("keys.json")).unwrap();
    let kf: Value = serde_json::from_slice(&raw).unwrap();
    let active = kf["active"].as_str().unwrap();
    let entry = kf["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == active)
        .unwrap();
    let bytes = STANDARD.decode(entry["secret"].as_str().unwrap()).unwrap();
    (
        SymmetricKey::<V4>::from(&bytes).unwrap(),
        kf["deployment_id"].as_str().unwrap().to_owned(),
    )
}

/// Claims like the server mints for `me`.
fn claims_like(me: &Value, deployment: &str, typ: &str) -> Claims {
    let mut c = Claims::new().unwrap();
    c.issuer("palisade").unwrap();
    c.audience(&format!("palisade:{deployment}")).unwrap();
    c.subject(me["subject"].as_str().unwrap()).unwrap();
    c.token_identifier("forged").unwrap();
    c.add_additional("typ", typ).unwrap();
    c.add_additional("tenant", me["tenant"].clone()).unwrap();
    c.add_additional("username", me["username"].clone())
        .unwrap();
    c.add_additional("sid", me["session_id"].clone()).unwrap();
    c
}

fn local_token(key: &SymmetricKey<V4>, claims: &Claims, implicit: &[u8]) -> String {
    let mut footer = Footer::new();
    footer.key_id(&Id::from(key));
    pasetors::local::encrypt(key, claims, Some(&footer), Some(implicit)).unwrap()
}

async fn status_of(s: &Server, token: &str) -> StatusCode {
    s.get("/auth/me", token).await.status()
}

#[tokio::test]
async fn forged_and_confused_tokens_are_rejected() {
    // A zero aggregation window records every rejection on its own, so each forgery's
    // reason can be checked (repeats are aggregated by default; see
    // garbage_tokens_do_not_write_one_audit_row_each).
    let s = Server::in_process_with(&[("PALISADE_LIMITS__REJECTED_TOKEN_AUDIT_WINDOW", "0s")]);
    let acme = seed_acme(&s);
    let a = s.login("alice", &acme.alice).await;
    let me: Value = s.get("/auth/me", &a.access).await.json().await.unwrap();
    let (key, deployment) = server_key(&s);
    let implicit = format!("palisade:access:{deployment}");

    // Sanity: with everything right, a token we build ourselves is accepted — so each
    // rejection below is caused by the one thing that differs.
    let good = local_token(
        &key,
        &claims_like(&me, &deployment, "access"),
        implicit.as_bytes(),
    );
    assert_eq!(status_of(&s, &good).await, StatusCode::OK);

    let mut cases: Vec<(&str, String)> = Vec::new();

    // One flipped character in the encrypted body, and in the footer.
    let mut flipped = a.access.clone().into_bytes();
    flipped[30] = if flipped[30] == b'A' { b'B' } else { b'A' };
    cases.push(("flipped body byte", String::from_utf8(flipped).unwrap()));
    let (body, footer) = a.access.rsplit_once('.').unwrap();
    let mut f = URL_SAFE_NO_PAD.decode(footer).unwrap();
    f.push(b' ');
    cases.push((
        "modified footer",
        format!("{body}.{}", URL_SAFE_NO_PAD.encode(f)),
    ));
    cases.push(("footer removed", body.to_owned()));

    // A key we do not hold, presented under its own kid and under ours.
    let other = SymmetricKey::<V4>::generate().unwrap();
    let c = claims_like(&me, &deployment, "access");
    cases.push(("unknown key", local_token(&other, &c, implicit.as_bytes())));
    let mut footer = Footer::new();
    footer.key_id(&Id::from(&key));
    cases.push((
        "other key, our kid",
        pasetors::local::encrypt(&other, &c, Some(&footer), Some(implicit.as_bytes())).unwrap(),
    ));

    // Our key, but bound to another deployment or purpose.
    cases.push((
        "wrong implicit assertion",
        local_token(&key, &c, b"palisade:access:elsewhere"),
    ));
    cases.push(("no implicit assertion", local_token(&key, &c, b"")));
    cases.push((
        "wrong token type",
        local_token(
            &key,
            &claims_like(&me, &deployment, "refresh"),
            implicit.as_bytes(),
        ),
    ));

    // Version / purpose confusion.
    let kp = AsymmetricKeyPair::<V4>::generate().unwrap();
    let public = pasetors::public::sign(&kp.secret, &c, None, Some(implicit.as_bytes())).unwrap();
    cases.push(("v4.public", public));
    cases.push(("v3.local", a.access.replacen("v4.local.", "v3.local.", 1)));
    cases.push(("v2.local", a.access.replacen("v4.local.", "v2.local.", 1)));
    cases.push((
        "JWT alg=none",
        format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(r#"{"sub":"x","roles":["admin"]}"#)
        ),
    ));
    cases.push((
        "JWT HS256",
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(r#"{"sub":"x"}"#),
            URL_SAFE_NO_PAD.encode([0u8; 32])
        ),
    ));
    cases.push(("empty body", "v4.local.".into()));
    cases.push(("garbage", "v4.local.!!!!".into()));
    cases.push(("huge", format!("v4.local.{}", "A".repeat(10_000))));

    for (name, token) in &cases {
        let resp = s.get("/auth/me", token).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{name}");
        assert_eq!(resp.headers()["www-authenticate"], "Bearer", "{name}");
        let text = resp.text().await.unwrap();
        assert_eq!(
            text,
            r#"{"error":{"code":"unauthorized","message":"A valid access token is required."}}"#,
            "{name}: no detail, no echo"
        );
    }

    let rejected = s.audit_cli("token_rejected");
    assert_eq!(rejected.len(), cases.len(), "one event per refused token");
    let reasons: Vec<&str> = rejected
        .iter()
        .filter_map(|e| e["reason"].as_str())
        .collect();
    for r in ["invalid", "malformed", "unknown_key", "wrong_type"] {
        assert!(reasons.contains(&r), "reason {r} in {reasons:?}");
    }
    // The audit trail never holds a token.
    let all = s.cli(&["audit", "list", "--limit", "10000"], None).stdout;
    assert!(!String::from_utf8(all).unwrap().contains("v4.local."));
}

#[tokio::test]
async fn tokens_only_count_in_the_authorization_header() {
    let s = Server::start();
    let acme = seed_acme(&s);
    let a = s.login("alice", &acme.alice).await;
    let in_query = s
        .http
        .get(s.url(&format!("/auth/me?access_token={}", a.access)))
        .send()
        .await
        .unwrap();
    assert_eq!(in_query.status(), StatusCode::UNAUTHORIZED);
    let in_cookie = s
        .http
        .get(s.url("/auth/me"))
        .header("cookie", format!("access_token={}", a.access))
        .send()
        .await
        .unwrap();
    assert_eq!(in_cookie.status(), StatusCode::UNAUTHORIZED);
    let wrong_scheme = s
        .http
        .get(s.url("/auth/me"))
        .header("authorization", format!("Token {}", a.access))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_scheme.status(), StatusCode::UNAUTHORIZED);
    // The refresh cookie is not an access credential either.
    let refresh_as_bearer = s.get("/auth/me", &a.cookie).await;
    assert_eq!(refresh_as_bearer.status(), StatusCode::UNAUTHORIZED);
    assert!(
        !s.log().contains(&a.access),
        "the query-string token was not logged"
    );
}

#[tokio::test]
async fn tokens_of_another_deployment_are_rejected() {
    let s1 = Server::in_process();
    let s2 = Server::in_process();
    let p1 = seed_acme(&s1);
    seed_acme(&s2);
    let a = s1.login("alice", &p1.alice).await;
    assert_eq!(status_of(&s1, &a.access).await, StatusCode::OK);
    assert_eq!(status_of(&s2, &a.access).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        s2.refresh(&a.cookie).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn expired_tokens_are_rejected() {
    // Every token lives one second of the gateway's clock, which only the test moves.
    let clock = std::sync::Arc::new(palisade::timeutil::ManualClock::at(unix_now() * 1000));
    let s = Server::in_process_at(&[("PALISADE_TOKENS__ACCESS_TTL", "1s")], clock.clone());
    let acme = seed_acme(&s);
    let a = s.login("alice", &acme.alice).await;
    assert_eq!(status_of(&s, &a.access).await, StatusCode::OK);
    clock.advance(Duration::from_millis(999));
    assert_eq!(status_of(&s, &a.access).await, StatusCode::OK);
    clock.advance(Duration::from_millis(1));
    assert_eq!(status_of(&s, &a.access).await, StatusCode::UNAUTHORIZED);
    // The session itself lives on: refreshing gives a working token.
    let resp = s.refresh(&a.cookie).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let b = Session::from_response(resp).await;
    assert_eq!(status_of(&s, &b.access).await, StatusCode::OK);
    // Expired but authentic: the event names the session and its tenant (read with the
    // operator CLI: an admin's token would live one second too).
    let rejected = s.audit_cli("token_rejected");
    assert!(
        rejected.iter().any(|e| e["reason"] == "expired"
            && e["session_id"] == a.session_id.as_str()
            && e["tenant"] == "acme"),
        "{rejected:?}"
    );
}

/// A key taken out of the keys file by hand (it leaked) stops verifying its tokens as
/// soon as the server reloads the file, even a token accepted a moment before, which
/// the server remembers as authentic.
#[tokio::test]
async fn a_key_removed_from_the_keys_file_stops_its_tokens_at_once() {
    let s = Server::in_process();
    let acme = seed_acme(&s);
    let path = s.data_dir().join("keys.json");
    let leaked: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let leaked = leaked["active"].as_str().unwrap().to_owned();
    let a = s.login("alice", &acme.alice).await;
    for _ in 0..2 {
        assert_eq!(status_of(&s, &a.access).await, StatusCode::OK);
    }
    s.cli_ok(&["keys", "rotate"]);
    let mut kf: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    kf["keys"]
        .as_array_mut()
        .unwrap()
        .retain(|k| k["id"] != leaked.as_str());
    assert_ne!(kf["active"], leaked.as_str());
    std::fs::write(&path, serde_json::to_vec_pretty(&kf).unwrap()).unwrap();
    let mut refused = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if status_of(&s, &a.access).await == StatusCode::UNAUTHORIZED {
            refused = true;
            break;
        }
    }
    assert!(
        refused,
        "a token of the removed key was still accepted after 5 s"
    );
    let b = s.login("alice", &acme.alice).await;
    assert_eq!(status_of(&s, &b.access).await, StatusCode::OK);
}

#[tokio::test]
async fn key_rotation_keeps_old_tokens_valid_until_they_expire() {
    let mut s = Server::start();
    let acme = seed_acme(&s);
    let before = s.login("alice", &acme.alice).await;
    let kid_of = |t: &str| t.rsplit_once('.').unwrap().1.to_owned();

    assert!(s.terminate().success(), "graceful shutdown on SIGTERM");
    let out = s.cli(&["keys", "rotate"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.restart();

    assert_eq!(status_of(&s, &before.access).await, StatusCode::OK);
    let after = s.login("alice", &acme.alice).await;
    assert_ne!(
        kid_of(&before.access),
        kid_of(&after.access),
        "new key id in the footer"
    );
    assert_eq!(status_of(&s, &after.access).await, StatusCode::OK);
    // The refresh family is unaffected by key rotation.
    assert_eq!(s.refresh(&before.cookie).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn session_absolute_lifetime_ends_tokens_and_refresh() {
    let clock = std::sync::Arc::new(palisade::timeutil::ManualClock::at(unix_now() * 1000));
    let s = Server::in_process_at(
        &[
            ("PALISADE_TOKENS__SESSION_ABSOLUTE_TTL", "3s"),
            ("PALISADE_TOKENS__SESSION_IDLE_TTL", "3s"),
        ],
        clock.clone(),
    );
    let acme = seed_acme(&s);
    let a = s.login("alice", &acme.alice).await;
    assert!(a.set_cookie.contains("Max-Age=3;") || a.set_cookie.ends_with("Max-Age=3"));
    clock.advance(Duration::from_millis(2_999));
    assert_eq!(status_of(&s, &a.access).await, StatusCode::OK);
    clock.advance(Duration::from_millis(2));
    assert_eq!(status_of(&s, &a.access).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        s.refresh(&a.cookie).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn idle_sessions_expire_but_active_ones_live_on() {
    let clock = std::sync::Arc::new(palisade::timeutil::ManualClock::at(unix_now() * 1000));
    let s = Server::in_process_at(
        &[
            ("PALISADE_TOKENS__SESSION_IDLE_TTL", "2s"),
            ("PALISADE_TOKENS__SESSION_ABSOLUTE_TTL", "1h"),
        ],
        clock.clone(),
    );
    let acme = seed_acme(&s);
    let idle = s.login("alice", &acme.alice).await;
    let mut active = s.login("hannah", &acme.hannah).await;
    for _ in 0..3 {
        clock.advance(Duration::from_secs(1));
        let resp = s.refresh(&active.cookie).await;
        assert_eq!(resp.status(), StatusCode::OK);
        active = Session::from_response(resp).await;
    }
    assert_eq!(status_of(&s, &idle.access).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        s.refresh(&idle.cookie).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(status_of(&s, &active.access).await, StatusCode::OK);
}

#[tokio::test]
async fn garbage_tokens_do_not_write_one_audit_row_each() {
    let s = Server::in_process_with(&[("PALISADE_LIMITS__REJECTED_TOKEN_AUDIT_WINDOW", "1s")]);
    seed_acme(&s);
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for i in 0..2000 {
        let http = s.http.clone();
        let url = s.url("/auth/me");
        tasks.push(tokio::spawn(async move {
            http.get(url)
                .bearer_auth(format!("v4.local.garbage-{i}"))
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::UNAUTHORIZED);
    }
    // One row per window of one second at most (and one for the first of its kind),
    // however long the burst took on a busy machine: never one per token.
    let windows = started.elapsed().as_secs() as usize + 1;
    let rows = s.audit_cli("token_rejected");
    assert!(
        rows.len() <= 2 + windows,
        "{} rows for 2,000 garbage tokens in {windows} windows",
        rows.len()
    );
    // When the window closes, the repeats are recorded as one event with their count:
    // a first-of-its-kind event stands for itself, an aggregated one for its count.
    let rows = eventually(
        Duration::from_secs(5),
        "every rejection accounted for",
        || async {
            let rows = s.audit_cli("token_rejected");
            let total: u64 = rows.iter().map(|e| e["count"].as_u64().unwrap_or(1)).sum();
            (total == 2000).then_some(rows)
        },
    )
    .await;
    let windows = started.elapsed().as_secs() as usize + 1;
    assert!(
        rows.len() <= 2 + windows,
        "{} rows in {windows} windows",
        rows.len()
    );
}

/// `tokens.format = "jwe"`: tokens are JWE `dir` + `A256GCM`, and only that form is
/// accepted — not PASETO, not another algorithm or encryption, not compressed, not
/// PBES2, not with a changed tag or header.
#[tokio::test]
async fn jwe_tokens_accept_exactly_dir_a256gcm() {
    let s = Server::in_process_with(&[("PALISADE_TOKENS__FORMAT", "jwe")]);
    let acme = seed_acme(&s);
    let a = s.login("alice", &acme.alice).await;
    let parts: Vec<&str> = a.access.split('.').collect();
    assert_eq!(parts.len(), 5, "{}", a.access);
    assert!(parts[1].is_empty(), "no wrapped key with dir");
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"], "dir");
    assert_eq!(header["enc"], "A256GCM");
    let me: Value = s.get("/auth/me", &a.access).await.json().await.unwrap();
    assert_eq!(me["username"], "alice");
    // Refresh mints JWE too; the session works as ever.
    let r = s.refresh(&a.cookie).await;
    assert_eq!(r.status(), StatusCode::OK);
    let again = Session::from_response(r).await;
    assert_eq!(again.access.split('.').count(), 5);
    assert_eq!(status_of(&s, &again.access).await, StatusCode::OK);

    // A PASETO token under the server's own key: not the configured format.
    let (key, deployment) = server_key(&s);
    let implicit = format!("palisade:access:{deployment}");
    let paseto = local_token(
        &key,
        &claims_like(&me, &deployment, "access"),
        implicit.as_bytes(),
    );
    assert_eq!(status_of(&s, &paseto).await, StatusCode::UNAUTHORIZED);

    let with_header = |h: Value| {
        let mut p: Vec<String> = again.access.split('.').map(str::to_owned).collect();
        p[0] = URL_SAFE_NO_PAD.encode(h.to_string());
        p.join(".")
    };
    let kid = header["kid"].clone();
    for h in [
        serde_json::json!({"alg": "A256KW", "enc": "A256GCM", "kid": kid, "typ": "at+jwt"}),
        serde_json::json!({"alg": "dir", "enc": "A128CBC-HS256", "kid": kid, "typ": "at+jwt"}),
        serde_json::json!({"alg": "dir", "enc": "A256GCM", "kid": kid, "typ": "at+jwt", "zip": "DEF"}),
        serde_json::json!({"alg": "PBES2-HS512+A256KW", "enc": "A256GCM", "kid": kid, "typ": "at+jwt",
                           "p2s": "c2FsdA", "p2c": 100000000}),
        serde_json::json!({"alg": "none", "enc": "A256GCM", "kid": kid, "typ": "at+jwt"}),
    ] {
        assert_eq!(
            status_of(&s, &with_header(h.clone())).await,
            StatusCode::UNAUTHORIZED,
            "{h}"
        );
    }
    // The genuine header with its fields in another order: another AAD, the tag fails.
    let mut p: Vec<String> = again.access.split('.').map(str::to_owned).collect();
    p[0] = URL_SAFE_NO_PAD.encode(format!(
        r#"{{"typ":"at+jwt","kid":{kid},"enc":"A256GCM","alg":"dir"}}"#
    ));
    assert_eq!(status_of(&s, &p.join(".")).await, StatusCode::UNAUTHORIZED);
    let mut p: Vec<String> = again.access.split('.').map(str::to_owned).collect();
    let mut tag = URL_SAFE_NO_PAD.decode(&p[4]).unwrap();
    tag[15] ^= 0x80;
    p[4] = URL_SAFE_NO_PAD.encode(tag);
    assert_eq!(status_of(&s, &p.join(".")).await, StatusCode::UNAUTHORIZED);
    // The genuine token still works.
    assert_eq!(status_of(&s, &again.access).await, StatusCode::OK);
}
