//! Master replication: one server orders every mutation; all apply it.
//!
//! The master appends each transaction to its log, makes it durable, and
//! streams it to every follower; followers make it durable and say so
//! (`PrepareOk`). An entry is **committed** once a majority of all servers
//! (the master included) hold it durably; the master tells followers the
//! commit index, and every server applies committed entries strictly in
//! index order. The server a client talked to answers it only after it has
//! applied that client's transaction itself.
//!
//! Nothing is acknowledged before it is durable: log appends and applies go
//! out as `Persist` effects, and `PrepareOk`s and client answers are sent
//! only when the driver reports them `Persisted` (raft-rs's `Ready` split).
//!
//! The master is fixed by configuration; every message carries its view so
//! that a later failover can fence a stale master. See docs/replication.md.
//!
//! The parts: this file is the shell both roles share ([`Replica`], and the
//! `Shell` of configuration, log, state and what is being made durable);
//! `leader.rs` is the master's part, `follower.rs` a follower's, and
//! `link.rs` the connections between servers that both run over (framing,
//! the join handshake, refusing, dialing again). A [`Replica`] hands its role
//! the shell to act on; the roles use the link, and the link knows only the
//! configuration.

pub mod catalogue;
pub mod entry;
mod follower;
mod leader;
mod link;
pub mod messages;
pub mod state;

use crate::auth::ClusterSecret;
use crate::balancer::ServerAddr;
use crate::entropy::Entropy;
use crate::frame::{self, FrameDecoder};
use crate::io::ConnId;
use crate::outbox::Outbox;
use crate::refusal::Refusal;
use crate::store::{Batch, Recovered, Write};
use crate::time::Timestamp;
use entry::{Entry, Origin, Txn, TxnResult};
use follower::Follower;
use leader::Master;
pub use link::REPLICA_DIALS;
use state::State;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// The view of the configured master. Failover will start new views.
pub const FIRST_VIEW: u64 = 1;

#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    pub me: u32,
    pub master: u32,
    /// Every server of the cluster but this one.
    pub peers: Vec<ServerAddr>,
    pub heartbeat: Duration,
    /// Silence after which a peer connection is considered dead.
    pub dead_after: Duration,
    pub reconnect_after: Duration,
    /// Entries per `Prepare` message.
    pub batch_max: usize,
    /// Transactions a follower holds for forwarding at most.
    pub max_pending: usize,
}

impl ReplicaConfig {
    pub fn new(me: u32, master: u32, peers: Vec<ServerAddr>) -> Self {
        ReplicaConfig {
            me,
            master,
            peers,
            heartbeat: Duration::from_millis(500),
            dead_after: Duration::from_secs(3),
            reconnect_after: Duration::from_millis(500),
            batch_max: 64,
            max_pending: 4096,
        }
    }

    fn cluster_size(&self) -> usize {
        self.peers.len() + 1
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicaEvent {
    JoinedMaster { last: u64, commit: u64 },
    MasterLost { why: String },
    FollowerJoined { id: u32, last: u64 },
    FollowerLost { id: u32, why: String },
    PeerRefused { conn: ConnId, reason: Refusal },
    Appended { index: u64, txn: String },
    Committed { index: u64 },
    Applied { index: u64, result: String },
}

impl fmt::Display for ReplicaEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplicaEvent::JoinedMaster { last, commit } => {
                write!(f, "joined master (master log {last}, commit {commit})")
            }
            ReplicaEvent::MasterLost { why } => write!(f, "lost master: {why}"),
            ReplicaEvent::FollowerJoined { id, last } => {
                write!(f, "follower {id} joined at log {last}")
            }
            ReplicaEvent::FollowerLost { id, why } => write!(f, "follower {id} lost: {why}"),
            ReplicaEvent::PeerRefused { conn, reason } => {
                write!(f, "refuse peer {conn}: {reason}")
            }
            ReplicaEvent::Appended { index, txn } => write!(f, "append #{index} {txn}"),
            ReplicaEvent::Committed { index } => write!(f, "commit #{index}"),
            ReplicaEvent::Applied { index, result } => write!(f, "apply #{index} -> {result}"),
        }
    }
}

