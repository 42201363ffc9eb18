//! Session liveness on every request, with an in-process cache.
//!
//! A positive answer is served from memory for at most `session_cache_ttl` (default 1 s);
//! revocations made by this process evict the entry at once. Revocations made elsewhere
//! (the CLI, another node) are seen within the TTL. A store error denies (503).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::store::{SessionRecord, SessionStore, StoreError};
use crate::timeutil::now_ms;

/// Past this many entries the cache is cleared rather than grown: an attacker minting
/// nothing can only fill it with sessions that exist.
const MAX_ENTRIES: usize = 100_000;

#[derive(Clone)]
struct Entry {
    fetched_at: i64,
    /// Usable until (ms); 0 when the session is revoked or unknown.
    live_until: i64,
    tenant: String,
    user_id: String,
}

pub struct SessionCache {
    store: Arc<dyn SessionStore>,
    entries: RwLock<HashMap<String, Entry>>,
    ttl_ms: i64,
    idle_ttl_ms: i64,
}

/// The outcome of a liveness check.
#[derive(Debug, PartialEq, Eq)]
pub enum Liveness {
    Live,
    Dead,
}

impl SessionCache {
    pub fn new(store: Arc<dyn SessionStore>, ttl_ms: i64, idle_ttl_ms: i64) -> Self {
        Self {
            store,
            entries: RwLock::new(HashMap::new()),
            ttl_ms,
            idle_ttl_ms,
        }
    }

    /// Is session `sid` live *and* does it belong to (tenant, user)?
    pub async fn check(
        &self,
        sid: &str,
        tenant: &str,
        user_id: &str,
    ) -> Result<Liveness, StoreError> {
        let now = now_ms();
        let cached = self
            .entries
            .read()
            .ok()
            .and_then(|m| m.get(sid).cloned())
            .filter(|e| now - e.fetched_at < self.ttl_ms);
        let entry = match cached {
            Some(e) => e,
            None => {
                let rec = self.store.session(sid).await?;
                let e = self.entry_for(rec.as_ref(), now);
                if let Ok(mut m) = self.entries.write() {
                    if m.len() >= MAX_ENTRIES {
                        m.clear();
                    }
                    m.insert(sid.to_owned(), e.clone());
                }
                e
            }
        };
        let ok = now < entry.live_until && entry.tenant == tenant && entry.user_id == user_id;
        Ok(if ok { Liveness::Live } else { Liveness::Dead })
    }

    fn entry_for(&self, rec: Option<&SessionRecord>, now: i64) -> Entry {
        match rec {
            Some(r) => Entry {
                fetched_at: now,
                live_until: if r.is_live(now, self.idle_ttl_ms) {
                    r.deadline(self.idle_ttl_ms)
                } else {
                    0
                },
                tenant: r.tenant.clone(),
                user_id: r.user_id.clone(),
            },
            None => Entry {
                fetched_at: now,
                live_until: 0,
                tenant: String::new(),
                user_id: String::new(),
            },
        }
    }

    /// Forgets `sid` so the next check goes to the store.
    pub fn invalidate(&self, sid: &str) {
        if let Ok(mut m) = self.entries.write() {
            m.remove(sid);
        }
    }

    pub fn invalidate_many<'a>(&self, sids: impl IntoIterator<Item = &'a String>) {
        if let Ok(mut m) = self.entries.write() {
            for s in sids {
                m.remove(s);
            }
        }
    }
}
