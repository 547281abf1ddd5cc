//! Sync commit latency while maintenance runs (issue 6's target): p99 and maximum commit
//! latency of a committer thread while a checkpoint, a backup of a large store and a shrink
//! run, against the idle p99.
//!
//! `cargo run --release --example maintenance_latency -- [DIR] [GIB]`
//! (DIR defaults to ./stowage-maint, on the disk to measure; GIB to 1.0). The store is
//! filled with GIB of 1 KiB messages, half of them consumed from the left edge (so shrink
//! has work), then each phase measures one committer's Sync commits (insert + remove of a
//! 1 KiB message) while the operation runs; the idle phase runs 3 s, and the checkpoint
//! phase first gets about 60 MiB of dirty pages to write.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stowage::{Durability, NewMessage, Store, StoreConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let dir = PathBuf::from(args.get(1).map_or("stowage-maint", String::as_str));
    let gib: f64 = args.get(2).map_or(Ok(1.0), |s| s.parse())?;
    let _ = std::fs::remove_dir_all(&dir);
    let config = StoreConfig {
        page_size: 8192,
        ..StoreConfig::default()
    };
    let s = Store::open(dir.join("store"), config)?;
    s.create_queue("backlog")?;
    s.create_queue("live")?;
    let n = (gib * (1u64 << 30) as f64 / 1024.0) as u64;
    let t = Instant::now();
    let mut done = 0;
    while done < n {
        let mut tx = s.begin();
        for _ in 0..1000.min(n - done) {
            tx.insert("backlog", NewMessage::new(vec![7u8; 1024]))?;
            done += 1;
        }
        tx.commit_with(Durability::Async)?;
    }
    let mut removed = 0;
    while removed < n / 2 {
        let keys: Vec<u64> = s
            .entries("backlog", 0, 1000)?
            .iter()
            .map(|e| e.key)
            .collect();
        let mut tx = s.begin();
        for k in keys {
            tx.remove("backlog", k)?;
            removed += 1;
        }
        tx.commit_with(Durability::Async)?;
    }
    s.checkpoint()?;
    eprintln!(
        "filled {n} x 1 KiB, consumed {removed}, in {:.1} s; page.db {} MiB",
        t.elapsed().as_secs_f64(),
        s.stats().file_bytes >> 20
    );

    println!("| phase | operation took | commits | p50 | p99 | max | p99 / idle p99 |");
    println!("|---|---|---|---|---|---|---|");
    let idle = phase(&s, "idle", None, || {
        std::thread::sleep(Duration::from_secs(3));
        Ok(())
    })?;
    // Give the checkpoint work: about 60 MiB of dirty pages (below checkpoint_size, so no
    // automatic checkpoint takes it first).
    let mut tx = s.begin();
    for i in 0..60_000u32 {
        tx.insert("backlog", NewMessage::new(vec![i as u8; 1024]))?;
        if i % 1000 == 999 {
            tx.commit_with(Durability::Async)?;
            tx = s.begin();
        }
    }
    tx.commit_with(Durability::Async)?;
    phase(&s, "checkpoint", Some(idle), || s.checkpoint())?;
    let backups = dir.join("backups");
    phase(&s, "backup", Some(idle), || {
        s.backup_to(&backups).map(|_| ())
    })?;
    phase(&s, "shrink", Some(idle), || {
        let r = s.shrink()?;
        eprintln!("shrink: {r:?}");
        Ok(())
    })?;
    s.close()?;
    Ok(())
}

/// Runs `op` while one thread commits; prints the latency row and returns the p99.
fn phase(
    s: &Store,
    name: &str,
    idle_p99: Option<Duration>,
    op: impl FnOnce() -> stowage::Result<()>,
) -> Result<Duration, Box<dyn std::error::Error>> {
    let stop = Arc::new(AtomicBool::new(false));
    let committer = {
        let (s, stop) = (s.clone(), stop.clone());
        std::thread::spawn(move || -> stowage::Result<Vec<Duration>> {
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let mut tx = s.begin();
                let k = tx.insert("live", NewMessage::new(vec![1u8; 1024]))?;
                tx.commit_with(Durability::Sync)?;
                let mut tx = s.begin();
                tx.remove("live", k)?;
                tx.commit_with(Durability::Sync)?;
                lat.push(t.elapsed() / 2);
            }
            Ok(lat)
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    op()?;
    let took = t.elapsed();
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let mut lat = committer.join().map_err(|_| "committer panicked")??;
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    let (p50, p99, max) = (pct(0.5), pct(0.99), *lat.last().unwrap_or(&Duration::ZERO));
    let ratio = idle_p99.map_or("1.0".to_string(), |i| {
        format!("{:.1}", p99.as_secs_f64() / i.as_secs_f64())
    });
    println!(
        "| {name} | {:.2} s | {} | {:.2} ms | {:.2} ms | {:.2} ms | {ratio} |",
        took.as_secs_f64(),
        lat.len(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3
    );
    Ok(p99)
}
