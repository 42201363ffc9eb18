//! The embedded store: one SQLite file (WAL, `synchronous=FULL`), migrated at start-up.
//!
//! All access goes through one connection behind a mutex, on the blocking thread pool.
//! SQLite serialises writers anyway; one connection makes every multi-statement
//! operation (refresh rotation above all) trivially atomic, and a request that is
//! cancelled mid-call cannot hand its reply to anyone else: the blocking task owns
//! its result and the dropped future simply never reads it (SECURITY #31).

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::*;
use crate::audit::{AuditEvent, AuditKind};
use crate::auth::{AccessScope, Principal};
use crate::config::ThreadBinding;

#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

/// Each entry moves the schema one version forward; `PRAGMA user_version` records
/// how many have run. Never edit a released entry: append a new one.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    tenant        TEXT NOT NULL,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    roles         TEXT NOT NULL,   -- JSON array
    groups_       TEXT NOT NULL,   -- JSON array
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL
);
CREATE TABLE sessions (
    id                  TEXT PRIMARY KEY,
    tenant              TEXT NOT NULL,
    user_id             TEXT NOT NULL REFERENCES users(id),
    created_at          INTEGER NOT NULL,
    last_seen_at        INTEGER NOT NULL,
    absolute_expires_at INTEGER NOT NULL,
    revoked_at          INTEGER,
    revoke_reason       TEXT,
    user_agent          TEXT
);
CREATE INDEX sessions_by_user ON sessions(tenant, user_id);
-- One refresh family per session; rotated members are kept to detect reuse.
CREATE TABLE refresh_tokens (
    hash        BLOB PRIMARY KEY,
    session_id  TEXT NOT NULL REFERENCES sessions(id),
    issued_at   INTEGER NOT NULL,
    rotated_at  INTEGER
);
CREATE INDEX refresh_by_session ON refresh_tokens(session_id);
CREATE TABLE audit_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    ts         INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    tenant     TEXT,
    subject    TEXT,
    username   TEXT,
    session_id TEXT,
    ip         TEXT,
    reason     TEXT
);
CREATE INDEX audit_by_tenant ON audit_events(tenant, id);
"#,
    r#"
-- Conversations. Every query below carries (tenant, owner[, session_id]) next to id.
CREATE TABLE threads (
    id            TEXT PRIMARY KEY,
    tenant        TEXT NOT NULL,
    owner         TEXT NOT NULL,
    session_id    TEXT NOT NULL,
    title         TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    message_count INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX threads_by_owner ON threads(tenant, owner, updated_at);
CREATE TABLE messages (
    id         TEXT PRIMARY KEY,
    thread_id  TEXT NOT NULL REFERENCES threads(id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    role       TEXT NOT NULL,
    content    TEXT NOT NULL,
    citations  TEXT NOT NULL DEFAULT '[]',
    created_at INTEGER NOT NULL,
    UNIQUE (thread_id, seq)
);
ALTER TABLE audit_events ADD COLUMN resource TEXT;
"#,
    r#"
-- Documents. An ACL is stored once per distinct label set; a chunk carries its
-- document's acl_id so that the visibility filter is an integer set inside the
-- KNN (vec0 metadata column) and BM25 queries.
CREATE TABLE acls (
    id     INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    labels TEXT NOT NULL,           -- canonical JSON array, sorted
    UNIQUE (tenant, labels)
);
CREATE TABLE acl_labels (
    acl_id INTEGER NOT NULL REFERENCES acls(id),
    label  TEXT NOT NULL,
    PRIMARY KEY (label, acl_id)
) WITHOUT ROWID;
CREATE TABLE documents (
    id          TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    title       TEXT NOT NULL,
    body        TEXT NOT NULL,
    acl         TEXT NOT NULL,      -- the ACL as given (JSON)
    acl_id      INTEGER NOT NULL REFERENCES acls(id),
    created_by  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    chunk_count INTEGER NOT NULL
);
CREATE INDEX documents_by_acl ON documents(tenant, acl_id);
CREATE TABLE chunks (
    id          INTEGER PRIMARY KEY,
    public_id   TEXT NOT NULL UNIQUE,
    document_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    tenant      TEXT NOT NULL,
    acl_id      INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    text        TEXT NOT NULL
);
CREATE INDEX chunks_by_document ON chunks(document_id);
CREATE VIRTUAL TABLE chunks_fts USING fts5(
    text, content='chunks', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
);
CREATE TRIGGER chunks_ai AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER chunks_ad AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
"#,
];

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
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

impl SqliteStore {
    pub fn open(path: &Path) -> StoreResult<Self> {
        register_sqlite_vec();
        let mut conn = Connection::open(path).map_err(unavailable)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(unavailable)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;",
        )
        .map_err(unavailable)?;
        migrate(&mut conn)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn call<R, F>(&self, f: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<R> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| StoreError::Unavailable("connection poisoned".into()))?;
            f(&mut guard)
        })
        .await
        .map_err(unavailable)?
    }
}

