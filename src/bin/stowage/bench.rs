//! `stowage bench`: the device's fsync limits and the kernel's Sync commit throughput and
//! latency, measured in the same run so the ratios are meaningful on a noisy machine.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use stowage::file::RealFs;
use stowage::kernel::Kernel;
use stowage::page::PageType;
use stowage::{Durability, StoreConfig};

use crate::device::DeviceRates;
use crate::progress::spin;
use crate::workloads::scratch;

/// Options of `stowage bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Directory to run in (a temporary directory under it is created and removed).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Commits per thread for each commit benchmark.
    #[arg(long, default_value_t = 5000)]
    commits: usize,
    /// Fewer iterations everywhere (a smoke run).
    #[arg(long)]
    quick: bool,
    /// Print machine-readable JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Skip the broker workloads W1-W7.
    #[arg(long)]
    no_workloads: bool,
    /// Measure only the device (fsync rates, sequential writes) and recommend
    /// force_sync and checkpoint settings for it.
    #[arg(long)]
    device: bool,
    /// Paired rounds of (device overwrite rate, 1-thread commits, 8-thread commits); the
    /// ratios are taken within each round, so a disk whose speed drifts over the run
    /// does not skew them, and the median round is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

struct CommitResult {
    threads: usize,
    commits: usize,
    per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
    syncs: u64,
    group_sizes: [u64; 16],
    checkpoints: u64,
    longest_stall_ms: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

/// `threads` threads each commit `n` Sync transactions changing 8 bytes of their own page.
/// With `checkpoint_every`, a thread forces a checkpoint every that many milliseconds.
fn commits(
    base: &Path,
    threads: usize,
    n: usize,
    checkpoint_every: Option<u64>,
) -> Res<CommitResult> {
    commits_paired(base, threads, n, checkpoint_every, false).map(|(r, _)| r)
}

/// Commits (as [`commits`]); with `paired` (one thread only), every `PAIR_CHUNK` commits
/// the thread also does `PAIR_CHUNK` 4 KiB overwrites + fdatasync of a preallocated file
/// in the same directory, and returns their rate beside the commits'. Interleaving the two
/// in small chunks compares them under the same disk conditions: measured one after the
/// other, a virtual disk's drift alone moved the ratio between 0.75 and 1.28.
fn commits_paired(
    base: &Path,
    threads: usize,
    n: usize,
    checkpoint_every: Option<u64>,
    paired: bool,
) -> Res<(CommitResult, Option<f64>)> {
    if paired && threads != 1 {
        return Err("paired device runs need exactly one committing thread".into());
    }
    let dir = scratch(base, &format!("commits{threads}"))?;
    std::fs::create_dir_all(&dir.0)?;
    let device = if paired {
        Some(crate::device::prepared_overwrite_file(
            &dir.0.join("device"),
            n,
        )?)
    } else {
        None
    };
    let config = StoreConfig {
        page_size: 4096,
        initial_db_size_pages: 1024,
        ..StoreConfig::default()
    };
    let k = Arc::new(Kernel::open(
        Arc::new(RealFs::new()),
        &dir.0.join("store"),
        &config,
    )?);
    let pages: Vec<u64> = {
        let mut tx = k.begin()?;
        let ids = (0..threads)
            .map(|_| tx.allocate(PageType::Raw))
            .collect::<Result<Vec<_>, _>>()?;
        tx.commit(Durability::Sync)?;
        ids
    };
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let checkpointer = checkpoint_every.map(|ms| {
        let k = k.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(ms));
                // A failed checkpoint shows up as failed commits.
                let _ = k.checkpoint();
            }
        })
    });
    let before = k.stats();
    let start = Instant::now();
    let workers: Vec<_> = pages
        .iter()
        .map(|&page| {
            let k = k.clone();
            let device = device.clone();
            std::thread::spawn(
                move || -> Result<(Vec<Duration>, Duration), Box<dyn std::error::Error + Send + Sync>> {
                let mut lat = Vec::with_capacity(n);
                let mut device_time = Duration::ZERO;
                let block = [0xA5u8; 4096];
                for i in 0..n as u64 {
                    if let Some(f) = &device {
                        if i % PAIR_CHUNK == 0 {
                            let t = Instant::now();
                            for j in i..(i + PAIR_CHUNK).min(n as u64) {
                                std::os::unix::fs::FileExt::write_all_at(
                                    f.as_ref(),
                                    &block,
                                    j * 4096,
                                )?;
                                f.sync_data()?;
                            }
                            device_time += t.elapsed();
                        }
                    }
                    let t = Instant::now();
                    let mut tx = k.begin()?;
                    tx.page_mut(page)?[64..72].copy_from_slice(&i.to_le_bytes());
                    tx.commit(Durability::Sync)?;
                    lat.push(t.elapsed());
                }
                Ok((lat, device_time))
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut device_time = Duration::ZERO;
    for w in workers {
        let (lat, d) = w
            .join()
            .map_err(|_| "worker panicked")?
            .map_err(|e| e.to_string())?;
        all.extend(lat);
        device_time += d;
    }
    // Paired: the device's share of the wall time is not the commits'.
    let elapsed = start.elapsed().saturating_sub(device_time);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(c) = checkpointer {
        c.join().map_err(|_| "checkpointer panicked")?;
    }
    let after = k.stats();
    all.sort_unstable();
    let mut groups = [0u64; 16];
    for (i, g) in groups.iter_mut().enumerate() {
        *g = after.log.group_sizes[i] - before.log.group_sizes[i];
    }
    let r = CommitResult {
        threads,
        commits: all.len(),
        per_sec: all.len() as f64 / elapsed.as_secs_f64(),
        p50_us: percentile(&all, 0.50),
        p99_us: percentile(&all, 0.99),
        max_us: percentile(&all, 1.0),
        syncs: after.log.syncs - before.log.syncs,
        group_sizes: groups,
        checkpoints: after.checkpoints - before.checkpoints,
        longest_stall_ms: after.longest_checkpoint_stall.as_secs_f64() * 1e3,
    };
    drop(k);
    let device_rate = device.map(|_| n as f64 / device_time.as_secs_f64().max(1e-9));
    Ok((r, device_rate))
}

/// Commits, then device syncs, alternate in chunks this long in a paired run.
const PAIR_CHUNK: u64 = 100;

/// One paired round: the device and both commit runs measured back to back.
struct Round {
    overwrite: f64,
    one: CommitResult,
    eight: CommitResult,
}

impl Round {
    fn vs_device(&self) -> f64 {
        self.one.per_sec / self.overwrite
    }

    fn scaling(&self) -> f64 {
        self.eight.per_sec / self.one.per_sec
    }
}

fn histogram(g: &[u64; 16]) -> String {
    g.iter()
        .enumerate()
        .filter(|(_, &c)| c > 0)
        .map(|(i, c)| format!("{}-{}:{c}", 1u64 << i, (1u64 << (i + 1)) - 1))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs everything and prints the table (or JSON).
pub fn run(args: &BenchArgs) -> Res<()> {
    if args.device {
        return crate::device::run(&args.dir, args.quick, args.json);
    }
    let n = if args.quick {
        args.commits.min(500)
    } else {
        args.commits
    };
    let dev_n = if args.quick { 500 } else { 3000 };
    let dev = DeviceRates::measure(&args.dir, dev_n, 0)?;
    let mut rounds = Vec::new();
    for round in 0..args.rounds.max(1) {
        let (one, overwrite) = spin(
            format!("Sync commits, 1 thread, paired with device syncs (round {round})"),
            || commits_paired(&args.dir, 1, n, None, true),
        )?;
        let overwrite = overwrite.ok_or("a paired run measured no device rate")?;
        let eight = spin("Sync commits, 8 threads", || commits(&args.dir, 8, n, None))?;
        rounds.push(Round {
            overwrite,
            one,
            eight,
        });
    }
    // The round whose 8/1 ratio is the median; its figures stand for the run.
    rounds.sort_by(|a, b| a.scaling().total_cmp(&b.scaling()));
    let mid = rounds.len() / 2;
    let overwrite = rounds[mid].overwrite;
    let ckpt = spin("Sync commits, 8 threads, checkpoints", || {
        commits(&args.dir, 8, n, Some(200))
    })?;
    let scale = if args.quick { 10 } else { 1 };
    let exe = std::env::current_exe()?;
    let (work, w7) = if args.no_workloads {
        (Vec::new(), None)
    } else {
        let work = crate::workloads::all(&args.dir, scale, &exe)?;
        let d = scratch(&args.dir, "w7")?;
        let w7 = spin("W7: swap", || {
            crate::swap_bench::w7(&d.0, 1_000_000 / scale)
        })?;
        (work, Some(w7))
    };
    if args.json {
        let row = |r: &CommitResult| {
            format!(
                "{{\"threads\":{},\"commits\":{},\"per_sec\":{:.0},\"p50_us\":{:.1},\"p99_us\":{:.1},\"max_us\":{:.1},\"syncs\":{},\"checkpoints\":{},\"longest_checkpoint_stall_ms\":{:.2},\"group_sizes\":{:?}}}",
                r.threads, r.commits, r.per_sec, r.p50_us, r.p99_us, r.max_us, r.syncs, r.checkpoints, r.longest_stall_ms, r.group_sizes
            )
        };
        let w: Vec<String> = work
            .iter()
            .map(|f| {
                let extra: Vec<String> = f.extra.iter().map(|(k, v)| format!("{k:?}:{v:?}")).collect();
                format!(
                    "{{\"name\":{:?},\"ops\":{},\"per_sec\":{:.0},\"mib_per_sec\":{:.1},\"p50_us\":{:.1},\"p99_us\":{:.1},\"extra\":{{{}}}}}",
                    f.name, f.ops, f.per_sec, f.mib_per_sec, f.p50_us, f.p99_us, extra.join(",")
                )
            })
            .collect();
        let w7 = w7.as_ref().map_or("null".to_string(), |f| {
            format!(
                "{{\"count\":{},\"appends_per_sec\":{:.0},\"append_mib_per_sec\":{:.1},\"drains_per_sec\":{:.0}}}",
                f.count, f.appends_per_sec, f.append_mib_per_sec, f.drains_per_sec
            )
        });
        println!(
            "{{\"device\":{{{}}},\"rounds\":[{}],\"sync_commits_1\":{},\"sync_commits_8\":{},\"sync_commits_8_with_checkpoints\":{},\"workloads\":[{}],\"w7\":{w7}}}",
            dev.json_fields(),
            rounds.iter().map(|r| format!(
                "{{\"overwrite_fdatasync_4k_per_sec\":{:.0},\"one_thread_per_sec\":{:.0},\"eight_threads_per_sec\":{:.0},\"one_vs_device\":{:.3},\"eight_vs_one\":{:.3}}}",
                r.overwrite, r.one.per_sec, r.eight.per_sec, r.vs_device(), r.scaling()
            )).collect::<Vec<_>>().join(","),
            row(&rounds[mid].one), row(&rounds[mid].eight), row(&ckpt), w.join(",")
        );
        return Ok(());
    }
    dev.print();
    println!();
    println!("Sync commits (one 8-byte change each):");
    println!(
        "  threads   commits/s   p50 us   p99 us    max us   syncs  ckpts  stall ms  group sizes"
    );
    for r in [&rounds[mid].one, &rounds[mid].eight, &ckpt] {
        println!(
            "  {:>7} {:>11.0} {:>8.1} {:>8.1} {:>9.1} {:>7} {:>6} {:>9.2}  {}",
            r.threads,
            r.per_sec,
            r.p50_us,
            r.p99_us,
            r.max_us,
            r.syncs,
            r.checkpoints,
            r.longest_stall_ms,
            histogram(&r.group_sizes)
        );
    }
    println!();
    println!(
        "rounds (1 thread interleaved with device overwrites in chunks of {PAIR_CHUNK}, then 8 threads):"
    );
    println!("  device/s   1 thread/s   8 threads/s   1 thread / device   8 / 1");
    for r in &rounds {
        println!(
            "  {:>8.0} {:>12.0} {:>13.0} {:>19.2} {:>7.2}",
            r.overwrite,
            r.one.per_sec,
            r.eight.per_sec,
            r.vs_device(),
            r.scaling()
        );
    }
    let mut vs_device: Vec<f64> = rounds.iter().map(Round::vs_device).collect();
    vs_device.sort_by(f64::total_cmp);
    println!(
        "ratios (medians of the rounds): 1 thread / device overwrite = {:.2}; 8 threads / 1 thread = {:.2}",
        vs_device[vs_device.len() / 2],
        rounds[mid].scaling()
    );
    if !work.is_empty() {
        println!();
        println!("workloads (1 KiB payloads, page size 4096):");
        for f in &work {
            println!(
                "  {:<48} {:>10.0} /s {:>8.1} MiB/s  p50 {:>8.1} us  p99 {:>8.1} us",
                f.name, f.per_sec, f.mib_per_sec, f.p50_us, f.p99_us
            );
            for (k, v) in &f.extra {
                println!("      {k}: {v}");
            }
        }
        println!(
            "  W1 / device overwrite = {:.2}",
            work[0].per_sec / overwrite
        );
    }
    if let Some(w7) = &w7 {
        println!();
        println!("W7 swap:");
        println!("{w7}");
    }
    Ok(())
}
