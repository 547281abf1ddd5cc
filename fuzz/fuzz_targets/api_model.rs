//! The `api_sequence` fuzz target's input, model and interpreter, shared with the test that
//! replays its corpus (`tests/fuzz_replay_api.rs` includes this file with `#[path]`), so a
//! corpus file runs exactly the same checks in `cargo test` as under libFuzzer.
//!
//! The input is a list of API operations (decoded from the fuzzer's bytes with `arbitrary`,
//! see [`decode`]):
//! queue creation and deletion, inserts of every size class, removes, delivery-count updates
//! and commits of every durability in two interleaved transactions, XA prepare, commit and
//! rollback, checkpoints, clean reopens, and crashes of the simulated file layer (now, or at
//! the N-th mutating I/O call from here, inside whatever operation makes it; optionally a
//! second crash during recovery) followed by a restart with an input-chosen outcome.
//!
//! The model predicts every call's result (value or error kind) and the committed state;
//! after every operation the store must equal it exactly (queues, messages, index entries,
//! counters, in-doubt xids, `check()` clean). After a crash the store must equal one of the
//! states the model allows: any state from the last `Sync` point to the operation in flight
//! (from the last `Flush` commit on for a process kill), so every acknowledged `Sync` commit
//! is there and no transaction is partly visible. Keys must be strictly increasing per
//! queue, across clean reopens too; after a crash, above every committed or prepared key.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use arbitrary::{Arbitrary, Unstructured};
use stowage::file::{CrashOutcome, SimFs};
use stowage::kernel::OpenOptions;
use stowage::planted::PlantedBugs;
use stowage::{Durability, Error, NewMessage, Store, StoreConfig, Transaction, Xid};

/// Page size of the fuzzed store (the smallest allowed, so few bytes span pages).
pub const PAGE_SIZE: usize = 2048;
/// `max_message_size` of the fuzzed store.
pub const MAX_MESSAGE: usize = 16 * 1024;
/// Operations run per input (the rest is ignored), to keep executions fast.
pub const MAX_OPS: usize = 64;
const DIR: &str = "/api";

/// A queue name from a small set (one of them invalid).
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueName {
    /// `a`
    A,
    /// `b`
    B,
    /// A longer name.
    C,
    /// The empty name: `InvalidArgument` to create, `QueueNotFound` elsewhere.
    Invalid,
}

impl QueueName {
    fn name(self) -> &'static str {
        match self {
            QueueName::A => "a",
            QueueName::B => "b",
            QueueName::C => "orders.eu-west.priority",
            QueueName::Invalid => "",
        }
    }
}

/// Payload size classes.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// 0 bytes.
    Empty,
    /// 1..=64 bytes.
    Tiny(u8),
    /// Within 128 bytes of a page.
    AroundPage(u8),
    /// Two to five pages.
    Pages(u8),
    /// Exactly `max_message_size`.
    Max,
    /// One byte more: `TooLarge`.
    TooLarge,
}

impl Size {
    fn len(self) -> usize {
        match self {
            Size::Empty => 0,
            Size::Tiny(n) => 1 + usize::from(n) % 64,
            Size::AroundPage(n) => PAGE_SIZE - 128 + usize::from(n),
            Size::Pages(n) => 2 * PAGE_SIZE + usize::from(n) * 24,
            Size::Max => MAX_MESSAGE,
            Size::TooLarge => MAX_MESSAGE + 1,
        }
    }
}

/// How a transaction commits.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitHow {
    /// `commit()`: the configured default (`Sync`, `force_sync` is on).
    Default,
    /// `commit_with(Durability::Sync)`.
    Sync,
    /// `commit_with(Durability::Flush)`.
    Flush,
    /// `commit_with(Durability::Async)`.
    Async,
}

/// When a simulated crash happens.
#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// At once, between operations.
    Now,
    /// At the n-th mutating I/O call from now, inside whichever later operation makes it
    /// (if none does, the crash point is simply dropped at the end).
    AfterCalls(u8),
}

