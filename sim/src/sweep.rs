//! Runs many seeds, on a few OS threads, and gathers the failures.
//!
//! Each run is a whole turmoil simulation confined to the thread that runs
//! it (turmoil keeps its world in a scoped thread-local), so runs on
//! different threads cannot influence each other and each stays exactly
//! reproducible from its seed.

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
    /// [`RunOutcome::counts`] summed over the runs, in first-seen order.
    pub counts: Vec<(&'static str, u64)>,
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

/// What a sweep needs to know of one run's outcome.
pub trait RunOutcome {
    fn seed(&self) -> u64;
    fn violations(&self) -> &[String];
    /// Violations, the end of the trace, and the replay command.
    fn failure_report(&self) -> String;
    /// The one-line command that replays this run.
    fn replay(&self) -> String;
    fn sim_time(&self) -> Duration;
    /// The whole trace, one line per event.
    fn rendered(&self) -> String;
    fn steps(&self) -> u64;
    /// How often things of interest happened in the run, summed by a sweep
    /// to show what the seeds covered.
    fn counts(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

/// Runs `run` for every seed, on `threads` threads; `replay` names the
/// command that replays a seed whose run panicked.
pub fn sweep_with<O, R, P>(seeds: &[u64], threads: usize, run: R, replay: P) -> SweepReport
where
    O: RunOutcome + Send,
    R: Fn(u64) -> O + Sync,
    P: Fn(u64) -> String + Sync,
{
    let next = AtomicUsize::new(0);
    // Only each seed's summary is kept: a run's outcome (its trace, its
    // clients' records) is dropped as soon as its seed is done, so a sweep's
    // memory does not grow with its seeds.
    let results: Mutex<Vec<(usize, SeedSummary)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&seed) = seeds.get(i) else {
                    return;
                };
                let summary = match catch_unwind(AssertUnwindSafe(|| run(seed))) {
                    Ok(outcome) => SeedSummary::of(&outcome),
                    Err(p) => {
                        let summary = format!("panicked: {}", panic_message(&*p));
                        let report = format!("seed {seed} {summary}\nreplay: {}\n", replay(seed));
                        SeedSummary {
                            failure: Some(Failure {
                                seed,
                                summary,
                                report,
                                replay: replay(seed),
                            }),
                            ..SeedSummary::default()
                        }
                    }
                };
                results
                    .lock()
                    .expect("no panics hold the lock")
                    .push((i, summary));
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
        report.sim_time += r.sim_time;
        report.steps += r.steps;
        for (what, n) in r.counts {
            match report.counts.iter_mut().find(|(w, _)| *w == what) {
                Some((_, total)) => *total += n,
                None => report.counts.push((what, n)),
            }
        }
        report.failures.extend(r.failure);
    }
    report
}

/// What a sweep keeps of one seed's run.
#[derive(Default)]
struct SeedSummary {
    sim_time: Duration,
    steps: u64,
    counts: Vec<(&'static str, u64)>,
    failure: Option<Failure>,
}

impl SeedSummary {
    fn of<O: RunOutcome>(o: &O) -> SeedSummary {
        let failure = (!o.violations().is_empty()).then(|| Failure {
            seed: o.seed(),
            summary: o.violations().first().cloned().unwrap_or_default(),
            report: o.failure_report(),
            replay: o.replay(),
        });
        SeedSummary {
            sim_time: o.sim_time(),
            steps: o.steps(),
            counts: o.counts(),
            failure,
        }
    }
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

impl<O: RunOutcome + ?Sized> RunOutcome for Box<O> {
    fn seed(&self) -> u64 {
        (**self).seed()
    }
    fn violations(&self) -> &[String] {
        (**self).violations()
    }
    fn failure_report(&self) -> String {
        (**self).failure_report()
    }
    fn replay(&self) -> String {
        (**self).replay()
    }
    fn sim_time(&self) -> Duration {
        (**self).sim_time()
    }
    fn rendered(&self) -> String {
        (**self).rendered()
    }
    fn steps(&self) -> u64 {
        (**self).steps()
    }
    fn counts(&self) -> Vec<(&'static str, u64)> {
        (**self).counts()
    }
}
