//! Rate limits and throttles, shared by every process that shares the store: taking a
//! slot is one atomic step, so concurrent requests (on one node or on several) can never
//! overshoot a limit. The embedded store keeps them in memory (one process); the
//! cluster store in Redis (every node counts against the same allowance).

use async_trait::async_trait;
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::StoreResult;

/// One named limit. Keys are the caller's (a pseudonymous username, an address, a user
/// id); the name keeps different limits on one key apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub name: &'static str,
    pub kind: LimitKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// At most `max` per fixed window of `period` (counts can be given back).
    Window { max: u32, period: Duration },
    /// GCRA: a burst of `burst`, refilled at `per_minute`.
    Rate { burst: u32, per_minute: u32 },
}

/// Whether a slot was taken; if not, how long until one frees (whole seconds, ≥ 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    RetryAfter(u64),
}

#[async_trait]
pub trait LimitStore: Send + Sync {
    /// Takes one slot of `limit` for `key`, atomically.
    async fn take(&self, limit: &Limit, key: &str) -> StoreResult<Admission>;
    /// Gives back a slot of a window limit (an attempt another limit then refused).
    async fn give_back(&self, limit: &Limit, key: &str) -> StoreResult<()>;
    /// Forgets `key`'s count of a window limit (a successful login clears failures).
    async fn reset(&self, limit: &Limit, key: &str) -> StoreResult<()>;
    /// Adds `amount` to `key`'s usage of `budget` on day `day` (days since the unix
    /// epoch, UTC) and returns the day's new total. Counters outlive their day by a day.
    async fn add_usage(
        &self,
        budget: &'static str,
        key: &str,
        day: i64,
        amount: u64,
    ) -> StoreResult<u64>;
    /// `key`'s usage of `budget` on day `day` so far.
    async fn usage(&self, budget: &'static str, key: &str, day: i64) -> StoreResult<u64>;
    /// Holds `amount` of `key`'s `budget` on `day` for a request about to run, in one
    /// atomic step, if it fits: the day's usage, what requests in flight hold and
    /// `amount` stay within `cap` — or nothing is held and the day's usage is below
    /// `cap` (one request at a time may still overshoot by its own estimate error, as
    /// before reservations). Returns whether it was held.
    async fn reserve(
        &self,
        budget: &'static str,
        key: &str,
        day: i64,
        amount: u64,
        cap: u64,
    ) -> StoreResult<bool>;
    /// Ends a reservation of `reserved` on `day`: it leaves the hold and `used` is added
    /// to the day's usage.
    async fn settle(
        &self,
        budget: &'static str,
        key: &str,
        day: i64,
        reserved: u64,
        used: u64,
    ) -> StoreResult<()>;
}

/// Past this many entries, expired windows are swept.
const SWEEP_THRESHOLD: usize = 10_000;
/// Every this many rate checks, idle keys are forgotten (a sweep visits every key, so
/// it stays off the per-request path).
const RATE_SWEEP_EVERY: u64 = 4096;

struct Window {
    start: Instant,
    count: u32,
    /// This window's own period: a sweep keeps every entry for as long as its limit
    /// says, whichever limit triggered the sweep.
    period: Duration,
}

/// The windows of every limit, and the size at which the next sweep runs.
#[derive(Default)]
struct Windows {
    map: HashMap<(&'static str, String), Window>,
    sweep_at: usize,
}

type Keyed = governor::DefaultKeyedRateLimiter<String>;

type UsageKey = (&'static str, String, i64);

/// In-process limits for the embedded store.
#[derive(Default)]
pub struct MemoryLimits {
    windows: Mutex<Windows>,
    /// Daily usage counters (token budgets); yesterday's and older are dropped when a
    /// new day's first counter is written.
    usage: Mutex<(i64, HashMap<UsageKey, u64>)>,
    /// What requests in flight hold of each day's budgets (under the same lock's day).
    held: Mutex<HashMap<UsageKey, u64>>,
    rates: Mutex<HashMap<&'static str, Arc<Keyed>>>,
    rate_checks: std::sync::atomic::AtomicU64,
}

impl MemoryLimits {
    fn rate_limiter(&self, name: &'static str, burst: u32, per_minute: u32) -> Option<Arc<Keyed>> {
        let mut rates = self.rates.lock().ok()?;
        let limiter = rates.entry(name).or_insert_with(|| {
            let nz = |n: u32| NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
            Arc::new(governor::RateLimiter::keyed(
                governor::Quota::per_minute(nz(per_minute)).allow_burst(nz(burst)),
            ))
        });
        let checks = self
            .rate_checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if checks.is_multiple_of(RATE_SWEEP_EVERY) {
            limiter.retain_recent();
        }
        Some(limiter.clone())
    }
}

#[async_trait]
impl LimitStore for MemoryLimits {
    async fn take(&self, limit: &Limit, key: &str) -> StoreResult<Admission> {
        match limit.kind {
            LimitKind::Window { max, period } => {
                let now = Instant::now();
                let Ok(mut windows) = self.windows.lock() else {
                    // A poisoned lock means we cannot count: refuse.
                    return Ok(Admission::RetryAfter(period.as_secs().max(1)));
                };
                // Expired windows are swept when the map has grown past the mark, and
                // the mark then doubles past what is live: a map full of live windows
                // (a burst of DPoP proofs, each a one-time key) costs amortised O(1)
                // per take, never a full scan each time.
                if windows.map.len() >= windows.sweep_at.max(SWEEP_THRESHOLD) {
                    windows
                        .map
                        .retain(|_, w| now.duration_since(w.start) < w.period);
                    windows.sweep_at = (windows.map.len() * 2).max(SWEEP_THRESHOLD);
                }
                let w = windows
                    .map
                    .entry((limit.name, key.to_owned()))
                    .or_insert(Window {
                        start: now,
                        count: 0,
                        period,
                    });
                if now.duration_since(w.start) >= w.period {
                    *w = Window {
                        start: now,
                        count: 0,
                        period,
                    };
                }
                if w.count >= max {
                    let left = period.saturating_sub(now.duration_since(w.start));
                    return Ok(Admission::RetryAfter(left.as_secs().max(1)));
                }
                w.count += 1;
                Ok(Admission::Admitted)
            }
            LimitKind::Rate { burst, per_minute } => {
                use governor::clock::{Clock, DefaultClock};
                let Some(limiter) = self.rate_limiter(limit.name, burst, per_minute) else {
                    return Ok(Admission::RetryAfter(60));
                };
                Ok(match limiter.check_key(&key.to_owned()) {
                    Ok(()) => Admission::Admitted,
                    Err(not_until) => Admission::RetryAfter(
                        not_until
                            .wait_time_from(DefaultClock::default().now())
                            .as_secs()
                            .max(1),
                    ),
                })
            }
        }
    }

    async fn give_back(&self, limit: &Limit, key: &str) -> StoreResult<()> {
        if let Ok(mut windows) = self.windows.lock()
            && let Some(w) = windows.map.get_mut(&(limit.name, key.to_owned()))
        {
            w.count = w.count.saturating_sub(1);
        }
        Ok(())
    }

    async fn reset(&self, limit: &Limit, key: &str) -> StoreResult<()> {
        if let Ok(mut windows) = self.windows.lock() {
            windows.map.remove(&(limit.name, key.to_owned()));
        }
        Ok(())
    }

    async fn add_usage(
        &self,
        budget: &'static str,
        key: &str,
        day: i64,
        amount: u64,
    ) -> StoreResult<u64> {
        let mut guard = self
            .usage
            .lock()
            .map_err(|_| super::StoreError::Unavailable("usage lock poisoned".into()))?;
        let (newest, map) = &mut *guard;
        if day > *newest {
            map.retain(|k, _| k.2 >= day - 1);
            *newest = day;
        }
        let total = map.entry((budget, key.to_owned(), day)).or_insert(0);
        *total = total.saturating_add(amount);
        Ok(*total)
    }

    async fn usage(&self, budget: &'static str, key: &str, day: i64) -> StoreResult<u64> {
        let guard = self
            .usage
            .lock()
            .map_err(|_| super::StoreError::Unavailable("usage lock poisoned".into()))?;
        Ok(guard
            .1
            .get(&(budget, key.to_owned(), day))
            .copied()
            .unwrap_or(0))
    }

    async fn reserve(
        &self,
        budget: &'static str,
        key: &str,
        day: i64,
        amount: u64,
        cap: u64,
    ) -> StoreResult<bool> {
        let poisoned = || super::StoreError::Unavailable("usage lock poisoned".into());
        // The usage lock first, then the holds: one order everywhere.
        let usage = self.usage.lock().map_err(|_| poisoned())?;
        let mut held = self.held.lock().map_err(|_| poisoned())?;
        held.retain(|k, _| k.2 >= day - 1);
        let k = (budget, key.to_owned(), day);
        let used = usage.1.get(&k).copied().unwrap_or(0);
        let hold = held.entry(k).or_insert(0);
        let fits =
            used.saturating_add(*hold).saturating_add(amount) <= cap || (*hold == 0 && used < cap);
        if fits {
            *hold = hold.saturating_add(amount);
        }
        Ok(fits)
    }

    async fn settle(
        &self,
        budget: &'static str,
        key: &str,
        day: i64,
        reserved: u64,
        used: u64,
    ) -> StoreResult<()> {
        {
            let mut held = self
                .held
                .lock()
                .map_err(|_| super::StoreError::Unavailable("usage lock poisoned".into()))?;
            if let Some(h) = held.get_mut(&(budget, key.to_owned(), day)) {
                *h = h.saturating_sub(reserved);
            }
        }
        if used > 0 {
            self.add_usage(budget, key, day, used).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sweep triggered by a short-lived limit (DPoP's one-time `jti` slots) keeps the
    /// windows of every other limit for their own period: a flood of proofs must not
    /// wipe an account's failed-login count.
    #[tokio::test]
    async fn a_sweep_keeps_each_window_for_its_own_period() {
        let limits = MemoryLimits::default();
        let login = Limit {
            name: "login_failures",
            kind: LimitKind::Window {
                max: 1,
                period: Duration::from_secs(900),
            },
        };
        let once = Limit {
            name: "dpop_jti",
            kind: LimitKind::Window {
                max: 1,
                period: Duration::from_millis(1),
            },
        };
        assert_eq!(limits.take(&login, "u").await.unwrap(), Admission::Admitted);
        for i in 0..SWEEP_THRESHOLD - 1 {
            limits.take(&once, &i.to_string()).await.unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
        // This take sweeps: the expired one-time slots go, the login window stays.
        assert_eq!(
            limits.take(&once, "last").await.unwrap(),
            Admission::Admitted
        );
        assert!(limits.windows.lock().unwrap().map.len() < 100);
        assert!(matches!(
            limits.take(&login, "u").await.unwrap(),
            Admission::RetryAfter(_)
        ));
    }
}
