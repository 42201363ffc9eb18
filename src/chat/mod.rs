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

pub mod budget;
mod prompt;
pub mod tools;
mod validate;

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use crate::access::Principal;
use crate::audit::Audit;
use crate::llm::{
    Call, ChatMessage, Choice, Completion, Delta, LlmError, Model, Models, Options, ToolCall,
    ToolCallAssembler, Usage,
};
use crate::model::ClientInfo;
use crate::model::ThreadRecord;
use crate::model::approx_tokens;
use crate::model::{ChunkHit, Citation, MessageRecord, Provenance, Role};
use crate::rag::{Rag, RagError, citations};
use crate::store::{HistoryBudget, LimitStore};
pub use crate::threads::TurnInput;
use crate::threads::{StoredAnswer, ThreadError, Threads};
use budget::{Admit, BudgetSettings, Budgets, Reservation};

/// The output a budget reservation counts for a request that sets no output cap.
const DEFAULT_OUTPUT_RESERVE: u64 = 1024;

pub use prompt::context_block;

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("too many chat requests")]
    RateLimited { retry_after_secs: u64 },
    #[error("model-token budget spent")]
    BudgetExceeded { retry_after_secs: u64 },
    #[error("invalid request: {0}")]
    Invalid(&'static str),
    /// More messages or estimated prompt tokens than the model accepts.
    #[error("prompt too large")]
    PromptTooLarge,
    /// The model is unknown or the caller's roles may not use it (one answer for both).
    #[error("model not allowed")]
    ModelNotAllowed,
    /// The model kept calling `search_documents` past `rag.tool_max_steps`.
    #[error("tool steps exceeded")]
    ToolStepsExceeded,
    #[error(transparent)]
    Thread(#[from] ThreadError),
    #[error(transparent)]
    Rag(#[from] RagError),
    #[error(transparent)]
    Llm(#[from] LlmError),
}

/// What the caller asks.
pub enum Conversation {
    /// A turn in one of the caller's threads: only the turn's new messages (a question,
    /// or results of the tool calls the stored answer asked for) are taken from the
    /// client; the history is the stored one.
    Thread {
        id: String,
        input: Vec<TurnInput>,
        /// The client's `system`/`developer` messages: this turn's instructions, placed
        /// after palisade's system prompt and never stored.
        instructions: Vec<ChatMessage>,
    },
    /// A stateless completion: the client's own conversation (nothing is stored). The
    /// last user message is the retrieval query.
    Stateless { messages: Vec<ChatMessage> },
}

/// A thread turn as a client sent it, taken apart: the new messages (what follows the
/// last assistant message: tool results, and the last user message's text), and the
/// client's `system`/`developer` messages wherever they stand (this turn's
/// instructions, never stored). Everything else the client sent (history, assistant
/// messages) is ignored: the stored thread is the history.
pub fn thread_turn(
    messages: Vec<ChatMessage>,
) -> Result<(Vec<TurnInput>, Vec<ChatMessage>), ChatError> {
    let tail_start = messages
        .iter()
        .rposition(|m| m.role == Role::Assistant)
        .map_or(0, |i| i + 1);
    let mut input = Vec::new();
    let mut instructions = Vec::new();
    let mut question = None;
    for (i, m) in messages.into_iter().enumerate() {
        match m.role.role {
            Role::System => instructions.push(m),
            _ if i < tail_start => {}
            Role::Tool => {
                let call_id = m
                    .tool_call_id
                    .clone()
                    .filter(|c| !c.is_empty())
                    .ok_or(ChatError::Invalid("A tool message needs a tool_call_id."))?;
                input.push(TurnInput::ToolResult {
                    call_id,
                    content: m.text().into_owned(),
                });
            }
            Role::User => {
                if m.has_image() {
                    return Err(ChatError::Invalid(
                        "Images are not stored in threads; send them without a stored conversation.",
                    ));
                }
                question = Some(m.text().into_owned());
            }
            Role::Assistant => {}
        }
    }
    input.extend(question.map(TurnInput::Question));
    if input.is_empty() {
        return Err(ChatError::Invalid("A user message is required."));
    }
    Ok((input, instructions))
}

/// One chat request: the conversation, the model it names (or the default), and the
/// options to forward.
pub struct ChatRequest {
    pub conversation: Conversation,
    pub model: Option<String>,
    pub options: Options,
}

impl ChatRequest {
    /// A question in a stored thread, with the default model and options.
    /// The thread's last question asked again, for a new answer (regenerate).
    pub fn thread_again(id: String) -> Self {
        Self {
            conversation: Conversation::Thread {
                id,
                input: vec![TurnInput::Again],
                instructions: Vec::new(),
            },
            model: None,
            options: Options::default(),
        }
    }

    pub fn thread_question(id: String, question: String) -> Self {
        Self {
            conversation: Conversation::Thread {
                id,
                input: vec![TurnInput::Question(question)],
                instructions: Vec::new(),
            },
            model: None,
            options: Options::default(),
        }
    }
}

/// Texts embedded for a caller.
pub struct Embeddings {
    pub model: String,
    pub vectors: Vec<Vec<f32>>,
    /// palisade's estimate, charged to the caller's budget.
    pub tokens: u64,
}

/// Texts per `POST /v1/embeddings` request (OpenAI's own limit).
const MAX_EMBEDDING_INPUTS: usize = 2048;

/// A finished answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The model's name as callers know it.
    pub model: String,
    pub content: String,
    /// Calls of the client's own tools the model asks for.
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: String,
    /// The model's refusal, as it gave it.
    pub refusal: Option<String>,
    /// The answer's `logprobs` (non-streamed; streamed ones travel with their pieces).
    pub logprobs: Option<serde_json::Value>,
    pub system_fingerprint: Option<String>,
    /// Choices after the first, when the request asked for `n > 1`.
    pub more: Vec<Choice>,
    /// Summed over every upstream call of the answer; `None` if the upstream sent none.
    pub usage: Option<Usage>,
    pub citations: Vec<Citation>,
    /// The stored assistant message, for a thread turn.
    pub stored: Option<MessageRecord>,
}

/// What a streamed turn yields: content and tool-call pieces, then exactly one `Done`
/// or `Failed`.
pub enum ChatEvent {
    Delta(Delta),
    Done(Box<Answer>),
    Failed(ChatError),
}

pub type ChatStream = BoxStream<'static, ChatEvent>;

/// A stored message as the caller may see it now.
pub struct ShownMessage {
    pub record: MessageRecord,
    /// It drew on a document the caller can no longer read: show no text.
    pub redacted: bool,
}

pub struct ShownPage {
    pub thread: ThreadRecord,
    pub messages: Vec<ShownMessage>,
    pub next_before: Option<i64>,
}

/// Whether every document `m` drew on (its provenance and its citations) is in
/// `readable`.
fn drew_only_on(m: &MessageRecord, readable: &HashSet<String>) -> bool {
    m.drew_on().all(|d| readable.contains(d))
}

/// What a request brings itself: its messages (a thread turn's new messages and
/// instructions; the history is the server's) and their estimated tokens.
#[derive(Debug, Clone, Copy)]
struct RequestSize {
    messages: usize,
    tokens: usize,
}

impl RequestSize {
    fn of(c: &Conversation) -> Self {
        let texts: Vec<Cow<'_, str>> = match c {
            Conversation::Stateless { messages } => messages.iter().map(|m| m.text()).collect(),
            Conversation::Thread {
                input,
                instructions,
                ..
            } => input
                .iter()
                .map(|i| Cow::Borrowed(i.content()))
                .chain(instructions.iter().map(|m| m.text()))
                .collect(),
        };
        Self {
            messages: texts.len(),
            tokens: texts.iter().map(|t| approx_tokens(t)).sum(),
        }
    }
}

/// A turn that has passed every check and has its prompt.
struct Prepared {
    thread: Option<String>,
    model: Arc<Model>,
    prompt: Vec<ChatMessage>,
    passages: Vec<ChunkHit>,
    options: Options,
    /// The model was offered `search_documents`.
    search_tool: bool,
    /// What the history in the prompt drew on: the answer inherits it.
    inherited: Provenance,
    /// The tokens held of the caller's budgets for this turn (none without budgets).
    reservation: Option<Reservation>,
}

impl Prepared {
    /// The upstream call for this turn's prompt with `options`, as `p` (sent as `user`).
    /// palisade's estimate of the prompt's size in tokens (for budgets, when the
    /// upstream reports no usage).
    fn prompt_tokens(&self) -> u64 {
        self.prompt
            .iter()
            .map(|m| approx_tokens(&m.text()) as u64)
            .sum()
    }

    /// The tools the model may call in this turn.
    fn toolbox(&self) -> tools::Toolbox {
        tools::Toolbox::new(
            self.search_tool,
            self.options.tools.iter().map(|t| t.function.name.clone()),
        )
    }

    /// Every document whose text is in the prompt: the history's and the passages'.
    fn provenance(&self) -> Provenance {
        let mut all = self.inherited.clone();
        for h in &self.passages {
            all.add(&h.document_id);
        }
        all
    }

    /// The answer as it is stored.
    fn stored_answer(&self, content: String, tool_calls: Vec<ToolCall>) -> StoredAnswer {
        StoredAnswer {
            content,
            citations: citations(&self.passages),
            tool_calls,
            provenance: self.provenance(),
            stopped: false,
        }
    }

    fn call<'a>(&'a self, options: &'a Options, p: &'a Principal) -> Call<'a> {
        Call {
            messages: &self.prompt,
            options,
            user: p.subject(),
            passages: &self.passages,
        }
    }
}