fn migrate(conn: &mut Connection) -> StoreResult<()> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(unavailable)?;
    let version = usize::try_from(version).unwrap_or(0);
    if version > MIGRATIONS.len() {
        return Err(StoreError::Corrupt(format!(
            "database schema version {version} is newer than this binary ({})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(unavailable)?;
        tx.execute_batch(sql).map_err(unavailable)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)
            .map_err(unavailable)?;
        tx.commit().map_err(unavailable)?;
    }
    Ok(())
}

fn json_list(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

fn parse_list(s: &str) -> rusqlite::Result<Vec<String>> {
    serde_json::from_str(s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

const USER_COLS: &str = "id, tenant, username, password_hash, roles, groups_, disabled, created_at";

fn user_row(r: &Row<'_>) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        id: r.get(0)?,
        tenant: r.get(1)?,
        username: r.get(2)?,
        password_hash: r.get(3)?,
        roles: parse_list(&r.get::<_, String>(4)?)?,
        groups: parse_list(&r.get::<_, String>(5)?)?,
        disabled: r.get(6)?,
        created_at: r.get(7)?,
    })
}

const SESSION_COLS: &str =
    "id, tenant, user_id, created_at, last_seen_at, absolute_expires_at, revoked_at, user_agent";

fn session_row(r: &Row<'_>) -> rusqlite::Result<SessionRecord> {
    Ok(SessionRecord {
        id: r.get(0)?,
        tenant: r.get(1)?,
        user_id: r.get(2)?,
        created_at: r.get(3)?,
        last_seen_at: r.get(4)?,
        absolute_expires_at: r.get(5)?,
        revoked_at: r.get(6)?,
        user_agent: r.get(7)?,
    })
}

fn get_session(conn: &Connection, id: &str) -> rusqlite::Result<Option<SessionRecord>> {
    conn.query_row(
        &format!("SELECT {SESSION_COLS} FROM sessions WHERE id = ?1"),
        [id],
        session_row,
    )
    .optional()
}

fn revoke_all(
    conn: &Connection,
    tenant: &str,
    user_id: &str,
    reason: &str,
    now: i64,
) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare(
        "UPDATE sessions SET revoked_at = ?4, revoke_reason = ?3
         WHERE tenant = ?1 AND user_id = ?2 AND revoked_at IS NULL RETURNING id",
    )?;
    let ids = stmt
        .query_map(params![tenant, user_id, reason, now], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(ids)
}

#[async_trait]
impl UserStore for SqliteStore {
    async fn update_access(
        &self,
        tenant: &str,
        id: &str,
        roles: Option<Vec<String>>,
        groups: Option<Vec<String>>,
        now: i64,
    ) -> StoreResult<Option<(UserRecord, Vec<String>)>> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.call(move |c| Self::update_access_blocking(c, &tenant, &id, roles, groups, now))
            .await
    }

    async fn create_user(&self, u: NewUser) -> StoreResult<UserRecord> {
        self.call(move |c| {
            let rec = UserRecord {
                id: crate::secret::new_id(),
                tenant: u.tenant,
                username: u.username,
                password_hash: u.password_hash,
                roles: u.roles,
                groups: u.groups,
                disabled: false,
                created_at: crate::timeutil::now_ms(),
            };
            let res = c.execute(
                &format!("INSERT INTO users ({USER_COLS}) VALUES (?1,?2,?3,?4,?5,?6,0,?7)"),
                params![
                    rec.id,
                    rec.tenant,
                    rec.username,
                    rec.password_hash,
                    json_list(&rec.roles),
                    json_list(&rec.groups),
                    rec.created_at
                ],
            );
            match res {
                Ok(_) => Ok(rec),
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    Err(StoreError::Conflict("username already exists"))
                }
                Err(e) => Err(unavailable(e)),
            }
        })
        .await
    }

    async fn user_by_username(&self, username: &str) -> StoreResult<Option<UserRecord>> {
        let username = username.to_owned();
        self.call(move |c| {
            c.query_row(
                &format!("SELECT {USER_COLS} FROM users WHERE username = ?1"),
                [username],
                user_row,
            )
            .optional()
            .map_err(unavailable)
        })
        .await
    }

    async fn user_by_id(&self, tenant: &str, id: &str) -> StoreResult<Option<UserRecord>> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.call(move |c| {
            c.query_row(
                &format!("SELECT {USER_COLS} FROM users WHERE tenant = ?1 AND id = ?2"),
                [tenant, id],
                user_row,
            )
            .optional()
            .map_err(unavailable)
        })
        .await
    }

    async fn list_users(&self) -> StoreResult<Vec<UserRecord>> {
        self.call(|c| {
            let mut stmt = c
                .prepare(&format!(
                    "SELECT {USER_COLS} FROM users ORDER BY tenant, username"
                ))
                .map_err(unavailable)?;
            let rows = stmt
                .query_map([], user_row)
                .map_err(unavailable)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(unavailable)?;
            Ok(rows)
        })
        .await
    }

    async fn set_disabled(
        &self,
        username: &str,
        disabled: bool,
        now: i64,
    ) -> StoreResult<Option<(UserRecord, Vec<String>)>> {
        let username = username.to_owned();
        self.call(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            let updated = tx
                .execute(
                    "UPDATE users SET disabled = ?2 WHERE username = ?1",
                    params![username, disabled],
                )
                .map_err(unavailable)?;
            if updated == 0 {
                return Ok(None);
            }
            let user = tx
                .query_row(
                    &format!("SELECT {USER_COLS} FROM users WHERE username = ?1"),
                    [&username],
                    user_row,
                )
                .map_err(unavailable)?;
            let revoked = if disabled {
                revoke_all(&tx, &user.tenant, &user.id, "user_disabled", now)
                    .map_err(unavailable)?
            } else {
                Vec::new()
            };
            tx.commit().map_err(unavailable)?;
            Ok(Some((user, revoked)))
        })
        .await
    }
}

