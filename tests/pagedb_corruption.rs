//! Corruption sweep over page.db: every byte of a small file flipped in turn (and the file
//! truncated at every sector). Each open either fails with `Error::Corruption` naming
//! page.db and the damaged location, or succeeds with the damage invisible: every live page
//! reads back byte-identical or fails with `Corruption` naming that page. Never a panic.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use stowage::file::SimFs;
use stowage::page::{init_header, PageId, PageType, ROOT_SLOTS};
use stowage::pagedb::{CommitInfo, PageDb};
use stowage::{Error, StoreConfig};

const DIR: &str = "/store";

fn config() -> StoreConfig {
    StoreConfig {
        page_size: 2048,
        initial_db_size_pages: 10,
        ..StoreConfig::default()
    }
}

struct Fixture {
    bytes: Vec<u8>,
    live: BTreeMap<PageId, Vec<u8>>,
    free: Vec<PageId>,
    roots: [PageId; ROOT_SLOTS],
}

/// A page.db with two commits (both superblock copies valid), grown once, with live pages.
fn fixture() -> Fixture {
    let sim = SimFs::new();
    let db = PageDb::open(Arc::new(sim.clone()), Path::new(DIR), &config()).unwrap();
    let mut live = BTreeMap::new();
    let mut roots = [0; ROOT_SLOTS];
    for round in 0..2u8 {
        for i in 0..6u8 {
            let id = db.allocate().unwrap();
            let mut page = vec![0u8; db.page_size()];
            for (j, b) in page.iter_mut().enumerate() {
                *b = (j as u8).wrapping_mul(13) ^ i ^ round;
            }
            init_header(&mut page, PageType::Leaf, u64::from(round));
            db.write_page(id, &page).unwrap();
            let mut stored = vec![0u8; db.page_size()];
            db.read_page(id, &mut stored).unwrap();
            live.insert(id, stored);
        }
        roots[0] = *live.keys().next().unwrap();
        db.commit(CommitInfo {
            checkpoint_lsn: u64::from(round) + 5,
            roots,
            clean_close: true,
            truncate: false,
        })
        .unwrap();
    }
    let free = db.free_page_ids();
    drop(db);
    let bytes = sim.read_file(&Path::new(DIR).join("page.db")).unwrap();
    Fixture {
        bytes,
        live,
        free,
        roots,
    }
}

fn assert_names_page_db(e: &Error, ctx: &str) {
    match e {
        Error::Corruption { file, location, .. } => {
            assert_eq!(file, "page.db", "{ctx}: {e}");
            assert!(
                location.contains("page")
                    || location.contains("superblock")
                    || location.contains("free"),
                "{ctx}: location `{location}`"
            );
        }
        other => panic!("{ctx}: expected Corruption, got {other:?}"),
    }
}

/// Opens the damaged bytes and checks the outcome; returns true if open succeeded.
fn check_damaged(fx: &Fixture, damaged: &[u8], ctx: &str) -> bool {
    let sim = SimFs::new();
    sim.write_file_durable(&Path::new(DIR).join("page.db"), damaged);
    let db = match PageDb::open(Arc::new(sim), Path::new(DIR), &config()) {
        Ok(db) => db,
        Err(e) => {
            assert_names_page_db(&e, ctx);
            return false;
        }
    };
    let sb = db.superblock();
    // The newest copy may be lost (then the older, equally valid commit is served).
    assert!(sb.checkpoint_lsn == 6 || sb.checkpoint_lsn == 5, "{ctx}");
    if sb.checkpoint_lsn == 6 {
        assert_eq!(sb.roots, fx.roots, "{ctx}");
        assert_eq!(
            db.free_page_ids(),
            fx.free,
            "{ctx}: free map changed silently"
        );
        let mut buf = vec![0u8; db.page_size()];
        for (&id, want) in &fx.live {
            match db.read_page(id, &mut buf) {
                Ok(_) => assert_eq!(&buf, want, "{ctx}: page {id} served damaged"),
                Err(e) => {
                    assert_names_page_db(&e, ctx);
                    assert!(e.to_string().contains(&format!("page {id}")), "{ctx}: {e}");
                }
            }
        }
    }
    true
}

#[test]
fn every_flipped_byte_is_detected_or_invisible() {
    let fx = fixture();
    let mut opened = 0;
    let mut refused = 0;
    for i in 0..fx.bytes.len() {
        for mask in [0x01u8, 0xFF] {
            let mut d = fx.bytes.clone();
            d[i] ^= mask;
            if check_damaged(&fx, &d, &format!("byte {i} ^ {mask:#x}")) {
                opened += 1;
            } else {
                refused += 1;
            }
        }
    }
    println!(
        "page.db corruption sweep: {} opens ({opened} ok, {refused} refused)",
        opened + refused
    );
    assert!(refused > 0 && opened > 0);
}

#[test]
fn both_superblocks_damaged_is_corruption_naming_the_superblock() {
    let fx = fixture();
    let mut d = fx.bytes.clone();
    d[20] ^= 1;
    d[530] ^= 1;
    let sim = SimFs::new();
    sim.write_file_durable(&Path::new(DIR).join("page.db"), &d);
    let e = PageDb::open(Arc::new(sim), Path::new(DIR), &config()).unwrap_err();
    assert!(e.to_string().contains("superblock"), "{e}");
}

#[test]
fn truncation_at_every_sector_is_detected_never_grown() {
    let fx = fixture();
    for len in (0..fx.bytes.len()).step_by(512) {
        let ctx = format!("truncated to {len}");
        if len == 0 {
            // An empty file is not a page.db; it must not be silently replaced.
            let sim = SimFs::new();
            sim.write_file_durable(&Path::new(DIR).join("page.db"), &[]);
            let e = PageDb::open(Arc::new(sim.clone()), Path::new(DIR), &config()).unwrap_err();
            assert_names_page_db(&e, &ctx);
            assert_eq!(
                sim.read_file(&Path::new(DIR).join("page.db"))
                    .unwrap()
                    .len(),
                0
            );
            continue;
        }
        let ok = check_damaged(&fx, &fx.bytes[..len], &ctx);
        assert!(!ok, "{ctx}: a truncated file opened");
    }
}
