//! The storage kernel: page.db, the page cache and the log bound together into transactional
//! page storage with group commit, checkpoints and recovery.
//!
//! Owns: the directory lock, the writer lock, the superblock roots between checkpoints, the
//! redo point, the background flusher and checkpointer threads.
//!
//! Invariants:
//! - One writer at a time holds the writer lock while it applies its changes; the fsync a
//!   commit waits for happens *after* the writer lock is released, so the next writer
//!   proceeds while earlier commits share one sync (group commit).
//! - Redo-only: a transaction's changes reach the cache only at commit, after its frame is
//!   in the log buffer; nothing uncommitted is ever on a page, so recovery never undoes.
//! - The WAL rule: the cache writes a dirty page only once the log is durable up to the
//!   page's LSN (through [`LogGate`]).
//! - The first change of a page whose LSN is at or below the redo point (the checkpoint LSN
//!   in the superblock) is logged as a full image; later ones as deltas.
//! - Any failure after a commit's frame is appended (a write, a sync, applying to the cache)
//!   poisons the kernel: the frame may be durable, so only recovery knows the truth.

mod backup;
mod checkpoint;
pub mod rewrite;
mod txn;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, RwLock, RwLockReadGuard};

use crate::cache::{CacheConfig, CacheStats, PageCache, PageIo, PinnedPage, WalGate};
use crate::config::StoreConfig;
use crate::error::{Error, Result};
use crate::file::{parent_dir, FileSystem, LockGuard};
use crate::log::{Durability, Log, LogStats};
use crate::page::{Lsn, PageId, ROOT_SLOTS};
use crate::pagedb::PageDb;
use crate::planted::PlantedBugs;
use crate::poison::Poison;
use crate::recovery;
use crate::xalog;

pub use backup::{copy_file as backup_copy_file, CopiedFile, Pace};
pub use txn::WriteTxn;

/// How long a pin waits for a frame when the whole cache is pinned.
const PIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The log-side seam the cache sees: how far the log is durable.
#[derive(Debug)]
pub struct LogGate(pub Arc<Log>);

impl WalGate for LogGate {
    fn durable_lsn(&self) -> Lsn {
        self.0.durable_lsn()
    }
    fn flush_to(&self, lsn: Lsn) -> Result<()> {
        self.0.sync_to(lsn.min(self.0.last_lsn()))
    }
}

/// The page-side seam the cache sees.
#[derive(Debug)]
pub struct PageGate(pub Arc<PageDb>);

impl PageIo for PageGate {
    fn page_size(&self) -> usize {
        self.0.page_size()
    }
    fn read_page(&self, id: PageId, buf: &mut [u8]) -> Result<()> {
        self.0.read_page(id, buf).map(|_| ())
    }
    fn write_page(&self, id: PageId, buf: &[u8]) -> Result<()> {
        self.0.write_page(id, buf)
    }
}

/// Read access to pages, for code (trees, records) that runs both inside a write
/// transaction (seeing its own changes) and in a read view (seeing committed pages).
pub trait PageSource {
    /// Calls `f` with the bytes of page `id`.
    fn with_page<R>(&mut self, id: PageId, f: impl FnOnce(&[u8]) -> R) -> Result<R>;

    /// Whether a structure layer fully validated page `id` earlier in this source's life
    /// (see [`PageSource::trust`]), so that only O(1) checks are needed again.
    fn is_trusted(&self, _id: PageId) -> bool {
        false
    }

    /// Records that page `id` passed full validation. Only a source whose pages change
    /// solely through the code that validated them (a write transaction) remembers it.
    fn trust(&mut self, _id: PageId) {}
}

impl PageSource for ReadView<'_> {
    /// Keeps the last page pinned: a scan reads several payloads (or index entries) of one
    /// page in a row, and each further visit then skips the cache's lock and LRU update.
    /// Committed pages cannot change while the view lives (it excludes commits' apply).
    fn with_page<R>(&mut self, id: PageId, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        if self.last.as_ref().is_none_or(|p| p.id() != id) {
            // Unpin the previous page before pinning the next, so the view never holds two.
            self.last = None;
            self.last = Some(self.shared.cache.pin(id)?);
        }
        match &self.last {
            Some(pinned) => Ok(f(&pinned.read())),
            None => Err(Error::invalid_argument("read view lost its pinned page")),
        }
    }
}

