//! Model test of the page cache: random operation sequences run against the cache and
//! against a small executable model of its contract (LRU order, clean-first eviction,
//! WAL rule, pin rule, exact stats). A recording in-memory `PageIo` checks the WAL rule
//! at every `write_page` (the page LSN is encoded in the page's first 8 bytes) and that a
//! pinned page is never read again; a `WalGate` may refuse to advance.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use proptest::prelude::*;

use stowage::cache::{
    CacheConfig, CacheStats, Lsn, PageCache, PageId, PageIo, PinnedPage, WalGate,
};
use stowage::{Error, Result};

const PS: usize = 24;
const IDS: u64 = 10;

/// The bytes of a page never written: LSN 0, then the id.
fn initial(id: PageId) -> Vec<u8> {
    let mut v = vec![id as u8; PS];
    v[..8].fill(0);
    v
}

fn lsn_of(bytes: &[u8]) -> Lsn {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[..8]);
    Lsn::from_le_bytes(b)
}

struct Gate {
    durable: AtomicU64,
    advance: AtomicBool,
}

impl WalGate for Gate {
    fn durable_lsn(&self) -> Lsn {
        self.durable.load(Ordering::SeqCst)
    }
    fn flush_to(&self, lsn: Lsn) -> Result<()> {
        // A refusing log returns Ok without advancing: the cache must not write anyway.
        if self.advance.load(Ordering::SeqCst) {
            self.durable.fetch_max(lsn, Ordering::SeqCst);
        }
        Ok(())
    }
}

struct RecIo {
    gate: Arc<Gate>,
    disk: Mutex<HashMap<PageId, Vec<u8>>>,
    /// Pages the test holds pinned: reading one of them again means it was evicted.
    pinned: Mutex<HashSet<PageId>>,
    violations: Mutex<Vec<String>>,
}

impl PageIo for RecIo {
    fn page_size(&self) -> usize {
        PS
    }
    fn read_page(&self, id: PageId, buf: &mut [u8]) -> Result<()> {
        if self.pinned.lock().contains(&id) {
            self.violations
                .lock()
                .push(format!("page {id} re-read while pinned"));
        }
        let disk = self.disk.lock();
        buf.copy_from_slice(disk.get(&id).map_or(&initial(id)[..], |v| &v[..]));
        Ok(())
    }
    fn write_page(&self, id: PageId, buf: &[u8]) -> Result<()> {
        let durable = self.gate.durable_lsn();
        if lsn_of(buf) > durable {
            self.violations.lock().push(format!(
                "page {id} written at LSN {} with the log durable to {durable}",
                lsn_of(buf)
            ));
        }
        self.disk.lock().insert(id, buf.to_vec());
        Ok(())
    }
}

#[derive(Debug, Clone)]
enum Op {
    Pin(PageId),
    PinNew(PageId),
    Unpin(usize),
    Write(usize, usize, u8),
    Read(usize),
    Advance(u64),
    Gate(bool),
    TryEvict(PageId),
    Flush(u64),
    Trim,
    Discard(PageId),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..IDS).prop_map(Op::Pin),
        1 => (0..IDS).prop_map(Op::PinNew),
        5 => any::<usize>().prop_map(Op::Unpin),
        5 => (any::<usize>(), 0..PS - 8, any::<u8>()).prop_map(|(h, k, b)| Op::Write(h, k, b)),
        2 => any::<usize>().prop_map(Op::Read),
        2 => (0..6u64).prop_map(Op::Advance),
        1 => any::<bool>().prop_map(Op::Gate),
        2 => (0..IDS).prop_map(Op::TryEvict),
        1 => (0..8u64).prop_map(Op::Flush),
        1 => Just(Op::Trim),
        1 => (0..IDS).prop_map(Op::Discard),
    ]
}

#[derive(Debug)]
struct MFrame {
    pins: usize,
    /// `(rec_lsn, page_lsn)`.
    dirty: Option<(Lsn, Lsn)>,
    discarded: bool,
    bytes: Vec<u8>,
}

