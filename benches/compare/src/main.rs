//! `stowage-compare`: W1–W5 of BENCHMARKS.md against stowage and its peers, each
//! (engine, workload) in a process of its own on a fresh directory.
//!
//! ```text
//! stowage-compare --all --scale 1 --dir /var/tmp/cmp          # driver: every pair, a table
//! stowage-compare --engine sqlite --workload W1 --dir D --scale 10   # one pair, one JSON line
//! ```

mod device;
mod engines;
mod table;
mod workloads;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;

use engines::{Engine, Res};
use workloads::Outcome;

const WORKLOADS: [&str; 5] = ["W1", "W2", "W3", "W4", "W5"];

/// Compare stowage with SQLite, redb, fjall (and RocksDB with the `rocksdb` feature) on the
/// broker workloads W1-W5.
#[derive(Parser, Debug)]
#[command(name = "stowage-compare")]
struct Cli {
    /// Driver mode: run every (engine, workload) in a child process and print a table.
    #[arg(long, conflicts_with_all = ["engine", "read_backlog"])]
    all: bool,
    /// The engine of a single run: stowage, sqlite, redb, fjall, rocksdb.
    #[arg(long)]
    engine: Option<String>,
    /// The workload of a single run: W1..W5.
    #[arg(long)]
    workload: Option<String>,
    /// Where fresh scratch directories are made (and removed after each run). Must not be
    /// tmpfs: the point is fsync on the real disk.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/target/scratch"))]
    dir: PathBuf,
    /// Divide BENCHMARKS.md's sizes by this (W1 20,000/S transactions, W2 8 x 5,000/S,
    /// W3 200,000/S messages, W4 50,000/S transactions, W5 1,000,000/S messages). The W4
    /// depth (1,000) and the batch sizes stay.
    #[arg(long, default_value_t = 1)]
    scale: usize,
    /// Driver: only these engines (comma-separated).
    #[arg(long, value_delimiter = ',')]
    engines: Option<Vec<String>>,
    /// Driver: only these workloads (comma-separated).
    #[arg(long, value_delimiter = ',')]
    workloads: Option<Vec<String>>,
    /// Driver: run every (workload, engine) this many times (interleaved) and report medians.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Driver: start no further repeat once the next would likely end after this many
    /// seconds from the start (judged by the repeats so far); the table says how many ran.
    #[arg(long)]
    budget_secs: Option<u64>,
    /// Driver: also write every child's JSON line to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// Allow a tmpfs `--dir` (the figures then say nothing about the disk).
    #[arg(long)]
    allow_tmpfs: bool,
    /// Internal: W5's reader, run by the W5 child in a process of its own.
    #[arg(long, hide = true, requires = "engine")]
    read_backlog: Option<PathBuf>,
    /// Single run: keep the scratch directory (its path goes to stderr), for a look at the files.
    #[arg(long)]
    keep: bool,
    /// Internal: the number of messages W5's reader must find.
    #[arg(long, hide = true, default_value_t = 0)]
    expect: u64,
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        // Best effort: a leftover directory only costs disk space.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sizes(workload: &str, scale: usize) -> Res<usize> {
    let s = scale.max(1);
    Ok(match workload {
        "W1" => 20_000 / s,
        "W2" => 5_000 / s,
        "W3" => 200_000 / s,
        "W4" => 50_000 / s,
        "W5" => 1_000_000 / s,
        w => return Err(format!("unknown workload {w:?} (W1..W5)").into()),
    })
}