/// A consistent read view (see [`Kernel::read_view`]).
pub struct ReadView<'a> {
    shared: &'a Shared,
    /// The page the last `with_page` visited, still pinned.
    last: Option<PinnedPage>,
    _guard: RwLockReadGuard<'a, ()>,
}

impl std::fmt::Debug for ReadView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadView")
    }
}

impl ReadView<'_> {
    /// The page size of the store.
    pub fn page_size(&self) -> usize {
        self.shared.pagedb.page_size()
    }

    /// Pins a committed page.
    pub fn page(&self, id: PageId) -> Result<PinnedPage> {
        self.shared.cache.pin(id)
    }

    /// The committed root page of `slot` (0 = empty).
    pub fn root(&self, slot: usize) -> PageId {
        self.shared.writer_roots(slot)
    }
}

/// Test options of [`Kernel::open_with`]; the default is what production uses.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenOptions {
    /// Deliberate bugs (all off by default).
    pub bugs: PlantedBugs,
    /// Run without the flusher and checkpointer threads (deterministic simulated runs;
    /// `Async` commits then become durable only with a later `Sync` commit or checkpoint).
    pub no_background_threads: bool,
    /// Bytes to zero-fill a new log with, instead of 1.25 x `checkpoint_size` (an
    /// in-memory store gains nothing from preallocation and would hold it in memory).
    pub log_prealloc: Option<u64>,
}

/// State guarded by the writer lock.
#[derive(Debug)]
pub(crate) struct WriterState {
    roots: [PageId; ROOT_SLOTS],
    /// Pages whose LSN is at or below this are imaged at their next change.
    redo_point: Lsn,
    /// The commit path's payload buffer, kept between commits (see `txn`).
    payload: Vec<u8>,
}

impl WriterState {
    pub(crate) fn set_root(&mut self, slot: usize, page: PageId) {
        if let Some(r) = self.roots.get_mut(slot) {
            *r = page;
        }
    }
}

/// Counters of the kernel.
#[derive(Debug, Clone, Default)]
pub struct KernelStats {
    /// Commits that appended a frame.
    pub commits: u64,
    /// Checkpoints completed.
    pub checkpoints: u64,
    /// Longest time a checkpoint held the writer lock (commits stalled).
    pub longest_checkpoint_stall: Duration,
    /// Duration of the last checkpoint.
    pub last_checkpoint: Duration,
    /// Frames replayed by the recovery at open.
    pub recovered_frames: u64,
    /// The LSN of the last commit.
    pub last_lsn: Lsn,
    /// The LSN up to which the log is durable.
    pub durable_lsn: Lsn,
    /// The log's counters.
    pub log: LogStats,
    /// The cache's counters.
    pub cache: CacheStats,
    /// Pages in page.db.
    pub pages_total: u64,
    /// Free pages in page.db.
    pub pages_free: u64,
    /// The page size.
    pub page_size: usize,
}

#[derive(Debug, Default)]
struct Counters {
    commits: u64,
    checkpoints: u64,
    longest_stall: Duration,
    last_checkpoint: Duration,
    recovered_frames: u64,
}

#[derive(Debug, Default)]
struct BgState {
    shutdown: bool,
    checkpoint_wanted: bool,
}

