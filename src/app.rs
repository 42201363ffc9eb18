//! Wiring: build the stores and services from a [`Config`], run the server, and the
//! operations behind the CLI subcommands. The CLI binary is a thin parser over these.

use axum::serve::ListenerExt;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

use crate::audit::{Audit, AuditEvent, AuditKind};
use crate::auth::AuthService;
use crate::auth::keys::Keyring;
use crate::auth::password::hash_password;
use crate::config::{Config, LogFormat};
use crate::http::{AppState, router};
use crate::llm::Llm;
use crate::rag::{Rag, embedder_from_config};
use crate::secret::SecretString;
use crate::store::sqlite::SqliteStore;
use crate::store::{AuditStore, NewUser, StoreError, UserRecord, UserStore};
use crate::threads::Threads;

pub type AnyError = Box<dyn std::error::Error + Send + Sync>;

pub fn init_tracing(cfg: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(&cfg.log.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match cfg.log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

/// Creates `data_dir` (0700) and opens the embedded store in it.
pub fn open_store(cfg: &Config) -> Result<SqliteStore, AnyError> {
    ensure_data_dir(&cfg.data_dir)?;
    Ok(SqliteStore::open(&cfg.db_path())?)
}

fn ensure_data_dir(dir: &Path) -> std::io::Result<()> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    Ok(())
}

/// Everything a running gateway needs, built from the configuration.
pub fn build_state(cfg: Config) -> Result<AppState, AnyError> {
    let store = Arc::new(open_store(&cfg)?);
    let keys = Keyring::load_or_create(&cfg.keys_path())?;
    let audit = Audit::new(store.clone());
    let auth = AuthService::new(&cfg, store.clone(), store.clone(), keys, audit.clone());
    let threads = Threads::new(
        store.clone(),
        cfg.threads.clone(),
        cfg.llm.system_prompt.clone(),
        audit,
    );
    let llm = Llm::from_config(&cfg.llm)?;
    let embedder = embedder_from_config(&cfg.embeddings)?;
    let rag = Rag::new(
        store.clone(),
        embedder,
        cfg.rag.clone(),
        Audit::new(store.clone()),
    );
    Ok(AppState {
        config: Arc::new(cfg),
        auth: Arc::new(auth),
        threads: Arc::new(threads),
        llm: Arc::new(llm),
        rag: Arc::new(rag),
        audit_log: store.clone(),
        users: store.clone(),
        health: store,
    })
}

pub async fn serve(cfg: Config, demo: bool) -> Result<(), AnyError> {
    let listen = cfg.listen;
    let state = build_state(cfg.clone())?;
    if demo {
        seed_demo(&cfg, &state).await?;
    }
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, "palisade listening");
    // Tests and scripts read this line to find an ephemeral port.
    println!("palisade listening on http://{local}");
    let _ = std::io::stdout().flush();
    // Streamed answers are many small writes: without TCP_NODELAY, Nagle's algorithm and
    // delayed ACKs add ~40 ms per event.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await?;
    tracing::info!("palisade stopped");
    Ok(())
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

pub struct AddUser<'a> {
    pub username: &'a str,
    pub password: SecretString,
    pub tenant: &'a str,
    pub roles: Vec<String>,
    pub groups: Vec<String>,
}

pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@' | ':'))
}

pub async fn add_user(store: &SqliteStore, u: AddUser<'_>) -> Result<UserRecord, AnyError> {
    for name in [u.username, u.tenant]
        .into_iter()
        .chain(u.roles.iter().map(String::as_str))
        .chain(u.groups.iter().map(String::as_str))
    {
        if !valid_name(name) {
            return Err(format!(
                "invalid name {name:?}: use 1-64 characters from [A-Za-z0-9_.@:-]"
            )
            .into());
        }
    }
    let pw = u.password;
    let hash = tokio::task::spawn_blocking(move || hash_password(&pw)).await??;
    let rec = store
        .create_user(NewUser {
            tenant: u.tenant.to_owned(),
            username: u.username.to_owned(),
            password_hash: hash,
            roles: u.roles,
            groups: u.groups,
        })
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => format!("user {} already exists", u.username).into(),
            other => AnyError::from(other),
        })?;
    store
        .append(
            &AuditEvent::new(AuditKind::UserCreated)
                .tenant(&rec.tenant)
                .subject(&rec.id)
                .username(&rec.username)
                .reason("cli"),
        )
        .await?;
    Ok(rec)
}

