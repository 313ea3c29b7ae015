//! Real time, as the core sees it: microseconds since the Unix epoch.
//!
//! The core stamps things every server must agree on with this time: the
//! master's log entries carry it (`Entry::at`), and session tokens expire at
//! a Unix second that any server checks against its own clock. So timestamps
//! must mean the same instant in every process, which a count from each
//! driver's start would not. Yet timers need a clock that never jumps: a
//! wall clock stepped by NTP or by hand would fire deadlines early or never.
//! Hence: the wall clock is read **once**, when the clock is made, and from
//! then on time advances by the monotonic [`Instant`]. Within one process
//! time never goes backwards; across processes it is as close as the hosts'
//! wall clocks were at their starts (tokens live 24 h, so ordinary skew does
//! not matter).

use ferry_core::Timestamp;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Maps [`Instant`]s to [`Timestamp`]s counted from the Unix epoch.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// The instant the clock was made ...
    origin: Instant,
    /// ... and the wall-clock time then, since the Unix epoch.
    origin_unix: Duration,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    /// A clock anchored at the wall-clock time now (the epoch itself if the
    /// system clock is set before 1970).
    pub fn new() -> Self {
        let origin_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Clock::anchored(Instant::now(), origin_unix)
    }

    /// A clock that reads `origin_unix` (since the Unix epoch) at `origin`.
    pub fn anchored(origin: Instant, origin_unix: Duration) -> Self {
        Clock {
            origin,
            origin_unix,
        }
    }

    pub fn now(&self) -> Timestamp {
        self.at(Instant::now())
    }

    /// The timestamp of `instant` (the clock's origin for an earlier one),
    /// for a caller that read the time already.
    pub fn at(&self, instant: Instant) -> Timestamp {
        let since = instant.saturating_duration_since(self.origin);
        Timestamp::from_duration(self.origin_unix.saturating_add(since))
    }

    /// The instant a timestamp stands for; `None` if it is too far away to
    /// represent (a deadline that will never come). A timestamp from before
    /// the clock was made maps to the clock's origin, which has passed.
    pub fn instant(&self, t: Timestamp) -> Option<Instant> {
        match t.as_duration().checked_sub(self.origin_unix) {
            Some(after_origin) => self.origin.checked_add(after_origin),
            None => Some(self.origin),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_the_unix_epoch() {
        let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let now = Clock::new().now().as_duration();
        let after = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        // Timestamps have microsecond resolution.
        assert!(before - Duration::from_micros(1) <= now && now <= after);
    }

    #[test]
    fn instants_and_timestamps_map_both_ways() {
        let origin = Instant::now();
        let clock = Clock::anchored(origin, Duration::from_secs(1_700_000_000));
        let t = Timestamp::from_duration(Duration::from_secs(1_700_000_005));
        assert_eq!(clock.instant(t), Some(origin + Duration::from_secs(5)));
        // Before the origin: already due.
        assert_eq!(clock.instant(Timestamp::ZERO), Some(origin));
        assert_eq!(clock.at(origin + Duration::from_secs(5)), t);
        assert_eq!(
            clock.at(origin),
            Timestamp::from_duration(Duration::from_secs(1_700_000_000))
        );
        assert!(clock.now() >= Timestamp::from_duration(Duration::from_secs(1_700_000_000)));
    }
}
