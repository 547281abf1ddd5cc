//! `Store::repair`: one bad page loses exactly the messages under it, named per queue; every
//! other message, queue and prepared transaction survives; the result opens with `check()`
//! clean; a crash during repair leaves the damaged or the repaired store.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use stowage::file::{CrashOutcome, SimFs};
use stowage::kernel::OpenOptions;
use stowage::page::PageType;
use stowage::{NewMessage, Store, StoreConfig, Xid};

const PAGE: usize = 4096;
/// Bytes of an index entry: key u64 + the store's 27-byte value.
const LEAF_ENTRY: usize = 8 + 27;
const LEAF_ENTRIES_AT: usize = 34;

fn config() -> StoreConfig {
    StoreConfig {
        page_size: PAGE as u32,
        initial_db_size_pages: 16,
        checkpoint_size: 1 << 20,
        ..StoreConfig::default()
    }
}

fn options() -> OpenOptions {
    OpenOptions {
        no_background_threads: true,
        log_prealloc: Some(16 * 1024),
        ..OpenOptions::default()
    }
}

fn open(sim: &SimFs) -> stowage::Result<Store> {
    Store::open_with(Arc::new(sim.clone()), Path::new("/s"), config(), options())
}

fn repair(sim: &SimFs) -> stowage::Result<stowage::RepairReport> {
    Store::repair_with(Arc::new(sim.clone()), Path::new("/s"), config(), options())
}

fn payload(key: u64) -> Vec<u8> {
    let len = if key % 50 == 0 { 9000 } else { 60 };
    format!("msg-{key:06}-").into_bytes().repeat(len / 11 + 1)
}

fn xid() -> Xid {
    Xid::new(3, b"in-doubt", b"").unwrap()
}

/// Queue "a" with 2000 messages (every 50th in an overflow chain), queue "b" with 10, and a
/// prepared transaction removing a's key 1 and inserting into b. Closed cleanly.
fn build(sim: &SimFs) {
    let s = open(sim).unwrap();
    s.create_queue("a").unwrap();
    s.create_queue("b").unwrap();
    for chunk in 0..20u64 {
        let mut tx = s.begin();
        for i in 0..100 {
            let key = tx
                .insert("a", NewMessage::new(payload(chunk * 100 + i + 1)))
                .unwrap();
            assert_eq!(key, chunk * 100 + i + 1);
        }
        tx.commit().unwrap();
    }
    let mut tx = s.begin();
    for i in 1..=10 {
        tx.insert("b", NewMessage::new(payload(i))).unwrap();
    }
    tx.commit().unwrap();
    let mut tx = s.begin();
    tx.remove("a", 1).unwrap();
    tx.insert("b", NewMessage::new(b"prepared".to_vec()))
        .unwrap();
    tx.prepare(xid()).unwrap();
    s.close().unwrap();
}

fn pages(sim: &SimFs) -> Vec<u8> {
    sim.read_file(Path::new("/s/page.db")).unwrap()
}

/// Ids of the pages of `t`, in file order.
fn pages_of_type(db: &[u8], t: PageType) -> Vec<usize> {
    (1..db.len() / PAGE)
        .filter(|&id| db[id * PAGE] == t as u8)
        .collect()
}

/// Overwrites the middle of page `id` so its checksum fails.
fn damage(sim: &SimFs, id: usize) {
    let mut db = pages(sim);
    db[id * PAGE + 100..id * PAGE + 200].fill(0xA5);
    sim.write_file_durable(Path::new("/s/page.db"), &db);
}

/// The keys whose payload bytes appear in page `id` (payloads name their key).
fn keys_named_in(page: &[u8]) -> BTreeSet<u64> {
    let mut keys = BTreeSet::new();
    for w in page.windows(11) {
        if w.starts_with(b"msg-") && w[10] == b'-' {
            if let Ok(k) = std::str::from_utf8(&w[4..10]).unwrap_or("x").parse() {
                keys.insert(k);
            }
        }
    }
    keys
}

fn keys_of(s: &Store, q: &str) -> BTreeSet<u64> {
    let msgs = s.messages(q, 0, usize::MAX).unwrap();
    for m in &msgs {
        if q == "a" {
            assert_eq!(m.payload, payload(m.key), "key {}", m.key);
        }
    }
    msgs.into_iter().map(|m| m.key).collect()
}

