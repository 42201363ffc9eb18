//! What the in-memory indexes of the embedded store (`flat.rs`, `lexical.rs`) share:
//! each tenant's chunk epoch, the change a committed write made, and the caller's
//! visible ACL ids as a bitmap.
//!
//! The epoch (`vector_epochs`) moves in the transaction of every write that adds or
//! removes a tenant's chunks, by any process — the CLI beside a running server
//! included — so that a copy built at an older epoch is known to be stale.

use rusqlite::{Connection, OptionalExtension};
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, RwLock, RwLockWriteGuard};

/// The tenant's chunk epoch.
pub(super) fn epoch(c: &Connection, tenant: &str) -> rusqlite::Result<i64> {
    Ok(
        c.prepare_cached("SELECT n FROM vector_epochs WHERE tenant = ?1")?
            .query_row([tenant], |r| r.get(0))
            .optional()?
            .unwrap_or(0),
    )
}

/// Moves the tenant's epoch, inside the transaction that writes its chunks; the new
/// epoch.
pub(super) fn bump_epoch(c: &Connection, tenant: &str) -> rusqlite::Result<i64> {
    c.prepare_cached(
        "INSERT INTO vector_epochs (tenant, n) VALUES (?1, 1)
         ON CONFLICT (tenant) DO UPDATE SET n = n + 1 RETURNING n",
    )?
    .query_row([tenant], |r| r.get(0))
}

/// A chunk a committed write added.
pub(super) struct AddedChunk {
    pub(super) id: i64,
    pub(super) acl_id: i64,
    pub(super) text: String,
    pub(super) vector: Option<Vec<f32>>,
}

/// What one committed write did to a tenant's chunks, for the in-memory copies of the
/// process that wrote it: applied only onto a copy of the epoch just before, so that a
/// write of another process in between leaves the copy stale (rebuilt) rather than
/// wrong.
pub(super) struct ChunkChange {
    pub(super) tenant: String,
    /// The epoch the write moved the tenant to.
    pub(super) epoch: i64,
    pub(super) added: Vec<AddedChunk>,
    pub(super) removed: Vec<i64>,
}

impl ChunkChange {
    pub(super) fn new(tenant: &str, epoch: i64) -> ChunkChange {
        ChunkChange {
            tenant: tenant.to_owned(),
            epoch,
            added: Vec::new(),
            removed: Vec::new(),
        }
    }
}

/// The visible ACL ids as a bitmap: one bit per id up to the largest visible one.
pub(super) struct Visible(Vec<u64>);

impl Visible {
    pub(super) fn of(acls: &[i64]) -> Visible {
        let max = acls.iter().copied().max().unwrap_or(-1);
        let mut bits = vec![0u64; usize::try_from(max + 1).unwrap_or(0).div_ceil(64)];
        for a in acls {
            if let Ok(i) = usize::try_from(*a) {
                bits[i / 64] |= 1 << (i % 64);
            }
        }
        Visible(bits)
    }

    /// Negative ids (a removed row) are never visible.
    #[inline]
    pub(super) fn has(&self, acl: i64) -> bool {
        usize::try_from(acl)
            .ok()
            .and_then(|i| self.0.get(i / 64).map(|w| w & (1 << (i % 64)) != 0))
            .unwrap_or(false)
    }
}

/// A copy of something kept in memory per key, as of a tenant's epoch.
pub(super) trait AtEpoch {
    fn epoch(&self) -> i64;
}

/// In-memory copies by key (a tenant, or a tenant and a dimension), each rebuilt when
/// its tenant's epoch has moved.
pub(super) struct Copies<K, T> {
    map: RwLock<HashMap<K, Arc<T>>>,
    /// Held while a copy is built: searches that find it stale together wait for one
    /// build instead of each reading the whole table.
    building: Mutex<()>,
}

impl<K, T> Default for Copies<K, T> {
    fn default() -> Self {
        Copies {
            map: RwLock::new(HashMap::new()),
            building: Mutex::new(()),
        }
    }
}

impl<K: Hash + Eq, T: AtEpoch> Copies<K, T> {
    /// The copy under `key` at the tenant's current epoch, built by `build` if it moved
    /// since.
    pub(super) fn current(
        &self,
        c: &Connection,
        tenant: &str,
        key: K,
        build: impl FnOnce(i64) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<Arc<T>> {
        let cached = |now: i64| {
            self.map
                .read()
                .ok()
                .and_then(|map| map.get(&key).filter(|t| t.epoch() == now).cloned())
        };
        if let Some(t) = cached(epoch(c, tenant)?) {
            return Ok(t);
        }
        let _one_build = self.building.lock();
        // A search reads in one transaction: the epoch and the rows are of one snapshot.
        let now = epoch(c, tenant)?;
        if let Some(t) = cached(now) {
            return Ok(t);
        }
        let t = Arc::new(build(now)?);
        if let Ok(mut map) = self.map.write() {
            map.insert(key, t.clone());
        }
        Ok(t)
    }

    /// The copies, for a writer to bring up to its own change (none if poisoned).
    pub(super) fn write(&self) -> Option<RwLockWriteGuard<'_, HashMap<K, Arc<T>>>> {
        self.map.write().ok()
    }
}
