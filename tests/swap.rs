//! Swap files (`stowage::swap`): round trips, roll-over, deletion, names, leftovers, crashes
//! and corruption, on the simulated and the real file layer.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use stowage::file::{CrashOutcome, FileHandle, FileSystem, LockGuard, OpenMode, RealFs, SimFs};
use stowage::swap::{SwapDir, SwapPointer, SwapQueue, SwapRecord};
use stowage::Error;

const MIB: usize = 1 << 20;

/// Runs `body` on a fresh SimFs store directory and on a fresh real temporary directory.
fn on_both(body: impl Fn(Arc<dyn FileSystem>, &Path)) {
    body(Arc::new(SimFs::new()), Path::new("/s"));
    let tmp = tempfile::tempdir().unwrap();
    body(Arc::new(RealFs::new()), tmp.path());
}

fn swap_files(fs: &Arc<dyn FileSystem>, store: &Path) -> Vec<String> {
    fs.read_dir(&store.join("swap")).unwrap()
}

fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn is_invalid(r: Result<impl std::fmt::Debug, Error>) -> bool {
    matches!(r, Err(Error::InvalidArgument { .. }))
}

fn assert_send_sync<T: Send + Sync>() {}
fn assert_send<T: Send>() {}

#[test]
fn types_are_send_and_sync_as_promised() {
    assert_send_sync::<SwapDir>();
    assert_send::<SwapQueue>();
}

#[test]
fn round_trips_at_every_size_from_buffer_and_from_file() {
    on_both(|fs, store| {
        let dir = SwapDir::open(Arc::clone(&fs), store, 10 * MIB as u64).unwrap();
        let mut q = dir.queue("q").unwrap();
        let sizes = [0usize, 1, 4096, MIB, 1, 0, 4096];
        let mut ptrs = Vec::new();
        for (i, &len) in sizes.iter().enumerate() {
            let p = q.append(&payload(len, i as u8), i as u32).unwrap();
            // Straight from the append buffer (or the direct write of a large record).
            let r = q.read(p).unwrap();
            assert_eq!(r.payload, payload(len, i as u8), "size {len}");
            assert_eq!(r.delivery_count, i as u32);
            ptrs.push(p);
        }
        for round in 0..2 {
            if round == 1 {
                q.flush().unwrap();
            }
            for (i, (&p, &len)) in ptrs.iter().zip(&sizes).enumerate() {
                q.update_delivery_count(p, 100 * (round + 1) + i as u32)
                    .unwrap();
                let r = q.read(p).unwrap();
                assert_eq!(
                    r,
                    SwapRecord {
                        payload: payload(len, i as u8),
                        delivery_count: 100 * (round + 1) + i as u32
                    }
                );
            }
        }
        // Header changes made in the read window survive its write-back.
        q.flush().unwrap();
        for (i, &p) in ptrs.iter().enumerate() {
            assert_eq!(q.read(p).unwrap().delivery_count, 200 + i as u32);
        }
        for &p in &ptrs {
            q.remove(p).unwrap();
            assert!(is_invalid(q.read(p)), "a removed record reads");
            assert!(is_invalid(q.update_delivery_count(p, 1)));
            assert!(is_invalid(q.remove(p)), "double remove");
        }
        q.flush().unwrap();
        for &p in &ptrs {
            assert!(is_invalid(q.read(p)), "removed flags reach the file");
        }
        assert_eq!(q.file_count(), 1, "the drained active file stays");
    });
}

