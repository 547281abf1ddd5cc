//! Model-based test of the store: random sequences of queue creation and deletion,
//! inserts, removes, delivery-count updates, commits, rollbacks, clean reopens and
//! simulated crashes (every outcome), against a `BTreeMap` model. Commits are `Sync`, so
//! after a crash the store must equal the model exactly; keys must never repeat.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use stowage::file::{CrashOutcome, SimFs};
use stowage::kernel::OpenOptions;
use stowage::{Durability, Error, NewMessage, Store, StoreConfig};

type Model = BTreeMap<String, BTreeMap<u64, (Vec<u8>, u32)>>;

#[derive(Debug, Clone)]
enum Op {
    Create(u8),
    Delete(u8),
    Insert(u8, usize),
    Remove(u8, usize),
    SetCount(u8, usize, u32),
    Commit,
    Rollback,
    Reopen,
    Crash(u8, u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0u8..3).prop_map(Op::Create),
        1 => (0u8..3).prop_map(Op::Delete),
        6 => (0u8..3, prop_oneof![0usize..200, 1900usize..2200, 4000usize..9000]).prop_map(|(q, n)| Op::Insert(q, n)),
        3 => (0u8..3, 0usize..20).prop_map(|(q, i)| Op::Remove(q, i)),
        2 => (0u8..3, 0usize..20, 0u32..5).prop_map(|(q, i, c)| Op::SetCount(q, i, c)),
        3 => Just(Op::Commit),
        1 => Just(Op::Rollback),
        1 => Just(Op::Reopen),
        1 => (0u8..4, any::<u64>()).prop_map(|(o, s)| Op::Crash(o, s)),
    ]
}

fn config() -> StoreConfig {
    StoreConfig {
        page_size: 2048,
        initial_db_size_pages: 16,
        cache_min_pages: 512,
        cache_max_pages: 512,
        checkpoint_size: 1 << 20,
        max_message_size: 16 * 1024,
        ..StoreConfig::default()
    }
}

fn open(sim: &SimFs) -> Store {
    Store::open_with(
        Arc::new(sim.clone()),
        Path::new("/m"),
        config(),
        OpenOptions {
            no_background_threads: true,
            ..OpenOptions::default()
        },
    )
    .unwrap()
}

fn name(q: u8) -> String {
    format!("q{q}")
}

fn check(store: &Store, model: &Model) {
    let names: Vec<String> = store
        .queues()
        .unwrap()
        .into_iter()
        .map(|q| q.name)
        .collect();
    assert_eq!(names, model.keys().cloned().collect::<Vec<_>>());
    for (q, msgs) in model {
        let got: BTreeMap<u64, (Vec<u8>, u32)> = store
            .messages(q, 0, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|m| (m.key, (m.payload, m.delivery_count)))
            .collect();
        assert_eq!(&got, msgs, "queue {q}");
    }
    store.check_pages().unwrap();
}

/// A pending operation of the open transaction, applied to the model at commit.
enum Pending {
    Insert(String, u64, Vec<u8>),
    Remove(String, u64),
    Count(String, u64, u32),
}

