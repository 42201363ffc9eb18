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