impl SqliteStore {
    fn update_access_blocking(
        c: &mut Connection,
        tenant: &str,
        id: &str,
        roles: Option<Vec<String>>,
        groups: Option<Vec<String>>,
        now: i64,
    ) -> StoreResult<Option<(UserRecord, Vec<String>)>> {
        let tx = c
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(unavailable)?;
        let Some(mut user) = tx
            .query_row(
                &format!("SELECT {USER_COLS} FROM users WHERE tenant = ?1 AND id = ?2"),
                [tenant, id],
                user_row,
            )
            .optional()
            .map_err(unavailable)?
        else {
            return Ok(None);
        };
        if let Some(r) = roles {
            user.roles = r;
        }
        if let Some(g) = groups {
            user.groups = g;
        }
        tx.execute(
            "UPDATE users SET roles = ?3, groups_ = ?4 WHERE tenant = ?1 AND id = ?2",
            params![tenant, id, json_list(&user.roles), json_list(&user.groups)],
        )
        .map_err(unavailable)?;
        let revoked = revoke_all(&tx, tenant, id, "access_changed", now).map_err(unavailable)?;
        tx.commit().map_err(unavailable)?;
        Ok(Some((user, revoked)))
    }
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn create_session(&self, s: NewSession) -> StoreResult<SessionRecord> {
        self.call(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            tx.execute(
                &format!(
                    "INSERT INTO sessions ({SESSION_COLS}) VALUES (?1,?2,?3,?4,?4,?5,NULL,?6)"
                ),
                params![
                    s.id,
                    s.tenant,
                    s.user_id,
                    s.now,
                    s.absolute_expires_at,
                    s.user_agent
                ],
            )
            .map_err(unavailable)?;
            tx.execute(
                "INSERT INTO refresh_tokens (hash, session_id, issued_at) VALUES (?1, ?2, ?3)",
                params![&s.refresh_hash.0[..], s.id, s.now],
            )
            .map_err(unavailable)?;
            tx.commit().map_err(unavailable)?;
            Ok(SessionRecord {
                id: s.id,
                tenant: s.tenant,
                user_id: s.user_id,
                created_at: s.now,
                last_seen_at: s.now,
                absolute_expires_at: s.absolute_expires_at,
                revoked_at: None,
                user_agent: s.user_agent,
            })
        })
        .await
    }

    async fn session(&self, id: &str) -> StoreResult<Option<SessionRecord>> {
        let id = id.to_owned();
        self.call(move |c| get_session(c, &id).map_err(unavailable))
            .await
    }

    async fn rotate_refresh(&self, req: RotateRequest) -> StoreResult<RotateOutcome> {
        self.call(move |c| {
            // IMMEDIATE takes the write lock up front: two rotations of one token can
            // never both read "current" (SECURITY #11), even across processes.
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            let found: Option<(String, Option<i64>)> = tx
                .query_row(
                    "SELECT session_id, rotated_at FROM refresh_tokens WHERE hash = ?1",
                    [&req.presented.0[..]],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(unavailable)?;
            let Some((sid, rotated_at)) = found else {
                return Ok(RotateOutcome::Invalid);
            };
            let Some(session) = get_session(&tx, &sid).map_err(unavailable)? else {
                return Ok(RotateOutcome::Invalid);
            };
            if !session.is_live(req.now, req.idle_ttl_ms) {
                return Ok(RotateOutcome::Invalid);
            }
            let outcome = match rotated_at {
                None => {
                    tx.execute(
                        "UPDATE refresh_tokens SET rotated_at = ?2 WHERE hash = ?1",
                        params![&req.presented.0[..], req.now],
                    )
                    .map_err(unavailable)?;
                    tx.execute(
                        "INSERT INTO refresh_tokens (hash, session_id, issued_at) VALUES (?1,?2,?3)",
                        params![&req.replacement.0[..], sid, req.now],
                    )
                    .map_err(unavailable)?;
                    tx.execute(
                        "UPDATE sessions SET last_seen_at = ?2 WHERE id = ?1",
                        params![sid, req.now],
                    )
                    .map_err(unavailable)?;
                    RotateOutcome::Rotated {
                        session: SessionRecord {
                            last_seen_at: req.now,
                            ..session
                        },
                    }
                }
                Some(at) if req.now - at <= req.grace_ms => RotateOutcome::InProgress,
                Some(_) => {
                    tx.execute(
                        "UPDATE sessions SET revoked_at = ?2, revoke_reason = 'refresh_reused'
                         WHERE id = ?1 AND revoked_at IS NULL",
                        params![sid, req.now],
                    )
                    .map_err(unavailable)?;
                    RotateOutcome::Reused {
                        session: SessionRecord {
                            revoked_at: Some(req.now),
                            ..session
                        },
                    }
                }
            };
            tx.commit().map_err(unavailable)?;
            Ok(outcome)
        })
        .await
    }

    async fn session_for_refresh(&self, hash: TokenHash) -> StoreResult<Option<SessionRecord>> {
        self.call(move |c| {
            let sid: Option<String> = c
                .query_row(
                    "SELECT session_id FROM refresh_tokens WHERE hash = ?1",
                    [&hash.0[..]],
                    |r| r.get(0),
                )
                .optional()
                .map_err(unavailable)?;
            match sid {
                Some(sid) => get_session(c, &sid).map_err(unavailable),
                None => Ok(None),
            }
        })
        .await
    }

    async fn revoke_session(
        &self,
        tenant: &str,
        user_id: &str,
        session_id: &str,
        reason: &str,
        now: i64,
    ) -> StoreResult<bool> {
        let (tenant, user_id, sid, reason) = (
            tenant.to_owned(),
            user_id.to_owned(),
            session_id.to_owned(),
            reason.to_owned(),
        );
        self.call(move |c| {
            let n = c
                .execute(
                    "UPDATE sessions SET revoked_at = ?5, revoke_reason = ?4
                     WHERE id = ?3 AND tenant = ?1 AND user_id = ?2 AND revoked_at IS NULL",
                    params![tenant, user_id, sid, reason, now],
                )
                .map_err(unavailable)?;
            Ok(n == 1)
        })
        .await
    }

    async fn revoke_user_sessions(
        &self,
        tenant: &str,
        user_id: &str,
        reason: &str,
        now: i64,
    ) -> StoreResult<Vec<String>> {
        let (tenant, user_id, reason) = (tenant.to_owned(), user_id.to_owned(), reason.to_owned());
        self.call(move |c| revoke_all(c, &tenant, &user_id, &reason, now).map_err(unavailable))
            .await
    }

    async fn list_sessions(
        &self,
        tenant: &str,
        user_id: &str,
        now: i64,
    ) -> StoreResult<Vec<SessionRecord>> {
        let (tenant, user_id) = (tenant.to_owned(), user_id.to_owned());
        self.call(move |c| {
            let mut stmt = c
                .prepare(&format!(
                    "SELECT {SESSION_COLS} FROM sessions
                     WHERE tenant = ?1 AND user_id = ?2 AND revoked_at IS NULL
                       AND absolute_expires_at > ?3
                     ORDER BY created_at DESC"
                ))
                .map_err(unavailable)?;
            let rows = stmt
                .query_map(params![tenant, user_id, now], session_row)
                .map_err(unavailable)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(unavailable)?;
            Ok(rows)
        })
        .await
    }
}

