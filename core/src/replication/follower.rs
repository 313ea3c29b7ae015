//! A follower's part of replication: it takes the entries the master
//! prepares into its log, acknowledges them once they are durable, applies
//! what the master says is committed, and forwards its own clients'
//! transactions and read-index questions to the master, asking again on
//! every new link until they are answered.

use super::entry::{Entry, Origin, Txn};
use super::link::{refuse, MasterLink};
use super::messages::ReplicaMsg;
use super::{AfterPersist, ReplicaConfig, ReplicaEvent, Shell, SubmitError, WriteBytes};
use crate::io::ConnId;
use crate::outbox::Outbox;
use crate::refusal::Refusal;
use crate::sabotage::{self, Sabotage};
use crate::store::{Batch, Write};
use crate::time::Timestamp;
use std::collections::BTreeMap;

pub(super) struct Follower {
    link: MasterLink,
    master_last: u64,
    master_commit: u64,
    /// This server's clients' transactions, forwarded and not yet applied.
    pending: BTreeMap<Origin, Txn>,
    /// Read-index questions asked (id → the master's answer, once it came).
    read_indexes: BTreeMap<u64, Option<u64>>,
    next_read: u64,
    /// The master's log end when it last welcomed us (see
    /// [`super::Replica::past_is_settled`]).
    welcomed_at: Option<u64>,
}

impl Follower {
    pub(super) fn new(now: Timestamp) -> Self {
        Follower {
            link: MasterLink::new(now),
            master_last: 0,
            master_commit: 0,
            pending: BTreeMap::new(),
            read_indexes: BTreeMap::new(),
            next_read: 0,
            welcomed_at: None,
        }
    }

    pub(super) fn owns(&self, conn: ConnId) -> bool {
        self.link.conn() == Some(conn)
    }

    /// See [`super::Replica::is_caught_up`].
    pub(super) fn is_caught_up(&self, now: Timestamp, sh: &Shell) -> bool {
        self.link.live().is_some()
            && now.saturating_since(self.link.last_heard) < sh.cfg.heartbeat * 2
            && sh.applied_durable >= self.master_commit
    }

    /// See [`super::Replica::past_is_settled`].
    pub(super) fn past_is_settled(&self, sh: &Shell) -> bool {
        self.welcomed_at
            .is_some_and(|last| sh.applied_durable >= last)
    }

    /// Asks the master for its commit index; `None` without a live link.
    pub(super) fn ask_read_index<E>(&mut self, view: u64, out: &mut Outbox<E>) -> Option<u64> {
        let conn = self.link.live()?;
        let id = self.next_read;
        self.next_read += 1;
        self.read_indexes.insert(id, None);
        out.send(conn, &ReplicaMsg::ReadIndex { view, id });
        Some(id)
    }

    pub(super) fn read_index_ready(&self, id: u64, sh: &Shell) -> bool {
        matches!(
            self.read_indexes.get(&id),
            Some(Some(commit)) if sh.applied_durable >= *commit
        )
    }

    pub(super) fn forget_read_index(&mut self, id: u64) {
        self.read_indexes.remove(&id);
    }

    /// Forwards a transaction of one of this server's clients to the
    /// master, now if the link is live, else once it is.
    pub(super) fn submit<E>(
        &mut self,
        origin: Origin,
        txn: Txn,
        cfg: &ReplicaConfig,
        view: u64,
        out: &mut Outbox<E>,
    ) -> Result<(), SubmitError> {
        if self.pending.len() >= cfg.max_pending {
            return Err(SubmitError::Backlogged);
        }
        if let Some(conn) = self.link.live() {
            let msg = ReplicaMsg::Forward {
                view,
                origin,
                txn: txn.clone(),
            };
            out.send(conn, &msg);
        }
        self.pending.insert(origin, txn);
        Ok(())
    }

    /// Our log is durable up to `durable`: tell the master.
    pub(super) fn appended<E>(&self, sh: &Shell, out: &mut Outbox<E>) {
        if let Some(conn) = self.link.live() {
            let msg = ReplicaMsg::PrepareOk {
                view: sh.view,
                durable: sh.durable,
            };
            out.send(conn, &msg);
        }
    }

