//! Replication: one server, the master, orders every mutation; all apply
//! it; when the master is lost, the others elect another.
//!
//! The master appends each transaction to its log, makes it durable, and
//! streams it to every follower; followers make it durable and say so. An
//! entry is **committed** once a majority of all servers hold it durably
//! and an entry of the master's own view is among them; every server
//! applies committed entries strictly in index order. The server a client
//! talked to answers it only after it has applied that client's
//! transaction itself.
//!
//! Views are Raft's terms: a follower that hears no master for a while
//! asks the others whether they would elect it (pre-vote), and with a
//! majority's yes asks for real in the next view; a server votes once per
//! view, for a candidate whose log is at least as complete as its own, so a
//! new master holds every committed entry. The view and the vote are
//! durable before anyone is told. See docs/replication.md.
//!
//! Nothing is acknowledged before it is durable: log appends, votes and
//! applies go out as `Persist` effects, and what depends on them is sent
//! only when the driver reports them `Persisted` (raft-rs's `Ready` split).
//!
//! The parts: this file is the shell every role shares ([`Replica`], and
//! the `Shell` of configuration, links, log, state, and what is being made
//! durable); `leader.rs` is the master's part, `follower.rs` a follower's,
//! `election.rs` a candidate's and every server's vote, and `link.rs` the
//! connections between servers that all of them run over.

pub mod catalogue;
mod election;
pub mod entry;
mod follower;
mod leader;
mod link;
pub mod logins;
pub mod messages;
pub mod registry;
pub mod state;
pub mod status;
pub mod sync_round;

use crate::auth::ClusterSecret;
use crate::balancer::ServerAddr;
use crate::entropy::Entropy;
use crate::frame::{self, FrameDecoder};
use crate::io::ConnId;
use crate::outbox::Outbox;
use crate::refusal::Refusal;
use crate::store::{Batch, Recovered, Write};
use crate::time::{earliest, Timestamp};
use election::Candidate;
use entry::{Entry, Origin, Txn, TxnResult};
use follower::Follower;
use leader::Master;
pub use link::REPLICA_DIALS;
use link::{LinkNews, Links};
use messages::ReplicaMsg;
use state::State;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// The view of the configured first master. Elections start later views.
pub const FIRST_VIEW: u64 = 1;

#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    pub me: u32,
    /// The master of the first view; later views elect theirs.
    pub master: u32,
    /// Every server of the cluster but this one.
    pub peers: Vec<ServerAddr>,
    pub heartbeat: Duration,
    /// Silence after which a link is dead, a master without a majority
    /// steps down, and a follower without a master starts an election
    /// (after a random extra of up to half as long).
    pub dead_after: Duration,
    pub reconnect_after: Duration,
    /// Entries per `Append` message.
    pub batch_max: usize,
    /// This server's clients' transactions waiting to be applied, at most.
    pub max_pending: usize,
}

impl ReplicaConfig {
    pub fn new(me: u32, master: u32, peers: Vec<ServerAddr>) -> Self {
        ReplicaConfig {
            me,
            master,
            peers,
            heartbeat: Duration::from_millis(200),
            dead_after: Duration::from_secs(1),
            reconnect_after: Duration::from_millis(250),
            batch_max: 64,
            max_pending: 4096,
        }
    }

    fn cluster_size(&self) -> usize {
        self.peers.len() + 1
    }

