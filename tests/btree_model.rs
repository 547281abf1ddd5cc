//! The B+tree against a `BTreeMap` model: random inserts, removes, updates, lookups, range
//! scans, first/last, bulk appends and bulk removals from the left edge, several per
//! transaction; some transactions dropped (rollback must leave the committed tree exactly as
//! it was); `check` and a page-leak check after every transaction; a reopen of the kernel in
//! the middle.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use stowage::btree::{self, TreeStats};
use stowage::file::SimFs;
use stowage::kernel::{Kernel, OpenOptions, PageSource};
use stowage::page::PageId;
use stowage::{Durability, Error, StoreConfig};

const SLOT: usize = 0;

fn config() -> StoreConfig {
    StoreConfig {
        page_size: 2048,
        cache_min_pages: 512,
        cache_max_pages: 2048,
        // Small files: SimFs keeps every byte in memory (twice).
        initial_db_size_pages: 64,
        checkpoint_size: 2 << 20,
        ..Default::default()
    }
}

fn open(sim: &SimFs) -> Kernel {
    Kernel::open_with(
        Arc::new(sim.clone()),
        Path::new("/t"),
        &config(),
        OpenOptions {
            no_background_threads: true,
            ..Default::default()
        },
    )
    .unwrap()
}

fn value(vl: usize, key: u64, version: u32) -> Vec<u8> {
    (0..vl)
        .map(|i| (key as usize * 31 + version as usize * 7 + i) as u8)
        .collect()
}

type Model = BTreeMap<u64, Vec<u8>>;

#[derive(Debug, Clone)]
enum Op {
    Insert(u64),
    Remove(u64),
    Update(u64),
    Get(u64),
    Range(u64, usize),
    First,
    Last,
    /// Appends `n` keys above the current maximum (the broker's right edge).
    Append(u16),
    /// Removes the `n` lowest keys (consumption at the left edge).
    PopFront(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..3000).prop_map(Op::Insert),
        3 => (0u64..3000).prop_map(Op::Remove),
        2 => (0u64..3000).prop_map(Op::Update),
        2 => (0u64..3000).prop_map(Op::Get),
        1 => (0u64..3200, 0usize..300).prop_map(|(f, l)| Op::Range(f, l)),
        1 => Just(Op::First),
        1 => Just(Op::Last),
        1 => (1u16..400).prop_map(Op::Append),
        1 => (1u16..400).prop_map(Op::PopFront),
    ]
}

#[derive(Debug, Clone)]
struct Txn {
    ops: Vec<Op>,
    commit: bool,
}

fn txn() -> impl Strategy<Value = Txn> {
    (
        prop::collection::vec(op(), 1..12),
        prop::bool::weighted(0.8),
    )
        .prop_map(|(ops, commit)| Txn { ops, commit })
}

fn collect(src: &mut impl PageSource, root: PageId, vl: usize) -> Model {
    let mut out = Model::new();
    btree::range(src, root, vl, 0, usize::MAX, |k, v| {
        assert!(out.insert(k, v.to_vec()).is_none(), "key {k} visited twice");
    })
    .unwrap();
    out
}

/// Checks the committed tree against the model and that every page of page.db is exactly
/// one of: page 0, a free-map page, a free page, a page of the tree.
fn check_committed(k: &Kernel, vl: usize, model: &Model) -> TreeStats {
    let root = k.root(SLOT);
    let mut view = k.read_view().unwrap();
    let stats = btree::check(&mut view, root, vl).unwrap();
    assert_eq!(stats.entries, model.len() as u64);
    assert_eq!(&collect(&mut view, root, vl), model);
    drop(view);
    let mut used = vec![0u64];
    used.extend(k.free_map_page_ids());
    used.extend(k.free_page_ids());
    used.extend(&stats.pages);
    used.sort_unstable();
    let all: Vec<u64> = (0..k.page_count()).collect();
    assert_eq!(
        used, all,
        "tree + free + free-map + page 0 must partition page.db"
    );
    stats
}

