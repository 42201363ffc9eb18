//! Owner-bound conversations and server-side conversation state.
//!
//! Every method takes the caller's `&Principal`, and the store keys every query by
//! (tenant, owner, id) — plus the session under strict binding. A thread that is not
//! the caller's is indistinguishable from one that does not exist: the same 404, no
//! write, no model call, and a `thread_access_denied` audit event.
//!
//! The prompt for a turn is always built here from stored history; a client never
//! supplies history for a stored thread (SECURITY #26).

use std::sync::Arc;

use crate::audit::{Audit, AuditEvent, AuditKind};
use crate::auth::throttle::Throttle;
use crate::auth::{ClientInfo, Principal};
use crate::config::{ThreadBinding, ThreadsConfig};
use crate::error::ApiError;
use crate::llm::ChatMessage;
use crate::store::{
    Append, Citation, CreateThread, MessageRecord, NewMessage, Role, ThreadRecord, ThreadStore,
};

pub const DEFAULT_TITLE: &str = "New conversation";
const MAX_TITLE_CHARS: usize = 200;
/// Ids we mint are 22 characters; anything much longer cannot be ours.
const MAX_ID_LEN: usize = 64;

pub struct Threads {
    store: Arc<dyn ThreadStore>,
    cfg: ThreadsConfig,
    audit: Audit,
    system_prompt: String,
    rate: Throttle,
}

/// A user turn that has been stored, and the history before it.
pub struct Turn {
    pub history: Vec<MessageRecord>,
    pub user_message: MessageRecord,
}

impl Threads {
    pub fn new(
        store: Arc<dyn ThreadStore>,
        cfg: ThreadsConfig,
        system_prompt: String,
        audit: Audit,
    ) -> Self {
        let rate = Throttle::new(
            cfg.chat_requests_per_minute,
            std::time::Duration::from_secs(60),
        );
        Self {
            store,
            cfg,
            audit,
            system_prompt,
            rate,
        }
    }

    pub fn binding(&self) -> ThreadBinding {
        self.cfg.binding
    }

    pub fn system_prompt(&self) -> &str {
        &self.system_prompt
    }

    /// Counts one chat request against the caller's per-minute budget.
    pub fn admit(&self, p: &Principal) -> Result<(), ApiError> {
        let key = format!("{}\u{1f}{}", p.tenant(), p.subject());
        self.rate
            .check(&key)
            .map_err(|retry_after_secs| ApiError::TooManyRequests { retry_after_secs })?;
        self.rate.hit(&key);
        Ok(())
    }

    /// Checks a user message against the configured limits.
    pub fn validate_content(&self, content: &str) -> Result<(), ApiError> {
        if content.trim().is_empty() {
            return Err(ApiError::Unprocessable("The message is empty.".into()));
        }
        if content.chars().count() > self.cfg.max_message_chars {
            return Err(ApiError::MessageTooLong);
        }
        Ok(())
    }

    pub async fn create(
        &self,
        p: &Principal,
        title: Option<&str>,
    ) -> Result<ThreadRecord, ApiError> {
        let title = title
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .unwrap_or(DEFAULT_TITLE);
        if title.chars().count() > MAX_TITLE_CHARS {
            return Err(ApiError::Unprocessable(format!(
                "The title is longer than {MAX_TITLE_CHARS} characters."
            )));
        }
        match self
            .store
            .create_thread(p, title, self.cfg.max_threads_per_user)
            .await?
        {
            CreateThread::Created(t) => Ok(t),
            CreateThread::LimitReached => Err(ApiError::ThreadLimit),
        }
    }

    pub async fn list(&self, p: &Principal) -> Result<Vec<ThreadRecord>, ApiError> {
        Ok(self.store.list_threads(p, self.cfg.binding).await?)
    }

    pub async fn get(
        &self,
        p: &Principal,
        id: &str,
        client: &ClientInfo,
    ) -> Result<(ThreadRecord, Vec<MessageRecord>), ApiError> {
        if id.len() <= MAX_ID_LEN
            && let Some(found) = self
                .store
                .thread_with_messages(p, self.cfg.binding, id)
                .await?
        {
            return Ok(found);
        }
        Err(self.denied(p, id, client).await)
    }

