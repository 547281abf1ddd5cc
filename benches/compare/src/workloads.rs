//! W1–W5 of BENCHMARKS.md, generic over the engine, measured as `stowage bench` measures
//! them (src/bin/stowage/workloads.rs): 1 KiB incompressible payloads, one queue, the clock
//! around the commits only, latency per transaction, W5's reader in a process of its own.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::engines::{Engine, Res};

/// One (engine, workload) result: the JSON line a child prints.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Outcome {
    pub engine: String,
    pub workload: String,
    pub scale: usize,
    /// Messages (W1–W3, W5 load) or transactions (W4).
    pub ops: u64,
    pub secs: f64,
    pub per_sec: f64,
    pub mib_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// Disk space of the engine's directory after a clean close (W4, W5): allocated blocks,
    /// as `du` counts them (a sparse preallocated file counts what it holds, a
    /// `fallocate`d one all of it).
    pub dir_mib: f64,
    /// The same, as file lengths (`ls`).
    pub files_mib: f64,
    /// W5: open after a clean close, in a fresh process.
    pub reopen_ms: f64,
    /// W5: full in-order read of the queue.
    pub read_secs: f64,
    /// W5: peak RSS of the reading process (VmHWM).
    pub read_rss_mib: f64,
    /// Engine-specific figures.
    pub extra: Vec<(String, f64)>,
}

pub const PAYLOAD: usize = 1024;

/// Incompressible (xorshift) payload bytes, the generator `stowage bench` uses.
pub fn payload(seed: u64, len: usize) -> Vec<u8> {
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

/// (allocated bytes, file lengths) of all files under `dir`.
pub fn dir_bytes(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let (mut alloc, mut len) = (0, 0);
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => {
                    let (a, l) = dir_bytes(&e.path());
                    alloc += a;
                    len += l;
                }
                Ok(m) => {
                    alloc += m.blocks() * 512;
                    len += m.len();
                }
                Err(_) => {}
            }
        }
    }
    (alloc, len)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1048576.0
}

/// W1 (1 thread x 20,000) and W2 (8 threads x 5,000): transactions of one message, each
/// durable.
pub fn publish_sync<E: Engine>(dir: &Path, threads: usize, per_thread: usize) -> Res<Outcome> {
    let e = Arc::new(E::open(dir)?);
    let p = payload(1, PAYLOAD);
    let writers = (0..threads).map(|_| e.writer()).collect::<Res<Vec<_>>>()?;
    let start = Instant::now();
    let handles: Vec<_> = writers
        .into_iter()
        .map(|mut w| {
            let (e, p) = (e.clone(), p.clone());
            std::thread::spawn(move || -> Res<Vec<Duration>> {
                let mut lat = Vec::with_capacity(per_thread);
                for _ in 0..per_thread {
                    let t = Instant::now();
                    e.commit(&mut w, vec![p.clone()], &[], true)?;
                    lat.push(t.elapsed());
                }
                Ok(lat)
            })
        })
        .collect();
    let mut lat = Vec::new();
    for h in handles {
        lat.extend(h.join().map_err(|_| "producer thread panicked")??);
    }
    let secs = start.elapsed().as_secs_f64();
    let extra = e.extra()?;
    Arc::into_inner(e).ok_or("engine still shared")?.close()?;
    let ops = lat.len() as u64;
    Ok(timed(ops, PAYLOAD, secs, lat, extra))
}

/// The figures of a timed run of `ops` operations of `bytes` payload bytes each.
fn timed(
    ops: u64,
    bytes: usize,
    secs: f64,
    mut lat: Vec<Duration>,
    extra: Vec<(String, f64)>,
) -> Outcome {
    lat.sort_unstable();
    let n = ops as f64;
    Outcome {
        ops,
        secs,
        per_sec: n / secs,
        mib_per_sec: n * bytes as f64 / secs / 1048576.0,
        p50_us: pct(&lat, 0.5),
        p99_us: pct(&lat, 0.99),
        extra,
        ..Outcome::default()
    }
}

/// W3: `total` messages in durable transactions of 100.
pub fn batched<E: Engine>(dir: &Path, total: usize) -> Res<Outcome> {
    let e = E::open(dir)?;
    let mut w = e.writer()?;
    let p = payload(3, PAYLOAD);
    let txs = total / 100;
    let mut lat = Vec::with_capacity(txs);
    let start = Instant::now();
    for _ in 0..txs {
        let t = Instant::now();
        e.commit(&mut w, vec![p.clone(); 100], &[], true)?;
        lat.push(t.elapsed());
    }
    let secs = start.elapsed().as_secs_f64();
    let extra = e.extra()?;
    drop(w);
    e.close()?;
    Ok(timed((txs * 100) as u64, PAYLOAD, secs, lat, extra))
}

