//! Filtered retrieval at 10k and 100k chunks (384-d): p50/p99 latency of the ACL-filtered
//! KNN and recall@10 against exact filtered search, and ingestion time, for
//! * few ACLs: 20 distinct ACLs, a narrow (5 %) and a broad (50 %) scope;
//! * many ACLs: 2,000 distinct ACLs (documents shared with different user and group
//!   lists), a user who sees 1, 100 (5 % of chunks) or 1,000 (50 %) of them;
//!
//! plus MiniLM embedding throughput when the model is present.
//!
//! Run: `cargo bench --bench rag` (prints a table). Scopes come from real logins, the
//! only way to obtain one. `PALISADE_BENCH_STORE=cluster` runs it on the cluster store
//! (PostgreSQL + pgvector at `PALISADE_BENCH_POSTGRES`, default the local server; a
//! fresh database per corpus, dropped afterwards; Redis on 127.0.0.1:6379).
//! `PALISADE_BENCH_TEXT=prose` gives each chunk 100 words of Zipf-distributed text
//! (the full-text index's size and build time on text like real text).

use std::time::{Duration, Instant};

use palisade::access::{AccessScope, Acl};
use palisade::app::{self, ops};
use palisade::config::{Config, EmbeddingsKind};
use palisade::model::ClientInfo;
use palisade::rag::embed::{Embedder, MiniLm};
use palisade::secret::SecretString;
use palisade::store::{NewChunk, NewDocument, SearchQuery, Stores};

const DIM: usize = 384;
const CHUNKS_PER_DOC: usize = 50;

/// A unit vector: uniformly random (the worst case for an approximate index: no
/// structure at all), or with `PALISADE_BENCH_VECTORS=clustered`, one of 256 clusters
/// plus noise, as real embeddings are (same-cluster cosine ≈ 0.6, others ≈ 0).
fn vector(seed: u64) -> Vec<f32> {
    if std::env::var("PALISADE_BENCH_VECTORS").as_deref() != Ok("clustered") {
        return random_unit(seed);
    }
    let centroid = random_unit(1_000_000_000 + seed.wrapping_mul(2_654_435_761) % 256);
    let noise = random_unit(seed);
    let mut v: Vec<f32> = centroid
        .iter()
        .zip(&noise)
        .map(|(c, n)| c + 0.8 * n)
        .collect();
    let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
    v.iter_mut().for_each(|a| *a /= n);
    v
}