/// What the cache must do, step by step.
struct Model {
    min: usize,
    max: usize,
    frames: HashMap<PageId, MFrame>,
    /// Unpinned resident pages, least recently used first.
    lru: Vec<PageId>,
    disk: HashMap<PageId, Vec<u8>>,
    durable: Lsn,
    next_lsn: Lsn,
    advance: bool,
    stats: CacheStats,
}

impl Model {
    fn disk(&self, id: PageId) -> Vec<u8> {
        self.disk.get(&id).cloned().unwrap_or_else(|| initial(id))
    }

    fn write_back(&mut self, id: PageId) {
        let f = self.frames.get_mut(&id).unwrap();
        let (_, page) = f.dirty.take().unwrap();
        assert!(page <= self.durable);
        self.disk.insert(id, f.bytes.clone());
        self.stats.writebacks += 1;
    }

    fn remove(&mut self, id: PageId) {
        self.lru.retain(|&x| x != id);
        self.frames.remove(&id);
    }

    fn clean_victim(&self) -> Option<PageId> {
        self.lru
            .iter()
            .copied()
            .find(|id| self.frames[id].dirty.is_none())
    }

    fn durable_victim(&self) -> Option<PageId> {
        self.lru.iter().copied().find(|id| {
            self.frames[id]
                .dirty
                .is_some_and(|(_, p)| p <= self.durable)
        })
    }

    fn lru_page_lsns(&self) -> impl Iterator<Item = Lsn> + '_ {
        self.lru
            .iter()
            .filter_map(|id| self.frames[id].dirty.map(|(_, p)| p))
    }

    /// Evict until a frame is free; `false` when the cache must report exhaustion.
    fn make_room(&mut self) -> bool {
        while self.frames.len() >= self.max {
            if let Some(id) = self.clean_victim() {
                self.remove(id);
                self.stats.evictions += 1;
            } else if let Some(id) = self.durable_victim() {
                self.write_back(id);
                self.remove(id);
                self.stats.evictions += 1;
            } else if let (Some(min), true) = (self.lru_page_lsns().min(), self.advance) {
                self.durable = self.durable.max(min);
            } else {
                return false;
            }
        }
        true
    }

    fn pin_existing(&mut self, id: PageId) {
        let f = self.frames.get_mut(&id).unwrap();
        if f.pins == 0 {
            self.lru.retain(|&x| x != id);
        }
        f.pins += 1;
    }

    fn insert(&mut self, id: PageId, bytes: Vec<u8>) {
        self.frames.insert(
            id,
            MFrame {
                pins: 1,
                dirty: None,
                discarded: false,
                bytes,
            },
        );
    }

    fn unpin(&mut self, id: PageId) {
        let f = self.frames.get_mut(&id).unwrap();
        f.pins -= 1;
        if f.pins == 0 {
            if f.discarded {
                self.frames.remove(&id);
            } else {
                self.lru.push(id);
            }
        }
    }

    fn current_stats(&self) -> CacheStats {
        CacheStats {
            pinned: self.frames.values().filter(|f| f.pins > 0).count(),
            dirty: self.frames.values().filter(|f| f.dirty.is_some()).count(),
            resident: self.frames.len(),
            ..self.stats
        }
    }

    fn dirty_pages(&self) -> Vec<(PageId, Lsn)> {
        let mut v: Vec<_> = self
            .frames
            .iter()
            .filter_map(|(&id, f)| f.dirty.map(|(rec, _)| (id, rec)))
            .collect();
        v.sort_unstable();
        v
    }
}

