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

pub mod catalogue;
pub mod entry;
pub mod messages;
pub mod state;

use crate::auth::ClusterSecret;
use crate::balancer::ServerAddr;
use crate::entropy::Entropy;
use crate::frame::{self, FrameDecoder};
use crate::io::ConnId;
use crate::outbox::{drain_messages, Outbox};
use crate::refusal::{Refusal, PROTOCOL_VERSION};
use crate::store::{Batch, Recovered, Write};
use crate::time::{earliest, Timestamp};
use entry::{Entry, Origin, Txn, TxnResult};
use messages::ReplicaMsg;
use state::State;
use std::collections::{BTreeMap, BTreeSet};
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

struct Progress {
    conn: Option<ConnId>,
    durable: u64,
    /// Next index to send on `conn`.
    next: u64,
    last_heard: Timestamp,
}

enum PeerStage {
    Challenged {
        from: u32,
        last: u64,
        nonce: [u8; 16],
    },
    Live {
        from: u32,
    },
}

struct PeerConn {
    decoder: FrameDecoder,
    stage: PeerStage,
    deadline: Timestamp,
}

struct Master {
    followers: BTreeMap<u32, Progress>,
    conns: BTreeMap<ConnId, PeerConn>,
    next_heartbeat: Timestamp,
    /// Origins logged but not yet applied (dedup of forwarded retries).
    in_log: BTreeSet<Origin>,
}

enum Link {
    Down { retry_at: Timestamp },
    Connecting { conn: ConnId },
    Joining { conn: ConnId },
    Live { conn: ConnId },
}

struct Follower {
    link: Link,
    decoder: FrameDecoder,
    last_heard: Timestamp,
    master_last: u64,
    master_commit: u64,
    pending: BTreeMap<Origin, Txn>,
    next_dial: u64,
    /// Read-index questions asked (id → the master's answer, once it came).
    read_indexes: BTreeMap<u64, Option<u64>>,
    next_read: u64,
    /// The master's log end when it last welcomed us (see
    /// [`Replica::past_is_settled`]).
    welcomed_at: Option<u64>,
}

enum Role {
    Master(Master),
    Follower(Follower),
}

