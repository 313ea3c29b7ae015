//! How many requests one source address may make of the balancer: a token
//! bucket per address (the IP, whatever the port), so that one machine
//! asking for servers as fast as it can is answered "too many" while
//! everyone else is served. The map is bounded: when it is full, buckets
//! that have refilled completely (sources gone quiet) are forgotten first,
//! and a source is never charged for another's forgetting.

use crate::time::Timestamp;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Clone, Copy, Debug)]
pub struct PerSourceLimit {
    /// Requests a source may make at once.
    pub burst: u32,
    /// Requests per second a source earns back.
    pub per_second: u32,
    /// Sources remembered at most.
    pub sources: usize,
}

impl Default for PerSourceLimit {
    fn default() -> Self {
        // Generous enough for a script running commands back to back from
        // one machine (which waits politely when told), tight enough that
        // one source holds few of the servers' slots at a time.
        PerSourceLimit {
            burst: 60,
            per_second: 20,
            sources: 65_536,
        }
    }
}

struct Bucket {
    /// Tokens, in thousandths, as of `at`.
    milli: u64,
    at: Timestamp,
}

pub(super) struct PerSource {
    limit: PerSourceLimit,
    buckets: BTreeMap<String, Bucket>,
}

/// The address part of `HOST:PORT` (`[v6]:port` too); the whole string
/// if it has no port.
pub fn source_of(peer: &str) -> &str {
    match peer.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => {
            host.trim_start_matches('[').trim_end_matches(']')
        }
        _ => peer,
    }
}

impl PerSource {
    pub(super) fn new(limit: PerSourceLimit) -> Self {
        PerSource {
            limit,
            buckets: BTreeMap::new(),
        }
    }

    fn full(&self) -> u64 {
        u64::from(self.limit.burst) * 1000
    }

    fn refilled(&self, b: &Bucket, now: Timestamp) -> u64 {
        let ms = now.saturating_since(b.at).as_millis() as u64;
        (b.milli + ms.saturating_mul(u64::from(self.limit.per_second))).min(self.full())
    }

    /// Charges one request to `peer`'s source: `Ok`, or how long until it
    /// may ask again.
    pub(super) fn take(&mut self, now: Timestamp, peer: &str) -> Result<(), Duration> {
        let source = source_of(peer).to_string();
        if !self.buckets.contains_key(&source) && self.buckets.len() >= self.limit.sources {
            let full = self.full();
            let idle: Vec<String> = (self.buckets.iter())
                .filter(|(_, b)| self.refilled(b, now) >= full)
                .map(|(s, _)| s.clone())
                .collect();
            for s in idle {
                self.buckets.remove(&s);
            }
            if self.buckets.len() >= self.limit.sources {
                // Every remembered source is busy: a flood from many
                // addresses. New ones wait like a busy one would.
                return Err(Duration::from_secs(1));
            }
        }
        let full = self.full();
        let b = (self.buckets).entry(source).or_insert(Bucket {
            milli: full,
            at: now,
        });
        let have = (b.milli
            + (now.saturating_since(b.at).as_millis() as u64)
                .saturating_mul(u64::from(self.limit.per_second)))
        .min(full);
        b.at = now;
        if have >= 1000 {
            b.milli = have - 1000;
            return Ok(());
        }
        b.milli = have;
        let rate = u64::from(self.limit.per_second.max(1));
        Err(Duration::from_millis((1000 - have).div_ceil(rate)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_micros(ms * 1000)
    }

    #[test]
    fn a_source_gets_its_burst_then_its_rate_and_others_are_not_charged() {
        let mut p = PerSource::new(PerSourceLimit {
            burst: 3,
            per_second: 2,
            sources: 16,
        });
        for _ in 0..3 {
            assert_eq!(p.take(at(0), "10.0.0.1:5000"), Ok(()));
        }
        // Another port of the same machine is the same source.
        let wait = p.take(at(0), "10.0.0.1:5001").unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        // Another machine is not.
        assert_eq!(p.take(at(0), "10.0.0.2:5000"), Ok(()));
        assert_eq!(p.take(at(0), "[::1]:9"), Ok(()));
        // Half a second earns one request back.
        assert_eq!(p.take(at(500), "10.0.0.1:5000"), Ok(()));
        assert!(p.take(at(500), "10.0.0.1:5000").is_err());
    }

    #[test]
    fn the_map_stays_bounded_and_quiet_sources_are_forgotten_first() {
        let mut p = PerSource::new(PerSourceLimit {
            burst: 1,
            per_second: 1,
            sources: 2,
        });
        assert_eq!(p.take(at(0), "a:1"), Ok(()));
        assert_eq!(p.take(at(0), "b:1"), Ok(()));
        // Both busy: a third waits.
        assert!(p.take(at(0), "c:1").is_err());
        // A second later both have refilled and are forgotten for c.
        assert_eq!(p.take(at(1000), "c:1"), Ok(()));
        assert!(p.buckets.len() <= 2);
        assert_eq!(source_of("[::1]:7000"), "::1");
        assert_eq!(source_of("host"), "host");
    }
}
