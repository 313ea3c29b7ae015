//! Waiting for the healed cluster to converge and stay converged, as the
//! replicated scenarios do after the heal.

use crate::trace::secs;
use std::time::Duration;

/// Convergence is checked every this many steps.
const CHECK_EVERY: u64 = 50;
/// How long the converged state must stay unchanged to count.
const STABLE_FOR: Duration = Duration::from_secs(1);

/// The wait for convergence, from the heal on.
#[derive(Debug)]
pub struct Settle {
    since: Duration,
    /// How long the cluster gets.
    max: Duration,
    /// The converged state and since when it has held.
    stable: Option<(String, Duration)>,
}

/// Where the wait stands after a step.
#[derive(Debug, PartialEq, Eq)]
pub enum Settling {
    Waiting,
    /// The cluster has held this converged state long enough.
    Settled(String),
    /// Time is up: the violation.
    TimedOut(String),
}

impl Settle {
    pub fn new(since: Duration, max: Duration) -> Self {
        Settle {
            since,
            max,
            stable: None,
        }
    }

    /// After step number `steps`, at `now`: `converged` tells the cluster's
    /// state in one line, or what differs. While `busy` names what still
    /// runs, the wait goes on but the state is not checked (a timeout says
    /// what it was).
    pub fn poll(
        &mut self,
        now: Duration,
        steps: u64,
        busy: Option<&str>,
        converged: impl Fn() -> Result<String, String>,
    ) -> Settling {
        if now > self.since + self.max {
            let why = converged()
                .err()
                .unwrap_or_else(|| "the converged state kept changing".into());
            let busy = busy.map(|b| format!(" ({b})")).unwrap_or_default();
            return Settling::TimedOut(format!(
                "the healed cluster did not converge within {}{busy}: {why}",
                secs(self.max)
            ));
        }
        if busy.is_some() || !steps.is_multiple_of(CHECK_EVERY) {
            return Settling::Waiting;
        }
        match (converged(), &self.stable) {
            (Err(_), _) => self.stable = None,
            (Ok(state), Some((s, from))) if *s == state => {
                if now >= *from + STABLE_FOR {
                    return Settling::Settled(state);
                }
            }
            (Ok(state), _) => self.stable = Some((state, now)),
        }
        Settling::Waiting
    }
}
