-- An answer whose reader stopped it mid-stream is kept as far as it came, and marked.
ALTER TABLE messages ADD COLUMN stopped INTEGER NOT NULL DEFAULT 0;
