-- A thread's row changes with every message (its count and time). With its time in the
-- owner index, each of those updates also moved an index entry (a delete and an insert
-- in a second b-tree, one more page in every commit). Listing a user's threads sorts at
-- most `threads.max_threads_per_user` rows, so the index need not order them.
DROP INDEX IF EXISTS threads_by_owner;
CREATE INDEX threads_by_owner ON threads(tenant, owner);
