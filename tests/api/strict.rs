//! The stand-in upstream's rules: a chat-completions request that OpenAI refuses is
//! refused here too, with OpenAI's error shape (`400 {"error": {"message", "type":
//! "invalid_request_error", "param", "code"}}`).
//!
//! * The body must validate against `CreateChatCompletionRequest` of OpenAI's published
//!   OpenAPI document, vendored unchanged in `tests/openai/openapi.json` (source and
//!   digest in `tests/openai/README.md`; the digest is checked when it is loaded).
//!   OpenAPI's `nullable: true` is read as "or null" and a `oneOf` with a
//!   `discriminator` as the alternative it picks, as OpenAI's servers do.
//! * No top-level field the document does not name ("Unrecognized request argument").
//! * A function's `parameters` and `response_format.json_schema.schema` must be JSON
//!   Schemas of `"type": "object"`, valid under their meta-schema; with `strict: true`,
//!   every object must list all its properties in `required` and set
//!   `additionalProperties: false` (Structured Outputs' rules).
//! * Function and schema names match `^[a-zA-Z0-9_-]{1,64}$`; at most 128 tools.
//! * Every `tool` message answers a call of the assistant message before it, and every
//!   call of an assistant message is answered before the conversation goes on.
//! * `stream_options` only with `stream: true`; `top_logprobs` only with `logprobs`.
//!
//! The OpenAPI document alone is more lenient than OpenAI in places (it types
//! `parameters` as any object, so `{"$serde_json::private::RawValue": "…"}` passes it);
//! the rules after the first close those gaps.

use serde_json::{Map, Value, json};
use std::collections::HashSet;
use std::sync::OnceLock;

/// The SHA-256 of the vendored OpenAPI document (see `tests/openai/README.md`).
const SPEC_SHA256: &str = "bbfd19abcde0e7412da99378deb2a959ccdd3a812f97c9e35901921e8e973f9a";

/// Why a request was refused, as OpenAI says it.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub message: String,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl Refusal {
    fn new(message: impl Into<String>, param: Option<&str>) -> Self {
        Self {
            message: message.into(),
            param: param.map(str::to_owned),
            code: None,
        }
    }

    fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// OpenAI's error body.
    pub fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": "invalid_request_error",
            "param": self.param,
            "code": self.code,
        }})
    }
}

/// One request schema of the document: its validator and the top-level fields it names.
struct Request {
    validator: jsonschema::Validator,
    fields: HashSet<String>,
}

struct Spec {
    chat: Request,
    embeddings: Request,
    responses: Request,
}

fn spec() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openai/openapi.json");
        let bytes = std::fs::read(path).expect("the vendored OpenAPI document");
        let digest = sha256_hex(&bytes);
        assert_eq!(digest, SPEC_SHA256, "tests/openai/openapi.json was changed");
        let doc: Value = serde_json::from_slice(&bytes).expect("OpenAPI JSON");
        let mut schemas = doc["components"]["schemas"].clone();
        as_json_schema(&mut schemas);
        let request = |name: &str| {
            let root = json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "$ref": format!("#/components/schemas/{name}"),
                "components": {"schemas": schemas},
            });
            Request {
                validator: jsonschema::options()
                    .with_draft(jsonschema::Draft::Draft202012)
                    .build(&root)
                    .unwrap_or_else(|e| panic!("{name} compiles: {e}")),
                fields: top_level_fields(&schemas, name),
            }
        };
        Spec {
            chat: request("CreateChatCompletionRequest"),
            embeddings: request("CreateEmbeddingRequest"),
            responses: request("CreateResponse"),
        }
    })
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The document's OpenAPI keywords in plain JSON Schema: 3.0's `nullable: true` (which
/// the document still uses beside 3.1's `{"type": "null"}`) is "the schema or null"; a
/// `oneOf` with a `discriminator` is the alternative the discriminator picks, which
/// JSON Schema can only say as `anyOf` (as plain `oneOf`, a user message fits both the
/// short and the long message shape, and OpenAI's own example bodies fail).
fn as_json_schema(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for child in m.values_mut() {
                as_json_schema(child);
            }
            if m.contains_key("discriminator")
                && let Some(one_of) = m.remove("oneOf")
            {
                m.insert("anyOf".into(), one_of);
            }
            if m.remove("nullable") == Some(Value::Bool(true)) {
                let inner = Value::Object(std::mem::take(m));
                m.insert("anyOf".into(), json!([inner, {"type": "null"}]));
            }
        }
        Value::Array(a) => a.iter_mut().for_each(as_json_schema),
        _ => {}
    }
}

