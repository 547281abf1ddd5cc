//! Message payload storage (`records`): round trips at every size boundary, packing of small
//! payloads, page reuse under FIFO churn and random deletion, corruption of data and overflow
//! pages, and a model-based proptest with exact page accounting.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use stowage::file::SimFs;
use stowage::kernel::{Kernel, OpenOptions, PageSource};
use stowage::page::{PageId, PageType};
use stowage::records::{
    self, check_page, max_small_payload, overflow_capacity, PayloadLoc, OVERFLOW_DATA,
};
use stowage::{Durability, Error, StoreConfig};

const PS: usize = 2048;

fn config() -> StoreConfig {
    StoreConfig {
        page_size: PS as u32,
        cache_min_pages: 512,
        cache_max_pages: 2048,
        // Small, so that `page_count` measures what the payloads use (the default
        // preallocates 25,600 pages), and a small log.
        initial_db_size_pages: 64,
        checkpoint_size: 1 << 20,
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

/// Deterministic bytes (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut r = Rng(seed);
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        let w = r.next().to_le_bytes();
        let n = (len - v.len()).min(8);
        v.extend_from_slice(&w[..n]);
    }
    v
}

/// Pages in use by anything but the free-space map and page 0.
fn used_pages(k: &Kernel) -> u64 {
    k.page_count() - k.free_page_ids().len() as u64 - k.free_map_page_ids().len() as u64 - 1
}

fn is_free(k: &Kernel, id: PageId) -> bool {
    k.free_page_ids().binary_search(&id).is_ok()
}

#[track_caller]
fn assert_corruption<T: std::fmt::Debug>(r: stowage::Result<T>, page: PageId) -> String {
    match r {
        Err(Error::Corruption {
            file,
            location,
            detail,
        }) => {
            assert_eq!(file, "page.db");
            assert_eq!(location, format!("page {page}"), "{detail}");
            detail
        }
        other => panic!("expected corruption of page {page}, got {other:?}"),
    }
}

/// A change that damages a page.
type Damage = Box<dyn Fn(&mut [u8])>;

fn write_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
fn write_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn write_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn round_trips_every_size_boundary_in_the_transaction_and_after_reopen() {
    let small = max_small_payload(PS);
    let cap = overflow_capacity(PS);
    assert_eq!(small, PS - 28);
    let sizes = [
        0,
        1,
        small - 1,
        small,
        small + 1,
        PS - 1,
        PS,
        PS + 1,
        3 * cap,
        3 * cap + 1,
        16 << 20,
    ];
    let sim = SimFs::new();
    let k = open(&sim);
    let base_used = used_pages(&k);
    let mut open_page = 0;
    let mut locs = Vec::new();
    let mut tx = k.begin().unwrap();
    for (i, &n) in sizes.iter().enumerate() {
        let data = payload(i as u64, n);
        let loc = records::store(&mut tx, &mut open_page, &data).unwrap();
        let pages = if n == 0 {
            0
        } else if n <= small {
            1
        } else {
            n.div_ceil(cap)
        };
        assert_eq!(loc.is_overflow(), n > small, "size {n}");
        assert_eq!(n == 0, loc == PayloadLoc::EMPTY, "size {n}");
        assert_eq!(
            records::pages_of(&mut tx, loc).unwrap().len(),
            pages,
            "size {n}"
        );
        assert_eq!(PayloadLoc::decode(&loc.encode()), Some(loc));
        assert_eq!(
            records::load(&mut tx, loc, n as u32).unwrap(),
            data,
            "size {n}"
        );
        locs.push((loc, data));
    }
    tx.commit(Durability::Async).unwrap();
    let check = |k: &Kernel| {
        let mut view = k.read_view().unwrap();
        for (loc, data) in &locs {
            let got = records::load(&mut view, *loc, data.len() as u32).unwrap();
            assert_eq!(&got, data, "size {}", data.len());
            // One exact allocation: no regrowth copies of a 16 MiB payload.
            assert_eq!(got.capacity(), data.len());
            if !data.is_empty() {
                let lie = records::load(&mut view, *loc, data.len() as u32 - 1);
                assert!(matches!(lie, Err(Error::Corruption { .. })), "{lie:?}");
                let lie = records::load(&mut view, *loc, data.len() as u32 + 1);
                assert!(matches!(lie, Err(Error::Corruption { .. })), "{lie:?}");
                let lie = records::load(&mut view, *loc, 0);
                assert!(matches!(lie, Err(Error::Corruption { .. })), "{lie:?}");
            }
        }
    };
    check(&k);
    drop(k);
    let k = open(&sim);
    check(&k);
    let mut tx = k.begin().unwrap();
    for (loc, _) in &locs {
        records::delete(&mut tx, &mut open_page, *loc).unwrap();
    }
    assert_eq!(open_page, 0);
    tx.commit(Durability::Async).unwrap();
    assert_eq!(
        used_pages(&k),
        base_used,
        "every page of every payload freed"
    );
}

