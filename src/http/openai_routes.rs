//! The OpenAI-compatible face: `POST /v1/chat/completions` and `GET /v1/models`,
//! authenticated by palisade's own bearer token, so existing SDKs and chat UIs work.
//!
//! With `X-Palisade-Thread: {id}` the exchange is persisted into one of the caller's
//! threads and the *stored* history replaces whatever history the client sent: only the
//! last user message of the request is taken (a peer shipped exactly this hole:
//! continuing another user's chat by naming its id; see docs/threat-model.md).

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::convert::Infallible;
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::{Auth, Client, Json};
use crate::chat::{ChatEvent, ChatRequest, Conversation};
use crate::llm::{
    ChatMessage, Choice, Content, ContentPart, Delta, Options, ReasoningEffort, ResponseFormat,
    RoleOnWire, Stop, ToolCall, ToolChoice, ToolDef, Verbosity,
};
use crate::model::Role;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/v1/models/{*id}", get(model))
        .route("/v1/embeddings", post(embeddings))
}

pub const THREAD_HEADER: &str = "x-palisade-thread";

/// The body of `POST /v1/chat/completions`. Fields not listed here are not forwarded;
/// `user` is read only to be replaced by the caller's subject id.
/// The OpenAI chat-completions request; only the fields listed are read (and `user`,
/// which is replaced by the caller's id).
#[derive(Deserialize, ToSchema)]
pub struct CompletionRequest {
    #[schema(min_items = 1)]
    messages: Vec<InMessage>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    n: Option<u32>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    /// A string or an array of strings.
    #[serde(default)]
    #[schema(value_type = Option<Value>)]
    stop: Option<Stop>,
    #[serde(default)]
    seed: Option<i64>,
    #[serde(default)]
    presence_penalty: Option<f64>,
    #[serde(default)]
    frequency_penalty: Option<f64>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    response_format: Option<ResponseFormat>,
    #[serde(default)]
    #[schema(value_type = Option<Vec<Object>>)]
    tools: Option<Vec<ToolDef>>,
    #[serde(default)]
    #[schema(value_type = Option<Value>)]
    tool_choice: Option<ToolChoice>,
    #[serde(default)]
    parallel_tool_calls: Option<bool>,
    #[serde(default)]
    logprobs: Option<bool>,
    #[serde(default)]
    top_logprobs: Option<u32>,
    /// Token ids (decimal strings) to whole numbers from -100 to 100.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    logit_bias: Option<serde_json::Map<String, Value>>,
    /// `none`, `minimal`, `low`, `medium`, `high`, `xhigh` or `max`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    reasoning_effort: Option<ReasoningEffort>,
    /// `low`, `medium` or `high`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    verbosity: Option<Verbosity>,
}

#[derive(Deserialize, ToSchema)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize, ToSchema)]
struct InMessage {
    /// `system`, `developer`, `user`, `assistant` or `tool`.
    role: String,
    /// A string, or an array of `text` and `image_url` (and, for an assistant,
    /// `refusal`) parts; kept raw and parsed by shape.
    #[serde(default)]
    #[schema(value_type = Option<Value>)]
    content: Option<Box<RawValue>>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Vec<Object>>)]
    tool_calls: Option<Vec<ToolCall>>,
    #[serde(default)]
    tool_call_id: Option<String>,
}

fn unprocessable(m: &str) -> ApiError {
    ApiError::Unprocessable(m.to_owned())
}

impl InMessage {
    fn role(&self) -> Result<RoleOnWire, ApiError> {
        let role = match self.role.as_str() {
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            _ => {
                return Err(unprocessable(
                    "A message's role must be system, developer, user, assistant or tool.",
                ));
            }
        };
        Ok(RoleOnWire {
            role,
            developer: self.role == "developer",
        })
    }

