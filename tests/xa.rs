//! XA two-phase commit through the store API: prepare, in-doubt listing, locks, commit and
//! rollback of prepared transactions, and survival across clean reopens, crashes and
//! checkpoints (xa.log).

use std::path::Path;
use std::sync::Arc;

use stowage::file::{CrashOutcome, SimFs};
use stowage::kernel::OpenOptions;
use stowage::{Durability, Error, NewMessage, Store, StoreConfig, Xid};

fn config() -> StoreConfig {
    StoreConfig {
        initial_db_size_pages: 32,
        checkpoint_size: 1 << 20,
        ..StoreConfig::default()
    }
}

fn open(sim: &SimFs) -> Store {
    Store::open_with(
        Arc::new(sim.clone()),
        Path::new("/xa"),
        config(),
        OpenOptions {
            no_background_threads: true,
            log_prealloc: Some(0),
            ..OpenOptions::default()
        },
    )
    .unwrap()
}

fn xid(n: u8) -> Xid {
    Xid::new(1, &[n; 3], b"b").unwrap()
}

/// Store with queue `q` holding three committed messages; returns their keys.
fn setup(s: &Store) -> Vec<u64> {
    s.create_queue("q").unwrap();
    let mut tx = s.begin();
    let keys = (0..3)
        .map(|i| tx.insert("q", NewMessage::new(vec![i; 10])).unwrap())
        .collect();
    tx.commit_with(Durability::Sync).unwrap();
    keys
}

fn keys(s: &Store) -> Vec<u64> {
    s.entries("q", 0, 100)
        .unwrap()
        .iter()
        .map(|e| e.key)
        .collect()
}

#[test]
fn prepared_work_is_invisible_locked_and_applied_once_on_commit() {
    let sim = SimFs::new();
    let s = open(&sim);
    let k = setup(&s);
    let mut tx = s.begin();
    let new = tx.insert("q", NewMessage::new(b"xa".to_vec())).unwrap();
    tx.remove("q", k[0]).unwrap();
    tx.set_delivery_count("q", k[1], 4).unwrap();
    tx.prepare(xid(1)).unwrap();
    assert_eq!(s.prepared().unwrap(), vec![xid(1)]);
    assert_eq!(keys(&s), k, "nothing visible before commit_prepared");
    assert_eq!(
        s.get("q", k[0]).unwrap().unwrap().payload,
        vec![0; 10],
        "removed message stays readable"
    );
    let mut other = s.begin();
    assert!(matches!(
        other.remove("q", k[0]),
        Err(Error::MessageLocked { .. })
    ));
    assert!(matches!(
        other.set_delivery_count("q", k[1], 1),
        Err(Error::MessageLocked { .. })
    ));
    other.remove("q", k[2]).unwrap();
    drop(other);
    let mut dup = s.begin();
    dup.insert("q", NewMessage::new(vec![])).unwrap();
    assert!(matches!(dup.prepare(xid(1)), Err(Error::XidExists { .. })));

    s.commit_prepared(&xid(1)).unwrap();
    assert!(s.prepared().unwrap().is_empty());
    assert_eq!(keys(&s), vec![k[1], k[2], new]);
    assert_eq!(s.get("q", k[1]).unwrap().unwrap().delivery_count, 4);
    assert!(matches!(
        s.commit_prepared(&xid(1)),
        Err(Error::XidNotFound { .. })
    ));
    assert!(matches!(
        s.rollback_prepared(&xid(1)),
        Err(Error::XidNotFound { .. })
    ));
    // The lock went with the resolution.
    let mut tx = s.begin();
    tx.remove("q", k[1]).unwrap();
    tx.commit().unwrap();
}

#[test]
fn rollback_prepared_discards_and_releases() {
    let sim = SimFs::new();
    let s = open(&sim);
    let k = setup(&s);
    let mut tx = s.begin();
    tx.insert("q", NewMessage::new(b"gone".to_vec())).unwrap();
    tx.remove("q", k[0]).unwrap();
    tx.prepare(xid(2)).unwrap();
    s.rollback_prepared(&xid(2)).unwrap();
    assert_eq!(keys(&s), k);
    assert!(s.prepared().unwrap().is_empty());
    let mut tx = s.begin();
    tx.remove("q", k[0]).unwrap();
    tx.commit().unwrap();
}