fn run(ops: Vec<Op>) {
    let sim = SimFs::new();
    let mut store = open(&sim);
    let mut model = Model::new();
    let mut seen_keys: BTreeMap<String, u64> = BTreeMap::new();
    let mut tx = store.begin();
    let mut pending: Vec<Pending> = Vec::new();
    for (i, op) in ops.into_iter().enumerate() {
        match op {
            Op::Create(q) => {
                let r = store.create_queue(&name(q));
                if let std::collections::btree_map::Entry::Vacant(v) = model.entry(name(q)) {
                    r.unwrap();
                    v.insert(BTreeMap::new());
                    seen_keys.insert(name(q), 0);
                } else {
                    assert!(matches!(r, Err(Error::QueueExists { .. })));
                }
            }
            Op::Delete(q) => {
                // Deleting under an open transaction that touches the queue would make the
                // transaction's commit fail; keep the model simple by committing first.
                if pending.iter().any(|p| matches!(p, Pending::Insert(n, ..) | Pending::Remove(n, _) | Pending::Count(n, ..) if *n == name(q))) {
                    continue;
                }
                let r = store.delete_queue(&name(q));
                match model.remove(&name(q)) {
                    Some(m) => assert_eq!(r.unwrap(), m.len() as u64),
                    None => assert!(matches!(r, Err(Error::QueueNotFound { .. }))),
                }
            }
            Op::Insert(q, n) => {
                let payload: Vec<u8> = (0..n).map(|j| (j + i) as u8).collect();
                match tx.insert(&name(q), NewMessage::new(payload.clone())) {
                    Ok(k) => {
                        let last = seen_keys.entry(name(q)).or_insert(0);
                        assert!(k > *last || *last == 0, "key {k} not above {last}");
                        *last = k;
                        pending.push(Pending::Insert(name(q), k, payload));
                    }
                    Err(Error::QueueNotFound { .. }) => assert!(!model.contains_key(&name(q))),
                    Err(e) => panic!("{e}"),
                }
            }
            Op::Remove(q, idx) | Op::SetCount(q, idx, _) => {
                let Some(msgs) = model.get(&name(q)) else {
                    continue;
                };
                let Some(&key) = msgs.keys().nth(idx) else {
                    continue;
                };
                let already = pending
                    .iter()
                    .any(|p| matches!(p, Pending::Remove(n, k) if *n == name(q) && *k == key));
                let r = match op {
                    Op::Remove(..) => tx.remove(&name(q), key),
                    Op::SetCount(_, _, c) => tx.set_delivery_count(&name(q), key, c),
                    _ => unreachable!(),
                };
                if already {
                    assert!(matches!(r, Err(Error::MessageNotFound { .. })));
                    continue;
                }
                r.unwrap();
                pending.push(match op {
                    Op::Remove(..) => Pending::Remove(name(q), key),
                    Op::SetCount(_, _, c) => Pending::Count(name(q), key, c),
                    _ => unreachable!(),
                });
            }
            Op::Commit => {
                let done = std::mem::replace(&mut tx, store.begin());
                done.commit_with(Durability::Sync).unwrap();
                for p in pending.drain(..) {
                    match p {
                        Pending::Insert(q, k, v) => {
                            model.get_mut(&q).unwrap().insert(k, (v, 0));
                        }
                        Pending::Remove(q, k) => {
                            model.get_mut(&q).unwrap().remove(&k);
                        }
                        Pending::Count(q, k, c) => {
                            if let Some(m) = model.get_mut(&q).unwrap().get_mut(&k) {
                                m.1 = c;
                            }
                        }
                    }
                }
                check(&store, &model);
            }
            Op::Rollback => {
                std::mem::replace(&mut tx, store.begin()).rollback();
                pending.clear();
                check(&store, &model);
            }
            Op::Reopen | Op::Crash(..) => {
                drop(std::mem::replace(&mut tx, store.begin()));
                pending.clear();
                drop(tx);
                if let Op::Crash(o, seed) = op {
                    sim.crash_now();
                    drop(store);
                    sim.restart(CrashOutcome::ALL[o as usize], seed);
                    // Keys of the transaction the crash interrupted may come back; committed
                    // ones never.
                    for (q, msgs) in &model {
                        seen_keys.insert(q.clone(), msgs.keys().next_back().copied().unwrap_or(0));
                    }
                } else {
                    store.close().unwrap();
                    drop(store);
                }
                store = open(&sim);
                check(&store, &model);
                tx = store.begin();
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
    #[test]
    fn store_matches_the_model(ops in proptest::collection::vec(op(), 1..80)) {
        // Two queues exist from the start, so most operations act on something.
        let mut all = vec![Op::Create(0), Op::Create(1)];
        all.extend(ops);
        run(all);
    }
}

#[test]
fn a_fixed_sequence_exercises_every_operation() {
    run(vec![
        Op::Create(0),
        Op::Insert(0, 10),
        Op::Insert(0, 2000),
        Op::Commit,
        Op::SetCount(0, 0, 3),
        Op::Remove(0, 1),
        Op::Commit,
        Op::Reopen,
        Op::Insert(0, 5000),
        Op::Commit,
        Op::Crash(2, 7),
        Op::Delete(0),
        Op::Create(0),
        Op::Insert(0, 1),
        Op::Rollback,
    ]);
}
