//! `[store]`: the embedded store, or the cluster store (Redis + PostgreSQL).

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    #[default]
    Embedded,
    Cluster,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    pub kind: StoreKind,
    /// Cluster store: Redis for sessions and refresh families (`rediss://` for TLS).
    pub redis_url: String,
    /// Prefix of every Redis key, so that several deployments can share one Redis.
    pub redis_prefix: String,
    /// Cluster store: PostgreSQL (with pgvector) for everything durable. With
    /// `?sslmode=require` the connection is TLS, and the server's certificate is verified.
    pub postgres_url: String,
    /// PEM file of the CA that signed PostgreSQL's certificate (a private CA); absent:
    /// the public web roots.
    pub postgres_ca_file: Option<PathBuf>,
    /// Audit events older than this are deleted (hourly); `0s` keeps them forever.
    #[serde(with = "humantime_serde")]
    pub audit_retention: Duration,
    /// How long each part of a readiness check (`/readyz`) may take before it is
    /// reported as `timeout`.
    #[serde(with = "humantime_serde")]
    pub probe_timeout: Duration,
    /// Cluster store: how long start-up (of the server or of a CLI command) keeps
    /// retrying a store that cannot be reached yet before it gives up.
    #[serde(with = "humantime_serde")]
    pub connect_wait: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            kind: StoreKind::Embedded,
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_prefix: "palisade:".into(),
            postgres_url: "postgres://postgres@127.0.0.1:5432/palisade".into(),
            postgres_ca_file: None,
            audit_retention: Duration::from_secs(365 * 24 * 3600),
            probe_timeout: Duration::from_secs(1),
            connect_wait: Duration::from_secs(30),
        }
    }
}

impl StoreConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.kind == StoreKind::Cluster
            && (self.redis_url.is_empty() || self.postgres_url.is_empty())
        {
            return bad("store.kind = \"cluster\" needs store.redis_url and store.postgres_url");
        }
        if self.probe_timeout < Duration::from_millis(50)
            || self.probe_timeout > Duration::from_secs(60)
        {
            return bad("store.probe_timeout must be between 50ms and 60s");
        }
        if self.connect_wait > Duration::from_secs(600) {
            return bad("store.connect_wait must be at most 600s");
        }
        Ok(())
    }
}
