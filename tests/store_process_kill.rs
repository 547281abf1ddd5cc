//! The process-kill harness with queue operations on real files: a child process publishes
//! and consumes (Sync commits) and prints every acknowledged publish and removal; the
//! parent SIGKILLs it at random moments and checks that every acknowledged message is there
//! byte for byte, every acknowledged removal stayed removed, and the store's page
//! accounting is intact. 20 runs continue one store.

use std::collections::BTreeSet;
use std::path::Path;

mod support;

use stowage::{Durability, NewMessage, Store, StoreConfig};
use support::kill;

const CHILD_ENV: &str = "STOWAGE_STORE_KILL_DIR";
const RUNS: usize = 20;
const DEPTH: usize = 40;

fn config() -> StoreConfig {
    StoreConfig {
        page_size: 4096,
        initial_db_size_pages: 64,
        cache_min_pages: 512,
        cache_max_pages: 512,
        checkpoint_size: 1 << 20,
        ..StoreConfig::default()
    }
}

fn payload(key: u64) -> Vec<u8> {
    let len = (key * 37 % 3000) as usize;
    (0..len).map(|i| (i as u64 ^ key) as u8).collect()
}

fn child(dir: &Path) -> ! {
    let s = Store::open(dir, config()).unwrap();
    if s.queues().unwrap().is_empty() {
        s.create_queue("q").unwrap();
    }
    // create_queue is durable when it returns: from here on the queue must survive.
    println!("QUEUE 0");
    loop {
        // The payload depends on the key, which the store hands out at insert: take a key,
        // cancel that insert, and insert the real payload under the next key.
        let mut tx = s.begin();
        let k1 = tx.insert("q", NewMessage::new(Vec::new())).unwrap();
        tx.remove("q", k1).unwrap();
        let k = tx.insert("q", NewMessage::new(payload(k1 + 1))).unwrap();
        assert_eq!(k, k1 + 1);
        tx.commit_with(Durability::Sync).unwrap();
        println!("PUB {k}");
        let entries = s.entries("q", 0, usize::MAX).unwrap();
        if entries.len() > DEPTH {
            let mut tx = s.begin();
            let gone: Vec<u64> = entries.iter().take(3).map(|e| e.key).collect();
            for &g in &gone {
                tx.remove("q", g).unwrap();
                // A removal in flight when the kill comes may or may not have happened.
                println!("TRY {g}");
            }
            tx.commit_with(Durability::Sync).unwrap();
            for g in gone {
                println!("DEL {g}");
            }
        }
    }
}

#[test]
fn sigkill_while_publishing_and_consuming_loses_nothing_acknowledged() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(Path::new(&dir));
    }
    let dir = tempfile::tempdir().unwrap();
    let mut delays = kill::Delays::from_env();
    let mut published = BTreeSet::new();
    let mut deleted = BTreeSet::new();
    let mut queue_acknowledged = false;
    for run in 0..RUNS {
        let delay = delays.next(40, 300);
        let lines = kill::run_and_kill(
            "sigkill_while_publishing_and_consuming_loses_nothing_acknowledged",
            &[(CHILD_ENV, dir.path().display().to_string())],
            delay,
        );
        let mut in_flight = BTreeSet::new();
        for (what, k) in kill::parse(&lines) {
            match what.as_str() {
                "PUB" => {
                    published.insert(k);
                }
                "TRY" => {
                    in_flight.insert(k);
                }
                "DEL" => {
                    in_flight.remove(&k);
                    deleted.insert(k);
                }
                "QUEUE" => queue_acknowledged = true,
                _ => {}
            }
        }
        let s = Store::open(dir.path(), config())
            .unwrap_or_else(|e| panic!("run {run}: reopen after kill failed: {e}"));
        s.check_pages().unwrap_or_else(|e| panic!("run {run}: {e}"));
        if !queue_acknowledged {
            // Killed before the child (slow on a loaded machine) acknowledged the queue.
            assert!(published.is_empty());
            s.close().unwrap();
            continue;
        }
        let present: BTreeSet<u64> = s
            .entries("q", 0, usize::MAX)
            .unwrap()
            .iter()
            .map(|e| e.key)
            .collect();
        let expected: Vec<u64> = published.difference(&deleted).copied().collect();
        for k in &expected {
            if in_flight.contains(k) && !present.contains(k) {
                // Its removal committed but the kill came before the acknowledgement.
                deleted.insert(*k);
                continue;
            }
            assert!(
                present.contains(k),
                "run {run}: acknowledged message {k} lost"
            );
            let m = s.get("q", *k).unwrap().unwrap();
            assert_eq!(m.payload, payload(*k), "run {run}: message {k} damaged");
        }
        for k in &deleted {
            assert!(
                !present.contains(k),
                "run {run}: acknowledged removal of {k} undone"
            );
        }
        println!(
            "run {run}: killed after {delay:?}; {} published, {} removed, {} present",
            published.len(),
            deleted.len(),
            present.len()
        );
        s.close().unwrap();
    }
    assert!(!published.is_empty(), "the child never published");
}
