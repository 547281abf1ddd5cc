//! Replays the `api_sequence` fuzz corpus (`fuzz/corpus/api_sequence/`) through the same
//! decoder, interpreter and model as the cargo-fuzz target (the file is shared with
//! `#[path]`), checks that the corpus reaches every kind of operation and crash, and runs
//! fixed sequences that must pass, plus sequences on which a wrong store must fail the model.
//! `cargo test --test fuzz_replay_api -- --ignored` regenerates the seeds.

#[path = "../fuzz/fuzz_targets/api_model.rs"]
#[allow(dead_code)]
mod api_model;

use std::fs;
use std::path::{Path, PathBuf};

use api_model::{run, run_bytes, CommitHow, CrashPoint, Op, QueueName, Size, Stats};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/api_sequence")
}

#[test]
fn api_sequence_corpus_replays_against_the_model() {
    let mut entries: Vec<PathBuf> = fs::read_dir(corpus())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    let mut total = Stats::default();
    for path in &entries {
        total.add(&run_bytes(&fs::read(path).unwrap()));
    }
    println!("{} inputs: {total:?}", entries.len());
    assert!(entries.len() >= 20, "the corpus lost its seeds");
    // The corpus must keep reaching every part of the model.
    assert!(total.commits.iter().all(|&n| n > 0), "{total:?}");
    assert!(total.prepares > 0 && total.resolved > 0, "{total:?}");
    assert!(total.locked > 0 && total.reopens > 0, "{total:?}");
    assert!(total.crashes.iter().all(|&n| n > 0), "{total:?}");
    assert!(total.crashes_in_flight > 0, "{total:?}");
}

fn ins(tx: bool, q: QueueName, size: Size) -> Op {
    Op::Insert {
        tx,
        queue: q,
        size,
        priority: 3,
        expiration: Some(77),
    }
}

fn commit(tx: bool, how: CommitHow) -> Op {
    Op::Commit { tx, how }
}

fn crash(at: CrashPoint, outcome: u8, seed: u16) -> Op {
    Op::Crash {
        at,
        outcome,
        seed,
        recovery_crash: None,
    }
}

/// Every operation, each durability, two transactions fighting over a key, XA across a
/// reopen, and crashes of every outcome (between and inside operations).
fn every_operation() -> Vec<Op> {
    use QueueName::{Invalid, A, B};
    vec![
        Op::CreateQueue(A),
        Op::CreateQueue(A),
        Op::CreateQueue(Invalid),
        Op::CreateQueue(B),
        ins(false, A, Size::Tiny(5)),
        ins(false, A, Size::Empty),
        ins(false, A, Size::Pages(40)),
        ins(false, B, Size::AroundPage(200)),
        ins(false, A, Size::TooLarge),
        ins(false, Invalid, Size::Tiny(1)),
        commit(false, CommitHow::Default),
        Op::Remove {
            tx: false,
            queue: A,
            pick: 1,
        },
        Op::Remove {
            tx: true,
            queue: A,
            pick: 1,
        },
        Op::SetDeliveryCount {
            tx: true,
            queue: A,
            pick: 2,
            count: 9,
        },
        Op::Prepare { tx: true, xid: 1 },
        commit(false, CommitHow::Flush),
        ins(false, B, Size::Max),
        commit(false, CommitHow::Async),
        crash(CrashPoint::Now, 0, 1),
        Op::Reopen,
        Op::CommitPrepared { xid: 1 },
        ins(true, B, Size::Tiny(9)),
        Op::Prepare { tx: true, xid: 2 },
        Op::RollbackPrepared { xid: 2 },
        Op::RollbackPrepared { xid: 2 },
        ins(false, A, Size::Tiny(3)),
        Op::Rollback { tx: false },
        ins(false, A, Size::Tiny(4)),
        Op::Drop { tx: false },
        Op::Checkpoint,
        ins(false, B, Size::Pages(3)),
        crash(CrashPoint::AfterCalls(2), 1, 5),
        commit(false, CommitHow::Sync),
        ins(false, B, Size::Tiny(2)),
        commit(false, CommitHow::Flush),
        crash(CrashPoint::Now, 2, 3),
        Op::DeleteQueue(A),
        Op::DeleteQueue(A),
        Op::Crash {
            at: CrashPoint::Now,
            outcome: 3,
            seed: 11,
            recovery_crash: Some(3),
        },
    ]
}

