//! Replays the `decode_manifest` fuzz corpus (`fuzz/corpus/decode_manifest/`) through the
//! entry point the cargo-fuzz target uses, checks what a restore makes of valid and damaged
//! manifests, and runs 1,000 deterministic mutations of the valid one (with the checksum
//! fixed up, so the line parser and the file checks see them).
//! `cargo test --test fuzz_replay_manifest -- --ignored` regenerates the seeds.

use std::fs;
use std::path::{Path, PathBuf};

use stowage::fuzzing::{
    decode_manifest, manifest_seed, manifest_with_fixed_checksum, restore_with_manifest,
};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode_manifest")
}

fn lines(m: &[u8]) -> Vec<String> {
    String::from_utf8(m.to_vec())
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The manifest's file lines (without the checksum line) joined back, checksum fixed.
fn with_lines(file_lines: &[String]) -> Vec<u8> {
    let mut body = file_lines.join("\n");
    body.push('\n');
    manifest_with_fixed_checksum(body.as_bytes())
}

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let valid = manifest_seed();
    let files: Vec<String> = lines(&valid)
        .into_iter()
        .filter(|l| !l.starts_with("crc "))
        .collect();
    let mut bad_crc = valid.clone();
    let n = bad_crc.len();
    bad_crc[n - 2] ^= 0x01;
    let mut dup = files.clone();
    dup.push(files[0].clone());
    let without_db: Vec<String> = files
        .iter()
        .filter(|l| !l.starts_with("page.db "))
        .cloned()
        .collect();
    let wrong_len: Vec<String> = files
        .iter()
        .map(|l| {
            let mut p: Vec<&str> = l.split(' ').collect();
            p[1] = "1";
            p.join(" ")
        })
        .collect();
    vec![
        ("seed-valid", valid.clone()),
        ("seed-empty", Vec::new()),
        ("seed-only-checksum", manifest_with_fixed_checksum(b"")),
        ("seed-bad-checksum", bad_crc),
        ("seed-no-checksum-line", files.join("\n").into_bytes()),
        ("seed-duplicate-line", with_lines(&dup)),
        ("seed-without-page-db", with_lines(&without_db)),
        ("seed-wrong-lengths", with_lines(&wrong_len)),
        (
            "seed-escaping-name",
            with_lines(&["../page.db 1 00000000".into()]),
        ),
        (
            "seed-missing-file",
            with_lines(&["nothere 0 00000000".into()]),
        ),
        (
            "seed-directory",
            with_lines(&["durables 0 00000000".into()]),
        ),
        ("seed-not-utf8", vec![0xff, 0xfe, b'\n']),
    ]
}

#[test]
fn the_valid_manifest_restores_and_damaged_ones_are_refused() {
    let valid = manifest_seed();
    assert!(
        lines(&valid).iter().any(|l| l.starts_with("page.db ")),
        "the template save set has no page.db: {:?}",
        String::from_utf8_lossy(&valid)
    );
    assert!(
        restore_with_manifest(&valid),
        "the valid save set did not restore"
    );
    for (name, bytes) in seeds() {
        if name == "seed-valid" {
            continue;
        }
        assert!(!restore_with_manifest(&bytes), "{name} was restored");
    }
}

#[test]
fn decode_manifest_corpus_replays_without_panic() {
    let mut entries: Vec<PathBuf> = fs::read_dir(corpus())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in &entries {
        decode_manifest(&fs::read(path).unwrap());
    }
    assert!(entries.len() >= seeds().len(), "the corpus lost its seeds");
}

#[test]
fn mutated_manifests_never_panic() {
    let base = manifest_seed();
    let mut x: u64 = 0x0DDB_1A5E_5BAD_5EED;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut restored = 0;
    for _ in 0..1000 {
        let mut d = base.clone();
        for _ in 0..(next() % 3 + 1) {
            let i = (next() % d.len() as u64) as usize;
            match next() % 3 {
                0 => d[i] = b"0123456789abcdef /.\n"[(next() % 20) as usize],
                1 => {
                    d.remove(i);
                }
                _ => d.insert(i, next() as u8),
            }
        }
        if restore_with_manifest(&manifest_with_fixed_checksum(&d)) {
            restored += 1;
        }
        decode_manifest(&d);
    }
    // A mutation that still names every file with its length and CRC restores; most don't.
    assert!(restored < 1000);
}

#[test]
#[ignore = "regenerates the seed corpus; run by hand"]
fn regenerate_decode_manifest_seeds() {
    let dir = corpus();
    fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in seeds() {
        fs::write(dir.join(name), bytes).unwrap();
    }
}
