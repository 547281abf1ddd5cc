//! The B+tree's edges: the broker pattern (appends at the right edge, consumption at the
//! left) with its fill factor, page reclamation and throughput; `destroy`; corrupt pages;
//! value lengths 1 and 96 on page sizes 2048 and 65536.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use stowage::btree::{self, leaf_capacity, TreeStats};
use stowage::file::SimFs;
use stowage::kernel::{Kernel, OpenOptions, PageSource, WriteTxn};
use stowage::page::{PageId, PageType};
use stowage::{Durability, Error, StoreConfig};

const SLOT: usize = 0;

fn config(page_size: u32) -> StoreConfig {
    StoreConfig {
        page_size,
        page_size_max: 65536,
        cache_min_pages: 512,
        cache_max_pages: if page_size > 2048 { 512 } else { 2048 },
        initial_db_size_pages: 64,
        checkpoint_size: 4 << 20,
        ..Default::default()
    }
}

fn open(sim: &SimFs, page_size: u32) -> Kernel {
    Kernel::open_with(
        Arc::new(sim.clone()),
        Path::new("/t"),
        &config(page_size),
        OpenOptions {
            no_background_threads: true,
            ..Default::default()
        },
    )
    .unwrap()
}

fn value(vl: usize, key: u64) -> Vec<u8> {
    (0..vl).map(|i| (key as usize * 13 + i) as u8).collect()
}

fn new_tree(k: &Kernel, vl: usize) -> PageId {
    let mut tx = k.begin().unwrap();
    let root = btree::create(&mut tx, vl).unwrap();
    tx.set_root(SLOT, root).unwrap();
    tx.commit(Durability::Async).unwrap();
    root
}

fn check(k: &Kernel, vl: usize) -> TreeStats {
    let mut view = k.read_view().unwrap();
    btree::check(&mut view, k.root(SLOT), vl).unwrap()
}

/// page 0 + free-map pages + free pages + `tree` must be exactly the pages of page.db.
fn assert_partition(k: &Kernel, tree: &[PageId]) {
    let mut used = vec![0u64];
    used.extend(k.free_map_page_ids());
    used.extend(k.free_page_ids());
    used.extend(tree);
    used.sort_unstable();
    let all: Vec<u64> = (0..k.page_count()).collect();
    assert_eq!(used, all, "page leak or double use");
}

fn append_batch(k: &Kernel, vl: usize, keys: std::ops::Range<u64>) {
    let mut tx = k.begin().unwrap();
    let mut root = tx.root(SLOT);
    for key in keys {
        root = btree::insert(&mut tx, root, vl, key, &value(vl, key)).unwrap();
    }
    tx.set_root(SLOT, root).unwrap();
    tx.commit(Durability::Async).unwrap();
}

