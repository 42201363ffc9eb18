//! The stand-in OpenAI upstream: records every request and answers with an echo of
//! the complete prompt it received, so tests can prove what did and did not reach the
//! model. Streaming and non-streaming; failure modes for fault tests.
//!
//! It is at least as strict as OpenAI: every request is checked against OpenAI's
//! published OpenAPI document and OpenAI's schema rules (`strict.rs`), and refused with
//! OpenAI's 400 error when it fails. A refused request is recorded in `refused()` too.
//!
//! Also compiled into `examples/mock_upstream.rs` for the load benchmarks (which turn
//! the checks off: they measure palisade, not the stand-in).

#![allow(dead_code)]

#[path = "strict.rs"]
pub mod strict;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Answer `ECHO:` + the JSON of the received messages.
    Echo,
    /// Answer with this status and a JSON error body.
    Status(u16),
    /// Never answer (until the client gives up).
    Hang,
    /// 200 with a body that is not a chat completion.
    Garbage,
    /// Stream a few deltas, then cut the connection without `[DONE]`.
    CutStream,
    /// Answer `307 Temporary Redirect` to this URL (a compromised or misconfigured
    /// upstream pointing the prompt elsewhere).
    Redirect(String),
}

/// A scripted answer (instead of the echo).
#[derive(Debug, Clone)]
pub enum Reply {
    Text(String),
    /// Tool calls: (id, function name, arguments JSON text).
    Calls(Vec<(String, String, String)>),
    /// The model declines: `refusal` instead of `content`.
    Refusal(String),
}

impl Reply {
    pub fn call(id: &str, name: &str, arguments: &str) -> Reply {
        Reply::Calls(vec![(id.into(), name.into(), arguments.into())])
    }
}

pub struct MockState {
    requests: Mutex<Vec<Value>>,
    /// Answers given in order before falling back to `forever` or the echo.
    script: Mutex<std::collections::VecDeque<Reply>>,
    /// The answer once the script is used up (none: the echo).
    forever: Mutex<Option<Reply>>,
    /// Benchmarks: a request that declares tools and ends with a user message is
    /// answered with a tool call (an agent's first round); any other with the answer.
    agent: std::sync::atomic::AtomicBool,
    /// The `Authorization` header of each request ("" when absent).
    auth: Mutex<Vec<String>>,
    /// Check every request as OpenAI would (on unless a benchmark turns it off).
    strict: std::sync::atomic::AtomicBool,
    /// Requests refused by those checks, with OpenAI's message.
    refused: Mutex<Vec<(Value, String)>>,
    mode: Mutex<Mode>,
    /// Streams whose client went away before the last chunk.
    pub cancelled: AtomicUsize,
    pub completed_streams: AtomicUsize,
    /// Pause between streamed chunks.
    pub chunk_delay_ms: AtomicUsize,
    /// Pause before answering an embedding request (a remote model's latency).
    pub embedding_delay_ms: AtomicUsize,
    /// Embedding requests still to be answered 500 (`usize::MAX`: all of them).
    pub embedding_failures: AtomicUsize,
    /// Characters per streamed chunk.
    pub chunk_chars: AtomicUsize,
    /// For benchmarks: answer with this text instead of the echo, and keep no record
    /// (so the answer's size does not grow with the prompt, nor the mock's memory).
    fixed_answer: Mutex<Option<String>>,
}

#[derive(Clone)]
pub struct Mock {
    pub state: Arc<MockState>,
    /// `http://127.0.0.1:PORT/v1`
    pub base_url: String,
}

impl Mock {
    pub async fn start() -> Mock {
        Self::start_on("127.0.0.1:0").await
    }

    pub async fn start_on(addr: &str) -> Mock {
        let state = Arc::new(MockState {
            requests: Mutex::new(Vec::new()),
            script: Mutex::new(Default::default()),
            forever: Mutex::new(None),
            agent: std::sync::atomic::AtomicBool::new(false),
            auth: Mutex::new(Vec::new()),
            strict: std::sync::atomic::AtomicBool::new(true),
            refused: Mutex::new(Vec::new()),
            mode: Mutex::new(Mode::Echo),
            cancelled: AtomicUsize::new(0),
            completed_streams: AtomicUsize::new(0),
            chunk_delay_ms: AtomicUsize::new(5),
            embedding_delay_ms: AtomicUsize::new(0),
            embedding_failures: AtomicUsize::new(0),
            chunk_chars: AtomicUsize::new(16),
            fixed_answer: Mutex::new(None),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(completions))
            .route("/v1/embeddings", post(embeddings))
            .route("/v1/responses", post(responses))
            .route("/v1/models", get(models))
            // For a test driving a browser in another process: slow the stream down,
            // and count the streams whose client went away.
            .route("/__mock/chunk_delay", post(set_chunk_delay))
            .route("/__mock/stats", get(stats))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind mock");
        let local = listener.local_addr().expect("addr");
        // Like a real server: stream chunks go out at once, not after a delayed ACK.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Mock {
            state,
            base_url: format!("http://{local}/v1"),
        }
    }