/// One (engine, workload) in this process, on a fresh directory under `base`.
fn run_one<E: Engine>(
    engine: &str,
    workload: &str,
    base: &Path,
    scale: usize,
    keep: bool,
) -> Res<Outcome> {
    let n = sizes(workload, scale)?;
    std::fs::create_dir_all(base)?;
    let scratch = Scratch(base.join(format!(
        "compare-{engine}-{workload}-{}",
        std::process::id()
    )));
    if scratch.0.exists() {
        std::fs::remove_dir_all(&scratch.0)?;
    }
    let dir = scratch.0.join("store");
    let scratch = if keep {
        eprintln!("keeping {}", dir.display());
        std::mem::forget(scratch);
        None
    } else {
        Some(scratch)
    };
    let mut out = match workload {
        "W1" => workloads::publish_sync::<E>(&dir, 1, n)?,
        "W2" => workloads::publish_sync::<E>(&dir, 8, n)?,
        "W3" => workloads::batched::<E>(&dir, n)?,
        "W4" => workloads::churn::<E>(&dir, n)?,
        "W5" => {
            let mut o = workloads::backlog_load::<E>(&dir, n)?;
            let child = Command::new(std::env::current_exe()?)
                .args(["--engine", engine, "--read-backlog"])
                .arg(&dir)
                .args(["--expect", &o.ops.to_string()])
                .output()?;
            if !child.status.success() {
                return Err(format!(
                    "W5 reader process failed: {}",
                    String::from_utf8_lossy(&child.stderr).trim()
                )
                .into());
            }
            let r: workloads::ReadOutcome = serde_json::from_slice(&child.stdout)?;
            o.reopen_ms = r.reopen_ms;
            o.read_secs = r.read_secs;
            o.read_rss_mib = r.rss_mib;
            o
        }
        w => return Err(format!("unknown workload {w:?}").into()),
    };
    out.engine = engine.to_string();
    out.workload = workload.to_string();
    out.scale = scale;
    drop(scratch);
    Ok(out)
}

fn dispatch(engine: &str, workload: &str, base: &Path, scale: usize, keep: bool) -> Res<Outcome> {
    match engine {
        "stowage" => run_one::<engines::Stowage>(engine, workload, base, scale, keep),
        "sqlite" => run_one::<engines::Sqlite>(engine, workload, base, scale, keep),
        "redb" => run_one::<engines::Redb>(engine, workload, base, scale, keep),
        "fjall" => run_one::<engines::Fjall>(engine, workload, base, scale, keep),
        #[cfg(feature = "rocksdb")]
        "rocksdb" => run_one::<engines::Rocks>(engine, workload, base, scale, keep),
        #[cfg(not(feature = "rocksdb"))]
        "rocksdb" => Err("built without the `rocksdb` feature".into()),
        e => Err(format!(
            "unknown engine {e:?} (one of {})",
            engines::names().join(", ")
        )
        .into()),
    }
}

fn read_dispatch(engine: &str, dir: &Path, expect: u64) -> Res<workloads::ReadOutcome> {
    match engine {
        "stowage" => workloads::backlog_read::<engines::Stowage>(dir, expect),
        "sqlite" => workloads::backlog_read::<engines::Sqlite>(dir, expect),
        "redb" => workloads::backlog_read::<engines::Redb>(dir, expect),
        "fjall" => workloads::backlog_read::<engines::Fjall>(dir, expect),
        #[cfg(feature = "rocksdb")]
        "rocksdb" => workloads::backlog_read::<engines::Rocks>(dir, expect),
        e => Err(format!("unknown engine {e:?}").into()),
    }
}

