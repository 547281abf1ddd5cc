//! Crash sweep over the durable-subscription write paths (`stowage::durables`): open
//! (directory creation), saves, replaces (with short and hashed long names) and removes.
//! For every mutating I/O call and every crash outcome, the reopened `list()` must equal
//! the state after the last acknowledged step or after the one in flight — never a torn,
//! missing or resurrected subscription, never an open or list error.
//!
//! Replay a failure with the printed point, outcome and seed. `STOWAGE_SWEEP_SEEDS` sets the
//! seeds per random outcome (default 8 here).

mod support;

use std::path::Path;
use std::sync::Arc;

use stowage::durables::{DurableSubscription, Durables};
use stowage::file::FileSystem;
use stowage::planted::PlantedBugs;
use support::{assert_clean, sweep, Scenario, SweepConfig};

const STORE: &str = "/store";

type Model = Vec<DurableSubscription>;

enum Op {
    Save(DurableSubscription),
    Remove(String, String),
}

fn sub(c: &str, n: &str, topic: &str, selector: Option<&str>) -> DurableSubscription {
    DurableSubscription {
        client_id: c.into(),
        name: n.into(),
        topic: topic.into(),
        selector: selector.map(str::to_string),
        no_local: selector.is_some(),
    }
}

struct DurablesScenario {
    ops: Vec<Op>,
}

impl DurablesScenario {
    fn new() -> Self {
        let long = "L".repeat(400);
        let ops = vec![
            Op::Save(sub("c1", "a", "orders", None)),
            Op::Save(sub("c1", "b", "prices", Some("x > 1"))),
            Op::Save(sub("c1", "a", "orders.v2", Some("prio = 9"))),
            Op::Save(sub(&long, "weird $/..", "news", None)),
            Op::Remove("c1".into(), "b".into()),
            Op::Save(sub(&long, "weird $/..", &"t".repeat(700), Some("long"))),
            Op::Remove("nobody".into(), "x".into()),
            Op::Save(sub("c2", "é", "intl", None)),
            Op::Remove("c1".into(), "a".into()),
            Op::Save(sub("c1", "b", "prices.v3", None)),
            Op::Remove(long.clone(), "weird $/..".into()),
        ];
        DurablesScenario { ops }
    }
}

fn apply(model: &mut Model, op: &Op) {
    match op {
        Op::Save(s) => {
            model.retain(|m| !(m.client_id == s.client_id && m.name == s.name));
            model.push(s.clone());
        }
        Op::Remove(c, n) => model.retain(|m| !(&m.client_id == c && &m.name == n)),
    }
    model.sort_by(|a, b| (&a.client_id, &a.name).cmp(&(&b.client_id, &b.name)));
}

impl Scenario for DurablesScenario {
    type Model = Model;

    fn name(&self) -> String {
        "durables".into()
    }

    fn run(
        &self,
        fs: Arc<dyn FileSystem>,
        bugs: PlantedBugs,
        step: &mut dyn FnMut(Model, bool),
    ) -> Result<(), String> {
        let d = Durables::open_with(fs, Path::new(STORE), bugs).map_err(|e| e.to_string())?;
        let mut model = Model::new();
        step(model.clone(), true);
        for op in &self.ops {
            let existed = match op {
                Op::Save(s) => d.save(s).map(|()| true),
                Op::Remove(c, n) => d.remove(c, n),
            }
            .map_err(|e| e.to_string())?;
            let before = model.clone();
            apply(&mut model, op);
            if let Op::Remove(..) = op {
                assert_eq!(
                    existed,
                    before != model,
                    "remove reports whether it existed"
                );
            }
            // Every save and remove is durable when it returns.
            step(model.clone(), true);
        }
        Ok(())
    }

    fn recover(&self, fs: Arc<dyn FileSystem>, bugs: PlantedBugs) -> Result<Model, String> {
        let d = Durables::open_with(Arc::clone(&fs), Path::new(STORE), bugs)
            .map_err(|e| format!("open: {e}"))?;
        let list = d.list().map_err(|e| format!("list: {e}"))?;
        for s in &list {
            let got = d
                .get(&s.client_id, &s.name)
                .map_err(|e| format!("get: {e}"))?;
            if got.as_ref() != Some(s) {
                return Err(format!("get disagrees with list: {got:?} vs {s:?}"));
            }
        }
        let names = fs
            .read_dir(&Path::new(STORE).join("durables"))
            .map_err(|e| format!("read_dir: {e}"))?;
        if names.len() != list.len() {
            return Err(format!("leftover files after open: {names:?}"));
        }
        Ok(list)
    }
}

fn config() -> SweepConfig {
    SweepConfig {
        seeds: std::env::var("STOWAGE_SWEEP_SEEDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(8),
        ..SweepConfig::default()
    }
}

#[test]
fn every_crash_point_and_outcome_reopens_to_the_acknowledged_or_in_flight_state() {
    let s = DurablesScenario::new();
    let report = sweep(&s, &config());
    assert_clean(&report, "durables crash sweep");
    assert!(
        report.calls >= 40,
        "the workload shrank: {} calls",
        report.calls
    );
    assert!(report.states >= 1000, "only {} crash states", report.states);
}

/// The sweep must be able to fail: with the directory fsyncs skipped, some power loss
/// loses an acknowledged save or brings back an acknowledged removal.
#[test]
fn the_sweep_catches_a_skipped_directory_fsync() {
    let s = DurablesScenario::new();
    let cfg = SweepConfig {
        bugs: PlantedBugs {
            skip_dir_fsync: true,
            ..PlantedBugs::default()
        },
        recovery_stride: 0,
        ..config()
    };
    let report = sweep(&s, &cfg);
    println!(
        "planted skip_dir_fsync: {} of {} crash states failed",
        report.failures.len(),
        report.states
    );
    assert!(
        !report.failures.is_empty(),
        "the sweep missed a skipped directory fsync"
    );
}
