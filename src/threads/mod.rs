//! Owner-bound conversations and server-side conversation state.
//!
//! Every method takes the caller's `&Principal`, and the store keys every query by its
//! [`ThreadOwner`](crate::access::ThreadOwner) — (tenant, owner, id), plus the session
//! under strict binding. A thread that is not the caller's is indistinguishable from
//! one that does not exist: the same `NotFound`, no write, and a `thread_access_denied`
//! audit event. (The chat service runs no retrieval and no model call after it.)

use std::sync::Arc;

use crate::access::{ClientInfo, Principal, ThreadOwner};
use crate::audit::{Audit, AuditEvent, AuditKind};
use crate::config::{ThreadBinding, ThreadsConfig};
use crate::secret::new_id;
use crate::store::{
    Append, Citation, CreateThread, HistoryBudget, MessageRecord, NewMessage, NewThread, Role,
    StoreError, ThreadPage, ThreadRecord, ThreadStore, TurnStart,
};
use crate::timeutil::now_ms;

pub const DEFAULT_TITLE: &str = "New conversation";
const MAX_TITLE_CHARS: usize = 200;
/// Ids we mint are 22 characters; anything much longer cannot be ours.
const MAX_ID_LEN: usize = 64;
/// Messages per page of `GET /v1/threads/{id}` when the client does not say.
pub const DEFAULT_PAGE: u32 = 50;
pub const MAX_PAGE: u32 = 200;

#[derive(Debug, thiserror::Error)]
pub enum ThreadError {
    /// Another's, deleted or unknown: one answer for all three.
    #[error("not found")]
    NotFound,
    #[error("thread limit reached")]
    LimitReached,
    #[error("thread full")]
    Full,
    #[error("message too long")]
    MessageTooLong,
    #[error("invalid: {0}")]
    Invalid(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Threads {
    store: Arc<dyn ThreadStore>,
    cfg: ThreadsConfig,
    audit: Audit,
}

/// A user turn that has been stored, and the history before it that fits the budget.
pub struct Turn {
    pub history: Vec<MessageRecord>,
    pub question: MessageRecord,
}

impl Threads {
    pub fn new(store: Arc<dyn ThreadStore>, cfg: ThreadsConfig, audit: Audit) -> Self {
        Self { store, cfg, audit }
    }

    fn owner(&self, p: &Principal) -> ThreadOwner {
        p.thread_owner(self.cfg.binding == ThreadBinding::Session)
    }

    /// Checks a user message against the configured limits.
    pub fn validate_content(&self, content: &str) -> Result<(), ThreadError> {
        if content.trim().is_empty() {
            return Err(ThreadError::Invalid("The message is empty."));
        }
        if content.chars().count() > self.cfg.max_message_chars {
            return Err(ThreadError::MessageTooLong);
        }
        Ok(())
    }

    pub async fn create(
        &self,
        p: &Principal,
        title: Option<&str>,
    ) -> Result<ThreadRecord, ThreadError> {
        let title = title
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .unwrap_or(DEFAULT_TITLE);
        if title.chars().count() > MAX_TITLE_CHARS {
            return Err(ThreadError::Invalid(
                "The title is longer than 200 characters.",
            ));
        }
        let new = NewThread {
            id: new_id(),
            title: title.to_owned(),
            now: now_ms(),
        };
        match self
            .store
            .create_thread(&self.owner(p), new, self.cfg.max_threads_per_user)
            .await?
        {
            CreateThread::Created(t) => Ok(t),
            CreateThread::LimitReached => Err(ThreadError::LimitReached),
        }
    }

    pub async fn list(&self, p: &Principal) -> Result<Vec<ThreadRecord>, ThreadError> {
        Ok(self.store.list_threads(&self.owner(p)).await?)
    }

    /// One page of a thread: the newest `limit` messages before the cursor `before`.
    pub async fn page(
        &self,
        p: &Principal,
        id: &str,
        before: Option<&str>,
        limit: Option<u32>,
        client: &ClientInfo,
    ) -> Result<ThreadPage, ThreadError> {
        let before = match before {
            None => None,
            Some(c) => Some(
                c.parse::<i64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or(ThreadError::Invalid("The cursor is not valid."))?,
            ),
        };
        let limit = limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
        if id.len() <= MAX_ID_LEN
            && let Some(page) = self
                .store
                .thread_page(&self.owner(p), id, before, limit)
                .await?
        {
            return Ok(page);
        }
        Err(self.denied(p, id, client).await)
    }

    pub async fn delete(
        &self,
        p: &Principal,
        id: &str,
        client: &ClientInfo,
    ) -> Result<(), ThreadError> {
        if id.len() <= MAX_ID_LEN && self.store.delete_thread(&self.owner(p), id).await? {
            return Ok(());
        }
        Err(self.denied(p, id, client).await)
    }

    /// Stores the user's question and returns the stored history before it that fits
    /// `budget`, in one atomic store call. Nothing is written unless the thread is the
    /// caller's and has room.
    pub async fn begin_turn(
        &self,
        p: &Principal,
        id: &str,
        content: String,
        budget: HistoryBudget,
        client: &ClientInfo,
    ) -> Result<Turn, ThreadError> {
        self.validate_content(&content)?;
        if id.len() > MAX_ID_LEN {
            return Err(self.denied(p, id, client).await);
        }
        let question = NewMessage {
            id: new_id(),
            role: Role::User,
            content,
            citations: Vec::new(),
            now: now_ms(),
        };
        match self
            .store
            .begin_turn(
                &self.owner(p),
                id,
                question,
                self.cfg.max_messages_per_thread,
                budget,
            )
            .await?
        {
            TurnStart::Started { history, message } => Ok(Turn {
                history,
                question: message,
            }),
            TurnStart::NotFound => Err(self.denied(p, id, client).await),
            TurnStart::Full => Err(ThreadError::Full),
        }
    }

    /// Stores the assistant's answer to a turn.
    pub async fn finish_turn(
        &self,
        p: &Principal,
        id: &str,
        content: String,
        citations: Vec<Citation>,
        client: &ClientInfo,
    ) -> Result<MessageRecord, ThreadError> {
        let msg = NewMessage {
            id: new_id(),
            role: Role::Assistant,
            content,
            citations,
            now: now_ms(),
        };
        // The answer may take the thread one past the limit: the user's turn was
        // admitted, so its answer is kept.
        match self
            .store
            .append_message(
                &self.owner(p),
                id,
                msg,
                self.cfg.max_messages_per_thread + 1,
            )
            .await?
        {
            Append::Appended(m) => Ok(m),
            // Deleted while the model was answering: nothing to attach the answer to.
            Append::NotFound => Err(self.denied(p, id, client).await),
            Append::Full => Err(ThreadError::Full),
        }
    }

    async fn denied(&self, p: &Principal, id: &str, client: &ClientInfo) -> ThreadError {
        // The requested id is attacker-chosen: record its length-bounded form only.
        let shown: String = id.chars().take(MAX_ID_LEN).collect();
        let ev = AuditEvent::new(AuditKind::ThreadAccessDenied)
            .tenant(p.tenant())
            .subject(p.subject())
            .session(p.session_id())
            .client(client)
            .reason("not_owner_or_missing")
            .resource(shown);
        self.audit.record(ev).await;
        ThreadError::NotFound
    }
}
