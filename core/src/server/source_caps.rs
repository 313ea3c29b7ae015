//! How many connections one source address may hold on a server: a few
//! that have not logged in, more in all. Beyond either, a new connection
//! is refused at once, so that one machine opening connections and saying
//! nothing (or saying HELLO and never logging in) holds a bounded share of
//! the server, whatever the rate it opens them at.
//!
//! A source is an IP address (the port does not count; an IPv6 address
//! counts by its /64, which one subscriber usually holds whole), as
//! `accounts::limiter::source_of` reads it.
//!
//! The cluster's own members are exempt: a server opens links to its peers
//! in bursts (blob fetches, copies of uploads) and the balancer probes every
//! server for every client, and neither may be refused because some other
//! process on its machine is greedy. A source is a member if it is the
//! address of one of this server's `--peers`, or if it proved the cluster
//! secret in a balancer probe within [`MEMBER_FOR`].

use crate::accounts::limiter::source_of;
use crate::refusal::Refusal;
use crate::time::Timestamp;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Connections one source address may hold on a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceCaps {
    /// Connections not logged in: connecting, in the handshake, or a
    /// session that has not proved a login yet.
    pub unauthenticated: u32,
    /// Connections in all, logged-in sessions included.
    pub all: u32,
}

impl Default for SourceCaps {
    fn default() -> Self {
        // A machine needs one connection per command it runs at once, and
        // each logs in within moments of connecting: 8 is plenty for one
        // user's scripts, and 8 idle ones hold an eighth of a server's 64
        // slots for at most the login timeout. 64 in all leaves room for a
        // few dozen users behind one NAT; raise it for more.
        SourceCaps {
            unauthenticated: 8,
            all: 64,
        }
    }
}

/// How long a source that proved the cluster secret stays exempt after
/// its last proof (the balancer proves it with every probe).
pub const MEMBER_FOR: Duration = Duration::from_secs(600);

/// Proving sources remembered at most (a cluster has a few balancers).
const MAX_PROVERS: usize = 64;

/// How often a source's refusals are told to the operator while it goes
/// on being refused.
const SAY_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
struct Count {
    all: u32,
    unauthenticated: u32,
    /// When its refusal was last told to the operator.
    said: Option<Timestamp>,
}

/// A refused connection: why, and whether the operator should hear of it
/// (once a minute per source, not once per connection of a flood).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Refused {
    pub(super) reason: Refusal,
    pub(super) say: bool,
}

#[derive(Debug)]
pub(super) struct SourceCounts {
    caps: SourceCaps,
    counts: BTreeMap<String, Count>,
    /// The addresses of this server's peers.
    peers: BTreeSet<String>,
    /// Sources that proved the secret, and when they last did.
    provers: BTreeMap<String, Timestamp>,
}

impl SourceCounts {
    /// `peer_addrs`: the `HOST:PORT` of this server's peers; those given
    /// as IP addresses are exempt (a host name says nothing here).
    pub(super) fn new(caps: SourceCaps, peer_addrs: &[String]) -> Self {
        let peers = (peer_addrs.iter())
            .filter(|a| a.parse::<std::net::SocketAddr>().is_ok())
            .map(|a| source_of(a))
            .collect();
        SourceCounts {
            caps,
            counts: BTreeMap::new(),
            peers,
            provers: BTreeMap::new(),
        }
    }

    fn is_member(&self, now: Timestamp, source: &str) -> bool {
        self.peers.contains(source)
            || (self.provers.get(source)).is_some_and(|at| now.saturating_since(*at) < MEMBER_FOR)
    }

    /// A connection from `source` (`accounts::limiter::source_of` of its
    /// address): `Ok(true)` if it is counted, `Ok(false)` if its source
    /// is a member of the cluster, or why it is refused.
    pub(super) fn admit(&mut self, now: Timestamp, source: &str) -> Result<bool, Refused> {
        if self.is_member(now, source) {
            return Ok(false);
        }
        let caps = self.caps;
        let count = self.counts.entry(source.to_string()).or_default();
        let reason = if count.all >= caps.all {
            Refusal::TooManyConnections {
                limit: caps.all,
                unauthenticated: false,
            }
        } else if count.unauthenticated >= caps.unauthenticated {
            Refusal::TooManyConnections {
                limit: caps.unauthenticated,
                unauthenticated: true,
            }
        } else {
            count.all += 1;
            count.unauthenticated += 1;
            return Ok(true);
        };
        let say = count
            .said
            .is_none_or(|at| now.saturating_since(at) >= SAY_EVERY);
        if say {
            count.said = Some(now);
        }
        if count.all == 0 {
            // Caps of 0: nothing to remember of a source that holds none.
            self.counts.remove(source);
        }
        Err(Refused { reason, say })
    }

    /// A counted connection from `source` logged in.
    pub(super) fn logged_in(&mut self, source: &str) {
        if let Some(c) = self.counts.get_mut(source) {
            c.unauthenticated = c.unauthenticated.saturating_sub(1);
        }
    }

