//! `[limits]`: request sizes, connections and login throttles.

use super::*;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_body_bytes: usize,
    /// The body limit of `POST /v1/documents` alone: a document of
    /// `rag.max_document_chars` characters, as JSON.
    pub max_document_body_bytes: usize,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Failed logins for one username *from one client address* within
    /// `login_failure_window` before 429: a stranger elsewhere cannot lock the account.
    pub login_failures_per_user: u32,
    #[serde(with = "humantime_serde")]
    pub login_failure_window: Duration,
    /// Login attempts (any outcome) from one client IP within `login_ip_window` before 429.
    pub login_attempts_per_ip: u32,
    #[serde(with = "humantime_serde")]
    pub login_ip_window: Duration,
    /// Login attempts for one username from anywhere: a burst of this many, then
    /// `login_user_attempts_per_minute`. A ceiling that slows a distributed guessing
    /// campaign without locking the real user out for long.
    pub login_user_attempt_burst: u32,
    pub login_user_attempts_per_minute: u32,
    /// How long a device cookie (a browser that signed in as a user before, which
    /// then bypasses the per-username ceiling) stays valid.
    #[serde(with = "humantime_serde")]
    pub device_cookie_ttl: Duration,
    /// Repeated rejected tokens of one kind within this window are one audit event with
    /// a count, not one write each.
    #[serde(with = "humantime_serde")]
    pub rejected_token_audit_window: Duration,
    /// A new connection (or one on which a next request has begun) must send a whole
    /// request head within this time.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A keep-alive connection with no request in flight is closed after this long.
    #[serde(with = "humantime_serde")]
    pub keep_alive_timeout: Duration,
    /// A response write (a streamed answer to a client that stopped reading) that makes
    /// no progress for this long closes the connection.
    #[serde(with = "humantime_serde")]
    pub write_stall_timeout: Duration,
    /// Open client connections; past it, new ones are closed at once.
    pub max_connections: usize,
    /// On SIGTERM: how long requests in flight may finish before the rest are closed.
    #[serde(with = "humantime_serde")]
    pub shutdown_drain_timeout: Duration,
    /// Chat requests per tenant per minute, all its users together; 0: no tenant rate.
    pub tenant_requests_per_minute: u32,
    /// Model tokens (prompt + completion) one user may use per UTC day; 0: unlimited.
    pub user_tokens_per_day: u64,
    /// Model tokens one tenant may use per UTC day; 0: unlimited.
    pub tenant_tokens_per_day: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_document_body_bytes: 8 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            login_failures_per_user: 5,
            login_failure_window: Duration::from_secs(15 * 60),
            login_attempts_per_ip: 30,
            login_ip_window: Duration::from_secs(60),
            login_user_attempt_burst: 100,
            login_user_attempts_per_minute: 10,
            device_cookie_ttl: Duration::from_secs(90 * 86_400),
            rejected_token_audit_window: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(60),
            write_stall_timeout: Duration::from_secs(30),
            max_connections: 4096,
            shutdown_drain_timeout: Duration::from_secs(30),
            tenant_requests_per_minute: 0,
            user_tokens_per_day: 0,
            tenant_tokens_per_day: 0,
        }
    }
}

impl LimitsConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.max_body_bytes < 1024 {
            return bad("limits.max_body_bytes must be at least 1024");
        }
        if self.max_document_body_bytes < 1024 {
            return bad("limits.max_document_body_bytes must be at least 1024");
        }
        if self.max_connections == 0
            || [
                self.header_read_timeout,
                self.keep_alive_timeout,
                self.write_stall_timeout,
            ]
            .iter()
            .any(|d| d.is_zero())
        {
            return bad("limits.max_connections and the connection timeouts must be above zero");
        }
        if self.login_failures_per_user == 0
            || self.login_attempts_per_ip == 0
            || self.login_user_attempt_burst == 0
            || self.login_user_attempts_per_minute == 0
        {
            return bad("login limits must be at least 1");
        }
        Ok(())
    }
}
