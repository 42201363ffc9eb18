-- Messages are stored in thread order: the table is keyed by (thread_id, seq) itself
-- (WITHOUT ROWID), so a turn's history is one range of neighbouring rows rather than an
-- index walk with one table lookup per message, and an append writes one b-tree instead
-- of three (the table, the (thread_id, seq) index and an index on the random message
-- id, which no query ever used: messages are only read by thread).
CREATE TABLE messages_by_thread (
    thread_id  TEXT NOT NULL REFERENCES threads(id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    id         TEXT NOT NULL,
    role       TEXT NOT NULL,
    content    TEXT NOT NULL,
    citations  TEXT NOT NULL DEFAULT '[]',
    created_at INTEGER NOT NULL,
    tool       TEXT,
    PRIMARY KEY (thread_id, seq)
) WITHOUT ROWID;
INSERT INTO messages_by_thread (thread_id, seq, id, role, content, citations, created_at, tool)
    SELECT thread_id, seq, id, role, content, citations, created_at, tool FROM messages;
DROP TABLE messages;
ALTER TABLE messages_by_thread RENAME TO messages;