    /// A string, or an array of text and image_url parts.
    fn content(&self) -> Result<Option<Content>, ApiError> {
        let Some(raw) = &self.content else {
            return Ok(None);
        };
        let text = raw.get().trim_start();
        if text.starts_with('"') {
            return serde_json::from_str(text)
                .map(|s| Some(Content::Text(s)))
                .map_err(|_| {
                    unprocessable("Message content must be a string or an array of parts.")
                });
        }
        if text.starts_with('[') {
            return serde_json::from_str::<Vec<ContentPart>>(text)
                .map(|parts| Some(Content::Parts(parts)))
                .map_err(|_| {
                    unprocessable(
                        "Only text, image_url and (for an assistant) refusal content parts are accepted.",
                    )
                });
        }
        if text == "null" {
            return Ok(None);
        }
        Err(unprocessable(
            "Message content must be a string or an array of parts.",
        ))
    }

    fn into_message(self) -> Result<ChatMessage, ApiError> {
        let role = self.role()?;
        let content = self.content()?;
        if role != Role::Assistant && content.is_none() {
            return Err(unprocessable(
                "Every message but an assistant's needs content.",
            ));
        }
        if role != Role::Assistant && self.tool_calls.as_ref().is_some_and(|c| !c.is_empty()) {
            return Err(unprocessable("Only assistant messages carry tool_calls."));
        }
        if role != Role::Assistant && self.refusal.is_some() {
            return Err(unprocessable("Only assistant messages carry a refusal."));
        }
        Ok(ChatMessage {
            role,
            content,
            // A tool message has no name in the protocol.
            name: self.name.filter(|_| role != Role::Tool),
            refusal: self.refusal,
            tool_calls: self.tool_calls.unwrap_or_default(),
            tool_call_id: if role == Role::Tool {
                self.tool_call_id
            } else {
                None
            },
        })
    }
}

impl CompletionRequest {
    fn options(&mut self) -> Options {
        Options {
            temperature: self.temperature,
            top_p: self.top_p,
            max_tokens: self.max_tokens,
            max_completion_tokens: self.max_completion_tokens,
            stop: self.stop.take(),
            seed: self.seed,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            response_format: self.response_format.take(),
            tools: self.tools.take().unwrap_or_default(),
            tool_choice: self.tool_choice.take(),
            parallel_tool_calls: self.parallel_tool_calls,
            n: self.n,
            logprobs: self.logprobs,
            top_logprobs: self.top_logprobs,
            logit_bias: self.logit_bias.take(),
            reasoning_effort: self.reasoning_effort,
            verbosity: self.verbosity,
            include_usage: self
                .stream_options
                .as_ref()
                .is_some_and(|o| o.include_usage),
        }
    }
}

