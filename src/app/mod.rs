//! Wiring: build the stores and services from a [`Config`] and run the server
//! (`mod.rs`); the operations behind the CLI subcommands (`ops.rs`); the demo tenant
//! (`demo.rs`). The CLI binary is a thin parser over these.

mod demo;
pub mod ops;

use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::Arc;

use crate::audit::Audit;
use crate::auth::AuthService;
use crate::auth::keys::Keyring;
use crate::chat::budget::BudgetSettings;
use crate::chat::{ChatService, ChatSettings};
use crate::config::{Config, LogFormat};
use crate::http::server::ConnectionLimits;
use crate::http::{AppState, router};
use crate::llm::Models;
use crate::rag::{Rag, embedder_from_config};
use crate::store::Stores;
use crate::threads::Threads;

pub use demo::{DEMO_TENANT, demo_documents};

pub type AnyError = Box<dyn std::error::Error + Send + Sync>;

pub fn init_tracing(cfg: &Config) -> TracingGuard {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{EnvFilter, Layer, Registry};
    let filter = EnvFilter::try_new(&cfg.log.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    #[cfg_attr(not(feature = "otlp"), allow(unused_mut))]
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> = vec![match cfg.log.format {
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
        LogFormat::Pretty => fmt.boxed(),
    }];
    #[cfg(feature = "otlp")]
    let guard = match cfg.log.otlp_endpoint.as_deref().map(otlp::layer) {
        Some(Ok((layer, provider))) => {
            layers.push(layer);
            TracingGuard(Some(provider))
        }
        Some(Err(e)) => {
            eprintln!("palisade: OTLP export not started: {e}");
            TracingGuard(None)
        }
        None => TracingGuard(None),
    };
    #[cfg(not(feature = "otlp"))]
    let guard = TracingGuard;
    let _ = tracing_subscriber::registry()
        .with(layers)
        .with(filter)
        .try_init();
    guard
}

/// Flushes exported spans when dropped (at the end of `main`).
#[cfg(feature = "otlp")]
pub struct TracingGuard(Option<opentelemetry_sdk::trace::SdkTracerProvider>);

#[cfg(feature = "otlp")]
impl Drop for TracingGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = p.shutdown();
        }
    }
}

/// Flushes exported spans when dropped (nothing to flush without the `otlp` feature).
#[cfg(not(feature = "otlp"))]
pub struct TracingGuard;

/// OpenTelemetry: every `tracing` span (one per request, `http`, with its method, path
/// and request id) exported over OTLP/HTTP in batches.
#[cfg(feature = "otlp")]
mod otlp {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::{Layer, Registry};

    type Boxed = Box<dyn Layer<Registry> + Send + Sync>;

    pub fn layer(endpoint: &str) -> Result<(Boxed, SdkTracerProvider), String> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(endpoint)
            .build()
            .map_err(|e| e.to_string())?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name("palisade")
                    .build(),
            )
            .build();
        let tracer = provider.tracer("palisade");
        let layer = tracing_opentelemetry::layer().with_tracer(tracer).boxed();
        Ok((layer, provider))
    }
}

/// Creates `data_dir` (0700) and opens the configured stores.
pub async fn open_stores(cfg: &Config) -> Result<Stores, AnyError> {
    ensure_data_dir(&cfg.data_dir)?;
    Ok(Stores::open(&cfg.store, &cfg.data_dir).await?)
}

/// Creates `data_dir` 0700, or checks an existing one: a directory others may write to
/// is refused (they could swap the store or the keys); one others may list is accepted
/// with a warning (every file palisade creates in it is 0600).
fn ensure_data_dir(dir: &Path) -> Result<(), AnyError> {
    use std::os::unix::fs::PermissionsExt;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        return Ok(());
    }
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o022 != 0 {
        return Err(format!(
            "data_dir {} is writable by other users (mode {:o}); run: chmod 700 {}",
            dir.display(),
            mode & 0o777,
            dir.display()
        )
        .into());
    }
    if mode & 0o077 != 0 {
        tracing::warn!(
            data_dir = %dir.display(),
            mode = format!("{:o}", mode & 0o777),
            "data_dir can be listed by other users; its files are 0600, but chmod 700 is better"
        );
    }
    Ok(())
}

/// Everything a running gateway needs, built from the configuration.
pub async fn build_state(cfg: Config) -> Result<AppState, AnyError> {
    build_state_at(cfg, Arc::new(crate::timeutil::SystemClock)).await
}

/// [`build_state`] with the services reading the time from `clock`.
pub async fn build_state_at(
    cfg: Config,
    clock: Arc<dyn crate::timeutil::Clock>,
) -> Result<AppState, AnyError> {
    let stores = open_stores(&cfg).await?;
    build_state_with_clock(cfg, stores, clock)
}

