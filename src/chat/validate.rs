//! Checks on what the client sends beyond the question: the options are in range and
//! bounded where they cost money, tool declarations are well-formed and do not take
//! palisade's own tool's name, and messages fit the model (images only where the model
//! is marked multimodal). A request that fails is refused whole, before anything runs.

use std::collections::HashSet;

use super::ChatError;
use super::tools::{SEARCH_TOOL, search_tool_def};
use crate::llm::message::is_object;
use crate::llm::{
    ChatMessage, Content, ContentPart, Model, Options, ResponseFormatKind, Stop, ToolChoice,
    ToolChoiceMode,
};
use crate::model::Role;
use crate::threads::Threads;

const MAX_TOOLS: usize = 128;
const MAX_STOP: usize = 4;
const MAX_STOP_CHARS: usize = 256;
const MAX_IMAGES: usize = 16;
/// Answers per request: each is paid for, and budgets are charged after the fact.
const MAX_CHOICES: u32 = 8;
const MAX_LOGIT_BIAS: usize = 1024;

fn invalid(m: &'static str) -> ChatError {
    ChatError::Invalid(m)
}

/// A function or schema name as OpenAI accepts it: `^[A-Za-z0-9_-]{1,64}$`.
fn valid_name(n: &str) -> bool {
    (1..=64).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn in_range(v: Option<f64>, lo: f64, hi: f64) -> bool {
    v.is_none_or(|x| x.is_finite() && (lo..=hi).contains(&x))
}

/// Validates and bounds `o` for `model`; adds `search_documents` when palisade offers it.
/// `stateless`: the answer is not stored in a thread (so several choices may be asked).
pub fn options(
    o: &mut Options,
    model: &Model,
    search_tool: bool,
    stateless: bool,
) -> Result<(), ChatError> {
    if model.speaks_responses() {
        // Refused rather than dropped: the client would believe they applied.
        let unsupported = [
            (
                o.stop.is_some(),
                "stop is not available with this model (its upstream speaks the Responses API).",
            ),
            (
                o.seed.is_some(),
                "seed is not available with this model (its upstream speaks the Responses API).",
            ),
            (
                o.presence_penalty.is_some() || o.frequency_penalty.is_some(),
                "presence_penalty and frequency_penalty are not available with this model (its upstream speaks the Responses API).",
            ),
            (
                o.logit_bias.is_some(),
                "logit_bias is not available with this model (its upstream speaks the Responses API).",
            ),
            (
                o.n.is_some_and(|n| n > 1),
                "n above 1 is not available with this model (its upstream speaks the Responses API).",
            ),
        ];
        if let Some((_, m)) = unsupported.iter().find(|(bad, _)| *bad) {
            return Err(invalid(m));
        }
    }
    match o.n {
        Some(0) => return Err(invalid("n must be at least 1.")),
        Some(n) if n > MAX_CHOICES => return Err(invalid("n may be at most 8.")),
        Some(n) if n > 1 && !stateless => {
            return Err(invalid(
                "n above 1 is not available with X-Palisade-Thread: a thread stores one answer.",
            ));
        }
        Some(n) if n > 1 && search_tool => {
            return Err(invalid(
                "n above 1 is not available while palisade offers search_documents (rag.tool).",
            ));
        }
        _ => {}
    }
    if let Some(k) = o.top_logprobs {
        if k > 20 {
            return Err(invalid("top_logprobs must be between 0 and 20."));
        }
        if o.logprobs != Some(true) {
            return Err(invalid("top_logprobs needs logprobs set to true."));
        }
    }
    if let Some(bias) = &o.logit_bias {
        if bias.len() > MAX_LOGIT_BIAS {
            return Err(invalid("logit_bias takes at most 1024 tokens."));
        }
        let valid = bias.iter().all(|(token, v)| {
            token.parse::<u32>().is_ok() && v.as_i64().is_some_and(|b| (-100..=100).contains(&b))
        });
        if !valid {
            return Err(invalid(
                "logit_bias maps token ids to whole numbers between -100 and 100.",
            ));
        }
    }
    if !in_range(o.temperature, 0.0, 2.0) {
        return Err(invalid("temperature must be between 0 and 2."));
    }
    if !in_range(o.top_p, 0.0, 1.0) {
        return Err(invalid("top_p must be between 0 and 1."));
    }
    if !in_range(o.presence_penalty, -2.0, 2.0) || !in_range(o.frequency_penalty, -2.0, 2.0) {
        return Err(invalid(
            "presence_penalty and frequency_penalty must be between -2 and 2.",
        ));
    }
    // Output tokens cost money: capped, and asked for explicitly when the client says
    // nothing, so no request runs to the model's own limit.
    let cap = model.max_tokens();
    if o.max_tokens == Some(0) || o.max_completion_tokens == Some(0) {
        return Err(invalid("max_tokens must be at least 1."));
    }
    o.max_tokens = o.max_tokens.map(|t| t.min(cap));
    o.max_completion_tokens = o.max_completion_tokens.map(|t| t.min(cap));
    if o.max_tokens.is_none() && o.max_completion_tokens.is_none() {
        o.max_tokens = Some(cap);
    }
    match &o.stop {
        Some(Stop::Many(v)) if v.len() > MAX_STOP => {
            return Err(invalid("stop takes at most 4 sequences."));
        }
        Some(Stop::One(s)) if s.chars().count() > MAX_STOP_CHARS => {
            return Err(invalid("A stop sequence is too long."));
        }
        Some(Stop::Many(v)) if v.iter().any(|s| s.chars().count() > MAX_STOP_CHARS) => {
            return Err(invalid("A stop sequence is too long."));
        }
        _ => {}
    }
    if let Some(f) = &o.response_format {
        match (f.kind, &f.json_schema) {
            (ResponseFormatKind::JsonSchema, Some(js)) => {
                if !valid_name(&js.name) {
                    return Err(invalid(
                        "response_format.json_schema.name must be 1 to 64 letters, digits, _ or -.",
                    ));
                }
                if js.schema.as_deref().is_some_and(|s| !is_object(s)) {
                    return Err(invalid(
                        "response_format.json_schema.schema must be an object.",
                    ));
                }
            }
            (ResponseFormatKind::JsonSchema, None) => {
                return Err(invalid("response_format json_schema needs a json_schema."));
            }
            (_, Some(_)) => {
                return Err(invalid(
                    "json_schema belongs only to response_format json_schema.",
                ));
            }
            (_, None) => {}
        }
    }
    if o.tools.len() > MAX_TOOLS {
        return Err(invalid("At most 128 tools may be declared."));
    }
    let mut names = HashSet::new();
    for t in &o.tools {
        let n = t.function.name.as_str();
        if !valid_name(n) {
            return Err(invalid(
                "A tool's name must be 1 to 64 letters, digits, _ or -.",
            ));
        }
        if search_tool && n == SEARCH_TOOL {
            return Err(invalid(
                "The tool name search_documents is palisade's own; choose another.",
            ));
        }
        if t.function
            .parameters
            .as_deref()
            .is_some_and(|p| !is_object(p))
        {
            return Err(invalid("A tool's parameters must be a JSON Schema object."));
        }
        if !names.insert(n) {
            return Err(invalid("Two tools have the same name."));
        }
    }
    match &o.tool_choice {
        Some(ToolChoice::Named { function, .. }) if !names.contains(function.name.as_str()) => {
            return Err(invalid("tool_choice names a tool that is not declared."));
        }
        Some(ToolChoice::Mode(ToolChoiceMode::Required)) if o.tools.is_empty() => {
            return Err(invalid("tool_choice \"required\" needs tools."));
        }
        _ => {}
    }
    if search_tool {
        o.tools.push(search_tool_def());
    }
    Ok(())
}

/// Validates a stateless conversation for `model`.
pub fn messages(msgs: &[ChatMessage], model: &Model, threads: &Threads) -> Result<(), ChatError> {
    let mut images = 0;
    for m in msgs {
        let text = m.text();
        match m.role.role {
            Role::User | Role::System => threads.validate_content(&text)?,
            Role::Assistant => {
                threads.validate_length(&text)?;
                if m.content.is_none() && m.tool_calls.is_empty() && m.refusal.is_none() {
                    return Err(invalid(
                        "An assistant message needs content, a refusal or tool_calls.",
                    ));
                }
            }
            Role::Tool => {
                threads.validate_length(&text)?;
                if m.tool_call_id.is_none() {
                    return Err(invalid("A tool message needs a tool_call_id."));
                }
            }
        }
        if let Some(Content::Parts(parts)) = &m.content {
            for p in parts {
                if let ContentPart::Refusal { .. } = p
                    && m.role != Role::Assistant
                {
                    return Err(invalid(
                        "Only assistant messages may contain a refusal part.",
                    ));
                }
                if let ContentPart::ImageUrl { image_url } = p {
                    if m.role != Role::User {
                        return Err(invalid("Only user messages may contain images."));
                    }
                    if !model.multimodal() {
                        return Err(invalid("This model does not accept images."));
                    }
                    let u = image_url.url.as_str();
                    if !(u.starts_with("https://") || u.starts_with("data:image/")) {
                        return Err(invalid(
                            "An image must be an https: URL or a data:image/ URL.",
                        ));
                    }
                    images += 1;
                }
            }
        }
    }
    if images > MAX_IMAGES {
        return Err(invalid("At most 16 images may be sent."));
    }
    Ok(())
}
