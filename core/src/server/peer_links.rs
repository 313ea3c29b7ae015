//! The tracker's side on each server: the sessions of registered peers (the
//! seeds' REGISTER OK and UPDATE). See `docs/peers.md`.
//!
//! A logged-in session asks `PeerRegister { addr }`; this server draws the
//! peer's ticket, orders `PeerJoin` with the ticket's digest, and once the
//! entry is applied here answers `PeerRegistered { peer, ticket }` (REGISTER
//! OK) and links the session to the peer. From then on, every change of the
//! registry this server applies is pushed to every linked session as
//! `PeerUpdate` (UPDATE), and the peer's lease is renewed every
//! [`RENEW_EVERY`] while the session lives; when it ends, the peer leaves.
//! Renewals and leaves are this server's own transactions (a session id
//! drawn at start), not the peer session's, which stays free for its
//! operations and pings.

use super::event::ServerEvent;
use super::messages::{OpError, PeerInfo, SessionMsg};
use crate::entropy::Entropy;
use crate::io::ConnId;
use crate::outbox::Outbox;
use crate::replication::entry::{Origin, Txn, TxnResult};
use crate::replication::Replica;
use crate::time::Timestamp;
use std::collections::BTreeMap;
use std::time::Duration;

/// How often a linked peer's lease is renewed (a third of the lease).
pub const RENEW_EVERY: Duration = Duration::from_secs(10);

pub(super) struct PeerLinks {
    id: u32,
    /// This server's own session for the renewals and leaves it orders,
    /// drawn at the first registration (so that servers without peers draw
    /// nothing more than before).
    session: Option<u64>,
    requests: u64,
    /// Registrations ordered: the session that asked, and its ticket.
    joining: BTreeMap<Origin, (ConnId, [u8; 32])>,
    links: BTreeMap<ConnId, Link>,
    /// Peers whose sessions ended, to be ordered out at the next
    /// [`PeerLinks::flush`].
    leaving: Vec<u64>,
    /// The registry's digest at the last push.
    pushed: Option<[u8; 32]>,
}

struct Link {
    peer: u64,
    renew_at: Timestamp,
}

impl PeerLinks {
    pub(super) fn new(id: u32) -> Self {
        PeerLinks {
            id,
            session: None,
            requests: 0,
            joining: BTreeMap::new(),
            links: BTreeMap::new(),
            leaving: Vec::new(),
            pushed: None,
        }
    }

    /// The registration of the session on `conn` was ordered as `origin`;
    /// `ticket` is its answer's.
    pub(super) fn joining(
        &mut self,
        origin: Origin,
        conn: ConnId,
        ticket: [u8; 32],
        entropy: &mut Entropy,
    ) {
        if self.session.is_none() {
            self.session = Some(entropy.next_u64() & !Origin::CLIENT_CHOSEN);
        }
        self.joining.insert(origin, (conn, ticket));
    }

    /// `origin`'s entry was applied: if it was a registration, the answer
    /// for its session (linked now if it succeeded).
    pub(super) fn joined(
        &mut self,
        now: Timestamp,
        origin: &Origin,
        result: &TxnResult,
    ) -> Option<(ConnId, SessionMsg)> {
        let (conn, ticket) = self.joining.remove(origin)?;
        let msg = match result {
            TxnResult::PeerJoined { peer } => {
                let link = Link {
                    peer: *peer,
                    renew_at: now + RENEW_EVERY,
                };
                self.links.insert(conn, link);
                // The new peer hears the list at once.
                self.pushed = None;
                SessionMsg::PeerRegistered {
                    peer: *peer,
                    ticket,
                }
            }
            TxnResult::NoSuchUser => SessionMsg::Failed(OpError::NoSuchUser),
            other => SessionMsg::Failed(OpError::Unavailable {
                reason: format!("the registration came back as {other:?}"),
            }),
        };
        Some((conn, msg))
    }

    /// After entries were applied: the list, to every linked session, if
    /// it changed since the last push.
    pub(super) fn push_updates(&mut self, replica: &Replica, out: &mut Outbox<ServerEvent>) {
        if self.links.is_empty() {
            return;
        }
        let state = replica.state();
        let mut h = blake3::Hasher::new();
        state.registry().digest_into(&mut h);
        let digest = *h.finalize().as_bytes();
        if self.pushed == Some(digest) {
            return;
        }
        self.pushed = Some(digest);
        let peers: Vec<PeerInfo> = (state.registry().all())
            .map(|p| PeerInfo {
                peer: p.id,
                user: state
                    .user(p.user)
                    .map(|u| u.name.clone())
                    .unwrap_or_default(),
                addr: p.addr.clone(),
                ticket_digest: p.ticket_digest,
                key: p.key,
            })
            .collect();
        let msg = SessionMsg::PeerUpdate { peers };
        for conn in self.links.keys() {
            out.send(*conn, &msg);
        }
    }

    /// The peer the session on `conn` registered, if it is linked.
    pub(super) fn peer_of(&self, conn: ConnId) -> Option<u64> {
        self.links.get(&conn).map(|l| l.peer)
    }

    /// Every linked session and its peer.
    pub(super) fn linked(&self) -> impl Iterator<Item = (ConnId, u64)> + '_ {
        self.links.iter().map(|(c, l)| (*c, l.peer))
    }

    /// The next of this server's own origins (its session is drawn before
    /// any peer is linked, so before any renewal, leave or SYNC entry it
    /// orders for a linked peer). One sequence for all of them, so that
    /// they apply in the order they were ordered.
    pub(super) fn own_origin(&mut self) -> Origin {
        self.requests += 1;
        Origin {
            server: self.id,
            session: self.session.unwrap_or(0),
            request: self.requests,
        }
    }

    /// Renews the leases that are due.
    pub(super) fn handle_timeout(
        &mut self,
        now: Timestamp,
        replica: &mut Replica,
        out: &mut Outbox<ServerEvent>,
    ) {
        let due: Vec<u64> = (self.links.values_mut())
            .filter(|l| l.renew_at <= now)
            .map(|l| {
                l.renew_at = now + RENEW_EVERY;
                l.peer
            })
            .collect();
        for peer in due {
            let origin = self.own_origin();
            // Backlogged: the next renewal, 10 s on, is still in the lease.
            let _ = replica.submit(now, origin, Txn::PeerRenew { peer }, out);
        }
    }

    pub(super) fn poll_timeout(&self) -> Option<Timestamp> {
        self.links.values().map(|l| l.renew_at).min()
    }

    /// The session on `conn` ended: its peer leaves (at the next flush).
    pub(super) fn forget(&mut self, conn: ConnId) {
        self.joining.retain(|_, (c, _)| *c != conn);
        if let Some(link) = self.links.remove(&conn) {
            self.leaving.push(link.peer);
        }
    }

    /// Orders the leaves of the peers whose sessions ended.
    pub(super) fn flush(
        &mut self,
        now: Timestamp,
        replica: &mut Replica,
        out: &mut Outbox<ServerEvent>,
    ) {
        for peer in std::mem::take(&mut self.leaving) {
            let origin = self.own_origin();
            let txn = Txn::PeerLeave {
                peer,
                expired: false,
            };
            // If this cannot be ordered, the lease runs out instead.
            let _ = replica.submit(now, origin, txn, out);
        }
    }
}