/// The properties a schema names, through `allOf` and `$ref`.
fn top_level_fields(schemas: &Value, name: &str) -> HashSet<String> {
    fn walk(schemas: &Value, s: &Value, out: &mut HashSet<String>) {
        if let Some(r) = s["$ref"].as_str()
            && let Some(name) = r.strip_prefix("#/components/schemas/")
        {
            walk(schemas, &schemas[name], out);
        }
        if let Some(props) = s["properties"].as_object() {
            out.extend(props.keys().cloned());
        }
        for key in ["allOf", "anyOf"] {
            for part in s[key].as_array().into_iter().flatten() {
                walk(schemas, part, out);
            }
        }
    }
    let mut out = HashSet::new();
    walk(schemas, &schemas[name], &mut out);
    out
}

/// A JSON text as a `Value`, exactly as any other JSON parser reads it.
///
/// Not `serde_json::from_slice`: with serde_json's `raw_value` feature on (palisade
/// turns it on, and features are shared in a build), its `Value` parser treats an
/// object whose only key is `$serde_json::private::RawValue` as serde_json's private
/// raw-value wrapper and returns the *unwrapped* schema. That is how a stand-in parsing
/// with serde_json would see the very bug it is here to catch as a correct schema.
/// sonic-rs has no such convention; its tree is converted member by member.
pub fn parse(body: &[u8]) -> Option<Value> {
    let v: sonic_rs::Value = sonic_rs::from_slice(body).ok()?;
    serde_json::to_value(&v).ok()
}

/// The body parsed, with no field its schema does not name, valid under the schema.
fn check_against(body: &[u8], schema: &Request) -> Result<Value, Refusal> {
    let req: Value = parse(body)
        .ok_or_else(|| Refusal::new("We could not parse the JSON body of your request.", None))?;
    let obj = req
        .as_object()
        .ok_or_else(|| Refusal::new("The request body must be a JSON object.", None))?;
    for key in obj.keys() {
        if !schema.fields.contains(key) {
            return Err(Refusal::new(
                format!("Unrecognized request argument supplied: {key}"),
                None,
            ));
        }
    }
    if let Some(e) = schema.validator.iter_errors(&req).next() {
        let at = e.instance_path().to_string();
        return Err(
            Refusal::new(format!("Invalid value at '{at}': {e}"), Some(&at)).code("invalid_value"),
        );
    }
    Ok(req)
}

/// Checks a `POST /v1/embeddings` body as OpenAI would.
pub fn check_embedding_request(body: &[u8]) -> Result<Value, Refusal> {
    check_against(body, &spec().embeddings)
}

