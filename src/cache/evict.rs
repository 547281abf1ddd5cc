//! Making room: victim choice, write-back under the WAL rule, `try_evict` and `trim`.
//!
//! Invariants: victims come only from the LRU (unpinned, not already being evicted). A
//! clean victim is removed at once, under the map lock, if its latch is free. A dirty
//! victim whose `page_lsn` is durable is taken out of the LRU and flagged `evicting`, then
//! written back with no cache-wide lock held and only its own (upgradable) latch; it stays in
//! the table during the write, so a concurrent pin finds it (and cancels the eviction by
//! clearing the flag) instead of reading stale bytes from disk. The evictor removes it
//! afterwards only if the flag is still set.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::MutexGuard;

use super::frame::Frame;
use super::{Inner, Lsn, PageId, Shared};
use crate::error::Result;

/// The outcome of one look at the LRU.
enum Victim {
    /// A clean frame was removed: there is room now.
    Evicted,
    /// Write this dirty, durable frame back, then remove it (it is flagged `evicting`).
    WriteBack(PageId, Arc<Frame>),
    /// Only dirty frames the log does not cover yet: flushing the log to `min` makes one
    /// of them writable, to `max` all of them.
    NeedLog { min: Lsn, max: Lsn },
    /// Clean candidates exist, but a flush holds their latches for a moment.
    Busy,
    /// Every frame is pinned or being evicted by another thread.
    Nothing,
}

/// How many least recently used frames a victim search looks at (see `choose_victim`).
pub(super) const VICTIM_WINDOW: usize = 64;

/// How many least recently used frames one [`super::PageCache::clean_cold`] call looks at.
pub(super) const CLEAN_WINDOW: usize = 512;

impl Shared {
    /// See [`super::PageCache::clean_cold`].
    pub(super) fn clean_cold(&self, max: usize) -> Result<usize> {
        let batch: Vec<(PageId, Arc<Frame>, Lsn)> = {
            let g = self.inner.lock();
            // The LRU holds exactly the unpinned frames no evictor has taken.
            g.lru
                .iter()
                .rev()
                .take(CLEAN_WINDOW)
                .filter_map(|(&id, ())| {
                    let e = g.map.get(&id)?;
                    let (_, page) = e.frame.dirty_lsns()?;
                    Some((id, Arc::clone(&e.frame), page))
                })
                .take(max)
                .collect()
        };
        self.write_back_batch(batch, None)
    }

    /// Writes back a batch of dirty frames in page order after one log flush covering all
    /// of them; with `upto` (a checkpoint), only frames first dirtied at or below it, and
    /// a frame the log still does not cover is retried once after forcing it. Returns the
    /// number written; stops at the first write error.
    pub(super) fn write_back_batch(
        &self,
        mut batch: Vec<(PageId, Arc<Frame>, Lsn)>,
        upto: Option<Lsn>,
    ) -> Result<usize> {
        if batch.is_empty() {
            return Ok(0);
        }
        // Page order: neighbouring pages reach the file as neighbouring writes.
        batch.sort_unstable_by_key(|(id, _, _)| *id);
        // One log flush for the whole batch rather than one per page.
        let max_lsn = batch.iter().map(|(_, _, lsn)| *lsn).max().unwrap_or(0);
        if self.wal.durable_lsn() < max_lsn {
            self.wal.flush_to(max_lsn)?;
        }
        let mut written = 0;
        for (_, frame, _) in &batch {
            if self.write_back(frame, upto, upto.is_some())? {
                written += 1;
            }
        }
        Ok(written)
    }

    /// Least recently used first, among the `VICTIM_WINDOW` least recently used frames:
    /// the first clean one, else the first dirty one the log covers, else ask the log for
    /// the smallest LSN seen. Bounded so that a cache full of dirty frames (bulk loads of
    /// `Async` commits) does not scan every frame on every eviction: measured, the
    /// unbounded scan took 85% of a 100,000-message load with an 8,192-frame cache.
    fn choose_victim(&self, g: &mut Inner) -> Victim {
        let durable = self.wal.durable_lsn();
        let mut clean = None;
        let mut dirty_ok = None;
        let mut need: Option<(Lsn, Lsn)> = None;
        let mut busy = false;
        for (&id, ()) in g.lru.iter().rev().take(VICTIM_WINDOW) {
            let Some(e) = g.map.get(&id) else {
                debug_assert!(false, "LRU entry {id} not in the table");
                continue;
            };
            match e.frame.dirty_lsns() {
                None => {
                    if e.frame.data.is_locked() {
                        busy = true;
                        continue;
                    }
                    clean = Some(id);
                    break;
                }
                Some((_, page)) if page <= durable => {
                    dirty_ok = dirty_ok.or(Some(id));
                }
                Some((_, page)) => {
                    need = Some(match need {
                        None => (page, page),
                        Some((lo, hi)) => (lo.min(page), hi.max(page)),
                    });
                }
            }
        }
        if let Some(id) = clean {
            if g.try_remove(id, &self.counters) {
                self.counters.evictions.fetch_add(1, Ordering::Relaxed);
                return Victim::Evicted;
            }
            return Victim::Busy;
        }
        if let Some(id) = dirty_ok {
            if let Some(e) = g.map.get_mut(&id) {
                e.evicting = true;
                let frame = Arc::clone(&e.frame);
                g.lru.pop(&id);
                return Victim::WriteBack(id, frame);
            }
        }
        match need {
            Some((min, max)) => Victim::NeedLog { min, max },
            None if busy => Victim::Busy,
            None => Victim::Nothing,
        }
    }

