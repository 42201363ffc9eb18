//! The tests' mock OpenAI-compatible upstream as a standalone server, for benchmarks:
//! `cargo run --release --example mock_upstream -- 127.0.0.1:9100`
//! Streaming answers are sent without pauses between chunks.

#[path = "../tests/api/mock.rs"]
mod mock;

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9100".into());
    let m = mock::Mock::start_on(&addr).await;
    m.set_chunk_delay(0);
    println!("mock upstream listening on {}", m.base_url);
    let _ = tokio::signal::ctrl_c().await;
}
