-- Readiness proves the write path with a real durable write to this one row.
CREATE TABLE health (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    checked_at INTEGER NOT NULL
);
-- Pruning by age: audit retention.
CREATE INDEX audit_by_ts ON audit_events(ts);