#[test]
fn small_payloads_share_pages() {
    let sim = SimFs::new();
    let k = open(&sim);
    let base = used_pages(&k);
    let mut open_page = 0;
    let mut tx = k.begin().unwrap();
    let locs: Vec<_> = (0..1000)
        .map(|i| records::store(&mut tx, &mut open_page, &payload(i, 100)).unwrap())
        .collect();
    tx.commit(Durability::Async).unwrap();
    let pages: HashSet<PageId> = locs.iter().map(|l| l.page).collect();
    // 104 bytes per payload with its slot, 2048 - 24 bytes per page: 19 per page.
    let ideal = (1000 * 104usize).div_ceil(PS - 24) as u64;
    assert!(
        (ideal..=ideal + 1).contains(&(pages.len() as u64)),
        "{} pages, ideal {ideal}",
        pages.len()
    );
    assert_eq!(used_pages(&k) - base, pages.len() as u64);
    let mut view = k.read_view().unwrap();
    let mut live = 0;
    for &p in &pages {
        let s = view.with_page(p, |b| check_page(p, b)).unwrap().unwrap();
        assert_eq!(s.dead_bytes, 0);
        live += u32::from(s.live);
    }
    assert_eq!(live, 1000);
    for (i, loc) in locs.iter().enumerate() {
        assert_eq!(
            records::load(&mut view, *loc, 100).unwrap(),
            payload(i as u64, 100)
        );
    }
}

