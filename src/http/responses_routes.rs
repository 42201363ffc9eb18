//! `POST /v1/responses`: OpenAI's Responses API, which the Agents SDK and newer clients
//! call by default, served by the same chat turn as `/v1/chat/completions` (and
//! translated to chat completions for the upstream).
//!
//! A response id is a conversation handle exactly like a thread id. A response is kept
//! only when the client asks (`"store": true`) or continues a kept one
//! (`previous_response_id`): it is then a turn of one of the caller's threads, and its
//! id names that thread. Another user's response id, a malformed one or one never kept
//! answers exactly like a missing thread (404, nothing written, no model call), and the
//! stored history replaces whatever history the client sends. Without either, a request
//! is a stateless completion of its own `input`.

use axum::Router;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::convert::Infallible;

use super::AppState;
use super::error::ApiError;
use super::extract::{Auth, Client, Json};
use crate::chat::{Answer, ChatEvent, ChatRequest, Conversation};
use crate::llm::message::{FunctionDef, ImageDetail, ImageUrl, JsonSchemaFormat, NamedFunction};
use crate::llm::{
    ChatMessage, Content, ContentPart, Delta, FunctionCall, Options, ReasoningEffort,
    ResponseFormat, ResponseFormatKind, RoleOnWire, ToolCall, ToolChoice, ToolChoiceMode, ToolDef,
    ToolKind, Usage, Verbosity,
};
use crate::model::Role;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/responses", post(responses))
}

/// The request fields palisade reads; the others are not forwarded (docs/agents.md).
/// The OpenAI Responses request; only the fields listed are read.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct ResponsesRequest {
    #[serde(default)]
    model: Option<String>,
    /// A string, or an array of input items (`message`, `function_call`,
    /// `function_call_output`, `reasoning`).
    #[schema(value_type = Value)]
    input: Input,
    #[serde(default)]
    instructions: Option<String>,
    /// Function tools (`{"type": "function", "name", "parameters", "strict"}`).
    #[serde(default)]
    #[schema(value_type = Option<Vec<Object>>)]
    tools: Option<Vec<InTool>>,
    #[serde(default)]
    #[schema(value_type = Option<Value>)]
    tool_choice: Option<Value>,
    #[serde(default)]
    parallel_tool_calls: Option<bool>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    max_output_tokens: Option<u32>,
    #[serde(default)]
    stream: Option<bool>,
    /// Keep the conversation (as one of the caller's threads); off unless set.
    #[serde(default)]
    store: Option<bool>,
    /// Continue a kept conversation (404 unless it is one of the caller's).
    #[serde(default)]
    previous_response_id: Option<String>,
    /// `{"format": {"type": "text" | "json_object" | "json_schema", …}, "verbosity"}`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    text: Option<TextOptions>,
    /// `{"effort": …}`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    reasoning: Option<Reasoning>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Input {
    Text(String),
    Items(Vec<Value>),
}

/// A function tool in the Responses shape (flat: no `function` wrapper).
#[derive(Deserialize)]
struct InTool {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Box<RawValue>>,
    #[serde(default)]
    strict: Option<bool>,
}

#[derive(Deserialize)]
struct TextOptions {
    #[serde(default)]
    format: Option<TextFormat>,
    #[serde(default)]
    verbosity: Option<Verbosity>,
}

#[derive(Deserialize)]
struct TextFormat {
    #[serde(rename = "type")]
    kind: ResponseFormatKind,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    schema: Option<Box<RawValue>>,
    #[serde(default)]
    strict: Option<bool>,
}

#[derive(Deserialize)]
struct Reasoning {
    #[serde(default)]
    effort: Option<ReasoningEffort>,
}

fn invalid(m: &str) -> ApiError {
    ApiError::Unprocessable(m.to_owned())
}

/// A response id names the thread (22 characters) and the stored answer (22).
const ID_PART: usize = 22;

fn response_id(thread: &str, message: &str) -> String {
    format!("resp_{thread}{message}")
}

