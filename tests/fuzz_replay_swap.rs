//! Replays the swap fuzz corpus (`fuzz/corpus/decode_swap/`) through the entry point the
//! cargo-fuzz target uses, plus 1,000 deterministic mutations of a valid swap file.
//! `cargo test --test fuzz_replay_swap -- --ignored` regenerates the seeds.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use stowage::file::SimFs;
use stowage::swap::{fuzz_swap_file, SwapDir};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode_swap")
}

/// A swap file written by a queue (file number 0, as the fuzz entry point adopts it):
/// records of the given sizes, some updated, every third removed.
fn seed_swap_file(sizes: &[usize]) -> Vec<u8> {
    let sim = SimFs::new();
    let dir = SwapDir::open(Arc::new(sim.clone()), Path::new("/g"), 1 << 30).unwrap();
    let mut q = dir.queue("q").unwrap();
    let ptrs: Vec<_> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let payload: Vec<u8> = (0..n).map(|k| (k * 7 + i) as u8).collect();
            q.append(&payload, i as u32).unwrap()
        })
        .collect();
    for (i, &p) in ptrs.iter().enumerate() {
        if i % 2 == 1 {
            q.update_delivery_count(p, 1000 + i as u32).unwrap();
        }
        if i % 3 == 2 {
            q.remove(p).unwrap();
        }
    }
    q.flush().unwrap();
    sim.read_file(Path::new("/g/swap/q-0.swap")).unwrap()
}

#[test]
fn decode_swap_corpus_replays_without_panic() {
    let dir = corpus();
    let mut entries: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in &entries {
        fuzz_swap_file(&fs::read(path).unwrap());
    }
    assert!(entries.len() >= 4, "the decode_swap corpus lost its seeds");
}

#[test]
fn mutated_swap_files_never_panic() {
    let base = seed_swap_file(&[0, 1, 17, 300, 0, 64, 2000, 5]);
    assert!(base.len() > 2000);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..1000 {
        let mut d = base.clone();
        for _ in 0..(next() % 8 + 1) {
            let i = (next() % d.len() as u64) as usize;
            d[i] = next() as u8;
        }
        match next() % 6 {
            0 => {
                let len = (next() % d.len() as u64) as usize;
                d.truncate(len);
            }
            1 => {
                // A length field pointing far away, with a valid magic in front.
                let i = (next() % d.len() as u64) as usize;
                let tail = [
                    b'S', b'W', b'P', b'1', b'L', 0, 0, 0, 0xFF, 0xFF, 0xFF, 0x3F,
                ];
                let n = tail.len().min(d.len() - i);
                d[i..i + n].copy_from_slice(&tail[..n]);
            }
            _ => {}
        }
        fuzz_swap_file(&d);
    }
}

#[test]
fn the_seed_file_has_valid_records_the_entry_point_reaches() {
    // Guards the mutation test's value: the base must be a real swap file (magic at 0).
    let base = seed_swap_file(&[3, 4]);
    assert_eq!(&base[..4], b"SWP1");
}

#[test]
#[ignore = "regenerates the seed corpus; run by hand"]
fn regenerate_decode_swap_seeds() {
    let dir = corpus();
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("seed-empty"), b"").unwrap();
    fs::write(dir.join("seed-one-empty-record"), seed_swap_file(&[0])).unwrap();
    fs::write(
        dir.join("seed-mixed"),
        seed_swap_file(&[0, 1, 17, 300, 0, 64, 2000, 5]),
    )
    .unwrap();
    fs::write(
        dir.join("seed-large-record"),
        seed_swap_file(&[10, 70_000, 3]),
    )
    .unwrap();
    let mut cut = seed_swap_file(&[100, 100, 100]);
    cut.truncate(200);
    fs::write(dir.join("seed-partial-record"), cut).unwrap();
}
