//! The links between servers that replication runs over: one per pair of
//! servers. Either may dial when it has none, so that a server back from a
//! crash is linked at once; when both dials succeed, both ends keep the one
//! the lower id dialed (and otherwise the newer), so they agree. This is
//! where frames are decoded, where a link proves it comes from a server of
//! the cluster (JOIN → CHALLENGE → PROOF → READY) before anything else is
//! said on it, where a quiet link is kept alive (a `Ping` after a heartbeat
//! of silence) and a silent one declared dead, and where a link is refused,
//! closed and dialed again. What is said on a live link is the roles'
//! business: the master's, a follower's, a candidate's.

use super::messages::ReplicaMsg;
use super::ReplicaConfig;
use crate::auth::ClusterSecret;
use crate::frame::{self, FrameDecoder};
use crate::io::ConnId;
use crate::outbox::{drain_messages, Outbox};
use crate::refusal::{Refusal, PROTOCOL_VERSION};
use crate::time::{earliest, Timestamp};
use std::collections::{BTreeMap, BTreeSet};

/// Dial numbers of replication connections; the top bit keeps them apart
/// from the dials of other parts of a server.
pub const REPLICA_DIALS: u64 = 1 << 62;

/// Tells the other end why, and closes.
pub(super) fn refuse<E>(conn: ConnId, reason: Refusal, out: &mut Outbox<E>) {
    out.send(conn, &ReplicaMsg::Refused(reason));
    out.close(conn);
}

/// How far one connection to a peer has come.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Dialed, not connected yet.
    Connecting,
    /// Dialed and JOIN sent; waiting for the challenge, then READY.
    Joining,
    /// Accepted: JOIN received, CHALLENGE sent, waiting for the PROOF.
    Challenged {
        nonce: [u8; 16],
    },
    Live,
}

struct Conn {
    stage: Stage,
    decoder: FrameDecoder,
    /// Dialed by us (else accepted).
    dialed: bool,
    /// When its handshake must be over.
    deadline: Timestamp,
}

/// The link to one peer: the connection in use, if any, and those being
/// set up.
struct PeerLink {
    conns: BTreeMap<ConnId, Conn>,
    live: Option<ConnId>,
    /// When to dial again after a failure.
    retry_at: Timestamp,
    last_heard: Timestamp,
    last_sent: Timestamp,
}

/// What a link did that the roles care about.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum LinkNews {
    Up(u32),
    Down { peer: u32, why: String },
}

/// Every link of this server.
pub(super) struct Links {
    peers: BTreeMap<u32, PeerLink>,
    by_conn: BTreeMap<ConnId, u32>,
    /// Accepted connections that were refused and await their close.
    unclaimed: BTreeSet<ConnId>,
    next_dial: u64,
}

impl Links {
    pub(super) fn new(now: Timestamp, cfg: &ReplicaConfig) -> Self {
        let peers = cfg
            .peers
            .iter()
            .map(|p| {
                let link = PeerLink {
                    conns: BTreeMap::new(),
                    live: None,
                    retry_at: now,
                    last_heard: now,
                    last_sent: now,
                };
                (p.id, link)
            })
            .collect();
        Links {
            peers,
            by_conn: BTreeMap::new(),
            unclaimed: BTreeSet::new(),
            next_dial: 0,
        }
    }

    pub(super) fn owns(&self, conn: ConnId) -> bool {
        self.by_conn.contains_key(&conn) || self.unclaimed.contains(&conn)
    }

    pub(super) fn is_live(&self, peer: u32) -> bool {
        self.peers.get(&peer).is_some_and(|l| l.live.is_some())
    }

