-- Proposals to grant a privileged role, waiting for a second admin (the two-person
-- rule). A decided proposal is kept, with who decided and when.
CREATE TABLE grants (
    id          TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    role        TEXT NOT NULL,
    proposed_by TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    approved_by TEXT,
    approved_at INTEGER
);
CREATE INDEX grants_pending ON grants (tenant, created_at) WHERE approved_by IS NULL;