    /// Benchmarks only: skip the checks OpenAI makes.
    pub fn set_strict(&self, on: bool) {
        self.state.strict.store(on, Ordering::SeqCst);
    }

    /// Requests the stand-in refused, with the reason OpenAI would give.
    pub fn refused(&self) -> Vec<(Value, String)> {
        self.state.refused.lock().unwrap().clone()
    }

    pub fn set_mode(&self, m: Mode) {
        *self.state.mode.lock().unwrap() = m;
    }

    /// Benchmarks: a fixed answer of `chars` characters, and no recording.
    pub fn set_fixed_answer(&self, chars: usize) {
        let text: String = "The travel policy books flights under six hours in economy. "
            .chars()
            .cycle()
            .take(chars)
            .collect();
        *self.state.fixed_answer.lock().unwrap() = Some(text);
    }

    /// Answer the next request with `r` (queued behind earlier scripted answers).
    pub fn push_reply(&self, r: Reply) {
        self.state.script.lock().unwrap().push_back(r);
    }

    /// Benchmarks: answer an agent's first round with a tool call (see `MockState::agent`).
    pub fn set_agent_mode(&self, on: bool) {
        self.state.agent.store(on, Ordering::SeqCst);
    }

    /// Answer every request with `r` once the script is used up.
    pub fn always(&self, r: Reply) {
        *self.state.forever.lock().unwrap() = Some(r);
    }

    /// Embedding requests take `ms` each.
    pub fn set_embedding_delay(&self, ms: usize) {
        self.state.embedding_delay_ms.store(ms, Ordering::SeqCst);
    }

    /// The next `n` embedding requests fail with 500 (`usize::MAX`: every one).
    pub fn fail_embeddings(&self, n: usize) {
        self.state.embedding_failures.store(n, Ordering::SeqCst);
    }

    /// Embedding requests received that hold none of `questions` (the texts of
    /// searches and chat turns, embedded to search with).
    pub fn embedding_requests_except(&self, questions: &[&str]) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.get("input").is_some() && r.get("messages").is_none())
            .filter(|r| {
                let inputs: Vec<&str> = match &r["input"] {
                    Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                    Value::String(s) => vec![s.as_str()],
                    _ => Vec::new(),
                };
                !inputs.iter().any(|i| questions.contains(i))
            })
            .count()
    }

    pub fn set_chunk_delay(&self, ms: usize) {
        self.state.chunk_delay_ms.store(ms, Ordering::SeqCst);
    }

    pub fn requests(&self) -> Vec<Value> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn auth_headers(&self) -> Vec<String> {
        self.state.auth.lock().unwrap().clone()
    }

    /// The messages of the most recent request.
    pub fn last_messages(&self) -> Vec<Value> {
        self.requests()
            .last()
            .and_then(|r| r["messages"].as_array().cloned())
            .unwrap_or_default()
    }

    pub fn count(&self) -> usize {
        self.state.requests.lock().unwrap().len()
    }

    /// Everything the model was ever shown, as one string.
    pub fn everything_seen(&self) -> String {
        self.requests()
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn cancelled(&self) -> usize {
        self.state.cancelled.load(Ordering::SeqCst)
    }
}

async fn set_chunk_delay(State(state): State<Arc<MockState>>, body: Bytes) -> StatusCode {
    match std::str::from_utf8(&body)
        .ok()
        .and_then(|b| b.trim().parse::<usize>().ok())
    {
        Some(ms) => {
            state.chunk_delay_ms.store(ms, Ordering::SeqCst);
            StatusCode::NO_CONTENT
        }
        None => StatusCode::BAD_REQUEST,
    }
}

async fn stats(State(state): State<Arc<MockState>>) -> axum::Json<Value> {
    axum::Json(json!({
        "cancelled": state.cancelled.load(Ordering::SeqCst),
        "completed_streams": state.completed_streams.load(Ordering::SeqCst),
    }))
}

