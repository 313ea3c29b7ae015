//! The master's part of replication (the leader): it appends each
//! transaction to its log, streams the log to every follower from where the
//! follower's log matches its own, counts how far each follower holds it
//! durably, and commits what a majority holds once an entry of its own view
//! is among it. It confirms reads with a heartbeat round a majority
//! answers, and steps down when it has not heard from a majority for
//! `dead_after`: a master cut off from the majority stops and says so.

use super::entry::{Entry, Origin, Txn};
use super::messages::ReplicaMsg;
use super::sync_round::Token;
use super::{AfterPersist, Readiness, ReplicaEvent, Shell, WriteBytes, FIRST_VIEW};
use crate::outbox::Outbox;
use crate::sabotage::{self, Sabotage};
use crate::store::{Batch, Write};
use crate::time::Timestamp;
use speedy::Writable;
use std::collections::{BTreeMap, BTreeSet};

/// Bytes of entries in one `Append` at most (past its first entry).
const APPEND_BYTES: usize = crate::frame::MAX_FRAME / 2;

/// What the master knows of one follower.
struct Progress {
    /// Next index to send.
    next: u64,
    /// How far the follower's log is known to match ours, durably.
    matched: u64,
    /// The last heartbeat round it answered.
    seq: u64,
    last_ack: Timestamp,
}

/// Who asked for a read to be confirmed.
#[derive(Clone, Copy, Debug)]
pub(super) enum ReadFor {
    Local(u64),
    Peer(u32, u64),
}

struct Confirm {
    who: ReadFor,
    /// The heartbeat round sent after the question arrived.
    seq: u64,
}

pub(super) struct Master {
    followers: BTreeMap<u32, Progress>,
    next_heartbeat: Timestamp,
    seq: u64,
    /// Origins in the log but not yet applied (dedup of retried forwards).
    in_log: BTreeSet<Origin>,
    /// The index of the first entry of this master's view (its no-op), 0
    /// for the first view's master: until it commits, nothing of earlier
    /// views may be taken as committed, and no read answered.
    view_start: u64,
    since: Timestamp,
    confirms: Vec<Confirm>,
    /// Peers whose lease ran out and whose `PeerLeave` this master has
    /// ordered, with the lease it saw run out (once per lease).
    expiring: BTreeMap<u64, u64>,
    /// The SYNC grant whose `SyncExpire` this master has ordered, and the
    /// lease it saw run out: ordered again only if a renewal moved it.
    sync_expiring: Option<(Token, u64)>,
    /// Transactions this master ordered of its own accord this view.
    own: u64,
}

impl Master {
    fn new(now: Timestamp, sh: &Shell) -> Self {
        let in_log = sh.entries[sh.applied as usize..]
            .iter()
            .filter(|e| e.txn != Txn::Noop)
            .map(|e| e.origin)
            .collect();
        let followers = sh
            .cfg
            .peers
            .iter()
            .map(|p| {
                let progress = Progress {
                    next: sh.len() + 1,
                    matched: 0,
                    seq: 0,
                    last_ack: now,
                };
                (p.id, progress)
            })
            .collect();
        Master {
            followers,
            next_heartbeat: now,
            seq: 0,
            in_log,
            view_start: 0,
            since: now,
            confirms: Vec::new(),
            expiring: BTreeMap::new(),
            sync_expiring: None,
            own: 0,
        }
    }

    /// The configured master of the first view, resuming.
    pub(super) fn first(now: Timestamp, sh: &Shell) -> Self {
        debug_assert_eq!(sh.view, FIRST_VIEW);
        Master::new(now, sh)
    }

    /// Elected: append this view's no-op, order what our own clients
    /// asked for meanwhile, and let every follower know.
    pub(super) fn elected<E: From<ReplicaEvent>>(
        now: Timestamp,
        sh: &mut Shell,
        out: &mut Outbox<E>,
    ) -> Self {
        let mut m = Master::new(now, sh);
        let noop = Origin {
            server: sh.cfg.me,
            session: 0,
            request: sh.view,
        };
        m.append(now, noop, Txn::Noop, sh, out);
        m.view_start = sh.len();
        let pending: Vec<(Origin, Txn)> = sh.pending.iter().map(|(o, t)| (*o, t.clone())).collect();
        for (origin, txn) in pending {
            m.propose(now, origin, txn, sh, out);
        }
        // Our own reads that the last master never confirmed: ours to
        // confirm now.
        let unanswered: Vec<u64> = sh
            .reads
            .iter()
            .filter(|(_, r)| r.answer.is_none())
            .map(|(id, _)| *id)
            .collect();
        for id in unanswered {
            m.confirms.push(Confirm {
                who: ReadFor::Local(id),
                seq: m.seq + 1,
            });
        }
        m.heartbeat(now, sh, out);
        m
    }

