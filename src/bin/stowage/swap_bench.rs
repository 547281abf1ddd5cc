//! W7 (BENCHMARKS.md): `count` appends of 1 KiB to one swap queue, then read and remove
//! all, on the real file layer; and the device's sequential write bandwidth measured in the
//! same call over the same volume (plain `std::fs`, 1 MiB writes, one fsync at the end).
//!
//! Owns nothing on disk beyond `<dir>/w7-store` and `<dir>/w7-device.bin`, both deleted
//! before it returns.

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use stowage::file::RealFs;
use stowage::swap::{SwapDir, SwapPointer};
use stowage::StoreConfig;

/// Payload size of W7.
const PAYLOAD: usize = 1024;
/// Bytes a swap record adds to its payload (the record header).
const RECORD_OVERHEAD: usize = 24;
const MIB: f64 = 1024.0 * 1024.0;

/// The figures of one W7 run.
#[derive(Debug, Clone)]
pub struct W7Figures {
    /// Records appended, read and removed.
    pub count: usize,
    /// Bytes written to swap files (payloads plus record headers).
    pub bytes: u64,
    /// Seconds for all appends (including the final flush of the append buffer).
    pub append_secs: f64,
    /// Appends per second.
    pub appends_per_sec: f64,
    /// Payload MiB per second appended.
    pub append_mib_per_sec: f64,
    /// Seconds to read and remove every record (oldest first).
    pub drain_secs: f64,
    /// Read + remove pairs per second.
    pub drains_per_sec: f64,
    /// Payload MiB per second read (and removed).
    pub drain_mib_per_sec: f64,
    /// The most swap files the queue had at once.
    pub max_files: usize,
    /// The device's sequential write bandwidth over the same volume, MiB/s.
    pub device_seq_write_mib_per_sec: f64,
}

impl W7Figures {
    /// The worse of the two directions relative to the device (the W7 target: >= 0.7).
    pub fn ratio(&self) -> f64 {
        self.append_mib_per_sec.min(self.drain_mib_per_sec) / self.device_seq_write_mib_per_sec
    }
}

impl fmt::Display for W7Figures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "W7 swap: {} x {PAYLOAD} B ({:.1} MiB written, up to {} files)",
            self.count,
            self.bytes as f64 / MIB,
            self.max_files
        )?;
        writeln!(
            f,
            "  append           {:>12.0} msg/s {:>8.1} MiB/s  ({:.2} s)",
            self.appends_per_sec, self.append_mib_per_sec, self.append_secs
        )?;
        writeln!(
            f,
            "  read + remove    {:>12.0} msg/s {:>8.1} MiB/s  ({:.2} s)",
            self.drains_per_sec, self.drain_mib_per_sec, self.drain_secs
        )?;
        writeln!(
            f,
            "  device sequential write (1 MiB writes + fsync) {:.1} MiB/s",
            self.device_seq_write_mib_per_sec
        )?;
        write!(
            f,
            "  ratio (worse direction / device) {:.2} (target >= 0.70)",
            self.ratio()
        )
    }
}

/// The device's sequential write bandwidth: `bytes` written to a new file in 1 MiB
/// writes, then one fsync; MiB/s over the whole, fsync included.
pub fn device_seq_write(path: &Path, bytes: u64) -> Result<f64, Box<dyn std::error::Error>> {
    let chunk = vec![0xA5u8; 1 << 20];
    let start = Instant::now();
    let mut f = std::fs::File::create(path)?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    f.sync_all()?;
    let secs = start.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(path)?;
    Ok(bytes as f64 / MIB / secs.max(1e-9))
}

/// Runs W7 with `count` records in `dir` (created if missing) and measures the device.
pub fn w7(dir: &Path, count: usize) -> Result<W7Figures, Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    let store = dir.join("w7-store");
    if store.exists() {
        std::fs::remove_dir_all(&store)?;
    }
    let bytes = (count * (PAYLOAD + RECORD_OVERHEAD)) as u64;
    let device = device_seq_write(&dir.join("w7-device.bin"), bytes.max(1 << 20))?;

    let roll_over = StoreConfig::default().swap_roll_over_size;
    let swap = SwapDir::open(Arc::new(RealFs::new()), &store, roll_over)?;
    let mut q = swap.queue("w7")?;
    let payload: Vec<u8> = (0..PAYLOAD).map(|i| (i * 131 % 251) as u8).collect();
    // The broker's side: it keeps the pointers (16 bytes each) in its own index.
    let mut ptrs: Vec<SwapPointer> = Vec::with_capacity(count);
    let start = Instant::now();
    for i in 0..count {
        ptrs.push(q.append(&payload, i as u32)?);
    }
    q.flush()?;
    let append_secs = start.elapsed().as_secs_f64().max(1e-9);
    let max_files = q.file_count();

    let start = Instant::now();
    let mut read_bytes = 0u64;
    for &p in &ptrs {
        let r = q.read(p)?;
        read_bytes += r.payload.len() as u64;
        q.remove(p)?;
    }
    let drain_secs = start.elapsed().as_secs_f64().max(1e-9);
    if read_bytes != (count * PAYLOAD) as u64 {
        return Err(format!(
            "read {read_bytes} payload bytes, expected {}",
            count * PAYLOAD
        )
        .into());
    }
    if q.file_count() > 1 {
        return Err(format!("{} swap files left after draining", q.file_count()).into());
    }
    drop(q);
    drop(swap);
    std::fs::remove_dir_all(&store)?;

    let payload_mib = (count * PAYLOAD) as f64 / MIB;
    Ok(W7Figures {
        count,
        bytes,
        append_secs,
        appends_per_sec: count as f64 / append_secs,
        append_mib_per_sec: payload_mib / append_secs,
        drain_secs,
        drains_per_sec: count as f64 / drain_secs,
        drain_mib_per_sec: payload_mib / drain_secs,
        max_files,
        device_seq_write_mib_per_sec: device,
    })
}