    fn majority(&self) -> usize {
        self.cluster_size() / 2 + 1
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicaEvent {
    LinkUp {
        peer: u32,
    },
    LinkDown {
        peer: u32,
        why: String,
    },
    PeerRefused {
        conn: ConnId,
        reason: Refusal,
    },
    /// Asking the others to elect this server master of `view`.
    Campaign {
        view: u64,
        pre: bool,
    },
    Elected {
        view: u64,
    },
    SteppedDown {
        view: u64,
        why: String,
    },
    /// Following `master` in `view`.
    Following {
        view: u64,
        master: u32,
    },
    Appended {
        index: u64,
        txn: String,
    },
    /// An uncommitted suffix from an older view, replaced.
    Truncated {
        from: u64,
    },
    Committed {
        index: u64,
    },
    Applied {
        index: u64,
        result: String,
    },
}

impl fmt::Display for ReplicaEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplicaEvent::LinkUp { peer } => write!(f, "link to server {peer} up"),
            ReplicaEvent::LinkDown { peer, why } => {
                write!(f, "link to server {peer} down: {why}")
            }
            ReplicaEvent::PeerRefused { conn, reason } => {
                write!(f, "refuse peer {conn}: {reason}")
            }
            ReplicaEvent::Campaign { view, pre: true } => {
                write!(f, "would the others elect me for view {view}?")
            }
            ReplicaEvent::Campaign { view, pre: false } => {
                write!(f, "candidate for view {view}")
            }
            ReplicaEvent::Elected { view } => write!(f, "elected master of view {view}"),
            ReplicaEvent::SteppedDown { view, why } => {
                write!(f, "no longer master of view {view}: {why}")
            }
            ReplicaEvent::Following { view, master } => {
                write!(f, "following server {master} in view {view}")
            }
            ReplicaEvent::Appended { index, txn } => write!(f, "append #{index} {txn}"),
            ReplicaEvent::Truncated { from } => write!(f, "truncate the log from #{from}"),
            ReplicaEvent::Committed { index } => write!(f, "commit #{index}"),
            ReplicaEvent::Applied { index, result } => write!(f, "apply #{index} -> {result}"),
        }
    }
}

/// How far a server has come along the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Indexes {
    /// The end of the log as durable on this server's disk (what is
    /// durable beyond a suffix being replaced does not count).
    pub durable: u64,
    /// The highest index this server knows to be committed.
    pub commit: u64,
    /// The highest index applied with its effects durable: what this
    /// server's answers to clients reflect, and what it resumes from.
    pub applied: u64,
}

/// Whether a server may take clients ([`Replica::readiness`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// It follows no live master: an election is on, or it is cut off
    /// from the majority (a master that is says so too).
    NoMaster,
    /// It follows a master but has not applied what the master committed
    /// (or, a new master, has not committed its view's first entry).
    CatchingUp,
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
    /// Log writes: entries up to `upto`, after dropping the suffix from
    /// `truncated` if set.
    Appended {
        upto: u64,
        truncated: Option<u64>,
    },
    Applied {
        upto: u64,
        results: Delivered,
    },
    /// The view and vote as they were when the batch went out; then the
    /// messages that promise something in that view.
    Meta {
        view: u64,
        then: Vec<(u32, ReplicaMsg)>,
    },
}

/// A read of this server's own, waiting for the master's word.
struct Read {
    /// The commit index the master confirmed, once it did.
    answer: Option<u64>,
    /// When the question last went to a master.
    asked: Option<Timestamp>,
}

/// What every role shares: the configuration, the links, the log and the
/// state it is applied to, and how far each has come.
struct Shell {
    cfg: ReplicaConfig,
    secret: ClusterSecret,
    links: Links,
    /// The highest view seen (a Raft term), and the vote cast in it.
    view: u64,
    vote: Option<u32>,
    /// The view as far as it is durable: nothing is promised in a view
    /// before it is.
    view_durable: u64,
    entries: Vec<Entry>,
    /// The log's end on disk as of the last log batch made durable.
    disk_end: u64,
    commit: u64,
    /// Entries applied to `state`, in memory.
    applied: u64,
    /// Entries applied with their effects durable.
    applied_durable: u64,
    state: State,
    /// Batches sent to disk, by token, and what to do once durable.
    inflight: BTreeMap<u64, AfterPersist>,
    next_token: u64,
    /// This server's clients' transactions not applied yet: sent to
    /// whichever server is master, again whenever that changes.
    pending: BTreeMap<Origin, Txn>,
    reads: BTreeMap<u64, Read>,
    next_read: u64,
    entropy: Entropy,
    /// Status questions and answers from other servers, for the server.
    status: Vec<status::StatusNews>,
}

