-- Tool calls and tool results are messages of their own kinds: an assistant message
-- may carry the calls the model asked for, a `tool` message answers one of them. Both
-- live in one JSON column (NULL for plain messages).
ALTER TABLE messages ADD COLUMN tool TEXT;
