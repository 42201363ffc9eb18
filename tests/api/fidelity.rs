//! The OpenAI face relays exactly what clients send, and what models answer.
//!
//! * The fidelity corpus (`tests/fidelity/*.json`, each with its public source) goes
//!   through palisade stateless and in a thread, as JSON and streamed; what reached the
//!   strict stand-in upstream is compared field by field with what the client sent,
//!   allowing only the changes `docs/agents.md` lists.
//! * The stand-in refuses what OpenAI refuses (so a relay bug cannot pass unseen).
//! * Answers come back exactly: tool-call arguments byte for byte (also reassembled from
//!   a stream), refusals, finish reasons, usage with its details, the fingerprint, log
//!   probabilities, several choices.

use crate::mock::{Mock, Reply, echo_of};
use crate::support::*;
use reqwest::StatusCode;
use serde_json::{Map, Value, json};

const COMPLETIONS: &str = "/v1/chat/completions";
const MODEL: &str = "fidelity";
/// The same upstream model behind the Responses API.
const MODEL_RESPONSES: &str = "fidelity-responses";
const UPSTREAM_MODEL: &str = "gpt-4o-2024-08-06";
const SYSTEM_PROMPT: &str = "FIDELITY-SYSTEM-PROMPT: palisade's own instructions.";
/// `llm.max_tokens`: above every value in the corpus, so none is capped.
const CAP: u64 = 100_000;

struct Entry {
    name: String,
    body: Value,
}

fn corpus() -> Vec<Entry> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fidelity");
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .expect("tests/fidelity")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|p| {
            let v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            assert!(
                v["source"].as_str().is_some_and(|s| s.len() > 10),
                "{p:?} names its source"
            );
            Entry {
                name: p.file_stem().unwrap().to_string_lossy().into_owned(),
                body: v["body"].clone(),
            }
        })
        .collect()
}

/// The first difference between `got` and `want` under the relay's notion of equal:
/// numbers by value, a `null` member the same as an absent one (OpenAI reads them
/// alike), everything else exactly (strings byte for byte after JSON decoding).
pub fn difference(path: &str, got: &Value, want: &Value) -> Option<String> {
    match (got, want) {
        (Value::Number(a), Value::Number(b)) => {
            let same = match (a.as_i64(), b.as_i64(), a.as_u64(), b.as_u64()) {
                (Some(x), Some(y), _, _) => x == y,
                (_, _, Some(x), Some(y)) => x == y,
                _ => a.as_f64() == b.as_f64(),
            };
            (!same).then(|| format!("{path}: {a} != {b}"))
        }
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let x = a.get(k).unwrap_or(&Value::Null);
                let y = b.get(k).unwrap_or(&Value::Null);
                if let Some(d) = difference(&format!("{path}.{k}"), x, y) {
                    return Some(d);
                }
            }
            None
        }
        (Value::Array(a), Value::Array(b)) => {
            if a.len() != b.len() {
                return Some(format!("{path}: {} items != {}", a.len(), b.len()));
            }
            a.iter()
                .zip(b)
                .enumerate()
                .find_map(|(i, (x, y))| difference(&format!("{path}[{i}]"), x, y))
        }
        _ => (got != want).then(|| {
            let show = |v: &Value| v.to_string().chars().take(200).collect::<String>();
            format!("{path}: {} != {}", show(got), show(want))
        }),
    }
}

fn assert_relayed(what: &str, got: &Value, want: &Value) {
    if let Some(d) = difference("", got, want) {
        panic!("{what}: the upstream did not receive what was sent: {d}");
    }
}

