//! A follower's part of replication: it takes the entries the master sends
//! into its log once they follow on from what it holds (replacing a suffix
//! an older view left behind), acknowledges them once durable, applies what
//! the master says is committed, and sends its own clients' transactions
//! and read questions to the master, again to every new master until they
//! are answered. A follower that hears no master for its election timeout
//! stands for election (`election.rs`).

use super::entry::{Entry, Origin, Txn};
use super::messages::ReplicaMsg;
use super::{AfterPersist, Readiness, ReplicaEvent, Shell, WriteBytes};
use crate::outbox::Outbox;
use crate::sabotage::{self, Sabotage};
use crate::store::{Batch, Write};
use crate::time::Timestamp;
use std::time::Duration;

/// An `Append` as a follower takes it.
pub(super) struct Append {
    pub prev_index: u64,
    pub prev_view: u64,
    pub entries: Vec<Entry>,
    pub commit: u64,
    pub last: u64,
    pub seq: u64,
}

pub(super) struct Follower {
    master: Option<u32>,
    heard_master: Option<Timestamp>,
    election_at: Timestamp,
    /// How far our log is known to match the master's in this view.
    matched: u64,
    /// The master's commit index and log end, as it last said.
    master_commit: u64,
    /// The master's heartbeat round, echoed in acknowledgements.
    seq: u64,
    /// The master's log end and view when it first spoke to this run of
    /// ours (see [`Follower::past_is_settled`]).
    settle_mark: Option<(u64, u64)>,
    /// When forwards were last sent again.
    resent_at: Option<Timestamp>,
}

impl Follower {
    pub(super) fn new(election_at: Timestamp) -> Self {
        Follower {
            master: None,
            heard_master: None,
            election_at,
            matched: 0,
            master_commit: 0,
            seq: 0,
            settle_mark: None,
            resent_at: None,
        }
    }

    pub(super) fn master(&self) -> Option<u32> {
        self.master
    }

    pub(super) fn election_due(&self, now: Timestamp) -> bool {
        self.election_at <= now
    }

    pub(super) fn election_at(&self) -> Timestamp {
        self.election_at
    }

    /// We voted for a candidate: give it time to win.
    pub(super) fn voted(&mut self, election_at: Timestamp) {
        self.election_at = election_at;
    }

    /// True if the master spoke within `dead_after` on a link that is up:
    /// then this server will not help elect another (pre-vote).
    pub(super) fn has_live_master(&self, now: Timestamp, sh: &Shell) -> bool {
        let Some(m) = self.master else {
            return false;
        };
        sh.links.is_live(m)
            && self
                .heard_master
                .is_some_and(|t| now.saturating_since(t) < sh.cfg.dead_after)
    }

    /// See [`super::Replica::is_caught_up`].
    pub(super) fn readiness(&self, now: Timestamp, sh: &Shell) -> Readiness {
        let live = self.master.is_some_and(|m| sh.links.is_live(m))
            && self
                .heard_master
                .is_some_and(|t| now.saturating_since(t) < sh.cfg.heartbeat * 2);
        if !live {
            Readiness::NoMaster
        } else if sh.applied_durable < self.master_commit {
            Readiness::CatchingUp
        } else {
            Readiness::Ready
        }
    }

    /// True once nothing our previous run forwarded can still be ordered
    /// without us having applied it. A master accepts forwards only on a
    /// link that is up, and a new link from us replaced the previous run's
    /// (`Links::adopt`); so once the master of view `v` spoke to this run,
    /// every forward of the previous run it holds is within its log end
    /// then. Others' logs may hold more, from older views, but none of it
    /// can commit once an entry of view `v` has (it would have to be in
    /// the log of every later master, which follows the one of `v`). So:
    /// applied through that log end, and through an entry of view `v`
    /// (views never decrease along a log, so the last applied entry says).
    pub(super) fn past_is_settled(&self, sh: &Shell) -> bool {
        self.settle_mark.is_some_and(|(last, view)| {
            sh.applied_durable >= last && (last == 0 || sh.view_at(sh.applied_durable) >= view)
        })
    }