#[test]
fn fifo_churn_keeps_the_file_near_the_live_size_and_returns_every_page() {
    // 1000-byte payloads: two share a 2 KiB page (1 KiB ones would each fill a page alone).
    const LIVE: usize = 1000;
    const LEN: usize = 1000;
    const PER_TX: usize = 10;
    let sim = SimFs::new();
    let k = open(&sim);
    let base_used = used_pages(&k);
    let mut open_page = 0;
    let mut queue = std::collections::VecDeque::new();
    let mut seq = 0u64;
    let mut tx = k.begin().unwrap();
    for _ in 0..LIVE {
        let loc = records::store(&mut tx, &mut open_page, &payload(seq, LEN)).unwrap();
        queue.push_back((seq, loc));
        seq += 1;
    }
    tx.commit(Durability::Async).unwrap();
    let live_pages = (LIVE / 2) as u64;
    let mut max_used = 0;
    let mut max_count = 0;
    let mut ever_used = HashSet::new();
    for round in 0..20_000 / PER_TX {
        let mut tx = k.begin().unwrap();
        for _ in 0..PER_TX {
            let loc = records::store(&mut tx, &mut open_page, &payload(seq, LEN)).unwrap();
            queue.push_back((seq, loc));
            seq += 1;
            let (old, loc) = queue.pop_front().unwrap();
            if old % 97 == 0 {
                assert_eq!(
                    records::load(&mut tx, loc, LEN as u32).unwrap(),
                    payload(old, LEN)
                );
            }
            records::delete(&mut tx, &mut open_page, loc).unwrap();
        }
        tx.commit(Durability::Async).unwrap();
        if round % 100 == 99 {
            k.checkpoint().unwrap();
        }
        // Exactly the pages of live payloads are in use: every freed page went back.
        let live: HashSet<PageId> = queue.iter().map(|(_, l)| l.page).collect();
        ever_used.extend(live.iter().copied());
        assert_eq!(
            used_pages(&k) - base_used,
            live.len() as u64,
            "round {round}"
        );
        max_used = max_used.max(live.len() as u64);
        max_count = max_count.max(k.page_count());
    }
    eprintln!(
        "churn: live pages {live_pages}, max used {max_used}, max file {max_count}, distinct {}",
        ever_used.len()
    );
    assert!(max_used <= live_pages + 1, "{max_used} pages used");
    assert!(
        max_count <= 2 * live_pages + 128,
        "file grew to {max_count} pages for {live_pages} pages of live data"
    );
    // Freed pages were reused: 21,000 payloads went through few distinct pages.
    assert!(
        ever_used.len() as u64 <= 2 * live_pages,
        "{} distinct pages",
        ever_used.len()
    );
    let mut tx = k.begin().unwrap();
    for (s, loc) in queue.drain(..) {
        assert_eq!(
            records::load(&mut tx, loc, LEN as u32).unwrap(),
            payload(s, LEN)
        );
        records::delete(&mut tx, &mut open_page, loc).unwrap();
    }
    tx.commit(Durability::Async).unwrap();
    assert_eq!(open_page, 0);
    assert_eq!(used_pages(&k), base_used);
    // Checkpoints rewrite the free-space map into free pages, so some may hold it now.
    let map = k.free_map_page_ids();
    for p in ever_used {
        assert!(is_free(&k, p) || map.contains(&p), "page {p} not returned");
    }
}

#[test]
fn random_deletion_frees_a_page_exactly_with_its_last_payload() {
    let sim = SimFs::new();
    let k = open(&sim);
    let mut open_page = 0;
    let mut tx = k.begin().unwrap();
    // 300 + 4 bytes each: 6 per page, 20 pages.
    let mut locs: Vec<(u64, PayloadLoc)> = (0..120)
        .map(|i| {
            (
                i,
                records::store(&mut tx, &mut open_page, &payload(i, 300)).unwrap(),
            )
        })
        .collect();
    tx.commit(Durability::Async).unwrap();
    let last_page = locs.last().unwrap().1.page;
    assert_eq!(open_page, last_page);
    let mut per_page: HashMap<PageId, usize> = HashMap::new();
    for (_, l) in &locs {
        *per_page.entry(l.page).or_default() += 1;
    }
    assert_eq!(per_page.len(), 20);
    let mut rng = Rng(7);
    while !locs.is_empty() {
        let (i, loc) = locs.swap_remove(rng.below(locs.len() as u64) as usize);
        let mut tx = k.begin().unwrap();
        assert_eq!(records::load(&mut tx, loc, 300).unwrap(), payload(i, 300));
        records::delete(&mut tx, &mut open_page, loc).unwrap();
        tx.commit(Durability::Async).unwrap();
        let left = per_page.get_mut(&loc.page).unwrap();
        *left -= 1;
        for (&p, &n) in &per_page {
            assert_eq!(is_free(&k, p), n == 0, "page {p} with {n} payloads left");
        }
        let expect_open = if per_page[&last_page] == 0 {
            0
        } else {
            last_page
        };
        assert_eq!(open_page, expect_open);
        // The survivors still read back through the slot directory.
        let mut view = k.read_view().unwrap();
        for &(j, l) in locs.iter().take(3) {
            assert_eq!(records::load(&mut view, l, 300).unwrap(), payload(j, 300));
        }
    }
}

