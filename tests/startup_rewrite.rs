//! Compaction and resize at open (`perform_compact_on_startup`, `perform_resize_on_startup`):
//! everything survives with its key, the file gets denser or changes page size, and a crash
//! at any I/O call of the rewrite opens as the old or the new store.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use stowage::file::SimFs;
use stowage::kernel::OpenOptions;
use stowage::{DurableSubscription, NewMessage, Store, StoreConfig, Xid};

mod support;

fn config() -> StoreConfig {
    StoreConfig {
        page_size: 4096,
        initial_db_size_pages: 16,
        checkpoint_size: 1 << 20,
        ..StoreConfig::default()
    }
}

fn open(sim: &SimFs, cfg: StoreConfig) -> stowage::Result<Store> {
    Store::open_with(
        Arc::new(sim.clone()),
        Path::new("/s"),
        cfg,
        OpenOptions {
            no_background_threads: true,
            log_prealloc: Some(16 * 1024),
            ..OpenOptions::default()
        },
    )
}

fn compact() -> StoreConfig {
    StoreConfig {
        perform_compact_on_startup: true,
        ..config()
    }
}

/// A message as the rewrite must keep it: key, priority, delivery count, expiration, payload.
type Kept = (u64, u8, u32, Option<u64>, Vec<u8>);

/// Everything a rewrite must keep: per queue, each message's key, priority, delivery count,
/// expiration and payload; the prepared xids; the durable subscriptions.
#[derive(Debug, PartialEq)]
struct State {
    queues: BTreeMap<String, Vec<Kept>>,
    prepared: Vec<Xid>,
    durables: usize,
}

fn state(s: &Store) -> State {
    let queues = s
        .queues()
        .unwrap()
        .into_iter()
        .map(|q| {
            let m = s.messages(&q.name, 0, usize::MAX).unwrap();
            let m = m
                .into_iter()
                .map(|m| (m.key, m.priority, m.delivery_count, m.expiration, m.payload))
                .collect();
            (q.name, m)
        })
        .collect();
    State {
        queues,
        prepared: s.prepared().unwrap(),
        durables: s.durables().unwrap().len(),
    }
}

fn xid(n: u8) -> Xid {
    Xid::new(1, &[n; 8], b"b").unwrap()
}

/// Queues with small, empty and overflow payloads, delivery counts, priorities, a consumed
/// range (free space to compact away), a rolled-back key, and two prepared transactions.
/// A filled store (the default configuration), closed; returns its state.
fn build(sim: &SimFs) -> State {
    let s = open(sim, config()).unwrap();
    fill(&s);
    let st = state(&s);
    s.close().unwrap();
    st
}

fn fill(s: &Store) {
    for q in ["a", "b", "gone"] {
        s.create_queue(q).unwrap();
    }
    s.delete_queue("gone").unwrap();
    let mut tx = s.begin();
    for i in 0..300u32 {
        let len = match i % 7 {
            0 => 0,
            1 => 5000,
            _ => 100 + i as usize,
        };
        let msg = NewMessage::new(vec![i as u8; len])
            .priority((i % 10) as u8)
            .expiration((i % 3 == 0).then_some(1_000_000 + u64::from(i)));
        tx.insert(if i % 2 == 0 { "a" } else { "b" }, msg).unwrap();
    }
    tx.commit().unwrap();
    let mut tx = s.begin();
    for key in 1..100 {
        tx.remove("a", key).unwrap();
    }
    tx.set_delivery_count("a", 120, 3).unwrap();
    tx.set_delivery_count("b", 7, 9).unwrap();
    tx.commit().unwrap();
    let mut tx = s.begin();
    tx.insert("b", NewMessage::new(b"rolled back".to_vec()))
        .unwrap();
    tx.rollback();
    let mut tx = s.begin();
    tx.insert("a", NewMessage::new(b"prepared insert".to_vec()))
        .unwrap();
    tx.remove("b", 3).unwrap();
    tx.prepare(xid(1)).unwrap();
    let mut tx = s.begin();
    tx.set_delivery_count("a", 130, 5).unwrap();
    tx.prepare(xid(2)).unwrap();
    s.save_durable(&DurableSubscription {
        client_id: "client".into(),
        name: "sub".into(),
        topic: "a".into(),
        selector: None,
        no_local: false,
    })
    .unwrap();
}

