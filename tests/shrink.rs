//! `Store::shrink`: live pages move off the end of page.db and the file is cut, keys and
//! content unchanged, with commits continuing; a crash at any I/O call of a shrink loses
//! nothing.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use stowage::file::SimFs;
use stowage::kernel::OpenOptions;
use stowage::{NewMessage, Store, StoreConfig, Xid};

mod support;

fn config() -> StoreConfig {
    StoreConfig {
        page_size: 4096,
        initial_db_size_pages: 16,
        checkpoint_size: 1 << 20,
        ..StoreConfig::default()
    }
}

fn open(sim: &SimFs) -> stowage::Result<Store> {
    Store::open_with(
        Arc::new(sim.clone()),
        Path::new("/s"),
        config(),
        OpenOptions {
            no_background_threads: true,
            log_prealloc: Some(16 * 1024),
            ..OpenOptions::default()
        },
    )
}

type Contents = BTreeMap<String, Vec<(u64, u32, Vec<u8>)>>;

fn contents(s: &Store) -> Contents {
    s.queues()
        .unwrap()
        .into_iter()
        .map(|q| {
            let m = s.messages(&q.name, 0, usize::MAX).unwrap();
            let m = m
                .into_iter()
                .map(|m| (m.key, m.delivery_count, m.payload))
                .collect();
            (q.name, m)
        })
        .collect()
}

fn payload(key: u64) -> Vec<u8> {
    let len = match key % 40 {
        0 => 6000,
        1 => 0,
        _ => 200 + (key % 300) as usize,
    };
    (0..len).map(|i| (i as u64 ^ key) as u8).collect()
}

/// A backlog consumed from the left edge: the free space is at the start of the file and
/// the live messages at its end, as a broker leaves it. Plus a prepared transaction.
fn churn(s: &Store, n: u64) {
    s.create_queue("q").unwrap();
    s.create_queue("r").unwrap();
    for chunk in 0..n / 100 {
        let mut tx = s.begin();
        for i in 0..100 {
            let k = chunk * 100 + i + 1;
            tx.insert(if k % 5 == 0 { "r" } else { "q" }, payload(k))
                .unwrap();
        }
        tx.commit().unwrap();
    }
    let q: Vec<u64> = s
        .entries("q", 0, usize::MAX)
        .unwrap()
        .iter()
        .map(|e| e.key)
        .collect();
    for keys in q[..q.len() * 9 / 10].chunks(200) {
        let mut tx = s.begin();
        for &k in keys {
            tx.remove("q", k).unwrap();
        }
        tx.commit().unwrap();
    }
    let last = *q.last().unwrap();
    let mut tx = s.begin();
    tx.set_delivery_count("q", last, 7).unwrap();
    tx.commit().unwrap();
    let mut tx = s.begin();
    tx.remove("q", last).unwrap();
    tx.prepare(Xid::new(1, b"x", b"").unwrap()).unwrap();
}

#[test]
fn shrink_moves_live_pages_down_and_cuts_the_file_keeping_every_key() {
    let sim = SimFs::new();
    let s = open(&sim).unwrap();
    churn(&s, 3000);
    let want = contents(&s);
    let st = s.stats();
    let live = st.pages_total - st.pages_free;
    let report = s.shrink().unwrap();
    assert!(report.pages_moved + report.payloads_moved > 0, "{report:?}");
    // Down to the pages in use, plus the free-space map's room and a little slack.
    let after_pages = report.bytes_after / 4096;
    assert!(
        after_pages <= live + 6,
        "shrink left {after_pages} pages; {live} of {} were in use: {report:?}",
        st.pages_total
    );
    assert!(
        report.bytes_after * 3 < report.bytes_before * 2,
        "{report:?}"
    );
    assert_eq!(s.stats().file_bytes, report.bytes_after);
    assert_eq!(contents(&s), want);
    let check = s.check().unwrap();
    assert!(check.is_clean(), "{:?}", check.problems);
    // The store keeps working: new keys continue, the prepared transaction resolves.
    let mut tx = s.begin();
    let k = tx.insert("q", payload(1)).unwrap();
    tx.commit().unwrap();
    assert!(k > want["q"].last().unwrap().0);
    s.commit_prepared(&Xid::new(1, b"x", b"").unwrap()).unwrap();
    s.close().unwrap();
    let len = sim.read_file(Path::new("/s/page.db")).unwrap().len() as u64;
    assert!(
        len == report.bytes_after,
        "the file itself was cut: {len} {report:?}"
    );
    let s = open(&sim).unwrap();
    assert!(s.check().unwrap().is_clean());
    assert_eq!(s.get("q", k).unwrap().unwrap().payload, payload(1));
}

