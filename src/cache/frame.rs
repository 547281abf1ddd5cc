//! Frames and the handles that pin and latch them.
//!
//! Owns: [`Frame`] (a page buffer behind its latch, plus its dirty state), [`PinnedPage`]
//! and the latch guards [`PageRead`] / [`PageWrite`].
//!
//! Invariants: the bytes change only under the exclusive latch, and a frame becomes dirty
//! (or raises its `page_lsn`) while that latch is held, so a write-back holding the
//! upgradable latch (shared with readers, exclusive among write-backs) sees bytes and `page_lsn` that agree and stay fixed until it marks the frame
//! clean. A discarded frame is never dirty: it will never be written.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::{share_error, Counters, Lsn, PageId, Shared};
use crate::error::Error;

/// Being read from the [`super::PageIo`] by the thread that missed.
pub(crate) const LOADING: u8 = 0;
/// Holds the page's bytes.
pub(crate) const READY: u8 = 1;
/// The read failed; the frame is (being) dropped from the table.
const FAILED: u8 = 2;

/// A page-size buffer for one page.
pub(crate) struct Frame {
    pub(crate) id: PageId,
    /// The latch: shared for readers, upgradable for write-backs (one at a time, beside
    /// readers), exclusive for writers, for the loading read and for removal.
    pub(crate) data: RwLock<Box<[u8]>>,
    /// Dirty state and load failure. A leaf lock: nothing is acquired while holding it.
    meta: Mutex<Meta>,
    /// `LOADING`, `READY` or `FAILED`; changes only under the exclusive latch.
    state: AtomicU8,
    /// Out of the table; a write-back that finds this under the latch must not write.
    removed: AtomicBool,
    /// Freed by `discard`: never written again, dropped at its last unpin.
    discarded: AtomicBool,
}

#[derive(Default)]
struct Meta {
    dirty: bool,
    /// The first LSN that dirtied the frame since it was last clean.
    rec_lsn: Lsn,
    /// The highest LSN whose change the bytes contain.
    page_lsn: Lsn,
    /// The load error, for the pinners that waited on the load.
    failure: Option<Error>,
}

impl Frame {
    /// A frame for page `id` owning `buf` (one page long).
    pub(crate) fn new(id: PageId, buf: Box<[u8]>, state: u8) -> Self {
        Frame {
            id,
            data: RwLock::new(buf),
            meta: Mutex::new(Meta::default()),
            state: AtomicU8::new(state),
            removed: AtomicBool::new(false),
            discarded: AtomicBool::new(false),
        }
    }

    /// Called by the loader, under the exclusive latch, after a successful read.
    pub(crate) fn set_loaded(&self) {
        self.state.store(READY, Ordering::Release);
    }

    /// Called by the loader, under the exclusive latch, after a failed read.
    pub(crate) fn set_failed(&self, e: Error) {
        self.meta.lock().failure = Some(e);
        self.state.store(FAILED, Ordering::Release);
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.state.load(Ordering::Acquire) == READY
    }

    /// A copy of the load error, if the load failed (call after taking the latch once).
    pub(crate) fn failure(&self) -> Option<Error> {
        if self.state.load(Ordering::Acquire) != FAILED {
            return None;
        }
        let meta = self.meta.lock();
        Some(match &meta.failure {
            Some(e) => share_error(e, self.id),
            None => Error::io(
                format!("reading page {} into the cache", self.id),
                std::io::Error::other("the load failed"),
            ),
        })
    }

    pub(crate) fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

    pub(crate) fn is_discarded(&self) -> bool {
        self.discarded.load(Ordering::Acquire)
    }

    /// Under the map lock, with the exclusive latch held: the frame leaves the table.
    pub(crate) fn mark_removed(&self, counters: &Counters) {
        self.removed.store(true, Ordering::Release);
        self.mark_clean(counters);
    }

