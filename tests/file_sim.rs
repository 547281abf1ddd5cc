//! Tests of the simulated file layer itself: each fault-model rule of TESTING.md, the call
//! counting / crash / failure controls, handles and locks, determinism, and conformance with
//! the real file system on a basic sequence.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use stowage::file::{CrashOutcome, FileHandle, FileSystem, OpenMode, RealFs, SimFs};

const DIR: &str = "/db";

const POWER_LOSS: [CrashOutcome; 3] = [
    CrashOutcome::PowerLossPrefix,
    CrashOutcome::PowerLossSubset,
    CrashOutcome::PowerLossTorn,
];

fn p(name: &str) -> PathBuf {
    Path::new(DIR).join(name)
}

/// A fs with `/db` durable and `/db/<name>` holding `base`, content and entry durable.
fn setup_file(fs: &SimFs, name: &str, base: &[u8]) -> Arc<dyn FileHandle> {
    if !fs.exists(Path::new(DIR)).unwrap() {
        fs.create_dir_all(Path::new(DIR)).unwrap();
        fs.sync_dir(Path::new("/")).unwrap();
    }
    let f = fs.open(&p(name), OpenMode::CreateNew).unwrap();
    f.write_all_at(base, 0).unwrap();
    f.sync_all().unwrap();
    fs.sync_dir(Path::new(DIR)).unwrap();
    f
}

fn setup(base: &[u8]) -> (SimFs, Arc<dyn FileHandle>) {
    let fs = SimFs::new();
    let f = setup_file(&fs, "f", base);
    (fs, f)
}

fn content(fs: &SimFs, name: &str) -> Option<Vec<u8>> {
    fs.read_file(&p(name))
}

fn assert_msg(e: io::Error, kind: io::ErrorKind, msg: &str) {
    assert_eq!(e.kind(), kind, "{e}");
    assert!(e.to_string().contains(msg), "{e} should say {msg}");
}

#[test]
fn synced_data_survives_every_outcome() {
    let base: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    for outcome in CrashOutcome::ALL {
        for seed in 0..32 {
            let (fs, f) = setup(&base);
            f.write_all_at(b"new", 100).unwrap();
            f.sync_data().unwrap();
            // Unsynced activity elsewhere must not disturb it.
            let g = setup_file(&fs, "g", b"");
            g.write_all_at(&[7; 5000], 0).unwrap();
            fs.create_dir_all(&p("sub")).unwrap();
            fs.restart(outcome, seed);
            let mut want = base.clone();
            want[100..103].copy_from_slice(b"new");
            assert_eq!(content(&fs, "f"), Some(want), "{outcome:?} seed {seed}");
            if outcome != CrashOutcome::ProcessKill {
                assert_eq!(fs.pending_ops(), 0);
                assert_eq!(
                    content(&fs, "g"),
                    Some(Vec::new()),
                    "growth of g not synced"
                );
            }
        }
    }
}

#[test]
fn unsynced_writes_survive_process_kill_but_a_later_power_loss_can_lose_them() {
    let (mut lost, mut kept) = (0, 0);
    for seed in 0..64 {
        let (fs, f) = setup(&[0; 16]);
        f.write_all_at(b"abcd", 4).unwrap();
        drop(f);
        fs.restart(CrashOutcome::ProcessKill, seed);
        let mut want = vec![0; 16];
        want[4..8].copy_from_slice(b"abcd");
        assert_eq!(content(&fs, "f"), Some(want.clone()));
        assert_eq!(fs.pending_ops(), 1, "a process kill syncs nothing");
        let f = fs.open(&p("f"), OpenMode::Existing).unwrap();
        let mut b = [0; 4];
        f.read_exact_at(&mut b, 4).unwrap();
        assert_eq!(&b, b"abcd");
        fs.restart(CrashOutcome::PowerLossPrefix, seed.wrapping_mul(31));
        match content(&fs, "f") {
            Some(c) if c == want => kept += 1,
            Some(c) if c == vec![0; 16] => lost += 1,
            other => panic!("not a prefix: {other:?}"),
        }
    }
    assert!(lost > 0 && kept > 0, "lost {lost} kept {kept}");
}

