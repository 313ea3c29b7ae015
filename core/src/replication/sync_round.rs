//! SYNC rounds (the seeds' SYNC OK / SYNC READ / SYNC FIN): the cluster
//! gives write access to one registered peer at a time, in turn, and every
//! other peer only reads meanwhile. See `docs/peers.md`.
//!
//! The round is replicated state, so that a new master continues it and
//! every server tells its peers the same writer for the same log index.
//! One round runs at a time. A `SyncStart` starts one (its id is the
//! entry's index) with the peers registered then, ascending, and grants
//! the first of them; a `SyncStart` during a round joins it instead.
//!
//! Each grant is made by an entry, and its **fencing token** is that
//! entry's `(view, index)`: entries later in the log have a greater one
//! whichever master ordered them, so a peer that remembers the highest
//! token it has heard can refuse anything stamped by an older writer. A
//! grant moves on (to the next peer of the order still registered; the
//! round ends when none is left) when:
//!
//! - the writer's server orders `SyncDone` for the writer's SYNC FIN,
//! - the writer leaves the registry (the same entry that removes it),
//! - its lease (`SYNC_LEASE_SECS` from the entry that made or last renewed
//!   it) has run out by the `at` of the master's `SyncExpire`.
//!
//! A `SyncDone`, `SyncRenew` or `SyncExpire` names the grant it means by
//! round and token (and peer); one that names any other grant is stale and
//! changes nothing, so a late or repeated one can never move a later grant.

use super::entry::{Entry, TxnResult};
use super::registry::Registry;
use crate::frame;
use crate::store::{Table, Write};
use speedy::{Readable, Writable};

/// How long a grant lasts without a renewal.
pub const SYNC_LEASE_SECS: u64 = 30;

/// A grant's fencing token: the view and index of the entry that made it.
/// Ordered by view, then index: the order of the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Readable, Writable)]
pub struct Token {
    pub view: u64,
    pub index: u64,
}

impl Token {
    pub fn of(entry: &Entry) -> Token {
        Token {
            view: entry.view,
            index: entry.index,
        }
    }
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.view, self.index)
    }
}

/// The round in progress, as every replica holds it. While a round runs,
/// exactly one peer of its order holds the grant.
#[derive(Clone, Debug, PartialEq, Eq, Readable, Writable)]
pub struct Round {
    /// The log index of its `SyncStart`.
    pub id: u64,
    /// The peers registered at its start, by id: the turns, in order.
    pub order: Vec<u64>,
    /// Who may write now.
    pub writer: u64,
    pub token: Token,
    /// Unix seconds (master's clock) after which the grant may be expired.
    pub lease_until: u64,
    /// Peers whose SYNC FIN was accepted, in turn. A peer passed over (it
    /// left, or its lease ran out) is not among them.
    pub written: Vec<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncRounds {
    current: Option<Round>,
    /// The id of the last round that ended.
    last_finished: Option<u64>,
}

const CURRENT: &[u8] = b"current";
const LAST: &[u8] = b"last";

impl SyncRounds {
    pub fn load(&mut self, key: &[u8], value: &[u8]) -> Result<(), String> {
        let bad = |e: frame::FrameError| format!("sync table: {e}");
        match key {
            CURRENT => self.current = Some(frame::decode(value).map_err(bad)?),
            LAST => self.last_finished = Some(frame::decode(value).map_err(bad)?),
            _ => return Err(format!("sync table: unknown key {key:?}")),
        }
        Ok(())
    }

    pub fn current(&self) -> Option<&Round> {
        self.current.as_ref()
    }

    pub fn last_finished(&self) -> Option<u64> {
        self.last_finished
    }

    /// The current grant, if its lease ran out by `now` (Unix seconds):
    /// for the master to order its `SyncExpire`.
    pub fn expired(&self, now: u64) -> Option<&Round> {
        self.current.as_ref().filter(|r| r.lease_until < now)
    }

    /// `SyncStart` for `peer` (registered, checked by the caller): a new
    /// round of every registered peer, the first granted by this entry; or
    /// the round already running.
    pub fn start(
        &mut self,
        peer: u64,
        registry: &Registry,
        entry: &Entry,
        writes: &mut Vec<Write>,
    ) -> TxnResult {
        if let Some(r) = &self.current {
            return TxnResult::SyncStarted {
                round: r.id,
                joined: true,
            };
        }
        // The registry is keyed by id: ascending already. It holds `peer`,
        // so the order is never empty.
        let order: Vec<u64> = registry.all().map(|p| p.id).collect();
        let Some(&first) = order.first() else {
            return TxnResult::NoSuchPeer;
        };
        debug_assert!(order.contains(&peer));
        let round = Round {
            id: entry.index,
            order,
            writer: first,
            token: Token::of(entry),
            lease_until: entry.at.saturating_add(SYNC_LEASE_SECS),
            written: Vec::new(),
        };
        self.current = Some(round);
        self.store(writes);
        TxnResult::SyncStarted {
            round: entry.index,
            joined: false,
        }
    }

