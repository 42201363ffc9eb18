//! Benchmark helper: prints `count` fresh DPoP proofs (RFC 9449), one per line, for
//! `METHOD URL`, signed with the P-256 key in `key.pem`, each with its own `jti` and
//! (given an access token) its `ath`. `bench/run-dpop.sh` feeds them to wrk, one per
//! request, so the DPoP row pays for a real proof check on every request.
//!
//! Usage: dpop_proofs <key.pem> <METHOD> <URL> <count> [access_token]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey};
use std::io::Write;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, key, method, url, count, rest @ ..] = args.as_slice() else {
        eprintln!("usage: dpop_proofs <key.pem> <METHOD> <URL> <count> [access_token]");
        std::process::exit(2);
    };
    let pem = std::fs::read(key).expect("the key file");
    let key = EncodingKey::from_ec_pem(&pem).expect("a P-256 private key in PEM");
    let jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).expect("an EC key");
    let header =
        B64.encode(serde_json::json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk}).to_string());
    let ath = rest.first().map(|t| palisade::auth::dpop::token_hash(t));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs();
    let n: usize = count.parse().expect("a count");
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for _ in 0..n {
        let mut claims = serde_json::json!({"jti": palisade::secret::new_id(), "htm": method,
            "htu": url, "iat": now});
        if let Some(a) = &ath {
            claims["ath"] = serde_json::json!(a);
        }
        let input = format!("{header}.{}", B64.encode(claims.to_string()));
        let sig =
            jsonwebtoken::crypto::sign(input.as_bytes(), &key, Algorithm::ES256).expect("signing");
        writeln!(out, "{input}.{sig}").expect("stdout");
    }
}
