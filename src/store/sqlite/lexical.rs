//! Full text of the embedded store: each tenant's chunks as an in-memory inverted
//! index, ranked by BM25 with the statistics of the chunks the caller may read.
//!
//! BM25 weighs a word by how many chunks contain it and a chunk by its length against
//! the average. Here both are counted over the caller's visible chunks only, at query
//! time: a ranking depends on nothing the caller cannot read, so it cannot reveal
//! whether a word occurs in another ACL's documents (the side channel of one shared
//! index), and scores of different ACLs are comparable (they were not with one index
//! per ACL, whose statistics were each its own).
//!
//! Like the vector copy (`flat.rs`), the index is a cache of the `chunks` rows: it
//! follows the tenant's epoch (`epoch.rs`), the writing process applies its own
//! committed change, a copy behind is rebuilt by the next search, and hits are loaded —
//! and re-checked by their labels downstream — from the chunk rows.

use rusqlite::{Connection, params};
use std::collections::HashMap;
use std::sync::Arc;
use unicode_normalization::UnicodeNormalization;

use super::epoch::{AtEpoch, ChunkChange, Copies, Visible};

/// BM25's term-frequency saturation and length normalisation (SQLite FTS5's and
/// Lucene's defaults).
const K1: f64 = 1.2;
const B: f64 = 0.75;

/// A hash map keyed by words or ids from stored text: foldhash, seeded per process
/// (several times faster than SipHash on 10 million words; still no fixed collisions to
/// aim a document at).
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Writes the indexed form of one word into `out`: lower-cased, diacritics removed.
fn fold_into(word: &str, out: &mut String) {
    out.clear();
    if word.is_ascii() {
        out.push_str(word);
        out.make_ascii_lowercase();
    } else {
        out.extend(
            word.nfd()
                .filter(|c| !unicode_normalization::char::is_combining_mark(*c))
                .flat_map(char::to_lowercase),
        );
    }
}

/// The runs of letters and digits of a text.
fn runs(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
}

/// The words of a text as they are indexed and searched: runs of letters and digits,
/// lower-cased, diacritics removed ("Café" and "cafe" are one word).
pub(super) fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    runs(text).map(|w| {
        let mut out = String::new();
        fold_into(w, &mut out);
        out
    })
}

/// The chunks (rows) that contain one word, ascending, and how often.
#[derive(Clone, Default)]
struct Postings {
    rows: Vec<u32>,
    counts: Vec<u16>,
}

/// One tenant's chunks as of `epoch`.
#[derive(Clone, Default)]
struct TenantText {
    epoch: i64,
    /// By row: the chunk's id, its ACL id (-1 once removed) and its length in words.
    chunk_ids: Vec<i64>,
    acl_ids: Vec<i64>,
    lengths: Vec<u32>,
    row_of: Map<i64, u32>,
    /// Each word's id, and by id its postings.
    terms: Map<Box<str>, u32>,
    postings: Vec<Postings>,
    /// Rows removed since the copy was built (their postings stay until a rebuild).
    removed: usize,
}

impl TenantText {
    fn term(&mut self, word: &str) -> Option<u32> {
        if let Some(t) = self.terms.get(word) {
            return Some(*t);
        }
        let t = u32::try_from(self.postings.len()).ok()?;
        self.terms.insert(word.into(), t);
        self.postings.push(Postings::default());
        Some(t)
    }

    fn add(&mut self, id: i64, acl_id: i64, text: &str) {
        // A chunk already in the copy (built from a snapshot that held it) is replaced,
        // not doubled.
        self.remove(id);
        let Ok(row) = u32::try_from(self.chunk_ids.len()) else {
            return;
        };
        let mut found: Vec<u32> = Vec::new();
        let mut word = String::new();
        for w in runs(text) {
            fold_into(w, &mut word);
            found.extend(self.term(&word));
        }
        let length = u32::try_from(found.len()).unwrap_or(u32::MAX);
        found.sort_unstable();
        for run in found.chunk_by(|a, b| a == b) {
            let p = &mut self.postings[run[0] as usize];
            p.rows.push(row);
            p.counts.push(u16::try_from(run.len()).unwrap_or(u16::MAX));
        }
        self.chunk_ids.push(id);
        self.acl_ids.push(acl_id);
        self.lengths.push(length);
        self.row_of.insert(id, row);
    }

    /// Roughly the heap this index holds.
    fn bytes(&self) -> usize {
        let rows = self.chunk_ids.len() * (8 + 8 + 4) + self.row_of.capacity() * 16;
        let terms: usize =
            self.terms.keys().map(|t| t.len() + 24).sum::<usize>() + self.postings.len() * 48;
        let postings: usize = self
            .postings
            .iter()
            .map(|p| p.rows.capacity() * 4 + p.counts.capacity() * 2)
            .sum();
        rows + terms + postings
    }