#[test]
fn broker_pattern_keeps_leaves_full_and_returns_every_page() {
    const N: u64 = 200_000;
    const BATCH: u64 = 100;
    let vl = 16;
    let sim = SimFs::new();
    let k = open(&sim, 2048);
    new_tree(&k, vl);
    let t = Instant::now();
    for b in 0..N / BATCH {
        append_batch(&k, vl, b * BATCH..(b + 1) * BATCH);
        if b % 500 == 499 {
            k.checkpoint().unwrap();
        }
    }
    let append_secs = t.elapsed().as_secs_f64();
    let s = check(&k, vl);
    assert_eq!(s.entries, N);
    let cap = leaf_capacity(2048, vl) as u64;
    // 100/0 splits at the right edge: every leaf but the last is full.
    assert_eq!(s.leaves, N.div_ceil(cap), "{s:?}");
    assert!(s.branches <= s.leaves / 100 + 2, "{s:?}");
    assert_partition(&k, &s.pages);
    let peak_pages = s.pages.len();

    let t = Instant::now();
    let mut next = 0u64;
    let mut batches = 0u64;
    while next < N {
        let mut tx = k.begin().unwrap();
        let mut root = tx.root(SLOT);
        for _ in 0..BATCH {
            // Consumption: take the first entry, as a broker would.
            let (key, v) = btree::first(&mut tx, root, vl).unwrap().unwrap();
            assert_eq!((key, v.as_slice()), (next, value(vl, next).as_slice()));
            let (r, removed) = btree::remove(&mut tx, root, vl, key).unwrap();
            assert!(removed.is_some());
            root = r;
            next += 1;
        }
        tx.set_root(SLOT, root).unwrap();
        tx.commit(Durability::Async).unwrap();
        batches += 1;
        if batches % 500 == 0 {
            k.checkpoint().unwrap();
            let s = check(&k, vl);
            assert_eq!(s.entries, N - next);
            // Emptied pages are freed as consumption passes them.
            assert!(
                s.pages.len() <= ((N - next).div_ceil(cap) as usize) * 102 / 100 + 3,
                "{} pages for {} entries",
                s.pages.len(),
                N - next
            );
            assert_partition(&k, &s.pages);
        }
    }
    let remove_secs = t.elapsed().as_secs_f64();
    let s = check(&k, vl);
    assert_eq!(s.entries, 0);
    assert_eq!(s.pages.len(), 1, "an empty tree is its root leaf: {s:?}");
    assert_eq!(s.pages[0], k.root(SLOT));
    assert_partition(&k, &s.pages);
    println!(
        "broker pattern, 2 KiB pages, {vl}-byte values: {N} appends in {append_secs:.2}s \
         ({:.0}/s, batches of {BATCH}), {N} removes from the left in {remove_secs:.2}s \
         ({:.0}/s); peak tree pages {peak_pages}",
        N as f64 / append_secs,
        N as f64 / remove_secs
    );

    // Steady state: the queue stays short while keys keep growing; pages do not pile up.
    let mut head = N;
    let mut tail = N;
    for round in 0..400u64 {
        append_batch(&k, vl, tail..tail + BATCH);
        tail += BATCH;
        if round >= 5 {
            let mut tx = k.begin().unwrap();
            let mut root = tx.root(SLOT);
            for key in head..head + BATCH {
                let (r, removed) = btree::remove(&mut tx, root, vl, key).unwrap();
                assert!(removed.is_some());
                root = r;
            }
            head += BATCH;
            tx.set_root(SLOT, root).unwrap();
            tx.commit(Durability::Async).unwrap();
        }
    }
    let s = check(&k, vl);
    assert_eq!(s.entries, tail - head);
    assert!(s.pages.len() <= 8, "{s:?}");
    assert_partition(&k, &s.pages);
}

#[test]
fn destroy_frees_every_page_and_visits_every_entry_once() {
    let vl = 8;
    let sim = SimFs::new();
    let k = open(&sim, 2048);
    new_tree(&k, vl);
    for b in 0..100u64 {
        append_batch(&k, vl, b * 1000..(b + 1) * 1000);
    }
    // Some random removals and inserts between existing keys, so 50/50 splits and sparse
    // leaves are part of what destroy walks.
    {
        let mut tx = k.begin().unwrap();
        let mut root = tx.root(SLOT);
        for i in 0..5000u64 {
            let key = (i * 7919) % 100_000;
            root = btree::remove(&mut tx, root, vl, key).unwrap().0;
            root = btree::insert(&mut tx, root, vl, key, &value(vl, key)).unwrap();
        }
        tx.set_root(SLOT, root).unwrap();
        tx.commit(Durability::Async).unwrap();
    }
    let s = check(&k, vl);
    assert_eq!(s.entries, 100_000);
    assert!(s.depth >= 2);
    assert_partition(&k, &s.pages);

    let root0 = k.root(SLOT);
    // A dropped destroy changes nothing.
    {
        let mut tx = k.begin().unwrap();
        btree::destroy(&mut tx, root0, vl, |_, _| {}).unwrap();
    }
    assert_eq!(check(&k, vl), s);

    let mut tx = k.begin().unwrap();
    let mut seen = Vec::with_capacity(100_000);
    btree::destroy(&mut tx, root0, vl, |key, v| {
        assert_eq!(v, value(vl, key).as_slice());
        seen.push(key);
    })
    .unwrap();
    tx.set_root(SLOT, 0).unwrap();
    tx.commit(Durability::Async).unwrap();
    assert_eq!(seen, (0..100_000).collect::<Vec<u64>>());
    assert_partition(&k, &[]);
}

