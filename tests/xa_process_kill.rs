//! The process-kill harness with XA on real files: a child prepares transactions and
//! resolves older ones, printing each acknowledged prepare and resolution; after SIGKILL
//! every xid whose prepare returned is still listed by `prepared()` unless its resolution
//! was acknowledged (or was in flight), and an acknowledged commit's message is present.

use std::collections::BTreeSet;
use std::path::Path;

mod support;

use stowage::{NewMessage, Store, StoreConfig, Xid};
use support::kill;

const CHILD_ENV: &str = "STOWAGE_XA_KILL_DIR";
const RUNS: usize = 12;

fn config() -> StoreConfig {
    StoreConfig {
        page_size: 4096,
        initial_db_size_pages: 64,
        checkpoint_size: 1 << 20,
        ..StoreConfig::default()
    }
}

fn xid(n: u64) -> Xid {
    Xid::new(4, &n.to_le_bytes(), b"kill").expect("valid xid")
}

fn child(dir: &Path) -> ! {
    let s = Store::open(dir, config()).unwrap();
    if s.queues().unwrap().is_empty() {
        s.create_queue("q").unwrap();
    }
    let mut n = s
        .prepared()
        .unwrap()
        .iter()
        .map(|x| u64::from_le_bytes(x.gtrid().try_into().unwrap()))
        .max()
        .unwrap_or(0)
        .max(
            std::env::var("STOWAGE_XA_NEXT")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        );
    loop {
        n += 1;
        let mut tx = s.begin();
        tx.insert("q", NewMessage::new(n.to_le_bytes().to_vec()))
            .unwrap();
        tx.prepare(xid(n)).unwrap();
        println!("PREP {n}");
        // Resolve the oldest in-doubt one when more than 5 are pending.
        let pending = s.prepared().unwrap();
        if pending.len() > 5 {
            let old = &pending[0];
            let m = u64::from_le_bytes(old.gtrid().try_into().unwrap());
            println!("TRY {m}");
            if m % 2 == 0 {
                s.commit_prepared(old).unwrap();
                println!("COMMIT {m}");
            } else {
                s.rollback_prepared(old).unwrap();
                println!("ROLLBACK {m}");
            }
        }
    }
}

#[test]
fn sigkill_keeps_every_acknowledged_prepare_in_doubt() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(Path::new(&dir));
    }
    let dir = tempfile::tempdir().unwrap();
    let mut delays = kill::Delays::from_env();
    let mut prepared = BTreeSet::new();
    let mut resolved = BTreeSet::new();
    let mut committed = BTreeSet::new();
    let mut next = 0u64;
    for run in 0..RUNS {
        let delay = delays.next(40, 250);
        let lines = kill::run_and_kill(
            "sigkill_keeps_every_acknowledged_prepare_in_doubt",
            &[
                (CHILD_ENV, dir.path().display().to_string()),
                ("STOWAGE_XA_NEXT", next.to_string()),
            ],
            delay,
        );
        let mut in_flight = BTreeSet::new();
        for (w, n) in kill::parse(&lines) {
            next = next.max(n);
            match w.as_str() {
                "PREP" => {
                    prepared.insert(n);
                }
                "TRY" => {
                    in_flight.insert(n);
                }
                "COMMIT" | "ROLLBACK" => {
                    in_flight.remove(&n);
                    resolved.insert(n);
                    if w == "COMMIT" {
                        committed.insert(n);
                    }
                }
                _ => {}
            }
        }
        let s = Store::open(dir.path(), config())
            .unwrap_or_else(|e| panic!("run {run}: reopen failed: {e}"));
        let listed: BTreeSet<u64> = s
            .prepared()
            .unwrap()
            .iter()
            .map(|x| u64::from_le_bytes(x.gtrid().try_into().unwrap()))
            .collect();
        let unresolved: Vec<u64> = prepared.difference(&resolved).copied().collect();
        for n in &unresolved {
            if in_flight.contains(n) && !listed.contains(n) {
                resolved.insert(*n); // resolved just before the kill, unacknowledged
                continue;
            }
            assert!(
                listed.contains(n),
                "run {run}: acknowledged prepare {n} is no longer in doubt"
            );
        }
        for n in &resolved {
            assert!(
                !listed.contains(n),
                "run {run}: resolved xid {n} is in doubt again"
            );
        }
        let present: BTreeSet<Vec<u8>> = match s.messages("q", 0, usize::MAX) {
            // Killed before the child (slow on a loaded machine) created its queue.
            Err(stowage::Error::QueueNotFound { .. }) if committed.is_empty() => Vec::new(),
            other => other.unwrap(),
        }
        .into_iter()
        .map(|m| m.payload)
        .collect();
        for n in &committed {
            assert!(
                present.contains(n.to_le_bytes().as_slice()),
                "run {run}: committed xid {n}'s message is missing"
            );
        }
        s.check_pages().unwrap();
        println!(
            "run {run}: {} prepared, {} resolved, {} in doubt",
            prepared.len(),
            resolved.len(),
            listed.len()
        );
        s.close().unwrap();
    }
    assert!(!prepared.is_empty());
}
