//! Online shrink: move live pages off the end of page.db into free space below, then cut
//! the file, while commits continue.
//!
//! Owns: [`ShrinkReport`] and the choice of the limit below which pages must end up.
//!
//! Invariants (crash argument in docs/design.md, "Shrink"):
//! - Every move is an ordinary logged write transaction (a payload rewritten under its key,
//!   or a tree page copied with every pointer to it rewritten), short enough that commits
//!   stall only briefly; keys, content and order never change.
//! - The file is cut only by a checkpoint, after the superblock recording the shorter page
//!   count is durable; only pages free in both the committed and the current state are cut.
//! - Catalog pages stay where they are (they are few and allocated first); the limit is
//!   never below the last of them.

use std::time::Instant;

use super::index::{IndexValue, VALUE_LEN};
use super::{index_range, Engine, Store};
use crate::btree;
use crate::catalog;
use crate::error::Result;
use crate::log::Durability;
use crate::page::PageId;
use crate::records;

/// What [`Store::shrink`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShrinkReport {
    /// page.db's size before.
    pub bytes_before: u64,
    /// page.db's size after.
    pub bytes_after: u64,
    /// Pages moved from the end of the file into free space.
    pub pages_moved: u64,
    /// Payloads rewritten into lower pages.
    pub payloads_moved: u64,
}

/// Payloads moved per write transaction (bounds the stall of other committers).
const PAYLOAD_BATCH: usize = 32;
/// Index pages moved per write transaction.
const INDEX_BATCH: u64 = 32;
/// Index leaves visited per write transaction.
const INDEX_LEAVES: u64 = 256;
/// Index entries read per read view while looking for payloads to move (a view holds
/// commits back, so it stays short).
const SCAN_BATCH: usize = 256;

impl Store {
    /// Reclaims free space: moves live pages from the end of page.db into free pages below
    /// and truncates the file, with commits continuing (each move is a short transaction).
    /// Keys are preserved. Crash-safe: each step is an ordinary commit or checkpoint.
    ///
    /// ```
    /// use stowage::{Store, StoreConfig, NewMessage};
    /// let store = Store::open_in_memory(StoreConfig { initial_db_size_pages: 16, ..StoreConfig::default() })?;
    /// store.create_queue("q")?;
    /// let mut tx = store.begin();
    /// for _ in 0..2000 { tx.insert("q", NewMessage::new(vec![1u8; 500]))?; }
    /// tx.commit()?;
    /// let mut tx = store.begin();
    /// for e in store.entries("q", 0, 1900)? { tx.remove("q", e.key)?; }
    /// tx.commit()?;
    /// let r = store.shrink()?;
    /// assert!(r.bytes_after < r.bytes_before);
    /// assert_eq!(store.entries("q", 0, usize::MAX)?.len(), 100);
    /// # Ok::<(), stowage::Error>(())
    /// ```
    pub fn shrink(&self) -> Result<ShrinkReport> {
        let e = self.engine()?;
        // One maintenance job at a time (backup holds the checkpoint lock for its copy).
        let _one = e.backup_lock.lock();
        let page_size = e.kernel.page_size() as u64;
        let mut report = ShrinkReport {
            bytes_before: e.kernel.page_count() * page_size,
            ..ShrinkReport::default()
        };
        let limit = shrink_limit(&e);
        let names: Vec<String> = e.catalog.lock().queues.keys().cloned().collect();
        for name in names {
            report.payloads_moved += move_payloads(&e, &name, limit)?;
            report.pages_moved += move_index(&e, &name, limit)?;
        }
        // The first checkpoint writes the free-space map low and cuts what it can; the old
        // map's pages are free only after it, so the second one cuts those as well.
        e.kernel.checkpoint_truncating()?;
        e.kernel.checkpoint_truncating()?;
        report.bytes_after = e.kernel.page_count() * page_size;
        Ok(report)
    }
}

/// The page id below which every live page should end up: the live pages, room for two
/// free-space maps (the committed one and the next), and never below a catalog page.
fn shrink_limit(e: &Engine) -> PageId {
    let k = &e.kernel;
    let total = k.page_count();
    let free = k.free_page_count();
    let map = k.free_map_page_ids().len() as u64;
    let catalog_end = e.catalog.lock().pages.iter().max().map_or(1, |&p| p + 1);
    (total.saturating_sub(free) + 2 * map + 2)
        .max(catalog_end)
        .min(total)
}