/// The thread a response id names, if it is one palisade could have made.
fn thread_of(response_id: &str) -> Option<&str> {
    let rest = response_id.strip_prefix("resp_")?;
    (rest.len() == 2 * ID_PART && rest.is_char_boundary(ID_PART)).then(|| &rest[..ID_PART])
}

/// The text of a content value: a string, or its text parts joined.
fn content_of(role: Role, v: &Value) -> Result<Option<Content>, ApiError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(Content::Text(s.clone()))),
        Value::Array(parts) => {
            let mut out = Vec::with_capacity(parts.len());
            for p in parts {
                let text = || {
                    p["text"]
                        .as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| invalid("A text part needs its text."))
                };
                out.push(match p["type"].as_str() {
                    Some("input_text" | "output_text" | "text") => ContentPart::Text { text: text()? },
                    Some("refusal") if role == Role::Assistant => ContentPart::Refusal {
                        refusal: p["refusal"].as_str().unwrap_or_default().to_owned(),
                    },
                    Some("input_image") if role == Role::User => {
                        let url = p["image_url"]
                            .as_str()
                            .ok_or_else(|| invalid("An input_image needs an image_url."))?;
                        let detail = match p["detail"].as_str() {
                            Some("low") => Some(ImageDetail::Low),
                            Some("high") => Some(ImageDetail::High),
                            Some("auto") => Some(ImageDetail::Auto),
                            _ => None,
                        };
                        ContentPart::ImageUrl {
                            image_url: ImageUrl {
                                url: url.to_owned(),
                                detail,
                            },
                        }
                    }
                    _ => {
                        return Err(invalid(
                            "Only input_text, output_text, refusal and input_image content parts are accepted.",
                        ));
                    }
                });
            }
            Ok(Some(Content::Parts(out)))
        }
        _ => Err(invalid(
            "A message's content must be a string or an array of parts.",
        )),
    }
}

/// The input items as chat messages: messages, function calls (grouped into the
/// assistant message they belong to) and their outputs. Reasoning items are the
/// model's own and are not sent back.
fn messages_of(items: Vec<Value>) -> Result<Vec<ChatMessage>, ApiError> {
    let mut out: Vec<ChatMessage> = Vec::with_capacity(items.len());
    for item in items {
        let kind = item["type"].as_str().unwrap_or("message");
        match kind {
            "message" => {
                let (role, developer) = match item["role"].as_str() {
                    Some("user") => (Role::User, false),
                    Some("assistant") => (Role::Assistant, false),
                    Some("system") => (Role::System, false),
                    Some("developer") => (Role::System, true),
                    _ => {
                        return Err(invalid(
                            "A message's role must be user, assistant, system or developer.",
                        ));
                    }
                };
                let content = content_of(role, &item["content"])?
                    .ok_or_else(|| invalid("A message needs content."))?;
                out.push(ChatMessage {
                    role: RoleOnWire { role, developer },
                    content: Some(content),
                    name: None,
                    refusal: None,
                    tool_calls: Vec::new(),
                    tool_call_id: None,
                });
            }
            "function_call" => {
                let (Some(call_id), Some(name)) = (item["call_id"].as_str(), item["name"].as_str())
                else {
                    return Err(invalid("A function_call needs a call_id and a name."));
                };
                let call = ToolCall {
                    id: call_id.to_owned(),
                    kind: ToolKind::Function,
                    function: FunctionCall {
                        name: name.to_owned(),
                        arguments: item["arguments"].as_str().unwrap_or_default().to_owned(),
                    },
                };
                // A call joins the assistant message right before it (its text, or
                // other calls of the same turn).
                match out.last_mut() {
                    Some(m) if m.role == Role::Assistant => m.tool_calls.push(call),
                    _ => out.push(ChatMessage::tool_calls(String::new(), vec![call])),
                }
            }
            "function_call_output" => {
                let call_id = item["call_id"]
                    .as_str()
                    .ok_or_else(|| invalid("A function_call_output needs a call_id."))?;
                let output = match &item["output"] {
                    Value::String(s) => s.clone(),
                    v @ Value::Array(_) => content_of(Role::Tool, v)?
                        .map(|c| {
                            ChatMessage {
                                content: Some(c),
                                ..ChatMessage::new(Role::Tool, "")
                            }
                            .text()
                            .into_owned()
                        })
                        .unwrap_or_default(),
                    _ => return Err(invalid("A function_call_output needs an output.")),
                };
                out.push(ChatMessage::tool_result(call_id, output));
            }
            "reasoning" => {}
            _ => {
                return Err(invalid(
                    "Only message, function_call, function_call_output and reasoning input items are accepted.",
                ));
            }
        }
    }
    Ok(out)
}

