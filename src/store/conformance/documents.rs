//! Documents: retrieval returns everything visible and nothing else.

use super::*;
use crate::access::{AccessScope, Acl, Operator};
use crate::model::IngestState;
use crate::secret::new_id;

fn acl_roles(r: &str) -> Acl {
    Acl {
        roles: vec![r.into()],
        ..Acl::default()
    }
}

async fn ingest(s: &Stores, tenant: &str, title: &str, text: &str, acl: Acl) -> String {
    let admin = Operator::local_cli().document_admin(tenant);
    let id = new_id();
    let doc = NewDocument::new(
        &admin,
        id.clone(),
        title.into(),
        text.into(),
        acl,
        vec![NewChunk {
            id: new_id(),
            text: text.into(),
            embedding: None,
        }],
        T0,
    )
    .unwrap();
    s.documents.insert_document(doc).await.unwrap();
    id
}

async fn search(s: &Stores, scope: &AccessScope, q: &str) -> Vec<String> {
    s.documents
        .search(
            scope,
            SearchQuery {
                vector: None,
                terms: q.split(' ').map(str::to_owned).collect(),
                k: 10,
            },
        )
        .await
        .unwrap()
        .text
        .into_iter()
        .map(|h| h.document_id)
        .collect()
}

#[tokio::test]
async fn retrieval_returns_everything_visible_and_nothing_else() {
    let o = open().await;
    let s = &o.stores;
    let public = ingest(
        s,
        "acme",
        "handbook",
        "salary policy overview",
        Acl {
            public: true,
            ..Acl::default()
        },
    )
    .await;
    let hr = ingest(
        s,
        "acme",
        "bands",
        "salary bands confidential",
        acl_roles("hr"),
    )
    .await;
    let other = ingest(s, "globex", "bands", "salary bands globex", acl_roles("hr")).await;

    let hannah = Principal::for_tests("acme", "hannah", &["hr"], &[]).access_scope();
    let mut got = search(s, &hannah, "salary").await;
    got.sort();
    let mut want = vec![public.clone(), hr.clone()];
    want.sort();
    assert_eq!(got, want, "recall: everything visible");
    let nora = Principal::for_tests("acme", "nora", &[], &[]).access_scope();
    assert_eq!(
        search(s, &nora, "salary").await,
        std::slice::from_ref(&public)
    );
    let eve = Principal::for_tests("globex", "eve", &["hr"], &[]).access_scope();
    assert_eq!(
        search(s, &eve, "salary").await,
        std::slice::from_ref(&other)
    );

    // The document admin lists every document of its tenant, readable or not, and
    // deletes one; the next search no longer finds it. Another tenant's admin cannot.
    let acme_admin = Operator::local_cli().document_admin("acme");
    let globex_admin = Operator::local_cli().document_admin("globex");
    let listed: Vec<String> = s
        .documents
        .list_all_documents(&acme_admin)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(listed.len(), 2);
    assert!(listed.contains(&hr) && !listed.contains(&other));
    assert!(
        !s.documents
            .delete_document(&globex_admin, &hr)
            .await
            .unwrap()
    );
    assert!(s.documents.delete_document(&acme_admin, &hr).await.unwrap());
    assert_eq!(search(s, &hannah, "salary").await, [public]);
    assert!(s.documents.document(&hannah, &hr).await.unwrap().is_none());
}

/// A caller's full-text ranking — order and scores — is a function of what it may
/// read: chunks of another ACL or another tenant full of the same words change nothing
/// (no ranking oracle on documents the caller cannot read).
#[tokio::test]
async fn text_ranking_does_not_move_with_chunks_the_caller_cannot_read() {
    let o = open().await;
    let s = &o.stores;
    for t in [
        "salary reviews happen every april and salary bands are published",
        "travel is booked through the travel desk keep your receipts",
        "receipts older than ninety days cannot be reimbursed",
        "parking permits are issued by facilities",
    ] {
        ingest(s, "acme", "handbook", t, acl_roles("x")).await;
    }
    let x = Principal::for_tests("acme", "u", &["x"], &[]).access_scope();
    let ranked = || async {
        s.documents
            .search(
                &x,
                SearchQuery {
                    vector: None,
                    terms: vec!["salary".into(), "travel".into(), "receipts".into()],
                    k: 10,
                },
            )
            .await
            .unwrap()
            .text
            .into_iter()
            .map(|h| (h.document_id, h.score))
            .collect::<Vec<_>>()
    };
    let before = ranked().await;
    assert_eq!(before.len(), 3, "{before:?}");
    for _ in 0..20 {
        let flood = "salary salary travel receipts";
        ingest(s, "acme", "flood", flood, acl_roles("y")).await;
        ingest(s, "globex", "flood", flood, acl_roles("x")).await;
    }
    assert_eq!(ranked().await, before);
}