    fn remove(&mut self, id: i64) {
        if let Some(row) = self.row_of.remove(&id) {
            self.acl_ids[row as usize] = -1;
            self.lengths[row as usize] = 0;
            self.removed += 1;
        }
    }
}

/// The cached indexes, by tenant.
#[derive(Default)]
pub(super) struct TextIndexes {
    tenants: Copies<String, TenantText>,
}

impl AtEpoch for TenantText {
    fn epoch(&self) -> i64 {
        self.epoch
    }
}

impl TextIndexes {
    /// The `k` best visible chunks for any of `terms` by BM25, as (chunk id, score),
    /// best first. Scores are negated (lower is better, as FTS5's `bm25()`).
    pub(super) fn search(
        &self,
        c: &Connection,
        tenant: &str,
        acls: &[i64],
        terms: &[String],
        k: usize,
    ) -> rusqlite::Result<Vec<(i64, f64)>> {
        let mut words: Vec<String> = terms.iter().flat_map(|t| words(t)).collect();
        words.sort();
        words.dedup();
        if words.is_empty() || k == 0 {
            return Ok(Vec::new());
        }
        let tt = self.current(c, tenant)?;
        let visible = Visible::of(acls);
        let (mut n, mut total) = (0u64, 0u64);
        for (acl, len) in tt.acl_ids.iter().zip(&tt.lengths) {
            if visible.has(*acl) {
                n += 1;
                total += u64::from(*len);
            }
        }
        if n == 0 {
            return Ok(Vec::new());
        }
        let avg = (total as f64 / n as f64).max(1.0);
        let mut scores = vec![0f64; tt.chunk_ids.len()];
        let mut touched: Vec<u32> = Vec::new();
        for w in &words {
            let Some(p) = tt
                .terms
                .get(w.as_str())
                .and_then(|t| tt.postings.get(*t as usize))
            else {
                continue;
            };
            let seen = |row: &u32| {
                tt.acl_ids
                    .get(*row as usize)
                    .is_some_and(|acl| visible.has(*acl))
            };
            let df = p.rows.iter().filter(|r| seen(r)).count() as f64;
            if df == 0.0 {
                continue;
            }
            // FTS5's idf: never zero or negative, so a word in most chunks still counts.
            let idf = ((n as f64 - df + 0.5) / (df + 0.5)).ln().max(1e-6);
            for (row, count) in p.rows.iter().zip(&p.counts) {
                if !seen(row) {
                    continue;
                }
                let r = *row as usize;
                let tf = f64::from(*count);
                let norm = K1 * (1.0 - B + B * f64::from(tt.lengths[r]) / avg);
                if scores[r] == 0.0 {
                    touched.push(*row);
                }
                scores[r] += idf * tf * (K1 + 1.0) / (tf + norm);
            }
        }
        let mut ranked: Vec<(i64, f64)> = touched
            .into_iter()
            .map(|row| (tt.chunk_ids[row as usize], -scores[row as usize]))
            .collect();
        let by_score = |a: &(i64, f64), b: &(i64, f64)| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0));
        if ranked.len() > k {
            ranked.select_nth_unstable_by(k - 1, by_score);
            ranked.truncate(k);
        }
        ranked.sort_by(by_score);
        Ok(ranked)
    }

    /// Brings the tenant's index up to a committed write of this process, where it
    /// stands at the epoch just before it.
    pub(super) fn apply(&self, change: &ChunkChange) {
        let Some(mut map) = self.tenants.write() else {
            return;
        };
        let Some(tt) = map.get_mut(&change.tenant) else {
            return;
        };
        if tt.epoch != change.epoch - 1 {
            return;
        }
        // In place unless a search holds the index right now (then on a copy).
        let tt = Arc::make_mut(tt);
        tt.epoch = change.epoch;
        for id in &change.removed {
            tt.remove(*id);
        }
        for a in &change.added {
            tt.add(a.id, a.acl_id, &a.text);
        }
        // Removed rows stay in the postings; past half, the next search rebuilds.
        if tt.removed * 2 > tt.chunk_ids.len() {
            map.remove(&change.tenant);
        }
    }

    /// The tenant's index at the current epoch, rebuilt if its chunks moved since.
    fn current(&self, c: &Connection, tenant: &str) -> rusqlite::Result<Arc<TenantText>> {
        self.tenants.current(c, tenant, tenant.to_owned(), |now| {
            let started = std::time::Instant::now();
            let tt = load(c, tenant, now)?;
            tracing::info!(
                tenant,
                chunks = tt.chunk_ids.len(),
                words = tt.terms.len(),
                megabytes = tt.bytes() / 1_000_000,
                millis = started.elapsed().as_millis() as u64,
                "built the full-text index"
            );
            Ok(tt)
        })
    }
}

