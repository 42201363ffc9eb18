//! Test support: a real `palisade` process on an ephemeral port with its own data dir.

#![allow(dead_code)]

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_palisade");

/// The `palisade` binary without the suite's own `PALISADE_TEST_*` variables (the
/// gateway refuses a `PALISADE_*` variable that is not a setting).
pub fn palisade() -> Command {
    let mut c = Command::new(BIN);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("PALISADE_")) {
        c.env_remove(k);
    }
    c
}

/// The store kind the suite runs against: `PALISADE_TEST_STORE`, default `embedded`.
/// Runs `sql` with psql (`flags` ending in `c`); its output, trimmed.
fn psql(url: &str, flags: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .arg(url)
        .args(["-v", "ON_ERROR_STOP=1", flags, sql])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

pub fn store_kind() -> String {
    std::env::var("PALISADE_TEST_STORE").unwrap_or_else(|_| "embedded".into())
}

pub struct Server {
    child: Option<Child>,
    /// A gateway served in this test process (`Server::in_process_with`): its runtime's
    /// thread and the sender that stops it.
    inproc: Option<InProcess>,
    /// The clock an in-process gateway reads (the system's unless a test set one).
    clock: std::sync::Arc<dyn palisade::timeutil::Clock>,
    pub base: String,
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    pub http: Client,
    /// Under the cluster store: the database and Redis key prefix it uses (its own, or
    /// shared with the other nodes of a multi-node test).
    cluster: Option<std::sync::Arc<ClusterSpace>>,
    /// The `--listen` address (an ephemeral port unless a test needs a known one).
    listen: String,
}

/// How `Server::start_in` starts the gateway.
enum Start {
    Process,
    InProcess,
    /// Not yet: the caller sets something first, then starts it.
    Later,
}

/// A gateway running in this process, on a runtime and thread of its own (so that a
/// test that blocks its own thread does not stall it).
struct InProcess {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl InProcess {
    fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A PostgreSQL database and a Redis key prefix of one test's own, so that tests in
/// parallel never see each other's users; removed when the test ends.
pub struct ClusterSpace {
    pub postgres_url: String,
    pub redis_prefix: String,
    name: String,
}

fn admin_postgres_url() -> String {
    std::env::var("PALISADE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

impl ClusterSpace {
    pub fn create() -> ClusterSpace {
        let mut b = [0u8; 12];
        getrandom::fill(&mut b).expect("random");
        let id: String = b.iter().map(|x| format!("{x:02x}")).collect();
        let name = format!("palisade_e2e_{id}");
        let out = Command::new("psql")
            .arg(admin_postgres_url())
            .arg("-qc")
            .arg(format!("CREATE DATABASE {name}"))
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "create database: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let base = admin_postgres_url();
        let (head, _) = base.rsplit_once('/').expect("postgres url");
        ClusterSpace {
            postgres_url: format!("{head}/{name}"),
            redis_prefix: format!("{name}:"),
            name,
        }
    }
}

impl Drop for ClusterSpace {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .arg(admin_postgres_url())
            .arg("-qc")
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .output();
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "redis-cli --scan --pattern '{}*' | xargs -r redis-cli del >/dev/null",
                self.redis_prefix
            ))
            .output();
    }
}

impl Server {
    /// Starts a server with extra `PALISADE_*` settings.
    pub fn start_with(env: &[(&str, &str)]) -> Server {
        let cluster =
            (store_kind() == "cluster").then(|| std::sync::Arc::new(ClusterSpace::create()));
        Self::start_in(cluster, env, Start::Process)
    }

    /// The gateway served in this test process rather than as a `palisade` process:
    /// for tests with no process boundary under test (no kill, signal, log or exact
    /// process metrics, and no secret read from the environment).
    pub fn in_process_with(env: &[(&str, &str)]) -> Server {
        let cluster =
            (store_kind() == "cluster").then(|| std::sync::Arc::new(ClusterSpace::create()));
        Self::start_in(cluster, env, Start::InProcess)
    }

    pub fn in_process() -> Server {
        Self::in_process_with(&[])
    }

    /// In process, with the gateway reading the time from `clock`: the test moves time
    /// instead of waiting for it to pass.
    pub fn in_process_at(
        env: &[(&str, &str)],
        clock: std::sync::Arc<palisade::timeutil::ManualClock>,
    ) -> Server {
        let cluster =
            (store_kind() == "cluster").then(|| std::sync::Arc::new(ClusterSpace::create()));
        let mut s = Self::start_in(cluster, env, Start::Later);
        s.clock = clock;
        s.spawn_in_process();
        s
    }

    /// One node of a cluster: on the cluster store of `space` (whatever store the suite
    /// runs on), with the token keys in `keys_file`, shared with the other nodes.
    pub fn start_node(
        space: &std::sync::Arc<ClusterSpace>,
        keys_file: &Path,
        env: &[(&str, &str)],
    ) -> Server {
        let keys = keys_file.to_string_lossy().into_owned();
        let mut all: Vec<(&str, &str)> = vec![
            ("PALISADE_STORE__KIND", "cluster"),
            ("PALISADE_TOKENS__KEYS_FILE", keys.as_str()),
        ];
        all.extend_from_slice(env);
        Self::start_in(Some(space.clone()), &all, Start::Process)
    }

    fn start_in(
        cluster: Option<std::sync::Arc<ClusterSpace>>,
        env: &[(&str, &str)],
        start: Start,
    ) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some(c) = &cluster {
            // Ahead of the test's own settings, which win (a fault test's own store).
            env.insert(
                0,
                (
                    "PALISADE_STORE__POSTGRES_URL".into(),
                    c.postgres_url.clone(),
                ),
            );
            env.insert(
                0,
                (
                    "PALISADE_STORE__REDIS_PREFIX".into(),
                    c.redis_prefix.clone(),
                ),
            );
        }
        let mut s = Server {
            cluster,
            child: None,
            inproc: None,
            clock: std::sync::Arc::new(palisade::timeutil::SystemClock),
            base: String::new(),
            dir,
            listen: env
                .iter()
                .find(|(k, _)| k == "PALISADE_TEST_LISTEN")
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| "127.0.0.1:0".into()),
            env,
            http: Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
        };
        match start {
            Start::InProcess => s.spawn_in_process(),
            Start::Process => s.spawn(),
            Start::Later => {}
        }
        s
    }

    pub fn start() -> Server {
        Self::start_with(&[])
    }

    /// Everything the server's stores hold, as bytes: the SQLite file and its WAL, or a
    /// dump of its PostgreSQL database and of every Redis value under its prefix.
    pub fn stored_bytes(&self) -> Vec<Vec<u8>> {
        match &self.cluster {
            None => vec![
                std::fs::read(self.dir.path().join("palisade.db")).expect("database file"),
                std::fs::read(self.dir.path().join("palisade.db-wal")).unwrap_or_default(),
            ],
            Some(c) => {
                let pg = Command::new("pg_dump")
                    .arg(&c.postgres_url)
                    .output()
                    .expect("pg_dump");
                assert!(
                    pg.status.success(),
                    "{}",
                    String::from_utf8_lossy(&pg.stderr)
                );
                assert!(String::from_utf8_lossy(&pg.stdout).contains("COPY public.users"));
                let script = format!(
                    "redis-cli --scan --pattern '{}*' | while read -r k; do \
                       echo \"$k\"; case $(redis-cli type \"$k\") in \
                       hash) redis-cli hgetall \"$k\";; set) redis-cli smembers \"$k\";; \
                       zset) redis-cli zrange \"$k\" 0 -1;; string) redis-cli get \"$k\";; esac; done",
                    c.redis_prefix
                );
                let redis = Command::new("sh")
                    .arg("-c")
                    .arg(script)
                    .output()
                    .expect("redis-cli");
                assert!(
                    !redis.stdout.is_empty(),
                    "nothing in Redis under the prefix"
                );
                vec![pg.stdout, redis.stdout]
            }
        }
    }

    /// Runs SQL directly on the server's store, behind its back (an attacker with
    /// database access): on the SQLite file, or on its PostgreSQL database.
    pub fn sql(&self, sql: &str) {
        match &self.cluster {
            None => self
                .sqlite()
                .execute_batch(sql)
                .expect("run SQL on the SQLite store"),
            Some(c) => {
                psql(&c.postgres_url, "-qc", sql);
            }
        }
    }

    /// A connection to this server's SQLite file, behind its back.
    fn sqlite(&self) -> rusqlite::Connection {
        let c = rusqlite::Connection::open(self.dir.path().join("palisade.db"))
            .expect("open the database file");
        c.busy_timeout(Duration::from_secs(10))
            .expect("busy timeout");
        c
    }

    /// The first column of the first row of `sql` on the server's store, as text.
    pub fn sql_value(&self, sql: &str) -> String {
        match &self.cluster {
            None => self
                .sqlite()
                .query_row(&format!("SELECT CAST(({sql}) AS TEXT)"), [], |r| {
                    r.get::<_, Option<String>>(0)
                })
                .expect("query the SQLite store")
                .unwrap_or_default(),
            Some(c) => psql(&c.postgres_url, "-Atqc", sql),
        }
    }

    /// The process id of this server's `palisade` process.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .expect("a running palisade process")
            .id()
    }

    /// A variable this server was started with.
    pub fn env_of(&self, key: &str) -> Option<String> {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    /// The Redis key prefix of this server's cluster store (cluster pass only).
    pub fn redis_prefix(&self) -> Option<&str> {
        self.cluster.as_ref().map(|c| c.redis_prefix.as_str())
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    pub fn log(&self) -> String {
        self.require_process("the server's log");
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new(BIN);
        // Deterministic embeddings unless a test asks for the real model. The store kind
        // under test comes from PALISADE_TEST_STORE (embedded by default): the whole
        // suite runs against another backend by changing that one variable.
        // The suite's own variables (PALISADE_TEST_*) are not the gateway's: it refuses
        // a `PALISADE_*` variable that is not a setting.
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("PALISADE_")) {
            c.env_remove(k);
        }
        c.envs(self.settings())
            .arg("--data-dir")
            .arg(self.dir.path());
        c
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log file");
        let mut child = self
            .command()
            .args(["serve", "--listen", &self.listen])
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn palisade");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let base = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(rest) = line.strip_prefix("palisade listening on ") {
                        break rest.trim().to_owned();
                    }
                }
                _ => panic!("palisade exited before listening; log:\n{}", self.log()),
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        self.base = base;
        self.child = Some(child);
    }

    /// The settings a started gateway gets: the store under test, deterministic
    /// embeddings unless a test asks for the real model, the test's own.
    fn settings(&self) -> Vec<(String, String)> {
        let mut vars: Vec<(String, String)> = vec![
            ("PALISADE_STORE__KIND".into(), store_kind()),
            ("PALISADE_EMBEDDINGS__KIND".into(), "hash".into()),
        ];
        // The origin the suite's requests name, unless the test sets its own; an empty
        // value leaves it unset (derived from the address listened on).
        if !self.env.iter().any(|(k, _)| k == "PALISADE_PUBLIC_ORIGIN") {
            vars.push((
                "PALISADE_PUBLIC_ORIGIN".into(),
                "http://localhost:8080".into(),
            ));
        }
        vars.extend(
            self.env
                .iter()
                .filter(|(k, v)| {
                    k != "PALISADE_TEST_LISTEN" && !(k == "PALISADE_PUBLIC_ORIGIN" && v.is_empty())
                })
                .cloned(),
        );
        vars
    }

    fn spawn_in_process(&mut self) {
        let cli = palisade::config::CliOverrides {
            listen: None,
            data_dir: Some(self.dir.path().to_owned()),
        };
        let cfg = palisade::config::Config::load_from(None, &cli, self.settings())
            .unwrap_or_else(|e| panic!("in-process gateway: {e}"));
        let listener = std::net::TcpListener::bind(&self.listen).expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let clock = self.clock.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(listener).map_err(|e| e.to_string())?;
                palisade::app::serve_on_at(
                    cfg,
                    false,
                    listener,
                    async {
                        let _ = stopped.await;
                    },
                    clock,
                )
                .await
                .map_err(|e| e.to_string())
            })
        });
        self.base = format!("http://{addr}");
        self.inproc = Some(InProcess {
            stop: Some(stop),
            thread: Some(thread),
        });
        // Ready when it answers (or failed: then say why).
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if std::net::TcpStream::connect(addr).is_ok_and(|mut c| {
                c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    .is_ok()
                    && {
                        let mut buf = [0u8; 12];
                        std::io::Read::read_exact(&mut c, &mut buf).is_ok()
                            && buf.starts_with(b"HTTP/1.1 200")
                    }
            }) {
                return;
            }
            let inproc = self.inproc.as_mut().expect("in process");
            if inproc.thread.as_ref().is_some_and(|t| t.is_finished()) {
                let result = inproc.thread.take().map(|t| t.join());
                panic!("the in-process gateway stopped before serving: {result:?}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the in-process gateway never answered"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn require_process(&self, what: &str) {
        assert!(
            self.inproc.is_none(),
            "{what} needs a palisade process: start this test's server with Server::start_with"
        );
    }

    /// SIGKILL: no graceful shutdown, no flush beyond what was committed.
    pub fn kill9(&mut self) {
        self.require_process("kill -9");
        if let Some(mut c) = self.child.take() {
            c.kill().expect("kill");
            c.wait().expect("wait");
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.require_process("SIGTERM");
        let mut c = self.child.take().expect("running");
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        c.wait().expect("wait")
    }

    pub fn restart(&mut self) {
        self.require_process("a restart");
        assert!(self.child.is_none(), "stop the server first");
        self.spawn();
    }

    pub fn is_running(&mut self) -> bool {
        self.require_process("is_running");
        match self.child.as_mut() {
            Some(c) => c.try_wait().expect("try_wait").is_none(),
            None => false,
        }
    }

    /// Runs a CLI subcommand against this server's data dir.
    /// Runs the operator CLI and asserts that it succeeded (its stderr otherwise).
    pub fn cli_ok(&self, args: &[&str]) -> Output {
        let out = self.cli(args, None);
        assert!(
            out.status.success(),
            "palisade {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = self.command();
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn cli");
        {
            let mut input = child.stdin.take().expect("stdin");
            if let Some(s) = stdin {
                input.write_all(s.as_bytes()).expect("write stdin");
            }
        }
        child.wait_with_output().expect("cli output")
    }

    /// Adds a user through the CLI and returns its password.
    pub fn add_user(&self, name: &str, roles: &str, groups: &str, tenant: &str) -> String {
        let password = format!("pw-{name}-correct-horse");
        let mut args = vec!["user", "add", name, "--tenant", tenant, "--password-stdin"];
        if !roles.is_empty() {
            args.extend(["--roles", roles]);
        }
        if !groups.is_empty() {
            args.extend(["--groups", groups]);
        }
        let out = self.cli(&args, Some(&format!("{password}\n")));
        assert!(
            out.status.success(),
            "user add failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        password
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn login_raw(&self, user: &str, password: &str) -> Response {
        self.post_json(
            "/auth/login",
            &json!({"username": user, "password": password}),
        )
        .await
    }

    pub async fn login(&self, user: &str, password: &str) -> Session {
        let resp = self.login_raw(user, password).await;
        assert_eq!(resp.status(), StatusCode::OK, "login of {user}");
        Session::from_response(resp).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    /// POST /auth/refresh with this cookie value and extra headers.
    pub async fn refresh_with(&self, cookie: &str, extra: HeaderMap) -> Response {
        self.http
            .post(self.url("/auth/refresh"))
            .header("cookie", format!("__Host-palisade_refresh={cookie}"))
            .headers(extra)
            .send()
            .await
            .expect("request")
    }

    pub async fn refresh(&self, cookie: &str) -> Response {
        self.refresh_with(cookie, HeaderMap::new()).await
    }

    /// Audit events of one kind, as the admin `admin` of tenant `acme` sees them.
    pub async fn audit_events(&self, admin_token: &str, kind: &str) -> Vec<Value> {
        let resp = self
            .get(&format!("/admin/audit?kind={kind}&limit=1000"), admin_token)
            .await;
        assert_eq!(resp.status(), StatusCode::OK);
        let body: Value = resp.json().await.expect("json");
        body["events"].as_array().cloned().unwrap_or_default()
    }
}

impl Server {
    /// Every audit event of one kind, through the operator CLI (all tenants, including
    /// events that could not be attributed to one).
    pub fn audit_cli(&self, kind: &str) -> Vec<Value> {
        let out = self.cli(&["audit", "list", "--kind", kind, "--limit", "10000"], None);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect()
    }
}

pub const UPSTREAM_KEY: &str = "sk-test-UPSTREAM-KEY-must-never-leak-0123456789";

/// A server whose model upstream is a fresh mock, with an upstream API key set.
/// A gateway in this process in front of a fresh mock upstream.
pub async fn start_with_mock(env: &[(&str, &str)]) -> (Server, crate::mock::Mock) {
    mock_and(env, Server::in_process_with).await
}

/// A `palisade` process in front of a fresh mock upstream (for tests that kill,
/// signal or read the log of the process, or count its metrics).
pub async fn start_process_with_mock(env: &[(&str, &str)]) -> (Server, crate::mock::Mock) {
    mock_and(env, Server::start_with).await
}

/// A gateway started by `start` in front of a fresh mock upstream.
pub async fn mock_and(
    env: &[(&str, &str)],
    start: impl FnOnce(&[(&str, &str)]) -> Server,
) -> (Server, crate::mock::Mock) {
    let mock = crate::mock::Mock::start().await;
    let mut all: Vec<(&str, &str)> = vec![
        ("PALISADE_LLM__BASE_URL", mock.base_url.as_str()),
        ("PALISADE_LLM__MODEL", "mock-model"),
        ("PALISADE_LLM__API_KEY_ENV", "PALISADE_TEST_UPSTREAM_KEY"),
        ("PALISADE_TEST_UPSTREAM_KEY", UPSTREAM_KEY),
        ("PALISADE_LLM__READ_TIMEOUT", "2s"),
    ];
    all.extend_from_slice(env);
    // Blocking start is fine: the mock is idle until palisade calls it.
    let server = start(&all);
    (server, mock)
}

impl Server {
    pub async fn post_auth(&self, path: &str, token: &str, body: &Value) -> Response {
        self.http
            .post(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    /// `POST /v1/documents`, waiting (`Prefer: wait`) until the document is indexed:
    /// 201 once it is searchable.
    pub async fn post_document(&self, token: &str, body: &Value) -> Response {
        self.http
            .post(self.url("/v1/documents"))
            .bearer_auth(token)
            .header("prefer", "wait=25")
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn delete(&self, path: &str, token: &str) -> Response {
        self.http
            .delete(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    /// The id of user `name`, as the admin `admin_token` of its tenant lists it.
    pub async fn user_id(&self, admin_token: &str, name: &str) -> String {
        let users: Value = self
            .get("/admin/users", admin_token)
            .await
            .json()
            .await
            .expect("json");
        users["users"]
            .as_array()
            .expect("users")
            .iter()
            .find(|u| u["username"] == name)
            .expect("the user is listed")["id"]
            .as_str()
            .expect("id")
            .to_owned()
    }

    /// Creates a thread and returns its id.
    pub async fn new_thread(&self, token: &str, title: &str) -> String {
        let resp = self
            .post_auth("/v1/threads", token, &json!({"title": title}))
            .await;
        assert_eq!(resp.status(), StatusCode::CREATED);
        let body: Value = resp.json().await.unwrap();
        body["id"].as_str().unwrap().to_owned()
    }

    /// The thread as its owner sees it (panics unless 200).
    pub async fn thread_json(&self, token: &str, id: &str) -> Value {
        let resp = self.get(&format!("/v1/threads/{id}"), token).await;
        assert_eq!(resp.status(), StatusCode::OK);
        resp.json().await.unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut inproc) = self.inproc.take() {
            inproc.stop();
            return;
        }
        self.kill9();
        // A failing test shows what the server said about it.
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- server log (last {} lines) ---", tail.len());
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// A logged-in client: its access token and refresh cookie value.
#[derive(Debug, Clone)]
pub struct Session {
    pub access: String,
    pub cookie: String,
    pub session_id: String,
    pub set_cookie: String,
}

impl Session {
    pub async fn from_response(resp: Response) -> Session {
        let set_cookie = set_cookie(&resp).expect("a Set-Cookie header");
        let cookie = cookie_value(&set_cookie);
        let body: Value = resp.json().await.expect("json");
        Session {
            access: body["access_token"]
                .as_str()
                .expect("access_token")
                .to_owned(),
            session_id: body["session_id"].as_str().expect("session_id").to_owned(),
            cookie,
            set_cookie,
        }
    }
}

pub fn set_cookie(resp: &Response) -> Option<String> {
    resp.headers()
        .get("set-cookie")
        .map(|v| v.to_str().expect("ascii").to_owned())
}

pub fn cookie_value(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .and_then(|kv| kv.split_once('='))
        .map(|(_, v)| v.to_owned())
        .expect("cookie value")
}

pub async fn error_code(resp: Response) -> (StatusCode, String) {
    let status = resp.status();
    let body: Value = resp.json().await.expect("error body is JSON");
    (
        status,
        body["error"]["code"]
            .as_str()
            .expect("error.code")
            .to_owned(),
    )
}

pub fn header(name: &'static str, value: &'static str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(name, HeaderValue::from_static(value));
    h
}

/// A tenant `acme` with an employee, an HR user and an admin.
pub struct Acme {
    pub alice: String,
    pub hannah: String,
    pub adam: String,
}

pub fn seed_acme(s: &Server) -> Acme {
    Acme {
        alice: s.add_user("alice", "employee", "engineering", "acme"),
        hannah: s.add_user("hannah", "employee,hr", "hr", "acme"),
        adam: s.add_user("adam", "employee,admin", "executives", "acme"),
    }
}

/// One server-sent event as received, with when it arrived.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
    pub at: std::time::Instant,
}

/// Reads a whole SSE response, timestamping each event as it arrives.
pub async fn read_sse(resp: Response) -> Vec<SseEvent> {
    use futures_util::StreamExt;
    let mut out = Vec::new();
    let mut buf = String::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("stream chunk");
        buf.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
        while let Some(pos) = buf.find("\n\n") {
            let raw: String = buf.drain(..pos + 2).collect();
            let mut ev = SseEvent {
                event: "message".into(),
                data: String::new(),
                at: std::time::Instant::now(),
            };
            for line in raw.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    ev.event = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    ev.data.push_str(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            if !ev.data.is_empty() {
                out.push(ev);
            }
        }
    }
    out
}

/// A random id of the shape palisade mints (22 base64url characters).
/// Polls `probe` every 20 ms until it gives `Some`, for at most `within`; panics naming
/// `what` otherwise. For what another process makes true at a time of its own (the CLI's
/// change seen through a 1 s cache): the test waits on the condition, not a duration.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = std::time::Instant::now() + within;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < end,
            "not within {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn random_id() -> String {
    use base64::Engine;
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).unwrap();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Now, in Unix seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// The body of `POST /v1/search` for `q` as the holder of `token` (asserted 200).
pub async fn search_text(s: &Server, token: &str, q: &str) -> String {
    let r = s
        .post_auth("/v1/search", token, &serde_json::json!({"query": q}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    r.text().await.unwrap()
}

/// A free loopback port (for a server that must know its own URL before it starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh P-256 private key, made by openssl (an IdP's, an attacker's, a DPoP client's).
pub fn ec_key() -> jsonwebtoken::EncodingKey {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.pem");
    let ok = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(&path)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    jsonwebtoken::EncodingKey::from_ec_pem(&std::fs::read(&path).unwrap()).unwrap()
}

/// One turn in the caller's thread; panics unless it is answered.
pub async fn ask(s: &Server, token: &str, thread: &str, question: &str) {
    let resp = s
        .post_auth(
            &format!("/v1/threads/{thread}/messages"),
            token,
            &json!({ "content": question }),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK, "{question}");
}

/// The token estimate palisade's history budget uses: about four characters a token,
/// plus a few for the message frame.
pub fn approx_tokens(text: &str) -> usize {
    text.chars().count() / 4 + 4
}

/// Asserts that the model's last prompt holds, between its system messages and the
/// turn's question, exactly the newest messages of the stored thread that fit the
/// history budget (`budget_tokens` less the system prompt and the question; each
/// message whole, stopping at the first that does not fit), oldest first. The thread's
/// last stored message is the answer to that prompt.
pub async fn assert_prompt_history(
    s: &Server,
    mock: &crate::mock::Mock,
    token: &str,
    thread: &str,
    budget_tokens: usize,
) {
    let stored = s.thread_json(token, &format!("{thread}?limit=200")).await["messages"]
        .as_array()
        .unwrap()
        .clone();
    let prompt = mock.last_messages();
    let (system, rest) =
        prompt.split_at(prompt.iter().take_while(|m| m["role"] == "system").count());
    let (question, seen) = rest.split_last().expect("a question");
    let n = stored.len();
    assert!(n >= 2, "the question and its answer are stored");
    assert_eq!(stored[n - 2]["content"], question["content"]);
    let mut left = budget_tokens.saturating_sub(
        approx_tokens(system[0]["content"].as_str().unwrap())
            + approx_tokens(question["content"].as_str().unwrap()),
    );
    let mut expected = Vec::new();
    for m in stored[..n - 2].iter().rev() {
        let cost = approx_tokens(m["content"].as_str().unwrap());
        if cost > left {
            break;
        }
        left -= cost;
        expected.push((m["role"].clone(), m["content"].clone()));
    }
    expected.reverse();
    let seen: Vec<(Value, Value)> = seen
        .iter()
        .map(|m| (m["role"].clone(), m["content"].clone()))
        .collect();
    assert_eq!(
        seen.len(),
        expected.len(),
        "history of {} messages expected, {} in the prompt",
        expected.len(),
        seen.len()
    );
    assert_eq!(seen, expected);
}
