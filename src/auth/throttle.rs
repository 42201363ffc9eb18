//! Fixed-window counters for login throttling, where taking a slot is one atomic step
//! (check and count under one lock), taken *before* the slow password hash: a burst of
//! concurrent guesses can never evaluate more passwords than the limit allows.
//!
//! In-process: in cluster mode the same interface is backed by Redis. Memory is bounded
//! by sweeping expired windows whenever the map grows past a threshold.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SWEEP_THRESHOLD: usize = 10_000;

struct Window {
    start: Instant,
    count: u32,
}

pub struct Throttle {
    windows: Mutex<HashMap<String, Window>>,
    limit: u32,
    period: Duration,
}

impl Throttle {
    pub fn new(limit: u32, period: Duration) -> Self {
        Self {
            windows: Mutex::new(HashMap::new()),
            limit,
            period,
        }
    }

    /// Takes one slot of `key`'s allowance, or `Err(seconds until the window resets)`
    /// when none is left. Check and count are one step.
    pub fn acquire(&self, key: &str) -> Result<(), u64> {
        let now = Instant::now();
        let Ok(mut map) = self.windows.lock() else {
            // Fail closed: a poisoned lock means we cannot count, so we refuse.
            return Err(self.period.as_secs().max(1));
        };
        if map.len() >= SWEEP_THRESHOLD {
            let period = self.period;
            map.retain(|_, w| now.duration_since(w.start) < period);
        }
        let w = map.entry(key.to_owned()).or_insert(Window {
            start: now,
            count: 0,
        });
        if now.duration_since(w.start) >= self.period {
            *w = Window {
                start: now,
                count: 0,
            };
        }
        if w.count >= self.limit {
            let left = self.period.saturating_sub(now.duration_since(w.start));
            return Err(left.as_secs().max(1));
        }
        w.count += 1;
        Ok(())
    }

    /// Gives back a slot taken by [`acquire`](Self::acquire) for an attempt that was
    /// then refused by another limit (a refused attempt is not counted).
    pub fn release(&self, key: &str) {
        if let Ok(mut map) = self.windows.lock()
            && let Some(w) = map.get_mut(key)
        {
            w.count = w.count.saturating_sub(1);
        }
    }

    pub fn reset(&self, key: &str) {
        if let Ok(mut map) = self.windows.lock() {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_limit_and_resets() {
        let t = Throttle::new(2, Duration::from_secs(60));
        assert!(t.acquire("a").is_ok());
        assert!(t.acquire("a").is_ok());
        let retry = t.acquire("a").unwrap_err();
        assert!((1..=60).contains(&retry));
        assert!(t.acquire("b").is_ok());
        t.release("a");
        assert!(t.acquire("a").is_ok());
        assert!(t.acquire("a").is_err());
        t.reset("a");
        assert!(t.acquire("a").is_ok());
    }

    #[test]
    fn concurrent_acquires_never_exceed_the_limit() {
        let t = std::sync::Arc::new(Throttle::new(5, Duration::from_secs(60)));
        let handles: Vec<_> = (0..100)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || t.acquire("k").is_ok())
            })
            .collect();
        let granted = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|ok| *ok)
            .count();
        assert_eq!(granted, 5);
    }
}
