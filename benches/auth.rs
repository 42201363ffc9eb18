//! Hot-path costs of the session core: token mint, token verify (+ session liveness on a
//! cache hit, which every authenticated request pays), and argon2id password verification.
//!
//! Run: `bench/run-auth.sh` or `cargo bench --bench auth` (prints a table of p50 and
//! mean per operation). A small timing loop, not a statistics framework: each case runs
//! for about a second after a warm-up, in batches, and the batch times give the p50.

use std::time::{Duration, Instant};

use palisade::app::{self, ops};
use palisade::auth::ClientInfo;
use palisade::auth::keys::Keyring;
use palisade::auth::password::{hash_password, verify_password_blocking};
use palisade::auth::tokens::{AccessClaims, TokenService};
use palisade::config::Config;
use palisade::secret::SecretString;

fn claims() -> AccessClaims {
    AccessClaims {
        subject: "QWxhZGRpbjpvcGVuIHNlc2E".into(),
        username: "alice".into(),
        tenant: "acme".into(),
        session_id: "c2Vzc2lvbi1pZC0xMjM0NTY".into(),
    }
}

/// Times `f` over batches for about `budget`; returns (p50, mean) per call.
fn measure<R>(budget: Duration, mut f: impl FnMut() -> R) -> (Duration, Duration) {
    // Warm-up, and a batch size that makes a batch last ~10 ms.
    let t = Instant::now();
    let mut n = 0u32;
    while t.elapsed() < Duration::from_millis(200) {
        std::hint::black_box(f());
        n += 1;
    }
    let batch = (n / 20).max(1);
    let mut per_call = Vec::new();
    let start = Instant::now();
    while start.elapsed() < budget || per_call.len() < 5 {
        let t = Instant::now();
        for _ in 0..batch {
            std::hint::black_box(f());
        }
        per_call.push(t.elapsed() / batch);
    }
    per_call.sort();
    let mean = per_call.iter().sum::<Duration>() / per_call.len() as u32;
    (per_call[per_call.len() / 2], mean)
}

fn fmt(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} µs", ns / 1e3)
    }
}

fn report<R>(name: &str, f: impl FnMut() -> R) {
    let (p50, mean) = measure(Duration::from_secs(1), f);
    println!("{name:<40} {:>14} {:>14}", fmt(p50), fmt(mean));
}

fn tokens() {
    let dir = tempfile::tempdir().unwrap();
    let svc = TokenService::new(
        Keyring::load_or_create(&dir.path().join("keys.json")).unwrap(),
        Duration::from_secs(600),
    );
    let token = svc.mint(&claims()).unwrap();
    report("token_mint", || svc.mint(&claims()).unwrap());
    report("token_verify", || svc.verify(&token).unwrap());
}

fn verify_with_session() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    let client = ClientInfo::default();
    rt.block_on(async {
        ops::add_user(
            &cfg,
            palisade::auth::NewAccount {
                username: "alice",
                password: SecretString::from("correct horse battery"),
                tenant: "acme",
                roles: vec!["employee".into()],
                groups: vec![],
            },
        )
        .await
        .unwrap();
    });
    let state = rt.block_on(app::build_state(cfg.clone())).unwrap();
    let token = rt.block_on(async {
        let issued = state
            .auth
            .login(
                "alice",
                &SecretString::from("correct horse battery"),
                &client,
            )
            .await
            .unwrap();
        issued.access_token
    });
    report("verify_plus_session_check_cache_hit", || {
        rt.block_on(state.auth.verify_access(Some(&token), &client))
            .unwrap()
    });
}

fn passwords() {
    let hash = hash_password(&SecretString::from("correct horse battery")).unwrap();
    report("password/argon2id_verify", || {
        assert!(verify_password_blocking("correct horse battery", &hash))
    });
}

fn main() {
    // `cargo test --benches` passes --bench-less flags; only time on `cargo bench`.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    println!("{:<40} {:>14} {:>14}", "benchmark", "p50", "mean");
    tokens();
    verify_with_session();
    passwords();
}
