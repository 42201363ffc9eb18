//! One chat turn, used by every chat route (the thread route and the
//! OpenAI-compatible one only shape the wire format):
//!
//! admit (per-user rate) → validate the whole request → check the thread and append the
//! question (one atomic store call) → retrieve within the caller's scope → build the
//! prompt on the server → complete or stream → store the answer.
//!
//! The order is the security argument: a foreign thread is refused before any
//! retrieval or model call; nothing is retrieved or audited for a request that is
//! invalid as a whole; for a stored thread the prompt's history is the stored one,
//! never the client's.

mod prompt;

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use crate::access::{ClientInfo, Principal};
use crate::llm::{ChatMessage, Llm, LlmError};
use crate::rag::{Rag, RagError, citations};
use crate::store::threads::approx_tokens;
use crate::store::{
    Admission, Citation, HistoryBudget, Limit, LimitKind, LimitStore, MessageRecord, Role,
    ThreadRecord,
};
use crate::threads::{ThreadError, Threads};

pub use prompt::context_block;

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("too many chat requests")]
    RateLimited { retry_after_secs: u64 },
    #[error("invalid request: {0}")]
    Invalid(&'static str),
    #[error(transparent)]
    Thread(#[from] ThreadError),
    #[error(transparent)]
    Rag(#[from] RagError),
    #[error(transparent)]
    Llm(#[from] LlmError),
}

/// What the caller asks.
pub enum Conversation {
    /// A turn in one of the caller's threads: only the question is taken from the
    /// client; the history is the stored one.
    Thread { id: String, question: String },
    /// A stateless completion: the client's own conversation (nothing is stored). The
    /// last user message is the retrieval query.
    Stateless { messages: Vec<ChatMessage> },
}

/// A finished answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub content: String,
    pub citations: Vec<Citation>,
    /// The stored assistant message, for a thread turn.
    pub stored: Option<MessageRecord>,
}

/// What a streamed turn yields: deltas, then exactly one `Done` or `Failed`.
pub enum ChatEvent {
    Delta(String),
    Done(Answer),
    Failed(ChatError),
}

pub type ChatStream = BoxStream<'static, ChatEvent>;

/// A stored message as the caller may see it now.
pub struct ShownMessage {
    pub record: MessageRecord,
    /// It cites a document the caller can no longer read: show no text.
    pub redacted: bool,
}

pub struct ShownPage {
    pub thread: ThreadRecord,
    pub messages: Vec<ShownMessage>,
    pub next_before: Option<i64>,
}

/// Whether every document `m` cites is in `readable`.
fn cites_only(m: &MessageRecord, readable: &HashSet<String>) -> bool {
    m.citations
        .iter()
        .all(|c| readable.contains(&c.document_id))
}

/// A turn that has passed every check and has its prompt.
struct Prepared {
    thread: Option<String>,
    prompt: Vec<ChatMessage>,
    passages: Vec<crate::store::ChunkHit>,
}

pub struct ChatService {
    threads: Arc<Threads>,
    rag: Arc<Rag>,
    llm: Arc<Llm>,
    system_prompt: String,
    history_budget_tokens: usize,
    /// Chat requests per user, shared by every process on the store.
    rate: Limit,
    limits: Arc<dyn LimitStore>,
}

impl ChatService {
    pub fn new(
        threads: Arc<Threads>,
        rag: Arc<Rag>,
        llm: Arc<Llm>,
        system_prompt: String,
        history_budget_tokens: usize,
        requests_per_minute: u32,
        limits: Arc<dyn LimitStore>,
    ) -> Self {
        Self {
            threads,
            rag,
            llm,
            system_prompt,
            history_budget_tokens,
            // A burst of one minute's allowance, refilled evenly (GCRA).
            rate: Limit {
                name: "chat",
                kind: LimitKind::Rate {
                    burst: requests_per_minute.max(1),
                    per_minute: requests_per_minute.max(1),
                },
            },
            limits,
        }
    }

    pub fn model_name(&self) -> &str {
        self.llm.model_name()
    }

    /// Counts one chat request against the caller's per-minute allowance: check and
    /// count are one atomic step (GCRA), so concurrent requests cannot overshoot — on
    /// one node or across a cluster. A store error refuses (fail closed).
    async fn admit(&self, p: &Principal) -> Result<(), ChatError> {
        let key = format!("{}\u{1f}{}", p.tenant(), p.subject());
        match self.limits.take(&self.rate, &key).await {
            Ok(Admission::Admitted) => Ok(()),
            Ok(Admission::RetryAfter(retry_after_secs)) => {
                Err(ChatError::RateLimited { retry_after_secs })
            }
            Err(e) => Err(ChatError::Thread(e.into())),
        }
    }

    /// Everything before the model: validation, admission, thread, retrieval, prompt.
    async fn prepare(
        &self,
        p: &Principal,
        conv: Conversation,
        client: &ClientInfo,
    ) -> Result<Prepared, ChatError> {
        // 1. Admission: every request counts, valid or not.
        self.admit(p).await?;
        // 2. The whole request is valid, or nothing happens (no retrieval, no audit).
        let question = match &conv {
            Conversation::Thread { question, .. } => {
                self.threads.validate_content(question)?;
                question.clone()
            }
            Conversation::Stateless { messages } => {
                for m in messages {
                    self.threads.validate_content(&m.content)?;
                }
                messages
                    .iter()
                    .rev()
                    .find(|m| m.role == Role::User)
                    .map(|m| m.content.clone())
                    .ok_or(ChatError::Invalid("A user message is required."))?
            }
        };
        // 3. Ownership and the stored question, before any retrieval or model call.
        let (thread, history) = match conv {
            Conversation::Thread { id, question } => {
                let budget = self
                    .history_budget_tokens
                    .saturating_sub(approx_tokens(&self.system_prompt) + approx_tokens(&question));
                let turn = self
                    .threads
                    .begin_turn(p, &id, question, HistoryBudget(budget), client)
                    .await?;
                let readable = self.readable_citations(p, &turn.history).await?;
                let history = turn
                    .history
                    .into_iter()
                    .filter(|m| m.role != Role::System)
                    // Access is re-checked on every turn: an answer that quotes a document
                    // the caller can no longer read never goes back to the model.
                    .filter(|m| cites_only(m, &readable))
                    .map(|m| ChatMessage::new(m.role, m.content))
                    .chain(std::iter::once(ChatMessage::new(
                        Role::User,
                        turn.question.content,
                    )))
                    .collect();
                (Some(id), history)
            }
            Conversation::Stateless { messages } => (None, messages),
        };
        // 4. Retrieval within the caller's scope (audited as lineage).
        let passages = self.rag.retrieve_for_prompt(p, &question, client).await?;
        // 5. The prompt, built here.
        let prompt = prompt::build(&self.system_prompt, context_block(&passages), history);
        Ok(Prepared {
            thread,
            prompt,
            passages,
        })
    }

    /// The documents cited in `messages` that the caller may still read.
    async fn readable_citations(
        &self,
        p: &Principal,
        messages: &[MessageRecord],
    ) -> Result<HashSet<String>, ChatError> {
        let mut ids: Vec<String> = messages
            .iter()
            .flat_map(|m| m.citations.iter().map(|c| c.document_id.clone()))
            .collect();
        if ids.is_empty() {
            return Ok(HashSet::new());
        }
        ids.sort();
        ids.dedup();
        Ok(self.rag.still_readable(p, ids).await?)
    }

    /// One page of a thread as the caller may see it now: a message citing a document
    /// the caller can no longer read is marked redacted (its text withheld, never
    /// deleted).
    pub async fn thread_page(
        &self,
        p: &Principal,
        id: &str,
        before: Option<&str>,
        limit: Option<u32>,
        client: &ClientInfo,
    ) -> Result<ShownPage, ChatError> {
        let page = self.threads.page(p, id, before, limit, client).await?;
        let readable = self.readable_citations(p, &page.messages).await?;
        let messages = page
            .messages
            .into_iter()
            .map(|m| ShownMessage {
                redacted: !cites_only(&m, &readable),
                record: m,
            })
            .collect();
        Ok(ShownPage {
            thread: page.thread,
            messages,
            next_before: page.next_before,
        })
    }

    /// A whole answer; for a thread turn it is stored before this returns.
    pub async fn complete(
        &self,
        p: &Principal,
        conv: Conversation,
        client: &ClientInfo,
    ) -> Result<Answer, ChatError> {
        let prep = self.prepare(p, conv, client).await?;
        let cites = citations(&prep.passages);
        let completion = self.llm.complete(&prep.prompt, &prep.passages).await?;
        let stored = match &prep.thread {
            Some(id) => Some(
                self.threads
                    .finish_turn(p, id, completion.content.clone(), cites.clone(), client)
                    .await?,
            ),
            None => None,
        };
        Ok(Answer {
            content: completion.content,
            citations: cites,
            stored,
        })
    }

    /// A streamed answer. Errors before the first byte are returned as `Err` (a proper
    /// status); after it, as a final `Failed` event. A thread turn's answer is stored
    /// only when complete; a client that disconnects drops the stream, and with it the
    /// upstream request, before anything is stored.
    pub async fn stream(
        self: &Arc<Self>,
        p: &Principal,
        conv: Conversation,
        client: &ClientInfo,
    ) -> Result<ChatStream, ChatError> {
        let prep = self.prepare(p, conv, client).await?;
        let cites = citations(&prep.passages);
        let mut upstream = self.llm.stream(&prep.prompt, &prep.passages).await?;
        let (svc, p, client, thread) = (self.clone(), p.clone(), client.clone(), prep.thread);
        let events = async_stream::stream! {
            let mut full = String::new();
            while let Some(item) = upstream.next().await {
                match item {
                    Ok(delta) => {
                        full.push_str(&delta);
                        yield ChatEvent::Delta(delta);
                    }
                    Err(e) => {
                        yield ChatEvent::Failed(ChatError::Llm(e));
                        return;
                    }
                }
            }
            match thread {
                Some(id) => match svc.threads.finish_turn(&p, &id, full.clone(), cites.clone(), &client).await {
                    Ok(m) => yield ChatEvent::Done(Answer { content: full, citations: cites, stored: Some(m) }),
                    Err(e) => yield ChatEvent::Failed(e.into()),
                },
                None => yield ChatEvent::Done(Answer { content: full, citations: cites, stored: None }),
            }
        };
        Ok(Box::pin(events))
    }
}
