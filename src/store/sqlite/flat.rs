//! The vector scan of the embedded store: each tenant's vectors held in memory as
//! 8-bit codes, scanned in one pass with the visibility filter applied per row, the best
//! candidates re-scored exactly from the stored vectors.
//!
//! The copy is a cache of the vector table, never the truth. It follows the tenant's
//! chunk epoch (`epoch.rs`, moved in the same transaction as every chunk written or
//! deleted, by any process): the writing process applies its own committed change
//! (`apply`); a copy whose epoch is behind is rebuilt by the next search; and
//! the hits it yields are loaded — and re-checked by their labels downstream — from the
//! chunk rows. A stale copy could only miss a chunk; it cannot show one the caller may
//! not read, since the visible ACL ids come from the database on every search.
//!
//! Why: vec0 costs ~0.11 ms of set-up per partition, and one filtered pass over a
//! tenant of 100,000 vectors 20–50 ms; this scan reads a quarter of the bytes (384 per
//! vector instead of 1,536) and skips invisible rows without touching their codes.

use rusqlite::{Connection, OptionalExtension, params};

use super::epoch::{AtEpoch, ChunkChange, Copies, Visible};
use std::sync::Arc;

/// Candidates re-scored exactly, per result wanted (at least `MIN_CANDIDATES`): 8-bit
/// codes of unit vectors keep each score within about 0.01 of the exact one, far below
/// the gap between a query's tenth and fortieth neighbour.
const CANDIDATES_PER_RESULT: usize = 4;
const MIN_CANDIDATES: usize = 40;

/// One tenant's vectors of one dimension, as of `epoch`.
struct TenantVectors {
    epoch: i64,
    dim: usize,
    chunk_ids: Vec<i64>,
    acl_ids: Vec<i64>,
    /// `dim` codes per vector: round(x / scale), scale = max |x| / 127.
    codes: Vec<i8>,
    scales: Vec<f32>,
}

/// The cached copies, by (tenant, dimension).
#[derive(Default)]
pub(super) struct FlatVectors {
    tenants: Copies<(String, usize), TenantVectors>,
}

impl AtEpoch for TenantVectors {
    fn epoch(&self) -> i64 {
        self.epoch
    }
}

/// The range of partition keys of one tenant: `tenant/` … `tenant0` (`'0'` follows `'/'`).
fn tenant_parts(tenant: &str) -> (String, String) {
    (format!("{tenant}/"), format!("{tenant}0"))
}

/// A stored vector (little-endian f32s) as floats.
pub(super) fn blob_f32(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|x| f32::from_le_bytes([x[0], x[1], x[2], x[3]]))
        .collect()
}

fn quantise(v: &[f32], codes: &mut Vec<i8>) -> f32 {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
    codes.extend(
        v.iter()
            .map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8),
    );
    scale
}

/// The best `want` approximate scores of visible rows (higher is nearer), as a
/// min-heap of (score, row).
type Best = std::collections::BinaryHeap<std::cmp::Reverse<(OrdF32, usize)>>;

/// One pass over the copy: with AVX2 where the CPU has it (the dot product then takes
/// 16 codes per instruction instead of 4; measured in BENCHMARKS.md), else portable.
fn scan(tv: &TenantVectors, visible: &Visible, q: &[i8], want: usize) -> Best {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { scan_avx2(tv, visible, q, want) };
    }
    scan_rows(tv, visible, q, want)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn scan_avx2(tv: &TenantVectors, visible: &Visible, q: &[i8], want: usize) -> Best {
    scan_rows(tv, visible, q, want)
}

/// Inlined into each caller, so that it is compiled for that caller's instruction set.
#[inline(always)]
fn scan_rows(tv: &TenantVectors, visible: &Visible, q: &[i8], want: usize) -> Best {
    let mut best = Best::with_capacity(want + 1);
    let rows = tv.acl_ids.iter().zip(&tv.scales);
    for (row, ((acl, scale), codes)) in rows.zip(tv.codes.chunks_exact(tv.dim)).enumerate() {
        if !visible.has(*acl) {
            continue;
        }
        let score = dot(q, codes) as f32 * scale;
        if best.len() < want {
            best.push(std::cmp::Reverse((OrdF32(score), row)));
        } else if best.peek().is_some_and(|w| score > w.0.0.0) {
            best.pop();
            best.push(std::cmp::Reverse((OrdF32(score), row)));
        }
    }
    best
}

/// Integer dot product of two code vectors (the compiler vectorises it).
#[inline(always)]
fn dot(a: &[i8], b: &[i8]) -> i32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| i32::from(*x) * i32::from(*y))
        .sum()
}

fn l2(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = f64::from(*x) - f64::from(*y);
            d * d
        })
        .sum::<f64>()
        .sqrt()
}

