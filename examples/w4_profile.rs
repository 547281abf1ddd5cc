//! Profiling aid: W4 churn (depth 1,000, one in and one out per Sync transaction), printing
//! throughput and the slowest commits.
use std::collections::VecDeque;
use stowage::{Durability, NewMessage, Store, StoreConfig};
fn main() -> Result<(), stowage::Error> {
    let dir = "/tmp/w4p";
    let _ = std::fs::remove_dir_all(dir);
    let cfg = StoreConfig {
        page_size: 4096,
        cache_min_pages: 4096,
        cache_max_pages: 8192,
        ..StoreConfig::default()
    };
    let s = Store::open(dir, cfg)?;
    s.create_queue("q")?;
    let p = vec![0x33u8; 1024];
    let mut keys = VecDeque::new();
    let mut tx = s.begin();
    for _ in 0..1000 {
        keys.push_back(tx.insert("q", NewMessage::new(p.clone()))?);
    }
    tx.commit_with(Durability::Sync)?;
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5000);
    let mut lat = Vec::new();
    let t = std::time::Instant::now();
    for i in 0..n {
        let t0 = std::time::Instant::now();
        let mut tx = s.begin();
        keys.push_back(tx.insert("q", NewMessage::new(p.clone()))?);
        tx.remove("q", keys.pop_front().unwrap_or(0))?;
        tx.commit_with(Durability::Sync)?;
        lat.push((t0.elapsed(), i));
    }
    println!("{:.0} ops/s", n as f64 / t.elapsed().as_secs_f64());
    lat.sort();
    for (d, i) in lat.iter().rev().take(5) {
        println!("slow: tx {i} took {d:?}");
    }
    let st = s.stats();
    println!(
        "syncs {} checkpoints {} commits {}",
        st.log_syncs, st.checkpoints, st.commits
    );
    s.close()
}