fn run(min: usize, max: usize, ops: Vec<Op>) -> std::result::Result<(), TestCaseError> {
    let gate = Arc::new(Gate {
        durable: AtomicU64::new(0),
        advance: AtomicBool::new(true),
    });
    let io = Arc::new(RecIo {
        gate: gate.clone(),
        disk: Mutex::new(HashMap::new()),
        pinned: Mutex::new(HashSet::new()),
        violations: Mutex::new(Vec::new()),
    });
    let cache = PageCache::new(
        io.clone(),
        gate.clone(),
        CacheConfig {
            min_pages: min,
            max_pages: max,
            pin_timeout: Duration::from_millis(1),
        },
    )
    .unwrap();
    let mut m = Model {
        min,
        max,
        frames: HashMap::new(),
        lru: Vec::new(),
        disk: HashMap::new(),
        durable: 0,
        next_lsn: 0,
        advance: true,
        stats: CacheStats::default(),
    };
    let mut handles: Vec<(PageId, PinnedPage)> = Vec::new();

    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Pin(id) => {
                let got = cache.pin(id);
                if m.frames.contains_key(&id) {
                    m.stats.hits += 1;
                    m.pin_existing(id);
                } else if m.make_room() {
                    m.stats.misses += 1;
                    let bytes = m.disk(id);
                    m.insert(id, bytes);
                } else {
                    // Exhausted only when nothing is evictable: every frame is pinned or
                    // dirty beyond a log that refuses to advance.
                    prop_assert_eq!(m.frames.len(), m.max);
                    prop_assert!(m.frames.values().all(|f| f.pins > 0
                        || (!m.advance && f.dirty.is_some_and(|(_, p)| p > m.durable))));
                    prop_assert!(
                        matches!(got, Err(Error::CacheExhausted { .. })),
                        "step {}: expected CacheExhausted, got {:?}",
                        step,
                        got
                    );
                    continue;
                }
                let p = got.map_err(|e| TestCaseError::fail(format!("step {step}: {e}")))?;
                prop_assert_eq!(&p.read()[..], &m.frames[&id].bytes[..]);
                handles.push((id, p));
            }
            Op::PinNew(id) => {
                let got = cache.pin_new(id);
                match m.frames.get(&id).map(|f| f.pins) {
                    Some(n) if n > 0 => {
                        prop_assert!(
                            matches!(got, Err(Error::InvalidArgument { .. })),
                            "step {}: {:?}",
                            step,
                            got
                        );
                        continue;
                    }
                    Some(_) => {
                        m.pin_existing(id);
                        let f = m.frames.get_mut(&id).unwrap();
                        f.discarded = false;
                        f.bytes = vec![0; PS];
                    }
                    None if m.make_room() => m.insert(id, vec![0; PS]),
                    None => {
                        prop_assert!(
                            matches!(got, Err(Error::CacheExhausted { .. })),
                            "step {}: {:?}",
                            step,
                            got
                        );
                        continue;
                    }
                }
                let p = got.map_err(|e| TestCaseError::fail(format!("step {step}: {e}")))?;
                prop_assert_eq!(&p.read()[..], &[0u8; PS][..]);
                handles.push((id, p));
            }
            Op::Unpin(h) => {
                if !handles.is_empty() {
                    let (id, p) = handles.swap_remove(h % handles.len());
                    drop(p);
                    m.unpin(id);
                }
            }
            Op::Write(h, k, b) => {
                if !handles.is_empty() {
                    let (id, p) = &handles[h % handles.len()];
                    m.next_lsn += 1;
                    let lsn = m.next_lsn;
                    {
                        let mut w = p.write(lsn);
                        w[..8].copy_from_slice(&lsn.to_le_bytes());
                        w[8 + k] = b;
                    }
                    let f = m.frames.get_mut(id).unwrap();
                    f.bytes[..8].copy_from_slice(&lsn.to_le_bytes());
                    f.bytes[8 + k] = b;
                    if !f.discarded {
                        f.dirty = Some(match f.dirty {
                            Some((rec, page)) => (rec, page.max(lsn)),
                            None => (lsn, lsn),
                        });
                    }
                    prop_assert_eq!(p.page_lsn(), f.dirty.map(|(_, p)| p));
                }
            }
            Op::Read(h) => {
                if !handles.is_empty() {
                    let (id, p) = &handles[h % handles.len()];
                    prop_assert_eq!(&p.read()[..], &m.frames[id].bytes[..]);
                }
            }
            Op::Advance(d) => {
                m.durable = (m.durable + d).min(m.next_lsn);
                gate.durable.store(m.durable, Ordering::SeqCst);
            }
            Op::Gate(advance) => {
                m.advance = advance;
                gate.advance.store(advance, Ordering::SeqCst);
            }
            Op::TryEvict(id) => {
                let got = cache
                    .try_evict(id)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let want = match m.frames.get(&id) {
                    Some(f) if f.pins == 0 => match f.dirty {
                        None => true,
                        Some((_, page)) if page <= m.durable => {
                            m.write_back(id);
                            true
                        }
                        Some(_) => false,
                    },
                    _ => false,
                };
                if want {
                    m.remove(id);
                    m.stats.evictions += 1;
                }
                prop_assert_eq!(got, want, "step {}: try_evict({})", step, id);
            }
            Op::Flush(back) => {
                let upto = m.next_lsn.saturating_sub(back);
                let got = cache
                    .flush(upto)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let mut sel: Vec<(PageId, Lsn)> = m
                    .frames
                    .iter()
                    .filter_map(|(&id, f)| match f.dirty {
                        Some((rec, page)) if rec <= upto => Some((id, page)),
                        _ => None,
                    })
                    .collect();
                sel.sort_unstable();
                if let Some(max) = sel.iter().map(|&(_, p)| p).max() {
                    if m.advance {
                        m.durable = m.durable.max(max);
                    }
                }
                let mut want = 0;
                for (id, page) in sel {
                    if page <= m.durable {
                        m.write_back(id);
                        want += 1;
                    }
                }
                prop_assert_eq!(got, want);
            }
            Op::Trim => {
                let got = cache
                    .trim()
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let mut want = 0;
                let mut forced = false;
                while m.frames.len() > m.min {
                    if let Some(id) = m.clean_victim() {
                        m.remove(id);
                    } else if let Some(id) = m.durable_victim() {
                        m.write_back(id);
                        m.remove(id);
                    } else if let (Some(max), false) = (m.lru_page_lsns().max(), forced) {
                        forced = true;
                        if m.advance {
                            m.durable = m.durable.max(max);
                        }
                        continue;
                    } else {
                        break;
                    }
                    want += 1;
                    m.stats.evictions += 1;
                }
                prop_assert_eq!(got, want);
            }
            Op::Discard(id) => {
                cache.discard(id);
                if let Some(f) = m.frames.get_mut(&id) {
                    f.dirty = None;
                    if f.pins > 0 {
                        f.discarded = true;
                    } else {
                        m.remove(id);
                    }
                }
            }
        }

        // After every step: the cache agrees with the model, the io saw no violation.
        *io.pinned.lock() = handles.iter().map(|(id, _)| *id).collect();
        let v = io.violations.lock().clone();
        prop_assert!(v.is_empty(), "step {}: {:?}", step, v);
        prop_assert_eq!(gate.durable_lsn(), m.durable);
        let s = cache.stats();
        prop_assert!(s.resident <= max);
        prop_assert_eq!(s, m.current_stats(), "step {}", step);
        prop_assert_eq!(cache.dirty_pages(), m.dirty_pages());
        for (id, _) in &handles {
            prop_assert!(!cache.try_evict(*id).unwrap(), "pinned page {} evicted", id);
        }
        let disk = io.disk.lock().clone();
        prop_assert_eq!(&disk, &m.disk, "step {}", step);
    }

    // Finally: flush everything, evict everything, and every page reads back as the
    // model says it was last written (a discarded page as its last written-back state).
    gate.advance.store(true, Ordering::SeqCst);
    drop(handles);
    io.pinned.lock().clear();
    cache.flush(Lsn::MAX).unwrap();
    for f in m.frames.iter().filter(|(_, f)| f.dirty.is_some()) {
        m.disk.insert(*f.0, f.1.bytes.clone());
    }
    for id in 0..IDS {
        cache.try_evict(id).unwrap();
    }
    prop_assert_eq!(cache.stats().resident, 0);
    for id in 0..IDS {
        let p = cache.pin(id).unwrap();
        prop_assert_eq!(&p.read()[..], &m.disk(id)[..], "page {} after eviction", id);
    }
    let v = io.violations.lock().clone();
    prop_assert!(v.is_empty(), "{:?}", v);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn cache_follows_the_model(
        // max <= 5 < VICTIM_WINDOW (64): the cache looks at every LRU frame, as the model.
        (min, max) in (1usize..=5).prop_flat_map(|max| (0..=max, Just(max))),
        ops in prop::collection::vec(op(), 1..120),
    ) {
        run(min, max, ops)?;
    }
}