#[utoipa::path(
    post, path = "/v1/chat/completions", tag = "openai", security(("bearer" = [])),
    params(("x-palisade-thread" = Option<String>, Header, description = "Continue one of the caller's threads.")),
    request_body = CompletionRequest,
    responses(
        (status = 200, description = "A chat.completion (or, with stream, server-sent chunks).", content(
            (CompletionBody = "application/json"),
            (serde_json::Value = "text/event-stream"),
        )),
        (status = 400, description = "Malformed body.", body = ErrorBody),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "The model is not allowed for the caller.", body = ErrorBody),
        (status = 404, description = "Not the caller's thread.", body = ErrorBody),
        (status = 413, description = "Too large.", body = ErrorBody),
        (status = 422, description = "Invalid request.", body = ErrorBody),
        (status = 429, description = "A rate or token budget is spent.", body = ErrorBody, headers(("retry-after" = u64, description = "Seconds."))),
        (status = 502, description = "The model failed.", body = ErrorBody),
    )
)]
pub async fn chat_completions(
    State(s): State<AppState>,
    Auth(p): Auth,
    Client(client): Client,
    headers: HeaderMap,
    Json(mut req): Json<CompletionRequest>,
) -> Result<Response, ApiError> {
    if req.messages.is_empty() {
        return Err(unprocessable("messages must not be empty."));
    }
    let options = req.options();
    let include_usage = options.include_usage;
    let messages = std::mem::take(&mut req.messages);
    let conversation = match headers.get(THREAD_HEADER) {
        // A stored thread: only the turn's new messages are taken; the stored history
        // replaces whatever the client sent.
        Some(v) => {
            let id = v.to_str().map_err(|_| ApiError::NotFound)?.to_owned();
            let messages = messages
                .into_iter()
                .map(InMessage::into_message)
                .collect::<Result<Vec<_>, ApiError>>()?;
            let (input, instructions) = crate::chat::thread_turn(messages)?;
            Conversation::Thread {
                id,
                input,
                instructions,
            }
        }
        None => Conversation::Stateless {
            messages: messages
                .into_iter()
                .map(InMessage::into_message)
                .collect::<Result<Vec<_>, ApiError>>()?,
        },
    };
    let chat_req = ChatRequest {
        conversation,
        model: req.model.take(),
        options,
    };
    let id = format!("chatcmpl-{}", crate::secret::public_id());
    let created = crate::timeutil::now_ms() / 1000;

    if !req.stream.unwrap_or(false) {
        let a = s.chat.complete(&p, chat_req, &client).await?;
        let empty = a.content.is_empty() && (!a.tool_calls.is_empty() || a.refusal.is_some());
        let first = Choice {
            content: (!empty).then_some(a.content),
            tool_calls: a.tool_calls,
            finish_reason: a.finish_reason,
            refusal: a.refusal,
            logprobs: a.logprobs,
        };
        let body = CompletionBody {
            id: &id,
            object: "chat.completion",
            created,
            model: &a.model,
            choices: std::iter::once(first)
                .chain(a.more)
                .enumerate()
                .map(|(index, c)| ChoiceBody {
                    index,
                    message: MessageBody {
                        role: "assistant",
                        content: c.content,
                        refusal: c.refusal,
                        tool_calls: c.tool_calls,
                    },
                    logprobs: c.logprobs,
                    finish_reason: c.finish_reason,
                })
                .collect(),
            usage: a.usage.unwrap_or_default(),
            system_fingerprint: a.system_fingerprint,
            citations: &a.citations,
        };
        return Ok(axum::Json(body).into_response());
    }

    // The model the chunks name: the caller's, or the default (which the chat service
    // resolved, and refused if the caller may not use it, before the stream starts).
    let shown = chat_req
        .model
        .clone()
        .unwrap_or_else(|| s.chat.default_model().to_owned());
    let stream = s.chat.stream(&p, chat_req, &client).await?;
    // The upstream's fingerprint, once it has named one, on every later chunk (as
    // OpenAI sends it).
    let fingerprint = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
    let fp = fingerprint.clone();
    let chunk_at = move |model: &str, index: u32, delta: Value, finish: Value, logprobs: Value| {
        let mut c = json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}],
        });
        if let Some(f) = fp.lock().ok().and_then(|f| f.clone()) {
            c["system_fingerprint"] = json!(f);
        }
        c
    };
    let chunk = {
        let chunk_at = chunk_at.clone();
        move |model: &str, delta: Value, finish: Value| {
            chunk_at(model, 0, delta, finish, Value::Null)
        }
    };
    let first = Event::default().data(
        chunk(
            &shown,
            json!({"role": "assistant", "content": ""}),
            Value::Null,
        )
        .to_string(),
    );
    let body = stream.flat_map(move |ev| {
        let out: Vec<Event> = match ev {
            ChatEvent::Delta(Delta::Content(d)) => {
                vec![
                    Event::default()
                        .data(chunk(&shown, json!({"content": d}), Value::Null).to_string()),
                ]
            }
            ChatEvent::Delta(Delta::ToolCall(t)) => {
                let mut call = json!({"index": t.index});
                if let Some(id) = t.id {
                    call["id"] = json!(id);
                    call["type"] = json!("function");
                }
                let mut function = serde_json::Map::new();
                if let Some(n) = t.name {
                    function.insert("name".into(), json!(n));
                }
                if let Some(a) = t.arguments {
                    function.insert("arguments".into(), json!(a));
                }
                call["function"] = Value::Object(function);
                vec![
                    Event::default().data(
                        chunk(&shown, json!({"tool_calls": [call]}), Value::Null).to_string(),
                    ),
                ]
            }
            ChatEvent::Delta(Delta::Refusal(r)) => vec![
                Event::default()
                    .data(chunk(&shown, json!({"refusal": r}), Value::Null).to_string()),
            ],
            ChatEvent::Delta(Delta::Logprobs(lp)) => vec![
                Event::default().data(chunk_at(&shown, 0, json!({}), Value::Null, lp).to_string()),
            ],
            ChatEvent::Delta(Delta::Fingerprint(f)) => {
                if let Ok(mut slot) = fingerprint.lock() {
                    *slot = Some(f);
                }
                Vec::new()
            }
            ChatEvent::Delta(Delta::Other {
                index,
                delta,
                finish_reason,
                logprobs,
            }) => vec![
                Event::default().data(
                    chunk_at(
                        &shown,
                        index,
                        delta,
                        json!(finish_reason),
                        logprobs.unwrap_or(Value::Null),
                    )
                    .to_string(),
                ),
            ],
            ChatEvent::Delta(_) => Vec::new(),
            ChatEvent::Done(a) => {
                let mut last = chunk(&shown, json!({}), json!(a.finish_reason));
                if !a.citations.is_empty() {
                    last["citations"] = json!(a.citations);
                }
                let mut out = vec![Event::default().data(last.to_string())];
                if include_usage {
                    let mut u = chunk(&shown, json!({}), Value::Null);
                    u["choices"] = json!([]);
                    u["usage"] = json!(a.usage.unwrap_or_default());
                    out.push(Event::default().data(u.to_string()));
                }
                out.push(Event::default().data("[DONE]"));
                out
            }
            ChatEvent::Failed(e) => {
                let e = ApiError::from(e);
                vec![Event::default().data(
                    json!({"error": {"code": e.code(), "message": e.public_message()}}).to_string(),
                )]
            }
        };
        futures_util::stream::iter(out.into_iter().map(Ok::<_, Infallible>))
    });
    let events = futures_util::stream::once(async move { Ok::<_, Infallible>(first) }).chain(body);
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// One model, if the caller may use it; an unknown model and a forbidden one answer
/// alike.
#[utoipa::path(
    get, path = "/v1/models/{id}", tag = "openai", security(("bearer" = [])),
    params(("id" = String, Path, description = "A model name (it may contain `/`).")),
    responses(
        (status = 200, description = "The model.", body = ModelView),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 404, description = "No such model for the caller (unknown or not allowed: one answer).", body = ErrorBody),
    )
)]
pub async fn model(
    State(s): State<AppState>,
    Auth(p): Auth,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Response, ApiError> {
    let m = s
        .chat
        .models_for(&p)
        .into_iter()
        .find(|m| m.name() == id)
        .ok_or(ApiError::NotFound)?;
    Ok(axum::Json(ModelView::of(m.name())).into_response())
}

/// A model the caller may name.
#[derive(Serialize, ToSchema)]
pub struct ModelView<'a> {
    id: &'a str,
    /// `model`.
    object: &'static str,
    created: i64,
    owned_by: &'static str,
}

