//! The process-kill harness: the test binary re-runs one of its own tests as a child (which
//! sees `env` and runs its workload forever, printing a line per acknowledged step), and the
//! parent SIGKILLs it after a delay and returns the lines it printed.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A small deterministic generator for kill delays; print its seed so a run can be replayed.
pub struct Delays(u64);

impl Delays {
    /// From `STOWAGE_KILL_SEED` if set (to replay a run), else from the clock.
    pub fn from_env() -> Self {
        let seed = std::env::var("STOWAGE_KILL_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        println!("process-kill seed {seed} (STOWAGE_KILL_SEED replays it)");
        Delays(seed | 1)
    }

    /// The next delay, `min_ms` up to `min_ms + spread_ms`.
    pub fn next(&mut self, min_ms: u64, spread_ms: u64) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_millis(min_ms + self.0 % spread_ms.max(1))
    }
}

/// Runs test `test_name` of this binary as a child with `env`, kills it with SIGKILL after
/// `delay`, and returns the lines it printed to stdout before dying.
pub fn run_and_kill(test_name: &str, env: &[(&str, String)], delay: Duration) -> Vec<String> {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    let mut cmd = Command::new(exe);
    cmd.args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawning the child");
    let out = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        BufReader::new(out)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    std::thread::sleep(delay);
    child.kill().expect("SIGKILL");
    child.wait().expect("reaping the child");
    reader.join().expect("reader thread")
}

/// Splits `WORD n` lines into (word, n), ignoring anything else the child printed.
pub fn parse(lines: &[String]) -> Vec<(String, u64)> {
    lines
        .iter()
        .filter_map(|l| {
            // The test harness prints "test NAME ... " without a newline before the child's
            // first line, which then shares that line.
            let l = l.rsplit_once(" ... ").map_or(l.as_str(), |(_, rest)| rest);
            let (w, n) = l.split_once(' ')?;
            Some((w.to_string(), n.trim().parse().ok()?))
        })
        .collect()
}
