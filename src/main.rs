//! The `palisade` command: a thin parser over `palisade::app`.

use clap::{Args, Parser, Subcommand};

// Every request allocates many small, short-lived objects (JSON, headers, claims);
// mimalloc handles that pattern markedly better than glibc malloc (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use palisade::app::ops;
use palisade::app::{self, AnyError};
use palisade::auth::AccessChange;
use palisade::auth::NewAccount;
use palisade::config::{CliOverrides, Config};
use palisade::secret::SecretString;
use palisade::store::AuditQuery;

#[derive(Parser)]
#[command(
    name = "palisade",
    version,
    about = "Zero-trust gateway for LLM chat and RAG"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args)]
struct Common {
    /// Configuration file (TOML). Default: ./palisade.toml if present.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Directory for the SQLite store and token keys.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the gateway.
    Serve {
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Seed tenant `acme` with demo users of different roles.
        #[arg(long)]
        demo: bool,
    },
    /// Manage local users.
    #[command(subcommand)]
    User(UserCmd),
    /// Manage token keys.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Manage service accounts (principals of backends and jobs; no password).
    #[command(subcommand)]
    Service(ServiceCmd),
    /// Manage service accounts' API keys.
    #[command(subcommand)]
    Key(KeyCmd),
    /// Manage documents.
    #[command(subcommand)]
    Doc(DocCmd),
    /// Read the audit trail (all tenants, including events no tenant can be named for).
    #[command(subcommand)]
    Audit(AuditCmd),
}

