//! Threads: ownership, limits, history budgets, pages, tool exchanges, concurrency.

use super::*;
use std::sync::Arc;

use crate::model::{FunctionCall, Role, ToolCall, ToolData, ToolKind};

#[tokio::test]
async fn nobody_but_the_owner_reads_or_writes_a_thread() {
    let o = open().await;
    let s = &o.stores;
    let alice = principal("acme", "alice").thread_owner(false);
    let id = thread(s, &alice).await;
    let mallory = principal("acme", "mallory").thread_owner(false);
    let eve = principal("globex", "alice").thread_owner(false);
    for other in [&mallory, &eve] {
        assert!(
            s.threads
                .thread_page(other, &id, None, 10)
                .await
                .unwrap()
                .is_none()
        );
        assert!(matches!(
            s.threads
                .begin_turn(
                    other,
                    &id,
                    msg("hi", Role::User, T0),
                    10,
                    HistoryBudget(100),
                    0
                )
                .await
                .unwrap(),
            TurnStart::NotFound
        ));
        assert!(matches!(
            s.threads
                .append_message(other, &id, msg("x", Role::Assistant, T0), 10)
                .await
                .unwrap(),
            Append::NotFound
        ));
        assert!(!s.threads.delete_thread(other, &id).await.unwrap());
        assert!(s.threads.list_threads(other).await.unwrap().is_empty());
    }
    // Strict binding: the same user from another session is a stranger.
    let mut p2 = principal("acme", "alice");
    p2 = Principal::verified(
        p2.tenant().into(),
        p2.subject().into(),
        p2.username().into(),
        Default::default(),
        "another-session".into(),
    );
    let strict_other = p2.thread_owner(true);
    assert!(
        s.threads
            .thread_page(&strict_other, &id, None, 10)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s.threads
            .thread_page(&p2.thread_owner(false), &id, None, 10)
            .await
            .unwrap()
            .is_some()
    );
    // Nothing was written by any of the attempts.
    let page = s
        .threads
        .thread_page(&alice, &id, None, 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(page.thread.message_count, 0);
    assert!(page.messages.is_empty());
}

#[tokio::test]
async fn limits_hold_and_history_is_bounded_by_the_budget() {
    let o = open().await;
    let s = &o.stores;
    let alice = principal("acme", "alice").thread_owner(false);
    let id = thread(s, &alice).await;
    // Thread count limit.
    for _ in 0..9 {
        thread(s, &alice).await;
    }
    let eleventh = s
        .threads
        .create_thread(
            &alice,
            NewThread {
                id: new_id(),
                title: "x".into(),
                now: T0,
            },
            10,
        )
        .await
        .unwrap();
    assert!(matches!(eleventh, CreateThread::LimitReached));
    // 30 messages of ~100 tokens each.
    let long = "word ".repeat(80);
    for i in 0..30 {
        let r = s
            .threads
            .append_message(
                &alice,
                &id,
                msg(&format!("{i} {long}"), Role::User, T0 + i),
                31,
            )
            .await
            .unwrap();
        assert!(matches!(r, Append::Appended(_)));
    }
    // A budget of ~3.5 messages returns the newest 3, oldest first.
    let budget = HistoryBudget(3 * crate::model::approx_tokens(&format!("29 {long}")) + 50);
    let TurnStart::Started { history, message } = s
        .threads
        .begin_turn(&alice, &id, msg("q", Role::User, T0 + 100), 31, budget, 0)
        .await
        .unwrap()
    else {
        panic!("turn refused");
    };
    assert_eq!(message.seq, 31);
    let firsts: Vec<&str> = history
        .iter()
        .map(|m| m.content.split(' ').next().unwrap())
        .collect();
    assert_eq!(firsts, ["27", "28", "29"]);
    // The thread is now full.
    assert!(matches!(
        s.threads
            .begin_turn(&alice, &id, msg("q", Role::User, T0), 31, budget, 0)
            .await
            .unwrap(),
        TurnStart::Full
    ));
}

#[tokio::test]
async fn pages_join_up_to_the_whole_thread() {
    let o = open().await;
    let s = &o.stores;
    let alice = principal("acme", "alice").thread_owner(false);
    let id = thread(s, &alice).await;
    for i in 0..23 {
        s.threads
            .append_message(&alice, &id, msg(&format!("m{i}"), Role::User, T0 + i), 100)
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = s
            .threads
            .thread_page(&alice, &id, before, 5)
            .await
            .unwrap()
            .unwrap();
        assert!(page.messages.len() <= 5);
        let mut contents: Vec<String> = page.messages.into_iter().map(|m| m.content).collect();
        contents.extend(seen);
        seen = contents;
        match page.next_before {
            Some(n) => before = Some(n),
            None => break,
        }
    }
    let expected: Vec<String> = (0..23).map(|i| format!("m{i}")).collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn tool_calls_and_results_are_kept_as_their_own_kinds() {
    let o = open().await;
    let s = &o.stores;
    let alice = principal("acme", "alice").thread_owner(false);
    let id = thread(s, &alice).await;
    let calls = ToolData::Calls(vec![ToolCall {
        id: "call_1".into(),
        kind: ToolKind::Function,
        function: FunctionCall {
            name: "get_weather".into(),
            arguments: r#"{"city":"Paris"}"#.into(),
        },
    }]);
    let result = ToolData::Result {
        call_id: "call_1".into(),
    };
    let mut ask = msg("", Role::Assistant, T0 + 1);
    ask.tool = Some(calls.clone());
    let mut answer = msg("18 degrees", Role::Tool, T0 + 2);
    answer.tool = Some(result.clone());
    for m in [msg("weather?", Role::User, T0), ask, answer] {
        s.threads.append_message(&alice, &id, m, 100).await.unwrap();
    }
    let turn = s
        .threads
        .begin_turn(
            &alice,
            &id,
            msg("thanks", Role::User, T0 + 3),
            100,
            HistoryBudget(10_000),
            0,
        )
        .await
        .unwrap();
    let TurnStart::Started { history, .. } = turn else {
        panic!("turn refused: {turn:?}");
    };
    let kinds: Vec<(Role, Option<ToolData>)> =
        history.into_iter().map(|m| (m.role, m.tool)).collect();
    assert_eq!(
        kinds,
        vec![
            (Role::User, None),
            (Role::Assistant, Some(calls)),
            (Role::Tool, Some(result)),
        ]
    );
}

#[tokio::test]
async fn a_dropped_caller_never_receives_someone_elses_reply() {
    // Cancel many reads and writes mid-flight; every completed call must still see
    // exactly its own data.
    let o = open().await;
    let s = Arc::new(o.stores.clone());
    let mut owners = Vec::new();
    for i in 0..8 {
        let owner = principal("acme", &format!("u{i}")).thread_owner(false);
        let id = thread(&s, &owner).await;
        s.threads
            .append_message(
                &owner,
                &id,
                msg(&format!("secret-{i}"), Role::User, T0),
                100,
            )
            .await
            .unwrap();
        owners.push((owner, id, format!("secret-{i}")));
    }
    for round in 0..50u64 {
        let mut tasks = Vec::new();
        for (owner, id, secret) in owners.iter().cloned() {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let page = s.threads.thread_page(&owner, &id, None, 10);
                // Some calls are abandoned after a few microseconds.
                if round % 3 == 0 {
                    let _ = tokio::time::timeout(std::time::Duration::from_micros(50), page).await;
                    return;
                }
                let page = page.await.unwrap().unwrap();
                assert!(page.messages.iter().all(|m| m.content == secret));
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_fill_a_thread_exactly_with_unique_positions() {
    let o = open().await;
    let s = o.stores.clone();
    let alice = principal("acme", "alice").thread_owner(false);
    let id = thread(&s, &alice).await;
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let (s, alice, id) = (s.clone(), alice.clone(), id.clone());
            tokio::spawn(async move {
                s.threads
                    .append_message(&alice, &id, msg(&format!("m{i}"), Role::User, T0 + i), 12)
                    .await
                    .expect("append")
            })
        })
        .collect();
    let mut seqs = Vec::new();
    let mut full = 0;
    for t in tasks {
        match t.await.unwrap() {
            Append::Appended(m) => seqs.push(m.seq),
            Append::Full => full += 1,
            Append::NotFound => panic!("the owner's thread was not found"),
        }
    }
    seqs.sort();
    assert_eq!(seqs, (1..=12).collect::<Vec<i64>>());
    assert_eq!(full, 18);
    let page = s
        .threads
        .thread_page(&alice, &id, None, 100)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(page.messages.len(), 12);
    assert_eq!(page.thread.message_count, 12);
}

/// What an answer drew on is kept with it, on append and on the turn that starts with
/// it, and read back by every path (page, history).
#[tokio::test]
async fn provenance_is_stored_with_the_message_and_read_back_everywhere() {
    use crate::model::Provenance;
    let o = open().await;
    let s = &o.stores;
    let alice = principal("acme", "alice").thread_owner(false);
    let id = thread(s, &alice).await;
    let drew: Provenance = ["doc-hr", "doc-travel"].into_iter().collect();
    let mut answer = msg("an answer", Role::Assistant, T0);
    answer.provenance = drew.clone();
    assert!(matches!(
        s.threads.append_message(&alice, &id, answer, 10).await.unwrap(),
        Append::Appended(m) if m.provenance == drew
    ));
    let page = s
        .threads
        .thread_page(&alice, &id, None, 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(page.messages[0].provenance, drew);
    let TurnStart::Started { history, message } = s
        .threads
        .begin_turn(
            &alice,
            &id,
            msg("next", Role::User, T0 + 1),
            10,
            HistoryBudget(1000),
            0,
        )
        .await
        .unwrap()
    else {
        panic!("turn not started");
    };
    assert!(message.provenance.is_empty(), "a question draws on nothing");
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].provenance, drew);
}
