//! Whether an auth code may open a session here, and the codes spent.
//!
//! A code carries its own expiry (`AuthCode::expires_ms`), so a server keeps
//! nothing for a code until its client says HELLO: the probe's yes reserves
//! no slot, and a flood of balancer requests costs a server nothing. What
//! makes a code single-use is this set of the nonces presented here, each
//! remembered only until its code has expired (after that the code is
//! refused as expired anyway), and never more than [`MAX_SPENT`] of them.
//!
//! The set lives in memory and is lost with it, so a code minted before
//! this server started is refused as unknown: it may have been used before
//! a crash.
//!
//! **Clocks.** A code's times are by the clock of the node that minted it
//! (the balancer, or this server for the codes it mints itself), checked
//! against this server's. The members of a cluster are assumed to keep
//! their clocks roughly in step (NTP); `skew` is how far apart they may be.
//! A code is honoured until `skew` after its expiry, so that a server whose
//! clock is ahead still takes fresh codes; one whose clock is further ahead
//! than its code's lifetime would refuse every code as expired. A code
//! minted further than `skew` in this server's future, or that claims a
//! life longer than [`MAX_CODE_LIFE`], is refused as unknown: its nonce
//! would have to be remembered for that long.

use crate::auth::AuthCode;
use crate::refusal::Refusal;
use crate::time::Timestamp;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Spent nonces remembered at most. Each entry lives a code's lifetime
/// (2.5 s by default), so this is thousands of sessions opened per second;
/// a server past it refuses HELLOs as overloaded until entries lapse
/// rather than forget a nonce that could be replayed.
pub const MAX_SPENT: usize = 16 * 1024;

/// The longest life a server accepts in a code (a balancer's `code_ttl`
/// may not exceed it).
pub const MAX_CODE_LIFE: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct SpentCodes {
    skew_ms: u64,
    /// This server's start: codes minted before it are refused.
    started_ms: u64,
    /// Spent nonces, and when each may be forgotten (Unix ms).
    by_nonce: BTreeMap<[u8; 16], u64>,
    by_time: BTreeSet<(u64, [u8; 16])>,
}

