//! Slows down password guessing, for the whole cluster: the rule that says
//! how long a source must wait before it may try an account's password
//! again, from the failures the replicated state holds
//! (`replication::logins`). See docs/security.md, "Passwords".
//!
//! Failures are counted twice: per (account, source), and per account over
//! all sources. Each count buys a few free failures, then every further
//! attempt waits a delay that doubles with each failure (1 s, 2 s, 4 s …)
//! from the last failure, up to a cap. The per-source delay caps at an
//! hour: one source gets a handful of guesses in its first hour, then one
//! an hour. The per-account delay starts later and caps at five minutes:
//! it bounds what many sources together get (twelve guesses an hour), and
//! it never holds the owner more than five minutes. A source the account
//! logged in from lately is *trusted* and exempt from the per-account
//! delay (only its own failures slow it), so an attacker elsewhere cannot
//! keep the owner out of their own machine at all. A login that succeeds
//! clears its source's count. Counts are forgotten a day after their last
//! failure.
//!
//! Times are Unix seconds: the master's clock as written in each entry
//! when a failure is recorded, the checking server's clock when a wait is
//! computed.

use speedy::{Readable, Writable};
use std::collections::BTreeMap;

/// Failures from one source that cost nothing.
pub const SOURCE_FREE: u32 = 3;
/// The longest a source waits between two tries.
pub const SOURCE_CAP_SECS: u64 = 3600;
/// Failures over all sources that cost nothing.
pub const ACCOUNT_FREE: u32 = 10;
/// The longest an untrusted source waits because of other sources' failures.
pub const ACCOUNT_CAP_SECS: u64 = 300;
/// A count is forgotten this long after its last failure.
pub const FORGET_SECS: u64 = 24 * 3600;
/// A source stays trusted this long after a login from it.
pub const TRUST_SECS: u64 = 30 * 24 * 3600;
/// A trusted source's trust is written again once it is this old.
pub const TRUST_REFRESH_SECS: u64 = 24 * 3600;
/// Untrusted sources kept per account; the stalest goes first.
pub const MAX_UNTRUSTED: usize = 64;
/// Trusted sources kept per account; the stalest goes first.
pub const MAX_TRUSTED: usize = 8;

/// Failures, and when the last one was.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Readable, Writable)]
pub struct Count {
    pub failures: u32,
    pub last: u64,
}

impl Count {
    /// The count as it stands at `now`: forgotten a day after its last
    /// failure.
    fn at(self, now: u64) -> Count {
        match now >= self.last.saturating_add(FORGET_SECS) {
            true => Count::default(),
            false => self,
        }
    }

    fn fail(&mut self, at: u64) {
        *self = self.at(at);
        self.failures = self.failures.saturating_add(1);
        self.last = self.last.max(at);
    }

    /// When the next try may come, under `free` free failures and `cap`.
    fn ready_at(self, now: u64, free: u32, cap: u64) -> u64 {
        let c = self.at(now);
        if c.failures < free {
            return 0;
        }
        let doublings = (c.failures - free).min(63);
        let delay = 1u64.checked_shl(doublings).unwrap_or(u64::MAX).min(cap);
        c.last.saturating_add(delay)
    }
}

/// One source's record for one account.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Readable, Writable)]
pub struct Source {
    pub count: Count,
    /// The last successful login from it (0: none).
    pub trusted_at: u64,
}

impl Source {
    fn trusted(&self, now: u64) -> bool {
        self.trusted_at != 0 && now < self.trusted_at.saturating_add(TRUST_SECS)
    }

    /// Nothing left worth keeping at `now`.
    fn stale(&self, now: u64) -> bool {
        self.count.at(now).failures == 0 && !self.trusted(now)
    }

    fn latest(&self) -> u64 {
        self.count.last.max(self.trusted_at)
    }
}

/// What the cluster remembers of one account's logins (a username, known
/// or not: an unknown name is counted alike, so the answers do not tell).
#[derive(Clone, Debug, Default, PartialEq, Eq, Readable, Writable)]
pub struct AccountLogins {
    pub account: Count,
    pub sources: BTreeMap<String, Source>,
}

impl AccountLogins {
    /// `Err(seconds)` while `source` must wait before trying again at `now`.
    pub fn check(&self, source: &str, now: u64) -> Result<(), u64> {
        let mine = self.sources.get(source).copied().unwrap_or_default();
        let mut ready = mine.count.ready_at(now, SOURCE_FREE, SOURCE_CAP_SECS);
        if !mine.trusted(now) {
            let all = self.account.ready_at(now, ACCOUNT_FREE, ACCOUNT_CAP_SECS);
            ready = ready.max(all);
        }
        match ready > now {
            true => Err(ready - now),
            false => Ok(()),
        }
    }

    /// A failed login from `source` at `at`.
    pub fn fail(&mut self, source: &str, at: u64) {
        self.account.fail(at);
        self.sources
            .entry(source.to_string())
            .or_default()
            .count
            .fail(at);
        self.tidy(at);
    }

    /// A successful login from `source` at `at`: its count is cleared, and
    /// it is trusted.
    pub fn succeed(&mut self, source: &str, at: u64) {
        let s = self.sources.entry(source.to_string()).or_default();
        s.count = Count::default();
        s.trusted_at = s.trusted_at.max(at);
        self.tidy(at);
    }

