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

/// The tools of a request: palisade's own (`search_documents`, when offered) and the
/// ones the client declared. A call of any other tool is dropped: the client never
/// declared it, so it cannot run it (a model steered by a poisoned passage may well
/// ask for one), and palisade does not either.
#[derive(Debug, Clone, Default)]
pub struct Toolbox {
    ours: bool,
    declared: std::collections::HashSet<String>,
}

impl Toolbox {
    pub fn new(ours: bool, declared: impl IntoIterator<Item = String>) -> Self {
        let mut declared: std::collections::HashSet<String> = declared.into_iter().collect();
        if ours {
            declared.remove(SEARCH_TOOL);
        }
        Self { ours, declared }
    }

    fn route_of(&self, name: &str) -> Kind {
        if self.ours && name == SEARCH_TOOL {
            Kind::Ours
        } else if self.declared.contains(name) {
            Kind::Client
        } else {
            Kind::Undeclared
        }
    }
}

enum Kind {
    Ours,
    Client,
    Undeclared,
}

/// Splits a model's tool calls into palisade's own and the client's; calls of tools no
/// one declared are dropped (logged, by count only: names are model output).
pub fn split_calls(calls: Vec<ToolCall>, tools: &Toolbox) -> (Vec<ToolCall>, Vec<ToolCall>) {
    let (mut ours, mut theirs, mut dropped) = (Vec::new(), Vec::new(), 0usize);
    for c in calls {
        match tools.route_of(&c.function.name) {
            Kind::Ours => ours.push(c),
            Kind::Client => theirs.push(c),
            Kind::Undeclared => dropped += 1,
        }
    }
    if dropped > 0 {
        tracing::warn!(
            dropped,
            "the model called tools the request did not declare; dropped"
        );
    }
    (ours, theirs)
}

/// Where the pieces of one streamed tool call go.
enum Route {
    /// Not named yet: held until the piece with the name arrives.
    Undecided(Vec<ToolCallDelta>),
    /// A client tool: relayed at once, under this index.
    Relay(u32),
    /// palisade's own: kept.
    Ours,
    /// A tool no one declared: dropped.
    Dropped,
}

/// Routes streamed tool-call pieces: the client's calls are relayed as they arrive
/// (renumbered from 0 in the order they start), palisade's own are held back.
pub struct DeltaRouter {
    tools: Toolbox,
    routes: HashMap<u32, Route>,
    relayed: u32,
}

impl DeltaRouter {
    pub fn new(tools: Toolbox) -> Self {
        Self {
            tools,
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
            Route::Ours | Route::Dropped => Vec::new(),
            Route::Undecided(held) => {
                let Some(name) = d.name.clone() else {
                    held.push(d);
                    return Vec::new();
                };
                let mut pieces = std::mem::take(held);
                pieces.push(d);
                match self.tools.route_of(&name) {
                    Kind::Ours => {
                        *route = Route::Ours;
                        return Vec::new();
                    }
                    Kind::Undeclared => {
                        *route = Route::Dropped;
                        return Vec::new();
                    }
                    Kind::Client => {}
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
        let mut r = DeltaRouter::new(Toolbox::new(true, ["get_weather".to_owned()]));
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
        // A tool no one declared is never relayed.
        assert!(
            r.route(piece(2, Some("delete_everything"), "{}"))
                .is_empty()
        );
        assert!(r.route(piece(2, None, "{\"all\":true}")).is_empty());
        assert!(r.relayed_any());
    }
}