#[test]
fn roll_over_creates_new_files_at_the_size_limit() {
    on_both(|fs, store| {
        let limit = 64 * 1024u64;
        let dir = SwapDir::open(Arc::clone(&fs), store, limit).unwrap();
        let mut q = dir.queue("r").unwrap();
        let rec = 24 + 1000u64;
        let mut file_len = 0u64;
        let mut files = 0usize;
        let mut ptrs = Vec::new();
        for i in 0..300u32 {
            if files == 0 || file_len >= limit {
                files += 1;
                file_len = 0;
            }
            let p = q.append(&payload(1000, i as u8), i).unwrap();
            assert_eq!(p.offset, file_len, "record {i}");
            file_len += rec;
            assert_eq!(q.file_count(), files, "after record {i}");
            ptrs.push(p);
        }
        assert!(files >= 4);
        q.flush().unwrap();
        let names = swap_files(&fs, store);
        assert_eq!(names.len(), files, "{names:?}");
        for n in &names {
            assert!(n.starts_with("r-") && n.ends_with(".swap"), "{n}");
            let f = fs
                .open(&store.join("swap").join(n), OpenMode::Existing)
                .unwrap();
            let len = f.len().unwrap();
            assert!(len >= 1 && len < limit + rec, "{n}: {len} bytes");
        }
        let distinct: BTreeSet<u32> = ptrs.iter().map(|p| p.file).collect();
        assert_eq!(distinct.len(), files);
        for (i, &p) in ptrs.iter().enumerate() {
            assert_eq!(q.read(p).unwrap().payload, payload(1000, i as u8));
        }
    });
}

#[test]
fn a_file_is_deleted_when_its_last_record_goes_and_drop_deletes_the_rest() {
    on_both(|fs, store| {
        let dir = SwapDir::open(Arc::clone(&fs), store, 8192).unwrap();
        let mut q = dir.queue("d").unwrap();
        let ptrs: Vec<SwapPointer> = (0..40u32)
            .map(|i| q.append(&payload(1000, i as u8), 0).unwrap())
            .collect();
        q.flush().unwrap();
        let first = ptrs[0].file;
        let in_first: Vec<SwapPointer> = ptrs.iter().copied().filter(|p| p.file == first).collect();
        assert!(in_first.len() > 1);
        let before = q.file_count();
        assert_eq!(swap_files(&fs, store).len(), before);
        // Out of order, and all but the last: the file stays.
        for p in in_first[1..].iter().rev() {
            q.remove(*p).unwrap();
        }
        assert_eq!(q.file_count(), before);
        q.remove(in_first[0]).unwrap();
        assert_eq!(q.file_count(), before - 1, "the drained file is deleted");
        assert_eq!(swap_files(&fs, store).len(), before - 1);
        assert!(
            is_invalid(q.read(in_first[0])),
            "pointer into a deleted file"
        );
        // Drain everything: every file but the active one goes.
        for p in ptrs.iter().filter(|p| p.file != first) {
            q.remove(*p).unwrap();
        }
        assert_eq!(q.file_count(), 1, "only the active file is left");
        // The (full) active file rolls over with nothing live: it is deleted then.
        let drained_active = ptrs.last().unwrap().file;
        let mut more = vec![q.append(&[7; 3000], 0).unwrap()];
        assert_ne!(more[0].file, drained_active);
        assert_eq!(
            q.file_count(),
            1,
            "the drained active file went at roll-over"
        );
        assert!(is_invalid(q.read(*ptrs.last().unwrap())));
        while q.file_count() < 2 {
            more.push(q.append(&[7; 3000], 0).unwrap());
            if more.len() > 10 {
                break;
            }
        }
        let last = more.last().copied().unwrap();
        assert_ne!(last.file, ptrs.last().unwrap().file, "rolled over");
        assert_eq!(q.file_count(), 2);
        for p in &more[..more.len() - 1] {
            q.remove(*p).unwrap();
        }
        assert_eq!(q.file_count(), 1, "the drained previous file went");
        drop(q);
        assert!(swap_files(&fs, store).is_empty(), "drop deletes every file");
    });
}

#[test]
fn one_swap_queue_per_name_at_a_time() {
    on_both(|fs, store| {
        let dir = SwapDir::open(fs, store, MIB as u64).unwrap();
        let mut a = dir.queue("q").unwrap();
        assert!(is_invalid(dir.queue("q")));
        let mut other = dir.queue("q2").unwrap();
        let pa = a.append(b"a", 1).unwrap();
        let po = other.append(b"o", 2).unwrap();
        assert_ne!(pa.file, po.file);
        assert!(is_invalid(a.read(po)), "a pointer of another queue");
        drop(a);
        let mut again = dir.queue("q").unwrap();
        assert!(is_invalid(again.read(pa)), "the old queue's files are gone");
        assert_eq!(again.file_count(), 0);
        let p = again.append(b"new", 3).unwrap();
        assert_eq!(again.read(p).unwrap().payload, b"new");
        // Queues outlive the SwapDir handle.
        drop(dir);
        assert_eq!(other.read(po).unwrap().payload, b"o");
    });
}

