//! Hot-path costs of the session core: token mint, token verify (+ session liveness on a
//! cache hit, which every authenticated request pays), and argon2id password verification.
//!
//! Run: `bench/run-auth.sh` (prints a table) or `cargo bench --bench auth`.

use criterion::{Criterion, criterion_group, criterion_main};
use std::time::Duration;

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

fn tokens(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let svc = TokenService::new(
        Keyring::load_or_create(&dir.path().join("keys.json")).unwrap(),
        Duration::from_secs(600),
    );
    let token = svc.mint(&claims()).unwrap();
    c.bench_function("token_mint", |b| b.iter(|| svc.mint(&claims()).unwrap()));
    c.bench_function("token_verify", |b| b.iter(|| svc.verify(&token).unwrap()));
}

fn verify_with_session(c: &mut Criterion) {
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
    c.bench_function("verify_plus_session_check_cache_hit", |b| {
        b.to_async(&rt).iter(|| async {
            state
                .auth
                .verify_access(Some(&token), &client)
                .await
                .unwrap()
        })
    });
}

fn passwords(c: &mut Criterion) {
    let hash = hash_password(&SecretString::from("correct horse battery")).unwrap();
    let mut g = c.benchmark_group("password");
    g.sample_size(20);
    g.bench_function("argon2id_verify", |b| {
        b.iter(|| assert!(verify_password_blocking("correct horse battery", &hash)))
    });
    g.finish();
}

criterion_group!(benches, tokens, verify_with_session, passwords);
criterion_main!(benches);
