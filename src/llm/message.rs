//! The chat-completions wire types palisade relays: messages (text, image parts, tool
//! calls and tool results), tool declarations, sampling options, usage, and the pieces
//! of a streamed answer. Each is a named type validated on the way in; nothing the
//! client sends reaches the model unless it is one of these.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::model::Role;
pub use crate::model::{FunctionCall, ToolCall, ToolKind};

/// One message of a prompt, in the OpenAI shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatMessage {
    #[serde(serialize_with = "wire_role", rename = "role")]
    pub role: RoleOnWire,
    /// `None` only for an assistant message that carries nothing but tool calls (or a
    /// refusal).
    pub content: Option<Content>,
    /// The participant's name, relayed as the client gave it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// An assistant message's refusal, as the model gave it (history sent back).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

/// A message's role, plus whether a `system` message came as `developer` (the name
/// OpenAI's newer models give it): relayed under the name the client used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleOnWire {
    pub role: Role,
    pub developer: bool,
}

impl From<Role> for RoleOnWire {
    fn from(role: Role) -> Self {
        Self {
            role,
            developer: false,
        }
    }
}

impl PartialEq<Role> for RoleOnWire {
    fn eq(&self, other: &Role) -> bool {
        self.role == *other
    }
}

fn wire_role<S: serde::Serializer>(r: &RoleOnWire, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(if r.developer {
        "developer"
    } else {
        r.role.as_str()
    })
}

impl ChatMessage {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: Some(Content::Text(content.into())),
            name: None,
            refusal: None,
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    /// An assistant message asking for `calls` (with whatever text came with them).
    pub fn tool_calls(content: String, calls: Vec<ToolCall>) -> Self {
        Self {
            role: Role::Assistant.into(),
            content: (!content.is_empty()).then_some(Content::Text(content)),
            name: None,
            refusal: None,
            tool_calls: calls,
            tool_call_id: None,
        }
    }