/// A valid partial record: a full swap file written by a queue, cut mid-record.
fn partial_record_bytes() -> Vec<u8> {
    let sim = SimFs::new();
    let dir = SwapDir::open(Arc::new(sim.clone()), Path::new("/p"), MIB as u64).unwrap();
    let mut q = dir.queue("q").unwrap();
    q.append(&payload(500, 1), 0).unwrap();
    q.append(&payload(500, 2), 0).unwrap();
    q.flush().unwrap();
    let mut bytes = sim.read_file(Path::new("/p/swap/q-0.swap")).unwrap();
    bytes.truncate(700);
    bytes
}

#[test]
fn open_deletes_leftovers_of_any_shape() {
    let partial = partial_record_bytes();
    on_both(|fs, store| {
        let swap = store.join("swap");
        fs.create_dir_all(&swap.join("nested/deeper")).unwrap();
        let write = |p: PathBuf, b: &[u8]| {
            let f = fs.open(&p, OpenMode::Create).unwrap();
            f.write_all_at(b, 0).unwrap();
        };
        write(swap.join("q-0.swap"), &partial);
        write(swap.join("q-7.swap"), b"");
        write(swap.join("junk"), b"not a swap file");
        write(swap.join(".hidden"), b"x");
        write(swap.join("nested/deeper/q-1.swap"), &partial);
        let dir = SwapDir::open(Arc::clone(&fs), store, MIB as u64).unwrap();
        assert!(swap_files(&fs, store).is_empty());
        let mut q = dir.queue("q").unwrap();
        let p = q.append(b"fresh", 0).unwrap();
        assert_eq!(q.read(p).unwrap().payload, b"fresh");
        drop(q);
        drop(dir);
        // A file where the directory belongs.
        fs.remove_dir(&swap).unwrap();
        write(swap.clone(), b"in the way");
        SwapDir::open(Arc::clone(&fs), store, MIB as u64).unwrap();
        assert!(swap_files(&fs, store).is_empty());
    });
}

#[test]
fn hostile_queue_names_stay_inside_swap_and_never_share_files() {
    let names: Vec<String> = vec![
        "../x".into(),
        "a/b".into(),
        "a%2Fb".into(),
        ".".into(),
        "..".into(),
        "\0".into(),
        "".into(),
        "-".into(),
        "q-0".into(),
        "ünïcødé/名前".into(),
        "x".repeat(1000),
        format!("{}y", "x".repeat(999)),
        "/".repeat(1000),
        "%".repeat(300),
    ];
    on_both(|fs, store| {
        let dir = SwapDir::open(Arc::clone(&fs), store, 4096).unwrap();
        let mut queues: Vec<(SwapQueue, Vec<SwapPointer>)> = Vec::new();
        let mut seen_files: HashMap<String, usize> = HashMap::new();
        for (i, name) in names.iter().enumerate() {
            let before: BTreeSet<String> = swap_files(&fs, store).into_iter().collect();
            let mut q = dir.queue(name).unwrap();
            // Enough to roll over once: two files per queue.
            let ptrs: Vec<SwapPointer> = (0..5)
                .map(|k| {
                    q.append(&payload(1500, (i * 10 + k) as u8), k as u32)
                        .unwrap()
                })
                .collect();
            q.flush().unwrap();
            let after: BTreeSet<String> = swap_files(&fs, store).into_iter().collect();
            let new: Vec<&String> = after.difference(&before).collect();
            assert_eq!(new.len(), q.file_count(), "name {name:?}: {new:?}");
            for f in new {
                assert!(f.len() <= 255, "{f}");
                assert!(
                    f.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_%-.".contains(&b)),
                    "{f}"
                );
                assert!(f.ends_with(".swap") && !f.starts_with('.'), "{f}");
                assert!(seen_files.insert(f.clone(), i).is_none(), "shared file {f}");
            }
            queues.push((q, ptrs));
        }
        // Nothing was created outside swap/: the store directory holds only `swap`.
        assert_eq!(fs.read_dir(store).unwrap(), vec!["swap".to_string()]);
        for (i, (q, ptrs)) in queues.iter_mut().enumerate() {
            for (k, &p) in ptrs.iter().enumerate() {
                assert_eq!(
                    q.read(p).unwrap().payload,
                    payload(1500, (i * 10 + k) as u8)
                );
            }
        }
        drop(queues);
        assert!(swap_files(&fs, store).is_empty());
    });
}