/// How far a server has come along the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Indexes {
    /// The end of the log as durable on this server's disk.
    pub durable: u64,
    /// The highest index this server knows to be committed.
    pub commit: u64,
    /// The highest index applied with its effects durable: what this
    /// server's answers to clients reflect, and what it resumes from.
    pub applied: u64,
}

/// The result of a transaction of this server's own client, now applied
/// durably: the client may be answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub origin: Origin,
    pub result: TxnResult,
}

/// Results of this server's own clients' transactions, in log order.
pub type Delivered = Vec<Delivery>;

enum AfterPersist {
    Appended { upto: u64 },
    Applied { upto: u64, results: Delivered },
}

/// What the master and a follower share: the configuration, the log and
/// the state it is applied to, and how far each has come.
struct Shell {
    cfg: ReplicaConfig,
    secret: ClusterSecret,
    view: u64,
    entries: Vec<Entry>,
    /// Entries durable on this server's disk.
    durable: u64,
    commit: u64,
    /// Entries applied to `state`, in memory.
    applied: u64,
    /// Entries applied with their effects durable.
    applied_durable: u64,
    state: State,
    /// Batches sent to disk, by token, and what to do once durable.
    inflight: BTreeMap<u64, AfterPersist>,
    next_token: u64,
}

impl Shell {
    fn len(&self) -> u64 {
        self.entries.len() as u64
    }

    fn persist<E>(&mut self, batch: Batch, after: AfterPersist, out: &mut Outbox<E>) {
        let token = self.next_token;
        self.next_token += 1;
        self.inflight.insert(token, after);
        out.persist(token, batch);
    }

    /// Applies every committed entry not applied yet, in index order, and
    /// sends the state's writes to disk; `applied` hears the origin of each
    /// entry applied. This server's clients' results come back from
    /// [`Replica::on_persisted`] once durable.
    fn apply_committed<E: From<ReplicaEvent>>(
        &mut self,
        out: &mut Outbox<E>,
        mut applied: impl FnMut(Origin),
    ) {
        let upto = self.commit.min(self.len());
        if upto <= self.applied {
            return;
        }
        let mut batch = Batch::default();
        let mut results = Vec::new();
        for i in self.applied + 1..=upto {
            let entry = &self.entries[(i - 1) as usize];
            let state::Applied { writes, result } = self.state.apply(entry);
            batch.writes.extend(writes);
            out.event(
                ReplicaEvent::Applied {
                    index: i,
                    result: format!("{result:?}"),
                }
                .into(),
            );
            let origin = entry.origin;
            applied(origin);
            if origin.server == self.cfg.me {
                results.push(Delivery { origin, result });
            }
        }
        batch.push(Write::SetApplied { index: upto });
        self.applied = upto;
        self.persist(batch, AfterPersist::Applied { upto, results }, out);
    }
}

enum Role {
    Master(Master),
    Follower(Follower),
}

pub struct Replica {
    shell: Shell,
    entropy: Entropy,
    role: Role,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubmitError {
    /// Too many transactions are waiting for the master.
    Backlogged,
}

impl Replica {
    /// Resumes from what the store recovered (empty for a new server).
    pub fn recover(
        cfg: ReplicaConfig,
        secret: ClusterSecret,
        entropy: Entropy,
        rec: &Recovered,
        now: Timestamp,
    ) -> Result<Replica, String> {
        let mut log = Vec::with_capacity(rec.log.len());
        for (i, (index, bytes)) in rec.log.iter().enumerate() {
            let e: Entry = frame::decode(bytes).map_err(|e| format!("log entry {index}: {e}"))?;
            if e.index != *index || *index != i as u64 + 1 {
                return Err(format!("log is not contiguous at index {index}"));
            }
            log.push(e);
        }
        if rec.applied > log.len() as u64 {
            return Err(format!(
                "applied index {} is past the log's end {}",
                rec.applied,
                log.len()
            ));
        }
        let state = State::from_rows(&rec.tables)?;
        let role = if cfg.me == cfg.master {
            let in_log = log[rec.applied as usize..]
                .iter()
                .map(|e| e.origin)
                .collect();
            Role::Master(Master::new(now + cfg.heartbeat, in_log))
        } else {
            Role::Follower(Follower::new(now))
        };
        let durable = log.len() as u64;
        Ok(Replica {
            entropy,
            shell: Shell {
                cfg,
                secret,
                view: rec.view.max(FIRST_VIEW),
                entries: log,
                durable,
                commit: rec.applied,
                applied: rec.applied,
                applied_durable: rec.applied,
                state,
                inflight: BTreeMap::new(),
                next_token: 0,
            },
            role,
        })
    }