/// A document of `n` chunks whose vectors all lie near one direction.
async fn ingest_many(s: &Stores, tenant: &str, text: &str, n: usize, acl: Acl) -> String {
    let admin = Operator::local_cli().document_admin(tenant);
    let id = new_id();
    let chunks = (0..n)
        .map(|i| NewChunk {
            id: new_id(),
            text: format!("{text} {i}"),
            embedding: Some(vec![1.0, (i % 7) as f32 / 100.0, 0.0, 0.0]),
        })
        .collect();
    let doc = NewDocument::new(
        &admin,
        id.clone(),
        text.into(),
        text.into(),
        acl,
        chunks,
        T0,
    )
    .unwrap();
    s.documents.insert_document(doc).await.unwrap();
    id
}

/// With thousands of visible chunks the stores may plan differently (the cluster store
/// walks its vector graph and takes full-text matches from its word index before
/// filtering): the filter holds the same, and what is visible is found.
#[tokio::test]
async fn a_large_visible_set_is_filtered_the_same() {
    let o = open().await;
    let s = &o.stores;
    let big = ingest_many(s, "acme", "alpha filler", 2_100, acl_roles("x")).await;
    let secret = ingest_many(s, "acme", "alpha secret", 10, acl_roles("y")).await;
    let foreign = ingest_many(s, "globex", "alpha secret", 10, acl_roles("x")).await;
    let search = |scope: AccessScope, word: &'static str| async move {
        let r = s
            .documents
            .search(
                &scope,
                SearchQuery {
                    vector: Some(vec![1.0, 0.0, 0.0, 0.0]),
                    terms: vec![word.into()],
                    k: 10,
                },
            )
            .await
            .unwrap();
        let docs = |hits: Vec<crate::model::ChunkHit>| {
            let mut d: Vec<String> = hits.into_iter().map(|h| h.document_id).collect();
            d.dedup();
            d
        };
        (docs(r.vector), docs(r.text))
    };
    let x = Principal::for_tests("acme", "u", &["x"], &[]).access_scope();
    let (vector, text) = search(x.clone(), "alpha").await;
    assert_eq!((vector, text), (vec![big.clone()], vec![big.clone()]));
    let (vector, text) = search(x, "secret").await;
    assert_eq!(vector, std::slice::from_ref(&big));
    assert!(text.is_empty(), "{text:?}");
    // One who may also read y finds its ten chunks by word among 2,110.
    let xy = Principal::for_tests("acme", "v", &["x", "y"], &[]).access_scope();
    let (_, text) = search(xy, "secret").await;
    assert_eq!(text, std::slice::from_ref(&secret));
    let y = Principal::for_tests("acme", "w", &["y"], &[]).access_scope();
    let (vector, text) = search(y, "alpha").await;
    assert_eq!((vector, text), (vec![secret.clone()], vec![secret]));
    let eve = Principal::for_tests("globex", "eve", &["x"], &[]).access_scope();
    let (vector, text) = search(eve, "alpha").await;
    assert_eq!((vector, text), (vec![foreign.clone()], vec![foreign]));
}

fn claim(worker: &str, now: i64, only: Option<&str>) -> IngestClaim {
    IngestClaim {
        worker: worker.into(),
        now,
        lease_ms: 10_000,
        per_tenant: 1,
        only: only.map(str::to_owned),
    }
}

fn chunks(texts: &[&str], dim: usize) -> Vec<NewChunk> {
    texts
        .iter()
        .map(|t| NewChunk {
            id: new_id(),
            text: (*t).into(),
            embedding: Some({
                let mut v = vec![0.0; dim];
                v[t.len() % dim] = 1.0;
                v
            }),
        })
        .collect()
}

/// A claim's outcome (the store must not fail).
async fn take(s: &Stores, c: IngestClaim) -> Option<IngestJob> {
    s.documents.claim_ingest(c).await.unwrap()
}

async fn submit(s: &Stores, tenant: &str, text: &str, at: i64) -> String {
    let admin = Operator::local_cli().document_admin(tenant);
    let doc = NewDocument::new(
        &admin,
        new_id(),
        "job".into(),
        text.into(),
        acl_roles("hr"),
        Vec::new(),
        at,
    )
    .unwrap();
    let rec = s.documents.enqueue_document(doc).await.unwrap();
    assert_eq!(rec.state, IngestState::Queued);
    rec.id
}

