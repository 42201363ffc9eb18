//! Session liveness on every request, with an in-process cache (moka).
//!
//! A positive answer is served from memory for at most `session_cache_ttl` (default 1 s);
//! revocations made by this process evict the entry at once. Revocations made elsewhere
//! (the CLI, another node) are seen within the TTL — or at once, when the store
//! publishes them (the cluster store's revocation feed). Concurrent misses for one session
//! are coalesced into one store read. A store error denies (503) and is not cached.

use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;

use crate::access::Grants;
use crate::model::StoreError;
use crate::store::{SessionRecord, SessionStore};

/// Past this many entries the least recently used are evicted: an attacker minting
/// nothing can only fill the cache with sessions that exist.
const MAX_ENTRIES: u64 = 100_000;

#[derive(Clone)]
struct Entry {
    /// Usable until (ms); 0 when the session is revoked or unknown.
    live_until: i64,
    tenant: String,
    user_id: String,
    grants: Arc<Grants>,
}

pub struct SessionCache {
    store: Arc<dyn SessionStore>,
    entries: Cache<String, Entry>,
    idle_ttl_ms: i64,
    /// What "live" is judged against.
    pub(super) clock: Arc<dyn crate::timeutil::Clock>,
}

/// The outcome of a liveness check.
#[derive(Debug, PartialEq, Eq)]
pub enum Liveness {
    Live(Arc<Grants>),
    Dead,
}

impl SessionCache {
    pub fn new(store: Arc<dyn SessionStore>, ttl: Duration, idle_ttl_ms: i64) -> Self {
        let entries: Cache<String, Entry> = Cache::builder()
            .max_capacity(MAX_ENTRIES)
            .time_to_live(ttl.max(Duration::from_millis(1)))
            .build();
        // Revocations published by other processes evict at once.
        if let (Some(mut feed), Ok(rt)) = (
            store.revocation_feed(),
            tokio::runtime::Handle::try_current(),
        ) {
            let entries = entries.clone();
            rt.spawn(async move {
                use tokio::sync::broadcast::error::RecvError;
                loop {
                    match feed.recv().await {
                        Ok(sid) if sid == "*" => entries.invalidate_all(),
                        Ok(sid) => entries.invalidate(&sid).await,
                        // Fell behind: some were missed, so none can be trusted.
                        Err(RecvError::Lagged(_)) => entries.invalidate_all(),
                        Err(RecvError::Closed) => break,
                    }
                }
            });
        }
        Self {
            store,
            entries,
            idle_ttl_ms,
            clock: Arc::new(crate::timeutil::SystemClock),
        }
    }

    /// Is session `sid` live *and* does it belong to (tenant, user)?
    pub async fn check(
        &self,
        sid: &str,
        tenant: &str,
        user_id: &str,
    ) -> Result<Liveness, StoreError> {
        let entry = self
            .entries
            .try_get_with_by_ref(sid, async {
                let rec = self.store.session(sid).await?;
                Ok::<_, StoreError>(self.entry_for(rec.as_ref(), self.clock.now_ms()))
            })
            .await
            .map_err(|e: Arc<StoreError>| StoreError::Unavailable(e.to_string()))?;
        let ok = self.clock.now_ms() < entry.live_until
            && entry.tenant == tenant
            && entry.user_id == user_id;
        Ok(if ok {
            Liveness::Live(entry.grants)
        } else {
            Liveness::Dead
        })
    }

    fn entry_for(&self, rec: Option<&SessionRecord>, now: i64) -> Entry {
        match rec {
            Some(r) => Entry {
                live_until: if r.is_live(now, self.idle_ttl_ms) {
                    r.deadline(self.idle_ttl_ms)
                } else {
                    0
                },
                tenant: r.tenant.clone(),
                user_id: r.user_id.clone(),
                grants: Arc::new(Grants {
                    roles: r.roles.clone(),
                    groups: r.groups.clone(),
                }),
            },
            None => Entry {
                live_until: 0,
                tenant: String::new(),
                user_id: String::new(),
                grants: Default::default(),
            },
        }
    }

    /// Forgets `sid` so the next check goes to the store.
    pub async fn invalidate(&self, sid: &str) {
        self.entries.invalidate(sid).await;
    }

    pub async fn invalidate_many<'a>(&self, sids: impl IntoIterator<Item = &'a String>) {
        for s in sids {
            self.entries.invalidate(s.as_str()).await;
        }
    }
}