    /// One round of making room for a new frame; the caller re-checks the table (the map
    /// lock may have been released) and calls again while it is full.
    pub(super) fn make_room<'a>(
        &'a self,
        mut g: MutexGuard<'a, Inner>,
        started: &mut Option<Instant>,
    ) -> Result<MutexGuard<'a, Inner>> {
        match self.choose_victim(&mut g) {
            Victim::Evicted => Ok(g),
            Victim::WriteBack(id, frame) => {
                drop(g);
                let evicted = self.evict_dirty(id, &frame)?;
                let mut g = self.inner.lock();
                if evicted {
                    g.recycle(frame);
                }
                Ok(g)
            }
            Victim::NeedLog { min, .. } => {
                // The least the log must do to free one frame; no cache lock held.
                drop(g);
                self.wal.flush_to(min)?;
                let g = self.inner.lock();
                if self.wal.durable_lsn() >= min {
                    Ok(g)
                } else {
                    // The log did not advance: wait like for pinned frames, then retry.
                    self.wait_for_room(g, started)
                }
            }
            Victim::Busy | Victim::Nothing => self.wait_for_room(g, started),
        }
    }

    /// Writes back a frame flagged `evicting` (by this thread), then removes it unless a
    /// pin cancelled the eviction meanwhile. True if it left the table.
    fn evict_dirty(&self, id: PageId, frame: &Arc<Frame>) -> Result<bool> {
        let res = self.write_back(frame, None, false);
        let mut g = self.inner.lock();
        let Some(e) = g.entry_of(id, frame) else {
            return res.map(|_| false);
        };
        if !e.evicting {
            // A pin cancelled the eviction; the frame is the pinner's now.
            return res.map(|_| false);
        }
        e.evicting = false;
        if let Err(err) = res {
            g.requeue_lru_end(id);
            return Err(err);
        }
        if frame.dirty_lsns().is_none() && g.try_remove(id, &self.counters) {
            self.counters.evictions.fetch_add(1, Ordering::Relaxed);
            drop(g);
            self.room.notify_all();
            return Ok(true);
        }
        // A flush holds the latch: leave the frame as the next victim.
        g.requeue_lru_end(id);
        Ok(false)
    }

    /// Writes a dirty frame back under its upgradable latch if the WAL rule allows it (and, for
    /// a checkpoint, if its `rec_lsn <= upto`). With `force`, a `page_lsn` beyond the
    /// durable LSN makes it call `flush_to` once (latch released). True if written.
    pub(super) fn write_back(&self, frame: &Frame, upto: Option<Lsn>, force: bool) -> Result<bool> {
        let mut forced = false;
        loop {
            // Upgradable: shared with the page's readers, exclusive among write-backs
            // (a flush and an eviction of the same page do not both write it) and against
            // writers and removal.
            let latch = frame.data.upgradable_read();
            // Removed frames were superseded (or dropped); discarded ones are freed pages.
            if frame.is_removed() || frame.is_discarded() || !frame.is_ready() {
                return Ok(false);
            }
            let Some((rec, page)) = frame.dirty_lsns() else {
                return Ok(false);
            };
            if upto.is_some_and(|u| rec > u) {
                return Ok(false);
            }
            if page > self.wal.durable_lsn() {
                if !force || forced {
                    return Ok(false);
                }
                drop(latch);
                self.wal.flush_to(page)?;
                forced = true;
                continue;
            }
            self.io.write_page(frame.id, &latch)?;
            // Writers need the exclusive latch, so the bytes written are the frame's bytes.
            frame.mark_clean(&self.counters);
            self.counters.writebacks.fetch_add(1, Ordering::Relaxed);
            return Ok(true);
        }
    }

    pub(super) fn try_evict(&self, id: PageId) -> Result<bool> {
        let mut g = self.inner.lock();
        let Some(e) = g.map.get_mut(&id) else {
            return Ok(false);
        };
        if e.pins > 0 || e.evicting {
            return Ok(false);
        }
        let frame = Arc::clone(&e.frame);
        match frame.dirty_lsns() {
            None => {
                if !g.try_remove(id, &self.counters) {
                    return Ok(false);
                }
                self.counters.evictions.fetch_add(1, Ordering::Relaxed);
                drop(g);
                self.room.notify_all();
                Ok(true)
            }
            Some((_, page)) if page <= self.wal.durable_lsn() => {
                e.evicting = true;
                g.lru.pop(&id);
                drop(g);
                self.evict_dirty(id, &frame)
            }
            Some(_) => Ok(false),
        }
    }

    pub(super) fn trim(&self) -> Result<usize> {
        let mut evicted = 0;
        let mut forced = false;
        loop {
            let mut g = self.inner.lock();
            if g.map.len() <= self.config.min_pages {
                break;
            }
            match self.choose_victim(&mut g) {
                Victim::Evicted => evicted += 1,
                Victim::WriteBack(id, frame) => {
                    drop(g);
                    if self.evict_dirty(id, &frame)? {
                        evicted += 1;
                    }
                }
                Victim::NeedLog { max, .. } if !forced => {
                    drop(g);
                    forced = true;
                    self.wal.flush_to(max)?;
                }
                Victim::NeedLog { .. } | Victim::Busy | Victim::Nothing => break,
            }
        }
        if evicted > 0 {
            self.room.notify_all();
        }
        Ok(evicted)
    }
}