    /// See [`super::Replica::is_caught_up`].
    pub(super) fn readiness(&self, now: Timestamp, sh: &Shell) -> Readiness {
        if !self.heard_majority(now, sh.cfg.heartbeat * 2, sh) {
            Readiness::NoMaster
        } else if sh.commit < self.view_start {
            Readiness::CatchingUp
        } else {
            Readiness::Ready
        }
    }

    /// A master's own past is settled once its view's first entry has
    /// committed: what its previous run put in its log is ordered by now
    /// or overwritten for good.
    pub(super) fn past_is_settled(&self, sh: &Shell) -> bool {
        sh.applied_durable >= self.view_start
    }

    /// True if a majority, us included, answered within `within`.
    fn heard_majority(&self, now: Timestamp, within: std::time::Duration, sh: &Shell) -> bool {
        let heard = self
            .followers
            .values()
            .filter(|p| now.saturating_since(p.last_ack) < within)
            .count();
        heard + 1 >= sh.cfg.majority()
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
        // A retry of something already ordered: the origin server will see
        // the first copy when it applies it. Not so for a client-chosen
        // command tried again through another server: that server waits for
        // an entry of its own, which applies as a duplicate (no change, the
        // first result).
        let seen = !origin.client_chosen() && sh.state.has_applied(&origin);
        if self.in_log.contains(&origin) || seen {
            return;
        }
        self.in_log.insert(origin);
        self.append(now, origin, txn, sh, out);
    }

    fn append<E: From<ReplicaEvent>>(
        &mut self,
        now: Timestamp,
        origin: Origin,
        txn: Txn,
        sh: &mut Shell,
        out: &mut Outbox<E>,
    ) {
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
        sh.persist(
            batch,
            AfterPersist::Appended {
                upto,
                truncated: None,
            },
            out,
        );
        let peers: Vec<u32> = self.followers.keys().copied().collect();
        for peer in peers {
            self.stream(now, peer, sh, out);
        }
    }

    /// The highest index durable on a majority becomes committed, if an
    /// entry of our view is at or below it. (An older view's entry held by
    /// a majority can still be overwritten by a later master whose log
    /// ends in a later view; once ours commits, no such master can be.)
    pub(super) fn advance_commit<E: From<ReplicaEvent>>(
        &mut self,
        now: Timestamp,
        sh: &mut Shell,
        out: &mut Outbox<E>,
    ) {
        let mut durable: Vec<u64> = self.followers.values().map(|p| p.matched).collect();
        durable.push(sh.durable());
        durable.sort_unstable_by(|a, b| b.cmp(a));
        let majority = sh.cfg.majority();
        let candidate = match sabotage::on(Sabotage::MasterCommitsOnOneCopy) {
            true => sh.durable(),
            false => durable[majority - 1].min(sh.len()),
        };
        if candidate > sh.commit && sh.view_at(candidate) == sh.view {
            sh.commit = candidate;
            out.event(ReplicaEvent::Committed { index: candidate }.into());
            for origin in sh.apply_committed(out) {
                self.in_log.remove(&origin);
            }
            self.heartbeat(now, sh, out);
        }
    }

    /// Sends `peer` what it lacks, from its `next`.
    fn stream<E>(&mut self, now: Timestamp, peer: u32, sh: &mut Shell, out: &mut Outbox<E>) {
        let Some(p) = self.followers.get_mut(&peer) else {
            return;
        };
        if !sh.links.is_live(peer) {
            return;
        }
        while p.next <= sh.len() {
            let start = (p.next - 1) as usize;
            let mut end = (start + sh.cfg.batch_max).min(sh.entries.len());
            // A frame has a size limit and entries differ in size (a
            // `PutFiles` may be tens of KiB): at least one entry, and no
            // more than half a frame's worth.
            let mut bytes = 0;
            for (i, e) in sh.entries[start..end].iter().enumerate() {
                bytes += Writable::<speedy::LittleEndian>::bytes_needed(e).unwrap_or(0);
                if i > 0 && bytes > APPEND_BYTES {
                    end = start + i;
                    break;
                }
            }
            let msg = ReplicaMsg::Append {
                view: sh.view,
                prev_index: p.next - 1,
                prev_view: sh.view_at(p.next - 1),
                entries: sh.entries[start..end].to_vec(),
                commit: sh.commit,
                last: sh.len(),
                seq: self.seq,
            };
            sh.links.send(now, peer, &msg, out);
            p.next = end as u64 + 1;
        }
    }

