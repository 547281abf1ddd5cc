//! Entry points shared by the cargo-fuzz targets (`fuzz/`) and the tests that replay their
//! corpora, so both exercise exactly the same code.
//!
//! Invariant: each function accepts any bytes and returns normally; a panic, a hang or an
//! allocation driven by a length read from the input is a bug.

use std::path::Path;
use std::sync::Arc;

use crate::config::{StoreConfig, MAX_PAGE_SIZE, MIN_PAGE_SIZE};
use crate::file::{FileSystem, SimFs};
use crate::page::{decode_free_map, verify_page, PageType, Superblock};
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
