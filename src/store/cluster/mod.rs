//! The cluster store: several stateless gateway nodes share one Redis and one
//! PostgreSQL (with pgvector).
//!
//! * **Redis** (`sessions.rs`): sessions and refresh families — the conversation's
//!   security state, which every node must see at once. Rotation is one Lua script
//!   (one round trip; Redis runs scripts one at a time, so of any number of concurrent
//!   rotations of one token exactly one sees it current). Every revocation is also
//!   published, so that each node drops its cached session at once.
//! * **PostgreSQL** (`users.rs`, `threads.rs`, `documents.rs`, `audit.rs`): durable
//!   data, migrated at start-up under an advisory lock (nodes may start together).
//!
//! Both clients are multiplexed and cancellation-safe: a request dropped mid-call
//! leaves no reply behind for another caller (tokio-postgres and redis' multiplexed
//! connection match each reply to the sender that asked, and a dropped receiver's reply
//! is discarded). A store that cannot be reached answers `Unavailable`, which every
//! request path turns into 503; both clients reconnect by themselves.

mod audit;
mod documents;
mod keys;
mod limits;
mod sessions;
mod threads;
mod users;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{Check, Health, StoreError, StoreResult};
use crate::config::StoreConfig;
use crate::model::probe;

pub use sessions::Revocations;

/// Each entry moves the PostgreSQL schema one version forward; never edit a released one.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/01_init.sql"),
    include_str!("migrations/02_acl_counts.sql"),
    include_str!("migrations/03_tool_messages.sql"),
    include_str!("migrations/04_audit_chain.sql"),
    include_str!("migrations/05_thread_rows_in_place.sql"),
    include_str!("migrations/06_message_provenance.sql"),
    include_str!("migrations/07_grants.sql"),
    include_str!("migrations/08_ingest_jobs.sql"),
    include_str!("migrations/09_message_marks.sql"),
    include_str!("migrations/10_service_accounts.sql"),
];

/// How long any one store call may take before it counts as unavailable.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Key of the advisory lock that serialises migrations and DDL between nodes.
const DDL_LOCK: i64 = 0x7061_6c69_7361_6465; // "palisade"

#[derive(Clone)]
pub struct ClusterStore {
    pg: Pool,
    redis: redis::aio::ConnectionManager,
    /// Prefix of every Redis key (several deployments may share one Redis).
    prefix: Arc<str>,
    revocations: Revocations,
    /// Dimensions whose vector table is known to exist.
    known_dims: Arc<std::sync::Mutex<std::collections::HashSet<usize>>>,
    /// Set by the watchers while a store is known to be unreachable.
    reach: Arc<Reachability>,
    audit: audit::AuditWriter,
}

/// What the watchers know: each holds one connection open to its store and notices at
/// once when the store goes away (the socket closes), and when it is back.
#[derive(Default)]
pub struct Reachability {
    pub redis_down: AtomicBool,
    pub postgres_down: AtomicBool,
}

impl From<tokio_postgres::Error> for StoreError {
    /// A unique violation is a conflict; anything else is unavailability (fail closed).
    fn from(e: tokio_postgres::Error) -> Self {
        if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
            return StoreError::Conflict("constraint violated");
        }
        StoreError::Unavailable(pg_error_text(&e))
    }
}

/// The error without the connection string (tokio-postgres never prints it, but a
/// database error's detail can quote row values; keep the code and message only).
fn pg_error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("postgres {}: {}", db.code().code(), db.message()),
        // The cause names what failed (a certificate not trusted, a refused socket).
        None => match std::error::Error::source(e) {
            Some(cause) => format!("postgres: {e}: {cause}"),
            None => format!("postgres: {e}"),
        },
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => StoreError::Unavailable(format!("postgres pool: {other}")),
        }
    }
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        // The error's text can carry the URL's password in some versions: keep the kind.
        StoreError::Unavailable(format!("redis: {:?}", e.kind()))
    }
}

/// A URL with its password (if any) replaced, for messages.
fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("REDACTED"));
            }
            u.to_string()
        }
        Err(_) => "(unparseable URL)".into(),
    }
}

