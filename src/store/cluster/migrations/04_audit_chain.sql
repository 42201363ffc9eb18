-- The audit trail becomes a hash chain: each record carries its position, the hash of
-- the record before it and its own hash. Records written before this migration stay
-- as they were, outside the chain (seq NULL). Appends from every node serialise on
-- the one row of `audit_chain` (SELECT … FOR UPDATE).
ALTER TABLE audit_events ADD COLUMN IF NOT EXISTS thread TEXT;
ALTER TABLE audit_events ADD COLUMN IF NOT EXISTS documents TEXT[];
ALTER TABLE audit_events ADD COLUMN IF NOT EXISTS seq BIGINT;
ALTER TABLE audit_events ADD COLUMN IF NOT EXISTS prev_hash BYTEA;
ALTER TABLE audit_events ADD COLUMN IF NOT EXISTS hash BYTEA;
CREATE UNIQUE INDEX IF NOT EXISTS audit_by_seq ON audit_events (seq) WHERE seq IS NOT NULL;
CREATE INDEX IF NOT EXISTS audit_by_subject ON audit_events (tenant, subject, id);

CREATE TABLE IF NOT EXISTS audit_chain (
    id          INT PRIMARY KEY CHECK (id = 1),
    seq         BIGINT NOT NULL,
    hash        BYTEA NOT NULL,
    pruned_seq  BIGINT NOT NULL,
    pruned_hash BYTEA NOT NULL
);
INSERT INTO audit_chain VALUES (1, 0, decode(repeat('00', 32), 'hex'), 0, decode(repeat('00', 32), 'hex'))
ON CONFLICT (id) DO NOTHING;

CREATE TABLE IF NOT EXISTS audit_lineage (
    tenant      TEXT,
    document_id TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    PRIMARY KEY (document_id, seq)
);
