//! The upstream request body: what serialising it costs, palisade's way (messages with
//! sonic-rs, everything else with serde_json, raw schemas copied verbatim) beside
//! serde_json alone and sonic-rs alone — the last one fast but wrong (it writes every raw
//! schema as `{"$serde_json::private::RawValue": "…"}`, the bug the corpus tests catch).
//!
//! Run: `cargo bench --bench relay` (prints a table of p50 per body).

#[path = "common/timing.rs"]
mod timing;

use std::time::Duration;

use timing::measure;

use palisade::llm::message::{FunctionDef, ToolDef};
use palisade::llm::openai::request_body;
use palisade::llm::{Call, ChatMessage, Options, ToolKind};
use palisade::model::Role;
use serde::Serialize;
use serde_json::value::RawValue;

/// The body as one struct, for the single-serialiser variants.
#[derive(Serialize)]
struct Whole<'a> {
    messages: &'a [ChatMessage],
    model: &'a str,
    stream: bool,
    #[serde(flatten)]
    options: &'a Options,
    user: &'a str,
}

/// `n` tools with schemas of about `size` bytes in all (as bench/run declares them).
fn tools(n: usize, size: usize) -> Vec<ToolDef> {
    (0..n)
        .map(|i| {
            let mut props = serde_json::Map::new();
            let mut j = 0;
            while serde_json::to_string(&props).unwrap().len() < size / n - 200 {
                let mut p = serde_json::json!({
                    "type": if j % 3 == 0 { "integer" } else { "string" },
                    "description": format!("Parameter {j} of tool {i}: what the model should put here, in a sentence."),
                });
                if j % 4 == 1 {
                    p["enum"] = serde_json::json!(["low", "medium", "high"]);
                }
                props.insert(format!("field_{j}"), p);
                j += 1;
            }
            let schema = serde_json::json!({"type": "object", "properties": props, "additionalProperties": false});
            ToolDef {
                kind: ToolKind::Function,
                function: FunctionDef {
                    name: format!("tool_{i}"),
                    description: Some(format!("Tool number {i} of the agent.")),
                    parameters: Some(RawValue::from_string(schema.to_string()).unwrap()),
                    strict: None,
                },
            }
        })
        .collect()
}

const BUDGET: Duration = Duration::from_secs(1);

fn main() {
    let question = vec![
        ChatMessage::new(
            Role::System,
            "You are the organisation's internal assistant.",
        ),
        ChatMessage::new(Role::User, "Summarise our travel policy in one sentence."),
    ];
    // A thread's history at the default 3,000-token budget: ~54 messages, ~23 KB.
    let mut history = vec![ChatMessage::new(
        Role::System,
        "You are the organisation's internal assistant.",
    )];
    for i in 0..54 {
        let role = if i % 2 == 0 {
            Role::User
        } else {
            Role::Assistant
        };
        history.push(ChatMessage::new(
            role,
            format!("Message {i}: the travel policy books flights under six hours in economy; \"quotes\", a tab\there, ünïcode — and a line\nbreak. ").repeat(3),
        ));
    }
    let small = Options::default();
    let agent = Options {
        tools: tools(20, 30_000),
        ..Options::default()
    };
    println!(
        "| body | bytes | palisade (split) | serde_json alone | sonic-rs alone (wrong for schemas) |"
    );
    println!("|---|---|---|---|---|");
    for (name, messages, options) in [
        ("small completion", &question, &small),
        ("thread history (54 messages)", &history, &small),
        ("20 tools, 30 KB of schemas", &question, &agent),
    ] {
        let call = Call {
            messages,
            options,
            user: "QWxhZGRpbjpvcGVuIHNlc2E",
            passages: &[],
        };
        let whole = Whole {
            messages,
            model: "gpt-4o-mini",
            stream: false,
            options,
            user: call.user,
        };
        let bytes = request_body("gpt-4o-mini", &call, false).unwrap().len();
        let (split, _) = measure(BUDGET, || {
            request_body("gpt-4o-mini", &call, false).unwrap().len()
        });
        let (json, _) = measure(BUDGET, || serde_json::to_vec(&whole).unwrap().len());
        let (sonic, _) = measure(BUDGET, || sonic_rs::to_vec(&whole).unwrap().len());
        let us = |d: Duration| format!("{:.1} µs", d.as_nanos() as f64 / 1e3);
        println!(
            "| {name} | {bytes} | {} | {} | {} |",
            us(split),
            us(json),
            us(sonic)
        );
    }
}
