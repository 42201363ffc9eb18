//! Threads and messages in SQLite. Every statement carries the owner key next to the
//! id ([`OWNED`]); there is no query by id alone.

use async_trait::async_trait;
use rusqlite::types::{Type, ValueRef};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::SqliteStore;
use crate::access::ThreadOwner;
use crate::model::ThreadRecord;
use crate::model::{MessageRecord, Role};
use crate::store::threads::HistoryFill;
use crate::store::{
    Append, CreateThread, HistoryBudget, NewMessage, NewThread, StoreResult, ThreadPage,
    ThreadStore, TurnStart,
};

/// The WHERE clause every thread lookup uses; `?1` is the thread id, `?4` the session
/// under strict binding (NULL otherwise).
const OWNED: &str = "id = ?1 AND tenant = ?2 AND owner = ?3 AND (?4 IS NULL OR session_id = ?4)";

const THREAD_COLS: &str = "id, title, created_at, updated_at, message_count";
const MESSAGE_COLS: &str =
    "id, seq, role, content, citations, created_at, tool, sources, stopped, retries";

fn thread_row(r: &Row<'_>) -> rusqlite::Result<ThreadRecord> {
    Ok(ThreadRecord {
        id: r.get(0)?,
        title: r.get(1)?,
        created_at: r.get(2)?,
        updated_at: r.get(3)?,
        message_count: r.get(4)?,
    })
}

/// One stored message. Runs for every message of every turn's history, so it borrows
/// what it does not keep: the role and the JSON columns are read in place, and the
/// common empty citation list is not parsed at all.
fn message_row(r: &Row<'_>) -> rusqlite::Result<MessageRecord> {
    let role = text(r, 2)?;
    let citations = match text(r, 4)? {
        "[]" => Vec::new(),
        json => serde_json::from_str(json).map_err(|e| bad_column(4, e))?,
    };
    let tool = match r.get_ref(6)? {
        ValueRef::Null => None,
        _ => Some(serde_json::from_str(text(r, 6)?).map_err(|e| bad_column(6, e))?),
    };
    let provenance = match text(r, 7)? {
        "[]" => Default::default(),
        json => serde_json::from_str(json).map_err(|e| bad_column(7, e))?,
    };
    Ok(MessageRecord {
        id: r.get(0)?,
        seq: r.get(1)?,
        role: Role::parse(role).ok_or_else(|| {
            rusqlite::Error::InvalidColumnType(2, format!("role {role}"), Type::Text)
        })?,
        content: r.get(3)?,
        citations,
        created_at: r.get(5)?,
        tool,
        provenance,
        stopped: r.get(8)?,
        retries: r.get(9)?,
    })
}

/// A text column, borrowed from the row.
fn text<'r>(r: &'r Row<'_>, i: usize) -> rusqlite::Result<&'r str> {
    r.get_ref(i)?.as_str().map_err(|e| bad_column(i, e))
}

fn bad_column(i: usize, e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(i, Type::Text, Box::new(e))
}

fn owned_thread(
    c: &Connection,
    o: &ThreadOwner,
    id: &str,
) -> rusqlite::Result<Option<ThreadRecord>> {
    c.prepare_cached(&format!("SELECT {THREAD_COLS} FROM threads WHERE {OWNED}"))?
        .query_row(
            params![id, o.tenant(), o.user(), o.required_session()],
            thread_row,
        )
        .optional()
}

/// Appends to an owned thread with room. Runs inside a write job. (A single `UPDATE …
/// RETURNING` that checks owner and room while it counts the message was tried in place
/// of this read, insert and update, and measured no faster.)
fn append(
    c: &Connection,
    o: &ThreadOwner,
    id: &str,
    msg: NewMessage,
    max_messages: u32,
) -> StoreResult<Append> {
    let Some(thread) = owned_thread(c, o, id)? else {
        return Ok(Append::NotFound);
    };
    if thread.message_count >= max_messages {
        return Ok(Append::Full);
    }
    // Timestamps never go backwards within a thread, whatever the callers' clocks say.
    let now = msg.now.max(thread.updated_at);
    let seq = i64::from(thread.message_count) + 1;
    let rec = msg.stored(seq, now);
    let citations = serde_json::to_string(&rec.citations)?;
    let tool = rec.tool.as_ref().map(serde_json::to_string).transpose()?;
    let sources = serde_json::to_string(&rec.provenance)?;
    c.prepare_cached(
        "INSERT INTO messages (id, thread_id, seq, role, content, citations, created_at, tool, sources, stopped, retries)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        rec.id,
        id,
        rec.seq,
        rec.role.as_str(),
        rec.content,
        citations,
        now,
        tool,
        sources,
        rec.stopped,
        rec.retries
    ])?;
    c.prepare_cached(
        "UPDATE threads SET message_count = message_count + 1, updated_at = ?2 WHERE id = ?1",
    )?
    .execute(params![id, now])?;
    Ok(Append::Appended(rec))
}