impl<'a> ModelView<'a> {
    fn of(name: &'a str) -> Self {
        Self {
            id: name,
            object: "model",
            created: 0,
            owned_by: "palisade",
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ModelList<'a> {
    /// `list`.
    object: &'static str,
    data: Vec<ModelView<'a>>,
}

/// The body of `POST /v1/embeddings`.
#[derive(Deserialize, ToSchema)]
pub struct EmbeddingsRequest {
    /// The embedding model's name (`GET /v1/models` does not list it); absent: it.
    #[serde(default)]
    model: Option<String>,
    /// A text or an array of 1 to 2048 texts (token arrays are refused: palisade's
    /// model need not share the client's tokenizer).
    #[schema(value_type = Value)]
    input: Value,
    #[serde(default)]
    encoding_format: Option<EncodingFormat>,
    /// Only the model's own dimension (422 otherwise).
    #[serde(default)]
    dimensions: Option<u32>,
}

/// `float` (the default) or `base64` (little-endian `f32`s).
#[derive(Deserialize, ToSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum EncodingFormat {
    Float,
    Base64,
}

/// Texts embedded by the configured embedding model, in OpenAI's shape (float arrays,
/// or base64 of little-endian `f32`s, which the official SDKs ask for by default).
#[utoipa::path(
    post, path = "/v1/embeddings", tag = "openai", security(("bearer" = [])),
    request_body = EmbeddingsRequest,
    responses(
        (status = 200, description = "An embedding list.", body = EmbeddingList),
        (status = 401, description = "No valid token.", body = ErrorBody),
        (status = 403, description = "The model is unknown or not allowed for the caller (one answer).", body = ErrorBody),
        (status = 413, description = "Too large.", body = ErrorBody),
        (status = 422, description = "Invalid request.", body = ErrorBody),
        (status = 429, description = "A rate or token budget is spent.", body = ErrorBody, headers(("retry-after" = u64, description = "Seconds."))),
        (status = 503, description = "The embedding model failed.", body = ErrorBody),
    )
)]
pub async fn embeddings(
    State(s): State<AppState>,
    Auth(p): Auth,
    Client(client): Client,
    Json(req): Json<EmbeddingsRequest>,
) -> Result<Response, ApiError> {
    let texts: Vec<String> = match req.input {
        Value::String(t) => vec![t],
        Value::Array(items) if items.iter().all(Value::is_string) => items
            .into_iter()
            .filter_map(|v| match v {
                Value::String(t) => Some(t),
                _ => None,
            })
            .collect(),
        _ => {
            return Err(unprocessable(
                "input must be a text or an array of texts (token arrays are not accepted).",
            ));
        }
    };
    let e = s
        .chat
        .embeddings(&p, req.model.as_deref(), texts, &client)
        .await?;
    if let Some(d) = req.dimensions
        && e.vectors.first().is_some_and(|v| v.len() != d as usize)
    {
        return Err(unprocessable(
            "dimensions must be the embedding model's own (it cannot be shortened).",
        ));
    }
    let base64 = req.encoding_format == Some(EncodingFormat::Base64);
    let data = e
        .vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| {
            let embedding = if base64 {
                use base64::Engine;
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Vector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                Vector::Floats(v.into_iter().map(f64::from).collect())
            };
            Embedding {
                object: "embedding",
                index,
                embedding,
            }
        })
        .collect();
    Ok(axum::Json(EmbeddingList {
        object: "list",
        data,
        model: e.model,
        usage: EmbeddingUsage {
            prompt_tokens: e.tokens,
            total_tokens: e.tokens,
        },
    })
    .into_response())
}

