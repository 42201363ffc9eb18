//! OpenAI's Responses API as an upstream (`api = "responses"` on a model): palisade's
//! prompt written as input items, and the answer read back from output items or from
//! the streamed events, into the same [`Completion`] and [`Delta`]s as chat completions.
//!
//! What reaches the upstream: the messages in order (`system`/`developer`/`user`/
//! `assistant` message items; an assistant's tool calls as `function_call` items; tool
//! results as `function_call_output` items), flat function tools with their schemas
//! byte for byte (serde_json writes the raw values), `tool_choice`,
//! `parallel_tool_calls`, `temperature`, `top_p`, the output cap as `max_output_tokens`,
//! `response_format` as `text.format`, `verbosity`, `reasoning.effort`, the caller's id
//! as `user`, and always `store: false` (the provider keeps nothing). Options the API
//! does not have (`stop`, `seed`, penalties, `logit_bias`, `n` above 1) are refused
//! before any call (see `chat/validate.rs`).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use super::message::{ImageDetail, JsonSchemaFormat};
use super::{
    Call, ChatMessage, Completion, Content, ContentPart, Delta, FunctionCall, LlmError,
    ReasoningEffort, ResponseFormatKind, ToolCall, ToolCallDelta, ToolChoice, ToolChoiceMode,
    ToolKind, Usage, Verbosity,
};
use crate::model::Role;

#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    input: Vec<Item<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<Tool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<Text<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning: Option<Reasoning>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_logprobs: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    include: Vec<&'static str>,
    user: &'a str,
    store: bool,
    stream: bool,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Item<'a> {
    Message {
        role: &'static str,
        content: ItemContent<'a>,
    },
    FunctionCall {
        call_id: &'a str,
        name: &'a str,
        arguments: &'a str,
    },
    FunctionCallOutput {
        call_id: &'a str,
        output: String,
    },
}

#[derive(Serialize)]
#[serde(untagged)]
enum ItemContent<'a> {
    Text(std::borrow::Cow<'a, str>),
    Parts(Vec<Part<'a>>),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Part<'a> {
    InputText {
        text: &'a str,
    },
    InputImage {
        image_url: &'a str,
        detail: ImageDetail,
    },
}

#[derive(Serialize)]
struct Tool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    /// Required by the Responses API; a function without parameters takes none.
    parameters: &'a RawValue,
    /// Required too (`false` unless the client asked for strict).
    strict: bool,
}

#[derive(Serialize)]
struct Text<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    format: Option<Format<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    verbosity: Option<Verbosity>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Format<'a> {
    Text,
    JsonObject,
    JsonSchema {
        name: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        description: Option<&'a str>,
        schema: &'a RawValue,
        #[serde(skip_serializing_if = "Option::is_none")]
        strict: Option<bool>,
    },
}

#[derive(Serialize)]
struct Reasoning {
    effort: ReasoningEffort,
}

fn role_name(m: &ChatMessage) -> &'static str {
    match m.role.role {
        Role::System if m.role.developer => "developer",
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    }
}

/// A message's content as input: a string, or input parts. An assistant's earlier
/// answer goes back as its text (a refusal as the refusal's text): the Responses API
/// takes output parts only in items it made itself, which carry its own ids.
fn content(m: &ChatMessage) -> Option<ItemContent<'_>> {
    if m.role == Role::Assistant {
        let text = m.text();
        let refusal_part = || match &m.content {
            Some(Content::Parts(p)) => p.iter().find_map(|p| match p {
                ContentPart::Refusal { refusal } => Some(refusal.as_str()),
                _ => None,
            }),
            _ => None,
        };
        return match (&m.content, &m.refusal) {
            (None, Some(r)) => Some(ItemContent::Text(r.as_str().into())),
            (None, None) => None,
            _ if text.is_empty() => refusal_part().map(|r| ItemContent::Text(r.into())),
            _ => Some(ItemContent::Text(text)),
        };
    }
    match &m.content {
        None => None,
        Some(Content::Text(t)) => Some(ItemContent::Text(t.as_str().into())),
        Some(Content::Parts(parts)) => Some(ItemContent::Parts(
            parts
                .iter()
                .filter_map(|p| match p {
                    ContentPart::Text { text } => Some(Part::InputText { text }),
                    ContentPart::ImageUrl { image_url } => Some(Part::InputImage {
                        image_url: &image_url.url,
                        detail: image_url.detail.unwrap_or(ImageDetail::Auto),
                    }),
                    // Only assistants refuse (validated before).
                    ContentPart::Refusal { .. } => None,
                })
                .collect(),
        )),
    }
}

