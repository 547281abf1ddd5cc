//! Broker transactions: buffered operations, row locks, and the commit that applies them to
//! the queue indexes and payload records in one kernel transaction.
//!
//! Invariants: a transaction's operations touch no page before `commit`; each call either
//! takes effect (in the buffer) or returns an error and changes nothing, so the
//! transaction stays usable. Keys removed or updated are locked in the store's lock table
//! from the call until the transaction ends (commit, rollback or drop).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::index::{IndexValue, VALUE_LEN};
use super::{Engine, Store};
use crate::btree;
use crate::catalog::{self, QueueMeta};
use crate::error::{Error, Result};
use crate::kernel::WriteTxn;
use crate::log::Durability;
use crate::records;
use crate::store::types::NewMessage;
use crate::store::xa::{encode_prepare, Prepared, Xid};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    Insert {
        queue: Arc<str>,
        queue_id: u64,
        key: u64,
        msg: NewMessage,
    },
    Remove {
        queue: Arc<str>,
        queue_id: u64,
        key: u64,
    },
    SetDeliveryCount {
        queue: Arc<str>,
        queue_id: u64,
        key: u64,
        count: u32,
    },
}

/// A transaction on a [`Store`]. Dropping it without committing rolls it back.
#[derive(Debug)]
pub struct Transaction {
    store: Store,
    id: u64,
    ops: Vec<Op>,
    /// (queue id, key) pairs this transaction holds in the lock table.
    locked: Vec<(u64, u64)>,
    done: bool,
    /// The last queue `insert` looked up: a publisher's run of inserts into one queue
    /// then takes neither the catalog lock nor a hash of the name, nor a copy of the name
    /// per message.
    last_queue: Option<CachedQueue>,
}

/// A queue look-up, valid while the engine's `catalog_epoch` is unchanged (no queue was
/// created or deleted since).
#[derive(Debug)]
struct CachedQueue {
    name: Arc<str>,
    epoch: u64,
    id: u64,
    next_key: Arc<AtomicU64>,
}

impl Transaction {
    pub(crate) fn new(store: Store) -> Self {
        let id = store
            .engine()
            .map(|e| e.next_txn.fetch_add(1, Ordering::Relaxed))
            .unwrap_or(0);
        Transaction {
            store,
            id,
            ops: Vec::new(),
            locked: Vec::new(),
            done: false,
            last_queue: None,
        }
    }

    fn queue(
        e: &Engine,
        name: &str,
    ) -> Result<(u64, std::sync::Arc<std::sync::atomic::AtomicU64>)> {
        let cat = e.catalog.lock();
        let q = cat.queues.get(name).ok_or_else(|| Error::QueueNotFound {
            queue: name.to_string(),
        })?;
        Ok((q.meta.id, q.next_key.clone()))
    }

