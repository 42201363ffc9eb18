-- The documents whose text was in the model's context when a message was produced (a
-- JSON array of document ids). Messages written before it was recorded are given the
-- conservative answer: an answer drew on every document cited anywhere up to it in its
-- thread.
ALTER TABLE messages ADD COLUMN IF NOT EXISTS sources JSONB NOT NULL DEFAULT '[]';
UPDATE messages AS m SET sources = (
    SELECT jsonb_agg(DISTINCT c->>'document_id' ORDER BY c->>'document_id')
    FROM messages AS e, jsonb_array_elements(e.citations) AS c
    WHERE e.thread_id = m.thread_id AND e.seq <= m.seq
)
WHERE m.role = 'assistant' AND EXISTS (
    SELECT 1 FROM messages AS e
    WHERE e.thread_id = m.thread_id AND e.seq <= m.seq AND e.citations <> '[]'::jsonb
);
