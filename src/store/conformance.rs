//! The store contract, as tests any backend must pass. They run over `&Stores`, opened
//! for the store kind named by `PALISADE_TEST_STORE` (`embedded`, the default, or
//! `cluster`), so a new backend adds an implementation, not a copy of the tests.
//! Time is injected (`now` arguments), never slept.

use std::sync::Arc;

use super::*;
use crate::access::{AccessScope, Operator, Principal};
use crate::config::{StoreConfig, StoreKind};
use crate::secret::{RefreshToken, new_id};

struct Opened {
    stores: Stores,
    _dir: tempfile::TempDir,
    _db: Option<testdb::TestDatabase>,
}

async fn open() -> Opened {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = StoreConfig::default();
    let mut db = None;
    if std::env::var("PALISADE_TEST_STORE").as_deref() == Ok("cluster") {
        let fresh = testdb::TestDatabase::create().await;
        cfg.kind = StoreKind::Cluster;
        cfg.postgres_url = fresh.url.clone();
        cfg.redis_prefix = fresh.redis_prefix.clone();
        db = Some(fresh);
    }
    let stores = Stores::open(&cfg, dir.path())
        .await
        .expect("open the stores under test");
    Opened {
        stores,
        _dir: dir,
        _db: db,
    }
}

/// A database of its own for each test of the cluster store (and a Redis key prefix of
/// its own), dropped afterwards.
mod testdb {
    pub struct TestDatabase {
        pub url: String,
        pub redis_prefix: String,
        name: String,
    }

    fn admin_url() -> String {
        std::env::var("PALISADE_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
    }

    impl TestDatabase {
        pub async fn create() -> TestDatabase {
            let id: String = crate::secret::new_id()
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_lowercase()
                    } else {
                        'x'
                    }
                })
                .collect();
            let name = format!("palisade_conf_{id}");
            let (client, conn) = tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls)
                .await
                .expect("connect to PostgreSQL");
            tokio::spawn(conn);
            client
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .await
                .expect("create a test database");
            let mut url = url::Url::parse(&admin_url()).expect("postgres url");
            url.set_path(&name);
            TestDatabase {
                url: url.to_string(),
                redis_prefix: format!("{name}:"),
                name,
            }
        }
    }

    impl Drop for TestDatabase {
        fn drop(&mut self) {
            let _ = std::process::Command::new("psql")
                .arg(admin_url())
                .arg("-qc")
                .arg(format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ))
                .output();
        }
    }
}

const T0: i64 = 1_800_000_000_000;
const DAY: i64 = 86_400_000;

async fn user(s: &Stores, tenant: &str, name: &str) -> UserRecord {
    s.users
        .create_user(NewUser {
            id: new_id(),
            tenant: tenant.into(),
            username: format!("{name}-{}", new_id()),
            password_hash: "$argon2id$test".into(),
            roles: vec!["employee".into()],
            groups: vec![],
            now: T0,
        })
        .await
        .expect("create user")
}

async fn session(s: &Stores, u: &UserRecord, refresh: &RefreshToken, now: i64) -> SessionRecord {
    s.sessions
        .create_session(NewSession {
            id: new_id(),
            tenant: u.tenant.clone(),
            user_id: u.id.clone(),
            now,
            absolute_expires_at: now + 30 * DAY,
            user_agent: None,
            dpop_jkt: None,
            refresh_hash: refresh.hash(),
            roles: u.roles.clone(),
            groups: u.groups.clone(),
        })
        .await
        .expect("create session")
}

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

fn principal(tenant: &str, name: &str) -> Principal {
    Principal::for_tests(tenant, name, &["employee"], &[])
}

fn msg(content: &str, role: Role, now: i64) -> NewMessage {
    NewMessage {
        id: new_id(),
        role,
        content: content.into(),
        citations: vec![],
        tool: None,
        now,
    }
}

async fn thread(s: &Stores, owner: &crate::access::ThreadOwner) -> String {
    let id = new_id();
    let created = s
        .threads
        .create_thread(
            owner,
            NewThread {
                id: id.clone(),
                title: "t".into(),
                now: T0,
            },
            10,
        )
        .await
        .unwrap();
    assert!(matches!(created, CreateThread::Created(_)));
    id
}

