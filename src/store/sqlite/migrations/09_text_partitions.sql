-- Full-text search per (tenant, ACL) partition, as for vectors. One FTS5 index over
-- every tenant shares its BM25 statistics (document frequencies, average length)
-- across all of them, so the order of a caller's own results revealed whether a word
-- occurs in documents it may not read. Each partition now has its own index,
-- `text_<acl_id>` (created on first use; `acls.id` is already tenant-scoped), and a
-- search ranks within the partitions the caller may see.
DROP TRIGGER IF EXISTS chunks_ai;
DROP TRIGGER IF EXISTS chunks_ad;
DROP TABLE IF EXISTS chunks_fts;
-- The partitions whose index exists.
CREATE TABLE text_parts (
    acl_id INTEGER PRIMARY KEY REFERENCES acls(id)
);