impl Shell {
    fn len(&self) -> u64 {
        self.entries.len() as u64
    }

    /// The view of entry `index` (0 for index 0).
    fn view_at(&self, index: u64) -> u64 {
        match index {
            0 => 0,
            i => self.entries.get((i - 1) as usize).map_or(0, |e| e.view),
        }
    }

    fn last_view(&self) -> u64 {
        self.view_at(self.len())
    }

    /// The log's end as durable on disk and equal to the log in memory:
    /// while a batch that replaces a suffix is on its way, what the disk
    /// holds from there on is the old suffix.
    fn durable(&self) -> u64 {
        let stale_from = self
            .inflight
            .values()
            .filter_map(|a| match a {
                AfterPersist::Appended {
                    truncated: Some(t), ..
                } => Some(*t),
                _ => None,
            })
            .min();
        match stale_from {
            Some(t) => self.disk_end.min(t - 1),
            None => self.disk_end,
        }
        .min(self.len())
    }

    fn persist<E>(&mut self, batch: Batch, after: AfterPersist, out: &mut Outbox<E>) {
        let token = self.next_token;
        self.next_token += 1;
        self.inflight.insert(token, after);
        out.persist(token, batch);
    }

    /// Makes the view and vote durable, then sends `then`.
    fn persist_meta<E>(&mut self, then: Vec<(u32, ReplicaMsg)>, out: &mut Outbox<E>) {
        let mut batch = Batch::default();
        batch.push(Write::SetView { view: self.view });
        batch.push(Write::SetVote { vote: self.vote });
        let view = self.view;
        self.persist(batch, AfterPersist::Meta { view, then }, out);
    }

    fn send<E>(
        &mut self,
        now: Timestamp,
        peer: u32,
        msg: &ReplicaMsg,
        out: &mut Outbox<E>,
    ) -> bool {
        self.links.send(now, peer, msg, out)
    }

    /// A random election timeout: `dead_after` and up to half as much
    /// again, so that two followers rarely stand at once.
    fn election_timeout(&mut self) -> Duration {
        let base = self.cfg.dead_after;
        let spread = (base.as_micros() as u64 / 2).max(1);
        base + Duration::from_micros(self.entropy.next_u64() % spread)
    }

    /// Applies every committed entry not applied yet, in index order, and
    /// sends the state's writes to disk. This server's clients' results
    /// come back from [`Replica::on_persisted`] once durable.
    fn apply_committed<E: From<ReplicaEvent>>(&mut self, out: &mut Outbox<E>) -> Vec<Origin> {
        let upto = self.commit.min(self.len());
        if upto <= self.applied {
            return Vec::new();
        }
        let mut batch = Batch::default();
        let mut results = Vec::new();
        let mut origins = Vec::new();
        for i in self.applied + 1..=upto {
            let entry = &self.entries[(i - 1) as usize];
            let state::Applied { writes, result } = self.state.apply(entry);
            batch.writes.extend(writes);
            out.event(
                ReplicaEvent::Applied {
                    index: i,
                    result: described(&result),
                }
                .into(),
            );
            if entry.txn == Txn::Noop {
                continue;
            }
            let origin = entry.origin;
            self.pending.remove(&origin);
            origins.push(origin);
            if origin.server == self.cfg.me {
                results.push(Delivery { origin, result });
            }
        }
        batch.push(Write::SetApplied { index: upto });
        self.applied = upto;
        self.persist(batch, AfterPersist::Applied { upto, results }, out);
        origins
    }
}

enum Role {
    Master(Master),
    Follower(Follower),
    Candidate(Candidate),
}

