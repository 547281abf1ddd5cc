//! Crash sweep of XA: prepare, commit_prepared and rollback_prepared interleaved with
//! ordinary commits and checkpoints (which move the in-doubt set from the log to xa.log).
//! After every crash, each in-doubt xid must still hold all its operations (checked by
//! committing every in-doubt transaction after recovery and comparing with the model) and
//! each resolved one must have been applied exactly once.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use stowage::file::FileSystem;
use stowage::kernel::OpenOptions;
use stowage::planted::PlantedBugs;
use stowage::{Durability, NewMessage, Store, StoreConfig, Xid};
use support::{assert_clean, sweep, Scenario, SweepConfig};

const DIR: &str = "/store";

type Queue = BTreeMap<u64, Vec<u8>>;

/// What an in-doubt transaction will do: messages it inserts, keys it removes.
type Effects = (Vec<(u64, Vec<u8>)>, Vec<u64>);

/// What the store shows, which xids are in doubt, and what it shows once every in-doubt
/// transaction is committed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Model {
    now: Queue,
    in_doubt: BTreeSet<u8>,
    all_committed: Queue,
}

fn config() -> StoreConfig {
    StoreConfig {
        page_size: 2048,
        initial_db_size_pages: 16,
        cache_min_pages: 512,
        cache_max_pages: 512,
        checkpoint_size: 1 << 20,
        ..StoreConfig::default()
    }
}

fn open(fs: Arc<dyn FileSystem>, bugs: PlantedBugs) -> stowage::Result<Store> {
    Store::open_with(
        fs,
        Path::new(DIR),
        config(),
        OpenOptions {
            bugs,
            no_background_threads: true,
            log_prealloc: Some(16 * 1024),
        },
    )
}

fn xid(n: u8) -> Xid {
    Xid::new(9, &[n, 1], &[n]).expect("valid xid")
}

fn read(s: &Store) -> Result<Queue, String> {
    Ok(s.messages("q", 0, usize::MAX)
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|m| (m.key, m.payload))
        .collect())
}

#[derive(Debug, Clone)]
enum Step {
    /// Insert `n` messages and remove the oldest `r`, then prepare under xid `x`.
    Prepare(u8, usize, usize),
    CommitPrepared(u8),
    RollbackPrepared(u8),
    /// An ordinary Sync commit inserting `n` messages.
    Publish(usize),
    Checkpoint,
}

struct XaScenario {
    steps: Vec<Step>,
}

impl Scenario for XaScenario {
    type Model = Model;

    fn name(&self) -> String {
        "xa".into()
    }

    fn run(
        &self,
        fs: Arc<dyn FileSystem>,
        bugs: PlantedBugs,
        step: &mut dyn FnMut(Model, bool),
    ) -> Result<(), String> {
        let e = |e: stowage::Error| e.to_string();
        let s = open(fs, bugs).map_err(e)?;
        s.create_queue("q").map_err(e)?;
        let mut m = Model::default();
        // Pending effects of each in-doubt xid: inserts and removals.
        let mut pending: BTreeMap<u8, Effects> = BTreeMap::new();
        // Keys already claimed by an in-doubt removal (each key is removed once).
        let mut claimed: BTreeSet<u64> = BTreeSet::new();
        step(m.clone(), true);
        for (i, st) in self.steps.iter().enumerate() {
            match st {
                Step::Prepare(x, n, r) => {
                    let mut tx = s.begin();
                    let mut ins = Vec::new();
                    for j in 0..*n {
                        let p = vec![(i * 10 + j) as u8; 50 + 300 * j];
                        ins.push((tx.insert("q", NewMessage::new(p.clone())).map_err(e)?, p));
                    }
                    let victims: Vec<u64> = m
                        .now
                        .keys()
                        .filter(|k| !claimed.contains(k))
                        .take(*r)
                        .copied()
                        .collect();
                    for &k in &victims {
                        tx.remove("q", k).map_err(e)?;
                    }
                    tx.prepare(xid(*x)).map_err(e)?;
                    claimed.extend(&victims);
                    pending.insert(*x, (ins, victims));
                    m.in_doubt.insert(*x);
                }
                Step::CommitPrepared(x) | Step::RollbackPrepared(x) => {
                    let commit = matches!(st, Step::CommitPrepared(_));
                    if commit {
                        s.commit_prepared(&xid(*x)).map_err(e)?;
                    } else {
                        s.rollback_prepared(&xid(*x)).map_err(e)?;
                    }
                    let (ins, rem) = pending.remove(x).unwrap_or_default();
                    for k in &rem {
                        claimed.remove(k);
                    }
                    if commit {
                        m.now.extend(ins);
                        for k in rem {
                            m.now.remove(&k);
                        }
                    }
                    m.in_doubt.remove(x);
                }
                Step::Publish(n) => {
                    let mut tx = s.begin();
                    let mut ins = Vec::new();
                    for j in 0..*n {
                        let p = vec![(i * 10 + j) as u8 ^ 0x55; 100];
                        ins.push((tx.insert("q", NewMessage::new(p.clone())).map_err(e)?, p));
                    }
                    tx.commit_with(Durability::Sync).map_err(e)?;
                    m.now.extend(ins);
                }
                Step::Checkpoint => s.checkpoint().map_err(e)?,
            }
            m.all_committed = m.now.clone();
            for (ins, rem) in pending.values() {
                m.all_committed.extend(ins.iter().cloned());
                for k in rem {
                    m.all_committed.remove(k);
                }
            }
            step(m.clone(), true);
        }
        s.close().map_err(e)
    }

    fn recover(&self, fs: Arc<dyn FileSystem>, bugs: PlantedBugs) -> Result<Model, String> {
        let e = |e: stowage::Error| e.to_string();
        let s = open(fs, bugs).map_err(|e| format!("reopen failed: {e}"))?;
        let now = if s.queues().map_err(e)?.is_empty() {
            Queue::new()
        } else {
            read(&s)?
        };
        let prepared = s.prepared().map_err(e)?;
        let in_doubt: BTreeSet<u8> = prepared.iter().map(|x| x.bqual()[0]).collect();
        for x in &prepared {
            s.commit_prepared(x).map_err(e)?;
        }
        let all_committed = if s.queues().map_err(e)?.is_empty() {
            Queue::new()
        } else {
            read(&s)?
        };
        s.check_pages()
            .map_err(|e| format!("page accounting: {e}"))?;
        Ok(Model {
            now,
            in_doubt,
            all_committed,
        })
    }
}

#[test]
fn xa_survives_every_crash() {
    use Step::*;
    let scenario = XaScenario {
        steps: vec![
            Publish(4),
            Prepare(1, 2, 1),
            Publish(1),
            Prepare(2, 1, 1),
            CommitPrepared(1),
            Checkpoint,
            Prepare(3, 2, 0),
            RollbackPrepared(2),
            Checkpoint,
            CommitPrepared(3),
        ],
    };
    // `recover` commits the in-doubt transactions to prove their operations survived, so
    // it is not read-only: the harness's crash-the-recovery check does not apply here (the
    // other sweeps run it).
    let cfg = SweepConfig {
        recovery_stride: 0,
        ..SweepConfig::default()
    };
    let report = sweep(&scenario, &cfg);
    assert_clean(&report, "xa");
}