/// Writes `bytes` at `offset` of page `id` inside `tx` (the header stays; the commit would
/// reseal the CRC, so only the tree's own checks can catch this).
fn scribble(tx: &mut WriteTxn<'_>, id: PageId, offset: usize, bytes: &[u8]) {
    tx.page_mut(id).unwrap()[offset..offset + bytes.len()].copy_from_slice(bytes);
}

fn is_corruption<T: std::fmt::Debug>(r: stowage::Result<T>, what: &str) {
    match r {
        Err(Error::Corruption { file, location, .. }) => {
            assert_eq!(file, "page.db", "{what}");
            assert!(location.starts_with("page "), "{what}: {location}");
        }
        other => panic!("{what}: expected corruption, got {other:?}"),
    }
}

fn page_type(src: &mut impl PageSource, id: PageId) -> u8 {
    src.with_page(id, |p| p[0]).unwrap()
}

/// A three-level tree of 8-byte values, with its leaves and branches in key order.
fn corrupt_fixture() -> (SimFs, Kernel, Vec<PageId>, Vec<PageId>) {
    let sim = SimFs::new();
    let k = open(&sim, 2048);
    new_tree(&k, 8);
    for b in 0..20u64 {
        append_batch(&k, 8, b * 1000..(b + 1) * 1000);
    }
    let s = check(&k, 8);
    assert_eq!(s.depth, 3);
    let mut view = k.read_view().unwrap();
    let (mut leaves, mut branches) = (Vec::new(), Vec::new());
    for &p in &s.pages {
        if page_type(&mut view, p) == PageType::Leaf as u8 {
            leaves.push(p);
        } else {
            branches.push(p);
        }
    }
    drop(view);
    (sim, k, leaves, branches)
}

fn first_key_of(src: &mut impl PageSource, leaf: PageId) -> u64 {
    src.with_page(leaf, |p| u64::from_le_bytes(p[34..42].try_into().unwrap()))
        .unwrap()
}

#[test]
fn garbage_in_leaves_and_branches_is_corruption_not_a_panic() {
    let (_sim, k, leaves, branches) = corrupt_fixture();
    let vl = 8;
    let root = k.root(SLOT);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for round in 0..60 {
        let target = if round % 2 == 0 {
            leaves[(round * 37) % leaves.len()]
        } else {
            branches[(round * 11) % branches.len()]
        };
        let mut tx = k.begin().unwrap();
        // A key routed through the target page.
        let key = if round % 2 == 0 {
            first_key_of(&mut tx, target)
        } else {
            // Any leaf under the branch: take the first leaf reached from its child 0.
            let mut id = target;
            while page_type(&mut tx, id) == PageType::Branch as u8 {
                id = tx
                    .with_page(id, |p| u64::from_le_bytes(p[18..26].try_into().unwrap()))
                    .unwrap();
            }
            first_key_of(&mut tx, id)
        };
        let size = tx.page_size();
        let garbage: Vec<u8> = (16..size)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        scribble(&mut tx, target, 16, &garbage);
        is_corruption(btree::get(&mut tx, root, vl, key), "get");
        is_corruption(
            btree::range(&mut tx, root, vl, key, usize::MAX, |_, _| {}),
            "range",
        );
        is_corruption(btree::check(&mut tx, root, vl), "check");
        drop(tx);
    }
    // Committed garbage read through a read view.
    let leaf = leaves[leaves.len() / 2];
    let key = {
        let mut view = k.read_view().unwrap();
        first_key_of(&mut view, leaf)
    };
    let mut tx = k.begin().unwrap();
    scribble(&mut tx, leaf, 16, &[0xff; 64]);
    tx.commit(Durability::Async).unwrap();
    let mut view = k.read_view().unwrap();
    is_corruption(btree::get(&mut view, root, vl, key), "get (committed)");
    is_corruption(
        btree::range(&mut view, root, vl, 0, usize::MAX, |_, _| {}),
        "range (committed)",
    );
    is_corruption(btree::check(&mut view, root, vl), "check (committed)");
    // first/last do not pass the damaged middle leaf.
    assert_eq!(
        btree::first(&mut view, root, vl).unwrap().map(|e| e.0),
        Some(0)
    );
}

