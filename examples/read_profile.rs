//! Profiling aid: a full in-order read of a store's queue `q` (`... read_profile DIR`).
use stowage::{Store, StoreConfig};
fn main() -> Result<(), stowage::Error> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "/tmp/w5p".into());
    // Page size from STOWAGE_PAGE_SIZE (default 4096); the cache stays 32 MiB.
    let page_size: u32 = std::env::var("STOWAGE_PAGE_SIZE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4096);
    let frames = (32 << 20) / page_size as usize;
    let cfg = StoreConfig {
        page_size,
        cache_min_pages: frames / 2,
        cache_max_pages: frames,
        ..StoreConfig::default()
    };
    let s = Store::open(&dir, cfg)?;
    let t = std::time::Instant::now();
    let mut from = 0;
    let mut n = 0;
    loop {
        let batch = s.messages("q", from, 1000)?;
        let Some(last) = batch.last() else { break };
        from = last.key + 1;
        n += batch.len();
    }
    println!("{n} messages in {:?}", t.elapsed());
    s.close()
}
