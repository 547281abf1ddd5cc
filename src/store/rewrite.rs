//! Rewriting a store into a fresh `page.db`: compaction and resize at open, and the output
//! of repair.
//!
//! Owns: the copy of queues, messages and prepared transactions into a new store built in
//! the kernel's rewrite directory (`kernel::rewrite` owns the directory protocol that swaps
//! the new files in at the next open).
//!
//! Invariants (crash argument in docs/design.md, "Rewrite: compact, resize and repair"):
//! - The new store is closed cleanly before it is marked complete, so the marker never
//!   names a store that needs its log to be consistent.
//! - Keys, queue ids, key counters, delivery counts and prepared XA transactions are copied
//!   as they are: nothing is renumbered (SwiftMQ renumbers keys and orphans XA records).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::txn::{insert_message, Op};
use super::types::{Message, NewMessage};
use super::xa::{self, Xid};
use super::Store;
use crate::catalog::{self, QueueMeta};
use crate::config::StoreConfig;
use crate::error::{Error, Result};
use crate::file::FileSystem;
use crate::kernel::rewrite::{self, REWRITE_DIR};
use crate::kernel::OpenOptions;
use crate::log::Durability;

/// Messages per transaction of the copy.
const BATCH: usize = 512;

/// A new store being built in `rewrite.tmp/` of a store directory.
pub(crate) struct Rewriter {
    store: Store,
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
}

impl Rewriter {
    /// Starts a rewrite of the store in `dir` at `page_size`, discarding any leftover
    /// rewrite directory.
    pub(crate) fn begin(
        fs: Arc<dyn FileSystem>,
        dir: &Path,
        config: &StoreConfig,
        page_size: u32,
    ) -> Result<Rewriter> {
        let tmp = dir.join(REWRITE_DIR);
        rewrite::discard(fs.as_ref(), dir)?;
        let config = StoreConfig {
            page_size,
            perform_compact_on_startup: false,
            perform_resize_on_startup: false,
            ..config.clone()
        };
        config.validate()?;
        let store = Store::open_plain(fs.clone(), &tmp, config, OpenOptions::default())?;
        Ok(Rewriter {
            store,
            fs,
            dir: dir.to_path_buf(),
        })
    }

    /// Creates a queue with `meta`'s name, id, creation time and key counter.
    pub(crate) fn add_queue(&self, meta: &QueueMeta) -> Result<()> {
        self.store
            .create_queue_as(&meta.name, Some((meta.id, meta.created_at, meta.next_key)))
    }

    /// Copies messages (keys, priorities, delivery counts, expirations, payloads) into
    /// `queue`, in order of increasing key; the payloads are moved, not copied.
    pub(crate) fn add_messages(&self, queue: &str, msgs: Vec<Message>) -> Result<()> {
        let e = self.store.engine()?;
        let mut msgs = msgs.into_iter().peekable();
        while msgs.peek().is_some() {
            let mut tx = e.kernel.begin()?;
            let (mut meta, slot) = {
                let cat = e.catalog.lock();
                let q = cat.queues.get(queue).ok_or_else(|| Error::QueueNotFound {
                    queue: queue.to_string(),
                })?;
                (q.meta.clone(), q.slot)
            };
            for m in msgs.by_ref().take(BATCH) {
                let msg = NewMessage {
                    payload: m.payload,
                    priority: m.priority,
                    expiration: m.expiration,
                };
                insert_message(&mut tx, &mut meta, m.key, &msg, m.delivery_count)?;
            }
            catalog::write(&mut tx, slot, &meta)?;
            // The copy needs no durability of its own: `finish` closes the store cleanly
            // before the marker, and an incomplete rewrite is thrown away.
            tx.commit_then(Durability::Async, || {
                if let Some(q) = e.catalog.lock().queues.get_mut(queue) {
                    q.next_key.fetch_max(meta.next_key, Ordering::AcqRel);
                    q.meta = meta;
                }
            })?;
        }
        Ok(())
    }

    /// Adds the prepared transactions, sets the next queue id, closes the new store cleanly
    /// and marks it complete. The next open of the directory swaps it in.
    pub(crate) fn finish(self, next_queue_id: u64, in_doubt: HashMap<Xid, Vec<Op>>) -> Result<()> {
        {
            let e = self.store.engine()?;
            let adopted = xa::adopt(&e, in_doubt);
            e.in_doubt.lock().extend(adopted);
            let first = e.catalog.lock().pages.first().copied();
            if let Some(first) = first {
                let mut tx = e.kernel.begin()?;
                catalog::set_next_id(&mut tx, first, next_queue_id)?;
                tx.commit_then(Durability::Async, || {
                    let mut cat = e.catalog.lock();
                    cat.next_id = cat.next_id.max(next_queue_id);
                })?;
            }
        }
        self.store.close()?;
        rewrite::mark_complete(self.fs.as_ref(), &self.dir)
    }
}

impl Store {
    /// Rewrites this store into `rewrite.tmp/` at `page_size`, densely: every queue with
    /// its id and key counter, every message with its key, and every prepared transaction.
    /// The next open of the directory (after this store is closed) swaps it in.
    pub(crate) fn rewrite_into(&self, page_size: u32) -> Result<()> {
        let e = self.engine()?;
        let fs = e.kernel.file_system().clone();
        let dir = e.kernel.dir().to_path_buf();
        let w = Rewriter::begin(fs, &dir, self.config(), page_size)?;
        let (metas, next_id) = {
            let cat = e.catalog.lock();
            let mut metas: Vec<QueueMeta> = cat
                .queues
                .values()
                .map(|q| {
                    let mut m = q.meta.clone();
                    m.next_key = m.next_key.max(q.next_key.load(Ordering::Acquire));
                    m
                })
                .collect();
            metas.sort_by_key(|m| m.id);
            (metas, cat.next_id)
        };
        drop(e);
        for meta in &metas {
            w.add_queue(meta)?;
            let mut from = 0;
            loop {
                let batch = self.messages(&meta.name, from, BATCH)?;
                let Some(last) = batch.last() else { break };
                from = last.key + 1;
                w.add_messages(&meta.name, batch)?;
            }
        }
        let in_doubt: HashMap<Xid, Vec<Op>> = {
            let e = self.engine()?;
            let map = e.in_doubt.lock();
            map.iter()
                .map(|(x, p)| (x.clone(), p.ops.clone()))
                .collect()
        };
        w.finish(next_id, in_doubt)
    }
}
