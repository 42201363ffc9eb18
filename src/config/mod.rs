//! Configuration: `palisade.toml`, overridden by `PALISADE_<SECTION>__<KEY>` environment
//! variables, overridden by CLI flags (figment). The key names are part of the contract
//! (README, "Configuration").
//!
//! Validation happens once, here, so that the server refuses to start with an obviously
//! weak or inconsistent configuration instead of discovering it under load.

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod admin;
mod embeddings;
mod limits;
mod llm;
mod log;
mod metrics;
mod oauth;
mod oidc;
mod rag;
mod store;
mod threads;
mod tokens;

pub use admin::{AdminConfig, PrivilegedGrants};
pub use embeddings::{EmbeddingsConfig, EmbeddingsKind};
pub use limits::LimitsConfig;
pub use llm::{LlmConfig, ModelConfig, UpstreamApi};
pub use log::{LogConfig, LogFormat};
pub use metrics::MetricsConfig;
pub use oauth::OAuthConfig;
pub use oidc::{IssuerConfig, JwsAlgorithm, OidcConfig, https_or_loopback};
pub use rag::RagConfig;
pub use store::{StoreConfig, StoreKind};
pub use threads::{ThreadBinding, ThreadsConfig};
pub use tokens::{DpopMode, TokenConfig, TokenFormat};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// The origin browsers reach the gateway at (`https://chat.example.com`): the only
    /// `Origin` accepted on sign-in and cookie-authenticated routes, and the origin of
    /// every DPoP proof. Unset: derived from the address listened on (see [`Origins`]).
    pub public_origin: Option<String>,
    /// Tenant given to users created without `--tenant`.
    pub default_tenant: String,
    /// Proxies (addresses or CIDR ranges) whose `X-Forwarded-For` is believed. Empty:
    /// the socket's peer address is the client address, whatever headers say.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub store: StoreConfig,
    pub tokens: TokenConfig,
    pub limits: LimitsConfig,
    pub threads: ThreadsConfig,
    pub llm: LlmConfig,
    pub embeddings: EmbeddingsConfig,
    pub rag: RagConfig,
    pub log: LogConfig,
    pub oidc: OidcConfig,
    pub metrics: MetricsConfig,
    pub admin: AdminConfig,
    pub oauth: OAuthConfig,
    /// The address actually listened on (`listen` may ask for port 0), once bound.
    #[serde(skip)]
    pub bound: Option<SocketAddr>,
}

/// The origins a browser may use for this gateway, in order of preference (the first
/// is named in messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origins {
    list: Vec<String>,
    /// Set by the operator (`public_origin`), rather than derived from the address.
    configured: bool,
}

impl Origins {
    /// `public_origin` if set. Otherwise the address listened on: for a loopback or an
    /// unspecified address, `localhost` and `127.0.0.1` (and `[::1]`) at its port, so
    /// that the URL palisade prints and the one people type both work.
    pub fn of(public_origin: Option<&str>, bound: SocketAddr) -> Origins {
        if let Some(o) = public_origin {
            return Origins {
                list: vec![o.trim_end_matches('/').to_owned()],
                configured: true,
            };
        }
        let port = bound.port();
        let ip = bound.ip();
        let list = if ip.is_loopback() || ip.is_unspecified() {
            let first = if ip.is_unspecified() {
                format!("http://localhost:{port}")
            } else {
                format!("http://{bound}")
            };
            let mut list = vec![first];
            for o in [
                format!("http://127.0.0.1:{port}"),
                format!("http://localhost:{port}"),
                format!("http://[::1]:{port}"),
            ] {
                if !list.contains(&o) {
                    list.push(o);
                }
            }
            list
        } else {
            vec![format!("http://{bound}")]
        };
        Origins {
            list,
            configured: false,
        }
    }

    /// The origin named in messages.
    pub fn primary(&self) -> &str {
        self.list.first().map(String::as_str).unwrap_or_default()
    }

    pub fn accepts(&self, origin: &str) -> bool {
        self.list.iter().any(|o| o == origin)
    }

    pub fn all(&self) -> &[String] {
        &self.list
    }