/// The ownership key of a thread query, taken from a verified `Principal`.
struct Owner {
    tenant: String,
    user: String,
    /// `Some` under strict (session) binding.
    session: Option<String>,
}

impl Owner {
    fn of(p: &Principal, binding: ThreadBinding) -> Self {
        Self {
            tenant: p.tenant().to_owned(),
            user: p.subject().to_owned(),
            session: (binding == ThreadBinding::Session).then(|| p.session_id().to_owned()),
        }
    }
}

/// The WHERE clause every thread lookup uses; `?1` is the thread id.
const OWNED: &str = "id = ?1 AND tenant = ?2 AND owner = ?3 AND (?4 IS NULL OR session_id = ?4)";

const THREAD_COLS: &str = "id, title, created_at, updated_at, message_count";

fn thread_row(r: &Row<'_>) -> rusqlite::Result<ThreadRecord> {
    Ok(ThreadRecord {
        id: r.get(0)?,
        title: r.get(1)?,
        created_at: r.get(2)?,
        updated_at: r.get(3)?,
        message_count: r.get(4)?,
    })
}

fn owned_thread(c: &Connection, o: &Owner, id: &str) -> rusqlite::Result<Option<ThreadRecord>> {
    c.query_row(
        &format!("SELECT {THREAD_COLS} FROM threads WHERE {OWNED}"),
        params![id, o.tenant, o.user, o.session],
        thread_row,
    )
    .optional()
}

fn role_from_str(s: &str) -> rusqlite::Result<Role> {
    match s {
        "system" => Ok(Role::System),
        "user" => Ok(Role::User),
        "assistant" => Ok(Role::Assistant),
        other => Err(rusqlite::Error::InvalidColumnType(
            3,
            format!("role {other}"),
            rusqlite::types::Type::Text,
        )),
    }
}

fn message_row(r: &Row<'_>) -> rusqlite::Result<MessageRecord> {
    let citations: String = r.get(3)?;
    Ok(MessageRecord {
        id: r.get(0)?,
        role: role_from_str(&r.get::<_, String>(1)?)?,
        content: r.get(2)?,
        citations: serde_json::from_str(&citations).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, Box::new(e))
        })?,
        created_at: r.get(4)?,
    })
}