    /// The look-up of `queue`, from `cache` while no queue was created or deleted since
    /// it was made (the epoch is read under the catalog lock, with the look-up).
    fn cached_queue<'c>(
        cache: &'c mut Option<CachedQueue>,
        e: &Engine,
        queue: &str,
    ) -> Result<&'c CachedQueue> {
        let epoch = e.catalog_epoch.load(Ordering::Acquire);
        if !matches!(cache, Some(c) if &*c.name == queue && c.epoch == epoch) {
            let cat = e.catalog.lock();
            let q = cat.queues.get(queue).ok_or_else(|| Error::QueueNotFound {
                queue: queue.to_string(),
            })?;
            return Ok(cache.insert(CachedQueue {
                name: Arc::from(queue),
                epoch: e.catalog_epoch.load(Ordering::Acquire),
                id: q.meta.id,
                next_key: q.next_key.clone(),
            }));
        }
        // Matched above.
        cache
            .as_ref()
            .ok_or_else(|| Error::invalid_argument("queue look-up cache empty"))
    }

    /// Adds a message; returns its key (strictly increasing per queue, never reused).
    pub fn insert(&mut self, queue: &str, msg: impl Into<NewMessage>) -> Result<u64> {
        let msg = msg.into();
        let e = self.store.engine()?;
        let max = self.store.config().max_message_size;
        let size = msg.payload.len() as u64;
        if size > max {
            return Err(Error::TooLarge { size, max });
        }
        if msg.priority > 9 {
            return Err(Error::invalid_argument(format!(
                "priority must be 0..=9, got {}",
                msg.priority
            )));
        }
        let cached = Self::cached_queue(&mut self.last_queue, &e, queue)?;
        let key = cached.next_key.fetch_add(1, Ordering::AcqRel);
        let (name, queue_id) = (cached.name.clone(), cached.id);
        self.ops.push(Op::Insert {
            queue: name,
            queue_id,
            key,
            msg,
        });
        Ok(key)
    }

    /// Locks `key` for this transaction after checking it exists (committed, or inserted by
    /// this transaction). Returns true if it was inserted by this transaction.
    fn claim(&mut self, e: &Engine, queue: &str, queue_id: u64, key: u64) -> Result<bool> {
        let own_insert = self.ops.iter().any(|op| {
            matches!(op, Op::Insert { queue_id: q, key: k, .. } if *q == queue_id && *k == key)
        });
        if own_insert {
            return Ok(true);
        }
        if self.locked.contains(&(queue_id, key)) {
            return Ok(false);
        }
        let exists = {
            let mut view = e.kernel.read_view()?;
            let root = super::index_root(e, queue)?;
            btree::get(&mut view, root, VALUE_LEN, key)?.is_some()
        };
        if !exists {
            return Err(Error::MessageNotFound {
                queue: queue.to_string(),
                key,
            });
        }
        let mut locks = e.locks.lock();
        match locks.get(&(queue_id, key)) {
            Some(&owner) if owner != self.id => Err(Error::MessageLocked {
                queue: queue.to_string(),
                key,
            }),
            _ => {
                locks.insert((queue_id, key), self.id);
                self.locked.push((queue_id, key));
                Ok(false)
            }
        }
    }

    /// Removes a message at commit. `MessageNotFound` if absent, `MessageLocked` if another
    /// open transaction removes or updates it.
    pub fn remove(&mut self, queue: &str, key: u64) -> Result<()> {
        let store = self.store.clone();
        let e = store.engine()?;
        let (queue_id, _) = Self::queue(&e, queue)?;
        if self.ops.iter().any(|op| matches!(op, Op::Remove { queue_id: q, key: k, .. } if *q == queue_id && *k == key)) {
            return Err(Error::MessageNotFound {
                queue: queue.to_string(),
                key,
            });
        }
        if self.claim(&e, queue, queue_id, key)? {
            // Removing this transaction's own insert: both vanish.
            self.ops.retain(|op| {
                !matches!(op, Op::Insert { queue_id: q, key: k, .. } | Op::SetDeliveryCount { queue_id: q, key: k, .. } if *q == queue_id && *k == key)
            });
            return Ok(());
        }
        self.ops.push(Op::Remove {
            queue: queue.into(),
            queue_id,
            key,
        });
        Ok(())
    }

    /// Sets a message's delivery count at commit (same errors as [`Transaction::remove`]).
    pub fn set_delivery_count(&mut self, queue: &str, key: u64, count: u32) -> Result<()> {
        let store = self.store.clone();
        let e = store.engine()?;
        let (queue_id, _) = Self::queue(&e, queue)?;
        if self.ops.iter().any(|op| matches!(op, Op::Remove { queue_id: q, key: k, .. } if *q == queue_id && *k == key)) {
            return Err(Error::MessageNotFound {
                queue: queue.to_string(),
                key,
            });
        }
        self.claim(&e, queue, queue_id, key)?;
        self.ops.push(Op::SetDeliveryCount {
            queue: queue.into(),
            queue_id,
            key,
            count,
        });
        Ok(())
    }

    /// Commits with the configured durability (`Sync` when `force_sync`, else `Flush`).
    pub fn commit(self) -> Result<()> {
        let d = if self.store.config().force_sync {
            Durability::Sync
        } else {
            Durability::Flush
        };
        self.commit_with(d)
    }

    /// Commits: every operation becomes visible atomically, as durable as `durability`
    /// says when this returns.
    pub fn commit_with(mut self, durability: Durability) -> Result<()> {
        self.done = true;
        let store = self.store.clone();
        let e = store.engine()?;
        let r = self.apply(&e, durability);
        self.release(&e);
        r
    }

    fn apply(&mut self, e: &Engine, durability: Durability) -> Result<()> {
        if self.ops.is_empty() {
            return Ok(());
        }
        let mut tx = e.kernel.begin()?;
        let metas = stage(e, &mut tx, &self.ops, false)?;
        tx.commit_then(durability, || install(e, metas))?;
        Ok(())
    }

    /// Prepares the transaction for two-phase commit under `xid`: its operations and the
    /// xid become durable in one atomic step; nothing is visible until
    /// [`Store::commit_prepared`]; the messages it removes or updates stay locked until it
    /// is resolved, also across restarts. `XidExists` if `xid` is already in doubt.
    pub fn prepare(mut self, xid: Xid) -> Result<()> {
        self.done = true;
        let store = self.store.clone();
        let e = store.engine()?;
        let r = self.prepare_in(&e, xid);
        if r.is_err() {
            self.release(&e);
        }
        r
    }

    fn prepare_in(&mut self, e: &Engine, xid: Xid) -> Result<()> {
        let mut tx = e.kernel.begin()?;
        if e.in_doubt.lock().contains_key(&xid) {
            return Err(Error::XidExists {
                xid: format!("{xid:?}"),
            });
        }
        {
            let cat = e.catalog.lock();
            for op in &self.ops {
                let (name, id) = op_queue(op);
                if cat.queues.get(name).is_none_or(|q| q.meta.id != id) {
                    return Err(Error::QueueNotFound {
                        queue: name.to_string(),
                    });
                }
            }
        }
        tx.attach_xa(encode_prepare(&xid, &self.ops));
        let prepared = Prepared {
            txn_id: self.id,
            ops: std::mem::take(&mut self.ops),
            locked: std::mem::take(&mut self.locked),
        };
        let locked = prepared.locked.clone();
        let r = tx.commit_then(Durability::Sync, || {
            e.in_doubt.lock().insert(xid, prepared);
        });
        if r.is_err() {
            // Not prepared: the locks go back to this transaction, which releases them.
            self.locked = locked;
        }
        r.map(|_| ())
    }

    /// Discards every operation.
    pub fn rollback(mut self) {
        self.done = true;
        if let Ok(e) = self.store.clone().engine() {
            self.release(&e);
        }
    }

    fn release(&mut self, e: &Engine) {
        if self.locked.is_empty() {
            return;
        }
        let mut locks = e.locks.lock();
        for k in self.locked.drain(..) {
            if locks.get(&k) == Some(&self.id) {
                locks.remove(&k);
            }
        }
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        if !self.done {
            if let Ok(e) = self.store.clone().engine() {
                self.release(&e);
            }
        }
    }
}

