//! The commit path: a write transaction's private page copies, turned into one log frame
//! and then applied to the cache.
//!
//! Invariants: until `commit`, changes live only in the transaction's shadow copies; a
//! dropped transaction leaves nothing behind but the pages it allocated, which go back to
//! the allocator. `commit` appends the frame, applies the shadows under the same writer
//! lock (so LSN order is apply order), releases the lock, then waits for durability.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use parking_lot::MutexGuard;

use super::{PageSource, Shared, WriterState};
use crate::cache::IdHash;
use crate::error::{Error, Result};
use crate::log::frame::FrameKind;
use crate::log::Durability;
use crate::page::{init_header, page_lsn, set_page_lsn, Lsn, PageId, PageType, ROOT_SLOTS};
use crate::redo;

/// A transaction's copy of one page.
///
/// There is no copy of the committed bytes: the cache's frame holds them, and it cannot
/// change while this transaction holds the writer lock (only commits change frames), so
/// the commit diffs against the frame itself.
struct Shadow {
    /// Allocated by this transaction: no committed version exists.
    fresh: bool,
    /// The bytes as the transaction left them.
    new: Vec<u8>,
    /// Whether `new` may differ from the committed page.
    dirty: bool,
}

/// A write transaction on the kernel. Holds the writer lock until committed or dropped.
pub struct WriteTxn<'a> {
    shared: &'a Shared,
    writer: Option<MutexGuard<'a, WriterState>>,
    /// Whether this transaction is announced to the log (see `Log::announce`).
    announced: bool,
    pages: BTreeMap<PageId, Shadow>,
    /// Sets, not lists: deleting a queue frees hundreds of thousands of pages in one
    /// transaction, and each free checks membership.
    allocated: BTreeSet<PageId>,
    freed: BTreeSet<PageId>,
    roots: [Option<PageId>; ROOT_SLOTS],
    /// Opaque XA records logged with this commit.
    xa: Vec<Vec<u8>>,
    /// Pages a structure layer fully validated in this transaction (`PageSource::trust`).
    trusted: HashSet<PageId, IdHash>,
}

impl std::fmt::Debug for WriteTxn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteTxn")
            .field("pages", &self.pages.len())
            .field("allocated", &self.allocated)
            .field("freed", &self.freed)
            .finish()
    }
}