#[test]
fn a_damaged_data_page_loses_exactly_its_messages_and_names_them() {
    let sim = SimFs::new();
    build(&sim);
    let db = pages(&sim);
    let data = pages_of_type(&db, PageType::Data);
    let victim = data[data.len() / 2];
    let expected: BTreeSet<u64> = keys_named_in(&db[victim * PAGE..(victim + 1) * PAGE]);
    assert!(
        expected.len() > 10,
        "the page held {} messages",
        expected.len()
    );
    damage(&sim, victim);
    let s = open(&sim).unwrap();
    assert!(!s.check().unwrap().is_clean(), "check sees the damage");
    drop(s);

    let report = repair(&sim).unwrap();
    let a = report.queues.iter().find(|q| q.name == "a").unwrap();
    assert_eq!(
        a.lost_keys.iter().copied().collect::<BTreeSet<_>>(),
        expected
    );
    assert!(a.lost_ranges.is_empty());
    assert_eq!(a.lost_messages, expected.len() as u64);
    assert_eq!(report.messages_lost, expected.len() as u64);
    assert_eq!(a.recovered, 2000 - expected.len() as u64);
    let b = report.queues.iter().find(|q| q.name == "b").unwrap();
    assert_eq!((b.recovered, b.lost_messages), (10, 0));
    assert!(!report.is_lossless());

    let s = open(&sim).unwrap();
    assert!(s.check().unwrap().is_clean());
    let want: BTreeSet<u64> = (1..=2000).filter(|k| !expected.contains(k)).collect();
    assert_eq!(keys_of(&s, "a"), want);
    assert_eq!(keys_of(&s, "b"), (1..=10).collect());
    if !expected.contains(&1) {
        // The prepared transaction kept its operations and still resolves.
        assert_eq!(s.prepared().unwrap(), vec![xid()]);
        s.commit_prepared(&xid()).unwrap();
        assert!(s.get("a", 1).unwrap().is_none());
        assert_eq!(s.messages("b", 11, 10).unwrap()[0].payload, b"prepared");
    }
    // Keys are not reused after a repair.
    let mut tx = s.begin();
    assert!(tx.insert("a", NewMessage::new(vec![1])).unwrap() > 2000);
}

#[test]
fn a_damaged_index_leaf_loses_its_key_range_and_nothing_else() {
    let sim = SimFs::new();
    build(&sim);
    let db = pages(&sim);
    let leaves = pages_of_type(&db, PageType::Leaf);
    // Queue b's index is one leaf holding keys 1..=10; pick a leaf of queue a in the middle.
    let victim = leaves
        .iter()
        .copied()
        .filter(|&id| {
            let p = &db[id * PAGE..(id + 1) * PAGE];
            let n = u16::from_le_bytes([p[16], p[17]]) as usize;
            n > 20
        })
        .nth(3)
        .unwrap();
    let p = &db[victim * PAGE..(victim + 1) * PAGE];
    let n = u16::from_le_bytes([p[16], p[17]]) as usize;
    let in_leaf: BTreeSet<u64> = (0..n)
        .map(|i| {
            let at = LEAF_ENTRIES_AT + i * LEAF_ENTRY;
            u64::from_le_bytes(p[at..at + 8].try_into().unwrap())
        })
        .collect();
    damage(&sim, victim);

    let report = repair(&sim).unwrap();
    let a = report.queues.iter().find(|q| q.name == "a").unwrap();
    assert_eq!(a.lost_ranges.len(), 1, "{:?}", a.lost_ranges);
    let r = &a.lost_ranges[0];
    assert!(r.why.contains(&format!("page {victim}")), "{}", r.why);
    for k in &in_leaf {
        assert!(
            *k >= r.lo && r.hi.is_none_or(|h| *k < h),
            "key {k} outside {r:?}"
        );
    }
    assert_eq!(a.lost_messages, in_leaf.len() as u64);
    let s = open(&sim).unwrap();
    assert!(s.check().unwrap().is_clean());
    let want: BTreeSet<u64> = (1..=2000).filter(|k| !in_leaf.contains(k)).collect();
    assert_eq!(keys_of(&s, "a"), want);
}

#[test]
fn repair_of_an_intact_store_loses_nothing() {
    let sim = SimFs::new();
    build(&sim);
    let report = repair(&sim).unwrap();
    assert!(report.is_lossless(), "{report:?}");
    assert_eq!(report.messages_recovered, 2010);
    assert_eq!(report.prepared_kept, 1);
    let s = open(&sim).unwrap();
    assert_eq!(keys_of(&s, "a").len(), 2000);
    assert_eq!(s.prepared().unwrap(), vec![xid()]);
}

#[test]
fn crashes_during_repair_leave_the_damaged_or_the_repaired_store() {
    let prepare = |sim: &SimFs| {
        build(sim);
        let db = pages(sim);
        let data = pages_of_type(&db, PageType::Data);
        damage(sim, data[data.len() / 2]);
    };
    let sim = SimFs::new();
    prepare(&sim);
    let before = sim.mutating_calls();
    repair(&sim).unwrap();
    let calls = sim.mutating_calls() - before;
    let repaired = {
        let s = open(&sim).unwrap();
        keys_of(&s, "a")
    };
    // Every 3rd call with two outcomes keeps the sweep short; the swap-in itself is swept
    // at every call by tests/startup_rewrite.rs.
    let mut states = 0;
    for point in (0..calls).step_by(3) {
        for outcome in [CrashOutcome::ProcessKill, CrashOutcome::PowerLossSubset] {
            let sim = SimFs::new();
            prepare(&sim);
            sim.set_crash_at(Some(sim.mutating_calls() + point));
            let _ = repair(&sim);
            sim.restart(outcome, point);
            states += 1;
            let ctx = format!("crash at call {point} of {calls}, {outcome:?}");
            let s = open(&sim).unwrap_or_else(|e| panic!("{ctx}: open: {e}"));
            let clean = s.check().unwrap().is_clean();
            if clean {
                assert_eq!(keys_of(&s, "a"), repaired, "{ctx}");
            }
            drop(s);
            repair(&sim).unwrap_or_else(|e| panic!("{ctx}: repair again: {e}"));
            let s = open(&sim).unwrap();
            assert!(s.check().unwrap().is_clean(), "{ctx}");
            assert_eq!(keys_of(&s, "a"), repaired, "{ctx}");
        }
    }
    eprintln!("repair crash sweep: {calls} calls, {states} crash states");
}