/// W4: depth held at 1,000; each durable transaction publishes one and removes the oldest.
pub fn churn<E: Engine>(dir: &Path, txs: usize) -> Res<Outcome> {
    let e = E::open(dir)?;
    let mut w = e.writer()?;
    let p = payload(4, PAYLOAD);
    let mut keys: VecDeque<u64> = e.commit(&mut w, vec![p.clone(); 1000], &[], true)?.into();
    let mut lat = Vec::with_capacity(txs);
    let start = Instant::now();
    for _ in 0..txs {
        let t = Instant::now();
        let old = keys.pop_front().ok_or("queue ran empty")?;
        let new = e.commit(&mut w, vec![p.clone()], &[old], true)?;
        keys.extend(new);
        lat.push(t.elapsed());
    }
    let secs = start.elapsed().as_secs_f64();
    let extra = e.extra()?;
    drop(w);
    e.close()?;
    Ok(Outcome {
        dir_mib: mib(dir_bytes(dir).0),
        files_mib: mib(dir_bytes(dir).1),
        ..timed(txs as u64, 0, secs, lat, extra)
    })
}

/// What W5's reader process prints.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct ReadOutcome {
    pub reopen_ms: f64,
    pub read_secs: f64,
    pub messages: u64,
    pub rss_mib: f64,
}

/// W5 load: `total` messages in lazy batches of 1,000 and a final durable one, then a clean
/// close. The caller runs the reader in a fresh process.
pub fn backlog_load<E: Engine>(dir: &Path, total: usize) -> Res<Outcome> {
    let e = E::open(dir)?;
    let mut w = e.writer()?;
    let batches = total / 1000;
    // Only the commits are timed: generating 1 KiB of xorshift bytes per message costs about
    // a microsecond, as much as the engines' own work per message, and is not theirs.
    let mut elapsed = std::time::Duration::ZERO;
    for b in 0..batches {
        let payloads: Vec<Vec<u8>> = (0..1000)
            .map(|i| payload((b * 1000 + i) as u64, PAYLOAD))
            .collect();
        let start = Instant::now();
        e.commit(&mut w, payloads, &[], b + 1 == batches)?;
        elapsed += start.elapsed();
    }
    let secs = elapsed.as_secs_f64();
    let extra = e.extra()?;
    drop(w);
    e.close()?;
    let n = (batches * 1000) as f64;
    Ok(Outcome {
        ops: n as u64,
        secs,
        per_sec: n / secs,
        mib_per_sec: n * PAYLOAD as f64 / secs / 1048576.0,
        dir_mib: mib(dir_bytes(dir).0),
        files_mib: mib(dir_bytes(dir).1),
        extra,
        ..Outcome::default()
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

/// W5 reader: cold reopen, a full in-order read (checking order and sizes), peak RSS.
pub fn backlog_read<E: Engine>(dir: &Path, expect: u64) -> Res<ReadOutcome> {
    let start = Instant::now();
    let e = E::open(dir)?;
    let reopen = start.elapsed();
    let start = Instant::now();
    let mut n = 0u64;
    let mut last = None;
    let mut checksum = 0u64;
    e.scan(&mut |k, p| {
        if last.is_some_and(|l| k <= l) {
            return Err(format!("key {k} after {last:?}: not in key order").into());
        }
        if p.len() != PAYLOAD {
            return Err(format!("key {k}: payload of {} bytes", p.len()).into());
        }
        last = Some(k);
        n += 1;
        // Touch the payload, as a broker delivering it would.
        checksum = checksum.wrapping_add(p[0] as u64 + p[PAYLOAD - 1] as u64);
        Ok(())
    })?;
    let read = start.elapsed();
    std::hint::black_box(checksum);
    if n != expect {
        return Err(format!("read {n} messages, expected {expect}").into());
    }
    let rss = status_kib("VmHWM:") as f64 / 1024.0;
    e.close()?;
    Ok(ReadOutcome {
        reopen_ms: reopen.as_secs_f64() * 1e3,
        read_secs: read.as_secs_f64(),
        messages: n,
        rss_mib: rss,
    })
}
