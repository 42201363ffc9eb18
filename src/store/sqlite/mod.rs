//! The embedded store: one SQLite file (WAL, `synchronous=FULL`), migrated at start-up.
//!
//! * **Writes** go to one writer thread that owns the only write connection. It takes
//!   every write that is waiting, runs each inside its own savepoint of one
//!   transaction and commits once — one fsync for the whole batch (group commit) — and
//!   only then answers each caller. "Acknowledged" still means "on disk": no reply
//!   leaves before its commit, and a failed commit answers every caller of the batch
//!   with an error. One writer also makes every multi-statement operation (refresh
//!   rotation above all) atomic without retry loops.
//! * **Reads** run on read connections (WAL readers never wait for the writer): point
//!   lookups on a pool of four, inline on the calling task; scans (retrieval, listings)
//!   on a pool of two, on the blocking thread pool. Every statement is cached and
//!   planned once (query-planner stability: plans never depend on bound values).
//! * A request cancelled mid-call cannot hand its reply to anyone else: each call owns
//!   a one-shot channel that the dropped future simply never reads (the redis-py bug that
//!   showed ChatGPT users other people's chat titles cannot happen here).
//!
//! One file per concern: `users`, `sessions`, `threads`, `documents`, `audit`.

mod audit;
mod documents;
mod epoch;
mod flat;
mod keys;
mod lexical;
mod sessions;
mod threads;
mod users;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};

use super::{Check, Health, StoreError, StoreResult};

pub use documents::VEC_CHUNK_SIZE;

/// The database file inside `data_dir`.
pub const DB_FILE: &str = "palisade.db";

/// Read connections; WAL lets them all read while the writer writes.
const READERS: usize = 4;
/// Read connections for scans (retrieval, listings).
const SCANNERS: usize = 2;
/// WAL pages between automatic checkpoints (4 KiB each: the WAL file grows to about
/// 40 MiB before it is reused). SQLite's default, 1,000, checkpointed several times a
/// second under a steady stream of chat turns, re-copying the same hot pages (the
/// thread's row, its newest messages, the owner's thread index) each time:
/// 10,000 made a thread-bound turn ~12 % faster (measured in BENCHMARKS.md).
const WAL_CHECKPOINT_PAGES: i64 = 10_000;
/// The most writes one transaction takes: bounds how long the first waits for the last.
const MAX_BATCH: usize = 128;

/// Each entry moves the schema one version forward; `PRAGMA user_version` records how
/// many have run. Never edit a released entry: append a new one.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/01_sessions.sql"),
    include_str!("migrations/02_threads.sql"),
    include_str!("migrations/03_documents.sql"),
    include_str!("migrations/04_request_ids_and_created_by.sql"),
    include_str!("migrations/05_audit_counts.sql"),
    include_str!("migrations/06_usernames_nocase.sql"),
    include_str!("migrations/07_health.sql"),
    include_str!("migrations/08_session_access.sql"),
    include_str!("migrations/09_text_partitions.sql"),
    include_str!("migrations/10_tool_messages.sql"),
    include_str!("migrations/11_session_dpop.sql"),
    include_str!("migrations/12_audit_chain.sql"),
    include_str!("migrations/13_messages_by_thread.sql"),
    include_str!("migrations/14_thread_index_without_time.sql"),
    include_str!("migrations/15_message_provenance.sql"),
    include_str!("migrations/16_grants.sql"),
    include_str!("migrations/17_ingest_jobs.sql"),
    include_str!("migrations/18_message_marks.sql"),
    include_str!("migrations/19_service_accounts.sql"),
    include_str!("migrations/20_vector_epochs.sql"),
    include_str!("migrations/21_text_in_memory.sql"),
];