/// The services over already-opened stores (tests and the conformance suite use this).
pub fn build_state_with(cfg: Config, stores: Stores) -> Result<AppState, AnyError> {
    build_state_with_clock(cfg, stores, Arc::new(crate::timeutil::SystemClock))
}

fn build_state_with_clock(
    cfg: Config,
    stores: Stores,
    clock: Arc<dyn crate::timeutil::Clock>,
) -> Result<AppState, AnyError> {
    let keys = Keyring::load_or_create(&cfg.keys_path())?;
    let audit = Audit::new(stores.audit.clone()).with_clock(clock.clone());
    let auth = AuthService::new(
        &cfg,
        &stores,
        keys,
        audit.clone(),
        crate::auth::oidc::OidcVerifier::new(&cfg.oidc)?,
    )
    .with_clock(clock.clone());
    let threads = Arc::new(
        Threads::new(stores.threads.clone(), cfg.threads.clone(), audit.clone())
            .with_clock(clock.clone()),
    );
    let models = Arc::new(Models::from_config(&cfg.llm)?);
    let embedder = embedder_from_config(&cfg.embeddings)?;
    let rag = Arc::new(
        Rag::new(
            stores.documents.clone(),
            embedder,
            cfg.rag.clone(),
            audit.clone(),
        )
        .with_clock(clock.clone()),
    );
    let chat = ChatService::new(
        threads.clone(),
        rag.clone(),
        models,
        ChatSettings {
            system_prompt: cfg.llm.system_prompt.clone(),
            history_budget_tokens: cfg.threads.history_budget_tokens,
            budgets: BudgetSettings {
                user_requests_per_minute: cfg.threads.chat_requests_per_minute,
                tenant_requests_per_minute: cfg.limits.tenant_requests_per_minute,
                user_tokens_per_day: cfg.limits.user_tokens_per_day,
                tenant_tokens_per_day: cfg.limits.tenant_tokens_per_day,
            },
            search_tool: cfg.rag.tool,
            tool_max_steps: cfg.rag.tool_max_steps,
            context_tokens: cfg.rag.top_k * cfg.rag.chunk_tokens,
            max_messages: cfg.llm.max_messages,
            embedding_roles: cfg.embeddings.roles.clone(),
        },
        stores.limits.clone(),
        audit.clone(),
    )
    .with_clock(clock);
    let metrics_token = cfg
        .metrics_token()?
        .map(|t| Arc::new(crate::secret::SecretString::from(t)));
    Ok(AppState::new(crate::http::Services {
        metrics_token,
        origins: cfg.origins(),
        config: Arc::new(cfg),
        auth: Arc::new(auth),
        threads,
        chat: Arc::new(chat),
        rag,
        audit,
        health: stores.health,
    }))
}

/// Scrapers are few: the metrics address never holds more connections than this.
const METRICS_MAX_CONNECTIONS: usize = 16;

/// Serves on `cfg.listen` until SIGINT or SIGTERM.
pub async fn serve(cfg: Config, demo: bool) -> Result<(), AnyError> {
    let listener = tokio::net::TcpListener::bind(cfg.listen).await?;
    serve_on(cfg, demo, listener, shutdown_signal()).await
}

/// Serves on `listener` until `shutdown` resolves, then drains: the whole gateway, as a
/// library call (the CLI's `serve`, and the tests that need no process of its own).
pub async fn serve_on(
    cfg: Config,
    demo: bool,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), AnyError> {
    serve_on_at(
        cfg,
        demo,
        listener,
        shutdown,
        Arc::new(crate::timeutil::SystemClock),
    )
    .await
}