/// What the kernel's threads share.
pub(crate) struct Shared {
    dir: PathBuf,
    config: StoreConfig,
    pub(crate) pagedb: Arc<PageDb>,
    pub(crate) cache: PageCache,
    pub(crate) log: Arc<Log>,
    pub(crate) writer: Mutex<WriterState>,
    /// Held shared by readers that need a consistent multi-page view, exclusively by a
    /// commit while it applies its pages.
    pub(crate) apply: RwLock<()>,
    /// The committed roots, readable without the writer lock (a writer holds that lock for
    /// its whole transaction).
    pub(crate) roots: Mutex<[PageId; ROOT_SLOTS]>,
    checkpoint_lock: Mutex<()>,
    poison: Arc<Poison>,
    bg: Mutex<BgState>,
    bg_cv: Condvar,
    /// The cache is mostly dirty: the cleaner should write cold pages back. An atomic
    /// rather than a field of `bg`, so that commits seeing a dirty cache while a cleaning
    /// is already asked for do not take the lock.
    cleaning_wanted: AtomicBool,
    /// Set when the log's buffer passed its write-ahead bound; the flusher then writes it
    /// at once instead of at its next interval.
    flush_wanted: AtomicBool,
    counters: Mutex<Counters>,
    fs: Arc<dyn FileSystem>,
    bugs: PlantedBugs,
    /// XA records recovered at open, until the store installs its source.
    xa_recovered: Mutex<Vec<Vec<u8>>>,
    /// Produces the in-doubt XA records a checkpoint writes to `xa.log`.
    xa_source: Mutex<Option<XaSource>>,
    /// Whether `xa.log` exists (then every checkpoint rewrites it, even when empty).
    xa_file_exists: std::sync::atomic::AtomicBool,
    _dir_lock: Box<dyn LockGuard>,
}

/// What the XA layer gives the kernel: the in-doubt records to save at a checkpoint.
pub type XaSource = Arc<dyn Fn() -> Vec<Vec<u8>> + Send + Sync>;

/// Transactional page storage on one store directory.
pub struct Kernel {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    closed: bool,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernel")
            .field("dir", &self.shared.dir)
            .finish()
    }
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::io(format!("{what} {}", path.display()), e)
}

/// Bytes the log file is preallocated to: the checkpoint trigger plus room for the commits
/// that arrive while a checkpoint runs.
fn log_prealloc(config: &StoreConfig) -> u64 {
    config.checkpoint_size + config.checkpoint_size / 4
}

impl Kernel {
    /// Opens (creating if missing) the store in `dir`: takes the directory lock, opens
    /// page.db and the log, runs recovery, and starts the background threads.
    pub fn open(fs: Arc<dyn FileSystem>, dir: &Path, config: &StoreConfig) -> Result<Kernel> {
        Self::open_with(fs, dir, config, OpenOptions::default())
    }