/// The stand-in's embedding of `text`: 8 dimensions from its SHA-256, unit length.
pub fn embedding_of(text: &str) -> Vec<f32> {
    use sha2::Digest;
    let d = sha2::Sha256::digest(text.as_bytes());
    let v: Vec<f32> = d[..8].iter().map(|b| f32::from(*b) - 127.5).collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / norm).collect()
}

/// OpenAI's 400 for a refused request, which is recorded as refused.
fn refuse(state: &MockState, req: Value, refusal: strict::Refusal) -> Response {
    let body = refusal.body();
    state.refused.lock().unwrap().push((req, refusal.message));
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

/// `POST /v1/embeddings`, checked like a chat request; recorded with the chat requests.
async fn embeddings(State(state): State<Arc<MockState>>, body: Bytes) -> Response {
    let req = strict::parse(&body).unwrap_or(Value::Null);
    state.requests.lock().unwrap().push(req.clone());
    if let Err(refusal) = strict::check_embedding_request(&body) {
        return refuse(&state, req, refusal);
    }
    let delay = state.embedding_delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay as u64)).await;
    }
    let failing = state
        .embedding_failures
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| match n {
            0 => None,
            usize::MAX => Some(usize::MAX),
            n => Some(n - 1),
        })
        .is_ok();
    if failing {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({"error": {"message": "The server had an error while processing your request.", "type": "server_error", "param": null, "code": null}})),
        )
            .into_response();
    }
    let texts: Vec<String> = match &req["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .map(|t| t.as_str().unwrap_or("").to_owned())
            .collect(),
        _ => Vec::new(),
    };
    let data: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": embedding_of(t)}))
        .collect();
    axum::Json(
        json!({"object": "list", "data": data, "model": req["model"],
        "usage": {"prompt_tokens": 5, "total_tokens": 5}}),
    )
    .into_response()
}

/// `POST /v1/responses`, checked as OpenAI would: answers with the echo of the `input`
/// (or the scripted reply) as output items, or as the Responses event stream.
async fn responses(State(state): State<Arc<MockState>>, body: Bytes) -> Response {
    let req = strict::parse(&body).unwrap_or(Value::Null);
    state.requests.lock().unwrap().push(req.clone());
    if let Err(refusal) = strict::check_responses_request(&body) {
        return refuse(&state, req, refusal);
    }
    let scripted = {
        let next = state.script.lock().unwrap().pop_front();
        next.or_else(|| state.forever.lock().unwrap().clone())
    };
    let mut output: Vec<Value> = Vec::new();
    let mut text = None;
    match scripted {
        Some(Reply::Text(t)) => text = Some(("output_text", t)),
        Some(Reply::Refusal(r)) => text = Some(("refusal", r)),
        Some(Reply::Calls(calls)) => {
            for (id, name, args) in calls {
                output.push(
                    json!({"type": "function_call", "id": format!("fc_{id}"), "call_id": id,
                    "name": name, "arguments": args, "status": "completed"}),
                );
            }
        }
        None => text = Some(("output_text", echo_of(&req["input"]))),
    }
    if let Some((kind, t)) = &text {
        let part = if *kind == "refusal" {
            json!({"type": "refusal", "refusal": t})
        } else {
            json!({"type": "output_text", "text": t, "annotations": []})
        };
        output.insert(
            0,
            json!({"type": "message", "id": "msg_mock", "status": "completed",
            "role": "assistant", "content": [part]}),
        );
    }
    let usage = json!({"input_tokens": 11, "input_tokens_details": {"cached_tokens": 3},
        "output_tokens": 7, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 18});
    let response = json!({"id": "resp_mock", "object": "response", "created_at": 0,
        "status": "completed", "model": req["model"], "output": output, "usage": usage});
    if req["stream"] != Value::Bool(true) {
        return axum::Json(response).into_response();
    }
    // The event sequence: each output item added, its pieces, done; then completed.
    let mut events: Vec<Value> = vec![
        json!({"type": "response.created", "response": {"id": "resp_mock", "status": "in_progress", "output": []}}),
    ];
    for (i, item) in output.iter().enumerate() {
        if item["type"] == "function_call" {
            let mut opened = item.clone();
            opened["arguments"] = json!("");
            events.push(
                json!({"type": "response.output_item.added", "output_index": i, "item": opened}),
            );
            let args: Vec<char> = item["arguments"].as_str().unwrap_or("").chars().collect();
            for c in args.chunks(5) {
                events.push(
                    json!({"type": "response.function_call_arguments.delta", "output_index": i,
                    "item_id": item["id"], "delta": c.iter().collect::<String>()}),
                );
            }
            events.push(
                json!({"type": "response.output_item.done", "output_index": i, "item": item}),
            );
        } else if let Some((kind, t)) = &text {
            events.push(json!({"type": "response.output_item.added", "output_index": i,
                "item": {"type": "message", "id": "msg_mock", "status": "in_progress", "role": "assistant", "content": []}}));
            let delta_kind = if *kind == "refusal" {
                "response.refusal.delta"
            } else {
                "response.output_text.delta"
            };
            let chars: Vec<char> = t.chars().collect();
            for c in chars.chunks(16) {
                events.push(
                    json!({"type": delta_kind, "output_index": i, "item_id": "msg_mock",
                    "content_index": 0, "delta": c.iter().collect::<String>()}),
                );
            }
            events.push(
                json!({"type": "response.output_item.done", "output_index": i, "item": item}),
            );
        }
    }
    events.push(json!({"type": "response.completed", "response": response}));
    let body: String = events
        .iter()
        .enumerate()
        .map(|(n, e)| {
            let mut e = e.clone();
            e["sequence_number"] = json!(n);
            format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap_or(""))
        })
        .collect();
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from(body))
        .unwrap()
}

