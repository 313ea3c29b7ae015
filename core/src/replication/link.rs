//! The connections between servers that replication runs over: a
//! follower's one link to the master, which it dials, and the master's links
//! from its followers, which it accepts. This is where frames are decoded,
//! where a link proves it comes from a server of the cluster (JOIN →
//! CHALLENGE → PROOF → WELCOME) before anything else is said on it, and
//! where a link is refused, closed and dialed again. What is said on a live
//! link is the leader's and the follower's business.

use super::messages::ReplicaMsg;
use super::ReplicaConfig;
use crate::auth::ClusterSecret;
use crate::frame::{self, FrameDecoder, FrameError};
use crate::io::ConnId;
use crate::outbox::{drain_messages, Outbox};
use crate::refusal::{Refusal, PROTOCOL_VERSION};
use crate::time::Timestamp;
use std::collections::BTreeMap;

/// Dial numbers of replication connections; the top bit keeps them apart
/// from the dials of other parts of a server.
pub const REPLICA_DIALS: u64 = 1 << 62;

/// Tells the other end why, and closes.
pub(super) fn refuse<E>(conn: ConnId, reason: Refusal, out: &mut Outbox<E>) {
    out.send(conn, &ReplicaMsg::Refused(reason));
    out.close(conn);
}

/// Where a follower's link to the master is.
pub(super) enum Link {
    Down { retry_at: Timestamp },
    Connecting { conn: ConnId },
    Joining { conn: ConnId },
    Live { conn: ConnId },
}

/// A follower's link to the master.
pub(super) struct MasterLink {
    pub(super) link: Link,
    decoder: FrameDecoder,
    pub(super) last_heard: Timestamp,
    next_dial: u64,
}

impl MasterLink {
    /// Down, to be dialed at once.
    pub(super) fn new(now: Timestamp) -> Self {
        MasterLink {
            link: Link::Down { retry_at: now },
            decoder: FrameDecoder::default(),
            last_heard: now,
            next_dial: 0,
        }
    }

    pub(super) fn conn(&self) -> Option<ConnId> {
        match self.link {
            Link::Down { .. } => None,
            Link::Connecting { conn } | Link::Joining { conn } | Link::Live { conn } => Some(conn),
        }
    }

    /// The connection, once the master has welcomed us on it.
    pub(super) fn live(&self) -> Option<ConnId> {
        match self.link {
            Link::Live { conn } => Some(conn),
            _ => None,
        }
    }

    /// Decodes what arrived on `conn` into `msgs`; `None` if `conn` is not
    /// this link.
    pub(super) fn decode(
        &mut self,
        conn: ConnId,
        bytes: &[u8],
        msgs: &mut Vec<ReplicaMsg>,
    ) -> Option<Result<(), FrameError>> {
        if self.conn() != Some(conn) {
            return None;
        }
        self.decoder.push(bytes);
        Some(drain_messages::<ReplicaMsg>(&mut self.decoder, msgs))
    }

    /// Dials the master if the link is down and its retry is due; true if
    /// it did.
    pub(super) fn dial<E>(
        &mut self,
        now: Timestamp,
        cfg: &ReplicaConfig,
        out: &mut Outbox<E>,
    ) -> bool {
        let Link::Down { retry_at } = self.link else {
            return false;
        };
        if retry_at > now {
            return false;
        }
        let conn = ConnId::dialed(REPLICA_DIALS | self.next_dial);
        self.next_dial += 1;
        self.link = Link::Connecting { conn };
        self.decoder = FrameDecoder::default();
        self.last_heard = now;
        if let Some(m) = cfg.peers.iter().find(|p| p.id == cfg.master) {
            out.connect(conn, m.addr.clone());
        }
        true
    }

    /// The connection of a link that has been silent too long, if any.
    pub(super) fn silent(&self, now: Timestamp, cfg: &ReplicaConfig) -> Option<ConnId> {
        self.conn()
            .filter(|_| now.saturating_since(self.last_heard) >= cfg.dead_after)
    }

    pub(super) fn poll_timeout(&self, cfg: &ReplicaConfig) -> Timestamp {
        match self.link {
            Link::Down { retry_at } => retry_at,
            _ => self.last_heard + cfg.dead_after,
        }
    }

    /// The dial reached the master: ask to join, saying where our log ends.
    pub(super) fn on_connected<E>(
        &mut self,
        conn: ConnId,
        me: u32,
        last: u64,
        out: &mut Outbox<E>,
    ) {
        if let Link::Connecting { conn: c } = self.link {
            if c == conn {
                self.link = Link::Joining { conn };
                let msg = ReplicaMsg::Join {
                    version: PROTOCOL_VERSION,
                    from: me,
                    last,
                };
                out.send(conn, &msg);
            }
        }
    }

