//! The process-kill harness on real files: this test binary re-runs itself as a child that
//! commits in a loop (Sync) and prints each acknowledged commit; the parent SIGKILLs it at
//! a random moment and verifies on the real directory that every acknowledged commit is
//! there, whole, and that the page accounting is intact. Each run continues the same
//! store, so recovery after recovery is exercised.
//!
//! Each commit `n` rewrites the state page (root 0) with `n` and a pattern of `n`,
//! allocates a page filled with `n`, and frees the page of commit `n - RING`: commits,
//! growth, frees and (with a 1 MiB checkpoint size) checkpoints all run while killed.

use std::path::Path;
use std::sync::Arc;

mod support;

use stowage::file::RealFs;
use stowage::kernel::Kernel;
use stowage::page::{PageId, PageType};
use stowage::{Durability, StoreConfig};
use support::kill;

const CHILD_ENV: &str = "STOWAGE_KILL_CHILD_DIR";
const RING: usize = 32;
const RUNS: usize = 20;

fn config() -> StoreConfig {
    StoreConfig {
        page_size: 4096,
        initial_db_size_pages: 64,
        cache_min_pages: 512,
        cache_max_pages: 512,
        checkpoint_size: 1 << 20,
        ..StoreConfig::default()
    }
}

/// State page: header(16) | n u64 | ring len u32 | ring ids u64 x RING | fill byte n.
struct State {
    n: u64,
    ring: Vec<PageId>,
}

fn decode_state(p: &[u8]) -> State {
    let n = u64::from_le_bytes(p[16..24].try_into().unwrap());
    let len = u32::from_le_bytes(p[24..28].try_into().unwrap()) as usize;
    let ring = (0..len)
        .map(|i| u64::from_le_bytes(p[28 + i * 8..36 + i * 8].try_into().unwrap()))
        .collect();
    State { n, ring }
}

const FILL_AT: usize = 28 + RING * 8;

fn encode_state(p: &mut [u8], s: &State) {
    p[16..24].copy_from_slice(&s.n.to_le_bytes());
    p[24..28].copy_from_slice(&(s.ring.len() as u32).to_le_bytes());
    for (i, id) in s.ring.iter().enumerate() {
        p[28 + i * 8..36 + i * 8].copy_from_slice(&id.to_le_bytes());
    }
    p[FILL_AT..].fill(s.n as u8);
}

fn read_state(k: &Kernel) -> Option<State> {
    let root = k.root(0);
    (root != 0).then(|| decode_state(&k.read(root).unwrap().read()))
}

/// The child: commit forever, printing `ACK n` after each Sync commit returns.
fn child(dir: &Path) -> ! {
    let k = Kernel::open(Arc::new(RealFs::new()), dir, &config()).unwrap();
    let mut state = read_state(&k).unwrap_or(State {
        n: 0,
        ring: Vec::new(),
    });
    loop {
        let n = state.n + 1;
        let mut tx = k.begin().unwrap();
        let mut root = tx.root(0);
        if root == 0 {
            root = tx.allocate(PageType::Raw).unwrap();
            tx.set_root(0, root).unwrap();
        }
        let page = tx.allocate(PageType::Raw).unwrap();
        tx.page_mut(page).unwrap()[16..].fill(n as u8);
        let mut ring = state.ring.clone();
        ring.push(page);
        if ring.len() > RING {
            let old = ring.remove(0);
            tx.free(old).unwrap();
        }
        let next = State { n, ring };
        encode_state(tx.page_mut(root).unwrap(), &next);
        tx.commit(Durability::Sync).unwrap();
        println!("ACK {n}");
        state = next;
    }
}

/// Checks the store after a kill; returns the committed count.
fn verify(dir: &Path, acked: u64) -> u64 {
    let k = Kernel::open(Arc::new(RealFs::new()), dir, &config())
        .unwrap_or_else(|e| panic!("reopen after kill failed: {e}"));
    let Some(state) = read_state(&k) else {
        assert_eq!(acked, 0, "acknowledged commits vanished");
        return 0;
    };
    assert!(
        state.n >= acked,
        "commit {acked} was acknowledged, store has {}",
        state.n
    );
    let root = k.read(k.root(0)).unwrap();
    assert!(
        root.read()[FILL_AT..].iter().all(|&b| b == state.n as u8),
        "state page of commit {} is partly from another commit",
        state.n
    );
    let first = state.n + 1 - state.ring.len() as u64;
    for (i, &id) in state.ring.iter().enumerate() {
        let want = (first + i as u64) as u8;
        let p = k.read(id).unwrap();
        assert!(p.read()[16..].iter().all(|&b| b == want), "ring page {id}");
    }
    let mut used: Vec<u64> = vec![0, k.root(0)];
    used.extend(&state.ring);
    used.extend(k.free_page_ids());
    used.extend(k.free_map_page_ids());
    used.sort_unstable();
    assert_eq!(
        used,
        (0..k.page_count()).collect::<Vec<_>>(),
        "page leak or double use"
    );
    k.close().unwrap();
    state.n
}

#[test]
fn sigkill_while_committing_loses_no_acknowledged_commit() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(Path::new(&dir));
    }
    let dir = tempfile::tempdir().unwrap();
    let mut delays = kill::Delays::from_env();
    let mut total = 0;
    for run in 0..RUNS {
        let delay = delays.next(30, 300);
        let lines = kill::run_and_kill(
            "sigkill_while_committing_loses_no_acknowledged_commit",
            &[(CHILD_ENV, dir.path().display().to_string())],
            delay,
        );
        let acked = kill::parse(&lines)
            .into_iter()
            .filter(|(w, _)| w == "ACK")
            .map(|(_, n)| n)
            .max()
            .unwrap_or(0);
        let n = verify(dir.path(), acked);
        println!("run {run}: killed after {delay:?}, acked {acked}, store has {n}");
        total = n;
    }
    assert!(total > 0, "the child never committed");
}