#[test]
fn real_fs_hostile_names_create_no_entry_outside_swap() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let fs: Arc<dyn FileSystem> = Arc::new(RealFs::new());
    let dir = SwapDir::open(Arc::clone(&fs), &store, 4096).unwrap();
    let mut qs = Vec::new();
    for name in ["../x", "../../y", "a/b", "/abs", "\0"] {
        let mut q = dir.queue(name).unwrap();
        q.append(b"data", 0).unwrap();
        q.flush().unwrap();
        qs.push(q);
    }
    let top: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(top, vec![std::ffi::OsString::from("store")]);
    for e in std::fs::read_dir(store.join("swap")).unwrap() {
        assert!(e.unwrap().file_type().unwrap().is_file());
    }
    assert_eq!(std::fs::read_dir(&store).unwrap().count(), 1);
}

/// The crash workload: two queues, appends across roll-overs, flushes, updates, removes
/// that delete files. The queues go into `keep` (a crashed process runs no `Drop`).
/// Returns at the first error (the crash).
fn crash_workload(fs: Arc<dyn FileSystem>, keep: &mut Vec<SwapQueue>) -> Result<(), Error> {
    let dir = SwapDir::open(fs, Path::new("/s"), 6000)?;
    keep.push(dir.queue("a")?);
    keep.push(dir.queue("b/../c")?);
    let [a, b] = &mut keep[..] else {
        unreachable!()
    };
    let mut ptrs = Vec::new();
    for i in 0..24u32 {
        ptrs.push(a.append(&payload(1000 + i as usize * 50, i as u8), i)?);
        b.append(&payload(300, i as u8), i)?;
        if i % 7 == 0 {
            a.flush()?;
        }
    }
    a.append(&payload(300_000, 9), 0)?; // a direct (unbuffered) write
    for p in &ptrs[..12] {
        a.update_delivery_count(*p, 5)?;
        a.remove(*p)?;
    }
    a.flush()?;
    b.flush()?;
    Ok(())
}

#[test]
fn open_after_any_crash_succeeds_and_leaves_swap_empty() {
    let probe = SimFs::new();
    crash_workload(Arc::new(probe.clone()), &mut Vec::new()).unwrap();
    let calls = probe.mutating_calls();
    assert!(calls >= 25, "{calls} calls");
    let mut runs = 0;
    // Every crash point, plus a crash after the whole workload with its queues still open.
    for crash_at in (0..=calls).map(Some).chain([None]) {
        for outcome in CrashOutcome::ALL {
            let seeds = if outcome == CrashOutcome::ProcessKill {
                1
            } else {
                2
            };
            for seed in 0..seeds {
                let sim = SimFs::new();
                let fs: Arc<dyn FileSystem> = Arc::new(sim.clone());
                sim.set_crash_at(crash_at);
                let mut kept = Vec::new();
                let done = crash_workload(Arc::clone(&fs), &mut kept);
                assert!(done.is_ok() || crash_at.is_some());
                sim.crash_now();
                drop(kept); // runs while crashed: its deletes fail like a dead process's
                sim.restart(outcome, seed);
                let where_ = format!("crash at {crash_at:?} {outcome:?} seed {seed}");
                let dir = SwapDir::open(Arc::clone(&fs), Path::new("/s"), 6000)
                    .unwrap_or_else(|e| panic!("open after {where_}: {e}"));
                assert!(swap_files(&fs, Path::new("/s")).is_empty(), "{where_}");
                assert!(
                    sim.file_names().is_empty(),
                    "{where_}: {:?}",
                    sim.file_names()
                );
                let mut q = dir.queue("a").unwrap();
                let p = q.append(b"after", 1).unwrap();
                assert_eq!(q.read(p).unwrap().payload, b"after");
                runs += 1;
            }
        }
    }
    assert!(runs > 200, "{runs}");
}

