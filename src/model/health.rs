//! What can go wrong with the data underneath, and how readiness reports it.

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was hit (a taken username).
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// The backend could not be reached or refused the operation; retryable.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backend answered with something that cannot be right (a damaged file, a
    /// schema from a newer binary, a row that does not parse).
    #[error("corrupt store: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// The same failure again, for each of several callers that shared one operation.
    pub fn again(&self) -> StoreError {
        match self {
            StoreError::Conflict(what) => StoreError::Conflict(what),
            StoreError::Unavailable(cause) => StoreError::Unavailable(cause.clone()),
            StoreError::Corrupt(cause) => StoreError::Corrupt(cause.clone()),
        }
    }
}

/// One readiness check: which part, and whether it works. `detail` is a fixed word
/// (`ok`, `unavailable`, `corrupt`, `timeout`), never an internal error text.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: &'static str,
}

impl Check {
    pub fn of(name: &'static str, r: &Result<(), StoreError>) -> Check {
        let detail = match r {
            Ok(()) => "ok",
            Err(StoreError::Corrupt(_)) => "corrupt",
            Err(_) => "unavailable",
        };
        Check {
            name,
            ok: r.is_ok(),
            detail,
        }
    }
}

/// Runs one part of a readiness check within `deadline`: a part that does not answer
/// in time is reported as `timeout`, by name, instead of holding the probe up.
pub async fn probe(
    name: &'static str,
    deadline: std::time::Duration,
    part: impl std::future::Future<Output = Result<(), StoreError>>,
) -> Check {
    match tokio::time::timeout(deadline, part).await {
        Ok(r) => Check::of(name, &r),
        Err(_) => Check {
            name,
            ok: false,
            detail: "timeout",
        },
    }
}

/// Health of the backing stores, for `/readyz` and for refusing service when the data
/// cannot be trusted.
#[async_trait::async_trait]
pub trait Health: Send + Sync {
    /// Exercises the store for real: reads real tables the way a new connection sees
    /// the files, and makes a durable write; each part within `deadline`.
    async fn check(&self, deadline: std::time::Duration) -> Vec<Check>;
    /// True once the store has shown corruption: every protected request is then
    /// refused (503) until an operator restarts the gateway on repaired data.
    fn degraded(&self) -> bool;
    /// True while a network store is known to be unreachable: every request but the
    /// probes is refused (503 `store_unavailable`) until it is back, which the store
    /// notices by itself.
    fn unreachable(&self) -> bool {
        false
    }
}