impl From<rusqlite::Error> for StoreError {
    /// The one place SQLite errors are classified: a constraint is a conflict, a damaged
    /// file is corruption, anything else is unavailability (and fails closed upstream).
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode::*;
        match &e {
            rusqlite::Error::SqliteFailure(f, _) => match f.code {
                ConstraintViolation => StoreError::Conflict("constraint violated"),
                DatabaseCorrupt | NotADatabase => StoreError::Corrupt(e.to_string()),
                _ => StoreError::Unavailable(e.to_string()),
            },
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::InvalidColumnType(..) => StoreError::Corrupt(e.to_string()),
            _ => StoreError::Unavailable(e.to_string()),
        }
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

/// A write: runs on the writer's connection inside a savepoint and returns whether it
/// succeeded (else the savepoint is rolled back) and how to answer its caller once the
/// batch has committed.
struct Job {
    run: Run,
    /// Must be fsynced before its caller is answered. A deferred write is on disk no
    /// later than the next durable commit of anyone (the WAL is sequential), which is
    /// what `synchronous_commit = off` means in PostgreSQL.
    durable: bool,
}
type Reply = Box<dyn FnOnce() + Send>;
/// Runs the write; says whether it succeeded and how to answer its caller.
type Run = Box<dyn FnOnce(&Connection) -> (bool, Reply) + Send>;

#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: std::path::PathBuf,
    /// Set when any operation met a damaged file, or the writer found its write-ahead
    /// log gone; sticky (see `Health::degraded`).
    corrupt: Arc<std::sync::atomic::AtomicBool>,
    writer: Mutex<mpsc::Sender<Job>>,
    readers: Pool,
    scanners: Pool,
    /// Each tenant's vectors in memory, for the filtered scan (`flat.rs`).
    flat: Arc<flat::FlatVectors>,
    /// Each tenant's full text in memory, for BM25 over the visible chunks
    /// (`lexical.rs`).
    text: Arc<lexical::TextIndexes>,
}

/// Read connections and the permits to use them: holding a permit guarantees a free
/// connection.
struct Pool {
    conns: Mutex<Vec<Connection>>,
    slots: Arc<tokio::sync::Semaphore>,
}

impl Pool {
    /// No `mmap_size`: every retrieval writes its lineage record, and SQLite unmaps a
    /// reader's whole mapping at its next read after any write, so in service a mapped
    /// scan paid for an munmap, a fresh mapping and its page faults on every request,
    /// and each connection's mapping counted the file once more in the RSS (measured in
    /// BENCHMARKS.md).
    fn open(path: &Path, n: usize) -> StoreResult<Pool> {
        let mut conns = Vec::with_capacity(n);
        for _ in 0..n {
            let c = open_connection(path)?;
            c.execute_batch("PRAGMA query_only=1;")?;
            conns.push(c);
        }
        Ok(Pool {
            conns: Mutex::new(conns),
            slots: Arc::new(tokio::sync::Semaphore::new(n)),
        })
    }

    async fn permit(&self) -> StoreResult<tokio::sync::OwnedSemaphorePermit> {
        self.slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Unavailable("reader pool closed".into()))
    }

    /// Takes a free connection (the caller holds a permit, so there is one), runs `f`
    /// in one read transaction, and returns the connection to the pool.
    fn run<R>(&self, f: impl FnOnce(&Connection) -> StoreResult<R>) -> StoreResult<R> {
        let conn = self
            .conns
            .lock()
            .map_err(|_| StoreError::Unavailable("reader pool poisoned".into()))?
            .pop()
            .ok_or_else(|| StoreError::Unavailable("no free reader".into()))?;
        // One read transaction (one snapshot for every statement of `f`), framed by
        // cached statements: `Transaction` would parse BEGIN and COMMIT on every read.
        let res = exec(&conn, "BEGIN")
            .map_err(StoreError::from)
            .and_then(|()| f(&conn))
            .and_then(|out| exec(&conn, "COMMIT").map(|()| out).map_err(Into::into));
        if !conn.is_autocommit() {
            // `f` or COMMIT failed: end the transaction before the connection goes back.
            let _ = exec(&conn, "ROLLBACK");
        }
        if let Ok(mut pool) = self.conns.lock() {
            pool.push(conn);
        }
        res
    }
}