/// The newest messages before `before_seq` (and after `after`) whose estimated tokens
/// fit `budget`, oldest first. Reads newest-first along the table's (thread_id, seq) key and stops at the
/// budget: the cost is bounded by the budget, not by the thread's length.
fn recent_history(
    c: &Connection,
    thread_id: &str,
    before_seq: i64,
    after: i64,
    budget: HistoryBudget,
) -> StoreResult<Vec<MessageRecord>> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {MESSAGE_COLS} FROM messages WHERE thread_id = ?1 AND seq < ?2 AND seq > ?3
         ORDER BY seq DESC"
    ))?;
    let mut rows = stmt.query(params![thread_id, before_seq, after])?;
    let mut fill = HistoryFill::new(budget);
    while let Some(row) = rows.next()? {
        if !fill.offer(message_row(row)?) {
            break;
        }
    }
    Ok(fill.into_history())
}

#[async_trait]
impl ThreadStore for SqliteStore {
    async fn create_thread(
        &self,
        owner: &ThreadOwner,
        t: NewThread,
        max_threads: u32,
    ) -> StoreResult<CreateThread> {
        let o = owner.clone();
        self.write(move |c| {
            let count: u32 = c
                .prepare_cached("SELECT COUNT(*) FROM threads WHERE tenant = ?1 AND owner = ?2")?
                .query_row(params![o.tenant(), o.user()], |r| r.get(0))?;
            if count >= max_threads {
                return Ok(CreateThread::LimitReached);
            }
            // The creating session is always recorded, whatever the binding, so that
            // switching to strict binding later applies to existing threads too.
            c.execute(
                "INSERT INTO threads (id, tenant, owner, session_id, title, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
                params![t.id, o.tenant(), o.user(), o.session(), t.title, t.now],
            )?;
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
        let o = owner.clone();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {THREAD_COLS} FROM threads
                 WHERE tenant = ?1 AND owner = ?2 AND (?3 IS NULL OR session_id = ?3)
                 ORDER BY updated_at DESC"
            ))?;
            let rows = stmt
                .query_map(
                    params![o.tenant(), o.user(), o.required_session()],
                    thread_row,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
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
        let o = owner.clone();
        let id = id.to_owned();
        self.read(move |c| {
            // One read transaction: the ownership check and the page see the same state.
            let Some(thread) = owned_thread(c, &o, &id)? else {
                return Ok(None);
            };
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {MESSAGE_COLS} FROM messages
                 WHERE thread_id = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3"
            ))?;
            let mut messages = stmt
                .query_map(
                    params![id, before.unwrap_or(i64::MAX), i64::from(limit) + 1],
                    message_row,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
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
        let o = owner.clone();
        let id = id.to_owned();
        // Deferred durability: the turn is acknowledged only with its stored answer,
        // whose durable commit also puts this one on disk (one fsync per turn).
        self.write_deferred(move |c| match append(c, &o, &id, question, max_messages)? {
            Append::Appended(message) => {
                let history = recent_history(c, &id, message.seq, after, budget)?;
                Ok(TurnStart::Started { history, message })
            }
            Append::NotFound => Ok(TurnStart::NotFound),
            Append::Full => Ok(TurnStart::Full),
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
        let o = owner.clone();
        let id = id.to_owned();
        self.write(move |c| append(c, &o, &id, msg, max_messages))
            .await
    }

    async fn rename_thread(
        &self,
        owner: &ThreadOwner,
        id: &str,
        title: &str,
    ) -> StoreResult<Option<ThreadRecord>> {
        let o = owner.clone();
        let id = id.to_owned();
        let title = title.to_owned();
        self.write(move |c| {
            let n = c.execute(
                &format!("UPDATE threads SET title = ?5 WHERE {OWNED}"),
                params![id, o.tenant(), o.user(), o.required_session(), title],
            )?;
            if n != 1 {
                return Ok(None);
            }
            Ok(
                c.prepare_cached(&format!("SELECT {THREAD_COLS} FROM threads WHERE id = ?1"))?
                    .query_row([&id], thread_row)
                    .optional()?,
            )
        })
        .await
    }

    async fn search_threads(
        &self,
        owner: &ThreadOwner,
        text: &str,
        limit: u32,
    ) -> StoreResult<Vec<ThreadRecord>> {
        let o = owner.clone();
        let pattern = crate::store::threads::like_pattern(text);
        self.read_blocking(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {THREAD_COLS} FROM threads t
                 WHERE tenant = ?1 AND owner = ?2 AND (?3 IS NULL OR session_id = ?3)
                   AND (title LIKE ?4 ESCAPE '\\'
                        OR EXISTS (SELECT 1 FROM messages m WHERE m.thread_id = t.id
                                   AND m.role = 'user' AND m.content LIKE ?4 ESCAPE '\\'))
                 ORDER BY updated_at DESC LIMIT ?5"
            ))?;
            let rows = stmt
                .query_map(
                    params![o.tenant(), o.user(), o.required_session(), pattern, limit],
                    thread_row,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn delete_thread(&self, owner: &ThreadOwner, id: &str) -> StoreResult<bool> {
        let o = owner.clone();
        let id = id.to_owned();
        self.write(move |c| {
            let n = c.execute(
                &format!("DELETE FROM threads WHERE {OWNED}"),
                params![id, o.tenant(), o.user(), o.required_session()],
            )?;
            Ok(n == 1)
        })
        .await
    }
}
