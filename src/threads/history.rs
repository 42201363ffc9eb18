//! The recent history of the threads this process serves, so that a turn reads from the
//! store only the messages this process has not seen yet.
//!
//! Why it is exact: a stored message is never changed. A thread only grows, by
//! sequence numbers the store hands out one at a time, until it is deleted whole; so
//! the messages up to a sequence number this process once read are the same for as
//! long as the thread exists. A turn asks the store for the messages *after* the newest
//! one held here (another process may have appended them), checks that they join up
//! with what is held, and fills its budget from them first and then from here. Where
//! neither reaches back far enough, it reads older pages from the store.
//!
//! Why it cannot widen access: it is consulted only after the store has appended the
//! caller's message to the caller's own thread (the store checks ownership and room on
//! every turn, as before), its entries are keyed by thread id (ids are random and
//! never reused) and each entry also names the owner it was filled for, checked on
//! every use. A deleted thread's entry is dropped here; one deleted by another process
//! is never consulted again (the store refuses the turn first) and ages out.
//!
//! Bounded: ≤ [`MAX_BYTES`] of message text in all, an entry idle for
//! [`IDLE`] is dropped, and an entry holds no more than its thread's last budget plus
//! [`KEEP_SLACK`] (a shorter question next time, with a larger budget for history,
//! still finds all of it here).

use std::sync::Arc;
use std::time::Duration;

use crate::access::ThreadOwner;
use crate::model::MessageRecord;
use crate::model::approx_tokens;
use crate::store::HistoryBudget;

/// Message text (bytes, plus a per-message allowance) held for all threads together.
const MAX_BYTES: u64 = 16 * 1024 * 1024;
/// An entry unused this long is dropped.
const IDLE: Duration = Duration::from_secs(600);
/// Tokens kept beyond a turn's own budget.
pub(super) const KEEP_SLACK: usize = 512;
/// What one held message costs beyond its text (the record and its strings).
const PER_MESSAGE: usize = 160;

/// A stored message, with its token estimate counted once.
pub(super) struct Held {
    rec: MessageRecord,
    tokens: usize,
}

impl Held {
    pub(super) fn new(rec: MessageRecord) -> Arc<Self> {
        let tokens = approx_tokens(&rec.content);
        Arc::new(Self { rec, tokens })
    }
}

/// A contiguous run of one thread's messages, oldest first, ending with the newest this
/// process knows of. Immutable: an update inserts a new entry.
pub(super) struct Entry {
    tenant: String,
    owner: String,
    messages: Vec<Arc<Held>>,
}

impl Entry {
    fn is_for(&self, o: &ThreadOwner) -> bool {
        self.tenant == o.tenant() && self.owner == o.user()
    }

    /// The newest sequence number held (0 when empty).
    pub(super) fn last_seq(&self) -> i64 {
        self.messages.last().map_or(0, |m| m.rec.seq)
    }

    fn weight(&self) -> u32 {
        let bytes: usize = self
            .messages
            .iter()
            .map(|m| m.rec.content.len() + PER_MESSAGE)
            .sum();
        u32::try_from(bytes).unwrap_or(u32::MAX)
    }
}

pub(super) struct HistoryCache {
    entries: moka::sync::Cache<String, Arc<Entry>>,
}

impl HistoryCache {
    pub(super) fn new() -> Self {
        Self {
            entries: moka::sync::Cache::builder()
                .max_capacity(MAX_BYTES)
                .weigher(|_, e: &Arc<Entry>| e.weight())
                .time_to_idle(IDLE)
                .build(),
        }
    }

    /// What is held of `owner`'s thread `id`, if anything.
    pub(super) fn get(&self, owner: &ThreadOwner, id: &str) -> Option<Arc<Entry>> {
        self.entries.get(id).filter(|e| e.is_for(owner))
    }