#[test]
fn a_fixed_sequence_exercises_every_operation() {
    let s = run(&every_operation());
    assert_eq!(s.prepares, 2, "{s:?}");
    assert_eq!(s.resolved, 2, "{s:?}");
    assert!(s.locked >= 1, "{s:?}");
    assert_eq!(s.crashes, [1, 1, 1, 1], "{s:?}");
    assert_eq!(s.crashes_in_flight, 1, "{s:?}");
    assert_eq!(s.recovery_crashes, 1, "{s:?}");
}

/// A mixed workload with a crash point at its `n`-th mutating call.
fn crash_workload(n: u8, outcome: u8) -> Vec<Op> {
    use QueueName::{A, C};
    vec![
        Op::CreateQueue(A),
        Op::CreateQueue(C),
        crash(CrashPoint::AfterCalls(n), outcome, u16::from(n)),
        ins(false, A, Size::Pages(10)),
        ins(true, C, Size::Tiny(8)),
        commit(true, CommitHow::Async),
        commit(false, CommitHow::Flush),
        Op::Remove {
            tx: false,
            queue: A,
            pick: 1,
        },
        Op::Prepare { tx: false, xid: 0 },
        ins(false, C, Size::AroundPage(7)),
        commit(false, CommitHow::Sync),
        Op::CommitPrepared { xid: 0 },
        Op::Checkpoint,
        Op::DeleteQueue(C),
    ]
}

/// A crash at every mutating call of a mixed workload, with every outcome: the model holds.
#[test]
fn crashes_at_every_call_of_a_workload_match_the_model() {
    let mut total = Stats::default();
    for n in 0..30u8 {
        for outcome in 0..4u8 {
            total.add(&run(&crash_workload(n, outcome)));
        }
    }
    assert!(total.crashes_in_flight >= 70, "{total:?}");
    assert!(total.recovered_unsynced > 0, "{total:?}");
}

/// The model catches a store that loses acknowledged commits: with each planted bug, some
/// crash of the workload above (or of the every-operation sequence) fails the run.
#[test]
fn the_model_catches_planted_durability_bugs() {
    use stowage::planted::PlantedBugs;
    let bugs = [
        PlantedBugs {
            ack_before_log_sync: true,
            ..PlantedBugs::default()
        },
        PlantedBugs {
            skip_dir_fsync: true,
            ..PlantedBugs::default()
        },
    ];
    for bug in bugs {
        let mut caught = 0;
        for n in 0..30u8 {
            for outcome in 1..4u8 {
                let ops = crash_workload(n, outcome);
                let r = std::panic::catch_unwind(|| api_model::run_with_bugs(&ops, bug));
                caught += usize::from(r.is_err());
            }
        }
        assert!(caught > 0, "{bug:?} went unnoticed");
    }
}