#[test]
fn commits_continue_during_a_shrink() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), config()).unwrap();
    churn(&s, 3000);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (s, stop) = (s.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut acked = Vec::new();
            while !stop.load(Ordering::Relaxed) || acked.len() < 20 {
                let mut tx = s.begin();
                let k = tx
                    .insert("r", NewMessage::new(payload(acked.len() as u64)))
                    .unwrap();
                tx.commit().unwrap();
                acked.push(k);
            }
            acked
        })
    };
    let before = contents(&s);
    let report = s.shrink().unwrap();
    stop.store(true, Ordering::Relaxed);
    let acked = writer.join().unwrap();
    assert!(report.bytes_after < report.bytes_before, "{report:?}");
    let after = contents(&s);
    assert_eq!(after["q"], before["q"]);
    let r: BTreeMap<u64, Vec<u8>> = after["r"].iter().map(|(k, _, p)| (*k, p.clone())).collect();
    for (i, k) in acked.iter().enumerate() {
        assert_eq!(r.get(k), Some(&payload(i as u64)), "acknowledged {k}");
    }
    assert!(s.check().unwrap().is_clean());
    s.close().unwrap();
    let s = Store::open(dir.path(), config()).unwrap();
    assert!(s.check().unwrap().is_clean());
    assert_eq!(s.messages("r", 0, usize::MAX).unwrap().len(), r.len());
}

#[test]
fn crashes_during_a_shrink_lose_nothing() {
    let build = |sim: &SimFs| {
        let s = open(sim).unwrap();
        churn(&s, 1000);
        let c = contents(&s);
        s.close().unwrap();
        c
    };
    let sim = SimFs::new();
    let want = build(&sim);
    let s = open(&sim).unwrap();
    let before = sim.mutating_calls();
    let report = s.shrink().unwrap();
    let calls = sim.mutating_calls() - before;
    drop(s);
    assert!(report.bytes_after < report.bytes_before, "{report:?}");
    let mut states = 0;
    for (point, outcome, seed) in support::crash_points(calls, 1, 3) {
        let sim = SimFs::new();
        build(&sim);
        let s = open(&sim).unwrap();
        sim.set_crash_at(Some(sim.mutating_calls() + point));
        let _ = s.shrink();
        drop(s);
        sim.restart(outcome, point * 17 + seed);
        states += 1;
        let ctx = format!("crash at call {point} of {calls}, {outcome:?}, seed {seed}");
        let s = open(&sim).unwrap_or_else(|e| panic!("{ctx}: open: {e}"));
        assert_eq!(contents(&s), want, "{ctx}");
        let check = s.check().unwrap();
        assert!(check.is_clean(), "{ctx}: {:?}", check.problems);
        assert_eq!(s.prepared().unwrap().len(), 1, "{ctx}");
        // A shrink from there completes.
        s.shrink()
            .unwrap_or_else(|e| panic!("{ctx}: shrink again: {e}"));
        assert_eq!(contents(&s), want, "{ctx}: after the second shrink");
    }
    eprintln!("shrink crash sweep: {calls} calls, {states} crash states");
}