fn unix_ms(t: Timestamp) -> u64 {
    t.as_micros() / 1000
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl SpentCodes {
    pub fn new(started: Timestamp, skew: Duration) -> Self {
        SpentCodes {
            skew_ms: millis(skew),
            started_ms: unix_ms(started),
            by_nonce: BTreeMap::new(),
            by_time: BTreeSet::new(),
        }
    }

    /// Spent nonces remembered now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_nonce.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.by_nonce.is_empty()
    }

    /// Was `code` minted before this server started (by its own clock)?
    /// Such a code is refused; a probe carrying one is from a balancer
    /// whose clock is behind, in the first moments after a start.
    pub fn minted_before_start(&self, code: &AuthCode) -> bool {
        code.issued_ms < self.started_ms
    }

    /// May `code` (whose MAC and server were checked) open a session at
    /// `now`? Spends nothing.
    pub fn check(&self, now: Timestamp, code: &AuthCode) -> Result<(), Refusal> {
        let now_ms = unix_ms(now);
        if now_ms > code.expires_ms.saturating_add(self.skew_ms) {
            return Err(Refusal::CodeExpired);
        }
        let life = code.expires_ms.saturating_sub(code.issued_ms);
        let from_the_future = code.issued_ms > now_ms.saturating_add(self.skew_ms);
        if self.minted_before_start(code) || from_the_future || life > millis(MAX_CODE_LIFE) {
            return Err(Refusal::CodeUnknown);
        }
        if self.by_nonce.contains_key(&code.nonce) {
            return Err(Refusal::CodeUsed);
        }
        Ok(())
    }

    /// Spends `code`: checked as [`SpentCodes::check`] does, then
    /// remembered until it has expired.
    pub fn spend(&mut self, now: Timestamp, code: &AuthCode) -> Result<(), Refusal> {
        self.forget_expired(now);
        self.check(now, code)?;
        if self.by_nonce.len() >= MAX_SPENT {
            return Err(Refusal::Overloaded);
        }
        let forget_at = code.expires_ms.saturating_add(self.skew_ms);
        self.by_nonce.insert(code.nonce, forget_at);
        self.by_time.insert((forget_at, code.nonce));
        Ok(())
    }

    /// Forgets the nonces of codes that have expired by `now`: they are
    /// refused as expired from then on.
    pub fn forget_expired(&mut self, now: Timestamp) {
        let now_ms = unix_ms(now);
        while let Some(&(at, nonce)) = self.by_time.first() {
            if at >= now_ms {
                break;
            }
            self.by_time.pop_first();
            self.by_nonce.remove(&nonce);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::CODE_TTL;
    use crate::testkit::secret;

    const SKEW: Duration = Duration::from_millis(500);

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_micros(ms * 1000)
    }

    fn code(nonce: u8, minted: u64) -> AuthCode {
        secret().mint(1, [nonce; 16], at(minted), CODE_TTL)
    }

    #[test]
    fn a_code_is_spent_once() {
        let mut s = SpentCodes::new(at(1000), SKEW);
        assert_eq!(s.spend(at(1100), &code(1, 1000)), Ok(()));
        assert_eq!(s.spend(at(1200), &code(1, 1000)), Err(Refusal::CodeUsed));
        assert_eq!(s.check(at(1200), &code(2, 1000)), Ok(()));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn a_code_expires_after_its_life_and_the_skew_and_is_then_forgotten() {
        let mut s = SpentCodes::new(at(0), SKEW);
        let c = code(1, 1000);
        // Good for 2 s, honoured half a second more for clocks ahead.
        assert_eq!(s.check(at(3500), &c), Ok(()));
        assert_eq!(s.check(at(3501), &c), Err(Refusal::CodeExpired));
        s.spend(at(3000), &c).unwrap();
        assert_eq!(s.spend(at(3500), &c), Err(Refusal::CodeUsed));
        assert_eq!(s.spend(at(3501), &c), Err(Refusal::CodeExpired));
        assert!(s.is_empty(), "nothing is kept for an expired code");
    }

    #[test]
    fn codes_from_before_the_start_or_out_of_step_are_unknown() {
        let s = SpentCodes::new(at(10_000), SKEW);
        assert_eq!(
            s.check(at(10_100), &code(1, 9_999)),
            Err(Refusal::CodeUnknown)
        );
        assert!(s.minted_before_start(&code(1, 9_999)));
        assert_eq!(s.check(at(10_100), &code(1, 10_000)), Ok(()));
        // Minted further in this server's future than the skew.
        assert_eq!(s.check(at(10_000), &code(1, 10_500)), Ok(()));
        assert_eq!(
            s.check(at(10_000), &code(1, 10_501)),
            Err(Refusal::CodeUnknown)
        );
        // A life longer than any balancer may give.
        let long = secret().mint(1, [3; 16], at(10_000), MAX_CODE_LIFE + SKEW);
        assert_eq!(s.check(at(10_000), &long), Err(Refusal::CodeUnknown));
    }

    #[test]
    fn the_set_is_bounded_and_refuses_rather_than_forgets() {
        let mut s = SpentCodes::new(at(0), SKEW);
        for i in 0..MAX_SPENT as u128 {
            let c = secret().mint(1, i.to_le_bytes(), at(0), CODE_TTL);
            s.spend(at(1), &c).unwrap();
        }
        assert_eq!(s.spend(at(1), &code(0xff, 0)), Err(Refusal::Overloaded));
        // Once those codes have expired there is room again.
        assert_eq!(s.spend(at(2501), &code(0xff, 1000)), Ok(()));
        assert_eq!(s.len(), 1);
    }
}