impl<'a> WriteTxn<'a> {
    pub(super) fn begin(shared: &'a Shared) -> Result<WriteTxn<'a>> {
        shared.poison.check()?;
        shared.log.announce();
        let writer = shared.writer.lock();
        let txn = WriteTxn {
            shared,
            writer: Some(writer),
            announced: true,
            pages: BTreeMap::new(),
            allocated: BTreeSet::new(),
            freed: BTreeSet::new(),
            roots: [None; ROOT_SLOTS],
            xa: Vec::new(),
            trusted: HashSet::default(),
        };
        shared.poison.check()?;
        Ok(txn)
    }

    fn retire(&mut self) {
        if std::mem::take(&mut self.announced) {
            self.shared.log.retire();
        }
    }

    /// The page size of the store.
    pub fn page_size(&self) -> usize {
        self.shared.pagedb.page_size()
    }

    /// Allocates a page, initialised with a header of `page_type` and zeros.
    pub fn allocate(&mut self, page_type: PageType) -> Result<PageId> {
        let id = self.shared.pagedb.allocate()?;
        self.trusted.remove(&id);
        let mut new = vec![0u8; self.shared.pagedb.page_size()];
        init_header(&mut new, page_type, 0);
        self.pages.insert(
            id,
            Shadow {
                fresh: true,
                new,
                dirty: true,
            },
        );
        self.allocated.insert(id);
        Ok(id)
    }

    /// Frees a committed page, or one this transaction allocated.
    pub fn free(&mut self, id: PageId) -> Result<()> {
        if self.freed.contains(&id) {
            return Err(Error::invalid_argument(format!("page {id} freed twice")));
        }
        self.trusted.remove(&id);
        if self.allocated.remove(&id) {
            self.pages.remove(&id);
            return self.shared.pagedb.free_now(id);
        }
        self.pages.remove(&id);
        self.freed.insert(id);
        Ok(())
    }

    fn shadow(&mut self, id: PageId) -> Result<&mut Shadow> {
        if self.freed.contains(&id) {
            return Err(Error::invalid_argument(format!("page {id} was freed")));
        }
        if !self.pages.contains_key(&id) {
            let pinned = self.shared.cache.pin(id)?;
            let bytes = pinned.read().to_vec();
            self.pages.insert(
                id,
                Shadow {
                    fresh: false,
                    new: bytes,
                    dirty: false,
                },
            );
        }
        self.pages
            .get_mut(&id)
            .ok_or_else(|| Error::invalid_argument(format!("page {id} vanished")))
    }

    /// The page as this transaction sees it.
    pub fn page(&mut self, id: PageId) -> Result<&[u8]> {
        Ok(&self.shadow(id)?.new)
    }

    /// The page for modification (copy-on-first-write).
    pub fn page_mut(&mut self, id: PageId) -> Result<&mut [u8]> {
        let s = self.shadow(id)?;
        s.dirty = true;
        Ok(&mut s.new)
    }

    /// Sets a root slot (visible to others after commit).
    pub fn set_root(&mut self, slot: usize, page: PageId) -> Result<()> {
        let r = self
            .roots
            .get_mut(slot)
            .ok_or_else(|| Error::invalid_argument(format!("root slot {slot} out of range")))?;
        *r = Some(page);
        Ok(())
    }

    /// Logs an opaque XA record atomically with this commit (a prepare or a resolution);
    /// recovery returns it through `Kernel::take_recovered_xa` until a checkpoint folds it
    /// into `xa.log`.
    pub fn attach_xa(&mut self, record: Vec<u8>) {
        self.xa.push(record);
    }

    /// The root of `slot` as this transaction sees it.
    pub fn root(&self, slot: usize) -> PageId {
        match (self.roots.get(slot), self.writer.as_ref()) {
            (Some(Some(p)), _) => *p,
            (Some(None), Some(w)) => w.roots[slot],
            _ => 0,
        }
    }

    /// Encodes this transaction's records into `out` (cleared first); pages first touched
    /// since the redo point are logged whole, others as deltas against their committed
    /// frame. Returns whether anything besides the page count was written.
    fn encode_records(&self, redo_point: Lsn, out: &mut Vec<u8>) -> Result<bool> {
        out.clear();
        let mut e = redo::Encoder::new(out);
        e.page_count(self.shared.pagedb.page_count());
        let mut changed = false;
        for &p in &self.allocated {
            e.alloc(p);
            changed = true;
        }
        for (&id, s) in &self.pages {
            if !s.dirty {
                continue;
            }
            if s.fresh {
                e.image(id, &s.new);
                changed = true;
                continue;
            }
            let pinned = self.shared.cache.pin(id)?;
            let committed = pinned.read();
            if page_lsn(&committed) > redo_point {
                changed |= e.delta(id, &committed, &s.new);
            } else {
                e.image(id, &s.new);
                changed = true;
            }
        }
        for (slot, r) in self.roots.iter().enumerate() {
            if let Some(page) = r {
                e.root(slot as u8, *page);
                changed = true;
            }
        }
        for &p in &self.freed {
            e.free(p);
            changed = true;
        }
        for x in &self.xa {
            e.xa(x);
            changed = true;
        }
        Ok(changed)
    }

    /// Commits: appends one frame with every change, applies the changes to the cache,
    /// releases the writer lock, then waits until the frame is as durable as asked.
    /// Returns the commit's LSN (that of the last commit if nothing changed).
    pub fn commit(self, durability: Durability) -> Result<Lsn> {
        self.commit_then(durability, || ())
    }

    /// [`WriteTxn::commit`], running `on_apply` right after the pages are applied, while
    /// readers are still excluded: in-memory state that readers combine with pages (such
    /// as the queue catalog) changes atomically with them. `on_apply` does not run if the
    /// commit fails before its frame is appended.
    pub fn commit_then(mut self, durability: Durability, on_apply: impl FnOnce()) -> Result<Lsn> {
        let s = self.shared;
        let Some(mut w) = self.writer.take() else {
            return Err(Error::Closed);
        };
        s.poison.check()?;
        // The payload buffer lives with the writer lock, so its allocation is reused.
        let mut payload = std::mem::take(&mut w.payload);
        let changed = self.encode_records(w.redo_point, &mut payload);
        let changed = match changed {
            Ok(c) => c,
            Err(e) => {
                w.payload = payload;
                return Err(e);
            }
        };
        if !changed {
            w.payload = payload;
            on_apply();
            return Ok(s.log.last_lsn());
        }
        let appended = s.log.append(FrameKind::Commit, &payload);
        w.payload = recycle_payload(payload);
        self.retire();
        let lsn = appended?;
        let applied = self.apply(&mut w, lsn, on_apply);
        if let Err(e) = applied {
            // The frame is in the log but the cache does not reflect it: only recovery
            // can restore a consistent view.
            return Err(s.poison.latch(e));
        }
        self.allocated.clear();
        drop(w);
        s.counters.lock().commits += 1;
        s.log.flush(lsn, durability)?;
        if durability != Durability::Sync && s.log.wants_write_ahead() {
            s.request_flush();
        }
        if s.log.size_since_recycle() >= s.config.checkpoint_size {
            s.request_checkpoint();
        }
        if s.cache.mostly_dirty() {
            s.request_cleaning();
        }
        Ok(lsn)
    }

    fn apply(&mut self, w: &mut WriterState, lsn: Lsn, on_apply: impl FnOnce()) -> Result<()> {
        let s = self.shared;
        let _exclusive = s.apply.write();
        // The shadows are spent: a new page's copy becomes its cache frame as it is.
        for (id, sh) in std::mem::take(&mut self.pages) {
            if !sh.dirty {
                continue;
            }
            if sh.fresh {
                let pinned = s.cache.pin_new_with(id, sh.new)?;
                set_page_lsn(&mut pinned.write(lsn), lsn);
            } else {
                let pinned = s.cache.pin(id)?;
                let mut g = pinned.write(lsn);
                g.copy_from_slice(&sh.new);
                set_page_lsn(&mut g, lsn);
            }
        }
        for &id in &self.freed {
            s.cache.discard(id);
            s.pagedb.free_now(id)?;
        }
        {
            let mut committed = s.roots.lock();
            for (slot, r) in self.roots.iter().enumerate() {
                if let Some(page) = r {
                    w.roots[slot] = *page;
                    committed[slot] = *page;
                }
            }
        }
        on_apply();
        Ok(())
    }
}

/// Keeps a payload buffer's allocation for the next commit unless it grew past what a
/// typical commit needs (a one-off huge transaction should not pin its memory).
fn recycle_payload(mut buf: Vec<u8>) -> Vec<u8> {
    const KEEP: usize = 4 << 20;
    if buf.capacity() > KEEP {
        return Vec::new();
    }
    buf.clear();
    buf
}

impl Drop for WriteTxn<'_> {
    fn drop(&mut self) {
        self.retire();
        // Rollback: pages this transaction allocated were never logged; return them.
        for &id in &self.allocated {
            // A failure here leaks a page until the next check; it cannot corrupt.
            let _ = self.shared.pagedb.free_now(id);
        }
    }
}

impl PageSource for WriteTxn<'_> {
    /// The transaction's own copy if it has one, else the committed page (which cannot
    /// change while this transaction holds the writer lock), without copying it.
    fn with_page<R>(&mut self, id: PageId, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        if self.freed.contains(&id) {
            return Err(Error::invalid_argument(format!("page {id} was freed")));
        }
        if let Some(s) = self.pages.get(&id) {
            return Ok(f(&s.new));
        }
        let pinned = self.shared.cache.pin(id)?;
        let g = pinned.read();
        Ok(f(&g))
    }

    fn is_trusted(&self, id: PageId) -> bool {
        self.trusted.contains(&id)
    }

    fn trust(&mut self, id: PageId) {
        self.trusted.insert(id);
    }
}