#[test]
fn leftovers_of_a_killed_process_are_deleted_at_open() {
    let sim = SimFs::new();
    let fs: Arc<dyn FileSystem> = Arc::new(sim.clone());
    let dir = SwapDir::open(Arc::clone(&fs), Path::new("/s"), 4096).unwrap();
    let mut q = dir.queue("q").unwrap();
    for i in 0..20u8 {
        q.append(&payload(1000, i), 0).unwrap();
    }
    q.flush().unwrap();
    assert!(swap_files(&fs, Path::new("/s")).len() >= 4);
    sim.crash_now();
    drop(q);
    drop(dir);
    sim.restart(CrashOutcome::ProcessKill, 0);
    assert!(
        swap_files(&fs, Path::new("/s")).len() >= 4,
        "kill keeps files"
    );
    SwapDir::open(Arc::clone(&fs), Path::new("/s"), 4096).unwrap();
    assert!(swap_files(&fs, Path::new("/s")).is_empty());
}

#[test]
fn every_flipped_byte_is_detected_or_harmless() {
    let sim = SimFs::new();
    let dir = SwapDir::open(Arc::new(sim.clone()), Path::new("/s"), MIB as u64).unwrap();
    let mut q = dir.queue("q").unwrap();
    let sizes = [0usize, 1, 5, 40, 0, 100];
    let ptrs: Vec<SwapPointer> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| q.append(&payload(n, i as u8), i as u32 + 1).unwrap())
        .collect();
    q.flush().unwrap();
    let path = Path::new("/s/swap/q-0.swap");
    let original = sim.read_file(path).unwrap();
    let expected: Vec<SwapRecord> = ptrs.iter().map(|&p| q.read(p).unwrap()).collect();
    let ends: Vec<u64> = ptrs
        .iter()
        .skip(1)
        .map(|p| p.offset)
        .chain([original.len() as u64])
        .collect();
    for i in 0..original.len() {
        for flip in [0xFFu8, 0x01, 0x80] {
            let mut bad = original.clone();
            bad[i] ^= flip;
            sim.write_file_durable(path, &bad);
            q.flush().unwrap(); // drop the read window: read the damaged file
            for (k, &p) in ptrs.iter().enumerate() {
                let hit = (p.offset..ends[k]).contains(&(i as u64));
                match q.read(p) {
                    Ok(r) => {
                        assert!(
                            !hit,
                            "flip {flip:#x} at byte {i} not detected in record {k}"
                        );
                        assert_eq!(r, expected[k]);
                    }
                    Err(Error::Corruption {
                        file,
                        location,
                        detail,
                    }) => {
                        assert!(hit, "record {k} failed for a flip at byte {i}: {detail}");
                        assert_eq!(file, "swap/q-0.swap");
                        assert_eq!(location, format!("offset {}", p.offset));
                    }
                    Err(e) => panic!("flip at {i}, record {k}: unexpected {e}"),
                }
                if hit && i < p.offset as usize + 24 {
                    assert!(
                        q.update_delivery_count(p, 99).is_err(),
                        "header flip at {i}"
                    );
                    assert!(q.remove(p).is_err(), "header flip at {i}");
                }
            }
        }
    }
    // Truncated behind the queue's back: errors, never a panic.
    for cut in [0, 1, 23, 24, 30, original.len() - 1] {
        sim.write_file_durable(path, &original[..cut]);
        q.flush().unwrap();
        for &p in &ptrs {
            if let Ok(r) = q.read(p) {
                assert!(ptrs
                    .iter()
                    .zip(&expected)
                    .any(|(&pp, e)| pp == p && *e == r));
            }
        }
    }
}