    /// Whether a login that succeeded from `source` at `now` has anything
    /// to write: failures to clear, or trust to give or renew.
    pub fn success_changes(&self, source: &str, now: u64) -> bool {
        match self.sources.get(source) {
            None => true,
            Some(s) => {
                s.count.at(now).failures > 0
                    || s.trusted_at == 0
                    || now >= s.trusted_at.saturating_add(TRUST_REFRESH_SECS)
            }
        }
    }

    /// Nothing left worth keeping at `now`.
    pub fn stale(&self, now: u64) -> bool {
        self.account.at(now).failures == 0 && self.sources.values().all(|s| s.stale(now))
    }

    /// The latest time the record was touched, for choosing what to drop.
    pub fn latest(&self) -> u64 {
        (self.sources.values().map(Source::latest)).fold(self.account.last, u64::max)
    }

    /// Drops what is stale at `now`, and the stalest sources past the
    /// bounds: untrusted ones (an attacker's) never push out trusted ones
    /// (the owner's), which only a successful login makes.
    fn tidy(&mut self, now: u64) {
        self.sources.retain(|_, s| !s.stale(now));
        for trusted in [false, true] {
            let max = if trusted { MAX_TRUSTED } else { MAX_UNTRUSTED };
            loop {
                let kind: Vec<(&String, &Source)> = (self.sources.iter())
                    .filter(|(_, s)| s.trusted(now) == trusted)
                    .collect();
                if kind.len() <= max {
                    break;
                }
                let stalest = (kind.iter())
                    .min_by_key(|(name, s)| (s.latest(), (*name).clone()))
                    .map(|(name, _)| (*name).clone());
                match stalest {
                    Some(name) => self.sources.remove(&name),
                    None => break,
                };
            }
        }
    }
}

/// The source a login comes from: the client's IP address as the server
/// sees it (its port changes with every connection); an IPv6 address
/// counts by its /64, which one subscriber usually holds whole. Anything
/// that is not an address is taken as it is.
pub fn source_of(peer: &str) -> String {
    match peer.parse::<std::net::SocketAddr>() {
        Ok(std::net::SocketAddr::V4(a)) => a.ip().to_string(),
        Ok(std::net::SocketAddr::V6(a)) => match a.ip().to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = a.ip().segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        Err(_) => peer.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000;

    #[test]
    fn free_failures_then_a_doubling_delay_up_to_the_cap() {
        let mut a = AccountLogins::default();
        let mut now = T0;
        for _ in 0..SOURCE_FREE {
            assert_eq!(a.check("1.2.3.4", now), Ok(()));
            a.fail("1.2.3.4", now);
        }
        let mut waits = Vec::new();
        for _ in 0..16 {
            let wait = a.check("1.2.3.4", now).unwrap_err();
            waits.push(wait);
            now += wait;
            assert_eq!(a.check("1.2.3.4", now), Ok(()));
            a.fail("1.2.3.4", now);
        }
        assert_eq!(
            waits,
            [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 3600, 3600, 3600, 3600]
        );
        // A day after the last failure, all is forgotten.
        assert_eq!(a.check("1.2.3.4", now + FORGET_SECS), Ok(()));
        assert!(a.stale(now + FORGET_SECS));
    }

    #[test]
    fn a_success_clears_its_source_and_trusts_it_past_the_account_delay() {
        let mut a = AccountLogins::default();
        a.succeed("owner", T0);
        assert!(!a.success_changes("owner", T0 + 10));
        assert!(a.success_changes("owner", T0 + TRUST_REFRESH_SECS));
        // Many sources fail: the account-wide delay holds every untrusted
        // source, never longer than its cap, and not the owner's.
        let mut now = T0 + 100;
        for i in 0..40 {
            a.fail(&format!("10.0.0.{i}"), now);
            now += 1;
        }
        let wait = a.check("10.9.9.9", now).unwrap_err();
        assert!((1..=ACCOUNT_CAP_SECS).contains(&wait), "{wait}");
        assert_eq!(a.check("owner", now), Ok(()));
        // The owner's own mistakes slow only the owner's source.
        for _ in 0..SOURCE_FREE {
            a.fail("owner", now);
        }
        assert_eq!(a.check("owner", now), Err(1));
        a.succeed("owner", now + 1);
        assert_eq!(a.check("owner", now + 1), Ok(()));
    }

    #[test]
    fn sources_are_bounded_and_attackers_never_push_out_the_owner() {
        let mut a = AccountLogins::default();
        a.succeed("owner", T0);
        for i in 0..1000u64 {
            a.fail(&format!("src{i}"), T0 + i);
        }
        assert_eq!(a.sources.len(), MAX_UNTRUSTED + 1);
        assert!(a.sources.contains_key("owner"));
        assert!(a.sources.contains_key("src999"));
    }

    #[test]
    fn sources_are_addresses_without_ports() {
        assert_eq!(source_of("192.0.2.7:53211"), "192.0.2.7");
        assert_eq!(source_of("[::ffff:192.0.2.7]:1"), "192.0.2.7");
        assert_eq!(source_of("[2001:db8:1:2:3:4:5:6]:9"), "2001:db8:1:2::/64");
        assert_eq!(source_of("client"), "client");
    }
}
