-- An answer whose reader stopped it mid-stream is kept as far as it came, and marked.
ALTER TABLE messages ADD COLUMN IF NOT EXISTS stopped BOOLEAN NOT NULL DEFAULT false;