#[test]
fn garbage_pointers_are_errors() {
    on_both(|fs, store| {
        let dir = SwapDir::open(fs, store, MIB as u64).unwrap();
        let mut q = dir.queue("g").unwrap();
        // The big record is written directly; the small ones stay buffered until flush.
        let big = q.append(&payload(300_000, 3), 0).unwrap();
        let ptrs: Vec<SwapPointer> = (0..20u32)
            .map(|i| q.append(&payload(100 + i as usize, i as u8), i).unwrap())
            .collect();
        for flushed in [false, true] {
            if flushed {
                q.flush().unwrap();
            }
            let file = ptrs[0].file;
            let last = ptrs[19];
            let end = last.offset + 24 + 119;
            let beyond = [
                end,
                end - 1,
                end + 1,
                end + 1_000_000,
                u64::MAX,
                u64::MAX - 10,
            ];
            for offset in beyond {
                let p = SwapPointer { file, offset };
                assert!(is_invalid(q.read(p)), "offset {offset}");
                assert!(is_invalid(q.update_delivery_count(p, 1)));
                assert!(is_invalid(q.remove(p)));
            }
            for unknown in [file + 1, file + 1000, u32::MAX] {
                let p = SwapPointer {
                    file: unknown,
                    offset: 0,
                };
                assert!(is_invalid(q.read(p)));
                assert!(is_invalid(q.remove(p)));
            }
            // Inside records: header bytes, payloads, the big record's middle.
            let mut inside: Vec<u64> = ptrs
                .iter()
                .flat_map(|p| [p.offset + 1, p.offset + 24, p.offset + 50])
                .collect();
            inside.extend([
                big.offset + 4,
                big.offset + 150_000,
                big.offset + 300_000 - 30,
            ]);
            for offset in inside {
                let p = SwapPointer { file, offset };
                assert!(
                    matches!(q.read(p), Err(Error::Corruption { .. })),
                    "offset {offset}"
                );
                assert!(q.update_delivery_count(p, 1).is_err());
                assert!(q.remove(p).is_err());
            }
            for (i, &p) in ptrs.iter().enumerate() {
                assert_eq!(q.read(p).unwrap().payload, payload(100 + i, i as u8));
            }
            assert_eq!(q.read(big).unwrap().payload, payload(300_000, 3));
        }
    });
}

/// Random interleavings against a model: checks the buffer / window / file coherence.
#[test]
fn random_operations_match_a_model() {
    on_both(|fs, store| {
        let dir = SwapDir::open(Arc::clone(&fs), store, 40_000).unwrap();
        let mut q = dir.queue("m").unwrap();
        let mut model: Vec<(SwapPointer, Vec<u8>, u32)> = Vec::new();
        let mut removed: Vec<SwapPointer> = Vec::new();
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for step in 0..6000u32 {
            let r = next() % 100;
            if r < 40 || model.is_empty() {
                let len = match next() % 20 {
                    0 => 0,
                    1 => 70_000 + (next() % 300_000) as usize,
                    _ => (next() % 3000) as usize,
                };
                let data = payload(len, step as u8);
                let p = q.append(&data, step).unwrap();
                model.push((p, data, step));
            } else if r < 60 {
                let i = (next() % model.len() as u64) as usize;
                let (p, data, count) = &model[i];
                let got = q.read(*p).unwrap();
                assert_eq!(
                    (&got.payload, got.delivery_count),
                    (data, *count),
                    "step {step}"
                );
            } else if r < 75 {
                let i = (next() % model.len() as u64) as usize;
                let c = next() as u32;
                q.update_delivery_count(model[i].0, c).unwrap();
                model[i].2 = c;
            } else if r < 97 {
                // Mostly FIFO, sometimes random.
                let i = if next() % 4 == 0 {
                    (next() % model.len() as u64) as usize
                } else {
                    0
                };
                let (p, _, _) = model.remove(i);
                q.remove(p).unwrap();
                removed.push(p);
            } else if r < 99 {
                q.flush().unwrap();
            } else if let Some(&p) = removed.last() {
                assert!(q.read(p).is_err());
            }
            if step % 500 == 0 {
                let live_files: BTreeSet<u32> = model.iter().map(|m| m.0.file).collect();
                assert!(q.file_count() <= live_files.len() + 1, "step {step}");
                assert_eq!(swap_files(&fs, store).len(), q.file_count());
            }
        }
        for (p, data, count) in &model {
            let got = q.read(*p).unwrap();
            assert_eq!((&got.payload, got.delivery_count), (data, *count));
        }
    });
}