#[test]
fn prefix_outcome_is_exactly_a_prefix_in_global_call_order() {
    let mut seen = BTreeSet::new();
    for seed in 0..300 {
        let fs = SimFs::new();
        let f = setup_file(&fs, "f", &[0; 64]);
        let g = setup_file(&fs, "g", &[0; 64]);
        // Writes 1..=6 alternate between the files; write i puts byte i at offset 8 * i.
        for i in 1..=6u8 {
            let h = if i % 2 == 1 { &f } else { &g };
            h.write_all_at(&[i; 8], 8 * u64::from(i)).unwrap();
        }
        assert_eq!(fs.pending_ops(), 6);
        fs.restart(CrashOutcome::PowerLossPrefix, seed);
        let (cf, cg) = (content(&fs, "f").unwrap(), content(&fs, "g").unwrap());
        let survived: Vec<u8> = (1..=6u8)
            .filter(|&i| {
                let c = if i % 2 == 1 { &cf } else { &cg };
                let at = 8 * usize::from(i);
                let v = &c[at..at + 8];
                assert!(v == [i; 8] || v == [0; 8], "seed {seed}: torn bytes {v:?}");
                v == [i; 8]
            })
            .collect();
        let k = survived.len() as u8;
        assert_eq!(survived, (1..=k).collect::<Vec<_>>(), "seed {seed}");
        assert_eq!(cf.len(), 64);
        seen.insert(k);
    }
    assert_eq!(seen, (0..=6).collect(), "every prefix length appears");
}

/// Writes w1 = AAAA@0, w2 = BB@2 (overlapping w1), w3 = C@10 over 16 zero bytes.
fn subset_expected(mask: u8) -> Vec<u8> {
    let mut v = vec![0u8; 16];
    if mask & 1 != 0 {
        v[0..4].copy_from_slice(b"AAAA");
    }
    if mask & 2 != 0 {
        v[2..4].copy_from_slice(b"BB");
    }
    if mask & 4 != 0 {
        v[10] = b'C';
    }
    v
}

#[test]
fn subset_outcome_applies_any_subset_in_order() {
    let mut seen = BTreeSet::new();
    for seed in 0..300 {
        let (fs, f) = setup(&[0; 16]);
        f.write_all_at(b"AAAA", 0).unwrap();
        f.write_all_at(b"BB", 2).unwrap();
        f.write_all_at(b"C", 10).unwrap();
        fs.restart(CrashOutcome::PowerLossSubset, seed);
        let c = content(&fs, "f").unwrap();
        let mask = (0..8u8)
            .find(|&m| subset_expected(m) == c)
            .unwrap_or_else(|| panic!("seed {seed}: not an in-order subset: {c:?}"));
        seen.insert(mask);
    }
    assert_eq!(seen.len(), 8, "every subset appears: {seen:?}");
}

#[test]
fn subset_outcome_keeps_each_namespace_op_independently() {
    let mut creates = BTreeSet::new();
    let mut renames = BTreeSet::new();
    let mut y_count = 0;
    for seed in 0..200 {
        let (fs, _f) = setup(b"x");
        for n in ["a", "b", "c"] {
            fs.open(&p(n), OpenMode::CreateNew).unwrap();
        }
        fs.open(&p("x"), OpenMode::CreateNew).unwrap();
        fs.rename(&p("x"), &p("y")).unwrap();
        fs.restart(CrashOutcome::PowerLossSubset, seed);
        let names: BTreeSet<String> = fs.read_dir(Path::new(DIR)).unwrap().into_iter().collect();
        assert!(names.contains("f"), "the synced entry stays");
        creates.insert(["a", "b", "c"].map(|n| names.contains(n)));
        let (x, y) = (names.contains("x"), names.contains("y"));
        assert!(!(x && y), "seed {seed}: a rename is atomic");
        renames.insert((x, y));
        y_count += usize::from(y);
        assert_eq!(
            fs.file_names(),
            names.iter().map(|n| p(n)).collect::<Vec<_>>()
        );
    }
    assert_eq!(creates.len(), 8, "every subset of the creates: {creates:?}");
    // None, x only (rename lost) and y (both kept); a rename whose create was lost is
    // skipped, which also gives none.
    assert_eq!(renames.len(), 3, "{renames:?}");
    // y needs both ops (p = 1/4); applying the rename without its create would double it.
    assert!((25..80).contains(&y_count), "{y_count} of 200");
}