    /// A new heartbeat round to every follower: liveness, the commit
    /// index, and for reads, proof that a majority still follows us.
    fn heartbeat<E>(&mut self, now: Timestamp, sh: &mut Shell, out: &mut Outbox<E>) {
        self.seq += 1;
        self.next_heartbeat = now + sh.cfg.heartbeat;
        for (peer, p) in &self.followers {
            let msg = ReplicaMsg::Append {
                view: sh.view,
                prev_index: p.next - 1,
                prev_view: sh.view_at(p.next - 1),
                entries: Vec::new(),
                commit: sh.commit,
                last: sh.len(),
                seq: self.seq,
            };
            sh.links.send(now, *peer, &msg, out);
        }
    }

    /// A link to `peer` came up: it may have missed anything. Start right
    /// after our log end; if its log does not follow on there it says
    /// where it does.
    pub(super) fn link_up<E>(
        &mut self,
        now: Timestamp,
        peer: u32,
        sh: &mut Shell,
        out: &mut Outbox<E>,
    ) {
        let len = sh.len();
        let (next, seq, view, commit) = match self.followers.get_mut(&peer) {
            Some(p) => {
                p.next = len + 1;
                (p.next, self.seq, sh.view, sh.commit)
            }
            None => return,
        };
        let msg = ReplicaMsg::Append {
            view,
            prev_index: next - 1,
            prev_view: sh.view_at(next - 1),
            entries: Vec::new(),
            commit,
            last: len,
            seq,
        };
        sh.links.send(now, peer, &msg, out);
    }

