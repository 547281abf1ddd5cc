//! The broker workloads W1–W5 of BENCHMARKS.md against the store (1 KiB incompressible
//! payloads, one queue, keys in publish order).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use stowage::{Durability, NewMessage, Store, StoreConfig};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// One workload's figures.
#[derive(Debug, Default, Clone)]
pub struct Figures {
    pub name: &'static str,
    pub ops: u64,
    pub per_sec: f64,
    pub mib_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub extra: Vec<(String, String)>,
}

pub fn bench_config() -> StoreConfig {
    // The page size `stowage scan` recommends for 1 KiB payloads (15 to a 16 KiB page,
    // 94% full; 3 to a 4 KiB page, 75%) with page_size_max at 16 KiB: 32 KiB pages pack
    // 3% denser but loaded W5 8-10% slower here. The cache stays 32 MiB and the initial
    // file 100 MiB, as with 4 KiB pages. See docs/benchmarks.md.
    StoreConfig {
        page_size: 16384,
        page_size_max: 16384,
        initial_db_size_pages: 6400,
        cache_min_pages: 1024,
        cache_max_pages: 2048,
        ..StoreConfig::default()
    }
}

/// Incompressible (xorshift) payload bytes.
fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e6
}

fn open(dir: &Path) -> Res<Store> {
    Ok(Store::open(dir, bench_config())?)
}

fn dir_bytes(dir: &Path) -> u64 {
    ["page.db"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

/// W1 (threads = 1) and W2 (threads = 8): transactions of one message, each Sync.
pub fn publish_sync(dir: &Path, threads: usize, per_thread: usize) -> Res<Figures> {
    let s = open(dir)?;
    s.create_queue("q")?;
    let p = payload(1, 1024);
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (s, p) = (s.clone(), p.clone());
            std::thread::spawn(move || -> stowage::Result<Vec<Duration>> {
                let mut lat = Vec::with_capacity(per_thread);
                for _ in 0..per_thread {
                    let t = Instant::now();
                    let mut tx = s.begin();
                    tx.insert("q", NewMessage::new(p.clone()))?;
                    tx.commit_with(Durability::Sync)?;
                    lat.push(t.elapsed());
                }
                Ok(lat)
            })
        })
        .collect();
    let mut lat = Vec::new();
    for h in handles {
        lat.extend(h.join().map_err(|_| "publisher panicked")??);
    }
    let secs = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    s.close()?;
    Ok(Figures {
        name: if threads == 1 {
            "W1 durable publish, 1 producer"
        } else {
            "W2 durable publish, 8 producers"
        },
        ops: lat.len() as u64,
        per_sec: lat.len() as f64 / secs,
        mib_per_sec: lat.len() as f64 / secs / 1024.0,
        p50_us: pct(&lat, 0.5),
        p99_us: pct(&lat, 0.99),
        extra: Vec::new(),
    })
}

/// W3: messages in Sync transactions of 100.
pub fn batched(dir: &Path, total: usize) -> Res<Figures> {
    let s = open(dir)?;
    s.create_queue("q")?;
    let p = payload(3, 1024);
    let start = Instant::now();
    let mut lat = Vec::new();
    for _ in 0..total / 100 {
        let t = Instant::now();
        let mut tx = s.begin();
        for _ in 0..100 {
            tx.insert("q", NewMessage::new(p.clone()))?;
        }
        tx.commit_with(Durability::Sync)?;
        lat.push(t.elapsed());
    }
    let secs = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    s.close()?;
    let n = (total / 100 * 100) as f64;
    Ok(Figures {
        name: "W3 batched publish (100 per Sync tx)",
        ops: n as u64,
        per_sec: n / secs,
        mib_per_sec: n / secs / 1024.0,
        p50_us: pct(&lat, 0.5),
        p99_us: pct(&lat, 0.99),
        extra: Vec::new(),
    })
}

/// W4: depth held at 1,000; each Sync transaction publishes one and removes the oldest.
pub fn churn(dir: &Path, txs: usize) -> Res<Figures> {
    let s = open(dir)?;
    s.create_queue("q")?;
    let p = payload(4, 1024);
    let mut keys = std::collections::VecDeque::new();
    let mut tx = s.begin();
    for _ in 0..1000 {
        keys.push_back(tx.insert("q", NewMessage::new(p.clone()))?);
    }
    tx.commit_with(Durability::Sync)?;
    let start = Instant::now();
    let mut lat = Vec::with_capacity(txs);
    for _ in 0..txs {
        let t = Instant::now();
        let mut tx = s.begin();
        keys.push_back(tx.insert("q", NewMessage::new(p.clone()))?);
        if let Some(old) = keys.pop_front() {
            tx.remove("q", old)?;
        }
        tx.commit_with(Durability::Sync)?;
        lat.push(t.elapsed());
    }
    let secs = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    let live = s.queues()?.first().map(|q| q.bytes).unwrap_or(0);
    let st = s.kernel_stats()?;
    let used = (st.pages_total - st.pages_free) * st.page_size as u64;
    s.close()?;
    Ok(Figures {
        name: "W4 churn (depth 1,000, 1 in + 1 out per Sync tx)",
        ops: txs as u64,
        per_sec: txs as f64 / secs,
        mib_per_sec: 0.0,
        p50_us: pct(&lat, 0.5),
        p99_us: pct(&lat, 0.99),
        extra: vec![
            (
                "live data MiB".into(),
                format!("{:.2}", live as f64 / 1048576.0),
            ),
            (
                "pages in use MiB".into(),
                format!("{:.2}", used as f64 / 1048576.0),
            ),
            (
                "page.db MiB".into(),
                format!("{:.2}", dir_bytes(dir) as f64 / 1048576.0),
            ),
        ],
    })
}

