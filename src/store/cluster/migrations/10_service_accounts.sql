-- Service accounts are users with a service profile (allowed models, own rate and
-- token budget, whether they may act for users); people have none. Their API keys:
-- the secret only as a SHA-256 (a 256-bit random secret needs no slow hash).
ALTER TABLE users ADD COLUMN IF NOT EXISTS service TEXT;
CREATE TABLE IF NOT EXISTS api_keys (
    id           TEXT PRIMARY KEY,
    tenant       TEXT NOT NULL,
    service_id   TEXT NOT NULL,
    secret_hash  BYTEA NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    revoked_at   BIGINT,
    last_used_at BIGINT,
    last_used_ip TEXT,
    allow_cidrs  TEXT[] NOT NULL,
    dpop_jkt     TEXT
);
CREATE INDEX IF NOT EXISTS api_keys_by_service ON api_keys (tenant, service_id);
-- Which service acted for the event's subject (a token it exchanged).
ALTER TABLE audit_events ADD COLUMN IF NOT EXISTS actor TEXT;
-- OAuth clients registered dynamically (RFC 7591), e.g. MCP clients. A client belongs
-- to the tenant of the first user who approves it; until then it expires.
CREATE TABLE IF NOT EXISTS oauth_clients (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    redirect_uris TEXT[] NOT NULL,
    tenant        TEXT,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT,
    last_used_at  BIGINT
);
