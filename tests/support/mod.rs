//! The crash-sweep harness (TESTING.md), shared by every test that sweeps a write path.
//!
//! A [`Scenario`] is a workload written as a list of steps plus a way to read the state
//! back. [`sweep`] runs it once to count its mutating I/O calls, then, for every call and
//! every crash outcome of the simulated file layer (and several seeds for the random
//! ones), reruns it with a crash at that call, restarts the simulator and reopens. The
//! reopened state must equal the model after some step between the last one acknowledged
//! as durable and the one in flight. Failures name scenario, point, outcome and seed, which
//! replay it exactly (everything is deterministic).

#![allow(dead_code)]

pub mod kill;

use std::fmt::Debug;
use std::sync::Arc;

use stowage::file::{CrashOutcome, FileSystem, SimFs};
use stowage::planted::PlantedBugs;

/// A workload and its observation.
pub trait Scenario {
    /// What the test compares: the store's contents as a plain value.
    type Model: Clone + PartialEq + Debug;

    /// A short name for failure messages.
    fn name(&self) -> String;

    /// Runs the workload. Calls `step(model, durable)` after each step returns, with the
    /// model after the step and whether the step (and every one before it) is now durable.
    /// The first call reports the state right after open. Returns at the first error.
    fn run(
        &self,
        fs: Arc<dyn FileSystem>,
        bugs: PlantedBugs,
        step: &mut dyn FnMut(Self::Model, bool),
    ) -> Result<(), String>;

    /// Reopens the store on `fs` (running recovery, with the same planted bugs as the run)
    /// and reads back the model, checking the store's own consistency on the way. An error
    /// fails the crash state.
    fn recover(&self, fs: Arc<dyn FileSystem>, bugs: PlantedBugs) -> Result<Self::Model, String>;
}

/// How hard to sweep.
#[derive(Debug, Clone)]
pub struct SweepConfig {
    /// Seeds per random outcome (prefix, subset, torn).
    pub seeds: u64,
    /// Deliberate bugs to switch on (for the harness self-test).
    pub bugs: PlantedBugs,
    /// Also crash the recovery itself at every `recovery_stride`-th crash state and check a
    /// third open gives the same state (0 = never).
    pub recovery_stride: u64,
    /// Stop at the first failure.
    pub stop_at_first: bool,
}

