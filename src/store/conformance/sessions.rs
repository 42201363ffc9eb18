//! Sessions: refresh rotation, reuse, lifetimes and pruning.

use super::*;
use crate::model::{AuditEvent, AuditKind};
use crate::secret::RefreshToken;

fn rotate(presented: &RefreshToken, now: i64) -> RotateRequest {
    RotateRequest {
        presented: presented.hash(),
        replacement: RefreshToken::generate().hash(),
        now,
        grace_ms: 5_000,
        idle_ttl_ms: 7 * DAY,
    }
}

#[tokio::test]
async fn concurrent_rotations_of_one_token_have_exactly_one_winner() {
    let o = open().await;
    let u = user(&o.stores, "acme", "alice").await;
    let rt = RefreshToken::generate();
    session(&o.stores, &u, &rt, T0).await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let s = o.stores.sessions.clone();
        let req = rotate(&rt, T0 + 1000);
        tasks.push(tokio::spawn(async move { s.rotate_refresh(req).await }));
    }
    let (mut won, mut raced) = (0, 0);
    for t in tasks {
        match t.await.unwrap().unwrap() {
            RotateOutcome::Rotated { .. } => won += 1,
            RotateOutcome::InProgress => raced += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((won, raced), (1, 19));
}

#[tokio::test]
async fn reuse_after_the_grace_window_revokes_and_lifetimes_end_sessions() {
    let o = open().await;
    let s = &o.stores;
    let u = user(s, "acme", "alice").await;
    let rt = RefreshToken::generate();
    let sess = session(s, &u, &rt, T0).await;
    assert!(matches!(
        s.sessions
            .rotate_refresh(rotate(&rt, T0 + 1))
            .await
            .unwrap(),
        RotateOutcome::Rotated { .. }
    ));
    // Presented again a minute later: theft.
    assert!(matches!(
        s.sessions
            .rotate_refresh(rotate(&rt, T0 + 60_000))
            .await
            .unwrap(),
        RotateOutcome::Reused { .. }
    ));
    let after = s.sessions.session(&sess.id).await.unwrap().unwrap();
    assert!(!after.is_live(T0 + 60_001, 7 * DAY));

    // Idle timeout: no refresh for longer than the idle TTL ends the session.
    let rt2 = RefreshToken::generate();
    let idle = session(s, &u, &rt2, T0).await;
    assert!(matches!(
        s.sessions
            .rotate_refresh(rotate(&rt2, T0 + 8 * DAY))
            .await
            .unwrap(),
        RotateOutcome::Invalid
    ));
    assert!(!idle.is_live(T0 + 8 * DAY, 7 * DAY));
    // Absolute lifetime, however recently refreshed.
    let abs = session(s, &u, &RefreshToken::generate(), T0).await;
    assert!(abs.is_live(T0 + DAY, 7 * DAY));
    assert!(!abs.is_live(T0 + 31 * DAY, 365 * DAY));
}

#[tokio::test]
async fn ended_sessions_and_old_events_are_pruned_and_live_ones_kept() {
    let o = open().await;
    let s = &o.stores;
    let u = user(s, "acme", "alice").await;
    let live = session(s, &u, &RefreshToken::generate(), T0 + 29 * DAY).await;
    let expired = session(s, &u, &RefreshToken::generate(), T0).await; // ends T0 + 30d
    let revoked = session(s, &u, &RefreshToken::generate(), T0 + 29 * DAY).await;
    s.sessions
        .revoke_session("acme", &u.id, &revoked.id, "logout", T0 + 29 * DAY)
        .await
        .unwrap();
    let now = T0 + 31 * DAY;
    let (sessions, tokens) = s
        .sessions
        .prune(now - 3_600_000, 7 * DAY, now - 7 * DAY)
        .await
        .unwrap();
    assert_eq!((sessions, tokens), (2, 2));
    assert!(s.sessions.session(&expired.id).await.unwrap().is_none());
    assert!(s.sessions.session(&revoked.id).await.unwrap().is_none());
    assert!(s.sessions.session(&live.id).await.unwrap().is_some());

    // One event from long ago (the other is stamped now).
    let mut old = AuditEvent::new(AuditKind::Logout).tenant("acme");
    old.ts = 1_000;
    s.audit.append(&old).await.unwrap();
    s.audit
        .append(&AuditEvent::new(AuditKind::Logout).tenant("acme"))
        .await
        .unwrap();
    assert_eq!(s.audit.prune(2_000).await.unwrap(), 1);
    let left = tenant_events(s, "acme").await;
    assert_eq!(left.len(), 1);
}
