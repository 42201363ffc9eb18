-- How many chunks each ACL holds, kept with every ingestion and deletion: a search
-- sums it over the visible ACLs to choose between exact search and HNSW without
-- counting rows (a count over half of a large tenant costs more than the search).
ALTER TABLE acls ADD COLUMN chunk_count BIGINT NOT NULL DEFAULT 0;
UPDATE acls SET chunk_count = (SELECT count(*) FROM chunks WHERE chunks.acl_id = acls.id);
