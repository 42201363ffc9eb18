//! `[tokens]`: access tokens, sessions and refresh rotation.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TokenFormat {
    #[default]
    Paseto,
    Jwe,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenConfig {
    #[serde(with = "humantime_serde")]
    pub access_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub session_idle_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub session_absolute_ttl: Duration,
    /// Two tabs refreshing with one cookie inside this window is a race, not theft.
    #[serde(with = "humantime_serde")]
    pub refresh_reuse_grace: Duration,
    /// How long a positive session-liveness answer may be served from memory. Local
    /// revocations invalidate at once; this bounds how late a revocation made by another
    /// process (the CLI, another node) is seen.
    #[serde(with = "humantime_serde")]
    pub session_cache_ttl: Duration,
    pub format: TokenFormat,
    /// Where the token keys live; default `<data_dir>/keys.json`.
    pub keys_file: Option<PathBuf>,
    /// Sender-constrained tokens (DPoP, RFC 9449).
    pub dpop: DpopMode,
    /// How old a DPoP proof may be (its `iat`); a proof's `jti` is remembered this long.
    #[serde(with = "humantime_serde")]
    pub dpop_proof_window: Duration,
    /// Require a server-issued `DPoP-Nonce` in every proof (a stolen proof then expires
    /// with the nonce, whatever the client's clock says).
    pub dpop_nonce: bool,
    /// How long a service account's API key lives unless `--expires` says otherwise.
    #[serde(with = "humantime_serde")]
    pub api_key_ttl: Duration,
    /// The longest lifetime an API key may be given.
    #[serde(with = "humantime_serde")]
    pub api_key_max_ttl: Duration,
}

/// `tokens.dpop`: whether access tokens are bound to a client key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DpopMode {
    /// Proofs are ignored; every token is a bearer token.
    Off,
    /// A login or refresh with a proof gets tokens bound to its key (and a bound
    /// session); clients without one (SDKs, CLIs) keep bearer tokens.
    #[default]
    Optional,
    /// Every login and refresh must carry a proof; bearer tokens are refused.
    Required,
}

impl Default for TokenConfig {
    fn default() -> Self {
        Self {
            access_ttl: Duration::from_secs(10 * 60),
            session_idle_ttl: Duration::from_secs(7 * 24 * 3600),
            session_absolute_ttl: Duration::from_secs(30 * 24 * 3600),
            refresh_reuse_grace: Duration::from_secs(5),
            session_cache_ttl: Duration::from_secs(1),
            format: TokenFormat::Paseto,
            keys_file: None,
            dpop: DpopMode::Optional,
            dpop_proof_window: Duration::from_secs(60),
            dpop_nonce: false,
            api_key_ttl: Duration::from_secs(90 * 86_400),
            api_key_max_ttl: Duration::from_secs(365 * 86_400),
        }
    }
}

impl TokenConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.access_ttl.is_zero() || self.access_ttl > Duration::from_secs(15 * 60) {
            return bad("tokens.access_ttl must be between 1s and 15m");
        }
        if self.api_key_max_ttl.is_zero()
            || self.api_key_max_ttl > Duration::from_secs(5 * 365 * 86_400)
            || self.api_key_ttl.is_zero()
            || self.api_key_ttl > self.api_key_max_ttl
        {
            return bad(
                "tokens.api_key_ttl must be positive and at most tokens.api_key_max_ttl (at most 5 years)",
            );
        }
        if self.session_absolute_ttl.is_zero() || self.session_idle_ttl.is_zero() {
            return bad("tokens.session_absolute_ttl and tokens.session_idle_ttl must be positive");
        }
        if self.session_idle_ttl > self.session_absolute_ttl {
            return bad("tokens.session_idle_ttl cannot exceed tokens.session_absolute_ttl");
        }
        if self.refresh_reuse_grace > Duration::from_secs(60) {
            return bad(
                "tokens.refresh_reuse_grace above 60s would let a stolen refresh token race its owner",
            );
        }
        if self.session_cache_ttl > Duration::from_secs(5) {
            return bad("tokens.session_cache_ttl above 5s would delay revocation too long");
        }
        Ok(())
    }
}
