//! Documents: retrieval returns everything visible and nothing else.

use super::*;
use crate::access::{AccessScope, Acl, Operator};
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