impl ResponsesRequest {
    fn options(&mut self) -> Result<Options, ApiError> {
        let mut tools = Vec::new();
        for t in self.tools.take().unwrap_or_default() {
            if t.kind != "function" {
                return Err(invalid("Only function tools are accepted."));
            }
            tools.push(ToolDef {
                kind: ToolKind::Function,
                function: FunctionDef {
                    name: t
                        .name
                        .ok_or_else(|| invalid("A function tool needs a name."))?,
                    description: t.description,
                    parameters: t.parameters,
                    strict: t.strict,
                },
            });
        }
        let tool_choice = match self.tool_choice.take() {
            None => None,
            Some(Value::String(m)) => Some(ToolChoice::Mode(match m.as_str() {
                "auto" => ToolChoiceMode::Auto,
                "none" => ToolChoiceMode::None,
                "required" => ToolChoiceMode::Required,
                _ => {
                    return Err(invalid(
                        "tool_choice must be auto, none, required or a function.",
                    ));
                }
            })),
            Some(v) if v["type"] == "function" && v["name"].is_string() => {
                Some(ToolChoice::Named {
                    kind: ToolKind::Function,
                    function: NamedFunction {
                        name: v["name"].as_str().unwrap_or_default().to_owned(),
                    },
                })
            }
            Some(_) => {
                return Err(invalid(
                    "tool_choice must be auto, none, required or a function.",
                ));
            }
        };
        let (format, verbosity) = match self.text.take() {
            Some(t) => (t.format, t.verbosity),
            None => (None, None),
        };
        let response_format = format.map(|f| ResponseFormat {
            kind: f.kind,
            json_schema: (f.kind == ResponseFormatKind::JsonSchema).then(|| JsonSchemaFormat {
                name: f.name.unwrap_or_default(),
                description: f.description,
                schema: f.schema,
                strict: f.strict,
            }),
        });
        Ok(Options {
            temperature: self.temperature,
            top_p: self.top_p,
            max_completion_tokens: self.max_output_tokens,
            response_format,
            tools,
            tool_choice,
            parallel_tool_calls: self.parallel_tool_calls,
            reasoning_effort: self.reasoning.as_ref().and_then(|r| r.effort),
            verbosity,
            include_usage: true,
            ..Options::default()
        })
    }
}

/// The thread a request is kept in: continued, or made for it (and removed again if
/// the turn fails before an answer, so that a refused request leaves nothing behind).
enum Kept {
    Continued(String),
    New(String),
}

impl Kept {
    fn id(&self) -> &str {
        match self {
            Kept::Continued(id) | Kept::New(id) => id,
        }
    }
}

