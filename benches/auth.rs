//! Hot-path costs of the session core: token mint, token verify (+ session liveness on a
//! cache hit, which every authenticated request pays), and argon2id password verification.
//!
//! Run: `bench/run-auth.sh` or `cargo bench --bench auth` (prints a table of p50 and
//! mean per operation). A small timing loop, not a statistics framework: each case runs
//! for about a second after a warm-up, in batches, and the batch times give the p50.

#[path = "common/timing.rs"]
mod timing;

use std::time::Duration;
use timing::measure;

use palisade::app::{self, ops};
use palisade::auth::ClientInfo;
use palisade::auth::keys::Keyring;
use palisade::auth::password::{hash_password, verify_password_blocking};
use palisade::auth::tokens::{AccessClaims, TokenService};
use palisade::config::{Config, TokenFormat};
use palisade::secret::SecretString;

fn claims() -> AccessClaims {
    AccessClaims {
        subject: "QWxhZGRpbjpvcGVuIHNlc2E".into(),
        username: "alice".into(),
        tenant: "acme".into(),
        session_id: "c2Vzc2lvbi1pZC0xMjM0NTY".into(),
        jkt: None,
        actor: None,
    }
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
    for (name, format) in [
        ("paseto_v4_local", TokenFormat::Paseto),
        ("jwe_dir_a256gcm", TokenFormat::Jwe),
    ] {
        let svc = TokenService::new(
            Keyring::load_or_create(&dir.path().join("keys.json")).unwrap(),
            Duration::from_secs(600),
            format,
        );
        let token = svc.mint(&claims()).unwrap();
        report(&format!("token_mint/{name}"), || {
            svc.mint(&claims()).unwrap()
        });
        report(&format!("token_verify/{name}"), || {
            svc.verify(&token).unwrap()
        });
    }
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
                None,
                None,
            )
            .await
            .unwrap()
            .0;
        issued.access_token
    });
    report("verify_plus_session_check_cache_hit", || {
        rt.block_on(
            state
                .auth
                .verify_access(&palisade::auth::Credentials::bearer(&token), &client),
        )
        .unwrap()
    });

    // A service account's API key (key and account cached), and a token a service
    // exchanged for alice (her session, then the acting service's key).
    let (key, exchanged) = rt.block_on(async {
        ops::add_service(
            &cfg,
            palisade::auth::NewService {
                name: "portal".into(),
                tenant: "acme".into(),
                roles: vec!["employee".into()],
                profile: palisade::access::ServiceProfile {
                    act_for_users: true,
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let issued = ops::create_key(&cfg, "acme", "portal", Default::default())
            .await
            .unwrap();
        use palisade::secret::ExposeSecret;
        let key = issued.key.expose_secret().to_owned();
        let actor = state
            .auth
            .verify_access(&palisade::auth::Credentials::bearer(&key), &client)
            .await
            .unwrap();
        let exchanged = state
            .auth
            .exchange(
                &actor,
                &token,
                palisade::auth::exchange::SubjectKind::AccessToken,
                &client,
            )
            .await
            .unwrap()
            .access_token;
        (key, exchanged)
    });
    report("verify_api_key_cache_hit", || {
        rt.block_on(
            state
                .auth
                .verify_access(&palisade::auth::Credentials::bearer(&key), &client),
        )
        .unwrap()
    });
    report("verify_exchanged_token_cache_hit", || {
        rt.block_on(
            state
                .auth
                .verify_access(&palisade::auth::Credentials::bearer(&exchanged), &client),
        )
        .unwrap()
    });

    // The same with a DPoP-bound token: a fresh proof per call (pre-signed), checked and
    // its jti spent, then the same session check.
    let dpop = DpopClient::new();
    let origin = cfg.origins().primary().to_owned();
    let login_proof = dpop.proof("POST", &format!("{origin}/auth/login"), None);
    let bound = rt.block_on(async {
        let key = state
            .auth
            .token_request_key(Some(&login_proof), "/auth/login", &client)
            .await
            .unwrap();
        let issued = state
            .auth
            .login(
                "alice",
                &SecretString::from("correct horse battery"),
                &client,
                key,
                None,
            )
            .await
            .unwrap()
            .0;
        assert!(issued.dpop_bound);
        issued.access_token
    });
    let url = format!("{origin}/auth/me");
    let proofs: Vec<String> = (0..40_000)
        .map(|_| dpop.proof("GET", &url, Some(&bound)))
        .collect();
    let mut next = proofs.iter();
    report("verify_plus_session_check_dpop", || {
        let creds = palisade::auth::Credentials {
            token: Some(&bound),
            scheme: palisade::auth::Scheme::Dpop,
            proof: next.next().map(String::as_str),
            method: "GET",
            path: "/auth/me",
        };
        rt.block_on(state.auth.verify_access(&creds, &client))
            .is_ok()
    });
    assert!(
        next.next().is_some(),
        "the DPoP row ran out of proofs and measured refusals"
    );
}

fn passwords() {
    let hash = hash_password(&SecretString::from("correct horse battery")).unwrap();
    report("password/argon2id_verify", || {
        assert!(verify_password_blocking("correct horse battery", &hash))
    });
}

/// IdP tokens (ID tokens of an `[[oidc.issuers]]` IdP) with the JWKS cached: what
/// verifying one costs per algorithm (aws-lc-rs under jsonwebtoken).
fn idp_tokens() {
    use jsonwebtoken::jwk::{Jwk, JwkSet};
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use palisade::auth::oidc::{OidcVerifier, TokenUse};
    use palisade::config::{IssuerConfig, JwsAlgorithm, OidcConfig};

    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = |name: &str, args: &[&str], alg: Algorithm| {
        let path = dir.path().join(name);
        let ok = std::process::Command::new("openssl")
            .arg("genpkey")
            .args(args)
            .arg("-out")
            .arg(&path)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "openssl genpkey");
        let pem = std::fs::read(&path).unwrap();
        let enc = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
            Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
            _ => EncodingKey::from_ed_pem(&pem),
        }
        .unwrap();
        let mut jwk = Jwk::from_encoding_key(&enc, alg).unwrap();
        jwk.common.key_id = Some(name.into());
        (enc, jwk, alg, name.to_owned())
    };
    let keys = [
        key(
            "rs256",
            &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
            Algorithm::RS256,
        ),
        key(
            "es256",
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            Algorithm::ES256,
        ),
        key("eddsa", &["-algorithm", "ED25519"], Algorithm::EdDSA),
    ];
    let set = JwkSet {
        keys: keys.iter().map(|k| k.1.clone()).collect(),
    };
    let url = rt.block_on(async move {
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let set = set.clone();
                async move { axum::Json(set) }
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await });
        format!("http://{addr}/jwks")
    });
    let issuer = "http://127.0.0.1/realms/bench";
    let v = OidcVerifier::new(&OidcConfig {
        issuers: vec![IssuerConfig {
            issuer: issuer.into(),
            audiences: vec!["palisade".into()],
            jwks_url: Some(url),
            algorithms: vec![
                JwsAlgorithm::RS256,
                JwsAlgorithm::ES256,
                JwsAlgorithm::EdDSA,
            ],
            roles_claim: Some("realm_access.roles".into()),
            groups_claim: Some("groups".into()),
            tenant: Some("acme".into()),
            leeway: Duration::from_secs(30),
            ..IssuerConfig::default()
        }],
        ..OidcConfig::default()
    })
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({"iss": issuer, "aud": "palisade", "sub": "user-1",
        "exp": now + 3600, "iat": now, "realm_access": {"roles": ["employee"]}, "groups": ["eng"]});
    for (enc, _, alg, kid) in &keys {
        let mut h = Header::new(*alg);
        h.kid = Some(kid.clone());
        let token = jsonwebtoken::encode(&h, &claims, enc).unwrap();
        // The first call fetches the JWKS; every timed one finds the key cached.
        rt.block_on(v.verify(&token, TokenUse::IdToken)).unwrap();
        report(&format!("idp_id_token_verify/{kid}"), || {
            rt.block_on(v.verify(&token, TokenUse::IdToken)).unwrap()
        });
    }
}

