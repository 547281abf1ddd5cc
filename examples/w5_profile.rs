//! Profiling aid: the W5 load phase alone (`cargo run --release --example w5_profile DIR N`).
use stowage::{Durability, NewMessage, Store, StoreConfig};
fn main() -> Result<(), stowage::Error> {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).cloned().unwrap_or_else(|| "/tmp/w5p".into());
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let _ = std::fs::remove_dir_all(&dir);
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
    s.create_queue("q")?;
    let p = vec![0x5Au8; 1024];
    let t = std::time::Instant::now();
    for b in 0..n / 1000 {
        let mut tx = s.begin();
        for _ in 0..1000 {
            tx.insert("q", NewMessage::new(p.clone()))?;
        }
        tx.commit_with(if b + 1 == n / 1000 {
            Durability::Sync
        } else {
            Durability::Async
        })?;
    }
    println!("{} msgs/s", n as f64 / t.elapsed().as_secs_f64());
    s.close()
}
