//! Threads and messages in PostgreSQL. Every statement carries the owner key next to
//! the id ([`OWNED`]); there is no query by id alone. An append is one statement that
//! locks the thread row (`FOR UPDATE`), checks the room, inserts the message with the
//! next sequence number and counts it: atomic across every node, one round trip.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::{ClusterStore, exec, row, rows, timed};
use crate::access::ThreadOwner;
use crate::model::ThreadRecord;
use crate::model::{MessageRecord, Role, ToolData};
use crate::store::threads::HistoryFill;
use crate::store::{
    Append, CreateThread, HistoryBudget, NewMessage, NewThread, StoreError, StoreResult,
    ThreadPage, ThreadStore, TurnStart,
};

/// The WHERE clause every thread lookup uses; `$1` is the thread id, `$4` the session
/// under strict binding (NULL otherwise).
const OWNED: &str =
    "id = $1 AND tenant = $2 AND owner = $3 AND ($4::TEXT IS NULL OR session_id = $4)";

const THREAD_COLS: &str = "id, title, created_at, updated_at, message_count";
const MESSAGE_COLS: &str =
    "id, seq, role, content, citations, created_at, tool, sources, stopped, retries";

/// Rows read per round trip while filling a history budget.
const HISTORY_BATCH: i64 = 64;

fn thread_row(r: &Row) -> StoreResult<ThreadRecord> {
    Ok(ThreadRecord {
        id: r.try_get(0)?,
        title: r.try_get(1)?,
        created_at: r.try_get(2)?,
        updated_at: r.try_get(3)?,
        message_count: r.try_get::<_, i32>(4)?.max(0) as u32,
    })
}

fn message_row(r: &Row) -> StoreResult<MessageRecord> {
    message_at(r, 0)
}

/// The [`MESSAGE_COLS`] of a row, from column `at` on.
fn message_at(r: &Row, at: usize) -> StoreResult<MessageRecord> {
    let role: String = r.try_get(at + 2)?;
    let citations: serde_json::Value = r.try_get(at + 4)?;
    Ok(MessageRecord {
        id: r.try_get(at)?,
        seq: r.try_get(at + 1)?,
        role: Role::parse(&role).ok_or_else(|| StoreError::Corrupt(format!("role {role}")))?,
        content: r.try_get(at + 3)?,
        citations: serde_json::from_value(citations)
            .map_err(|e| StoreError::Corrupt(format!("citations: {e}")))?,
        created_at: r.try_get(at + 5)?,
        tool: r
            .try_get::<_, Option<serde_json::Value>>(at + 6)?
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("tool: {e}")))?,
        provenance: serde_json::from_value(r.try_get(at + 7)?)
            .map_err(|e| StoreError::Corrupt(format!("sources: {e}")))?,
        stopped: r.try_get(at + 8)?,
        retries: r.try_get(at + 9)?,
    })
}

async fn owned_thread(
    c: &impl GenericClient,
    o: &ThreadOwner,
    id: &str,
) -> StoreResult<Option<ThreadRecord>> {
    row(
        c,
        &format!("SELECT {THREAD_COLS} FROM threads WHERE {OWNED}"),
        &[&id, &o.tenant(), &o.user(), &o.required_session()],
    )
    .await?
    .map(|r| thread_row(&r))
    .transpose()
}

/// Lock, room check, insert and count in one statement. Under concurrent appends the
/// second waits for the first's lock and then sees its count (read committed
/// re-checks a locked row), so sequence numbers never collide. Timestamps never go
/// backwards within a thread, whatever the nodes' clocks say. `$11` false commits
/// without waiting for the WAL flush (the statement is its own transaction, and
/// `set_config(…, true)` lasts until its commit): a turn's question, made durable by
/// the answer's synchronous commit that follows (the WAL is flushed in order).
macro_rules! append_ctes {
    () => {
        "
WITH durability AS (
    SELECT set_config('synchronous_commit', CASE WHEN $11 THEN 'on' ELSE 'off' END, true)
), t AS (
    SELECT id, message_count, updated_at FROM threads
    WHERE id = $1 AND tenant = $2 AND owner = $3 AND ($4::TEXT IS NULL OR session_id = $4)
    FOR UPDATE
), ins AS (
    INSERT INTO messages (id, thread_id, seq, role, content, citations, created_at, tool, sources, stopped, retries)
    SELECT $5, t.id, t.message_count + 1, $6, $7, $8, GREATEST($9::BIGINT, t.updated_at), $12, $13, $14, $15
    FROM t WHERE t.message_count < $10
    RETURNING seq, created_at
), counted AS (
    UPDATE threads SET message_count = threads.message_count + 1, updated_at = ins.created_at
    FROM ins WHERE threads.id = $1
    RETURNING threads.id
)"
    };
}

