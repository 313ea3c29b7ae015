//! Slots reserved by the balancer's probes, redeemed by clients' HELLOs.
//!
//! A reservation is keyed by the nonce of the auth code the balancer minted.
//! Redeeming removes it, which is what makes a code single-use; an unredeemed
//! reservation lapses after the TTL, which is what makes it expire and frees
//! the slot of a client that never arrived. Spent nonces are remembered for a
//! while longer only to tell "used" from "expired" in the refusal.

use crate::refusal::Refusal;
use crate::time::Timestamp;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// Spent nonces remembered at most; the oldest are forgotten first.
const MAX_SPENT: usize = 16 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Spent {
    Used,
    Expired,
}

#[derive(Debug)]
pub struct Reservations {
    ttl: Duration,
    live: BTreeMap<[u8; 16], Timestamp>,
    /// Expiry order of `live`; entries already redeemed are skipped lazily.
    live_order: VecDeque<(Timestamp, [u8; 16])>,
    spent: BTreeMap<[u8; 16], Spent>,
    spent_order: VecDeque<(Timestamp, [u8; 16])>,
}

impl Reservations {
    pub fn new(ttl: Duration) -> Self {
        Reservations {
            ttl,
            live: BTreeMap::new(),
            live_order: VecDeque::new(),
            spent: BTreeMap::new(),
            spent_order: VecDeque::new(),
        }
    }

    pub fn live(&self) -> usize {
        self.live.len()
    }

    /// Reserves a slot for `nonce`. A nonce seen before is refused: a probe
    /// replayed by someone who captured it must not reserve anything.
    pub fn reserve(&mut self, now: Timestamp, nonce: [u8; 16]) -> Result<(), Refusal> {
        if self.live.contains_key(&nonce) || self.spent.contains_key(&nonce) {
            return Err(Refusal::CodeUsed);
        }
        let expiry = now + self.ttl;
        self.live.insert(nonce, expiry);
        self.live_order.push_back((expiry, nonce));
        Ok(())
    }

    /// Consumes the reservation for `nonce`.
    pub fn redeem(&mut self, now: Timestamp, nonce: [u8; 16]) -> Result<(), Refusal> {
        self.expire(now);
        if self.live.remove(&nonce).is_some() {
            self.remember(now, nonce, Spent::Used);
            return Ok(());
        }
        Err(match self.spent.get(&nonce) {
            Some(Spent::Used) => Refusal::CodeUsed,
            Some(Spent::Expired) => Refusal::CodeExpired,
            None => Refusal::CodeUnknown,
        })
    }

    /// Lapses every reservation whose time is up; returns how many lapsed.
    pub fn expire(&mut self, now: Timestamp) -> usize {
        let mut lapsed = 0;
        while let Some(&(expiry, nonce)) = self.live_order.front() {
            if expiry > now {
                break;
            }
            self.live_order.pop_front();
            if self.live.get(&nonce) == Some(&expiry) {
                self.live.remove(&nonce);
                self.remember(now, nonce, Spent::Expired);
                lapsed += 1;
            }
        }
        while let Some(&(forget_at, nonce)) = self.spent_order.front() {
            if forget_at > now && self.spent_order.len() <= MAX_SPENT {
                break;
            }
            self.spent_order.pop_front();
            self.spent.remove(&nonce);
        }
        lapsed
    }

    pub fn next_deadline(&self) -> Option<Timestamp> {
        let live = self.live_order.front().map(|(t, _)| *t);
        let spent = self.spent_order.front().map(|(t, _)| *t);
        crate::time::earliest(live, spent)
    }

    fn remember(&mut self, now: Timestamp, nonce: [u8; 16], how: Spent) {
        self.spent.insert(nonce, how);
        self.spent_order.push_back((now + self.ttl, nonce));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> Timestamp {
        Timestamp::from_micros(s * 1_000_000)
    }

    #[test]
    fn redeem_is_single_use() {
        let mut r = Reservations::new(Duration::from_secs(10));
        r.reserve(t(0), [1; 16]).unwrap();
        assert_eq!(r.live(), 1);
        assert_eq!(r.redeem(t(1), [1; 16]), Ok(()));
        assert_eq!(r.redeem(t(2), [1; 16]), Err(Refusal::CodeUsed));
        assert_eq!(r.live(), 0);
    }

    #[test]
    fn unredeemed_reservation_lapses() {
        let mut r = Reservations::new(Duration::from_secs(10));
        r.reserve(t(0), [1; 16]).unwrap();
        assert_eq!(r.next_deadline(), Some(t(10)));
        assert_eq!(r.expire(t(9)), 0);
        assert_eq!(r.expire(t(10)), 1);
        assert_eq!(r.live(), 0);
        assert_eq!(r.redeem(t(11), [1; 16]), Err(Refusal::CodeExpired));
        // Long after, the nonce is forgotten entirely.
        r.expire(t(100));
        assert_eq!(r.redeem(t(100), [1; 16]), Err(Refusal::CodeUnknown));
    }

    #[test]
    fn redeem_checks_expiry_even_without_a_timer() {
        let mut r = Reservations::new(Duration::from_secs(10));
        r.reserve(t(0), [1; 16]).unwrap();
        assert_eq!(r.redeem(t(10), [1; 16]), Err(Refusal::CodeExpired));
    }

    #[test]
    fn a_nonce_cannot_be_reserved_twice() {
        let mut r = Reservations::new(Duration::from_secs(10));
        r.reserve(t(0), [1; 16]).unwrap();
        assert_eq!(r.reserve(t(0), [1; 16]), Err(Refusal::CodeUsed));
        r.redeem(t(1), [1; 16]).unwrap();
        assert_eq!(r.reserve(t(2), [1; 16]), Err(Refusal::CodeUsed));
    }

    #[test]
    fn unknown_nonce_is_refused() {
        let mut r = Reservations::new(Duration::from_secs(10));
        assert_eq!(r.redeem(t(0), [9; 16]), Err(Refusal::CodeUnknown));
    }
}
