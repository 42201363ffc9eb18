//! Filtered retrieval at 10k and 100k chunks (384-d): p50/p99 latency of the ACL-filtered
//! KNN and recall@10 against exact filtered search, for a broad (50%) and a narrow (5%)
//! scope; plus MiniLM embedding throughput when the model is present.
//!
//! Run: `cargo bench --bench rag` (prints a table). Scopes come from real logins, the
//! only way to obtain one.

use std::time::Instant;

use palisade::app::{self, AddUser};
use palisade::auth::{AccessScope, ClientInfo};
use palisade::config::{Config, EmbeddingsKind};
use palisade::rag::acl_labels;
use palisade::rag::embed::{Embedder, MiniLm};
use palisade::secret::SecretString;
use palisade::store::{Acl, DocumentStore, NewChunk, NewDocument, SearchQuery};

const DIM: usize = 384;
const ACLS: usize = 20;

fn vector(seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    let mut v: Vec<f32> = (0..DIM)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 2000) as f32 / 1000.0 - 1.0
        })
        .collect();
    let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
    v.iter_mut().for_each(|a| *a /= n);
    v
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn scope_for(
    state: &palisade::http::AppState,
    store: &palisade::store::sqlite::SqliteStore,
    name: &str,
    roles: Vec<String>,
) -> AccessScope {
    app::add_user(
        store,
        AddUser {
            username: name,
            password: SecretString::new("bench-password-1".into()),
            tenant: "acme",
            roles,
            groups: vec![],
        },
    )
    .await
    .unwrap();
    let client = ClientInfo::default();
    let t = state
        .auth
        .login(name, &SecretString::new("bench-password-1".into()), &client)
        .await
        .unwrap();
    state
        .auth
        .verify_access(Some(&t.access_token), &client)
        .await
        .unwrap()
        .access_scope()
}

async fn run(n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    cfg.embeddings.kind = EmbeddingsKind::None;
    let state = app::build_state(cfg.clone()).unwrap();
    let store = app::open_store(&cfg).unwrap();
    let docs = n / 100;
    let t = Instant::now();
    let mut all: Vec<(usize, Vec<f32>)> = Vec::with_capacity(n);
    for d in 0..docs {
        let acl_ix = d % ACLS;
        let acl = Acl {
            roles: vec![format!("r{acl_ix}")],
            ..Acl::default()
        };
        let chunks: Vec<NewChunk> = (0..100)
            .map(|c| {
                let v = vector((d * 100 + c + 1) as u64);
                all.push((acl_ix, v.clone()));
                NewChunk {
                    id: format!("c{d}-{c}"),
                    text: format!("chunk {d} {c}"),
                    embedding: Some(v),
                }
            })
            .collect();
        store
            .insert_document(NewDocument {
                id: format!("d{d}"),
                tenant: "acme".into(),
                title: format!("doc {d}"),
                text: "x".into(),
                labels: acl_labels(&acl),
                acl,
                created_by: "bench".into(),
                chunks,
            })
            .await
            .unwrap();
    }
    let ingest = t.elapsed();
    let narrow = scope_for(&state, &store, "narrow", vec!["r0".into()]).await;
    let broad = scope_for(
        &state,
        &store,
        "broad",
        (0..ACLS / 2).map(|i| format!("r{i}")).collect(),
    )
    .await;
    for (label, scope, visible) in [
        ("narrow 5%", &narrow, 1usize),
        ("broad 50%", &broad, ACLS / 2),
    ] {
        let mut lat = Vec::new();
        let mut recall_hits = 0usize;
        let queries = 50;
        for q in 0..queries {
            let query = vector(9_000_000 + q as u64);
            let t = Instant::now();
            let got = store
                .search(
                    scope,
                    SearchQuery {
                        vector: Some(query.clone()),
                        terms: vec![],
                        k: 10,
                    },
                )
                .await
                .unwrap()
                .vector;
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
            let mut exact: Vec<(f32, usize)> = all
                .iter()
                .enumerate()
                .filter(|(_, (a, _))| *a < visible)
                .map(|(i, (_, v))| {
                    (
                        1.0 - v.iter().zip(&query).map(|(a, b)| a * b).sum::<f32>(),
                        i,
                    )
                })
                .collect();
            exact.sort_by(|a, b| a.0.total_cmp(&b.0));
            let want: Vec<String> = exact[..10]
                .iter()
                .map(|(_, i)| format!("c{}-{}", i / 100, i % 100))
                .collect();
            recall_hits += got.iter().filter(|h| want.contains(&h.chunk_id)).count();
        }
        lat.sort_by(f64::total_cmp);
        println!(
            "{:<8} {:<10} p50 {:>7.2} ms  p99 {:>7.2} ms  recall@10 {:.3}  (ingest {:.1}s)",
            n,
            label,
            pct(&lat, 0.5),
            pct(&lat, 0.99),
            recall_hits as f64 / (queries * 10) as f64,
            ingest.as_secs_f64()
        );
    }
}

async fn embedding_throughput() {
    let dir = std::path::Path::new("models/all-MiniLM-L6-v2");
    if !dir.join("model.safetensors").exists() {
        println!("embedding throughput: skipped (run scripts/fetch-model.sh)");
        return;
    }
    let m = MiniLm::load(dir).unwrap();
    let text = "Employees may book economy flights through the travel desk; expenses are reimbursed within thirty days when submitted with receipts. ".repeat(6);
    let batch: Vec<String> = (0..64).map(|i| format!("{i} {text}")).collect();
    let _ = m.embed(batch[..4].to_vec()).await.unwrap();
    let t = Instant::now();
    let out = m.embed(batch.clone()).await.unwrap();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "embedding throughput (all-MiniLM-L6-v2, ~200-token chunks, CPU): {:.1} chunks/s ({} in {:.2}s)",
        out.len() as f64 / secs,
        out.len(),
        secs
    );
}

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for n in [10_000, 100_000] {
            run(n).await;
        }
        embedding_throughput().await;
    });
    println!(
        "machine: {} cores, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(
                |c| c.lines().find(|l| l.starts_with("model name")).map(|l| l
                    .split(':')
                    .nth(1)
                    .unwrap_or("")
                    .trim()
                    .to_owned())
            )
            .unwrap_or_default()
    );
}