#[async_trait]
impl ThreadStore for SqliteStore {
    async fn create_thread(
        &self,
        owner: &Principal,
        title: &str,
        max_threads: u32,
    ) -> StoreResult<CreateThread> {
        // The creating session is always recorded, whatever the binding, so switching
        // to strict binding later applies to existing threads too.
        let o = Owner::of(owner, ThreadBinding::Session);
        let title = title.to_owned();
        self.call(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            let count: u32 = tx
                .query_row(
                    "SELECT COUNT(*) FROM threads WHERE tenant = ?1 AND owner = ?2",
                    params![o.tenant, o.user],
                    |r| r.get(0),
                )
                .map_err(unavailable)?;
            if count >= max_threads {
                return Ok(CreateThread::LimitReached);
            }
            let now = crate::timeutil::now_ms();
            let rec = ThreadRecord {
                id: crate::secret::new_id(),
                title,
                created_at: now,
                updated_at: now,
                message_count: 0,
            };
            tx.execute(
                "INSERT INTO threads (id, tenant, owner, session_id, title, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
                params![rec.id, o.tenant, o.user, o.session, rec.title, now],
            )
            .map_err(unavailable)?;
            tx.commit().map_err(unavailable)?;
            Ok(CreateThread::Created(rec))
        })
        .await
    }

    async fn list_threads(
        &self,
        owner: &Principal,
        binding: ThreadBinding,
    ) -> StoreResult<Vec<ThreadRecord>> {
        let o = Owner::of(owner, binding);
        self.call(move |c| {
            let mut stmt = c
                .prepare(&format!(
                    "SELECT {THREAD_COLS} FROM threads
                     WHERE tenant = ?1 AND owner = ?2 AND (?3 IS NULL OR session_id = ?3)
                     ORDER BY updated_at DESC"
                ))
                .map_err(unavailable)?;
            let rows = stmt
                .query_map(params![o.tenant, o.user, o.session], thread_row)
                .map_err(unavailable)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(unavailable)?;
            Ok(rows)
        })
        .await
    }

    async fn thread_with_messages(
        &self,
        owner: &Principal,
        binding: ThreadBinding,
        id: &str,
    ) -> StoreResult<Option<(ThreadRecord, Vec<MessageRecord>)>> {
        let o = Owner::of(owner, binding);
        let id = id.to_owned();
        self.call(move |c| {
            // One transaction: the ownership check and the read see the same state.
            let tx = c.transaction().map_err(unavailable)?;
            let Some(thread) = owned_thread(&tx, &o, &id).map_err(unavailable)? else {
                return Ok(None);
            };
            let mut stmt = tx
                .prepare(
                    "SELECT id, role, content, citations, created_at FROM messages
                     WHERE thread_id = ?1 ORDER BY seq",
                )
                .map_err(unavailable)?;
            let rows = stmt
                .query_map([&id], message_row)
                .map_err(unavailable)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(unavailable)?;
            Ok(Some((thread, rows)))
        })
        .await
    }

    async fn append_message(
        &self,
        owner: &Principal,
        binding: ThreadBinding,
        id: &str,
        msg: NewMessage,
        max_messages: u32,
    ) -> StoreResult<Append> {
        let o = Owner::of(owner, binding);
        let id = id.to_owned();
        self.call(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            let Some(thread) = owned_thread(&tx, &o, &id).map_err(unavailable)? else {
                return Ok(Append::NotFound);
            };
            if thread.message_count >= max_messages {
                return Ok(Append::Full);
            }
            let now = crate::timeutil::now_ms().max(thread.updated_at);
            let rec = MessageRecord {
                id: crate::secret::new_id(),
                role: msg.role,
                content: msg.content,
                citations: msg.citations,
                created_at: now,
            };
            let citations = serde_json::to_string(&rec.citations)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            tx.execute(
                "INSERT INTO messages (id, thread_id, seq, role, content, citations, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    rec.id,
                    id,
                    thread.message_count + 1,
                    rec.role.as_str(),
                    rec.content,
                    citations,
                    now
                ],
            )
            .map_err(unavailable)?;
            tx.execute(
                "UPDATE threads SET message_count = message_count + 1, updated_at = ?2 WHERE id = ?1",
                params![id, now],
            )
            .map_err(unavailable)?;
            tx.commit().map_err(unavailable)?;
            Ok(Append::Appended(rec))
        })
        .await
    }

    async fn delete_thread(
        &self,
        owner: &Principal,
        binding: ThreadBinding,
        id: &str,
    ) -> StoreResult<bool> {
        let o = Owner::of(owner, binding);
        let id = id.to_owned();
        self.call(move |c| {
            let n = c
                .execute(
                    &format!("DELETE FROM threads WHERE {OWNED}"),
                    params![id, o.tenant, o.user, o.session],
                )
                .map_err(unavailable)?;
            Ok(n == 1)
        })
        .await
    }
}

/// The vec0 partition of a (tenant, ACL) pair. Vectors are sharded by it, so a KNN
/// over a partition reads only the vectors of that tenant and label set: the ACL is
/// not a filter over ranked results but the choice of what is ranked at all.
fn acl_part(tenant: &str, acl_id: i64) -> String {
    format!("{tenant}/{acl_id}")
}

/// The vector table for one embedding dimension (created on first use). Vectors are
/// L2-normalised, so vec0's L2 distance (which has a SIMD kernel) ranks like cosine.
fn vec_table(dim: usize) -> String {
    format!("chunks_vec_{dim}")
}

fn ensure_vec_table(c: &Connection, dim: usize) -> rusqlite::Result<()> {
    c.execute_batch(&format!(
        "CREATE VIRTUAL TABLE IF NOT EXISTS {} USING vec0(
            chunk_id INTEGER PRIMARY KEY,
            embedding float[{dim}],
            acl_part TEXT partition key
        )",
        vec_table(dim)
    ))
}