/// Disables a user and revokes all their sessions, from the CLI. A running server sees
/// the revocation within `tokens.session_cache_ttl`.
pub async fn disable_user(cfg: &Config, username: &str) -> Result<usize, AnyError> {
    let state = build_state(cfg.clone())?;
    match state.auth.set_disabled(username, true).await {
        Ok(Some(_)) => Ok(1),
        Ok(None) => Err(format!("no such user: {username}").into()),
        Err(e) => Err(format!("could not disable {username}: {e}").into()),
    }
}

pub const DEMO_TENANT: &str = "acme";

/// Seeds tenant `acme` with an employee, an HR user and an admin, each with a random
/// password printed once and kept in `<data_dir>/demo-credentials.txt` (0600). There is
/// no default password, ever.
pub async fn seed_demo(cfg: &Config, state: &AppState) -> Result<(), AnyError> {
    let store = open_store(cfg)?;
    let creds_path = cfg.data_dir.join("demo-credentials.txt");
    let users = [
        ("alice", vec!["employee"], vec!["engineering"]),
        ("hannah", vec!["employee", "hr"], vec!["hr"]),
        ("adam", vec!["employee", "admin"], vec!["executives"]),
    ];
    let mut lines = Vec::new();
    for (name, roles, groups) in users {
        if store.user_by_username(name).await?.is_some() {
            continue;
        }
        let password = crate::secret::random_b64(12);
        add_user(
            &store,
            AddUser {
                username: name,
                password: SecretString::new(password.clone()),
                tenant: DEMO_TENANT,
                roles: roles.into_iter().map(String::from).collect(),
                groups: groups.into_iter().map(String::from).collect(),
            },
        )
        .await?;
        lines.push(format!("{name}\t{password}"));
    }
    if !lines.is_empty() {
        for (title, text, acl) in demo_documents() {
            state
                .rag
                .ingest_into(DEMO_TENANT, "demo", title, text, acl)
                .await
                .map_err(|e| format!("seeding {title}: {e}"))?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&creds_path)?;
        writeln!(f, "{}", lines.join("\n"))?;
    }
    println!("demo tenant '{DEMO_TENANT}': users alice (employee), hannah (hr), adam (admin)");
    println!(
        "documents: a public handbook, HR-only salary bands, an executives-only board memo, alice's own note"
    );
    println!("passwords: {}", creds_path.display());
    println!(
        "try: curl -si -X POST http://{}/auth/login -H 'content-type: application/json' \\\n       -d '{{\"username\":\"alice\",\"password\":\"<from the file>\"}}'",
        cfg.listen
    );
    Ok(())
}

/// Documents of different visibility, so the access rules show in the first minute.
/// Each restricted one carries a unique canary string that must never reach anyone
/// outside its ACL.
pub fn demo_documents() -> Vec<(&'static str, &'static str, crate::store::Acl)> {
    use crate::store::Acl;
    vec![
        (
            "Employee handbook",
            "Welcome to Acme. Office hours are 9 to 5. Travel must be booked through the \
             travel desk; economy class for flights under six hours. Expenses are reimbursed \
             within 30 days when submitted with receipts. Remote work is allowed two days a \
             week with your manager's agreement. The IT helpdesk is on extension 4000.",
            Acl {
                public: true,
                ..Acl::default()
            },
        ),
        (
            "Salary bands 2026 (HR only)",
            "Confidential salary bands for 2026. Engineer I: 70,000 to 85,000. Engineer II: \
             85,000 to 105,000. Senior engineer: 105,000 to 135,000. Director: 160,000 to \
             210,000. Executive compensation is set by the board. Reference code \
             CANARY-HR-7731.",
            Acl {
                roles: vec!["hr".into()],
                ..Acl::default()
            },
        ),
        (
            "Board memo: acquisition of Globex (executives only)",
            "Strictly confidential. The board approved the acquisition of Globex for 1.2 \
             billion. Announcement planned for the next quarter; layoffs of 120 positions in \
             the merged sales team are expected. Reference code CANARY-EXEC-4410.",
            Acl {
                groups: vec!["executives".into()],
                ..Acl::default()
            },
        ),
        (
            "Alice's performance review notes",
            "Private notes for alice: performance review scheduled in March; goals are to \
             lead the billing migration and mentor two juniors. Reference code \
             CANARY-ALICE-2291.",
            Acl {
                users: vec!["alice".into()],
                ..Acl::default()
            },
        ),
    ]
}
