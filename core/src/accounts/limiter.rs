//! Slows down password guessing: after `MAX_FAILURES` failed logins for one
//! username within `WINDOW`, that username is locked on this server for
//! `LOCKOUT`. The table is bounded; when full, the stalest entry goes.

use crate::time::Timestamp;
use std::collections::BTreeMap;
use std::time::Duration;

pub const MAX_FAILURES: u32 = 5;
pub const WINDOW: Duration = Duration::from_secs(60);
pub const LOCKOUT: Duration = Duration::from_secs(30);
const MAX_TRACKED: usize = 10_000;

#[derive(Debug, Default)]
pub struct LoginLimiter {
    failures: BTreeMap<String, (u32, Timestamp, Option<Timestamp>)>,
}

impl LoginLimiter {
    /// `Err(seconds)` while `name` is locked.
    pub fn check(&self, now: Timestamp, name: &str) -> Result<(), u64> {
        match self.failures.get(name) {
            Some((_, _, Some(until))) if *until > now => {
                Err(until.saturating_since(now).as_secs().max(1))
            }
            _ => Ok(()),
        }
    }

    pub fn failed(&mut self, now: Timestamp, name: &str) {
        if self.failures.len() >= MAX_TRACKED && !self.failures.contains_key(name) {
            let stalest = self
                .failures
                .iter()
                .min_by_key(|(_, (_, first, _))| *first)
                .map(|(k, _)| k.clone());
            if let Some(k) = stalest {
                self.failures.remove(&k);
            }
        }
        let e = self
            .failures
            .entry(name.to_string())
            .or_insert((0, now, None));
        if now.saturating_since(e.1) > WINDOW || e.2.is_some_and(|u| u <= now) {
            *e = (0, now, None);
        }
        e.0 += 1;
        if e.0 >= MAX_FAILURES {
            e.2 = Some(now + LOCKOUT);
        }
    }

    pub fn succeeded(&mut self, name: &str) {
        self.failures.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_repeated_failures_then_unlocks() {
        let mut l = LoginLimiter::default();
        let t0 = Timestamp::from_micros(1_000_000);
        for _ in 0..MAX_FAILURES - 1 {
            l.failed(t0, "alice");
            assert!(l.check(t0, "alice").is_ok());
        }
        l.failed(t0, "alice");
        assert_eq!(l.check(t0, "alice"), Err(30));
        assert!(l.check(t0, "bob").is_ok());
        assert!(l.check(t0 + LOCKOUT, "alice").is_ok());
        l.failed(t0 + LOCKOUT, "alice");
        assert!(l.check(t0 + LOCKOUT, "alice").is_ok(), "count restarted");
    }

    #[test]
    fn success_clears_the_count() {
        let mut l = LoginLimiter::default();
        let t0 = Timestamp::ZERO;
        for _ in 0..MAX_FAILURES - 1 {
            l.failed(t0, "alice");
        }
        l.succeeded("alice");
        l.failed(t0, "alice");
        assert!(l.check(t0, "alice").is_ok());
    }
}