fn vec_table_exists(c: &Connection, dim: usize) -> rusqlite::Result<bool> {
    c.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE name = ?1",
        [vec_table(dim)],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

/// The ACL ids whose label sets intersect the scope's labels, in the scope's tenant.
/// The labels travel as one bound JSON parameter, never as SQL text.
fn visible_acls(c: &Connection, scope: &AccessScope) -> rusqlite::Result<Vec<i64>> {
    if scope.labels().is_empty() {
        return Ok(Vec::new());
    }
    let labels = serde_json::to_string(scope.labels()).unwrap_or_else(|_| "[]".into());
    let mut stmt = c.prepare_cached(
        "SELECT DISTINCT a.id FROM acls a JOIN acl_labels l ON l.acl_id = a.id
         WHERE a.tenant = ?1 AND l.label IN (SELECT value FROM json_each(?2))
         ORDER BY a.id",
    )?;
    let ids = stmt
        .query_map(params![scope.tenant(), labels], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<i64>>>()?;
    Ok(ids)
}

/// `?N, ?N+1, …` for `n` bound values starting at `first`: only placeholders are
/// formatted into SQL, never values.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn acl_id_for(
    tx: &rusqlite::Transaction<'_>,
    tenant: &str,
    labels: &[String],
) -> rusqlite::Result<i64> {
    let canonical = serde_json::to_string(labels).unwrap_or_else(|_| "[]".into());
    if let Some(id) = tx
        .query_row(
            "SELECT id FROM acls WHERE tenant = ?1 AND labels = ?2",
            params![tenant, canonical],
            |r| r.get(0),
        )
        .optional()?
    {
        return Ok(id);
    }
    tx.execute(
        "INSERT INTO acls (tenant, labels) VALUES (?1, ?2)",
        params![tenant, canonical],
    )?;
    let id = tx.last_insert_rowid();
    for l in labels {
        tx.execute(
            "INSERT INTO acl_labels (acl_id, label) VALUES (?1, ?2)",
            params![id, l],
        )?;
    }
    Ok(id)
}

fn f32_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

const DOC_COLS: &str = "id, title, body, acl, created_at, chunk_count";

fn doc_row(r: &Row<'_>) -> rusqlite::Result<DocumentRecord> {
    let acl: String = r.get(3)?;
    Ok(DocumentRecord {
        id: r.get(0)?,
        title: r.get(1)?,
        text: r.get(2)?,
        acl: serde_json::from_str(&acl).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, Box::new(e))
        })?,
        created_at: r.get(4)?,
        chunk_count: r.get(5)?,
    })
}

/// Loads hits by internal chunk id, keeping the given order and scores.
fn load_hits(c: &Connection, ranked: &[(i64, f64)]) -> rusqlite::Result<Vec<ChunkHit>> {
    let mut stmt = c.prepare_cached(
        "SELECT c.public_id, c.document_id, d.title, c.text, c.tenant, a.labels
         FROM chunks c JOIN documents d ON d.id = c.document_id JOIN acls a ON a.id = c.acl_id
         WHERE c.id = ?1",
    )?;
    let mut out = Vec::with_capacity(ranked.len());
    for (id, score) in ranked {
        if let Some(hit) = stmt
            .query_row([id], |r| {
                let labels: String = r.get(5)?;
                Ok(ChunkHit {
                    chunk_id: r.get(0)?,
                    document_id: r.get(1)?,
                    title: r.get(2)?,
                    text: r.get(3)?,
                    tenant: r.get(4)?,
                    labels: serde_json::from_str(&labels).unwrap_or_default(),
                    score: *score,
                })
            })
            .optional()?
        {
            out.push(hit);
        }
    }
    Ok(out)
}