fn load(c: &Connection, tenant: &str, epoch: i64) -> rusqlite::Result<TenantText> {
    let mut tt = TenantText {
        epoch,
        ..TenantText::default()
    };
    let mut stmt =
        c.prepare("SELECT id, acl_id, text FROM chunks WHERE tenant = ?1 ORDER BY id")?;
    let mut rows = stmt.query(params![tenant])?;
    while let Some(r) = rows.next()? {
        let text = r.get_ref(2)?.as_str()?;
        tt.add(r.get(0)?, r.get(1)?, text);
    }
    // Growth left each list up to twice its size; a built index only grows by writes.
    for p in &mut tt.postings {
        p.rows.shrink_to_fit();
        p.counts.shrink_to_fit();
    }
    Ok(tt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_fold_case_and_diacritics() {
        let w: Vec<String> = words("Café NAÏVE, état-civil 2024").collect();
        assert_eq!(w, ["cafe", "naive", "etat", "civil", "2024"]);
    }

    fn chunks_table() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE TABLE chunks (id INTEGER PRIMARY KEY, tenant TEXT, acl_id INTEGER, text TEXT);
             CREATE TABLE vector_epochs (tenant TEXT PRIMARY KEY, n INTEGER NOT NULL);
             CREATE VIRTUAL TABLE oracle USING fts5(text, tokenize='unicode61 remove_diacritics 2');",
        )
        .unwrap();
        c
    }

    fn add(c: &Connection, tenant: &str, acl: i64, text: &str) {
        c.execute(
            "INSERT INTO chunks (tenant, acl_id, text) VALUES (?1, ?2, ?3)",
            params![tenant, acl, text],
        )
        .unwrap();
        super::super::epoch::bump_epoch(c, tenant).unwrap();
    }

    /// BM25 over the chunks a caller may read is SQLite FTS5's `bm25()` over exactly
    /// those chunks (FTS5 as the oracle), and does not move when chunks the caller
    /// cannot read — another ACL's, another tenant's — are added with the same words:
    /// the ranking reveals nothing about them.
    #[test]
    fn bm25_over_the_visible_chunks_is_fts5s_and_ignores_the_rest() {
        let texts = [
            "Salary reviews happen every April; the salary bands are published internally.",
            "Travel is booked through the travel desk. Keep your receipts.",
            "Receipts older than ninety days cannot be reimbursed.",
            "The cafeteria serves lunch from noon.",
            "Salary, travel and receipts: the finance handbook covers all three.",
            "Parking permits are issued by facilities.",
            "Travel to conferences needs a manager's approval and a budget line for the trip.",
            "Café opening hours change in August.",
        ];
        let query: Vec<String> = ["salary", "travel", "receipts", "cafe"]
            .map(String::from)
            .to_vec();
        let c = chunks_table();
        for t in texts {
            add(&c, "acme", 1, t);
            c.execute(
                "INSERT INTO oracle (rowid, text) VALUES (last_insert_rowid(), ?1)",
                [t],
            )
            .unwrap();
        }
        let index = TextIndexes::default();
        let ours = index.search(&c, "acme", &[1], &query, 10).unwrap();
        let expr = query
            .iter()
            .map(|w| format!("\"{w}\""))
            .collect::<Vec<_>>()
            .join(" OR ");
        let oracle: Vec<(i64, f64)> = c
            .prepare("SELECT rowid, bm25(oracle) FROM oracle WHERE oracle MATCH ?1 ORDER BY bm25(oracle), rowid")
            .unwrap()
            .query_map([expr], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(oracle.len(), 6, "{oracle:?}");
        assert_eq!(
            ours.iter().map(|h| h.0).collect::<Vec<_>>(),
            oracle.iter().map(|h| h.0).collect::<Vec<_>>()
        );
        for (a, b) in ours.iter().zip(&oracle) {
            assert!((a.1 - b.1).abs() < 1e-9, "{ours:?} vs {oracle:?}");
        }

        // Many chunks full of the same words, which the caller cannot read.
        for _ in 0..40 {
            add(&c, "acme", 2, "salary salary travel receipts cafe");
            add(&c, "globex", 1, "salary salary travel receipts cafe");
        }
        assert_eq!(index.search(&c, "acme", &[1], &query, 10).unwrap(), ours);
        let theirs = index.search(&c, "acme", &[2], &query, 100).unwrap();
        assert_eq!(theirs.len(), 40);
        assert!(theirs.iter().all(|h| h.0 > texts.len() as i64));
    }
}