    /// Holds `kept` (oldest first, contiguous) as what this process knows of the thread,
    /// unless something newer is held already.
    pub(super) fn put(&self, owner: &ThreadOwner, id: &str, kept: Vec<Arc<Held>>) {
        let entry = Entry {
            tenant: owner.tenant().to_owned(),
            owner: owner.user().to_owned(),
            messages: kept,
        };
        if self
            .get(owner, id)
            .is_some_and(|held| held.last_seq() >= entry.last_seq())
        {
            return;
        }
        self.entries.insert(id.to_owned(), Arc::new(entry));
    }

    /// Adds the turn's stored answer, if it follows what is held directly.
    pub(super) fn push(&self, owner: &ThreadOwner, id: &str, answer: &MessageRecord) {
        let Some(held) = self.get(owner, id) else {
            return;
        };
        if held.last_seq() + 1 != answer.seq {
            return;
        }
        let mut messages = Vec::with_capacity(held.messages.len() + 1);
        messages.extend(held.messages.iter().cloned());
        messages.push(Held::new(answer.clone()));
        self.put(owner, id, messages);
    }

    /// A turn's history, oldest first: the store's `fresh` messages (those after
    /// `after`, what `held` ends with), then the held ones if `fresh` joins up with
    /// them, then older messages from `older(before)` (a page of the messages before
    /// `before`, oldest first; `None`: the thread is gone) until the turn's budget is
    /// filled or the thread's first message is reached. Keeps what the next turn
    /// needs. `None` if `older` found the thread gone.
    ///
    /// In steady use the held messages always suffice (a turn's budget never reaches
    /// past what the turn before kept: its own question and answer take up what the
    /// budget gained); `older` is the safety net that makes the answer exact whatever
    /// was held.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn assemble<E, F, Fut>(
        &self,
        owner: &ThreadOwner,
        id: &str,
        held: Option<Arc<Entry>>,
        after: i64,
        fresh: Vec<MessageRecord>,
        question: &MessageRecord,
        budget: HistoryBudget,
        mut older: F,
    ) -> Result<Option<Vec<MessageRecord>>, E>
    where
        F: FnMut(i64) -> Fut,
        Fut: std::future::Future<Output = Result<Option<Vec<MessageRecord>>, E>>,
    {
        let mut fill = Fill::new(budget);
        if fill.offer_all(fresh)
            && let Some(held) = held.filter(|_| fill.reaches(after + 1, question.seq))
        {
            fill.offer_held(&held, after);
        }
        while !fill.turn_done(question.seq) {
            let Some(page) = older(fill.next_older(question.seq)).await? else {
                return Ok(None);
            };
            if page.is_empty() {
                break;
            }
            fill.offer_all(page);
        }
        let (history, kept) = fill.finish(question);
        self.put(owner, id, kept);
        Ok(Some(history))
    }

    pub(super) fn forget(&self, id: &str) {
        self.entries.invalidate(id);
    }
}

/// One budget: messages offered newest first are taken until the first that does not
/// fit (the rule the stores apply, [`HistoryFill`](crate::store::threads::HistoryFill)).
struct Budget {
    left: usize,
    open: bool,
}

impl Budget {
    fn take(&mut self, tokens: usize) -> bool {
        if self.open && tokens <= self.left {
            self.left -= tokens;
        } else {
            self.open = false;
        }
        self.open
    }
}

/// Two budgets filled from the same messages offered newest first: the turn's own, and
/// the larger one this process keeps for the thread's next turn. The turn's messages
/// are always the newest of the kept ones (both stop at their first message that does
/// not fit, and the kept budget has more left at every step).
pub(super) struct Fill {
    turn: Budget,
    keep: Budget,
    /// Newest first.
    kept: Vec<Arc<Held>>,
    in_turn: usize,
    /// The oldest sequence number offered so far.
    oldest: Option<i64>,
}

impl Fill {
    pub(super) fn new(budget: HistoryBudget) -> Self {
        Self {
            turn: Budget {
                left: budget.0,
                open: true,
            },
            keep: Budget {
                left: budget.0 + KEEP_SLACK,
                open: true,
            },
            kept: Vec::new(),
            in_turn: 0,
            oldest: None,
        }
    }