pub struct Replica {
    shell: Shell,
    role: Role,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubmitError {
    /// Too many transactions are waiting to be ordered.
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
        let stored_view = rec.view.max(FIRST_VIEW);
        if let Some(e) = log.iter().find(|e| e.view > stored_view) {
            return Err(format!(
                "log entry {} is of view {}, past the stored view {}",
                e.index, e.view, rec.view
            ));
        }
        let state = State::from_rows(&rec.tables)?;
        let view = match crate::sabotage::on(crate::sabotage::Sabotage::ViewForgottenOnRestart) {
            true => FIRST_VIEW,
            false => rec.view.max(FIRST_VIEW),
        };
        let disk_end = log.len() as u64;
        let mut shell = Shell {
            links: Links::new(now, &cfg),
            cfg,
            secret,
            view,
            vote: rec.vote,
            view_durable: view,
            entries: log,
            disk_end,
            commit: rec.applied,
            applied: rec.applied,
            applied_durable: rec.applied,
            state,
            inflight: BTreeMap::new(),
            next_token: 0,
            pending: BTreeMap::new(),
            reads: BTreeMap::new(),
            next_read: 0,
            status: Vec::new(),
            entropy,
        };
        // The first view's master is named by configuration, not elected:
        // no election happens in view 1, so it is its only master.
        let role = if view == FIRST_VIEW && shell.cfg.me == shell.cfg.master {
            Role::Master(Master::first(now, &shell))
        } else {
            let timeout = shell.election_timeout();
            Role::Follower(Follower::new(now + timeout))
        };
        Ok(Replica { shell, role })
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

    /// The contents that files stopped naming in the entries applied since
    /// the last call ([`catalogue::Catalogue::take_released`]).
    pub fn take_released(&mut self) -> Vec<[u8; 32]> {
        self.shell.state.take_released()
    }

    /// Every other server of the cluster.
    pub fn peers(&self) -> &[ServerAddr] {
        &self.shell.cfg.peers
    }

    /// Servers that make a majority of the cluster, this one included.
    pub fn majority(&self) -> usize {
        self.shell.cfg.majority()
    }

    /// The other servers whose link to this one is up now.
    pub fn live_peers(&self) -> Vec<u32> {
        self.shell.links.live()
    }

    pub fn is_master(&self) -> bool {
        matches!(self.role, Role::Master(_))
    }

    /// The master this server follows now, itself included; `None` while
    /// there is none (an election, or no word from one yet).
    pub fn master(&self) -> Option<u32> {
        match &self.role {
            Role::Master(_) => Some(self.shell.cfg.me),
            Role::Follower(f) => f.master(),
            Role::Candidate(_) => None,
        }
    }

    /// The current view (a Raft term).
    pub fn view(&self) -> u64 {
        self.shell.view
    }

    pub fn log(&self) -> &[Entry] {
        &self.shell.entries
    }

    pub fn indexes(&self) -> Indexes {
        Indexes {
            durable: self.shell.durable(),
            commit: self.shell.commit,
            applied: self.shell.applied_durable,
        }
    }

    /// Whether this server may take clients, and if not why not.
    pub fn readiness(&self, now: Timestamp) -> Readiness {
        match &self.role {
            Role::Master(m) => m.readiness(now, &self.shell),
            Role::Follower(f) => f.readiness(now, &self.shell),
            Role::Candidate(_) => Readiness::NoMaster,
        }
    }

    /// True if this server may take clients: a master that has committed
    /// an entry of its view and heard from a majority within two
    /// heartbeats; a follower that has heard from its master within two
    /// heartbeats and applied what the master last said was committed.
    /// The recency matters: after a partition heals, a TCP link can stall
    /// silently, and a server that only checked its link would go on
    /// serving a stale state until `dead_after` ran out.
    pub fn is_caught_up(&self, now: Timestamp) -> bool {
        self.readiness(now) == Readiness::Ready
    }

    /// True once nothing this server's previous run sent to a master can
    /// still be ordered without this server having applied it (what the
    /// previous run forwarded and a crash made us forget). See
    /// `Master::past_is_settled` and `Follower::past_is_settled`.
    pub fn past_is_settled(&self) -> bool {
        match &self.role {
            Role::Master(m) => m.past_is_settled(&self.shell),
            Role::Follower(f) => f.past_is_settled(&self.shell),
            Role::Candidate(_) => false,
        }
    }

    /// Starts a read: asks the master to confirm it still leads a majority
    /// and to say what is committed, so that the read can wait until this
    /// server has applied every write acknowledged anywhere before now.
    /// With no master now (an election), the question goes to the next one
    /// (a new master asks itself); [`Replica::read_index_ready`] says when
    /// the read may proceed, and the caller decides how long to wait.
    pub fn ask_read_index<E>(&mut self, now: Timestamp, out: &mut Outbox<E>) -> u64 {
        let id = self.shell.next_read;
        self.shell.next_read += 1;
        self.shell.reads.insert(
            id,
            Read {
                answer: None,
                asked: None,
            },
        );
        match &mut self.role {
            Role::Master(m) => {
                m.confirm_read(now, leader::ReadFor::Local(id), &mut self.shell, out)
            }
            Role::Follower(f) => f.ask_read_index(now, id, &mut self.shell, out),
            Role::Candidate(_) => {}
        }
        id
    }

    /// True once read `id` may proceed: the master confirmed and this
    /// server has applied up to what it said.
    pub fn read_index_ready(&self, id: u64) -> bool {
        matches!(
            self.shell.reads.get(&id),
            Some(Read { answer: Some(c), .. }) if self.shell.applied_durable >= *c
        )
    }

    /// Forgets read `id` (done, or given up).
    pub fn forget_read_index(&mut self, id: u64) {
        self.shell.reads.remove(&id);
    }

    /// Status questions and answers that arrived since the last call.
    pub fn take_status_news(&mut self) -> Vec<status::StatusNews> {
        std::mem::take(&mut self.shell.status)
    }

    /// Sends a status question or answer to `peer`; false if its link is
    /// not up (it cannot answer now).
    pub fn send_status<E>(
        &mut self,
        now: Timestamp,
        peer: u32,
        msg: &ReplicaMsg,
        out: &mut Outbox<E>,
    ) -> bool {
        self.shell.send(now, peer, msg, out)
    }

    /// This server's report, with what the server adds (`sessions`,
    /// `free_disk`).
    pub fn report(&self, sessions: u32, free_disk: Option<u64>) -> status::ServerReport {
        let role = match &self.role {
            Role::Master(_) => status::Role::Master,
            Role::Follower(_) => status::Role::Follower,
            Role::Candidate(_) => status::Role::Candidate,
        };
        let ix = self.indexes();
        status::ServerReport {
            id: self.shell.cfg.me,
            role,
            view: self.shell.view,
            master: self.master(),
            last_index: ix.durable,
            commit: ix.commit,
            applied: ix.applied,
            sessions,
            free_disk,
        }
    }

    /// True if `conn` belongs to replication.
    pub fn owns(&self, conn: ConnId) -> bool {
        self.shell.links.owns(conn)
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
        if self.shell.pending.len() >= self.shell.cfg.max_pending {
            return Err(SubmitError::Backlogged);
        }
        self.shell.pending.insert(origin, txn.clone());
        match &mut self.role {
            Role::Master(m) => m.propose(now, origin, txn, &mut self.shell, out),
            Role::Follower(f) => f.forward(now, origin, txn, &mut self.shell, out),
            Role::Candidate(_) => {}
        }
        Ok(())
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
            Some(AfterPersist::Appended { upto, .. }) => {
                self.shell.disk_end = upto;
                match &mut self.role {
                    Role::Master(m) => m.advance_commit(now, &mut self.shell, out),
                    Role::Follower(f) => f.acknowledge(now, &mut self.shell, out),
                    Role::Candidate(_) => {}
                }
                Vec::new()
            }
            Some(AfterPersist::Applied { upto, results }) => {
                self.shell.applied_durable = self.shell.applied_durable.max(upto);
                results
            }
            Some(AfterPersist::Meta { view, then }) => {
                self.shell.view_durable = self.shell.view_durable.max(view);
                for (peer, msg) in then {
                    self.shell.send(now, peer, &msg, out);
                }
                if let Role::Follower(f) = &mut self.role {
                    f.acknowledge(now, &mut self.shell, out);
                }
                Vec::new()
            }
        }
    }