/// Checks a `POST /v1/responses` body as OpenAI would: the document's schema, the
/// function tools' schemas (flat: `name`, `parameters`, `strict`), the text format's
/// schema, and every function call output answering a function call before it.
pub fn check_responses_request(body: &[u8]) -> Result<Value, Refusal> {
    let req = check_against(body, &spec().responses)?;
    for (i, t) in req["tools"].as_array().into_iter().flatten().enumerate() {
        if t["type"] != "function" {
            continue;
        }
        let name = t["name"].as_str().unwrap_or("");
        if !valid_name(name) {
            return Err(Refusal::new(
                format!("Invalid 'tools[{i}].name': string does not match pattern."),
                Some(&format!("tools[{i}].name")),
            ));
        }
        check_schema(
            &t["parameters"],
            &format!("function '{name}'"),
            t["strict"] == Value::Bool(true),
        )
        .map_err(|m| Refusal::new(m, Some(&format!("tools[{i}].parameters"))))?;
    }
    let format = &req["text"]["format"];
    if format["type"] == "json_schema" {
        let name = format["name"].as_str().unwrap_or("");
        if !valid_name(name) {
            return Err(Refusal::new(
                "Invalid 'text.format.name': string does not match pattern.",
                Some("text.format.name"),
            ));
        }
        check_schema(
            &format["schema"],
            &format!("text.format '{name}'"),
            format["strict"] == Value::Bool(true),
        )
        .map_err(|m| Refusal::new(m, Some("text.format.schema")))?;
    }
    let mut calls: HashSet<&str> = HashSet::new();
    for item in req["input"].as_array().into_iter().flatten() {
        match item["type"].as_str() {
            Some("function_call") => {
                calls.insert(item["call_id"].as_str().unwrap_or(""));
            }
            Some("function_call_output") => {
                let id = item["call_id"].as_str().unwrap_or("");
                if !calls.contains(id) {
                    return Err(Refusal::new(
                        format!("No tool call found for function call output with call_id {id}."),
                        Some("input"),
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(req)
}

/// Checks a `POST /v1/chat/completions` body as OpenAI would; the parsed body if it
/// passes.
pub fn check_chat_request(body: &[u8]) -> Result<Value, Refusal> {
    let req = check_against(body, &spec().chat)?;
    let Some(obj) = req.as_object() else {
        return Err(Refusal::new(
            "The request body must be a JSON object.",
            None,
        ));
    };
    check_tools(obj)?;
    check_response_format(obj)?;
    check_tool_exchanges(obj)?;
    if obj.contains_key("stream_options") && obj.get("stream") != Some(&Value::Bool(true)) {
        return Err(Refusal::new(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            Some("stream_options"),
        ));
    }
    if obj.get("top_logprobs").is_some_and(|v| !v.is_null())
        && obj.get("logprobs") != Some(&Value::Bool(true))
    {
        return Err(Refusal::new(
            "Invalid value for 'top_logprobs': 'logprobs' must be set to true.",
            Some("top_logprobs"),
        ));
    }
    Ok(req)
}

fn valid_name(n: &str) -> bool {
    (1..=64).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn check_tools(obj: &Map<String, Value>) -> Result<(), Refusal> {
    let Some(tools) = obj.get("tools").and_then(Value::as_array) else {
        return Ok(());
    };
    if tools.len() > 128 {
        return Err(Refusal::new(
            format!(
                "Invalid 'tools': array too long. Expected an array with maximum length 128, but got an array with length {} instead.",
                tools.len()
            ),
            Some("tools"),
        )
        .code("array_above_max_length"));
    }
    for (i, t) in tools.iter().enumerate() {
        let f = &t["function"];
        let name = f["name"].as_str().unwrap_or("");
        if !valid_name(name) {
            return Err(Refusal::new(
                format!("Invalid 'tools[{i}].function.name': string does not match pattern."),
                Some(&format!("tools[{i}].function.name")),
            )
            .code("invalid_value"));
        }
        if let Some(params) = f.get("parameters") {
            let what = format!("function '{name}'");
            check_schema(params, &what, f["strict"] == Value::Bool(true))
                .map_err(|m| Refusal::new(m, Some(&format!("tools[{i}].function.parameters"))))?;
        }
    }
    Ok(())
}

fn check_response_format(obj: &Map<String, Value>) -> Result<(), Refusal> {
    let Some(rf) = obj.get("response_format") else {
        return Ok(());
    };
    if rf["type"] != "json_schema" {
        return Ok(());
    }
    let js = &rf["json_schema"];
    let name = js["name"].as_str().unwrap_or("");
    if !valid_name(name) {
        return Err(Refusal::new(
            "Invalid 'response_format.json_schema.name': string does not match pattern.",
            Some("response_format.json_schema.name"),
        ));
    }
    if let Some(schema) = js.get("schema") {
        let what = format!("response_format '{name}'");
        check_schema(schema, &what, js["strict"] == Value::Bool(true))
            .map_err(|m| Refusal::new(m, Some("response_format")))?;
    }
    Ok(())
}

/// A tool's or a response format's schema: an object schema, valid under the JSON
/// Schema meta-schema, and within Structured Outputs' rules when strict.
fn check_schema(schema: &Value, what: &str, strict: bool) -> Result<(), String> {
    let ty = match &schema["type"] {
        Value::String(s) => s.clone(),
        Value::Null => "None".to_owned(),
        other => other.to_string(),
    };
    if ty != "object" {
        return Err(format!(
            "Invalid schema for {what}: schema must be a JSON Schema of 'type: \"object\"', got 'type: \"{ty}\"'."
        ));
    }
    const DRAFTS: [&str; 5] = [
        "https://json-schema.org/draft/2020-12/schema",
        "https://json-schema.org/draft/2019-09/schema",
        "http://json-schema.org/draft-07/schema#",
        "http://json-schema.org/draft-06/schema#",
        "http://json-schema.org/draft-04/schema#",
    ];
    if let Some(s) = schema.get("$schema").and_then(Value::as_str)
        && !DRAFTS.contains(&s.trim_end_matches('#'))
        && !DRAFTS.contains(&s)
    {
        return Err(format!("Invalid schema for {what}: unknown $schema."));
    }
    if let Err(e) = jsonschema::meta::validate(schema) {
        return Err(format!(
            "Invalid schema for {what}: In context={}, {e}",
            e.instance_path()
        ));
    }
    if strict {
        strict_rules(schema, "root").map_err(|m| format!("Invalid schema for {what}: {m}"))?;
    }
    Ok(())
}

/// Structured Outputs: every object closes its properties and requires all of them.
fn strict_rules(s: &Value, at: &str) -> Result<(), String> {
    let Some(m) = s.as_object() else {
        return Ok(());
    };
    let is_object = m.get("type") == Some(&json!("object"))
        || m.get("type")
            .and_then(Value::as_array)
            .is_some_and(|t| t.contains(&json!("object")))
        || m.contains_key("properties");
    if is_object {
        if m.get("additionalProperties") != Some(&Value::Bool(false)) {
            return Err(format!(
                "In context=({at}), 'additionalProperties' is required to be supplied and to be false."
            ));
        }
        let props: Vec<&String> = m
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| p.keys().collect())
            .unwrap_or_default();
        let required: HashSet<&str> = m
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for p in props {
            if !required.contains(p.as_str()) {
                return Err(format!(
                    "In context=({at}), 'required' is required to be supplied and to be an array including every key in properties. Missing '{p}'."
                ));
            }
        }
    }
    for (k, v) in m {
        match k.as_str() {
            "properties" | "$defs" | "definitions" => {
                for (name, sub) in v.as_object().into_iter().flatten() {
                    strict_rules(sub, &format!("{at}, '{k}', '{name}'"))?;
                }
            }
            "items" => strict_rules(v, &format!("{at}, 'items'"))?,
            "anyOf" | "allOf" | "prefixItems" => {
                for (i, sub) in v.as_array().into_iter().flatten().enumerate() {
                    strict_rules(sub, &format!("{at}, '{k}', '{i}'"))?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn unanswered(open: &[String]) -> Refusal {
    Refusal::new(
        format!(
            "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. The following tool_call_ids did not have response messages: {}",
            open.join(", ")
        ),
        Some("messages"),
    )
}

/// Tool results follow their calls, and calls get their results.
fn check_tool_exchanges(obj: &Map<String, Value>) -> Result<(), Refusal> {
    let messages = obj["messages"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    // The calls of the latest assistant message not yet answered.
    let mut open: Vec<String> = Vec::new();
    let mut answerable: HashSet<String> = HashSet::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m["role"].as_str().unwrap_or("");
        if role == "tool" {
            let id = m["tool_call_id"].as_str().unwrap_or("");
            if !answerable.contains(id) {
                return Err(Refusal::new(
                    "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.",
                    Some(&format!("messages.[{i}].role")),
                ));
            }
            open.retain(|c| c != id);
            continue;
        }
        if !open.is_empty() {
            return Err(unanswered(&open));
        }
        answerable.clear();
        if role == "assistant" {
            for c in m["tool_calls"].as_array().into_iter().flatten() {
                if let Some(id) = c["id"].as_str() {
                    open.push(id.to_owned());
                    answerable.insert(id.to_owned());
                }
            }
        }
    }
    if !open.is_empty() {
        return Err(unanswered(&open));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stand-in reads the wrapper as the object it is, where serde_json's own
    /// `Value` parser (in this build) would unwrap it.
    #[test]
    fn the_raw_value_wrapper_is_read_as_written() {
        let text = r#"{"$serde_json::private::RawValue": "{\"type\": \"object\"}"}"#;
        let seen = parse(text.as_bytes()).unwrap();
        assert_eq!(
            seen.as_object().unwrap().keys().next().unwrap(),
            "$serde_json::private::RawValue"
        );
        let naive: Value = serde_json::from_str(text).unwrap();
        assert_eq!(naive, json!({"type": "object"}), "serde_json unwraps it");
    }
}