pub struct Replica {
    cfg: ReplicaConfig,
    secret: ClusterSecret,
    entropy: Entropy,
    view: u64,
    log: Vec<Entry>,
    durable: u64,
    commit: u64,
    applied: u64,
    applied_durable: u64,
    state: State,
    inflight: BTreeMap<u64, AfterPersist>,
    next_token: u64,
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
            Role::Master(Master {
                followers: BTreeMap::new(),
                conns: BTreeMap::new(),
                next_heartbeat: now + cfg.heartbeat,
                in_log: log[rec.applied as usize..]
                    .iter()
                    .map(|e| e.origin)
                    .collect(),
            })
        } else {
            Role::Follower(Follower {
                link: Link::Down { retry_at: now },
                decoder: FrameDecoder::default(),
                last_heard: now,
                master_last: 0,
                master_commit: 0,
                pending: BTreeMap::new(),
                next_dial: 0,
                read_indexes: BTreeMap::new(),
                next_read: 0,
                welcomed_at: None,
            })
        };
        let durable = log.len() as u64;
        Ok(Replica {
            cfg,
            secret,
            entropy,
            view: rec.view.max(FIRST_VIEW),
            log,
            durable,
            commit: rec.applied,
            applied: rec.applied,
            applied_durable: rec.applied,
            state,
            inflight: BTreeMap::new(),
            next_token: 0,
            role,
        })
    }

    /// What a recovered replica does before any input: a master commits
    /// what is already durable on a majority. That matters to a cluster of
    /// one, whose own durable log is a majority: entries appended but not
    /// applied before a crash would otherwise wait for the next proposal.
    pub fn resume<E: From<ReplicaEvent>>(&mut self, now: Timestamp, out: &mut Outbox<E>) {
        self.advance_commit(now, out);
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// Every other server of the cluster.
    pub fn peers(&self) -> &[ServerAddr] {
        &self.cfg.peers
    }

    pub fn is_master(&self) -> bool {
        matches!(self.role, Role::Master(_))
    }

    pub fn log(&self) -> &[Entry] {
        &self.log
    }

    pub fn indexes(&self) -> Indexes {
        Indexes {
            durable: self.durable,
            commit: self.commit,
            applied: self.applied_durable,
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
            Role::Follower(f) => {
                matches!(f.link, Link::Live { .. })
                    && now.saturating_since(f.last_heard) < self.cfg.heartbeat * 2
                    && self.applied_durable >= f.master_commit
            }
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
    /// join closes the link before it (see `master_on_msg`), so every
    /// forward of the previous run that the master will ever take was
    /// taken before the welcome; one it took but had not made durable is
    /// lost with a master crash, and the next welcome moves the mark.
    pub fn past_is_settled(&self) -> bool {
        match &self.role {
            Role::Master(_) => true,
            Role::Follower(f) => f
                .welcomed_at
                .is_some_and(|last| self.applied_durable >= last),
        }
    }

    /// Asks the master for its commit index, so that a read can wait until
    /// this server has applied every write acknowledged anywhere before now.
    /// `None` if there is no master to ask (the read cannot be confirmed).
    /// The master itself needs no question: its own state is the newest.
    pub fn ask_read_index<E>(&mut self, out: &mut Outbox<E>) -> Option<u64> {
        let Role::Follower(f) = &mut self.role else {
            return Some(u64::MAX);
        };
        let Link::Live { conn } = f.link else {
            return None;
        };
        let id = f.next_read;
        f.next_read += 1;
        f.read_indexes.insert(id, None);
        out.send(
            conn,
            &ReplicaMsg::ReadIndex {
                view: self.view,
                id,
            },
        );
        Some(id)
    }

    /// True once read `id` may proceed: the master answered and this server
    /// has applied up to its answer.
    pub fn read_index_ready(&self, id: u64) -> bool {
        match &self.role {
            Role::Master(_) => true,
            Role::Follower(f) => matches!(
                f.read_indexes.get(&id),
                Some(Some(commit)) if self.applied_durable >= *commit
            ),
        }
    }

    /// Forgets read `id` (done, or given up).
    pub fn forget_read_index(&mut self, id: u64) {
        if let Role::Follower(f) = &mut self.role {
            f.read_indexes.remove(&id);
        }
    }

    /// True if `conn` belongs to replication.
    pub fn owns(&self, conn: ConnId) -> bool {
        match &self.role {
            Role::Master(m) => m.conns.contains_key(&conn),
            Role::Follower(f) => f.conn() == Some(conn),
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
            Role::Master(_) => {
                self.propose(now, origin, txn, out);
                Ok(())
            }
            Role::Follower(f) => {
                if f.pending.len() >= self.cfg.max_pending {
                    return Err(SubmitError::Backlogged);
                }
                if let Link::Live { conn } = f.link {
                    let msg = ReplicaMsg::Forward {
                        view: self.view,
                        origin,
                        txn: txn.clone(),
                    };
                    out.send(conn, &msg);
                }
                f.pending.insert(origin, txn);
                Ok(())
            }
        }
    }

    fn propose<E: From<ReplicaEvent>>(
        &mut self,
        now: Timestamp,
        origin: Origin,
        txn: Txn,
        out: &mut Outbox<E>,
    ) {
        let Role::Master(m) = &mut self.role else {
            return;
        };
        if m.in_log.contains(&origin) || self.state.has_applied(&origin) {
            // A retry of something already ordered: the origin server will
            // see the first copy when it applies the log.
            return;
        }
        m.in_log.insert(origin);
        let entry = Entry {
            index: self.log.len() as u64 + 1,
            view: self.view,
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
        self.log.push(entry);
        self.persist(batch, AfterPersist::Appended { upto }, out);
        self.stream_to_followers(out);
    }

    fn persist<E>(&mut self, batch: Batch, after: AfterPersist, out: &mut Outbox<E>) {
        let token = self.next_token;
        self.next_token += 1;
        self.inflight.insert(token, after);
        out.persist(token, batch);
    }

    /// A batch is durable. Returns this server's clients' results that are
    /// now applied, in log order.
    pub fn on_persisted<E: From<ReplicaEvent>>(
        &mut self,
        now: Timestamp,
        token: u64,
        out: &mut Outbox<E>,
    ) -> Delivered {
        match self.inflight.remove(&token) {
            None => Vec::new(),
            Some(AfterPersist::Appended { upto }) => {
                self.durable = self.durable.max(upto);
                match &self.role {
                    Role::Master(_) => self.advance_commit(now, out),
                    Role::Follower(f) => {
                        if let Link::Live { conn } = f.link {
                            let msg = ReplicaMsg::PrepareOk {
                                view: self.view,
                                durable: self.durable,
                            };
                            out.send(conn, &msg);
                        }
                    }
                }
                Vec::new()
            }
            Some(AfterPersist::Applied { upto, results }) => {
                self.applied_durable = self.applied_durable.max(upto);
                results
            }
        }
    }

    /// Master: the highest index durable on a majority becomes committed.
    fn advance_commit<E: From<ReplicaEvent>>(&mut self, now: Timestamp, out: &mut Outbox<E>) {
        let Role::Master(m) = &self.role else {
            return;
        };
        let mut durable: Vec<u64> = m.followers.values().map(|p| p.durable).collect();
        durable.resize(self.cfg.peers.len(), 0);
        durable.push(self.durable);
        durable.sort_unstable_by(|a, b| b.cmp(a));
        let majority = self.cfg.cluster_size() / 2 + 1;
        let candidate = durable[majority - 1].min(self.log.len() as u64);
        if candidate > self.commit {
            self.commit = candidate;
            out.event(ReplicaEvent::Committed { index: candidate }.into());
            self.apply_committed(out);
            self.broadcast_heartbeat(now, out);
        }
    }

    fn apply_committed<E: From<ReplicaEvent>>(&mut self, out: &mut Outbox<E>) {
        let upto = self.commit.min(self.log.len() as u64);
        if upto <= self.applied {
            return;
        }
        let mut batch = Batch::default();
        let mut results = Vec::new();
        for i in self.applied + 1..=upto {
            let entry = &self.log[(i - 1) as usize];
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
            match &mut self.role {
                Role::Master(m) => {
                    m.in_log.remove(&origin);
                }
                Role::Follower(f) => {
                    f.pending.remove(&origin);
                }
            }
            if origin.server == self.cfg.me {
                results.push(Delivery { origin, result });
            }
        }
        batch.push(Write::SetApplied { index: upto });
        self.applied = upto;
        self.persist(batch, AfterPersist::Applied { upto, results }, out);
    }

    fn stream_to_followers<E>(&mut self, out: &mut Outbox<E>) {
        let Role::Master(m) = &mut self.role else {
            return;
        };
        for p in m.followers.values_mut() {
            let Some(conn) = p.conn else { continue };
            while p.next <= self.log.len() as u64 {
                let start = (p.next - 1) as usize;
                let end = (start + self.cfg.batch_max).min(self.log.len());
                let msg = ReplicaMsg::Prepare {
                    view: self.view,
                    entries: self.log[start..end].to_vec(),
                    commit: self.commit,
                };
                out.send(conn, &msg);
                p.next = end as u64 + 1;
            }
        }
    }

    fn broadcast_heartbeat<E>(&mut self, now: Timestamp, out: &mut Outbox<E>) {
        let Role::Master(m) = &mut self.role else {
            return;
        };
        m.next_heartbeat = now + self.cfg.heartbeat;
        let msg = ReplicaMsg::Heartbeat {
            view: self.view,
            last: self.log.len() as u64,
            commit: self.commit,
        };
        for p in m.followers.values() {
            if let Some(conn) = p.conn {
                out.send(conn, &msg);
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
            return refuse(conn, Refusal::Unexpected { what }, out);
        };
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
            Ok(ReplicaMsg::Join { from, last, .. })
                if self.cfg.peers.iter().any(|p| p.id == from) =>
            {
                (from, last)
            }
            Ok(other) => {
                let what = format!("{other:?}");
                return refuse(conn, Refusal::Unexpected { what }, out);
            }
        };
        out.send(conn, &ReplicaMsg::Challenge { nonce });
        m.conns.insert(
            conn,
            PeerConn {
                decoder,
                stage: PeerStage::Challenged { from, last, nonce },
                deadline: now + self.cfg.dead_after,
            },
        );
    }

    pub fn on_connected<E: From<ReplicaEvent>>(&mut self, conn: ConnId, out: &mut Outbox<E>) {
        let Role::Follower(f) = &mut self.role else {
            return;
        };
        if let Link::Connecting { conn: c } = f.link {
            if c == conn {
                f.link = Link::Joining { conn };
                let msg = ReplicaMsg::Join {
                    version: PROTOCOL_VERSION,
                    from: self.cfg.me,
                    last: self.log.len() as u64,
                };
                out.send(conn, &msg);
            }
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
            Role::Master(m) => {
                if let Some(pc) = m.conns.remove(&conn) {
                    if let PeerStage::Live { from } = pc.stage {
                        if let Some(p) = m.followers.get_mut(&from) {
                            if p.conn == Some(conn) {
                                p.conn = None;
                            }
                        }
                        let why = why.to_string();
                        out.event(ReplicaEvent::FollowerLost { id: from, why }.into());
                    }
                }
            }
            Role::Follower(f) => {
                if f.conn() == Some(conn) {
                    f.link = Link::Down {
                        retry_at: now + self.cfg.reconnect_after,
                    };
                    let why = why.to_string();
                    out.event(ReplicaEvent::MasterLost { why }.into());
                }
            }
        }
    }

    pub fn on_bytes<E: From<ReplicaEvent>>(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        bytes: &[u8],
        out: &mut Outbox<E>,
    ) {
        let mut msgs = Vec::new();
        let decoded = match &mut self.role {
            Role::Master(m) => match m.conns.get_mut(&conn) {
                Some(pc) => {
                    pc.decoder.push(bytes);
                    drain_messages::<ReplicaMsg>(&mut pc.decoder, &mut msgs)
                }
                None => return,
            },
            Role::Follower(f) => {
                if f.conn() != Some(conn) {
                    return;
                }
                f.decoder.push(bytes);
                drain_messages::<ReplicaMsg>(&mut f.decoder, &mut msgs)
            }
        };
        for msg in msgs {
            if !self.owns(conn) {
                return;
            }
            match self.role {
                Role::Master(_) => self.master_on_msg(now, conn, msg, out),
                Role::Follower(_) => self.follower_on_msg(now, conn, msg, out),
            }
        }
        if let Err(e) = decoded {
            let detail = e.to_string();
            self.drop_conn(now, conn, Refusal::Malformed { detail }, out);
        }
    }

    fn drop_conn<E: From<ReplicaEvent>>(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        reason: Refusal,
        out: &mut Outbox<E>,
    ) {
        if !self.owns(conn) {
            return;
        }
        let why = reason.to_string();
        refuse(conn, reason, out);
        self.on_closed(now, conn, &why, out);
    }

    fn master_on_msg<E: From<ReplicaEvent>>(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        msg: ReplicaMsg,
        out: &mut Outbox<E>,
    ) {
        let Role::Master(m) = &mut self.role else {
            return;
        };
        let Some(pc) = m.conns.get_mut(&conn) else {
            return;
        };
        match (&pc.stage, msg) {
            (PeerStage::Challenged { from, last, nonce }, ReplicaMsg::Proof { mac }) => {
                let (from, last) = (*from, *last);
                let want = self.secret.peer_proof(from, self.cfg.me, nonce);
                if blake3::Hash::from(want) != blake3::Hash::from(mac) {
                    return self.drop_conn(now, conn, Refusal::BadCode, out);
                }
                pc.stage = PeerStage::Live { from };
                let old = m.followers.insert(
                    from,
                    Progress {
                        conn: Some(conn),
                        durable: 0,
                        next: last.min(self.log.len() as u64) + 1,
                        last_heard: now,
                    },
                );
                if let Some(old_conn) = old.and_then(|p| p.conn) {
                    m.conns.remove(&old_conn);
                    out.close(old_conn);
                }
                out.event(ReplicaEvent::FollowerJoined { id: from, last }.into());
                let welcome = ReplicaMsg::Welcome {
                    view: self.view,
                    last: self.log.len() as u64,
                    commit: self.commit,
                };
                out.send(conn, &welcome);
                self.stream_to_followers(out);
            }
            (PeerStage::Live { from }, ReplicaMsg::PrepareOk { view, durable })
                if view == self.view =>
            {
                let from = *from;
                if let Some(p) = m.followers.get_mut(&from) {
                    p.durable = p.durable.max(durable.min(self.log.len() as u64));
                    p.last_heard = now;
                }
                self.advance_commit(now, out);
            }
            (PeerStage::Live { from }, ReplicaMsg::ReadIndex { view, id }) if view == self.view => {
                if let Some(p) = m.followers.get_mut(from) {
                    p.last_heard = now;
                }
                let reply = ReplicaMsg::ReadIndexReply {
                    view: self.view,
                    id,
                    commit: self.commit,
                };
                out.send(conn, &reply);
            }
            (PeerStage::Live { from }, ReplicaMsg::Forward { view, origin, txn })
                if view == self.view =>
            {
                if let Some(p) = m.followers.get_mut(from) {
                    p.last_heard = now;
                }
                // A server may only forward its own clients' transactions.
                if origin.server != *from {
                    let what = "forward for another server's client".into();
                    return self.drop_conn(now, conn, Refusal::Unexpected { what }, out);
                }
                self.propose(now, origin, txn, out);
            }
            (_, other) => {
                let what = format!("{other:?}");
                self.drop_conn(now, conn, Refusal::Unexpected { what }, out);
            }
        }
    }

    fn follower_on_msg<E: From<ReplicaEvent>>(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        msg: ReplicaMsg,
        out: &mut Outbox<E>,
    ) {
        let Role::Follower(f) = &mut self.role else {
            return;
        };
        f.last_heard = now;
        match (&f.link, msg) {
            (Link::Joining { .. }, ReplicaMsg::Challenge { nonce }) => {
                let mac = self.secret.peer_proof(self.cfg.me, self.cfg.master, &nonce);
                out.send(conn, &ReplicaMsg::Proof { mac });
            }
            (Link::Joining { .. }, ReplicaMsg::Welcome { view, last, commit }) => {
                self.view = self.view.max(view);
                f.link = Link::Live { conn };
                f.master_last = last;
                f.master_commit = commit;
                f.welcomed_at = Some(last);
                out.event(ReplicaEvent::JoinedMaster { last, commit }.into());
                // Questions lost with the old link are asked again.
                f.ask_again(conn, self.view, out);
                for (origin, txn) in &f.pending {
                    let msg = ReplicaMsg::Forward {
                        view: self.view,
                        origin: *origin,
                        txn: txn.clone(),
                    };
                    out.send(conn, &msg);
                }
                let ok = ReplicaMsg::PrepareOk {
                    view: self.view,
                    durable: self.durable,
                };
                out.send(conn, &ok);
            }
            (
                Link::Live { .. },
                ReplicaMsg::Prepare {
                    view,
                    entries,
                    commit,
                },
            ) if view == self.view => {
                self.on_prepare(now, conn, entries, commit, out);
            }
            (Link::Live { .. }, ReplicaMsg::Heartbeat { view, last, .. })
                if view == self.view && last > self.log.len() as u64 =>
            {
                // Every Prepare was sent before this heartbeat on the same
                // ordered link, so entries we lack were lost on the way (a
                // partition drops messages without breaking the link):
                // rejoin, and the master streams from our log end.
                let what = format!("missed entries {}..={last}", self.log.len() + 1);
                self.drop_conn(now, conn, Refusal::Unexpected { what }, out);
            }
            (Link::Live { .. }, ReplicaMsg::Heartbeat { view, last, commit })
                if view == self.view =>
            {
                f.master_last = last;
                f.master_commit = commit;
                let ok = ReplicaMsg::PrepareOk {
                    view: self.view,
                    durable: self.durable,
                };
                out.send(conn, &ok);
                // A question still unanswered after a heartbeat was lost (a
                // partition can drop messages of a link that survives it).
                f.ask_again(conn, self.view, out);
                self.learn_commit(commit, out);
            }
            (Link::Live { .. }, ReplicaMsg::ReadIndexReply { view, id, commit })
                if view == self.view =>
            {
                if let Some(slot) = f.read_indexes.get_mut(&id) {
                    *slot = Some(commit);
                }
                self.learn_commit(commit, out);
            }
            (_, ReplicaMsg::Refused(reason)) => {
                let why = format!("master refused: {reason}");
                out.close(conn);
                self.on_closed(now, conn, &why, out);
            }
            (_, other) => {
                let what = format!("{other:?}");
                self.drop_conn(now, conn, Refusal::Unexpected { what }, out);
            }
        }
    }

    fn on_prepare<E: From<ReplicaEvent>>(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        entries: Vec<Entry>,
        commit: u64,
        out: &mut Outbox<E>,
    ) {
        let mut batch = Batch::default();
        for e in entries {
            let len = self.log.len() as u64;
            if e.index <= len {
                // Already held. With a fixed master the copies agree; a
                // differing copy means our suffix is not the master's.
                if self.log[(e.index - 1) as usize] == e {
                    continue;
                }
                if e.index <= self.applied {
                    let what = format!("master rewrote applied entry {}", e.index);
                    return self.drop_conn(now, conn, Refusal::Unexpected { what }, out);
                }
                self.log.truncate((e.index - 1) as usize);
                self.durable = self.durable.min(e.index - 1);
                batch.push(Write::TruncateFrom { from: e.index });
            } else if e.index != len + 1 {
                let what = format!("gap: expected entry {}, got {}", len + 1, e.index);
                return self.drop_conn(now, conn, Refusal::Unexpected { what }, out);
            }
            batch.push(Write::Append {
                index: e.index,
                entry: e.write_bytes(),
            });
            self.log.push(e);
        }
        if !batch.is_empty() {
            let upto = self.log.len() as u64;
            self.persist(batch, AfterPersist::Appended { upto }, out);
        }
        self.learn_commit(commit, out);
    }

    fn learn_commit<E: From<ReplicaEvent>>(&mut self, commit: u64, out: &mut Outbox<E>) {
        let commit = commit.min(self.log.len() as u64);
        if commit > self.commit {
            self.commit = commit;
            self.apply_committed(out);
        }
    }

    pub fn handle_timeout<E: From<ReplicaEvent>>(&mut self, now: Timestamp, out: &mut Outbox<E>) {
        match &mut self.role {
            Role::Master(m) => {
                let late: Vec<ConnId> = m
                    .conns
                    .iter()
                    .filter(|(_, pc)| match pc.stage {
                        PeerStage::Challenged { .. } => pc.deadline <= now,
                        PeerStage::Live { from } => m.followers.get(&from).is_some_and(|p| {
                            now.saturating_since(p.last_heard) >= self.cfg.dead_after
                        }),
                    })
                    .map(|(c, _)| *c)
                    .collect();
                for conn in late {
                    let step = "a follower's message".into();
                    self.drop_conn(now, conn, Refusal::Timeout { step }, out);
                }
                if let Role::Master(m) = &self.role {
                    if m.next_heartbeat <= now {
                        self.broadcast_heartbeat(now, out);
                    }
                }
            }
            Role::Follower(f) => match f.link {
                Link::Down { retry_at } if retry_at <= now => {
                    let conn = ConnId::dialed(REPLICA_DIALS | f.next_dial);
                    f.next_dial += 1;
                    f.link = Link::Connecting { conn };
                    f.decoder = FrameDecoder::default();
                    f.last_heard = now;
                    if let Some(m) = self.cfg.peers.iter().find(|p| p.id == self.cfg.master) {
                        out.connect(conn, m.addr.clone());
                    }
                }
                Link::Connecting { conn } | Link::Joining { conn } | Link::Live { conn }
                    if now.saturating_since(f.last_heard) >= self.cfg.dead_after =>
                {
                    let step = "the master".into();
                    self.drop_conn(now, conn, Refusal::Timeout { step }, out);
                }
                _ => {}
            },
        }
    }

    pub fn poll_timeout(&self) -> Option<Timestamp> {
        match &self.role {
            Role::Master(m) => {
                let beat = (!m.conns.is_empty()).then_some(m.next_heartbeat);
                let dead = m
                    .conns
                    .values()
                    .map(|pc| match pc.stage {
                        PeerStage::Challenged { .. } => pc.deadline,
                        PeerStage::Live { from } => m
                            .followers
                            .get(&from)
                            .map_or(pc.deadline, |p| p.last_heard + self.cfg.dead_after),
                    })
                    .min();
                earliest(beat, dead)
            }
            Role::Follower(f) => Some(match f.link {
                Link::Down { retry_at } => retry_at,
                _ => f.last_heard + self.cfg.dead_after,
            }),
        }
    }
}

/// Dial numbers of replication connections; the top bit keeps them apart
/// from the dials of other parts of a server.
pub const REPLICA_DIALS: u64 = 1 << 62;

impl Follower {
    /// Asks again every read-index question not answered yet.
    fn ask_again<E>(&self, conn: ConnId, view: u64, out: &mut Outbox<E>) {
        for (id, _) in self.read_indexes.iter().filter(|(_, a)| a.is_none()) {
            out.send(conn, &ReplicaMsg::ReadIndex { view, id: *id });
        }
    }

    fn conn(&self) -> Option<ConnId> {
        match self.link {
            Link::Down { .. } => None,
            Link::Connecting { conn } | Link::Joining { conn } | Link::Live { conn } => Some(conn),
        }
    }
}

fn refuse<E>(conn: ConnId, reason: Refusal, out: &mut Outbox<E>) {
    out.send(conn, &ReplicaMsg::Refused(reason));
    out.close(conn);
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
