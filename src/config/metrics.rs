//! `[metrics]`: who may read `/metrics`.

use super::*;

/// Who may read `/metrics`. Off unless one of the two is set: metrics name routes,
/// models and failure rates, which is nobody's business but the operator's.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `/metrics` (only) on this address of its own, without authentication: for
    /// a scraper on a private interface.
    pub listen: Option<SocketAddr>,
    /// Serve `/metrics` on the main address too, to requests bearing the token held in
    /// this environment variable (at least 32 characters).
    pub bearer_token_env: Option<String>,
    /// What that variable holds (read at load).
    #[serde(skip)]
    pub bearer_token: Option<Secret>,
}
