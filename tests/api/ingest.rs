//! Ingestion as a job: `POST /v1/documents` answers 202 at once, the job's state is at
//! the document's URL, the document is searchable only when complete, and a job
//! outlives the process (or node) that ran it — resumed, never restarted or doubled.

use crate::support::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Real prose: the sources of the Python documentation (Debian's python3-doc), in file
/// order, cut to `bytes` at a paragraph, after a first paragraph holding `canary`.
pub fn corpus(bytes: usize, canary: &str) -> String {
    let dir = std::path::Path::new("/usr/share/doc/python3/html/_sources/library");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} — install Debian's python3-doc (scripts/test.sh does)",
                dir.display()
            )
        })
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".rst.txt"))
        .collect();
    files.sort();
    let mut text = format!("Field notes on the {canary} migration of the archive.\n\n");
    for f in files {
        for para in std::fs::read_to_string(&f).unwrap().split("\n\n") {
            if text.len() + para.len() + 2 > bytes {
                return text;
            }
            if !para.trim().is_empty() {
                text.push_str(para);
                text.push_str("\n\n");
            }
        }
    }
    panic!("the corpus holds less than {bytes} bytes");
}

/// The job's state at its URL, as the writer sees it.
pub async fn state(s: &Server, token: &str, location: &str) -> Value {
    let r = s.get(location, token).await;
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{location}: {body}");
    body
}