#[test]
fn torn_outcome_mixes_sectors_and_never_touches_other_bytes() {
    let (mut new, mut old, mut garbage, mut mixed) = (0, 0, 0, 0);
    let pieces = [(256, 512), (512, 1024), (1024, 1536), (1536, 1792)];
    for seed in 0..200 {
        for outcome in [CrashOutcome::PowerLossTorn, CrashOutcome::PowerLossSubset] {
            let (fs, f) = setup(&[0x11; 4096]);
            f.write_all_at(&[0x22; 1536], 256).unwrap();
            fs.restart(outcome, seed);
            let c = content(&fs, "f").unwrap();
            assert_eq!(c.len(), 4096);
            assert!(c[..256].iter().chain(&c[1792..]).all(|&b| b == 0x11));
            let kinds: BTreeSet<u8> = pieces
                .iter()
                .map(|&(s, e)| {
                    let piece = &c[s..e];
                    if piece.iter().all(|&b| b == 0x22) {
                        0
                    } else if piece.iter().all(|&b| b == 0x11) {
                        1
                    } else {
                        2
                    }
                })
                .collect();
            for &(s, e) in &pieces {
                let piece = &c[s..e];
                let foreign = piece.iter().filter(|&&b| b != 0x11 && b != 0x22).count();
                let uniform = piece.iter().all(|&b| b == piece[0]);
                assert!(
                    uniform || foreign > piece.len() / 2,
                    "seed {seed}: sector [{s}, {e}) mixes new and old bytes"
                );
            }
            if outcome == CrashOutcome::PowerLossSubset {
                assert_eq!(kinds.len(), 1, "subset never tears");
                assert!(!kinds.contains(&2));
                continue;
            }
            new += usize::from(kinds.contains(&0));
            old += usize::from(kinds.contains(&1));
            garbage += usize::from(kinds.contains(&2));
            mixed += usize::from(kinds.len() > 1);
        }
    }
    assert!(new > 0 && old > 0 && garbage > 0 && mixed > 0);
}

#[test]
fn growth_is_lost_unless_synced() {
    let mut shrink_lens = BTreeSet::new();
    for outcome in POWER_LOSS {
        for seed in 0..40 {
            let (fs, f) = setup(&[1; 100]);
            f.write_all_at(&[2; 50], 90).unwrap();
            let g = setup_file(&fs, "g", &[1; 100]);
            g.set_len(500).unwrap();
            let h = setup_file(&fs, "h", &[1; 100]);
            h.allocate(1000).unwrap();
            assert_eq!(h.len().unwrap(), 1000);
            let s = setup_file(&fs, "s", &[1; 100]);
            s.set_len(500).unwrap();
            s.sync_data().unwrap();
            let t = setup_file(&fs, "t", &[1; 100]);
            t.set_len(10).unwrap();
            fs.restart(outcome, seed);
            let c = content(&fs, "f").unwrap();
            assert_eq!(c.len(), 100, "append past the end lost");
            assert!(c[..90].iter().all(|&b| b == 1));
            assert!(c[90..] == [1; 10] || c[90..] == [2; 10] || outcome == POWER_LOSS[2]);
            assert_eq!(content(&fs, "g").unwrap(), vec![1; 100]);
            assert_eq!(content(&fs, "h").unwrap(), vec![1; 100]);
            let mut synced = vec![1; 100];
            synced.resize(500, 0);
            assert_eq!(content(&fs, "s").unwrap(), synced);
            let t = content(&fs, "t").unwrap();
            assert!(t == vec![1; 10] || t == vec![1; 100], "{}", t.len());
            shrink_lens.insert(t.len());
        }
    }
    assert_eq!(
        shrink_lens,
        BTreeSet::from([10, 100]),
        "a surviving shrink stays"
    );
}