    /// The result of the call `call_id`.
    pub fn tool_result(call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: Role::Tool.into(),
            content: Some(Content::Text(content.into())),
            name: None,
            refusal: None,
            tool_calls: Vec::new(),
            tool_call_id: Some(call_id.into()),
        }
    }

    /// The message's text: its string (borrowed), or its text parts joined by newlines.
    pub fn text(&self) -> Cow<'_, str> {
        match &self.content {
            None => Cow::Borrowed(""),
            Some(Content::Text(t)) => Cow::Borrowed(t),
            Some(Content::Parts(parts)) => Cow::Owned(
                parts
                    .iter()
                    .filter_map(|p| match p {
                        ContentPart::Text { text } => Some(text.as_str()),
                        ContentPart::ImageUrl { .. } | ContentPart::Refusal { .. } => None,
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
        }
    }

    pub fn has_image(&self) -> bool {
        matches!(&self.content, Some(Content::Parts(parts))
            if parts.iter().any(|p| matches!(p, ContentPart::ImageUrl { .. })))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ContentPart {
    Text {
        text: String,
    },
    ImageUrl {
        image_url: ImageUrl,
    },
    /// In an assistant message sent back as history.
    Refusal {
        refusal: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageUrl {
    /// An `https:` URL or a `data:image/…;base64,` URL.
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<ImageDetail>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageDetail {
    Auto,
    Low,
    High,
}

/// A tool the model may call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ToolDef {
    #[serde(rename = "type")]
    pub kind: ToolKind,
    pub function: FunctionDef,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FunctionDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON Schema object, relayed as the client wrote it (never parsed into a tree:
    /// the upstream validates schemas, palisade checks only that it is an object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// `"none" | "auto" | "required"` or one named function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ToolChoice {
    Mode(ToolChoiceMode),
    Named {
        #[serde(rename = "type")]
        kind: ToolKind,
        function: NamedFunction,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoiceMode {
    None,
    Auto,
    Required,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedFunction {
    pub name: String,
}

/// `stop`: one sequence or up to four.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

/// `response_format`: plain text, JSON mode, or structured output against a schema.
/// (A struct rather than a tagged enum: a tagged enum buffers its content, and the
/// schema is relayed raw.)
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResponseFormat {
    #[serde(rename = "type")]
    pub kind: ResponseFormatKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_schema: Option<JsonSchemaFormat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseFormatKind {
    Text,
    JsonObject,
    JsonSchema,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JsonSchemaFormat {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Relayed as written, like tool parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// What the client may set beyond the messages, validated (see `Options::validate`
/// in the chat service) and forwarded as is.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Options {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolDef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    /// How many answers to generate (more than one only for a stateless completion
    /// without palisade's own tool).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u32>,
    /// Token id (a decimal string) to a bias between -100 and 100.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logit_bias: Option<serde_json::Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_effort: Option<ReasoningEffort>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verbosity: Option<Verbosity>,
    /// Ask for a final usage chunk on a streamed answer.
    #[serde(skip)]
    pub include_usage: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasoningEffort {
    None,
    Minimal,
    Low,
    Medium,
    High,
    Xhigh,
    Max,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verbosity {
    Low,
    Medium,
    High,
}

/// Token counts, as the upstream reported them (details kept as they came).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
    #[serde(flatten)]
    pub details: serde_json::Map<String, Value>,
}

impl Usage {
    /// The sum over several upstream calls of one answer (details are dropped: they do
    /// not add up meaningfully).
    pub fn add(&mut self, other: &Usage) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.total_tokens += other.total_tokens;
        self.details.clear();
    }
}

/// A finished, non-streamed completion: its first choice, the other choices (`n > 1`),
/// and what the upstream said of the whole.
#[derive(Debug, Clone, Default)]
pub struct Completion {
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: String,
    pub refusal: Option<String>,
    /// The choice's `logprobs` object, as the upstream gave it.
    pub logprobs: Option<Value>,
    pub usage: Option<Usage>,
    pub system_fingerprint: Option<String>,
    /// Choices after the first (only when the request asked for `n > 1`).
    pub more: Vec<Choice>,
}

/// One choice of a completion that asked for several.
#[derive(Debug, Clone, Default)]
pub struct Choice {
    pub content: Option<String>,
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: String,
    pub refusal: Option<String>,
    pub logprobs: Option<Value>,
}

/// A piece of one streamed tool call; `index` says which call it continues.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCallDelta {
    pub index: u32,
    pub id: Option<String>,
    pub name: Option<String>,
    pub arguments: Option<String>,
}

/// One piece of a streamed answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Delta {
    Content(String),
    ToolCall(ToolCallDelta),
    Finish(String),
    Usage(Usage),
    Refusal(String),
    /// A chunk's `logprobs` object, relayed with the chunk's piece.
    Logprobs(Value),
    /// The upstream's `system_fingerprint`, once, when it first names one.
    Fingerprint(String),
    /// A piece of a choice after the first (`n > 1`), relayed as it came.
    Other {
        index: u32,
        delta: Value,
        finish_reason: Option<String>,
        logprobs: Option<Value>,
    },
}

/// Assembles streamed tool-call pieces into whole calls.
#[derive(Debug, Default)]
pub struct ToolCallAssembler {
    calls: Vec<(u32, ToolCall)>,
}

impl ToolCallAssembler {
    pub fn push(&mut self, d: &ToolCallDelta) {
        let pos = match self.calls.iter().position(|(i, _)| *i == d.index) {
            Some(pos) => pos,
            None => {
                self.calls.push((
                    d.index,
                    ToolCall {
                        id: String::new(),
                        kind: ToolKind::Function,
                        function: FunctionCall {
                            name: String::new(),
                            arguments: String::new(),
                        },
                    },
                ));
                self.calls.len() - 1
            }
        };
        let call = &mut self.calls[pos].1;
        if let Some(id) = &d.id {
            call.id.push_str(id);
        }
        if let Some(name) = &d.name {
            call.function.name.push_str(name);
        }
        if let Some(args) = &d.arguments {
            call.function.arguments.push_str(args);
        }
    }

    pub fn finish(self) -> Vec<ToolCall> {
        self.calls.into_iter().map(|(_, c)| c).collect()
    }
}

/// Whether a relayed JSON value is an object (it has been parsed as valid JSON already).
pub fn is_object(raw: &RawValue) -> bool {
    raw.get().trim_start().starts_with('{')
}
