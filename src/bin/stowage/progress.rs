//! Progress on stderr for long work, and the log subscriber that shares stderr with it.
//!
//! A spinner is drawn only when stderr is a terminal, so pipes, tests and `--json`
//! consumers see nothing of it; stdout carries only results. Log lines (`STOWAGE_LOG`)
//! are printed with the spinner lifted, so the two never garble each other.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use parking_lot::Mutex;
use tracing_subscriber::filter::{EnvFilter, LevelFilter};

/// The spinner on screen, if any (one step at a time runs with one).
static ACTIVE: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Runs `work` with a spinner showing `message` and the elapsed time, then clears it.
pub fn spin<T>(message: impl Into<String>, work: impl FnOnce() -> T) -> T {
    let pb = if std::io::stderr().is_terminal() {
        let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
            pb.set_style(style);
        }
        pb.set_message(message.into());
        pb.enable_steady_tick(Duration::from_millis(120));
        pb
    } else {
        ProgressBar::hidden()
    };
    *ACTIVE.lock() = Some(pb.clone());
    let out = work();
    ACTIVE.lock().take();
    pb.finish_and_clear();
    out
}

/// stderr for log lines: each formatted event is written in one call, with the spinner
/// (if one is drawn) lifted while it is.
struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let active = ACTIVE.lock().clone();
        match active {
            Some(pb) => pb.suspend(|| std::io::stderr().write(buf)),
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Installs the tracing subscriber: events at or above `STOWAGE_LOG`'s filter (default
/// `warn`; e.g. `info`, `stowage=debug`) go to stderr.
pub fn init_logging() {
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::WARN.into())
        .with_env_var("STOWAGE_LOG")
        .from_env_lossy();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LogWriter)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
