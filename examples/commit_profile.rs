//! Profiling aid: Async commits of one message, or of `BATCH` (the CPU cost of the store's
//! commit path): `... commit_profile N [BATCH [sync]]`.
use stowage::{Durability, NewMessage, Store, StoreConfig};
fn main() -> Result<(), stowage::Error> {
    let dir = "/tmp/commitp";
    let _ = std::fs::remove_dir_all(dir);
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
    let s = Store::open(dir, cfg)?;
    s.create_queue("q")?;
    let p = vec![0x5Au8; 1024];
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    // Messages per transaction (W3 uses 100).
    let batch: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1);
    // Durability from the third argument: "sync" (W3), else Async (CPU only).
    let durability = match std::env::args().nth(3).as_deref() {
        Some("sync") => Durability::Sync,
        _ => Durability::Async,
    };
    let t = std::time::Instant::now();
    for _ in 0..n {
        let mut tx = s.begin();
        for _ in 0..batch {
            tx.insert("q", NewMessage::new(p.clone()))?;
        }
        tx.commit_with(durability)?;
    }
    println!(
        "{:.2} us per commit of {batch}",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
    s.close()
}
