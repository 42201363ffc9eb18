//! Owner-bound conversations and server-side conversation state.
//!
//! Every method takes the caller's `&Principal`, and the store keys every query by its
//! [`ThreadOwner`](crate::access::ThreadOwner) — (tenant, owner, id), plus the session
//! under strict binding. A thread that is not the caller's is indistinguishable from
//! one that does not exist: the same `NotFound`, no write, and a `thread_access_denied`
//! audit event. (The chat service runs no retrieval and no model call after it.)

mod history;

use std::collections::HashSet;
use std::sync::Arc;

use history::{Fill, HistoryCache};

use crate::access::{Principal, ThreadOwner};
use crate::audit::{Audit, AuditEvent, AuditKind};
use crate::config::{ThreadBinding, ThreadsConfig};
use crate::model::ClientInfo;
use crate::model::{
    Citation, MessageRecord, Provenance, Role, ToolCall, ToolData, without_retried,
};
use crate::model::{StoreError, ThreadRecord};
use crate::secret::new_id;
use crate::store::{
    Append, CreateThread, HistoryBudget, NewMessage, NewThread, ThreadPage, ThreadStore, TurnStart,
};

pub const DEFAULT_TITLE: &str = "New conversation";
const MAX_TITLE_CHARS: usize = 200;
/// The longest text a thread search takes.
const MAX_SEARCH_CHARS: usize = 200;
/// Threads a search returns at most.
const MAX_SEARCH_RESULTS: u32 = 100;
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
    /// Regenerate on a thread that has no question yet.
    #[error("no question to ask again")]
    NoQuestion,
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Threads {
    store: Arc<dyn ThreadStore>,
    cfg: ThreadsConfig,
    audit: Audit,
    /// The recent history of the threads this process serves (see `history`).
    history: HistoryCache,
    clock: Arc<dyn crate::timeutil::Clock>,
}

/// A turn whose new messages are stored: the stored history that fits the budget,
/// ending with the turn's own new messages.
pub struct Turn {
    pub history: Vec<MessageRecord>,
}

/// The model's answer to a turn, as it is stored.
pub struct StoredAnswer {
    pub content: String,
    pub citations: Vec<Citation>,
    pub tool_calls: Vec<ToolCall>,
    /// The documents whose text was in the turn's prompt.
    pub provenance: Provenance,
    /// Stopped by its reader mid-stream: `content` is what came before.
    pub stopped: bool,
}

/// A new message of a turn in a stored thread.
pub enum TurnInput {
    Question(String),
    /// The thread's last question, asked again (regenerate): the answers it had, and
    /// every earlier asking of it, leave the conversation.
    Again,
    /// The client's result for one of the calls the model asked for.
    ToolResult {
        call_id: String,
        content: String,
    },
}

impl TurnInput {
    /// The message's text.
    pub fn content(&self) -> &str {
        match self {
            TurnInput::Question(c) | TurnInput::ToolResult { content: c, .. } => c,
            TurnInput::Again => "",
        }
    }

    fn call_id(&self) -> Option<&str> {
        match self {
            TurnInput::ToolResult { call_id, .. } => Some(call_id),
            TurnInput::Question(_) | TurnInput::Again => None,
        }
    }

    fn to_new(&self, now: i64) -> NewMessage {
        let (role, tool) = match self {
            TurnInput::Question(_) | TurnInput::Again => (Role::User, None),
            TurnInput::ToolResult { call_id, .. } => (
                Role::Tool,
                Some(ToolData::Result {
                    call_id: call_id.clone(),
                }),
            ),
        };
        NewMessage {
            id: new_id(),
            role,
            content: self.content().to_owned(),
            citations: Vec::new(),
            tool,
            provenance: Provenance::default(),
            now,
            stopped: false,
            retries: None,
        }
    }
}

/// How many of the newest messages are read to find the pending tool calls.
const PENDING_WINDOW: u32 = 64;
/// Messages per store read when a turn's history reaches back past what is held here.
const OLDER_PAGE: u32 = 64;

/// The ids of the calls of the last assistant message that have no result yet.
fn pending_calls(messages: &[MessageRecord]) -> HashSet<String> {
    let mut pending = HashSet::new();
    for m in messages {
        match (&m.role, &m.tool) {
            (Role::Assistant, Some(ToolData::Calls(calls))) => {
                pending = calls.iter().map(|c| c.id.clone()).collect();
            }
            (Role::Assistant, _) | (Role::User, _) => pending.clear(),
            (Role::Tool, Some(ToolData::Result { call_id })) => {
                pending.remove(call_id);
            }
            _ => {}
        }
    }
    pending
}