impl Default for SweepConfig {
    fn default() -> Self {
        SweepConfig {
            seeds: std::env::var("STOWAGE_SWEEP_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(3),
            bugs: PlantedBugs::default(),
            recovery_stride: 5,
            stop_at_first: false,
        }
    }
}

/// What a sweep did.
#[derive(Debug, Default)]
pub struct SweepReport {
    /// Mutating I/O calls of the workload.
    pub calls: u64,
    /// Crash states reopened and checked.
    pub states: u64,
    /// One line per failed crash state.
    pub failures: Vec<String>,
}

/// The models a crashed run may reopen to: from the last durable step to the one in flight.
struct Trace<M> {
    models: Vec<M>,
    last_durable: usize,
}

fn run_traced<S: Scenario>(
    s: &S,
    sim: &SimFs,
    bugs: PlantedBugs,
) -> (Result<(), String>, Trace<S::Model>) {
    let mut trace = Trace {
        models: Vec::new(),
        last_durable: 0,
    };
    let r = s.run(Arc::new(sim.clone()), bugs, &mut |m, durable| {
        trace.models.push(m);
        if durable {
            trace.last_durable = trace.models.len() - 1;
        }
    });
    (r, trace)
}

/// The outcomes to try at crash point `point`. Seeds are mixed with the point: the
/// simulator's random choices depend only on the seed and the pending writes, so the same
/// seeds at every point would try the same few tear patterns everywhere.
fn outcomes(point: u64, seeds: u64) -> Vec<(CrashOutcome, u64)> {
    let mut v = vec![(CrashOutcome::ProcessKill, 0)];
    for o in [
        CrashOutcome::PowerLossPrefix,
        CrashOutcome::PowerLossSubset,
        CrashOutcome::PowerLossTorn,
    ] {
        v.extend((0..seeds).map(|i| (o, point.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i)));
    }
    v
}

/// Reopens and checks one crash state; `Ok(model)` if acceptable.
fn check_state<S: Scenario>(
    s: &S,
    bugs: PlantedBugs,
    sim: &SimFs,
    reference: &[S::Model],
    trace: &Trace<S::Model>,
) -> Result<S::Model, String> {
    let got = s.recover(Arc::new(sim.clone()), bugs)?;
    // Steps are sequential, so the crashed run's models are a prefix of the reference's.
    let lo = trace.last_durable;
    let hi = (trace.models.len()).min(reference.len() - 1);
    let allowed = &reference[lo..=hi];
    if allowed.contains(&got) {
        Ok(got)
    } else {
        let mut shown = format!("{got:?}");
        shown.truncate(300);
        Err(format!(
            "reopened to {shown}.., not one of steps {lo}..={hi}"
        ))
    }
}

/// Runs the sweep; see the module docs.
pub fn sweep<S: Scenario>(s: &S, cfg: &SweepConfig) -> SweepReport {
    let reference_sim = SimFs::new();
    let (r, reference) = run_traced(s, &reference_sim, cfg.bugs);
    if let Err(e) = r {
        panic!("{}: the workload fails without a crash: {e}", s.name());
    }
    let mut report = SweepReport {
        calls: reference_sim.mutating_calls(),
        ..SweepReport::default()
    };
    for point in 0..report.calls {
        for (outcome, seed) in outcomes(point, cfg.seeds) {
            let ctx = format!(
                "{}: point {point} outcome {outcome:?} seed {seed}",
                s.name()
            );
            let sim = SimFs::new();
            sim.set_crash_at(Some(point));
            let (r, trace) = run_traced(s, &sim, cfg.bugs);
            if r.is_ok() && !sim.is_crashed() {
                // Fewer calls than the reference (only with planted bugs): nothing to crash.
                continue;
            }
            sim.restart(outcome, seed);
            report.states += 1;
            let first = match check_state(s, cfg.bugs, &sim, &reference.models, &trace) {
                Ok(m) => m,
                Err(e) => {
                    report.failures.push(format!("{ctx}: {e}"));
                    if cfg.stop_at_first {
                        return report;
                    }
                    continue;
                }
            };
            if cfg.recovery_stride > 0 && report.states % cfg.recovery_stride == 0 {
                if let Err(e) = crash_recovery(s, cfg, point, outcome, seed, &reference, &first) {
                    report
                        .failures
                        .push(format!("{ctx}: crash during recovery: {e}"));
                    if cfg.stop_at_first {
                        return report;
                    }
                }
                report.states += 1;
            }
        }
    }
    report
}

/// Recreates the crash state, crashes its recovery at every mutating call (process kill),
/// and checks the next open yields `first`, the state an uninterrupted recovery gave.
fn crash_recovery<S: Scenario>(
    s: &S,
    cfg: &SweepConfig,
    point: u64,
    outcome: CrashOutcome,
    seed: u64,
    reference: &Trace<S::Model>,
    first: &S::Model,
) -> Result<(), String> {
    let recreate = || {
        let sim = SimFs::new();
        sim.set_crash_at(Some(point));
        let _ = run_traced(s, &sim, cfg.bugs);
        sim.restart(outcome, seed);
        sim
    };
    // Count the recovery's calls.
    let sim = recreate();
    s.recover(Arc::new(sim.clone()), cfg.bugs)?;
    let calls = sim.mutating_calls();
    for r in 0..calls {
        let sim = recreate();
        sim.set_crash_at(Some(r));
        let _ = s.recover(Arc::new(sim.clone()), cfg.bugs);
        sim.restart(CrashOutcome::ProcessKill, seed);
        let again = s
            .recover(Arc::new(sim.clone()), cfg.bugs)
            .map_err(|e| format!("recovery crashed at its call {r}: reopen failed: {e}"))?;
        if &again != first {
            return Err(format!(
                "recovery crashed at its call {r} then reopened to {again:?}, not {first:?} (reference has {} steps)",
                reference.models.len()
            ));
        }
    }
    Ok(())
}

/// Asserts a clean sweep and prints its size.
pub fn assert_clean(report: &SweepReport, name: &str) {
    println!(
        "{name}: {} I/O calls, {} crash states checked, {} failures",
        report.calls,
        report.states,
        report.failures.len()
    );
    if !report.failures.is_empty() {
        let shown: Vec<&String> = report.failures.iter().take(5).collect();
        panic!(
            "{} crash states failed; first ones:\n{shown:#?}",
            report.failures.len()
        );
    }
}

/// The crash states of a hand-written sweep over `calls` mutating I/O calls: every
/// `stride`-th call, every outcome, and for the random outcomes `STOWAGE_SWEEP_SEEDS` seeds
/// (default 2) capped at `max_seeds` (these sweeps rebuild a whole store per state).
pub fn crash_points(
    calls: u64,
    stride: usize,
    max_seeds: u64,
) -> impl Iterator<Item = (u64, CrashOutcome, u64)> {
    let seeds = std::env::var("STOWAGE_SWEEP_SEEDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(2)
        .min(max_seeds);
    (0..calls).step_by(stride).flat_map(move |point| {
        CrashOutcome::ALL.into_iter().flat_map(move |outcome| {
            let n = if outcome == CrashOutcome::ProcessKill {
                1
            } else {
                seeds
            };
            (0..n).map(move |seed| (point, outcome, seed))
        })
    })
}
