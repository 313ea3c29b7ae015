//! The master's part of replication (the leader): it appends each
//! transaction to its log, streams the log to every follower, counts how far
//! each follower holds it durably, and commits what a majority holds.

use super::entry::{Entry, Origin, Txn};
use super::link::{refuse, PeerStage, Peers};
use super::messages::ReplicaMsg;
use super::{AfterPersist, ReplicaConfig, ReplicaEvent, Shell, WriteBytes};
use crate::frame::FrameDecoder;
use crate::io::ConnId;
use crate::outbox::Outbox;
use crate::refusal::Refusal;
use crate::sabotage::{self, Sabotage};
use crate::store::{Batch, Write};
use crate::time::{earliest, Timestamp};
use std::collections::{BTreeMap, BTreeSet};

/// What the master knows of one follower.
struct Progress {
    conn: Option<ConnId>,
    durable: u64,
    /// Next index to send on `conn`.
    next: u64,
    last_heard: Timestamp,
}

pub(super) struct Master {
    followers: BTreeMap<u32, Progress>,
    peers: Peers,
    next_heartbeat: Timestamp,
    /// Origins logged but not yet applied (dedup of forwarded retries).
    in_log: BTreeSet<Origin>,
}

impl Master {
    /// A master whose log holds `in_log` logged but not yet applied.
    pub(super) fn new(next_heartbeat: Timestamp, in_log: BTreeSet<Origin>) -> Self {
        Master {
            followers: BTreeMap::new(),
            peers: Peers::default(),
            next_heartbeat,
            in_log,
        }
    }

    pub(super) fn owns(&self, conn: ConnId) -> bool {
        self.peers.owns(conn)
    }