/// Driver: every (workload, engine) pair in a child process; workloads outer, so the engines'
/// figures for one workload are taken minutes apart at most on a noisy machine.
fn drive(cli: &Cli) -> Res<()> {
    let engines: Vec<String> = match &cli.engines {
        Some(v) => v.clone(),
        None => engines::names().iter().map(|s| s.to_string()).collect(),
    };
    let work: Vec<String> = match &cli.workloads {
        Some(v) => v.clone(),
        None => WORKLOADS.iter().map(|s| s.to_string()).collect(),
    };
    for w in &work {
        sizes(w, cli.scale)?;
    }
    std::fs::create_dir_all(&cli.dir)?;
    device::refuse_tmpfs(&cli.dir, cli.allow_tmpfs)?;
    let exe = std::env::current_exe()?;
    let reps = cli.repeat.max(1);
    let started = Instant::now();
    eprintln!("device probe in {} ...", cli.dir.display());
    let dev_start = device::probe(&cli.dir)?;
    let mut results: Vec<Outcome> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut json = Vec::new();
    // Repeats outermost, so each engine's samples spread over the whole run; the engine
    // order rotates from one repeat to the next.
    let mut done = 0;
    for rep in 0..reps {
        if let (Some(budget), true) = (cli.budget_secs, rep > 0) {
            let per_rep = started.elapsed().as_secs_f64() / rep as f64;
            if started.elapsed().as_secs_f64() + per_rep > budget as f64 {
                eprintln!("stopping after {rep} repeat(s): the next would pass --budget-secs");
                break;
            }
        }
        done += 1;
        for w in &work {
            for i in 0..engines.len() {
                let e = &engines[(i + rep) % engines.len()];
                // Let the previous run's writeback finish before the next one starts.
                device::sync_all();
                std::thread::sleep(Duration::from_millis(500));
                let t = Instant::now();
                match run_child(&exe, cli, e, w) {
                    Ok((out, line)) => {
                        eprintln!(
                            "[{}/{reps}] {w} {e:<8} {:>10.0} /s  p99 {:>8.0} us  ({:.1} s wall)",
                            rep + 1,
                            out.per_sec,
                            out.p99_us,
                            t.elapsed().as_secs_f64()
                        );
                        json.push(line);
                        results.push(out);
                    }
                    Err(msg) => {
                        eprintln!("FAILED {msg}");
                        failures.push(msg);
                    }
                }
            }
        }
    }
    eprintln!("device probe again ...");
    let dev_end = device::probe(&cli.dir)?;
    if let Some(path) = &cli.json_out {
        std::fs::write(path, json.join("\n") + "\n")?;
    }
    let run = table::Run {
        engines: &engines,
        workloads: &work,
        results: &results,
        device: [&dev_start, &dev_end],
        scale: cli.scale,
        repeats: done,
        took: started.elapsed(),
    };
    print!("{}", table::render(&run));
    if !failures.is_empty() {
        println!();
        println!("Failed runs:");
        for f in &failures {
            println!("- {f}");
        }
        return Err(format!("{} run(s) failed", failures.len()).into());
    }
    Ok(())
}

/// One child process; its parsed result and raw JSON line, or what went wrong.
fn run_child(exe: &Path, cli: &Cli, e: &str, w: &str) -> Result<(Outcome, String), String> {
    let o = Command::new(exe)
        .args(["--engine", e, "--workload", w, "--scale"])
        .arg(cli.scale.to_string())
        .arg("--dir")
        .arg(&cli.dir)
        .output()
        .map_err(|err| format!("{e} {w}: could not start the child: {err}"))?;
    if !o.status.success() {
        return Err(format!(
            "{e} {w}: failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    let line = String::from_utf8_lossy(&o.stdout).trim().to_string();
    match serde_json::from_str::<Outcome>(&line) {
        Ok(out) => Ok((out, line)),
        Err(err) => Err(format!("{e} {w}: unreadable result {line:?}: {err}")),
    }
}

fn main() {
    let cli = Cli::parse();
    let result = if cli.all {
        drive(&cli)
    } else if let Some(dir) = &cli.read_backlog {
        let engine = cli.engine.as_deref().unwrap_or_default();
        read_dispatch(engine, dir, cli.expect)
            .and_then(|r| {
                println!("{}", serde_json::to_string(&r)?);
                Ok(())
            })
            .map_err(|e| format!("engine {engine} W5 reader: {e}").into())
    } else {
        match (&cli.engine, &cli.workload) {
            (Some(e), Some(w)) => device::refuse_tmpfs(&cli.dir, cli.allow_tmpfs)
                .and_then(|()| dispatch(e, w, &cli.dir, cli.scale, cli.keep))
                .and_then(|o| {
                    println!("{}", serde_json::to_string(&o)?);
                    Ok(())
                })
                .map_err(|err| format!("engine {e} workload {w}: {err}").into()),
            _ => Err("give --all, or --engine and --workload".into()),
        }
    };
    if let Err(e) = result {
        eprintln!("stowage-compare: {e}");
        std::process::exit(1);
    }
}