    pub(super) fn on_connected<E>(
        &mut self,
        conn: ConnId,
        me: u32,
        sh: &Shell,
        out: &mut Outbox<E>,
    ) {
        self.link.on_connected(conn, me, sh.len(), out);
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
        let Some(decoded) = self.link.decode(conn, bytes, &mut msgs) else {
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
            self.drop_conn(now, conn, Refusal::Malformed { detail }, &sh.cfg, out);
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
        self.link.last_heard = now;
        let live = self.link.live().is_some();
        match msg {
            ReplicaMsg::Challenge { nonce } if self.link.joining() => {
                self.link
                    .answer_challenge(conn, &nonce, &sh.secret, &sh.cfg, out);
            }
            ReplicaMsg::Welcome { view, last, commit } if self.link.joining() => {
                sh.view = sh.view.max(view);
                self.link.welcomed(conn);
                self.master_last = last;
                self.master_commit = commit;
                self.welcomed_at = Some(last);
                out.event(ReplicaEvent::JoinedMaster { last, commit }.into());
                // What the old link may have lost is sent again: questions
                // not answered, and transactions not applied.
                self.ask_again(conn, sh.view, out);
                for (origin, txn) in &self.pending {
                    let msg = ReplicaMsg::Forward {
                        view: sh.view,
                        origin: *origin,
                        txn: txn.clone(),
                    };
                    out.send(conn, &msg);
                }
                let ok = ReplicaMsg::PrepareOk {
                    view: sh.view,
                    durable: sh.durable,
                };
                out.send(conn, &ok);
            }
            ReplicaMsg::Prepare {
                view,
                entries,
                commit,
            } if live && view == sh.view => {
                self.on_prepare(now, conn, entries, commit, sh, out);
            }
            ReplicaMsg::Heartbeat { view, last, .. }
                if live && view == sh.view && last > sh.len() =>
            {
                // Every Prepare was sent before this heartbeat on the same
                // ordered link, so entries we lack were lost on the way (a
                // partition drops messages without breaking the link):
                // rejoin, and the master streams from our log end.
                let what = format!("missed entries {}..={last}", sh.len() + 1);
                self.drop_conn(now, conn, Refusal::Unexpected { what }, &sh.cfg, out);
            }
            ReplicaMsg::Heartbeat { view, last, commit } if live && view == sh.view => {
                self.master_last = last;
                self.master_commit = commit;
                let ok = ReplicaMsg::PrepareOk {
                    view: sh.view,
                    durable: sh.durable,
                };
                out.send(conn, &ok);
                // A question still unanswered after a heartbeat was lost (a
                // partition can drop messages of a link that survives it).
                self.ask_again(conn, sh.view, out);
                self.learn_commit(commit, sh, out);
            }
            ReplicaMsg::ReadIndexReply { view, id, commit } if live && view == sh.view => {
                if let Some(slot) = self.read_indexes.get_mut(&id) {
                    *slot = Some(commit);
                }
                self.learn_commit(commit, sh, out);
            }
            ReplicaMsg::Refused(reason) => {
                let why = format!("master refused: {reason}");
                out.close(conn);
                self.on_closed(now, conn, &why, &sh.cfg, out);
            }
            other => {
                let what = format!("{other:?}");
                self.drop_conn(now, conn, Refusal::Unexpected { what }, &sh.cfg, out);
            }
        }
    }

    /// Asks again every read-index question not answered yet.
    fn ask_again<E>(&self, conn: ConnId, view: u64, out: &mut Outbox<E>) {
        for (id, _) in self.read_indexes.iter().filter(|(_, a)| a.is_none()) {
            out.send(conn, &ReplicaMsg::ReadIndex { view, id: *id });
        }
    }

    fn on_prepare<E: From<ReplicaEvent>>(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        entries: Vec<Entry>,
        commit: u64,
        sh: &mut Shell,
        out: &mut Outbox<E>,
    ) {
        let mut batch = Batch::default();
        for e in entries {
            let len = sh.len();
            if e.index <= len {
                // Already held. With a fixed master the copies agree; a
                // differing copy means our suffix is not the master's.
                if sh.entries[(e.index - 1) as usize] == e {
                    continue;
                }
                if e.index <= sh.applied {
                    let what = format!("master rewrote applied entry {}", e.index);
                    return self.drop_conn(now, conn, Refusal::Unexpected { what }, &sh.cfg, out);
                }
                sh.entries.truncate((e.index - 1) as usize);
                sh.durable = sh.durable.min(e.index - 1);
                batch.push(Write::TruncateFrom { from: e.index });
            } else if e.index != len + 1 {
                let what = format!("gap: expected entry {}, got {}", len + 1, e.index);
                return self.drop_conn(now, conn, Refusal::Unexpected { what }, &sh.cfg, out);
            }
            batch.push(Write::Append {
                index: e.index,
                entry: e.write_bytes(),
            });
            sh.entries.push(e);
        }
        if !batch.is_empty() {
            let upto = sh.len();
            if sabotage::on(Sabotage::FollowerAcksBeforeDurable) {
                let ok = ReplicaMsg::PrepareOk {
                    view: sh.view,
                    durable: upto,
                };
                out.send(conn, &ok);
            }
            sh.persist(batch, AfterPersist::Appended { upto }, out);
        }
        self.learn_commit(commit, sh, out);
    }

    /// The master says `commit` is committed: apply up to it, as far as our
    /// log goes.
    fn learn_commit<E: From<ReplicaEvent>>(
        &mut self,
        commit: u64,
        sh: &mut Shell,
        out: &mut Outbox<E>,
    ) {
        let commit = match sabotage::on(Sabotage::FollowerAppliesUncommitted) {
            true => sh.len(),
            false => commit.min(sh.len()),
        };
        if commit > sh.commit {
            sh.commit = commit;
            sh.apply_committed(out, |origin| {
                self.pending.remove(&origin);
            });
        }
    }

    /// Refuses and closes the link to the master.
    fn drop_conn<E: From<ReplicaEvent>>(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        reason: Refusal,
        cfg: &ReplicaConfig,
        out: &mut Outbox<E>,
    ) {
        if !self.owns(conn) {
            return;
        }
        let why = reason.to_string();
        refuse(conn, reason, out);
        self.on_closed(now, conn, &why, cfg, out);
    }

    /// The link broke, closed, or could not be opened.
    pub(super) fn on_closed<E: From<ReplicaEvent>>(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        why: &str,
        cfg: &ReplicaConfig,
        out: &mut Outbox<E>,
    ) {
        if self.link.close(now, conn, cfg) {
            let why = why.to_string();
            out.event(ReplicaEvent::MasterLost { why }.into());
        }
    }

    pub(super) fn handle_timeout<E: From<ReplicaEvent>>(
        &mut self,
        now: Timestamp,
        cfg: &ReplicaConfig,
        out: &mut Outbox<E>,
    ) {
        if self.link.dial(now, cfg, out) {
            return;
        }
        if let Some(conn) = self.link.silent(now, cfg) {
            let step = "the master".into();
            self.drop_conn(now, conn, Refusal::Timeout { step }, cfg, out);
        }
    }

    pub(super) fn poll_timeout(&self, cfg: &ReplicaConfig) -> Timestamp {
        self.link.poll_timeout(cfg)
    }
}