    /// A connection whose first frame was a replication message.
    pub fn adopt<E: From<ReplicaEvent>>(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        decoder: FrameDecoder,
        first: &[u8],
        out: &mut Outbox<E>,
    ) {
        let nonce: [u8; 16] = self.shell.entropy.bytes();
        let sh = &mut self.shell;
        sh.links
            .adopt(now, conn, decoder, first, nonce, &sh.cfg, out);
    }

    pub fn on_connected<E: From<ReplicaEvent>>(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        out: &mut Outbox<E>,
    ) {
        let sh = &mut self.shell;
        sh.links.on_connected(now, conn, &sh.cfg, out);
    }

    /// The connection broke, closed, or could not be opened.
    pub fn on_closed<E: From<ReplicaEvent>>(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        why: &str,
        out: &mut Outbox<E>,
    ) {
        let mut news = Vec::new();
        let sh = &mut self.shell;
        sh.links.close(now, conn, why, &sh.cfg, &mut news);
        self.on_news(now, news, out);
    }

    pub fn on_bytes<E: From<ReplicaEvent>>(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        bytes: &[u8],
        out: &mut Outbox<E>,
    ) {
        let mut news = Vec::new();
        let sh = &mut self.shell;
        let got = sh
            .links
            .on_bytes(now, conn, bytes, &sh.secret, &sh.cfg, &mut news, out);
        self.on_news(now, news, out);
        let Some((peer, msgs)) = got else {
            return;
        };
        for msg in msgs {
            self.on_msg(now, peer, msg, out);
        }
    }

