//! The store facade: the broker-facing API of API.md (opening and closing, queues,
//! transactions, reads) on top of the kernel, the catalog, the queue indexes and the
//! payload records.
//!
//! Owns: the in-memory catalog (O(queues)), the per-queue key counters, the row-lock table
//! of open transactions, and the closed state shared by every clone of a `Store`.
//!
//! Invariants:
//! - Lock order: kernel writer lock, then the catalog mutex, then the lock table; a reader
//!   takes a read view first, then the catalog mutex. The catalog's in-memory copy changes
//!   only inside a commit's apply (under the kernel's apply lock), so a reader that holds a
//!   read view sees catalog entries and pages of the same commits.
//! - Keys come from a per-queue counter that only grows; the persisted `next_key` is the
//!   counter at each commit (and at close), so no committed key, and no key handed out
//!   before a clean close, is ever handed out again.
//! - A message key removed or updated by an open transaction is in the lock table until
//!   that transaction ends: first remover wins.

mod backup;
mod check;
mod index;
mod repair;
mod report;
mod rewrite;
mod scan;
mod shrink;
mod txn;
mod types;
mod xa;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock, RwLockReadGuard};

use crate::btree;
use crate::catalog::{self, QueueMeta, Slot, CATALOG_ROOT};
use crate::config::StoreConfig;
use crate::durables::{DurableSubscription, Durables};
use crate::error::{Error, Result};
use crate::file::{FileSystem, RealFs, SimFs};
use crate::kernel::{Kernel, OpenOptions, ReadView};
use crate::log::Durability;
use crate::records;
use crate::swap::{SwapDir, SwapQueue};
use index::{IndexValue, VALUE_LEN};

pub use backup::SaveSet;
pub use repair::{QueueRepair, RepairReport};
pub use report::{CacheStats, CheckReport, StoreStats};
pub use scan::ScanReport;
pub use shrink::ShrinkReport;
pub use txn::Transaction;
pub use types::{Entry, Message, NewMessage, QueueInfo};
#[doc(hidden)]
pub use xa::fuzz_xa;
pub use xa::Xid;

/// One queue as the store keeps it in memory.
#[derive(Debug, Clone)]
pub(crate) struct QueueEntry {
    pub(crate) meta: QueueMeta,
    pub(crate) slot: Slot,
    /// The next key to hand out; shared so inserts need no lock beyond a lookup.
    pub(crate) next_key: Arc<AtomicU64>,
}

/// The in-memory catalog.
#[derive(Debug, Default)]
pub(crate) struct Catalog {
    pub(crate) queues: HashMap<String, QueueEntry>,
    pub(crate) free_slots: Vec<Slot>,
    pub(crate) pages: Vec<crate::page::PageId>,
    pub(crate) next_id: u64,
}

/// An open engine; `None` in [`Inner`] once closed.
pub(crate) struct Engine {
    pub(crate) kernel: Kernel,
    pub(crate) catalog: Mutex<Catalog>,
    /// (queue id, key) -> id of the transaction that removes or updates it.
    pub(crate) locks: Mutex<HashMap<(u64, u64), u64>>,
    pub(crate) next_txn: AtomicU64,
    /// Prepared XA transactions still in doubt.
    pub(crate) in_doubt: xa::InDoubt,
    /// The durable-subscriber files.
    pub(crate) durables: Durables,
    /// The swap files of non-persistent queues (emptied at open).
    pub(crate) swap: SwapDir,
    /// One backup at a time.
    pub(crate) backup_lock: Mutex<()>,
    /// Changes (to a value never used before, by any engine of this process) whenever a
    /// queue is created or deleted, under the catalog lock: a transaction's cached look-up
    /// of its last queue is valid while this still holds the value it was made under.
    pub(crate) catalog_epoch: AtomicU64,
}

/// A fresh value for [`Engine::catalog_epoch`].
pub(crate) fn next_catalog_epoch() -> u64 {
    static EPOCHS: AtomicU64 = AtomicU64::new(1);
    EPOCHS.fetch_add(1, Ordering::Relaxed)
}