/// A DPoP client key for the benches (openssl-made P-256) and its proof maker.
struct DpopClient {
    key: jsonwebtoken::EncodingKey,
    header: String,
}

impl DpopClient {
    fn new() -> Self {
        use base64::Engine;
        use jsonwebtoken::jwk::Jwk;
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
        assert!(ok, "openssl genpkey");
        let key = jsonwebtoken::EncodingKey::from_ec_pem(&std::fs::read(&path).unwrap()).unwrap();
        let jwk = Jwk::from_encoding_key(&key, jsonwebtoken::Algorithm::ES256).unwrap();
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk}).to_string());
        Self { key, header }
    }

    fn proof(&self, method: &str, url: &str, token: Option<&str>) -> String {
        use base64::Engine;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let mut claims = serde_json::json!({"jti": palisade::secret::new_id(), "htm": method,
            "htu": url, "iat": now});
        if let Some(t) = token {
            claims["ath"] = serde_json::json!(palisade::auth::dpop::token_hash(t));
        }
        let input = format!(
            "{}.{}",
            self.header,
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig =
            jsonwebtoken::crypto::sign(input.as_bytes(), &self.key, jsonwebtoken::Algorithm::ES256)
                .unwrap();
        format!("{input}.{sig}")
    }
}

/// One DPoP proof (ES256) checked as every bound request's is: header, signature by the
/// embedded key, htm/htu/iat/ath, thumbprint. (The replay check is one limit-store slot,
/// measured with `verify_access_dpop`.)
fn dpop_proofs() {
    use palisade::auth::dpop::{ProofFor, verify_proof};
    let client = DpopClient::new();
    let token = "v4.local.a-typical-access-token-of-about-this-length-0123456789";
    let url = "https://chat.example.com/v1/threads";
    let proof = client.proof("GET", url, Some(token));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let want = ProofFor {
        method: "GET",
        urls: &[url],
        access_token: Some(token),
        now,
        window_secs: 60,
    };
    assert!(verify_proof(&proof, &want).is_ok());
    report("dpop_proof_verify_es256", || verify_proof(&proof, &want));
}

fn main() {
    // `cargo test --benches` passes --bench-less flags; only time on `cargo bench`.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    println!("{:<40} {:>14} {:>14}", "benchmark", "p50", "mean");
    tokens();
    verify_with_session();
    idp_tokens();
    dpop_proofs();
    passwords();
}