/// W5: load `total` messages (non-durable batches of 1,000, a final Sync one), close, then
/// in a fresh process: cold reopen time, full in-order read, peak RSS.
pub fn backlog(dir: &Path, total: usize, exe: &Path) -> Res<Figures> {
    let s = open(dir)?;
    s.create_queue("q")?;
    let batches = total / 1000;
    // Only the store's work is timed: generating 1 KiB of xorshift bytes per message costs
    // about a microsecond, as much as the store's own work per message.
    let mut elapsed = Duration::ZERO;
    for b in 0..batches {
        let payloads: Vec<Vec<u8>> = (0..1000)
            .map(|i| payload((b * 1000 + i) as u64, 1024))
            .collect();
        let start = Instant::now();
        let mut tx = s.begin();
        for p in payloads {
            tx.insert("q", NewMessage::new(p))?;
        }
        let d = if b + 1 == batches {
            Durability::Sync
        } else {
            Durability::Async
        };
        tx.commit_with(d)?;
        elapsed += start.elapsed();
    }
    let load_secs = elapsed.as_secs_f64();
    s.close()?;
    let out = Command::new(exe).arg("bench-read").arg(dir).output()?;
    if !out.status.success() {
        return Err(format!("reader failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut extra = vec![(
        "page.db MiB".into(),
        format!("{:.1}", dir_bytes(dir) as f64 / 1048576.0),
    )];
    for line in text.lines() {
        if let Some((k, v)) = line.split_once('=') {
            extra.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    Ok(Figures {
        name: "W5 backlog (load, reopen, full read)",
        ops: (batches * 1000) as u64,
        per_sec: (batches * 1000) as f64 / load_secs,
        mib_per_sec: (batches * 1000) as f64 / load_secs / 1024.0,
        p50_us: 0.0,
        p99_us: 0.0,
        extra,
    })
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// The W5 reader, run in its own process so its peak RSS is its own.
pub fn read_backlog(dir: &Path) -> Res<()> {
    let start = Instant::now();
    let s = open(dir)?;
    let reopen = start.elapsed();
    let start = Instant::now();
    let mut from = 0;
    let mut n = 0u64;
    loop {
        let batch = s.messages("q", from, 1000)?;
        let Some(last) = batch.last() else { break };
        from = last.key + 1;
        n += batch.len() as u64;
    }
    let read = start.elapsed();
    let cache_mib =
        bench_config().cache_max_pages as f64 * bench_config().page_size as f64 / 1048576.0;
    println!("cold reopen ms = {:.2}", reopen.as_secs_f64() * 1e3);
    println!("full read s = {:.3}", read.as_secs_f64());
    println!("messages read = {n}");
    println!("read msgs/s = {:.0}", n as f64 / read.as_secs_f64());
    println!("peak RSS MiB = {:.1}", status_kib("VmHWM:") as f64 / 1024.0);
    println!("cache max MiB = {cache_mib:.1}");
    s.close()?;
    Ok(())
}

/// A scratch directory removed on drop.
pub struct Scratch(pub PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        // Best effort: a leftover directory only costs disk space.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn scratch(base: &Path, name: &str) -> Res<Scratch> {
    let p = base.join(format!("stowage-w-{}-{name}", std::process::id()));
    if p.exists() {
        std::fs::remove_dir_all(&p)?;
    }
    Ok(Scratch(p))
}

/// Runs W1–W5 (scaled down by `scale`) and returns their figures.
pub fn all(base: &Path, scale: usize, exe: &Path) -> Res<Vec<Figures>> {
    use crate::progress::spin;
    let mut v = Vec::new();
    let d = scratch(base, "w1")?;
    v.push(spin("W1: durable publish, 1 producer", || {
        publish_sync(&d.0, 1, 20_000 / scale)
    })?);
    let d = scratch(base, "w2")?;
    v.push(spin("W2: durable publish, 8 producers", || {
        publish_sync(&d.0, 8, 5_000 / scale)
    })?);
    let d = scratch(base, "w3")?;
    v.push(spin("W3: batched publish", || {
        batched(&d.0, 200_000 / scale)
    })?);
    let d = scratch(base, "w4")?;
    v.push(spin("W4: churn", || churn(&d.0, 50_000 / scale))?);
    let d = scratch(base, "w5")?;
    v.push(spin("W5: backlog", || {
        backlog(&d.0, 1_000_000 / scale, exe)
    })?);
    Ok(v)
}
