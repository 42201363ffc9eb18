//! Rate limits and throttles in Redis: every node counts against the same allowance.
//! Each step is one Lua script (atomic); the rate limit reads Redis' own clock, so nodes
//! whose clocks disagree still share one schedule.

use async_trait::async_trait;
use redis::Script;
use std::sync::LazyLock;

use super::{ClusterStore, timed};
use crate::store::StoreResult;
use crate::store::limits::{Admission, Limit, LimitKind, LimitStore};

/// Fixed window. ARGV: key, max, period (ms). Returns 0, or ms until the window ends.
static WINDOW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local k, max, period = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local n = redis.call('INCR', k)
if n == 1 then redis.call('PEXPIRE', k, period) end
if n > max then
  redis.call('DECR', k)
  local ttl = redis.call('PTTL', k)
  if ttl < 0 then redis.call('PEXPIRE', k, period); ttl = period end
  return ttl
end
return 0
"#,
    )
});

/// Gives one slot back. ARGV: key.
static GIVE_BACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local n = tonumber(redis.call('GET', ARGV[1]) or '0')
if n > 0 then redis.call('DECR', ARGV[1]) end
return 0
"#,
    )
});

/// A budget reservation. ARGV: usage key, hold key, amount, cap. Returns 1 if held.
/// Both keys live two days (read until their day ends, whatever the nodes' clocks).
static RESERVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local used = tonumber(redis.call('GET', ARGV[1]) or '0')
local held = tonumber(redis.call('GET', ARGV[2]) or '0')
local amount, cap = tonumber(ARGV[3]), tonumber(ARGV[4])
if used + held + amount <= cap or (held <= 0 and used < cap) then
  redis.call('INCRBY', ARGV[2], amount)
  redis.call('EXPIRE', ARGV[2], 172800)
  return 1
end
return 0
"#,
    )
});

/// Ends a reservation. ARGV: usage key, hold key, reserved, used.
static SETTLE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local held = tonumber(redis.call('GET', ARGV[2]) or '0')
local reserved, used = tonumber(ARGV[3]), tonumber(ARGV[4])
if held > 0 then
  redis.call('DECRBY', ARGV[2], math.min(held, reserved))
end
if used > 0 then
  redis.call('INCRBY', ARGV[1], used)
  redis.call('EXPIRE', ARGV[1], 172800)
end
return 0
"#,
    )
});

/// GCRA on Redis' clock. ARGV: key, burst, per_minute. Returns 0, or ms to wait.
static RATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local k, burst, per_minute = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = math.ceil(60000 / per_minute)
local tat = tonumber(redis.call('GET', k) or now)
if tat < now then tat = now end
local allow_at = tat - (burst - 1) * interval
if now < allow_at then return allow_at - now end
local new_tat = tat + interval
redis.call('SET', k, new_tat, 'PX', new_tat - now + 1)
return 0
"#,
    )
});

fn admission(wait_ms: i64) -> Admission {
    if wait_ms <= 0 {
        Admission::Admitted
    } else {
        Admission::RetryAfter(((wait_ms as u64) / 1000).max(1))
    }
}

impl ClusterStore {
    fn limit_key(&self, limit: &Limit, key: &str) -> String {
        self.key(&["lim:", limit.name, ":", key])
    }

    fn usage_key(&self, budget: &str, key: &str, day: i64) -> String {
        self.key(&["use:", budget, ":", &day.to_string(), ":", key])
    }
}

#[async_trait]
impl LimitStore for ClusterStore {
    async fn take(&self, limit: &Limit, key: &str) -> StoreResult<Admission> {
        let k = self.limit_key(limit, key);
        timed(async {
            let mut r = self.redis();
            let wait: i64 = match limit.kind {
                LimitKind::Window { max, period } => {
                    WINDOW
                        .arg(&k)
                        .arg(max)
                        .arg(period.as_millis().max(1) as u64)
                        .invoke_async(&mut r)
                        .await?
                }
                LimitKind::Rate { burst, per_minute } => {
                    RATE.arg(&k)
                        .arg(burst.max(1))
                        .arg(per_minute.max(1))
                        .invoke_async(&mut r)
                        .await?
                }
            };
            Ok(admission(wait))
        })
        .await
    }

    async fn give_back(&self, limit: &Limit, key: &str) -> StoreResult<()> {
        let k = self.limit_key(limit, key);
        timed(async {
            let mut r = self.redis();
            let _: i64 = GIVE_BACK.arg(&k).invoke_async(&mut r).await?;
            Ok(())
        })
        .await
    }

    async fn add_usage(
        &self,
        budget: &'static str,
        key: &str,
        day: i64,
        amount: u64,
    ) -> StoreResult<u64> {
        let k = self.usage_key(budget, key, day);
        timed(async {
            let mut r = self.redis();
            // One round trip: the increment and the expiry (two days: the counter is
            // read until its day ends, whatever the clock skew between nodes).
            let (total,): (u64,) = redis::pipe()
                .atomic()
                .cmd("INCRBY")
                .arg(&k)
                .arg(amount.min(i64::MAX as u64))
                .cmd("EXPIRE")
                .arg(&k)
                .arg(2 * 86_400)
                .ignore()
                .query_async(&mut r)
                .await?;
            Ok(total)
        })
        .await
    }

    async fn usage(&self, budget: &'static str, key: &str, day: i64) -> StoreResult<u64> {
        let k = self.usage_key(budget, key, day);
        timed(async {
            let mut r = self.redis();
            let v: Option<u64> = redis::cmd("GET").arg(&k).query_async(&mut r).await?;
            Ok(v.unwrap_or(0))
        })
        .await
    }

    async fn reserve(
        &self,
        budget: &'static str,
        key: &str,
        day: i64,
        amount: u64,
        cap: u64,
    ) -> StoreResult<bool> {
        let k = self.usage_key(budget, key, day);
        let hold = format!("{k}:held");
        timed(async {
            let mut r = self.redis();
            let held: i64 = RESERVE
                .arg(&k)
                .arg(&hold)
                .arg(amount.min(i64::MAX as u64))
                .arg(cap.min(i64::MAX as u64))
                .invoke_async(&mut r)
                .await?;
            Ok(held == 1)
        })
        .await
    }

    async fn settle(
        &self,
        budget: &'static str,
        key: &str,
        day: i64,
        reserved: u64,
        used: u64,
    ) -> StoreResult<()> {
        let k = self.usage_key(budget, key, day);
        let hold = format!("{k}:held");
        timed(async {
            let mut r = self.redis();
            let _: i64 = SETTLE
                .arg(&k)
                .arg(&hold)
                .arg(reserved.min(i64::MAX as u64))
                .arg(used.min(i64::MAX as u64))
                .invoke_async(&mut r)
                .await?;
            Ok(())
        })
        .await
    }

    async fn reset(&self, limit: &Limit, key: &str) -> StoreResult<()> {
        let k = self.limit_key(limit, key);
        timed(async {
            let mut r = self.redis();
            let _: i64 = redis::cmd("DEL").arg(&k).query_async(&mut r).await?;
            Ok(())
        })
        .await
    }
}
