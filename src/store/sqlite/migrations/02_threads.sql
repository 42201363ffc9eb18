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