    /// The link to `peer` broke. If it was the master's, an election may
    /// be due soon, but only a majority without a master can hold one.
    pub(super) fn link_down(&mut self, now: Timestamp, peer: u32, jitter: Duration) {
        if self.master == Some(peer) {
            self.election_at = self.election_at.min(now + jitter);
        }
    }

    pub(super) fn link_up<E>(
        &mut self,
        now: Timestamp,
        peer: u32,
        sh: &mut Shell,
        out: &mut Outbox<E>,
    ) {
        if self.master == Some(peer) {
            self.send_pending(now, sh, out);
        }
    }

    /// Sends one of this server's clients' transactions to the master, now
    /// if it is known and reachable, else once it is.
    pub(super) fn forward<E>(
        &mut self,
        now: Timestamp,
        origin: Origin,
        txn: Txn,
        sh: &mut Shell,
        out: &mut Outbox<E>,
    ) {
        if let Some(m) = self.master {
            let msg = ReplicaMsg::Forward {
                view: sh.view,
                origin,
                txn,
            };
            sh.send(now, m, &msg, out);
        }
    }

    /// What a new master (or a new link to it) may have missed: every
    /// transaction not applied yet, and every read not answered.
    fn send_pending<E>(&mut self, now: Timestamp, sh: &mut Shell, out: &mut Outbox<E>) {
        let Some(m) = self.master else {
            return;
        };
        self.resent_at = Some(now);
        let view = sh.view;
        let forwards: Vec<ReplicaMsg> = sh
            .pending
            .iter()
            .map(|(origin, txn)| ReplicaMsg::Forward {
                view,
                origin: *origin,
                txn: txn.clone(),
            })
            .collect();
        for msg in forwards {
            sh.send(now, m, &msg, out);
        }
        let asks: Vec<u64> = sh
            .reads
            .iter()
            .filter(|(_, r)| r.answer.is_none())
            .map(|(id, _)| *id)
            .collect();
        for id in asks {
            if sh.send(now, m, &ReplicaMsg::ReadIndex { view, id }, out) {
                if let Some(r) = sh.reads.get_mut(&id) {
                    r.asked = Some(now);
                }
            }
        }
    }