/// The request as palisade's chat turn, and the thread it is kept in (if any).
async fn conversation(
    s: &AppState,
    p: &crate::access::Principal,
    req: &mut ResponsesRequest,
) -> Result<(Conversation, Option<Kept>), ApiError> {
    let mut messages = match std::mem::replace(&mut req.input, Input::Items(Vec::new())) {
        Input::Text(t) => vec![ChatMessage::new(Role::User, t)],
        Input::Items(items) => messages_of(items)?,
    };
    if let Some(i) = req.instructions.take() {
        messages.insert(0, ChatMessage::new(Role::System, i));
    }
    let new_kept = req.previous_response_id.is_none() && req.store == Some(true);
    if req.previous_response_id.is_none() && !new_kept {
        return Ok((Conversation::Stateless { messages }, None));
    }
    if new_kept
        && messages
            .iter()
            .any(|m| m.role == Role::Assistant || m.role == Role::Tool)
    {
        // A new kept conversation starts with the user's own words only: an assistant
        // turn in it would be history the client wrote.
        return Err(invalid(
            "A new stored conversation starts with user messages only; send earlier turns with store false, or continue with previous_response_id.",
        ));
    }
    let title: String = messages
        .iter()
        .rfind(|m| m.role == Role::User)
        .map(|m| m.text().chars().take(80).collect())
        .unwrap_or_default();
    // Taken apart before any thread is made: a malformed turn makes nothing.
    let (input, instructions) = crate::chat::thread_turn(messages)?;
    let kept = match &req.previous_response_id {
        Some(prev) => Kept::Continued(thread_of(prev).ok_or(ApiError::NotFound)?.to_owned()),
        None => Kept::New(s.threads.create(p, Some(&title)).await?.id),
    };
    Ok((
        Conversation::Thread {
            id: kept.id().to_owned(),
            input,
            instructions,
        },
        Some(kept),
    ))
}

/// Responses' usage, from the upstream's chat usage.
fn usage_json(u: Option<&Usage>) -> Value {
    let u = u.cloned().unwrap_or_default();
    let detail = |outer: &str, inner: &str| {
        u.details
            .get(outer)
            .and_then(|d| d.get(inner))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    json!({
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": detail("prompt_tokens_details", "cached_tokens")},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": detail("completion_tokens_details", "reasoning_tokens")},
        "total_tokens": u.total_tokens,
    })
}

/// What a response echoes of its request.
struct Echo {
    id: String,
    created_at: i64,
    model: String,
    instructions: Option<String>,
    tools: Value,
    tool_choice: Value,
    parallel_tool_calls: bool,
    temperature: Option<f64>,
    top_p: Option<f64>,
    max_output_tokens: Option<u32>,
    previous_response_id: Option<String>,
    stored: bool,
    text: Value,
}

impl Echo {
    fn response(&self, status: &str, output: Vec<Value>, answer: Option<&Answer>) -> Value {
        let incomplete = answer.and_then(|a| match a.finish_reason.as_str() {
            "length" => Some(json!({"reason": "max_output_tokens"})),
            "content_filter" => Some(json!({"reason": "content_filter"})),
            _ => None,
        });
        let status = if incomplete.is_some() {
            "incomplete"
        } else {
            status
        };
        json!({
            "id": self.id, "object": "response", "created_at": self.created_at,
            "status": status, "error": null, "incomplete_details": incomplete,
            "model": self.model, "instructions": self.instructions, "output": output,
            "tools": self.tools, "tool_choice": self.tool_choice,
            "parallel_tool_calls": self.parallel_tool_calls,
            "temperature": self.temperature, "top_p": self.top_p,
            "max_output_tokens": self.max_output_tokens,
            "previous_response_id": self.previous_response_id,
            "store": self.stored, "text": self.text, "truncation": "disabled",
            "metadata": {},
            "usage": answer.map(|a| usage_json(a.usage.as_ref())),
            "citations": answer.map(|a| json!(a.citations)).unwrap_or(json!([])),
        })
    }
}

fn message_item(id: &str, status: &str, a: &Answer) -> Value {
    let part = match &a.refusal {
        Some(r) if a.content.is_empty() => json!({"type": "refusal", "refusal": r}),
        _ => json!({"type": "output_text", "text": a.content, "annotations": [], "logprobs": []}),
    };
    json!({"type": "message", "id": id, "status": status, "role": "assistant", "content": [part]})
}

fn call_item(id: &str, status: &str, c: &ToolCall) -> Value {
    json!({"type": "function_call", "id": id, "call_id": c.id, "name": c.function.name,
           "arguments": c.function.arguments, "status": status})
}

