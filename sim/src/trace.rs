//! The simulation trace: one line per protocol event or injected fault,
//! stamped with simulated time and the host it happened on.
//!
//! Hosts, clients and the harness share one trace through [`SharedTrace`]
//! (the simulation is single-threaded). Lines are only ever appended, in the
//! order turmoil runs hosts, which is deterministic; [`Trace::render`] sorts
//! them by time (stably) so that a line of a host ticked later in the same
//! step still reads in time order.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::rc::Rc;
use std::time::Duration;

/// Name used for lines the harness itself records (faults, phases).
pub const HARNESS: &str = "harness";

pub type SharedTrace = Rc<RefCell<Trace>>;

/// A simulated time as the trace and the plans write it: `12.345s`.
pub fn secs(d: Duration) -> String {
    format!("{}.{:03}s", d.as_secs(), d.subsec_millis())
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// Simulated time since the simulation started.
    pub at: Duration,
    pub host: String,
    pub text: String,
}

#[derive(Clone, Debug, Default)]
pub struct Trace {
    lines: Vec<Line>,
}

impl Trace {
    pub fn shared() -> SharedTrace {
        Rc::new(RefCell::new(Trace::default()))
    }

    pub fn record(&mut self, at: Duration, host: &str, text: impl Into<String>) {
        self.lines.push(Line {
            at,
            host: host.to_string(),
            text: text.into(),
        });
    }

    /// Records at the current simulated time. Inside a host or client that is
    /// `turmoil::sim_elapsed()`; outside one (the harness between steps) there
    /// is no current host, so the harness uses [`Trace::record`] with
    /// `Sim::elapsed()` instead.
    pub fn record_now(&mut self, host: &str, text: impl Into<String>) {
        let at = turmoil::sim_elapsed().unwrap_or_default();
        self.record(at, host, text);
    }

    pub fn lines(&self) -> &[Line] {
        &self.lines
    }

    /// One line per entry: `  1.250s balancer  probe server 2 for client a3`.
    pub fn render(&self) -> String {
        let mut lines: Vec<&Line> = self.lines.iter().collect();
        lines.sort_by_key(|l| l.at);
        let mut out = String::new();
        for l in lines {
            let ms = l.at.as_millis();
            let _ = writeln!(
                out,
                "{:>4}.{:03}s {:<9} {}",
                ms / 1000,
                ms % 1000,
                l.host,
                l.text
            );
        }
        out
    }

    /// The last `n` rendered lines, for failure reports.
    pub fn render_tail(&self, n: usize) -> String {
        let all = self.render();
        let lines: Vec<&str> = all.lines().collect();
        let skip = lines.len().saturating_sub(n);
        let mut out = String::new();
        if skip > 0 {
            let _ = writeln!(out, "   ... {skip} earlier lines ...");
        }
        for l in &lines[skip..] {
            let _ = writeln!(out, "{l}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_sorted_fixed_width_lines() {
        let mut t = Trace::default();
        t.record(Duration::from_millis(1250), "balancer", "b");
        t.record(Duration::from_millis(17), "server1", "a");
        t.record(Duration::from_millis(1250), "client1", "c");
        assert_eq!(
            t.render(),
            "   0.017s server1   a\n   1.250s balancer  b\n   1.250s client1   c\n"
        );
    }
}