    /// `SyncDone`: `peer` finished writing under `token`.
    pub fn done(
        &mut self,
        round: u64,
        peer: u64,
        token: Token,
        registry: &Registry,
        entry: &Entry,
        writes: &mut Vec<Write>,
    ) -> TxnResult {
        let Some(r) = self.current_grant(round, peer, token) else {
            return TxnResult::SyncStale;
        };
        r.written.push(peer);
        self.pass_on(registry, entry, writes)
    }

    /// `SyncRenew`: the writer is still at it; its lease runs on from this
    /// entry (never shortened).
    pub fn renew(
        &mut self,
        round: u64,
        peer: u64,
        token: Token,
        at: u64,
        writes: &mut Vec<Write>,
    ) -> TxnResult {
        let Some(r) = self.current_grant(round, peer, token) else {
            return TxnResult::SyncStale;
        };
        r.lease_until = r.lease_until.max(at.saturating_add(SYNC_LEASE_SECS));
        self.store(writes);
        TxnResult::SyncRenewed
    }

    /// `SyncExpire`: the master saw the lease run out; applied only if it
    /// still has by this entry's time (a renewal applied in between wins).
    pub fn expire(
        &mut self,
        round: u64,
        token: Token,
        registry: &Registry,
        entry: &Entry,
        writes: &mut Vec<Write>,
    ) -> TxnResult {
        let Some(r) = (self.current.as_ref()).filter(|r| r.id == round && r.token == token) else {
            return TxnResult::SyncStale;
        };
        if r.lease_until >= entry.at {
            return TxnResult::SyncRenewed;
        }
        self.pass_on(registry, entry, writes)
    }

    /// After an entry that changed the registry: if the writer is no
    /// longer registered, the grant moves on in the same entry. `None` if
    /// nothing changed.
    pub fn registry_changed(
        &mut self,
        registry: &Registry,
        entry: &Entry,
        writes: &mut Vec<Write>,
    ) -> Option<TxnResult> {
        let writer = self.current.as_ref()?.writer;
        if registry.get(writer).is_some() {
            return None;
        }
        Some(self.pass_on(registry, entry, writes))
    }

    fn current_grant(&mut self, round: u64, peer: u64, token: Token) -> Option<&mut Round> {
        (self.current.as_mut()).filter(|r| r.id == round && r.writer == peer && r.token == token)
    }

    /// Grants the next peer of the order that is still registered, with
    /// this entry's token, or ends the round if none is left.
    fn pass_on(
        &mut self,
        registry: &Registry,
        entry: &Entry,
        writes: &mut Vec<Write>,
    ) -> TxnResult {
        let Some(r) = self.current.as_mut() else {
            return TxnResult::SyncStale;
        };
        let at = r.order.iter().position(|p| *p == r.writer).unwrap_or(0);
        let rest = r.order.get(at + 1..).unwrap_or_default();
        let next = rest.iter().find(|p| registry.get(**p).is_some());
        match next {
            Some(&peer) => {
                r.writer = peer;
                r.token = Token::of(entry);
                r.lease_until = entry.at.saturating_add(SYNC_LEASE_SECS);
                let granted = TxnResult::SyncGranted {
                    round: r.id,
                    peer,
                    token: r.token,
                };
                self.store(writes);
                granted
            }
            None => {
                let round = r.id;
                self.current = None;
                self.last_finished = Some(round);
                writes.push(Write::Delete {
                    table: Table::Sync,
                    key: CURRENT.to_vec(),
                });
                writes.push(Write::Put {
                    table: Table::Sync,
                    key: LAST.to_vec(),
                    value: round.write_to_vec().unwrap_or_default(),
                });
                TxnResult::SyncFinished { round }
            }
        }
    }

    fn store(&self, writes: &mut Vec<Write>) {
        if let Some(r) = &self.current {
            writes.push(Write::Put {
                table: Table::Sync,
                key: CURRENT.to_vec(),
                value: r.write_to_vec().unwrap_or_default(),
            });
        }
    }

    pub fn digest_into(&self, h: &mut blake3::Hasher) {
        if let Some(r) = &self.current {
            h.update(&r.write_to_vec().unwrap_or_default());
        }
        if let Some(last) = self.last_finished {
            h.update(&last.to_le_bytes());
        }
    }
}

#[cfg(test)]
#[path = "sync_round_tests.rs"]
mod tests;
