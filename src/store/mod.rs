//! The store contract: small traits, one per concern, bundled as [`Stores`] and opened
//! from the store configuration. Handlers never see SQL; services never see a backend.
//!
//! Rules every backend follows (the conformance suite in `conformance/` checks them):
//! * The caller supplies the clock and the ids (`now`, `id` fields): a backend never
//!   reads the time or draws randomness, so tests can move time instead of sleeping.
//! * No operation spans two concerns in one transaction: sessions may live in Redis
//!   while users live in PostgreSQL. (A role change updates the user, then the auth
//!   service revokes the sessions through the session store; refresh re-checks the user.)
//! * Every thread query is keyed by a [`ThreadOwner`]; every retrieval by an
//!   [`AccessScope`]; every document-management call by a [`DocumentAdmin`].
//! * Atomic where the contract says so: refresh rotation, thread admission
//!   (ownership + room + append), document ingestion.
//!
//! [`ThreadOwner`]: crate::access::ThreadOwner
//! [`AccessScope`]: crate::access::AccessScope
//! [`DocumentAdmin`]: crate::access::DocumentAdmin

pub mod audit;
pub mod cluster;
#[cfg(test)]
pub(crate) mod conformance;
mod documents;
mod keys;
pub mod limits;
mod sessions;
pub mod sqlite;
pub mod threads;
mod users;

use std::path::Path;
use std::sync::Arc;

pub use audit::{AuditQuery, AuditStore, ChainHead, LineageQuery};
pub use documents::{
    DocumentStore, IngestClaim, IngestFailure, IngestJob, IngestLease, NewChunk, NewDocument,
    Rankings, SearchQuery,
};
pub use keys::{ApiKeyRecord, ClientBinding, KeyStore, OAuthClientRecord};
pub use limits::{Admission, Limit, LimitKind, LimitStore};
pub use sessions::{NewSession, RotateOutcome, RotateRequest, SessionRecord, SessionStore};
pub use threads::{
    Append, CreateThread, HistoryBudget, NewMessage, NewThread, ThreadPage, ThreadStore, TurnStart,
};
pub use users::{
    GrantApproval, GrantRecord, GrantRefusal, NewUser, UserRecord, UserStore, grant_refusal,
};

pub use crate::access::Acl;
pub use crate::model::{Check, Health, StoreError};

pub type StoreResult<T> = Result<T, StoreError>;
use crate::config::{StoreConfig, StoreKind};

/// Every store a running gateway needs, opened once from the configuration.
#[derive(Clone)]
pub struct Stores {
    pub users: Arc<dyn UserStore>,
    pub sessions: Arc<dyn SessionStore>,
    pub threads: Arc<dyn ThreadStore>,
    pub documents: Arc<dyn DocumentStore>,
    pub audit: Arc<dyn AuditStore>,
    pub keys: Arc<dyn KeyStore>,
    pub health: Arc<dyn Health>,
    /// Rate limits and throttles, shared by every process on this store.
    pub limits: Arc<dyn LimitStore>,
}

impl Stores {
    /// Opens the configured backend. The embedded one lives in `data_dir/palisade.db`;
    /// the cluster one connects to Redis and PostgreSQL (and migrates the latter).
    pub async fn open(cfg: &StoreConfig, data_dir: &Path) -> StoreResult<Stores> {
        match cfg.kind {
            StoreKind::Embedded => {
                let db = sqlite::SqliteStore::open(&data_dir.join(sqlite::DB_FILE))?;
                // One process serves an embedded store: its limits live in its memory.
                Ok(Stores::from_one(
                    Arc::new(db),
                    Arc::new(limits::MemoryLimits::default()),
                ))
            }
            StoreKind::Cluster => {
                let store = Arc::new(cluster::ClusterStore::open(cfg).await?);
                Ok(Stores::from_one(store.clone(), store))
            }
        }
    }

    /// A bundle served by one backend that implements every concern (limits may come
    /// from elsewhere).
    pub fn from_one<S>(s: Arc<S>, limits: Arc<dyn LimitStore>) -> Stores
    where
        S: UserStore
            + SessionStore
            + ThreadStore
            + DocumentStore
            + AuditStore
            + KeyStore
            + Health
            + 'static,
    {
        Stores {
            users: s.clone(),
            sessions: s.clone(),
            threads: s.clone(),
            documents: s.clone(),
            audit: s.clone(),
            keys: s.clone(),
            health: Arc::new(Coalesced::new(s)),
            limits,
        }
    }
}

/// Readiness probes that arrive while one is running share its answer: a burst of
/// probes (every load balancer of a fleet, at once) costs the store one check, not a
/// pool's worth of connections that would time out and report a healthy store as down.
struct Coalesced {
    inner: Arc<dyn Health>,
    running: std::sync::Mutex<Option<SharedCheck>>,
}

type SharedCheck =
    futures_util::future::Shared<futures_util::future::BoxFuture<'static, Arc<Vec<Check>>>>;

impl Coalesced {
    fn new(inner: Arc<dyn Health>) -> Self {
        Self {
            inner,
            running: std::sync::Mutex::new(None),
        }
    }
}

#[async_trait::async_trait]
impl Health for Coalesced {
    async fn check(&self, deadline: std::time::Duration) -> Vec<Check> {
        use futures_util::FutureExt;
        let shared = {
            let mut running = match self.running.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            match running.as_ref() {
                Some(f) if f.peek().is_none() => f.clone(),
                _ => {
                    let inner = self.inner.clone();
                    let f = async move { Arc::new(inner.check(deadline).await) }
                        .boxed()
                        .shared();
                    *running = Some(f.clone());
                    f
                }
            }
        };
        shared.await.as_ref().clone()
    }

    fn degraded(&self) -> bool {
        self.inner.degraded()
    }

    fn unreachable(&self) -> bool {
        self.inner.unreachable()
    }
}
