-- A thread's row changes with every message (its count and time). With none of the
-- changing columns indexed and room left on its page, PostgreSQL updates it in place
-- (a HOT update): no new index entries, and the old version is pruned on the page
-- instead of piling up behind the primary key until vacuum. Listing a user's threads
-- sorts at most `threads.max_threads_per_user` rows, so the index need not order them.
DROP INDEX IF EXISTS threads_by_owner;
CREATE INDEX threads_by_owner ON threads (tenant, owner);
ALTER TABLE threads SET (fillfactor = 50);
-- The message id is 128 random bits minted by the gateway and no query looks a message
-- up by it: its unique index only cost every insert a second index write.
ALTER TABLE messages DROP CONSTRAINT IF EXISTS messages_id_key;