#[tokio::test]
async fn nobody_but_the_owner_reads_or_writes_a_thread() {
    let o = open().await;
    let s = &o.stores;
    let alice = principal("acme", "alice").thread_owner(false);
    let id = thread(s, &alice).await;
    let mallory = principal("acme", "mallory").thread_owner(false);
    let eve = principal("globex", "alice").thread_owner(false);
    for other in [&mallory, &eve] {
        assert!(
            s.threads
                .thread_page(other, &id, None, 10)
                .await
                .unwrap()
                .is_none()
        );
        assert!(matches!(
            s.threads
                .begin_turn(
                    other,
                    &id,
                    msg("hi", Role::User, T0),
                    10,
                    HistoryBudget(100),
                    0
                )
                .await
                .unwrap(),
            TurnStart::NotFound
        ));
        assert!(matches!(
            s.threads
                .append_message(other, &id, msg("x", Role::Assistant, T0), 10)
                .await
                .unwrap(),
            Append::NotFound
        ));
        assert!(!s.threads.delete_thread(other, &id).await.unwrap());
        assert!(s.threads.list_threads(other).await.unwrap().is_empty());
    }
    // Strict binding: the same user from another session is a stranger.
    let mut p2 = principal("acme", "alice");
    p2 = Principal::verified(
        p2.tenant().into(),
        p2.subject().into(),
        p2.username().into(),
        Default::default(),
        "another-session".into(),
    );
    let strict_other = p2.thread_owner(true);
    assert!(
        s.threads
            .thread_page(&strict_other, &id, None, 10)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.threads
            .thread_page(&p2.thread_owner(false), &id, None, 10)
            .await
            .unwrap()
            .is_some()
    );
    // Nothing was written by any of the attempts.
    let page = s
        .threads
        .thread_page(&alice, &id, None, 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(page.thread.message_count, 0);
    assert!(page.messages.is_empty());
}

#[tokio::test]
async fn limits_hold_and_history_is_bounded_by_the_budget() {
    let o = open().await;
    let s = &o.stores;
    let alice = principal("acme", "alice").thread_owner(false);
    let id = thread(s, &alice).await;
    // Thread count limit.
    for _ in 0..9 {
        thread(s, &alice).await;
    }
    let eleventh = s
        .threads
        .create_thread(
            &alice,
            NewThread {
                id: new_id(),
                title: "x".into(),
                now: T0,
            },
            10,
        )
        .await
        .unwrap();
    assert!(matches!(eleventh, CreateThread::LimitReached));
    // 30 messages of ~100 tokens each.
    let long = "word ".repeat(80);
    for i in 0..30 {
        let r = s
            .threads
            .append_message(
                &alice,
                &id,
                msg(&format!("{i} {long}"), Role::User, T0 + i),
                31,
            )
            .await
            .unwrap();
        assert!(matches!(r, Append::Appended(_)));
    }
    // A budget of ~3.5 messages returns the newest 3, oldest first.
    let budget = HistoryBudget(3 * threads::approx_tokens(&format!("29 {long}")) + 50);
    let TurnStart::Started { history, message } = s
        .threads
        .begin_turn(&alice, &id, msg("q", Role::User, T0 + 100), 31, budget, 0)
        .await
        .unwrap()
    else {
        panic!("turn refused");
    };
    assert_eq!(message.seq, 31);
    let firsts: Vec<&str> = history
        .iter()
        .map(|m| m.content.split(' ').next().unwrap())
        .collect();
    assert_eq!(firsts, ["27", "28", "29"]);
    // The thread is now full.
    assert!(matches!(
        s.threads
            .begin_turn(&alice, &id, msg("q", Role::User, T0), 31, budget, 0)
            .await
            .unwrap(),
        TurnStart::Full
    ));
}

#[tokio::test]
async fn pages_join_up_to_the_whole_thread() {
    let o = open().await;
    let s = &o.stores;
    let alice = principal("acme", "alice").thread_owner(false);
    let id = thread(s, &alice).await;
    for i in 0..23 {
        s.threads
            .append_message(&alice, &id, msg(&format!("m{i}"), Role::User, T0 + i), 100)
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = s
            .threads
            .thread_page(&alice, &id, before, 5)
            .await
            .unwrap()
            .unwrap();
        assert!(page.messages.len() <= 5);
        let mut contents: Vec<String> = page.messages.into_iter().map(|m| m.content).collect();
        contents.extend(seen);
        seen = contents;
        match page.next_before {
            Some(n) => before = Some(n),
            None => break,
        }
    }
    let expected: Vec<String> = (0..23).map(|i| format!("m{i}")).collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn tool_calls_and_results_are_kept_as_their_own_kinds() {
    let o = open().await;
    let s = &o.stores;
    let alice = principal("acme", "alice").thread_owner(false);
    let id = thread(s, &alice).await;
    let calls = ToolData::Calls(vec![ToolCall {
        id: "call_1".into(),
        kind: ToolKind::Function,
        function: FunctionCall {
            name: "get_weather".into(),
            arguments: r#"{"city":"Paris"}"#.into(),
        },
    }]);
    let result = ToolData::Result {
        call_id: "call_1".into(),
    };
    let mut ask = msg("", Role::Assistant, T0 + 1);
    ask.tool = Some(calls.clone());
    let mut answer = msg("18 degrees", Role::Tool, T0 + 2);
    answer.tool = Some(result.clone());
    for m in [msg("weather?", Role::User, T0), ask, answer] {
        s.threads.append_message(&alice, &id, m, 100).await.unwrap();
    }
    let turn = s
        .threads
        .begin_turn(
            &alice,
            &id,
            msg("thanks", Role::User, T0 + 3),
            100,
            HistoryBudget(10_000),
            0,
        )
        .await
        .unwrap();
    let TurnStart::Started { history, .. } = turn else {
        panic!("turn refused: {turn:?}");
    };
    let kinds: Vec<(Role, Option<ToolData>)> =
        history.into_iter().map(|m| (m.role, m.tool)).collect();
    assert_eq!(
        kinds,
        vec![
            (Role::User, None),
            (Role::Assistant, Some(calls)),
            (Role::Tool, Some(result)),
        ]
    );
}

fn acl_roles(r: &str) -> Acl {
    Acl {
        roles: vec![r.into()],
        ..Acl::default()
    }
}

async fn ingest(s: &Stores, tenant: &str, title: &str, text: &str, acl: Acl) -> String {
    let admin = Operator::local_cli().document_admin(tenant);
    let id = new_id();
    let doc = NewDocument::new(
        &admin,
        id.clone(),
        title.into(),
        text.into(),
        acl,
        vec![NewChunk {
            id: new_id(),
            text: text.into(),
            embedding: None,
        }],
        T0,
    )
    .unwrap();
    s.documents.insert_document(doc).await.unwrap();
    id
}

async fn search(s: &Stores, scope: &AccessScope, q: &str) -> Vec<String> {
    s.documents
        .search(
            scope,
            SearchQuery {
                vector: None,
                terms: q.split(' ').map(str::to_owned).collect(),
                k: 10,
            },
        )
        .await
        .unwrap()
        .text
        .into_iter()
        .map(|h| h.document_id)
        .collect()
}

#[tokio::test]
async fn retrieval_returns_everything_visible_and_nothing_else() {
    let o = open().await;
    let s = &o.stores;
    let public = ingest(
        s,
        "acme",
        "handbook",
        "salary policy overview",
        Acl {
            public: true,
            ..Acl::default()
        },
    )
    .await;
    let hr = ingest(
        s,
        "acme",
        "bands",
        "salary bands confidential",
        acl_roles("hr"),
    )
    .await;
    let other = ingest(s, "globex", "bands", "salary bands globex", acl_roles("hr")).await;

    let hannah = Principal::for_tests("acme", "hannah", &["hr"], &[]).access_scope();
    let mut got = search(s, &hannah, "salary").await;
    got.sort();
    let mut want = vec![public.clone(), hr.clone()];
    want.sort();
    assert_eq!(got, want, "recall: everything visible");
    let nora = Principal::for_tests("acme", "nora", &[], &[]).access_scope();
    assert_eq!(
        search(s, &nora, "salary").await,
        std::slice::from_ref(&public)
    );
    let eve = Principal::for_tests("globex", "eve", &["hr"], &[]).access_scope();
    assert_eq!(
        search(s, &eve, "salary").await,
        std::slice::from_ref(&other)
    );

    // The document admin lists every document of its tenant, readable or not, and
    // deletes one; the next search no longer finds it. Another tenant's admin cannot.
    let acme_admin = Operator::local_cli().document_admin("acme");
    let globex_admin = Operator::local_cli().document_admin("globex");
    let listed: Vec<String> = s
        .documents
        .list_all_documents(&acme_admin)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(listed.len(), 2);
    assert!(listed.contains(&hr) && !listed.contains(&other));
    assert!(
        !s.documents
            .delete_document(&globex_admin, &hr)
            .await
            .unwrap()
    );
    assert!(s.documents.delete_document(&acme_admin, &hr).await.unwrap());
    assert_eq!(search(s, &hannah, "salary").await, [public]);
    assert!(s.documents.document(&hannah, &hr).await.unwrap().is_none());
}

#[tokio::test]
async fn audit_events_are_kept_per_tenant_and_request() {
    let o = open().await;
    let s = &o.stores;
    let mut ev = AuditEvent::new(AuditKind::Retrieval).tenant("acme");
    ev.request_id = Some("req-1".into());
    s.audit.append(&ev).await.unwrap();
    s.audit
        .append(&AuditEvent::new(AuditKind::Retrieval).tenant("globex"))
        .await
        .unwrap();
    let acme = s
        .audit
        .query(AuditQuery {
            tenant: Some("acme".into()),
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(acme.len(), 1);
    let by_req = s
        .audit
        .query(AuditQuery {
            request_id: Some("req-1".into()),
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(by_req.len(), 1);
    assert_eq!(by_req[0].event.tenant.as_deref(), Some("acme"));
    let checks = s.health.check().await;
    assert!(checks.iter().all(|c| c.ok), "{checks:?}");
    assert!(!s.health.degraded());
}

#[tokio::test]
async fn concurrent_appends_form_one_verifiable_chain_and_lineage_finds_its_documents() {
    let o = open().await;
    let s = &o.stores;
    let verify = || audit::verify_chain(s.audit.as_ref());
    // An empty trail verifies.
    assert_eq!(verify().await.unwrap().unwrap().records, 0);
    // Ten old events, then 64 appended at once.
    for i in 0..10 {
        let mut ev = AuditEvent::new(AuditKind::Logout).tenant("acme");
        ev.ts = 1_000 + i;
        s.audit.append(&ev).await.unwrap();
    }
    let mut tasks = Vec::new();
    for i in 0..64 {
        let store = s.audit.clone();
        tasks.push(tokio::spawn(async move {
            let tenant = if i % 2 == 0 { "acme" } else { "globex" };
            let ev = AuditEvent::new(AuditKind::Retrieval)
                .tenant(tenant)
                .subject(format!("u{i}"))
                .thread(Some(&format!("t{i}")))
                .documents(["doc-b", "doc-a", "doc-b"]);
            store.append(&ev).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let report = verify().await.unwrap().unwrap();
    assert_eq!(
        (report.records, report.first_seq, report.last_seq),
        (74, 1, 74)
    );
    let acme = s
        .audit
        .lineage(crate::store::LineageQuery {
            tenant: Some("acme".into()),
            document_id: "doc-a".into(),
            limit: 1000,
        })
        .await
        .unwrap();
    assert_eq!(acme.len(), 32);
    assert!(
        acme.iter()
            .all(|r| r.event.tenant.as_deref() == Some("acme")
                && r.event.documents == ["doc-a", "doc-b"]
                && r.event.thread.is_some())
    );
    // Retention cuts the start of the chain; what is kept still verifies.
    assert_eq!(s.audit.prune(2_000).await.unwrap(), 10);
    let report = verify().await.unwrap().unwrap();
    assert_eq!(
        (report.records, report.first_seq, report.last_seq),
        (64, 11, 74)
    );
    s.audit
        .append(&AuditEvent::new(AuditKind::Logout).tenant("acme"))
        .await
        .unwrap();
    assert_eq!(verify().await.unwrap().unwrap().last_seq, 75);
}

#[tokio::test]
async fn a_dropped_caller_never_receives_someone_elses_reply() {
    // Cancel many reads and writes mid-flight; every completed call must still see
    // exactly its own data.
    let o = open().await;
    let s = Arc::new(o.stores.clone());
    let mut owners = Vec::new();
    for i in 0..8 {
        let owner = principal("acme", &format!("u{i}")).thread_owner(false);
        let id = thread(&s, &owner).await;
        s.threads
            .append_message(
                &owner,
                &id,
                msg(&format!("secret-{i}"), Role::User, T0),
                100,
            )
            .await
            .unwrap();
        owners.push((owner, id, format!("secret-{i}")));
    }
    for round in 0..50u64 {
        let mut tasks = Vec::new();
        for (owner, id, secret) in owners.iter().cloned() {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let page = s.threads.thread_page(&owner, &id, None, 10);
                // Some calls are abandoned after a few microseconds.
                if round % 3 == 0 {
                    let _ = tokio::time::timeout(std::time::Duration::from_micros(50), page).await;
                    return;
                }
                let page = page.await.unwrap().unwrap();
                assert!(page.messages.iter().all(|m| m.content == secret));
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }
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
    let left = s
        .audit
        .query(AuditQuery {
            tenant: Some("acme".into()),
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(left.len(), 1);
}

#[tokio::test]
async fn limits_hold_under_concurrency_and_slots_come_back() {
    let o = open().await;
    let l = o.stores.limits.clone();
    let window = Limit {
        name: "conformance_window",
        kind: LimitKind::Window {
            max: 5,
            period: std::time::Duration::from_secs(60),
        },
    };
    let key = format!("k-{}", new_id());
    assert_eq!(take_concurrently(&l, window, &key, 40, 60).await, 5);
    // Another key, and another limit on the same key, are counted apart.
    let other = format!("k-{}", new_id());
    assert_eq!(l.take(&window, &other).await.unwrap(), Admission::Admitted);
    // A slot given back can be taken again, once; a reset clears the count.
    l.give_back(&window, &key).await.unwrap();
    assert_eq!(l.take(&window, &key).await.unwrap(), Admission::Admitted);
    assert!(matches!(
        l.take(&window, &key).await.unwrap(),
        Admission::RetryAfter(_)
    ));
    l.reset(&window, &key).await.unwrap();
    assert_eq!(l.take(&window, &key).await.unwrap(), Admission::Admitted);

    // A rate: the burst, then refusals telling how long to wait.
    let rate = Limit {
        name: "conformance_rate",
        kind: LimitKind::Rate {
            burst: 3,
            per_minute: 6,
        },
    };
    assert_eq!(take_concurrently(&l, rate, &key, 20, 10).await, 3);
}

/// `n` concurrent takes of `limit` for `key`: how many were admitted. Every refusal
/// must say to retry within 1..=`max_wait` seconds.
async fn take_concurrently(
    l: &Arc<dyn LimitStore>,
    limit: Limit,
    key: &str,
    n: usize,
    max_wait: u64,
) -> usize {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (l, key) = (l.clone(), key.to_owned());
            tokio::spawn(async move { l.take(&limit, &key).await.expect("take") })
        })
        .collect();
    let mut admitted = 0;
    for t in tasks {
        match t.await.unwrap() {
            Admission::Admitted => admitted += 1,
            Admission::RetryAfter(s) => assert!((1..=max_wait).contains(&s), "{s}"),
        }
    }
    admitted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_fill_a_thread_exactly_with_unique_positions() {
    let o = open().await;
    let s = o.stores.clone();
    let alice = principal("acme", "alice").thread_owner(false);
    let id = thread(&s, &alice).await;
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let (s, alice, id) = (s.clone(), alice.clone(), id.clone());
            tokio::spawn(async move {
                s.threads
                    .append_message(&alice, &id, msg(&format!("m{i}"), Role::User, T0 + i), 12)
                    .await
                    .expect("append")
            })
        })
        .collect();
    let mut seqs = Vec::new();
    let mut full = 0;
    for t in tasks {
        match t.await.unwrap() {
            Append::Appended(m) => seqs.push(m.seq),
            Append::Full => full += 1,
            Append::NotFound => panic!("the owner's thread was not found"),
        }
    }
    seqs.sort();
    assert_eq!(seqs, (1..=12).collect::<Vec<i64>>());
    assert_eq!(full, 18);
    let page = s
        .threads
        .thread_page(&alice, &id, None, 100)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(page.messages.len(), 12);
    assert_eq!(page.thread.message_count, 12);
}
