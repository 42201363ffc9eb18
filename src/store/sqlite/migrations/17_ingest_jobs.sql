-- Ingestion as a job: a document is stored at once (`queued`), a worker chunks and
-- embeds it into `ingest_chunks` batch by batch under a lease, and the chunks move into
-- the indexes in one transaction (`ready`). A job whose worker died is taken up again
-- once its lease lapses, from the chunks already staged.
ALTER TABLE documents ADD COLUMN state TEXT NOT NULL DEFAULT 'ready';
ALTER TABLE documents ADD COLUMN chunks_done INTEGER NOT NULL DEFAULT 0;
ALTER TABLE documents ADD COLUMN chunks_total INTEGER NOT NULL DEFAULT 0;
ALTER TABLE documents ADD COLUMN failure TEXT;
ALTER TABLE documents ADD COLUMN lease_owner TEXT;
ALTER TABLE documents ADD COLUMN lease_until INTEGER NOT NULL DEFAULT 0;
ALTER TABLE documents ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
CREATE INDEX documents_pending ON documents (lease_until, created_at)
    WHERE state IN ('queued', 'embedding');
CREATE TABLE ingest_chunks (
    document_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,
    public_id   TEXT NOT NULL,
    text        TEXT NOT NULL,
    embedding   BLOB,
    PRIMARY KEY (document_id, seq)
) WITHOUT ROWID;