#[test]
fn deleting_the_open_pages_last_payload_resets_the_open_page() {
    let sim = SimFs::new();
    let k = open(&sim);
    let mut open_page = 0;
    let mut tx = k.begin().unwrap();
    let a = records::store(&mut tx, &mut open_page, &[1; 500]).unwrap();
    let b = records::store(&mut tx, &mut open_page, &[2; 500]).unwrap();
    tx.commit(Durability::Async).unwrap();
    let page = open_page;
    assert_eq!((a.page, b.page), (page, page));
    let mut tx = k.begin().unwrap();
    records::delete(&mut tx, &mut open_page, a).unwrap();
    assert_eq!(open_page, page, "a page with a live payload stays open");
    // Deleting the same payload again is detected, not a double decrement.
    let again = records::delete(&mut tx, &mut open_page, a);
    assert!(assert_corruption(again, page).contains("deleted"));
    records::delete(&mut tx, &mut open_page, b).unwrap();
    assert_eq!(open_page, 0);
    let c = records::store(&mut tx, &mut open_page, &[3; 10]).unwrap();
    assert_ne!(open_page, 0);
    assert_eq!(c.page, open_page);
    assert_eq!(c.slot, 0, "a fresh page");
    tx.commit(Durability::Async).unwrap();
    assert_ne!(
        c.page, page,
        "the freed page is reusable only after the commit"
    );
    assert!(is_free(&k, page));
    // Within one transaction: a page allocated and drained in it goes straight back.
    let mut tx = k.begin().unwrap();
    let mut open2 = 0;
    let d = records::store(&mut tx, &mut open2, &[4; 10]).unwrap();
    records::delete(&mut tx, &mut open2, d).unwrap();
    assert_eq!(open2, 0);
    assert!(is_free(&k, d.page));
}

#[test]
fn garbage_in_a_data_pages_directory_is_corruption_naming_the_page() {
    let sim = SimFs::new();
    let k = open(&sim);
    let mut open_page = 0;
    let mut tx = k.begin().unwrap();
    let locs: Vec<_> = (0..5)
        .map(|i| records::store(&mut tx, &mut open_page, &payload(i, 100)).unwrap())
        .collect();
    tx.commit(Durability::Async).unwrap();
    let page = open_page;
    let dir_end = 24 + 4 * 5;
    // Chosen lies: each must be detected for the slot it touches.
    let cases: Vec<(&str, Damage, usize)> = vec![
        (
            "offset beyond page",
            Box::new(|b| write_u16(b, 24 + 8, 0xFFF0)),
            2,
        ),
        (
            "offset in directory",
            Box::new(|b| write_u16(b, 24 + 8, 30)),
            2,
        ),
        (
            "huge length",
            Box::new(|b| write_u16(b, 24 + 10, 0x7FFF)),
            2,
        ),
        ("zero length", Box::new(|b| write_u16(b, 24 + 10, 0)), 2),
        ("slot count", Box::new(|b| write_u16(b, 16, 0xFFFF)), 0),
        ("slot count low", Box::new(|b| write_u16(b, 16, 2)), 4),
        ("heap size", Box::new(|b| write_u16(b, 20, 0xFFFF)), 0),
        ("type byte", Box::new(|b| b[0] = PageType::Leaf as u8), 0),
        ("unknown type", Box::new(|b| b[0] = 0xEE), 0),
    ];
    for (what, f, slot) in &cases {
        let mut tx = k.begin().unwrap();
        f(tx.page_mut(page).unwrap());
        let d = assert_corruption(records::load(&mut tx, locs[*slot], 100), page);
        eprintln!("{what}: {d}");
        assert_corruption(records::pages_of(&mut tx, locs[*slot]), page);
        let before = tx.page(page).unwrap().to_vec();
        let mut op = open_page;
        assert_corruption(records::delete(&mut tx, &mut op, locs[*slot]), page);
        assert_eq!(
            tx.page(page).unwrap(),
            &before[..],
            "{what}: failed delete changed the page"
        );
        assert_corruption(check_page(page, &before), page);
        let next = records::store(&mut tx, &mut op, &[9; 10]);
        if *slot == 0 {
            assert_corruption(next, page);
        }
    }
    // Random garbage over the header fields and directory: a payload reads back exactly or
    // the read is corruption naming the page; never a panic, never wrong bytes.
    let mut rng = Rng(42);
    let mut detected = 0;
    for _ in 0..3000 {
        let mut tx = k.begin().unwrap();
        {
            let b = tx.page_mut(page).unwrap();
            for _ in 0..1 + rng.below(3) {
                let at = 16 + rng.below((dir_end - 16) as u64) as usize;
                b[at] = rng.next() as u8;
            }
        }
        for (i, loc) in locs.iter().enumerate() {
            match records::load(&mut tx, *loc, 100) {
                Ok(v) => assert_eq!(v, payload(i as u64, 100)),
                Err(e) => {
                    assert_corruption::<()>(Err(e), page);
                    detected += 1;
                }
            }
            let _ = records::pages_of(&mut tx, *loc);
        }
        let _ = check_page(page, tx.page(page).unwrap());
    }
    assert!(detected > 1000, "{detected}");
    // Committed garbage (re-sealed with a valid CRC) is caught after a reopen too.
    let mut tx = k.begin().unwrap();
    write_u16(tx.page_mut(page).unwrap(), 24 + 2, 5000);
    tx.commit(Durability::Async).unwrap();
    drop(k);
    let k = open(&sim);
    let mut view = k.read_view().unwrap();
    assert_corruption(records::load(&mut view, locs[0], 100), page);
    assert_eq!(
        records::load(&mut view, locs[3], 100).unwrap(),
        payload(3, 100)
    );
}