#[test]
fn namespace_ops_are_lost_unless_the_directory_is_synced() {
    for outcome in CrashOutcome::ALL {
        for sync in [false, true] {
            // Subset and torn keep unsynced namespace ops at random (tested separately).
            let random_ns = matches!(
                outcome,
                CrashOutcome::PowerLossSubset | CrashOutcome::PowerLossTorn
            );
            if random_ns && !sync {
                continue;
            }
            let (fs, _f) = setup(b"old");
            setup_file(&fs, "r", b"gone");
            let n = fs.open(&p("new"), OpenMode::CreateNew).unwrap();
            n.write_all_at(b"data", 0).unwrap();
            n.sync_all().unwrap(); // syncs the data, not the entry
            fs.rename(&p("f"), &p("g")).unwrap();
            fs.remove_file(&p("r")).unwrap();
            fs.create_dir_all(&p("sub")).unwrap();
            if sync {
                fs.sync_dir(Path::new(DIR)).unwrap();
            }
            fs.restart(outcome, 7);
            if outcome == CrashOutcome::ProcessKill {
                // Everything reached the OS; but unsynced entries are still unsynced.
                assert_eq!(fs.read_dir(Path::new(DIR)).unwrap(), ["g", "new", "sub"]);
                fs.restart(CrashOutcome::PowerLossPrefix, 7);
            }
            let names = fs.read_dir(Path::new(DIR)).unwrap();
            if sync {
                assert_eq!(names, ["g", "new", "sub"], "{outcome:?}");
                assert_eq!(content(&fs, "new").unwrap(), b"data");
                assert_eq!(content(&fs, "g").unwrap(), b"old");
            } else {
                assert_eq!(names, ["f", "r"], "{outcome:?}");
                assert_eq!(content(&fs, "f").unwrap(), b"old");
                assert_eq!(content(&fs, "r").unwrap(), b"gone", "removal undone");
                assert!(!fs.exists(&p("sub")).unwrap());
            }
        }
    }
}

#[test]
fn cross_directory_rename_is_durable_per_directory() {
    let (mut only_target, mut neither) = (0, 0);
    for seed in 0..100 {
        let (fs, _f) = setup(b"data");
        fs.create_dir_all(Path::new("/db2")).unwrap();
        fs.sync_dir(Path::new("/")).unwrap();
        fs.rename(&p("f"), Path::new("/db2/g")).unwrap();
        fs.sync_dir(Path::new(DIR)).unwrap(); // the unlink is durable, the link is not
        fs.restart(CrashOutcome::PowerLossSubset, seed);
        assert!(!fs.exists(&p("f")).unwrap());
        match fs.read_file(Path::new("/db2/g")) {
            Some(c) => {
                assert_eq!(c, b"data");
                only_target += 1;
            }
            None => neither += 1,
        }
    }
    assert!(
        only_target > 0 && neither > 0,
        "the target link is an unsynced op"
    );
    // Syncing only the target: the new name is durable, the old one's removal is not.
    let mut names = BTreeSet::new();
    for seed in 0..40 {
        let (fs, _f) = setup(b"data");
        fs.create_dir_all(Path::new("/db2")).unwrap();
        fs.sync_dir(Path::new("/")).unwrap();
        fs.rename(&p("f"), Path::new("/db2/g")).unwrap();
        fs.sync_dir(Path::new("/db2")).unwrap();
        let outcome = if seed == 0 {
            CrashOutcome::PowerLossPrefix
        } else {
            CrashOutcome::PowerLossSubset
        };
        fs.restart(outcome, seed);
        let n = fs.file_names();
        if seed == 0 {
            assert_eq!(n, vec![p("f"), PathBuf::from("/db2/g")]);
        }
        names.insert(n);
    }
    let both = vec![p("f"), PathBuf::from("/db2/g")];
    assert_eq!(names, BTreeSet::from([both, vec![PathBuf::from("/db2/g")]]));
}

#[test]
fn entries_of_a_directory_that_was_lost_are_lost() {
    let (fs, _f) = setup(b"");
    fs.create_dir_all(&p("a")).unwrap();
    let x = fs.open(&p("a/x"), OpenMode::CreateNew).unwrap();
    x.sync_all().unwrap();
    fs.sync_dir(&p("a")).unwrap(); // but /db itself is not synced: "a" is not durable
    fs.restart(CrashOutcome::PowerLossPrefix, 1);
    assert!(!fs.exists(&p("a")).unwrap());
    assert_eq!(fs.file_names(), vec![p("f")]);
}

