//! The timing loop the benchmarks share: a warm-up, then batches for about a budget;
//! the batch times give the p50 and the mean per call.

use std::time::{Duration, Instant};

/// Times `f` over batches for about `budget`; returns (p50, mean) per call.
pub fn measure<R>(budget: Duration, mut f: impl FnMut() -> R) -> (Duration, Duration) {
    // Warm-up, and a batch size that makes a batch last ~10 ms.
    let t = Instant::now();
    let mut n = 0u32;
    while t.elapsed() < Duration::from_millis(200) {
        std::hint::black_box(f());
        n += 1;
    }
    let batch = (n / 20).max(1);
    let mut per_call = Vec::new();
    let start = Instant::now();
    while start.elapsed() < budget || per_call.len() < 5 {
        let t = Instant::now();
        for _ in 0..batch {
            std::hint::black_box(f());
        }
        per_call.push(t.elapsed() / batch);
    }
    per_call.sort();
    let mean = per_call.iter().sum::<Duration>() / per_call.len() as u32;
    (per_call[per_call.len() / 2], mean)
}
