//! Retrieval against the real embedded store: the filter, recall, empty scopes, injection.

use super::*;
use crate::access::Acl;
use crate::access::Principal;
use crate::store::sqlite::SqliteStore;
use crate::store::{AuditStore, NewChunk, NewDocument, SearchQuery};

fn store() -> (tempfile::TempDir, Arc<SqliteStore>) {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("t.db")).unwrap();
    (dir, Arc::new(s))
}

fn rag(store: Arc<SqliteStore>, embedder: Option<Arc<dyn Embedder>>) -> Rag {
    let audit = Audit::new(store.clone() as Arc<dyn AuditStore>);
    Rag::new(store, embedder, RagConfig::default(), audit)
}

/// A deterministic pseudo-random unit vector.
fn vector(seed: u64, dim: usize) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    let mut v: Vec<f32> = (0..dim)
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

fn doc(id: &str, tenant: &str, acl: Acl, chunks: Vec<(String, Vec<f32>)>) -> NewDocument {
    let admin = crate::access::Operator::local_cli().document_admin(tenant);
    let text = chunks
        .iter()
        .map(|c| c.0.clone())
        .collect::<Vec<_>>()
        .join("\n");
    let chunks = chunks
        .into_iter()
        .enumerate()
        .map(|(i, (text, v))| NewChunk {
            id: format!("{id}-{i}"),
            text,
            embedding: Some(v),
        })
        .collect();
    NewDocument::new(&admin, id.into(), id.into(), text, acl, chunks, 0)
        .expect("an ACL naming someone")
}

fn role(r: &str) -> Acl {
    Acl {
        roles: vec![r.into()],
        ..Acl::default()
    }
}

/// The vectors and words searched in memory are copies: a document added or deleted
/// through another opening of the same file (the CLI beside a running server) is found,
/// or gone, at the next search; a role's copy never yields a chunk of an ACL the caller
/// lacks.
#[tokio::test]
async fn the_in_memory_indexes_follow_writes_of_other_processes() {
    let (dir, s) = store();
    let q = vector(1, 384);
    let search = |s: Arc<SqliteStore>, roles: &'static [&'static str]| async move {
        let scope = Principal::for_tests("acme", "u", roles, &[]).access_scope();
        nearest(&s, &scope, vector(1, 384)).await
    };
    let words = |s: Arc<SqliteStore>, roles: &'static [&'static str], word: &'static str| async move {
        let scope = Principal::for_tests("acme", "u", roles, &[]).access_scope();
        lexical(&s, &scope, &[word])
            .await
            .into_iter()
            .map(|h| h.0)
            .collect::<Vec<_>>()
    };
    s.insert_document(doc(
        "a",
        "acme",
        role("x"),
        vec![("alpha".into(), vector(2, 384))],
    ))
    .await
    .unwrap();
    assert_eq!(search(s.clone(), &["x"]).await, ["a-0"]);
    assert_eq!(words(s.clone(), &["x"], "alpha").await, ["a-0"]);
    // Another opening (another process) adds the nearest vector, under another role.
    let other = SqliteStore::open(&dir.path().join("t.db")).unwrap();
    other
        .insert_document(doc(
            "b",
            "acme",
            role("x"),
            vec![("bravo".into(), q.clone())],
        ))
        .await
        .unwrap();
    other
        .insert_document(doc(
            "h",
            "acme",
            role("hr"),
            vec![("hotel".into(), q.clone())],
        ))
        .await
        .unwrap();
    assert_eq!(search(s.clone(), &["x"]).await, ["b-0", "a-0"]);
    assert_eq!(search(s.clone(), &["hr"]).await, ["h-0"]);
    assert_eq!(words(s.clone(), &["x"], "bravo").await, ["b-0"]);
    assert!(words(s.clone(), &["x"], "hotel").await.is_empty());
    assert_eq!(words(s.clone(), &["hr"], "hotel").await, ["h-0"]);
    // And deletes one: gone at once.
    let admin = crate::access::Operator::local_cli().document_admin("acme");
    assert!(other.delete_document(&admin, "b").await.unwrap());
    assert_eq!(search(s.clone(), &["x"]).await, ["a-0"]);
    assert!(words(s.clone(), &["x"], "bravo").await.is_empty());
    // This process's own writes are applied to its copies: found, then gone.
    s.insert_document(doc(
        "c",
        "acme",
        role("x"),
        vec![("charlie".into(), q.clone())],
    ))
    .await
    .unwrap();
    assert_eq!(search(s.clone(), &["x"]).await, ["c-0", "a-0"]);
    assert_eq!(words(s.clone(), &["x"], "charlie").await, ["c-0"]);
    assert!(s.delete_document(&admin, "c").await.unwrap());
    assert_eq!(search(s.clone(), &["x"]).await, ["a-0"]);
    assert!(words(s.clone(), &["x"], "charlie").await.is_empty());
    // Another tenant with the same role sees nothing.
    let eve = Principal::for_tests("globex", "eve", &["x"], &[]).access_scope();
    assert!(nearest(&s, &eve, q).await.is_empty());
    assert!(lexical(&s, &eve, &["alpha"]).await.is_empty());
}