    /// Every peer whose link is up.
    pub(super) fn live(&self) -> Vec<u32> {
        self.peers
            .iter()
            .filter(|(_, l)| l.live.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Sends `msg` to `peer` if its link is up; false if it is not.
    pub(super) fn send<E>(
        &mut self,
        now: Timestamp,
        peer: u32,
        msg: &ReplicaMsg,
        out: &mut Outbox<E>,
    ) -> bool {
        let Some(link) = self.peers.get_mut(&peer) else {
            return false;
        };
        let Some(conn) = link.live else {
            return false;
        };
        link.last_sent = now;
        out.send(conn, msg);
        true
    }

    /// A connection whose first frame was a replication message: a peer's
    /// JOIN, answered with a challenge (`nonce`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn adopt<E>(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        decoder: FrameDecoder,
        first: &[u8],
        nonce: [u8; 16],
        cfg: &ReplicaConfig,
        out: &mut Outbox<E>,
    ) {
        let from = match frame::decode::<ReplicaMsg>(first) {
            Err(e) => {
                let detail = e.to_string();
                return self.refuse_unclaimed(conn, Refusal::Malformed { detail }, out);
            }
            Ok(ReplicaMsg::Join { version, .. }) if version != PROTOCOL_VERSION => {
                let r = Refusal::VersionMismatch {
                    ours: PROTOCOL_VERSION,
                    theirs: version,
                };
                return self.refuse_unclaimed(conn, r, out);
            }
            Ok(ReplicaMsg::Join { from, to, .. })
                if to == cfg.me && self.peers.contains_key(&from) =>
            {
                from
            }
            Ok(other) => {
                let what = format!("{other:?}");
                return self.refuse_unclaimed(conn, Refusal::Unexpected { what }, out);
            }
        };
        let Some(link) = self.peers.get_mut(&from) else {
            return;
        };
        out.send(conn, &ReplicaMsg::Challenge { nonce });
        link.conns.insert(
            conn,
            Conn {
                stage: Stage::Challenged { nonce },
                decoder,
                dialed: false,
                deadline: now + cfg.dead_after,
            },
        );
        self.by_conn.insert(conn, from);
    }

    fn refuse_unclaimed<E>(&mut self, conn: ConnId, reason: Refusal, out: &mut Outbox<E>) {
        refuse(conn, reason, out);
        self.unclaimed.insert(conn);
    }

    /// The dial reached the peer: ask to join.
    pub(super) fn on_connected<E>(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        cfg: &ReplicaConfig,
        out: &mut Outbox<E>,
    ) {
        let Some(&peer) = self.by_conn.get(&conn) else {
            return;
        };
        let Some(link) = self.peers.get_mut(&peer) else {
            return;
        };
        if let Some(c) = link.conns.get_mut(&conn) {
            if c.stage == Stage::Connecting {
                c.stage = Stage::Joining;
                link.last_sent = now;
                let join = ReplicaMsg::Join {
                    version: PROTOCOL_VERSION,
                    from: cfg.me,
                    to: peer,
                };
                out.send(conn, &join);
            }
        }
    }

    /// What arrived on `conn`: handshake messages are dealt with here;
    /// the peer's other messages on the connection in use come back for
    /// the roles.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_bytes<E>(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        bytes: &[u8],
        secret: &ClusterSecret,
        cfg: &ReplicaConfig,
        news: &mut Vec<LinkNews>,
        out: &mut Outbox<E>,
    ) -> Option<(u32, Vec<ReplicaMsg>)> {
        if self.unclaimed.contains(&conn) {
            // Refused already; whatever it says now goes unread.
            return None;
        }
        let peer = *self.by_conn.get(&conn)?;
        let link = self.peers.get_mut(&peer)?;
        let c = link.conns.get_mut(&conn)?;
        c.decoder.push(bytes);
        let mut msgs = Vec::new();
        let decoded = drain_messages::<ReplicaMsg>(&mut c.decoder, &mut msgs);
        link.last_heard = now;
        let mut app = Vec::new();
        for msg in msgs {
            let Some(stage) = self
                .peers
                .get(&peer)
                .and_then(|l| l.conns.get(&conn))
                .map(|c| c.stage)
            else {
                break;
            };
            match (stage, msg) {
                (Stage::Joining, ReplicaMsg::Challenge { nonce }) => {
                    let mac = secret.peer_proof(cfg.me, peer, &nonce);
                    out.send(conn, &ReplicaMsg::Proof { mac });
                }
                (Stage::Joining, ReplicaMsg::Ready) => {
                    self.go_live(peer, conn, cfg, news, out);
                }
                (Stage::Challenged { nonce }, ReplicaMsg::Proof { mac }) => {
                    let want = secret.peer_proof(peer, cfg.me, &nonce);
                    if blake3::Hash::from(want) != blake3::Hash::from(mac) {
                        refuse(conn, Refusal::BadCode, out);
                        self.close(now, conn, "bad proof", cfg, news);
                        break;
                    }
                    out.send(conn, &ReplicaMsg::Ready);
                    self.go_live(peer, conn, cfg, news, out);
                }
                (_, ReplicaMsg::Refused(reason)) => {
                    let why = format!("server {peer} refused: {reason}");
                    out.close(conn);
                    self.close(now, conn, &why, cfg, news);
                    break;
                }
                (Stage::Live, m) if !is_handshake(&m) => app.push(m),
                (_, other) => {
                    let what = format!("{other:?}");
                    let why = format!("unexpected message: {what}");
                    refuse(conn, Refusal::Unexpected { what }, out);
                    self.close(now, conn, &why, cfg, news);
                    break;
                }
            }
        }
        if let Err(e) = decoded {
            let detail = e.to_string();
            let why = format!("malformed message: {detail}");
            refuse(conn, Refusal::Malformed { detail }, out);
            self.close(now, conn, &why, cfg, news);
        }
        let in_use = self.peers.get(&peer).and_then(|l| l.live) == Some(conn);
        Some((peer, if in_use { app } else { Vec::new() }))
    }

