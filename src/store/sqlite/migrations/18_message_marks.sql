-- An answer whose reader stopped it mid-stream is kept as far as it came, and marked.
ALTER TABLE messages ADD COLUMN stopped INTEGER NOT NULL DEFAULT 0;
-- A question asked again (regenerate) names the first one of its kind: the messages
-- from there to it leave the history and the thread's view (the thread stays
-- append-only).
ALTER TABLE messages ADD COLUMN retries INTEGER;
