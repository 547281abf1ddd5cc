//! `stowage`: the command-line tool for store directories.
//!
//! Today it runs benchmarks (`stowage bench`); the maintenance subcommands (check, repair,
//! scan, shrink, backup, restore, stats, dump) join it as the engine grows them.

mod bench;
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
    /// Measure the device's fsync rates, the durable commit path and workloads W1-W5.
    Bench(bench::BenchArgs),
    /// The W5 reader (run by `bench` in its own process).
    #[command(hide = true)]
    BenchRead {
        /// The store directory W5 loaded.
        dir: std::path::PathBuf,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench(args) => bench::run(&args),
        Command::BenchRead { dir } => workloads::read_backlog(&dir),
    };
    if let Err(e) = result {
        eprintln!("stowage: {e}");
        std::process::exit(2);
    }
}