    /// A counted connection from `source` is gone (or handed over to a
    /// link between servers); `logged_in` says which count it was in.
    pub(super) fn left(&mut self, source: &str, logged_in: bool) {
        let Some(c) = self.counts.get_mut(source) else {
            return;
        };
        c.all = c.all.saturating_sub(1);
        if !logged_in {
            c.unauthenticated = c.unauthenticated.saturating_sub(1);
        }
        if c.all == 0 {
            self.counts.remove(source);
        }
    }

    /// `source` proved the cluster secret: exempt from now on, for a while.
    pub(super) fn proved(&mut self, now: Timestamp, source: &str) {
        if !self.provers.contains_key(source) && self.provers.len() >= MAX_PROVERS {
            // Only holders of the secret get here: forgetting the stalest
            // costs at most one of them a refusal in a burst.
            let stalest = (self.provers.iter()).min_by_key(|(_, at)| **at);
            if let Some(s) = stalest.map(|(s, _)| s.clone()) {
                self.provers.remove(&s);
            }
        }
        self.provers.insert(source.to_string(), now);
    }

    /// (all, not logged in) of `source`'s counted connections.
    #[cfg(test)]
    pub(super) fn of(&self, source: &str) -> (u32, u32) {
        self.counts
            .get(source)
            .map_or((0, 0), |c| (c.all, c.unauthenticated))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> Timestamp {
        Timestamp::from_micros(s * 1_000_000)
    }

    fn caps(unauthenticated: u32, all: u32) -> SourceCounts {
        SourceCounts::new(
            SourceCaps {
                unauthenticated,
                all,
            },
            &["10.0.0.1:7001".into(), "server3:7003".into()],
        )
    }

    #[test]
    fn a_source_holds_a_few_without_login_and_more_in_all() {
        let mut c = caps(2, 3);
        let src = source_of("192.0.2.7:40000");
        assert_eq!(c.admit(at(0), &src), Ok(true));
        assert_eq!(c.admit(at(0), &src), Ok(true));
        let refused = c.admit(at(0), &src).unwrap_err();
        assert_eq!(
            refused.reason,
            Refusal::TooManyConnections {
                limit: 2,
                unauthenticated: true
            }
        );
        assert!(refused.say);
        // Told once a minute, not for every connection.
        assert!(!c.admit(at(1), &src).unwrap_err().say);
        assert!(c.admit(at(61), &src).unwrap_err().say);
        // Another machine is not held by it.
        assert_eq!(c.admit(at(0), &source_of("192.0.2.8:40000")), Ok(true));
        // One logs in: room for one more that has not, up to 3 in all.
        c.logged_in(&src);
        assert_eq!(c.admit(at(0), &src), Ok(true));
        c.logged_in(&src);
        let refused = c.admit(at(0), &src).unwrap_err();
        assert_eq!(
            refused.reason,
            Refusal::TooManyConnections {
                limit: 3,
                unauthenticated: false
            }
        );
        c.left(&src, true);
        c.left(&src, true);
        c.left(&src, false);
        assert_eq!(c.of(&src), (0, 0));
        assert!(
            !c.counts.contains_key(&src),
            "a source with none is forgotten"
        );
    }

    #[test]
    fn ports_and_an_ipv6_64_are_one_source() {
        let mut c = caps(1, 10);
        assert_eq!(
            c.admit(at(0), &source_of("[2001:db8:1:2::5]:1000")),
            Ok(true)
        );
        assert!(c
            .admit(at(0), &source_of("[2001:db8:1:2::9]:1001"))
            .is_err());
        assert_eq!(
            c.admit(at(0), &source_of("[2001:db8:1:3::5]:1000")),
            Ok(true)
        );
        assert_eq!(c.admit(at(0), &source_of("[::ffff:192.0.2.1]:5")), Ok(true));
        assert!(c.admit(at(0), &source_of("192.0.2.1:6")).is_err());
    }

    #[test]
    fn peers_given_as_addresses_and_provers_are_exempt_for_a_while() {
        let mut c = caps(1, 1);
        let peer = source_of("10.0.0.1:55555");
        for _ in 0..5 {
            assert_eq!(c.admit(at(0), &peer), Ok(false));
        }
        let balancer = source_of("10.0.0.5:1234");
        assert_eq!(c.admit(at(0), &balancer), Ok(true));
        assert!(c.admit(at(0), &balancer).is_err());
        c.proved(at(1), &balancer);
        assert_eq!(c.admit(at(2), &balancer), Ok(false));
        assert_eq!(c.admit(at(600), &balancer), Ok(false));
        assert!(
            c.admit(at(601), &balancer).is_err(),
            "exempt for a while only"
        );
    }

    #[test]
    fn provers_are_bounded() {
        let mut c = caps(1, 1);
        for i in 0..(MAX_PROVERS as u64 + 10) {
            c.proved(at(i), &format!("10.1.0.{i}"));
        }
        assert_eq!(c.provers.len(), MAX_PROVERS);
        assert!(
            !c.provers.contains_key("10.1.0.0"),
            "the stalest went first"
        );
    }
}