fn random_unit(seed: u64) -> Vec<f32> {
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

/// Chunk text: "chunk <doc> <n>", or with `PALISADE_BENCH_TEXT=prose` followed by 100
/// words drawn from a Zipf-like vocabulary of 5,000 terms, as real text has (common
/// words everywhere, topic words in few chunks): what the full-text index holds.
struct Prose {
    cumulative: Vec<f64>,
    state: u64,
}

impl Prose {
    fn new() -> Option<Prose> {
        if std::env::var("PALISADE_BENCH_TEXT").as_deref() != Ok("prose") {
            return None;
        }
        let mut total = 0.0;
        let cumulative = (0..5000)
            .map(|i| {
                total += 1.0 / (i as f64 + 1.0);
                total
            })
            .collect();
        Some(Prose {
            cumulative,
            state: 0x2545_F491_4F6C_DD1D,
        })
    }

    fn words(&mut self, n: usize) -> String {
        let total = self.cumulative.last().copied().unwrap_or(1.0);
        (0..n)
            .map(|_| {
                self.state ^= self.state << 13;
                self.state ^= self.state >> 7;
                self.state ^= self.state << 17;
                let u = (self.state >> 11) as f64 / (1u64 << 53) as f64 * total;
                format!("term{}", self.cumulative.partition_point(|c| *c < u))
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Resident memory of this process, in MB.
fn resident_mb() -> f64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |pages| pages * 4096.0 / 1e6)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// A scope obtained the only way there is: a user is created, logs in, and the token is
/// verified.
async fn scope_for(
    cfg: &Config,
    state: &palisade::http::AppState,
    name: &str,
    roles: Vec<String>,
    groups: Vec<String>,
) -> AccessScope {
    ops::add_user(
        cfg,
        palisade::auth::NewAccount {
            username: name,
            password: SecretString::from("bench-password-1"),
            tenant: "acme",
            roles,
            groups,
        },
    )
    .await
    .unwrap();
    let client = ClientInfo::default();
    let t = state
        .auth
        .login(
            name,
            &SecretString::from("bench-password-1"),
            &client,
            None,
            None,
        )
        .await
        .unwrap()
        .0;
    state
        .auth
        .verify_access(
            &palisade::auth::Credentials::bearer(&t.access_token),
            &client,
        )
        .await
        .unwrap()
        .access_scope()
}

/// A corpus of `n` chunks in documents of 50; `acl_of(doc)` gives each document's ACL
/// and the ACL index used by the brute-force reference.
/// A database of the corpus' own on the cluster store, dropped with it.
struct BenchDb(String);

impl Drop for BenchDb {
    fn drop(&mut self) {
        let _ = std::process::Command::new("psql")
            .arg(admin_url())
            .arg("-qc")
            .arg(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.0))
            .output();
    }
}

fn admin_url() -> String {
    std::env::var("PALISADE_BENCH_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn cluster() -> bool {
    std::env::var("PALISADE_BENCH_STORE").as_deref() == Ok("cluster")
}

struct Corpus {
    _db: Option<BenchDb>,
    stores: Stores,
    state: palisade::http::AppState,
    cfg: Config,
    all: Vec<(usize, Vec<f32>)>,
    ingest: Duration,
    _dir: tempfile::TempDir,
}

async fn corpus(n: usize, acl_of: impl Fn(usize) -> (usize, Acl)) -> Corpus {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    cfg.embeddings.kind = EmbeddingsKind::None;
    cfg.log.level = "warn".into();
    let db = cluster().then(|| {
        let name = format!(
            "palisade_bench_{}",
            std::process::id() as u64 * 1000 + n as u64 % 997
        );
        let ok = std::process::Command::new("psql")
            .arg(admin_url())
            .arg("-qc")
            .arg(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .arg("-c")
            .arg(format!("CREATE DATABASE {name}"))
            .status()
            .unwrap()
            .success();
        assert!(ok, "create the bench database");
        let (head, _) = admin_url()
            .rsplit_once('/')
            .map(|(h, t)| (h.to_owned(), t.to_owned()))
            .unwrap();
        cfg.store.kind = palisade::config::StoreKind::Cluster;
        cfg.store.postgres_url = format!("{head}/{name}");
        cfg.store.redis_prefix = format!("{name}:");
        BenchDb(name)
    });
    let stores = app::open_stores(&cfg).await.unwrap();
    let state = app::build_state_with(cfg.clone(), stores.clone()).unwrap();
    let admin = palisade::access::Operator::local_cli().document_admin("acme");
    let t = Instant::now();
    let mut all: Vec<(usize, Vec<f32>)> = Vec::with_capacity(n);
    let mut prose = Prose::new();
    for d in 0..n / CHUNKS_PER_DOC {
        let (acl_ix, acl) = acl_of(d);
        let chunks: Vec<NewChunk> = (0..CHUNKS_PER_DOC)
            .map(|c| {
                let v = vector((d * CHUNKS_PER_DOC + c + 1) as u64);
                all.push((acl_ix, v.clone()));
                NewChunk {
                    id: format!("c{d}-{c}"),
                    text: match prose.as_mut() {
                        Some(p) => format!("chunk {d} {c} {}", p.words(100)),
                        None => format!("chunk {d} {c}"),
                    },
                    embedding: Some(v),
                }
            })
            .collect();
        let doc = NewDocument::new(
            &admin,
            format!("d{d}"),
            format!("doc {d}"),
            "x".into(),
            acl,
            chunks,
            0,
        )
        .unwrap();
        stores.documents.insert_document(doc).await.unwrap();
    }
    let ingest = t.elapsed();
    Corpus {
        _db: db,
        stores,
        state,
        cfg,
        all,
        ingest,
        _dir: dir,
    }
}

/// p50, p99 and recall@10 of 50 queries for a scope that sees the ACL indexes for which
/// `visible` holds.
async fn measure(
    c: &Corpus,
    scope: &AccessScope,
    visible: impl Fn(usize) -> bool,
) -> (f64, f64, f64, f64) {
    // The first search after ingestion may build the store's in-memory copy of the
    // vectors: timed on its own, not among the 50.
    let t = Instant::now();
    c.stores
        .documents
        .search(
            scope,
            SearchQuery {
                vector: Some(vector(8_999_999)),
                terms: vec![],
                k: 10,
            },
        )
        .await
        .unwrap();
    let first = t.elapsed().as_secs_f64() * 1000.0;
    let mut lat = Vec::new();
    let mut recall_hits = 0usize;
    let queries = 50;
    for q in 0..queries {
        let query = vector(9_000_000 + q as u64);
        let t = Instant::now();
        let got = c
            .stores
            .documents
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
        let mut exact: Vec<(f32, usize)> = c
            .all
            .iter()
            .enumerate()
            .filter(|(_, (a, _))| visible(*a))
            .map(|(i, (_, v))| {
                (
                    1.0 - v.iter().zip(&query).map(|(a, b)| a * b).sum::<f32>(),
                    i,
                )
            })
            .collect();
        exact.sort_by(|a, b| a.0.total_cmp(&b.0));
        let want: Vec<String> = exact[..10.min(exact.len())]
            .iter()
            .map(|(_, i)| format!("c{}-{}", i / CHUNKS_PER_DOC, i % CHUNKS_PER_DOC))
            .collect();
        recall_hits += got.iter().filter(|h| want.contains(&h.chunk_id)).count();
    }
    lat.sort_by(f64::total_cmp);
    (
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        recall_hits as f64 / (queries * 10) as f64,
        first,
    )
}

/// p50 and p99 of 50 full-text searches (two words, one of them in every chunk), and
/// the time of a first search before them (which builds the in-memory index).
async fn measure_text(c: &Corpus, scope: &AccessScope) -> (f64, f64, f64) {
    let search = move |q: usize| {
        c.stores.documents.search(
            scope,
            SearchQuery {
                vector: None,
                terms: vec!["chunk".into(), format!("{}", q * 7)],
                k: 10,
            },
        )
    };
    let before = resident_mb();
    let t = Instant::now();
    search(1000).await.unwrap();
    let first = t.elapsed().as_secs_f64() * 1000.0;
    let grown = resident_mb() - before;
    if grown > 1.0 {
        println!("(the first full-text search grew the process by {grown:.0} MB)");
    }
    let mut lat = Vec::new();
    for q in 0..50 {
        let t = Instant::now();
        let got = search(q).await.unwrap().text;
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(!got.is_empty());
    }
    lat.sort_by(f64::total_cmp);
    (pct(&lat, 0.5), pct(&lat, 0.99), first)
}

fn text_row(n: usize, acls: &str, scope: &str, (p50, p99, first): (f64, f64, f64)) {
    println!(
        "| {n:>7} | {acls:<10} | {scope:<22} | {p50:>7.2} ms | {p99:>7.2} ms | full text | | {first:>7.1} ms |"
    );
}

fn row(
    n: usize,
    acls: &str,
    scope: &str,
    (p50, p99, recall, first): (f64, f64, f64, f64),
    ingest: Duration,
) {
    println!(
        "| {n:>7} | {acls:<10} | {scope:<22} | {p50:>7.2} ms | {p99:>7.2} ms | {recall:.3} | {:>5.1} s | {first:>7.1} ms |",
        ingest.as_secs_f64()
    );
}

/// 20 distinct ACLs: document d readable by role `r{d mod 20}`.
async fn few_acls(n: usize) {
    const ACLS: usize = 20;
    let c = corpus(n, |d| {
        let ix = d % ACLS;
        (
            ix,
            Acl {
                roles: vec![format!("r{ix}")],
                ..Acl::default()
            },
        )
    })
    .await;
    let narrow = scope_for(&c.cfg, &c.state, "narrow", vec!["r0".into()], vec![]).await;
    let broad_roles = (0..ACLS / 2).map(|i| format!("r{i}")).collect();
    let broad = scope_for(&c.cfg, &c.state, "broad", broad_roles, vec![]).await;
    row(
        n,
        "20",
        "narrow 5 %",
        measure(&c, &narrow, |a| a == 0).await,
        c.ingest,
    );
    row(
        n,
        "20",
        "broad 50 %",
        measure(&c, &broad, |a| a < ACLS / 2).await,
        c.ingest,
    );
    text_row(n, "20", "narrow 5 %", measure_text(&c, &narrow).await);
    text_row(n, "20", "broad 50 %", measure_text(&c, &broad).await);
}

/// One ACL for everything (the ingestion baseline).
async fn one_acl(n: usize) {
    let c = corpus(n, |_| {
        (
            0,
            Acl {
                roles: vec!["all".into()],
                ..Acl::default()
            },
        )
    })
    .await;
    let all = scope_for(&c.cfg, &c.state, "everyone", vec!["all".into()], vec![]).await;
    row(
        n,
        "1",
        "all 100 %",
        measure(&c, &all, |_| true).await,
        c.ingest,
    );
    // A write between searches: one more document of 50 chunks, then the next search
    // (the store brings its in-memory copy up to the write rather than rebuilding it).
    let admin = palisade::access::Operator::local_cli().document_admin("acme");
    let mut after = Vec::new();
    for d in 0..10 {
        let chunks = (0..CHUNKS_PER_DOC)
            .map(|i| NewChunk {
                id: format!("late{d}-{i}"),
                text: format!("late chunk {d} {i}"),
                embedding: Some(vector(50_000_000 + (d * CHUNKS_PER_DOC + i) as u64)),
            })
            .collect();
        let acl = Acl {
            roles: vec!["all".into()],
            ..Acl::default()
        };
        let doc = NewDocument::new(
            &admin,
            format!("late{d}"),
            "late".into(),
            "x".into(),
            acl,
            chunks,
            0,
        )
        .unwrap();
        c.stores.documents.insert_document(doc).await.unwrap();
        let t = Instant::now();
        c.stores
            .documents
            .search(
                &all,
                SearchQuery {
                    vector: Some(vector(9_100_000 + d as u64)),
                    terms: vec![],
                    k: 10,
                },
            )
            .await
            .unwrap();
        after.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    after.sort_by(f64::total_cmp);
    println!(
        "| {n:>7} | 1          | search after a write   | {:>7.2} ms | {:>7.2} ms | | | |",
        pct(&after, 0.5),
        pct(&after, 0.99)
    );
}

/// 2,000 distinct ACLs: ACL i names user `u{i}`, role `b{i/100}` and group `k{i/1000}`,
/// so one user sees 1, a role holder 100 and a group member 1,000 of them.
async fn many_acls(n: usize) {
    const ACLS: usize = 2000;
    let c = corpus(n, |d| {
        let ix = d % ACLS;
        (
            ix,
            Acl {
                users: vec![format!("u{ix}")],
                roles: vec![format!("b{}", ix / 100)],
                groups: vec![format!("k{}", ix / 1000)],
                public: false,
            },
        )
    })
    .await;
    let one = scope_for(&c.cfg, &c.state, "u7", vec![], vec![]).await;
    let hundred = scope_for(&c.cfg, &c.state, "bucket", vec!["b3".into()], vec![]).await;
    let thousand = scope_for(&c.cfg, &c.state, "half", vec![], vec!["k1".into()]).await;
    row(
        n,
        "2,000",
        "sees 1 ACL (0.05 %)",
        measure(&c, &one, |a| a == 7).await,
        c.ingest,
    );
    row(
        n,
        "2,000",
        "sees 100 ACLs (5 %)",
        measure(&c, &hundred, |a| (300..400).contains(&a)).await,
        c.ingest,
    );
    row(
        n,
        "2,000",
        "sees 1,000 ACLs (50 %)",
        measure(&c, &thousand, |a| a >= 1000).await,
        c.ingest,
    );
    text_row(
        n,
        "2,000",
        "sees 1 ACL (0.05 %)",
        measure_text(&c, &one).await,
    );
    text_row(
        n,
        "2,000",
        "sees 100 ACLs (5 %)",
        measure_text(&c, &hundred).await,
    );
    text_row(
        n,
        "2,000",
        "sees 1,000 ACLs (50 %)",
        measure_text(&c, &thousand).await,
    );
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
    // RUST_LOG=info shows what the stores log (the in-memory indexes' builds, say).
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let only = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    rt.block_on(async {
        println!(
            "store: {}",
            if cluster() {
                "cluster (PostgreSQL + pgvector)"
            } else {
                "embedded (SQLite + sqlite-vec)"
            }
        );
        println!(
            "vectors: {}",
            std::env::var("PALISADE_BENCH_VECTORS").unwrap_or_else(|_| "random".into())
        );
        println!("| chunks | ACLs | scope | p50 | p99 | recall@10 | ingest | first search |");
        println!("|---|---|---|---|---|---|---|---|");
        let want = |name: &str| only.as_deref().is_none_or(|o| o == name);
        // PALISADE_BENCH_SIZES=100000 skips the 10k corpora (pgvector's ingestion with a
        // live HNSW index is the slow part of a cluster run).
        let sizes: Vec<usize> = std::env::var("PALISADE_BENCH_SIZES")
            .ok()
            .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
            .unwrap_or_else(|| vec![10_000, 100_000]);
        if want("few") {
            for n in sizes.iter().copied() {
                few_acls(n).await;
            }
        }
        if want("many") {
            one_acl(100_000).await;
            many_acls(100_000).await;
        }
        if want("embed") {
            embedding_throughput().await;
        }
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
