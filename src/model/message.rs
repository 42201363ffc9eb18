//! A conversation's messages: who spoke, what they said, the tool exchanges and the
//! passages an answer cites. The same words for the store, the model's wire format and
//! the HTTP face.

/// A conversation, without its messages.
#[derive(Debug, Clone)]
pub struct ThreadRecord {
    pub id: String,
    pub title: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub message_count: u32,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    System,
    User,
    Assistant,
    /// The result of a tool call, answering one call of the assistant message before it.
    Tool,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "system" => Some(Role::System),
            "user" => Some(Role::User),
            "assistant" => Some(Role::Assistant),
            "tool" => Some(Role::Tool),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Citation {
    pub document_id: String,
    pub title: String,
    pub chunk_id: String,
}

/// A function call the model asked for, in the OpenAI shape
/// (`{"id", "type": "function", "function": {"name", "arguments"}}`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: ToolKind,
    pub function: FunctionCall,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ToolKind {
    Function,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct FunctionCall {
    pub name: String,
    /// JSON text, as the model wrote it (it may not even be valid JSON).
    pub arguments: String,
}

/// What makes a message part of a tool exchange.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolData {
    /// An assistant message asking for these calls.
    Calls(Vec<ToolCall>),
    /// A `tool` message: the result of the call with this id.
    Result { call_id: String },
}

impl ToolData {
    pub fn to_json(tool: &Option<ToolData>) -> Option<serde_json::Value> {
        tool.as_ref().and_then(|t| serde_json::to_value(t).ok())
    }
}

#[derive(Debug, Clone)]
pub struct MessageRecord {
    pub id: String,
    /// Position in the thread, from 1: the pagination cursor.
    pub seq: i64,
    pub role: Role,
    pub content: String,
    pub citations: Vec<Citation>,
    pub tool: Option<ToolData>,
    pub created_at: i64,
}

/// The token estimate every budget uses: about four characters a token, plus a few for
/// the message frame.
pub fn approx_tokens(text: &str) -> usize {
    text.chars().count() / 4 + 4
}