    pub fn handle_timeout<E: From<ReplicaEvent>>(&mut self, now: Timestamp, out: &mut Outbox<E>) {
        let mut news = Vec::new();
        let sh = &mut self.shell;
        sh.links
            .handle_timeout(now, sh.view, &sh.cfg, &mut news, out);
        self.on_news(now, news, out);
        match &mut self.role {
            Role::Master(m) => {
                if let Err(why) = m.handle_timeout(now, &mut self.shell, out) {
                    self.step_down(now, why, out);
                }
            }
            Role::Follower(f) => {
                if f.election_due(now) {
                    self.campaign(now, out);
                }
            }
            Role::Candidate(c) => {
                if c.election_due(now) {
                    self.campaign(now, out);
                }
            }
        }
    }

    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let role = match &self.role {
            Role::Master(m) => m.poll_timeout(&self.shell),
            Role::Follower(f) => Some(f.election_at()),
            Role::Candidate(c) => Some(c.election_at()),
        };
        earliest(role, self.shell.links.poll_timeout(&self.shell.cfg))
    }

    fn on_news<E: From<ReplicaEvent>>(
        &mut self,
        now: Timestamp,
        news: Vec<LinkNews>,
        out: &mut Outbox<E>,
    ) {
        for n in news {
            match n {
                LinkNews::Up(peer) => {
                    out.event(ReplicaEvent::LinkUp { peer }.into());
                    match &mut self.role {
                        Role::Master(m) => m.link_up(now, peer, &mut self.shell, out),
                        Role::Follower(f) => f.link_up(now, peer, &mut self.shell, out),
                        Role::Candidate(c) => c.link_up(now, peer, &mut self.shell, out),
                    }
                }
                LinkNews::Down { peer, why } => {
                    out.event(ReplicaEvent::LinkDown { peer, why }.into());
                    if let Role::Follower(f) = &mut self.role {
                        let soon = self.shell.cfg.heartbeat;
                        let jitter = self.shell.entropy.next_u64() % soon.as_micros().max(1) as u64;
                        f.link_down(now, peer, Duration::from_micros(jitter));
                    }
                }
            }
        }
    }

    fn on_msg<E: From<ReplicaEvent>>(
        &mut self,
        now: Timestamp,
        peer: u32,
        msg: ReplicaMsg,
        out: &mut Outbox<E>,
    ) {
        if let Some(v) = msg.view() {
            if v > self.shell.view {
                // A later view exists: whatever this server was doing in
                // its own is over (Raft: a higher term always wins).
                self.adopt_view(now, v, out);
            }
        }
        let view = self.shell.view;
        match msg {
            ReplicaMsg::Vote {
                view: v,
                last_index,
                last_view,
                pre,
            } => {
                let live_master = match &self.role {
                    Role::Master(_) => true,
                    Role::Follower(f) => f.has_live_master(now, &self.shell),
                    Role::Candidate(_) => false,
                };
                let ask = election::Ask {
                    from: peer,
                    view: v,
                    last_index,
                    last_view,
                };
                let granted = election::answer(now, ask, pre, live_master, &mut self.shell, out);
                if granted && !pre {
                    if let Role::Follower(f) = &mut self.role {
                        let timeout = self.shell.election_timeout();
                        f.voted(now + timeout);
                    }
                }
            }
            ReplicaMsg::VoteReply {
                view: v,
                granted,
                pre,
            } => {
                if let Role::Candidate(c) = &mut self.role {
                    match c.on_reply(peer, v, granted, pre, &self.shell) {
                        election::Tally::Waiting => {}
                        election::Tally::PreVoteWon => self.stand(now, out),
                        election::Tally::Won => self.take_office(now, out),
                    }
                }
            }
            ReplicaMsg::Append {
                view: v,
                prev_index,
                prev_view,
                entries,
                commit,
                last,
                seq,
            } => {
                if v < view {
                    let reply = ReplicaMsg::AppendReply {
                        view,
                        ok: false,
                        matched: 0,
                        seq,
                    };
                    self.shell.send(now, peer, &reply, out);
                    return;
                }
                if !matches!(self.role, Role::Follower(_)) {
                    if matches!(self.role, Role::Master(_)) {
                        // Two masters of one view cannot be: one of them
                        // is lying. Keep away from it.
                        let what = format!("a second master {peer} of view {v}");
                        return self.refuse_peer(now, peer, what, out);
                    }
                    self.become_follower(now);
                }
                if let Role::Follower(f) = &mut self.role {
                    let append = follower::Append {
                        prev_index,
                        prev_view,
                        entries,
                        commit,
                        last,
                        seq,
                    };
                    let timeout = self.shell.election_timeout();
                    if let Err(what) = f.on_append(now, peer, append, timeout, &mut self.shell, out)
                    {
                        self.refuse_peer(now, peer, what, out);
                    }
                }
            }
            ReplicaMsg::AppendReply {
                view: v,
                ok,
                matched,
                seq,
            } if v == view => {
                if let Role::Master(m) = &mut self.role {
                    m.on_reply(now, peer, ok, matched, seq, &mut self.shell, out);
                }
            }
            ReplicaMsg::Forward { origin, txn, .. } => {
                // A server may only forward its own clients' transactions.
                if origin.server != peer {
                    return;
                }
                if let Role::Master(m) = &mut self.role {
                    m.propose(now, origin, txn, &mut self.shell, out);
                }
                // Not the master: the sender forwards again to whoever
                // is, once it knows.
            }
            ReplicaMsg::StatusAsk { id } => {
                self.shell
                    .status
                    .push(status::StatusNews::Asked { peer, id });
            }
            ReplicaMsg::StatusReply { id, report } => {
                let news = status::StatusNews::Answered { peer, id, report };
                self.shell.status.push(news);
            }
            ReplicaMsg::ReadIndex { id, .. } => {
                if let Role::Master(m) = &mut self.role {
                    m.confirm_read(now, leader::ReadFor::Peer(peer, id), &mut self.shell, out);
                }
            }
            ReplicaMsg::ReadIndexReply {
                view: v,
                id,
                commit,
            } if v == view => {
                if let Role::Follower(f) = &mut self.role {
                    f.on_read_index(peer, id, commit, &mut self.shell, out);
                }
            }
            _ => {}
        }
    }

    /// Moves to view `v`, as a follower of nobody yet.
    fn adopt_view<E: From<ReplicaEvent>>(&mut self, now: Timestamp, v: u64, out: &mut Outbox<E>) {
        if let Role::Master(_) = self.role {
            let why = format!("view {v} began");
            out.event(
                ReplicaEvent::SteppedDown {
                    view: self.shell.view,
                    why,
                }
                .into(),
            );
        }
        self.shell.view = v;
        self.shell.vote = None;
        self.shell.persist_meta(Vec::new(), out);
        self.become_follower(now);
    }

    /// Refuses `peer` for breaking a rule (`what`) and drops its link.
    fn refuse_peer<E: From<ReplicaEvent>>(
        &mut self,
        now: Timestamp,
        peer: u32,
        what: String,
        out: &mut Outbox<E>,
    ) {
        let sh = &mut self.shell;
        let mut news = Vec::new();
        let reason = Refusal::Unexpected { what };
        sh.links
            .drop_link(now, peer, reason, &sh.cfg, &mut news, out);
        self.on_news(now, news, out);
    }

    fn become_follower(&mut self, now: Timestamp) {
        let timeout = self.shell.election_timeout();
        self.role = Role::Follower(Follower::new(now + timeout));
    }

    fn step_down<E: From<ReplicaEvent>>(
        &mut self,
        now: Timestamp,
        why: String,
        out: &mut Outbox<E>,
    ) {
        out.event(
            ReplicaEvent::SteppedDown {
                view: self.shell.view,
                why,
            }
            .into(),
        );
        self.become_follower(now);
    }

    /// No master heard for a while: ask the others whether they would
    /// elect this server (pre-vote), without changing anything yet.
    fn campaign<E: From<ReplicaEvent>>(&mut self, now: Timestamp, out: &mut Outbox<E>) {
        let timeout = self.shell.election_timeout();
        let (c, won) = Candidate::pre_vote(now, now + timeout, &mut self.shell, out);
        self.role = Role::Candidate(c);
        if won {
            self.stand(now, out);
        }
    }

    /// A majority would elect us: move to the next view, vote for
    /// ourselves, and once that is durable, ask for real.
    fn stand<E: From<ReplicaEvent>>(&mut self, now: Timestamp, out: &mut Outbox<E>) {
        let timeout = self.shell.election_timeout();
        let (c, won) = Candidate::stand(now + timeout, &mut self.shell, out);
        self.role = Role::Candidate(c);
        if won {
            self.take_office(now, out);
        }
    }

    fn take_office<E: From<ReplicaEvent>>(&mut self, now: Timestamp, out: &mut Outbox<E>) {
        out.event(
            ReplicaEvent::Elected {
                view: self.shell.view,
            }
            .into(),
        );
        self.role = Role::Master(Master::elected(now, &mut self.shell, out));
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
mod attrs_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod v6;

/// A result as a trace tells it: a batch's as how many files had each
/// result (`Files(230 FileStored, 2 FileExists)`), not one word per file.
fn described(result: &TxnResult) -> String {
    let each: Vec<&TxnResult> = match result {
        TxnResult::Files(each) => each.iter().collect(),
        TxnResult::FilesOf(each) => each.iter().map(|f| &f.result).collect(),
        other => return format!("{other:?}"),
    };
    let mut counts: Vec<(String, usize)> = Vec::new();
    for r in each {
        let r = format!("{r:?}");
        match counts.iter_mut().find(|(k, _)| *k == r) {
            Some((_, n)) => *n += 1,
            None => counts.push((r, 1)),
        }
    }
    let said: Vec<String> = counts.iter().map(|(r, n)| format!("{n} {r}")).collect();
    format!("Files({})", said.join(", "))
}