impl Threads {
    pub fn new(store: Arc<dyn ThreadStore>, cfg: ThreadsConfig, audit: Audit) -> Self {
        Self {
            store,
            cfg,
            audit,
            history: HistoryCache::new(),
            clock: Arc::new(crate::timeutil::SystemClock),
        }
    }

    /// The same service stamping messages and threads with `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn crate::timeutil::Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn owner(&self, p: &Principal) -> ThreadOwner {
        p.thread_owner(self.cfg.binding == ThreadBinding::Session)
    }

    /// Checks a user message against the configured limits.
    pub fn validate_content(&self, content: &str) -> Result<(), ThreadError> {
        if content.trim().is_empty() {
            return Err(ThreadError::Invalid("The message is empty."));
        }
        self.validate_length(content)
    }

    /// Checks only the length: tool results and tool-calling assistant messages may be
    /// empty.
    pub fn validate_length(&self, content: &str) -> Result<(), ThreadError> {
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
            now: self.clock.now_ms(),
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
            && let Some(mut page) = self
                .store
                .thread_page(&self.owner(p), id, before, limit)
                .await?
        {
            // A question asked again replaces its earlier askings and their answers.
            without_retried(&mut page.messages);
            return Ok(page);
        }
        Err(self.denied(p, id, client).await)
    }

    /// A new title for one of the caller's threads.
    pub async fn rename(
        &self,
        p: &Principal,
        id: &str,
        title: &str,
        client: &ClientInfo,
    ) -> Result<ThreadRecord, ThreadError> {
        let title = title.trim();
        if title.is_empty() || title.chars().count() > MAX_TITLE_CHARS {
            return Err(ThreadError::Invalid(
                "The title must be 1 to 200 characters.",
            ));
        }
        if id.len() <= MAX_ID_LEN
            && let Some(t) = self.store.rename_thread(&self.owner(p), id, title).await?
        {
            return Ok(t);
        }
        Err(self.denied(p, id, client).await)
    }

    /// The caller's threads whose title or own questions contain `text`.
    pub async fn search(
        &self,
        p: &Principal,
        text: &str,
    ) -> Result<Vec<ThreadRecord>, ThreadError> {
        let text = text.trim();
        if text.is_empty() || text.chars().count() > MAX_SEARCH_CHARS {
            return Err(ThreadError::Invalid(
                "The search text must be 1 to 200 characters.",
            ));
        }
        Ok(self
            .store
            .search_threads(&self.owner(p), text, MAX_SEARCH_RESULTS)
            .await?)
    }

    pub async fn delete(
        &self,
        p: &Principal,
        id: &str,
        client: &ClientInfo,
    ) -> Result<(), ThreadError> {
        if id.len() <= MAX_ID_LEN && self.store.delete_thread(&self.owner(p), id).await? {
            self.history.forget(id);
            return Ok(());
        }
        Err(self.denied(p, id, client).await)
    }

    /// Stores a turn's new messages (tool results, then at most one question) and
    /// returns them with the stored history before them that fits `budget`. Nothing is
    /// written unless the thread is the caller's and has room, and every tool result
    /// answers a call of the thread's last assistant message that has no result yet.
    pub async fn begin_turn(
        &self,
        p: &Principal,
        id: &str,
        inputs: Vec<TurnInput>,
        budget: HistoryBudget,
        client: &ClientInfo,
    ) -> Result<Turn, ThreadError> {
        for input in &inputs {
            match input {
                TurnInput::Question(q) => self.validate_content(q)?,
                TurnInput::ToolResult { content, .. } => self.validate_length(content)?,
                TurnInput::Again if inputs.len() > 1 => {
                    return Err(ThreadError::Invalid("A question asked again comes alone."));
                }
                TurnInput::Again => {}
            }
        }
        if id.len() > MAX_ID_LEN {
            return Err(self.denied(p, id, client).await);
        }
        let owner = self.owner(p);
        let results: Vec<&str> = inputs.iter().filter_map(TurnInput::call_id).collect();
        if !results.is_empty() {
            let Some(page) = self
                .store
                .thread_page(&owner, id, None, PENDING_WINDOW)
                .await?
            else {
                return Err(self.denied(p, id, client).await);
            };
            let mut pending = pending_calls(&page.messages);
            for call_id in results {
                if !pending.remove(call_id) {
                    return Err(ThreadError::Invalid(
                        "A tool message does not answer a pending tool call of this thread.",
                    ));
                }
            }
        }
        let Some((last, earlier)) = inputs.split_last() else {
            return Err(ThreadError::Invalid("A user or tool message is required."));
        };
        let mut added = Vec::with_capacity(inputs.len());
        // Tool results before the last new message: appended one by one, each with the
        // same ownership and room check.
        for input in earlier {
            match self
                .store
                .append_message(
                    &owner,
                    id,
                    input.to_new(self.clock.now_ms()),
                    self.cfg.max_messages_per_thread,
                )
                .await?
            {
                Append::Appended(m) => added.push(m),
                Append::NotFound => return Err(self.denied(p, id, client).await),
                Append::Full => return Err(ThreadError::Full),
            }
        }
        let new = match last {
            TurnInput::Again => self.asked_again(p, &owner, id, client).await?,
            other => other.to_new(self.clock.now_ms()),
        };
        // The store reads only what is newer than what this process holds.
        let held = self.history.get(&owner, id);
        let after = held.as_ref().map_or(0, |e| e.last_seq());
        match self
            .store
            .begin_turn(
                &owner,
                id,
                new,
                self.cfg.max_messages_per_thread,
                Fill::store_budget(budget),
                after,
            )
            .await?
        {
            TurnStart::Started { history, message } => {
                // `history` already ends with the messages appended above.
                let (store, owner_ref) = (&self.store, &owner);
                let older = move |before: i64| async move {
                    Ok::<_, StoreError>(
                        store
                            .thread_page(owner_ref, id, Some(before), OLDER_PAGE)
                            .await?
                            .map(|page| page.messages),
                    )
                };
                let assembled = self
                    .history
                    .assemble(&owner, id, held, after, history, &message, budget, older)
                    .await?;
                let Some(mut history) = assembled else {
                    return Err(self.denied(p, id, client).await);
                };
                history.push(message);
                without_retried(&mut history);
                Ok(Turn { history })
            }
            TurnStart::NotFound => Err(self.denied(p, id, client).await),
            TurnStart::Full => Err(ThreadError::Full),
        }
    }

    /// Stores the assistant's answer to a turn (with the tool calls it asks for, if any)
    /// and the documents it drew on.
    pub async fn finish_turn(
        &self,
        p: &Principal,
        id: &str,
        answer: StoredAnswer,
        client: &ClientInfo,
    ) -> Result<MessageRecord, ThreadError> {
        let StoredAnswer {
            content,
            citations,
            tool_calls,
            provenance,
            stopped,
        } = answer;
        let msg = NewMessage {
            id: new_id(),
            role: Role::Assistant,
            content,
            citations,
            tool: (!tool_calls.is_empty()).then_some(ToolData::Calls(tool_calls)),
            provenance,
            now: self.clock.now_ms(),
            stopped,
            retries: None,
        };
        // The answer may take the thread one past the limit: the user's turn was
        // admitted, so its answer is kept.
        let owner = self.owner(p);
        match self
            .store
            .append_message(&owner, id, msg, self.cfg.max_messages_per_thread + 1)
            .await?
        {
            Append::Appended(m) => {
                self.history.push(&owner, id, &m);
                Ok(m)
            }
            // Deleted while the model was answering: nothing to attach the answer to.
            Append::NotFound => Err(self.denied(p, id, client).await),
            Append::Full => Err(ThreadError::Full),
        }
    }

    /// The thread's last question as a new message that retries its first asking.
    async fn asked_again(
        &self,
        p: &Principal,
        owner: &ThreadOwner,
        id: &str,
        client: &ClientInfo,
    ) -> Result<NewMessage, ThreadError> {
        let Some(page) = self
            .store
            .thread_page(owner, id, None, PENDING_WINDOW)
            .await?
        else {
            return Err(self.denied(p, id, client).await);
        };
        let Some(asked) = page.messages.iter().rev().find(|m| m.role == Role::User) else {
            return Err(ThreadError::NoQuestion);
        };
        Ok(NewMessage {
            retries: Some(asked.retries.unwrap_or(asked.seq)),
            ..TurnInput::Question(asked.content.clone()).to_new(self.clock.now_ms())
        })
    }

    async fn denied(&self, p: &Principal, id: &str, client: &ClientInfo) -> ThreadError {
        // The requested id is attacker-chosen: record its length-bounded form only.
        let shown: String = id.chars().take(MAX_ID_LEN).collect();
        let ev = AuditEvent::new(AuditKind::ThreadAccessDenied)
            .by(p)
            .client(client)
            .reason("not_owner_or_missing")
            .resource(shown);
        self.audit.record(ev).await;
        ThreadError::NotFound
    }
}
