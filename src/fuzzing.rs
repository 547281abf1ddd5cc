//! Entry points shared by the cargo-fuzz targets (`fuzz/`) and the tests that replay their
//! corpora, so both exercise exactly the same code.
//!
//! Invariant: each function accepts any bytes and returns normally; a panic, a hang or an
//! allocation driven by a length read from the input is a bug.

use std::path::Path;
use std::sync::Arc;

use crate::config::{StoreConfig, MAX_PAGE_SIZE, MIN_PAGE_SIZE};
use crate::file::{FileSystem, SimFs};
use crate::page::{decode_free_map, verify_page, PageType, Superblock, PAGE_HEADER_LEN};
use crate::pagedb::{CommitInfo, PageDb};

/// Decodes `data` as superblocks and pages of every page size, then opens it as a
/// `page.db` on the simulated file layer and, if that succeeds, reads every page, allocates,
/// frees and commits.
pub fn decode_pages(data: &[u8]) {
    let _ = Superblock::choose(data);
    let _ = Superblock::decode(data, 0);
    let mut size = MIN_PAGE_SIZE as usize;
    while size <= MAX_PAGE_SIZE as usize && size <= data.len() {
        if let Ok(h) = verify_page(1, &data[..size]) {
            if h.page_type == PageType::FreeMap {
                let _ = decode_free_map(1, &data[..size]);
            }
        }
        size *= 2;
    }
    let sim = SimFs::new();
    let dir = Path::new("/fuzz");
    sim.write_file_durable(&dir.join("page.db"), data);
    let fs: Arc<dyn FileSystem> = Arc::new(sim);
    let config = StoreConfig {
        initial_db_size_pages: 16,
        ..StoreConfig::default()
    };
    let Ok(db) = PageDb::open(fs, dir, &config) else {
        return;
    };
    let mut buf = vec![0u8; db.page_size()];
    for id in 0..db.page_count().min(256) {
        let _ = db.read_page(id, &mut buf);
    }
    if let Ok(id) = db.allocate() {
        let _ = db.free(id);
    }
    let _ = db.commit(CommitInfo::default());
}

/// A small store whose log holds `commits` committed frames that were never checkpointed
/// (the process "died"): the starting point of the log fuzz target.
pub fn store_with_unreplayed_log(commits: u8) -> SimFs {
    use crate::kernel::{Kernel, OpenOptions};
    use crate::log::Durability;
    let sim = SimFs::new();
    let opts = OpenOptions {
        no_background_threads: true,
        ..OpenOptions::default()
    };
    if let Ok(k) = Kernel::open_with(
        Arc::new(sim.clone()),
        Path::new(FUZZ_DIR),
        &fuzz_config(),
        opts,
    ) {
        for i in 0..commits {
            let Ok(mut tx) = k.begin() else { break };
            if let Ok(id) = tx.allocate(PageType::Raw) {
                if let Ok(p) = tx.page_mut(id) {
                    p[PAGE_HEADER_LEN..].fill(i);
                }
                let _ = tx.set_root(0, id);
            }
            let _ = tx.commit(Durability::Sync);
        }
        sim.crash_now();
        drop(k);
    }
    sim.restart(crate::file::CrashOutcome::ProcessKill, 0);
    sim
}

const FUZZ_DIR: &str = "/fuzz";

fn fuzz_config() -> StoreConfig {
    StoreConfig {
        initial_db_size_pages: 16,
        cache_min_pages: 512,
        cache_max_pages: 512,
        checkpoint_size: 1 << 20,
        ..StoreConfig::default()
    }
}

/// Replaces the frames of a store's log (everything after the two header sectors) with
/// `data` and opens the store, which runs recovery over it: never a panic, never an
/// allocation beyond the file.
pub fn decode_log(data: &[u8]) {
    use crate::kernel::{Kernel, OpenOptions};
    use crate::log::frame::{LOG_FILE, LOG_HEADER_AREA};
    let sim = store_with_unreplayed_log(3);
    let path = Path::new(FUZZ_DIR).join(LOG_FILE);
    let Some(mut bytes) = sim.read_file(&path) else {
        return;
    };
    let head = LOG_HEADER_AREA as usize;
    bytes.truncate(head);
    bytes.extend_from_slice(data);
    sim.write_file_durable(&path, &bytes);
    let opts = OpenOptions {
        no_background_threads: true,
        ..OpenOptions::default()
    };
    if let Ok(k) = Kernel::open_with(Arc::new(sim), Path::new(FUZZ_DIR), &fuzz_config(), opts) {
        let root = k.root(0);
        if root != 0 {
            let _ = k.read(root);
        }
    }
}
