//! Sessions and refresh families in Redis.
//!
//! Keys (after the configured prefix):
//! * `s:{sid}` — the session (a hash);
//! * `r:{token hash, hex}` — one refresh token: its session, when issued, when rotated;
//! * `f:{sid}` — the tokens of a session's family (a set), `u:{tenant}/{user}` — a
//!   user's sessions (a set);
//! * `ends:abs`, `ends:seen`, `ends:revoked` — sessions by absolute end, last use and
//!   revocation time; `rotated` — rotated tokens by issue time (sorted sets, for pruning).
//!
//! Every multi-key step is one Lua script, which Redis runs alone: rotation in
//! particular is one round trip in which exactly one of any number of concurrent
//! callers can see the token current. Scripts build their keys from the prefix, so this
//! needs a single Redis primary (with replicas or Sentinel), not Redis Cluster.
//! Every revocation is published on `revoked`; each node's [`Revocations`] listener
//! passes it to the session cache.

use async_trait::async_trait;
use redis::Script;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::sync::broadcast;

use super::{ClusterStore, Reachability, mark, timed};
use crate::secret::TokenHash;
use crate::store::{
    NewSession, RotateOutcome, RotateRequest, SessionRecord, SessionStore, StoreError, StoreResult,
};

/// How long a session's keys outlive its absolute end (clock skew between nodes).
const EXPIRY_MARGIN_MS: i64 = 60_000;

/// Rotation. ARGV: prefix, presented, replacement, now, grace, idle, expiry margin.
/// Returns {outcome, session hash fields...}.
static ROTATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local p, presented, repl = ARGV[1], ARGV[2], ARGV[3]
local now, grace, idle = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local tkey = p .. 'r:' .. presented
local tok = redis.call('HMGET', tkey, 'sid', 'rotated_at', 'issued_at')
if not tok[1] then return {'invalid'} end
local sid = tok[1]
local skey = p .. 's:' .. sid
local s = redis.call('HMGET', skey, 'last_seen_at', 'absolute_expires_at', 'revoked_at')
if not s[1] then return {'invalid'} end
local deadline = math.min(tonumber(s[2]), tonumber(s[1]) + idle)
if s[3] or now >= deadline then return {'invalid'} end
local outcome
if not tok[2] then
  redis.call('HSET', tkey, 'rotated_at', now)
  redis.call('ZADD', p .. 'rotated', tonumber(tok[3]), presented)
  redis.call('HSET', p .. 'r:' .. repl, 'sid', sid, 'issued_at', now)
  redis.call('PEXPIREAT', p .. 'r:' .. repl, tonumber(s[2]) + tonumber(ARGV[7]))
  redis.call('SADD', p .. 'f:' .. sid, repl)
  redis.call('HSET', skey, 'last_seen_at', now)
  redis.call('ZADD', p .. 'ends:seen', now, sid)
  outcome = 'rotated'
elseif now - tonumber(tok[2]) <= grace then
  return {'in_progress'}
else
  redis.call('HSET', skey, 'revoked_at', now, 'revoke_reason', 'refresh_reused')
  redis.call('ZADD', p .. 'ends:revoked', now, sid)
  redis.call('PUBLISH', p .. 'revoked', sid)
  outcome = 'reused'
end
local out = {outcome, sid}
local all = redis.call('HGETALL', skey)
for i = 1, #all do out[#out + 1] = all[i] end
return out
"#,
    )
});

/// Revokes one session of (tenant, user). ARGV: prefix, sid, tenant, user, reason, now.
static REVOKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local p, sid = ARGV[1], ARGV[2]
local skey = p .. 's:' .. sid
local s = redis.call('HMGET', skey, 'tenant', 'user_id', 'revoked_at')
if s[1] ~= ARGV[3] or s[2] ~= ARGV[4] or s[3] then return 0 end
redis.call('HSET', skey, 'revoked_at', ARGV[6], 'revoke_reason', ARGV[5])
redis.call('ZADD', p .. 'ends:revoked', tonumber(ARGV[6]), sid)
redis.call('PUBLISH', p .. 'revoked', sid)
return 1
"#,
    )
});