    /// On a heartbeat: what went unanswered for `dead_after` may have been
    /// lost on a link that survived (a partition can drop messages without
    /// breaking it): asked again. (Not sooner: every question costs the
    /// master a heartbeat round.)
    fn ask_again<E>(&mut self, now: Timestamp, sh: &mut Shell, out: &mut Outbox<E>) {
        let Some(m) = self.master else {
            return;
        };
        let stale = self
            .resent_at
            .is_none_or(|t| now.saturating_since(t) >= sh.cfg.dead_after);
        if stale && !sh.pending.is_empty() {
            return self.send_pending(now, sh, out);
        }
        let view = sh.view;
        let dead_after = sh.cfg.dead_after;
        let asks: Vec<u64> = sh
            .reads
            .iter()
            .filter(|(_, r)| {
                r.answer.is_none()
                    && r.asked
                        .is_none_or(|t| now.saturating_since(t) >= dead_after)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in asks {
            if sh.send(now, m, &ReplicaMsg::ReadIndex { view, id }, out) {
                if let Some(r) = sh.reads.get_mut(&id) {
                    r.asked = Some(now);
                }
            }
        }
    }

    /// Asks the master to confirm read `id`.
    /// (If there is no master, or no link to it, the question waits for
    /// one: [`Follower::send_pending`].)
    pub(super) fn ask_read_index<E>(
        &mut self,
        now: Timestamp,
        id: u64,
        sh: &mut Shell,
        out: &mut Outbox<E>,
    ) {
        if let Some(m) = self.master {
            let view = sh.view;
            if sh.send(now, m, &ReplicaMsg::ReadIndex { view, id }, out) {
                if let Some(r) = sh.reads.get_mut(&id) {
                    r.asked = Some(now);
                }
            }
        }
    }

    pub(super) fn on_read_index<E: From<ReplicaEvent>>(
        &mut self,
        peer: u32,
        id: u64,
        commit: u64,
        sh: &mut Shell,
        out: &mut Outbox<E>,
    ) {
        if self.master != Some(peer) {
            return;
        }
        if let Some(r) = sh.reads.get_mut(&id) {
            r.answer = Some(commit);
        }
        self.master_commit = self.master_commit.max(commit);
        self.learn_commit(commit, sh, out);
    }

    /// The master's `Append`. `Err` if it breaks a rule no master may
    /// break (the link is then dropped).
    pub(super) fn on_append<E: From<ReplicaEvent>>(
        &mut self,
        now: Timestamp,
        peer: u32,
        a: Append,
        timeout: Duration,
        sh: &mut Shell,
        out: &mut Outbox<E>,
    ) -> Result<(), String> {
        if self.master != Some(peer) {
            self.master = Some(peer);
            self.matched = 0;
            out.event(
                ReplicaEvent::Following {
                    view: sh.view,
                    master: peer,
                }
                .into(),
            );
            self.send_pending(now, sh, out);
        }
        if self.settle_mark.is_none() {
            self.settle_mark = Some((a.last, sh.view));
        }
        if a.entries.is_empty() {
            self.ask_again(now, sh, out);
        }
        self.heard_master = Some(now);
        self.election_at = now + timeout;
        self.seq = self.seq.max(a.seq);
        self.master_commit = self.master_commit.max(a.commit);
        if a.prev_index > sh.len() || sh.view_at(a.prev_index) != a.prev_view {
            // Our log does not follow on there. Up to what we know is
            // committed it matches every master's.
            let matched = sh.commit.min(a.prev_index.saturating_sub(1)).min(sh.len());
            let reply = ReplicaMsg::AppendReply {
                view: sh.view,
                ok: false,
                matched,
                seq: self.seq,
            };
            sh.send(now, peer, &reply, out);
            return Ok(());
        }
        let mut batch = Batch::default();
        let mut truncated = None;
        let n = a.entries.len() as u64;
        for (k, e) in a.entries.into_iter().enumerate() {
            let index = a.prev_index + 1 + k as u64;
            if e.index != index {
                return Err(format!("entry {} where {index} belongs", e.index));
            }
            if index <= sh.len() {
                if sh.view_at(index) == e.view {
                    // Same index, same view: the same entry (log matching).
                    continue;
                }
                if index <= sh.commit {
                    return Err(format!("master rewrote committed entry {index}"));
                }
                // An older view's suffix that never committed.
                sh.entries.truncate((index - 1) as usize);
                batch.push(Write::TruncateFrom { from: index });
                truncated.get_or_insert(index);
                out.event(ReplicaEvent::Truncated { from: index }.into());
            }
            batch.push(Write::Append {
                index,
                entry: e.write_bytes(),
            });
            sh.entries.push(e);
        }
        self.matched = self.matched.max(a.prev_index + n);
        if batch.is_empty() {
            self.acknowledge(now, sh, out);
        } else {
            if sabotage::on(Sabotage::FollowerAcksBeforeDurable) {
                let ok = ReplicaMsg::AppendReply {
                    view: sh.view,
                    ok: true,
                    matched: self.matched,
                    seq: self.seq,
                };
                sh.send(now, peer, &ok, out);
            }
            let upto = sh.len();
            sh.persist(batch, AfterPersist::Appended { upto, truncated }, out);
        }
        self.learn_commit(a.commit, sh, out);
        Ok(())
    }

    /// Tells the master how far our log matches its own and is durable,
    /// once the view we would say it in is durable too.
    pub(super) fn acknowledge<E>(&mut self, now: Timestamp, sh: &mut Shell, out: &mut Outbox<E>) {
        let Some(m) = self.master else {
            return;
        };
        if sh.view_durable < sh.view {
            return;
        }
        let ok = ReplicaMsg::AppendReply {
            view: sh.view,
            ok: true,
            matched: self.matched.min(sh.durable()),
            seq: self.seq,
        };
        sh.send(now, m, &ok, out);
    }

    /// The master says `commit` is committed: apply up to it, as far as our
    /// log is known to match the master's.
    fn learn_commit<E: From<ReplicaEvent>>(
        &mut self,
        commit: u64,
        sh: &mut Shell,
        out: &mut Outbox<E>,
    ) {
        let commit = match sabotage::on(Sabotage::FollowerAppliesUncommitted) {
            true => sh.len(),
            false => commit.min(self.matched).min(sh.len()),
        };
        if commit > sh.commit {
            sh.commit = commit;
            sh.apply_committed(out);
        }
    }
}