#[async_trait]
impl DocumentStore for SqliteStore {
    async fn insert_document(&self, doc: NewDocument) -> StoreResult<DocumentRecord> {
        self.call(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            let acl_id = acl_id_for(&tx, &doc.tenant, &doc.labels).map_err(unavailable)?;
            let now = crate::timeutil::now_ms();
            let acl_json = serde_json::to_string(&doc.acl).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            tx.execute(
                "INSERT INTO documents (id, tenant, title, body, acl, acl_id, created_by, created_at, chunk_count)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![doc.id, doc.tenant, doc.title, doc.text, acl_json, acl_id, doc.created_by, now, doc.chunks.len() as i64],
            )
            .map_err(unavailable)?;
            for (seq, chunk) in doc.chunks.iter().enumerate() {
                tx.execute(
                    "INSERT INTO chunks (public_id, document_id, tenant, acl_id, seq, text)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![chunk.id, doc.id, doc.tenant, acl_id, seq as i64, chunk.text],
                )
                .map_err(unavailable)?;
                let rowid = tx.last_insert_rowid();
                if let Some(v) = &chunk.embedding {
                    ensure_vec_table(&tx, v.len()).map_err(unavailable)?;
                    tx.execute(
                        &format!(
                            "INSERT INTO {} (chunk_id, embedding, acl_part) VALUES (?1, ?2, ?3)",
                            vec_table(v.len())
                        ),
                        params![rowid, f32_blob(v), acl_part(&doc.tenant, acl_id)],
                    )
                    .map_err(unavailable)?;
                }
            }
            tx.commit().map_err(unavailable)?;
            Ok(DocumentRecord {
                id: doc.id,
                title: doc.title,
                text: doc.text,
                acl: doc.acl,
                created_at: now,
                chunk_count: doc.chunks.len() as u32,
            })
        })
        .await
    }

    async fn list_documents(&self, scope: &AccessScope) -> StoreResult<Vec<DocumentRecord>> {
        let scope = scope.clone();
        self.call(move |c| {
            let acls = visible_acls(c, &scope).map_err(unavailable)?;
            if acls.is_empty() {
                return Ok(Vec::new());
            }
            let sql = format!(
                "SELECT {DOC_COLS} FROM documents WHERE tenant = ?1 AND acl_id IN ({}) ORDER BY created_at DESC",
                placeholders(2, acls.len())
            );
            let mut stmt = c.prepare(&sql).map_err(unavailable)?;
            let mut values: Vec<rusqlite::types::Value> = vec![scope.tenant().to_owned().into()];
            values.extend(acls.iter().map(|a| rusqlite::types::Value::Integer(*a)));
            let rows = stmt
                .query_map(rusqlite::params_from_iter(values), doc_row)
                .map_err(unavailable)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(unavailable)?;
            Ok(rows)
        })
        .await
    }

    async fn document(&self, scope: &AccessScope, id: &str) -> StoreResult<Option<DocumentRecord>> {
        let scope = scope.clone();
        let id = id.to_owned();
        self.call(move |c| {
            let acls = visible_acls(c, &scope).map_err(unavailable)?;
            let row: Option<(DocumentRecord, i64)> = c
                .query_row(
                    &format!(
                        "SELECT {DOC_COLS}, acl_id FROM documents WHERE id = ?1 AND tenant = ?2"
                    ),
                    params![id, scope.tenant()],
                    |r| Ok((doc_row(r)?, r.get(6)?)),
                )
                .optional()
                .map_err(unavailable)?;
            Ok(row.filter(|(_, acl)| acls.contains(acl)).map(|(d, _)| d))
        })
        .await
    }

    async fn delete_document(&self, scope: &AccessScope, id: &str) -> StoreResult<bool> {
        let scope = scope.clone();
        let id = id.to_owned();
        self.call(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            let acls = visible_acls(&tx, &scope).map_err(unavailable)?;
            let acl: Option<i64> = tx
                .query_row(
                    "SELECT acl_id FROM documents WHERE id = ?1 AND tenant = ?2",
                    params![id, scope.tenant()],
                    |r| r.get(0),
                )
                .optional()
                .map_err(unavailable)?;
            if !acl.is_some_and(|a| acls.contains(&a)) {
                return Ok(false);
            }
            // Vectors first (vec0 has no foreign keys), then chunks (FTS via trigger),
            // then the document: all or nothing.
            let tables: Vec<String> = {
                let mut stmt = tx
                    .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name GLOB 'chunks_vec_[0-9]*' AND sql LIKE 'CREATE VIRTUAL TABLE%'")
                    .map_err(unavailable)?;
                stmt.query_map([], |r| r.get(0))
                    .map_err(unavailable)?
                    .collect::<rusqlite::Result<Vec<String>>>()
                    .map_err(unavailable)?
            };
            for t in tables {
                tx.execute(
                    &format!("DELETE FROM {t} WHERE chunk_id IN (SELECT id FROM chunks WHERE document_id = ?1)"),
                    [&id],
                )
                .map_err(unavailable)?;
            }
            tx.execute("DELETE FROM chunks WHERE document_id = ?1", [&id])
                .map_err(unavailable)?;
            tx.execute("DELETE FROM documents WHERE id = ?1", [&id])
                .map_err(unavailable)?;
            tx.commit().map_err(unavailable)?;
            Ok(true)
        })
        .await
    }

    async fn any_visible(&self, scope: &AccessScope) -> StoreResult<bool> {
        let scope = scope.clone();
        self.call(move |c| Ok(!visible_acls(c, &scope).map_err(unavailable)?.is_empty()))
            .await
    }

    async fn search(&self, scope: &AccessScope, query: SearchQuery) -> StoreResult<Rankings> {
        let scope = scope.clone();
        self.call(move |c| {
            let acls = visible_acls(c, &scope).map_err(unavailable)?;
            if acls.is_empty() || query.k == 0 {
                return Ok(Rankings::default());
            }
            let vector = match &query.vector {
                Some(v) => knn(c, &scope, &acls, v, query.k).map_err(unavailable)?,
                None => Vec::new(),
            };
            let text = bm25(c, &scope, &acls, &query.terms, query.k).map_err(unavailable)?;
            Ok(Rankings { vector, text })
        })
        .await
    }
}