    /// The budget the store fills for this turn: the kept one, which covers the turn's.
    pub(super) fn store_budget(budget: HistoryBudget) -> HistoryBudget {
        HistoryBudget(budget.0 + KEEP_SLACK)
    }

    /// Offers the next older message; `false` once neither budget takes any more.
    pub(super) fn offer(&mut self, m: Arc<Held>) -> bool {
        self.oldest = Some(m.rec.seq);
        let in_turn = self.turn.take(m.tokens);
        if self.keep.take(m.tokens) {
            self.in_turn += usize::from(in_turn);
            self.kept.push(m);
        }
        self.keep.open
    }

    /// Offers messages given oldest first (a store's answer), newest first; `false`
    /// once neither budget takes any more.
    pub(super) fn offer_all(&mut self, oldest_first: Vec<MessageRecord>) -> bool {
        for m in oldest_first.into_iter().rev() {
            if !self.offer(Held::new(m)) {
                return false;
            }
        }
        self.keep.open
    }

    /// Offers the held messages up to and including `upto`, newest first; none if they
    /// do not reach `upto` (the entry ends earlier or starts later: the older pages
    /// from the store fill in).
    pub(super) fn offer_held(&mut self, held: &Entry, upto: i64) {
        let Some(first) = held.messages.first().map(|m| m.rec.seq) else {
            return;
        };
        if upto < first || upto > held.last_seq() {
            return;
        }
        // Contiguous: message `seq` sits at index `seq - first`.
        let end = usize::try_from(upto - first).unwrap_or(0) + 1;
        for m in held.messages[..end].iter().rev() {
            if !self.offer(m.clone()) {
                break;
            }
        }
    }

    /// Whether the next older message to offer is `seq`: everything newer was offered.
    pub(super) fn reaches(&self, seq: i64, newest_next: i64) -> bool {
        self.oldest.unwrap_or(newest_next) == seq
    }

    /// The turn's budget is filled, or there is nothing older (the oldest offered is
    /// the thread's first message, or nothing was offered and the question is the
    /// thread's first).
    pub(super) fn turn_done(&self, question_seq: i64) -> bool {
        !self.turn.open || self.oldest.unwrap_or(question_seq) <= 1
    }

    /// Where to read older messages from the store: those before this sequence number.
    pub(super) fn next_older(&self, question_seq: i64) -> i64 {
        self.oldest.unwrap_or(question_seq)
    }

