//! Maintenance reports: `stats()` and `check()`.
//!
//! `check` walks every structure through `check_pages` (page CRCs as pages are read, tree
//! order and links, catalog counters against the indexes, every page used exactly once)
//! and reports problems instead of failing on the first one it cannot walk past.

use super::Store;
use crate::error::{Error, Result};

/// Cache counters of [`StoreStats`], in pages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Pins served from the cache.
    pub hits: u64,
    /// Pins that read the page from disk.
    pub misses: u64,
    /// Frames evicted to make room.
    pub evictions: u64,
    /// Frames pinned now.
    pub pinned: u64,
    /// Dirty frames now.
    pub dirty: u64,
    /// Frames in the cache now.
    pub resident: u64,
}

/// What `Store::stats` reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Messages in all queues.
    pub messages: u64,
    /// Queues.
    pub queues: u64,
    /// Sum of payload lengths.
    pub bytes: u64,
    /// Page size of page.db.
    pub page_size: u64,
    /// Pages in page.db.
    pub pages_total: u64,
    /// Free pages in page.db.
    pub pages_free: u64,
    /// Length of page.db in bytes (pages x page size).
    pub file_bytes: u64,
    /// Bytes of log since the last checkpoint.
    pub log_bytes: u64,
    /// Prepared XA transactions in doubt.
    pub prepared: u64,
    /// Commits since open.
    pub commits: u64,
    /// fdatasync calls of the log since open.
    pub log_syncs: u64,
    /// `group_sizes[i]`: log syncs that made 2^i..2^(i+1) commits durable.
    pub group_sizes: [u64; 16],
    /// Checkpoints since open.
    pub checkpoints: u64,
    /// Duration of the last checkpoint, in microseconds.
    pub last_checkpoint_us: u64,
    /// Longest time a checkpoint stalled commits, in microseconds.
    pub longest_checkpoint_stall_us: u64,
    /// The page cache.
    pub cache: CacheStats,
}

/// What `Store::check` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Pages accounted for.
    pub pages_checked: u64,
    /// Messages whose index entries were checked.
    pub messages_checked: u64,
    /// Every problem found, each naming where.
    pub problems: Vec<String>,
}

impl CheckReport {
    /// True when no problem was found.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

impl Store {
    /// Counters of the store, its log and its cache.
    pub fn stats(&self) -> StoreStats {
        let Ok(e) = self.engine() else {
            return StoreStats::default();
        };
        let k = e.kernel.stats();
        let prepared = e.in_doubt.lock().len() as u64;
        let (queues, messages, bytes) = {
            let cat = e.catalog.lock();
            cat.queues.values().fold((0, 0, 0), |(q, m, b), x| {
                (q + 1, m + x.meta.messages, b + x.meta.bytes)
            })
        };
        StoreStats {
            messages,
            queues,
            bytes,
            page_size: k.page_size as u64,
            pages_total: k.pages_total,
            pages_free: k.pages_free,
            file_bytes: k.pages_total * k.page_size as u64,
            log_bytes: k.log.bytes_since_recycle,
            prepared,
            commits: k.commits,
            log_syncs: k.log.syncs,
            group_sizes: k.log.group_sizes,
            checkpoints: k.checkpoints,
            last_checkpoint_us: k.last_checkpoint.as_micros() as u64,
            longest_checkpoint_stall_us: k.longest_checkpoint_stall.as_micros() as u64,
            cache: CacheStats {
                hits: k.cache.hits,
                misses: k.cache.misses,
                evictions: k.cache.evictions,
                pinned: k.cache.pinned as u64,
                dirty: k.cache.dirty as u64,
                resident: k.cache.resident as u64,
            },
        }
    }

    /// Walks every structure and reports what is wrong (damaged pages, broken trees,
    /// counters that disagree with the indexes, leaked or doubly used pages). I/O errors
    /// and a closed store are errors; damage is reported, not returned as an error.
    pub fn check(&self) -> Result<CheckReport> {
        let messages = self.stats().messages;
        match self.check_pages() {
            Ok(pages) => Ok(CheckReport {
                pages_checked: pages,
                messages_checked: messages,
                problems: Vec::new(),
            }),
            Err(e @ Error::Corruption { .. }) => Ok(CheckReport {
                pages_checked: 0,
                messages_checked: 0,
                problems: vec![e.to_string()],
            }),
            Err(e) => Err(e),
        }
    }
}