/// Revokes every live session of a user. ARGV: prefix, tenant, user, reason, now.
static REVOKE_ALL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local p = ARGV[1]
local ids = redis.call('SMEMBERS', p .. 'u:' .. ARGV[2] .. '/' .. ARGV[3])
local out = {}
for _, sid in ipairs(ids) do
  local skey = p .. 's:' .. sid
  if redis.call('EXISTS', skey) == 1 and not redis.call('HGET', skey, 'revoked_at') then
    redis.call('HSET', skey, 'revoked_at', ARGV[5], 'revoke_reason', ARGV[4])
    redis.call('ZADD', p .. 'ends:revoked', tonumber(ARGV[5]), sid)
    redis.call('PUBLISH', p .. 'revoked', sid)
    out[#out + 1] = sid
  end
end
return out
"#,
    )
});

/// Deletes up to 500 ended sessions (with their families) and 500 old rotated tokens.
/// ARGV: prefix, ended_before, idle_ttl, rotated_before. Returns {sessions, tokens}.
static PRUNE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local p = ARGV[1]
local ended, idle, rotated_before = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local victims = {}
local function collect(zset, bound)
  for _, sid in ipairs(redis.call('ZRANGEBYSCORE', p .. zset, '-inf', '(' .. bound, 'LIMIT', 0, 500)) do
    victims[sid] = true
  end
end
collect('ends:abs', ended)
collect('ends:seen', ended - idle)
collect('ends:revoked', ended)
local sessions, tokens = 0, 0
for sid, _ in pairs(victims) do
  local skey = p .. 's:' .. sid
  local owner = redis.call('HMGET', skey, 'tenant', 'user_id')
  for _, t in ipairs(redis.call('SMEMBERS', p .. 'f:' .. sid)) do
    tokens = tokens + redis.call('DEL', p .. 'r:' .. t)
    redis.call('ZREM', p .. 'rotated', t)
  end
  redis.call('DEL', p .. 'f:' .. sid)
  if owner[1] then
    redis.call('SREM', p .. 'u:' .. owner[1] .. '/' .. owner[2], sid)
  end
  sessions = sessions + redis.call('DEL', skey)
  redis.call('ZREM', p .. 'ends:abs', sid)
  redis.call('ZREM', p .. 'ends:seen', sid)
  redis.call('ZREM', p .. 'ends:revoked', sid)
end
for _, t in ipairs(redis.call('ZRANGEBYSCORE', p .. 'rotated', '-inf', '(' .. rotated_before, 'LIMIT', 0, 500)) do
  local sid = redis.call('HGET', p .. 'r:' .. t, 'sid')
  tokens = tokens + redis.call('DEL', p .. 'r:' .. t)
  if sid then redis.call('SREM', p .. 'f:' .. sid, t) end
  redis.call('ZREM', p .. 'rotated', t)
end
return {sessions, tokens}
"#,
    )
});

fn hex(h: &TokenHash) -> String {
    h.0.iter().map(|b| format!("{b:02x}")).collect()
}

fn field<'a>(m: &'a HashMap<String, String>, k: &str) -> StoreResult<&'a str> {
    m.get(k)
        .map(String::as_str)
        .ok_or_else(|| StoreError::Corrupt(format!("session without {k}")))
}

fn int(m: &HashMap<String, String>, k: &str) -> StoreResult<i64> {
    field(m, k)?
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("session {k} is not a number")))
}

fn list(m: &HashMap<String, String>, k: &str) -> StoreResult<Vec<String>> {
    serde_json::from_str(field(m, k)?).map_err(|_| StoreError::Corrupt(format!("session {k}")))
}