/// Registers sqlite-vec with every connection this process opens (once).
fn register_sqlite_vec() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: `sqlite3_vec_init` has the signature SQLite expects of an extension
        // entry point; the statically linked extension is registered before any
        // connection is opened, which is what `sqlite3_auto_extension` requires.
        unsafe {
            type Init = unsafe extern "C" fn(
                *mut rusqlite::ffi::sqlite3,
                *mut *mut std::os::raw::c_char,
                *const rusqlite::ffi::sqlite3_api_routines,
            ) -> std::os::raw::c_int;
            let init: Init = std::mem::transmute(sqlite_vec::sqlite3_vec_init as *const ());
            rusqlite::ffi::sqlite3_auto_extension(Some(init));
        }
    });
}

fn open_connection(path: &Path) -> StoreResult<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // Other processes (the CLI) write to the same file; wait for them briefly.
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // Every statement palisade runs fits: none is parsed twice.
    conn.set_prepared_statement_cache_capacity(128);
    // Plans never depend on the values bound. Without this, SQLite (3.4x) marks a
    // statement whose plan *could* depend on a bound value (`col = ?` outside an index,
    // a `json_each(?)` in a subquery) to be re-prepared whenever that value is rebound,
    // and rusqlite clears the bindings each time a cached statement goes back to its
    // cache: such a statement was parsed and planned again on every run (16 % of a
    // stateless chat request's CPU, BENCHMARKS.md). palisade runs no ANALYZE, so the
    // planner had nothing to learn from the values anyway.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    // A new database gives freed pages back to the file system (see `reclaim`): the
    // mode is fixed when the file's first page is written, here by the WAL switch; on
    // an existing database the line changes nothing.
    conn.execute_batch(
        "PRAGMA auto_vacuum=INCREMENTAL; PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;",
    )?;
    Ok(conn)
}

/// The store holds password hashes, conversations and restricted documents: it is
/// created 0600 (SQLite gives its `-wal` and `-shm` files the database file's mode), and
/// an existing one that others may read or write is refused rather than used.
fn secure_files(path: &Path) -> StoreResult<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if !path.exists() {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", path.display()))
            })?;
    }
    let mut files = vec![path.to_path_buf()];
    for suffix in ["-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        files.push(name.into());
    }
    for f in files.iter().filter(|f| f.exists()) {
        let mode = std::fs::metadata(f)
            .map_err(|e| StoreError::Unavailable(format!("{}: {e}", f.display())))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(StoreError::Unavailable(format!(
                "{} is accessible to other users (mode {:o}); run: chmod 600 {}",
                f.display(),
                mode & 0o777,
                f.display()
            )));
        }
    }
    Ok(())
}

