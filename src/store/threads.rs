//! Conversations. There is deliberately no method that takes a thread id without a
//! [`ThreadOwner`]: every read and write is keyed by (tenant, owner, id) — plus the
//! session under strict binding — inside the query itself.

use async_trait::async_trait;

use super::StoreResult;
use crate::access::ThreadOwner;
use crate::model::{
    Citation, MessageRecord, Provenance, Role, ThreadRecord, ToolData, approx_tokens,
};

pub struct NewThread {
    pub id: String,
    pub title: String,
    pub now: i64,
}

pub struct NewMessage {
    pub id: String,
    pub role: Role,
    pub content: String,
    pub citations: Vec<Citation>,
    pub tool: Option<ToolData>,
    pub provenance: Provenance,
    pub now: i64,
    /// An answer stopped by its reader mid-stream.
    pub stopped: bool,
    /// A question asked again: the `seq` of its first asking.
    pub retries: Option<i64>,
}

impl NewMessage {
    /// The message as stored at `seq`, at `created_at`.
    pub fn stored(self, seq: i64, created_at: i64) -> MessageRecord {
        MessageRecord {
            id: self.id,
            seq,
            role: self.role,
            content: self.content,
            citations: self.citations,
            tool: self.tool,
            provenance: self.provenance,
            created_at,
            stopped: self.stopped,
            retries: self.retries,
        }
    }
}

#[derive(Debug)]
pub enum CreateThread {
    Created(ThreadRecord),
    /// The owner already has `max_threads` threads.
    LimitReached,
}

#[derive(Debug)]
pub enum Append {
    Appended(MessageRecord),
    /// No such thread *for this owner*.
    NotFound,
    /// The thread already holds `max_messages` messages.
    Full,
}

/// How much stored history a turn may load, in approximate tokens
/// ([`approx_tokens`]). The store reads newest-first and stops at the budget, so a
/// turn's cost does not grow with the thread.
#[derive(Debug, Clone, Copy)]
pub struct HistoryBudget(pub usize);

/// Fills a [`HistoryBudget`] from messages offered newest first: the one rule both
/// backends apply while they read (stop at the first message that does not fit).
pub struct HistoryFill {
    left: usize,
    taken: Vec<MessageRecord>,
}

impl HistoryFill {
    pub fn new(budget: HistoryBudget) -> Self {
        Self {
            left: budget.0,
            taken: Vec::new(),
        }
    }

    /// Takes `m` if it fits; `false` means the budget is spent and reading can stop.
    pub fn offer(&mut self, m: MessageRecord) -> bool {
        let cost = approx_tokens(&m.content);
        if cost > self.left {
            return false;
        }
        self.left -= cost;
        self.taken.push(m);
        true
    }

    /// The messages taken, oldest first.
    pub fn into_history(mut self) -> Vec<MessageRecord> {
        self.taken.reverse();
        self.taken
    }
}

/// The result of admitting a user turn.
#[derive(Debug)]
pub enum TurnStart {
    /// The question is stored; `history` is the newest stored messages before it (and
    /// after the caller's `after`) that fit the budget, oldest first.
    Started {
        history: Vec<MessageRecord>,
        message: MessageRecord,
    },
    NotFound,
    Full,
}

/// One page of a thread, newest page first; messages oldest first within the page.
#[derive(Debug)]
pub struct ThreadPage {
    pub thread: ThreadRecord,
    pub messages: Vec<MessageRecord>,
    /// The cursor for the next (older) page; `None` at the start of the thread.
    pub next_before: Option<i64>,
}

#[async_trait]
pub trait ThreadStore: Send + Sync {
    async fn create_thread(
        &self,
        owner: &ThreadOwner,
        thread: NewThread,
        max_threads: u32,
    ) -> StoreResult<CreateThread>;
    /// Newest activity first.
    async fn list_threads(&self, owner: &ThreadOwner) -> StoreResult<Vec<ThreadRecord>>;
    /// The messages with `seq < before` (all when `None`), newest `limit` of them;
    /// `None` if the thread is not the owner's.
    async fn thread_page(
        &self,
        owner: &ThreadOwner,
        id: &str,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Option<ThreadPage>>;
    /// One atomic step: the thread is the owner's and has room, the question is
    /// appended, and the history before it (within `budget`) is read — only the
    /// messages after sequence number `after`, which the caller already holds (0 reads
    /// from the start). The budget counts from the newest message, as always.
    ///
    /// The question's durability may be deferred to the next durable write (the turn's
    /// answer, [`append_message`](Self::append_message)): nothing acknowledges the
    /// question to the client before that. A backend must still survive a crash of the
    /// gateway process without losing it once this call has returned.
    async fn begin_turn(
        &self,
        owner: &ThreadOwner,
        id: &str,
        question: NewMessage,
        max_messages: u32,
        budget: HistoryBudget,
        after: i64,
    ) -> StoreResult<TurnStart>;
    async fn append_message(
        &self,
        owner: &ThreadOwner,
        id: &str,
        msg: NewMessage,
        max_messages: u32,
    ) -> StoreResult<Append>;
    async fn delete_thread(&self, owner: &ThreadOwner, id: &str) -> StoreResult<bool>;
    /// Gives an owned thread a new title; `None` if the thread is not the owner's.
    async fn rename_thread(
        &self,
        owner: &ThreadOwner,
        id: &str,
        title: &str,
    ) -> StoreResult<Option<ThreadRecord>>;
    /// The owner's threads whose title, or one of the owner's own questions in it,
    /// contains `text` (case-insensitively), newest activity first, at most `limit`.
    /// Answers are not searched: an answer may be withheld later (its sources no
    /// longer readable), and a match would still tell what it said.
    async fn search_threads(
        &self,
        owner: &ThreadOwner,
        text: &str,
        limit: u32,
    ) -> StoreResult<Vec<ThreadRecord>>;
}

/// `text` as a `LIKE` pattern matching it anywhere (`\` escapes the wildcards).
pub fn like_pattern(text: &str) -> String {
    let mut p = String::with_capacity(text.len() + 2);
    p.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}