#[test]
fn crash_at_skips_the_call_and_fails_everything_after() {
    let fs = SimFs::new();
    fs.create_dir_all(Path::new(DIR)).unwrap(); // call 0
    let f = fs.open(&p("f"), OpenMode::Create).unwrap(); // call 1
    f.write_all_at(b"a", 0).unwrap(); // call 2
    assert_eq!(fs.mutating_calls(), 3);
    fs.set_crash_at(Some(3));
    assert!(!fs.is_crashed());
    assert_msg(
        f.write_all_at(b"b", 1).unwrap_err(),
        io::ErrorKind::Other,
        "simulated crash",
    );
    assert!(fs.is_crashed());
    assert_eq!(
        fs.mutating_calls(),
        4,
        "the crashing call is counted, later ones not"
    );
    let mut b = [0; 1];
    let errs = [
        f.read_exact_at(&mut b, 0).unwrap_err(),
        f.len().unwrap_err(),
        f.sync_data().unwrap_err(),
        fs.exists(&p("f")).unwrap_err(),
        fs.read_dir(Path::new(DIR)).unwrap_err(),
        fs.open(&p("f"), OpenMode::Existing).unwrap_err(),
        fs.lock(&p("LOCK")).unwrap_err(),
        fs.remove_file(&p("f")).unwrap_err(),
    ];
    for e in errs {
        assert_msg(e, io::ErrorKind::Other, "simulated crash");
    }
    assert_eq!(fs.mutating_calls(), 4);
    fs.restart(CrashOutcome::ProcessKill, 0);
    assert!(!fs.is_crashed());
    assert_eq!(fs.mutating_calls(), 0);
    assert_eq!(
        content(&fs, "f").unwrap(),
        b"a",
        "the crashed write never happened"
    );
    // crash_now also crashes, and restart clears a crash point that was never reached.
    fs.set_crash_at(Some(100));
    fs.crash_now();
    assert!(fs.exists(&p("f")).is_err());
    fs.restart(CrashOutcome::ProcessKill, 0);
    for _ in 0..200 {
        fs.sync_dir(Path::new(DIR)).unwrap();
    }
}

#[test]
fn mutating_calls_count_exactly_the_mutating_calls() {
    let fs = SimFs::new();
    let mut n = 0;
    let mut step = |fs: &SimFs, counted: bool| {
        n += u64::from(counted);
        assert_eq!(fs.mutating_calls(), n);
    };
    fs.create_dir_all(Path::new(DIR)).unwrap();
    step(&fs, true);
    let f = fs.open(&p("f"), OpenMode::Create).unwrap();
    step(&fs, true);
    let _f2 = fs.open(&p("f"), OpenMode::Create).unwrap();
    step(&fs, false); // opening an existing file creates nothing
    fs.open(&p("f"), OpenMode::Existing).unwrap();
    step(&fs, false);
    fs.open(&p("f"), OpenMode::CreateNew).unwrap_err();
    step(&fs, false);
    f.write_all_at(b"abc", 0).unwrap();
    step(&fs, true);
    let mut b = [0; 3];
    f.read_exact_at(&mut b, 0).unwrap();
    f.len().unwrap();
    fs.exists(&p("f")).unwrap();
    fs.read_dir(Path::new(DIR)).unwrap();
    step(&fs, false);
    f.set_len(10).unwrap();
    step(&fs, true);
    f.allocate(20).unwrap();
    step(&fs, true);
    f.sync_data().unwrap();
    step(&fs, true);
    f.sync_all().unwrap();
    step(&fs, true);
    fs.sync_dir(Path::new(DIR)).unwrap();
    step(&fs, true);
    fs.rename(&p("f"), &p("g")).unwrap();
    step(&fs, true);
    fs.remove_file(&p("g")).unwrap();
    step(&fs, true);
    fs.create_dir_all(&p("d")).unwrap();
    step(&fs, true);
    fs.remove_dir(&p("d")).unwrap();
    step(&fs, true);
    let _l = fs.lock(&p("LOCK")).unwrap();
    step(&fs, true);
}

#[test]
fn fail_call_on_a_write_or_namespace_op_fails_once_without_effect() {
    let (fs, f) = setup(b"0123");
    fs.fail_call(fs.mutating_calls());
    assert_msg(
        f.write_all_at(b"xx", 0).unwrap_err(),
        io::ErrorKind::Other,
        "simulated I/O failure",
    );
    assert_eq!(content(&fs, "f").unwrap(), b"0123");
    assert_eq!(fs.pending_ops(), 0);
    f.write_all_at(b"yy", 2).unwrap(); // only once
    assert_eq!(content(&fs, "f").unwrap(), b"01yy");
    fs.fail_call(fs.mutating_calls());
    assert!(fs.rename(&p("f"), &p("g")).is_err());
    assert_eq!(fs.file_names(), vec![p("f")]);
    assert!(!fs.is_crashed(), "a failure is not a crash");
}

