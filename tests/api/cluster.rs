//! Cluster mode: several gateway nodes on one Redis and one PostgreSQL. Two nodes share
//! sessions, revocations and refresh families; a store that goes away stops all service
//! (503 `store_unavailable`, never a 2xx) until it is back; a killed node loses nothing
//! it acknowledged. Fault tests run their own Redis or PostgreSQL on a free port.
//!
//! These run in the suite's cluster pass (`PALISADE_TEST_STORE=cluster`) only.

use crate::support::*;
use reqwest::StatusCode;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The tests of this file need the cluster store: they are `#[ignore]`d, so the embedded
/// pass reports them as not run, and the cluster pass runs them (`scripts/test.sh`
/// passes `--include-ignored` there). Run anywhere else, they fail rather than pass
/// having tested nothing.
fn require_cluster_pass() {
    assert_eq!(
        store_kind(),
        "cluster",
        "this test needs the cluster store: PALISADE_TEST_STORE=cluster"
    );
}

/// Two nodes on one store, with one keys file.
struct Pair {
    a: Server,
    b: Server,
    _keys: tempfile::TempDir,
}

fn pair(env: &[(&str, &str)]) -> Pair {
    let space = Arc::new(ClusterSpace::create());
    let keys = tempfile::tempdir().unwrap();
    let file = keys.path().join("keys.json");
    let a = Server::start_node(&space, &file, env);
    let b = Server::start_node(&space, &file, env);
    Pair { a, b, _keys: keys }
}