/// One API operation. `tx` picks one of two transactions (begun on first use).
#[derive(Arbitrary, Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `create_queue`.
    CreateQueue(QueueName),
    /// `delete_queue`.
    DeleteQueue(QueueName),
    /// `insert`; priority is taken modulo 11 (10 is invalid).
    Insert {
        /// Which transaction.
        tx: bool,
        /// Into which queue.
        queue: QueueName,
        /// Payload size.
        size: Size,
        /// Priority (mod 11).
        priority: u8,
        /// Expiration in ms, if any.
        expiration: Option<u16>,
    },
    /// `remove` of a key picked among the queue's committed keys, the keys of uncommitted
    /// and prepared inserts, and an absent key.
    Remove {
        /// Which transaction.
        tx: bool,
        /// From which queue.
        queue: QueueName,
        /// Which key (index into the candidates).
        pick: u8,
    },
    /// `set_delivery_count`, keys picked as for `Remove`.
    SetDeliveryCount {
        /// Which transaction.
        tx: bool,
        /// In which queue.
        queue: QueueName,
        /// Which key.
        pick: u8,
        /// The new count.
        count: u8,
    },
    /// `commit` / `commit_with`.
    Commit {
        /// Which transaction.
        tx: bool,
        /// With which durability.
        how: CommitHow,
    },
    /// `rollback`.
    Rollback {
        /// Which transaction.
        tx: bool,
    },
    /// Dropping the transaction uncommitted.
    Drop {
        /// Which transaction.
        tx: bool,
    },
    /// `prepare` under one of three xids.
    Prepare {
        /// Which transaction.
        tx: bool,
        /// Which xid (mod 3).
        xid: u8,
    },
    /// `commit_prepared`.
    CommitPrepared {
        /// Which xid (mod 3).
        xid: u8,
    },
    /// `rollback_prepared`.
    RollbackPrepared {
        /// Which xid (mod 3).
        xid: u8,
    },
    /// `checkpoint`.
    Checkpoint,
    /// Drop the transactions, `close`, open again.
    Reopen,
    /// A simulated crash, a restart with `outcome` (mod 4), and an open; with
    /// `recovery_crash`, that open crashes at its n-th mutating call and is repeated.
    Crash {
        /// When.
        at: CrashPoint,
        /// `CrashOutcome::ALL[outcome % 4]`.
        outcome: u8,
        /// Seed of the outcome's randomness.
        seed: u16,
        /// Crash the recovery too, at this mutating call.
        recovery_crash: Option<u8>,
    },
}

/// What a run did (the replay test checks that the corpus reaches every part).
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// Operations run.
    pub ops: usize,
    /// Non-empty commits that succeeded, by durability: Sync (incl. default), Flush, Async.
    pub commits: [usize; 3],
    /// Successful prepares.
    pub prepares: usize,
    /// Successful commit_prepared / rollback_prepared.
    pub resolved: usize,
    /// Calls refused with `MessageLocked`.
    pub locked: usize,
    /// Clean reopens.
    pub reopens: usize,
    /// Crashes, by outcome index.
    pub crashes: [usize; 4],
    /// Crashes that hit inside an operation (the crash point of `AfterCalls`).
    pub crashes_in_flight: usize,
    /// Recoveries that crashed themselves and were repeated.
    pub recovery_crashes: usize,
    /// Crashes after which the store held a state later than the last `Sync` point.
    pub recovered_unsynced: usize,
}

impl Stats {
    /// Adds another run's counts.
    pub fn add(&mut self, o: &Stats) {
        self.ops += o.ops;
        for i in 0..3 {
            self.commits[i] += o.commits[i];
        }
        self.prepares += o.prepares;
        self.resolved += o.resolved;
        self.locked += o.locked;
        self.reopens += o.reopens;
        for i in 0..4 {
            self.crashes[i] += o.crashes[i];
        }
        self.crashes_in_flight += o.crashes_in_flight;
        self.recovery_crashes += o.recovery_crashes;
        self.recovered_unsynced += o.recovered_unsynced;
    }
}

