//! What a conversation remembers follows the reader's access. The stand-in model echoes
//! its whole prompt, so every answer repeats whatever text was in its context — the
//! worst case of a model carrying a passage into a later answer that does not cite it.
//! Every stored answer records the documents whose text was in its prompt (its
//! provenance, inherited along the conversation); once the reader may no longer read
//! one of them, the answer is withheld everywhere: from the next prompt, from
//! `GET /v1/threads/{id}` and from the MCP thread resource.

use crate::agents::run_python;
use crate::mock::{Mock, Reply};
use crate::support::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

const CANARY: &str = "CANARY-PROVENANCE-5521";

/// How the model gets its passages.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Retrieval {
    /// Retrieved up front for every turn (the default).
    Prompt,
    /// The model calls `search_documents` when it wants passages (`rag.tool = true`).
    Tool,
}

pub struct Scene {
    pub s: Server,
    pub mock: Mock,
    pub acme: Acme,
    pub admin: Session,
    pub hr_doc: String,
    mode: Retrieval,
}

/// Twelve public travel notes and one HR document holding the canary.
async fn scene(mode: Retrieval, env: &[(&str, &str)]) -> Scene {
    let mut all = env.to_vec();
    if mode == Retrieval::Tool {
        all.push(("PALISADE_RAG__TOOL", "true"));
    }
    let (s, mock) = start_with_mock(&all).await;
    seeded(s, mock, mode, json!({"roles": ["hr"]})).await
}