    pub async fn delete(
        &self,
        p: &Principal,
        id: &str,
        client: &ClientInfo,
    ) -> Result<(), ApiError> {
        if id.len() <= MAX_ID_LEN && self.store.delete_thread(p, self.cfg.binding, id).await? {
            return Ok(());
        }
        Err(self.denied(p, id, client).await)
    }

    /// Stores the user's message and builds the prompt from the stored history.
    /// Nothing is written unless the thread is the caller's and has room.
    pub async fn begin_turn(
        &self,
        p: &Principal,
        id: &str,
        content: String,
        client: &ClientInfo,
    ) -> Result<Turn, ApiError> {
        self.validate_content(&content)?;
        if id.len() > MAX_ID_LEN {
            return Err(self.denied(p, id, client).await);
        }
        let Some((_, history)) = self
            .store
            .thread_with_messages(p, self.cfg.binding, id)
            .await?
        else {
            return Err(self.denied(p, id, client).await);
        };
        let msg = NewMessage {
            role: Role::User,
            content,
            citations: Vec::new(),
        };
        let user_message = match self
            .store
            .append_message(
                p,
                self.cfg.binding,
                id,
                msg,
                self.cfg.max_messages_per_thread,
            )
            .await?
        {
            Append::Appended(m) => m,
            Append::NotFound => return Err(self.denied(p, id, client).await),
            Append::Full => return Err(ApiError::ThreadFull),
        };
        Ok(Turn {
            history,
            user_message,
        })
    }

    /// Stores the assistant's answer to a turn.
    pub async fn finish_turn(
        &self,
        p: &Principal,
        id: &str,
        content: String,
        citations: Vec<Citation>,
        client: &ClientInfo,
    ) -> Result<MessageRecord, ApiError> {
        let msg = NewMessage {
            role: Role::Assistant,
            content,
            citations,
        };
        // The assistant's answer may take the thread one past the limit: the user's turn
        // was admitted, so its answer is kept.
        match self
            .store
            .append_message(
                p,
                self.cfg.binding,
                id,
                msg,
                self.cfg.max_messages_per_thread + 1,
            )
            .await?
        {
            Append::Appended(m) => Ok(m),
            // Deleted while the model was answering: nothing to attach the answer to.
            Append::NotFound => Err(self.denied(p, id, client).await),
            Append::Full => Err(ApiError::ThreadFull),
        }
    }

    /// System prompt, retrieved context (if any), then the newest stored turns that fit
    /// the budget, then the new user message. Tokens are approximated as 4 characters.
    pub fn prompt(
        &self,
        history: &[MessageRecord],
        new_user_content: &str,
        context: Option<String>,
    ) -> Vec<ChatMessage> {
        let cost = |s: &str| s.chars().count() / 4 + 4;
        let mut budget = self
            .cfg
            .history_budget_tokens
            .saturating_sub(cost(&self.system_prompt) + cost(new_user_content));
        let mut kept = Vec::new();
        for m in history.iter().rev() {
            if m.role == Role::System {
                continue;
            }
            let c = cost(&m.content);
            if c > budget {
                break;
            }
            budget -= c;
            kept.push(ChatMessage::new(m.role, m.content.clone()));
        }
        kept.reverse();
        let mut prompt = Vec::with_capacity(kept.len() + 3);
        prompt.push(ChatMessage::new(Role::System, self.system_prompt.clone()));
        if let Some(c) = context {
            prompt.push(ChatMessage::new(Role::System, c));
        }
        prompt.extend(kept);
        prompt.push(ChatMessage::new(Role::User, new_user_content));
        prompt
    }

    async fn denied(&self, p: &Principal, id: &str, client: &ClientInfo) -> ApiError {
        // The requested id is attacker-chosen: record its length-bounded form only.
        let shown: String = id.chars().take(MAX_ID_LEN).collect();
        let ev = AuditEvent::new(AuditKind::ThreadAccessDenied)
            .tenant(p.tenant())
            .subject(p.subject())
            .session(p.session_id())
            .ip(client.ip)
            .reason("not_owner_or_missing")
            .resource(shown);
        self.audit.record(ev).await;
        ApiError::NotFound
    }
}
