//! The commit path: a write transaction's private page copies, turned into one log frame
//! and then applied to the cache.
//!
//! Invariants: until `commit`, changes live only in the transaction's shadow copies; a
//! dropped transaction leaves nothing behind but the pages it allocated, which go back to
//! the allocator. `commit` appends the frame, applies the shadows under the same writer
//! lock (so LSN order is apply order), releases the lock, then waits for durability.

use std::collections::{BTreeMap, BTreeSet};

use parking_lot::MutexGuard;

use super::{PageSource, Shared, WriterState};
use crate::error::{Error, Result};
use crate::log::frame::FrameKind;
use crate::log::Durability;
use crate::page::{init_header, page_lsn, set_page_lsn, Lsn, PageId, PageType, ROOT_SLOTS};
use crate::redo::{self, Record};

/// A transaction's copy of one page.
struct Shadow {
    /// The committed bytes when first touched; `None` for a page allocated by this
    /// transaction.
    orig: Option<Vec<u8>>,
    /// The bytes as the transaction left them.
    new: Vec<u8>,
    /// Whether `new` may differ from `orig`.
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
        let mut new = vec![0u8; self.shared.pagedb.page_size()];
        init_header(&mut new, page_type, 0);
        self.pages.insert(
            id,
            Shadow {
                orig: None,
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
                    orig: Some(bytes.clone()),
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

    /// The records of this transaction; pages first touched since the redo point are
    /// logged whole.
    fn records(&self, redo_point: Lsn) -> Vec<Record> {
        let mut recs = vec![Record::PageCount(self.shared.pagedb.page_count())];
        recs.extend(self.allocated.iter().map(|&p| Record::Alloc(p)));
        for (&id, s) in &self.pages {
            if !s.dirty {
                continue;
            }
            match &s.orig {
                Some(orig) if page_lsn(orig) > redo_point => {
                    let runs = redo::diff(orig, &s.new);
                    if !runs.is_empty() {
                        recs.push(Record::Delta { page: id, runs });
                    }
                }
                _ => recs.push(Record::Image {
                    page: id,
                    bytes: s.new.clone(),
                }),
            }
        }
        for (slot, r) in self.roots.iter().enumerate() {
            if let Some(page) = r {
                recs.push(Record::Root {
                    slot: slot as u8,
                    page: *page,
                });
            }
        }
        recs.extend(self.freed.iter().map(|&p| Record::Free(p)));
        recs.extend(self.xa.iter().map(|x| Record::Xa(x.clone())));
        recs
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
        let recs = self.records(w.redo_point);
        if recs.len() == 1 {
            // Only the page count: nothing changed.
            on_apply();
            return Ok(s.log.last_lsn());
        }
        let appended = s.log.append(FrameKind::Commit, &redo::encode(&recs));
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
        if s.log.size_since_recycle() >= s.config.checkpoint_size {
            s.request_checkpoint();
        }
        Ok(lsn)
    }

    fn apply(&mut self, w: &mut WriterState, lsn: Lsn, on_apply: impl FnOnce()) -> Result<()> {
        let s = self.shared;
        let _exclusive = s.apply.write();
        for (&id, sh) in &self.pages {
            if !sh.dirty {
                continue;
            }
            let pinned = if sh.orig.is_none() {
                s.cache.pin_new(id)?
            } else {
                s.cache.pin(id)?
            };
            let mut g = pinned.write(lsn);
            g.copy_from_slice(&sh.new);
            set_page_lsn(&mut g, lsn);
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
}
