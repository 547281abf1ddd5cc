//! Repair: salvage what is intact of a damaged store into a new one, naming every message
//! lost, per queue.
//!
//! Owns: [`RepairReport`] and the salvage walk (catalog, each queue's index, each payload,
//! the in-doubt XA transactions) that feeds the rewrite of `store::rewrite`.
//!
//! Invariants:
//! - One bad page loses only what lies under it: a damaged catalog page its queues, a
//!   damaged index page the key range its parent gives it, a damaged payload page the
//!   messages stored in it (SwiftMQ drops the whole queue).
//! - The damaged files are replaced only by a complete, checked store (the rewrite
//!   directory protocol of `kernel::rewrite`); a crash during repair leaves the old store or
//!   the repaired one.
//! - A prepared transaction keeps every operation whose message survived; an operation on a
//!   lost message is dropped and reported, so the transaction can still resolve.
//!
//! Scope: damage inside page.db's pages (what `check()` reports). A store whose superblocks,
//! free-space map or log cannot be read fails to open here as well (`Error::Corruption`
//! naming the file): restore it from a backup.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use super::index::{IndexValue, VALUE_LEN};
use super::rewrite::Rewriter;
use super::txn::Op;
use super::types::Message;
use super::xa::{self, Xid};
use super::Store;
use crate::btree::{self, LostRange};
use crate::catalog::{self, CATALOG_ROOT};
use crate::config::StoreConfig;
use crate::error::Result;
use crate::file::{FileSystem, RealFs};
use crate::kernel::{Kernel, OpenOptions};
use crate::records;

/// What repair lost in one queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueRepair {
    /// The queue.
    pub name: String,
    /// Messages copied into the repaired store.
    pub recovered: u64,
    /// Keys whose index entry survived but whose payload (or entry) could not be read.
    pub lost_keys: Vec<u64>,
    /// Key ranges under index pages that could not be read, with the reason.
    pub lost_ranges: Vec<LostRange>,
    /// Messages the catalog counted that were not recovered (those in `lost_keys` and those
    /// in `lost_ranges`).
    pub lost_messages: u64,
}

/// What [`Store::repair`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// Every queue found, with what it lost (empty lists: nothing).
    pub queues: Vec<QueueRepair>,
    /// Damage that is not one queue's: unreadable catalog entries or pages, dropped XA
    /// operations, each naming where.
    pub problems: Vec<String>,
    /// Messages copied into the repaired store.
    pub messages_recovered: u64,
    /// Messages known lost (the sum over the queues).
    pub messages_lost: u64,
    /// Prepared transactions kept.
    pub prepared_kept: usize,
}

impl RepairReport {
    /// True when nothing was lost.
    pub fn is_lossless(&self) -> bool {
        self.messages_lost == 0
            && self.problems.is_empty()
            && self
                .queues
                .iter()
                .all(|q| q.lost_keys.is_empty() && q.lost_ranges.is_empty())
    }
}

/// Messages per batch handed to the rewrite.
const BATCH: usize = 512;

impl Store {
    /// Salvages the store in `dir` into a consistent one in its place and reports what was
    /// lost per queue. The store must not be open. The result opens cleanly with `check()`
    /// clean.
    ///
    /// ```
    /// use stowage::{Store, StoreConfig, NewMessage};
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Store::open(dir.path(), StoreConfig { initial_db_size_pages: 16, ..StoreConfig::default() })?;
    /// store.create_queue("q")?;
    /// let mut tx = store.begin();
    /// tx.insert("q", NewMessage::new(b"kept".to_vec()))?;
    /// tx.commit()?;
    /// store.close()?;
    /// let report = Store::repair(dir.path(), StoreConfig::default())?;
    /// assert!(report.is_lossless());
    /// assert_eq!(report.queues[0].recovered, 1);
    /// # Ok::<(), stowage::Error>(())
    /// ```
    pub fn repair(dir: impl AsRef<Path>, config: StoreConfig) -> Result<RepairReport> {
        Self::repair_with(
            Arc::new(RealFs::new()),
            dir.as_ref(),
            config,
            OpenOptions::default(),
        )
    }

    /// [`Store::repair`] on any file layer.
    #[doc(hidden)]
    pub fn repair_with(
        fs: Arc<dyn FileSystem>,
        dir: &Path,
        config: StoreConfig,
        options: OpenOptions,
    ) -> Result<RepairReport> {
        let config = StoreConfig {
            perform_compact_on_startup: false,
            perform_resize_on_startup: false,
            ..config
        };
        config.validate()?;
        let kernel = Kernel::open_with(fs.clone(), dir, &config, options)?;
        let mut report = RepairReport::default();
        let w = Rewriter::begin(fs.clone(), dir, &config, kernel.page_size() as u32)?;
        let lost = salvage_into(&kernel, &w, &mut report)?;
        let in_doubt = salvage_xa(&kernel, &lost, &mut report)?;
        report.prepared_kept = in_doubt.len();
        let next_id = lost.next_queue_id;
        w.finish(next_id, in_doubt)?;
        kernel.close()?;
        // The open settles the rewrite: the repaired files replace the damaged ones.
        let repaired = Self::open_with(fs, dir, config, options)?;
        let check = repaired.check()?;
        repaired.close()?;
        if !check.is_clean() {
            return Err(crate::error::Error::corruption(
                crate::page::PAGE_DB,
                "repaired store",
                format!("check found {:?}", check.problems),
            ));
        }
        Ok(report)
    }
}