#[utoipa::path(
    post, path = "/v1/responses", tag = "openai", security(("bearer" = [])),
    request_body = ResponsesRequest,
    responses(
        (status = 200, description = "A response object (or, with stream, server-sent response events).", content(
            (serde_json::Value = "application/json"),
            (serde_json::Value = "text/event-stream"),
        )),
        (status = 401, description = "No valid token.", body = super::error::ErrorBody),
        (status = 403, description = "The model is not allowed for the caller.", body = super::error::ErrorBody),
        (status = 404, description = "previous_response_id is not one of the caller's kept responses.", body = super::error::ErrorBody),
        (status = 413, description = "Too large.", body = super::error::ErrorBody),
        (status = 422, description = "Invalid request.", body = super::error::ErrorBody),
        (status = 429, description = "A rate or token budget is spent.", body = super::error::ErrorBody, headers(("retry-after" = u64, description = "Seconds."))),
        (status = 502, description = "The model failed.", body = super::error::ErrorBody),
    )
)]
pub async fn responses(
    State(s): State<AppState>,
    Auth(p): Auth,
    Client(client): Client,
    Json(mut req): Json<ResponsesRequest>,
) -> Result<Response, ApiError> {
    let options = req.options()?;
    let echo_tools: Vec<Value> = options
        .tools
        .iter()
        .map(|t| {
            json!({"type": "function", "name": t.function.name, "description": t.function.description,
                   "parameters": t.function.parameters, "strict": t.function.strict})
        })
        .collect();
    let text = match &options.response_format {
        Some(f) => match (&f.json_schema, f.kind) {
            (Some(js), _) => {
                json!({"format": {"type": "json_schema", "name": js.name, "schema": js.schema, "strict": js.strict}})
            }
            (None, ResponseFormatKind::JsonObject) => json!({"format": {"type": "json_object"}}),
            _ => json!({"format": {"type": "text"}}),
        },
        None => json!({"format": {"type": "text"}}),
    };
    let tool_choice = match &options.tool_choice {
        Some(ToolChoice::Mode(m)) => json!(m),
        Some(ToolChoice::Named { function, .. }) => {
            json!({"type": "function", "name": function.name})
        }
        None => json!("auto"),
    };
    let (conversation, thread) = conversation(&s, &p, &mut req).await?;
    let chat_req = ChatRequest {
        conversation,
        model: req.model.take(),
        options,
    };
    let mut echo = Echo {
        id: format!("resp_{}", crate::secret::public_id()),
        created_at: crate::timeutil::now_ms() / 1000,
        model: chat_req
            .model
            .clone()
            .unwrap_or_else(|| s.chat.default_model().to_owned()),
        instructions: req.instructions.take(),
        tools: json!(echo_tools),
        tool_choice,
        parallel_tool_calls: req.parallel_tool_calls.unwrap_or(true),
        temperature: req.temperature,
        top_p: req.top_p,
        max_output_tokens: req.max_output_tokens,
        previous_response_id: req.previous_response_id.take(),
        stored: thread.is_some(),
        text,
    };
    // A thread made for this request goes again if the turn fails before an answer
    // (a refused model, invalid options, a failed upstream): nothing half-written.
    let made = match &thread {
        Some(Kept::New(id)) => Some(id.clone()),
        _ => None,
    };
    let undo = |e: crate::chat::ChatError| {
        let (s, p, client, made) = (s.clone(), p.clone(), client.clone(), made.clone());
        async move {
            if let Some(id) = made {
                let _ = s.threads.delete(&p, &id, &client).await;
            }
            ApiError::from(e)
        }
    };
    let thread = thread.map(|k| k.id().to_owned());
    let kept_id = move |a: &Answer| {
        thread
            .as_deref()
            .zip(a.stored.as_ref())
            .map(|(t, m)| response_id(t, &m.id))
    };

    if !req.stream.unwrap_or(false) {
        let a = match s.chat.complete(&p, chat_req, &client).await {
            Ok(a) => a,
            Err(e) => return Err(undo(e).await),
        };
        if let Some(id) = kept_id(&a) {
            echo.id = id;
        }
        let mut output = Vec::new();
        if !a.content.is_empty() || a.refusal.is_some() {
            output.push(message_item(
                &format!("msg_{}", crate::secret::public_id()),
                "completed",
                &a,
            ));
        }
        for c in &a.tool_calls {
            output.push(call_item(
                &format!("fc_{}", crate::secret::public_id()),
                "completed",
                c,
            ));
        }
        return Ok(axum::Json(echo.response("completed", output, Some(&a))).into_response());
    }

    let stream = match s.chat.stream(&p, chat_req, &client).await {
        Ok(stream) => stream,
        Err(e) => return Err(undo(e).await),
    };
    let mut events = ResponseEvents::new(echo);
    let head = events.start();
    let body = stream.flat_map(move |ev| {
        let out = match ev {
            ChatEvent::Delta(d) => events.delta(d),
            ChatEvent::Done(a) => {
                if let Some(id) = kept_id(&a) {
                    events.echo.id = id;
                }
                events.done(&a)
            }
            ChatEvent::Failed(e) => {
                let e = ApiError::from(e);
                events.failed(e.code(), &e.public_message())
            }
        };
        futures_util::stream::iter(out.into_iter().map(Ok::<_, Infallible>))
    });
    let all = futures_util::stream::iter(head.into_iter().map(Ok::<_, Infallible>)).chain(body);
    Ok(Sse::new(all)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// The Responses streaming events of one answer: an output item is opened when its
/// first piece arrives and closed at the end.
struct ResponseEvents {
    echo: Echo,
    seq: u64,
    /// The text item: its id and output index, and the text so far.
    text: Option<(String, usize, String)>,
    refusal: Option<(String, usize, String)>,
    /// Function calls by the model's call index: item id, output index, the call.
    calls: Vec<(u32, String, usize, ToolCall)>,
    items: usize,
}

impl ResponseEvents {
    fn new(echo: Echo) -> Self {
        Self {
            echo,
            seq: 0,
            text: None,
            refusal: None,
            calls: Vec::new(),
            items: 0,
        }
    }

    fn event(&mut self, kind: &str, mut data: Value) -> Event {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.seq);
        self.seq += 1;
        Event::default().event(kind).data(data.to_string())
    }

    fn start(&mut self) -> Vec<Event> {
        let r = self.echo.response("in_progress", Vec::new(), None);
        vec![
            self.event("response.created", json!({"response": r})),
            self.event("response.in_progress", json!({"response": r})),
        ]
    }

    fn open_message(&mut self, refusal: bool) -> (String, usize, Vec<Event>) {
        let id = format!("msg_{}", crate::secret::public_id());
        let index = self.items;
        self.items += 1;
        let part = if refusal {
            json!({"type": "refusal", "refusal": ""})
        } else {
            json!({"type": "output_text", "text": "", "annotations": [], "logprobs": []})
        };
        let events = vec![
            self.event(
                "response.output_item.added",
                json!({"output_index": index, "item": {"type": "message", "id": id, "status": "in_progress", "role": "assistant", "content": []}}),
            ),
            self.event(
                "response.content_part.added",
                json!({"item_id": id, "output_index": index, "content_index": 0, "part": part}),
            ),
        ];
        (id, index, events)
    }

    /// A piece of the answer's text (or of its refusal): its message item opened first.
    fn append(&mut self, refusal: bool, t: String) -> Vec<Event> {
        let mut out = Vec::new();
        let open = if refusal { &self.refusal } else { &self.text };
        if open.is_none() {
            let (id, index, ev) = self.open_message(refusal);
            out.extend(ev);
            let slot = if refusal {
                &mut self.refusal
            } else {
                &mut self.text
            };
            *slot = Some((id, index, String::new()));
        }
        let slot = if refusal {
            &mut self.refusal
        } else {
            &mut self.text
        };
        let Some((id, index, all)) = slot else {
            return out;
        };
        all.push_str(&t);
        let (id, index) = (id.clone(), *index);
        let (kind, data) = if refusal {
            (
                "response.refusal.delta",
                json!({"item_id": id, "output_index": index, "content_index": 0, "delta": t}),
            )
        } else {
            (
                "response.output_text.delta",
                json!({"item_id": id, "output_index": index, "content_index": 0, "delta": t, "logprobs": []}),
            )
        };
        out.push(self.event(kind, data));
        out
    }

    fn delta(&mut self, d: Delta) -> Vec<Event> {
        match d {
            Delta::Content(t) => self.append(false, t),
            Delta::Refusal(t) => self.append(true, t),
            Delta::ToolCall(t) => {
                let mut out = Vec::new();
                let pos = match self.calls.iter().position(|c| c.0 == t.index) {
                    Some(pos) => pos,
                    None => {
                        let id = format!("fc_{}", crate::secret::public_id());
                        let index = self.items;
                        self.items += 1;
                        let call = ToolCall {
                            id: t.id.clone().unwrap_or_default(),
                            kind: ToolKind::Function,
                            function: FunctionCall {
                                name: t.name.clone().unwrap_or_default(),
                                arguments: String::new(),
                            },
                        };
                        out.push(self.event(
                            "response.output_item.added",
                            json!({"output_index": index, "item": call_item(&id, "in_progress", &call)}),
                        ));
                        self.calls.push((t.index, id, index, call));
                        self.calls.len() - 1
                    }
                };
                if let Some(args) = t.arguments.filter(|a| !a.is_empty()) {
                    let (id, index) = {
                        let c = &mut self.calls[pos];
                        c.3.function.arguments.push_str(&args);
                        (c.1.clone(), c.2)
                    };
                    out.push(self.event(
                        "response.function_call_arguments.delta",
                        json!({"item_id": id, "output_index": index, "delta": args}),
                    ));
                }
                out
            }
            _ => Vec::new(),
        }
    }

    fn done(&mut self, a: &Answer) -> Vec<Event> {
        let mut out = Vec::new();
        let mut output: Vec<(usize, Value)> = Vec::new();
        if let Some((id, index, text)) = self.text.take() {
            let part =
                json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []});
            out.push(self.event(
                "response.output_text.done",
                json!({"item_id": id, "output_index": index, "content_index": 0, "text": text, "logprobs": []}),
            ));
            out.push(self.event(
                "response.content_part.done",
                json!({"item_id": id, "output_index": index, "content_index": 0, "part": part}),
            ));
            let item = json!({"type": "message", "id": id, "status": "completed", "role": "assistant", "content": [part]});
            out.push(self.event(
                "response.output_item.done",
                json!({"output_index": index, "item": item}),
            ));
            output.push((index, item));
        }
        if let Some((id, index, refusal)) = self.refusal.take() {
            let part = json!({"type": "refusal", "refusal": refusal});
            out.push(self.event(
                "response.refusal.done",
                json!({"item_id": id, "output_index": index, "content_index": 0, "refusal": refusal}),
            ));
            let item = json!({"type": "message", "id": id, "status": "completed", "role": "assistant", "content": [part]});
            out.push(self.event(
                "response.output_item.done",
                json!({"output_index": index, "item": item}),
            ));
            output.push((index, item));
        }
        for (_, id, index, call) in std::mem::take(&mut self.calls) {
            // Only the calls the client is to run (palisade's own search rounds were
            // relayed as they came, and are left out of the finished response).
            if !a.tool_calls.iter().any(|c| c.id == call.id) {
                continue;
            }
            out.push(self.event(
                "response.function_call_arguments.done",
                json!({"item_id": id, "output_index": index, "arguments": call.function.arguments}),
            ));
            let item = call_item(&id, "completed", &call);
            out.push(self.event(
                "response.output_item.done",
                json!({"output_index": index, "item": item}),
            ));
            output.push((index, item));
        }
        output.sort_by_key(|(i, _)| *i);
        let r = self.echo.response(
            "completed",
            output.into_iter().map(|(_, v)| v).collect(),
            Some(a),
        );
        let kind = if r["status"] == "incomplete" {
            "response.incomplete"
        } else {
            "response.completed"
        };
        out.push(self.event(kind, json!({"response": r})));
        out
    }

    fn failed(&mut self, code: &str, message: &str) -> Vec<Event> {
        let mut r = self.echo.response("failed", Vec::new(), None);
        r["error"] = json!({"code": code, "message": message});
        vec![self.event("response.failed", json!({"response": r}))]
    }
}
