//! The page cache: frames of page size between the engine and `page.db`.
//!
//! Owns: [`PageCache`] (the frame table, the LRU of unpinned frames, the statistics),
//! [`PinnedPage`] handles and their latch guards, and the two seams it is driven through:
//! [`PageIo`] (where pages come from and go to) and [`WalGate`] (how far the log is durable).
//! It knows nothing of the page format: it moves opaque page-size buffers.
//!
//! Invariants:
//! - **Pin rule.** A frame with a pin count above zero is never evicted, trimmed or
//!   dropped; pins are counted, so a page may be pinned many times by many threads.
//!   Only unpinned frames sit in the LRU, and only LRU frames are eviction victims.
//! - **Bound.** The frame table never holds more than `max_pages` frames (loading and
//!   write-back frames included); when it is full and nothing can be evicted the caller
//!   waits (up to `pin_timeout` in total) and then gets [`Error::CacheExhausted`].
//! - **WAL rule.** A dirty frame is written (eviction, `flush`, `trim`, `try_evict`) only
//!   when `wal.durable_lsn() >= page_lsn`, checked under the frame's latch, which keeps
//!   the bytes (and so `page_lsn`) fixed until the write returns.
//! - **One frame per page, ordered writes.** A frame leaves the table only while its
//!   remover holds the frame's exclusive latch (taken with `try_write`), so never while a
//!   write-back of it is in flight; a later frame for the same page therefore writes after
//!   it. (Failed loads are the one exception: such a frame was never dirty.)
//! - **Lock ordering.** The map lock (`Shared::inner`) comes before a frame latch, and it
//!   never *waits* for one: under the map lock a latch is only `try_write`-n or taken on a
//!   frame nobody else can see yet. No thread holding a latch acquires the map lock. The
//!   frame `meta` mutex is a leaf. Neither the map lock nor a latch is held across
//!   `flush_to`; only a frame's own latch is held across its `read_page`/`write_page`.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lru::LruCache;
use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::error::{Error, Result};

mod evict;
mod frame;
#[cfg(test)]
mod tests;

use frame::{Frame, LOADING, READY};
pub use frame::{PageRead, PageWrite, PinnedPage};

pub use crate::page::{Lsn, PageId};

/// Where pages come from and go to (implemented by `page.db`; CRC sealing and
/// verification happen there, not in the cache).
pub trait PageIo: Send + Sync {
    /// The size of every page buffer, in bytes.
    fn page_size(&self) -> usize;
    /// Fills `buf` (exactly `page_size` bytes) with page `id`.
    fn read_page(&self, id: PageId, buf: &mut [u8]) -> Result<()>;
    /// Writes `buf` (exactly `page_size` bytes) as page `id` (not necessarily durable).
    fn write_page(&self, id: PageId, buf: &[u8]) -> Result<()>;
}

/// The WAL rule's seam: the log tells the cache how far it is durable.
pub trait WalGate: Send + Sync {
    /// The highest LSN that is durable in the log. It must be cheap and must not call
    /// into the cache: the cache may call it with its map lock held.
    fn durable_lsn(&self) -> Lsn;
    /// Asks the log to become durable up to `lsn` (may block for an fsync). The cache
    /// calls it with no lock held and re-reads [`WalGate::durable_lsn`] afterwards.
    fn flush_to(&self, lsn: Lsn) -> Result<()>;
}

/// Sizing and waiting limits of a [`PageCache`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Frames [`PageCache::trim`] keeps.
    pub min_pages: usize,
    /// Frames the cache never exceeds.
    pub max_pages: usize,
    /// How long, in total, one `pin` waits for a frame to become free before it returns
    /// [`Error::CacheExhausted`].
    pub pin_timeout: Duration,
}