/// The bytes [`api_model::decode`] turns into `ops`: the inverse of `arbitrary` 1.5's
/// derived decoding (an enum variant is a little-endian u32 `x` with `x * n >> 32` the
/// variant's index, then its fields in order; `bool` and `Option` tags are one byte).
fn encode(ops: &[Op]) -> Vec<u8> {
    fn variant(out: &mut Vec<u8>, index: u64, count: u64) {
        out.extend_from_slice(&(index << 32).div_ceil(count).to_le_bytes()[..4]);
    }
    fn queue(out: &mut Vec<u8>, q: QueueName) {
        let i = [QueueName::A, QueueName::B, QueueName::C, QueueName::Invalid]
            .iter()
            .position(|x| *x == q)
            .unwrap();
        variant(out, i as u64, 4);
    }
    let mut out = Vec::new();
    for op in ops {
        let o = &mut out;
        match *op {
            Op::CreateQueue(q) | Op::DeleteQueue(q) => {
                variant(o, u64::from(matches!(op, Op::DeleteQueue(_))), 14);
                queue(o, q);
            }
            Op::Insert {
                tx,
                queue: q,
                size,
                priority,
                expiration,
            } => {
                variant(o, 2, 14);
                o.push(u8::from(tx));
                queue(o, q);
                let (i, n) = match size {
                    Size::Empty => (0, None),
                    Size::Tiny(n) => (1, Some(n)),
                    Size::AroundPage(n) => (2, Some(n)),
                    Size::Pages(n) => (3, Some(n)),
                    Size::Max => (4, None),
                    Size::TooLarge => (5, None),
                };
                variant(o, i, 6);
                o.extend(n);
                o.push(priority);
                o.push(u8::from(expiration.is_some()));
                o.extend(expiration.map(u16::to_le_bytes).into_iter().flatten());
            }
            Op::Remove { tx, queue: q, pick } => {
                variant(o, 3, 14);
                o.push(u8::from(tx));
                queue(o, q);
                o.push(pick);
            }
            Op::SetDeliveryCount {
                tx,
                queue: q,
                pick,
                count,
            } => {
                variant(o, 4, 14);
                o.push(u8::from(tx));
                queue(o, q);
                o.extend([pick, count]);
            }
            Op::Commit { tx, how } => {
                variant(o, 5, 14);
                o.push(u8::from(tx));
                let i = match how {
                    CommitHow::Default => 0,
                    CommitHow::Sync => 1,
                    CommitHow::Flush => 2,
                    CommitHow::Async => 3,
                };
                variant(o, i, 4);
            }
            Op::Rollback { tx } | Op::Drop { tx } => {
                variant(o, 6 + u64::from(matches!(op, Op::Drop { .. })), 14);
                o.push(u8::from(tx));
            }
            Op::Prepare { tx, xid } => {
                variant(o, 8, 14);
                o.extend([u8::from(tx), xid]);
            }
            Op::CommitPrepared { xid } | Op::RollbackPrepared { xid } => {
                variant(
                    o,
                    9 + u64::from(matches!(op, Op::RollbackPrepared { .. })),
                    14,
                );
                o.push(xid);
            }
            Op::Checkpoint => variant(o, 11, 14),
            Op::Reopen => variant(o, 12, 14),
            Op::Crash {
                at,
                outcome,
                seed,
                recovery_crash,
            } => {
                variant(o, 13, 14);
                match at {
                    CrashPoint::Now => variant(o, 0, 2),
                    CrashPoint::AfterCalls(n) => {
                        variant(o, 1, 2);
                        o.push(n);
                    }
                }
                o.push(outcome);
                o.extend(seed.to_le_bytes());
                o.push(u8::from(recovery_crash.is_some()));
                o.extend(recovery_crash);
            }
        }
    }
    out
}

/// The seeds: the fixed sequences above, encoded, and pseudo-random bytes (random
/// operation lists).
fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = vec![(
        "seed-every-operation".to_string(),
        encode(&every_operation()),
    )];
    for n in (0..30).step_by(2) {
        let ops = crash_workload(n as u8, n as u8 % 4);
        out.push((format!("seed-crash-at-{n:02}"), encode(&ops)));
    }
    let mut x: u64 = 0x5EED_A91C_0FFE_E123;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..20 {
        let len = 64 + (next() % 448) as usize;
        let bytes = (0..len).map(|_| next() as u8).collect();
        out.push((format!("seed-random-{i:02}"), bytes));
    }
    out
}

#[test]
fn seeds_decode_to_the_operations_they_encode() {
    for n in 0..30 {
        let ops = crash_workload(n, n % 4);
        assert_eq!(api_model::decode(&encode(&ops)), ops);
    }
    let ops = every_operation();
    assert_eq!(api_model::decode(&encode(&ops)), ops);
}

#[test]
#[ignore = "regenerates the seed corpus; run by hand"]
fn regenerate_api_sequence_seeds() {
    let dir = corpus();
    fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in seeds() {
        fs::write(dir.join(name), bytes).unwrap();
    }
}