pub struct ChatService {
    /// Roles that may use the embedding model (`embeddings.roles`; empty: all).
    embedding_roles: Vec<String>,
    threads: Arc<Threads>,
    rag: Arc<Rag>,
    models: Arc<Models>,
    system_prompt: String,
    history_budget_tokens: usize,
    /// Request rates and token budgets, shared by every process on the store.
    budgets: Budgets,
    /// Offer the model `search_documents` instead of retrieving up front.
    search_tool: bool,
    tool_max_steps: u32,
    /// The most tokens retrieved passages add to a prompt (top_k × chunk size).
    context_tokens: usize,
    /// The most messages one request may hold.
    max_messages: usize,
}

/// How the chat service is set up.
pub struct ChatSettings {
    pub system_prompt: String,
    pub history_budget_tokens: usize,
    pub budgets: BudgetSettings,
    pub search_tool: bool,
    pub tool_max_steps: u32,
    pub embedding_roles: Vec<String>,
    /// The most tokens retrieved passages add to a prompt.
    pub context_tokens: usize,
    /// The most messages one request may hold.
    pub max_messages: usize,
}

impl ChatService {
    pub fn new(
        threads: Arc<Threads>,
        rag: Arc<Rag>,
        models: Arc<Models>,
        settings: ChatSettings,
        limits: Arc<dyn LimitStore>,
        audit: Audit,
    ) -> Self {
        Self {
            embedding_roles: settings.embedding_roles,
            threads,
            rag,
            models,
            system_prompt: settings.system_prompt,
            history_budget_tokens: settings.history_budget_tokens,
            budgets: Budgets::new(settings.budgets, limits, audit),
            search_tool: settings.search_tool,
            tool_max_steps: settings.tool_max_steps.max(1),
            context_tokens: settings.context_tokens,
            max_messages: settings.max_messages,
        }
    }

