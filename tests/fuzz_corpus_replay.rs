//! Replays every fuzz corpus in `fuzz/corpus/<target>/` through the same entry point the
//! cargo-fuzz target uses, so inputs the fuzzer found (and the seeds) stay covered by
//! `cargo test`. `cargo test --test fuzz_corpus_replay -- --ignored` regenerates the seeds.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use stowage::file::SimFs;
use stowage::page::{init_header, PageType, ROOT_SLOTS};
use stowage::pagedb::{CommitInfo, PageDb};
use stowage::StoreConfig;

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let dir = corpus(target);
    let mut n = 0;
    let mut entries: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let data = fs::read(&path).unwrap();
        run(&data);
        n += 1;
    }
    n
}

#[test]
fn decode_pages_corpus_replays_without_panic() {
    let n = replay("decode_pages", stowage::fuzzing::decode_pages);
    assert!(n >= 4, "the decode_pages corpus lost its seeds ({n} files)");
}

#[test]
fn decode_log_corpus_replays_without_panic() {
    let n = replay("decode_log", stowage::fuzzing::decode_log);
    assert!(n >= 3, "the decode_log corpus lost its seeds ({n} files)");
}

/// The frames region of a log holding `commits` unreplayed commits.
fn seed_log_frames(commits: u8) -> Vec<u8> {
    let sim = stowage::fuzzing::store_with_unreplayed_log(commits);
    let bytes = sim.read_file(Path::new("/fuzz/transaction.log")).unwrap();
    let mut frames = bytes[1024..].to_vec();
    while frames.last() == Some(&0) {
        frames.pop();
    }
    frames
}

#[test]
fn mutated_logs_never_panic() {
    let base = seed_log_frames(3);
    assert!(base.len() > 100, "the seed log holds no frames");
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..300 {
        let mut d = base.clone();
        for _ in 0..(next() % 6 + 1) {
            let i = (next() % d.len() as u64) as usize;
            d[i] = next() as u8;
        }
        stowage::fuzzing::decode_log(&d);
    }
}

#[test]
fn decode_xa_corpus_replays_without_panic() {
    let n = replay("decode_xa", stowage::fuzz_xa);
    assert!(n >= 2, "the decode_xa corpus lost its seeds ({n} files)");
}

/// The xa.log of a store with two in-doubt transactions.
fn seed_xa_log() -> Vec<u8> {
    use stowage::kernel::OpenOptions;
    use stowage::{NewMessage, Store, StoreConfig, Xid};
    let sim = SimFs::new();
    let opts = OpenOptions {
        no_background_threads: true,
        log_prealloc: Some(0),
        ..OpenOptions::default()
    };
    let s = Store::open_with(
        Arc::new(sim.clone()),
        Path::new("/x"),
        StoreConfig::default(),
        opts,
    )
    .unwrap();
    s.create_queue("q").unwrap();
    let mut tx = s.begin();
    let k = tx.insert("q", NewMessage::new(b"one".to_vec())).unwrap();
    tx.commit().unwrap();
    let mut tx = s.begin();
    tx.insert("q", NewMessage::new(b"two".to_vec())).unwrap();
    tx.remove("q", k).unwrap();
    tx.prepare(Xid::new(1, b"g1", b"b").unwrap()).unwrap();
    let mut tx = s.begin();
    tx.insert("q", NewMessage::new(vec![7; 300]).priority(9))
        .unwrap();
    tx.prepare(Xid::new(2, b"g2", b"").unwrap()).unwrap();
    s.close().unwrap();
    sim.read_file(Path::new("/x/xa.log")).unwrap()
}

#[test]
fn mutated_xa_logs_never_panic() {
    let base = seed_xa_log();
    let mut x: u64 = 0x1234_5678_9ABC_DEF1;
    for _ in 0..2000 {
        let mut d = base.clone();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let i = (x % d.len() as u64) as usize;
        d[i] ^= (x >> 8) as u8 | 1;
        stowage::fuzz_xa(&d);
        stowage::fuzz_xa(&d[..i]);
    }
}

/// A valid page.db image with live pages in two commits.
fn seed_page_db(page_size: u32) -> Vec<u8> {
    let sim = SimFs::new();
    let cfg = StoreConfig {
        page_size,
        initial_db_size_pages: 10,
        ..StoreConfig::default()
    };
    let db = PageDb::open(Arc::new(sim.clone()), Path::new("/s"), &cfg).unwrap();
    let mut roots = [0; ROOT_SLOTS];
    for round in 0..2u64 {
        for _ in 0..3 {
            let id = db.allocate().unwrap();
            let mut p = vec![round as u8 + 1; db.page_size()];
            init_header(&mut p, PageType::Data, round);
            db.write_page(id, &p).unwrap();
            roots[round as usize] = id;
        }
        db.commit(CommitInfo {
            checkpoint_lsn: round,
            roots,
            clean_close: false,
            truncate: false,
        })
        .unwrap();
    }
    drop(db);
    sim.read_file(Path::new("/s/page.db")).unwrap()
}

/// Deterministic mutations of valid files: cheap always-on fuzzing beyond the corpus.
#[test]
fn mutated_page_db_images_never_panic() {
    let base = seed_page_db(2048);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..3000 {
        let mut d = base.clone();
        for _ in 0..(next() % 8 + 1) {
            let i = (next() % d.len() as u64) as usize;
            d[i] = next() as u8;
        }
        if next() % 5 == 0 {
            let len = (next() % d.len() as u64) as usize;
            d.truncate(len);
        }
        stowage::fuzzing::decode_pages(&d);
    }
}

#[test]
#[ignore = "regenerates the seed corpus; run by hand"]
fn regenerate_decode_pages_seeds() {
    let dir = corpus("decode_pages");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("seed-2k"), seed_page_db(2048)).unwrap();
    fs::write(dir.join("seed-4k"), seed_page_db(4096)).unwrap();
    let base = seed_page_db(2048);
    fs::write(dir.join("seed-superblocks-only"), &base[..1024]).unwrap();
    fs::write(dir.join("seed-empty"), b"").unwrap();
    let mut bad = base.clone();
    bad[512 + 24] ^= 0xFF;
    fs::write(dir.join("seed-bad-second-superblock"), bad).unwrap();
    let dir = corpus("decode_log");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("seed-empty"), b"").unwrap();
    fs::write(dir.join("seed-one-commit"), seed_log_frames(1)).unwrap();
    fs::write(dir.join("seed-three-commits"), seed_log_frames(3)).unwrap();
    let dir = corpus("decode_xa");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("seed-empty"), b"").unwrap();
    fs::write(dir.join("seed-xa-log"), seed_xa_log()).unwrap();
}
