-- Each tenant's vector epoch: moved in the transaction of every write of its vectors,
-- so that a process's in-memory copy of them knows when it is stale.
CREATE TABLE IF NOT EXISTS vector_epochs (
    tenant TEXT PRIMARY KEY,
    n INTEGER NOT NULL
);
