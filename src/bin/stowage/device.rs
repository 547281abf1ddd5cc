//! The device's limits (`stowage bench` measures them first; `bench --device` measures only
//! them) and, from the measured rates, recommended `force_sync` and checkpoint settings, as
//! ActiveMQ Artemis's `perf-journal` and KahaDB's `DiskBenchmark` do for their journals.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::Instant;

use crate::inspect::{json_strs, Res};
use crate::progress::spin;
use crate::workloads::scratch;

const MIB: u64 = 1 << 20;
/// The default `checkpoint_size` (100 MiB).
const DEFAULT_CHECKPOINT: u64 = 100 * MIB;
/// The default `async_flush_interval`, in milliseconds.
const DEFAULT_FLUSH_MS: u64 = 100;
/// Faster than this many fsyncs per second, the sync probably stops in a volatile cache.
const SUSPICIOUSLY_FAST: f64 = 50_000.0;
/// Slower than this, each Sync commit costs milliseconds (a rotating or networked disk).
const SLOW: f64 = 300.0;

/// 4 KiB writes + fdatasync per second: appending to a new file, or overwriting a
/// preallocated, zero-filled one; `threads` threads on their own files. The zero-fill is
/// done before the clock starts (all threads meet at a barrier).
fn fsync_rate(base: &Path, overwrite: bool, threads: usize, n: usize) -> Res<f64> {
    let dir = scratch(base, if overwrite { "overwrite" } else { "append" })?;
    std::fs::create_dir_all(&dir.0)?;
    let ready = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let path = dir.0.join(format!("f{t}"));
            let ready = ready.clone();
            std::thread::spawn(move || -> Result<(), String> {
                let prepared = if overwrite {
                    prepared_overwrite_file(&path, n).map_err(|e| e.to_string())
                } else {
                    OpenOptions::new()
                        .create(true)
                        .truncate(true)
                        .read(true)
                        .write(true)
                        .open(&path)
                        .map(Arc::new)
                        .map_err(|e| e.to_string())
                };
                // Meet the others even after an error, so nobody waits forever.
                ready.wait();
                let f = prepared?;
                let block = vec![0xA5u8; 4096];
                for i in 0..n {
                    f.write_all_at(&block, i as u64 * 4096)
                        .and_then(|()| f.sync_data())
                        .map_err(|e| e.to_string())?;
                }
                Ok(())
            })
        })
        .collect();
    ready.wait();
    let start = Instant::now();
    for h in handles {
        h.join().map_err(|_| "device thread panicked")??;
    }
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    Ok((threads * n) as f64 / secs)
}

/// Creates `path` zero-filled and synced, `n` 4 KiB blocks long, for overwrite + fdatasync
/// measurements.
pub fn prepared_overwrite_file(path: &Path, n: usize) -> Res<Arc<std::fs::File>> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)?;
    let zeros = vec![0u8; 1 << 20];
    for i in 0..(n as u64 * 4096).div_ceil(1 << 20) {
        f.write_all_at(&zeros, i << 20)?;
    }
    f.sync_all()?;
    Ok(Arc::new(f))
}

/// What the device does, per second.
#[derive(Debug, Clone, Copy)]
pub struct DeviceRates {
    /// 4 KiB append + fdatasync, one thread.
    pub append: f64,
    /// 4 KiB overwrite of a preallocated file + fdatasync, one thread (what the log pays).
    pub overwrite: f64,
    /// The same with 8 threads on 8 files, in all.
    pub overwrite8: f64,
    /// Sequential write MiB/s (1 MiB writes, one fsync), when measured.
    pub seq_write_mib: Option<f64>,
}