/// A session from its hash; `None` for an empty hash (no such session).
fn session_from(sid: &str, m: &HashMap<String, String>) -> StoreResult<Option<SessionRecord>> {
    if m.is_empty() {
        return Ok(None);
    }
    Ok(Some(SessionRecord {
        id: sid.to_owned(),
        tenant: field(m, "tenant")?.to_owned(),
        user_id: field(m, "user_id")?.to_owned(),
        created_at: int(m, "created_at")?,
        last_seen_at: int(m, "last_seen_at")?,
        absolute_expires_at: int(m, "absolute_expires_at")?,
        revoked_at: match m.get("revoked_at") {
            Some(v) => Some(
                v.parse()
                    .map_err(|_| StoreError::Corrupt("session revoked_at".into()))?,
            ),
            None => None,
        },
        user_agent: m.get("user_agent").cloned(),
        roles: list(m, "roles")?,
        groups: list(m, "groups")?,
        dpop_jkt: m.get("dpop_jkt").cloned(),
    }))
}

fn pairs(flat: &[String]) -> HashMap<String, String> {
    flat.chunks_exact(2)
        .map(|kv| (kv[0].clone(), kv[1].clone()))
        .collect()
}

impl ClusterStore {
    async fn load_session(&self, sid: &str) -> StoreResult<Option<SessionRecord>> {
        let mut r = self.redis();
        let m: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.key(&["s:", sid]))
            .query_async(&mut r)
            .await?;
        session_from(sid, &m)
    }
}

#[async_trait]
impl SessionStore for ClusterStore {
    async fn create_session(&self, s: NewSession) -> StoreResult<SessionRecord> {
        timed(async {
            let mut r = self.redis();
            let token = hex(&s.refresh_hash);
            let expires = s.absolute_expires_at.saturating_add(EXPIRY_MARGIN_MS);
            let mut fields: Vec<(&str, String)> = vec![
                ("tenant", s.tenant.clone()),
                ("user_id", s.user_id.clone()),
                ("created_at", s.now.to_string()),
                ("last_seen_at", s.now.to_string()),
                ("absolute_expires_at", s.absolute_expires_at.to_string()),
                (
                    "roles",
                    serde_json::to_string(&s.roles).unwrap_or_else(|_| "[]".into()),
                ),
                (
                    "groups",
                    serde_json::to_string(&s.groups).unwrap_or_else(|_| "[]".into()),
                ),
            ];
            if let Some(ua) = &s.user_agent {
                fields.push(("user_agent", ua.clone()));
            }
            if let Some(jkt) = &s.dpop_jkt {
                fields.push(("dpop_jkt", jkt.clone()));
            }
            let _: () = redis::pipe()
                .atomic()
                .hset_multiple(self.key(&["s:", &s.id]), &fields)
                .ignore()
                .hset_multiple(
                    self.key(&["r:", &token]),
                    &[("sid", s.id.clone()), ("issued_at", s.now.to_string())],
                )
                .ignore()
                .sadd(self.key(&["f:", &s.id]), &token)
                .ignore()
                .sadd(self.key(&["u:", &s.tenant, "/", &s.user_id]), &s.id)
                .ignore()
                .zadd(self.key(&["ends:abs"]), &s.id, s.absolute_expires_at)
                .ignore()
                .zadd(self.key(&["ends:seen"]), &s.id, s.now)
                .ignore()
                // Every key of the session lives no longer than the session can: Redis
                // stays bounded even if no node ever runs the prune.
                .cmd("PEXPIREAT")
                .arg(self.key(&["s:", &s.id]))
                .arg(expires)
                .ignore()
                .cmd("PEXPIREAT")
                .arg(self.key(&["r:", &token]))
                .arg(expires)
                .ignore()
                .cmd("PEXPIREAT")
                .arg(self.key(&["f:", &s.id]))
                .arg(expires)
                .ignore()
                // A user's set of sessions lives as long as their longest session.
                .cmd("PEXPIREAT")
                .arg(self.key(&["u:", &s.tenant, "/", &s.user_id]))
                .arg(expires)
                .arg("NX")
                .ignore()
                .cmd("PEXPIREAT")
                .arg(self.key(&["u:", &s.tenant, "/", &s.user_id]))
                .arg(expires)
                .arg("GT")
                .ignore()
                .query_async(&mut r)
                .await?;
            Ok(SessionRecord {
                id: s.id,
                tenant: s.tenant,
                user_id: s.user_id,
                created_at: s.now,
                last_seen_at: s.now,
                absolute_expires_at: s.absolute_expires_at,
                revoked_at: None,
                user_agent: s.user_agent,
                roles: s.roles,
                groups: s.groups,
                dpop_jkt: s.dpop_jkt,
            })
        })
        .await
    }

