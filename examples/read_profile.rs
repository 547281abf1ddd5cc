//! Profiling aid: a full in-order read of a store's queue `q` (`... read_profile DIR`).
use stowage::{Store, StoreConfig};
fn main() -> Result<(), stowage::Error> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "/tmp/w5p".into());
    let cfg = StoreConfig {
        page_size: 4096,
        cache_min_pages: 4096,
        cache_max_pages: 8192,
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