/// Counters of a [`PageCache`]; exact when the cache is quiescent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// `pin` calls served by a resident frame (including one being loaded by another thread).
    pub hits: u64,
    /// `pin` calls that read the page from the [`PageIo`].
    pub misses: u64,
    /// Frames removed to make room, by `trim` or by `try_evict` (not by `discard`).
    pub evictions: u64,
    /// Dirty frames written to the [`PageIo`] (by eviction, `flush`, `trim`, `try_evict`).
    pub writebacks: u64,
    /// Frames with a pin count above zero.
    pub pinned: usize,
    /// Frames whose bytes differ from what was last written to the [`PageIo`].
    pub dirty: usize,
    /// Frames in the cache.
    pub resident: usize,
}

/// The page cache. `Send + Sync`; the engine shares it through an `Arc`.
pub struct PageCache {
    shared: Arc<Shared>,
}

/// What [`PinnedPage`] handles keep alive: everything but the public facade.
pub(crate) struct Shared {
    io: Arc<dyn PageIo>,
    wal: Arc<dyn WalGate>,
    config: CacheConfig,
    page_size: usize,
    /// The map lock. Held only to find, reserve or remove frames: never across I/O.
    inner: Mutex<Inner>,
    /// Signalled when a frame is unpinned or removed (a pin may then find room).
    room: Condvar,
    counters: Counters,
}

/// Counters kept outside the map lock (atomics) so that hit paths and write-backs do not
/// need it. `dirty` changes only under a frame's `meta` mutex, as its dirty flag flips.
#[derive(Default)]
pub(crate) struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    writebacks: AtomicU64,
    dirty: AtomicUsize,
}

/// The frame table, protected by the map lock.
pub(crate) struct Inner {
    map: HashMap<PageId, Entry, IdHash>,
    /// Exactly the entries with `pins == 0 && !evicting`, least recently used last.
    lru: LruCache<PageId, (), IdHash>,
    /// Entries with `pins > 0`.
    pinned: usize,
    /// Page buffers of evicted frames, reused by the next misses and new pages instead of
    /// a fresh zeroed allocation each (measured: allocation, zeroing and freeing page
    /// buffers were 10-15% of a bulk load's and a full scan's CPU). Their bytes are stale.
    spare: Vec<Box<[u8]>>,
}

/// Most spare buffers kept: enough for a burst of misses, a bounded amount of memory.
const SPARE_BUFFERS: usize = 64;

/// One resident page.
pub(crate) struct Entry {
    frame: Arc<Frame>,
    pins: usize,
    /// An evictor took it out of the LRU to write it back; a pin cancels that by clearing
    /// the flag, and the evictor then leaves the frame alone.
    evicting: bool,
}

/// A cheap hasher for page numbers (SipHash is needless for u64 keys we choose).
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing; fold the high half down so the low bits (hashbrown's
        // bucket index) depend on every input bit.
        let x = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = x ^ (x >> 32);
    }
}

pub(crate) type IdHash = BuildHasherDefault<IdHasher>;

impl Inner {
    /// Pins a resident page: bumps its count, takes it out of the LRU and cancels a
    /// pending eviction. `None` if it is not resident.
    fn pin_resident(&mut self, id: PageId) -> Option<Arc<Frame>> {
        let e = self.map.get_mut(&id)?;
        if e.pins == 0 {
            if e.evicting {
                e.evicting = false;
            } else {
                self.lru.pop(&id);
            }
            self.pinned += 1;
        }
        e.pins += 1;
        Some(Arc::clone(&e.frame))
    }

    /// Adds a frame pinned once. The caller checked `map.len() < max_pages` and that the
    /// page is not resident.
    fn insert_pinned(&mut self, id: PageId, frame: Arc<Frame>) {
        self.map.insert(
            id,
            Entry {
                frame,
                pins: 1,
                evicting: false,
            },
        );
        self.pinned += 1;
    }

    /// Removes an unpinned frame if nobody holds its latch (so no write-back of it is in
    /// flight). True if it was removed.
    fn try_remove(&mut self, id: PageId, counters: &Counters) -> bool {
        let Some(e) = self.map.get(&id) else {
            return false;
        };
        debug_assert_eq!(e.pins, 0);
        let frame = Arc::clone(&e.frame);
        {
            let Some(_latch) = frame.data.try_write() else {
                return false;
            };
            self.map.remove(&id);
            self.lru.pop(&id);
            frame.mark_removed(counters);
        }
        self.recycle(frame);
        true
    }

