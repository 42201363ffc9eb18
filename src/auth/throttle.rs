//! Fixed-window counters for login throttling, per username and per client IP.
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

    /// `Err(seconds until the window resets)` if `key` has used up its allowance.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        let now = Instant::now();
        let Ok(map) = self.windows.lock() else {
            // Fail closed: a poisoned lock means we cannot count, so we refuse.
            return Err(self.period.as_secs().max(1));
        };
        match map.get(key) {
            Some(w) if now.duration_since(w.start) < self.period && w.count >= self.limit => {
                let left = self.period.saturating_sub(now.duration_since(w.start));
                Err(left.as_secs().max(1))
            }
            _ => Ok(()),
        }
    }

    /// Counts one event against `key`.
    pub fn hit(&self, key: &str) {
        let now = Instant::now();
        let Ok(mut map) = self.windows.lock() else {
            return;
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
        w.count = w.count.saturating_add(1);
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
        assert!(t.check("a").is_ok());
        t.hit("a");
        t.hit("a");
        let retry = t.check("a").unwrap_err();
        assert!((1..=60).contains(&retry));
        assert!(t.check("b").is_ok());
        t.reset("a");
        assert!(t.check("a").is_ok());
    }
}