pub(crate) struct Inner {
    engine: RwLock<Option<Engine>>,
    config: StoreConfig,
}

/// A handle to an open store. `Clone + Send + Sync`: clones share one engine.
///
/// ```
/// use stowage::{Store, StoreConfig, NewMessage, Durability};
/// let store = Store::open_in_memory(StoreConfig::default())?;
/// store.create_queue("orders")?;
/// let mut tx = store.begin();
/// let key = tx.insert("orders", NewMessage::new(b"hello".to_vec()))?;
/// tx.commit_with(Durability::Sync)?;
/// assert_eq!(store.get("orders", key)?.unwrap().payload, b"hello");
/// # Ok::<(), stowage::Error>(())
/// ```
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

/// The read guard through which every call reaches the engine.
pub(crate) struct EngineRef<'a>(RwLockReadGuard<'a, Option<Engine>>);

impl std::ops::Deref for EngineRef<'_> {
    type Target = Engine;
    fn deref(&self) -> &Engine {
        // Checked in `Store::engine`; the guard keeps it `Some` for its lifetime.
        self.0
            .as_ref()
            .unwrap_or_else(|| unreachable!("engine checked open"))
    }
}

impl Store {
    /// Opens the store in `path`, creating it (and its parents) if missing.
    pub fn open(path: impl AsRef<Path>, config: StoreConfig) -> Result<Store> {
        Self::open_with(
            Arc::new(RealFs::new()),
            path.as_ref(),
            config,
            OpenOptions::default(),
        )
    }

    /// A store that keeps everything in memory (the same engine on the simulated file layer).
    pub fn open_in_memory(config: StoreConfig) -> Result<Store> {
        Self::open_with(
            Arc::new(SimFs::new()),
            Path::new("/memory"),
            config,
            OpenOptions {
                log_prealloc: Some(0),
                ..OpenOptions::default()
            },
        )
    }

    /// Opens on any file layer with test options (crash sweeps use the simulator).
    #[doc(hidden)]
    pub fn open_with(
        fs: Arc<dyn FileSystem>,
        path: &Path,
        config: StoreConfig,
        options: OpenOptions,
    ) -> Result<Store> {
        let store = Self::open_plain(fs.clone(), path, config.clone(), options)?;
        let current = store.engine()?.kernel.page_size() as u32;
        let target = match config.page_size_recommended {
            Some(p) if config.perform_resize_on_startup && p != current => Some(p),
            _ if config.perform_compact_on_startup => Some(current),
            _ => None,
        };
        let Some(page_size) = target else {
            return Ok(store);
        };
        // After recovery (the open above); the reopen moves the rewritten files in.
        if let Err(e) = store.rewrite_into(page_size) {
            // The old files are untouched until a rewrite is complete (kernel::rewrite), so
            // a failed one (a full disk, say) leaves the store as it was: open it like that
            // rather than keep the broker from starting.
            tracing::warn!(
                error = %e,
                dir = %path.display(),
                page_size,
                "rewrite at open failed; the store opens as it was"
            );
            let _ = crate::kernel::rewrite::discard(fs.as_ref(), path);
            return Ok(store);
        }
        store.close()?;
        Self::open_plain(fs, path, config, options)
    }