async fn search(s: &Server, token: &str, q: &str) -> Vec<Value> {
    let r = s
        .post_auth("/v1/search", token, &json!({"query": q, "k": 5}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    body["results"].as_array().unwrap().clone()
}

/// Chunks of a document in the indexes: how many, how many distinct positions, and
/// the highest position + 1 — equal when every chunk is there exactly once.
pub fn stored_chunks(s: &Server, id: &str) -> (u64, u64, u64) {
    let n = |sql: &str| s.sql_value(sql).parse::<u64>().unwrap();
    (
        n(&format!(
            "SELECT count(*) FROM chunks WHERE document_id = '{id}'"
        )),
        n(&format!(
            "SELECT count(DISTINCT seq) FROM chunks WHERE document_id = '{id}'"
        )),
        n(&format!(
            "SELECT COALESCE(max(seq) + 1, 0) FROM chunks WHERE document_id = '{id}'"
        )),
    )
}

/// The gateway with the stand-in as its embedding upstream (8 dimensions), taking
/// `delay_ms` per request of 16 chunks: a remote model's pace, so that a job is seen
/// (and killed) mid-way.
pub async fn with_remote_embeddings(
    env: &[(&str, &str)],
    delay_ms: usize,
    start: impl FnOnce(&[(&str, &str)]) -> Server,
) -> (Server, crate::mock::Mock) {
    let mock = crate::mock::Mock::start().await;
    mock.set_embedding_delay(delay_ms);
    let mut all: Vec<(&str, &str)> = vec![
        ("PALISADE_LLM__BASE_URL", mock.base_url.as_str()),
        ("PALISADE_LLM__MODEL", "mock-model"),
        ("PALISADE_LLM__API_KEY_ENV", "PALISADE_TEST_UPSTREAM_KEY"),
        ("PALISADE_TEST_UPSTREAM_KEY", "sk-test-upstream"),
        ("PALISADE_EMBEDDINGS__KIND", "openai"),
        ("PALISADE_EMBEDDINGS__BASE_URL", mock.base_url.as_str()),
        ("PALISADE_EMBEDDINGS__MODEL", "text-embedding-3-small"),
        ("PALISADE_EMBEDDINGS__DIM", "8"),
    ];
    all.extend_from_slice(env);
    let s = start(&all);
    (s, mock)
}

/// Accepted at once (202, `Location`), `queued` then `embedding` with chunks done of
/// total, then `ready`; while not ready, search finds no word of it. A writer follows
/// the job of a document it may not read (no text); a reader who may not read it sees
/// nothing at all. `Prefer: wait` answers once it is done (201).
#[tokio::test]
async fn a_document_is_accepted_at_once_and_searchable_only_when_complete() {
    let (s, mock) = with_remote_embeddings(&[], 150, Server::start_with).await;
    let acme = seed_acme(&s);
    let adam = s.login("adam", &acme.adam).await;
    let hannah = s.login("hannah", &acme.hannah).await;
    let alice = s.login("alice", &acme.alice).await;
    const CANARY: &str = "Quokkaflume";
    let text = corpus(300_000, CANARY);
    let t = Instant::now();
    let r = s
        .post_auth(
            "/v1/documents",
            &adam.access,
            &json!({"title": "Archive notes", "text": text, "acl": {"roles": ["hr"]}}),
        )
        .await;
    let answered = t.elapsed();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let location = r
        .headers()
        .get("location")
        .expect("Location")
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = r.json().await.unwrap();
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/v1/documents/{id}"));
    assert!(
        ["queued", "embedding"].contains(&body["state"].as_str().unwrap()),
        "{body}"
    );
    assert_eq!(body["chunks"], 0);
    eprintln!("accepted in {answered:?}");

    // While it is being embedded: progress, and nothing of it is found (a search
    // counts only if the job was still unfinished after it).
    let mut seen_mid_way = None;
    let ready = loop {
        let found = search(&s, &hannah.access, CANARY).await;
        let st = state(&s, &adam.access, &location).await;
        match st["state"].as_str().unwrap() {
            "ready" => break st,
            "queued" => assert!(found.is_empty(), "found while queued"),
            "embedding" => {
                let (done, total) = (
                    st["progress"]["done"].as_u64().unwrap(),
                    st["progress"]["total"].as_u64().unwrap(),
                );
                assert!(done <= total, "{st}");
                assert!(found.is_empty(), "found half-indexed at {done}/{total}");
                if total > 0 && done > 0 && done < total {
                    seen_mid_way = Some((done, total));
                }
            }
            other => panic!("unexpected state {other}: {st}"),
        }
        assert!(t.elapsed() < Duration::from_secs(120), "not ready: {st}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (done, total) = seen_mid_way.expect("the job was seen mid-way");
    eprintln!("seen at {done}/{total}; ready after {:?}", t.elapsed());
    assert_eq!(ready["chunks"].as_u64(), Some(total), "{ready}");
    assert_eq!(ready["state"], "ready");
    assert!(ready.get("progress").is_none(), "{ready}");
    assert_eq!(stored_chunks(&s, &id), (total, total, total));
    // Each batch of chunks was embedded once (16 per request).
    assert_eq!(
        mock.embedding_requests_except(&[CANARY]) as u64,
        total.div_ceil(16)
    );

    // Complete: found, by its reader only.
    let hits = search(&s, &hannah.access, CANARY).await;
    assert_eq!(hits[0]["document_id"], id.as_str());
    assert!(search(&s, &alice.access, CANARY).await.is_empty());
    assert_eq!(
        s.get(&location, &alice.access).await.status(),
        StatusCode::NOT_FOUND
    );
    let st = state(&s, &hannah.access, &location).await;
    assert_eq!(st["text"].as_str(), Some(text.as_str()));
    // The writer (not hr) follows it without its text.
    let st = state(&s, &adam.access, &location).await;
    assert_eq!(st["state"], "ready");
    assert!(st.get("text").is_none(), "{st}");

    // `Prefer: wait` answers when it is done: 201.
    let r = s
        .post_document(
            &adam.access,
            &json!({"title": "Short", "text": "The lighthouse keeper logs every ship.", "acl": {"public": true}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        (body["state"].as_str(), body["chunks"].as_u64()),
        (Some("ready"), Some(1))
    );
}

/// A 2 MB document of real prose, posted over HTTP: the gateway is killed (-9) when a
/// quarter is embedded and, once restarted, resumes from the chunks already embedded
/// (the upstream is not asked for them again) and finishes with every chunk stored
/// exactly once. Other users' chat is timed meanwhile (reported, not asserted: the
/// real model's pace is measured by `bench/ingest`).
#[tokio::test]
async fn a_two_megabyte_document_survives_a_kill_and_resumes_where_it_stopped() {
    let (mut s, mock) = with_remote_embeddings(
        &[
            ("PALISADE_RAG__INGEST_LEASE", "2s"),
            ("PALISADE_THREADS__CHAT_REQUESTS_PER_MINUTE", "100000"),
        ],
        80,
        Server::start_with,
    )
    .await;
    let acme = seed_acme(&s);
    let adam = s.login("adam", &acme.adam).await;
    let text = corpus(2_000_000, "Wombatquill");
    assert!(text.len() > 1_990_000, "{}", text.len());
    let r = s
        .post_auth(
            "/v1/documents",
            &adam.access,
            &json!({"title": "The Python library reference", "text": text, "acl": {"public": true}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let id = location.rsplit('/').next().unwrap().to_owned();

    let alice = s.login("alice", &acme.alice).await;
    let thread = s.new_thread(&alice.access, "meanwhile").await;
    let questions = ["Which module handles dates?", "Wombatquill"];
    let mut latencies = Vec::new();
    let progress = |st: &Value| {
        (
            st["progress"]["done"].as_u64().unwrap_or(0),
            st["progress"]["total"].as_u64().unwrap_or(0),
        )
    };
    let before_kill = loop {
        let t = Instant::now();
        ask(&s, &alice.access, &thread, questions[0]).await;
        latencies.push(t.elapsed());
        let st = state(&s, &adam.access, &location).await;
        let (done, total) = progress(&st);
        assert_ne!(st["state"], "ready", "finished before it could be killed");
        if total > 0 && done * 4 >= total {
            break (done, total);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    latencies.sort();
    eprintln!(
        "{} chat turns during ingestion: p50 {:?}, max {:?}",
        latencies.len(),
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
    s.kill9();
    let asked_before = mock.embedding_requests_except(&questions);
    s.restart();
    let adam = s.login("adam", &acme.adam).await;
    let st = state(&s, &adam.access, &location).await;
    let (done, total) = progress(&st);
    assert!(
        done >= before_kill.0 && total == before_kill.1,
        "restarted from {done}/{total} after {before_kill:?}"
    );
    let t = Instant::now();
    let ready = eventually(
        Duration::from_secs(240),
        "the resumed job is ready",
        || async {
            let st = state(&s, &adam.access, &location).await;
            assert_ne!(st["state"], "failed", "{st}");
            (st["state"] == "ready").then_some(st)
        },
    )
    .await;
    let total = before_kill.1;
    let asked_after = mock.embedding_requests_except(&questions) - asked_before;
    eprintln!(
        "killed at {}/{total} ({asked_before} requests); ready {:?} after the restart, {asked_after} requests more",
        before_kill.0,
        t.elapsed()
    );
    assert_eq!(ready["chunks"].as_u64(), Some(total));
    assert_eq!(stored_chunks(&s, &id), (total, total, total));
    assert_eq!(
        s.sql_value(&format!(
            "SELECT count(*) FROM ingest_chunks WHERE document_id = '{id}'"
        )),
        "0"
    );
    // Resumed, not restarted: at most the batch in flight at the kill is asked again.
    assert!(
        (asked_before + asked_after) as u64 <= total.div_ceil(16) + 1,
        "{asked_before} + {asked_after} requests for {total} chunks"
    );
    let hits = search(&s, &adam.access, "Wombatquill").await;
    assert_eq!(hits[0]["document_id"], id.as_str());
}

/// An embedding upstream that fails: the job is released and retried later (the time
/// moved by the test's clock), then given up — `failed`, `embedding_failed`, nothing
/// searchable, nothing staged left behind. One that recovers lets the job finish.
#[tokio::test]
async fn a_failing_embedding_upstream_is_retried_then_the_job_fails_clearly() {
    let clock = std::sync::Arc::new(palisade::timeutil::ManualClock::at(unix_now() * 1000));
    let (s, mock) =
        with_remote_embeddings(&[], 0, |env| Server::in_process_at(env, clock.clone())).await;
    let acme = seed_acme(&s);
    let adam = s.login("adam", &acme.adam).await;
    mock.fail_embeddings(usize::MAX);
    let r = s
        .post_auth(
            "/v1/documents",
            &adam.access,
            &json!({"title": "Doomed", "text": "Capybaravine notes.", "acl": {"public": true}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let id = location.rsplit('/').next().unwrap().to_owned();
    // Each attempt asks once; between attempts the job waits (5 s, then 10 s).
    // While the job waits, its time passes quickly (1 s per look).
    let waiting = |st: &Value| {
        if st["state"] == "queued" {
            clock.advance(Duration::from_secs(1));
        }
    };
    let failed = eventually(Duration::from_secs(30), "the job gives up", || async {
        let st = state(&s, &adam.access, &location).await;
        waiting(&st);
        (st["state"] == "failed").then_some(st)
    })
    .await;
    assert_eq!(failed["failure"], "embedding_failed", "{failed}");
    assert_eq!(mock.embedding_requests_except(&["Capybaravine"]), 3);
    assert_eq!(failed["chunks"], 0);
    assert_eq!(
        s.sql_value(&format!(
            "SELECT count(*) FROM ingest_chunks WHERE document_id = '{id}'"
        )),
        "0"
    );
    mock.fail_embeddings(0);
    assert!(search(&s, &adam.access, "Capybaravine").await.is_empty());

    // One failure, then the upstream is back: the retry finishes the job.
    mock.fail_embeddings(1);
    let r = s
        .post_auth(
            "/v1/documents",
            &adam.access,
            &json!({"title": "Survivor", "text": "Tapirglade notes.", "acl": {"public": true}}),
        )
        .await;
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    eventually(
        Duration::from_secs(30),
        "the retried job is ready",
        || async {
            let st = state(&s, &adam.access, &location).await;
            waiting(&st);
            assert_ne!(st["state"], "failed", "{st}");
            (st["state"] == "ready").then_some(())
        },
    )
    .await;
    assert_eq!(search(&s, &adam.access, "Tapirglade").await.len(), 1);
}