/// Working copies of the catalog entries of the queues a commit touches, by name.
pub(crate) type Metas = HashMap<String, (QueueMeta, catalog::Slot)>;

/// Applies `ops` to the kernel transaction (indexes, records, catalog entries) and returns
/// the new catalog entries to install when the commit applies. With `skip_missing`, ops on
/// queues deleted since are dropped (resolving a prepared transaction) instead of failing.
pub(crate) fn stage(
    e: &Engine,
    tx: &mut WriteTxn<'_>,
    ops: &[Op],
    skip_missing: bool,
) -> Result<Metas> {
    let mut metas = Metas::new();
    let mut live = Vec::with_capacity(ops.len());
    {
        let cat = e.catalog.lock();
        for op in ops {
            let (name, id) = op_queue(op);
            match cat.queues.get(name) {
                Some(q) if q.meta.id == id => {
                    if !metas.contains_key(name) {
                        let mut meta = q.meta.clone();
                        meta.next_key = meta.next_key.max(q.next_key.load(Ordering::Acquire));
                        metas.insert(name.to_string(), (meta, q.slot));
                    }
                    live.push(op);
                }
                _ if skip_missing => {}
                _ => {
                    return Err(Error::QueueNotFound {
                        queue: name.to_string(),
                    })
                }
            }
        }
    }
    for op in live {
        let (name, _) = op_queue(op);
        if let Some((meta, _)) = metas.get_mut(name) {
            apply_op(tx, meta, op)?;
        }
    }
    for (meta, slot) in metas.values() {
        catalog::write(tx, *slot, meta)?;
    }
    Ok(metas)
}

