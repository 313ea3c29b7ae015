//! Busy-polling before sleeping, while events come close together.
//!
//! Falling asleep in `epoll_wait` and being woken costs a context switch
//! on each side and, on a virtual machine, an inter-processor interrupt
//! through the hypervisor: about 10 µs per wakeup on the reference
//! machine, as much as all the rest of a 4 KiB round trip. A stop-and-wait
//! transfer (window 1) pays it twice per chunk. So when the last event
//! came within the budget of the wait before it, the next wait first polls
//! without sleeping for up to the budget, and sleeps only then.
//!
//! The policy keeps the cost bounded:
//! - an idle node, or one whose events are further apart than the budget,
//!   never spins: one wait longer than the budget disarms spinning until a
//!   wait is short again (at most one budget is wasted per burst);
//! - a loaded node never spins either: it has work when it waits;
//! - each turn of the spin yields the processor, so a spinning driver
//!   never holds back a thread that is runnable on its processor;
//! - a machine with one processor gets no budget: the peer it would wait
//!   for needs the processor it would spin on.
//!
//! The budget is `FERRY_BUSY_POLL_US` microseconds (0 turns it off),
//! [`DEFAULT_BUDGET`] if unset.

use std::time::Duration;

/// Long enough to cover a 4 KiB round trip over loopback (25 to 40 µs on
/// the reference machine), short enough that a miss costs little.
pub const DEFAULT_BUDGET: Duration = Duration::from_micros(50);

/// The environment variable that sets the budget, in microseconds.
pub const BUDGET_VAR: &str = "FERRY_BUSY_POLL_US";

#[derive(Debug)]
pub struct Spin {
    budget: Duration,
    /// The last wait ended within the budget.
    armed: bool,
}

impl Spin {
    pub fn new(budget: Duration) -> Spin {
        Spin {
            budget,
            armed: false,
        }
    }

    /// The budget from the environment, or the default; none on a machine
    /// with one processor.
    pub fn from_env() -> Spin {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let var = std::env::var(BUDGET_VAR).ok();
        Spin::new(budget(var.as_deref(), cpus))
    }

    /// How long the next wait may poll without sleeping, if it would
    /// otherwise sleep for `timeout` (`None`: until an event).
    pub fn allowance(&self, timeout: Option<Duration>) -> Duration {
        if !self.armed {
            return Duration::ZERO;
        }
        timeout.map_or(self.budget, |t| t.min(self.budget))
    }

    /// The last wait took `waited` until it had something.
    pub fn waited(&mut self, waited: Duration) {
        self.armed = !self.budget.is_zero() && waited <= self.budget;
    }
}

/// The budget for `var` (the environment's value, if any) on a machine
/// with `cpus` processors.
fn budget(var: Option<&str>, cpus: usize) -> Duration {
    if cpus <= 1 {
        return Duration::ZERO;
    }
    match var.map(|v| v.trim().parse::<u64>()) {
        Some(Ok(us)) => Duration::from_micros(us.min(10_000)),
        Some(Err(_)) => {
            tracing::warn!("{BUDGET_VAR} is not a number of microseconds; using the default");
            DEFAULT_BUDGET
        }
        None => DEFAULT_BUDGET,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);

    #[test]
    fn spinning_starts_only_after_a_short_wait_and_stops_after_a_long_one() {
        let mut spin = Spin::new(50 * US);
        assert_eq!(spin.allowance(None), Duration::ZERO, "not before any wait");
        spin.waited(30 * US);
        assert_eq!(spin.allowance(None), 50 * US);
        spin.waited(50 * US);
        assert_eq!(spin.allowance(None), 50 * US, "the budget itself is short");
        spin.waited(51 * US);
        assert_eq!(spin.allowance(None), Duration::ZERO, "idle: sleep at once");
        spin.waited(Duration::ZERO);
        assert_eq!(spin.allowance(None), 50 * US, "busy again");
    }

    #[test]
    fn a_spin_never_outlasts_the_wait_it_replaces() {
        let mut spin = Spin::new(50 * US);
        spin.waited(US);
        assert_eq!(spin.allowance(Some(20 * US)), 20 * US);
        assert_eq!(spin.allowance(Some(Duration::ZERO)), Duration::ZERO);
        assert_eq!(spin.allowance(Some(80 * US)), 50 * US);
    }

    #[test]
    fn a_zero_budget_never_spins() {
        let mut spin = Spin::new(Duration::ZERO);
        spin.waited(Duration::ZERO);
        assert_eq!(spin.allowance(None), Duration::ZERO);
    }

    #[test]
    fn the_budget_comes_from_the_environment_and_one_processor_gets_none() {
        assert_eq!(budget(None, 2), DEFAULT_BUDGET);
        assert_eq!(budget(Some("0"), 2), Duration::ZERO);
        assert_eq!(budget(Some(" 120 "), 8), 120 * US);
        assert_eq!(budget(Some("many"), 2), DEFAULT_BUDGET);
        assert_eq!(budget(Some("99999999"), 2), Duration::from_millis(10));
        assert_eq!(budget(None, 1), Duration::ZERO);
        assert_eq!(budget(Some("100"), 1), Duration::ZERO);
    }
}
