//! The tests' mock OpenAI-compatible upstream as a standalone server, for benchmarks:
//! `cargo run --release --example mock_upstream -- 127.0.0.1:9100`
//! Streaming answers are sent without pauses between chunks. With `MOCK_ANSWER_CHARS=N`
//! every answer is a fixed text of N characters (a realistic reply) instead of the echo
//! of the prompt, and nothing is recorded. With `MOCK_AGENT=1` a request that declares
//! tools and ends with a user message is answered with a tool call. Every request is
//! checked as OpenAI would (tests/api/strict.rs) unless `MOCK_STRICT=0`.

#[path = "../tests/api/mock.rs"]
mod mock;

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9100".into());
    let m = mock::Mock::start_on(&addr).await;
    m.set_chunk_delay(0);
    // MOCK_STRICT=0 (bench/run): skip OpenAI's checks, which cost the stand-in CPU on
    // the same cores as the systems measured. The tests keep them on.
    m.set_strict(std::env::var("MOCK_STRICT").map_or(true, |v| v != "0"));
    if let Some(n) = std::env::var("MOCK_ANSWER_CHARS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        m.set_fixed_answer(n);
    }
    // MOCK_AGENT=1: an agent's first round (tools declared, last message from the user)
    // is answered with a tool call.
    m.set_agent_mode(std::env::var("MOCK_AGENT").is_ok_and(|v| v == "1"));
    println!("mock upstream listening on {}", m.base_url);
    let _ = tokio::signal::ctrl_c().await;
}
