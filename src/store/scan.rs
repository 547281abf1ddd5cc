//! `scan()`: the message-size distribution and the page size that stores it in the least
//! space.
//!
//! Reads index entries only (sizes are in them), never payload pages. An empty store gets a
//! valid answer (the current page size), not a division by zero.

use super::Store;
use crate::config::MIN_PAGE_SIZE;
use crate::error::Result;
use crate::records::{max_small_payload, overflow_capacity, DATA_DIR, SLOT_LEN};

/// What `Store::scan` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanReport {
    /// Messages scanned.
    pub messages: u64,
    /// Sum of their payload lengths.
    pub bytes: u64,
    /// `(upper bound in bytes, messages with size <= bound and above the previous bound)`,
    /// bounds doubling from 64 bytes; the last bound is `u64::MAX`.
    pub histogram: Vec<(u64, u64)>,
    /// The page size of page.db.
    pub current_page_size: u32,
    /// The power of two up to `page_size_max` that minimises the estimated space.
    pub recommended_page_size: u32,
    /// The estimated bytes for each candidate page size, and why the winner won.
    pub reasoning: String,
}

/// Estimated bytes to hold payloads of these sizes (and their index) in pages of `page`
/// bytes: small payloads packed with their 4-byte slot, large ones in overflow chains.
fn estimate(sizes: &[(u64, u64)], page: u64) -> u64 {
    let small_max = max_small_payload(page as usize) as u64;
    let chunk = overflow_capacity(page as usize) as u64;
    let room = page - DATA_DIR as u64;
    let slot = SLOT_LEN as u64;
    let mut small_bytes = 0u64;
    let mut overflow_pages = 0u64;
    let mut messages = 0u64;
    for &(size, count) in sizes {
        messages += count;
        if size == 0 {
            continue;
        }
        if size <= small_max {
            // Payloads are never split across data pages, so a page of `fit` of them
            // leaves the rest of its room empty: each payload costs its share of the
            // page, gap included (1 KiB payloads: 3 to a 4 KiB page, 75% full; 15 to a
            // 16 KiB page, 94% full). Exact for one size; for a mix, smaller payloads
            // fill some gaps, so this errs towards larger pages.
            let fit = room / (size + slot);
            small_bytes = small_bytes.saturating_add(count.saturating_mul(room / fit));
        } else {
            overflow_pages += size.div_ceil(chunk) * count;
        }
    }
    // Index leaves hold (page - 34) / 35 entries (27-byte values and 8-byte keys).
    let leaf_pages = messages.div_ceil((page - 34) / 35);
    (small_bytes.div_ceil(room) + overflow_pages + leaf_pages) * page
}

impl Store {
    /// Scans every queue's message sizes and recommends a page size (see [`ScanReport`]).
    pub fn scan(&self) -> Result<ScanReport> {
        let mut sizes: std::collections::BTreeMap<u64, u64> = Default::default();
        for q in self.queues()? {
            let mut from = 0;
            loop {
                let batch = self.entries(&q.name, from, 4096)?;
                let Some(last) = batch.last() else { break };
                from = last.key + 1;
                for e in &batch {
                    *sizes.entry(e.size).or_default() += 1;
                }
            }
        }
        let sizes: Vec<(u64, u64)> = sizes.into_iter().collect();
        let messages: u64 = sizes.iter().map(|&(_, c)| c).sum();
        let bytes: u64 = sizes.iter().map(|&(s, c)| s * c).sum();
        let mut histogram = Vec::new();
        let mut bound = 64u64;
        let mut lower = 0u64;
        loop {
            let last = bound >= 1 << 30;
            let hi = if last { u64::MAX } else { bound };
            let n = sizes
                .iter()
                .filter(|&&(s, _)| (s > lower || (lower == 0 && s == 0)) && s <= hi)
                .map(|&(_, c)| c)
                .sum();
            histogram.push((hi, n));
            if last {
                break;
            }
            lower = bound;
            bound *= 2;
        }
        let current = self.stats().page_size as u32;
        let max = self.config().page_size_max;
        let mut best = (u64::MAX, current);
        let mut lines = Vec::new();
        let mut p = MIN_PAGE_SIZE;
        while p <= max {
            let est = estimate(&sizes, u64::from(p));
            lines.push(format!("{p}: {est} bytes"));
            if messages > 0 && est < best.0 {
                best = (est, p);
            }
            p *= 2;
        }
        let reasoning = if messages == 0 {
            format!("no messages: keep the current page size {current}")
        } else {
            format!(
                "estimated space (packed small payloads + overflow chains + index) per page size: {}; {} is smallest",
                lines.join(", "),
                best.1
            )
        };
        Ok(ScanReport {
            messages,
            bytes,
            histogram,
            current_page_size: current,
            recommended_page_size: best.1,
            reasoning,
        })
    }
}
