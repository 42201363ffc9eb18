//! Metrics: every name palisade exports, in one place, recorded through the `metrics`
//! facade and rendered as Prometheus text at `/metrics`.
//!
//! Labels are bounded by construction: route templates (never raw paths, so no ids),
//! fixed reason strings, configured model names. Nothing a client sends becomes a label.
//! Until [`install`] runs (the server does it at start), recording is a no-op.

use std::collections::HashMap;
use std::sync::{LazyLock, OnceLock, RwLock};

use metrics::{Counter, Histogram, counter, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const HTTP_REQUESTS: &str = "palisade_http_requests_total";
pub const HTTP_DURATION: &str = "palisade_http_request_duration_seconds";
pub const SECURITY_EVENTS: &str = "palisade_security_events_total";
pub const AUTH_FAILURES: &str = "palisade_auth_failures_total";
pub const REFRESH_REUSE: &str = "palisade_refresh_reuse_detected_total";
pub const THREAD_DENIALS: &str = "palisade_thread_access_denied_total";
pub const LIMITED: &str = "palisade_requests_limited_total";
pub const RETRIEVAL_DURATION: &str = "palisade_retrieval_duration_seconds";
pub const RETRIEVAL_CHUNKS: &str = "palisade_retrieval_chunks";
pub const RETRIEVALS: &str = "palisade_retrievals_total";
pub const UPSTREAM_DURATION: &str = "palisade_upstream_duration_seconds";
pub const UPSTREAM_REQUESTS: &str = "palisade_upstream_requests_total";
pub const TOKENS: &str = "palisade_model_tokens_total";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

const SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const CHUNKS: &[f64] = &[0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 50.0];

/// Installs the process-wide recorder (once; later calls are no-ops).
pub fn install() {
    if HANDLE.get().is_some() {
        return;
    }
    let built = PrometheusBuilder::new()
        .set_buckets(SECONDS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(RETRIEVAL_CHUNKS.into()), CHUNKS));
    match built.and_then(|b| b.install_recorder()) {
        Ok(handle) => {
            let _ = HANDLE.set(handle);
            describe();
        }
        Err(e) => tracing::warn!(error = %e, "metrics recorder not installed"),
    }
}

fn describe() {
    use metrics::{describe_counter, describe_histogram};
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests by method, route template and status."
    );
    describe_histogram!(
        HTTP_DURATION,
        metrics::Unit::Seconds,
        "Time to the response head, by method and route template."
    );
    describe_counter!(
        SECURITY_EVENTS,
        "Audit-trail events by event kind and reason."
    );
    describe_counter!(
        AUTH_FAILURES,
        "Failed logins, refused tokens and throttled logins, by reason."
    );
    describe_counter!(
        REFRESH_REUSE,
        "Refresh tokens replayed after rotation (the session was revoked)."
    );
    describe_counter!(
        THREAD_DENIALS,
        "Requests for a thread the caller does not own (answered 404)."
    );
    describe_counter!(
        LIMITED,
        "Requests refused with 429 by a rate limit or token budget, by limit."
    );
    describe_histogram!(
        RETRIEVAL_DURATION,
        metrics::Unit::Seconds,
        "Retrieval for a prompt (embedding, search, fusion)."
    );
    describe_histogram!(RETRIEVAL_CHUNKS, "Chunks returned per retrieval.");
    describe_counter!(RETRIEVALS, "Retrievals run for prompts and tool calls.");
    describe_histogram!(
        UPSTREAM_DURATION,
        metrics::Unit::Seconds,
        "Model calls, to the whole answer, by model."
    );
    describe_counter!(
        UPSTREAM_REQUESTS,
        "Model calls by model and outcome (ok, error)."
    );
    describe_counter!(
        TOKENS,
        "Model tokens by model and kind (prompt, completion)."
    );
}

/// The Prometheus text exposition of every metric; empty before [`install`].
pub fn render() -> String {
    match HANDLE.get() {
        Some(h) => {
            h.run_upkeep();
            h.render()
        }
        None => String::new(),
    }
}

