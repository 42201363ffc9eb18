//! palisade's own `search_documents` tool, which the model may call when `rag.tool` is
//! on: palisade runs the search itself, under the caller's scope, and the client never
//! sees the call. Only the `query` argument is read: a `tenant`, `roles`, `filter` or
//! `collection` the model invents is ignored, because nothing of the call reaches the
//! scope (it comes from the verified token alone).

use std::collections::HashMap;

use serde_json::{Value, json};

use super::prompt::context_block;
use crate::llm::{FunctionDef, ToolCall, ToolCallDelta, ToolDef, ToolKind};
use crate::model::ChunkHit;

pub const SEARCH_TOOL: &str = "search_documents";

/// The longest query taken from a tool call.
const MAX_QUERY_CHARS: usize = 1000;

pub fn search_tool_def() -> ToolDef {
    let parameters = json!({
        "type": "object",
        "properties": {
            "query": {
                "type": "string",
                "description": "What to look for, in natural language."
            }
        },
        "required": ["query"],
        "additionalProperties": false
    });
    ToolDef {
        kind: ToolKind::Function,
        function: FunctionDef {
            name: SEARCH_TOOL.into(),
            description: Some(
                "Search the organisation's documents that the current user may read. \
                 Returns passages with their document ids and titles."
                    .into(),
            ),
            parameters: serde_json::value::to_raw_value(&parameters).ok(),
            strict: None,
        },
    }
}

/// The search query of a `search_documents` call, and nothing else of its arguments.
pub fn search_query(arguments: &str) -> Option<String> {
    let v: Value = serde_json::from_str(arguments).ok()?;
    let q = v.get("query")?.as_str()?.trim();
    if q.is_empty() {
        return None;
    }
    Some(q.chars().take(MAX_QUERY_CHARS).collect())
}

/// What the model gets back from a search: the passages as one escaped block of
/// untrusted data, as in a prompt.
pub fn render_results(hits: &[ChunkHit]) -> String {
    context_block(hits).unwrap_or_else(|| "No document the user may read matches.".into())
}

pub const BAD_ARGUMENTS: &str =
    "search_documents needs a JSON object with a non-empty \"query\" string.";

/// Splits a model's tool calls into palisade's own and the client's.
pub fn split_calls(calls: Vec<ToolCall>, ours_enabled: bool) -> (Vec<ToolCall>, Vec<ToolCall>) {
    calls
        .into_iter()
        .partition(|c| ours_enabled && c.function.name == SEARCH_TOOL)
}

/// Where the pieces of one streamed tool call go.
enum Route {
    /// Not named yet: held until the piece with the name arrives.
    Undecided(Vec<ToolCallDelta>),
    /// A client tool: relayed at once, under this index.
    Relay(u32),
    /// palisade's own: kept.
    Ours,
}

/// Routes streamed tool-call pieces: the client's calls are relayed as they arrive
/// (renumbered from 0 in the order they start), palisade's own are held back.
pub struct DeltaRouter {
    ours_enabled: bool,
    routes: HashMap<u32, Route>,
    relayed: u32,
}

impl DeltaRouter {
    pub fn new(ours_enabled: bool) -> Self {
        Self {
            ours_enabled,
            routes: HashMap::new(),
            relayed: 0,
        }
    }

    /// The pieces to relay to the client now.
    pub fn route(&mut self, d: ToolCallDelta) -> Vec<ToolCallDelta> {
        let route = self
            .routes
            .entry(d.index)
            .or_insert_with(|| Route::Undecided(Vec::new()));
        match route {
            Route::Relay(i) => vec![ToolCallDelta { index: *i, ..d }],
            Route::Ours => Vec::new(),
            Route::Undecided(held) => {
                let Some(name) = d.name.clone() else {
                    held.push(d);
                    return Vec::new();
                };
                let mut pieces = std::mem::take(held);
                pieces.push(d);
                if self.ours_enabled && name == SEARCH_TOOL {
                    *route = Route::Ours;
                    return Vec::new();
                }
                let index = self.relayed;
                self.relayed += 1;
                *route = Route::Relay(index);
                pieces
                    .into_iter()
                    .map(|p| ToolCallDelta { index, ..p })
                    .collect()
            }
        }
    }

    /// Whether any client call was relayed.
    pub fn relayed_any(&self) -> bool {
        self.relayed > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_query_is_read() {
        assert_eq!(
            search_query(
                r#"{"query":" salaries ","tenant":"other","roles":["exec"],"filter":"*"}"#
            ),
            Some("salaries".into())
        );
        assert_eq!(search_query(r#"{"q":"x"}"#), None);
        assert_eq!(search_query("not json"), None);
        assert_eq!(search_query(r#"{"query":""}"#), None);
    }

    #[test]
    fn client_calls_are_relayed_and_ours_held() {
        let mut r = DeltaRouter::new(true);
        let piece = |index, name: Option<&str>, args: &str| ToolCallDelta {
            index,
            id: name.map(|_| format!("call_{index}")),
            name: name.map(str::to_owned),
            arguments: Some(args.into()),
        };
        assert!(r.route(piece(0, Some(SEARCH_TOOL), "")).is_empty());
        assert!(r.route(piece(0, None, "{}")).is_empty());
        let out = r.route(piece(1, Some("get_weather"), ""));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].index, 0);
        assert_eq!(r.route(piece(1, None, "{\"city\"")).len(), 1);
        assert!(r.relayed_any());
    }
}