const APPEND: &str = concat!(
    append_ctes!(),
    "
SELECT ins.seq, ins.created_at, (SELECT count(*) FROM counted), (SELECT 1 FROM durability)
FROM t LEFT JOIN ins ON TRUE"
);

/// [`APPEND`] for a turn's question, with the newest batch of its history in the same
/// statement (one round trip): the messages after `$16` (what the caller holds),
/// newest first, one row each (a single row with NULL message columns when there are
/// none). The statement's snapshot is taken before it waits for the thread's lock, so a
/// message appended by a request that held the lock meanwhile is missing from the
/// batch; [`begin_turn`](ThreadStore::begin_turn) sees the gap and reads again.
const BEGIN_TURN: &str = concat!(
    append_ctes!(),
    ", fresh AS (
    SELECT id, seq, role, content, citations, created_at, tool, sources, stopped, retries
    FROM messages WHERE thread_id = $1 AND seq > $16
    ORDER BY seq DESC LIMIT $17
)
SELECT ins.seq, ins.created_at, (SELECT count(*) FROM counted), (SELECT 1 FROM durability),
       f.id, f.seq, f.role, f.content, f.citations, f.created_at, f.tool, f.sources, f.stopped,
       f.retries
FROM t LEFT JOIN ins ON TRUE LEFT JOIN fresh f ON ins.seq IS NOT NULL
ORDER BY f.seq DESC"
);

/// The appended message, from the columns `seq, created_at` of an [`APPEND`] row: `Full`
/// when the thread had no room (both NULL).
fn appended(r: &Row, msg: NewMessage) -> StoreResult<Append> {
    let seq: Option<i64> = r.try_get(0)?;
    let created_at: Option<i64> = r.try_get(1)?;
    Ok(match (seq, created_at) {
        (Some(seq), Some(created_at)) => Append::Appended(msg.stored(seq, created_at)),
        _ => Append::Full,
    })
}

/// Appends to an owned thread with room, in one statement; `durable`: the commit waits
/// for the WAL flush.
async fn append(
    c: &impl GenericClient,
    o: &ThreadOwner,
    id: &str,
    msg: NewMessage,
    max_messages: u32,
    durable: bool,
) -> StoreResult<Append> {
    let citations = serde_json::to_value(&msg.citations)
        .map_err(|e| StoreError::Corrupt(format!("citations: {e}")))?;
    let max = i32::try_from(max_messages).unwrap_or(i32::MAX);
    let tool = ToolData::to_json(&msg.tool);
    let sources = serde_json::to_value(&msg.provenance)
        .map_err(|e| StoreError::Corrupt(format!("sources: {e}")))?;
    let Some(r) = row(
        c,
        APPEND,
        &[
            &id,
            &o.tenant(),
            &o.user(),
            &o.required_session(),
            &msg.id,
            &msg.role.as_str(),
            &msg.content,
            &citations,
            &msg.now,
            &max,
            &durable,
            &tool,
            &sources,
            &msg.stopped,
            &msg.retries,
        ],
    )
    .await?
    else {
        return Ok(Append::NotFound);
    };
    appended(&r, msg)
}

/// The newest messages before `before_seq` (and after `after`) that fit `budget`,
/// oldest first; read newest-first in small batches, so the cost follows the budget,
/// not the thread.
async fn recent_history(
    c: &impl GenericClient,
    thread_id: &str,
    before_seq: i64,
    after: i64,
    budget: HistoryBudget,
) -> StoreResult<Vec<MessageRecord>> {
    Ok(
        recent_history_into(c, thread_id, before_seq, after, HistoryFill::new(budget))
            .await?
            .into_history(),
    )
}