/// Installs staged catalog entries (called while the commit applies).
pub(crate) fn install(e: &Engine, metas: Metas) {
    let mut cat = e.catalog.lock();
    for (name, (meta, _)) in metas {
        if let Some(q) = cat.queues.get_mut(&name) {
            q.meta = meta;
        }
    }
}

pub(crate) fn op_queue(op: &Op) -> (&str, u64) {
    match op {
        Op::Insert {
            queue, queue_id, ..
        }
        | Op::Remove {
            queue, queue_id, ..
        }
        | Op::SetDeliveryCount {
            queue, queue_id, ..
        } => (queue, *queue_id),
    }
}

fn apply_op(tx: &mut WriteTxn<'_>, meta: &mut QueueMeta, op: &Op) -> Result<()> {
    match op {
        Op::Insert { key, msg, .. } => {
            insert_message(tx, meta, *key, msg, 0)?;
        }
        Op::Remove { queue, key, .. } => {
            let (root, old) = btree::remove(tx, meta.index_root, VALUE_LEN, *key)?;
            let old = old.ok_or_else(|| Error::MessageNotFound {
                queue: queue.to_string(),
                key: *key,
            })?;
            meta.index_root = root;
            let iv = IndexValue::decode(queue, *key, &old)?;
            records::delete(tx, &mut meta.open_page, iv.loc)?;
            meta.messages = meta.messages.saturating_sub(1);
            meta.bytes = meta.bytes.saturating_sub(u64::from(iv.size));
        }
        Op::SetDeliveryCount {
            queue, key, count, ..
        } => {
            let old = btree::get(tx, meta.index_root, VALUE_LEN, *key)?.ok_or_else(|| {
                Error::MessageNotFound {
                    queue: queue.to_string(),
                    key: *key,
                }
            })?;
            let mut iv = IndexValue::decode(queue, *key, &old)?;
            iv.delivery_count = *count;
            btree::update(tx, meta.index_root, VALUE_LEN, *key, &iv.encode())?;
        }
    }
    Ok(())
}

/// Stores `msg` under `key` (payload, index entry, catalog counters in `meta`): the insert
/// of a commit, and the copy of a message by a rewrite, which keeps its delivery count.
pub(crate) fn insert_message(
    tx: &mut WriteTxn<'_>,
    meta: &mut QueueMeta,
    key: u64,
    msg: &NewMessage,
    delivery_count: u32,
) -> Result<()> {
    let loc = records::store(tx, &mut meta.open_page, &msg.payload)?;
    let value = IndexValue {
        priority: msg.priority,
        delivery_count,
        expiration: msg.expiration,
        size: msg.payload.len() as u32,
        loc,
    };
    meta.index_root = btree::insert(tx, meta.index_root, VALUE_LEN, key, &value.encode())?;
    meta.messages += 1;
    meta.bytes += msg.payload.len() as u64;
    meta.next_key = meta.next_key.max(key + 1);
    Ok(())
}