/// A message's text, as a thread stores it.
fn text_of(m: &Value) -> String {
    match &m["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn is_instruction(m: &Value) -> bool {
    m["role"] == "system" || m["role"] == "developer"
}

/// The corpus body as this pass's client sends it: our model's name, and JSON or
/// streamed.
fn client_body(body: &Value, stream: bool) -> Value {
    let mut b = body.clone();
    b["model"] = json!(MODEL);
    b["stream"] = json!(stream);
    if !stream {
        b.as_object_mut().unwrap().remove("stream_options");
    }
    b
}

/// Everything but the messages, as the upstream must receive it: the client's fields
/// with the documented changes only.
fn expected_options(client: &Value, stream: bool, user: &str) -> Map<String, Value> {
    let mut e = client.as_object().unwrap().clone();
    e.remove("messages");
    e.insert("model".into(), json!(UPSTREAM_MODEL));
    e.insert("user".into(), json!(user));
    e.insert("stream".into(), json!(stream));
    let usage = client["stream_options"]["include_usage"] == json!(true);
    e.remove("stream_options");
    if stream && usage {
        e.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if !e.contains_key("max_tokens") && !e.contains_key("max_completion_tokens") {
        e.insert("max_tokens".into(), json!(CAP));
    }
    e
}

fn without_messages(v: &Value) -> Value {
    let mut o = v.as_object().unwrap().clone();
    o.remove("messages");
    Value::Object(o)
}

/// Sends `body` and reads the answer's text (JSON, or the streamed deltas joined); on
/// a failure, says why the stand-in refused the relayed request, if it did.
async fn answer_text(
    s: &Server,
    mock: &Mock,
    token: &str,
    thread: Option<&str>,
    body: &Value,
) -> String {
    let mut req = s
        .http
        .post(s.url(COMPLETIONS))
        .bearer_auth(token)
        .json(body);
    if let Some(t) = thread {
        req = req.header("X-Palisade-Thread", t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    if body["stream"] == json!(true) && status == StatusCode::OK {
        let mut text = String::new();
        for e in read_sse(resp).await {
            if e.data == "[DONE]" {
                continue;
            }
            let c: Value = serde_json::from_str(&e.data).unwrap();
            assert!(c.get("error").is_none(), "stream failed: {c}");
            let choice = &c["choices"][0];
            if choice["index"] == 0
                && let Some(d) = choice["delta"]["content"].as_str()
            {
                text.push_str(d);
            }
        }
        return text;
    }
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    assert_eq!(
        status,
        StatusCode::OK,
        "{v}; the stand-in: {:?}",
        mock.refused().last().map(|r| &r.1)
    );
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

async fn fidelity_server() -> (Server, Mock) {
    let mock = Mock::start().await;
    let models = format!(
        r#"[{{name="{MODEL}",base_url="{u}",upstream_model="{UPSTREAM_MODEL}",multimodal=true}},
            {{name="{MODEL_RESPONSES}",base_url="{u}",upstream_model="{UPSTREAM_MODEL}",multimodal=true,api="responses"}}]"#,
        u = mock.base_url
    );
    let cap = CAP.to_string();
    let s = Server::in_process_with(&[
        ("PALISADE_LLM__MODELS", &models),
        ("PALISADE_LLM__MAX_TOKENS", &cap),
        ("PALISADE_LLM__SYSTEM_PROMPT", SYSTEM_PROMPT),
        ("PALISADE_LLM__READ_TIMEOUT", "5s"),
        // 4 requests per corpus body, and threads' set-up turns.
        ("PALISADE_THREADS__CHAT_REQUESTS_PER_MINUTE", "10000"),
        ("PALISADE_THREADS__MAX_THREADS_PER_USER", "10000"),
    ]);
    (s, mock)
}

#[tokio::test]
async fn the_corpus_reaches_the_upstream_exactly_on_every_path() {
    let corpus = corpus();
    assert!(corpus.len() >= 40, "{} corpus entries", corpus.len());
    let (s, mock) = fidelity_server().await;
    let acme = seed_acme(&s);
    let a = s.login("alice", &acme.alice).await;
    let admin = s.login("adam", &acme.adam).await;
    let alice = s.user_id(&admin.access, "alice").await;
    let system = json!({"role": "system", "content": SYSTEM_PROMPT});
    let mut thread_refusals = 0;

    for e in &corpus {
        for stream in [false, true] {
            let what = format!("{} ({})", e.name, if stream { "streamed" } else { "JSON" });
            let client = client_body(&e.body, stream);
            let want_options = expected_options(&client, stream, &alice);

            // Stateless: the client's whole conversation after palisade's prompt.
            let text = answer_text(&s, &mock, &a.access, None, &client).await;
            let got = mock.requests().pop().unwrap();
            assert_relayed(
                &format!("{what} stateless options"),
                &without_messages(&got),
                &Value::Object(want_options.clone()),
            );
            let mut want_messages = vec![system.clone()];
            for m in client["messages"].as_array().unwrap() {
                let mut m = m.clone();
                if m["role"] == "tool" {
                    m.as_object_mut().unwrap().remove("name");
                }
                want_messages.push(m);
            }
            assert_relayed(
                &format!("{what} stateless messages"),
                &got["messages"],
                &Value::Array(want_messages),
            );
            assert_eq!(
                text,
                echo_of(&got["messages"]),
                "{what}: the answer relayed"
            );

            // In a thread: the client's instructions and its new messages; the history
            // is the thread's.
            let messages = client["messages"].as_array().unwrap();
            let instructions: Vec<Value> = messages
                .iter()
                .filter(|m| is_instruction(m))
                .cloned()
                .collect();
            let thread = s.new_thread(&a.access, "fidelity").await;
            let images = messages.iter().any(|m| {
                m["content"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|p| p["type"] == "image_url"))
            });
            if images || client["n"].as_u64().is_some_and(|n| n > 1) {
                // Documented: a thread stores text and one answer. Refused, not altered.
                let before = mock.count();
                let resp = s
                    .http
                    .post(s.url(COMPLETIONS))
                    .bearer_auth(&a.access)
                    .header("X-Palisade-Thread", &thread)
                    .json(&client)
                    .send()
                    .await
                    .unwrap();
                let (status, _) = error_code(resp).await;
                assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{what}");
                assert_eq!(
                    mock.count(),
                    before,
                    "{what}: refused, yet the model was called"
                );
                thread_refusals += 1;
                continue;
            }
            let last_assistant = messages.iter().rposition(|m| m["role"] == "assistant");
            let mut want = vec![system.clone()];
            want.extend(instructions.iter().cloned());
            let ends_with_tools = messages.last().is_some_and(|m| m["role"] == "tool");
            if ends_with_tools {
                // The thread must hold the assistant's calls: a first turn asks the
                // question, and the stand-in answers with exactly those calls.
                let ai = last_assistant.unwrap();
                let question = messages[..ai]
                    .iter()
                    .rfind(|m| m["role"] == "user")
                    .unwrap();
                let calls = messages[ai]["tool_calls"].as_array().unwrap();
                mock.push_reply(Reply::Calls(
                    calls
                        .iter()
                        .map(|c| {
                            (
                                c["id"].as_str().unwrap().to_owned(),
                                c["function"]["name"].as_str().unwrap().to_owned(),
                                c["function"]["arguments"].as_str().unwrap().to_owned(),
                            )
                        })
                        .collect(),
                ));
                let mut first = client.clone();
                first["stream"] = json!(false);
                first.as_object_mut().unwrap().remove("stream_options");
                let mut m1 = instructions.clone();
                m1.push(question.clone());
                first["messages"] = json!(m1);
                answer_text(&s, &mock, &a.access, Some(&thread), &first).await;
                want.push(json!({"role": "user", "content": text_of(question)}));
                want.push(json!({"role": "assistant", "content": null, "tool_calls": calls}));
                for m in &messages[ai + 1..] {
                    want.push(json!({"role": "tool", "tool_call_id": m["tool_call_id"], "content": text_of(m)}));
                }
            } else {
                let question = messages.iter().rfind(|m| m["role"] == "user").unwrap();
                want.push(json!({"role": "user", "content": text_of(question)}));
            }
            let text = answer_text(&s, &mock, &a.access, Some(&thread), &client).await;
            let got = mock.requests().pop().unwrap();
            assert_relayed(
                &format!("{what} thread options"),
                &without_messages(&got),
                &Value::Object(want_options),
            );
            assert_relayed(
                &format!("{what} thread messages"),
                &got["messages"],
                &Value::Array(want),
            );
            assert_eq!(
                text,
                echo_of(&got["messages"]),
                "{what}: the answer relayed"
            );
        }
    }
    assert!(thread_refusals > 0 && thread_refusals < corpus.len());
    assert_eq!(
        mock.refused().len(),
        0,
        "the stand-in refused: {:?}",
        mock.refused().first().map(|r| &r.1)
    );
}

/// Posts `body` straight to the stand-in: its status and OpenAI error message.
async fn stand_in(mock: &Mock, body: &Value) -> (StatusCode, String) {
    let resp = reqwest::Client::new()
        .post(format!("{}/chat/completions", mock.base_url))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let v: Value = resp.json().await.unwrap();
    (
        status,
        v["error"]["message"].as_str().unwrap_or("").to_owned(),
    )
}

#[tokio::test]
async fn the_stand_in_refuses_what_openai_refuses() {
    let mock = Mock::start().await;
    let user = json!({"role": "user", "content": "hi"});
    let params =
        json!({"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]});
    let tool = |parameters: Value| {
        json!({"model": "gpt-4o", "messages": [user],
               "tools": [{"type": "function", "function": {"name": "lookup", "parameters": parameters}}]})
    };
    // The accepted shape first: the refusals below are each for their one fault.
    assert_eq!(
        stand_in(&mock, &tool(params.clone())).await.0,
        StatusCode::OK
    );

    // The bug that once reached every upstream: a schema serialised as serde_json's
    // private RawValue wrapper. The OpenAPI document alone lets it pass (it types
    // `parameters` as any object); OpenAI refuses it, and so does the stand-in.
    let wrapper = json!({"$serde_json::private::RawValue": params.to_string()});
    let wrapper_copy = wrapper.clone();
    let (status, msg) = stand_in(&mock, &tool(wrapper.clone())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(msg.contains("type: \"object\""), "{msg}");
    let mut rf = json!({"model": "gpt-4o", "messages": [user], "response_format": {"type": "json_schema",
        "json_schema": {"name": "out", "schema": wrapper}}});
    assert_eq!(stand_in(&mock, &rf).await.0, StatusCode::BAD_REQUEST);
    rf["response_format"]["json_schema"]["schema"] = params.clone();
    assert_eq!(stand_in(&mock, &rf).await.0, StatusCode::OK);

    let cases: Vec<(Value, &str)> = vec![
        // Not a valid JSON Schema (meta-schema).
        (
            tool(json!({"type": "object", "properties": {"q": {"type": "strin"}}})),
            "Invalid schema",
        ),
        (
            tool(json!({"type": "object", "required": "q"})),
            "Invalid schema",
        ),
        // Strict without Structured Outputs' rules.
        (
            json!({"model": "gpt-4o", "messages": [user], "tools": [{"type": "function",
                "function": {"name": "lookup", "strict": true, "parameters": params}}]}),
            "additionalProperties",
        ),
        // Unknown top-level field.
        (
            json!({"model": "gpt-4o", "messages": [user], "temprature": 0.2}),
            "Unrecognized request argument supplied: temprature",
        ),
        // The OpenAPI document: wrong types, empty messages, unknown role.
        (
            json!({"model": "gpt-4o", "messages": [user], "temperature": "hot"}),
            "Invalid value",
        ),
        (json!({"model": "gpt-4o", "messages": []}), "Invalid value"),
        (
            json!({"model": "gpt-4o", "messages": [{"role": "robot", "content": "x"}]}),
            "Invalid value",
        ),
        (json!({"messages": [user]}), "Invalid value"),
        // A tool message with no call before it, and a call never answered.
        (
            json!({"model": "gpt-4o", "messages": [user, {"role": "tool", "tool_call_id": "call_x", "content": "1"}]}),
            "must be a response to a preceeding message with 'tool_calls'",
        ),
        (
            json!({"model": "gpt-4o", "messages": [user,
                {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "user", "content": "never mind"}]}),
            "did not have response messages: call_1",
        ),
        (
            json!({"model": "gpt-4o", "messages": [user], "stream_options": {"include_usage": true}}),
            "only allowed when 'stream' is enabled",
        ),
        (
            json!({"model": "gpt-4o", "messages": [user], "top_logprobs": 2}),
            "'logprobs' must be set to true",
        ),
        (
            json!({"model": "gpt-4o", "messages": [user], "tools": [{"type": "function", "function": {"name": "bad name"}}]}),
            "does not match pattern",
        ),
    ];
    for (body, expect) in cases {
        let (status, msg) = stand_in(&mock, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(msg.contains(expect), "{body}: {msg}");
    }
    // Every refusal was recorded as such.
    // The Responses endpoint likewise: the wrapper as a flat tool's parameters, and a
    // function call output that answers no call.
    let post = |body: Value| {
        let url = format!("{}/responses", mock.base_url);
        async move {
            let r = reqwest::Client::new()
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status();
            let v: Value = r.json().await.unwrap();
            (
                status,
                v["error"]["message"].as_str().unwrap_or("").to_owned(),
            )
        }
    };
    let ok = json!({"model": "gpt-4o", "input": "hi", "tools": [{"type": "function", "name": "lookup", "parameters": params, "strict": false}]});
    assert_eq!(post(ok).await.0, StatusCode::OK);
    let (status, msg) = post(json!({"model": "gpt-4o", "input": "hi",
        "tools": [{"type": "function", "name": "lookup", "parameters": wrapper_copy, "strict": false}]})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(msg.contains("type: \"object\""), "{msg}");
    let (status, msg) = post(json!({"model": "gpt-4o", "input": [
        {"role": "user", "content": "hi"},
        {"type": "function_call_output", "call_id": "call_x", "output": "1"}]}))
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(msg.contains("No tool call found"), "{msg}");
    assert_eq!(mock.refused().len(), 17);
}

#[tokio::test]
async fn answers_come_back_exactly() {
    let (s, mock) = fidelity_server().await;
    let acme = seed_acme(&s);
    let a = s.login("alice", &acme.alice).await;
    let tools = json!([{"type": "function", "function": {"name": "lookup",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]);
    // Arguments as a model may write them: unicode, escapes, spacing, even invalid JSON.
    let args = [
        r#"{"q": "Zürich \"HQ\" \\ 🦀 \u2028", "n": 1.50}"#,
        "{\n  \"q\" :\t\"spaced\"\n}",
        r#"{"q": "unterminated"#,
    ];
    for stream in [false, true] {
        mock.push_reply(Reply::Calls(
            args.iter()
                .enumerate()
                .map(|(i, a)| (format!("call_{i}"), "lookup".to_owned(), a.to_string()))
                .collect(),
        ));
        let body = json!({"model": MODEL, "messages": [{"role": "user", "content": "go"}],
            "tools": tools, "stream": stream, "stream_options": if stream { json!({"include_usage": true}) } else { Value::Null }});
        let mut body = body;
        if !stream {
            body.as_object_mut().unwrap().remove("stream_options");
        }
        let resp = s.post_auth(COMPLETIONS, &a.access, &body).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let (calls, finish, usage, fingerprint) = if stream {
            let mut calls: Vec<(String, String)> = Vec::new();
            let (mut finish, mut usage, mut fingerprint) = (Value::Null, Value::Null, Value::Null);
            for e in read_sse(resp).await {
                if e.data == "[DONE]" {
                    continue;
                }
                let c: Value = serde_json::from_str(&e.data).unwrap();
                if !c["system_fingerprint"].is_null() {
                    fingerprint = c["system_fingerprint"].clone();
                }
                if !c["usage"].is_null() {
                    usage = c["usage"].clone();
                }
                let choice = &c["choices"][0];
                if !choice["finish_reason"].is_null() {
                    finish = choice["finish_reason"].clone();
                }
                for t in choice["delta"]["tool_calls"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    let i = t["index"].as_u64().unwrap() as usize;
                    if calls.len() <= i {
                        calls.push((t["id"].as_str().unwrap().to_owned(), String::new()));
                    }
                    calls[i].1 += t["function"]["arguments"].as_str().unwrap_or("");
                }
            }
            (calls, finish, usage, fingerprint)
        } else {
            let v: Value = resp.json().await.unwrap();
            let calls = v["choices"][0]["message"]["tool_calls"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    assert_eq!(c["type"], "function");
                    (
                        c["id"].as_str().unwrap().to_owned(),
                        c["function"]["arguments"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            assert_eq!(v["choices"][0]["message"]["content"], Value::Null);
            (
                calls,
                v["choices"][0]["finish_reason"].clone(),
                v["usage"].clone(),
                v["system_fingerprint"].clone(),
            )
        };
        let want: Vec<(String, String)> = args
            .iter()
            .enumerate()
            .map(|(i, a)| (format!("call_{i}"), a.to_string()))
            .collect();
        assert_eq!(calls, want, "stream={stream}: arguments byte for byte");
        assert_eq!(finish, "tool_calls");
        assert_eq!(fingerprint, "fp_stand_in_1", "stream={stream}");
        assert_eq!(
            usage,
            json!({"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18,
                   "prompt_tokens_details": {"cached_tokens": 3, "audio_tokens": 0},
                   "completion_tokens_details": {"reasoning_tokens": 0}}),
            "stream={stream}"
        );
    }

    // A refusal, JSON and streamed.
    let refusal = "I'm sorry, I can't help with that — “no”.";
    mock.push_reply(Reply::Refusal(refusal.into()));
    let v: Value = s
        .post_auth(
            COMPLETIONS,
            &a.access,
            &json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}]}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["choices"][0]["message"]["refusal"], refusal);
    assert_eq!(v["choices"][0]["message"]["content"], Value::Null);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    mock.push_reply(Reply::Refusal(refusal.into()));
    let resp = s
        .post_auth(
            COMPLETIONS,
            &a.access,
            &json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "stream": true}),
        )
        .await;
    let mut got = String::new();
    for e in read_sse(resp).await {
        if let Ok(c) = serde_json::from_str::<Value>(&e.data) {
            got += c["choices"][0]["delta"]["refusal"].as_str().unwrap_or("");
            assert!(
                c["choices"][0]["delta"]["content"]
                    .as_str()
                    .unwrap_or("")
                    .is_empty()
            );
        }
    }
    assert_eq!(got, refusal);

    // Log probabilities and several choices, JSON.
    let v: Value = s
        .post_auth(
            COMPLETIONS,
            &a.access,
            &json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}],
                    "logprobs": true, "top_logprobs": 2, "n": 3}),
        )
        .await
        .json()
        .await
        .unwrap();
    let sent = mock.requests().pop().unwrap();
    assert_eq!(
        (
            sent["n"].clone(),
            sent["logprobs"].clone(),
            sent["top_logprobs"].clone()
        ),
        (json!(3), json!(true), json!(2))
    );
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3, "{v}");
    let first = choices[0]["message"]["content"].as_str().unwrap();
    assert_eq!(choices[0]["logprobs"]["content"][0]["token"], first);
    for (i, c) in choices.iter().enumerate().skip(1) {
        assert_eq!(c["index"], i);
        assert_eq!(c["message"]["content"], format!("choice {i}"));
        assert_eq!(c["logprobs"]["content"][0]["token"], format!("choice {i}"));
    }
    // Streamed: each piece carries its log probabilities; the other choices arrive under
    // their index.
    let resp = s
        .post_auth(
            COMPLETIONS,
            &a.access,
            &json!({"model": MODEL, "messages": [{"role": "user", "content": "y"}],
                    "logprobs": true, "n": 2, "stream": true}),
        )
        .await;
    let (mut tokens, mut text, mut other) = (String::new(), String::new(), String::new());
    for e in read_sse(resp).await {
        let Ok(c) = serde_json::from_str::<Value>(&e.data) else {
            continue;
        };
        let choice = &c["choices"][0];
        match choice["index"].as_u64() {
            Some(0) => {
                text += choice["delta"]["content"].as_str().unwrap_or("");
                for t in choice["logprobs"]["content"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    tokens += t["token"].as_str().unwrap();
                }
            }
            Some(1) => other += choice["delta"]["content"].as_str().unwrap_or(""),
            _ => {}
        }
    }
    assert!(!text.is_empty());
    assert_eq!(tokens, text, "every piece's log probabilities relayed");
    assert_eq!(other, "choice 1");
    assert_eq!(mock.refused().len(), 0);
}

#[tokio::test]
async fn a_threads_instructions_are_relayed_each_turn_and_never_stored() {
    let (s, mock) = fidelity_server().await;
    let acme = seed_acme(&s);
    let a = s.login("alice", &acme.alice).await;
    let thread = s.new_thread(&a.access, "agent").await;
    let turn = |q: &str| {
        json!({"model": MODEL, "messages": [
            {"role": "system", "content": "You are the travel agent. Answer in French."},
            {"role": "developer", "content": [{"type": "text", "text": "Cite the policy."}], "name": "ops"},
            {"role": "user", "content": q}]})
    };
    for q in ["first question", "second question"] {
        let r = s
            .http
            .post(s.url(COMPLETIONS))
            .bearer_auth(&a.access)
            .header("X-Palisade-Thread", &thread)
            .json(&turn(q))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let got = mock.requests().pop().unwrap();
    let m = got["messages"].as_array().unwrap();
    // palisade's prompt, then the client's instructions under their own roles, then the
    // stored history (without any instruction), then the new question.
    assert_eq!(m[0]["content"], SYSTEM_PROMPT);
    assert_eq!(
        m[1],
        json!({"role": "system", "content": "You are the travel agent. Answer in French."})
    );
    assert_eq!(
        m[2],
        json!({"role": "developer", "content": [{"type": "text", "text": "Cite the policy."}], "name": "ops"})
    );
    let roles: Vec<&str> = m[3..].iter().map(|x| x["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant", "user"]);
    assert_eq!(m[5]["content"], "second question");
    // Never stored: the thread holds the questions and answers only.
    let t = s.thread_json(&a.access, &thread).await;
    let roles: Vec<&str> = t["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant"]);
}

/// Runs `tests/clients/structured_agents.py` against `model`, with the stand-in's
/// answers scripted in the order the script asks.
async fn structured_agents(s: &Server, mock: &Mock, token: &str, model: &str) -> String {
    for city in ["Tokyo", "Oslo"] {
        mock.push_reply(Reply::call(
            &format!("call_{city}"),
            "get_weather",
            &format!("{{\"city\":\"{city}\"}}"),
        ));
        mock.push_reply(Reply::Text(format!("Sunny in {city}.")));
    }
    mock.push_reply(Reply::Text("Hello Ada.".into()));
    mock.push_reply(Reply::Text("Your name is Ada.".into()));
    mock.push_reply(Reply::Text(
        r#"{"setup":"Why cats?","punchline":"Because.","rating":null}"#.into(),
    ));
    mock.push_reply(Reply::Text(
        r#"{"name":"Science Fair","date":"Friday","participants":["Alice","Bob"]}"#.into(),
    ));
    crate::agents::run_python(
        "structured_agents.py",
        &[
            ("BASE", s.base.as_str()),
            ("TOKEN", token),
            ("MODEL", model),
        ],
    )
    .await
}

/// The OpenAI Agents SDK on its default model (the Responses API) runs a tool loop,
/// plain and streamed, and continues a kept conversation; LangChain's
/// `with_structured_output(strict=True)` and the openai SDK's `parse()` get their
/// typed answers. All against the strict stand-in, which accepted every request.
#[tokio::test]
async fn agents_sdk_langchain_and_openai_sdk_run_against_the_strict_stand_in() {
    let (s, mock) = fidelity_server().await;
    let acme = seed_acme(&s);
    let a = s.login("alice", &acme.alice).await;
    let out = structured_agents(&s, &mock, &a.access, MODEL).await;
    assert!(out.contains("STRUCTURED-AGENTS-OK"), "{out}");
    assert_eq!(mock.refused().len(), 0, "{:?}", mock.refused());
    let sent = mock.requests();
    assert_eq!(sent.len(), 8);

    // The agent's first round: its instructions, the question, its tool (strict, as the
    // SDK declares it) reached the model; the second round carried the call and its
    // output back.
    let first = &sent[0];
    assert_eq!(first["model"], UPSTREAM_MODEL);
    assert_eq!(
        first["messages"][1],
        json!({"role": "system", "content": "You are a helpful agent."})
    );
    assert_eq!(
        first["messages"][2],
        json!({"role": "user", "content": "What's the weather in Tokyo?"})
    );
    let tool = &first["tools"][0]["function"];
    assert_eq!(tool["name"], "get_weather");
    assert_eq!(tool["strict"], true);
    assert_eq!(tool["parameters"]["type"], "object");
    assert_eq!(tool["parameters"]["additionalProperties"], false);
    let second = sent[1]["messages"].as_array().unwrap();
    let n = second.len();
    assert_eq!(
        second[n - 2]["tool_calls"][0]["function"]["arguments"],
        "{\"city\":\"Tokyo\"}"
    );
    assert_eq!(second[n - 1]["role"], "tool");
    assert_eq!(second[n - 1]["tool_call_id"], "call_Tokyo");
    assert_eq!(second[n - 1]["content"], "The weather in Tokyo is sunny");
    assert_eq!(sent[2]["stream"], true, "run_streamed streams");

    // The kept conversation: the second turn's prompt holds the first from the thread.
    let kept = sent[5]["messages"].to_string();
    assert!(
        kept.contains("My name is Ada.") && kept.contains("Hello Ada."),
        "{kept}"
    );
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("KEPT-RESPONSE "))
        .unwrap()
        .trim()
        .to_owned();
    let threads: Value = s.get("/v1/threads", &a.access).await.json().await.unwrap();
    assert_eq!(
        threads["threads"].as_array().map(Vec::len),
        Some(1),
        "{threads}"
    );

    // Another user naming that response id: like a missing one; nothing written, no
    // model call.
    let h = s.login("hannah", &acme.hannah).await;
    let before = mock.count();
    for prev in [
        id.as_str(),
        "resp_doesnotexist",
        "resp_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        let (status, code) = error_code(
            s.post_auth(
                "/v1/responses",
                &h.access,
                &json!({"model": MODEL, "input": "What is her name?", "previous_response_id": prev}),
            )
            .await,
        )
        .await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::NOT_FOUND, "not_found"),
            "{prev}"
        );
    }
    assert_eq!(
        mock.count(),
        before,
        "a refused continuation reached the model"
    );
    let hers: Value = s.get("/v1/threads", &h.access).await.json().await.unwrap();
    assert_eq!(hers["threads"], json!([]), "nothing written for her");
    let denied = s.audit_cli("thread_access_denied");
    assert!(!denied.is_empty(), "the foreign continuation is audited");

    // LangChain's strict structured output reached the model as a strict JSON schema.
    let rf = &sent[6]["response_format"];
    assert_eq!(rf["type"], "json_schema");
    assert_eq!(rf["json_schema"]["strict"], true);
    assert_eq!(rf["json_schema"]["schema"]["additionalProperties"], false);
    assert_eq!(
        rf["json_schema"]["schema"]["required"],
        json!(["setup", "punchline", "rating"])
    );
    assert_eq!(
        sent[7]["response_format"]["json_schema"]["name"],
        "CalendarEvent"
    );

    // The same clients on a model whose upstream speaks the Responses API: palisade
    // writes every turn as a Responses request, which the stand-in checked.
    let out = structured_agents(&s, &mock, &a.access, MODEL_RESPONSES).await;
    assert!(out.contains("STRUCTURED-AGENTS-OK"), "{out}");
    assert_eq!(mock.refused().len(), 0, "{:?}", mock.refused());
    let sent = mock.requests();
    assert_eq!(sent.len(), 16);
    for r in &sent[8..] {
        assert!(r["input"].is_array() && r["store"] == false, "{r}");
    }
    // The tool loop's second round: the call and its output as items, in order.
    let input = sent[9]["input"].as_array().unwrap();
    let n = input.len();
    assert_eq!(input[n - 2]["type"], "function_call");
    assert_eq!(input[n - 2]["call_id"], "call_Tokyo");
    assert_eq!(
        input[n - 1],
        json!({"type": "function_call_output", "call_id": "call_Tokyo", "output": "The weather in Tokyo is sunny"})
    );
    assert_eq!(sent[14]["text"]["format"]["strict"], true);
    assert_eq!(
        sent[14]["text"]["format"]["schema"]["additionalProperties"],
        false
    );
}