    /// Keeps the buffer of a frame that left the table, if this is its last reference
    /// (nobody else pinned, wrote back or waits on it), for the next frame.
    fn recycle(&mut self, frame: Arc<Frame>) {
        if self.spare.len() < SPARE_BUFFERS {
            if let Ok(f) = Arc::try_unwrap(frame) {
                self.spare.push(f.data.into_inner());
            }
        }
    }

    /// A page buffer for a new frame: a spare one (stale bytes), or a fresh zeroed one;
    /// with `zeroed` it is all zeros either way.
    fn take_buffer(&mut self, page_size: usize, zeroed: bool) -> Box<[u8]> {
        match self.spare.pop() {
            Some(mut b) if b.len() == page_size => {
                if zeroed {
                    b.fill(0);
                }
                b
            }
            _ => vec![0u8; page_size].into_boxed_slice(),
        }
    }

    /// Puts an unpinned frame back in the LRU as the next victim.
    fn requeue_lru_end(&mut self, id: PageId) {
        self.lru.push(id, ());
        self.lru.demote(&id);
    }

    /// The entry of `id` if it holds exactly `frame`.
    fn entry_of(&mut self, id: PageId, frame: &Arc<Frame>) -> Option<&mut Entry> {
        self.map
            .get_mut(&id)
            .filter(|e| Arc::ptr_eq(&e.frame, frame))
    }
}

/// A copy of a load error for the other pinners that waited on the same load (`Error`
/// is not `Clone`: `io::Error` is not).
fn share_error(e: &Error, id: PageId) -> Error {
    match e {
        Error::Io { context, source } => Error::io(
            context.clone(),
            io::Error::new(source.kind(), source.to_string()),
        ),
        Error::Corruption {
            file,
            location,
            detail,
        } => Error::corruption(file.clone(), location.clone(), detail.clone()),
        other => Error::io(
            format!("reading page {id} into the cache"),
            io::Error::other(other.to_string()),
        ),
    }
}

impl PageCache {
    /// A cache over `io`, writing dirty frames only as far as `wal` is durable.
    ///
    /// Fails with [`Error::InvalidConfig`] if `max_pages == 0` or `min_pages > max_pages`,
    /// and with [`Error::InvalidArgument`] if `io.page_size()` is zero.
    pub fn new(io: Arc<dyn PageIo>, wal: Arc<dyn WalGate>, config: CacheConfig) -> Result<Self> {
        if config.max_pages == 0 {
            return Err(Error::InvalidConfig {
                param: "max_pages",
                reason: "must be at least 1".into(),
            });
        }
        if config.min_pages > config.max_pages {
            return Err(Error::InvalidConfig {
                param: "min_pages",
                reason: format!(
                    "({}) must not exceed max_pages ({})",
                    config.min_pages, config.max_pages
                ),
            });
        }
        let page_size = io.page_size();
        if page_size == 0 {
            return Err(Error::invalid_argument(
                "the page I/O reports a page size of 0",
            ));
        }
        // Presize for the common case, but do not let a huge max allocate up front.
        let cap = config.max_pages.min(1 << 16);
        let inner = Inner {
            map: HashMap::with_capacity_and_hasher(cap, IdHash::default()),
            lru: LruCache::unbounded_with_hasher(IdHash::default()),
            pinned: 0,
            spare: Vec::new(),
        };
        Ok(PageCache {
            shared: Arc::new(Shared {
                io,
                wal,
                config,
                page_size,
                inner: Mutex::new(inner),
                room: Condvar::new(),
                counters: Counters::default(),
            }),
        })
    }

    /// The configuration the cache was built with.
    pub fn config(&self) -> &CacheConfig {
        &self.shared.config
    }