    /// Opens without the startup maintenance (the rewrite's own store, and the reopen after
    /// a rewrite).
    fn open_plain(
        fs: Arc<dyn FileSystem>,
        path: &Path,
        config: StoreConfig,
        options: OpenOptions,
    ) -> Result<Store> {
        config.validate()?;
        let kernel = Kernel::open_with(fs.clone(), path, &config, options)?;
        let durables = Durables::open_with(fs.clone(), path, options.bugs)?;
        let swap = SwapDir::open(fs, path, config.swap_roll_over_size)?;
        let catalog = load_catalog(&kernel)?;
        let in_doubt: xa::InDoubt = Arc::new(Mutex::new(HashMap::new()));
        let engine = Engine {
            kernel,
            catalog: Mutex::new(catalog),
            locks: Mutex::new(HashMap::new()),
            next_txn: AtomicU64::new(1),
            in_doubt: in_doubt.clone(),
            durables,
            swap,
            backup_lock: Mutex::new(()),
            catalog_epoch: AtomicU64::new(next_catalog_epoch()),
        };
        let restored = xa::restore(&engine, engine.kernel.take_recovered_xa())?;
        *in_doubt.lock() = restored;
        engine.kernel.set_xa_source(xa::source(in_doubt));
        Ok(Store {
            inner: Arc::new(Inner {
                engine: RwLock::new(Some(engine)),
                config,
            }),
        })
    }