/// Moves the pages of `queue`'s index at or above `limit` down, a slice of the tree per
/// transaction; returns how many moved.
fn move_index(e: &Engine, queue: &str, limit: PageId) -> Result<u64> {
    let mut total = 0;
    let mut from = 0;
    loop {
        let started = Instant::now();
        let mut tx = e.kernel.begin()?;
        let Some((mut meta, slot)) = current(e, queue) else {
            return Ok(total);
        };
        let r = btree::relocate(
            &mut tx,
            meta.index_root,
            VALUE_LEN,
            limit,
            from,
            INDEX_LEAVES,
            INDEX_BATCH,
        )?;
        total += r.moved;
        if r.moved > 0 {
            meta.index_root = r.root;
            catalog::write(&mut tx, slot, &meta)?;
            tx.commit_then(Durability::Async, || install(e, queue, meta))?;
        }
        match r.resume {
            Some(k) => from = k,
            None => return Ok(total),
        }
        pause_after(started);
    }
}

/// Rewrites every payload of `queue` that uses a page at or above `limit` into lower pages,
/// under its key; returns how many moved.
fn move_payloads(e: &Engine, queue: &str, limit: PageId) -> Result<u64> {
    let mut moved = 0;
    let mut from = 0;
    loop {
        // Scan a stretch of the index under a short read view, then move what it found:
        // memory stays one stretch, whatever the queue's length.
        let high: Vec<u64> = {
            let mut view = e.kernel.read_view()?;
            let Some((meta, _)) = current(e, queue) else {
                return Ok(moved);
            };
            let batch = index_range(&mut view, queue, meta.index_root, from, SCAN_BATCH)?;
            let Some(&(last, _)) = batch.last() else {
                return Ok(moved);
            };
            from = last + 1;
            let mut high = Vec::new();
            for (key, iv) in batch {
                if uses_high_page(&mut view, iv, limit)? {
                    high.push(key);
                }
            }
            high
        };
        for chunk in high.chunks(PAYLOAD_BATCH) {
            moved += move_chunk(e, queue, limit, chunk)?;
        }
    }
}

/// Moves the payloads of `keys` that still use a page at or above `limit`, in one
/// transaction; returns how many moved.
fn move_chunk(e: &Engine, queue: &str, limit: PageId, keys: &[u64]) -> Result<u64> {
    let started = Instant::now();
    let mut tx = e.kernel.begin()?;
    let Some((mut meta, slot)) = current(e, queue) else {
        return Ok(0);
    };
    if meta.open_page >= limit {
        // New payloads go to a fresh low page; the old one is freed once emptied.
        meta.open_page = 0;
    }
    let mut moved = 0;
    for &key in keys {
        // Removed since the scan: nothing to move.
        let Some(v) = btree::get(&mut tx, meta.index_root, VALUE_LEN, key)? else {
            continue;
        };
        let mut iv = IndexValue::decode(queue, key, &v)?;
        if !uses_high_page(&mut tx, iv, limit)? {
            continue;
        }
        let payload = records::load(&mut tx, iv.loc, iv.size)?;
        records::delete(&mut tx, &mut meta.open_page, iv.loc)?;
        iv.loc = records::store(&mut tx, &mut meta.open_page, &payload)?;
        btree::update(&mut tx, meta.index_root, VALUE_LEN, key, &iv.encode())?;
        moved += 1;
    }
    catalog::write(&mut tx, slot, &meta)?;
    tx.commit_then(Durability::Async, || install(e, queue, meta))?;
    pause_after(started);
    Ok(moved)
}

/// Idles as long as the step since `started` took: shrink uses at most about half of the
/// writer lock's time and of the disk, so committers keep most of both.
fn pause_after(started: Instant) {
    std::thread::sleep(started.elapsed());
}

fn uses_high_page(
    src: &mut impl crate::kernel::PageSource,
    iv: IndexValue,
    limit: PageId,
) -> Result<bool> {
    if iv.size == 0 {
        return Ok(false);
    }
    Ok(records::pages_of(src, iv.loc)?.iter().any(|&p| p >= limit))
}

/// The queue's catalog entry as committed (the caller holds the writer lock or a view).
fn current(e: &Engine, queue: &str) -> Option<(catalog::QueueMeta, catalog::Slot)> {
    e.catalog
        .lock()
        .queues
        .get(queue)
        .map(|q| (q.meta.clone(), q.slot))
}

fn install(e: &Engine, queue: &str, meta: catalog::QueueMeta) {
    if let Some(q) = e.catalog.lock().queues.get_mut(queue) {
        q.meta = meta;
    }
}