    /// The page size of every frame.
    pub fn page_size(&self) -> usize {
        self.shared.page_size
    }

    /// Pins page `id`: a hit returns its resident frame, a miss reads it from the
    /// [`PageIo`] into a free frame (evicting one if the cache is full).
    ///
    /// Errors: the read's error (every thread waiting on the same load gets a copy, and
    /// the frame is dropped so a later `pin` retries); a write-back or `flush_to` error of
    /// the eviction that made room; [`Error::CacheExhausted`] when no frame could be
    /// freed within `pin_timeout`.
    pub fn pin(&self, id: PageId) -> Result<PinnedPage> {
        let sh = &self.shared;
        let mut started = None;
        let mut g = sh.inner.lock();
        loop {
            if let Some(frame) = g.pin_resident(id) {
                drop(g);
                return sh.finish_hit(frame);
            }
            if g.map.len() < sh.config.max_pages {
                break;
            }
            g = sh.make_room(g, &mut started)?;
        }
        // Miss. The frame goes into the table in the loading state with its latch already
        // held (it is not yet visible, so this cannot block), so concurrent pinners of
        // the same page queue on the latch, not on the map lock.
        // The read fills the whole buffer, so a spare one's stale bytes never show.
        let buf = g.take_buffer(sh.page_size, false);
        let frame = Arc::new(Frame::new(id, buf, LOADING));
        let mut latch = frame.data.write();
        g.insert_pinned(id, Arc::clone(&frame));
        drop(g);
        sh.counters.misses.fetch_add(1, Ordering::Relaxed);
        match sh.io.read_page(id, &mut latch[..]) {
            Ok(()) => {
                frame.set_loaded();
                drop(latch);
                Ok(PinnedPage::new(Arc::clone(sh), frame))
            }
            Err(e) => {
                frame.set_failed(share_error(&e, id));
                drop(latch);
                // The frame was never dirty, so it may leave without its latch (which
                // waiters are now taking to read the failure).
                let mut g = sh.inner.lock();
                if let Some(entry) = g.map.remove(&id) {
                    debug_assert!(Arc::ptr_eq(&entry.frame, &frame) && entry.pins > 0);
                    g.pinned -= 1;
                }
                drop(g);
                sh.room.notify_all();
                Err(e)
            }
        }
    }

    /// Pins a freshly allocated page: a zeroed frame, no disk read. The caller should
    /// [`PinnedPage::write`] it before unpinning (a never-written new page is not kept).
    ///
    /// If the page is resident and unpinned (e.g. a freed page being reused) its frame is
    /// zeroed and reused. Fails with [`Error::InvalidArgument`] if the page is pinned (it
    /// is still in use, so it cannot be newly allocated), and as [`PageCache::pin`] when
    /// room must be made.
    pub fn pin_new(&self, id: PageId) -> Result<PinnedPage> {
        self.pin_new_as(id, None)
    }

    /// [`PageCache::pin_new`] whose frame takes `bytes` (one page) as its contents: a
    /// commit hands over its copy of a new page instead of the cache zeroing a buffer and
    /// the commit copying into it. The caller still [`PinnedPage::write`]s it (which marks
    /// it dirty).
    pub fn pin_new_with(&self, id: PageId, bytes: Vec<u8>) -> Result<PinnedPage> {
        if bytes.len() != self.shared.page_size {
            return Err(Error::invalid_argument(format!(
                "pin_new_with of page {id}: {} bytes for a page of {}",
                bytes.len(),
                self.shared.page_size
            )));
        }
        self.pin_new_as(id, Some(bytes.into_boxed_slice()))
    }