#[test]
fn fail_call_on_a_sync_loses_writes_for_good_fsyncgate() {
    let (mut some_lost, mut some_kept) = (0, 0);
    for seed in 0..64 {
        let (fs, _) = setup(&[0; 64]);
        fs.restart(CrashOutcome::ProcessKill, seed); // seeds the fsyncgate subset
        let f = fs.open(&p("f"), OpenMode::Existing).unwrap();
        for i in 1..=7u8 {
            f.write_all_at(&[i; 8], 8 * u64::from(i - 1)).unwrap();
        }
        fs.fail_call(fs.mutating_calls());
        assert_msg(
            f.sync_data().unwrap_err(),
            io::ErrorKind::Other,
            "simulated I/O failure",
        );
        assert_eq!(fs.pending_ops(), 0, "the pending list is cleared");
        let shown = content(&fs, "f").unwrap();
        assert!(
            (1..=7u8).all(|i| shown[8 * usize::from(i - 1)] == i),
            "OS still shows all"
        );
        f.write_all_at(&[0xFF; 8], 56).unwrap();
        f.sync_data().unwrap(); // succeeds, but does not bring the lost writes back
        fs.restart(CrashOutcome::PowerLossPrefix, seed);
        let c = content(&fs, "f").unwrap();
        assert_eq!(c[56..], [0xFF; 8], "the later synced write is durable");
        let kept = (1..=7u8)
            .filter(|&i| {
                let at = 8 * usize::from(i - 1);
                assert!(c[at..at + 8] == [i; 8] || c[at..at + 8] == [0; 8]);
                c[at] == i
            })
            .count();
        some_lost += usize::from(kept < 7);
        some_kept += usize::from(kept > 0);
    }
    assert!(some_lost > 0 && some_kept > 0);
}

#[test]
fn handles_are_stale_after_restart() {
    let (fs, f) = setup(b"abc");
    fs.restart(CrashOutcome::ProcessKill, 0);
    let mut b = [0; 3];
    let errs = [
        f.read_exact_at(&mut b, 0).unwrap_err(),
        f.write_all_at(b"x", 0).unwrap_err(),
        f.len().unwrap_err(),
        f.sync_all().unwrap_err(),
        f.set_len(0).unwrap_err(),
    ];
    for e in errs {
        assert_msg(
            e,
            io::ErrorKind::Other,
            "stale handle after simulated restart",
        );
    }
    assert_eq!(
        fs.mutating_calls(),
        0,
        "calls on stale handles do not count"
    );
    let g = fs.open(&p("f"), OpenMode::Existing).unwrap();
    g.read_exact_at(&mut b, 0).unwrap();
    assert_eq!(&b, b"abc");
    drop(f);
    g.read_exact_at(&mut b, 0).unwrap();
}

#[test]
fn locks_are_exclusive_and_released_on_drop_and_restart() {
    let (fs, _f) = setup(b"");
    let lp = p("LOCK");
    let l1 = fs.lock(&lp).unwrap();
    assert!(fs.exists(&lp).unwrap(), "lock creates the file");
    assert_eq!(fs.lock(&lp).unwrap_err().kind(), io::ErrorKind::WouldBlock);
    let _other = fs.lock(&p("OTHER")).unwrap();
    drop(l1);
    let l2 = fs.lock(&lp).unwrap();
    fs.restart(CrashOutcome::ProcessKill, 0);
    let _l3 = fs.lock(&lp).unwrap();
    drop(l2); // the dead process's guard must not release the new holder's lock
    assert_eq!(fs.lock(&lp).unwrap_err().kind(), io::ErrorKind::WouldBlock);
}

#[test]
fn unlinked_open_file_stays_usable() {
    let (fs, _) = setup(b"");
    // An entry that was never durable: after the unlink only the handle refers to it.
    let f = fs.open(&p("u"), OpenMode::CreateNew).unwrap();
    f.write_all_at(b"abc", 0).unwrap();
    fs.remove_file(&p("u")).unwrap();
    fs.sync_dir(Path::new(DIR)).unwrap();
    assert_eq!(fs.read_file(&p("u")), None);
    f.write_all_at(b"d", 3).unwrap();
    let mut b = [0; 4];
    f.read_exact_at(&mut b, 0).unwrap();
    assert_eq!(&b, b"abcd");
    fs.open(&p("u"), OpenMode::Existing).unwrap_err();
    drop(f);
    assert_eq!(
        fs.pending_ops(),
        0,
        "the last handle gone, the inode is dropped"
    );
}