/// An OpenAI embedding list.
#[derive(Serialize, ToSchema)]
pub struct EmbeddingList {
    /// `list`.
    object: &'static str,
    data: Vec<Embedding>,
    model: String,
    usage: EmbeddingUsage,
}

#[derive(Serialize, ToSchema)]
pub struct Embedding {
    /// `embedding`.
    object: &'static str,
    index: usize,
    embedding: Vector,
}

/// Floats, or base64 of little-endian `f32`s.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum Vector {
    Floats(Vec<f64>),
    Base64(String),
}

#[derive(Serialize, ToSchema)]
pub struct EmbeddingUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

/// A `chat.completion`, with palisade's `citations` (written straight from these types:
/// building a `serde_json::Value` tree first cost a stateless request ~2 %).
#[derive(Serialize, ToSchema)]
pub struct CompletionBody<'a> {
    id: &'a str,
    object: &'static str,
    created: i64,
    model: &'a str,
    choices: Vec<ChoiceBody>,
    #[schema(value_type = Object)]
    usage: crate::llm::Usage,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_fingerprint: Option<String>,
    citations: &'a [crate::model::Citation],
}

#[derive(Serialize, ToSchema)]
struct ChoiceBody {
    index: usize,
    message: MessageBody,
    logprobs: Option<Value>,
    finish_reason: String,
}

#[derive(Serialize, ToSchema)]
struct MessageBody {
    role: &'static str,
    content: Option<String>,
    refusal: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    tool_calls: Vec<ToolCall>,
}

/// The models the caller may use: what `model` may name.
#[utoipa::path(
    get, path = "/v1/models", tag = "openai", security(("bearer" = [])),
    responses(
        (status = 200, description = "The models the caller may use.", body = ModelList),
        (status = 401, description = "No valid token.", body = ErrorBody),
    )
)]
pub async fn models(State(s): State<AppState>, Auth(p): Auth) -> Response {
    let models = s.chat.models_for(&p);
    let data = models.iter().map(|m| ModelView::of(m.name())).collect();
    axum::Json(ModelList {
        object: "list",
        data,
    })
    .into_response()
}