#[test]
fn targeted_damage_is_named_corruption() {
    let (_sim, k, leaves, branches) = corrupt_fixture();
    let vl = 8;
    let root = k.root(SLOT);
    assert_eq!(branches[0], root);
    let mid_leaf = leaves[leaves.len() / 2];
    let mid_key = {
        let mut view = k.read_view().unwrap();
        first_key_of(&mut view, mid_leaf)
    };
    let (last_leaf, first_leaf) = (leaves[leaves.len() - 1], leaves[0]);
    type Damage = Box<dyn Fn(&mut WriteTxn<'_>)>;
    let b1 = branches[1];
    // (name, damage, a key whose descent meets the damage, whether point operations on it
    // must fail: damage to the leaf chain is off their path)
    let cases: Vec<(&str, Damage, u64, bool)> = vec![
        (
            "root branch count 0",
            Box::new(move |tx| scribble(tx, root, 16, &0u16.to_le_bytes())),
            mid_key,
            true,
        ),
        (
            "root branch count beyond capacity",
            Box::new(move |tx| scribble(tx, root, 16, &5000u16.to_le_bytes())),
            mid_key,
            true,
        ),
        (
            "root child 0 is page 0",
            Box::new(move |tx| scribble(tx, root, 18, &0u64.to_le_bytes())),
            0,
            true,
        ),
        (
            "root type byte says data page",
            Box::new(move |tx| scribble(tx, root, 0, &[PageType::Data as u8])),
            mid_key,
            true,
        ),
        (
            "root type byte says leaf",
            Box::new(move |tx| scribble(tx, root, 0, &[PageType::Leaf as u8])),
            0,
            false,
        ),
        (
            "leaf count beyond capacity",
            Box::new(move |tx| scribble(tx, mid_leaf, 16, &u16::MAX.to_le_bytes())),
            mid_key,
            true,
        ),
        (
            "leaf keys out of order",
            Box::new(move |tx| scribble(tx, mid_leaf, 34, &u64::MAX.to_le_bytes())),
            mid_key,
            true,
        ),
        (
            "leaf type byte says overflow",
            Box::new(move |tx| scribble(tx, mid_leaf, 0, &[PageType::Overflow as u8])),
            mid_key,
            true,
        ),
        (
            "cyclic next link (last leaf to first)",
            Box::new(move |tx| scribble(tx, last_leaf, 18, &first_leaf.to_le_bytes())),
            0,
            false,
        ),
        (
            "next link to itself",
            Box::new(move |tx| scribble(tx, mid_leaf, 18, &mid_leaf.to_le_bytes())),
            mid_key,
            false,
        ),
        (
            "branch child points back at the root",
            Box::new(move |tx| scribble(tx, b1, 18, &root.to_le_bytes())),
            0,
            true,
        ),
        (
            "branch child points at a leaf of another range",
            // Child 1 of the root now points at the first leaf (keys far below its range).
            Box::new(move |tx| scribble(tx, root, 34, &first_leaf.to_le_bytes())),
            19_999,
            true,
        ),
        (
            "branch child beyond the file",
            Box::new(move |tx| scribble(tx, root, 18, &(1u64 << 40).to_le_bytes())),
            0,
            true,
        ),
    ];
    for (name, damage, probe, point_fails) in cases {
        let mut tx = k.begin().unwrap();
        damage(&mut tx);
        is_corruption(btree::check(&mut tx, root, vl), name);
        is_corruption(
            btree::range(&mut tx, root, vl, probe, usize::MAX, |_, _| {}),
            name,
        );
        if point_fails {
            is_corruption(btree::get(&mut tx, root, vl, probe), name);
            is_corruption(btree::update(&mut tx, root, vl, probe, &[0; 8]), name);
            is_corruption(btree::remove(&mut tx, root, vl, probe), name);
            is_corruption(btree::insert(&mut tx, root, vl, probe + 1, &[0; 8]), name);
        }
        drop(tx);
    }
    // Nothing was committed: the tree is intact.
    assert_eq!(check(&k, vl).entries, 20_000);
}

#[test]
fn invalid_arguments_are_refused() {
    let sim = SimFs::new();
    let k = open(&sim, 2048);
    let mut tx = k.begin().unwrap();
    assert!(matches!(
        btree::create(&mut tx, 0),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        btree::create(&mut tx, 97),
        Err(Error::InvalidArgument { .. })
    ));
    let root = btree::create(&mut tx, 4).unwrap();
    let root = btree::insert(&mut tx, root, 4, 1, &[1; 4]).unwrap();
    assert!(matches!(
        btree::insert(&mut tx, root, 4, 2, &[1; 5]),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        btree::insert(&mut tx, root, 4, 1, &[2; 4]),
        Err(Error::InvalidArgument { .. })
    ));
    assert_eq!(btree::get(&mut tx, root, 4, 1).unwrap(), Some(vec![1; 4]));
    assert!(!btree::update(&mut tx, root, 4, 9, &[3; 4]).unwrap());
    assert_eq!(btree::remove(&mut tx, root, 4, 9).unwrap(), (root, None));
    assert_eq!(
        btree::remove(&mut tx, root, 4, 1).unwrap(),
        (root, Some(vec![1; 4]))
    );
    // The last entry gone: the root is an empty leaf, still there.
    let s = btree::check(&mut tx, root, 4).unwrap();
    assert_eq!((s.entries, s.leaves, s.pages.clone()), (0, 1, vec![root]));
    assert_eq!(btree::first(&mut tx, root, 4).unwrap(), None);
    assert_eq!(btree::last(&mut tx, root, 4).unwrap(), None);
}

/// Value lengths 1 and 96 on 2 KiB and 64 KiB pages: appends, random removals and inserts
/// between keys (50/50 splits), lookups, ranges, then the left edge drained to empty.
#[test]
fn value_lengths_and_page_sizes() {
    for (page_size, vl) in [(2048u32, 1usize), (2048, 96), (65536, 1), (65536, 96)] {
        let sim = SimFs::new();
        let k = open(&sim, page_size);
        new_tree(&k, vl);
        let cap = leaf_capacity(page_size as usize, vl) as u64;
        // Enough for at least two levels, in even keys so odd ones can go in between.
        let n = (cap * 3).max(20_000);
        let mut model = BTreeMap::new();
        let mut key = 0;
        while key < n * 2 {
            let mut tx = k.begin().unwrap();
            let mut root = tx.root(SLOT);
            for _ in 0..500 {
                root = btree::insert(&mut tx, root, vl, key, &value(vl, key)).unwrap();
                model.insert(key, value(vl, key));
                key += 2;
            }
            tx.set_root(SLOT, root).unwrap();
            tx.commit(Durability::Async).unwrap();
        }
        let s = check(&k, vl);
        assert_eq!(s.entries, model.len() as u64);
        assert!(s.depth >= 2, "{page_size}/{vl}: {s:?}");
        assert_eq!(
            s.leaves,
            (model.len() as u64).div_ceil(cap),
            "{page_size}/{vl}"
        );
        assert_partition(&k, &s.pages);

        let mut tx = k.begin().unwrap();
        let mut root = tx.root(SLOT);
        let mut x: u64 = 88_172_645_463_325_252;
        for _ in 0..3000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = x % (n * 2);
            if key % 2 == 1 {
                if let std::collections::btree_map::Entry::Vacant(e) = model.entry(key) {
                    let v = value(vl, key.wrapping_mul(3));
                    root = btree::insert(&mut tx, root, vl, key, &v).unwrap();
                    e.insert(v);
                }
            } else {
                let (r, v) = btree::remove(&mut tx, root, vl, key).unwrap();
                root = r;
                assert_eq!(v, model.remove(&key));
            }
            let probe = x.rotate_left(17) % (n * 2);
            assert_eq!(
                btree::get(&mut tx, root, vl, probe).unwrap().as_ref(),
                model.get(&probe)
            );
        }
        tx.set_root(SLOT, root).unwrap();
        tx.commit(Durability::Async).unwrap();
        let s = check(&k, vl);
        assert_eq!(s.entries, model.len() as u64);
        assert_partition(&k, &s.pages);
        let mut view = k.read_view().unwrap();
        let from = n / 3;
        let mut got = Vec::new();
        btree::range(&mut view, root, vl, from, 1000, |k, v| {
            got.push((k, v.to_vec()))
        })
        .unwrap();
        let want: Vec<_> = model
            .range(from..)
            .take(1000)
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        assert_eq!(got, want);
        let first = model.iter().next().map(|(k, v)| (*k, v.clone()));
        let last = model.iter().next_back().map(|(k, v)| (*k, v.clone()));
        assert_eq!(btree::first(&mut view, root, vl).unwrap(), first);
        assert_eq!(btree::last(&mut view, root, vl).unwrap(), last);
        drop(view);

        // Drain from the left.
        while !model.is_empty() {
            let mut tx = k.begin().unwrap();
            let mut root = tx.root(SLOT);
            for _ in 0..1000 {
                let Some((&key, _)) = model.iter().next() else {
                    break;
                };
                let (r, v) = btree::remove(&mut tx, root, vl, key).unwrap();
                root = r;
                assert_eq!(v, model.remove(&key));
            }
            tx.set_root(SLOT, root).unwrap();
            tx.commit(Durability::Async).unwrap();
        }
        let s = check(&k, vl);
        assert_eq!((s.entries, s.pages.len()), (0, 1));
        assert_partition(&k, &s.pages);
    }
}