    /// Why browsers will be refused, if `public_origin` names this machine at another
    /// port than the one listened on (a copied configuration, a changed `--listen`).
    pub fn disagreement(&self, bound: SocketAddr) -> Option<String> {
        if !self.configured {
            return None;
        }
        let u = url::Url::parse(self.primary()).ok()?;
        let local = matches!(u.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
        (local && u.port_or_known_default() != Some(bound.port())).then(|| {
            format!(
                "public_origin is {} but palisade listens on {bound}: browsers opening this address will be refused; set public_origin to the URL people use, or leave it unset",
                self.primary()
            )
        })
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./data"),
            public_origin: None,
            bound: None,
            default_tenant: "default".into(),
            trusted_proxies: Vec::new(),
            store: StoreConfig::default(),
            tokens: TokenConfig::default(),
            limits: LimitsConfig::default(),
            threads: ThreadsConfig::default(),
            llm: LlmConfig::default(),
            embeddings: EmbeddingsConfig::default(),
            rag: RagConfig::default(),
            log: LogConfig::default(),
            oidc: OidcConfig::default(),
            metrics: MetricsConfig::default(),
            admin: AdminConfig::default(),
            oauth: OAuthConfig::default(),
        }
    }
}

/// Values given on the command line; they win over file and environment.
#[derive(Debug, Default, Serialize)]
pub struct CliOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Parse(String),
    /// A key, section or variable that is not a setting (a typo would otherwise start
    /// the gateway on a default), with the nearest valid name.
    #[error("configuration: {0}")]
    Unknown(String),
    #[error("configuration: {0}")]
    Invalid(String),
}

/// Environment variables starting with this configure palisade (`__` separates
/// sections from keys: `PALISADE_TOKENS__ACCESS_TTL`).
const ENV_PREFIX: &str = "PALISADE_";

/// A figment error, with an unknown key named the way it was written (a file key or a
/// variable) beside the nearest valid one.
fn unknown_or_invalid(e: figment::Error) -> ConfigError {
    if let figment::error::Kind::UnknownField(field, expected) = &e.kind {
        let from_env = e
            .metadata
            .as_ref()
            .is_some_and(|m| m.name.contains("environment"));
        // figment's path ends with the unknown field itself.
        let mut path = e.path.clone();
        if path.last() == Some(field) {
            path.pop();
        }
        let near = nearest(field, expected).map(|n| {
            let mut p = path.clone();
            p.push(n.to_owned());
            p
        });
        path.push(field.clone());
        let name = |p: &[String]| {
            if from_env {
                format!("{ENV_PREFIX}{}", p.join("__").to_ascii_uppercase())
            } else {
                format!("`{}`", p.join("."))
            }
        };
        let source = e
            .metadata
            .as_ref()
            .and_then(|m| m.source.as_ref())
            .map(|s| format!(" in {s}"))
            .unwrap_or_default();
        let hint = near
            .map(|n| format!(" (did you mean {}?)", name(&n)))
            .unwrap_or_default();
        return ConfigError::Unknown(format!("{} is not a setting{source}{hint}", name(&path)));
    }
    ConfigError::Parse(e.to_string())
}

/// Settings from `PALISADE_<SECTION>__<KEY>` variables, parsed as figment parses the
/// environment (`5m`, `true`, `[…]`). A variable whose first part names no section or
/// key is not configuration; it is allowed only as a secret some `*_env` setting names
/// (`Config::refuse_stray_variables`).
struct Vars(Vec<(String, String)>);

impl figment::Provider for Vars {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named(format!("`{ENV_PREFIX}` environment variable(s)"))
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        use figment::value::{Dict, Value};
        fn merge(into: &mut Dict, from: Dict) {
            for (k, v) in from {
                match (into.get_mut(&k), v) {
                    (Some(Value::Dict(_, a)), Value::Dict(_, b)) => merge(a, b),
                    (_, v) => {
                        into.insert(k, v);
                    }
                }
            }
        }
        let mut dict = Dict::new();
        for (name, raw) in &self.0 {
            let Variable::Setting(key) = Variable::of(name) else {
                continue;
            };
            let path = key.to_ascii_lowercase().replace("__", ".");
            let value: Value = match raw.parse() {
                Ok(v) => v,
                Err(never) => match never {},
            };
            if let Some(d) = figment::util::nest(&path, value).into_dict() {
                merge(&mut dict, d);
            }
        }
        Ok(figment::value::Map::from([(
            figment::Profile::Default,
            dict,
        )]))
    }
}

