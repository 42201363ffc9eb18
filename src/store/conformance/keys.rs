//! Service accounts and their API keys.

use super::*;
use crate::access::ServiceProfile;
use crate::model::{AuditEvent, AuditKind};
use crate::secret::TokenHash;
use crate::store::{ClientBinding, OAuthClientRecord};

fn key(tenant: &str, service: &str, id: &str, now: i64) -> ApiKeyRecord {
    ApiKeyRecord {
        id: id.into(),
        tenant: tenant.into(),
        service_id: service.into(),
        secret_hash: TokenHash([7; 32]),
        created_at: now,
        expires_at: now + 90 * DAY,
        revoked_at: None,
        last_used_at: None,
        last_used_ip: None,
        allow_cidrs: vec!["10.0.0.0/8".into(), "2001:db8::/32".into()],
        dpop_jkt: Some("j".repeat(43)),
    }
}

#[tokio::test]
async fn a_service_profile_and_its_keys_round_trip_and_revoke_once_within_their_tenant() {
    let o = open().await;
    let s = &o.stores;
    let profile = ServiceProfile {
        models: vec!["m1".into(), "m2".into()],
        requests_per_minute: 7,
        tokens_per_day: 9_000,
        act_for_users: true,
    };
    let svc = s
        .users
        .create_user(NewUser {
            id: new_id(),
            tenant: "acme".into(),
            username: format!("bot-{}", new_id()),
            password_hash: "!service".into(),
            roles: vec!["employee".into()],
            groups: vec![],
            now: T0,
            service: Some(profile.clone()),
        })
        .await
        .unwrap();
    let read = s.users.user_by_id("acme", &svc.id).await.unwrap().unwrap();
    assert_eq!(read.service, Some(profile));
    let person = user(s, "acme", "alice").await;
    assert_eq!(
        s.users
            .user_by_id("acme", &person.id)
            .await
            .unwrap()
            .unwrap()
            .service,
        None
    );

    let (k1, k2) = (new_id(), new_id());
    s.keys
        .create_key(key("acme", &svc.id, &k1, T0))
        .await
        .unwrap();
    s.keys
        .create_key(key("acme", &svc.id, &k2, T0 + 1))
        .await
        .unwrap();
    s.keys
        .create_key(key("globex", "other", &new_id(), T0))
        .await
        .unwrap();
    let got = s.keys.key(&k1).await.unwrap().unwrap();
    assert_eq!(got.secret_hash, TokenHash([7; 32]));
    assert_eq!(got.allow_cidrs, ["10.0.0.0/8", "2001:db8::/32"]);
    assert_eq!(got.dpop_jkt.as_deref(), Some("j".repeat(43).as_str()));
    assert!(got.is_live(T0) && !got.is_live(T0 + 90 * DAY));
    assert!(s.keys.key("nope").await.unwrap().is_none());
    // Newest first, one tenant only.
    let ids: Vec<String> = s
        .keys
        .keys_of("acme", Some(&svc.id))
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(ids, [k2.clone(), k1.clone()]);
    assert_eq!(s.keys.keys_of("acme", None).await.unwrap().len(), 2);

    // Another tenant cannot revoke it; its own revokes it once.
    assert!(!s.keys.revoke_key("globex", &k1, T0 + 5).await.unwrap());
    assert!(s.keys.revoke_key("acme", &k1, T0 + 5).await.unwrap());
    assert!(!s.keys.revoke_key("acme", &k1, T0 + 6).await.unwrap());
    let revoked = s.keys.key(&k1).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(T0 + 5));
    assert!(!revoked.is_live(T0 + 5));

    s.keys
        .touch_key(&k2, T0 + 9, Some("10.1.2.3"))
        .await
        .unwrap();
    let touched = s.keys.key(&k2).await.unwrap().unwrap();
    assert_eq!(touched.last_used_at, Some(T0 + 9));
    assert_eq!(touched.last_used_ip.as_deref(), Some("10.1.2.3"));
    s.keys.announce_keys(&[k2]).await.unwrap();
}