    /// The same service counting its daily budgets by `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn crate::timeutil::Clock>) -> Self {
        self.budgets.clock = clock;
        self
    }

    /// The model used when a request names none.
    pub fn default_model(&self) -> &str {
        self.models.default_name()
    }

    /// The models `p` may use, the default first.
    pub fn models_for(&self, p: &Principal) -> Vec<Arc<Model>> {
        let mut models = self.models.visible(p.roles());
        models.retain(|m| p.allows_model(m.name()));
        models
    }

    /// `POST /v1/embeddings`: `texts` embedded by the configured embedding model, which
    /// `model` must name (or leave out) and the caller's roles must be allowed; counted
    /// against the caller's request rate and token budget like a chat. Returns the
    /// model's name, the vectors and the tokens charged.
    pub async fn embeddings(
        &self,
        p: &Principal,
        model: Option<&str>,
        texts: Vec<String>,
        client: &ClientInfo,
    ) -> Result<Embeddings, ChatError> {
        self.budgets
            .admit(p, Admit::RequestsAndTokens, client)
            .await?;
        let name = self.rag.embedder_name().to_owned();
        let allowed = self.embedding_roles.is_empty()
            || p.roles().iter().any(|r| self.embedding_roles.contains(r));
        if !allowed || !p.allows_model(&name) || model.is_some_and(|m| m != name) {
            return Err(ChatError::ModelNotAllowed);
        }
        if texts.is_empty() || texts.len() > MAX_EMBEDDING_INPUTS {
            return Err(ChatError::Invalid("input must hold 1 to 2048 texts."));
        }
        for t in &texts {
            if t.is_empty() {
                return Err(ChatError::Invalid("input must not hold an empty text."));
            }
            self.threads.validate_length(t)?;
        }
        let tokens: u64 = texts.iter().map(|t| approx_tokens(t) as u64).sum();
        let vectors = self
            .rag
            .embed_for(p, texts, client)
            .await?
            .ok_or(ChatError::ModelNotAllowed)?;
        self.budgets.charge(p, tokens).await;
        Ok(Embeddings {
            model: name,
            vectors,
            tokens,
        })
    }

    /// `search_documents` called from outside a chat (the MCP endpoint): counted
    /// against the caller's request rates like a chat request (no model is called, so
    /// no token budget applies), run in the caller's scope, audited.
    pub async fn search_tool(
        &self,
        p: &Principal,
        query: &str,
        via: &'static str,
        client: &ClientInfo,
    ) -> Result<Vec<ChunkHit>, ChatError> {
        self.budgets.admit(p, Admit::Requests, client).await?;
        Ok(self.rag.tool_search(p, query, via, None, client).await?)
    }

    /// Charges what an answer used to the caller's budgets and to the token metrics:
    /// the upstream's own count where it gave one, else palisade's estimate of the
    /// prompt and the answer.
    async fn account(
        &self,
        p: &Principal,
        prep: &mut Prepared,
        usage: Option<&Usage>,
        answer: &str,
    ) {
        let (prompt, completion) = match usage {
            Some(u) => (u.prompt_tokens, u.completion_tokens),
            None => (prep.prompt_tokens(), approx_tokens(answer) as u64),
        };
        crate::telemetry::tokens(prep.model.name(), prompt, completion);
        match prep.reservation.take() {
            Some(r) => r.settle(prompt + completion).await,
            None => self.budgets.charge(p, prompt + completion).await,
        }
    }

    /// The most tokens a request may use: its own text (`size`), the system prompt, the
    /// history (a thread's budget) and passages the server adds, and its output cap —
    /// per model call of a search loop.
    fn reservation_tokens(&self, req: &ChatRequest, size: RequestSize, search_tool: bool) -> u64 {
        let history = match req.conversation {
            Conversation::Thread { .. } => self.history_budget_tokens,
            Conversation::Stateless { .. } => 0,
        };
        let calls = if search_tool {
            self.tool_max_steps + 1
        } else {
            1
        } as u64;
        let output = req
            .options
            .max_completion_tokens
            .or(req.options.max_tokens)
            .map_or(DEFAULT_OUTPUT_RESERVE, u64::from);
        let prompt =
            approx_tokens(&self.system_prompt) + size.tokens + history + self.context_tokens;
        (prompt as u64 + output) * calls
    }

    /// Everything before the model: admission, validation, model access, thread,
    /// retrieval, prompt.
    async fn prepare(
        &self,
        p: &Principal,
        req: ChatRequest,
        client: &ClientInfo,
    ) -> Result<Prepared, ChatError> {
        // 1. Admission: every request counts, valid or not; a spent token budget
        //    refuses before anything else happens.
        self.budgets
            .admit(p, Admit::RequestsAndTokens, client)
            .await?;
        // 2. The model, and the whole request valid for it, or nothing happens (no
        //    retrieval, no audit, no upstream call).
        let model = self
            .models
            .resolve(req.model.as_deref(), p.roles())
            .filter(|m| p.allows_model(m.name()))
            .ok_or(ChatError::ModelNotAllowed)?;
        let search_tool = self.search_tool && model.calls_tools();
        let mut options = req.options;
        let stateless = matches!(req.conversation, Conversation::Stateless { .. });
        validate::options(&mut options, &model, search_tool, stateless)?;
        match &req.conversation {
            Conversation::Stateless { messages } => {
                validate::messages(messages, &model, &self.threads)?
            }
            Conversation::Thread { instructions, .. } => {
                validate::messages(instructions, &model, &self.threads)?
            }
        }
        // 2a. Bounded before anything else runs: the messages and their estimated tokens
        //     (with the system prompt) must fit the model's context window.
        let size = RequestSize::of(&req.conversation);
        if size.messages > self.max_messages
            || size.tokens + approx_tokens(&self.system_prompt) > model.context_tokens()
        {
            return Err(ChatError::PromptTooLarge);
        }
        // 2b. The tokens this request may use, held of the caller's budgets before
        //     anything is stored or called: concurrent requests cannot all slip under a
        //     budget that fits only some of them.
        let req = ChatRequest { options, ..req };
        let reservation = self
            .budgets
            .reserve(p, self.reservation_tokens(&req, size, search_tool), client)
            .await?;
        let options = req.options;
        // 3. Ownership and the stored turn, before any retrieval or model call.
        let mut inherited = Provenance::default();
        let (thread, history, instructions) = match req.conversation {
            Conversation::Thread {
                id,
                input,
                instructions,
            } => {
                let budget = self
                    .history_budget_tokens
                    .saturating_sub(approx_tokens(&self.system_prompt) + size.tokens);
                let turn = self
                    .threads
                    .begin_turn(p, &id, input, HistoryBudget(budget), client)
                    .await?;
                let readable = self.readable_sources(p, &turn.history).await?;
                // Access is re-checked on every turn: a message that drew on a document
                // the caller can no longer read never goes back to the model, and the
                // prompt is built as if it were absent.
                let kept: Vec<MessageRecord> = turn
                    .history
                    .into_iter()
                    .filter(|m| m.role != Role::System && drew_only_on(m, &readable))
                    .collect();
                for m in &kept {
                    inherited.inherit(&m.provenance);
                }
                let history = kept.into_iter().map(prompt::from_record).collect();
                (Some(id), history, instructions)
            }
            Conversation::Stateless { messages } => (None, messages, Vec::new()),
        };
        let history = prompt::well_formed(history);
        let question = history
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| m.text().into_owned())
            .ok_or(ChatError::Invalid("A user message is required."))?;
        // 4. Retrieval within the caller's scope (audited as lineage) — up front, or
        //    by the model through `search_documents`.
        let passages = if search_tool {
            Vec::new()
        } else {
            self.rag
                .retrieve_for_prompt(p, &question, thread.as_deref(), client)
                .await?
        };
        // Lineage: documents whose text reaches the model again through the history,
        // beyond those this turn retrieved (recorded with them).
        if let Some(id) = &thread {
            let again: Provenance = inherited
                .documents()
                .filter(|d| !passages.iter().any(|h| h.document_id == *d))
                .collect();
            if !again.is_empty() {
                self.rag.record_history_lineage(p, &again, id, client).await;
            }
        }
        // 5. The prompt, built here.
        let prompt = prompt::build(
            &self.system_prompt,
            instructions,
            context_block(&passages),
            history,
        );
        Ok(Prepared {
            thread,
            model,
            prompt,
            passages,
            options,
            search_tool,
            inherited,
            reservation,
        })
    }

    /// Runs `search_documents` calls under the caller's scope: the results go into the
    /// prompt, the passages into the answer's citations.
    async fn run_searches(
        &self,
        p: &Principal,
        prep: &mut Prepared,
        content: String,
        calls: Vec<ToolCall>,
        client: &ClientInfo,
    ) -> Result<(), ChatError> {
        prep.prompt
            .push(ChatMessage::tool_calls(content, calls.clone()));
        for call in calls {
            let result = match tools::search_query(&call.function.arguments) {
                Some(q) => {
                    let hits = self
                        .rag
                        .tool_search(p, &q, "chat", prep.thread.as_deref(), client)
                        .await?;
                    let text = tools::render_results(&hits);
                    for h in hits {
                        if !prep.passages.iter().any(|x| x.chunk_id == h.chunk_id) {
                            prep.passages.push(h);
                        }
                    }
                    text
                }
                None => tools::BAD_ARGUMENTS.to_owned(),
            };
            prep.prompt.push(ChatMessage::tool_result(call.id, result));
        }
        Ok(())
    }

    /// The options of step `step`: on the last one, `search_documents` is withdrawn so
    /// that the model has to answer.
    fn step_options<'a>(&self, prep: &'a Prepared, step: u32) -> Cow<'a, Options> {
        if !(prep.search_tool && step == self.tool_max_steps) {
            return Cow::Borrowed(&prep.options);
        }
        let mut o = prep.options.clone();
        o.tools.retain(|t| t.function.name != tools::SEARCH_TOOL);
        if o.tools.is_empty() {
            // No tools left: `tool_choice` and `parallel_tool_calls` would be refused.
            o.tool_choice = None;
            o.parallel_tool_calls = None;
        }
        Cow::Owned(o)
    }

    /// The documents `messages` drew on that the caller may still read.
    async fn readable_sources(
        &self,
        p: &Principal,
        messages: &[MessageRecord],
    ) -> Result<HashSet<String>, ChatError> {
        let mut ids: Vec<String> = messages
            .iter()
            .flat_map(|m| m.drew_on().map(str::to_owned))
            .collect();
        if ids.is_empty() {
            return Ok(HashSet::new());
        }
        ids.sort();
        ids.dedup();
        Ok(self.rag.still_readable(p, ids).await?)
    }

    /// One page of a thread as the caller may see it now: a message that drew on a
    /// document the caller can no longer read is marked redacted (its text withheld,
    /// never deleted).
    pub async fn thread_page(
        &self,
        p: &Principal,
        id: &str,
        before: Option<&str>,
        limit: Option<u32>,
        client: &ClientInfo,
    ) -> Result<ShownPage, ChatError> {
        let page = self.threads.page(p, id, before, limit, client).await?;
        let readable = self.readable_sources(p, &page.messages).await?;
        let messages = page
            .messages
            .into_iter()
            .map(|m| ShownMessage {
                redacted: !drew_only_on(&m, &readable),
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
        req: ChatRequest,
        client: &ClientInfo,
    ) -> Result<Answer, ChatError> {
        let mut prep = self.prepare(p, req, client).await?;
        let mut usage: Option<Usage> = None;
        let mut step = 0;
        let completion = loop {
            let options = self.step_options(&prep, step);
            let c = prep.model.complete(&prep.call(&options, p)).await?;
            add_usage(&mut usage, c.usage.as_ref());
            let (ours, theirs) = tools::split_calls(c.tool_calls, &prep.toolbox());
            // The client's own calls go back to it (palisade's are dropped: the model
            // asks again if it still needs them).
            if ours.is_empty() || !theirs.is_empty() {
                let finish_reason = if theirs.is_empty() && c.finish_reason == "tool_calls" {
                    // Every call was of an undeclared tool, and dropped.
                    "stop".to_owned()
                } else {
                    c.finish_reason
                };
                break Completion {
                    tool_calls: theirs,
                    finish_reason,
                    ..c
                };
            }
            if step == self.tool_max_steps {
                return Err(ChatError::ToolStepsExceeded);
            }
            self.run_searches(p, &mut prep, c.content, ours, client)
                .await?;
            step += 1;
        };
        self.account(p, &mut prep, usage.as_ref(), &completion.content)
            .await;
        let cites = citations(&prep.passages);
        let stored = match &prep.thread {
            Some(id) => Some(
                self.threads
                    .finish_turn(
                        p,
                        id,
                        prep.stored_answer(
                            completion.content.clone(),
                            completion.tool_calls.clone(),
                        ),
                        client,
                    )
                    .await?,
            ),
            None => None,
        };
        Ok(Answer {
            model: prep.model.name().to_owned(),
            content: completion.content,
            tool_calls: completion.tool_calls,
            finish_reason: completion.finish_reason,
            refusal: completion.refusal,
            logprobs: completion.logprobs,
            system_fingerprint: completion.system_fingerprint,
            more: completion.more,
            usage,
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
        req: ChatRequest,
        client: &ClientInfo,
    ) -> Result<ChatStream, ChatError> {
        let mut prep = self.prepare(p, req, client).await?;
        let first = prep
            .model
            .stream(&prep.call(&self.step_options(&prep, 0), p))
            .await?;
        let (svc, p, client) = (self.clone(), p.clone(), client.clone());
        // A client that disconnects mid-answer still pays for it: the meter charges an
        // estimate of what was used when the stream is dropped before its end.
        let meter = Meter {
            svc: svc.clone(),
            principal: p.clone(),
            model: prep.model.name().to_owned(),
            prompt_tokens: prep.prompt_tokens(),
            answer_chars: 0,
            settled: false,
            unfinished: prep.thread.clone().map(|thread| Unfinished {
                thread,
                client: client.clone(),
                answer: prep.stored_answer(String::new(), Vec::new()),
            }),
        };
        let events = async_stream::stream! {
            // The whole meter moves into the stream (not copies of its fields): dropped
            // with it.
            let mut meter = meter;
            let mut upstream = first;
            let mut full = String::new();
            let mut usage: Option<Usage> = None;
            let mut fingerprint: Option<String> = None;
            let mut step = 0;
            loop {
                let mut router = tools::DeltaRouter::new(prep.toolbox());
                let mut calls = ToolCallAssembler::default();
                let mut content = String::new();
                let mut finish = None;
                let mut refusal: Option<String> = None;
                while let Some(item) = upstream.next().await {
                    match item {
                        Ok(Delta::Content(t)) => {
                            meter.answer_chars += t.len();
                            if let Some(u) = &mut meter.unfinished {
                                u.answer.content.push_str(&t);
                            }
                            content.push_str(&t);
                            yield ChatEvent::Delta(Delta::Content(t));
                        }
                        Ok(Delta::ToolCall(d)) => {
                            calls.push(&d);
                            for piece in router.route(d) {
                                yield ChatEvent::Delta(Delta::ToolCall(piece));
                            }
                        }
                        Ok(Delta::Finish(r)) => finish = Some(r),
                        Ok(Delta::Usage(u)) => add_usage(&mut usage, Some(&u)),
                        Ok(Delta::Refusal(t)) => {
                            meter.answer_chars += t.len();
                            refusal.get_or_insert_with(String::new).push_str(&t);
                            yield ChatEvent::Delta(Delta::Refusal(t));
                        }
                        Ok(Delta::Fingerprint(f)) => {
                            fingerprint = Some(f.clone());
                            yield ChatEvent::Delta(Delta::Fingerprint(f));
                        }
                        Ok(d @ (Delta::Logprobs(_) | Delta::Other { .. })) => {
                            yield ChatEvent::Delta(d);
                        }
                        Err(e) => {
                            // Failed, not stopped: nothing is kept as an answer.
                            meter.unfinished = None;
                            yield ChatEvent::Failed(ChatError::Llm(e));
                            return;
                        }
                    }
                }
                full.push_str(&content);
                let (ours, theirs) = tools::split_calls(calls.finish(), &prep.toolbox());
                if ours.is_empty() || router.relayed_any() {
                    meter.settled = true;
                    svc.account(&p, &mut prep, usage.as_ref(), &full).await;
                    let cites = citations(&prep.passages);
                    let finish_reason = match finish {
                        // Every call was of an undeclared tool, and dropped.
                        Some(f) if f == "tool_calls" && theirs.is_empty() => "stop".into(),
                        Some(f) => f,
                        None => "stop".into(),
                    };
                    let stored = match &prep.thread {
                        Some(id) => match svc
                            .threads
                            .finish_turn(&p, id, prep.stored_answer(full.clone(), theirs.clone()), &client)
                            .await
                        {
                            Ok(m) => Some(m),
                            Err(e) => {
                                yield ChatEvent::Failed(e.into());
                                return;
                            }
                        },
                        None => None,
                    };
                    yield ChatEvent::Done(Box::new(Answer {
                        model: prep.model.name().to_owned(),
                        content: full,
                        tool_calls: theirs,
                        finish_reason,
                        refusal,
                        logprobs: None,
                        system_fingerprint: fingerprint,
                        more: Vec::new(),
                        usage,
                        citations: cites,
                        stored,
                    }));
                    return;
                }
                if step == svc.tool_max_steps {
                    meter.unfinished = None;
                    yield ChatEvent::Failed(ChatError::ToolStepsExceeded);
                    return;
                }
                if let Err(e) = svc.run_searches(&p, &mut prep, content, ours, &client).await {
                    meter.unfinished = None;
                    yield ChatEvent::Failed(e);
                    return;
                }
                // What a stopped answer drew on now includes this step's passages.
                if let Some(u) = &mut meter.unfinished {
                    let so_far = std::mem::take(&mut u.answer.content);
                    u.answer = prep.stored_answer(so_far, Vec::new());
                }
                step += 1;
                let options = svc.step_options(&prep, step);
                let next = prep.model.stream(&prep.call(&options, &p)).await;
                upstream = match next {
                    Ok(s) => s,
                    Err(e) => {
                        meter.unfinished = None;
                        yield ChatEvent::Failed(ChatError::Llm(e));
                        return;
                    }
                };
            }
        };
        Ok(Box::pin(events))
    }
}

/// What a streamed answer has used so far, charged on drop unless the answer completed
/// (and was charged with the upstream's own count). A thread turn's answer that its
/// reader stopped (the stream dropped before its end) is stored as far as it came,
/// marked `stopped`.
struct Meter {
    svc: Arc<ChatService>,
    principal: Principal,
    model: String,
    prompt_tokens: u64,
    answer_chars: usize,
    settled: bool,
    /// A thread turn's answer so far, with what it drew on.
    unfinished: Option<Unfinished>,
}

struct Unfinished {
    thread: String,
    client: ClientInfo,
    answer: StoredAnswer,
}

impl Drop for Meter {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let completion = self.answer_chars.div_ceil(4) as u64;
        crate::telemetry::tokens(&self.model, self.prompt_tokens, completion);
        let (svc, p, total) = (
            self.svc.clone(),
            self.principal.clone(),
            self.prompt_tokens + completion,
        );
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let kept = self
            .unfinished
            .take()
            .filter(|u| !u.answer.content.trim().is_empty());
        rt.spawn(async move {
            svc.budgets.charge(&p, total).await;
            if let Some(u) = kept {
                let answer = StoredAnswer {
                    stopped: true,
                    ..u.answer
                };
                if let Err(e) = svc
                    .threads
                    .finish_turn(&p, &u.thread, answer, &u.client)
                    .await
                {
                    tracing::warn!(error = %e, "a stopped answer could not be kept");
                }
            }
        });
    }
}

fn add_usage(total: &mut Option<Usage>, u: Option<&Usage>) {
    if let Some(u) = u {
        match total {
            Some(t) => t.add(u),
            None => *total = Some(u.clone()),
        }
    }
}