#[test]
fn compaction_on_startup_keeps_every_key_queue_and_prepared_transaction() {
    let sim = SimFs::new();
    let s = open(&sim, config()).unwrap();
    fill(&s);
    let want = state(&s);
    let next_b = {
        let mut tx = s.begin();
        let k = tx.insert("b", NewMessage::new(vec![1])).unwrap();
        tx.rollback();
        k
    };
    let before = s.stats();
    s.close().unwrap();

    let s = open(&sim, compact()).unwrap();
    assert_eq!(state(&s), want);
    assert!(s.check().unwrap().is_clean());
    let after = s.stats();
    assert!(
        after.pages_total - after.pages_free < before.pages_total - before.pages_free,
        "compaction used {} pages, before {}",
        after.pages_total - after.pages_free,
        before.pages_total - before.pages_free
    );
    // Keys are never reused: not the rolled-back ones, not the prepared insert's.
    let mut tx = s.begin();
    assert!(tx.insert("b", NewMessage::new(vec![2])).unwrap() > next_b);
    tx.rollback();
    // The prepared transactions still hold their locks and resolve as before.
    let mut tx = s.begin();
    assert!(matches!(
        tx.remove("b", 3),
        Err(stowage::Error::MessageLocked { .. })
    ));
    drop(tx);
    s.commit_prepared(&xid(1)).unwrap();
    assert!(s.get("b", 3).unwrap().is_none());
    let a = s.messages("a", 0, usize::MAX).unwrap();
    assert_eq!(a.last().unwrap().payload, b"prepared insert");
    s.rollback_prepared(&xid(2)).unwrap();
    assert_eq!(s.get("a", 130).unwrap().unwrap().delivery_count, 0);
    // A queue created after the rewrite gets a fresh id: "gone"'s id is not reused, so a
    // stale prepared op on it could never apply to the new queue.
    s.create_queue("new").unwrap();
    assert!(s.check().unwrap().is_clean());
    s.close().unwrap();
    let s = open(&sim, config()).unwrap();
    assert!(s.check().unwrap().is_clean());
    assert_eq!(s.queues().unwrap().len(), 3);
}

#[test]
fn resize_on_startup_rewrites_at_the_recommended_page_size() {
    let sim = SimFs::new();
    let s = open(&sim, config()).unwrap();
    fill(&s);
    let want = state(&s);
    s.close().unwrap();
    let resize = StoreConfig {
        perform_resize_on_startup: true,
        page_size_recommended: Some(16384),
        ..config()
    };
    let s = open(&sim, resize.clone()).unwrap();
    assert_eq!(s.stats().page_size, 16384);
    assert_eq!(state(&s), want);
    assert!(s.check().unwrap().is_clean());
    s.close().unwrap();
    // Already at the recommended size: the next open does not rewrite again.
    let s = open(&sim, resize).unwrap();
    assert_eq!(s.stats().page_size, 16384);
    assert_eq!(state(&s), want);
    s.close().unwrap();
    let s = open(
        &sim,
        StoreConfig {
            perform_resize_on_startup: true,
            page_size_recommended: Some(2048),
            ..config()
        },
    )
    .unwrap();
    assert_eq!(s.stats().page_size, 2048);
    assert_eq!(state(&s), want);
    assert!(s.check().unwrap().is_clean());
}

#[test]
fn a_leftover_incomplete_rewrite_directory_is_discarded_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), config()).unwrap();
    s.create_queue("q").unwrap();
    let mut tx = s.begin();
    tx.insert("q", NewMessage::new(b"kept".to_vec())).unwrap();
    tx.commit().unwrap();
    s.close().unwrap();
    let junk = dir.path().join("rewrite.tmp");
    std::fs::create_dir_all(junk.join("durables")).unwrap();
    std::fs::write(junk.join("page.db"), b"half a page.db").unwrap();
    std::fs::write(junk.join(".complete"), b"page.db\ndeadbeef\n").unwrap(); // bad CRC
    let s = Store::open(dir.path(), config()).unwrap();
    assert!(!junk.exists());
    assert_eq!(s.messages("q", 0, 10).unwrap()[0].payload, b"kept");
}