/// The chunks the scope's full-text ranking finds for `terms`, best first, with their
/// scores.
async fn lexical(
    s: &SqliteStore,
    scope: &crate::access::AccessScope,
    terms: &[&str],
) -> Vec<(String, f64)> {
    s.search(
        scope,
        SearchQuery {
            vector: None,
            terms: terms.iter().map(|t| t.to_string()).collect(),
            k: 10,
        },
    )
    .await
    .unwrap()
    .text
    .into_iter()
    .map(|h| (h.chunk_id, h.score))
    .collect()
}

/// The ten nearest chunks the scope may see, by id.
async fn nearest(
    s: &SqliteStore,
    scope: &crate::access::AccessScope,
    query: Vec<f32>,
) -> Vec<String> {
    s.search(
        scope,
        SearchQuery {
            vector: Some(query),
            terms: vec![],
            k: 10,
        },
    )
    .await
    .unwrap()
    .vector
    .into_iter()
    .map(|h| h.chunk_id)
    .collect()
}

#[tokio::test]
async fn filtered_knn_equals_brute_force_over_the_visible_set() {
    let (_d, s) = store();
    let dim = 384;
    // 20 documents x 100 chunks; only document 7 (5%) is visible to the user.
    let mut all: Vec<(String, Vec<f32>, bool)> = Vec::new();
    for d in 0..20u64 {
        let visible = d == 7;
        let chunks: Vec<(String, Vec<f32>)> = (0..100u64)
            .map(|c| (format!("chunk {d}/{c}"), vector(d * 1000 + c + 1, dim)))
            .collect();
        for (i, (_, v)) in chunks.iter().enumerate() {
            all.push((format!("doc{d}-{i}"), v.clone(), visible));
        }
        let acl = if visible { role("x") } else { role("y") };
        s.insert_document(doc(&format!("doc{d}"), "acme", acl, chunks))
            .await
            .unwrap();
    }
    let p = Principal::for_tests("acme", "u", &["x"], &[]);
    let scope = p.access_scope();
    for q in 0..20u64 {
        let query = vector(777_000 + q, dim);
        let got = nearest(&s, &scope, query.clone()).await;
        let mut exact: Vec<(f32, &String)> = all
            .iter()
            .filter(|(_, _, vis)| *vis)
            .map(|(id, v, _)| {
                (
                    1.0 - v.iter().zip(&query).map(|(a, b)| a * b).sum::<f32>(),
                    id,
                )
            })
            .collect();
        exact.sort_by(|a, b| a.0.total_cmp(&b.0));
        let want: Vec<String> = exact.iter().take(10).map(|(_, id)| (*id).clone()).collect();
        assert_eq!(
            got, want,
            "query {q}: recall@10 must be 1.0 with no shortfall"
        );
    }
}

#[tokio::test]
async fn empty_or_foreign_scopes_match_nothing() {
    let (_d, s) = store();
    let public = Acl {
        public: true,
        ..Acl::default()
    };
    s.insert_document(doc(
        "pub",
        "acme",
        public,
        vec![("handbook travel".into(), vector(5, 384))],
    ))
    .await
    .unwrap();
    s.insert_document(doc(
        "hr",
        "acme",
        role("hr"),
        vec![("salary travel".into(), vector(6, 384))],
    ))
    .await
    .unwrap();
    let r = rag(s.clone(), Some(Arc::new(HashingEmbedder::new(384))));

    // No roles, no groups: public only (the "public" label, never "everything").
    let nobody = Principal::for_tests("acme", "nora", &[], &[]).access_scope();
    let hits = r
        .retrieve(&nobody, "travel salary handbook", 10)
        .await
        .unwrap();
    assert_eq!(
        hits.iter()
            .map(|h| h.document_id.as_str())
            .collect::<Vec<_>>(),
        ["pub"]
    );

    // Another tenant with the very same role sees nothing of acme's.
    let other = Principal::for_tests("globex", "eve", &["hr"], &[]).access_scope();
    assert!(
        r.retrieve(&other, "travel salary handbook", 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(s.list_documents(&other).await.unwrap().is_empty());
}

#[tokio::test]
async fn user_text_never_becomes_fts_syntax() {
    let (_d, s) = store();
    s.insert_document(doc(
        "hr",
        "acme",
        role("hr"),
        vec![("secret salary".into(), vector(6, 384))],
    ))
    .await
    .unwrap();
    s.insert_document(doc(
        "pub",
        "acme",
        Acl {
            public: true,
            ..Acl::default()
        },
        vec![("lunch menu".into(), vector(7, 384))],
    ))
    .await
    .unwrap();
    let r = rag(s.clone(), None);
    let nobody = Principal::for_tests("acme", "nora", &[], &[]).access_scope();
    for q in [
        "salary\" OR \"secret",
        "text:salary",
        "NEAR(secret salary)",
        "* OR salary",
        "') OR 1=1 --",
        "salary\0",
        "\"",
    ] {
        let hits = r.retrieve(&nobody, q, 10).await.unwrap();
        assert!(
            hits.iter().all(|h| h.document_id == "pub"),
            "{q:?} widened the scope"
        );
    }
    assert_eq!(
        query_terms("A \"b\" c:d NEAR(e)"),
        ["b", "c", "d", "e", "near"]
    );
}