    /// Under the map lock: the page was freed. Its changes will never be written.
    pub(crate) fn mark_discarded(&self, counters: &Counters) {
        // Set the flag before cleaning: a concurrent `mark_dirty` that takes the meta
        // lock after us sees it and leaves the frame clean.
        self.discarded.store(true, Ordering::Release);
        self.mark_clean(counters);
    }

    /// Under the map lock, pinned by the caller only: the freed page is reallocated.
    pub(crate) fn reuse_for_new(&self) {
        self.discarded.store(false, Ordering::Release);
    }

    /// `(rec_lsn, page_lsn)` if dirty.
    pub(crate) fn dirty_lsns(&self) -> Option<(Lsn, Lsn)> {
        let m = self.meta.lock();
        m.dirty.then_some((m.rec_lsn, m.page_lsn))
    }

    /// Under the exclusive latch: the bytes are about to change at `lsn`.
    fn mark_dirty(&self, lsn: Lsn, counters: &Counters) {
        let mut m = self.meta.lock();
        if self.is_discarded() {
            return;
        }
        if m.dirty {
            m.page_lsn = m.page_lsn.max(lsn);
        } else {
            m.dirty = true;
            m.rec_lsn = lsn;
            m.page_lsn = lsn;
            counters.dirty.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The bytes now match the disk (or never need to). True if it was dirty.
    pub(crate) fn mark_clean(&self, counters: &Counters) -> bool {
        let mut m = self.meta.lock();
        if !m.dirty {
            return false;
        }
        m.dirty = false;
        counters.dirty.fetch_sub(1, Ordering::Relaxed);
        true
    }
}

/// A pinned page: its frame stays resident until this handle is dropped.
///
/// `Send` and `Sync`; latch it with [`PinnedPage::read`] or [`PinnedPage::write`]. Take
/// latches of several pages in one global order (e.g. by page id) to avoid deadlocks.
pub struct PinnedPage {
    shared: Arc<Shared>,
    frame: Arc<Frame>,
}

impl PinnedPage {
    pub(crate) fn new(shared: Arc<Shared>, frame: Arc<Frame>) -> Self {
        PinnedPage { shared, frame }
    }

    /// The page's number.
    pub fn id(&self) -> PageId {
        self.frame.id
    }

    /// Takes the shared latch (blocks while a writer holds the page).
    pub fn read(&self) -> PageRead<'_> {
        PageRead {
            guard: self.frame.data.read(),
        }
    }

    /// Takes the exclusive latch to change the page as of log record `lsn`: the frame
    /// becomes dirty with `page_lsn = max(page_lsn, lsn)`, and `rec_lsn = lsn` if it was
    /// clean. Blocks while readers, a writer or a write-back hold the page.
    pub fn write(&self, lsn: Lsn) -> PageWrite<'_> {
        let guard = self.frame.data.write();
        self.frame.mark_dirty(lsn, &self.shared.counters);
        PageWrite { guard }
    }

    /// The frame's `page_lsn` if it is dirty, `None` if clean.
    pub fn page_lsn(&self) -> Option<Lsn> {
        self.frame.dirty_lsns().map(|(_, page)| page)
    }
}

impl Drop for PinnedPage {
    fn drop(&mut self) {
        self.shared.unpin(&self.frame);
    }
}

impl fmt::Debug for PinnedPage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinnedPage")
            .field("id", &self.id())
            .field("page_lsn", &self.page_lsn())
            .finish()
    }
}

/// Shared access to a pinned page's bytes; releases the latch on drop.
pub struct PageRead<'a> {
    guard: RwLockReadGuard<'a, Box<[u8]>>,
}

impl Deref for PageRead<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.guard
    }
}

/// Exclusive access to a pinned page's bytes; releases the latch on drop.
pub struct PageWrite<'a> {
    guard: RwLockWriteGuard<'a, Box<[u8]>>,
}

impl Deref for PageWrite<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.guard
    }
}

impl DerefMut for PageWrite<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.guard
    }
}