    /// What a recovered replica does before any input: a master commits
    /// what is already durable on a majority. That matters to a cluster of
    /// one, whose own durable log is a majority: entries appended but not
    /// applied before a crash would otherwise wait for the next proposal.
    pub fn resume<E: From<ReplicaEvent>>(&mut self, now: Timestamp, out: &mut Outbox<E>) {
        if let Role::Master(m) = &mut self.role {
            m.advance_commit(now, &mut self.shell, out);
        }
    }

    pub fn state(&self) -> &State {
        &self.shell.state
    }

    /// Every other server of the cluster.
    pub fn peers(&self) -> &[ServerAddr] {
        &self.shell.cfg.peers
    }

    pub fn is_master(&self) -> bool {
        matches!(self.role, Role::Master(_))
    }

    pub fn log(&self) -> &[Entry] {
        &self.shell.entries
    }

    pub fn indexes(&self) -> Indexes {
        Indexes {
            durable: self.shell.durable,
            commit: self.shell.commit,
            applied: self.shell.applied_durable,
        }
    }

    /// True if this server may take clients: the master always; a follower
    /// once it is connected to the master, has heard from it within two
    /// heartbeats, and has applied what the master last said was committed.
    /// The recency matters: after a partition heals, a TCP link can stall
    /// silently, and a follower that only checked its link state would go on
    /// serving a stale state until `dead_after` ran out.
    pub fn is_caught_up(&self, now: Timestamp) -> bool {
        match &self.role {
            Role::Master(_) => true,
            Role::Follower(f) => f.is_caught_up(now, &self.shell),
        }
    }

    /// True once nothing this server's previous run sent to the master can
    /// still be ordered without this server having applied it: what the
    /// previous run forwarded and a crash made us forget (`pending` lives in
    /// memory) is either in the log here by now, or will never be.
    ///
    /// The master: at once, since everything it will ever commit is in its
    /// own durable log. A follower: once it has joined the master and
    /// applied through the log end the master had when it welcomed us. The
    /// master accepts forwards only on a follower's current link, and a
    /// join closes the link before it (see `Master::on_msg`), so every
    /// forward of the previous run that the master will ever take was
    /// taken before the welcome; one it took but had not made durable is
    /// lost with a master crash, and the next welcome moves the mark.
    pub fn past_is_settled(&self) -> bool {
        match &self.role {
            Role::Master(_) => true,
            Role::Follower(f) => f.past_is_settled(&self.shell),
        }
    }

    /// Asks the master for its commit index, so that a read can wait until
    /// this server has applied every write acknowledged anywhere before now.
    /// `None` if there is no master to ask (the read cannot be confirmed).
    /// The master itself needs no question: its own state is the newest.
    pub fn ask_read_index<E>(&mut self, out: &mut Outbox<E>) -> Option<u64> {
        match &mut self.role {
            Role::Master(_) => Some(u64::MAX),
            Role::Follower(f) => f.ask_read_index(self.shell.view, out),
        }
    }

    /// True once read `id` may proceed: the master answered and this server
    /// has applied up to its answer.
    pub fn read_index_ready(&self, id: u64) -> bool {
        match &self.role {
            Role::Master(_) => true,
            Role::Follower(f) => f.read_index_ready(id, &self.shell),
        }
    }

    /// Forgets read `id` (done, or given up).
    pub fn forget_read_index(&mut self, id: u64) {
        if let Role::Follower(f) = &mut self.role {
            f.forget_read_index(id);
        }
    }

