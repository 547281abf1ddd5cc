//! Profiling aid: W2 through the store API, 8 producers of Sync one-message transactions
//! (`cargo run --release --example w2_profile DIR PER_THREAD`); prints the rate, the
//! log's syncs and group sizes.
use std::sync::Arc;
use stowage::{Durability, NewMessage, Store, StoreConfig};
fn main() -> Result<(), stowage::Error> {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).cloned().unwrap_or_else(|| "/tmp/w2p".into());
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3000);
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = StoreConfig {
        page_size: 4096,
        cache_min_pages: 4096,
        cache_max_pages: 8192,
        ..StoreConfig::default()
    };
    let s = Arc::new(Store::open(&dir, cfg)?);
    s.create_queue("q")?;
    let before = s.kernel_stats()?;
    let t = std::time::Instant::now();
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let s = s.clone();
            std::thread::spawn(move || -> Result<(), stowage::Error> {
                let p = vec![0x5Au8; 1024];
                for _ in 0..n {
                    let mut tx = s.begin();
                    tx.insert("q", NewMessage::new(p.clone()))?;
                    tx.commit_with(Durability::Sync)?;
                }
                Ok(())
            })
        })
        .collect();
    for w in workers {
        w.join().map_err(|_| stowage::Error::Closed)??;
    }
    let secs = t.elapsed().as_secs_f64();
    let after = s.kernel_stats()?;
    let syncs = after.log.syncs - before.log.syncs;
    println!(
        "{:.0} commits/s, {} syncs, {:.2} commits per sync, groups {:?}",
        (8 * n) as f64 / secs,
        syncs,
        (8 * n) as f64 / syncs as f64,
        after.log.group_sizes
    );
    Ok(())
}