/// [`serve_on`] with the services reading the time from `clock`.
pub async fn serve_on_at(
    cfg: Config,
    demo: bool,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
    clock: Arc<dyn crate::timeutil::Clock>,
) -> Result<(), AnyError> {
    crate::telemetry::install();
    let mut cfg = cfg;
    let local = listener.local_addr()?;
    cfg.bound = Some(local);
    if let Some(why) = cfg.origins().disagreement(local) {
        tracing::warn!("{why}");
    }
    if demo && cfg.admin.privileged_roles.is_empty() {
        // The demo's sensitive roles: no single admin grants them.
        cfg.admin.privileged_roles = vec!["hr".into(), "exec".into()];
    }
    let state = build_state_at(cfg.clone(), clock).await?;
    // The separate metrics address, if configured: `/metrics` only, nothing else.
    let metrics_listener = match cfg.metrics.listen {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr).await?;
            let local = l.local_addr()?;
            tracing::info!(addr = %local, "metrics listening");
            println!("palisade metrics on http://{local}/metrics");
            // The same accept loop as the main address: header, idle and stall
            // deadlines, and a small connection cap of its own.
            let mut limits = ConnectionLimits::from_config(&cfg.limits);
            limits.max_connections = limits.max_connections.min(METRICS_MAX_CONNECTIONS);
            Some(tokio::spawn(crate::http::server::serve(
                l,
                crate::http::ops::metrics_only(),
                limits,
                std::future::pending(),
            )))
        }
        None => None,
    };
    if demo {
        demo::seed(&cfg, &state).await?;
    }
    // External IdPs' signing keys: fetched at start and every `oidc.jwks_refresh` (an
    // unknown kid also triggers a rate-limited fetch, see auth::oidc::jwks).
    let jwks_refresh = (!state.auth.oidc().is_empty()).then(|| {
        let auth = state.auth.clone();
        let every = cfg.oidc.jwks_refresh;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                auth.oidc().refresh_all().await;
            }
        })
    });
    // Housekeeping, once a second: pick up a key rotation made by the CLI or another
    // node, and write the counts of repeated rejected tokens whose window has closed.
    // Every few seconds, check the store as readiness does, so that a damaged file
    // stops service even when nobody probes /readyz.
    // Hourly (and at start): delete ended sessions, old rotated refresh tokens and audit
    // events past their retention.
    let housekeeping = {
        let auth = state.auth.clone();
        let health = state.health.clone();
        let audit = state.audit.clone();
        let retention = cfg.store.audit_retention;
        let probe_timeout = cfg.store.probe_timeout;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            for n in 0u64.. {
                tick.tick().await;
                auth.reload_keys_if_changed();
                auth.flush_rejections(false).await;
                if n % 5 == 4 {
                    health.check(probe_timeout).await;
                }
                if n % 3600 == 0 {
                    match (auth.prune_sessions().await, audit.prune(retention).await) {
                        (Ok((s, t)), Ok(a)) => tracing::info!(
                            sessions = s,
                            refresh_tokens = t,
                            audit_events = a,
                            "pruned"
                        ),
                        (s, a) => tracing::warn!(
                            sessions = s.is_err(),
                            audit = a.is_err(),
                            "pruning failed; will retry"
                        ),
                    }
                    match auth.prune_clients().await {
                        Ok(n) => tracing::info!(oauth_clients = n, "pruned lapsed clients"),
                        Err(e) => tracing::warn!(error = %e, "pruning clients failed; will retry"),
                    }
                }
            }
        })
    };
    // Ingestion jobs submitted here or anywhere else sharing the store.
    let ingest_workers = state.rag.start_ingest_workers();
    let auth = state.auth.clone();
    let mut limits = ConnectionLimits::from_config(&cfg.limits);
    limits.max_connections = fit_descriptor_limit(limits.max_connections);
    tracing::info!(addr = %local, max_connections = limits.max_connections, "palisade listening");
    // Tests and scripts read this line to find an ephemeral port.
    println!("palisade listening on http://{local}");
    let _ = std::io::stdout().flush();
    crate::http::server::serve(listener, router(state), limits, shutdown).await;
    housekeeping.abort();
    // A job cut short here resumes elsewhere once its lease lapses.
    ingest_workers.iter().for_each(|w| w.abort());
    if let Some(t) = metrics_listener {
        t.abort();
    }
    if let Some(t) = jwks_refresh {
        t.abort();
    }
    auth.flush_rejections(true).await;
    tracing::info!("palisade stopped");
    Ok(())
}

/// Every connection is a file descriptor, beside the store's files, the upstream's
/// connections and the listener. Raises the soft `RLIMIT_NOFILE` towards the hard one
/// when the connection limit needs it; lowers the connection limit (with a warning)
/// when even the hard one is too small, so that the limit, not `accept`, refuses.
fn fit_descriptor_limit(max_connections: usize) -> usize {
    const RESERVED: u64 = 256;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return max_connections;
    }
    let wanted = max_connections as u64 + RESERVED;
    if lim.rlim_cur < wanted && lim.rlim_max > lim.rlim_cur {
        let raised = libc::rlimit {
            rlim_cur: wanted.min(lim.rlim_max),
            rlim_max: lim.rlim_max,
        };
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = raised.rlim_cur;
        }
    }
    if lim.rlim_cur < wanted {
        let fitted = lim.rlim_cur.saturating_sub(RESERVED).max(16) as usize;
        tracing::warn!(
            configured = max_connections,
            open_files_limit = lim.rlim_cur,
            using = fitted,
            "limits.max_connections is above what the open-files limit allows"
        );
        return fitted.min(max_connections);
    }
    max_connections
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutdown signal received; draining");
}