impl ClusterStore {
    /// Connects to both stores and migrates PostgreSQL. Fails if either is unreachable
    /// at start: a node that cannot reach its stores should not join the pool.
    pub async fn open(cfg: &StoreConfig) -> StoreResult<Self> {
        let pg_cfg: tokio_postgres::Config = cfg.postgres_url.parse().map_err(|_| {
            StoreError::Unavailable(format!(
                "store.postgres_url is not a PostgreSQL URL: {}",
                redact_url(&cfg.postgres_url)
            ))
        })?;
        let mut pg_cfg = pg_cfg;
        pg_cfg.connect_timeout(CALL_TIMEOUT);
        pg_cfg.application_name("palisade");
        let tls = postgres_tls(cfg, &pg_cfg)?;
        let manager_cfg = ManagerConfig {
            // A recycled connection is checked for a closed socket, without a round
            // trip: PostgreSQL closes every connection when it stops or restarts, so
            // such a connection is discarded here, never handed out. (`Verified`
            // sent `SELECT 1` before every statement of every request: a second round
            // trip, parsed and planned each time, that cost a thread-bound turn about
            // a third of its throughput; BENCHMARKS.md.) A connection that breaks
            // silently fails its statement with an error, which denies (503), and is
            // then closed.
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &tls {
            Some(tls) => Manager::from_config(pg_cfg.clone(), tls.clone(), manager_cfg),
            None => Manager::from_config(pg_cfg.clone(), tokio_postgres::NoTls, manager_cfg),
        };
        let pg = Pool::builder(manager)
            .max_size(16)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(CALL_TIMEOUT))
            .create_timeout(Some(CALL_TIMEOUT))
            .recycle_timeout(Some(CALL_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Unavailable(format!("postgres pool: {e}")))?;

        let client = redis::Client::open(cfg.redis_url.as_str()).map_err(|_| {
            StoreError::Unavailable(format!(
                "store.redis_url is not a Redis URL: {}",
                redact_url(&cfg.redis_url)
            ))
        })?;
        let manager_cfg = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(1);
        let give_up = tokio::time::Instant::now() + cfg.connect_wait;
        patiently("postgres", give_up, || first_contact(&pg_cfg, tls.as_ref())).await?;
        let redis = patiently("redis", give_up, || async {
            tokio::time::timeout(
                CALL_TIMEOUT,
                redis::aio::ConnectionManager::new_with_config(client.clone(), manager_cfg.clone()),
            )
            .await
            .map_err(|_| StoreError::Unavailable("redis: connect timed out".into()))?
            .map_err(StoreError::from)
            .map_err(Failure::from)
        })
        .await?;

        let prefix: Arc<str> = Arc::from(cfg.redis_prefix.as_str());
        let reach = Arc::new(Reachability::default());
        let revocations = Revocations::start(client, prefix.clone(), reach.clone());
        watch_postgres(pg_cfg, tls, reach.clone(), revocations.alive());
        let audit = audit::AuditWriter::start(pg.clone());
        let store = ClusterStore {
            pg,
            redis,
            revocations,
            prefix,
            known_dims: Default::default(),
            reach,
            audit,
        };
        patiently("postgres", give_up, || async {
            store.migrate().await.map_err(Failure::from)
        })
        .await?;
        Ok(store)
    }

    async fn migrate(&self) -> StoreResult<()> {
        let mut c = self.pg.get().await?;
        let tx = c.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&DDL_LOCK])
            .await?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS palisade_schema (version INTEGER NOT NULL)")
            .await?;
        let version: Option<i32> = tx
            .query_opt("SELECT max(version) FROM palisade_schema", &[])
            .await?
            .and_then(|r| r.get(0));
        let version = version.unwrap_or(0) as usize;
        if version > MIGRATIONS.len() {
            return Err(StoreError::Corrupt(format!(
                "database schema version {version} is newer than this binary ({})",
                MIGRATIONS.len()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            tx.batch_execute(sql).await?;
            tx.execute(
                "INSERT INTO palisade_schema (version) VALUES ($1)",
                &[&((i + 1) as i32)],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A pooled PostgreSQL connection, or `Unavailable`.
    async fn pg(&self) -> StoreResult<deadpool_postgres::Object> {
        Ok(self.pg.get().await?)
    }

    fn redis(&self) -> redis::aio::ConnectionManager {
        self.redis.clone()
    }

    fn key(&self, parts: &[&str]) -> String {
        let mut k = String::with_capacity(64);
        k.push_str(&self.prefix);
        for p in parts {
            k.push_str(p);
        }
        k
    }
}

type Param<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);

/// Runs `sql` as a prepared statement from the connection's cache: one round trip once
/// prepared (an unprepared query costs two: prepare, then execute).
async fn rows(
    c: &impl deadpool_postgres::GenericClient,
    sql: &str,
    params: &[Param<'_>],
) -> StoreResult<Vec<tokio_postgres::Row>> {
    let stmt = c.prepare_cached(sql).await?;
    Ok(c.query(&stmt, params).await?)
}

/// [`rows`], at most one.
async fn row(
    c: &impl deadpool_postgres::GenericClient,
    sql: &str,
    params: &[Param<'_>],
) -> StoreResult<Option<tokio_postgres::Row>> {
    let stmt = c.prepare_cached(sql).await?;
    Ok(c.query_opt(&stmt, params).await?)
}

/// [`rows`], for a statement without results: how many rows it touched.
async fn exec(
    c: &impl deadpool_postgres::GenericClient,
    sql: &str,
    params: &[Param<'_>],
) -> StoreResult<u64> {
    let stmt = c.prepare_cached(sql).await?;
    Ok(c.execute(&stmt, params).await?)
}

/// Runs `attempt` until it succeeds, fails other than `Unavailable`, or `give_up` has
/// passed: a node or CLI command started while its store is restarting or briefly
/// overloaded waits for it rather than failing at once.
async fn patiently<T, F, Fut>(
    what: &'static str,
    give_up: tokio::time::Instant,
    mut attempt: F,
) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Failure>>,
{
    let mut pause = Duration::from_millis(100);
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(Failure::Passing(e)) if tokio::time::Instant::now() + pause < give_up => {
                tracing::warn!(store = what, error = %e, retry_in = ?pause, "store not reachable yet");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(Failure::Passing(e) | Failure::Lasting(e)) => return Err(e),
        }
    }
}

/// A failed start-up attempt: one that may pass by waiting (the store is starting or
/// restarting) or one that will not (the store refuses this node).
enum Failure {
    Passing(StoreError),
    Lasting(StoreError),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        match e {
            e @ StoreError::Unavailable(_) => Failure::Passing(e),
            e => Failure::Lasting(e),
        }
    }
}

/// One connection, to tell a store that is not there yet from one that refuses this
/// node: its certificate is not trusted, or PostgreSQL rejects the credentials, the
/// address or the database. Waiting `store.connect_wait` for those only hides the
/// mistake, so the node stops at once and says why.
async fn first_contact(
    pg: &tokio_postgres::Config,
    tls: Option<&MakeRustlsConnect>,
) -> Result<(), Failure> {
    let connected = match tls {
        Some(tls) => pg.connect(tls.clone()).await.map(|(c, conn)| {
            tokio::spawn(conn);
            c
        }),
        None => pg.connect(tokio_postgres::NoTls).await.map(|(c, conn)| {
            tokio::spawn(conn);
            c
        }),
    };
    match connected {
        Ok(_) => Ok(()),
        Err(e) if refused(&e) => Err(Failure::Lasting(StoreError::Unavailable(format!(
            "{} (waiting will not help: check store.postgres_url and store.postgres_ca_file)",
            pg_error_text(&e)
        )))),
        Err(e) => Err(Failure::Passing(e.into())),
    }
}

/// A refusal of this node rather than an absence of the store: SQLSTATE class 28
/// (authorisation: pg_hba.conf, password), 3D000 (no such database), or any TLS error
/// (the certificate or the protocol; a handshake is only reached once PostgreSQL
/// listens).
fn refused(e: &tokio_postgres::Error) -> bool {
    if let Some(code) = e.code() {
        return code.code().starts_with("28")
            || code == &tokio_postgres::error::SqlState::INVALID_CATALOG_NAME;
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cause {
        let tls = c.downcast_ref::<rustls::Error>().is_some()
            || c.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some());
        if tls {
            return true;
        }
        cause = c.source();
    }
    false
}

/// Runs `f` with the call deadline: a store that hangs counts as unavailable.
async fn timed<T>(f: impl std::future::Future<Output = StoreResult<T>>) -> StoreResult<T> {
    tokio::time::timeout(CALL_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| Err(StoreError::Unavailable("store call timed out".into())))
}

#[async_trait::async_trait]
impl Health for ClusterStore {
    async fn check(&self, deadline: Duration) -> Vec<Check> {
        let pg_read = async {
            let c = self.pg().await?;
            for table in ["users", "threads", "documents", "audit_events"] {
                c.query_one(
                    &format!("SELECT count(*) FROM (SELECT 1 FROM {table} LIMIT 1) t"),
                    &[],
                )
                .await?;
            }
            Ok(())
        };
        let pg_write = async {
            let c = self.pg().await?;
            c.execute(
                "INSERT INTO health_probe (node, checked_at) VALUES ($1, $2)
                 ON CONFLICT (node) DO UPDATE SET checked_at = excluded.checked_at",
                &[&node_name(), &crate::timeutil::now_ms()],
            )
            .await?;
            Ok(())
        };
        // A key of this probe's own: concurrent probes (of this node or another) never
        // read back each other's writes.
        let redis = async {
            let mut r = self.redis();
            let key = self.key(&["health:", &node_name(), ":", &crate::secret::new_id()]);
            let now = crate::timeutil::now_ms();
            let (back,): (Option<i64>,) = redis::pipe()
                .atomic()
                .cmd("SET")
                .arg(&key)
                .arg(now)
                .arg("PX")
                .arg(10_000)
                .ignore()
                .cmd("GET")
                .arg(&key)
                .cmd("DEL")
                .arg(&key)
                .ignore()
                .query_async(&mut r)
                .await?;
            if back != Some(now) {
                return Err(StoreError::Unavailable("redis: read back differs".into()));
            }
            Ok(())
        };
        let (a, b, c) = tokio::join!(
            probe("postgres_read", deadline, pg_read),
            probe("postgres_write", deadline, pg_write),
            probe("redis", deadline, redis),
        );
        vec![a, b, c]
    }

    /// Network stores are unavailable or not; they are never "corrupt" in the sense of a
    /// damaged local file. Each request fails closed on its own store error.
    fn degraded(&self) -> bool {
        false
    }

    fn unreachable(&self) -> bool {
        self.reach.redis_down.load(Ordering::Acquire)
            || self.reach.postgres_down.load(Ordering::Acquire)
    }
}

/// Keeps one connection to PostgreSQL open and pings it every second: when the socket
/// closes or a ping fails, PostgreSQL is marked unreachable at once; when a new
/// connection succeeds, reachable again. Stops when the store is dropped.
fn watch_postgres(
    pg: tokio_postgres::Config,
    tls: Option<MakeRustlsConnect>,
    reach: Arc<Reachability>,
    alive: std::sync::Weak<()>,
) {
    tokio::spawn(async move {
        while alive.strong_count() > 0 {
            // The connection runs on its own task (it drives the client's I/O); its end
            // is the socket's end.
            let connect = async {
                Ok::<_, tokio_postgres::Error>(match &tls {
                    Some(tls) => {
                        let (client, conn) = pg.connect(tls.clone()).await?;
                        (client, tokio::spawn(async move { conn.await.map(|_| ()) }))
                    }
                    None => {
                        let (client, conn) = pg.connect(tokio_postgres::NoTls).await?;
                        (client, tokio::spawn(async move { conn.await.map(|_| ()) }))
                    }
                })
            };
            let (client, mut ended) = match tokio::time::timeout(CALL_TIMEOUT, connect).await {
                Ok(Ok(c)) => c,
                _ => {
                    mark(&reach.postgres_down, true, "postgres");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    continue;
                }
            };
            mark(&reach.postgres_down, false, "postgres");
            loop {
                tokio::select! {
                    _ = &mut ended => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {
                        if alive.strong_count() == 0 {
                            ended.abort();
                            return;
                        }
                        let ping = tokio::time::timeout(CALL_TIMEOUT, client.simple_query("SELECT 1")).await;
                        if !matches!(ping, Ok(Ok(_))) {
                            tracing::warn!("postgres did not answer a ping");
                            ended.abort();
                            break;
                        }
                    }
                }
            }
            mark(&reach.postgres_down, true, "postgres");
        }
    });
}

/// TLS for PostgreSQL when the URL asks for it (`sslmode=require`): rustls, verifying
/// the server's certificate against `store.postgres_ca_file` (a private CA) or the
/// public web roots. `prefer` (tokio-postgres' default) and `disable` stay plain: a
/// connection is either verified TLS or knowingly plain, never an unverified middle.
fn postgres_tls(
    cfg: &StoreConfig,
    pg: &tokio_postgres::Config,
) -> StoreResult<Option<MakeRustlsConnect>> {
    if pg.get_ssl_mode() != tokio_postgres::config::SslMode::Require {
        return Ok(None);
    }
    let mut roots = rustls::RootCertStore::empty();
    match &cfg.postgres_ca_file {
        Some(path) => {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject;
            let certs = CertificateDer::pem_file_iter(path).map_err(|e| {
                StoreError::Unavailable(format!("store.postgres_ca_file {}: {e}", path.display()))
            })?;
            for cert in certs {
                let cert = cert.map_err(|e| {
                    StoreError::Unavailable(format!(
                        "store.postgres_ca_file {}: {e}",
                        path.display()
                    ))
                })?;
                roots.add(cert).map_err(|e| {
                    StoreError::Unavailable(format!(
                        "store.postgres_ca_file {}: {e}",
                        path.display()
                    ))
                })?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Unavailable(format!("tls: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Some(MakeRustlsConnect::new(config)))
}

/// Records a change of reachability, logging only the changes.
pub(crate) fn mark(flag: &AtomicBool, down: bool, store: &'static str) {
    if flag.swap(down, Ordering::AcqRel) != down {
        if down {
            tracing::error!(
                store,
                "store unreachable; refusing requests until it is back"
            );
        } else {
            tracing::info!(store, "store reachable");
        }
    }
}

/// This node's name in the health table: the host name and process id.
fn node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "node".into());
    format!("{host}:{}", std::process::id())
}