#[derive(Subcommand)]
enum DocCmd {
    /// Ingest a plain-text, Markdown or PDF file with an ACL.
    Add {
        file: PathBuf,
        #[arg(long)]
        title: String,
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        #[arg(long, value_delimiter = ',')]
        users: Vec<String>,
        /// Everyone in the tenant may read it.
        #[arg(long)]
        public: bool,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// List every document of a tenant (metadata: id, title, ACL, chunks, added by/at).
    List {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Remove a document (with its chunks and vectors); effective on the next query.
    Rm {
        /// Ids are random base64url and may begin with `-`.
        #[arg(allow_hyphen_values = true)]
        id: String,
        #[arg(long)]
        tenant: Option<String>,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Print events as JSON lines, newest first.
    List {
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        tenant: Option<String>,
        /// Only the events of one request (its `x-request-id`).
        #[arg(long)]
        request_id: Option<String>,
        /// Only the events about one user (their id).
        #[arg(long)]
        user: Option<String>,
        /// From this time on (RFC 3339 or unix milliseconds).
        #[arg(long, value_parser = instant)]
        since: Option<i64>,
        /// Before this time (RFC 3339 or unix milliseconds).
        #[arg(long, value_parser = instant)]
        until: Option<i64>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Check the hash chain: every record present, unedited and linked to the one
    /// before. Exits 1 naming the first bad record.
    Verify,
    /// Who had a document in a prompt, when, in which thread (JSON lines, newest first;
    /// every tenant).
    Lineage {
        /// Ids are random base64url and may begin with `-`.
        #[arg(allow_hyphen_values = true)]
        document: String,
        #[arg(long, default_value_t = 1000)]
        limit: u32,
    },
}

fn instant(s: &str) -> Result<i64, String> {
    palisade::timeutil::parse_instant(s)
        .ok_or_else(|| "expected RFC 3339 (2026-11-27T10:00:00Z) or unix milliseconds".into())
}

#[derive(Subcommand)]
enum UserCmd {
    /// Add a user. Without --password-stdin a random password is generated and printed.
    Add {
        name: String,
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        #[arg(long)]
        tenant: Option<String>,
        /// Read the password from standard input (one line).
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users.
    List,
    /// Disable a user and revoke every session they have.
    Disable { name: String },
    /// Replace a user's roles and/or groups; revokes every session they have.
    Update {
        name: String,
        #[arg(long, value_delimiter = ',')]
        roles: Option<Vec<String>>,
        #[arg(long, value_delimiter = ',')]
        groups: Option<Vec<String>>,
    },
}

#[derive(Subcommand)]
enum ServiceCmd {
    /// Add a service account.
    Add {
        name: String,
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// The models it may call (default: whichever its roles allow).
        #[arg(long, value_delimiter = ',')]
        models: Vec<String>,
        /// Its own chat requests per minute (default: the per-user limit).
        #[arg(long, default_value_t = 0)]
        requests_per_minute: u32,
        /// Its own model tokens per UTC day (default: the per-user budget).
        #[arg(long, default_value_t = 0)]
        tokens_per_day: u64,
        /// It may exchange a user's token for one acting as that user (RFC 8693).
        #[arg(long)]
        act_for_users: bool,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// List service accounts.
    List,
    /// Disable a service account: its keys and the tokens exchanged with them stop.
    Disable {
        name: String,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Enable a disabled service account.
    Enable {
        name: String,
        #[arg(long)]
        tenant: Option<String>,
    },
}

#[derive(Subcommand)]
enum KeyCmd {
    /// Make an API key for a service account; it is printed once.
    Create {
        #[arg(long)]
        service: String,
        /// Lifetime, e.g. 90d (default tokens.api_key_ttl).
        #[arg(long, value_parser = humantime_serde::re::humantime::parse_duration)]
        expires: Option<std::time::Duration>,
        /// Networks it may be used from, e.g. 10.0.0.0/8 (repeat or comma-separate).
        #[arg(long, value_delimiter = ',')]
        allow_cidr: Vec<String>,
        /// Only usable with DPoP proofs by this key (RFC 7638 SHA-256 thumbprint).
        #[arg(long)]
        dpop_jkt: Option<String>,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// List keys (without their secrets).
    List {
        #[arg(long)]
        service: Option<String>,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke a key, at once on every node.
    Revoke {
        id: String,
        #[arg(long)]
        tenant: Option<String>,
    },
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Make a new active token key; tokens minted under the old one verify until they
    /// expire. Running servers pick up the new key within a second.
    Rotate,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let listen = match &cli.cmd {
        Cmd::Serve { listen, .. } => *listen,
        _ => None,
    };
    let overrides = CliOverrides {
        listen,
        data_dir: cli.common.data_dir.clone(),
    };
    let cfg = match Config::load(cli.common.config.as_deref(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("palisade: {e}");
            return ExitCode::from(2);
        }
    };
    let _tracing = app::init_tracing(&cfg);
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("palisade: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli.cmd, cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("palisade: {e}");
            ExitCode::FAILURE
        }
    }
}

fn clean(v: Vec<String>) -> Vec<String> {
    v.into_iter().filter(|x| !x.is_empty()).collect()
}

async fn run(cmd: Cmd, cfg: Config) -> Result<(), AnyError> {
    match cmd {
        Cmd::Serve { demo, .. } => app::serve(cfg, demo).await,
        Cmd::User(UserCmd::Add {
            name,
            roles,
            groups,
            tenant,
            password_stdin,
        }) => {
            let (password, generated) = if password_stdin {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s)?;
                (s.lines().next().unwrap_or("").to_owned(), false)
            } else {
                (palisade::secret::random_b64(12), true)
            };
            let tenant = tenant.unwrap_or_else(|| cfg.default_tenant.clone());
            let rec = ops::add_user(
                &cfg,
                NewAccount {
                    username: &name,
                    password: SecretString::from(password.clone()),
                    tenant: &tenant,
                    roles: clean(roles),
                    groups: clean(groups),
                },
            )
            .await?;
            println!(
                "added user {} (tenant {}, id {})",
                rec.username, rec.tenant, rec.id
            );
            if generated {
                println!("generated password: {password}");
            }
            Ok(())
        }
        Cmd::User(UserCmd::List) => {
            println!(
                "{:<24} {:<12} {:<8} {:<30} groups",
                "username", "tenant", "status", "roles"
            );
            for u in ops::list_users(&cfg).await? {
                println!(
                    "{:<24} {:<12} {:<8} {:<30} {}",
                    u.username,
                    u.tenant,
                    if u.disabled { "disabled" } else { "active" },
                    u.roles.join(","),
                    u.groups.join(",")
                );
            }
            Ok(())
        }
        Cmd::User(UserCmd::Disable { name }) => {
            let change = AccessChange {
                disabled: Some(true),
                ..AccessChange::default()
            };
            ops::update_user(&cfg, &name, change).await?;
            println!("disabled {name}; every session of this user is revoked");
            Ok(())
        }
        Cmd::User(UserCmd::Update {
            name,
            roles,
            groups,
        }) => {
            let change = AccessChange {
                roles: roles.map(clean),
                groups: groups.map(clean),
                disabled: None,
            };
            ops::update_user(&cfg, &name, change).await?;
            println!("updated {name}; every session of this user is revoked");
            Ok(())
        }
        Cmd::Service(ServiceCmd::Add {
            name,
            roles,
            groups,
            models,
            requests_per_minute,
            tokens_per_day,
            act_for_users,
            tenant,
        }) => {
            let tenant = tenant.unwrap_or_else(|| cfg.default_tenant.clone());
            let svc = ops::add_service(
                &cfg,
                palisade::auth::NewService {
                    name,
                    tenant,
                    roles: clean(roles),
                    groups: clean(groups),
                    profile: palisade::access::ServiceProfile {
                        models: clean(models),
                        requests_per_minute,
                        tokens_per_day,
                        act_for_users,
                    },
                },
            )
            .await?;
            println!(
                "added service account {} (tenant {}, id {}); make a key with: palisade key create --service {} --tenant {}",
                svc.name, svc.tenant, svc.id, svc.name, svc.tenant
            );
            Ok(())
        }
        Cmd::Service(ServiceCmd::List) => {
            println!(
                "{:<24} {:<12} {:<8} {:<24} {:<20} acts for users",
                "name", "tenant", "status", "roles", "models"
            );
            for s in ops::list_services(&cfg).await? {
                println!(
                    "{:<24} {:<12} {:<8} {:<24} {:<20} {}",
                    s.name,
                    s.tenant,
                    if s.disabled { "disabled" } else { "active" },
                    s.roles.join(","),
                    if s.profile.models.is_empty() {
                        "(by role)".to_owned()
                    } else {
                        s.profile.models.join(",")
                    },
                    if s.profile.act_for_users { "yes" } else { "no" }
                );
            }
            Ok(())
        }
        Cmd::Service(ServiceCmd::Disable { name, tenant }) => {
            let tenant = tenant.unwrap_or_else(|| cfg.default_tenant.clone());
            ops::set_service_disabled(&cfg, &tenant, &name, true).await?;
            println!("disabled {name}; its keys and the tokens exchanged with them are refused");
            Ok(())
        }
        Cmd::Service(ServiceCmd::Enable { name, tenant }) => {
            let tenant = tenant.unwrap_or_else(|| cfg.default_tenant.clone());
            ops::set_service_disabled(&cfg, &tenant, &name, false).await?;
            println!("enabled {name}");
            Ok(())
        }
        Cmd::Key(KeyCmd::Create {
            service,
            expires,
            allow_cidr,
            dpop_jkt,
            tenant,
        }) => {
            let tenant = tenant.unwrap_or_else(|| cfg.default_tenant.clone());
            let issued = ops::create_key(
                &cfg,
                &tenant,
                &service,
                palisade::auth::KeyOptions {
                    expires_in: expires,
                    allow_cidrs: clean(allow_cidr),
                    dpop_jkt,
                },
            )
            .await?;
            use palisade::secret::ExposeSecret;
            eprintln!(
                "key {} for {} (expires {}); it is shown once, store it now:",
                issued.view.id, service, issued.view.expires_at
            );
            println!("{}", issued.key.expose_secret());
            Ok(())
        }
        Cmd::Key(KeyCmd::List { service, tenant }) => {
            let tenant = tenant.unwrap_or_else(|| cfg.default_tenant.clone());
            println!(
                "{:<26} {:<24} {:<26} {:<26} {:<26} limits",
                "id", "service id", "expires", "last used", "revoked"
            );
            for k in ops::list_keys(&cfg, &tenant, service.as_deref()).await? {
                let mut limits = k.allow_cidrs.join(",");
                if k.dpop_jkt.is_some() {
                    limits.push_str(if limits.is_empty() { "dpop" } else { ",dpop" });
                }
                println!(
                    "{:<26} {:<24} {:<26} {:<26} {:<26} {}",
                    k.id,
                    k.service_id,
                    k.expires_at,
                    k.last_used_at.unwrap_or_else(|| "-".into()),
                    k.revoked_at.unwrap_or_else(|| "-".into()),
                    limits
                );
            }
            Ok(())
        }
        Cmd::Key(KeyCmd::Revoke { id, tenant }) => {
            let tenant = tenant.unwrap_or_else(|| cfg.default_tenant.clone());
            ops::revoke_key(&cfg, &tenant, &id).await?;
            println!("revoked {id}");
            Ok(())
        }
        Cmd::Doc(DocCmd::Add {
            file,
            title,
            roles,
            groups,
            users,
            public,
            tenant,
        }) => {
            let text = ops::read_document(&file)?;
            let tenant = tenant.unwrap_or_else(|| cfg.default_tenant.clone());
            let acl = palisade::access::Acl {
                roles: clean(roles),
                groups: clean(groups),
                users: clean(users),
                public,
            };
            let mut bar = ProgressBar::new();
            let (doc, embedder) =
                ops::add_document(&cfg, &tenant, &title, &text, acl, &mut |done, total| {
                    bar.show(done, total)
                })
                .await?;
            bar.finish();
            match doc.state {
                palisade::model::IngestState::Ready => {
                    println!(
                        "added document {} ({} chunks, embeddings: {embedder})",
                        doc.id, doc.chunk_count
                    );
                    Ok(())
                }
                other => Err(format!(
                    "document {} was not indexed: {} ({other:?})",
                    doc.id,
                    other.name()
                )
                .into()),
            }
        }
        Cmd::Doc(DocCmd::List { tenant }) => {
            let tenant = tenant.unwrap_or_else(|| cfg.default_tenant.clone());
            for d in ops::list_documents(&cfg, &tenant).await? {
                println!(
                    "{}",
                    serde_json::json!({
                        "id": d.id, "title": d.title, "acl": d.acl, "chunks": d.chunk_count,
                        "created_by": d.created_by,
                        "created_at": palisade::timeutil::rfc3339(d.created_at),
                    })
                );
            }
            Ok(())
        }
        Cmd::Doc(DocCmd::Rm { id, tenant }) => {
            let tenant = tenant.unwrap_or_else(|| cfg.default_tenant.clone());
            ops::remove_document(&cfg, &tenant, &id).await?;
            println!("removed document {id} from tenant {tenant}");
            Ok(())
        }
        Cmd::Audit(AuditCmd::List {
            kind,
            tenant,
            request_id,
            user,
            since,
            until,
            limit,
        }) => {
            let q = AuditQuery {
                tenant,
                kind,
                request_id,
                subject: user,
                since,
                until,
                limit,
            };
            for e in ops::audit_events(&cfg, q).await? {
                println!("{}", serde_json::to_string(&e)?);
            }
            Ok(())
        }
        Cmd::Audit(AuditCmd::Verify) => match ops::audit_verify(&cfg).await? {
            Ok(r) => {
                println!(
                    "audit trail intact: {} records ({}..={}), head {}",
                    r.records, r.first_seq, r.last_seq, r.head_hash
                );
                Ok(())
            }
            Err(fault) => {
                let at = fault
                    .seq()
                    .map(|s| format!(" at record {s}"))
                    .unwrap_or_default();
                Err(format!("audit trail verification FAILED{at}: {fault}").into())
            }
        },
        Cmd::Audit(AuditCmd::Lineage { document, limit }) => {
            for r in ops::audit_lineage(&cfg, &document, limit).await? {
                println!(
                    "{}",
                    serde_json::json!({
                        "seq": r.seq,
                        "at": palisade::timeutil::rfc3339(r.event.ts),
                        "kind": r.event.kind,
                        "via": r.event.reason,
                        "tenant": r.event.tenant,
                        "user": r.event.subject,
                        "session_id": r.event.session_id,
                        "thread": r.event.thread,
                        "request_id": r.event.request_id,
                    })
                );
            }
            Ok(())
        }
        Cmd::Keys(KeysCmd::Rotate) => {
            let id = ops::rotate_keys(&cfg)?;
            println!("new active key {id}; running servers mint with it within a second");
            Ok(())
        }
    }
}

/// Chunks embedded so far, on stderr: a bar redrawn in place on a terminal, a line per
/// tenth otherwise (logs, CI).
struct ProgressBar {
    terminal: bool,
    shown: Option<(u32, u32)>,
}

impl ProgressBar {
    const WIDTH: u32 = 30;

    fn new() -> ProgressBar {
        use std::io::IsTerminal;
        ProgressBar {
            terminal: std::io::stderr().is_terminal(),
            shown: None,
        }
    }

    fn show(&mut self, done: u32, total: u32) {
        if total == 0 {
            return;
        }
        let percent = u64::from(done.min(total)) * 100 / u64::from(total);
        let step = |p: u64| if self.terminal { p } else { p / 10 };
        if let Some((d, t)) = self.shown
            && t == total
            && step(u64::from(d.min(t)) * 100 / u64::from(t)) == step(percent)
        {
            return;
        }
        self.shown = Some((done, total));
        let filled = (u64::from(Self::WIDTH) * percent / 100) as usize;
        let bar = format!(
            "embedding [{}{}] {percent:>3}%  {done}/{total} chunks",
            "#".repeat(filled),
            "-".repeat(Self::WIDTH as usize - filled)
        );
        if self.terminal {
            eprint!("\r{bar}");
        } else {
            eprintln!("{bar}");
        }
    }

    fn finish(&self) {
        if self.terminal && self.shown.is_some() {
            eprintln!();
        }
    }
}