    /// A follower's answer to an `Append`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_reply<E: From<ReplicaEvent>>(
        &mut self,
        now: Timestamp,
        peer: u32,
        ok: bool,
        matched: u64,
        seq: u64,
        sh: &mut Shell,
        out: &mut Outbox<E>,
    ) {
        let Some(p) = self.followers.get_mut(&peer) else {
            return;
        };
        p.last_ack = now;
        p.seq = p.seq.max(seq);
        if ok {
            p.matched = p.matched.max(matched.min(sh.len()));
            self.advance_commit(now, sh, out);
        } else if matched + 1 < p.next {
            p.next = matched.min(sh.len()) + 1;
            self.stream(now, peer, sh, out);
        }
        self.answer_reads(now, sh, out);
    }

    /// Takes a read to confirm: answered once a heartbeat round sent from
    /// now on has been answered by a majority. The round goes out at the
    /// next timeout, which is now: the reads that arrive at one instant
    /// share it.
    pub(super) fn confirm_read<E>(
        &mut self,
        now: Timestamp,
        who: ReadFor,
        sh: &mut Shell,
        out: &mut Outbox<E>,
    ) {
        self.confirms.push(Confirm {
            who,
            seq: self.seq + 1,
        });
        self.next_heartbeat = now;
        self.answer_reads(now, sh, out);
    }

    fn answer_reads<E>(&mut self, now: Timestamp, sh: &mut Shell, out: &mut Outbox<E>) {
        if sh.commit < self.view_start {
            return;
        }
        let majority = sh.cfg.majority();
        let followers = &self.followers;
        let (ready, waiting): (Vec<Confirm>, Vec<Confirm>) = std::mem::take(&mut self.confirms)
            .into_iter()
            .partition(|c| followers.values().filter(|p| p.seq >= c.seq).count() + 1 >= majority);
        self.confirms = waiting;
        for c in ready {
            match c.who {
                ReadFor::Local(id) => {
                    if let Some(r) = sh.reads.get_mut(&id) {
                        r.answer = Some(sh.commit);
                    } else {
                        sh.reads.insert(
                            id,
                            super::Read {
                                answer: Some(sh.commit),
                                asked: None,
                            },
                        );
                    }
                }
                ReadFor::Peer(peer, id) => {
                    let reply = ReplicaMsg::ReadIndexReply {
                        view: sh.view,
                        id,
                        commit: sh.commit,
                    };
                    sh.links.send(now, peer, &reply, out);
                }
            }
        }
    }

    /// Heartbeats, and the check that a majority still follows: `Err`
    /// with the reason if not, and this server steps down.
    pub(super) fn handle_timeout<E: From<ReplicaEvent>>(
        &mut self,
        now: Timestamp,
        sh: &mut Shell,
        out: &mut Outbox<E>,
    ) -> Result<(), String> {
        if now.saturating_since(self.since) >= sh.cfg.dead_after
            && !self.heard_majority(now, sh.cfg.dead_after, sh)
        {
            return Err(format!(
                "no word from a majority for {:?}: cut off from the cluster",
                sh.cfg.dead_after
            ));
        }
        if self.next_heartbeat <= now {
            self.heartbeat(now, sh, out);
        }
        self.expire_peers(now, sh, out);
        self.expire_sync_grant(now, sh, out);
        Ok(())
    }

    /// This master's next own origin (session 0, numbered by view, so a
    /// later term's are always newer).
    fn own_origin(&mut self, sh: &Shell) -> Origin {
        self.own += 1;
        Origin {
            server: sh.cfg.me,
            session: 0,
            request: (sh.view << 32) | self.own,
        }
    }

    /// Orders the expiry of the SYNC grant whose lease ran out by this
    /// master's clock, once per lease seen; the entry moves the grant on
    /// only if no renewal was applied before it.
    fn expire_sync_grant<E: From<ReplicaEvent>>(
        &mut self,
        now: Timestamp,
        sh: &mut Shell,
        out: &mut Outbox<E>,
    ) {
        let secs = now.as_micros() / 1_000_000;
        let Some(r) = sh.state.sync().expired(secs) else {
            return;
        };
        let seen = (r.token, r.lease_until);
        if self.sync_expiring == Some(seen) {
            return;
        }
        self.sync_expiring = Some(seen);
        let txn = Txn::SyncExpire {
            round: r.id,
            token: r.token,
        };
        let origin = self.own_origin(sh);
        self.propose(now, origin, txn, sh, out);
    }

    /// Orders the removal of every registered peer whose lease ran out by
    /// this master's clock. Its origin is the master's own (session 0,
    /// numbered by view, so a later term's are always newer); the entry
    /// removes the peer only if no renewal was applied before it.
    fn expire_peers<E: From<ReplicaEvent>>(
        &mut self,
        now: Timestamp,
        sh: &mut Shell,
        out: &mut Outbox<E>,
    ) {
        let registry = sh.state.registry();
        // An expiry that lost to a renewal is forgotten, so that the new
        // lease is expired in its turn (by the lease each was ordered for).
        self.expiring
            .retain(|id, lease| registry.get(*id).is_some_and(|p| p.lease_until == *lease));
        let secs = now.as_micros() / 1_000_000;
        let due: Vec<(u64, u64)> = (registry.expired(secs).into_iter())
            .filter(|id| !self.expiring.contains_key(id))
            .filter_map(|id| registry.get(id).map(|p| (id, p.lease_until)))
            .collect();
        for (peer, lease) in due {
            self.expiring.insert(peer, lease);
            let origin = self.own_origin(sh);
            let txn = Txn::PeerLeave {
                peer,
                expired: true,
            };
            self.propose(now, origin, txn, sh, out);
        }
    }

    /// The next heartbeat (the majority check runs with it), or the next
    /// lease of a peer or of the SYNC grant to run out.
    pub(super) fn poll_timeout(&self, sh: &Shell) -> Option<Timestamp> {
        let heartbeat = (!self.followers.is_empty()).then_some(self.next_heartbeat);
        let after = |secs: u64| Timestamp::from_micros((secs + 1).saturating_mul(1_000_000));
        let lease = (sh.state.registry().all())
            .filter(|p| self.expiring.get(&p.id) != Some(&p.lease_until))
            .map(|p| after(p.lease_until))
            .min();
        let grant = (sh.state.sync().current())
            .filter(|r| self.sync_expiring != Some((r.token, r.lease_until)))
            .map(|r| after(r.lease_until));
        crate::time::earliest(heartbeat, crate::time::earliest(lease, grant))
    }
}