/// Shrink's index relocation in small slices: a tree built above a block of filler pages
/// moves below them a few leaves per transaction, and after every commit the tree is valid
/// (links and all) and holds the same entries.
#[test]
fn relocate_in_slices_moves_every_page_below_the_limit_and_keeps_the_tree_valid() {
    let sim = SimFs::new();
    let k = open(&sim, 2048);
    let vl = 27;
    let mut tx = k.begin().unwrap();
    let fillers: Vec<PageId> = (0..300)
        .map(|_| tx.allocate(PageType::Raw).unwrap())
        .collect();
    tx.commit(Durability::Sync).unwrap();
    let root = new_tree(&k, vl);
    let mut root = root;
    for chunk in 0..30u64 {
        let mut tx = k.begin().unwrap();
        for key in chunk * 100..chunk * 100 + 100 {
            root = btree::insert(&mut tx, root, vl, key, &value(vl, key)).unwrap();
        }
        tx.set_root(SLOT, root).unwrap();
        tx.commit(Durability::Sync).unwrap();
    }
    let mut tx = k.begin().unwrap();
    for f in fillers {
        tx.free(f).unwrap();
    }
    tx.commit(Durability::Sync).unwrap();
    let before = btree::check(&mut k.read_view().unwrap(), root, vl).unwrap();
    let limit = before.pages.iter().min().copied().unwrap();
    assert!(limit > 250, "the tree sits above the fillers");
    let mut from = 0;
    let mut calls = 0;
    let mut moved = 0;
    loop {
        let mut tx = k.begin().unwrap();
        let r = btree::relocate(&mut tx, root, vl, limit, from, 2, 3).unwrap();
        root = r.root;
        moved += r.moved;
        tx.set_root(SLOT, root).unwrap();
        tx.commit(Durability::Sync).unwrap();
        calls += 1;
        let mut view = k.read_view().unwrap();
        let now = btree::check(&mut view, root, vl).unwrap();
        assert_eq!(now.entries, 3000, "call {calls}");
        match r.resume {
            Some(key) => from = key,
            None => break,
        }
    }
    assert!(calls > 5, "{calls} slices");
    let after = btree::check(&mut k.read_view().unwrap(), root, vl).unwrap();
    assert_eq!(moved, before.pages.len() as u64);
    assert!(after.pages.iter().all(|&p| p < limit), "{:?}", after.pages);
    let mut got = Vec::new();
    btree::range(
        &mut k.read_view().unwrap(),
        root,
        vl,
        0,
        usize::MAX,
        |key, v| got.push((key, v.to_vec())),
    )
    .unwrap();
    let want: Vec<(u64, Vec<u8>)> = (0..3000).map(|key| (key, value(vl, key))).collect();
    assert_eq!(got, want);
}