/// What an environment variable is to the configuration.
enum Variable<'a> {
    /// Not `PALISADE_*`.
    Other,
    /// `PALISADE_<SECTION>__<KEY>` or `PALISADE_<KEY>` for a known top-level key: the part
    /// after the prefix.
    Setting(&'a str),
    /// `PALISADE_*` whose first part names no section or key: the first part.
    Stray(&'a str),
}

impl<'a> Variable<'a> {
    fn of(name: &'a str) -> Self {
        let Some(key) = name.strip_prefix(ENV_PREFIX) else {
            return Variable::Other;
        };
        let top = key.split("__").next().unwrap_or_default();
        if Config::KEYS.iter().any(|k| top.eq_ignore_ascii_case(k)) {
            Variable::Setting(key)
        } else {
            Variable::Stray(top)
        }
    }
}

/// The valid name closest to a mistyped one, if any is close.
fn nearest<'a>(given: &str, valid: &[&'a str]) -> Option<&'a str> {
    valid
        .iter()
        .map(|v| (strsim::damerau_levenshtein(given, v), *v))
        .filter(|(d, v)| *d <= 2.max(v.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, v)| v)
}

impl Config {
    /// Loads file (if given or `./palisade.toml` exists), then environment, then CLI flags.
    pub fn load(file: Option<&Path>, cli: &CliOverrides) -> Result<Self, ConfigError> {
        Config::load_from(file, cli, std::env::vars().collect())
    }

