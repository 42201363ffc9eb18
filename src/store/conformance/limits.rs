//! Rate limits under concurrency.

use super::*;
use std::sync::Arc;

#[tokio::test]
async fn limits_hold_under_concurrency_and_slots_come_back() {
    let o = open().await;
    let l = o.stores.limits.clone();
    let window = Limit {
        name: "conformance_window",
        kind: LimitKind::Window {
            max: 5,
            period: std::time::Duration::from_secs(60),
        },
    };
    let key = format!("k-{}", new_id());
    assert_eq!(take_concurrently(&l, window, &key, 40, 60).await, 5);
    // Another key, and another limit on the same key, are counted apart.
    let other = format!("k-{}", new_id());
    assert_eq!(l.take(&window, &other).await.unwrap(), Admission::Admitted);
    // A slot given back can be taken again, once; a reset clears the count.
    l.give_back(&window, &key).await.unwrap();
    assert_eq!(l.take(&window, &key).await.unwrap(), Admission::Admitted);
    assert!(matches!(
        l.take(&window, &key).await.unwrap(),
        Admission::RetryAfter(_)
    ));
    l.reset(&window, &key).await.unwrap();
    assert_eq!(l.take(&window, &key).await.unwrap(), Admission::Admitted);

    // A rate: the burst, then refusals telling how long to wait.
    let rate = Limit {
        name: "conformance_rate",
        kind: LimitKind::Rate {
            burst: 3,
            per_minute: 6,
        },
    };
    assert_eq!(take_concurrently(&l, rate, &key, 20, 10).await, 3);
}

/// `n` concurrent takes of `limit` for `key`: how many were admitted. Every refusal
/// must say to retry within 1..=`max_wait` seconds.
async fn take_concurrently(
    l: &Arc<dyn LimitStore>,
    limit: Limit,
    key: &str,
    n: usize,
    max_wait: u64,
) -> usize {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (l, key) = (l.clone(), key.to_owned());
            tokio::spawn(async move { l.take(&limit, &key).await.expect("take") })
        })
        .collect();
    let mut admitted = 0;
    for t in tasks {
        match t.await.unwrap() {
            Admission::Admitted => admitted += 1,
            Admission::RetryAfter(s) => assert!((1..=max_wait).contains(&s), "{s}"),
        }
    }
    admitted
}
