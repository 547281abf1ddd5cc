//! `stowage`: the command-line tool for store directories.
//!
//! Today it runs benchmarks (`stowage bench`); the maintenance subcommands (check, repair,
//! scan, shrink, backup, restore, stats, dump) join it as the engine grows them.

mod bench;

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
    /// Measure the device's fsync rates and the engine's durable commit path.
    Bench(bench::BenchArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench(args) => bench::run(&args),
    };
    if let Err(e) = result {
        eprintln!("stowage: {e}");
        std::process::exit(2);
    }
}