    /// `conn` to `peer` finished its handshake. If another connection is in
    /// use, both ends keep the one the lower id dialed, else the newer.
    fn go_live<E>(
        &mut self,
        peer: u32,
        conn: ConnId,
        cfg: &ReplicaConfig,
        news: &mut Vec<LinkNews>,
        out: &mut Outbox<E>,
    ) {
        let Some(link) = self.peers.get_mut(&peer) else {
            return;
        };
        let lower_dials = |c: &Conn| c.dialed == (cfg.me < peer);
        let new_preferred = link.conns.get(&conn).is_some_and(lower_dials);
        if let Some(old) = link.live {
            let old_preferred = link.conns.get(&old).is_some_and(lower_dials);
            if old_preferred && !new_preferred {
                link.conns.remove(&conn);
                self.by_conn.remove(&conn);
                out.close(conn);
                return;
            }
            link.conns.remove(&old);
            self.by_conn.remove(&old);
            out.close(old);
        }
        if let Some(c) = link.conns.get_mut(&conn) {
            c.stage = Stage::Live;
        }
        link.live = Some(conn);
        if new_preferred {
            // Nothing can beat it: drop what is still on its way.
            let others: Vec<ConnId> = link.conns.keys().filter(|c| **c != conn).copied().collect();
            for c in others {
                link.conns.remove(&c);
                self.by_conn.remove(&c);
                out.close(c);
            }
        }
        news.push(LinkNews::Up(peer));
    }

    /// Refuses and closes the link to `peer` (a role found its messages
    /// wrong, or the link broke a rule).
    pub(super) fn drop_link<E>(
        &mut self,
        now: Timestamp,
        peer: u32,
        reason: Refusal,
        cfg: &ReplicaConfig,
        news: &mut Vec<LinkNews>,
        out: &mut Outbox<E>,
    ) {
        let Some(conn) = self.peers.get(&peer).and_then(|l| l.live) else {
            return;
        };
        let why = reason.to_string();
        refuse(conn, reason, out);
        self.close(now, conn, &why, cfg, news);
    }

