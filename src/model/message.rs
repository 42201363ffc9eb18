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

/// The documents whose text was in the model's context when a message was produced:
/// the passages retrieved for its turn (up front or by the search tool) and the
/// provenance of every earlier message in that prompt, so it is inherited along the
/// conversation. A reader who may no longer read one of them is not shown the message,
/// and a prompt is built as if it were absent. Messages the model did not write (the
/// user's, a client's tool results) have none.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Provenance(std::collections::BTreeSet<String>);

impl Provenance {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn add(&mut self, document_id: &str) {
        if !self.0.contains(document_id) {
            self.0.insert(document_id.to_owned());
        }
    }

    /// Adds every document of `other` (a message this one saw in its prompt).
    pub fn inherit(&mut self, other: &Provenance) {
        for d in &other.0 {
            self.add(d);
        }
    }

    /// The document ids, sorted.
    pub fn documents(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

impl<'a> FromIterator<&'a str> for Provenance {
    fn from_iter<I: IntoIterator<Item = &'a str>>(iter: I) -> Self {
        Self(iter.into_iter().map(str::to_owned).collect())
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
    pub provenance: Provenance,
    pub created_at: i64,
    /// An answer its reader stopped mid-stream: kept as far as it came.
    pub stopped: bool,
    /// A question asked again: the `seq` of the first asking. The messages from there to
    /// this one are out of the conversation (see [`without_retried`]).
    pub retries: Option<i64>,
}

impl MessageRecord {
    /// Every document this message drew on: its provenance and what it cites.
    pub fn drew_on(&self) -> impl Iterator<Item = &str> {
        self.provenance
            .documents()
            .chain(self.citations.iter().map(|c| c.document_id.as_str()))
    }
}

/// `messages` (oldest first) without those a later question asked again: for each
/// message that retries `seq` n, the messages from n up to it.
pub fn without_retried(messages: &mut Vec<MessageRecord>) {
    let ranges: Vec<(i64, i64)> = messages
        .iter()
        .filter_map(|m| m.retries.map(|from| (from, m.seq)))
        .collect();
    if !ranges.is_empty() {
        messages.retain(|m| {
            !ranges
                .iter()
                .any(|(from, to)| (*from..*to).contains(&m.seq))
        });
    }
}

/// The token estimate every budget uses: about four characters a token, plus a few for
/// the message frame.
pub fn approx_tokens(text: &str) -> usize {
    text.chars().count() / 4 + 4
}