/// The answer the mock gives to `messages`.
pub fn echo_of(messages: &Value) -> String {
    format!("ECHO:{messages}")
}

async fn models() -> Response {
    axum::Json(json!({"object":"list","data":[{"id":"mock-model","object":"model"}]}))
        .into_response()
}

struct CancelGuard {
    state: Arc<MockState>,
    finished: bool,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.state.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

async fn completions(
    State(state): State<Arc<MockState>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let req: Value = strict::parse(&body).unwrap_or(Value::Null);
    if state.strict.load(Ordering::SeqCst)
        && let Err(refusal) = strict::check_chat_request(&body)
    {
        state.auth.lock().unwrap().push(auth);
        state.requests.lock().unwrap().push(req.clone());
        return refuse(&state, req, refusal);
    }
    let fixed = state.fixed_answer.lock().unwrap().clone();
    if fixed.is_none() {
        state.auth.lock().unwrap().push(auth);
        state.requests.lock().unwrap().push(req.clone());
    }
    let mode = state.mode.lock().unwrap().clone();
    match mode {
        Mode::Redirect(to) => {
            return (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, to)]).into_response();
        }
        Mode::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return (
                status,
                axum::Json(json!({"error":{"message":"mock failure","type":"server_error"}})),
            )
                .into_response();
        }
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Mode::Garbage => {
            return (
                [(header::CONTENT_TYPE, "application/json")],
                "<html>definitely not json",
            )
                .into_response();
        }
        Mode::Echo | Mode::CutStream => {}
    }
    let scripted = {
        let next = state.script.lock().unwrap().pop_front();
        next.or_else(|| state.forever.lock().unwrap().clone())
            .or_else(|| {
                let first_round = state.agent.load(Ordering::SeqCst)
                    && req["tools"].as_array().is_some_and(|t| !t.is_empty())
                    && req["messages"]
                        .as_array()
                        .and_then(|m| m.last())
                        .is_some_and(|m| m["role"] == "user");
                let search = req["tools"].to_string().contains("\"search_documents\"");
                first_round.then(|| match search {
                    true => Reply::call(
                        "call_bench",
                        "search_documents",
                        r#"{"query":"travel policy"}"#,
                    ),
                    false => Reply::call("call_bench", "get_weather", r#"{"city":"Paris"}"#),
                })
            })
    };
    let mut refusal: Option<String> = None;
    let (content, calls) = match scripted {
        Some(Reply::Text(t)) => (t, Vec::new()),
        Some(Reply::Calls(c)) => (String::new(), c),
        Some(Reply::Refusal(r)) => {
            refusal = Some(r);
            (String::new(), Vec::new())
        }
        None => (
            fixed.unwrap_or_else(|| echo_of(&req["messages"])),
            Vec::new(),
        ),
    };
    // As OpenAI: `n` choices (the others say which they are), log probabilities when
    // asked for, a fingerprint, usage with its details.
    let n = req["n"].as_u64().unwrap_or(1).max(1);
    let want_logprobs = req["logprobs"] == Value::Bool(true);
    let logprobs_of = move |text: &str| -> Value {
        if !want_logprobs {
            return Value::Null;
        }
        json!({"content": [{"token": text, "logprob": -0.25, "bytes": text.as_bytes(), "top_logprobs": []}], "refusal": null})
    };
    let finish = if calls.is_empty() {
        "stop"
    } else {
        "tool_calls"
    };
    let usage = json!({"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18,
        "prompt_tokens_details": {"cached_tokens": 3, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0}});
    let fingerprint = "fp_stand_in_1";
    let model = req["model"].as_str().unwrap_or("mock-model").to_owned();
    if !req["stream"].as_bool().unwrap_or(false) {
        let mut message = json!({"role": "assistant", "content": content, "refusal": refusal});
        if refusal.is_some() {
            message["content"] = Value::Null;
        }
        if !calls.is_empty() {
            message["content"] = Value::Null;
            message["tool_calls"] = calls
                .iter()
                .map(|(id, name, args)| json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}}))
                .collect();
        }
        let mut choices = vec![
            json!({"index": 0, "message": message, "logprobs": logprobs_of(&content), "finish_reason": finish}),
        ];
        for i in 1..n {
            let text = format!("choice {i}");
            choices.push(json!({"index": i, "message": {"role": "assistant", "content": text, "refusal": null}, "logprobs": logprobs_of(&text), "finish_reason": "stop"}));
        }
        return axum::Json(json!({
            "id": "chatcmpl-mock", "object": "chat.completion", "created": 0, "model": model,
            "choices": choices, "usage": usage, "system_fingerprint": fingerprint,
        }))
        .into_response();
    }
    let include_usage = req["stream_options"]["include_usage"]
        .as_bool()
        .unwrap_or(false);
    let delay = Duration::from_millis(state.chunk_delay_ms.load(Ordering::SeqCst) as u64);
    let per = state.chunk_chars.load(Ordering::SeqCst).max(1);
    let field = if refusal.is_some() {
        "refusal"
    } else {
        "content"
    };
    let streamed = refusal.clone().unwrap_or_else(|| content.clone());
    let chars: Vec<char> = streamed.chars().collect();
    let pieces: Vec<String> = chars.chunks(per).map(|c| c.iter().collect()).collect();
    // Tool calls streamed the way OpenAI does: the first piece names the call, the
    // arguments follow a few characters at a time.
    let mut call_pieces: Vec<Value> = Vec::new();
    for (i, (id, name, args)) in calls.iter().enumerate() {
        call_pieces.push(json!({"index": i, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}));
        let a: Vec<char> = args.chars().collect();
        for c in a.chunks(5) {
            call_pieces
                .push(json!({"index": i, "function": {"arguments": c.iter().collect::<String>()}}));
        }
    }
    let cut = mode == Mode::CutStream;
    let st = state.clone();
    let stream = async_stream::stream! {
        let mut guard = CancelGuard { state: st, finished: false };
        for (i, piece) in pieces.into_iter().enumerate() {
            if cut && i == 3 {
                guard.finished = true;
                return;
            }
            let chunk = json!({
                "id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 0, "model": model,
                "system_fingerprint": fingerprint,
                "choices": [{"index": 0, "delta": {field: piece}, "logprobs": logprobs_of(&piece), "finish_reason": null}],
            });
            yield Ok::<_, std::io::Error>(Bytes::from(format!("data: {chunk}\n\n")));
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
        }
        for piece in call_pieces {
            let chunk = json!({
                "id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 0, "model": model,
                "choices": [{"index": 0, "delta": {"tool_calls": [piece]}, "finish_reason": null}],
            });
            yield Ok(Bytes::from(format!("data: {chunk}\n\n")));
        }
        for i in 1..n {
            for (delta, fin) in [(json!({"role": "assistant", "content": format!("choice {i}")}), Value::Null), (json!({}), json!("stop"))] {
                let c = json!({
                    "id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 0, "model": model,
                    "system_fingerprint": fingerprint,
                    "choices": [{"index": i, "delta": delta, "logprobs": null, "finish_reason": fin}],
                });
                yield Ok(Bytes::from(format!("data: {c}\n\n")));
            }
        }
        let last = json!({
            "id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 0, "model": model,
            "system_fingerprint": fingerprint,
            "choices": [{"index": 0, "delta": {}, "finish_reason": finish}],
        });
        yield Ok(Bytes::from(format!("data: {last}\n\n")));
        if include_usage {
            let u = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 0, "model": model, "choices": [], "usage": usage});
            yield Ok(Bytes::from(format!("data: {u}\n\n")));
        }
        yield Ok(Bytes::from("data: [DONE]\n\n"));
        guard.finished = true;
        guard.state.completed_streams.fetch_add(1, Ordering::SeqCst);
    };
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap()
}
