//! Metrics: every name palisade exports, in one place, recorded through the `metrics`
//! facade and rendered as Prometheus text at `/metrics`.
//!
//! Labels are bounded by construction: route templates (never raw paths, so no ids),
//! fixed reason strings, configured model names. Nothing a client sends becomes a label.
//! Until [`install`] runs (the server does it at start), recording is a no-op.

use std::sync::OnceLock;

use metrics::{counter, histogram};
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

pub fn http_request(method: &str, route: &str, status: u16, seconds: f64) {
    let (method, route) = (method.to_owned(), route.to_owned());
    counter!(HTTP_REQUESTS, "method" => method.clone(), "route" => route.clone(), "status" => status.to_string())
        .increment(1);
    histogram!(HTTP_DURATION, "method" => method, "route" => route).record(seconds);
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
    counter!(RETRIEVALS).increment(1);
    histogram!(RETRIEVAL_DURATION).record(seconds);
    histogram!(RETRIEVAL_CHUNKS).record(chunks as f64);
}

pub fn upstream(model: &str, ok: bool, seconds: f64) {
    let outcome = if ok { "ok" } else { "error" };
    counter!(UPSTREAM_REQUESTS, "model" => model.to_owned(), "outcome" => outcome).increment(1);
    histogram!(UPSTREAM_DURATION, "model" => model.to_owned()).record(seconds);
}

pub fn tokens(model: &str, prompt: u64, completion: u64) {
    counter!(TOKENS, "model" => model.to_owned(), "kind" => "prompt").increment(prompt);
    counter!(TOKENS, "model" => model.to_owned(), "kind" => "completion").increment(completion);
}