#[test]
fn in_doubt_transactions_survive_reopen_crash_and_checkpoints_with_their_locks() {
    let sim = SimFs::new();
    let s = open(&sim);
    let k = setup(&s);
    let mut tx = s.begin();
    let new = tx.insert("q", NewMessage::new(b"kept".to_vec())).unwrap();
    tx.remove("q", k[0]).unwrap();
    tx.prepare(xid(3)).unwrap();
    let mut tx = s.begin();
    tx.remove("q", k[1]).unwrap();
    tx.prepare(xid(4)).unwrap();
    s.rollback_prepared(&xid(4)).unwrap();
    // A checkpoint recycles the log: the in-doubt transaction must live on in xa.log.
    s.checkpoint().unwrap();
    assert!(sim.read_file(Path::new("/xa/xa.log")).is_some());
    s.close().unwrap();
    let s = open(&sim);
    assert_eq!(s.prepared().unwrap(), vec![xid(3)]);
    let mut other = s.begin();
    assert!(
        matches!(other.remove("q", k[0]), Err(Error::MessageLocked { .. })),
        "lock taken again at open"
    );
    drop(other);
    // Keys of the prepared insert are not handed out again.
    let mut tx = s.begin();
    let fresh = tx.insert("q", NewMessage::new(vec![])).unwrap();
    assert!(
        fresh > new,
        "key {fresh} reused (prepared insert holds {new})"
    );
    drop(tx);
    // Crash (power loss) with the transaction in doubt and more commits after the checkpoint.
    let mut tx = s.begin();
    tx.insert("q", NewMessage::new(b"later".to_vec())).unwrap();
    tx.commit_with(Durability::Sync).unwrap();
    sim.crash_now();
    drop(s);
    sim.restart(CrashOutcome::PowerLossTorn, 11);
    let s = open(&sim);
    assert_eq!(s.prepared().unwrap(), vec![xid(3)]);
    s.commit_prepared(&xid(3)).unwrap();
    let ks = keys(&s);
    assert!(!ks.contains(&k[0]) && ks.contains(&new), "{ks:?}");
    assert_eq!(s.get("q", new).unwrap().unwrap().payload, b"kept");
    s.check_pages().unwrap();
    drop(s);
    let s = open(&sim);
    assert!(
        s.prepared().unwrap().is_empty(),
        "a resolved transaction came back"
    );
}

#[test]
fn a_damaged_xa_log_is_corruption_naming_it() {
    let sim = SimFs::new();
    let s = open(&sim);
    setup(&s);
    let mut tx = s.begin();
    tx.insert("q", NewMessage::new(vec![1])).unwrap();
    tx.prepare(xid(5)).unwrap();
    s.close().unwrap();
    let p = Path::new("/xa/xa.log");
    let good = sim.read_file(p).unwrap();
    for i in (0..good.len()).step_by(3) {
        let mut bad = good.clone();
        bad[i] ^= 0x20;
        sim.write_file_durable(p, &bad);
        let e = Store::open_with(
            Arc::new(sim.clone()),
            Path::new("/xa"),
            config(),
            OpenOptions {
                no_background_threads: true,
                ..OpenOptions::default()
            },
        )
        .unwrap_err();
        assert!(
            matches!(&e, Error::Corruption { file, .. } if file == "xa.log"),
            "byte {i}: {e}"
        );
    }
    sim.write_file_durable(p, &good);
    assert_eq!(open(&sim).prepared().unwrap(), vec![xid(5)]);
}

#[test]
fn xids_follow_x_open_limits() {
    assert!(Xid::new(0, b"", b"").is_err());
    assert!(Xid::new(0, &[1; 65], b"").is_err());
    assert!(Xid::new(0, b"a", &[1; 65]).is_err());
    let x = Xid::new(-1, &[1; 64], &[2; 64]).unwrap();
    assert_eq!(
        (x.format_id(), x.gtrid().len(), x.bqual().len()),
        (-1, 64, 64)
    );
}