#[test]
fn crashes_during_a_startup_resize_open_as_the_old_or_the_new_store() {
    let resize = StoreConfig {
        perform_resize_on_startup: true,
        page_size_recommended: Some(8192),
        ..config()
    };
    sweep_startup_rewrite(resize, 8192, 1);
}

#[test]
fn crashes_during_a_startup_compaction_open_as_the_old_or_the_new_store() {
    // The same copy and swap-in as resize: every 3rd call keeps CI short.
    sweep_startup_rewrite(compact(), 4096, 3);
}

/// Crashes the open that runs `rewrite` at every `stride`-th mutating call with every
/// outcome; the store must open with the old content at the old or the new page size, and
/// the rewrite must complete when run again.
fn sweep_startup_rewrite(rewrite: StoreConfig, new_size: u64, stride: usize) {
    let sim = SimFs::new();
    let want = build(&sim);
    let before = sim.mutating_calls();
    drop(open(&sim, rewrite.clone()).unwrap());
    let calls = sim.mutating_calls() - before;
    assert!(calls > 20, "the rewrite made {calls} mutating calls");
    let mut states = 0;
    for (point, outcome, seed) in support::crash_points(calls, stride, 3) {
        let sim = SimFs::new();
        build(&sim);
        sim.set_crash_at(Some(sim.mutating_calls() + point));
        let crashed = open(&sim, rewrite.clone());
        drop(crashed);
        sim.restart(outcome, point * 31 + seed);
        states += 1;
        let ctx = format!("crash at call {point} of {calls}, {outcome:?}, seed {seed}");
        let s = open(&sim, config()).unwrap_or_else(|e| panic!("{ctx}: open: {e}"));
        let size = s.stats().page_size;
        assert!(size == 4096 || size == new_size, "{ctx}: page size {size}");
        assert_eq!(state(&s), want, "{ctx}");
        let report = s.check().unwrap();
        assert!(report.is_clean(), "{ctx}: {:?}", report.problems);
        drop(s);
        // Running the rewrite again from there completes it.
        let s = open(&sim, rewrite.clone()).unwrap_or_else(|e| panic!("{ctx}: redo: {e}"));
        assert_eq!(s.stats().page_size, new_size, "{ctx}");
        assert_eq!(state(&s), want, "{ctx}: after the redone rewrite");
    }
    eprintln!("startup rewrite crash sweep: {calls} calls, {states} crash states");
}

#[test]
fn a_failed_rewrite_at_open_opens_the_store_as_it_was() {
    // Mutating calls of a plain open, and of an open that compacts.
    let sim = SimFs::new();
    let want = build(&sim);
    let before = sim.mutating_calls();
    drop(open(&sim, config()).unwrap());
    let plain = sim.mutating_calls() - before;
    let before = sim.mutating_calls();
    drop(open(&sim, compact()).unwrap());
    let compacting = sim.mutating_calls() - before;
    let rewrite = compacting - 2 * plain;
    assert!(rewrite > 20, "{plain} {compacting}");
    // Fail one call inside the rewrite (a full disk, say): the open still succeeds, with
    // the old content, and leaves no rewrite directory behind.
    for at in [1, rewrite / 4, rewrite / 2] {
        let sim = SimFs::new();
        build(&sim);
        sim.fail_call(sim.mutating_calls() + plain + at);
        let s = open(&sim, compact()).unwrap_or_else(|e| panic!("failing call {at}: {e}"));
        assert_eq!(state(&s), want, "failing call {at}");
        drop(s);
        let s = open(&sim, config()).unwrap();
        assert_eq!(state(&s), want, "failing call {at}, reopened");
        assert!(s.check().unwrap().is_clean());
        drop(s);
        let fs: &dyn stowage::file::FileSystem = &sim;
        assert!(!fs.exists(Path::new("/s/rewrite.tmp")).unwrap());
    }
}
