//! Replays the `decode_durable` fuzz corpus (`fuzz/corpus/decode_durable/`) through the
//! entry point the cargo-fuzz target uses, plus 2,000 deterministic mutations of a valid
//! encoding (half of them with the checksum fixed up, so the field parser sees them).
//! `cargo test --test fuzz_replay_durables -- --ignored` regenerates the seeds.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use stowage::durables::{decode_for_fuzzing, file_name, DurableSubscription, Durables, DIR};
use stowage::file::SimFs;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode_durable")
}

/// The bytes `Durables::save` writes for `s`.
fn encoding(s: &DurableSubscription) -> Vec<u8> {
    let sim = SimFs::new();
    let d = Durables::open(Arc::new(sim.clone()), Path::new("/s")).unwrap();
    d.save(s).unwrap();
    let path = Path::new("/s")
        .join(DIR)
        .join(file_name(&s.client_id, &s.name));
    sim.read_file(&path).unwrap()
}

/// The seeds: valid encodings (their file names start with `valid-`), and damaged ones.
fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let plain = encoding(&DurableSubscription {
        client_id: "client".into(),
        name: "durable".into(),
        topic: "orders".into(),
        selector: None,
        no_local: false,
    });
    let selector = encoding(&DurableSubscription {
        client_id: "a$b/../c".into(),
        name: "é 日本".into(),
        topic: "prices.eu".into(),
        selector: Some("color = 'red' AND prio > 4".into()),
        no_local: true,
    });
    let long = encoding(&DurableSubscription {
        client_id: "c".repeat(4000),
        name: "n".repeat(300),
        topic: "t".repeat(100),
        selector: Some(String::new()),
        no_local: false,
    });
    let mut bad_crc = plain.clone();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 0xFF;
    vec![
        ("valid-plain", plain.clone()),
        ("valid-selector", selector.clone()),
        ("valid-long-names", long),
        ("empty", Vec::new()),
        ("truncated-header", plain[..10].to_vec()),
        ("truncated-body", selector[..selector.len() / 2].to_vec()),
        ("bad-crc", bad_crc),
    ]
}

fn corpus_files() -> Vec<PathBuf> {
    let dir = corpus();
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

#[test]
fn corpus_replays_without_panic() {
    let files = corpus_files();
    assert!(
        files.len() >= 7,
        "the corpus lost its seeds ({} files)",
        files.len()
    );
    for path in files {
        decode_for_fuzzing(&fs::read(&path).unwrap());
    }
}

/// The committed valid seeds are still what `save` writes: the format did not change
/// under them (which would make them exercise only the header checks).
#[test]
fn valid_seeds_match_the_current_encoding() {
    for (name, bytes) in seeds().into_iter().filter(|(n, _)| n.starts_with("valid-")) {
        let on_disk = fs::read(corpus().join(name)).unwrap();
        assert_eq!(
            on_disk, bytes,
            "seed {name} is stale; regenerate with --ignored"
        );
    }
}

#[test]
fn mutated_encodings_never_panic() {
    let base = seeds()[1].1.clone();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let fix_crc = |d: &mut Vec<u8>| {
        if d.len() >= 4 {
            let at = d.len() - 4;
            let crc = crc32fast::hash(&d[..at]);
            d[at..].copy_from_slice(&crc.to_le_bytes());
        }
    };
    for i in 0..2000 {
        let mut d = base.clone();
        match next() % 5 {
            0 => {
                for _ in 0..(next() % 4 + 1) {
                    let at = (next() % d.len() as u64) as usize;
                    d[at] ^= 1 << (next() % 8);
                }
            }
            1 => {
                for _ in 0..(next() % 6 + 1) {
                    let at = (next() % d.len() as u64) as usize;
                    d[at] = next() as u8;
                }
            }
            2 => d.truncate((next() % d.len() as u64) as usize),
            3 => {
                let at = (next() % (d.len() as u64 + 1)) as usize;
                let n = (next() % 8 + 1) as usize;
                let extra: Vec<u8> = (0..n).map(|_| next() as u8).collect();
                d.splice(at..at, extra);
            }
            _ => {
                // A length prefix set to a hostile value.
                let at = 12 + (next() % 4) as usize * 4;
                let v = [0u32, 1, 4096, 4097, 65536, u32::MAX][(next() % 6) as usize];
                d[at..at + 4].copy_from_slice(&v.to_le_bytes());
            }
        }
        if i % 2 == 0 {
            fix_crc(&mut d);
        }
        decode_for_fuzzing(&d);
    }
}

#[test]
#[ignore = "regenerates the seed corpus"]
fn regenerate_seeds() {
    let dir = corpus();
    fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in seeds() {
        fs::write(dir.join(name), bytes).unwrap();
    }
}