    /// True if `conn` belongs to replication.
    pub fn owns(&self, conn: ConnId) -> bool {
        match &self.role {
            Role::Master(m) => m.owns(conn),
            Role::Follower(f) => f.owns(conn),
        }
    }

    /// Orders a transaction of one of this server's clients. The result
    /// comes back from [`Replica::on_persisted`] once applied here.
    pub fn submit<E: From<ReplicaEvent>>(
        &mut self,
        now: Timestamp,
        origin: Origin,
        txn: Txn,
        out: &mut Outbox<E>,
    ) -> Result<(), SubmitError> {
        match &mut self.role {
            Role::Master(m) => {
                m.propose(now, origin, txn, &mut self.shell, out);
                Ok(())
            }
            Role::Follower(f) => f.submit(origin, txn, &self.shell.cfg, self.shell.view, out),
        }
    }

    /// A batch is durable. Returns this server's clients' results that are
    /// now applied, in log order.
    pub fn on_persisted<E: From<ReplicaEvent>>(
        &mut self,
        now: Timestamp,
        token: u64,
        out: &mut Outbox<E>,
    ) -> Delivered {
        match self.shell.inflight.remove(&token) {
            None => Vec::new(),
            Some(AfterPersist::Appended { upto }) => {
                self.shell.durable = self.shell.durable.max(upto);
                match &mut self.role {
                    Role::Master(m) => m.advance_commit(now, &mut self.shell, out),
                    Role::Follower(f) => f.appended(&self.shell, out),
                }
                Vec::new()
            }
            Some(AfterPersist::Applied { upto, results }) => {
                self.shell.applied_durable = self.shell.applied_durable.max(upto);
                results
            }
        }
    }

    /// Master: a connection whose first frame was a replication message.
    pub fn adopt<E: From<ReplicaEvent>>(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        decoder: FrameDecoder,
        first: &[u8],
        out: &mut Outbox<E>,
    ) {
        let nonce: [u8; 16] = self.entropy.bytes();
        let Role::Master(m) = &mut self.role else {
            let what = "replication traffic to a follower".into();
            return link::refuse(conn, Refusal::Unexpected { what }, out);
        };
        m.adopt(now, conn, decoder, first, nonce, &self.shell.cfg, out);
    }

    pub fn on_connected<E: From<ReplicaEvent>>(&mut self, conn: ConnId, out: &mut Outbox<E>) {
        if let Role::Follower(f) = &mut self.role {
            f.on_connected(conn, self.shell.cfg.me, &self.shell, out);
        }
    }

    /// The connection broke, closed, or could not be opened.
    pub fn on_closed<E: From<ReplicaEvent>>(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        why: &str,
        out: &mut Outbox<E>,
    ) {
        match &mut self.role {
            Role::Master(m) => m.on_closed(conn, why, out),
            Role::Follower(f) => f.on_closed(now, conn, why, &self.shell.cfg, out),
        }
    }

    pub fn on_bytes<E: From<ReplicaEvent>>(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        bytes: &[u8],
        out: &mut Outbox<E>,
    ) {
        match &mut self.role {
            Role::Master(m) => m.on_bytes(now, conn, bytes, &mut self.shell, out),
            Role::Follower(f) => f.on_bytes(now, conn, bytes, &mut self.shell, out),
        }
    }

    pub fn handle_timeout<E: From<ReplicaEvent>>(&mut self, now: Timestamp, out: &mut Outbox<E>) {
        match &mut self.role {
            Role::Master(m) => m.handle_timeout(now, &self.shell, out),
            Role::Follower(f) => f.handle_timeout(now, &self.shell.cfg, out),
        }
    }

    pub fn poll_timeout(&self) -> Option<Timestamp> {
        match &self.role {
            Role::Master(m) => m.poll_timeout(&self.shell.cfg),
            Role::Follower(f) => Some(f.poll_timeout(&self.shell.cfg)),
        }
    }
}

trait WriteBytes {
    fn write_bytes(&self) -> Vec<u8>;
}

impl WriteBytes for Entry {
    fn write_bytes(&self) -> Vec<u8> {
        use speedy::Writable;
        self.write_to_vec().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