/// Counts the I/O that reaches the file layer.
#[derive(Debug, Default)]
struct Counters {
    reads: AtomicU64,
    read_bytes: AtomicU64,
    writes: AtomicU64,
}

#[derive(Debug)]
struct CountingFs {
    inner: Arc<dyn FileSystem>,
    c: Arc<Counters>,
}

#[derive(Debug)]
struct CountingFile {
    inner: Arc<dyn FileHandle>,
    c: Arc<Counters>,
}

impl FileHandle for CountingFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.c.reads.fetch_add(1, Relaxed);
        self.c.read_bytes.fetch_add(buf.len() as u64, Relaxed);
        self.inner.read_exact_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.c.writes.fetch_add(1, Relaxed);
        self.inner.write_all_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        panic!("swap files are never synced")
    }
    fn sync_all(&self) -> io::Result<()> {
        panic!("swap files are never synced")
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn allocate(&self, len: u64) -> io::Result<()> {
        self.inner.allocate(len)
    }
}

impl FileSystem for CountingFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn FileHandle>> {
        Ok(Arc::new(CountingFile {
            inner: self.inner.open(path, mode)?,
            c: Arc::clone(&self.c),
        }))
    }
    fn exists(&self, path: &Path) -> io::Result<bool> {
        self.inner.exists(path)
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.create_dir_all(path)
    }
    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.inner.read_dir(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }
    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_dir(path)
    }
    fn sync_dir(&self, _path: &Path) -> io::Result<()> {
        panic!("the swap directory is never synced")
    }
    fn lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>> {
        self.inner.lock(path)
    }
}

#[test]
fn appends_are_written_in_large_chunks_and_fifo_drains_read_each_byte_about_once() {
    let c = Arc::new(Counters::default());
    let fs: Arc<dyn FileSystem> = Arc::new(CountingFs {
        inner: Arc::new(SimFs::new()),
        c: Arc::clone(&c),
    });
    let dir = SwapDir::open(fs, Path::new("/s"), 4 * MIB as u64).unwrap();
    let mut q = dir.queue("q").unwrap();
    let n = 8000u64;
    let volume = n * (1024 + 24);
    let ptrs: Vec<SwapPointer> = (0..n)
        .map(|i| q.append(&payload(1024, i as u8), 0).unwrap())
        .collect();
    q.flush().unwrap();
    let writes = c.writes.load(Relaxed);
    assert!(
        writes <= volume / (200 * 1024) + 3,
        "{writes} writes for {n} appends"
    );
    assert_eq!(c.reads.load(Relaxed), 0);
    for (i, &p) in ptrs.iter().enumerate() {
        assert_eq!(q.read(p).unwrap().payload, payload(1024, i as u8));
        q.remove(p).unwrap();
    }
    let (reads, read_bytes) = (c.reads.load(Relaxed), c.read_bytes.load(Relaxed));
    assert!(
        read_bytes <= volume + volume / 8,
        "{read_bytes} bytes read for {volume}"
    );
    assert!(reads <= volume / (200 * 1024) + 8, "{reads} reads");
    let drain_writes = c.writes.load(Relaxed) - writes;
    assert!(
        drain_writes <= volume / (200 * 1024) + 8,
        "{drain_writes} writes"
    );
    assert_eq!(q.file_count(), 1);
}