    /// [`Kernel::open`] with test options: deliberate bugs for the crash harness's
    /// self-test, and no background threads (so simulated runs are deterministic).
    #[doc(hidden)]
    pub fn open_with(
        fs: Arc<dyn FileSystem>,
        dir: &Path,
        config: &StoreConfig,
        options: OpenOptions,
    ) -> Result<Kernel> {
        let bugs = options.bugs;
        let started = std::time::Instant::now();
        config.validate()?;
        if !fs.exists(dir).map_err(|e| io_err("checking for", dir, e))? {
            fs.create_dir_all(dir)
                .map_err(|e| io_err("creating directory", dir, e))?;
            if !bugs.skip_dir_fsync {
                let parent = parent_dir(dir);
                fs.sync_dir(&parent)
                    .map_err(|e| io_err("syncing directory", &parent, e))?;
            }
        }
        let lock_path = dir.join("LOCK");
        let dir_lock = fs.lock(&lock_path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                Error::Locked {
                    path: dir.to_path_buf(),
                }
            } else {
                io_err("locking", &lock_path, e)
            }
        })?;
        rewrite::settle(fs.as_ref(), dir)?;
        let log_path = dir.join(crate::log::frame::LOG_FILE);
        let db_path = dir.join(crate::page::PAGE_DB);
        let log_exists = fs
            .exists(&log_path)
            .map_err(|e| io_err("checking for", &log_path, e))?;
        let db_exists = fs
            .exists(&db_path)
            .map_err(|e| io_err("checking for", &db_path, e))?;
        if log_exists && !db_exists {
            return Err(Error::corruption(
                crate::page::PAGE_DB,
                "file",
                "page.db is missing but transaction.log exists; restore page.db from a backup",
            ));
        }
        let poison = Arc::new(Poison::new());
        let pagedb = Arc::new(PageDb::open_with(
            fs.clone(),
            dir,
            config,
            poison.clone(),
            bugs,
        )?);
        let sb = pagedb.superblock();
        let (log, found) = Log::open(
            fs.as_ref(),
            dir,
            options.log_prealloc.unwrap_or_else(|| log_prealloc(config)),
            sb.checkpoint_lsn,
            poison.clone(),
            bugs,
        )?;
        let log = Arc::new(log);
        let cache = PageCache::new(
            Arc::new(PageGate(pagedb.clone())),
            Arc::new(LogGate(log.clone())),
            CacheConfig {
                min_pages: config.cache_min_pages,
                max_pages: config.cache_max_pages,
                pin_timeout: PIN_TIMEOUT,
            },
        )?;
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            config: config.clone(),
            pagedb,
            cache,
            log,
            writer: Mutex::new(WriterState {
                roots: sb.roots,
                redo_point: sb.checkpoint_lsn,
                payload: Vec::new(),
            }),
            apply: RwLock::new(()),
            roots: Mutex::new(sb.roots),
            checkpoint_lock: Mutex::new(()),
            poison,
            bg: Mutex::new(BgState::default()),
            cleaning_wanted: AtomicBool::new(false),
            flush_wanted: AtomicBool::new(false),
            bg_cv: Condvar::new(),
            counters: Mutex::new(Counters::default()),
            fs: fs.clone(),
            bugs,
            xa_recovered: Mutex::new(Vec::new()),
            xa_source: Mutex::new(None),
            xa_file_exists: std::sync::atomic::AtomicBool::new(false),
            _dir_lock: dir_lock,
        });
        // In-doubt XA state: xa.log's records, then the log's XA records after its LSN.
        let snapshot = xalog::read(fs.as_ref(), dir)?;
        shared
            .xa_file_exists
            .store(snapshot.is_some(), std::sync::atomic::Ordering::Release);
        let xa_lsn = snapshot.as_ref().map_or(sb.checkpoint_lsn, |s| s.lsn);
        if xa_lsn < sb.checkpoint_lsn {
            return Err(Error::corruption(
                xalog::XA_LOG,
                "header",
                format!(
                    "reflects LSN {xa_lsn}, older than page.db's checkpoint {}",
                    sb.checkpoint_lsn
                ),
            ));
        }
        let mut xa = snapshot.map(|s| s.records).unwrap_or_default();
        let frames = recovery::recover(&shared, found, xa_lsn, &mut xa)?;
        shared.counters.lock().recovered_frames = frames;
        *shared.xa_recovered.lock() = xa;
        // Every open ends recovery with a checkpoint: page.db then reflects the whole log,
        // and the log starts a new generation, so no stale frame is ever continued.
        shared.checkpoint(false)?;
        tracing::info!(
            dir = %dir.display(),
            page_size = shared.pagedb.page_size(),
            replayed = frames > 0,
            frames,
            ms = started.elapsed().as_millis() as u64,
            "store opened"
        );
        let threads = if options.no_background_threads {
            Vec::new()
        } else {
            spawn_background(&shared)?
        };
        Ok(Kernel {
            shared,
            threads,
            closed: false,
        })
    }

    /// Begins a write transaction; waits for the current writer to finish applying.
    pub fn begin(&self) -> Result<WriteTxn<'_>> {
        WriteTxn::begin(&self.shared)
    }

    /// Pins a committed page for reading.
    pub fn read(&self, id: PageId) -> Result<PinnedPage> {
        self.shared.poison.check()?;
        self.shared.cache.pin(id)
    }

    /// A consistent view for reading several pages: no commit applies while it is held,
    /// so every page pinned through it reflects the same set of commits. Hold it briefly:
    /// commits wait for it.
    pub fn read_view(&self) -> Result<ReadView<'_>> {
        self.shared.poison.check()?;
        Ok(ReadView {
            shared: &self.shared,
            last: None,
            _guard: self.shared.apply.read(),
        })
    }

    /// The committed root page of `slot` (0 = empty).
    pub fn root(&self, slot: usize) -> PageId {
        self.shared
            .writer
            .lock()
            .roots
            .get(slot)
            .copied()
            .unwrap_or(0)
    }

    /// One pass of the background cleaner, now: writes back up to `max` dirty pages among
    /// the least recently used (after making the log durable as far as they need), without
    /// evicting them. Returns how many it wrote. The cleaner thread runs this by itself when
    /// the cache is mostly dirty; crash tests, which run without background threads, call
    /// it to put that write path under the sweep.
    pub fn clean_cold_pages(&self, max: usize) -> Result<usize> {
        self.shared.poison.check()?;
        self.shared.cache.clean_cold(max)
    }

    /// Runs a checkpoint now: flushes dirty pages while commits continue, then briefly stops
    /// commits to sync page.db, write the superblock and recycle the log.
    pub fn checkpoint(&self) -> Result<()> {
        self.shared.checkpoint(false)
    }

    /// A checkpoint that also cuts the free pages at the end of page.db off the file (the
    /// last step of shrink). Commits continue, as in any checkpoint.
    pub fn checkpoint_truncating(&self) -> Result<()> {
        self.shared.checkpoint_truncating()
    }

    /// The durability of a commit that names none: `Sync` with `force_sync`, else `Flush`.
    pub fn default_durability(&self) -> Durability {
        if self.shared.config.force_sync {
            Durability::Sync
        } else {
            Durability::Flush
        }
    }

    /// Page size of the store.
    pub fn page_size(&self) -> usize {
        self.shared.pagedb.page_size()
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Counters of the kernel, log and cache.
    pub fn stats(&self) -> KernelStats {
        let c = self.shared.counters.lock();
        KernelStats {
            commits: c.commits,
            checkpoints: c.checkpoints,
            longest_checkpoint_stall: c.longest_stall,
            last_checkpoint: c.last_checkpoint,
            recovered_frames: c.recovered_frames,
            last_lsn: self.shared.log.last_lsn(),
            durable_lsn: self.shared.log.durable_lsn(),
            log: self.shared.log.stats(),
            cache: self.shared.cache.stats(),
            pages_total: self.shared.pagedb.page_count(),
            pages_free: self.shared.pagedb.free_pages(),
            page_size: self.shared.pagedb.page_size(),
        }
    }

    /// The XA records recovered at open (xa.log's, then the log's), in order; the XA layer
    /// folds them into its in-doubt set. Returns them once.
    pub fn take_recovered_xa(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut *self.shared.xa_recovered.lock())
    }

    /// Installs what checkpoints save to `xa.log` (the in-doubt XA records). Until then a
    /// checkpoint saves the records recovered at open.
    pub fn set_xa_source(&self, source: XaSource) {
        *self.shared.xa_source.lock() = Some(source);
    }

    /// Copies page.db, the log and xa.log into `target` (an existing directory) while
    /// commits continue: a crash image that recovery turns into the store's state at the
    /// end of the copy (see `backup` for the argument).
    pub fn backup_copy(&self, target: &Path) -> Result<Vec<CopiedFile>> {
        self.shared.backup_copy(self.shared.fs.as_ref(), target)
    }

    /// The file layer the kernel runs on.
    pub fn file_system(&self) -> &Arc<dyn FileSystem> {
        &self.shared.fs
    }

    /// Free pages (free now or waiting for the next checkpoint).
    pub fn free_page_count(&self) -> u64 {
        self.shared.pagedb.free_pages()
    }

    /// Free page ids of page.db (for checks).
    pub fn free_page_ids(&self) -> Vec<PageId> {
        self.shared.pagedb.free_page_ids()
    }

    /// Pages of page.db (for checks).
    pub fn page_count(&self) -> u64 {
        self.shared.pagedb.page_count()
    }

    /// The free-space map's pages (for checks).
    pub fn free_map_page_ids(&self) -> Vec<PageId> {
        self.shared.pagedb.free_map_page_ids()
    }

    /// Closes cleanly: final checkpoint with the clean-close mark, threads stopped, lock
    /// released.
    pub fn close(mut self) -> Result<()> {
        self.stop_threads();
        self.closed = true;
        self.shared.checkpoint(true)
    }

    fn stop_threads(&mut self) {
        {
            let mut bg = self.shared.bg.lock();
            bg.shutdown = true;
        }
        self.shared.bg_cv.notify_all();
        for t in self.threads.drain(..) {
            // A background thread that panicked has nothing left to clean up.
            let _ = t.join();
        }
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        self.stop_threads();
        if !self.closed && self.shared.poison.check().is_ok() {
            // Best effort: a failure leaves the log to recovery at the next open.
            let _ = self.shared.checkpoint(true);
        }
    }
}

