//! `[log]`: log format and level, and OTLP export.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Json,
    Pretty,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// An `EnvFilter` directive, e.g. `info` or `palisade=debug`.
    pub level: String,
    /// Export spans over OTLP/HTTP to this URL (e.g. `http://127.0.0.1:4318/v1/traces`).
    /// Needs a build with the `otlp` cargo feature; without it, setting this refuses to
    /// start rather than silently exporting nothing.
    pub otlp_endpoint: Option<String>,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Json,
            level: "info".into(),
            otlp_endpoint: None,
        }
    }
}

impl LogConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.otlp_endpoint {
            if !cfg!(feature = "otlp") {
                return bad(
                    "log.otlp_endpoint is set, but this build has no OTLP export: build with `cargo build --release --features otlp`",
                );
            }
            if !plain_http_url(url) {
                return bad(
                    "log.otlp_endpoint must be an http(s) URL without credentials or query",
                );
            }
        }
        Ok(())
    }
}