    async fn session(&self, id: &str) -> StoreResult<Option<SessionRecord>> {
        timed(self.load_session(id)).await
    }

    async fn rotate_refresh(&self, req: RotateRequest) -> StoreResult<RotateOutcome> {
        timed(async {
            let mut r = self.redis();
            let out: Vec<String> = ROTATE
                .arg(&*self.prefix)
                .arg(hex(&req.presented))
                .arg(hex(&req.replacement))
                .arg(req.now)
                .arg(req.grace_ms)
                .arg(req.idle_ttl_ms)
                .arg(EXPIRY_MARGIN_MS)
                .invoke_async(&mut r)
                .await?;
            let outcome = out.first().map(String::as_str).unwrap_or("invalid");
            let session = || -> StoreResult<SessionRecord> {
                let sid = out
                    .get(1)
                    .ok_or_else(|| StoreError::Corrupt("rotation without session".into()))?;
                session_from(sid, &pairs(&out[2..]))?
                    .ok_or_else(|| StoreError::Corrupt("rotation without session".into()))
            };
            Ok(match outcome {
                "rotated" => RotateOutcome::Rotated {
                    session: session()?,
                },
                "reused" => RotateOutcome::Reused {
                    session: session()?,
                },
                "in_progress" => RotateOutcome::InProgress,
                _ => RotateOutcome::Invalid,
            })
        })
        .await
    }

    async fn session_for_refresh(&self, hash: TokenHash) -> StoreResult<Option<SessionRecord>> {
        timed(async {
            let mut r = self.redis();
            let sid: Option<String> = redis::cmd("HGET")
                .arg(self.key(&["r:", &hex(&hash)]))
                .arg("sid")
                .query_async(&mut r)
                .await?;
            match sid {
                Some(sid) => self.load_session(&sid).await,
                None => Ok(None),
            }
        })
        .await
    }

    async fn revoke_session(
        &self,
        tenant: &str,
        user_id: &str,
        session_id: &str,
        reason: &str,
        now: i64,
    ) -> StoreResult<bool> {
        timed(async {
            let mut r = self.redis();
            let n: i64 = REVOKE
                .arg(&*self.prefix)
                .arg(session_id)
                .arg(tenant)
                .arg(user_id)
                .arg(reason)
                .arg(now)
                .invoke_async(&mut r)
                .await?;
            Ok(n == 1)
        })
        .await
    }

    async fn revoke_user_sessions(
        &self,
        tenant: &str,
        user_id: &str,
        reason: &str,
        now: i64,
    ) -> StoreResult<Vec<String>> {
        timed(async {
            let mut r = self.redis();
            Ok(REVOKE_ALL
                .arg(&*self.prefix)
                .arg(tenant)
                .arg(user_id)
                .arg(reason)
                .arg(now)
                .invoke_async(&mut r)
                .await?)
        })
        .await
    }

    async fn prune(
        &self,
        ended_before: i64,
        idle_ttl_ms: i64,
        rotated_before: i64,
    ) -> StoreResult<(u64, u64)> {
        let mut total = (0u64, 0u64);
        // In slices, so that no one script holds Redis for long.
        loop {
            let (s, t): (u64, u64) = timed(async {
                let mut r = self.redis();
                Ok(PRUNE
                    .arg(&*self.prefix)
                    .arg(ended_before)
                    .arg(idle_ttl_ms)
                    .arg(rotated_before)
                    .invoke_async(&mut r)
                    .await?)
            })
            .await?;
            total.0 += s;
            total.1 += t;
            if s == 0 && t == 0 {
                return Ok(total);
            }
        }
    }

