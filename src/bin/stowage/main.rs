//! `stowage`: the command-line tool for store directories.
//!
//! Today it runs benchmarks (`stowage bench`); the maintenance subcommands (check, repair,
//! scan, shrink, backup, restore, stats, dump) join it as the engine grows them.

mod bench;
mod inspect;
mod swap_bench;
mod workloads;

use clap::{Parser, Subcommand};

/// The stowage command.
#[derive(Parser, Debug)]
#[command(
    name = "stowage",
    version,
    about = "Tools for stowage store directories"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Walk every structure of a store; exit 1 if problems are found.
    Check(Target),
    /// Message-size histogram and the recommended page size.
    Scan(Target),
    /// The store's counters.
    Stats(Target),
    /// Queues and their entries (payloads with --messages), prepared xids, durables.
    Dump {
        #[command(flatten)]
        target: Target,
        /// Include payloads (UTF-8 when valid, else hex).
        #[arg(long)]
        messages: bool,
        /// Show payloads as hex always.
        #[arg(long)]
        hex: bool,
        /// Entries per queue at most.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Measure the device's fsync rates, the durable commit path and workloads W1-W7.
    Bench(bench::BenchArgs),
    /// The W5 reader (run by `bench` in its own process).
    #[command(hide = true)]
    BenchRead {
        /// The store directory W5 loaded.
        dir: std::path::PathBuf,
    },
}

/// A store directory and the output format.
#[derive(clap::Args, Debug)]
struct Target {
    /// The store directory.
    dir: std::path::PathBuf,
    /// One JSON document instead of text.
    #[arg(long)]
    json: bool,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check(t) => inspect::check(&t.dir, t.json),
        Command::Scan(t) => inspect::scan(&t.dir, t.json),
        Command::Stats(t) => inspect::stats(&t.dir, t.json),
        Command::Dump {
            target,
            messages,
            hex,
            limit,
        } => inspect::dump(&target.dir, target.json, messages, hex, limit),
        Command::Bench(args) => bench::run(&args).map(|()| 0),
        Command::BenchRead { dir } => workloads::read_backlog(&dir).map(|()| 0),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("stowage: {e}");
            std::process::exit(2);
        }
    }
}