    /// `conn` broke, closed or could not open.
    pub(super) fn close(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        why: &str,
        cfg: &ReplicaConfig,
        news: &mut Vec<LinkNews>,
    ) {
        self.unclaimed.remove(&conn);
        let Some(peer) = self.by_conn.remove(&conn) else {
            return;
        };
        let Some(link) = self.peers.get_mut(&peer) else {
            return;
        };
        let Some(c) = link.conns.remove(&conn) else {
            return;
        };
        if c.dialed {
            link.retry_at = now + cfg.reconnect_after;
        }
        if link.live == Some(conn) {
            link.live = None;
            link.retry_at = now + cfg.reconnect_after;
            news.push(LinkNews::Down {
                peer,
                why: why.to_string(),
            });
        }
    }

    /// Dials what is down and due, pings what has been quiet for a
    /// heartbeat, and drops what has been silent for `dead_after` (or is
    /// stuck in its handshake as long).
    pub(super) fn handle_timeout<E>(
        &mut self,
        now: Timestamp,
        view: u64,
        cfg: &ReplicaConfig,
        news: &mut Vec<LinkNews>,
        out: &mut Outbox<E>,
    ) {
        let ids: Vec<u32> = self.peers.keys().copied().collect();
        for peer in ids {
            let Some(link) = self.peers.get_mut(&peer) else {
                continue;
            };
            let late: Vec<ConnId> = link
                .conns
                .iter()
                .filter(|(_, c)| c.stage != Stage::Live && c.deadline <= now)
                .map(|(id, _)| *id)
                .collect();
            for conn in late {
                let step = "the replication handshake".to_string();
                let why = format!("timed out waiting for {step}");
                refuse(conn, Refusal::Timeout { step }, out);
                self.close(now, conn, &why, cfg, news);
            }
            let Some(link) = self.peers.get_mut(&peer) else {
                continue;
            };
            match link.live {
                Some(_) if now.saturating_since(link.last_heard) >= cfg.dead_after => {
                    let step = format!("server {peer}");
                    self.drop_link(now, peer, Refusal::Timeout { step }, cfg, news, out);
                }
                Some(conn) if now.saturating_since(link.last_sent) >= cfg.heartbeat => {
                    link.last_sent = now;
                    out.send(conn, &ReplicaMsg::Ping { view });
                }
                _ => {}
            }
            let Some(link) = self.peers.get_mut(&peer) else {
                continue;
            };
            let dialing = link.conns.values().any(|c| c.dialed);
            if link.live.is_none() && !dialing && link.retry_at <= now {
                let conn = ConnId::dialed(REPLICA_DIALS | self.next_dial);
                self.next_dial += 1;
                link.conns.insert(
                    conn,
                    Conn {
                        stage: Stage::Connecting,
                        decoder: FrameDecoder::default(),
                        dialed: true,
                        deadline: now + cfg.dead_after,
                    },
                );
                link.last_heard = now;
                link.last_sent = now;
                self.by_conn.insert(conn, peer);
                if let Some(p) = cfg.peers.iter().find(|p| p.id == peer) {
                    out.connect(conn, p.addr.clone());
                }
            }
        }
    }

    pub(super) fn poll_timeout(&self, cfg: &ReplicaConfig) -> Option<Timestamp> {
        let mut next = None;
        for link in self.peers.values() {
            for c in link.conns.values().filter(|c| c.stage != Stage::Live) {
                next = earliest(next, Some(c.deadline));
            }
            let t = match link.live {
                Some(_) => {
                    Some((link.last_heard + cfg.dead_after).min(link.last_sent + cfg.heartbeat))
                }
                None if !link.conns.values().any(|c| c.dialed) => Some(link.retry_at),
                None => None,
            };
            next = earliest(next, t);
        }
        next
    }
}

fn is_handshake(m: &ReplicaMsg) -> bool {
    matches!(
        m,
        ReplicaMsg::Join { .. }
            | ReplicaMsg::Challenge { .. }
            | ReplicaMsg::Proof { .. }
            | ReplicaMsg::Ready
    )
}
