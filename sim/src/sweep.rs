//! Runs many seeds, on a few OS threads, and gathers the failures.
//!
//! Each run is a whole turmoil simulation confined to the thread that runs
//! it (turmoil keeps its world in a scoped thread-local), so runs on
//! different threads cannot influence each other and each stays exactly
//! reproducible from its seed.

use crate::scenario::{run_connect_scenario, Outcome, Preset, ScenarioConfig};
use crate::seeds::replay_command;
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, Default)]
pub struct SweepReport {
    pub runs: usize,
    /// Failed runs, in seed order.
    pub failures: Vec<Failure>,
    pub sim_time: Duration,
    pub steps: u64,
}

#[derive(Debug)]
pub struct Failure {
    pub seed: u64,
    /// The first violation, one line.
    pub summary: String,
    /// Violations, trace tail and replay command.
    pub report: String,
    pub replay: String,
}

impl SweepReport {
    pub fn is_ok(&self) -> bool {
        self.failures.is_empty()
    }

    /// The first failure in full, then one replay line per other failure.
    pub fn failure_report(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "{} of {} seeds failed", self.failures.len(), self.runs);
        if let Some(first) = self.failures.first() {
            s.push_str(&first.report);
        }
        for f in self.failures.iter().skip(1) {
            let _ = writeln!(
                s,
                "also seed {}: {}\n  replay: {}",
                f.seed, f.summary, f.replay
            );
        }
        s
    }
}

/// Threads a sweep uses: `SIM_THREADS`, else the machine's parallelism, at
/// most 4.
pub fn sweep_threads() -> usize {
    std::env::var("SIM_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get().min(4)))
        .max(1)
}

/// Runs the scenario `preset` names for every seed, on `threads` threads. A
/// run that panics is a failure of its seed, not of the sweep.
pub fn sweep(seeds: &[u64], threads: usize, preset: Preset) -> SweepReport {
    let run = |seed| {
        let cfg = ScenarioConfig::for_preset(preset, seed).expect("a sweep needs a named preset");
        run_connect_scenario(seed, &cfg)
    };
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, Result<Outcome, Failure>)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&seed) = seeds.get(i) else {
                    return;
                };
                let outcome = catch_unwind(AssertUnwindSafe(|| run(seed))).map_err(|p| {
                    let summary = format!("panicked: {}", panic_message(&*p));
                    let report = format!(
                        "seed {seed} {summary}\nreplay: {}\n",
                        replay_command(seed, preset)
                    );
                    Failure {
                        seed,
                        summary,
                        report,
                        replay: replay_command(seed, preset),
                    }
                });
                results
                    .lock()
                    .expect("no panics hold the lock")
                    .push((i, outcome));
            });
        }
    });
    let mut results = results.into_inner().expect("no panics hold the lock");
    results.sort_by_key(|(i, _)| *i);
    let mut report = SweepReport {
        runs: results.len(),
        ..SweepReport::default()
    };
    for (_, r) in results {
        match r {
            Ok(o) => {
                report.sim_time += o.sim_time;
                report.steps += o.steps;
                if !o.is_ok() {
                    report.failures.push(Failure {
                        seed: o.seed,
                        summary: o.violations.first().cloned().unwrap_or_default(),
                        report: o.failure_report(),
                        replay: replay_command(o.seed, o.config.preset),
                    });
                }
            }
            Err(f) => report.failures.push(f),
        }
    }
    report
}

/// The text of a panic payload.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}