    pub(crate) fn engine(&self) -> Result<EngineRef<'_>> {
        let g = self.inner.engine.read();
        if g.is_none() {
            return Err(Error::Closed);
        }
        Ok(EngineRef(g))
    }

    pub(crate) fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    /// Checkpoints, syncs and releases the directory lock. Every clone fails with
    /// `Error::Closed` afterwards.
    pub fn close(&self) -> Result<()> {
        let mut g = self.inner.engine.write();
        let Some(engine) = g.take() else {
            return Err(Error::Closed);
        };
        persist_key_counters(&engine)?;
        engine.kernel.close()
    }

    /// Creates an empty queue; durable when it returns.
    pub fn create_queue(&self, name: &str) -> Result<()> {
        self.create_queue_as(name, None)
    }

    /// Creates a queue; `fixed` = (id, created_at, next_key) for a rewrite's copy of one.
    pub(crate) fn create_queue_as(&self, name: &str, fixed: Option<(u64, u64, u64)>) -> Result<()> {
        catalog::check_name(name)?;
        let e = self.engine()?;
        let mut tx = e.kernel.begin()?;
        let cat = e.catalog.lock();
        if cat.queues.contains_key(name) {
            return Err(Error::QueueExists {
                queue: name.to_string(),
            });
        }
        let mut free = cat.free_slots.clone();
        let mut pages = cat.pages.clone();
        if free.is_empty() {
            let (page, slots) = catalog::grow(&mut tx, pages.last().copied().unwrap_or(0))?;
            pages.push(page);
            free = slots;
        }
        let slot = free.remove(0);
        let (id, created_at, next_key) = fixed.unwrap_or((cat.next_id, types::now_ms(), 1));
        let next_id = cat.next_id.max(id + 1);
        let meta = QueueMeta {
            name: name.to_string(),
            id,
            index_root: btree::create(&mut tx, VALUE_LEN)?,
            next_key,
            messages: 0,
            bytes: 0,
            created_at,
            open_page: 0,
        };
        catalog::write(&mut tx, slot, &meta)?;
        catalog::set_next_id(&mut tx, pages[0], next_id)?;
        drop(cat);
        let name = name.to_string();
        tx.commit_then(Durability::Sync, || {
            let mut cat = e.catalog.lock();
            cat.free_slots = free;
            cat.pages = pages;
            cat.next_id = next_id;
            cat.queues.insert(
                name,
                QueueEntry {
                    meta,
                    slot,
                    next_key: Arc::new(AtomicU64::new(next_key)),
                },
            );
            e.catalog_epoch
                .store(next_catalog_epoch(), Ordering::Release);
        })?;
        Ok(())
    }

    /// Deletes a queue and all its messages in one atomic, durable transaction; returns how
    /// many messages it held.
    pub fn delete_queue(&self, name: &str) -> Result<u64> {
        let e = self.engine()?;
        let mut tx = e.kernel.begin()?;
        let q = e
            .catalog
            .lock()
            .queues
            .get(name)
            .cloned()
            .ok_or_else(|| Error::QueueNotFound {
                queue: name.to_string(),
            })?;
        // Data pages belong to one queue only, so every page a payload uses can simply be
        // freed (once), without updating slot directories.
        let mut payload_pages = std::collections::BTreeSet::new();
        let mut locs = Vec::new();
        btree::destroy(&mut tx, q.meta.index_root, VALUE_LEN, |key, v| {
            locs.push((key, v.to_vec()));
        })?;
        for (key, v) in &locs {
            let iv = IndexValue::decode(name, *key, v)?;
            payload_pages.extend(records::pages_of(&mut tx, iv.loc)?);
        }
        if q.meta.open_page != 0 {
            payload_pages.insert(q.meta.open_page);
        }
        for page in payload_pages {
            tx.free(page)?;
        }
        catalog::clear(&mut tx, q.slot)?;
        let removed = q.meta.messages;
        tx.commit_then(Durability::Sync, || {
            let mut cat = e.catalog.lock();
            cat.queues.remove(name);
            e.catalog_epoch
                .store(next_catalog_epoch(), Ordering::Release);
            cat.free_slots.push(q.slot);
            cat.free_slots.sort_by_key(|s| (s.page, s.index));
        })?;
        e.locks.lock().retain(|(qid, _), _| *qid != q.meta.id);
        Ok(removed)
    }

    /// Every queue, sorted by name.
    pub fn queues(&self) -> Result<Vec<QueueInfo>> {
        let e = self.engine()?;
        let cat = e.catalog.lock();
        let mut v: Vec<QueueInfo> = cat
            .queues
            .values()
            .map(|q| QueueInfo {
                name: q.meta.name.clone(),
                messages: q.meta.messages,
                bytes: q.meta.bytes,
                created_at: q.meta.created_at,
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    /// Starts a transaction. Nothing it does is visible until it commits; dropping it
    /// rolls it back.
    pub fn begin(&self) -> Transaction {
        Transaction::new(self.clone())
    }

    /// The message with this key, or `None`.
    pub fn get(&self, queue: &str, key: u64) -> Result<Option<Message>> {
        let e = self.engine()?;
        let mut view = e.kernel.read_view()?;
        let root = index_root(&e, queue)?;
        let Some(v) = btree::get(&mut view, root, VALUE_LEN, key)? else {
            return Ok(None);
        };
        let iv = IndexValue::decode(queue, key, &v)?;
        Ok(Some(load_message(&mut view, key, iv)?))
    }

    /// Up to `limit` messages with keys `>= from`, in key order.
    pub fn messages(&self, queue: &str, from: u64, limit: usize) -> Result<Vec<Message>> {
        let e = self.engine()?;
        let mut view = e.kernel.read_view()?;
        let root = index_root(&e, queue)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let found = index_range(&mut view, queue, root, from, limit)?;
        found
            .into_iter()
            .map(|(k, iv)| load_message(&mut view, k, iv))
            .collect()
    }

    /// Up to `limit` index entries with keys `>= from`, in key order; never reads a
    /// payload page.
    pub fn entries(&self, queue: &str, from: u64, limit: usize) -> Result<Vec<Entry>> {
        let e = self.engine()?;
        let mut view = e.kernel.read_view()?;
        let root = index_root(&e, queue)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        Ok(index_range(&mut view, queue, root, from, limit)?
            .into_iter()
            .map(|(k, iv)| Entry {
                key: k,
                priority: iv.priority,
                delivery_count: iv.delivery_count,
                expiration: iv.expiration,
                size: u64::from(iv.size),
            })
            .collect())
    }

    /// Saves a durable subscription (insert or replace), atomically on disk.
    pub fn save_durable(&self, d: &DurableSubscription) -> Result<()> {
        self.engine()?.durables.save(d)
    }

    /// The durable subscription of `client_id` named `name`, if any.
    pub fn durable(&self, client_id: &str, name: &str) -> Result<Option<DurableSubscription>> {
        self.engine()?.durables.get(client_id, name)
    }

    /// Every durable subscription, sorted by (client id, name).
    pub fn durables(&self) -> Result<Vec<DurableSubscription>> {
        self.engine()?.durables.list()
    }

    /// Removes a durable subscription; returns whether it existed.
    pub fn remove_durable(&self, client_id: &str, name: &str) -> Result<bool> {
        self.engine()?.durables.remove(client_id, name)
    }

    /// The swap file set of a non-persistent queue (one per name at a time); dropping it
    /// deletes its files. Swap files never survive a restart.
    pub fn swap_queue(&self, name: &str) -> Result<SwapQueue> {
        self.engine()?.swap.queue(name)
    }

    /// Runs a checkpoint now.
    pub fn checkpoint(&self) -> Result<()> {
        self.engine()?.kernel.checkpoint()
    }

    /// Engine counters (kernel, log, cache).
    #[doc(hidden)]
    pub fn kernel_stats(&self) -> Result<crate::kernel::KernelStats> {
        Ok(self.engine()?.kernel.stats())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(engine) = self.engine.get_mut().take() {
            // Best effort, as the kernel's own drop: a failure leaves work to recovery.
            let _ = persist_key_counters(&engine);
            let _ = engine.kernel.close();
        }
    }
}

fn index_root(e: &Engine, queue: &str) -> Result<crate::page::PageId> {
    e.catalog
        .lock()
        .queues
        .get(queue)
        .map(|q| q.meta.index_root)
        .ok_or_else(|| Error::QueueNotFound {
            queue: queue.to_string(),
        })
}

/// Decoded index entries with keys `>= from`, at most `limit` (no allocation per entry).
fn index_range(
    view: &mut ReadView<'_>,
    queue: &str,
    root: crate::page::PageId,
    from: u64,
    limit: usize,
) -> Result<Vec<(u64, IndexValue)>> {
    let mut out = Vec::with_capacity(limit.min(4096));
    let mut bad = None;
    btree::range(
        view,
        root,
        VALUE_LEN,
        from,
        limit,
        |k, v| match IndexValue::decode(queue, k, v) {
            Ok(iv) => out.push((k, iv)),
            Err(e) => {
                bad.get_or_insert(e);
            }
        },
    )?;
    match bad {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

fn load_message(view: &mut ReadView<'_>, key: u64, iv: IndexValue) -> Result<Message> {
    Ok(Message {
        key,
        priority: iv.priority,
        delivery_count: iv.delivery_count,
        expiration: iv.expiration,
        payload: records::load(view, iv.loc, iv.size)?,
    })
}

fn load_catalog(kernel: &Kernel) -> Result<Catalog> {
    let mut view = kernel.read_view()?;
    let root = view.root(CATALOG_ROOT);
    let loaded = catalog::load(&mut view, root, kernel.page_count())?;
    let mut queues = HashMap::new();
    for (meta, slot) in loaded.queues {
        queues.insert(
            meta.name.clone(),
            QueueEntry {
                next_key: Arc::new(AtomicU64::new(meta.next_key)),
                meta,
                slot,
            },
        );
    }
    Ok(Catalog {
        queues,
        free_slots: loaded.free_slots,
        pages: loaded.pages,
        next_id: loaded.next_id,
    })
}

/// Persists key counters that ran ahead of the catalog (keys handed to transactions that
/// rolled back), so that a clean close never lets a key come back.
fn persist_key_counters(e: &Engine) -> Result<()> {
    let mut tx = e.kernel.begin()?;
    let mut changed = Vec::new();
    {
        let cat = e.catalog.lock();
        for (name, q) in &cat.queues {
            let counter = q.next_key.load(Ordering::Acquire);
            if counter > q.meta.next_key {
                let mut meta = q.meta.clone();
                meta.next_key = counter;
                catalog::write(&mut tx, q.slot, &meta)?;
                changed.push((name.clone(), meta));
            }
        }
    }
    if changed.is_empty() {
        return Ok(());
    }
    tx.commit_then(Durability::Sync, || {
        let mut cat = e.catalog.lock();
        for (name, meta) in changed {
            if let Some(q) = cat.queues.get_mut(&name) {
                q.meta = meta;
            }
        }
    })?;
    Ok(())
}
