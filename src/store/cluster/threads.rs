//! Threads and messages in PostgreSQL. Every statement carries the owner key next to
//! the id ([`OWNED`]); there is no query by id alone. Appends lock the thread row
//! (`FOR UPDATE`), so the room check and the sequence number are one atomic step
//! across every node.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::{ClusterStore, timed};
use crate::access::ThreadOwner;
use crate::store::threads::approx_tokens;
use crate::store::{
    Append, CreateThread, HistoryBudget, MessageRecord, NewMessage, NewThread, Role, StoreError,
    StoreResult, ThreadPage, ThreadRecord, ThreadStore, TurnStart,
};

/// The WHERE clause every thread lookup uses; `$1` is the thread id, `$4` the session
/// under strict binding (NULL otherwise).
const OWNED: &str =
    "id = $1 AND tenant = $2 AND owner = $3 AND ($4::TEXT IS NULL OR session_id = $4)";

const THREAD_COLS: &str = "id, title, created_at, updated_at, message_count";
const MESSAGE_COLS: &str = "id, seq, role, content, citations, created_at";

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
    let role: String = r.try_get(2)?;
    let citations: serde_json::Value = r.try_get(4)?;
    Ok(MessageRecord {
        id: r.try_get(0)?,
        seq: r.try_get(1)?,
        role: Role::parse(&role).ok_or_else(|| StoreError::Corrupt(format!("role {role}")))?,
        content: r.try_get(3)?,
        citations: serde_json::from_value(citations)
            .map_err(|e| StoreError::Corrupt(format!("citations: {e}")))?,
        created_at: r.try_get(5)?,
    })
}

async fn owned_thread(
    c: &impl GenericClient,
    o: &ThreadOwner,
    id: &str,
    lock: bool,
) -> StoreResult<Option<ThreadRecord>> {
    let sql = format!(
        "SELECT {THREAD_COLS} FROM threads WHERE {OWNED}{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    c.query_opt(&sql, &[&id, &o.tenant(), &o.user(), &o.required_session()])
        .await?
        .map(|r| thread_row(&r))
        .transpose()
}

/// Appends to an owned thread with room, inside the caller's transaction.
async fn append(
    tx: &impl GenericClient,
    o: &ThreadOwner,
    id: &str,
    msg: NewMessage,
    max_messages: u32,
) -> StoreResult<Append> {
    let Some(thread) = owned_thread(tx, o, id, true).await? else {
        return Ok(Append::NotFound);
    };
    if thread.message_count >= max_messages {
        return Ok(Append::Full);
    }
    // Timestamps never go backwards within a thread, whatever the nodes' clocks say.
    let now = msg.now.max(thread.updated_at);
    let rec = MessageRecord {
        id: msg.id,
        seq: i64::from(thread.message_count) + 1,
        role: msg.role,
        content: msg.content,
        citations: msg.citations,
        created_at: now,
    };
    let citations = serde_json::to_value(&rec.citations)
        .map_err(|e| StoreError::Corrupt(format!("citations: {e}")))?;
    tx.execute(
        "INSERT INTO messages (id, thread_id, seq, role, content, citations, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &rec.id,
            &id,
            &rec.seq,
            &rec.role.as_str(),
            &rec.content,
            &citations,
            &now,
        ],
    )
    .await?;
    tx.execute(
        "UPDATE threads SET message_count = message_count + 1, updated_at = $2 WHERE id = $1",
        &[&id, &now],
    )
    .await?;
    Ok(Append::Appended(rec))
}

/// The newest messages before `before_seq` that fit `budget`, oldest first; read
/// newest-first in small batches, so the cost follows the budget, not the thread.
async fn recent_history(
    c: &impl GenericClient,
    thread_id: &str,
    before_seq: i64,
    budget: HistoryBudget,
) -> StoreResult<Vec<MessageRecord>> {
    let sql = format!(
        "SELECT {MESSAGE_COLS} FROM messages WHERE thread_id = $1 AND seq < $2
         ORDER BY seq DESC LIMIT $3"
    );
    let mut left = budget.0;
    let mut out = Vec::new();
    let mut cursor = before_seq;
    'outer: loop {
        let rows = c
            .query(&sql, &[&thread_id, &cursor, &HISTORY_BATCH])
            .await?;
        let n = rows.len();
        for row in rows {
            let m = message_row(&row)?;
            let cost = approx_tokens(&m.content);
            if cost > left {
                break 'outer;
            }
            left -= cost;
            cursor = m.seq;
            out.push(m);
        }
        if (n as i64) < HISTORY_BATCH {
            break;
        }
    }
    out.reverse();
    Ok(out)
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
            c.query(
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
            let Some(thread) = owned_thread(&tx, owner, id, false).await? else {
                return Ok(None);
            };
            let mut messages = tx
                .query(
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
    ) -> StoreResult<TurnStart> {
        timed(async {
            let mut c = self.pg().await?;
            let tx = c.transaction().await?;
            // Deferred durability, as the contract allows: the question is committed
            // (and survives a gateway crash) but PostgreSQL need not wait for its
            // fsync; the turn's answer is a synchronous commit that follows it.
            tx.batch_execute("SET LOCAL synchronous_commit = off")
                .await?;
            let started = match append(&tx, owner, id, question, max_messages).await? {
                Append::Appended(message) => {
                    let history = recent_history(&tx, id, message.seq, budget).await?;
                    TurnStart::Started { history, message }
                }
                Append::NotFound => TurnStart::NotFound,
                Append::Full => TurnStart::Full,
            };
            tx.commit().await?;
            Ok(started)
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
            let mut c = self.pg().await?;
            let tx = c.transaction().await?;
            let appended = append(&tx, owner, id, msg, max_messages).await?;
            tx.commit().await?;
            Ok(appended)
        })
        .await
    }

    async fn delete_thread(&self, owner: &ThreadOwner, id: &str) -> StoreResult<bool> {
        timed(async {
            let c = self.pg().await?;
            let n = c
                .execute(
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