/// The ACL is part of the KNN itself: one exact KNN per visible (tenant, ACL) partition,
/// merged. Each partition returns its own top k, so the merged top k is exact: no
/// shortfall, whatever fraction of the corpus is visible.
fn knn(
    c: &Connection,
    scope: &AccessScope,
    acls: &[i64],
    query: &[f32],
    k: usize,
) -> rusqlite::Result<Vec<ChunkHit>> {
    if !vec_table_exists(c, query.len())? {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT chunk_id, distance FROM {} WHERE embedding MATCH ?1 AND k = ?2 AND acl_part = ?3",
        vec_table(query.len())
    );
    let blob = f32_blob(query);
    let mut stmt = c.prepare_cached(&sql)?;
    let mut ranked: Vec<(i64, f64)> = Vec::new();
    for acl in acls {
        let rows = stmt.query_map(
            params![blob, k as i64, acl_part(scope.tenant(), *acl)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        for row in rows {
            ranked.push(row?);
        }
    }
    ranked.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    ranked.truncate(k);
    load_hits(c, &ranked)
}

/// BM25 with the tenant and the visible ACL ids in the WHERE clause. Each term becomes a
/// quoted FTS5 string ("" escapes a quote), OR-ed: user text can never become FTS5
/// operators, columns or NEAR groups.
fn bm25(
    c: &Connection,
    scope: &AccessScope,
    acls: &[i64],
    terms: &[String],
    k: usize,
) -> rusqlite::Result<Vec<ChunkHit>> {
    if terms.is_empty() {
        return Ok(Vec::new());
    }
    let match_expr = terms
        .iter()
        .map(|t| format!("\"{}\"", t.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(" OR ");
    let sql = format!(
        "SELECT c.id, bm25(chunks_fts) AS score FROM chunks_fts JOIN chunks c ON c.id = chunks_fts.rowid
         WHERE chunks_fts MATCH ?1 AND c.tenant = ?2 AND c.acl_id IN ({})
         ORDER BY score LIMIT ?3",
        placeholders(4, acls.len())
    );
    let mut values: Vec<rusqlite::types::Value> = vec![
        match_expr.into(),
        scope.tenant().to_owned().into(),
        (k as i64).into(),
    ];
    values.extend(acls.iter().map(|a| rusqlite::types::Value::Integer(*a)));
    let mut stmt = c.prepare(&sql)?;
    let ranked = stmt
        .query_map(rusqlite::params_from_iter(values), |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<rusqlite::Result<Vec<(i64, f64)>>>()?;
    load_hits(c, &ranked)
}

impl SqliteStore {
    /// `EXPLAIN QUERY PLAN` of the per-partition vector queries a scope produces, for
    /// the pushdown test, with the partitions they read.
    pub async fn explain_vector_query(
        &self,
        scope: &AccessScope,
        dim: usize,
    ) -> StoreResult<Vec<(String, String)>> {
        let scope = scope.clone();
        self.call(move |c| {
            let acls = visible_acls(c, &scope).map_err(unavailable)?;
            let sql = format!(
                "EXPLAIN QUERY PLAN SELECT chunk_id, distance FROM {} WHERE embedding MATCH ?1 AND k = ?2 AND acl_part = ?3",
                vec_table(dim)
            );
            let mut out = Vec::new();
            for acl in acls {
                let part = acl_part(scope.tenant(), acl);
                let detail: String = c
                    .query_row(&sql, params![f32_blob(&vec![0.0; dim]), 10i64, part], |r| r.get(3))
                    .map_err(unavailable)?;
                out.push((part, detail));
            }
            Ok(out)
        })
        .await
    }
}

fn kind_from_str(s: &str) -> Option<AuditKind> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn append(&self, e: &AuditEvent) -> StoreResult<()> {
        let e = e.clone();
        self.call(move |c| {
            c.execute(
                "INSERT INTO audit_events (ts, kind, tenant, subject, username, session_id, ip, reason, resource)
                 VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9)",
                params![
                    e.ts,
                    e.kind.as_str(),
                    e.tenant,
                    e.subject,
                    e.username,
                    e.session_id,
                    e.ip,
                    e.reason,
                    e.resource
                ],
            )
            .map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn query(&self, q: AuditQuery) -> StoreResult<Vec<AuditEvent>> {
        self.call(move |c| {
            let mut stmt = c
                .prepare(
                    "SELECT ts, kind, tenant, subject, username, session_id, ip, reason, resource
                     FROM audit_events
                     WHERE (?1 IS NULL OR tenant = ?1) AND (?2 IS NULL OR kind = ?2)
                     ORDER BY id DESC LIMIT ?3",
                )
                .map_err(unavailable)?;
            let rows = stmt
                .query_map(params![q.tenant, q.kind, q.limit], audit_row)
                .map_err(unavailable)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(unavailable)?;
            Ok(rows)
        })
        .await
    }
}

fn audit_row(r: &Row<'_>) -> rusqlite::Result<AuditEvent> {
    let kind: String = r.get(1)?;
    let kind = kind_from_str(&kind).ok_or_else(|| {
        rusqlite::Error::InvalidColumnType(
            1,
            format!("audit kind {kind}"),
            rusqlite::types::Type::Text,
        )
    })?;
    Ok(AuditEvent {
        ts: r.get(0)?,
        kind,
        tenant: r.get(2)?,
        subject: r.get(3)?,
        username: r.get(4)?,
        session_id: r.get(5)?,
        ip: r.get(6)?,
        reason: r.get(7)?,
        resource: r.get(8)?,
    })
}

#[async_trait]
impl Health for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        self.call(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(unavailable))
            .await
    }
}