/// A committed 4-page chain; returns (kernel, loc, len, pages).
fn chain(sim: &SimFs) -> (Kernel, PayloadLoc, usize, Vec<PageId>) {
    let k = open(sim);
    let len = 3 * overflow_capacity(PS) + 10;
    let mut open_page = 0;
    let mut tx = k.begin().unwrap();
    let loc = records::store(&mut tx, &mut open_page, &payload(1, len)).unwrap();
    let pages = records::pages_of(&mut tx, loc).unwrap();
    tx.commit(Durability::Async).unwrap();
    assert_eq!(pages.len(), 4);
    (k, loc, len, pages)
}

#[test]
fn garbage_in_an_overflow_header_is_corruption_naming_the_page() {
    let sim = SimFs::new();
    let (k, loc, len, pages) = chain(&sim);
    let beyond = k.page_count() + 1000;
    let cap = overflow_capacity(PS) as u32;
    for (i, &p) in pages.iter().enumerate() {
        let last = i == pages.len() - 1;
        let mut cases: Vec<(&str, Damage)> = vec![
            ("used 0", Box::new(|b| write_u32(b, 24, 0))),
            (
                "used above capacity",
                Box::new(move |b| write_u32(b, 24, cap + 1)),
            ),
            ("used huge", Box::new(|b| write_u32(b, 24, u32::MAX))),
            ("type data", Box::new(|b| b[0] = PageType::Data as u8)),
            ("type garbage", Box::new(|b| b[0] = 0)),
        ];
        if last {
            cases.push(("continues past the end", Box::new(|b| write_u64(b, 16, 1))));
            cases.push(("last page longer", Box::new(|b| write_u32(b, 24, 11))));
            cases.push(("last page shorter", Box::new(|b| write_u32(b, 24, 9))));
        } else {
            cases.push(("ends early", Box::new(|b| write_u64(b, 16, 0))));
            cases.push(("not full", Box::new(move |b| write_u32(b, 24, cap - 1))));
        }
        for (what, f) in &cases {
            let mut tx = k.begin().unwrap();
            f(tx.page_mut(p).unwrap());
            let d = assert_corruption(records::load(&mut tx, loc, len as u32), p);
            eprintln!("page {i} {what}: {d}");
        }
        // A next pointer beyond the file or to a free page: the error names the target and
        // the page whose pointer led there.
        if !last {
            for target in [beyond, *k.free_page_ids().last().unwrap()] {
                let mut tx = k.begin().unwrap();
                write_u64(tx.page_mut(p).unwrap(), 16, target);
                let d = assert_corruption(records::load(&mut tx, loc, len as u32), target);
                assert!(d.contains(&format!("page {p}")), "{d}");
                let d = assert_corruption(records::pages_of(&mut tx, loc), target);
                assert!(d.contains(&format!("page {p}")), "{d}");
            }
        }
    }
    // The chain is intact after all the rolled-back damage.
    let mut view = k.read_view().unwrap();
    assert_eq!(
        records::load(&mut view, loc, len as u32).unwrap(),
        payload(1, len)
    );
    // A payload the index says is small but whose location names a chain.
    let short = assert_corruption(records::load(&mut view, loc, 100), loc.page);
    assert!(short.contains("never stored"), "{short}");
    // Random garbage over the first page's chain header.
    drop(view);
    let mut rng = Rng(5);
    for _ in 0..2000 {
        let mut tx = k.begin().unwrap();
        {
            let b = tx.page_mut(pages[1]).unwrap();
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(OVERFLOW_DATA as u64) as usize;
                b[at] = rng.next() as u8;
            }
        }
        match records::load(&mut tx, loc, len as u32) {
            Ok(v) => assert_eq!(v, payload(1, len)),
            Err(Error::Corruption { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn a_cyclic_overflow_chain_is_detected() {
    let sim = SimFs::new();
    let (k, loc, len, pages) = chain(&sim);
    // Full pages pointing back: the used counts are all plausible, only the cycle is wrong.
    // The index claims a longer payload, so the length alone does not stop the walk.
    let claimed = 10 * overflow_capacity(PS) as u32;
    for (from, to) in [(2, 0), (1, 1), (0, 0), (2, 1)] {
        let mut tx = k.begin().unwrap();
        write_u64(tx.page_mut(pages[from]).unwrap(), 16, pages[to]);
        let d = assert_corruption(records::load(&mut tx, loc, claimed), pages[to]);
        assert!(d.contains("cycle"), "{d}");
        let d = assert_corruption(records::pages_of(&mut tx, loc), pages[to]);
        assert!(d.contains("cycle"), "{d}");
        let mut op = 0;
        let d = assert_corruption(records::delete(&mut tx, &mut op, loc), pages[to]);
        assert!(d.contains("cycle"), "{d}");
        // Nothing was freed by the failed delete.
        assert!(pages.iter().all(|p| tx.page(*p).is_ok()));
        tx.commit(Durability::Async).unwrap();
        let mut view = k.read_view().unwrap();
        assert!(records::load(&mut view, loc, len as u32).is_err());
        drop(view);
        // Repair for the next case.
        let mut tx = k.begin().unwrap();
        let next = pages.get(from + 1).copied().unwrap_or(0);
        write_u64(tx.page_mut(pages[from]).unwrap(), 16, next);
        tx.commit(Durability::Async).unwrap();
        let mut view = k.read_view().unwrap();
        assert_eq!(
            records::load(&mut view, loc, len as u32).unwrap(),
            payload(1, len)
        );
    }
}

#[derive(Debug, Clone)]
enum Op {
    Store(usize, u64),
    Delete(usize),
    Load(usize),
    Commit,
    Abort,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (prop_oneof![0usize..200, 0usize..2100, 0usize..3 * PS], any::<u64>())
            .prop_map(|(n, s)| Op::Store(n, s)),
        4 => any::<usize>().prop_map(Op::Delete),
        2 => any::<usize>().prop_map(Op::Load),
        2 => Just(Op::Commit),
        1 => Just(Op::Abort),
        1 => Just(Op::Reopen),
    ]
}

type Model = BTreeMap<u64, (PayloadLoc, u64, usize)>;

/// Every committed payload reads back; pages of live payloads + free pages + free-map pages
/// + page 0 are exactly all pages; every data page is valid and holds what the model says.
fn check_committed(k: &Kernel, model: &Model, open_page: PageId) -> Result<(), TestCaseError> {
    let mut view = k.read_view().unwrap();
    let mut data_pages: HashMap<PageId, u16> = HashMap::new();
    let mut chain_pages = HashSet::new();
    for (loc, seed, n) in model.values() {
        prop_assert_eq!(
            records::load(&mut view, *loc, *n as u32).unwrap(),
            payload(*seed, *n)
        );
        let pages = records::pages_of(&mut view, *loc).unwrap();
        if loc.is_overflow() {
            for p in pages {
                prop_assert!(chain_pages.insert(p), "page {} in two chains", p);
            }
        } else {
            for p in pages {
                *data_pages.entry(p).or_default() += 1;
            }
        }
    }
    for (&p, &n) in &data_pages {
        prop_assert!(!chain_pages.contains(&p));
        let s = view.with_page(p, |b| check_page(p, b)).unwrap().unwrap();
        prop_assert_eq!(s.live, n);
    }
    prop_assert!(open_page == 0 || data_pages.contains_key(&open_page));
    drop(view);
    let used: HashSet<PageId> = data_pages.keys().copied().chain(chain_pages).collect();
    let free = k.free_page_ids();
    let map = k.free_map_page_ids();
    for p in free.iter().chain(&map) {
        prop_assert!(!used.contains(p), "page {} both used and free", p);
    }
    prop_assert_eq!(
        used.len() as u64 + free.len() as u64 + map.len() as u64 + 1,
        k.page_count()
    );
    Ok(())
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let sim = SimFs::new();
    let mut k = open(&sim);
    let mut committed: (Model, PageId) = (BTreeMap::new(), 0);
    let (mut model, mut open_page) = committed.clone();
    let mut next_key = 0u64;
    let mut i = 0;
    while i < ops.len() {
        let mut tx = k.begin().unwrap();
        let mut reopen = false;
        while i < ops.len() && !reopen {
            match &ops[i] {
                Op::Store(n, seed) => {
                    let loc = records::store(&mut tx, &mut open_page, &payload(*seed, *n)).unwrap();
                    model.insert(next_key, (loc, *seed, *n));
                    next_key += 1;
                }
                Op::Delete(x) if !model.is_empty() => {
                    let key = *model.keys().nth(x % model.len()).unwrap();
                    let (loc, _, _) = model.remove(&key).unwrap();
                    records::delete(&mut tx, &mut open_page, loc).unwrap();
                }
                Op::Load(x) if !model.is_empty() => {
                    let (loc, seed, n) = *model.values().nth(x % model.len()).unwrap();
                    prop_assert_eq!(
                        records::load(&mut tx, loc, n as u32).unwrap(),
                        payload(seed, n)
                    );
                }
                Op::Delete(_) | Op::Load(_) => {}
                Op::Commit => {
                    tx.commit(Durability::Async).unwrap();
                    committed = (model.clone(), open_page);
                    check_committed(&k, &model, open_page)?;
                    tx = k.begin().unwrap();
                }
                Op::Abort => {
                    drop(tx);
                    (model, open_page) = committed.clone();
                    check_committed(&k, &model, open_page)?;
                    tx = k.begin().unwrap();
                }
                Op::Reopen => reopen = true,
            }
            i += 1;
        }
        tx.commit(Durability::Async).unwrap();
        committed = (model.clone(), open_page);
        if reopen {
            drop(k);
            k = open(&sim);
        }
        check_committed(&k, &model, open_page)?;
    }
    // Deleting everything returns every page.
    let mut tx = k.begin().unwrap();
    for (loc, _, _) in model.values() {
        records::delete(&mut tx, &mut open_page, *loc).unwrap();
    }
    tx.commit(Durability::Async).unwrap();
    prop_assert_eq!(open_page, 0);
    check_committed(&k, &BTreeMap::new(), 0)?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_store_delete_load_matches_a_model_with_exact_page_accounting(
        ops in prop::collection::vec(op(), 1..120)
    ) {
        run(&ops)?;
    }
}
