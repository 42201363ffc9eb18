-- The audit trail becomes a hash chain: each record carries its position, the hash of
-- the record before it and its own hash. Records written before this migration stay
-- as they were, outside the chain (seq NULL).
ALTER TABLE audit_events ADD COLUMN thread TEXT;
ALTER TABLE audit_events ADD COLUMN documents TEXT;
ALTER TABLE audit_events ADD COLUMN seq INTEGER;
ALTER TABLE audit_events ADD COLUMN prev_hash BLOB;
ALTER TABLE audit_events ADD COLUMN hash BLOB;
CREATE UNIQUE INDEX audit_by_seq ON audit_events(seq) WHERE seq IS NOT NULL;
CREATE INDEX audit_by_subject ON audit_events(tenant, subject, id);

-- The chain's end, and where retention cut its start. One row.
CREATE TABLE audit_chain (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    seq         INTEGER NOT NULL,
    hash        BLOB NOT NULL,
    pruned_seq  INTEGER NOT NULL,
    pruned_hash BLOB NOT NULL
);
INSERT INTO audit_chain VALUES (1, 0, zeroblob(32), 0, zeroblob(32));

-- Data lineage: which chained record put which document in front of a model.
CREATE TABLE audit_lineage (
    tenant      TEXT,
    document_id TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    PRIMARY KEY (document_id, seq)
) WITHOUT ROWID;