/// A job's life: claimed under a lease, staged batch by batch (a batch staged twice is
/// kept once), invisible to search until published, then all at once; a worker whose
/// lease lapsed writes nothing; a crashed job resumes from what was staged; the
/// per-tenant bound holds; a job given up drops what it staged.
#[tokio::test]
async fn ingestion_jobs_are_leased_staged_once_and_published_whole() {
    let o = open().await;
    let s = &o.stores;
    let admin = Operator::local_cli().document_admin("acme");
    let hannah = Principal::for_tests("acme", "hannah", &["hr"], &[]).access_scope();
    let a = submit(s, "acme", "zebra quagga okapi", T0).await;
    let b = submit(s, "acme", "second document", T0 + 1).await;
    let g = submit(s, "globex", "globex job", T0 + 2).await;

    // Worker 1 claims the oldest; the tenant's bound (1) keeps worker 2 from acme's
    // next job, but not from globex's.
    let job = take(s, claim("w1", T0, None)).await.unwrap();
    assert_eq!(
        (job.lease.document_id.as_str(), job.done, job.attempts),
        (a.as_str(), 0, 0)
    );
    assert_eq!(job.text, "zebra quagga okapi");
    let other = take(s, claim("w2", T0 + 1, None)).await.unwrap();
    assert_eq!(other.lease.document_id, g);
    assert!(take(s, claim("w3", T0 + 2, None)).await.is_none());
    assert!(
        s.documents
            .claim_ingest(claim("w3", T0 + 2, Some(&b)))
            .await
            .unwrap()
            .is_none()
    );

    // Two batches; the first is staged again (a retried step): kept once.
    let lease = job.lease.clone();
    let first = chunks(&["zebra one", "zebra two"], 8);
    assert!(
        s.documents
            .stage_chunks(&lease, 0, 3, first.clone(), T0 + 10_000)
            .await
            .unwrap()
    );
    assert!(
        s.documents
            .stage_chunks(&lease, 0, 3, first, T0 + 10_000)
            .await
            .unwrap()
    );
    let meta = s
        .documents
        .document_meta(&admin, &a)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(meta.state, IngestState::Embedding { done: 2, total: 3 });
    assert_eq!(meta.chunk_count, 0);
    assert!(search(s, &hannah, "zebra").await.is_empty(), "half-indexed");

    // The lease lapses (the worker hung): worker 4 takes the job over from chunk 2,
    // and worker 1 can no longer write or publish.
    let later = T0 + 10_001;
    let resumed = s
        .documents
        .claim_ingest(claim("w4", later, Some(&a)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resumed.done, 2);
    assert!(
        !s.documents
            .stage_chunks(&lease, 2, 3, chunks(&["stale"], 8), later + 10_000)
            .await
            .unwrap()
    );
    assert!(!s.documents.publish_ingest(&lease).await.unwrap());
    let lease = resumed.lease;
    assert!(
        s.documents
            .stage_chunks(&lease, 2, 3, chunks(&["zebra three"], 8), later + 10_000)
            .await
            .unwrap()
    );
    assert!(search(s, &hannah, "zebra").await.is_empty(), "half-indexed");
    assert!(s.documents.publish_ingest(&lease).await.unwrap());
    let meta = s
        .documents
        .document_meta(&admin, &a)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((meta.state, meta.chunk_count), (IngestState::Ready, 3));
    let found = s
        .documents
        .search(
            &hannah,
            SearchQuery {
                vector: Some({
                    let mut v = vec![0.0; 8];
                    v["zebra two".len() % 8] = 1.0;
                    v
                }),
                terms: vec!["zebra".into()],
                k: 10,
            },
        )
        .await
        .unwrap();
    let mut texts: Vec<String> = found.text.iter().map(|h| h.text.clone()).collect();
    texts.sort();
    assert_eq!(texts, ["zebra one", "zebra three", "zebra two"]);
    assert!(!found.vector.is_empty());
    assert!(
        !s.documents.publish_ingest(&lease).await.unwrap(),
        "published twice"
    );

    // acme's slot is free again: b is claimed; a failed attempt releases it for later,
    // the next gives up and drops what it staged.
    let job = take(s, claim("w5", later + 1, None)).await.unwrap();
    assert_eq!(job.lease.document_id, b);
    assert!(
        s.documents
            .stage_chunks(&job.lease, 0, 2, chunks(&["second"], 8), later + 10_000)
            .await
            .unwrap()
    );
    s.documents
        .fail_ingest(&job.lease, IngestFailure::RetryAt(later + 5_000))
        .await
        .unwrap();
    let meta = s
        .documents
        .document_meta(&admin, &b)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(meta.state, IngestState::Queued);
    assert!(
        s.documents
            .claim_ingest(claim("w5", later + 4_999, Some(&b)))
            .await
            .unwrap()
            .is_none()
    );
    let job = s
        .documents
        .claim_ingest(claim("w5", later + 5_000, Some(&b)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((job.done, job.attempts), (1, 1));
    s.documents
        .fail_ingest(&job.lease, IngestFailure::GiveUp("embedding_failed"))
        .await
        .unwrap();
    let meta = s
        .documents
        .document_meta(&admin, &b)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        meta.state,
        IngestState::Failed {
            reason: "embedding_failed".into()
        }
    );
    assert!(
        s.documents
            .claim_ingest(claim("w6", later + 60_000, Some(&b)))
            .await
            .unwrap()
            .is_none()
    );

    // A job deleted mid-way: its worker's next step writes nothing.
    assert!(
        s.documents
            .delete_document(&Operator::local_cli().document_admin("globex"), &g)
            .await
            .unwrap()
    );
    assert!(
        !s.documents
            .stage_chunks(&other.lease, 0, 1, chunks(&["gone"], 8), later)
            .await
            .unwrap()
    );
    assert!(!s.documents.publish_ingest(&other.lease).await.unwrap());
}