/// Goes on filling `fill` with the messages before `before_seq` (and after `after`).
async fn recent_history_into(
    c: &impl GenericClient,
    thread_id: &str,
    before_seq: i64,
    after: i64,
    mut fill: HistoryFill,
) -> StoreResult<HistoryFill> {
    let sql = format!(
        "SELECT {MESSAGE_COLS} FROM messages WHERE thread_id = $1 AND seq < $2 AND seq > $4
         ORDER BY seq DESC LIMIT $3"
    );
    let mut cursor = before_seq;
    loop {
        let batch = rows(c, &sql, &[&thread_id, &cursor, &HISTORY_BATCH, &after]).await?;
        let n = batch.len();
        for r in batch {
            let m = message_row(&r)?;
            cursor = m.seq;
            if !fill.offer(m) {
                return Ok(fill);
            }
        }
        if (n as i64) < HISTORY_BATCH {
            return Ok(fill);
        }
    }
}

#[async_trait]
impl ThreadStore for ClusterStore {
    async fn create_thread(
        &self,
        owner: &ThreadOwner,
        t: NewThread,
        max_threads: u32,
    ) -> StoreResult<CreateThread> {
        timed(async {
            let mut c = self.pg().await?;
            let tx = c.transaction().await?;
            // One owner's creations queue on a lock of their own, so the count holds.
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended($1::TEXT || '/' || $2::TEXT, 0))",
                &[&owner.tenant(), &owner.user()],
            )
            .await?;
            let count: i64 = tx
                .query_one(
                    "SELECT count(*) FROM threads WHERE tenant = $1 AND owner = $2",
                    &[&owner.tenant(), &owner.user()],
                )
                .await?
                .try_get(0)?;
            if count >= i64::from(max_threads) {
                return Ok(CreateThread::LimitReached);
            }
            // The creating session is always recorded, whatever the binding.
            tx.execute(
                "INSERT INTO threads (id, tenant, owner, session_id, title, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $6)",
                &[
                    &t.id,
                    &owner.tenant(),
                    &owner.user(),
                    &owner.session(),
                    &t.title,
                    &t.now,
                ],
            )
            .await?;
            tx.commit().await?;
            Ok(CreateThread::Created(ThreadRecord {
                id: t.id,
                title: t.title,
                created_at: t.now,
                updated_at: t.now,
                message_count: 0,
            }))
        })
        .await
    }

    async fn list_threads(&self, owner: &ThreadOwner) -> StoreResult<Vec<ThreadRecord>> {
        timed(async {
            let c = self.pg().await?;
            rows(
                &c,
                &format!(
                    "SELECT {THREAD_COLS} FROM threads
                     WHERE tenant = $1 AND owner = $2 AND ($3::TEXT IS NULL OR session_id = $3)
                     ORDER BY updated_at DESC"
                ),
                &[&owner.tenant(), &owner.user(), &owner.required_session()],
            )
            .await?
            .iter()
            .map(thread_row)
            .collect()
        })
        .await
    }

    async fn thread_page(
        &self,
        owner: &ThreadOwner,
        id: &str,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Option<ThreadPage>> {
        timed(async {
            let mut c = self.pg().await?;
            // One snapshot: the ownership check and the page see the same state.
            let tx = c
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            let Some(thread) = owned_thread(&tx, owner, id).await? else {
                return Ok(None);
            };
            let mut messages = rows(
                &tx,
                &format!(
                    "SELECT {MESSAGE_COLS} FROM messages
                     WHERE thread_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
                ),
                &[&id, &before.unwrap_or(i64::MAX), &(i64::from(limit) + 1)],
            )
            .await?
            .iter()
            .map(message_row)
            .collect::<StoreResult<Vec<_>>>()?;
            tx.commit().await?;
            let next_before = if messages.len() > limit as usize {
                messages.truncate(limit as usize);
                messages.last().map(|m| m.seq)
            } else {
                None
            };
            messages.reverse();
            Ok(Some(ThreadPage {
                thread,
                messages,
                next_before,
            }))
        })
        .await
    }

    async fn begin_turn(
        &self,
        owner: &ThreadOwner,
        id: &str,
        question: NewMessage,
        max_messages: u32,
        budget: HistoryBudget,
        after: i64,
    ) -> StoreResult<TurnStart> {
        timed(async {
            let c = self.pg().await?;
            // The question is committed before the history is read: a crash of this
            // node cannot lose it, and the history (seq below it) cannot change. Its
            // WAL flush is deferred to the answer's durable commit, as the contract
            // allows: nothing acknowledges the question before that.
            let citations = serde_json::to_value(&question.citations)
                .map_err(|e| StoreError::Corrupt(format!("citations: {e}")))?;
            let max = i32::try_from(max_messages).unwrap_or(i32::MAX);
            let tool = ToolData::to_json(&question.tool);
            let sources = serde_json::to_value(&question.provenance)
                .map_err(|e| StoreError::Corrupt(format!("sources: {e}")))?;
            let batch = rows(
                &c,
                BEGIN_TURN,
                &[
                    &id,
                    &owner.tenant(),
                    &owner.user(),
                    &owner.required_session(),
                    &question.id,
                    &question.role.as_str(),
                    &question.content,
                    &citations,
                    &question.now,
                    &max,
                    &false,
                    &tool,
                    &sources,
                    &question.stopped,
                    &question.retries,
                    &after,
                    &HISTORY_BATCH,
                ],
            )
            .await?;
            let Some(first) = batch.first() else {
                return Ok(TurnStart::NotFound);
            };
            let message = match appended(first, question)? {
                Append::Appended(m) => m,
                Append::NotFound => return Ok(TurnStart::NotFound),
                Append::Full => return Ok(TurnStart::Full),
            };
            let fresh = batch
                .iter()
                .filter(|r| matches!(r.try_get::<_, Option<i64>>(5), Ok(Some(_))))
                .map(|r| message_at(r, 4))
                .collect::<StoreResult<Vec<_>>>()?;
            // The batch must end right before the question (nothing appended
            // meanwhile is missing) and hold a whole batch or reach `after`.
            let newest = fresh.first().map_or(after, |m| m.seq);
            let whole = fresh.len() as i64 == HISTORY_BATCH;
            let history = if newest + 1 == message.seq
                && fresh.windows(2).all(|w| w[0].seq == w[1].seq + 1)
            {
                let mut fill = HistoryFill::new(budget);
                let mut cursor = message.seq;
                let mut open = true;
                for m in fresh {
                    cursor = m.seq;
                    if !fill.offer(m) {
                        open = false;
                        break;
                    }
                }
                if open && whole {
                    fill = recent_history_into(&c, id, cursor, after, fill).await?;
                }
                fill.into_history()
            } else {
                recent_history(&c, id, message.seq, after, budget).await?
            };
            Ok(TurnStart::Started { history, message })
        })
        .await
    }

    async fn append_message(
        &self,
        owner: &ThreadOwner,
        id: &str,
        msg: NewMessage,
        max_messages: u32,
    ) -> StoreResult<Append> {
        timed(async {
            let c = self.pg().await?;
            append(&c, owner, id, msg, max_messages, true).await
        })
        .await
    }

    async fn rename_thread(
        &self,
        owner: &ThreadOwner,
        id: &str,
        title: &str,
    ) -> StoreResult<Option<ThreadRecord>> {
        timed(async {
            let c = self.pg().await?;
            row(
                &c,
                &format!("UPDATE threads SET title = $5 WHERE {OWNED} RETURNING {THREAD_COLS}"),
                &[
                    &id,
                    &owner.tenant(),
                    &owner.user(),
                    &owner.required_session(),
                    &title,
                ],
            )
            .await?
            .map(|r| thread_row(&r))
            .transpose()
        })
        .await
    }

    async fn search_threads(
        &self,
        owner: &ThreadOwner,
        text: &str,
        limit: u32,
    ) -> StoreResult<Vec<ThreadRecord>> {
        let pattern = crate::store::threads::like_pattern(text);
        let limit = i64::from(limit);
        timed(async {
            let c = self.pg().await?;
            rows(
                &c,
                &format!(
                    "SELECT {THREAD_COLS} FROM threads t
                     WHERE tenant = $1 AND owner = $2 AND ($3::TEXT IS NULL OR session_id = $3)
                       AND (title ILIKE $4
                            OR EXISTS (SELECT 1 FROM messages m WHERE m.thread_id = t.id
                                       AND m.role = 'user' AND m.content ILIKE $4))
                     ORDER BY updated_at DESC LIMIT $5"
                ),
                &[
                    &owner.tenant(),
                    &owner.user(),
                    &owner.required_session(),
                    &pattern,
                    &limit,
                ],
            )
            .await?
            .iter()
            .map(thread_row)
            .collect()
        })
        .await
    }

    async fn delete_thread(&self, owner: &ThreadOwner, id: &str) -> StoreResult<bool> {
        timed(async {
            let c = self.pg().await?;
            let n = exec(
                &c,
                &format!("DELETE FROM threads WHERE {OWNED}"),
                &[
                    &id,
                    &owner.tenant(),
                    &owner.user(),
                    &owner.required_session(),
                ],
            )
            .await?;
            Ok(n == 1)
        })
        .await
    }
}
