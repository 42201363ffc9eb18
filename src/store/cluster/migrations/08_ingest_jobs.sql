-- Ingestion as a job: a document is stored at once (`queued`), a worker on any node
-- claims it (`FOR UPDATE SKIP LOCKED`, under a lease), chunks and embeds it into
-- `ingest_chunks` batch by batch, and the chunks move into the indexes in one
-- transaction (`ready`). A job whose worker died is taken up again once its lease
-- lapses, from the chunks already staged.
ALTER TABLE documents ADD COLUMN IF NOT EXISTS state TEXT NOT NULL DEFAULT 'ready';
ALTER TABLE documents ADD COLUMN IF NOT EXISTS chunks_done INTEGER NOT NULL DEFAULT 0;
ALTER TABLE documents ADD COLUMN IF NOT EXISTS chunks_total INTEGER NOT NULL DEFAULT 0;
ALTER TABLE documents ADD COLUMN IF NOT EXISTS failure TEXT;
ALTER TABLE documents ADD COLUMN IF NOT EXISTS lease_owner TEXT;
ALTER TABLE documents ADD COLUMN IF NOT EXISTS lease_until BIGINT NOT NULL DEFAULT 0;
ALTER TABLE documents ADD COLUMN IF NOT EXISTS attempts INTEGER NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS documents_pending ON documents (lease_until, created_at)
    WHERE state IN ('queued', 'embedding');
CREATE TABLE IF NOT EXISTS ingest_chunks (
    document_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,
    public_id   TEXT NOT NULL,
    text        TEXT NOT NULL,
    embedding   vector,
    PRIMARY KEY (document_id, seq)
);
