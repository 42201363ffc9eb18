CREATE EXTENSION IF NOT EXISTS vector;
-- The cluster store's durable half: users, threads and messages, documents, chunks
-- with their full text and vectors, the audit trail. Sessions and refresh families
-- live in Redis. Times are Unix milliseconds (BIGINT), ids are the gateway's own.
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    tenant        TEXT NOT NULL,
    username      TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    roles         TEXT[] NOT NULL,
    groups_       TEXT[] NOT NULL,
    disabled      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    BIGINT NOT NULL
);
-- Usernames are unique per deployment, compared without regard to ASCII case.
CREATE UNIQUE INDEX users_by_username ON users (lower(username));
CREATE INDEX users_by_tenant ON users (tenant, username);

CREATE TABLE threads (
    id            TEXT PRIMARY KEY,
    tenant        TEXT NOT NULL,
    owner         TEXT NOT NULL,
    session_id    TEXT NOT NULL,
    title         TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    message_count INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX threads_by_owner ON threads (tenant, owner, updated_at DESC);

CREATE TABLE messages (
    thread_id  TEXT NOT NULL REFERENCES threads(id) ON DELETE CASCADE,
    seq        BIGINT NOT NULL,
    id         TEXT NOT NULL UNIQUE,
    role       TEXT NOT NULL,
    content    TEXT NOT NULL,
    citations  JSONB NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (thread_id, seq)
);

-- An ACL is stored once per distinct (sorted) label set; chunks carry its id, so the
-- visibility filter is a set of integers inside the vector and full-text queries.
CREATE TABLE acls (
    id     BIGSERIAL PRIMARY KEY,
    tenant TEXT NOT NULL,
    labels TEXT[] NOT NULL,
    UNIQUE (tenant, labels)
);
CREATE INDEX acls_by_label ON acls USING GIN (labels);

CREATE TABLE documents (
    id          TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    title       TEXT NOT NULL,
    body        TEXT NOT NULL,
    acl         JSONB NOT NULL,
    acl_id      BIGINT NOT NULL REFERENCES acls(id),
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    chunk_count INTEGER NOT NULL
);
CREATE INDEX documents_by_acl ON documents (tenant, acl_id);

-- Full text: `ts_rank` scores a chunk by its own words only (no corpus statistics),
-- so ranking cannot reveal what other tenants' or ACLs' documents contain.
CREATE TABLE chunks (
    id          BIGSERIAL PRIMARY KEY,
    public_id   TEXT NOT NULL UNIQUE,
    document_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    tenant      TEXT NOT NULL,
    acl_id      BIGINT NOT NULL,
    seq         INTEGER NOT NULL,
    text        TEXT NOT NULL,
    tsv         TSVECTOR GENERATED ALWAYS AS (to_tsvector('simple', text)) STORED
);
CREATE INDEX chunks_by_document ON chunks (document_id);
CREATE INDEX chunks_by_acl ON chunks (tenant, acl_id);
CREATE INDEX chunks_fts ON chunks USING GIN (tsv);

CREATE TABLE audit_events (
    id         BIGSERIAL PRIMARY KEY,
    ts         BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    tenant     TEXT,
    subject    TEXT,
    username   TEXT,
    session_id TEXT,
    ip         TEXT,
    reason     TEXT,
    resource   TEXT,
    request_id TEXT,
    count      BIGINT
);
CREATE INDEX audit_by_tenant ON audit_events (tenant, id);
CREATE INDEX audit_by_ts ON audit_events (ts);
CREATE INDEX audit_by_request ON audit_events (request_id) WHERE request_id IS NOT NULL;

-- Readiness writes here: proof that a durable write path works.
CREATE TABLE health_probe (
    node       TEXT PRIMARY KEY,
    checked_at BIGINT NOT NULL
);
