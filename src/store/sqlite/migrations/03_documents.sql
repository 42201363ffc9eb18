-- Documents. An ACL is stored once per distinct label set; a chunk carries its
-- document's acl_id so that the visibility filter is an integer set inside the
-- KNN (vec0 metadata column) and BM25 queries.
CREATE TABLE acls (
    id     INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    labels TEXT NOT NULL,           -- canonical JSON array, sorted
    UNIQUE (tenant, labels)
);
CREATE TABLE acl_labels (
    acl_id INTEGER NOT NULL REFERENCES acls(id),
    label  TEXT NOT NULL,
    PRIMARY KEY (label, acl_id)
) WITHOUT ROWID;
CREATE TABLE documents (
    id          TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    title       TEXT NOT NULL,
    body        TEXT NOT NULL,
    acl         TEXT NOT NULL,      -- the ACL as given (JSON)
    acl_id      INTEGER NOT NULL REFERENCES acls(id),
    created_by  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    chunk_count INTEGER NOT NULL
);
CREATE INDEX documents_by_acl ON documents(tenant, acl_id);
CREATE TABLE chunks (
    id          INTEGER PRIMARY KEY,
    public_id   TEXT NOT NULL UNIQUE,
    document_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    tenant      TEXT NOT NULL,
    acl_id      INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    text        TEXT NOT NULL
);
CREATE INDEX chunks_by_document ON chunks(document_id);
CREATE VIRTUAL TABLE chunks_fts USING fts5(
    text, content='chunks', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
);
CREATE TRIGGER chunks_ai AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER chunks_ad AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