impl FlatVectors {
    /// The exact `k` nearest visible vectors by L2 distance (the vectors are unit
    /// length, so this ranks like cosine), as (chunk id, distance), nearest first.
    pub(super) fn knn(
        &self,
        c: &Connection,
        tenant: &str,
        table: &str,
        acls: &[i64],
        query: &[f32],
        k: usize,
    ) -> rusqlite::Result<Vec<(i64, f64)>> {
        if query.is_empty() {
            return Ok(Vec::new());
        }
        let tv = self.current(c, tenant, table, query.len())?;
        let visible = Visible::of(acls);
        let mut q = Vec::with_capacity(tv.dim);
        quantise(query, &mut q);
        let want = (k * CANDIDATES_PER_RESULT).max(MIN_CANDIDATES);
        let best = scan(&tv, &visible, &q, want);
        // Exact distances of the candidates, from the stored vectors.
        let mut stmt = c.prepare_cached(&format!(
            "SELECT embedding FROM {table} WHERE chunk_id = ?1"
        ))?;
        let mut ranked = Vec::with_capacity(best.len());
        for std::cmp::Reverse((_, row)) in best {
            let Some(&id) = tv.chunk_ids.get(row) else {
                continue;
            };
            let blob: Option<Vec<u8>> = stmt.query_row([id], |r| r.get(0)).optional()?;
            if let Some(blob) = blob {
                ranked.push((id, l2(query, &blob_f32(&blob))));
            }
        }
        ranked.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        ranked.truncate(k);
        Ok(ranked)
    }

    /// Brings the tenant's copies up to a committed write of this process, where they
    /// stand at the epoch just before it (a copy made over 1 s for 100,000 vectors; a
    /// change is applied in milliseconds).
    pub(super) fn apply(&self, change: &ChunkChange) {
        let Some(mut map) = self.tenants.write() else {
            return;
        };
        // Rows of the added chunks already in the copy (it may have been built from a
        // snapshot that held them) are replaced, not doubled.
        let gone: std::collections::HashSet<i64> = change
            .removed
            .iter()
            .copied()
            .chain(change.added.iter().map(|a| a.id))
            .collect();
        for ((tenant, dim), tv) in map.iter_mut() {
            if *tenant != change.tenant || tv.epoch != change.epoch - 1 {
                continue;
            }
            let mut next = TenantVectors {
                epoch: change.epoch,
                dim: *dim,
                chunk_ids: Vec::with_capacity(tv.chunk_ids.len() + change.added.len()),
                acl_ids: Vec::with_capacity(tv.acl_ids.len() + change.added.len()),
                codes: Vec::with_capacity(tv.codes.len() + change.added.len() * dim),
                scales: Vec::with_capacity(tv.scales.len() + change.added.len()),
            };
            let rows = tv.chunk_ids.iter().zip(&tv.acl_ids).zip(&tv.scales);
            for (((id, acl), scale), codes) in rows.zip(tv.codes.chunks_exact(*dim)) {
                if !gone.contains(id) {
                    next.chunk_ids.push(*id);
                    next.acl_ids.push(*acl);
                    next.scales.push(*scale);
                    next.codes.extend_from_slice(codes);
                }
            }
            for a in &change.added {
                let Some(v) = a.vector.as_deref().filter(|v| v.len() == *dim) else {
                    continue;
                };
                next.chunk_ids.push(a.id);
                next.acl_ids.push(a.acl_id);
                let scale = quantise(v, &mut next.codes);
                next.scales.push(scale);
            }
            *tv = Arc::new(next);
        }
    }

    /// The tenant's copy at the current epoch, rebuilt if the table moved since.
    fn current(
        &self,
        c: &Connection,
        tenant: &str,
        table: &str,
        dim: usize,
    ) -> rusqlite::Result<Arc<TenantVectors>> {
        self.tenants
            .current(c, tenant, (tenant.to_owned(), dim), |now| {
                load(c, tenant, table, dim, now)
            })
    }
}

fn load(
    c: &Connection,
    tenant: &str,
    table: &str,
    dim: usize,
    epoch: i64,
) -> rusqlite::Result<TenantVectors> {
    let (lo, hi) = tenant_parts(tenant);
    let mut tv = TenantVectors {
        epoch,
        dim,
        chunk_ids: Vec::new(),
        acl_ids: Vec::new(),
        codes: Vec::new(),
        scales: Vec::new(),
    };
    let mut stmt = c.prepare(&format!(
        "SELECT chunk_id, acl_id, embedding FROM {table} WHERE acl_part > ?1 AND acl_part < ?2"
    ))?;
    let mut rows = stmt.query(params![lo, hi])?;
    while let Some(r) = rows.next()? {
        let blob: Vec<u8> = r.get(2)?;
        let v = blob_f32(&blob);
        if v.len() != dim {
            continue;
        }
        tv.chunk_ids.push(r.get(0)?);
        tv.acl_ids.push(r.get(1)?);
        let scale = quantise(&v, &mut tv.codes);
        tv.scales.push(scale);
    }
    Ok(tv)
}

/// An f32 ordered totally (NaN sorts first, and never arises from finite codes).
#[derive(Clone, Copy, PartialEq)]
struct OrdF32(f32);

impl Eq for OrdF32 {}

impl PartialOrd for OrdF32 {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrdF32 {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_keep_a_dot_product_within_a_hundredth() {
        let a: Vec<f32> = (0..384)
            .map(|i| ((i * 7919) % 200) as f32 - 100.0)
            .collect();
        let b: Vec<f32> = (0..384)
            .map(|i| ((i * 104729) % 200) as f32 - 100.0)
            .collect();
        let unit = |v: &[f32]| {
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter().map(|x| x / n).collect::<Vec<_>>()
        };
        let (a, b) = (unit(&a), unit(&b));
        let exact: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        let (mut qa, mut qb) = (Vec::new(), Vec::new());
        let (sa, sb) = (quantise(&a, &mut qa), quantise(&b, &mut qb));
        let approx = dot(&qa, &qb) as f32 * sa * sb;
        assert!((exact - approx).abs() < 0.01, "{exact} vs {approx}");
    }
}