/// Decodes the fuzzer's bytes into operations: `Op`s one after another (derived
/// `Arbitrary`) until the bytes run out or [`MAX_OPS`] are decoded.
pub fn decode(data: &[u8]) -> Vec<Op> {
    let mut u = Unstructured::new(data);
    let mut ops = Vec::new();
    while !u.is_empty() && ops.len() < MAX_OPS {
        match Op::arbitrary(&mut u) {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    ops
}

/// Decodes `data` (see [`decode`]) and runs it.
pub fn run_bytes(data: &[u8]) -> Stats {
    run(&decode(data))
}

/// Runs `ops` against a fresh store on the simulator and the model; panics on the first
/// disagreement.
pub fn run(ops: &[Op]) -> Stats {
    run_with_bugs(ops, PlantedBugs::default())
}

/// [`run`] on a store with deliberate bugs switched on (the harness self-test: the model
/// must catch them).
pub fn run_with_bugs(ops: &[Op], bugs: PlantedBugs) -> Stats {
    let mut h = Harness::new(bugs);
    for (i, op) in ops.iter().take(MAX_OPS).enumerate() {
        h.step(i, op);
    }
    h.finish();
    h.stats
}

// ---- the model ----

#[derive(Debug, Clone, PartialEq, Eq)]
struct Msg {
    payload: Vec<u8>,
    priority: u8,
    delivery_count: u32,
    expiration: Option<u64>,
}

#[derive(Debug, Clone)]
struct QueueModel {
    /// Which incarnation of the name (a deleted and re-created queue is another queue).
    id: u64,
    msgs: BTreeMap<u64, Msg>,
    /// The highest key ever committed (never handed out again, even after a crash).
    high: u64,
}

#[derive(Debug, Clone)]
enum Pend {
    Insert {
        q: &'static str,
        id: u64,
        key: u64,
        msg: Msg,
    },
    Remove {
        q: &'static str,
        id: u64,
        key: u64,
    },
    Count {
        q: &'static str,
        id: u64,
        key: u64,
        count: u32,
    },
}

impl Pend {
    fn target(&self) -> (&'static str, u64, u64) {
        match *self {
            Pend::Insert { q, id, key, .. }
            | Pend::Remove { q, id, key }
            | Pend::Count { q, id, key, .. } => (q, id, key),
        }
    }
}

/// Committed state: queues, and the operations of each in-doubt xid.
#[derive(Debug, Clone, Default)]
struct State {
    queues: BTreeMap<&'static str, QueueModel>,
    prepared: BTreeMap<u8, Vec<Pend>>,
}

/// What the store shows: per queue its messages; the in-doubt xids.
type View = (BTreeMap<String, BTreeMap<u64, Msg>>, BTreeSet<u8>);

impl State {
    fn view(&self) -> View {
        (
            self.queues
                .iter()
                .map(|(q, m)| (q.to_string(), m.msgs.clone()))
                .collect(),
            self.prepared.keys().copied().collect(),
        )
    }

    fn live(&self, q: &str, id: u64) -> bool {
        self.queues.get(q).is_some_and(|m| m.id == id)
    }

    /// Applies ops in order; ops on queues that are gone are skipped.
    fn apply(&mut self, ops: &[Pend]) {
        for op in ops {
            let (q, id, key) = op.target();
            let Some(m) = self.queues.get_mut(q).filter(|m| m.id == id) else {
                continue;
            };
            match op {
                Pend::Insert { msg, .. } => {
                    m.msgs.insert(key, msg.clone());
                    m.high = m.high.max(key);
                }
                Pend::Remove { .. } => {
                    let gone = m.msgs.remove(&key);
                    assert!(gone.is_some(), "model: removing absent key {q}/{key}");
                }
                Pend::Count { count, .. } => {
                    if let Some(msg) = m.msgs.get_mut(&key) {
                        msg.delivery_count = *count;
                    }
                }
            }
        }
    }

    /// Keys a queue must never hand out again after a crash into this state.
    fn key_floor(&self, q: &str) -> u64 {
        let Some(m) = self.queues.get(q) else {
            return 1;
        };
        let prepared = self
            .prepared
            .values()
            .flatten()
            .filter_map(|p| match *p {
                Pend::Insert { id, key, .. } if id == m.id => Some(key),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        m.high.max(prepared) + 1
    }
}

struct OpenTx {
    tx: Transaction,
    ops: Vec<Pend>,
    /// (queue id, key) pairs locked by this transaction's removes and updates.
    locked: Vec<(u64, u64)>,
}

fn config() -> StoreConfig {
    StoreConfig {
        page_size: PAGE_SIZE as u32,
        initial_db_size_pages: 16,
        cache_min_pages: 512,
        cache_max_pages: 512,
        checkpoint_size: 1 << 20,
        max_message_size: MAX_MESSAGE as u64,
        ..StoreConfig::default()
    }
}

fn open(sim: &SimFs, bugs: PlantedBugs) -> stowage::Result<Store> {
    Store::open_with(
        Arc::new(sim.clone()),
        Path::new(DIR),
        config(),
        OpenOptions {
            no_background_threads: true,
            log_prealloc: Some(16 * 1024),
            bugs,
        },
    )
}

fn xid(i: u8) -> Xid {
    match Xid::new(0x5354, &[b'x', i], b"") {
        Ok(x) => x,
        Err(e) => panic!("xid: {e}"),
    }
}

fn payload(len: usize, n: u32) -> Vec<u8> {
    let seed = n.to_le_bytes();
    (0..len)
        .map(|i| seed[i % 4] ^ (i as u8).wrapping_mul(31) ^ (i >> 8) as u8)
        .collect()
}

/// An expected error kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    QueueNotFound,
    QueueExists,
    MessageNotFound,
    MessageLocked,
    TooLarge,
    InvalidArgument,
    XidExists,
    XidNotFound,
}

fn kind(e: &Error) -> Option<Want> {
    Some(match e {
        Error::QueueNotFound { .. } => Want::QueueNotFound,
        Error::QueueExists { .. } => Want::QueueExists,
        Error::MessageNotFound { .. } => Want::MessageNotFound,
        Error::MessageLocked { .. } => Want::MessageLocked,
        Error::TooLarge { .. } => Want::TooLarge,
        Error::InvalidArgument { .. } => Want::InvalidArgument,
        Error::XidExists { .. } => Want::XidExists,
        Error::XidNotFound { .. } => Want::XidNotFound,
        _ => return None,
    })
}

/// A committed state the store may show after a crash, and whether it reached the OS (so
/// it survives a process kill).
struct Candidate {
    state: State,
    in_os: bool,
}

struct Armed {
    outcome: CrashOutcome,
    seed: u64,
    recovery_crash: Option<u8>,
}

struct Harness {
    sim: SimFs,
    bugs: PlantedBugs,
    store: Option<Store>,
    /// The committed state as the store must show it now.
    state: State,
    /// States since the last point where everything was durable; `history[0]` is durable
    /// and the last one equals `state`.
    history: Vec<Candidate>,
    txs: [Option<OpenTx>; 2],
    /// Per queue id: the lowest key `insert` may return next.
    next_key: BTreeMap<u64, u64>,
    next_queue_id: u64,
    armed: Option<Armed>,
    inserts: u32,
    stats: Stats,
}

/// The result of one store call, judged against the model.
enum Judged<T> {
    /// As predicted.
    Ok(T),
    /// Failed because the simulated machine crashed during the call.
    Crashed,
}

impl Harness {
    fn new(bugs: PlantedBugs) -> Self {
        let sim = SimFs::new();
        let store = match open(&sim, bugs) {
            Ok(s) => s,
            Err(e) => panic!("creating the store: {e}"),
        };
        Harness {
            sim,
            bugs,
            store: Some(store),
            state: State::default(),
            history: vec![Candidate {
                state: State::default(),
                in_os: true,
            }],
            txs: [None, None],
            next_key: BTreeMap::new(),
            next_queue_id: 1,
            armed: None,
            inserts: 0,
            stats: Stats::default(),
        }
    }

    fn store(&self) -> &Store {
        match &self.store {
            Some(s) => s,
            None => panic!("no open store"),
        }
    }

    /// Checks a call's result against the prediction `want` (`None`: success).
    fn judge<T: std::fmt::Debug>(
        &mut self,
        what: &str,
        r: stowage::Result<T>,
        want: Option<Want>,
    ) -> Judged<Option<T>> {
        match (r, want) {
            (Ok(v), None) => Judged::Ok(Some(v)),
            (Err(_), _) if self.sim.is_crashed() => Judged::Crashed,
            (Err(e), Some(w)) if kind(&e) == Some(w) => {
                if w == Want::MessageLocked {
                    self.stats.locked += 1;
                }
                Judged::Ok(None)
            }
            (r, w) => panic!("{what}: the store returned {r:?}, the model expected {w:?}"),
        }
    }

    fn tx(&mut self, slot: bool) -> &mut OpenTx {
        let i = usize::from(slot);
        if self.txs[i].is_none() {
            let tx = self.store().begin();
            self.txs[i] = Some(OpenTx {
                tx,
                ops: Vec::new(),
                locked: Vec::new(),
            });
        }
        match self.txs[i].as_mut() {
            Some(t) => t,
            None => unreachable!(),
        }
    }

    /// A new committed state: `durable` for a Sync point, else whether it reached the OS.
    fn committed(&mut self, state: State, durable: bool, in_os: bool) {
        self.state = state.clone();
        if durable {
            self.history.clear();
        }
        self.history.push(Candidate {
            state,
            in_os: in_os || durable,
        });
    }

    fn step(&mut self, i: usize, op: &Op) {
        self.stats.ops += 1;
        let in_flight = self.apply(i, op);
        if self.sim.is_crashed() {
            let armed = self.armed.take().unwrap_or(Armed {
                outcome: CrashOutcome::ProcessKill,
                seed: 0,
                recovery_crash: None,
            });
            self.stats.crashes_in_flight += 1;
            self.crash(armed, in_flight);
        }
        self.verify(&format!("after op {i} {op:?}"));
    }

    /// Runs one operation; returns the state the store would hold had the call in flight
    /// when the machine crashed succeeded (if it crashed inside one that changes state).
    fn apply(&mut self, i: usize, op: &Op) -> Option<State> {
        match *op {
            Op::CreateQueue(qn) => {
                let q = qn.name();
                let want = if qn == QueueName::Invalid {
                    Some(Want::InvalidArgument)
                } else if self.state.queues.contains_key(q) {
                    Some(Want::QueueExists)
                } else {
                    None
                };
                let mut next = self.state.clone();
                let id = self.next_queue_id;
                next.queues.insert(
                    q,
                    QueueModel {
                        id,
                        msgs: BTreeMap::new(),
                        high: 0,
                    },
                );
                let r = self.store().create_queue(q);
                match self.judge("create_queue", r, want) {
                    Judged::Ok(Some(())) => {
                        self.next_queue_id += 1;
                        self.next_key.insert(id, 1);
                        self.committed(next, true, true);
                    }
                    Judged::Ok(None) => {}
                    Judged::Crashed => {
                        self.next_queue_id += 1;
                        self.next_key.insert(id, 1);
                        return want.is_none().then_some(next);
                    }
                }
            }
            Op::DeleteQueue(qn) => {
                let q = qn.name();
                let held = self.state.queues.get(q).map(|m| m.msgs.len() as u64);
                let mut next = self.state.clone();
                next.queues.remove(q);
                let r = self.store().delete_queue(q);
                let want = held.is_none().then_some(Want::QueueNotFound);
                match self.judge("delete_queue", r, want) {
                    Judged::Ok(Some(n)) => {
                        assert_eq!(Some(n), held, "delete_queue({q}) count");
                        self.committed(next, true, true);
                    }
                    Judged::Ok(None) => {}
                    Judged::Crashed => return held.is_some().then_some(next),
                }
            }
            Op::Insert {
                tx,
                queue,
                size,
                priority,
                expiration,
            } => {
                let q = queue.name();
                let len = size.len();
                let priority = priority % 11;
                self.inserts += 1;
                let msg = Msg {
                    payload: payload(len, self.inserts),
                    priority,
                    delivery_count: 0,
                    expiration: expiration.map(u64::from),
                };
                let live = self.state.queues.get(q).map(|m| m.id);
                let want = if len > MAX_MESSAGE {
                    Some(Want::TooLarge)
                } else if priority > 9 {
                    Some(Want::InvalidArgument)
                } else if live.is_none() {
                    Some(Want::QueueNotFound)
                } else {
                    None
                };
                let new = NewMessage::new(msg.payload.clone())
                    .priority(priority)
                    .expiration(msg.expiration);
                let r = self.tx(tx).tx.insert(q, new);
                if let Judged::Ok(Some(key)) = self.judge("insert", r, want) {
                    let id = live.unwrap_or(0);
                    let floor = self.next_key.get(&id).copied().unwrap_or(1);
                    assert!(
                        key >= floor,
                        "op {i}: insert into {q} returned key {key}, below {floor}: a key came back"
                    );
                    self.next_key.insert(id, key + 1);
                    self.tx(tx).ops.push(Pend::Insert { q, id, key, msg });
                }
            }
            Op::Remove { tx, queue, pick } => self.claim(tx, queue, pick, None),
            Op::SetDeliveryCount {
                tx,
                queue,
                pick,
                count,
            } => self.claim(tx, queue, pick, Some(u32::from(count))),
            Op::Commit { tx, how } => {
                let t = self.txs[usize::from(tx)].take()?;
                let stale = t.ops.iter().any(|p| {
                    let (q, id, _) = p.target();
                    !self.state.live(q, id)
                });
                let mut next = self.state.clone();
                next.apply(&t.ops);
                let r = match how {
                    CommitHow::Default => t.tx.commit(),
                    CommitHow::Sync => t.tx.commit_with(Durability::Sync),
                    CommitHow::Flush => t.tx.commit_with(Durability::Flush),
                    CommitHow::Async => t.tx.commit_with(Durability::Async),
                };
                let want = stale.then_some(Want::QueueNotFound);
                match self.judge("commit", r, want) {
                    Judged::Ok(Some(())) if !t.ops.is_empty() => {
                        let (sync, in_os, n) = match how {
                            CommitHow::Default | CommitHow::Sync => (true, true, 0),
                            CommitHow::Flush => (false, true, 1),
                            CommitHow::Async => (false, false, 2),
                        };
                        self.stats.commits[n] += 1;
                        self.committed(next, sync, in_os);
                    }
                    Judged::Ok(_) => {}
                    Judged::Crashed => return (!stale && !t.ops.is_empty()).then_some(next),
                }
            }
            Op::Rollback { tx } => {
                if let Some(t) = self.txs[usize::from(tx)].take() {
                    t.tx.rollback();
                }
            }
            Op::Drop { tx } => {
                drop(self.txs[usize::from(tx)].take());
            }
            Op::Prepare { tx, xid: x } => {
                let x = x % 3;
                self.tx(tx);
                let t = self.txs[usize::from(tx)].take()?;
                let want = if self.state.prepared.contains_key(&x) {
                    Some(Want::XidExists)
                } else if t.ops.iter().any(|p| {
                    let (q, id, _) = p.target();
                    !self.state.live(q, id)
                }) {
                    Some(Want::QueueNotFound)
                } else {
                    None
                };
                let mut next = self.state.clone();
                next.prepared.insert(x, t.ops.clone());
                let r = t.tx.prepare(xid(x));
                match self.judge("prepare", r, want) {
                    Judged::Ok(Some(())) => {
                        self.stats.prepares += 1;
                        self.committed(next, true, true);
                    }
                    Judged::Ok(None) => {}
                    Judged::Crashed => return want.is_none().then_some(next),
                }
            }
            Op::CommitPrepared { xid: x } | Op::RollbackPrepared { xid: x } => {
                let x = x % 3;
                let commit = matches!(op, Op::CommitPrepared { .. });
                let mut next = self.state.clone();
                let ops = next.prepared.remove(&x);
                if commit {
                    next.apply(ops.as_deref().unwrap_or_default());
                }
                let r = if commit {
                    self.store().commit_prepared(&xid(x))
                } else {
                    self.store().rollback_prepared(&xid(x))
                };
                let want = ops.is_none().then_some(Want::XidNotFound);
                match self.judge("resolving a prepared transaction", r, want) {
                    Judged::Ok(Some(())) => {
                        self.stats.resolved += 1;
                        self.committed(next, true, true);
                    }
                    Judged::Ok(None) => {}
                    Judged::Crashed => return ops.is_some().then_some(next),
                }
            }
            Op::Checkpoint => {
                let r = self.store().checkpoint();
                if let Judged::Ok(_) = self.judge("checkpoint", r, None) {
                    let s = self.state.clone();
                    self.committed(s, true, true);
                }
            }
            Op::Reopen => {
                self.txs = [None, None];
                let r = self.store().close();
                if let Judged::Crashed = self.judge("close", r, None) {
                    return None;
                }
                // Closed cleanly: everything is durable.
                let s = self.state.clone();
                self.committed(s, true, true);
                self.store = None;
                let r = open(&self.sim, self.bugs);
                if let Judged::Ok(s) = self.judge("reopen", r, None) {
                    self.store = s;
                    self.stats.reopens += 1;
                }
            }
            Op::Crash {
                at,
                outcome,
                seed,
                recovery_crash,
            } => {
                let armed = Armed {
                    outcome: CrashOutcome::ALL[usize::from(outcome % 4)],
                    seed: u64::from(seed),
                    recovery_crash,
                };
                match at {
                    CrashPoint::Now => {
                        self.sim.crash_now();
                        self.crash(armed, None);
                    }
                    CrashPoint::AfterCalls(n) => {
                        let at = self.sim.mutating_calls() + u64::from(n);
                        self.sim.set_crash_at(Some(at));
                        self.armed = Some(armed);
                    }
                }
            }
        }
        None
    }

    /// `remove` (count `None`) or `set_delivery_count`, predicted as the store decides:
    /// queue, removed by this transaction, own insert, own lock, committed, others' locks.
    fn claim(&mut self, slot: bool, queue: QueueName, pick: u8, count: Option<u32>) {
        let q = queue.name();
        let live = self.state.queues.get(q).map(|m| m.id);
        let id = live.unwrap_or(0);
        // Candidate keys: committed, inserted by either transaction or in doubt, absent (0).
        let mut keys: BTreeSet<u64> = BTreeSet::from([0]);
        if let Some(m) = self.state.queues.get(q) {
            keys.extend(m.msgs.keys());
        }
        let pending = self.txs.iter().flatten().flat_map(|t| t.ops.iter());
        for p in pending.chain(self.state.prepared.values().flatten()) {
            if let Pend::Insert { id: i, key, .. } = *p {
                if i == id {
                    keys.insert(key);
                }
            }
        }
        let key = keys
            .iter()
            .copied()
            .nth(usize::from(pick) % keys.len())
            .unwrap_or(0);
        let me = usize::from(slot);
        self.tx(slot);
        let Some(t) = self.txs[me].as_ref() else {
            return;
        };
        let removed = t
            .ops
            .iter()
            .any(|p| matches!(*p, Pend::Remove { id: i, key: k, .. } if i == id && k == key));
        let own_insert = t
            .ops
            .iter()
            .any(|p| matches!(*p, Pend::Insert { id: i, key: k, .. } if i == id && k == key));
        let own_lock = t.locked.contains(&(id, key));
        let committed = self
            .state
            .queues
            .get(q)
            .is_some_and(|m| m.msgs.contains_key(&key));
        let other = self.txs[1 - me]
            .as_ref()
            .is_some_and(|o| o.locked.contains(&(id, key)));
        let in_doubt = self.state.prepared.values().flatten().any(|p| {
            matches!(*p, Pend::Remove { id: i, key: k, .. } | Pend::Count { id: i, key: k, .. } if i == id && k == key)
        });
        let want = if live.is_none() {
            Some(Want::QueueNotFound)
        } else if removed {
            Some(Want::MessageNotFound)
        } else if own_insert || own_lock {
            None
        } else if !committed {
            Some(Want::MessageNotFound)
        } else if other || in_doubt {
            Some(Want::MessageLocked)
        } else {
            None
        };
        let r = {
            let Some(t) = self.txs[me].as_mut() else {
                return;
            };
            match count {
                None => t.tx.remove(q, key),
                Some(c) => t.tx.set_delivery_count(q, key, c),
            }
        };
        let what = if count.is_none() {
            "remove"
        } else {
            "set_delivery_count"
        };
        if let Judged::Ok(Some(())) = self.judge(what, r, want) {
            let Some(t) = self.txs[me].as_mut() else {
                return;
            };
            if !own_insert && !own_lock {
                t.locked.push((id, key));
            }
            match count {
                None if own_insert => t.ops.retain(|p| {
                    !matches!(*p, Pend::Insert { id: i, key: k, .. } | Pend::Count { id: i, key: k, .. } if i == id && k == key)
                }),
                None => t.ops.push(Pend::Remove { q, id, key }),
                Some(count) => t.ops.push(Pend::Count { q, id, key, count }),
            }
        }
    }

    /// The machine crashed (the store's calls now fail): drop everything, restart with the
    /// armed outcome, reopen (crashing the recovery too if asked) and check the store holds
    /// one of the allowed states.
    fn crash(&mut self, armed: Armed, in_flight: Option<State>) {
        self.stats.crashes[CrashOutcome::ALL
            .iter()
            .position(|o| *o == armed.outcome)
            .unwrap_or(0)] += 1;
        self.armed = None;
        self.sim.crash_now();
        self.txs = [None, None];
        self.store = None;
        self.sim.restart(armed.outcome, armed.seed);
        let kill = armed.outcome == CrashOutcome::ProcessKill;
        let first = if kill {
            self.history.iter().rposition(|c| c.in_os).unwrap_or(0)
        } else {
            0
        };
        if let Some(n) = armed.recovery_crash {
            self.sim.set_crash_at(Some(u64::from(n)));
        }
        let store = match open(&self.sim, self.bugs) {
            Ok(s) => s,
            Err(_) if self.sim.is_crashed() => {
                self.stats.recovery_crashes += 1;
                self.sim.restart(armed.outcome, armed.seed.wrapping_add(1));
                match open(&self.sim, self.bugs) {
                    Ok(s) => s,
                    Err(e) => panic!("reopening after a crash during recovery: {e}"),
                }
            }
            Err(e) => panic!("reopening after a crash ({:?}): {e}", armed.outcome),
        };
        self.sim.set_crash_at(None);
        self.store = Some(store);
        let seen = self.observe("after a crash");
        let mut states: Vec<(State, bool)> = self.history[first..]
            .iter()
            .map(|c| (c.state.clone(), c.in_os))
            .collect();
        let last_sync = states.len();
        if let Some(s) = in_flight {
            states.push((s, false));
        }
        let matching: Vec<usize> = (0..states.len())
            .filter(|&i| states[i].0.view() == seen)
            .collect();
        let (Some(&lo), Some(&hi)) = (matching.first(), matching.last()) else {
            panic!(
                "after a crash ({:?}, seed {}) the store holds {seen:?}, which is none of the \
                 {} states the model allows (last durable first): {:?}",
                armed.outcome,
                armed.seed,
                states.len(),
                states.iter().map(|s| s.0.view()).collect::<Vec<_>>()
            );
        };
        if first + lo > 0 {
            self.stats.recovered_unsynced += 1;
        }
        // The earliest matching state has the fewest committed keys: the safe floor.
        self.state = states[lo].0.clone();
        for (q, m) in &self.state.queues {
            self.next_key.insert(m.id, self.state.key_floor(q));
        }
        // A process kill keeps the recovered state in the OS only: a later power loss may
        // still take the store back to any earlier state since the last durable one.
        let keep = if kill { first + hi.min(last_sync) } else { 0 };
        self.history.truncate(keep);
        self.history.push(Candidate {
            state: self.state.clone(),
            in_os: true,
        });
    }

    fn observe(&self, when: &str) -> View {
        let s = self.store();
        let fail = |what: &str, e: Error| -> ! { panic!("{when}: {what} failed: {e}") };
        let infos = s.queues().unwrap_or_else(|e| fail("queues()", e));
        let mut queues = BTreeMap::new();
        for info in infos {
            let msgs = s
                .messages(&info.name, 0, usize::MAX)
                .unwrap_or_else(|e| fail("messages()", e));
            let entries = s
                .entries(&info.name, 0, usize::MAX)
                .unwrap_or_else(|e| fail("entries()", e));
            assert_eq!(msgs.len(), entries.len(), "{when}: messages vs entries");
            assert_eq!(
                info.messages,
                msgs.len() as u64,
                "{when}: QueueInfo.messages"
            );
            let bytes: u64 = msgs.iter().map(|m| m.payload.len() as u64).sum();
            assert_eq!(info.bytes, bytes, "{when}: QueueInfo.bytes");
            let mut map = BTreeMap::new();
            for (m, e) in msgs.into_iter().zip(entries) {
                assert_eq!(
                    (e.key, e.priority, e.delivery_count, e.expiration, e.size),
                    (
                        m.key,
                        m.priority,
                        m.delivery_count,
                        m.expiration,
                        m.payload.len() as u64
                    ),
                    "{when}: entry vs message"
                );
                map.insert(
                    m.key,
                    Msg {
                        payload: m.payload.to_vec(),
                        priority: m.priority,
                        delivery_count: m.delivery_count,
                        expiration: m.expiration,
                    },
                );
            }
            queues.insert(info.name, map);
        }
        let prepared = s
            .prepared()
            .unwrap_or_else(|e| fail("prepared()", e))
            .into_iter()
            .map(|x| x.gtrid().get(1).copied().unwrap_or(u8::MAX))
            .collect();
        let report = s.check().unwrap_or_else(|e| fail("check()", e));
        assert!(report.is_clean(), "{when}: check(): {:?}", report.problems);
        (queues, prepared)
    }

    fn verify(&self, when: &str) {
        let seen = self.observe(when);
        let want = self.state.view();
        assert!(
            seen == want,
            "{when}: the store holds\n{seen:?}\nthe model\n{want:?}"
        );
    }

    /// Drops a crash point that never hit, then a clean close and reopen must keep it all.
    fn finish(&mut self) {
        self.armed = None;
        self.sim.set_crash_at(None);
        self.step(usize::MAX, &Op::Reopen);
    }
}
