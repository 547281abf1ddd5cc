//! Checkpoints: make page.db reflect the log, then recycle the log.
//!
//! Invariants (the crash argument is in docs/design.md):
//! - Phase 1 (fuzzy) writes dirty pages while commits continue; the cache's WAL rule makes
//!   the log durable up to each page's LSN first.
//! - Phase 2 holds the writer lock, so no commit applies: it writes the pages dirtied
//!   meanwhile, syncs page.db and writes the superblock with checkpoint LSN `c` = the last
//!   appended frame (page.db now reflects every frame up to `c`), then recycles the log
//!   with base `c`. Only then is the redo point moved to `c`.
//! - A crash anywhere before the superblock write leaves the old superblock, whose
//!   checkpoint LSN the unrecycled log still covers; a crash after it but before the
//!   recycle leaves frames at or below `c`, which recovery skips.

use std::time::Instant;

use super::Shared;
use crate::error::Result;
use crate::log::Durability;
use crate::pagedb::CommitInfo;

/// Phase 1 stops repeating once fewer dirty pages than this remain for phase 2.
const SMALL_DIRTY_SET: usize = 64;
/// Phase 1 rounds at most (commits may keep dirtying pages).
const FUZZY_ROUNDS: usize = 3;

impl Shared {
    /// Writes `xa.log` for checkpoint `c` (before the superblock and the log recycle, so
    /// the log still holds every XA record after the old checkpoint if this one fails).
    /// Skipped while no XA record ever existed.
    fn save_xa(&self, c: crate::page::Lsn) -> Result<()> {
        let source = self.xa_source.lock().clone();
        let records = match source {
            Some(f) => f(),
            None => self.xa_recovered.lock().clone(),
        };
        let exists = self
            .xa_file_exists
            .load(std::sync::atomic::Ordering::Acquire);
        if records.is_empty() && !exists {
            return Ok(());
        }
        crate::xalog::write(
            self.fs.as_ref(),
            &self.dir,
            &crate::xalog::XaSnapshot { lsn: c, records },
            !self.bugs.skip_dir_fsync,
        )?;
        self.xa_file_exists
            .store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Runs one checkpoint; `clean_close` marks the superblock of a clean close.
    pub(crate) fn checkpoint(&self, clean_close: bool) -> Result<()> {
        self.run_checkpoint(clean_close, false)
    }

    /// A checkpoint that also cuts the free pages off the end of page.db (shrink).
    pub(crate) fn checkpoint_truncating(&self) -> Result<()> {
        self.run_checkpoint(false, true)
    }

    fn run_checkpoint(&self, clean_close: bool, truncate: bool) -> Result<()> {
        let _one_at_a_time = self.checkpoint_lock.lock();
        self.poison.check()?;
        let started = Instant::now();
        let mut written = 0;
        for _ in 0..FUZZY_ROUNDS {
            let upto = self.log.last_lsn();
            written += self.cache.flush(upto)?;
            if self.cache.stats().dirty < SMALL_DIRTY_SET {
                break;
            }
        }
        if written > 0 {
            // Sync what phase 1 wrote while commits still run: phase 2's syncs then only
            // cover the few pages dirtied meanwhile, which keeps the stall short. (An open
            // or close with nothing to write does no extra sync.)
            self.pagedb.sync()?;
        }
        let mut w = self.writer.lock();
        let stall = Instant::now();
        let c = self.log.last_lsn();
        self.log.flush(c, Durability::Sync)?;
        self.cache.flush(c)?;
        if let Some((id, lsn)) = self.cache.dirty_pages().first().copied() {
            // Every frame up to `c` is durable, so the cache must have written them all;
            // a superblock claiming `c` would otherwise lose page `id`'s changes.
            return Err(crate::error::Error::invalid_argument(format!(
                "checkpoint at {c} left page {id} dirty (LSN {lsn})"
            )));
        }
        let result = (|| {
            self.save_xa(c)?;
            self.pagedb.commit(CommitInfo {
                checkpoint_lsn: c,
                roots: w.roots,
                clean_close,
                truncate,
            })?;
            self.log.recycle(c)
        })();
        result.map_err(|e| self.poison.latch(e))?;
        w.redo_point = c;
        let stalled = stall.elapsed();
        drop(w);
        if truncate {
            // The shorter page count is durable; the cut itself needs no writer lock.
            self.pagedb.cut_to_page_count()?;
        }
        let mut k = self.counters.lock();
        k.checkpoints += 1;
        k.longest_stall = k.longest_stall.max(stalled);
        k.last_checkpoint = started.elapsed();
        Ok(())
    }
}