/// The scene on `s`, the HR document readable under `hr_acl`.
pub async fn seeded(s: Server, mock: Mock, mode: Retrieval, hr_acl: Value) -> Scene {
    let acme = seed_acme(&s);
    let admin = s.login("adam", &acme.adam).await;
    for i in 0..12 {
        let r = s
            .post_document(&admin.access,
                &json!({"title": format!("Travel note {i}"), "text": format!("Travel policy note {i}: trains are booked in second class, flights longer than {} hours in business class, hotels up to 150 euros a night.", i + 4), "acl": {"public": true}}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let r = s
        .post_document(&admin.access,
            &json!({"title": "Salary bands 2026", "text": format!("Salary bands: senior engineers earn 105,000 to 135,000 a year. Reference {CANARY}."), "acl": hr_acl}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let hr_doc = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    Scene {
        s,
        mock,
        acme,
        admin,
        hr_doc,
        mode,
    }
}

impl Scene {
    /// One turn on the scene's server; in tool mode the model first searches for
    /// `search`, if given. Returns the stored answer.
    async fn turn(&self, token: &str, thread: &str, question: &str, search: Option<&str>) -> Value {
        self.turn_on(&self.s, token, thread, question, search).await
    }

    /// hannah (role `hr`) asks about salaries, then about travel: the second answer
    /// cites only travel notes but repeats the canary. Returns her thread and her two
    /// answers.
    pub async fn hannah_learns_the_canary(&self) -> (String, Value, Value) {
        let hannah = self.s.login("hannah", &self.acme.hannah).await;
        let t = self.s.new_thread(&hannah.access, "pay and travel").await;
        let first = self
            .turn(
                &hannah.access,
                &t,
                "What are the salary bands for senior engineers?",
                Some("salary bands senior engineers"),
            )
            .await;
        assert!(
            first["content"].as_str().unwrap().contains(CANARY),
            "positive control: HR reads the salary bands"
        );
        assert!(cites(&first, &self.hr_doc));
        let second = self
            .turn(
                &hannah.access,
                &t,
                "What is the travel policy for trains?",
                Some("travel policy trains"),
            )
            .await;
        assert!(
            !cites(&second, &self.hr_doc) && !second["citations"].as_array().unwrap().is_empty(),
            "the second answer cites travel notes only: {}",
            second["citations"]
        );
        assert!(
            second["content"].as_str().unwrap().contains(CANARY),
            "the model repeated the canary from the conversation"
        );
        // The owner sees what each answer drew on: the second inherited the HR document.
        assert!(sources(&first).contains(&self.hr_doc));
        assert!(sources(&second).contains(&self.hr_doc));
        (t, first, second)
    }

    async fn remove_hr_role(&self) {
        let id = self.s.user_id(&self.admin.access, "hannah").await;
        let r = self
            .s
            .http
            .patch(self.s.url(&format!("/admin/users/{id}")))
            .bearer_auth(&self.admin.access)
            .json(&json!({"roles": ["employee"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }

    /// After hannah lost access: nothing of the canary in her thread, in the MCP
    /// resource, or in the prompt of her next turn (with or without a search).
    pub async fn nothing_of_the_canary_reaches_hannah(&self, server: &Server, t: &str) {
        let hannah = server.login("hannah", &self.acme.hannah).await;
        let shown = server.thread_json(&hannah.access, t).await;
        assert!(!shown.to_string().contains(CANARY), "GET shows it: {shown}");
        let msgs = shown["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 4, "nothing deleted");
        for (i, m) in msgs.iter().enumerate() {
            if m["role"] == "assistant" {
                assert_eq!(m["redacted"], "source_no_longer_accessible", "message {i}");
                assert_eq!(m["content"], "");
                assert!(m.get("sources").is_none() && m["citations"] == json!([]));
            } else {
                assert!(m.get("redacted").is_none(), "her own questions stay");
            }
        }

        let out = run_python(
            "mcp_client.py",
            &[
                ("MCP_URL", &server.url("/mcp")),
                ("TOKEN", &hannah.access),
                ("QUERY", "travel"),
                ("OWN_THREAD", t),
            ],
        )
        .await;
        let line = out
            .lines()
            .find_map(|l| l.strip_prefix("MCP-RESULT "))
            .unwrap_or_else(|| panic!("no result: {out}"));
        let mcp: Value = serde_json::from_str(line).unwrap();
        let own = mcp["own_read"].as_str().expect("her thread read over MCP");
        assert!(own.contains("What is the travel policy"), "{own}");
        assert!(!own.contains(CANARY), "the MCP resource shows it: {own}");
        assert!(own.contains("source_no_longer_accessible"));

        // Her next turn: with a search (tool mode) and, in tool mode, also without one
        // (a turn with no citations at all).
        let searches: &[Option<&str>] = match self.mode {
            Retrieval::Prompt => &[Some("trains")],
            Retrieval::Tool => &[Some("trains"), None],
        };
        for search in searches {
            let before = self.mock.count();
            let answer = self
                .turn_on(server, &hannah.access, t, "And for hotels?", *search)
                .await;
            let prompts = Value::Array(self.mock.requests()[before..].to_vec()).to_string();
            assert!(
                !prompts.contains(CANARY),
                "the canary reached the model again ({:?}, search {search:?})",
                self.mode
            );
            assert!(prompts.contains("What is the travel policy for trains?"));
            assert!(!answer["content"].as_str().unwrap().contains(CANARY));
            assert!(!sources(&answer).contains(&self.hr_doc));
        }
    }

    /// [`Self::turn`] on `server` (another node of the same store).
    async fn turn_on(
        &self,
        server: &Server,
        token: &str,
        thread: &str,
        question: &str,
        search: Option<&str>,
    ) -> Value {
        if let (Retrieval::Tool, Some(q)) = (self.mode, search) {
            self.mock.push_reply(Reply::call(
                "call_search",
                "search_documents",
                &json!({ "query": q }).to_string(),
            ));
        }
        let r = server
            .post_auth(
                &format!("/v1/threads/{thread}/messages"),
                token,
                &json!({ "content": question }),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK, "{question}");
        r.json::<Value>().await.unwrap()["message"].clone()
    }
}

fn cites(message: &Value, doc: &str) -> bool {
    message["citations"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["document_id"] == doc)
}

fn sources(message: &Value) -> Vec<String> {
    message["sources"]
        .as_array()
        .map(|a| a.iter().map(|d| d.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn an_answer_that_repeats_restricted_text_without_citing_it_is_withheld_once_access_ends() {
    for mode in [Retrieval::Prompt, Retrieval::Tool] {
        let sc = scene(mode, &[]).await;
        let (t, _, _) = sc.hannah_learns_the_canary().await;
        sc.remove_hr_role().await;
        sc.nothing_of_the_canary_reaches_hannah(&sc.s, &t).await;
        // Lineage names the HR document for the turn whose prompt carried it only
        // through the history (the travel question).
        let r =
            sc.s.get(
                &format!("/admin/lineage?document={}", sc.hr_doc),
                &sc.admin.access,
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let lineage = r.json::<Value>().await.unwrap().to_string();
        assert!(lineage.contains("\"history\""), "{mode:?}: {lineage}");
    }
}

#[tokio::test]
async fn deleting_the_document_withholds_what_was_drawn_from_it() {
    let sc = scene(Retrieval::Prompt, &[]).await;
    let (t, _, _) = sc.hannah_learns_the_canary().await;
    let r =
        sc.s.delete(&format!("/v1/documents/{}", sc.hr_doc), &sc.admin.access)
            .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    sc.nothing_of_the_canary_reaches_hannah(&sc.s, &t).await;
}

#[tokio::test]
async fn a_reader_who_keeps_access_sees_everything_and_its_sources() {
    let sc = scene(Retrieval::Prompt, &[]).await;
    let (t, first, second) = sc.hannah_learns_the_canary().await;
    let hannah = sc.s.login("hannah", &sc.acme.hannah).await;
    let shown = sc.s.thread_json(&hannah.access, &t).await;
    let msgs = shown["messages"].as_array().unwrap();
    assert!(msgs.iter().all(|m| m.get("redacted").is_none()));
    assert_eq!(msgs[1]["sources"], first["sources"]);
    assert_eq!(msgs[3]["sources"], second["sources"]);
    // A question draws on nothing.
    assert!(msgs[0].get("sources").is_none());
}

/// A thread of 500 messages whose restricted passage entered at its second turn
/// (messages 3 and 4): every later answer inherited it through the history, so all of
/// them are withheld once access ends, and the next prompt holds none of them.
#[tokio::test]
async fn provenance_is_inherited_along_a_thread_of_500_messages() {
    let sc = scene(
        Retrieval::Prompt,
        &[("PALISADE_THREADS__CHAT_REQUESTS_PER_MINUTE", "100000")],
    )
    .await;
    let hannah = sc.s.login("hannah", &sc.acme.hannah).await;
    let t = sc.s.new_thread(&hannah.access, "long").await;
    sc.turn(
        &hannah.access,
        &t,
        "What is the travel policy for trains?",
        None,
    )
    .await;
    let hr = sc
        .turn(
            &hannah.access,
            &t,
            "What are the salary bands for senior engineers?",
            None,
        )
        .await;
    assert!(cites(&hr, &sc.hr_doc) && hr["content"].as_str().unwrap().contains(CANARY));
    // From here on, short answers that never cite the HR document.
    sc.mock.always(Reply::Text("Noted.".into()));
    for i in 3..=250 {
        sc.turn(
            &hannah.access,
            &t,
            &format!("Travel question {i} about hotels"),
            None,
        )
        .await;
    }
    let all = |tok: String| {
        let s = &sc.s;
        let t = t.clone();
        async move {
            let mut out = Vec::new();
            let mut before: Option<String> = None;
            loop {
                let path = match &before {
                    None => format!("{t}?limit=200"),
                    Some(b) => format!("{t}?limit=200&before={b}"),
                };
                let page = s.thread_json(&tok, &path).await;
                let mut msgs = page["messages"].as_array().unwrap().clone();
                msgs.extend(out);
                out = msgs;
                match page["next"].as_str() {
                    Some(n) => before = Some(n.to_owned()),
                    None => break,
                }
            }
            out
        }
    };
    let msgs = all(hannah.access.clone()).await;
    assert_eq!(msgs.len(), 500);
    assert!(
        msgs[3..]
            .iter()
            .filter(|m| m["role"] == "assistant")
            .all(|m| sources(m).contains(&sc.hr_doc)),
        "every answer after the HR one inherited it"
    );
    assert!(!sources(&msgs[1]).contains(&sc.hr_doc), "the first did not");

    sc.remove_hr_role().await;
    let hannah = sc.s.login("hannah", &sc.acme.hannah).await;
    let msgs = all(hannah.access.clone()).await;
    assert_eq!(msgs.len(), 500, "nothing deleted");
    for (i, m) in msgs.iter().enumerate() {
        let withheld = m.get("redacted").is_some();
        assert_eq!(
            withheld,
            m["role"] == "assistant" && i >= 3,
            "message {}: {m}",
            i + 1
        );
    }
    let before = sc.mock.count();
    sc.turn(&hannah.access, &t, "One more about trains", None)
        .await;
    assert_eq!(sc.mock.count(), before + 1);
    let prompt = sc.mock.last_messages();
    let text = Value::Array(prompt.clone()).to_string();
    assert!(!text.contains(CANARY));
    assert!(
        !text.contains("Noted."),
        "a withheld answer reached the model"
    );
    assert!(text.contains("Travel question 250 about hotels"));
}