    /// [`Config::load`] with the `PALISADE_*` variables given rather than read from the
    /// process (a gateway started in-process by a test).
    pub fn load_from(
        file: Option<&Path>,
        cli: &CliOverrides,
        vars: Vec<(String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) => {
                if !path.exists() {
                    return Err(ConfigError::Invalid(format!(
                        "config file {} does not exist",
                        path.display()
                    )));
                }
                fig = fig.merge(Toml::file(path));
            }
            None => fig = fig.merge(Toml::file("palisade.toml")),
        }
        let values: std::collections::HashMap<String, String> = vars.iter().cloned().collect();
        let mut cfg = Config::extract(fig.merge(Vars(vars)).merge(Serialized::defaults(cli)))?;
        cfg.refuse_stray_variables(values.keys().cloned())?;
        cfg.resolve_secrets(|var| values.get(var).map(String::as_str));
        cfg.validate()?;
        Ok(cfg)
    }

    /// The configuration `fig` holds; an unknown key is an error naming it.
    fn extract(fig: Figment) -> Result<Config, ConfigError> {
        fig.extract().map_err(unknown_or_invalid)
    }

    /// Every top-level key (section or setting), as written in a file.
    const KEYS: &[&str] = &[
        "listen",
        "data_dir",
        "public_origin",
        "default_tenant",
        "trusted_proxies",
        "store",
        "tokens",
        "limits",
        "threads",
        "llm",
        "embeddings",
        "rag",
        "log",
        "oidc",
        "metrics",
        "admin",
        "oauth",
    ];

    /// Reads every secret a `*_env` setting names, from `lookup` (the process's
    /// environment, or a test's own list); an empty value counts as unset.
    fn resolve_secrets<'a>(&mut self, lookup: impl Fn(&str) -> Option<&'a str>) {
        let read = |var: &Option<String>| {
            var.as_deref()
                .and_then(&lookup)
                .filter(|v| !v.is_empty())
                .map(Secret::new)
        };
        self.metrics.bearer_token = read(&self.metrics.bearer_token_env);
        self.llm.api_key = read(&self.llm.api_key_env);
        for m in &mut self.llm.models {
            m.api_key = read(&m.api_key_env);
        }
        self.embeddings.api_key = read(&self.embeddings.api_key_env);
        for i in &mut self.oidc.issuers {
            i.client_secret = read(&i.client_secret_env);
        }
    }

    /// The scrape token for `/metrics` on the main address, read when the gateway is
    /// served (the CLI's other commands do not need it): a named variable that is
    /// missing or shorter than 32 characters refuses to start.
    pub fn metrics_token(&self) -> Result<Option<String>, ConfigError> {
        if self.metrics.bearer_token_env.is_none() {
            return Ok(None);
        }
        match &self.metrics.bearer_token {
            Some(t) if t.expose().trim().len() >= 32 => Ok(Some(t.expose().trim().to_owned())),
            _ => Err(ConfigError::Invalid(
                "metrics.bearer_token_env must name an environment variable holding at least 32 characters".into(),
            )),
        }
    }

    /// The environment variables the configuration names as holding secrets.
    fn secret_variables(&self) -> Vec<&str> {
        let mut vars = vec![
            self.metrics.bearer_token_env.as_deref(),
            self.llm.api_key_env.as_deref(),
            self.embeddings.api_key_env.as_deref(),
        ];
        vars.extend(self.llm.models.iter().map(|m| m.api_key_env.as_deref()));
        vars.extend(
            self.oidc
                .issuers
                .iter()
                .map(|i| i.client_secret_env.as_deref()),
        );
        vars.into_iter().flatten().collect()
    }

    /// Refuses a `PALISADE_*` variable that is neither configuration nor a secret the
    /// configuration names: `PALISADE_TOKENZ__ACCESS_TTL` must not start the gateway on
    /// the default it meant to change.
    fn refuse_stray_variables(
        &self,
        vars: impl Iterator<Item = String>,
    ) -> Result<(), ConfigError> {
        let secrets = self.secret_variables();
        for var in vars {
            let Variable::Stray(top) = Variable::of(&var) else {
                continue;
            };
            if secrets.contains(&var.as_str()) {
                continue;
            }
            let hint = nearest(&top.to_ascii_lowercase(), Config::KEYS)
                .map(|k| format!(" (did you mean {ENV_PREFIX}{}?)", k.to_ascii_uppercase()))
                .unwrap_or_default();
            return Err(ConfigError::Unknown(format!(
                "{var} is not a setting{hint}"
            )));
        }
        Ok(())
    }

    /// The origins browsers may use (see [`Origins::of`]).
    pub fn origins(&self) -> Origins {
        Origins::of(
            self.public_origin.as_deref(),
            self.bound.unwrap_or(self.listen),
        )
    }

    /// Refuses an obviously weak or inconsistent configuration: each section checks
    /// its own settings, then what spans sections.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.tokens.check()?;
        self.store.check()?;
        // The origin must be exactly what a browser sends in `Origin`: scheme, host and
        // port only, in canonical form (no path, no trailing slash, no wildcard).
        let valid_origin = self.public_origin.as_deref().is_none_or(|o| {
            url::Url::parse(o).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https") && u.origin().ascii_serialization() == o
            })
        });
        if !valid_origin {
            return bad(
                "public_origin must be a bare origin like https://chat.example.com (scheme and host, no path)",
            );
        }
        self.limits.check()?;
        self.llm.check()?;
        self.rag.check()?;
        self.threads.check()?;
        self.embeddings.check()?;
        self.log.check()?;
        self.oidc.check()?;
        self.oauth.check()?;
        self.admin.check()
    }

    pub fn keys_path(&self) -> PathBuf {
        self.tokens
            .keys_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("keys.json"))
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("palisade.db")
    }
}

/// A secret read from the variable a `*_env` setting names, once, when the
/// configuration is loaded: never serialised, redacted when printed.
#[derive(Clone)]
pub struct Secret(std::sync::Arc<secrecy::SecretString>);

impl Secret {
    fn new(value: &str) -> Self {
        Self(std::sync::Arc::new(secrecy::SecretString::from(
            value.to_owned(),
        )))
    }

