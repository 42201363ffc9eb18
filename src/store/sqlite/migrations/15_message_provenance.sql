-- The documents whose text was in the model's context when a message was produced (a
-- JSON array of document ids). Messages written before it was recorded are given the
-- conservative answer: an answer drew on every document cited anywhere up to it in its
-- thread.
ALTER TABLE messages ADD COLUMN sources TEXT NOT NULL DEFAULT '[]';
UPDATE messages SET sources = (
    SELECT json_group_array(DISTINCT json_extract(c.value, '$.document_id'))
    FROM messages AS e, json_each(e.citations) AS c
    WHERE e.thread_id = messages.thread_id AND e.seq <= messages.seq
)
WHERE role = 'assistant' AND EXISTS (
    SELECT 1 FROM messages AS e
    WHERE e.thread_id = messages.thread_id AND e.seq <= messages.seq AND e.citations <> '[]'
);