#[tokio::test]
async fn an_event_with_an_actor_keeps_it_and_the_chain_still_verifies() {
    let o = open().await;
    let s = &o.stores;
    let mut ev = AuditEvent::new(AuditKind::TokenExchanged)
        .tenant("acme")
        .subject("u1");
    ev.actor = Some("svc-1".into());
    s.audit.append(&ev).await.unwrap();
    s.audit
        .append(&AuditEvent::new(AuditKind::Retrieval).tenant("acme"))
        .await
        .unwrap();
    let all = s
        .audit
        .query(AuditQuery {
            tenant: Some("acme".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let exchanged = all
        .iter()
        .find(|r| r.event.kind == AuditKind::TokenExchanged)
        .unwrap();
    assert_eq!(exchanged.event.actor.as_deref(), Some("svc-1"));
    // The actor is part of the hash: the stored record verifies with it, not without.
    let prev = exchanged.prev_hash.unwrap();
    let seq = exchanged.seq.unwrap();
    assert!(exchanged.event.chain_hash(&prev, seq) == exchanged.hash.unwrap());
    let mut stripped = exchanged.event.clone();
    stripped.actor = None;
    assert!(stripped.chain_hash(&prev, seq) != exchanged.hash.unwrap());
}

#[tokio::test]
async fn an_oauth_client_binds_to_one_tenant_once_and_lapses_unapproved() {
    let o = open().await;
    let s = &o.stores;
    let client = |id: &str| OAuthClientRecord {
        id: id.into(),
        name: "Inspector".into(),
        redirect_uris: vec![
            "http://127.0.0.1:6274/cb".into(),
            "https://app.example/cb".into(),
        ],
        tenant: None,
        created_at: T0,
        expires_at: Some(T0 + DAY),
        last_used_at: None,
    };
    let (a, b) = (new_id(), new_id());
    s.keys.create_client(client(&a)).await.unwrap();
    s.keys.create_client(client(&b)).await.unwrap();
    assert_eq!(s.keys.client(&a).await.unwrap(), Some(client(&a)));
    assert_eq!(s.keys.client("nope").await.unwrap(), None);

    // Two first approvals from two tenants at once: one tenant gets it.
    let (x, y) = tokio::join!(
        s.keys.bind_client(&a, "acme", T0 + 1),
        s.keys.bind_client(&a, "globex", T0 + 1)
    );
    let outcomes = [x.unwrap(), y.unwrap()];
    assert!(outcomes.contains(&ClientBinding::Bound), "{outcomes:?}");
    assert!(
        outcomes.contains(&ClientBinding::OtherTenant),
        "{outcomes:?}"
    );
    let bound = s.keys.client(&a).await.unwrap().unwrap();
    let owner = bound.tenant.clone().unwrap();
    assert_eq!(bound.expires_at, None);
    assert_eq!(
        s.keys.bind_client(&a, &owner, T0 + 2 * DAY).await.unwrap(),
        ClientBinding::Bound
    );
    s.keys.touch_client(&a, T0 + 5).await.unwrap();
    assert_eq!(
        s.keys.client(&a).await.unwrap().unwrap().last_used_at,
        Some(T0 + 5)
    );

    // Unapproved past its expiry: not bindable, and pruned; the approved one stays.
    assert_eq!(
        s.keys.bind_client(&b, "acme", T0 + DAY).await.unwrap(),
        ClientBinding::Unknown
    );
    assert_eq!(s.keys.prune_clients(T0 + DAY - 1, 0).await.unwrap(), 0);
    assert_eq!(s.keys.prune_clients(T0 + DAY, 0).await.unwrap(), 1);
    assert!(s.keys.client(&b).await.unwrap().is_none());
    assert!(s.keys.client(&a).await.unwrap().is_some());
    // Approved, last used at T0 + 5: kept until that is before the cut-off.
    assert_eq!(s.keys.prune_clients(T0 + DAY, T0 + 5).await.unwrap(), 0);
    assert_eq!(s.keys.prune_clients(T0 + DAY, T0 + 6).await.unwrap(), 1);
    assert!(s.keys.client(&a).await.unwrap().is_none());
}