    fn pin_new_as(&self, id: PageId, init: Option<Box<[u8]>>) -> Result<PinnedPage> {
        let sh = &self.shared;
        let mut started = None;
        let mut g = sh.inner.lock();
        loop {
            if g.map.get(&id).is_some_and(|e| e.pins > 0) {
                return Err(Error::invalid_argument(format!(
                    "pin_new of page {id}, which is pinned (still in use)"
                )));
            }
            if let Some(frame) = g.pin_resident(id) {
                frame.reuse_for_new();
                drop(g);
                // Waits for an in-flight write-back of the old contents, if any.
                let mut d = frame.data.write();
                match &init {
                    Some(b) => d.copy_from_slice(b),
                    None => d.fill(0),
                }
                drop(d);
                return Ok(PinnedPage::new(Arc::clone(sh), frame));
            }
            if g.map.len() < sh.config.max_pages {
                break;
            }
            g = sh.make_room(g, &mut started)?;
        }
        let buf = match init {
            Some(b) => b,
            None => g.take_buffer(sh.page_size, true),
        };
        let frame = Arc::new(Frame::new(id, buf, READY));
        g.insert_pinned(id, Arc::clone(&frame));
        drop(g);
        Ok(PinnedPage::new(Arc::clone(sh), frame))
    }

    /// Checkpoint write-back: writes every dirty frame whose `rec_lsn <= upto`, pinned or
    /// not, in page order, first asking the log to be durable up to their highest
    /// `page_lsn`. Returns the number of pages written.
    ///
    /// A frame whose `page_lsn` the log still does not cover after `flush_to` is skipped
    /// and stays dirty (it shows in [`PageCache::dirty_pages`]). Stops at the first write
    /// error.
    pub fn flush(&self, upto: Lsn) -> Result<usize> {
        let sh = &self.shared;
        let batch: Vec<(PageId, Arc<Frame>, Lsn)> = {
            let g = sh.inner.lock();
            g.map
                .iter()
                .filter_map(|(&id, e)| {
                    let (rec, page) = e.frame.dirty_lsns()?;
                    (rec <= upto).then(|| (id, Arc::clone(&e.frame), page))
                })
                .collect()
        };
        sh.write_back_batch(batch, Some(upto))
    }

    /// Evicts page `id` now if the rules allow it: resident, unpinned, and clean or dirty
    /// with a durable `page_lsn` (then written back first). Does not force the log.
    /// Returns whether the page left the cache.
    pub fn try_evict(&self, id: PageId) -> Result<bool> {
        self.shared.try_evict(id)
    }

    /// Page `id` was freed: drops its frame without writing it. A pinned frame is marked
    /// and dropped at its last unpin; until then it is never written. Waits (with no
    /// cache lock held) for an in-flight write-back of the page to finish.
    pub fn discard(&self, id: PageId) {
        let sh = &self.shared;
        loop {
            let mut g = sh.inner.lock();
            let Some(e) = g.map.get(&id) else {
                return;
            };
            let frame = Arc::clone(&e.frame);
            frame.mark_discarded(&sh.counters);
            // A pinned frame goes at its last unpin; an evicting one is dropped by its
            // evictor (which sees the flag and skips the write).
            if e.pins > 0 || e.evicting {
                return;
            }
            if g.try_remove(id, &sh.counters) {
                return;
            }
            drop(g);
            // A flush holds the latch; wait for it without the map lock, then retry.
            drop(frame.data.write());
        }
    }

    /// Shrinks the cache to `min_pages` by evicting unpinned frames: clean ones first
    /// (least recently used first), then dirty ones whose LSN is durable (written back);
    /// if that is not enough it asks the log once to cover the remaining dirty frames.
    /// Never waits for pinned frames. Returns the number of frames evicted.
    pub fn trim(&self) -> Result<usize> {
        self.shared.trim()
    }

    /// `(id, rec_lsn)` of every dirty frame, by page id: the checkpoint's minimum
    /// recovery LSN is the smallest `rec_lsn`.
    pub fn dirty_pages(&self) -> Vec<(PageId, Lsn)> {
        let g = self.shared.inner.lock();
        let mut out: Vec<(PageId, Lsn)> = g
            .map
            .iter()
            .filter_map(|(&id, e)| e.frame.dirty_lsns().map(|(rec, _)| (id, rec)))
            .collect();
        drop(g);
        out.sort_unstable();
        out
    }

