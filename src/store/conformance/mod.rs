//! The store contract, as tests any backend must pass. They run over `&Stores`, opened
//! for the store kind named by `PALISADE_TEST_STORE` (`embedded`, the default, or
//! `cluster`), so a new backend adds an implementation, not a copy of the tests.
//! Time is injected (`now` arguments), never slept.

use super::*;
use crate::access::Principal;
use crate::config::{StoreConfig, StoreKind};
use crate::model::Role;
use crate::secret::{RefreshToken, new_id};

mod audit;
mod documents;
mod keys;
mod limits;
mod sessions;
mod threads;

pub(crate) struct Opened {
    pub(crate) stores: Stores,
    cfg: StoreConfig,
    _dir: tempfile::TempDir,
    _db: Option<testdb::TestDatabase>,
}

/// The stores under test, on a fresh database (also used by the audit rules' tests).
pub(crate) async fn open() -> Opened {
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
        cfg,
        _dir: dir,
        _db: db,
    }
}

/// A second handle on the same data: another node of the cluster, or a second opening
/// of the embedded file (as the CLI opens it beside a running server).
pub(crate) async fn reopen(o: &Opened) -> Stores {
    Stores::open(&o.cfg, o._dir.path())
        .await
        .expect("open the stores under test again")
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

pub(super) const T0: i64 = 1_800_000_000_000;
pub(super) const DAY: i64 = 86_400_000;

pub(super) async fn user(s: &Stores, tenant: &str, name: &str) -> UserRecord {
    s.users
        .create_user(NewUser {
            id: new_id(),
            tenant: tenant.into(),
            username: format!("{name}-{}", new_id()),
            password_hash: "$argon2id$test".into(),
            roles: vec!["employee".into()],
            groups: vec![],
            now: T0,
            service: None,
        })
        .await
        .expect("create user")
}

pub(super) async fn session(
    s: &Stores,
    u: &UserRecord,
    refresh: &RefreshToken,
    now: i64,
) -> SessionRecord {
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

pub(super) fn principal(tenant: &str, name: &str) -> Principal {
    Principal::for_tests(tenant, name, &["employee"], &[])
}

pub(super) fn msg(content: &str, role: Role, now: i64) -> NewMessage {
    NewMessage {
        id: new_id(),
        role,
        content: content.into(),
        citations: vec![],
        tool: None,
        provenance: Default::default(),
        now,
        stopped: false,
        retries: None,
    }
}

pub(super) async fn thread(s: &Stores, owner: &crate::access::ThreadOwner) -> String {
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

/// Up to ten of `tenant`'s audit events, newest first.
pub(super) async fn tenant_events(s: &Stores, tenant: &str) -> Vec<crate::model::AuditRecord> {
    s.audit
        .query(AuditQuery {
            tenant: Some(tenant.into()),
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .unwrap()
}