    pub fn expose(&self) -> &str {
        use secrecy::ExposeSecret;
        self.0.expose_secret()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A refusal naming the setting and what it must be.
fn bad(m: &str) -> Result<(), ConfigError> {
    Err(ConfigError::Invalid(m.to_owned()))
}

/// An http(s) URL with a host and without credentials, query or fragment: secrets
/// belong in the variable named by `api_key_env`, never in a URL that ends up in logs.
fn plain_http_url(raw: &str) -> bool {
    url::Url::parse(raw).is_ok_and(|u| {
        matches!(u.scheme(), "http" | "https")
            && u.has_host()
            && u.username().is_empty()
            && u.password().is_none()
            && u.query().is_none()
            && u.fragment().is_none()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Config::extract(
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(text)),
        )
    }

    fn unknown(r: Result<Config, ConfigError>) -> String {
        match r {
            Err(ConfigError::Unknown(m)) => m,
            other => panic!("expected an unknown-setting error, got {other:?}"),
        }
    }

    #[test]
    fn a_mistyped_key_or_section_is_refused_with_the_nearest_valid_name() {
        let m = unknown(from_toml("[tokens]\naccess_tll = \"5m\"\n"));
        assert!(m.starts_with("`tokens.access_tll` is not a setting"), "{m}");
        assert!(m.ends_with("(did you mean `tokens.access_ttl`?)"), "{m}");
        let m = unknown(from_toml("[tokenz]\naccess_ttl = \"5m\"\n"));
        assert!(m.contains("`tokenz` is not a setting"), "{m}");
        assert!(m.ends_with("(did you mean `tokens`?)"), "{m}");
        // In an array of tables, too; and a name far from every key gets no guess.
        let m = unknown(from_toml(
            "[[llm.models]]\nname = \"a\"\nupstream_model = \"b\"\nbase_urll = \"http://x\"\n",
        ));
        assert!(
            m.contains("`llm.models.base_urll` is not a setting") || m.contains("base_urll"),
            "{m}"
        );
        let m = unknown(from_toml("zzzzzzzz = 1\n"));
        assert!(!m.contains("did you mean"), "{m}");
        // What is valid still loads.
        from_toml("[tokens]\naccess_ttl = \"5m\"\n").unwrap();
    }

    #[test]
    fn a_stray_palisade_variable_is_refused_unless_it_holds_a_named_secret() {
        let mut cfg = Config::default();
        let vars = |v: &[&str]| {
            v.iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .into_iter()
        };
        let err = cfg
            .refuse_stray_variables(vars(&["PATH", "PALISADE_TOKENZ__ACCESS_TTL"]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "configuration: PALISADE_TOKENZ__ACCESS_TTL is not a setting (did you mean PALISADE_TOKENS?)"
        );
        // A secret the configuration names is not a stray.
        assert!(
            cfg.refuse_stray_variables(vars(&["PALISADE_SCRAPE"]))
                .is_err()
        );
        cfg.metrics.bearer_token_env = Some("PALISADE_SCRAPE".into());
        cfg.refuse_stray_variables(vars(&[
            "PALISADE_SCRAPE",
            "PALISADE_LOG__LEVEL",
            "PALISADE_PUBLIC_ORIGIN",
        ]))
        .unwrap();
    }

    #[test]
    fn the_embeddings_host_gets_no_key_unless_configured() {
        // The model's key must not travel to another host by default.
        assert_eq!(Config::default().embeddings.api_key_env, None);
        assert!(Config::default().llm.api_key_env.is_some());
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn weak_configurations_are_refused() {
        let mut c = Config::default();
        c.tokens.access_ttl = Duration::from_secs(3600);
        assert!(c.validate().is_err());

        for origin in [
            "*",
            "https://chat.example.com/app",
            "https://chat.example.com/",
            "https://Chat.Example.com",
            "chat.example.com",
            "ftp://chat.example.com",
        ] {
            let c = Config {
                public_origin: Some(origin.into()),
                ..Config::default()
            };
            assert!(c.validate().is_err(), "{origin}");
        }

        for url in [
            "http://user:sk-secret@127.0.0.1:11434/v1",
            "http://127.0.0.1:11434/v1?api_key=sk-secret",
            "file:///etc/passwd",
        ] {
            let mut c = Config::default();
            c.llm.base_url = Some(url.into());
            assert!(c.validate().is_err(), "{url}");
        }
        let mut c = Config::default();
        c.llm.base_url = Some("http://127.0.0.1:11434/v1".into());
        assert!(c.validate().is_ok());

        let mut c = Config::default();
        c.tokens.session_idle_ttl = Duration::from_secs(40 * 24 * 3600);
        assert!(c.validate().is_err());
    }
}