impl Shared {
    /// The committed root of `slot`. Roots change under the apply lock, so a reader holding
    /// a read view sees roots and pages of the same commits.
    fn writer_roots(&self, slot: usize) -> PageId {
        self.roots.lock().get(slot).copied().unwrap_or(0)
    }

    /// Asks the checkpointer thread to run (the log passed `checkpoint_size`).
    fn request_checkpoint(&self) {
        self.bg.lock().checkpoint_wanted = true;
        self.bg_cv.notify_all();
    }

    /// Has the flusher write and sync the log's buffer now (see [`Log::wants_write_ahead`]).
    fn request_flush(&self) {
        self.raise(&self.flush_wanted);
    }

    /// Asks the cleaner thread to write cold dirty pages back (the cache is mostly dirty).
    fn request_cleaning(&self) {
        self.raise(&self.cleaning_wanted);
    }

    /// Sets a background thread's request flag and wakes the threads; a flag already set
    /// costs one atomic load, so committers can raise it on every commit.
    fn raise(&self, flag: &AtomicBool) {
        if flag.load(Ordering::Acquire) || flag.swap(true, Ordering::AcqRel) {
            return;
        }
        // Notified under the lock the thread checks the flag under, so it cannot miss it.
        let _bg = self.bg.lock();
        self.bg_cv.notify_all();
    }
}

