//! `stowage`: the command-line tool for store directories.
//!
//! Subcommands: check, scan, stats, dump (inspect.rs), backup and restore (saveset.rs),
//! bench (bench.rs). Exit codes, documented in docs/operations.md: 0 fine, 1 problems found,
//! 2 usage or I/O error. Results go to stdout (`--json`: one JSON document); errors, log
//! lines (`STOWAGE_LOG`, default `warn`) and progress spinners go to stderr.

mod bench;
mod device;
mod inspect;
mod maintain;
mod progress;
mod saveset;
mod swap_bench;
mod workloads;

use clap::{Parser, Subcommand};
use stowage::StoreConfig;

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
    /// Salvage a damaged store in place; exit 1 if messages were lost (the report names
    /// them per queue). The store must not be open.
    Repair(Target),
    /// Move live pages off the end of page.db and truncate it.
    Shrink(Target),
    /// Back the store up into a new save set. The command opens the store, so stop the
    /// broker first (a running broker backs up online with `Store::backup`).
    Backup {
        #[command(flatten)]
        target: Target,
        /// Write the save set under DIR. Without it: into `backup_path` of --config,
        /// keeping `backup_keep_generations` complete save sets there.
        #[arg(long, value_name = "DIR")]
        to: Option<std::path::PathBuf>,
    },
    /// Verify a save set against its manifest and rebuild a store from it in TARGET;
    /// exit 1 if the save set fails verification.
    Restore {
        /// The save set directory (saveset_<UTC>_<page size>).
        saveset: std::path::PathBuf,
        /// The directory to rebuild the store in (must not hold a store).
        target: std::path::PathBuf,
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Measure the device's fsync rates, the durable commit path and workloads W1-W7
    /// (--device: only the device, and the settings recommended for it).
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
    /// Open the store with this configuration (TOML; see examples/stowage.toml).
    #[cfg(feature = "toml")]
    #[arg(long, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
}

impl Target {
    /// The configuration to open the store with: --config, or the defaults.
    fn config(&self) -> Result<StoreConfig, stowage::Error> {
        #[cfg(feature = "toml")]
        if let Some(path) = &self.config {
            return StoreConfig::from_toml_file(path);
        }
        Ok(StoreConfig::default())
    }
}

fn main() {
    let cli = Cli::parse();
    progress::init_logging();
    let result = match cli.command {
        Command::Check(t) => inspect::check(&t),
        Command::Scan(t) => inspect::scan(&t),
        Command::Stats(t) => inspect::stats(&t),
        Command::Dump {
            target,
            messages,
            hex,
            limit,
        } => inspect::dump(&target, messages, hex, limit),
        Command::Repair(t) => maintain::repair(&t),
        Command::Shrink(t) => maintain::shrink(&t),
        Command::Backup { target, to } => saveset::backup(&target, to.as_deref()),
        Command::Restore {
            saveset,
            target,
            json,
        } => saveset::restore(&saveset, &target, json),
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