#[test]
fn errors_for_bad_offsets_and_paths() {
    let (fs, f) = setup(b"abc");
    let mut b = [0; 4];
    assert_eq!(
        f.write_all_at(b"xxxx", u64::MAX - 1).unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
    assert_eq!(
        f.read_exact_at(&mut b, u64::MAX).unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
    assert_eq!(
        f.read_exact_at(&mut b, 0).unwrap_err().kind(),
        io::ErrorKind::UnexpectedEof
    );
    assert!(
        f.set_len(u64::MAX).is_err(),
        "an impossible size is an error, not a panic"
    );
    assert_eq!(content(&fs, "f").unwrap(), b"abc");
    assert!(fs.open(Path::new("/"), OpenMode::Create).is_err());
    assert!(fs.remove_dir(Path::new(DIR)).is_err(), "not empty");
    assert!(
        fs.create_dir_all(&p("f/sub")).is_err(),
        "a file is in the way"
    );
    // Bare relative names live in the "." root.
    let r = fs.open(Path::new("rel"), OpenMode::CreateNew).unwrap();
    r.sync_all().unwrap();
    fs.sync_dir(Path::new(".")).unwrap();
    fs.restart(CrashOutcome::PowerLossPrefix, 3);
    assert!(fs.exists(Path::new("rel")).unwrap());
    assert_eq!(fs.read_dir(Path::new(".")).unwrap(), ["rel"]);
}

#[test]
fn write_file_durable_replaces_content_durably() {
    let (fs, f) = setup(b"old content");
    f.write_all_at(b"unsynced", 0).unwrap();
    fs.write_file_durable(&p("f"), b"corrupt");
    assert_eq!(fs.pending_ops(), 0);
    assert_eq!(f.len().unwrap(), 7, "open handles see the new content");
    fs.write_file_durable(&p("new"), b"fresh");
    assert_eq!(fs.mutating_calls(), 7, "helpers are not counted calls");
    fs.restart(CrashOutcome::PowerLossPrefix, 0);
    assert_eq!(content(&fs, "f").unwrap(), b"corrupt");
    let n = fs.open(&p("new"), OpenMode::Existing).unwrap();
    let mut b = [0; 5];
    n.read_exact_at(&mut b, 0).unwrap();
    assert_eq!(&b, b"fresh");
}

fn torn_scenario(seed: u64) -> Vec<(PathBuf, Vec<u8>)> {
    let (fs, f) = setup(&[0x11; 4096]);
    let g = setup_file(&fs, "g", &[0x33; 2048]);
    for i in 0..8u64 {
        f.write_all_at(&[i as u8; 700], i * 300).unwrap();
        g.write_all_at(&[0x44; 100], i * 200).unwrap();
    }
    fs.open(&p("n1"), OpenMode::CreateNew).unwrap();
    fs.rename(&p("g"), &p("h")).unwrap();
    fs.restart(CrashOutcome::PowerLossTorn, seed);
    fs.file_names()
        .into_iter()
        .map(|n| {
            let c = fs.read_file(&n).unwrap();
            (n, c)
        })
        .collect()
}

#[test]
fn same_seed_same_result_different_seeds_differ() {
    let results: Vec<_> = (0..16).map(torn_scenario).collect();
    for (seed, r) in results.iter().enumerate() {
        assert_eq!(*r, torn_scenario(seed as u64), "seed {seed} replays");
    }
    let distinct: BTreeSet<_> = results.iter().collect();
    assert!(distinct.len() > 8, "{} distinct results", distinct.len());
}

#[test]
fn large_file_with_many_small_writes_is_fast() {
    let fs = SimFs::new();
    let f = setup_file(&fs, "big", b"");
    let size = 32 << 20;
    f.allocate(size).unwrap();
    let mut x = 1u64;
    for i in 0..200_000u64 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        f.write_all_at(&x.to_le_bytes(), (x >> 20) % (size - 8))
            .unwrap();
        if i % 1000 == 999 {
            f.sync_data().unwrap();
        }
    }
    assert_eq!(f.len().unwrap(), size);
    assert_eq!(fs.pending_ops(), 0);
}

// ---- conformance with the real file system ----

fn res<T: Debug>(r: io::Result<T>) -> String {
    match r {
        Ok(v) => format!("Ok({v:?})"),
        Err(e) => format!("Err({:?})", e.kind()),
    }
}

fn unit<T>(r: io::Result<T>) -> io::Result<()> {
    r.map(|_| ())
}

/// A basic sequence; every observable result goes into the log.
fn conformance_run(fs: &dyn FileSystem, root: &Path) -> Vec<String> {
    let d = root.join("d");
    let (a, b, c) = (d.join("a"), d.join("b"), d.join("c"));
    let mut log = Vec::new();
    log.push(res(fs.create_dir_all(&d)));
    log.push(res(fs.exists(&d)));
    let f = fs.open(&a, OpenMode::CreateNew).unwrap();
    log.push(res(unit(fs.open(&a, OpenMode::CreateNew))));
    log.push(res(unit(fs.open(&d.join("missing"), OpenMode::Existing))));
    log.push(res(unit(fs.open(&root.join("nodir/x"), OpenMode::Create))));
    log.push(res(f.write_all_at(b"hello", 10)));
    log.push(res(f.len()));
    let mut buf = [0u8; 15];
    log.push(res(f.read_exact_at(&mut buf, 0)));
    log.push(format!("{buf:?}"));
    log.push(res(f.read_exact_at(&mut buf[..6], 10)));
    log.push(res(f.write_all_at(b"abc", 0)));
    log.push(res(f.set_len(3)));
    log.push(res(f.len()));
    log.push(res(f.set_len(8)));
    let mut b8 = [9u8; 8];
    log.push(res(f.read_exact_at(&mut b8, 0)));
    log.push(format!("{b8:?}"));
    log.push(res(f.allocate(4096)));
    log.push(res(f.len()));
    log.push(res(f.allocate(100)));
    log.push(res(f.len()));
    log.push(res(f.sync_data()));
    log.push(res(f.sync_all()));
    log.push(res(fs.sync_dir(&d)));
    log.push(res(fs.rename(&a, &b)));
    log.push(res(fs.exists(&a)));
    log.push(res(fs.exists(&b)));
    log.push(res(fs.read_dir(&d)));
    let cf = fs.open(&c, OpenMode::Create).unwrap();
    log.push(res(cf.write_all_at(b"x", 0)));
    log.push(res(fs.rename(&b, &c)));
    log.push(res(fs.read_dir(&d)));
    let c2 = fs.open(&c, OpenMode::Existing).unwrap();
    log.push(res(c2.len()));
    log.push(res(c2.read_exact_at(&mut b8[..3], 0)));
    log.push(format!("{b8:?}"));
    log.push(res(fs.rename(&a, &d.join("z"))));
    log.push(res(fs.remove_file(&a)));
    log.push(res(fs.create_dir_all(&d.join("sub"))));
    log.push(res(fs.create_dir_all(&d.join("sub"))));
    log.push(res(fs.read_dir(&d)));
    log.push(format!("{}", fs.remove_dir(&d).is_err()));
    log.push(res(fs.remove_dir(&d.join("sub"))));
    log.push(res(fs.read_dir(&d.join("sub"))));
    log.push(res(fs.remove_file(&c)));
    log.push(res(fs.read_dir(&d)));
    let l = fs.lock(&d.join("LOCK"));
    log.push(format!("{}", l.is_ok()));
    log.push(res(unit(fs.lock(&d.join("LOCK")))));
    drop(l);
    log.push(res(unit(fs.lock(&d.join("LOCK")))));
    log.push(res(fs.read_dir(&d)));
    log.push(res(fs.exists(&d.join("LOCK"))));
    log
}

#[test]
fn sim_conforms_to_real_fs_on_a_basic_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let real = conformance_run(&RealFs::new(), dir.path());
    let sim = conformance_run(&SimFs::new(), Path::new("/sim/root"));
    assert_eq!(real, sim);
    assert!(real.iter().any(|l| l.contains("AlreadyExists")));
    assert!(real.iter().any(|l| l.contains("WouldBlock")));
}
