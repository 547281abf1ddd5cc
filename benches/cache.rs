//! Page-cache benchmarks: the hit path (pin a resident page, read a byte, unpin) and the
//! miss path (a working set 16x the cache, served by pread from a real file; the OS page
//! cache holds the file, so this measures the cache's own miss cost plus one pread).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};

use stowage::cache::{CacheConfig, Lsn, PageCache, PageId, PageIo, WalGate};
use stowage::file::{FileHandle, FileSystem, OpenMode, RealFs};
use stowage::{Error, Result};

const PS: usize = 4096;
const CACHE: usize = 256;
const WORKING_SET: u64 = 16 * CACHE as u64;

/// `page.db` without the page format: page `id` at offset `id * PS`.
struct FileIo {
    file: Arc<dyn FileHandle>,
}

impl PageIo for FileIo {
    fn page_size(&self) -> usize {
        PS
    }
    fn read_page(&self, id: PageId, buf: &mut [u8]) -> Result<()> {
        self.file
            .read_exact_at(buf, id * PS as u64)
            .map_err(|e| Error::io(format!("reading page {id} of page.db"), e))
    }
    fn write_page(&self, id: PageId, buf: &[u8]) -> Result<()> {
        self.file
            .write_all_at(buf, id * PS as u64)
            .map_err(|e| Error::io(format!("writing page {id} of page.db"), e))
    }
}

/// A log that is always durable (the benches only read).
struct Durable;

impl WalGate for Durable {
    fn durable_lsn(&self) -> Lsn {
        Lsn::MAX
    }
    fn flush_to(&self, _lsn: Lsn) -> Result<()> {
        Ok(())
    }
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = RealFs::new()
        .open(&dir.path().join("page.db"), OpenMode::Create)
        .expect("create page.db");
    let mut page = vec![0u8; PS];
    for id in 0..WORKING_SET {
        page.fill(id as u8);
        file.write_all_at(&page, id * PS as u64)
            .expect("fill page.db");
    }
    let cache = PageCache::new(
        Arc::new(FileIo { file }),
        Arc::new(Durable),
        CacheConfig {
            min_pages: 0,
            max_pages: CACHE,
            pin_timeout: Duration::from_secs(1),
        },
    )
    .expect("cache");

    drop(cache.pin(7).expect("warm"));
    c.bench_function("pin_unpin_hit", |b| {
        b.iter(|| {
            let p = cache.pin(black_box(7)).expect("pin");
            let byte = p.read()[0];
            black_box(byte)
        })
    });

    // Start from an empty cache (min_pages is 0), so no pin below can hit.
    cache.trim().expect("trim");
    let before = cache.stats();
    // Cycling through 16x the cache in order defeats LRU: every pin is a miss.
    let mut id = 0;
    c.bench_function("miss", |b| {
        b.iter(|| {
            id = (id + 1) % WORKING_SET;
            let p = cache.pin(black_box(id)).expect("pin");
            let byte = p.read()[0];
            black_box(byte)
        })
    });
    // Every pin of the miss bench really missed.
    let s = cache.stats();
    assert_eq!(s.hits, before.hits, "{s:?}");
}

criterion_group!(cache_benches, benches);
criterion_main!(cache_benches);
