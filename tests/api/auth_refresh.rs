//! Refresh rotation, reuse detection, races, cross-site defences and durability.

use crate::support::*;
use reqwest::StatusCode;

#[tokio::test]
async fn rotation_kills_the_old_token_and_reuse_revokes_the_session() {
    // No grace window: the replay below is outside it without waiting one out.
    let s = Server::in_process_with(&[("PALISADE_TOKENS__REFRESH_REUSE_GRACE", "0s")]);
    let acme = seed_acme(&s);
    let a = s.login("alice", &acme.alice).await;

    let resp = s.refresh(&a.cookie).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let b = Session::from_response(resp).await;
    assert_ne!(a.cookie, b.cookie);
    assert_ne!(a.access, b.access);
    assert_eq!(a.session_id, b.session_id, "same session, new family head");
    assert_eq!(s.get("/auth/me", &b.access).await.status(), StatusCode::OK);

    // The thief replays the rotated token (after the grace window, which is 0 here).
    let resp = s.refresh(&a.cookie).await;
    assert!(
        set_cookie(&resp).unwrap().contains("Max-Age=0"),
        "cookie cleared"
    );
    assert_eq!(
        error_code(resp).await,
        (StatusCode::UNAUTHORIZED, "refresh_reused".into())
    );

    // The whole session is gone: the legitimate user's newest tokens die too.
    assert_eq!(
        s.get("/auth/me", &b.access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        s.get("/auth/me", &a.access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let (status, code) = error_code(s.refresh(&b.cookie).await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNAUTHORIZED, "invalid_refresh_token")
    );

    let admin = s.login("adam", &acme.adam).await;
    let events = s
        .audit_events(&admin.access, "refresh_reuse_detected")
        .await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["session_id"], a.session_id.as_str());
    assert_eq!(events[0]["tenant"], "acme");
    assert!(!events[0].to_string().contains(&a.cookie));
    assert_eq!(
        s.audit_events(&admin.access, "refresh_rotated").await.len(),
        1
    );
}

#[tokio::test]
async fn twenty_concurrent_refreshes_exactly_one_wins() {
    let s = Server::in_process();
    let acme = seed_acme(&s);
    let a = s.login("alice", &acme.alice).await;

    let futures = (0..20).map(|_| {
        let http = s.http.clone();
        let url = s.url("/auth/refresh");
        let cookie = a.cookie.clone();
        tokio::spawn(async move {
            http.post(url)
                .header("cookie", format!("__Host-palisade_refresh={cookie}"))
                .send()
                .await
                .unwrap()
        })
    });
    let mut winners = Vec::new();
    let mut in_progress = 0;
    for f in futures.collect::<Vec<_>>() {
        let resp = f.await.unwrap();
        match resp.status() {
            StatusCode::OK => winners.push(Session::from_response(resp).await),
            StatusCode::CONFLICT => {
                assert!(set_cookie(&resp).is_none(), "the loser keeps its cookie");
                assert_eq!(error_code(resp).await.1, "refresh_in_progress");
                in_progress += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(winners.len(), 1);
    assert_eq!(in_progress, 19);
    // The session survived the race: old access token, new access token and the new
    // cookie all work.
    let w = &winners[0];
    assert_eq!(s.get("/auth/me", &a.access).await.status(), StatusCode::OK);
    assert_eq!(s.get("/auth/me", &w.access).await.status(), StatusCode::OK);
    assert_eq!(s.refresh(&w.cookie).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn refresh_refuses_cross_site_requests_and_other_methods() {
    let s = Server::in_process();
    let acme = seed_acme(&s);
    let a = s.login("alice", &acme.alice).await;

    for (name, value) in [
        ("origin", "https://evil.example"),
        ("origin", "null"),
        ("origin", "http://localhost:8080.evil.example"),
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-site", "same-site"),
    ] {
        let resp = s.refresh_with(&a.cookie, header(name, value)).await;
        assert_eq!(
            error_code(resp).await,
            (StatusCode::FORBIDDEN, "cross_site_request".into()),
            "{name}: {value}"
        );
    }
    // Refused requests did not consume the token.
    let resp = s
        .refresh_with(&a.cookie, header("origin", "http://localhost:8080"))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let b = Session::from_response(resp).await;

    // Logout is cookie-authenticated too.
    let resp = s
        .http
        .post(s.url("/auth/logout"))
        .header("cookie", format!("__Host-palisade_refresh={}", b.cookie))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(s.get("/auth/me", &b.access).await.status(), StatusCode::OK);

    // POST only.
    for m in [reqwest::Method::GET, reqwest::Method::PUT] {
        let resp = s
            .http
            .request(m.clone(), s.url("/auth/refresh"))
            .header("cookie", format!("__Host-palisade_refresh={}", b.cookie))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED, "{m}");
    }
    // A refresh token in the body or query string is not a credential.
    let resp = s
        .http
        .post(s.url(&format!("/auth/refresh?refresh_token={}", b.cookie)))
        .json(&serde_json::json!({"refresh_token": b.cookie}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(s.refresh(&b.cookie).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn garbage_refresh_cookies_are_refused() {
    let s = Server::in_process();
    seed_acme(&s);
    for v in [
        "",
        "x",
        &"A".repeat(43),
        &"A".repeat(5000),
        "../../etc/passwd",
    ] {
        let (status, code) = error_code(s.refresh(v).await).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::UNAUTHORIZED, "invalid_refresh_token")
        );
    }
}

#[tokio::test]
async fn state_survives_kill_9() {
    let mut s = Server::start_with(&[("PALISADE_TOKENS__REFRESH_REUSE_GRACE", "0s")]);
    let acme = seed_acme(&s);
    let a = s.login("alice", &acme.alice).await;
    let resp = s.refresh(&a.cookie).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let b = Session::from_response(resp).await;

    s.kill9();
    s.restart();

    // The rotation was durable: the old token is dead (and its reuse detected), the
    // new one... was in the same session, which reuse now revokes. So check the new
    // one first, then the old one.
    let resp = s.refresh(&b.cookie).await;
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "rotated token survived the crash"
    );
    let c = Session::from_response(resp).await;
    assert_eq!(s.get("/auth/me", &c.access).await.status(), StatusCode::OK);
    assert_eq!(s.get("/auth/me", &b.access).await.status(), StatusCode::OK);
    let (status, code) = error_code(s.refresh(&a.cookie).await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNAUTHORIZED, "refresh_reused")
    );

    // No user lost.
    s.login("hannah", &acme.hannah).await;
    s.login("adam", &acme.adam).await;
    let list = String::from_utf8(s.cli(&["user", "list"], None).stdout).unwrap();
    assert_eq!(list.lines().count(), 4, "{list}");
}

/// A refresh cookie alone authenticates a logout only while it names a live session: a
/// garbage, forged or already-ended cookie is 401 (and is cleared all the same), so a
/// logout endpoint cannot be used to probe or to "succeed" without a credential.
#[tokio::test]
async fn logout_with_only_a_dead_refresh_cookie_is_refused() {
    let s = Server::in_process();
    let acme = seed_acme(&s);
    let a = s.login("alice", &acme.alice).await;
    let logout = |cookie: String| {
        s.http
            .post(s.url("/auth/logout"))
            .header("origin", "http://localhost:8080")
            .header("cookie", format!("__Host-palisade_refresh={cookie}"))
            .send()
    };
    for dead in ["garbage".to_owned(), "x".repeat(43)] {
        let r = logout(dead).await.unwrap();
        assert!(set_cookie(&r).unwrap().contains("Max-Age=0"));
        assert_eq!(error_code(r).await.0, StatusCode::UNAUTHORIZED);
    }
    // The live cookie ends its session (204) once; the same cookie again is dead.
    let r = logout(a.cookie.clone()).await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        s.get("/auth/me", &a.access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let r = logout(a.cookie.clone()).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}