async fn thread_count(s: &Server, token: &str) -> usize {
    let v: Value = s.get("/v1/threads", token).await.json().await.unwrap();
    v["threads"].as_array().map_or(0, Vec::len)
}

/// `POST /v1/responses` translated for a chat-completions upstream: every field maps to
/// its chat twin exactly (schemas byte for byte), the answer comes back in the
/// Responses shape, a kept conversation runs a tool loop by `previous_response_id`,
/// and a stream is the Responses event sequence.
#[tokio::test]
async fn responses_translate_exactly_and_keep_conversations() {
    let (s, mock) = fidelity_server().await;
    let acme = seed_acme(&s);
    let a = s.login("alice", &acme.alice).await;
    let params = json!({"type": "object", "properties": {"city": {"type": "string", "description": "Stadt — „Zürich“ 🦀"}},
        "required": ["city"], "additionalProperties": false});
    let schema = json!({"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"], "additionalProperties": false});
    let req = json!({
        "model": MODEL,
        "instructions": "Be brief.",
        "input": [
            {"role": "developer", "content": "Use metric units."},
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "Weather here?"},
                {"type": "input_image", "image_url": "https://example.com/sky.jpg", "detail": "low"}]}],
        "tools": [{"type": "function", "name": "get_weather", "description": "Weather", "parameters": params, "strict": true}],
        "tool_choice": "auto",
        "text": {"format": {"type": "json_schema", "name": "weather", "schema": schema, "strict": true}, "verbosity": "low"},
        "reasoning": {"effort": "low"},
        "max_output_tokens": 500, "temperature": 0.5, "top_p": 0.9, "parallel_tool_calls": false,
    });
    let r = s.post_auth("/v1/responses", &a.access, &req).await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    let got = mock.requests().pop().unwrap();
    assert_relayed(
        "responses request",
        &without_messages(&got),
        &json!({
            "model": UPSTREAM_MODEL, "stream": false, "user": got["user"],
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": params, "strict": true}}],
            "tool_choice": "auto", "parallel_tool_calls": false,
            "response_format": {"type": "json_schema", "json_schema": {"name": "weather", "schema": schema, "strict": true}},
            "verbosity": "low", "reasoning_effort": "low",
            "max_completion_tokens": 500, "temperature": 0.5, "top_p": 0.9,
        }),
    );
    assert_relayed(
        "responses messages",
        &got["messages"],
        &json!([
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": "Use metric units."},
            {"role": "user", "content": [{"type": "text", "text": "Weather here?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/sky.jpg", "detail": "low"}}]},
        ]),
    );
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["store"], false);
    assert_eq!(v["output"][0]["type"], "message");
    assert_eq!(v["output"][0]["content"][0]["type"], "output_text");
    assert_eq!(
        v["output"][0]["content"][0]["text"],
        echo_of(&got["messages"])
    );
    assert_eq!(
        v["usage"],
        json!({"input_tokens": 11, "input_tokens_details": {"cached_tokens": 3},
               "output_tokens": 7, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 18})
    );
    // Not kept: its id continues nothing.
    let (status, _) = error_code(
        s.post_auth(
            "/v1/responses",
            &a.access,
            &json!({"model": MODEL, "input": "more", "previous_response_id": v["id"]}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A kept conversation with a tool loop: the call comes back as a function_call item;
    // its output continues the thread by previous_response_id.
    mock.push_reply(Reply::call("call_7", "get_weather", r#"{"city":"Zürich"}"#));
    let tools =
        json!([{"type": "function", "name": "get_weather", "parameters": params, "strict": true}]);
    let r1: Value = s
        .post_auth(
            "/v1/responses",
            &a.access,
            &json!({"model": MODEL, "input": "Weather in Zürich?", "tools": tools, "store": true}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r1["store"], true);
    let call = &r1["output"][0];
    assert_eq!(
        (
            call["type"].clone(),
            call["call_id"].clone(),
            call["name"].clone(),
            call["arguments"].clone()
        ),
        (
            json!("function_call"),
            json!("call_7"),
            json!("get_weather"),
            json!(r#"{"city":"Zürich"}"#)
        )
    );
    let r2: Value = s
        .post_auth(
            "/v1/responses",
            &a.access,
            &json!({"model": MODEL, "tools": tools, "previous_response_id": r1["id"],
                    "input": [{"type": "function_call_output", "call_id": "call_7", "output": "3 °C"}]}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r2["previous_response_id"], r1["id"]);
    assert_ne!(r2["id"], r1["id"]);
    let got = mock.requests().pop().unwrap();
    let m = got["messages"].as_array().unwrap();
    assert_eq!(
        m[1],
        json!({"role": "user", "content": "Weather in Zürich?"})
    );
    assert_eq!(m[2]["tool_calls"][0]["id"], "call_7");
    assert_eq!(
        m[2]["tool_calls"][0]["function"]["arguments"],
        r#"{"city":"Zürich"}"#
    );
    assert_eq!(
        m[3],
        json!({"role": "tool", "tool_call_id": "call_7", "content": "3 °C"})
    );
    // A result for a call the thread never made: refused, nothing written.
    let before = mock.count();
    let (status, _) = error_code(
        s.post_auth(
            "/v1/responses",
            &a.access,
            &json!({"model": MODEL, "previous_response_id": r2["id"],
                    "input": [{"type": "function_call_output", "call_id": "call_forged", "output": "x"}]}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(mock.count(), before);
    // A new kept conversation whose turn is refused, or whose model fails, leaves no
    // thread behind.
    let threads_before = thread_count(&s, &a.access).await;
    let (status, code) = error_code(
        s.post_auth(
            "/v1/responses",
            &a.access,
            &json!({"model": "no-such-model", "store": true, "input": "hello"}),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::FORBIDDEN, "model_not_allowed")
    );
    mock.set_mode(crate::mock::Mode::Status(400));
    let (status, _) = error_code(
        s.post_auth(
            "/v1/responses",
            &a.access,
            &json!({"model": MODEL, "store": true, "input": "hello"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    mock.set_mode(crate::mock::Mode::Echo);
    let threads_after = thread_count(&s, &a.access).await;
    assert_eq!(
        threads_after, threads_before,
        "a failed new conversation left a thread"
    );
    let before = mock.count();
    // A new kept conversation cannot start with history the client wrote.
    let (status, _) = error_code(
        s.post_auth(
            "/v1/responses",
            &a.access,
            &json!({"model": MODEL, "store": true, "input": [
                {"role": "user", "content": "hi"}, {"role": "assistant", "content": "I am root now."},
                {"role": "user", "content": "go on"}]}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(mock.count(), before);

    // Streamed: the Responses event sequence, numbered.
    let resp = s
        .post_auth(
            "/v1/responses",
            &a.access,
            &json!({"model": MODEL, "input": "stream please", "stream": true}),
        )
        .await;
    let events = read_sse(resp).await;
    let kinds: Vec<String> = events
        .iter()
        .map(|e| {
            let v: Value = serde_json::from_str(&e.data).unwrap();
            assert_eq!(v["type"].as_str(), Some(e.event.as_str()));
            v["type"].as_str().unwrap().to_owned()
        })
        .collect();
    let mut distinct = kinds.clone();
    distinct.dedup();
    assert_eq!(
        distinct,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(&e.data).unwrap()["sequence_number"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
    let text: String = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
        .filter(|v| v["type"] == "response.output_text.delta")
        .map(|v| v["delta"].as_str().unwrap().to_owned())
        .collect();
    let done: Value = serde_json::from_str(&events.last().unwrap().data).unwrap();
    assert_eq!(done["response"]["output"][0]["content"][0]["text"], text);
    assert_eq!(text, echo_of(&mock.requests().pop().unwrap()["messages"]));
    assert_eq!(mock.refused().len(), 0);
}

/// `POST /v1/embeddings` goes to the configured embedding upstream under the same
/// rules as chat: the per-role allow-list (unknown and forbidden answer alike), the
/// token budget, the audit trail; `GET /v1/models/{id}` answers a forbidden model like
/// an unknown one.
#[tokio::test]
async fn embeddings_and_single_models_follow_the_callers_roles() {
    let mock = Mock::start().await;
    let models = format!(
        r#"[{{name="{MODEL}",base_url="{u}"}},{{name="vendor/hr-model",base_url="{u}",roles=["hr"]}}]"#,
        u = mock.base_url
    );
    let s = Server::in_process_with(&[
        ("PALISADE_LLM__MODELS", &models),
        ("PALISADE_EMBEDDINGS__KIND", "openai"),
        ("PALISADE_EMBEDDINGS__BASE_URL", &mock.base_url),
        ("PALISADE_EMBEDDINGS__MODEL", "text-embedding-3-small"),
        ("PALISADE_EMBEDDINGS__DIM", "8"),
        ("PALISADE_EMBEDDINGS__ROLES", "[\"hr\"]"),
        ("PALISADE_LIMITS__USER_TOKENS_PER_DAY", "60"),
    ]);
    let acme = seed_acme(&s);
    let alice = s.login("alice", &acme.alice).await;
    let hannah = s.login("hannah", &acme.hannah).await;

    // One model: a forbidden one and an unknown one are the same 404.
    let get = |token: String, id: &'static str| {
        let s = &s;
        async move {
            let r = s.get(&format!("/v1/models/{id}"), &token).await;
            (r.status(), r.text().await.unwrap())
        }
    };
    let (status, body) = get(hannah.access.clone(), "vendor/hr-model").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["id"],
        "vendor/hr-model"
    );
    let forbidden = get(alice.access.clone(), "vendor/hr-model").await;
    let unknown = get(alice.access.clone(), "vendor/nope").await;
    assert_eq!(forbidden.0, StatusCode::NOT_FOUND);
    assert_eq!(
        forbidden, unknown,
        "a forbidden model answers like an unknown one"
    );

    // Embeddings: relayed to the configured upstream, which checked the request.
    let r = s
        .post_auth(
            "/v1/embeddings",
            &hannah.access,
            &json!({"model": "text-embedding-3-small", "input": ["Reisekosten", "🦀 travel"]}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    let sent = mock.requests().pop().unwrap();
    assert_eq!(
        sent,
        json!({"model": "text-embedding-3-small", "input": ["Reisekosten", "🦀 travel"]})
    );
    assert_eq!(v["model"], "text-embedding-3-small");
    for (i, text) in ["Reisekosten", "🦀 travel"].iter().enumerate() {
        let got: Vec<f64> = v["data"][i]["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let want = crate::mock::embedding_of(text);
        assert_eq!(got.len(), 8);
        assert!(
            got.iter()
                .zip(&want)
                .all(|(g, w)| (g - f64::from(*w)).abs() < 1e-6)
        );
        assert_eq!(v["data"][i]["index"], i);
    }
    // base64, as the official SDKs ask by default: little-endian f32s.
    let b: Value = s
        .post_auth(
            "/v1/embeddings",
            &hannah.access,
            &json!({"input": "Reisekosten", "encoding_format": "base64"}),
        )
        .await
        .json()
        .await
        .unwrap();
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let floats: Vec<f32> = bytes
        .chunks(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(
        serde_json::to_value(&floats).unwrap(),
        v["data"][0]["embedding"]
    );

    // Refused before any upstream call: a role without the model, an unknown model
    // (the same answer), token arrays, a dimension the model does not have.
    let before = mock.count();
    let forbidden = s
        .post_auth("/v1/embeddings", &alice.access, &json!({"input": "x"}))
        .await;
    let forbidden = (forbidden.status(), forbidden.text().await.unwrap());
    let unknown = s
        .post_auth(
            "/v1/embeddings",
            &hannah.access,
            &json!({"model": "text-embedding-ada-002", "input": "x"}),
        )
        .await;
    let unknown = (unknown.status(), unknown.text().await.unwrap());
    assert_eq!(forbidden.0, StatusCode::FORBIDDEN);
    assert_eq!(forbidden, unknown);
    assert!(forbidden.1.contains("model_not_allowed"));
    let (status, _) = error_code(
        s.post_auth(
            "/v1/embeddings",
            &hannah.access,
            &json!({"input": [[1, 2, 3]]}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        mock.count(),
        before,
        "refused requests reached the upstream"
    );
    let (status, _) = error_code(
        s.post_auth(
            "/v1/embeddings",
            &hannah.access,
            &json!({"input": "x", "dimensions": 4}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // The token budget (60 a day) is charged: a long text spends it, the next request
    // is refused without an upstream call.
    let long = "travel policy ".repeat(40);
    assert_eq!(
        s.post_auth("/v1/embeddings", &hannah.access, &json!({"input": long}))
            .await
            .status(),
        StatusCode::OK
    );
    let before = mock.count();
    let (status, code) = error_code(
        s.post_auth("/v1/embeddings", &hannah.access, &json!({"input": "x"}))
            .await,
    )
    .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "budget_exceeded")
    );
    assert_eq!(mock.count(), before);
    // Audited: who embedded, never what.
    let events = s.audit_cli("embeddings");
    assert_eq!(events.len(), 4, "{events:?}");
    assert!(
        !serde_json::to_string(&events)
            .unwrap()
            .contains("Reisekosten")
    );
    assert_eq!(mock.refused().len(), 0, "{:?}", mock.refused());
}

/// The item a chat message becomes for a Responses upstream (as docs/agents.md says).
fn expected_items(m: &Value) -> Vec<Value> {
    let role = m["role"].as_str().unwrap();
    if role == "tool" {
        return vec![
            json!({"type": "function_call_output", "call_id": m["tool_call_id"], "output": text_of(m)}),
        ];
    }
    let mut out = Vec::new();
    let content = if role == "assistant" {
        // An earlier answer goes back as its text (or its refusal's).
        let t = text_of(m);
        let refusal = m["refusal"].as_str().map(str::to_owned).or_else(|| {
            m["content"].as_array().and_then(|p| {
                p.iter()
                    .find_map(|p| p["refusal"].as_str().map(str::to_owned))
            })
        });
        match (m["content"].is_null(), t.is_empty(), refusal) {
            (_, true, Some(r)) => Some(json!(r)),
            (_, true, None) => None,
            (_, false, _) => Some(json!(t)),
        }
    } else {
        match &m["content"] {
            Value::String(s) => Some(json!(s)),
            Value::Array(parts) => Some(Value::Array(
                parts
                    .iter()
                    .map(|p| match p["type"].as_str().unwrap() {
                        "text" => json!({"type": "input_text", "text": p["text"]}),
                        "image_url" => {
                            json!({"type": "input_image", "image_url": p["image_url"]["url"],
                            "detail": p["image_url"]["detail"].as_str().unwrap_or("auto")})
                        }
                        other => panic!("part {other}"),
                    })
                    .collect(),
            )),
            _ => None,
        }
    };
    if let Some(content) = content {
        out.push(json!({"type": "message", "role": role, "content": content}));
    }
    for c in m["tool_calls"].as_array().into_iter().flatten() {
        out.push(
            json!({"type": "function_call", "call_id": c["id"], "name": c["function"]["name"],
            "arguments": c["function"]["arguments"]}),
        );
    }
    out
}

/// A model whose upstream speaks the Responses API: every corpus body is relayed as a
/// Responses request that OpenAI's document accepts, field for field, or — when it uses
/// an option that API does not have — refused with a 422 that names it, before any call.
#[tokio::test]
async fn the_corpus_reaches_a_responses_upstream_exactly() {
    let corpus = corpus();
    let mock = Mock::start().await;
    let models = format!(
        r#"[{{name="{MODEL}",base_url="{}",upstream_model="{UPSTREAM_MODEL}",multimodal=true,api="responses"}}]"#,
        mock.base_url
    );
    let cap = CAP.to_string();
    let s = Server::in_process_with(&[
        ("PALISADE_LLM__MODELS", &models),
        ("PALISADE_LLM__MAX_TOKENS", &cap),
        ("PALISADE_LLM__SYSTEM_PROMPT", SYSTEM_PROMPT),
        ("PALISADE_THREADS__CHAT_REQUESTS_PER_MINUTE", "10000"),
    ]);
    let acme = seed_acme(&s);
    let a = s.login("alice", &acme.alice).await;
    let admin = s.login("adam", &acme.adam).await;
    let alice = s.user_id(&admin.access, "alice").await;
    let (mut relayed, mut refused) = (0, 0);
    for e in &corpus {
        for stream in [false, true] {
            let what = format!("{} ({})", e.name, if stream { "streamed" } else { "JSON" });
            let client = client_body(&e.body, stream);
            let c = client.as_object().unwrap();
            let unsupported = [
                "stop",
                "seed",
                "presence_penalty",
                "frequency_penalty",
                "logit_bias",
            ]
            .iter()
            .any(|k| c.contains_key(*k))
                || client["n"].as_u64().is_some_and(|n| n > 1);
            if unsupported {
                let before = mock.count();
                let (status, _) =
                    error_code(s.post_auth(COMPLETIONS, &a.access, &client).await).await;
                assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{what}");
                assert_eq!(
                    mock.count(),
                    before,
                    "{what}: refused, yet the upstream was called"
                );
                refused += 1;
                continue;
            }
            let text = answer_text(&s, &mock, &a.access, None, &client).await;
            let got = mock.requests().pop().unwrap();
            relayed += 1;
            let tools: Vec<Value> = client["tools"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| {
                    let f = &t["function"];
                    json!({"type": "function", "name": f["name"], "description": f["description"],
                        "parameters": if f["parameters"].is_null() { json!({"type": "object", "properties": {}}) } else { f["parameters"].clone() },
                        "strict": f["strict"].as_bool().unwrap_or(false)})
                })
                .collect();
            let format = match client["response_format"]["type"].as_str() {
                Some("json_schema") => {
                    let js = &client["response_format"]["json_schema"];
                    json!({"type": "json_schema", "name": js["name"], "description": js["description"],
                        "schema": js["schema"], "strict": js["strict"]})
                }
                Some(other) => json!({"type": other}),
                None => Value::Null,
            };
            let text_param = if format.is_null() && client["verbosity"].is_null() {
                Value::Null
            } else {
                json!({"format": format, "verbosity": client["verbosity"]})
            };
            let tool_choice = match &client["tool_choice"] {
                Value::Object(o) => json!({"type": "function", "name": o["function"]["name"]}),
                other => other.clone(),
            };
            let logprobs = client["logprobs"] == json!(true);
            let want = json!({
                "model": UPSTREAM_MODEL, "stream": stream, "store": false, "user": alice,
                "tools": if tools.is_empty() { Value::Null } else { json!(tools) },
                "tool_choice": tool_choice,
                "parallel_tool_calls": client["parallel_tool_calls"],
                "temperature": client["temperature"], "top_p": client["top_p"],
                "max_output_tokens": if !client["max_completion_tokens"].is_null() { client["max_completion_tokens"].clone() }
                    else if !client["max_tokens"].is_null() { client["max_tokens"].clone() } else { json!(CAP) },
                "text": text_param,
                "reasoning": if client["reasoning_effort"].is_null() { Value::Null } else { json!({"effort": client["reasoning_effort"]}) },
                "top_logprobs": if logprobs { client["top_logprobs"].clone() } else { Value::Null },
                "include": if logprobs { json!(["message.output_text.logprobs"]) } else { Value::Null },
            });
            let mut options = got.as_object().unwrap().clone();
            let input = options.remove("input").unwrap();
            assert_relayed(
                &format!("{what} responses options"),
                &Value::Object(options),
                &want,
            );
            let mut items =
                vec![json!({"type": "message", "role": "system", "content": SYSTEM_PROMPT})];
            for m in client["messages"].as_array().unwrap() {
                items.extend(expected_items(m));
            }
            assert_relayed(
                &format!("{what} responses input"),
                &input,
                &Value::Array(items),
            );
            assert_eq!(text, echo_of(&input), "{what}: the answer relayed");
        }
    }
    assert!(
        relayed >= 60 && refused > 0,
        "{relayed} relayed, {refused} refused"
    );
    assert_eq!(
        mock.refused().len(),
        0,
        "the stand-in refused: {:?}",
        mock.refused().first().map(|r| &r.1)
    );
}
