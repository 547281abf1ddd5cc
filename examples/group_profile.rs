//! Profiling aid: 8 threads of Sync one-change commits on the kernel (group commit).
use std::sync::Arc;
use stowage::file::RealFs;
use stowage::kernel::Kernel;
use stowage::page::PageType;
use stowage::{Durability, StoreConfig};
fn main() -> Result<(), stowage::Error> {
    let dir = "/tmp/groupp";
    let _ = std::fs::remove_dir_all(dir);
    let cfg = StoreConfig {
        page_size: 4096,
        initial_db_size_pages: 1024,
        ..StoreConfig::default()
    };
    let k = Arc::new(Kernel::open(
        Arc::new(RealFs::new()),
        std::path::Path::new(dir),
        &cfg,
    )?);
    let pages: Vec<u64> = {
        let mut tx = k.begin()?;
        let v = (0..8)
            .map(|_| tx.allocate(PageType::Raw))
            .collect::<Result<Vec<_>, _>>()?;
        tx.commit(Durability::Sync)?;
        v
    };
    let n = 4000u64;
    let t = std::time::Instant::now();
    let hs: Vec<_> = pages
        .into_iter()
        .map(|p| {
            let k = k.clone();
            std::thread::spawn(move || -> stowage::Result<()> {
                for i in 0..n {
                    let mut tx = k.begin()?;
                    tx.page_mut(p)?[64..72].copy_from_slice(&i.to_le_bytes());
                    tx.commit(Durability::Sync)?;
                }
                Ok(())
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap_or(Ok(()))?;
    }
    let st = k.stats();
    println!(
        "{:.0} commits/s, {} syncs",
        8.0 * n as f64 / t.elapsed().as_secs_f64(),
        st.log.syncs
    );
    Ok(())
}
