//! A run's outcome: what every scenario reports (its seed, trace,
//! violations, simulated time, steps and replay command), and the
//! scenario's own details.

use crate::sweep::RunOutcome;
use crate::trace::Trace;
use std::fmt::Write as _;
use std::time::Duration;

/// What a scenario adds to the outcome of a run.
pub trait Details {
    /// How many lines of the trace a failure report ends with.
    const TRACE_TAIL: usize = 60;

    /// How often things of interest happened, for a sweep's summary.
    fn counts(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

/// The result of one run of a scenario whose details are `D`.
#[derive(Debug)]
pub struct Outcome<D> {
    pub seed: u64,
    pub trace: Trace,
    pub violations: Vec<String>,
    /// Simulated time the run took.
    pub sim_time: Duration,
    pub steps: u64,
    /// The one-line command that replays the run.
    pub replay: String,
    pub details: D,
}

impl<D: Details> Outcome<D> {
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// The trace as one readable line per event.
    pub fn rendered(&self) -> String {
        self.trace.render()
    }

    /// Violations, the end of the trace, and the command that replays it.
    pub fn failure_report(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "seed {} violated invariants:", self.seed);
        for v in &self.violations {
            let _ = writeln!(s, "  - {v}");
        }
        let tail = self.trace.render_tail(D::TRACE_TAIL);
        let _ = writeln!(s, "trace (end):\n{tail}");
        let _ = writeln!(s, "replay: {}", self.replay);
        s
    }

    /// Panics with [`Outcome::failure_report`] if an invariant was violated.
    pub fn assert_ok(&self) {
        if !self.is_ok() {
            panic!("{}", self.failure_report());
        }
    }
}

impl<D: Details> RunOutcome for Outcome<D> {
    fn seed(&self) -> u64 {
        self.seed
    }
    fn violations(&self) -> &[String] {
        &self.violations
    }
    fn failure_report(&self) -> String {
        Outcome::failure_report(self)
    }
    fn replay(&self) -> String {
        self.replay.clone()
    }
    fn sim_time(&self) -> Duration {
        self.sim_time
    }
    fn rendered(&self) -> String {
        Outcome::rendered(self)
    }
    fn steps(&self) -> u64 {
        self.steps
    }
    fn counts(&self) -> Vec<(&'static str, u64)> {
        self.details.counts()
    }
}
