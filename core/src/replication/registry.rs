//! The peer registry: the tracker of `ferry peer` (the seeds' REGISTER and
//! UPDATE), kept in the replicated state so that peers registered through
//! different servers see each other and the list survives the loss of any
//! server, the master included.
//!
//! A peer is registered by a `PeerJoin` entry; its id is that entry's log
//! index (unique, and the same on every replica). It stays registered while
//! its lease runs: `PEER_LEASE_SECS` from the join, pushed back by each
//! `PeerRenew` that the server holding the peer's link orders while the
//! peer answers. Times are the master's clock as written in each entry
//! (`Entry::at`), so every replica decides alike. A `PeerLeave` removes a
//! peer that said `quit` or whose link closed; one ordered because the
//! lease ran out (`expired`) removes it only if no renewal was applied in
//! between, so a late expiry never drops a live peer.
//!
//! Each registration carries the BLAKE3 digest of a ticket that only the
//! peer was given: on connect a peer presents its ticket, and the other end
//! checks it against the list it last heard (see `docs/peers.md`).

use super::entry::TxnResult;
use crate::frame;
use crate::store::{Table, Write};
use crate::tls::Fingerprint;
use speedy::{Readable, Writable};
use std::collections::BTreeMap;

/// How long a registration lasts without a renewal.
pub const PEER_LEASE_SECS: u64 = 30;

/// One registered peer, as every replica holds it.
#[derive(Clone, Debug, PartialEq, Eq, Readable, Writable)]
pub struct Registered {
    /// The log index of its `PeerJoin`.
    pub id: u64,
    pub user: u64,
    /// Where it listens for other peers, as it said (`HOST:PORT`).
    pub addr: String,
    /// BLAKE3 of the ticket it was given.
    pub ticket_digest: [u8; 32],
    /// Unix seconds after which it may be expired.
    pub lease_until: u64,
    /// The fingerprint of the certificate it registered with.
    pub key: Option<Fingerprint>,
}

/// What a `PeerJoin` says of the peer.
pub struct Joining<'a> {
    pub user: u64,
    pub addr: &'a str,
    pub ticket_digest: [u8; 32],
    pub key: Option<Fingerprint>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Registry {
    peers: BTreeMap<u64, Registered>,
}

fn key(id: u64) -> Vec<u8> {
    id.to_be_bytes().to_vec()
}

impl Registry {
    pub fn load(&mut self, value: &[u8]) -> Result<(), String> {
        let p: Registered = frame::decode(value).map_err(|e| format!("peers table: {e}"))?;
        self.peers.insert(p.id, p);
        Ok(())
    }

    pub fn get(&self, id: u64) -> Option<&Registered> {
        self.peers.get(&id)
    }

    /// Every registered peer, by id.
    pub fn all(&self) -> impl Iterator<Item = &Registered> {
        self.peers.values()
    }

    /// Peers whose lease ran out by `now` (Unix seconds): for the master
    /// to order their `PeerLeave { expired: true }`.
    pub fn expired(&self, now: u64) -> Vec<u64> {
        (self.peers.values())
            .filter(|p| p.lease_until < now)
            .map(|p| p.id)
            .collect()
    }

    /// Entry `id` registers `user`'s peer at `addr`. A user's earlier
    /// registration at the same address (a peer that restarted) is
    /// replaced: one address, one peer.
    pub fn join(&mut self, id: u64, j: Joining<'_>, at: u64, writes: &mut Vec<Write>) -> TxnResult {
        let Joining {
            user,
            addr,
            ticket_digest,
            key,
        } = j;
        let stale: Vec<u64> = (self.peers.values())
            .filter(|p| p.user == user && p.addr == addr)
            .map(|p| p.id)
            .collect();
        for old in stale {
            self.remove(old, writes);
        }
        let p = Registered {
            id,
            user,
            addr: addr.to_string(),
            ticket_digest,
            lease_until: at.saturating_add(PEER_LEASE_SECS),
            key,
        };
        self.store(&p, writes);
        self.peers.insert(id, p);
        TxnResult::PeerJoined { peer: id }
    }

    /// Pushes peer `id`'s lease back to `at + PEER_LEASE_SECS`.
    pub fn renew(&mut self, id: u64, at: u64, writes: &mut Vec<Write>) -> TxnResult {
        let Some(mut p) = self.peers.get(&id).cloned() else {
            return TxnResult::NoSuchPeer;
        };
        p.lease_until = p.lease_until.max(at.saturating_add(PEER_LEASE_SECS));
        self.store(&p, writes);
        self.peers.insert(id, p);
        TxnResult::PeerRenewed
    }