impl DeviceRates {
    /// Measures the fsync rates in `dir` (`n` syncs per test), and the sequential write
    /// bandwidth over `seq_bytes` when that is not zero.
    pub fn measure(dir: &Path, n: usize, seq_bytes: u64) -> Res<DeviceRates> {
        let append = spin("device: 4 KiB append + fdatasync", || {
            fsync_rate(dir, false, 1, n)
        })?;
        let overwrite = spin("device: 4 KiB overwrite + fdatasync", || {
            fsync_rate(dir, true, 1, n)
        })?;
        let overwrite8 = spin("device: 4 KiB overwrite + fdatasync, 8 threads", || {
            fsync_rate(dir, true, 8, n / 4)
        })?;
        let seq_write_mib = if seq_bytes == 0 {
            None
        } else {
            let d = scratch(dir, "seq")?;
            std::fs::create_dir_all(&d.0)?;
            Some(spin("device: sequential write", || {
                crate::swap_bench::device_seq_write(&d.0.join("seq.bin"), seq_bytes)
            })?)
        };
        Ok(DeviceRates {
            append,
            overwrite,
            overwrite8,
            seq_write_mib,
        })
    }

    /// The members of the `"device"` JSON object.
    pub fn json_fields(&self) -> String {
        let seq = self.seq_write_mib.map_or(String::new(), |m| {
            format!(",\"sequential_write_mib_per_sec\":{m:.1}")
        });
        format!(
            "\"append_fdatasync_4k_per_sec\":{:.0},\"overwrite_fdatasync_4k_per_sec\":{:.0},\"overwrite_fdatasync_4k_8_threads_per_sec\":{:.0}{seq}",
            self.append, self.overwrite, self.overwrite8
        )
    }

    /// The rates as lines of the human report.
    pub fn print(&self) {
        println!("device (4 KiB + fdatasync):");
        println!("  append           {:>10.0} /s", self.append);
        println!("  overwrite        {:>10.0} /s", self.overwrite);
        println!("  overwrite, 8 thr {:>10.0} /s", self.overwrite8);
        if let Some(m) = self.seq_write_mib {
            println!("  sequential write {m:>10.0} MiB/s");
        }
    }
}

/// Settings recommended for a device, with the reasons.
#[derive(Debug, Clone)]
pub struct Advice {
    /// `force_sync`.
    pub force_sync: bool,
    /// `checkpoint_size`, bytes.
    pub checkpoint_size: u64,
    /// `async_flush_interval`, milliseconds.
    pub async_flush_ms: u64,
    /// Why, and what to watch.
    pub notes: Vec<String>,
}

/// The largest power of two <= `x` (x >= 1).
fn floor_pow2(x: u64) -> u64 {
    1 << (63 - x.max(1).leading_zeros())
}

/// Recommends settings for `r`.
///
/// - `force_sync` stays true: it is what makes an acknowledged message survive power loss;
///   the notes give its cost here (one fsync per commit for one producer; concurrent
///   producers share fsyncs) and warn when the rate says the fsync stops in a volatile cache.
/// - `checkpoint_size` bounds how much log a crash replays: the default 100 MiB when the
///   device writes (and so roughly reads) it in under a second, else the power of two of
///   MiB it writes in about a second (at least 16 MiB: smaller means more checkpoints).
/// - `async_flush_interval`: the default 100 ms unless an fsync takes more than a tenth of
///   it; then ten fsync times, so the flusher is not syncing all the time.
pub fn recommend(r: &DeviceRates) -> Advice {
    let mut notes = Vec::new();
    let fsync_us = 1e6 / r.overwrite.max(1e-9);
    if r.overwrite >= SUSPICIOUSLY_FAST {
        notes.push(format!(
            "{:.0} fsyncs/s ({fsync_us:.1} us each) is faster than stable storage usually is: the directory may be on tmpfs, or the disk's volatile write cache acknowledges syncs; then Sync commits survive a process crash but maybe not a power loss. Check the mount and the disk's cache setting.",
            r.overwrite
        ));
    } else if r.overwrite < SLOW {
        notes.push(format!(
            "each fsync takes {:.1} ms: one producer gets about {:.0} Sync commits/s. Put many messages in one transaction, or run producers concurrently (they share fsyncs); set force_sync = false only if losing the last commits on power loss is acceptable.",
            fsync_us / 1e3,
            r.overwrite
        ));
    } else {
        notes.push(format!(
            "force_sync costs one fsync ({fsync_us:.0} us) per commit: about {:.0} Sync commits/s for one producer; concurrent producers share fsyncs (group commit).",
            r.overwrite
        ));
    }
    let checkpoint_size = match r.seq_write_mib {
        Some(m) if m * MIB as f64 >= DEFAULT_CHECKPOINT as f64 => DEFAULT_CHECKPOINT,
        Some(m) => (floor_pow2(m as u64) * MIB).max(16 * MIB),
        None => DEFAULT_CHECKPOINT,
    };
    if let Some(m) = r.seq_write_mib {
        notes.push(format!(
            "a crash replays at most checkpoint_size of log: {} MiB at {m:.0} MiB/s is about {:.1} s of reading.",
            checkpoint_size / MIB,
            (checkpoint_size / MIB) as f64 / m.max(1e-9)
        ));
    }
    let async_flush_ms = if fsync_us * 10.0 > (DEFAULT_FLUSH_MS * 1000) as f64 {
        (fsync_us * 10.0 / 1000.0).ceil() as u64
    } else {
        DEFAULT_FLUSH_MS
    };
    Advice {
        force_sync: true,
        checkpoint_size,
        async_flush_ms,
        notes,
    }
}