    /// The turn's history (oldest first) and what to keep (oldest first, ending with
    /// `question`).
    pub(super) fn finish(
        mut self,
        question: &MessageRecord,
    ) -> (Vec<MessageRecord>, Vec<Arc<Held>>) {
        let history = self.kept[..self.in_turn]
            .iter()
            .rev()
            .map(|m| m.rec.clone())
            .collect();
        self.kept.reverse();
        self.kept.push(Held::new(question.clone()));
        (history, self.kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Role;
    use crate::store::threads::HistoryFill;

    fn message(seq: i64, chars: usize) -> MessageRecord {
        MessageRecord {
            id: format!("m{seq}"),
            seq,
            role: if seq % 2 == 1 {
                Role::User
            } else {
                Role::Assistant
            },
            content: "x".repeat(chars),
            citations: Vec::new(),
            tool: None,
            provenance: Default::default(),
            created_at: seq,
            stopped: false,
            retries: None,
        }
    }

    fn seqs(ms: &[MessageRecord]) -> Vec<i64> {
        ms.iter().map(|m| m.seq).collect()
    }

    /// Messages 1..=n of pseudo-random sizes (a fixed LCG: the same every run).
    fn thread(n: i64, seed: &mut u64) -> Vec<MessageRecord> {
        (1..=n)
            .map(|seq| {
                *seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                message(seq, (*seed >> 33) as usize % 1200)
            })
            .collect()
    }

    /// What a store reads with no cache at all: the reference.
    fn reference(all: &[MessageRecord], before: i64, budget: HistoryBudget) -> Vec<i64> {
        let mut fill = HistoryFill::new(budget);
        for m in all.iter().rev().filter(|m| m.seq < before) {
            if !fill.offer(m.clone()) {
                break;
            }
        }
        seqs(&fill.into_history())
    }

    /// The store's part of a turn: messages in (after, before) within `budget`.
    fn store_read(
        all: &[MessageRecord],
        after: i64,
        before: i64,
        budget: HistoryBudget,
    ) -> Vec<MessageRecord> {
        let mut fill = HistoryFill::new(budget);
        for m in all.iter().rev().filter(|m| m.seq < before && m.seq > after) {
            if !fill.offer(m.clone()) {
                break;
            }
        }
        fill.into_history()
    }

    /// A turn as the threads service makes it, on a model store holding `all`.
    fn turn(
        cache: &HistoryCache,
        o: &ThreadOwner,
        all: &[MessageRecord],
        q: &MessageRecord,
        budget: HistoryBudget,
    ) -> Vec<i64> {
        let held = cache.get(o, "t");
        let after = held.as_ref().map_or(0, |e| e.last_seq());
        let fresh = store_read(all, after, q.seq, Fill::store_budget(budget));
        let older = |before: i64| {
            let older: Vec<&MessageRecord> = all.iter().filter(|m| m.seq < before).collect();
            std::future::ready(Ok::<_, ()>(Some(
                older[older.len().saturating_sub(64)..]
                    .iter()
                    .map(|m| (*m).clone())
                    .collect(),
            )))
        };
        let history = futures_util::FutureExt::now_or_never(
            cache.assemble(o, "t", held, after, fresh, q, budget, older),
        )
        .expect("no waiting")
        .expect("no error")
        .expect("the thread exists");
        seqs(&history)
    }

    /// Whatever is held, whatever another process appended meanwhile and however the
    /// budget moves, a turn's history is exactly what a store read without the cache.
    #[test]
    fn a_turn_sees_what_the_store_alone_would_give() {
        let o = crate::access::Principal::for_tests("acme", "alice", &[], &[]).thread_owner(false);
        let mut seed = 7;
        for round in 0..40 {
            let cache = HistoryCache::new();
            let all = thread(400, &mut seed);
            let mut seq = 1;
            while seq < all.len() as i64 {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                let budget = HistoryBudget(200 + (seed >> 40) as usize % 3000);
                let q = &all[(seq - 1) as usize];
                let got = turn(&cache, &o, &all, q, budget);
                assert_eq!(
                    got,
                    reference(&all, q.seq, budget),
                    "round {round}, turn at {seq}"
                );
                // This process stores the answer, or another process appends a few.
                if (seed >> 20) % 3 == 0 {
                    seq += 2 + (seed >> 50) as i64 % 5;
                } else {
                    cache.push(&o, "t", &all[seq as usize]);
                    seq += 2;
                }
            }
        }
    }

    #[test]
    fn an_entry_is_only_for_the_owner_it_was_filled_for() {
        let alice =
            crate::access::Principal::for_tests("acme", "alice", &[], &[]).thread_owner(false);
        let mallory =
            crate::access::Principal::for_tests("acme", "mallory", &[], &[]).thread_owner(false);
        let other_tenant =
            crate::access::Principal::for_tests("globex", "alice", &[], &[]).thread_owner(false);
        let cache = HistoryCache::new();
        cache.put(&alice, "t", vec![Held::new(message(1, 10))]);
        assert!(cache.get(&alice, "t").is_some());
        assert!(cache.get(&mallory, "t").is_none());
        assert!(cache.get(&other_tenant, "t").is_none());
        // Nothing older replaces something newer.
        cache.put(
            &alice,
            "t",
            vec![Held::new(message(1, 10)), Held::new(message(2, 10))],
        );
        cache.put(&alice, "t", vec![Held::new(message(1, 10))]);
        assert_eq!(cache.get(&alice, "t").map(|e| e.last_seq()), Some(2));
        // An answer that does not follow what is held is not added.
        cache.push(&alice, "t", &message(4, 10));
        assert_eq!(cache.get(&alice, "t").map(|e| e.last_seq()), Some(2));
        cache.forget("t");
        assert!(cache.get(&alice, "t").is_none());
    }
}