    /// Removes peer `id`; if `expired`, only if its lease has run out by
    /// `at` (a renewal applied since the master decided wins).
    pub fn leave(&mut self, id: u64, expired: bool, at: u64, writes: &mut Vec<Write>) -> TxnResult {
        match self.peers.get(&id) {
            None => TxnResult::NoSuchPeer,
            Some(p) if expired && p.lease_until >= at => TxnResult::PeerRenewed,
            Some(_) => {
                self.remove(id, writes);
                TxnResult::PeerLeft
            }
        }
    }

    /// Removes every peer `user` registered (their account is gone).
    pub fn remove_user(&mut self, user: u64, writes: &mut Vec<Write>) {
        let theirs: Vec<u64> = (self.peers.values())
            .filter(|p| p.user == user)
            .map(|p| p.id)
            .collect();
        for id in theirs {
            self.remove(id, writes);
        }
    }

    fn store(&self, p: &Registered, writes: &mut Vec<Write>) {
        writes.push(Write::Put {
            table: Table::Peers,
            key: key(p.id),
            value: p.write_to_vec().unwrap_or_default(),
        });
    }

    fn remove(&mut self, id: u64, writes: &mut Vec<Write>) {
        self.peers.remove(&id);
        writes.push(Write::Delete {
            table: Table::Peers,
            key: key(id),
        });
    }

    pub fn digest_into(&self, h: &mut blake3::Hasher) {
        for p in self.peers.values() {
            h.update(&p.write_to_vec().unwrap_or_default());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: [u8; 32] = [7; 32];

    fn j(user: u64, addr: &str, ticket_digest: [u8; 32]) -> Joining<'_> {
        Joining {
            user,
            addr,
            ticket_digest,
            key: None,
        }
    }

    #[test]
    fn a_join_registers_under_its_index_and_a_rejoin_at_one_address_replaces() {
        let (mut r, mut w) = (Registry::default(), Vec::new());
        assert_eq!(
            r.join(5, j(1, "10.0.0.1:9000", T), 100, &mut w),
            TxnResult::PeerJoined { peer: 5 }
        );
        r.join(6, j(2, "10.0.0.2:9000", T), 100, &mut w);
        // Alice's peer restarts and registers again at the same address.
        r.join(9, j(1, "10.0.0.1:9000", T), 110, &mut w);
        let ids: Vec<u64> = r.all().map(|p| p.id).collect();
        assert_eq!(ids, [6, 9]);
        assert_eq!(r.get(9).map(|p| p.lease_until), Some(110 + PEER_LEASE_SECS));
        // ... but a second address of hers is a second peer.
        r.join(10, j(1, "10.0.0.3:9000", T), 110, &mut w);
        assert_eq!(r.all().count(), 3);
    }

    #[test]
    fn a_lease_runs_out_unless_renewed_and_a_late_expiry_spares_a_renewed_peer() {
        let (mut r, mut w) = (Registry::default(), Vec::new());
        r.join(1, j(1, "a:1", T), 100, &mut w);
        r.join(2, j(2, "b:1", T), 100, &mut w);
        assert!(r.expired(100 + PEER_LEASE_SECS).is_empty());
        assert_eq!(r.expired(101 + PEER_LEASE_SECS), [1, 2]);
        // Peer 1's server renewed it before the master's expiry applied.
        assert_eq!(r.renew(1, 125, &mut w), TxnResult::PeerRenewed);
        let late = 131;
        assert_eq!(r.leave(1, true, late, &mut w), TxnResult::PeerRenewed);
        assert_eq!(r.leave(2, true, late, &mut w), TxnResult::PeerLeft);
        assert_eq!(r.all().map(|p| p.id).collect::<Vec<_>>(), [1]);
        // A renewal never shortens a lease.
        r.renew(1, 90, &mut w);
        assert_eq!(r.get(1).map(|p| p.lease_until), Some(125 + PEER_LEASE_SECS));
        assert_eq!(r.renew(2, 140, &mut w), TxnResult::NoSuchPeer);
        assert_eq!(r.leave(1, false, 0, &mut w), TxnResult::PeerLeft);
        assert_eq!(r.leave(1, false, 0, &mut w), TxnResult::NoSuchPeer);
    }

    #[test]
    fn the_writes_rebuild_the_same_registry() {
        let (mut r, mut w) = (Registry::default(), Vec::new());
        r.join(1, j(1, "a:1", T), 100, &mut w);
        r.join(2, j(2, "b:1", [1; 32]), 100, &mut w);
        r.renew(2, 120, &mut w);
        r.leave(1, false, 121, &mut w);
        let mut rows: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for write in w {
            match write {
                Write::Put { key, value, .. } => {
                    rows.insert(key, value);
                }
                Write::Delete { key, .. } => {
                    rows.remove(&key);
                }
                _ => {}
            }
        }
        let mut rebuilt = Registry::default();
        for v in rows.values() {
            rebuilt.load(v).unwrap();
        }
        assert_eq!(rebuilt, r);
    }
}