    /// Writes back (without evicting) up to `max` dirty frames among the least recently
    /// used, first making the log durable as far as they need, and returns how many it
    /// wrote. A background cleaner calls this so that a committer that needs a frame finds
    /// a clean victim instead of writing one back itself (measured: the synchronous
    /// write-backs were the largest part of a bulk load's commit path).
    pub fn clean_cold(&self, max: usize) -> Result<usize> {
        self.shared.clean_cold(max)
    }

    /// Whether dirty frames fill more than half the cache (see [`PageCache::clean_cold`]).
    pub fn mostly_dirty(&self) -> bool {
        self.shared.counters.dirty.load(Ordering::Relaxed) * 2 > self.shared.config.max_pages
    }

    /// Whether dirty frames fill at most a quarter of the cache: where a cleaner stops.
    pub fn mostly_clean(&self) -> bool {
        self.shared.counters.dirty.load(Ordering::Relaxed) * 4 <= self.shared.config.max_pages
    }

    /// The counters (exact when no other thread is using the cache).
    pub fn stats(&self) -> CacheStats {
        let sh = &self.shared;
        let (pinned, resident) = {
            let g = sh.inner.lock();
            (g.pinned, g.map.len())
        };
        let c = &sh.counters;
        CacheStats {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            evictions: c.evictions.load(Ordering::Relaxed),
            writebacks: c.writebacks.load(Ordering::Relaxed),
            pinned,
            dirty: c.dirty.load(Ordering::Relaxed),
            resident,
        }
    }
}

impl fmt::Debug for PageCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PageCache")
            .field("config", &self.shared.config)
            .field("page_size", &self.shared.page_size)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Shared {
    /// The end of a hit: a frame still loading is waited for on its latch.
    fn finish_hit(self: &Arc<Self>, frame: Arc<Frame>) -> Result<PinnedPage> {
        if !frame.is_ready() {
            // The loader holds the exclusive latch until the read is done.
            drop(frame.data.read());
            if let Some(e) = frame.failure() {
                // The loader removed the entry, pins included: nothing to unpin.
                return Err(e);
            }
        }
        self.counters.hits.fetch_add(1, Ordering::Relaxed);
        Ok(PinnedPage::new(Arc::clone(self), frame))
    }

    /// Drops one pin (from [`PinnedPage`]'s `Drop`; no latch guard of it is alive).
    pub(crate) fn unpin(&self, frame: &Arc<Frame>) {
        let id = frame.id;
        let mut g = self.inner.lock();
        let Some(e) = g.entry_of(id, frame) else {
            // Pinned frames never leave the table; nothing sane to do in release builds.
            debug_assert!(false, "unpin of page {id}, which is not resident");
            return;
        };
        e.pins -= 1;
        if e.pins > 0 {
            return;
        }
        g.pinned -= 1;
        if frame.is_discarded() {
            if !g.try_remove(id, &self.counters) {
                // A flush holds the latch (it will skip the write): evict it first.
                g.requeue_lru_end(id);
            }
        } else {
            g.lru.push(id, ());
        }
        drop(g);
        self.room.notify_all();
    }

    /// Waits for room (an unpin, a removal, the log advancing), at most `pin_timeout` in
    /// total over one pin. The slice is capped so that events nobody signals (the log
    /// advancing, a flush releasing a latch) are noticed soon.
    fn wait_for_room<'a>(
        &'a self,
        mut g: MutexGuard<'a, Inner>,
        started: &mut Option<Instant>,
    ) -> Result<MutexGuard<'a, Inner>> {
        const MAX_SLICE: Duration = Duration::from_millis(5);
        let now = Instant::now();
        let waited = now - *started.get_or_insert(now);
        let timeout = self.config.pin_timeout;
        if waited >= timeout {
            return Err(Error::CacheExhausted {
                frames: self.config.max_pages,
                waited_ms: u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
            });
        }
        let slice = (timeout - waited).min(MAX_SLICE);
        self.room.wait_for(&mut g, slice);
        Ok(g)
    }
}