fn items(messages: &[ChatMessage]) -> Vec<Item<'_>> {
    let mut out = Vec::with_capacity(messages.len());
    for m in messages {
        match m.role.role {
            Role::Tool => out.push(Item::FunctionCallOutput {
                call_id: m.tool_call_id.as_deref().unwrap_or_default(),
                output: m.text().into_owned(),
            }),
            _ => {
                if let Some(content) = content(m) {
                    out.push(Item::Message {
                        role: role_name(m),
                        content,
                    });
                }
                for c in &m.tool_calls {
                    out.push(Item::FunctionCall {
                        call_id: &c.id,
                        name: &c.function.name,
                        arguments: &c.function.arguments,
                    });
                }
            }
        }
    }
    out
}

/// An empty parameter list, for a function declared without one.
fn no_parameters() -> &'static RawValue {
    static EMPTY: std::sync::OnceLock<Box<RawValue>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| {
        RawValue::from_string(r#"{"type":"object","properties":{}}"#.to_owned())
            .unwrap_or_else(|_| unreachable!("a constant JSON text"))
    })
}

/// The Responses request for `call`, serialised once for every attempt. All of it by
/// serde_json: tool and format schemas are `RawValue`s, written verbatim.
pub fn request_body(model: &str, call: &Call<'_>, stream: bool) -> Result<bytes::Bytes, String> {
    let o = call.options;
    let format = match &o.response_format {
        None => None,
        Some(f) => Some(match (f.kind, &f.json_schema) {
            (ResponseFormatKind::Text, _) => Format::Text,
            (ResponseFormatKind::JsonObject, _) => Format::JsonObject,
            (
                ResponseFormatKind::JsonSchema,
                Some(JsonSchemaFormat {
                    name,
                    description,
                    schema,
                    strict,
                }),
            ) => Format::JsonSchema {
                name,
                description: description.as_deref(),
                schema: schema.as_deref().unwrap_or(no_parameters()),
                strict: *strict,
            },
            (ResponseFormatKind::JsonSchema, None) => {
                return Err("json_schema without a schema".into());
            }
        }),
    };
    let tool_choice = o.tool_choice.as_ref().map(|c| match c {
        ToolChoice::Mode(ToolChoiceMode::Auto) => Value::from("auto"),
        ToolChoice::Mode(ToolChoiceMode::None) => Value::from("none"),
        ToolChoice::Mode(ToolChoiceMode::Required) => Value::from("required"),
        ToolChoice::Named { function, .. } => {
            serde_json::json!({"type": "function", "name": function.name})
        }
    });
    let body = Body {
        model,
        input: items(call.messages),
        tools: o
            .tools
            .iter()
            .map(|t| Tool {
                kind: "function",
                name: &t.function.name,
                description: t.function.description.as_deref(),
                parameters: t.function.parameters.as_deref().unwrap_or(no_parameters()),
                strict: t.function.strict.unwrap_or(false),
            })
            .collect(),
        tool_choice,
        parallel_tool_calls: o.parallel_tool_calls,
        temperature: o.temperature,
        top_p: o.top_p,
        max_output_tokens: o.max_completion_tokens.or(o.max_tokens),
        text: (format.is_some() || o.verbosity.is_some()).then_some(Text {
            format,
            verbosity: o.verbosity,
        }),
        reasoning: o.reasoning_effort.map(|effort| Reasoning { effort }),
        top_logprobs: o.top_logprobs.filter(|_| o.logprobs == Some(true)),
        include: if o.logprobs == Some(true) {
            vec!["message.output_text.logprobs"]
        } else {
            Vec::new()
        },
        user: call.user,
        store: false,
        stream,
    };
    serde_json::to_vec(&body)
        .map(bytes::Bytes::from)
        .map_err(|e| e.to_string())
}

#[derive(Deserialize)]
struct ResponseObject {
    #[serde(default)]
    output: Vec<OutputItem>,
    #[serde(default)]
    usage: Option<ResponsesUsage>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    incomplete_details: Option<Incomplete>,
}