#[tokio::test]
#[ignore = "cluster store only: run in the cluster pass"]
async fn a_session_works_on_both_nodes_and_logout_reaches_the_other_within_a_second() {
    require_cluster_pass();
    let p = pair(&[]);
    let acme = seed_acme(&p.a);
    let a = p.a.login("alice", &acme.alice).await;
    // Logged in on A, used on B: one session store, one set of keys.
    assert_eq!(
        p.b.get("/auth/me", &a.access).await.status(),
        StatusCode::OK
    );
    let id = p.b.new_thread(&a.access, "from b").await;
    assert_eq!(p.a.thread_json(&a.access, &id).await["title"], "from b");

    // Keep B's cache warm, then log out on A and time how long B still accepts it.
    for _ in 0..5 {
        assert_eq!(
            p.b.get("/auth/me", &a.access).await.status(),
            StatusCode::OK
        );
    }
    let resp = p.a.post_auth("/auth/logout", &a.access, &json!({})).await;
    assert!(resp.status().is_success(), "{}", resp.status());
    let t = Instant::now();
    loop {
        let st = p.b.get("/auth/me", &a.access).await.status();
        if st == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(st, StatusCode::OK);
        // The cache alone would keep it for up to a second; the published revocation
        // ends it on B at once.
        assert!(
            t.elapsed() < Duration::from_millis(250),
            "B still accepts a logged-out session"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!("revocation reached the other node after {:?}", t.elapsed());
}

#[tokio::test]
#[ignore = "cluster store only: run in the cluster pass"]
async fn a_refresh_token_rotated_on_one_node_and_replayed_on_the_other_ends_the_session() {
    require_cluster_pass();
    let p = pair(&[("PALISADE_TOKENS__REFRESH_REUSE_GRACE", "0s")]);
    let acme = seed_acme(&p.a);
    let a = p.a.login("alice", &acme.alice).await;
    let rotated = p.a.refresh(&a.cookie).await;
    assert_eq!(rotated.status(), StatusCode::OK);
    let fresh = Session::from_response(rotated).await;
    // The thief replays the old cookie on the other node.
    let replay = p.b.refresh(&a.cookie).await;
    let (status, code) = error_code(replay).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNAUTHORIZED, "refresh_reused")
    );
    // The session is dead everywhere, for every token it had.
    for node in [&p.a, &p.b] {
        assert_eq!(
            node.get("/auth/me", &fresh.access).await.status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            node.get("/auth/me", &a.access).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        p.a.refresh(&fresh.cookie).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        p.b.refresh(&fresh.cookie).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "cluster store only: run in the cluster pass"]
async fn twenty_concurrent_refreshes_over_both_nodes_have_exactly_one_winner() {
    require_cluster_pass();
    let p = pair(&[]);
    let acme = seed_acme(&p.a);
    let a = p.a.login("alice", &acme.alice).await;
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let node = if i % 2 == 0 { &p.a } else { &p.b };
            let http = node.http.clone();
            let url = node.url("/auth/refresh");
            let cookie = a.cookie.clone();
            tokio::spawn(async move {
                http.post(url)
                    .header("cookie", format!("__Host-palisade_refresh={cookie}"))
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    let won = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let raced = statuses
        .iter()
        .filter(|s| **s == StatusCode::CONFLICT)
        .count();
    assert_eq!((won, raced), (1, 19), "{statuses:?}");
    // The race is not theft: the session lives on both nodes.
    assert_eq!(
        p.b.get("/auth/me", &a.access).await.status(),
        StatusCode::OK
    );
}

/// A Redis of the test's own, persisting every write (as a production one must, or a
/// restart ends every session).
struct OwnRedis {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl OwnRedis {
    fn start() -> OwnRedis {
        let mut r = OwnRedis {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        r.spawn();
        r
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server");
        self.child = Some(child);
        wait_for_port(self.port);
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn wait_for_port(port: u16) {
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "port {port} never opened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A PostgreSQL of the test's own (initdb as the `postgres` user; pgvector comes from
/// the machine's installation).
struct OwnPostgres {
    port: u16,
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

fn pg_bin(tool: &str) -> PathBuf {
    let dir = Command::new("sh")
        .arg("-c")
        .arg("ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| PG_BIN.into());
    Path::new(&dir).join(tool)
}

impl OwnPostgres {
    fn start() -> OwnPostgres {
        Self::start_with(|_| {})
    }

    /// `prepare` may change the data directory (as root) before the first start.
    fn start_with(prepare: impl FnOnce(&Path)) -> OwnPostgres {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        Command::new("chown")
            .arg("postgres")
            .arg(tmp.path())
            .status()
            .unwrap();
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(pg_bin("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        prepare(&dir);
        Command::new("chown")
            .args(["-R", "postgres"])
            .arg(&dir)
            .status()
            .unwrap();
        let pg = OwnPostgres {
            port: free_port(),
            dir,
            _tmp: tmp,
        };
        pg.ctl("start");
        pg
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn ctl(&self, action: &str) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=on",
            self.port,
            self.dir.display()
        );
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"])
            .arg(pg_bin("pg_ctl"))
            .arg("-D")
            .arg(&self.dir)
            .args(["-o", &opts, "-m", "immediate", "-w", "-l"])
            .arg(self.dir.join("log"))
            .arg(action)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        assert!(c.status().unwrap().success(), "pg_ctl {action}");
        if action == "start" {
            wait_for_port(self.port);
        }
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(pg_bin("pg_ctl"))
            .arg("-D")
            .arg(&self.dir)
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Protected requests of several kinds, over and over, for `d`; counts the outcomes
/// and checks that refusals are quick (a node that knows its store is gone answers at
/// once instead of waiting on it: the median refusal takes well under 50 ms).
async fn hammer(s: &Server, token: &str, thread: &str, d: Duration) -> (usize, usize, usize) {
    let (mut ok, mut refused, mut other) = (0, 0, 0);
    let mut refusals = Vec::new();
    let t = Instant::now();
    let paths = [
        "/auth/me".to_owned(),
        "/v1/threads".to_owned(),
        format!("/v1/threads/{thread}"),
    ];
    while t.elapsed() < d {
        for path in &paths {
            let sent = Instant::now();
            let resp = s.get(path, token).await;
            match resp.status() {
                st if st.is_success() => ok += 1,
                StatusCode::SERVICE_UNAVAILABLE => {
                    refusals.push(sent.elapsed());
                    let (_, code) = error_code(resp).await;
                    assert_eq!(code, "store_unavailable");
                    refused += 1;
                }
                _ => other += 1,
            }
        }
    }
    refusals.sort();
    if let Some(median) = refusals.get(refusals.len() / 2) {
        assert!(
            *median < Duration::from_millis(50),
            "the median refusal took {median:?}"
        );
    }
    (ok, refused, other)
}

async fn outage(s: &Server, token: &str, thread: &str, stop: impl FnOnce(), start: impl FnOnce()) {
    let (ok, _, _) = hammer(s, token, thread, Duration::from_millis(300)).await;
    assert!(ok > 0);
    stop();
    // The node notices the closed connection at once; allow it a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (ok, refused, other) = hammer(s, token, thread, Duration::from_secs(2)).await;
    eprintln!("while down: {ok} served, {refused} refused, {other} other");
    assert_eq!(
        (ok, other),
        (0, 0),
        "served or mis-answered while a store was down"
    );
    assert!(refused > 10);
    let r = s.http.get(s.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let (_, code) = error_code(r).await;
    assert_eq!(code, "store_unavailable");
    assert!(!s.log().contains("panicked"));

    start();
    // Back by itself, without a restart of the node.
    let t = Instant::now();
    loop {
        if s.get("/auth/me", token).await.status() == StatusCode::OK
            && s.get(&format!("/v1/threads/{thread}"), token)
                .await
                .status()
                == StatusCode::OK
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "the node did not recover"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("recovered {:?} after the store came back", t.elapsed());
    let r = s.http.get(s.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
#[ignore = "cluster store only: run in the cluster pass"]
async fn with_redis_down_nothing_protected_is_served_and_service_resumes_by_itself() {
    require_cluster_pass();
    let redis = Arc::new(std::sync::Mutex::new(OwnRedis::start()));
    let url = redis.lock().unwrap().url();
    let s = Server::start_with(&[("PALISADE_STORE__REDIS_URL", url.as_str())]);
    let acme = seed_acme(&s);
    let a = s.login("alice", &acme.alice).await;
    let thread = s.new_thread(&a.access, "kept").await;
    let (r1, r2) = (redis.clone(), redis.clone());
    outage(
        &s,
        &a.access,
        &thread,
        move || r1.lock().unwrap().stop(),
        move || r2.lock().unwrap().spawn(),
    )
    .await;
}

#[tokio::test]
#[ignore = "cluster store only: run in the cluster pass"]
async fn with_postgres_down_nothing_protected_is_served_and_service_resumes_by_itself() {
    require_cluster_pass();
    let pg = Arc::new(OwnPostgres::start());
    let url = pg.url();
    let s = Server::start_with(&[("PALISADE_STORE__POSTGRES_URL", url.as_str())]);
    let acme = seed_acme(&s);
    let a = s.login("alice", &acme.alice).await;
    let thread = s.new_thread(&a.access, "kept").await;
    let (p1, p2) = (pg.clone(), pg.clone());
    outage(
        &s,
        &a.access,
        &thread,
        move || p1.ctl("stop"),
        move || p2.ctl("start"),
    )
    .await;
}

#[tokio::test]
#[ignore = "cluster store only: run in the cluster pass"]
async fn a_node_killed_mid_conversation_loses_no_acknowledged_message() {
    require_cluster_pass();
    let (mut s, _mock) = start_process_with_mock(&[]).await;
    let acme = seed_acme(&s);
    let a = s.login("alice", &acme.alice).await;
    let thread = s.new_thread(&a.access, "durable").await;
    let mut acknowledged = Vec::new();
    for i in 0..20 {
        let q = format!("question number {i}");
        let resp = s
            .post_auth(
                &format!("/v1/threads/{thread}/messages"),
                &a.access,
                &json!({"content": q}),
            )
            .await;
        assert_eq!(resp.status(), StatusCode::OK);
        acknowledged.push(q);
    }
    s.kill9();
    s.restart();
    let body = s.thread_json(&a.access, &thread).await;
    let stored = body["messages"].to_string();
    for q in &acknowledged {
        assert!(stored.contains(q.as_str()), "{q} was lost");
    }
    assert_eq!(body["messages"].as_array().unwrap().len(), 40);
}

#[tokio::test]
#[ignore = "cluster store only: run in the cluster pass"]
async fn throttles_and_rate_limits_count_across_nodes() {
    require_cluster_pass();
    let mock = crate::mock::Mock::start().await;
    let p = pair(&[
        ("PALISADE_LLM__BASE_URL", mock.base_url.as_str()),
        ("PALISADE_LLM__MODEL", "mock-model"),
        ("PALISADE_THREADS__CHAT_REQUESTS_PER_MINUTE", "5"),
    ]);
    let acme = seed_acme(&p.a);
    // Five wrong guesses spread over both nodes use up alice's allowance from this
    // address: the right password is then refused on either node.
    for i in 0..5 {
        let node = if i % 2 == 0 { &p.a } else { &p.b };
        let r = node.login_raw("alice", "wrong-password-123").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    for node in [&p.a, &p.b] {
        let r = node.login_raw("alice", &acme.alice).await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    }
    // The chat allowance (5 a minute) is one allowance, whichever node is asked.
    let h = p.b.login("hannah", &acme.hannah).await;
    let mut statuses = Vec::new();
    for i in 0..10 {
        let node = if i % 2 == 0 { &p.a } else { &p.b };
        let r = node
            .post_auth(
                "/v1/chat/completions",
                &h.access,
                &json!({"messages": [{"role": "user", "content": "hi"}]}),
            )
            .await;
        statuses.push(r.status());
    }
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let limited = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((ok, limited), (5, 5), "{statuses:?}");
    assert_eq!(mock.count(), 5);
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).unwrap();
    u32::from_le_bytes(b)
}

/// Every marker but user `me`'s.
/// A user's marker is `~mk{i}~`: `~` never occurs in an id (base64url), so a random
/// message or thread id cannot contain another user's marker by chance.
fn foreign_marker_in(text: &str, me: usize, users: usize) -> Option<usize> {
    (0..users).find(|j| *j != me && text.contains(&format!("~mk{j}~")))
}

/// Cancellation chaos: 50 users on two nodes, each talking to its own thread while its
/// client gives up at random moments (mid-request, mid-stream). No user ever receives
/// a byte of another user's thread or session data, then or afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "cluster store only: run in the cluster pass"]
async fn fifty_users_aborting_at_random_never_see_each_others_data() {
    require_cluster_pass();
    const USERS: usize = 50;
    let mock = crate::mock::Mock::start().await;
    mock.set_chunk_delay(2);
    let p = Arc::new(pair(&[
        ("PALISADE_LLM__BASE_URL", mock.base_url.as_str()),
        ("PALISADE_LLM__MODEL", "mock-model"),
        ("PALISADE_THREADS__CHAT_REQUESTS_PER_MINUTE", "100000"),
        ("PALISADE_LIMITS__LOGIN_ATTEMPTS_PER_IP", "1000"),
    ]));
    // Accounts through the CLI, a few processes at a time.
    let passwords: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..USERS)
            .collect::<Vec<_>>()
            .chunks(10)
            .map(|batch| {
                let p = &p;
                let batch = batch.to_vec();
                scope.spawn(move || {
                    batch
                        .into_iter()
                        .map(|i| p.a.add_user(&format!("user{i}"), "employee", "", "acme"))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let mut sessions = Vec::new();
    for (i, pw) in passwords.iter().enumerate() {
        let node = if i % 2 == 0 { &p.a } else { &p.b };
        let s = node.login(&format!("user{i}"), pw).await;
        let thread = node
            .new_thread(&s.access, &format!("thread of ~mk{i}~"))
            .await;
        sessions.push((s, thread));
    }

    let deadline = Instant::now() + Duration::from_secs(8);
    let tasks: Vec<_> = sessions
        .iter()
        .cloned()
        .enumerate()
        .map(|(me, (s, thread))| {
            let p = p.clone();
            tokio::spawn(async move {
                let mut seen = 0usize;
                let mut n = 0u32;
                while Instant::now() < deadline {
                    n += 1;
                    let node = if rand_u32().is_multiple_of(2) { &p.a } else { &p.b };
                    // Give up after 1..120 ms: often mid-request or mid-stream.
                    let patience = Duration::from_millis(1 + u64::from(rand_u32() % 120));
                    let token = s.access.clone();
                    let req = match rand_u32() % 4 {
                        0 => node
                            .http
                            .post(node.url(&format!("/v1/threads/{thread}/messages")))
                            .bearer_auth(&token)
                            .json(&json!({"content": format!("note {n} from ~mk{me}~"), "stream": true})),
                        1 => node
                            .http
                            .post(node.url(&format!("/v1/threads/{thread}/messages")))
                            .bearer_auth(&token)
                            .json(&json!({"content": format!("question {n} of ~mk{me}~")})),
                        2 => node.http.get(node.url(&format!("/v1/threads/{thread}"))).bearer_auth(&token),
                        _ => node.http.get(node.url("/auth/me")).bearer_auth(&token),
                    };
                    let got = tokio::time::timeout(patience, async {
                        let resp = req.send().await.ok()?;
                        let status = resp.status();
                        let body = resp.text().await.ok()?;
                        Some((status, body))
                    })
                    .await;
                    if let Ok(Some((status, body))) = got {
                        seen += 1;
                        if let Some(j) = foreign_marker_in(&body, me, USERS) {
                            panic!("user {me} received user {j}'s data ({status}): {body}");
                        }
                        if body.contains("\"username\"") {
                            assert!(body.contains(&format!("\"user{me}\"")), "{body}");
                        }
                    }
                }
                seen
            })
        })
        .collect();
    let mut completed = 0;
    for t in tasks {
        completed += t.await.unwrap();
    }
    eprintln!("{completed} responses read in full, the rest abandoned");
    assert!(completed > 100);

    // Afterwards: every thread holds its owner's words only, on either node.
    for (me, (s, thread)) in sessions.iter().enumerate() {
        for node in [&p.a, &p.b] {
            let body = node.thread_json(&s.access, thread).await.to_string();
            assert_eq!(
                foreign_marker_in(&body, me, USERS),
                None,
                "thread of user {me}"
            );
            let list = node
                .get("/v1/threads", &s.access)
                .await
                .text()
                .await
                .unwrap();
            assert_eq!(foreign_marker_in(&list, me, USERS), None);
        }
    }
    assert!(!p.a.log().contains("panicked") && !p.b.log().contains("panicked"));
}

/// Runs `openssl` with `args` in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
#[ignore = "cluster store only: run in the cluster pass"]
async fn postgres_over_verified_tls_only() {
    require_cluster_pass();
    // A private CA and a server certificate for 127.0.0.1.
    let pki = tempfile::tempdir().unwrap();
    let d = pki.path();
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=palisade test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    openssl(
        d,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(d.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ],
    );
    let (cert, key) = (d.join("server.pem"), d.join("server.key"));
    let pg = OwnPostgres::start_with(|data| {
        std::fs::copy(&cert, data.join("server.crt")).unwrap();
        std::fs::copy(&key, data.join("server.key")).unwrap();
        std::fs::set_permissions(
            data.join("server.key"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        conf.push_str("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        std::fs::write(data.join("postgresql.conf"), conf).unwrap();
        // TLS or nothing, over TCP.
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
        )
        .unwrap();
    });
    let ca = d.join("ca.pem");
    let ca = ca.to_str().unwrap();
    let tls_url = format!("{}?sslmode=require", pg.url());

    // Verified against the private CA: the node works.
    let s = Server::start_with(&[
        ("PALISADE_STORE__POSTGRES_URL", tls_url.as_str()),
        ("PALISADE_STORE__POSTGRES_CA_FILE", ca),
    ]);
    let acme = seed_acme(&s);
    let a = s.login("alice", &acme.alice).await;
    let id = s.new_thread(&a.access, "over tls").await;
    assert_eq!(s.thread_json(&a.access, &id).await["title"], "over tls");

    // Without the CA the certificate is not trusted; without TLS the server refuses.
    // Neither heals by waiting: the command stops at once (not after
    // `store.connect_wait`, 30 s) and says why.
    let plain_url = pg.url();
    for (url, why) in [
        (tls_url.as_str(), "invalid peer certificate"),
        (
            plain_url.as_str(),
            "postgres 28000: pg_hba.conf rejects connection",
        ),
    ] {
        let data = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let out = palisade()
            .env("PALISADE_STORE__KIND", "cluster")
            .env("PALISADE_STORE__REDIS_PREFIX", "palisade_tls_test:")
            .env("PALISADE_STORE__POSTGRES_URL", url)
            .arg("--data-dir")
            .arg(data.path())
            .args(["user", "list"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{url} connected");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(why), "{stderr}");
        assert!(stderr.contains("waiting will not help"), "{stderr}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "waited {:?}",
            started.elapsed()
        );
    }
}

/// Each node keeps the history of the threads it serves in memory; a turn still sees
/// every message another node appended meanwhile, in order and within the budget, on
/// whichever node it lands.
#[tokio::test]
#[ignore = "cluster store only: run in the cluster pass"]
async fn turns_alternating_between_nodes_see_each_others_messages() {
    require_cluster_pass();
    const BUDGET: usize = 1500;
    let mock = crate::mock::Mock::start().await;
    mock.always(crate::mock::Reply::Text(
        "An answer of about one hundred tokens. ".repeat(11),
    ));
    let p = pair(&[
        ("PALISADE_LLM__BASE_URL", mock.base_url.as_str()),
        ("PALISADE_LLM__MODEL", "mock-model"),
        ("PALISADE_THREADS__HISTORY_BUDGET_TOKENS", "1500"),
    ]);
    let acme = seed_acme(&p.a);
    let alice = p.a.login("alice", &acme.alice).await;
    let id = p.a.new_thread(&alice.access, "two nodes").await;
    let route = "aabababbbaaabbabab";
    for (i, node) in route.chars().enumerate() {
        let node = if node == 'a' { &p.a } else { &p.b };
        ask(node, &alice.access, &id, &format!("question {i}")).await;
        assert_prompt_history(node, &mock, &alice.access, &id, BUDGET).await;
    }
}

/// hannah learns the HR canary in a thread served by node A; an admin on node B removes
/// her from the `hr` group. On A (which holds the thread's history in memory) every
/// answer that drew on the HR document is withheld from her: in the thread, over MCP
/// and in the next prompt.
#[tokio::test]
#[ignore = "cluster store only: run in the cluster pass"]
async fn a_group_removed_on_another_node_withholds_what_was_drawn_from_its_documents() {
    use crate::provenance::{Retrieval, seeded};
    require_cluster_pass();
    let mock = crate::mock::Mock::start().await;
    let Pair { a, b, _keys } = pair(&[
        ("PALISADE_LLM__BASE_URL", mock.base_url.as_str()),
        ("PALISADE_LLM__MODEL", "mock-model"),
    ]);
    let sc = seeded(a, mock, Retrieval::Prompt, json!({"groups": ["hr"]})).await;
    let (t, _, _) = sc.hannah_learns_the_canary().await;
    let id = b.user_id(&sc.admin.access, "hannah").await;
    let r = b
        .http
        .patch(b.url(&format!("/admin/users/{id}")))
        .bearer_auth(&sc.admin.access)
        .json(&json!({"groups": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    sc.nothing_of_the_canary_reaches_hannah(&sc.s, &t).await;
}

/// PostgreSQL paused (SIGSTOP, the way a stalled disk or VM freezes it): `/readyz`
/// answers within its own deadline (`store.probe_timeout`, 1 s) naming the parts that
/// timed out, instead of waiting for the store.
#[tokio::test]
#[ignore = "cluster store only: run in the cluster pass"]
async fn readiness_answers_within_its_deadline_while_postgres_is_paused() {
    require_cluster_pass();
    let pg = OwnPostgres::start();
    let url = pg.url();
    let s = Server::start_with(&[("PALISADE_STORE__POSTGRES_URL", url.as_str())]);
    let r = s.http.get(s.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let pid = std::fs::read_to_string(pg.dir.join("postmaster.pid"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .to_owned();
    let signal = |sig: &str| {
        Command::new("pkill")
            .args([sig, "-P", &pid])
            .status()
            .unwrap();
        Command::new("kill").args([sig, &pid]).status().unwrap();
    };
    signal("-STOP");
    let t = Instant::now();
    let r = s.http.get(s.url("/readyz")).send().await.unwrap();
    let took = t.elapsed();
    signal("-CONT");
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(took < Duration::from_millis(1800), "/readyz took {took:?}");
    assert_eq!(body["checks"]["postgres_read"], "timeout", "{body}");
    assert_eq!(body["checks"]["postgres_write"], "timeout", "{body}");
    assert_eq!(body["checks"]["redis"], "ok", "{body}");
    // Resumed: green again.
    eventually(Duration::from_secs(10), "ready again", || async {
        let r = s.http.get(s.url("/readyz")).send().await.unwrap();
        (r.status() == StatusCode::OK).then_some(())
    })
    .await;
}

/// Every Redis key palisade writes expires by itself, no later than what it belongs to
/// could still be valid (a session's keys at its absolute end): Redis stays bounded even
/// if no node ever runs the prune. Only the prune's own indexes (sorted sets of ids by
/// time) have no TTL; the prune trims them.
#[tokio::test]
#[ignore = "cluster store only: run in the cluster pass"]
async fn every_redis_key_expires_by_itself() {
    require_cluster_pass();
    let (s, _mock) = start_with_mock(&[
        ("PALISADE_LIMITS__USER_TOKENS_PER_DAY", "100000"),
        ("PALISADE_TOKENS__DPOP", "off"),
    ])
    .await;
    let acme = seed_acme(&s);
    let alice = s.login("alice", &acme.alice).await;
    let mut cookie = alice.cookie.clone();
    for _ in 0..3 {
        let r = s.refresh(&cookie).await;
        assert_eq!(r.status(), StatusCode::OK);
        cookie = cookie_value(&set_cookie(&r).unwrap());
    }
    let t = s.new_thread(&alice.access, "keys").await;
    ask(&s, &alice.access, &t, "Anything?").await;
    s.login_raw("alice", "wrong").await;
    let hannah = s.login("hannah", &acme.hannah).await;
    let r = s
        .post_auth("/auth/logout", &hannah.access, &json!({}))
        .await;
    assert!(r.status().is_success());

    let prefix = s.redis_prefix().expect("a cluster store").to_owned();
    let keys = String::from_utf8(
        Command::new("redis-cli")
            .args(["--scan", "--pattern", &format!("{prefix}*")])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let lifetime_ms: i64 = 30 * 86_400 * 1000 + 60_000; // the default absolute lifetime + margin
    let mut checked = 0;
    for key in keys.lines() {
        let name = &key[prefix.len()..];
        if name.starts_with("ends:") || name == "rotated" {
            continue;
        }
        let ttl: i64 = String::from_utf8(
            Command::new("redis-cli")
                .args(["pttl", key])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
        .trim()
        .parse()
        .unwrap();
        if ttl == -2 {
            continue; // expired since the scan (a rate limit's second-long key)
        }
        assert!(ttl > 0, "{name} never expires ({ttl})");
        assert!(ttl <= lifetime_ms, "{name} outlives its session ({ttl} ms)");
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} keys checked: {keys}");
}

/// An ingestion job runs on whichever node claims it; when that node is killed (-9)
/// mid-way, the other takes the job over once its lease lapses and finishes it from
/// the chunks already embedded, each chunk stored once. Meanwhile the tenant's bound
/// (one job at a time) holds over both nodes.
#[tokio::test]
#[ignore = "cluster store only: run in the cluster pass"]
async fn a_job_left_by_a_killed_node_is_finished_by_the_other() {
    use crate::ingest::{corpus, state, stored_chunks, with_remote_embeddings};
    require_cluster_pass();
    let space = Arc::new(ClusterSpace::create());
    let keys = tempfile::tempdir().unwrap();
    let file = keys.path().join("keys.json");
    let env = [("PALISADE_RAG__INGEST_LEASE", "2s")];
    let (a, mock) =
        with_remote_embeddings(&env, 80, |e| Server::start_node(&space, &file, e)).await;
    let b = Server::start_node(&space, &file, &{
        let mut all: Vec<(&str, &str)> = vec![
            ("PALISADE_EMBEDDINGS__KIND", "openai"),
            ("PALISADE_EMBEDDINGS__BASE_URL", mock.base_url.as_str()),
            ("PALISADE_EMBEDDINGS__MODEL", "text-embedding-3-small"),
            ("PALISADE_EMBEDDINGS__DIM", "8"),
        ];
        all.extend_from_slice(&env);
        all
    });
    let mut p = Pair { a, b, _keys: keys };
    let acme = seed_acme(&p.a);
    let adam = p.a.login("adam", &acme.adam).await;
    let submit = |title: &'static str, text: String| {
        let (s, token) = (&p.a, adam.access.clone());
        async move {
            let r = s
                .post_auth(
                    "/v1/documents",
                    &token,
                    &json!({"title": title, "text": text, "acl": {"public": true}}),
                )
                .await;
            assert_eq!(r.status(), StatusCode::ACCEPTED);
            r.headers()["location"].to_str().unwrap().to_owned()
        }
    };
    let first = submit("Library A", corpus(1_000_000, "Platypusvane")).await;
    let second = submit("Library B", corpus(20_000, "Echidnarill")).await;
    let id = first.rsplit('/').next().unwrap().to_owned();

    // Whichever node holds the first job, once a quarter of it is embedded: the second
    // waits (one job per tenant), on both nodes.
    let (done, total) = eventually(Duration::from_secs(240), "a quarter embedded", || async {
        let st = state(&p.a, &adam.access, &first).await;
        let second_state = state(&p.a, &adam.access, &second).await;
        assert_eq!(
            second_state["state"], "queued",
            "two jobs of one tenant at once"
        );
        let (d, t) = (
            st["progress"]["done"].as_u64().unwrap_or(0),
            st["progress"]["total"].as_u64().unwrap_or(0),
        );
        assert_ne!(st["state"], "ready", "finished before it could be killed");
        (t > 0 && d * 4 >= t).then_some((d, t))
    })
    .await;
    let owner = p.a.sql_value(&format!(
        "SELECT lease_owner FROM documents WHERE id = '{id}'"
    ));
    let on_a = owner.starts_with(&format!("{}-", p.a.pid()));
    let on_b = owner.starts_with(&format!("{}-", p.b.pid()));
    assert!(on_a ^ on_b, "lease {owner:?}");
    let (dead, alive) = if on_a {
        p.a.kill9();
        (&p.a, &p.b)
    } else {
        p.b.kill9();
        (&p.b, &p.a)
    };
    let _ = dead;
    let adam = alive.login("adam", &acme.adam).await;
    let t = Instant::now();
    let ready = eventually(Duration::from_secs(300), "taken over and ready", || async {
        let st = state(alive, &adam.access, &first).await;
        assert_ne!(st["state"], "failed", "{st}");
        (st["state"] == "ready").then_some(st)
    })
    .await;
    eprintln!(
        "killed at {done}/{total} on node {}; ready on the other {:?} later",
        if on_a { "A" } else { "B" },
        t.elapsed()
    );
    let owner = alive.sql_value(&format!(
        "SELECT count(*) FROM ingest_chunks WHERE document_id = '{id}'"
    ));
    assert_eq!(owner, "0");
    assert_eq!(ready["chunks"].as_u64(), Some(total));
    assert_eq!(stored_chunks(alive, &id), (total, total, total));
    // The second job follows on the surviving node.
    eventually(
        Duration::from_secs(120),
        "the second job is ready",
        || async {
            let st = state(alive, &adam.access, &second).await;
            (st["state"] == "ready").then_some(())
        },
    )
    .await;
    let r = alive
        .post_auth(
            "/v1/search",
            &adam.access,
            &json!({"query": "Platypusvane"}),
        )
        .await;
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["results"][0]["document_id"], id.as_str(), "{body}");
}

/// A CLI command (or a node) started while PostgreSQL is down or restarting waits for
/// it (`store.connect_wait`) instead of failing at once: here `user add` begins with
/// the database stopped, says so, and succeeds once it is back.
#[tokio::test]
#[ignore = "cluster store only: run in the cluster pass"]
async fn a_cli_command_waits_for_a_store_that_is_coming_back() {
    use std::io::{BufRead, Write};
    require_cluster_pass();
    let pg = OwnPostgres::start();
    let url = pg.url();
    let s = Server::start_with(&[("PALISADE_STORE__POSTGRES_URL", url.as_str())]);
    pg.ctl("stop");
    let mut cli = s
        .command()
        .args([
            "user",
            "add",
            "late",
            "--tenant",
            "acme",
            "--password-stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    cli.stdin
        .take()
        .unwrap()
        .write_all(b"pw-late-correct-horse\n")
        .unwrap();
    let mut stderr = std::io::BufReader::new(cli.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "the CLI ended");
        if line.contains("store not reachable yet") {
            break;
        }
    }
    assert!(!line.contains("pw-late"), "{line}");
    pg.ctl("start");
    let out = cli.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The running server sees its store back by itself.
    eventually(Duration::from_secs(15), "the new user signs in", || async {
        let r = s.login_raw("late", "pw-late-correct-horse").await;
        (r.status() == StatusCode::OK).then_some(())
    })
    .await;
}

/// How long `node` keeps accepting `key` on `/v1/models` after `act` ran on the other
/// node; fails if it is a second or more.
async fn refused_within_a_second(node: &Server, key: &str) -> Duration {
    let t = Instant::now();
    loop {
        let st = node.get("/v1/models", key).await.status();
        if st == StatusCode::UNAUTHORIZED {
            return t.elapsed();
        }
        assert_eq!(st, StatusCode::OK);
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "the other node still accepts the key after a second"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
#[ignore = "cluster store only: run in the cluster pass"]
async fn a_revoked_api_key_or_disabled_service_is_refused_by_the_other_node_within_a_second() {
    require_cluster_pass();
    let p = pair(&[]);
    let acme = seed_acme(&p.a);
    let adam = p.a.login("adam", &acme.adam).await;
    p.a.cli_ok(&[
        "service", "add", "bot", "--tenant", "acme", "--roles", "employee",
    ]);
    let new_key = || {
        let out =
            p.a.cli_ok(&["key", "create", "--service", "bot", "--tenant", "acme"]);
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let key = new_key();
    // Cached on B (the cache alone would keep it for a second).
    for _ in 0..5 {
        assert_eq!(p.b.get("/v1/models", &key).await.status(), StatusCode::OK);
    }
    let r =
        p.a.delete(&format!("/admin/api-keys/{}", &key[4..28]), &adam.access)
            .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let revoked = refused_within_a_second(&p.b, &key).await;

    let key = new_key();
    for _ in 0..5 {
        assert_eq!(p.b.get("/v1/models", &key).await.status(), StatusCode::OK);
    }
    p.a.cli_ok(&["service", "disable", "bot", "--tenant", "acme"]);
    let disabled = refused_within_a_second(&p.b, &key).await;
    eprintln!(
        "key revocation reached the other node after {revoked:?}; disabling after {disabled:?}"
    );
}