impl SqliteStore {
    pub fn open(path: &Path) -> StoreResult<Self> {
        register_sqlite_vec();
        secure_files(path)?;
        let mut writer = open_connection(path)?;
        migrate(&mut writer)?;
        writer.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)?;
        documents::upgrade_legacy_vectors(&writer)?;
        documents::drop_text_partitions(&writer)?;
        let readers = Pool::open(path, READERS)?;
        let scanners = Pool::open(path, SCANNERS)?;
        let (tx, rx) = mpsc::channel::<Job>();
        let corrupt = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watch = WalWatch::new(path, corrupt.clone());
        std::thread::Builder::new()
            .name("palisade-sqlite-writer".into())
            .spawn(move || writer_loop(writer, rx, watch))
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                corrupt,
                writer: Mutex::new(tx),
                readers,
                scanners,
                flat: Default::default(),
                text: Default::default(),
            }),
        })
    }

    /// Runs `f` on the writer inside its own savepoint of the next group commit, and
    /// answers once that commit is on disk. An `Err` from `f` rolls back `f`'s writes
    /// only.
    async fn write<R, F>(&self, f: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<R> + Send + 'static,
    {
        self.submit(f, true).await
    }

    /// Like [`write`](Self::write), but answers once committed, before the fsync: for a
    /// write whose caller will make a durable write before it acknowledges anything (a
    /// turn's question, acknowledged only with its stored answer). It survives a crash
    /// of the process (the commit is in the OS) and is on disk with the next durable
    /// commit.
    async fn write_deferred<R, F>(&self, f: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<R> + Send + 'static,
    {
        self.submit(f, false).await
    }

    async fn submit<R, F>(&self, f: F, durable: bool) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<R> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel::<StoreResult<R>>();
        let run = Box::new(move |c: &Connection| {
            let res = std::panic::catch_unwind(AssertUnwindSafe(|| f(c))).unwrap_or_else(|_| {
                Err(StoreError::Unavailable("a store operation panicked".into()))
            });
            let ok = res.is_ok();
            let reply: Reply = Box::new(move || {
                let _ = tx.send(res);
            });
            (ok, reply)
        });
        let job = Job { run, durable };
        self.inner
            .writer
            .lock()
            .map_err(|_| StoreError::Unavailable("writer lock poisoned".into()))?
            .send(job)
            .map_err(|_| StoreError::Unavailable("the writer has stopped".into()))?;
        // A dropped reply means the batch did not commit.
        let res = rx
            .await
            .map_err(|_| StoreError::Unavailable("the write was not committed".into()))?;
        self.note(res)
    }

    /// Remembers corruption, so that the gateway stops serving from damaged data.
    fn note<R>(&self, res: StoreResult<R>) -> StoreResult<R> {
        if let Err(StoreError::Corrupt(why)) = &res
            && !self
                .inner
                .corrupt
                .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            tracing::error!(error = %why, "the store is corrupt; refusing every protected request");
        }
        res
    }

    /// Runs a short read (point lookups by key: a session, a thread page, the ACLs a
    /// scope may see) with a pooled read connection, inline on the calling task, inside
    /// one read transaction. Handing such a read to another thread would cost more (two
    /// wake-ups, measured in BENCHMARKS.md) than the read itself.
    async fn read<R, F>(&self, f: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<R> + Send + 'static,
    {
        let permit = self.inner.readers.permit().await?;
        let res = self.inner.readers.run(f);
        drop(permit);
        self.note(res)
    }

    /// Runs a read that may scan (retrieval, listings) on the blocking pool, so that it
    /// never holds up other requests' tasks.
    async fn read_blocking<R, F>(&self, f: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<R> + Send + 'static,
    {
        let permit = self.inner.scanners.permit().await?;
        let inner = self.inner.clone();
        let res = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            inner.scanners.run(f)
        })
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        self.note(res)
    }
}

/// How often an idle writer looks for its write-ahead log.
const WAL_WATCH_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// The writer's watch on its write-ahead log. Committed pages live in the WAL until a
/// checkpoint copies them into the database file; if the file is deleted or replaced
/// while the store runs, SQLite keeps writing into the unlinked file and every commit
/// since the last checkpoint is lost at the next start. The writer compares the file's
/// identity with the one it writes to after every commit and every 50 ms when idle; on a
/// change it copies the WAL's contents into the database file through its still-open
/// handle (a checkpoint), acknowledges a batch only once that is done, and stops all
/// writes (the store is degraded until restarted).
struct WalWatch {
    path: std::path::PathBuf,
    /// (device, inode) of the WAL the writer uses, once one exists.
    id: Option<(u64, u64)>,
    corrupt: Arc<std::sync::atomic::AtomicBool>,
    /// The WAL was lost and its contents are not yet safe in the database file.
    unsaved: bool,
}

impl WalWatch {
    fn new(db: &Path, corrupt: Arc<std::sync::atomic::AtomicBool>) -> Self {
        let mut name = db.as_os_str().to_owned();
        name.push("-wal");
        Self {
            path: name.into(),
            id: None,
            corrupt,
            unsaved: false,
        }
    }

