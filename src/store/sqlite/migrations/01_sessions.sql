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