/// What was lost, for filtering the prepared transactions.
struct Lost {
    /// Queue id -> (name, lost keys, lost ranges).
    queues: HashMap<u64, (BTreeSet<u64>, Vec<LostRange>)>,
    next_queue_id: u64,
}

impl Lost {
    fn covers(&self, queue_id: u64, key: u64) -> bool {
        match self.queues.get(&queue_id) {
            None => true,
            Some((keys, ranges)) => {
                keys.contains(&key)
                    || ranges
                        .iter()
                        .any(|r| key >= r.lo && r.hi.is_none_or(|h| key < h))
            }
        }
    }
}

/// Copies every readable queue and message of `kernel` into `w`.
fn salvage_into(kernel: &Kernel, w: &Rewriter, report: &mut RepairReport) -> Result<Lost> {
    let mut view = kernel.read_view()?;
    let root = view.root(CATALOG_ROOT);
    let (loaded, problems) = catalog::salvage(&mut view, root, kernel.page_count());
    report
        .problems
        .extend(problems.into_iter().map(|e| format!("catalog: {e}")));
    let mut metas: Vec<_> = loaded.queues.into_iter().map(|(m, _)| m).collect();
    metas.sort_by_key(|m| m.id);
    let mut lost = Lost {
        queues: HashMap::new(),
        next_queue_id: metas
            .iter()
            .map(|m| m.id + 1)
            .max()
            .unwrap_or(1)
            .max(loaded.next_id),
    };
    for meta in metas {
        w.add_queue(&meta)?;
        let mut q = QueueRepair {
            name: meta.name.clone(),
            ..QueueRepair::default()
        };
        let mut batch: Vec<Message> = Vec::new();
        let mut failed = None;
        let name = meta.name.clone();
        let ranges = btree::salvage(&mut view, meta.index_root, VALUE_LEN, &mut |src, key, v| {
            let msg = IndexValue::decode(&name, key, v).and_then(|iv| {
                Ok(Message {
                    key,
                    priority: iv.priority,
                    delivery_count: iv.delivery_count,
                    expiration: iv.expiration,
                    payload: records::load(src, iv.loc, iv.size)?,
                })
            });
            match msg {
                Ok(m) => batch.push(m),
                Err(_) => q.lost_keys.push(key),
            }
            if batch.len() >= BATCH && failed.is_none() {
                q.recovered += batch.len() as u64;
                if let Err(e) = w.add_messages(&name, std::mem::take(&mut batch)) {
                    failed = Some(e);
                }
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
        q.recovered += batch.len() as u64;
        w.add_messages(&name, batch)?;
        q.lost_ranges = ranges;
        q.lost_messages = meta
            .messages
            .saturating_sub(q.recovered)
            .max(q.lost_keys.len() as u64);
        report.messages_recovered += q.recovered;
        report.messages_lost += q.lost_messages;
        lost.queues.insert(
            meta.id,
            (q.lost_keys.iter().copied().collect(), q.lost_ranges.clone()),
        );
        report.queues.push(q);
    }
    report.queues.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(lost)
}

/// The in-doubt transactions, without operations on lost messages or queues.
fn salvage_xa(
    kernel: &Kernel,
    lost: &Lost,
    report: &mut RepairReport,
) -> Result<HashMap<Xid, Vec<Op>>> {
    let mut map = xa::fold(kernel.take_recovered_xa(), &mut |e| {
        report.problems.push(format!("XA record dropped: {e}"));
        Ok(())
    })?;
    for (x, ops) in map.iter_mut() {
        ops.retain(|op| {
            let (queue, queue_id, key, inserts) = match op {
                Op::Insert {
                    queue,
                    queue_id,
                    key,
                    ..
                } => (queue, *queue_id, *key, true),
                Op::Remove {
                    queue,
                    queue_id,
                    key,
                }
                | Op::SetDeliveryCount {
                    queue,
                    queue_id,
                    key,
                    ..
                } => (queue, *queue_id, *key, false),
            };
            let gone = if inserts {
                !lost.queues.contains_key(&queue_id)
            } else {
                lost.covers(queue_id, key)
            };
            if gone {
                report.problems.push(format!(
                    "prepared {x:?}: dropped its operation on lost message {key} of queue {queue:?}"
                ));
            }
            !gone
        });
    }
    Ok(map)
}
