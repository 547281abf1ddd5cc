//! The markdown table the driver prints.

use std::fmt::Write as _;
use std::time::Duration;

use crate::device::Device;
use crate::engines::display;
use crate::workloads::Outcome;

struct Row {
    workload: &'static str,
    label: &'static str,
    get: fn(&Outcome) -> f64,
    higher_is_better: bool,
    fmt: fn(f64) -> String,
}

fn thousands(v: f64) -> String {
    let n = v.round() as i64;
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

fn one(v: f64) -> String {
    format!("{v:.1}")
}

fn two(v: f64) -> String {
    format!("{v:.2}")
}

fn three(v: f64) -> String {
    format!("{v:.3}")
}

fn rows() -> Vec<Row> {
    vec![
        Row {
            workload: "W1",
            label: "W1 msg/s (1 producer, Sync tx of 1)",
            get: |o| o.per_sec,
            higher_is_better: true,
            fmt: thousands,
        },
        Row {
            workload: "W1",
            label: "W1 p99 commit µs",
            get: |o| o.p99_us,
            higher_is_better: false,
            fmt: thousands,
        },
        Row {
            workload: "W2",
            label: "W2 msg/s (8 producers, Sync tx of 1)",
            get: |o| o.per_sec,
            higher_is_better: true,
            fmt: thousands,
        },
        Row {
            workload: "W2",
            label: "W2 p99 commit µs",
            get: |o| o.p99_us,
            higher_is_better: false,
            fmt: thousands,
        },
        Row {
            workload: "W3",
            label: "W3 msg/s (Sync tx of 100)",
            get: |o| o.per_sec,
            higher_is_better: true,
            fmt: thousands,
        },
        Row {
            workload: "W4",
            label: "W4 ops/s (churn, depth 1,000)",
            get: |o| o.per_sec,
            higher_is_better: true,
            fmt: thousands,
        },
        Row {
            workload: "W4",
            label: "W4 p99 commit µs",
            get: |o| o.p99_us,
            higher_is_better: false,
            fmt: thousands,
        },
        Row {
            workload: "W4",
            label: "W4 disk used after close MiB (du)",
            get: |o| o.dir_mib,
            higher_is_better: false,
            fmt: one,
        },
        Row {
            workload: "W5",
            label: "W5 load msg/s",
            get: |o| o.per_sec,
            higher_is_better: true,
            fmt: thousands,
        },
        Row {
            workload: "W5",
            label: "W5 cold reopen ms",
            get: |o| o.reopen_ms,
            higher_is_better: false,
            fmt: two,
        },
        Row {
            workload: "W5",
            label: "W5 full in-order read s",
            get: |o| o.read_secs,
            higher_is_better: false,
            fmt: three,
        },
        Row {
            workload: "W5",
            label: "W5 reader peak RSS MiB",
            get: |o| o.read_rss_mib,
            higher_is_better: false,
            fmt: one,
        },
        Row {
            workload: "W5",
            label: "W5 disk used after close MiB (du)",
            get: |o| o.dir_mib,
            higher_is_better: false,
            fmt: one,
        },
    ]
}

/// How many times better `stowage` is than `other` (> 1: stowage better).
fn advantage(stowage: f64, other: f64, higher_is_better: bool) -> Option<f64> {
    if stowage <= 0.0 || other <= 0.0 {
        return None;
    }
    Some(if higher_is_better {
        stowage / other
    } else {
        other / stowage
    })
}

/// Everything one driver run measured.
pub struct Run<'a> {
    pub engines: &'a [String],
    pub workloads: &'a [String],
    /// Every successful child, all repeats.
    pub results: &'a [Outcome],
    /// The device at the start and at the end of the run.
    pub device: [&'a Device; 2],
    pub scale: usize,
    pub repeats: usize,
    pub took: Duration,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

impl Run<'_> {
    fn samples(&self, e: &str, w: &str, get: impl Fn(&Outcome) -> f64) -> Vec<f64> {
        self.results
            .iter()
            .filter(|o| o.engine == e && o.workload == w)
            .map(get)
            .collect()
    }

    fn extra(&self, e: &str, w: &str, key: &str) -> Option<f64> {
        let v: Vec<f64> = self
            .results
            .iter()
            .filter(|o| o.engine == e && o.workload == w)
            .filter_map(|o| o.extra.iter().find(|(k, _)| k == key).map(|(_, v)| *v))
            .collect();
        median(v)
    }
}

fn header(s: &mut String, engines: &[String], last: &str) {
    let _ = write!(s, "| |");
    for e in engines {
        let _ = write!(s, " {} |", display(e));
    }
    let _ = writeln!(s, "{last}");
    let _ = write!(s, "|---|");
    for _ in engines {
        let _ = write!(s, "---:|");
    }
    let _ = writeln!(s, "{}", if last.is_empty() { "" } else { "---:|" });
}

/// Renders the comparison: absolute figures (medians over the repeats), and in parentheses
/// how many times better stowage is than that engine on that row; with repeats, a second
/// table with each figure's range.
pub fn render(run: &Run) -> String {
    let mut s = String::new();
    let scale = run.scale;
    let s1 = scale.max(1);
    let dev = |d: &Device| {
        format!(
            "1 KiB append + fdatasync {}/s, 4 KiB overwrite + fdatasync {}/s",
            thousands(d.append_1k),
            thousands(d.overwrite_4k)
        )
    };
    let _ = writeln!(
        s,
        "Scale 1/{scale}: W1 {} tx, W2 8 x {} tx, W3 {} msgs, W4 {} tx, W5 {} msgs; 1 KiB \
         payloads; {}. Device ({}) at the start: {}; \
         at the end: {}. SQLite {}. Whole run {:.0} s.",
        thousands((20_000 / s1) as f64),
        thousands((5_000 / s1) as f64),
        thousands((200_000 / s1) as f64),
        thousands((50_000 / s1) as f64),
        thousands((1_000_000 / s1) as f64),
        if run.repeats == 1 {
            "one run of each (engine, workload)".to_string()
        } else {
            format!(
                "{} runs of each (engine, workload), medians shown",
                run.repeats
            )
        },
        run.device[0].fs,
        dev(run.device[0]),
        dev(run.device[1]),
        rusqlite::version(),
        run.took.as_secs_f64()
    );
    let _ = writeln!(s);
    header(&mut s, run.engines, " stowage vs best peer |");
    let relevant = |row: &Row| run.workloads.iter().any(|w| w == row.workload);
    for row in rows().into_iter().filter(relevant) {
        let stowage = median(run.samples("stowage", row.workload, row.get));
        let _ = write!(s, "| {} |", row.label);
        let mut best: Option<f64> = None;
        for e in run.engines {
            let Some(v) = median(run.samples(e, row.workload, row.get)) else {
                let _ = write!(s, " failed |");
                continue;
            };
            let _ = write!(s, " {}", (row.fmt)(v));
            if e != "stowage" {
                if let Some(r) = stowage.and_then(|st| advantage(st, v, row.higher_is_better)) {
                    let _ = write!(s, " ({r:.2}x)");
                }
                best = Some(match best {
                    None => v,
                    Some(b) if row.higher_is_better => b.max(v),
                    Some(b) => b.min(v),
                });
            }
            let _ = write!(s, " |");
        }
        let r = match (stowage, best) {
            (Some(st), Some(b)) => advantage(st, b, row.higher_is_better),
            _ => None,
        };
        let _ = match r {
            Some(r) => writeln!(s, " **{r:.2}x** |"),
            None => writeln!(s, " - |"),
        };
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "In parentheses and in the last column: how many times better stowage is than that \
         engine (its rate / theirs; their time, latency or size / its). Below 1.00x stowage \
         loses."
    );
    if let Some(used) = run.extra("stowage", "W4", "pages_in_use_mib") {
        let _ = writeln!(
            s,
            "stowage W4: {used:.2} MiB of pages in use (page.db and the log are preallocated \
             with fallocate, so their disk use says nothing about live data)."
        );
    }
    if let (Some(syncs), Some(commits)) = (
        run.extra("stowage", "W2", "log_syncs"),
        run.extra("stowage", "W2", "commits"),
    ) {
        if syncs > 0.0 {
            let _ = writeln!(
                s,
                "stowage W2: {} commits in {} log syncs ({:.1} per sync).",
                thousands(commits),
                thousands(syncs),
                commits / syncs
            );
        }
    }
    if run.repeats > 1 {
        let _ = writeln!(s);
        let _ = writeln!(s, "Range over the {} runs (min - max):", run.repeats);
        let _ = writeln!(s);
        header(&mut s, run.engines, "");
        for row in rows().into_iter().filter(relevant) {
            let _ = write!(s, "| {} |", row.label);
            for e in run.engines {
                let v = run.samples(e, row.workload, row.get);
                let lo = v.iter().copied().reduce(f64::min);
                let hi = v.iter().copied().reduce(f64::max);
                let _ = match (lo, hi) {
                    (Some(lo), Some(hi)) => {
                        write!(s, " {} - {} |", (row.fmt)(lo), (row.fmt)(hi))
                    }
                    _ => write!(s, " failed |"),
                };
            }
            let _ = writeln!(s);
        }
    }
    s
}