    async fn list_sessions(
        &self,
        tenant: &str,
        user_id: &str,
        now: i64,
    ) -> StoreResult<Vec<SessionRecord>> {
        timed(async {
            let mut r = self.redis();
            let ids: Vec<String> = redis::cmd("SMEMBERS")
                .arg(self.key(&["u:", tenant, "/", user_id]))
                .query_async(&mut r)
                .await?;
            let mut pipe = redis::pipe();
            for sid in &ids {
                pipe.hgetall(self.key(&["s:", sid]));
            }
            let maps: Vec<HashMap<String, String>> = if ids.is_empty() {
                Vec::new()
            } else {
                pipe.query_async(&mut r).await?
            };
            let mut out = Vec::new();
            for (sid, m) in ids.iter().zip(&maps) {
                if let Some(s) = session_from(sid, m)?
                    && s.revoked_at.is_none()
                    && s.absolute_expires_at > now
                    && s.tenant == tenant
                    && s.user_id == user_id
                {
                    out.push(s);
                }
            }
            out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
            Ok(out)
        })
        .await
    }

    fn revocation_feed(&self) -> Option<broadcast::Receiver<String>> {
        Some(self.revocations.subscribe())
    }
}

/// Revocations published by any node, as they happen. A listener task keeps one
/// subscription open and reconnects when Redis goes away; after every (re)connection it
/// announces [`Revocations::ALL`], because whatever was published meanwhile was missed
/// and every cached session must be checked again.
#[derive(Clone)]
pub struct Revocations {
    tx: broadcast::Sender<String>,
    /// The listener stops once every copy of this is gone.
    _alive: Arc<()>,
}

impl Revocations {
    /// "Forget every cached session".
    pub const ALL: &'static str = "*";

    pub fn start(client: redis::Client, prefix: Arc<str>, reach: Arc<Reachability>) -> Self {
        let (tx, _) = broadcast::channel(1024);
        let alive = Arc::new(());
        let watch = Arc::downgrade(&alive);
        let feed = tx.clone();
        tokio::spawn(async move {
            let channel = format!("{prefix}revoked");
            let stopped = async {
                while watch.strong_count() > 0 {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            };
            let run = async {
                loop {
                    if let Err(e) = listen(&client, &channel, &feed, &reach).await {
                        tracing::debug!(error = %StoreError::from(e), "revocation feed lost; reconnecting");
                    }
                    // Lost: Redis is unreachable until a new subscription works, and
                    // revocations may be missed meanwhile, so no cached session counts.
                    mark(&reach.redis_down, true, "redis");
                    let _ = feed.send(Revocations::ALL.to_owned());
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            };
            tokio::select! {
                _ = stopped => {}
                _ = run => {}
            }
        });
        Self { tx, _alive: alive }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.tx.subscribe()
    }

    /// A handle that lives as long as this feed (for other watchers to stop with it).
    pub fn alive(&self) -> std::sync::Weak<()> {
        Arc::downgrade(&self._alive)
    }
}

async fn listen(
    client: &redis::Client,
    channel: &str,
    feed: &broadcast::Sender<String>,
    reach: &Reachability,
) -> redis::RedisResult<()> {
    use futures_util::StreamExt;
    let mut pubsub = tokio::time::timeout(Duration::from_secs(5), client.get_async_pubsub())
        .await
        .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "connect timed out")))??;
    pubsub.subscribe(channel).await?;
    let _ = feed.send(Revocations::ALL.to_owned());
    mark(&reach.redis_down, false, "redis");
    let mut messages = pubsub.on_message();
    while let Some(msg) = messages.next().await {
        if let Ok(sid) = msg.get_payload::<String>() {
            let _ = feed.send(sid);
        }
    }
    Ok(())
}
