//! Criterion benchmarks of the kernel's commit path on real files: one small change per
//! transaction, `Sync` (an fdatasync each) and `Async` (the CPU cost of the commit path).
//! `stowage bench` measures the same with 8 threads, latency percentiles and the device.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use stowage::file::RealFs;
use stowage::kernel::Kernel;
use stowage::page::PageType;
use stowage::{Durability, StoreConfig};

fn commit(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = StoreConfig {
        page_size: 4096,
        initial_db_size_pages: 256,
        checkpoint_size: 64 << 20,
        ..StoreConfig::default()
    };
    let k = Kernel::open(Arc::new(RealFs::new()), dir.path(), &config).expect("open");
    let page = {
        let mut tx = k.begin().expect("begin");
        let p = tx.allocate(PageType::Raw).expect("allocate");
        tx.commit(Durability::Sync).expect("commit");
        p
    };
    let mut i = 0u64;
    for (name, durability) in [
        ("sync_commit_small_change", Durability::Sync),
        ("async_commit_small_change", Durability::Async),
    ] {
        c.bench_function(name, |b| {
            b.iter(|| {
                i += 1;
                let mut tx = k.begin().expect("begin");
                tx.page_mut(page).expect("page")[64..72].copy_from_slice(&i.to_le_bytes());
                tx.commit(durability).expect("commit")
            })
        });
    }
}

criterion_group!(benches, commit);
criterion_main!(benches);
