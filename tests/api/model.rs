//! The real all-MiniLM-L6-v2 model, in-process (scripts/fetch-model.sh downloads it).

use crate::support::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::HashSet;

fn model_dir() -> String {
    let dir = std::env::var("PALISADE_TEST_MODEL_DIR")
        .unwrap_or_else(|_| format!("{}/models/all-MiniLM-L6-v2", env!("CARGO_MANIFEST_DIR")));
    assert!(
        std::path::Path::new(&dir)
            .join("model.safetensors")
            .exists(),
        "the MiniLM model is missing at {dir}: run scripts/fetch-model.sh (scripts/test.sh does)"
    );
    dir
}

fn words(s: &str) -> HashSet<String> {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

#[tokio::test]
async fn the_real_model_finds_a_semantically_related_document() {
    let dir = model_dir();
    let s = Server::in_process_with(&[
        ("PALISADE_EMBEDDINGS__KIND", "local"),
        ("PALISADE_EMBEDDINGS__MODEL_DIR", &dir),
    ]);
    let acme = seed_acme(&s);
    let admin = s.login("adam", &acme.adam).await;
    let docs = [
        (
            "Leave",
            "Annual leave: each employee is entitled to twenty-five paid vacation days.",
        ),
        (
            "Cafeteria",
            "The canteen serves lunch between noon and two, including vegetarian dishes.",
        ),
        (
            "Results",
            "Quarterly revenue grew by twelve percent, driven by enterprise subscriptions.",
        ),
    ];
    for (title, text) in docs {
        let r = s
            .post_document(
                &admin.access,
                &json!({"title": title, "text": text, "acl": {"public": true}}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let query = "How much holiday time off do I have?";
    // No keyword in common: only the embedding can connect them.
    assert!(words(query).is_disjoint(&words(docs[0].1)));
    let a = s.login("alice", &acme.alice).await;
    let r = s
        .post_auth("/v1/search", &a.access, &json!({"query": query, "k": 3}))
        .await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["results"][0]["title"], "Leave", "{body}");

    let r = s
        .post_auth(
            "/v1/search",
            &a.access,
            &json!({"query": "What food is available at midday?", "k": 3}),
        )
        .await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["results"][0]["title"], "Cafeteria", "{body}");
}