fn apply(
    tx: &mut stowage::kernel::WriteTxn<'_>,
    root: &mut PageId,
    vl: usize,
    model: &mut Model,
    version: &mut u32,
    op: &Op,
) {
    *version += 1;
    match *op {
        Op::Insert(key) => {
            let v = value(vl, key, *version);
            match btree::insert(tx, *root, vl, key, &v) {
                Ok(r) => {
                    assert!(
                        model.insert(key, v).is_none(),
                        "insert of existing {key} accepted"
                    );
                    *root = r;
                }
                Err(Error::InvalidArgument { .. }) => {
                    assert!(model.contains_key(&key), "insert of new {key} refused")
                }
                Err(e) => panic!("insert {key}: {e}"),
            }
        }
        Op::Remove(key) => {
            let (r, v) = btree::remove(tx, *root, vl, key).unwrap();
            *root = r;
            assert_eq!(v, model.remove(&key), "remove {key}");
        }
        Op::Update(key) => {
            let v = value(vl, key, *version);
            let found = btree::update(tx, *root, vl, key, &v).unwrap();
            assert_eq!(found, model.contains_key(&key), "update {key}");
            if found {
                model.insert(key, v);
            }
        }
        Op::Get(key) => {
            assert_eq!(
                btree::get(tx, *root, vl, key).unwrap().as_ref(),
                model.get(&key)
            );
        }
        Op::Range(from, limit) => {
            let mut got = Vec::new();
            btree::range(tx, *root, vl, from, limit, |k, v| got.push((k, v.to_vec()))).unwrap();
            let want: Vec<(u64, Vec<u8>)> = model
                .range(from..)
                .take(limit)
                .map(|(k, v)| (*k, v.clone()))
                .collect();
            assert_eq!(got, want, "range from {from} limit {limit}");
        }
        Op::First => {
            let want = model.iter().next().map(|(k, v)| (*k, v.clone()));
            assert_eq!(btree::first(tx, *root, vl).unwrap(), want);
        }
        Op::Last => {
            let want = model.iter().next_back().map(|(k, v)| (*k, v.clone()));
            assert_eq!(btree::last(tx, *root, vl).unwrap(), want);
        }
        Op::Append(n) => {
            let start = model.keys().next_back().map_or(0, |k| k + 1);
            for key in start..start + u64::from(n) {
                let v = value(vl, key, *version);
                *root = btree::insert(tx, *root, vl, key, &v).unwrap();
                model.insert(key, v);
            }
        }
        Op::PopFront(n) => {
            for _ in 0..n {
                let Some((&key, _)) = model.iter().next() else {
                    break;
                };
                let (r, v) = btree::remove(tx, *root, vl, key).unwrap();
                *root = r;
                assert_eq!(v, model.remove(&key), "pop front {key}");
            }
        }
    }
}

fn run(vl: usize, txns: &[Txn], reopen_at: usize) {
    let sim = SimFs::new();
    let mut k = open(&sim);
    {
        let mut tx = k.begin().unwrap();
        let root = btree::create(&mut tx, vl).unwrap();
        tx.set_root(SLOT, root).unwrap();
        tx.commit(Durability::Async).unwrap();
    }
    let mut model = Model::new();
    let mut version = 0u32;
    check_committed(&k, vl, &model);
    for (i, t) in txns.iter().enumerate() {
        if i == reopen_at {
            drop(k);
            k = open(&sim);
            check_committed(&k, vl, &model);
        }
        let before = check_committed(&k, vl, &model);
        let free_before = k.free_page_ids();
        let count_before = k.page_count();
        let mut tx = k.begin().unwrap();
        let mut root = tx.root(SLOT);
        let mut txn_model = model.clone();
        for op in &t.ops {
            apply(&mut tx, &mut root, vl, &mut txn_model, &mut version, op);
        }
        // The transaction sees its own tree as consistent.
        let inside = btree::check(&mut tx, root, vl).unwrap();
        assert_eq!(inside.entries, txn_model.len() as u64);
        if t.commit {
            tx.set_root(SLOT, root).unwrap();
            tx.commit(Durability::Async).unwrap();
            model = txn_model;
            check_committed(&k, vl, &model);
        } else {
            drop(tx);
            let after = check_committed(&k, vl, &model);
            assert_eq!(after, before, "a dropped transaction changed the tree");
            // Every page the transaction took is free again (growth of the file stays).
            let mut want = free_before;
            want.extend(count_before..k.page_count());
            assert_eq!(k.free_page_ids(), want, "rollback leaked pages");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn btree_matches_a_btreemap(
        vl in prop_oneof![Just(1usize), Just(8usize), Just(96usize)],
        txns in prop::collection::vec(txn(), 1..24),
        reopen in 0usize..24,
    ) {
        run(vl, &txns, reopen);
    }
}

/// A deterministic long run that grows the tree to three levels (96-byte values: 19 per
/// leaf, 126 separators per branch) with random work mixed in.
#[test]
fn long_mixed_run_reaches_three_levels() {
    let mut txns = Vec::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..60 {
        let mut ops = vec![Op::Append(400)];
        for _ in 0..20 {
            let key = next() % 24_000;
            ops.push(match next() % 4 {
                0 => Op::Insert(key),
                1 => Op::Remove(key),
                2 => Op::Update(key),
                _ => Op::Range(key, 50),
            });
        }
        if i % 7 == 6 {
            ops.push(Op::PopFront(300));
        }
        txns.push(Txn {
            ops,
            commit: i % 9 != 4,
        });
    }
    run(96, &txns, 30);
    // Depth is asserted through a fresh build of the same shape.
    let sim = SimFs::new();
    let k = open(&sim);
    let mut tx = k.begin().unwrap();
    let mut root = btree::create(&mut tx, 96).unwrap();
    for key in 0..20_000u64 {
        root = btree::insert(&mut tx, root, 96, key, &value(96, key, 0)).unwrap();
    }
    let s = btree::check(&mut tx, root, 96).unwrap();
    assert_eq!(s.depth, 3, "{s:?}");
}