/// `bench --device`: the device's rates and the recommendation.
pub fn run(dir: &Path, quick: bool, json: bool) -> Res<()> {
    let (n, seq) = if quick {
        (500, 32 * MIB)
    } else {
        (3000, 256 * MIB)
    };
    let rates = DeviceRates::measure(dir, n, seq)?;
    let advice = recommend(&rates);
    if json {
        println!(
            "{{\"device\":{{{}}},\"recommended\":{{\"force_sync\":{},\"checkpoint_size\":{},\"async_flush_interval\":\"{}ms\"}},\"notes\":{}}}",
            rates.json_fields(),
            advice.force_sync,
            advice.checkpoint_size,
            advice.async_flush_ms,
            json_strs(&advice.notes)
        );
        return Ok(());
    }
    rates.print();
    println!();
    println!("recommended settings (TOML, for --config or StoreConfig::from_toml_file):");
    println!("force_sync = {}", advice.force_sync);
    println!("checkpoint_size = {}", advice.checkpoint_size);
    println!("async_flush_interval = \"{}ms\"", advice.async_flush_ms);
    println!();
    for n in &advice.notes {
        println!("- {n}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates(overwrite: f64, seq: Option<f64>) -> DeviceRates {
        DeviceRates {
            append: overwrite / 2.0,
            overwrite,
            overwrite8: overwrite,
            seq_write_mib: seq,
        }
    }

    #[test]
    fn a_fast_disk_keeps_the_defaults() {
        let a = recommend(&rates(7800.0, Some(800.0)));
        assert!(a.force_sync);
        assert_eq!((a.checkpoint_size, a.async_flush_ms), (100 * MIB, 100));
    }

    #[test]
    fn a_slow_disk_gets_a_smaller_checkpoint_and_a_longer_flush_interval() {
        // 100 fsyncs/s (10 ms each), 40 MiB/s.
        let a = recommend(&rates(100.0, Some(40.0)));
        assert!(a.force_sync);
        assert_eq!(a.checkpoint_size, 32 * MIB);
        assert!(a.async_flush_ms == 100, "{}", a.async_flush_ms);
        assert!(a.notes[0].contains("10.0 ms"), "{:?}", a.notes);
        let a = recommend(&rates(20.0, Some(5.0)));
        assert_eq!((a.checkpoint_size, a.async_flush_ms), (16 * MIB, 500));
    }

    #[test]
    fn an_implausibly_fast_fsync_is_called_out() {
        let a = recommend(&rates(400_000.0, Some(2000.0)));
        assert!(a.notes[0].contains("tmpfs"), "{:?}", a.notes);
    }

    #[test]
    fn floor_pow2_is_right() {
        assert_eq!([1, 2, 3, 64, 100].map(floor_pow2), [1, 2, 2, 64, 64]);
    }
}