    /// A connection whose first frame was a replication message.
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
        self.peers.adopt(now, conn, decoder, first, nonce, cfg, out);
    }

    /// Appends a transaction to the log and streams it, unless it is a
    /// retry of one already ordered.
    pub(super) fn propose<E: From<ReplicaEvent>>(
        &mut self,
        now: Timestamp,
        origin: Origin,
        txn: Txn,
        sh: &mut Shell,
        out: &mut Outbox<E>,
    ) {
        if self.in_log.contains(&origin) || sh.state.has_applied(&origin) {
            // A retry of something already ordered: the origin server will
            // see the first copy when it applies the sh.
            return;
        }
        self.in_log.insert(origin);
        let entry = Entry {
            index: sh.len() + 1,
            view: sh.view,
            at: now.as_micros() / 1_000_000,
            origin,
            txn,
        };
        out.event(
            ReplicaEvent::Appended {
                index: entry.index,
                txn: entry.txn.describe(),
            }
            .into(),
        );
        let mut batch = Batch::default();
        batch.push(Write::Append {
            index: entry.index,
            entry: entry.write_bytes(),
        });
        let upto = entry.index;
        sh.entries.push(entry);
        sh.persist(batch, AfterPersist::Appended { upto }, out);
        self.stream_to_followers(sh, out);
    }

    /// The highest index durable on a majority becomes committed.
    pub(super) fn advance_commit<E: From<ReplicaEvent>>(
        &mut self,
        now: Timestamp,
        sh: &mut Shell,
        out: &mut Outbox<E>,
    ) {
        let mut durable: Vec<u64> = self.followers.values().map(|p| p.durable).collect();
        durable.resize(sh.cfg.peers.len(), 0);
        durable.push(sh.durable);
        durable.sort_unstable_by(|a, b| b.cmp(a));
        let majority = sh.cfg.cluster_size() / 2 + 1;
        let candidate = match sabotage::on(Sabotage::MasterCommitsOnOneCopy) {
            true => sh.durable.min(sh.len()),
            false => durable[majority - 1].min(sh.len()),
        };
        if candidate > sh.commit {
            sh.commit = candidate;
            out.event(ReplicaEvent::Committed { index: candidate }.into());
            sh.apply_committed(out, |origin| {
                self.in_log.remove(&origin);
            });
            self.broadcast_heartbeat(now, sh, out);
        }
    }

    fn stream_to_followers<E>(&mut self, sh: &Shell, out: &mut Outbox<E>) {
        for p in self.followers.values_mut() {
            let Some(conn) = p.conn else { continue };
            while p.next <= sh.len() {
                let start = (p.next - 1) as usize;
                let end = (start + sh.cfg.batch_max).min(sh.entries.len());
                let msg = ReplicaMsg::Prepare {
                    view: sh.view,
                    entries: sh.entries[start..end].to_vec(),
                    commit: sh.commit,
                };
                out.send(conn, &msg);
                p.next = end as u64 + 1;
            }
        }
    }

    fn broadcast_heartbeat<E>(&mut self, now: Timestamp, sh: &Shell, out: &mut Outbox<E>) {
        self.next_heartbeat = now + sh.cfg.heartbeat;
        let msg = ReplicaMsg::Heartbeat {
            view: sh.view,
            last: sh.len(),
            commit: sh.commit,
        };
        for p in self.followers.values() {
            if let Some(conn) = p.conn {
                out.send(conn, &msg);
            }
        }
    }

    pub(super) fn on_bytes<E: From<ReplicaEvent>>(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        bytes: &[u8],
        sh: &mut Shell,
        out: &mut Outbox<E>,
    ) {
        let mut msgs = Vec::new();
        let Some(decoded) = self.peers.decode(conn, bytes, &mut msgs) else {
            return;
        };
        for msg in msgs {
            if !self.owns(conn) {
                return;
            }
            self.on_msg(now, conn, msg, sh, out);
        }
        if let Err(e) = decoded {
            let detail = e.to_string();
            self.drop_conn(conn, Refusal::Malformed { detail }, out);
        }
    }

    fn on_msg<E: From<ReplicaEvent>>(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        msg: ReplicaMsg,
        sh: &mut Shell,
        out: &mut Outbox<E>,
    ) {
        let Some(stage) = self.peers.stage(conn) else {
            return;
        };
        match (stage, msg) {
            (PeerStage::Challenged { from, last, nonce }, ReplicaMsg::Proof { mac }) => {
                if !self
                    .peers
                    .prove(conn, from, &nonce, &mac, &sh.secret, &sh.cfg)
                {
                    return self.drop_conn(conn, Refusal::BadCode, out);
                }
                let old = self.followers.insert(
                    from,
                    Progress {
                        conn: Some(conn),
                        durable: 0,
                        next: last.min(sh.len()) + 1,
                        last_heard: now,
                    },
                );
                if let Some(old_conn) = old.and_then(|p| p.conn) {
                    self.peers.remove(old_conn);
                    out.close(old_conn);
                }
                out.event(ReplicaEvent::FollowerJoined { id: from, last }.into());
                let welcome = ReplicaMsg::Welcome {
                    view: sh.view,
                    last: sh.len(),
                    commit: sh.commit,
                };
                out.send(conn, &welcome);
                self.stream_to_followers(sh, out);
            }
            (PeerStage::Live { from }, ReplicaMsg::PrepareOk { view, durable })
                if view == sh.view =>
            {
                if let Some(p) = self.followers.get_mut(&from) {
                    p.durable = p.durable.max(durable.min(sh.len()));
                    p.last_heard = now;
                }
                self.advance_commit(now, sh, out);
            }
            (PeerStage::Live { from }, ReplicaMsg::ReadIndex { view, id }) if view == sh.view => {
                if let Some(p) = self.followers.get_mut(&from) {
                    p.last_heard = now;
                }
                let reply = ReplicaMsg::ReadIndexReply {
                    view: sh.view,
                    id,
                    commit: sh.commit,
                };
                out.send(conn, &reply);
            }
            (PeerStage::Live { from }, ReplicaMsg::Forward { view, origin, txn })
                if view == sh.view =>
            {
                if let Some(p) = self.followers.get_mut(&from) {
                    p.last_heard = now;
                }
                // A server may only forward its own clients' transactions.
                if origin.server != from {
                    let what = "forward for another server's client".into();
                    return self.drop_conn(conn, Refusal::Unexpected { what }, out);
                }
                self.propose(now, origin, txn, sh, out);
            }
            (_, other) => {
                let what = format!("{other:?}");
                self.drop_conn(conn, Refusal::Unexpected { what }, out);
            }
        }
    }

    /// Refuses and forgets one of our connections.
    fn drop_conn<E: From<ReplicaEvent>>(
        &mut self,
        conn: ConnId,
        reason: Refusal,
        out: &mut Outbox<E>,
    ) {
        if !self.owns(conn) {
            return;
        }
        let why = reason.to_string();
        refuse(conn, reason, out);
        self.on_closed(conn, &why, out);
    }

    /// The connection broke or closed.
    pub(super) fn on_closed<E: From<ReplicaEvent>>(
        &mut self,
        conn: ConnId,
        why: &str,
        out: &mut Outbox<E>,
    ) {
        if let Some(PeerStage::Live { from }) = self.peers.remove(conn) {
            if let Some(p) = self.followers.get_mut(&from) {
                if p.conn == Some(conn) {
                    p.conn = None;
                }
            }
            let why = why.to_string();
            out.event(ReplicaEvent::FollowerLost { id: from, why }.into());
        }
    }

    pub(super) fn handle_timeout<E: From<ReplicaEvent>>(
        &mut self,
        now: Timestamp,
        sh: &Shell,
        out: &mut Outbox<E>,
    ) {
        let late: Vec<ConnId> = self
            .peers
            .iter()
            .filter(|(_, pc)| match pc.stage {
                PeerStage::Challenged { .. } => pc.deadline <= now,
                PeerStage::Live { from } => self
                    .followers
                    .get(&from)
                    .is_some_and(|p| now.saturating_since(p.last_heard) >= sh.cfg.dead_after),
            })
            .map(|(c, _)| *c)
            .collect();
        for conn in late {
            let step = "a follower's message".into();
            self.drop_conn(conn, Refusal::Timeout { step }, out);
        }
        if self.next_heartbeat <= now {
            self.broadcast_heartbeat(now, sh, out);
        }
    }

    pub(super) fn poll_timeout(&self, cfg: &ReplicaConfig) -> Option<Timestamp> {
        let beat = (!self.peers.is_empty()).then_some(self.next_heartbeat);
        let dead = self
            .peers
            .iter()
            .map(|(_, pc)| match pc.stage {
                PeerStage::Challenged { .. } => pc.deadline,
                PeerStage::Live { from } => self
                    .followers
                    .get(&from)
                    .map_or(pc.deadline, |p| p.last_heard + cfg.dead_after),
            })
            .min();
        earliest(beat, dead)
    }
}
