//! Real time, as the core sees it: microseconds since the driver started.

use ferry_core::Timestamp;
use std::time::Instant;

/// Maps [`Instant`]s to [`Timestamp`]s counted from the clock's creation.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    origin: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    pub fn new() -> Self {
        Clock {
            origin: Instant::now(),
        }
    }

    pub fn now(&self) -> Timestamp {
        Timestamp::from_duration(self.origin.elapsed())
    }

    /// The instant a timestamp stands for; `None` if it is too far away to
    /// represent (a deadline that will never come).
    pub fn instant(&self, t: Timestamp) -> Option<Instant> {
        self.origin.checked_add(t.as_duration())
    }
}