fn spawn_background(shared: &Arc<Shared>) -> Result<Vec<JoinHandle<()>>> {
    let spawn = |name: &str, f: fn(&Shared)| {
        let s = shared.clone();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || f(&s))
            .map_err(|e| Error::io("starting a background thread", e))
    };
    Ok(vec![
        spawn("stowage-flusher", flusher)?,
        spawn("stowage-checkpointer", checkpointer)?,
        spawn("stowage-cleaner", cleaner)?,
    ])
}

/// Pages one cleaning step writes back.
const CLEAN_BATCH: usize = 128;

/// Writes cold dirty pages back while the cache is mostly dirty (from over half of it down
/// to a quarter), so that committers evict clean frames instead of writing pages back in
/// their own commit path. Runs on its own thread so that on a multi-core machine the
/// writes overlap the committers' work.
fn cleaner(s: &Shared) {
    loop {
        {
            let mut bg = s.bg.lock();
            while !bg.shutdown && !s.cleaning_wanted.load(Ordering::Acquire) {
                s.bg_cv.wait(&mut bg);
            }
            if bg.shutdown {
                return;
            }
        }
        while !s.cache.mostly_clean() {
            match s.cache.clean_cold(CLEAN_BATCH) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    // A committer's own eviction meets the same error and reports it.
                    tracing::warn!(error = %e, "background page cleaning failed");
                    break;
                }
            }
            if s.bg.lock().shutdown {
                return;
            }
        }
        s.cleaning_wanted.store(false, Ordering::Release);
    }
}

/// Syncs `Async` commits within `async_flush_interval`.
fn flusher(s: &Shared) {
    let interval = s.config.async_flush_interval;
    loop {
        {
            let mut bg = s.bg.lock();
            if bg.shutdown {
                return;
            }
            if !s.flush_wanted.load(Ordering::Acquire) {
                s.bg_cv.wait_for(&mut bg, interval);
            }
            if bg.shutdown {
                return;
            }
        }
        s.flush_wanted.store(false, Ordering::Release);
        let last = s.log.last_lsn();
        if last > s.log.durable_lsn() && s.log.sync_to(last).is_err() {
            // The log latched the poison; commits report it.
            return;
        }
    }
}

/// Runs checkpoints when the log passes `checkpoint_size`.
fn checkpointer(s: &Shared) {
    loop {
        {
            let mut bg = s.bg.lock();
            while !bg.shutdown && !bg.checkpoint_wanted {
                s.bg_cv.wait(&mut bg);
            }
            if bg.shutdown {
                return;
            }
            bg.checkpoint_wanted = false;
        }
        if s.checkpoint(false).is_err() {
            return;
        }
    }
}