pub fn http_request(method: &'static str, route: &str, status: u16, seconds: f64) {
    type PerRoute = Vec<(&'static str, u16, Counter, Histogram)>;
    static HANDLES: LazyLock<RwLock<HashMap<Box<str>, PerRoute>>> = LazyLock::new(Default::default);
    if !installed() {
        return;
    }
    if let Ok(map) = HANDLES.read()
        && let Some((.., c, h)) = map
            .get(route)
            .and_then(|v| v.iter().find(|h| h.0 == method && h.1 == status))
    {
        c.increment(1);
        h.record(seconds);
        return;
    }
    let c = counter!(HTTP_REQUESTS, "method" => method, "route" => route.to_owned(), "status" => status.to_string());
    let h = histogram!(HTTP_DURATION, "method" => method, "route" => route.to_owned());
    c.increment(1);
    h.record(seconds);
    if let Ok(mut map) = HANDLES.write() {
        map.entry(route.into())
            .or_default()
            .push((method, status, c, h));
    }
}

/// Whether the recorder is installed: a handle taken before would record nothing, so
/// none is kept until then.
fn installed() -> bool {
    HANDLE.get().is_some()
}

/// A model's metric handles, registered once (the registry builds and hashes a
/// metric's labels on every lookup; per request that was ~2 % of a chat request).
struct ModelHandles {
    ok: Counter,
    error: Counter,
    duration: Histogram,
    prompt_tokens: Counter,
    completion_tokens: Counter,
}

fn with_model(model: &str, f: impl FnOnce(&ModelHandles)) {
    static HANDLES: LazyLock<RwLock<HashMap<Box<str>, ModelHandles>>> =
        LazyLock::new(Default::default);
    if !installed() {
        return;
    }
    if let Ok(map) = HANDLES.read()
        && let Some(h) = map.get(model)
    {
        f(h);
        return;
    }
    let m = model.to_owned();
    let h = ModelHandles {
        ok: counter!(UPSTREAM_REQUESTS, "model" => m.clone(), "outcome" => "ok"),
        error: counter!(UPSTREAM_REQUESTS, "model" => m.clone(), "outcome" => "error"),
        duration: histogram!(UPSTREAM_DURATION, "model" => m.clone()),
        prompt_tokens: counter!(TOKENS, "model" => m.clone(), "kind" => "prompt"),
        completion_tokens: counter!(TOKENS, "model" => m, "kind" => "completion"),
    };
    f(&h);
    if let Ok(mut map) = HANDLES.write() {
        map.entry(model.into()).or_insert(h);
    }
}

/// One security event (`n` of them for an aggregated audit record), with the derived
/// counters of the kinds operators alert on.
pub fn security_event(kind: &'static str, reason: Option<&str>, n: u64) {
    let reason = reason.unwrap_or("").to_owned();
    counter!(SECURITY_EVENTS, "event" => kind, "reason" => reason.clone()).increment(n);
    match kind {
        "login_failed" | "token_rejected" | "login_throttled" => {
            counter!(AUTH_FAILURES, "event" => kind, "reason" => reason).increment(n)
        }
        "refresh_reuse_detected" => counter!(REFRESH_REUSE).increment(n),
        "thread_access_denied" => counter!(THREAD_DENIALS).increment(n),
        _ => {}
    }
}

/// A request refused by the limit or budget `limit` (429).
pub fn limited(limit: &'static str) {
    counter!(LIMITED, "limit" => limit).increment(1);
}

pub fn retrieval(seconds: f64, chunks: usize) {
    static HANDLES: OnceLock<(Counter, Histogram, Histogram)> = OnceLock::new();
    if !installed() {
        return;
    }
    let (count, duration, sizes) = HANDLES.get_or_init(|| {
        (
            counter!(RETRIEVALS),
            histogram!(RETRIEVAL_DURATION),
            histogram!(RETRIEVAL_CHUNKS),
        )
    });
    count.increment(1);
    duration.record(seconds);
    sizes.record(chunks as f64);
}

pub fn upstream(model: &str, ok: bool, seconds: f64) {
    with_model(model, |h| {
        if ok { &h.ok } else { &h.error }.increment(1);
        h.duration.record(seconds);
    });
}

pub fn tokens(model: &str, prompt: u64, completion: u64) {
    with_model(model, |h| {
        h.prompt_tokens.increment(prompt);
        h.completion_tokens.increment(completion);
    });
}
