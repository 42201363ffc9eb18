-- Full text is indexed in memory from the chunk rows (one tenant's at a time), with
-- BM25 over the caller's visible chunks: the per-ACL FTS5 indexes go (their virtual
-- tables are dropped at start-up, by name), and chunks are read by tenant.
DROP TABLE IF EXISTS text_parts;
CREATE INDEX IF NOT EXISTS chunks_by_tenant ON chunks(tenant, id);