#[derive(Deserialize)]
struct Incomplete {
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutputItem {
    Message {
        #[serde(default)]
        content: Vec<OutputPart>,
    },
    FunctionCall {
        call_id: String,
        name: String,
        #[serde(default)]
        arguments: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutputPart {
    OutputText {
        #[serde(default)]
        text: String,
    },
    Refusal {
        #[serde(default)]
        refusal: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize, Default)]
struct ResponsesUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    total_tokens: u64,
    #[serde(default)]
    input_tokens_details: Option<Value>,
    #[serde(default)]
    output_tokens_details: Option<Value>,
}

impl ResponsesUsage {
    /// The chat shape of the same counts (details under their chat names).
    fn into_usage(self) -> Usage {
        let mut details = serde_json::Map::new();
        if let Some(d) = self.input_tokens_details {
            details.insert("prompt_tokens_details".into(), d);
        }
        if let Some(d) = self.output_tokens_details {
            details.insert("completion_tokens_details".into(), d);
        }
        Usage {
            prompt_tokens: self.input_tokens,
            completion_tokens: self.output_tokens,
            total_tokens: self.total_tokens,
            details,
        }
    }
}

/// The chat finish reason of a finished response.
fn finish_reason(status: Option<&str>, incomplete: Option<&str>, calls: bool) -> String {
    match (status, incomplete) {
        (Some("incomplete"), Some("content_filter")) => "content_filter",
        (Some("incomplete"), _) => "length",
        _ if calls => "tool_calls",
        _ => "stop",
    }
    .to_owned()
}

/// A non-streamed response as a completion.
pub fn parse_completion(bytes: &[u8]) -> Result<Completion, LlmError> {
    let r: ResponseObject = serde_json::from_slice(bytes).map_err(|_| LlmError::Malformed)?;
    let mut content = String::new();
    let mut refusal: Option<String> = None;
    let mut tool_calls = Vec::new();
    for item in r.output {
        match item {
            OutputItem::Message { content: parts } => {
                for p in parts {
                    match p {
                        OutputPart::OutputText { text } => content.push_str(&text),
                        OutputPart::Refusal { refusal: r } => {
                            refusal.get_or_insert_with(String::new).push_str(&r)
                        }
                        OutputPart::Other => {}
                    }
                }
            }
            OutputItem::FunctionCall {
                call_id,
                name,
                arguments,
            } => tool_calls.push(ToolCall {
                id: call_id,
                kind: ToolKind::Function,
                function: FunctionCall { name, arguments },
            }),
            OutputItem::Other => {}
        }
    }
    if r.status.as_deref() == Some("failed") {
        return Err(LlmError::Malformed);
    }
    let finish = finish_reason(
        r.status.as_deref(),
        r.incomplete_details
            .as_ref()
            .and_then(|i| i.reason.as_deref()),
        !tool_calls.is_empty(),
    );
    Ok(Completion {
        content,
        tool_calls,
        finish_reason: finish,
        refusal,
        usage: r.usage.map(ResponsesUsage::into_usage),
        ..Completion::default()
    })
}

/// Reads streamed Responses events into chat deltas: text and refusal pieces, function
/// calls (numbered in the order they open), and at the end the usage and the finish
/// reason. `Done` after the last event (`response.completed` or `.incomplete`).
#[derive(Default)]
pub struct EventReader {
    /// The output index of each function call, by its call number.
    calls: Vec<u64>,
}

/// What one event means.
pub enum Step {
    Deltas(Vec<Delta>),
    Done(Vec<Delta>),
}

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    delta: Option<String>,
    #[serde(default)]
    output_index: Option<u64>,
    #[serde(default)]
    item: Option<Value>,
    #[serde(default)]
    response: Option<Value>,
}

impl EventReader {
    pub fn read(&mut self, data: &str) -> Result<Step, LlmError> {
        let ev: Event = serde_json::from_str(data).map_err(|_| LlmError::Malformed)?;
        let out = match ev.kind.as_str() {
            "response.output_text.delta" => {
                vec![Delta::Content(ev.delta.unwrap_or_default())]
            }
            "response.refusal.delta" => vec![Delta::Refusal(ev.delta.unwrap_or_default())],
            "response.output_item.added" => {
                let item = ev.item.unwrap_or_default();
                if item["type"] != "function_call" {
                    return Ok(Step::Deltas(Vec::new()));
                }
                self.calls.push(ev.output_index.unwrap_or_default());
                let arguments = item["arguments"].as_str().filter(|a| !a.is_empty());
                vec![Delta::ToolCall(ToolCallDelta {
                    index: (self.calls.len() - 1) as u32,
                    id: item["call_id"].as_str().map(str::to_owned),
                    name: item["name"].as_str().map(str::to_owned),
                    arguments: arguments.map(str::to_owned),
                })]
            }
            "response.function_call_arguments.delta" => {
                let at = ev.output_index.unwrap_or_default();
                let index = self
                    .calls
                    .iter()
                    .position(|o| *o == at)
                    .ok_or(LlmError::Malformed)?;
                vec![Delta::ToolCall(ToolCallDelta {
                    index: index as u32,
                    id: None,
                    name: None,
                    arguments: ev.delta,
                })]
            }
            "response.completed" | "response.incomplete" => {
                let r: ResponseObject = serde_json::from_value(ev.response.unwrap_or_default())
                    .map_err(|_| LlmError::Malformed)?;
                let mut out = Vec::new();
                let finish = finish_reason(
                    r.status.as_deref(),
                    r.incomplete_details
                        .as_ref()
                        .and_then(|i| i.reason.as_deref()),
                    !self.calls.is_empty(),
                );
                out.push(Delta::Finish(finish));
                if let Some(u) = r.usage {
                    out.push(Delta::Usage(u.into_usage()));
                }
                return Ok(Step::Done(out));
            }
            "response.failed" | "error" => return Err(LlmError::Malformed),
            _ => Vec::new(),
        };
        Ok(Step::Deltas(out))
    }
}