    pub(super) fn joining(&self) -> bool {
        matches!(self.link, Link::Joining { .. })
    }

    /// The master's challenge: prove we hold the cluster secret.
    pub(super) fn answer_challenge<E>(
        &self,
        conn: ConnId,
        nonce: &[u8; 16],
        secret: &ClusterSecret,
        cfg: &ReplicaConfig,
        out: &mut Outbox<E>,
    ) {
        let mac = secret.peer_proof(cfg.me, cfg.master, nonce);
        out.send(conn, &ReplicaMsg::Proof { mac });
    }

    /// The master welcomed us on `conn`: the link is live.
    pub(super) fn welcomed(&mut self, conn: ConnId) {
        self.link = Link::Live { conn };
    }

    /// `conn` broke, closed or could not open. True if it was this link,
    /// which is then down until a while from now.
    pub(super) fn close(&mut self, now: Timestamp, conn: ConnId, cfg: &ReplicaConfig) -> bool {
        if self.conn() != Some(conn) {
            return false;
        }
        self.link = Link::Down {
            retry_at: now + cfg.reconnect_after,
        };
        true
    }
}

/// How far a follower's connection to the master has come.
#[derive(Clone, Copy)]
pub(super) enum PeerStage {
    /// JOIN received and CHALLENGE sent; waiting for the PROOF.
    Challenged {
        from: u32,
        last: u64,
        nonce: [u8; 16],
    },
    /// Proven: server `from`'s link.
    Live { from: u32 },
}

pub(super) struct PeerConn {
    decoder: FrameDecoder,
    pub(super) stage: PeerStage,
    /// When the handshake step it is at must be done.
    pub(super) deadline: Timestamp,
}

/// The master's connections from its followers.
#[derive(Default)]
pub(super) struct Peers {
    conns: BTreeMap<ConnId, PeerConn>,
}

impl Peers {
    pub(super) fn owns(&self, conn: ConnId) -> bool {
        self.conns.contains_key(&conn)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    pub(super) fn stage(&self, conn: ConnId) -> Option<PeerStage> {
        self.conns.get(&conn).map(|pc| pc.stage)
    }

    /// Every connection.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&ConnId, &PeerConn)> {
        self.conns.iter()
    }

    /// A connection whose first frame was a replication message: a
    /// follower's JOIN, answered with a challenge. `nonce` is the challenge.
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
        let (from, last) = match frame::decode::<ReplicaMsg>(first) {
            Err(e) => {
                let detail = e.to_string();
                return refuse(conn, Refusal::Malformed { detail }, out);
            }
            Ok(ReplicaMsg::Join { version, .. }) if version != PROTOCOL_VERSION => {
                let r = Refusal::VersionMismatch {
                    ours: PROTOCOL_VERSION,
                    theirs: version,
                };
                return refuse(conn, r, out);
            }
            Ok(ReplicaMsg::Join { from, last, .. }) if cfg.peers.iter().any(|p| p.id == from) => {
                (from, last)
            }
            Ok(other) => {
                let what = format!("{other:?}");
                return refuse(conn, Refusal::Unexpected { what }, out);
            }
        };
        out.send(conn, &ReplicaMsg::Challenge { nonce });
        self.conns.insert(
            conn,
            PeerConn {
                decoder,
                stage: PeerStage::Challenged { from, last, nonce },
                deadline: now + cfg.dead_after,
            },
        );
    }

    /// Checks the PROOF of server `from`'s connection, challenged with
    /// `nonce`. Proven, the connection is live.
    pub(super) fn prove(
        &mut self,
        conn: ConnId,
        from: u32,
        nonce: &[u8; 16],
        mac: &[u8; 32],
        secret: &ClusterSecret,
        cfg: &ReplicaConfig,
    ) -> bool {
        let want = secret.peer_proof(from, cfg.me, nonce);
        if blake3::Hash::from(want) != blake3::Hash::from(*mac) {
            return false;
        }
        if let Some(pc) = self.conns.get_mut(&conn) {
            pc.stage = PeerStage::Live { from };
        }
        true
    }

    /// Decodes what arrived on `conn` into `msgs`; `None` if `conn` is not
    /// one of ours.
    pub(super) fn decode(
        &mut self,
        conn: ConnId,
        bytes: &[u8],
        msgs: &mut Vec<ReplicaMsg>,
    ) -> Option<Result<(), FrameError>> {
        let pc = self.conns.get_mut(&conn)?;
        pc.decoder.push(bytes);
        Some(drain_messages::<ReplicaMsg>(&mut pc.decoder, msgs))
    }

    /// Forgets `conn`; its stage, if it was ours.
    pub(super) fn remove(&mut self, conn: ConnId) -> Option<PeerStage> {
        self.conns.remove(&conn).map(|pc| pc.stage)
    }
}