    fn lost(&mut self) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::metadata(&self.path), self.id) {
            (Ok(m), None) => {
                self.id = Some((m.dev(), m.ino()));
                false
            }
            (Ok(m), Some(id)) => (m.dev(), m.ino()) != id,
            (Err(e), Some(_)) => e.kind() == std::io::ErrorKind::NotFound,
            (Err(_), None) => false,
        }
    }

    /// Whether every commit so far is safe in the database file or a linked WAL. On a
    /// lost WAL: degrades the store and checkpoints (again on later calls, until a
    /// checkpoint completes: readers may hold it up).
    fn safe(&mut self, conn: &Connection) -> bool {
        if !self.unsaved && !self.lost() {
            return true;
        }
        if !self.corrupt.swap(true, std::sync::atomic::Ordering::SeqCst) {
            tracing::error!(
                wal = %self.path.display(),
                "the database's write-ahead log was removed or replaced; copying it into the database file and refusing every protected request until a restart"
            );
        }
        self.unsaved = true;
        let done = conn
            .query_row("PRAGMA wal_checkpoint(FULL)", [], |r| r.get::<_, i64>(0))
            .is_ok_and(|busy| busy == 0);
        if done {
            self.unsaved = false;
            tracing::error!("the write-ahead log's contents are in the database file");
        }
        done
    }
}

