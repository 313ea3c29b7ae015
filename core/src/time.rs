//! Time as the core sees it: a monotonic count of microseconds that the driver
//! passes in. The core never reads a clock, so a simulation can replay time
//! exactly and a trace prints stable timestamps.

use std::fmt;
use std::ops::{Add, Sub};
use std::time::Duration;

/// Microseconds since some origin chosen by the driver (its start, usually).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

impl Timestamp {
    pub const ZERO: Timestamp = Timestamp(0);

    pub const fn from_micros(us: u64) -> Self {
        Timestamp(us)
    }

    pub fn from_duration(d: Duration) -> Self {
        Timestamp(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }

    pub fn as_micros(self) -> u64 {
        self.0
    }

    pub fn as_duration(self) -> Duration {
        Duration::from_micros(self.0)
    }

    /// Time elapsed since `earlier`, zero if `earlier` is in the future.
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, d: Duration) -> Timestamp {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(us))
    }
}

impl Sub<Duration> for Timestamp {
    type Output = Timestamp;
    fn sub(self, d: Duration) -> Timestamp {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_sub(us))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}s", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

/// The earliest of two optional deadlines.
pub fn earliest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_instead_of_wrapping() {
        let t = Timestamp::from_micros(5);
        assert_eq!(t - Duration::from_secs(1), Timestamp::ZERO);
        assert_eq!(
            Timestamp::from_micros(u64::MAX) + Duration::from_secs(1),
            Timestamp::from_micros(u64::MAX)
        );
        assert_eq!(
            t.saturating_since(Timestamp::from_micros(9)),
            Duration::ZERO
        );
    }

    #[test]
    fn displays_seconds_with_micros() {
        assert_eq!(Timestamp::from_micros(1_250_000).to_string(), "1.250000s");
    }

    #[test]
    fn earliest_ignores_missing_deadlines() {
        let a = Some(Timestamp::from_micros(3));
        let b = Some(Timestamp::from_micros(2));
        assert_eq!(earliest(a, b), b);
        assert_eq!(earliest(a, None), a);
        assert_eq!(earliest(None, None), None);
    }
}