/// The group-commit loop: one transaction per batch of waiting writes.
fn writer_loop(conn: Connection, rx: mpsc::Receiver<Job>, mut watch: WalWatch) {
    let mut synced = true;
    loop {
        let first = match rx.recv_timeout(WAL_WATCH_EVERY) {
            Ok(job) => job,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                watch.safe(&conn);
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        if watch.corrupt.load(std::sync::atomic::Ordering::SeqCst) {
            // Degraded: nothing more is written (dropping the job answers its caller
            // with an error). The probes' own writes are refused too.
            drop(first);
            while rx.try_recv().is_ok() {}
            watch.safe(&conn);
            continue;
        }
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // fsync at commit only when some write of the batch needs it.
        let durable = batch.iter().any(|j| j.durable);
        if durable != synced {
            let pragma = if durable {
                "PRAGMA synchronous=FULL"
            } else {
                "PRAGMA synchronous=NORMAL"
            };
            if exec(&conn, pragma).is_err() {
                tracing::error!(
                    "cannot set the synchronous mode; answering the batch with an error"
                );
                continue;
            }
            synced = durable;
        }
        if let Err(e) = exec(&conn, "BEGIN IMMEDIATE") {
            tracing::error!(error = %e, "cannot begin a write transaction");
            continue; // dropping the batch answers every caller with an error
        }
        let mut replies = Vec::with_capacity(batch.len());
        let mut broken = false;
        for job in batch {
            if exec(&conn, "SAVEPOINT job").is_err() {
                broken = true;
                break;
            }
            let (ok, reply) = (job.run)(&conn);
            let end = if ok {
                exec(&conn, "RELEASE job")
            } else {
                exec(&conn, "ROLLBACK TO job").and_then(|()| exec(&conn, "RELEASE job"))
            };
            if end.is_err() {
                broken = true;
                break;
            }
            replies.push(reply);
        }
        if broken || exec(&conn, "COMMIT").is_err() {
            tracing::error!("group commit failed; answering its writes with an error");
            let _ = conn.execute_batch("ROLLBACK");
            continue; // replies dropped: each caller sees "not committed"
        }
        if !watch.safe(&conn) {
            continue; // committed into a lost WAL not yet copied: not acknowledged
        }
        for reply in replies {
            reply();
        }
    }
}

/// Runs one statement of the writer's own framing from the statement cache: they run
/// several times per batch, and parsing them each time showed in the profile.
fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// Runs the migrations this file has not seen, each in its own transaction.
/// (`rusqlite_migration` does the same with `user_version`, but has no release for the
/// rusqlite version sqlite-vec needs here; this loop is the whole of what it would do.)
fn migrate(conn: &mut Connection) -> StoreResult<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let version = usize::try_from(version).unwrap_or(0);
    if version > MIGRATIONS.len() {
        return Err(StoreError::Corrupt(format!(
            "database schema version {version} is newer than this binary ({})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

/// Free pages past which a prune gives space back to the file system (4 MiB).
const RECLAIM_PAGES: i64 = 1024;

/// After a prune: returns the free pages to the file system when many were freed, so
/// the file shrinks with what it holds (on a database created with incremental
/// auto-vacuum; an older one keeps its pages for reuse). Runs inside the prune's write.
pub(crate) fn reclaim(c: &Connection) -> rusqlite::Result<()> {
    let mode: i64 = c.query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?;
    let free: i64 = c.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    if mode == 2 && free > RECLAIM_PAGES {
        // Each step of the pragma frees one page: step it to the end.
        let mut stmt = c.prepare("PRAGMA incremental_vacuum")?;
        let mut rows = stmt.query([])?;
        while rows.next()?.is_some() {}
    }
    Ok(())
}

pub(crate) fn json_list(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

pub(crate) fn parse_list(s: &str) -> rusqlite::Result<Vec<String>> {
    serde_json::from_str(s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// `?N, ?N+1, …` for `n` bound values starting at `first`: only placeholders are
/// formatted into SQL, never values.
pub(crate) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[async_trait::async_trait]
impl Health for SqliteStore {
    async fn check(&self, deadline: std::time::Duration) -> Vec<Check> {
        // A new connection, as a restarted node would open the files: a truncated or
        // replaced database fails here even while the pool still reads from its caches.
        let path = self.inner.path.clone();
        let read = tokio::task::spawn_blocking(move || -> StoreResult<()> {
            // The file itself first: SQLite would happily serve recent pages from the
            // WAL of a database whose main file was truncated or replaced.
            let mut magic = [0u8; 16];
            std::fs::File::open(&path)
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
                .map_err(|e| StoreError::Corrupt(format!("database header: {e}")))?;
            if &magic != b"SQLite format 3\0" {
                return Err(StoreError::Corrupt("not a database file".into()));
            }
            let c = Connection::open_with_flags(
                &path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            c.busy_timeout(std::time::Duration::from_secs(2))?;
            let version: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            if usize::try_from(version).ok() != Some(MIGRATIONS.len()) {
                return Err(StoreError::Corrupt(format!("schema version {version}")));
            }
            for table in ["users", "sessions", "threads", "documents", "audit_events"] {
                c.query_row(
                    &format!("SELECT count(*) FROM (SELECT 1 FROM {table} LIMIT 1)"),
                    [],
                    |_| Ok(()),
                )
                .map_err(|e| StoreError::Corrupt(format!("{table}: {e}")))?;
            }
            Ok(())
        });
        let read = async {
            let r = read
                .await
                .unwrap_or_else(|e| Err(StoreError::Unavailable(e.to_string())));
            self.note(r)
        };
        let write = self.write(|c| {
            c.prepare_cached(
                "INSERT INTO health (id, checked_at) VALUES (1, ?1)
                 ON CONFLICT(id) DO UPDATE SET checked_at = excluded.checked_at",
            )?
            .execute([crate::timeutil::now_ms()])?;
            Ok(())
        });
        let (read, write) = tokio::join!(
            crate::model::probe("read", deadline, read),
            crate::model::probe("write", deadline, write),
        );
        vec![read, write]
    }

    fn degraded(&self) -> bool {
        self.inner.corrupt.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Principal;
    use rusqlite::StatementStatus;

    /// A cached statement is planned once. SQLite 3.4x otherwise marks a statement whose
    /// plan could depend on a bound value for re-preparation whenever that value is
    /// rebound, and rusqlite clears the bindings each time a statement goes back to its
    /// cache: the scope query of every chat request was parsed and planned each time.
    #[test]
    fn cached_statements_are_planned_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        drop(SqliteStore::open(&path).expect("store"));
        let c = open_connection(&path).expect("connection");
        for (user, groups) in [("ann", &["hr"][..]), ("bob", &[]), ("cy", &["a", "b"])] {
            let scope = Principal::for_tests("acme", user, &["employee"], groups).access_scope();
            documents::visible_acls(&c, &scope).expect("query");
        }
        let stmt = c.prepare_cached(documents::VISIBLE_ACLS).expect("cached");
        assert_eq!(stmt.get_status(StatementStatus::RePrepare), 0);
        // The statement really ran three times from the cache (the count above is live).
        assert_eq!(stmt.get_status(StatementStatus::Run), 3);
    }

    /// A prune that freed many pages gives them back: the file shrinks.
    #[tokio::test]
    async fn a_prune_that_freed_many_pages_shrinks_the_file() {
        use crate::store::AuditStore;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        let store = SqliteStore::open(&path).expect("store");
        let pages = |store: &SqliteStore| {
            let store = store.clone();
            async move {
                store
                    .write(|c| {
                        let count: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0))?;
                        let free: i64 = c.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
                        Ok((count, free))
                    })
                    .await
                    .expect("pages")
            }
        };
        store
            .write(|c| {
                c.execute_batch(
                    "CREATE TABLE junk (x BLOB);
                     WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 8000)
                     INSERT INTO junk SELECT randomblob(1000) FROM n;",
                )?;
                Ok(())
            })
            .await
            .expect("fill");
        let (full, _) = pages(&store).await;
        let mode: i64 = store
            .write(|c| Ok(c.query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?))
            .await
            .expect("mode");
        assert_eq!(
            mode, 2,
            "a new database is created with incremental auto-vacuum"
        );
        store
            .write(|c| Ok(c.execute_batch("DROP TABLE junk")?))
            .await
            .expect("drop");
        let (_, freed) = pages(&store).await;
        assert!(freed > RECLAIM_PAGES, "{freed} pages freed");
        store.prune(0).await.expect("prune");
        let (after, free) = pages(&store).await;
        assert!(
            free <= RECLAIM_PAGES && after < full / 2,
            "{full} -> {after} pages, {free} free"
        );
    }

    /// Migration 15 gives answers written before provenance was recorded the
    /// conservative one: every document cited up to them in their thread (an answer
    /// without citations after one that cited may have repeated it); the user's
    /// messages and threads without citations get none.
    #[tokio::test]
    async fn answers_stored_before_provenance_drew_on_everything_cited_before_them() {
        use crate::store::ThreadStore;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        secure_files(&path).expect("file");
        {
            let c = open_connection(&path).expect("connection");
            for sql in &MIGRATIONS[..14] {
                c.execute_batch(sql).expect("migration");
            }
            c.pragma_update(None, "user_version", 14).expect("version");
            let cite = |d: &str| {
                format!("[{{\"document_id\":\"{d}\",\"title\":\"T\",\"chunk_id\":\"c\"}}]")
            };
            c.execute_batch(&format!(
                "INSERT INTO threads (id, tenant, owner, session_id, title, created_at, updated_at, message_count)
                     VALUES ('t1', 'acme', 'id-ann', 's', 'T', 1, 5, 5), ('t2', 'acme', 'id-ann', 's', 'T', 1, 2, 2);
                 INSERT INTO messages (id, thread_id, seq, role, content, citations, created_at, tool) VALUES
                     ('a', 't1', 1, 'assistant', 'before any citation', '[]', 1, NULL),
                     ('b', 't1', 2, 'assistant', 'cites hr', '{hr}', 2, NULL),
                     ('c', 't1', 3, 'user', 'question', '[]', 3, NULL),
                     ('d', 't1', 4, 'assistant', 'cites nothing', '[]', 4, NULL),
                     ('e', 't1', 5, 'assistant', 'cites travel', '{travel}', 5, NULL),
                     ('f', 't2', 1, 'user', 'q', '[]', 1, NULL),
                     ('g', 't2', 2, 'assistant', 'a', '[]', 2, NULL);",
                hr = cite("hr"),
                travel = cite("travel"),
            ))
            .expect("old rows");
        }
        let store = SqliteStore::open(&path).expect("migrated");
        let ann = Principal::for_tests("acme", "ann", &[], &[]).thread_owner(false);
        let sources = |page: crate::store::ThreadPage| -> Vec<(String, Vec<String>)> {
            page.messages
                .iter()
                .map(|m| {
                    (
                        m.id.clone(),
                        m.provenance.documents().map(str::to_owned).collect(),
                    )
                })
                .collect()
        };
        let t1 = store
            .thread_page(&ann, "t1", None, 10)
            .await
            .expect("page")
            .expect("t1");
        let strs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            sources(t1),
            [
                ("a".to_string(), strs(&[])),
                ("b".to_string(), strs(&["hr"])),
                ("c".to_string(), strs(&[])),
                ("d".to_string(), strs(&["hr"])),
                ("e".to_string(), strs(&["hr", "travel"])),
            ]
        );
        let t2 = store
            .thread_page(&ann, "t2", None, 10)
            .await
            .expect("page")
            .expect("t2");
        assert!(sources(t2).iter().all(|(_, s)| s.is_empty()));
    }

    /// Migration 13 rebuilds `messages` keyed by (thread_id, seq): every message of a
    /// store written before it survives, in order, with its citations and tool data,
    /// and a thread's deletion still removes its messages.
    #[tokio::test]
    async fn messages_survive_the_move_to_thread_order() {
        use crate::model::Role;
        use crate::store::{HistoryBudget, NewMessage, ThreadStore, TurnStart};
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        secure_files(&path).expect("file");
        {
            let c = open_connection(&path).expect("connection");
            for sql in &MIGRATIONS[..12] {
                c.execute_batch(sql).expect("migration");
            }
            c.pragma_update(None, "user_version", 12).expect("version");
            c.execute_batch(
                "INSERT INTO threads (id, tenant, owner, session_id, title, created_at, updated_at, message_count)
                     VALUES ('t1', 'acme', 'id-ann', 's', 'T', 1, 3, 3);
                 INSERT INTO messages (id, thread_id, seq, role, content, citations, created_at, tool) VALUES
                     ('m2', 't1', 2, 'assistant', 'two', '[{\"document_id\":\"d\",\"title\":\"D\",\"chunk_id\":\"c\"}]', 2,
                      '{\"calls\":[{\"id\":\"k\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]}'),
                     ('m1', 't1', 1, 'user', 'one', '[]', 1, NULL),
                     ('m3', 't1', 3, 'tool', 'three', '[]', 3, '{\"result\":{\"call_id\":\"k\"}}');",
            )
            .expect("old rows");
        }
        let store = SqliteStore::open(&path).expect("migrated");
        let ann = Principal::for_tests("acme", "ann", &[], &[]).thread_owner(false);
        let page = store
            .thread_page(&ann, "t1", None, 10)
            .await
            .expect("page")
            .expect("ann's thread");
        let got: Vec<_> = page
            .messages
            .iter()
            .map(|m| (m.id.as_str(), m.seq, m.role, m.content.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("m1", 1, Role::User, "one"),
                ("m2", 2, Role::Assistant, "two"),
                ("m3", 3, Role::Tool, "three")
            ]
        );
        assert_eq!(page.messages[1].citations[0].chunk_id, "c");
        assert!(page.messages[1].tool.is_some() && page.messages[2].tool.is_some());
        // New turns append after the migrated messages and see them as history.
        let turn = store
            .begin_turn(
                &ann,
                "t1",
                NewMessage {
                    id: "m4".into(),
                    role: Role::User,
                    content: "four".into(),
                    citations: vec![],
                    tool: None,
                    provenance: Default::default(),
                    now: 4,
                    stopped: false,
                    retries: None,
                },
                100,
                HistoryBudget(1000),
                0,
            )
            .await
            .expect("turn");
        let TurnStart::Started { history, message } = turn else {
            panic!("turn not started: {turn:?}");
        };
        assert_eq!((message.seq, history.len()), (4, 3));
        assert!(store.delete_thread(&ann, "t1").await.expect("delete"));
        let c = open_connection(&path).expect("connection");
        let left: i64 = c
            .query_row("SELECT COUNT(*) FROM messages", [], |r| r.get(0))
            .expect("count");
        assert_eq!(
            left, 0,
            "the cascade still removes a deleted thread's messages"
        );
    }
}
