//! A file server: answers the balancer's probes, runs client sessions,
//! stores and serves file content, and takes part in master replication.
//!
//! One listener serves every link; the first frame's tag says which link a
//! connection speaks (probe, session, blob fetch or replication).
//!
//! # Parts
//!
//! [`Server`] is the [`Node`]: it composes the parts below and routes each
//! input to the part it concerns. Each part is a struct that owns its
//! state, in its own file with its messages beside it, and is driven by
//! calls that are handed what else they act on (the replica, the outbox,
//! or a small context of the parts it uses):
//!
//! - `sessions` (`Sessions`): client connections, from the
//!   balancer's probe to the HELLO handshake and the login every session
//!   must prove in time; each session's stage and the operation it runs;
//!   answering, and ordering transactions through the master on a
//!   session's behalf. It keeps the auth codes spent here
//!   (`spent_codes`) and counts connections per source address
//!   (`source_caps`).
//! - `accounts` (`Accounts`): register, log in, log out, who
//!   am I; session tokens; the login limiter; confirming reads with the
//!   master's read index.
//! - `user_files` (`UserFiles`): the file operations of a
//!   session on the replicated catalogue (upload, download, list, share,
//!   unshare, delete), as the session's proven user.
//! - `blobs` (`BlobStore`): content named by its BLAKE3 digest;
//!   fetching it from other servers and serving it to them; collecting
//!   what nothing names.
//! - `scrub` (`Scrubber`): checking a blob a receiver found
//!   damaged.
//! - `peer_links` (`PeerLinks`) and `sync_links` (`SyncLinks`): the
//!   sessions of registered peers (REGISTER OK, UPDATE, renewals) and what
//!   they are told of SYNC rounds; both leaves, driven by `mod.rs`.
//! - [`Replica`] (`crate::replication`): the replicated log and state.
//!
//! Which part uses which (an arrow reads "uses"); there are no circles. The
//! blob store does not know the sessions (downloads waiting for a fetch
//! hear of it through the `blobs::Waiting` trait, which the user files
//! implement), and scrubbing knows nothing of the blob store (it reads
//! through the handles it is given and returns verdicts):
//!
//! ```text
//!                          Server
//!    ┌──────────────┬────────┼─────────────┐
//!    ▼              │        ▼             ▼
//!  user_files ──────┼──► accounts        blobs ◄──┐
//!    │  │  │        │        │             │      │
//!    │  │  │        ▼        │             ▼      │
//!    │  │  └───► sessions ◄──┘           scrub    │
//!    │  │          │  │                    ▲      │
//!    │  │          ▼  ▼                    │      │
//!    │  │ spent_codes source_caps          │      │
//!    │  └──────────────────────────────────┘      │
//!    └────────────────────────────────────────────┘
//! ```
//!
//! As a list: Server → sessions, accounts, user_files, blobs;
//! user_files → sessions, accounts, blobs, scrub; accounts → sessions;
//! sessions → spent_codes, source_caps; blobs → scrub; scrub → nothing.
//! Every part may
//! also use the leaves `config` ([`ServerConfig`]), `messages` and `event`
//! ([`ServerEvent`], which uses `messages` and `scrub` for what it shows);
//! none uses `mod.rs`.

mod accounts;
mod blobs;
mod config;
mod copies;
mod downloads;
mod event;
pub mod messages;
mod partials;
mod peer_links;
mod read_gate;
pub mod scrub;
mod sessions;
mod source_caps;
mod spent_codes;
pub mod status;
mod sync_links;
mod uploads;
mod user_files;

use crate::auth::ClusterSecret;
use crate::balancer::messages::{BALANCER_TAGS, PROBE_TAGS};
use crate::entropy::Entropy;
use crate::io::{ConnId, Input, Node, Output};
pub use crate::names::{check_name, check_path, MAX_NAME};
use crate::outbox::Outbox;
use crate::refusal::Refusal;
use crate::replication::entry::{Origin, Txn, TxnResult};
use crate::replication::messages::REPLICA_TAGS;
use crate::replication::sync_round::Token;
use crate::replication::{Replica, ReplicaConfig};
use crate::store::Recovered;
use crate::time::{earliest, Timestamp};
use crate::tls::{ClusterRole, Identity};
use crate::transfer::TransferError;
use accounts::Accounts;
pub use blobs::{BlobMsg, BLOB_TAGS};
use blobs::{BlobStore, Owner, PUSH_TAG};
pub use config::ServerConfig;
use copies::{Copies, CopyNews};
pub use event::ServerEvent;
use messages::{FileOutcome, Landed};
pub use messages::{OpCode, OpError, Request, Response, SessionMsg, SESSION_TAGS};
use peer_links::PeerLinks;
use read_gate::ReadGate;
use sessions::{Due, Frame, Link, Routed, Sessions};
pub use source_caps::SourceCaps;
use std::collections::BTreeMap;
use sync_links::SyncLinks;
pub use sync_links::WRITING_EVERY as SYNC_WRITING_EVERY;
use user_files::UserFiles;

pub struct Server {
    id: u32,
    /// One stream for the whole server (session ids, password salts,
    /// tokens), drawn in the order the inputs ask for it.
    entropy: Entropy,
    sessions: Sessions,
    accounts: Accounts,
    files: UserFiles,
    blobs: BlobStore,
    /// Copies of uploads to and from other servers.
    copies: Copies,
    /// Operations waiting until this server has applied what the master
    /// had committed when they arrived.
    gate: ReadGate,
    /// Answers to our uploads whose content this server lost (found
    /// damaged and removed) before it could answer: "stored" is said only
    /// once the content is back here, so that it vouches for this copy too.
    unvouched: BTreeMap<[u8; 32], Vec<(Origin, SessionMsg)>>,
    /// Sessions of registered peers (the tracker's side).
    peers: PeerLinks,
    /// What the peer sessions were told of SYNC rounds.
    syncs: SyncLinks,
    /// `ferry status` questions being gathered, and other servers' asked.
    status: status::Status,
    pub(crate) replica: Replica,
    out: Outbox<ServerEvent>,
}

impl Server {
    /// A server resuming from what its store recovered (empty when new).
    pub fn new(
        cfg: ServerConfig,
        replica: ReplicaConfig,
        secret: ClusterSecret,
        mut entropy: Entropy,
        recovered: &Recovered,
        now: Timestamp,
    ) -> Result<Self, String> {
        let replica_entropy = Entropy::from_seed(entropy.bytes());
        let peers: Vec<String> = replica.peers.iter().map(|p| p.addr.clone()).collect();
        let mut replica =
            Replica::recover(replica, secret.clone(), replica_entropy, recovered, now)?;
        let mut out = Outbox::default();
        replica.resume(now, &mut out);
        let mut server = Server {
            sessions: Sessions::new(&cfg, secret.clone(), &peers, now),
            accounts: Accounts::new(&cfg, secret.clone()),
            files: UserFiles::new(&cfg),
            gate: ReadGate::new(cfg.request_timeout),
            unvouched: BTreeMap::new(),
            peers: PeerLinks::new(cfg.id),
            syncs: SyncLinks::default(),
            status: status::Status::default(),
            copies: Copies::new(&cfg, secret.clone()),
            blobs: BlobStore::new(&cfg, secret, &recovered.blobs),
            id: cfg.id,
            entropy,
            replica,
            out,
        };
        // Fetch what the catalogue already applied names and the disk
        // lacks: a server whose log is complete may apply nothing new for a
        // long time. (What nothing names may have to wait: see
        // `BlobStore::resume`.)
        server.blobs.resume(now, &server.replica, &mut server.out);
        Ok(server)
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// Slots held by clients (established or mid-handshake). A probe's
    /// yes holds none.
    pub fn clients(&self) -> usize {
        self.sessions.clients()
    }

    /// The accounts, with what they act through.
    fn accounts(&mut self, now: Timestamp) -> (&mut Accounts, accounts::Ctx<'_>) {
        let Server {
            accounts,
            sessions,
            replica,
            entropy,
            out,
            ..
        } = self;
        let cx = accounts::Ctx {
            now,
            sessions,
            replica,
            entropy,
            out,
        };
        (accounts, cx)
    }

    /// The user files, with what they act through.
    fn files(&mut self, now: Timestamp) -> (&mut UserFiles, user_files::Ctx<'_>) {
        let Server {
            files,
            sessions,
            accounts,
            blobs,
            copies,
            replica,
            out,
            ..
        } = self;
        let cx = user_files::Ctx {
            now,
            sessions,
            accounts,
            blobs,
            copies,
            replica,
            out,
        };
        (files, cx)
    }

    /// Orders `txn` as if a session of ours had asked, past the read gate:
    /// for tests that need a master to hold an entry it cannot commit.
    #[cfg(test)]
    pub(crate) fn submit_for_test(
        &mut self,
        now: Timestamp,
        origin: Origin,
        txn: crate::replication::entry::Txn,
    ) {
        let _ = self.replica.submit(now, origin, txn, &mut self.out);
    }

    fn on_bytes(&mut self, now: Timestamp, conn: ConnId, bytes: &[u8]) {
        if self.replica.owns(conn) {
            self.replica.on_bytes(now, conn, bytes, &mut self.out);
            return self.answer_confirmed(now);
        }
        if self.blobs.owns(conn) {
            return self.on_blob_bytes(now, conn, bytes);
        }
        if self.copies.owns(conn) {
            self.copies
                .on_bytes(now, conn, bytes, &mut self.blobs, &mut self.out);
            return self.copy_news(now);
        }
        if !self.sessions.push(conn, bytes) {
            return;
        }
        while let Some(frame) = self.sessions.next_frame(conn) {
            match frame {
                Frame::Session(msg) => self.on_session_msg(now, conn, msg),
                Frame::Bad(reason) => return self.refuse(conn, reason, Link::Session),
                Frame::First { tag, payload } => return self.on_first(now, conn, tag, &payload),
            }
        }
    }

    /// A connection this server dialed did not open.
    fn dial_failed(&mut self, now: Timestamp, conn: ConnId, reason: &str) {
        self.replica.on_closed(now, conn, reason, &mut self.out);
        self.blobs.on_closed(now, conn, &mut self.out);
        self.copies
            .on_closed(now, conn, &mut self.blobs, &mut self.out);
        self.copy_news(now);
    }

    /// The first frame of a connection that is not a session: it says
    /// which link the connection is.
    fn on_first(&mut self, now: Timestamp, conn: ConnId, tag: u8, payload: &[u8]) {
        // Probes come from the balancer, pushes, blob fetches and
        // replication from servers: each proved by its certificate (the
        // cluster secret is checked as well, further on).
        let needs = if PROBE_TAGS.contains(&tag) {
            Some(ClusterRole::Balancer)
        } else if tag == PUSH_TAG || BLOB_TAGS.contains(&tag) || REPLICA_TAGS.contains(&tag) {
            Some(ClusterRole::Server)
        } else {
            None
        };
        if let Some(role) = needs {
            let identity = self.sessions.identity(conn);
            if !identity.may_be(role) {
                let what = format!(
                    "a link only the cluster's {} may open, from {identity}",
                    role.dns_name()
                );
                let link = if role == ClusterRole::Balancer {
                    Link::Probe
                } else {
                    Link::Session
                };
                return self.refuse(conn, Refusal::Unexpected { what }, link);
            }
        }
        if PROBE_TAGS.contains(&tag) {
            let probed = self
                .sessions
                .on_probe(now, conn, payload, &self.replica, &mut self.out);
            if let Err(reason) = probed {
                self.refuse(conn, reason, Link::Probe);
            }
            return;
        }
        if BALANCER_TAGS.contains(&tag) {
            let asked = (self.sessions).on_get_server(
                now,
                conn,
                payload,
                &self.replica,
                &mut self.entropy,
                &mut self.out,
            );
            if let Err(reason) = asked {
                self.refuse(conn, reason, Link::Balancer);
            }
            return;
        }
        if tag == PUSH_TAG {
            if let Some(decoder) = self.sessions.take(conn) {
                self.copies
                    .adopt(now, conn, decoder, payload, &mut self.out);
                self.copies
                    .on_bytes(now, conn, &[], &mut self.blobs, &mut self.out);
                self.copy_news(now);
            }
            return;
        }
        if BLOB_TAGS.contains(&tag) {
            if let Some(decoder) = self.sessions.take(conn) {
                self.blobs
                    .adopt(now, conn, decoder, payload, &self.replica, &mut self.out);
                self.on_blob_bytes(now, conn, &[]);
            }
            return;
        }
        if REPLICA_TAGS.contains(&tag) {
            // Replication takes the connection over, with whatever bytes
            // followed the first frame.
            if let Some(decoder) = self.sessions.take(conn) {
                self.replica
                    .adopt(now, conn, decoder, payload, &mut self.out);
                self.replica.on_bytes(now, conn, &[], &mut self.out);
            }
            return;
        }
        let detail = format!("unknown message tag {tag}");
        self.refuse(conn, Refusal::Malformed { detail }, Link::Session);
    }

    fn on_blob_bytes(&mut self, now: Timestamp, conn: ConnId, bytes: &[u8]) {
        self.blobs.on_bytes(
            now,
            conn,
            bytes,
            &self.replica,
            &mut self.out,
            &mut self.files,
        );
    }

    /// Acts on what became of uploads' copies.
    fn copy_news(&mut self, now: Timestamp) {
        loop {
            let news = self.copies.take_news();
            if news.is_empty() {
                return;
            }
            for n in news {
                let (files, mut cx) = self.files(now);
                match n {
                    CopyNews::Moved(up) => files.copies_moved(&mut cx, up),
                    CopyNews::Enough(up) => files.copies_made(&mut cx, up),
                    CopyNews::Settle(up) => {
                        let made = cx.copies.settle(now, up, cx.replica, cx.blobs, cx.out);
                        if made {
                            files.copies_made(&mut cx, up);
                        }
                    }
                }
            }
        }
    }

    fn on_session_msg(&mut self, now: Timestamp, conn: ConnId, msg: SessionMsg) {
        match self
            .sessions
            .on_msg(now, conn, msg, &mut self.entropy, &mut self.out)
        {
            Routed::Done => {}
            Routed::Refuse(reason) => self.refuse(conn, reason, Link::Session),
            // Status answers when the cluster is at its worst, without a
            // master to confirm reads: it does not wait at the read gate.
            Routed::Data {
                op: OpCode::Status,
                data,
            } => self.status_start(now, conn, data),
            Routed::Data { op, data } => {
                self.gate.hold(
                    now,
                    conn,
                    op,
                    data,
                    &mut self.replica,
                    &mut self.sessions,
                    &mut self.out,
                );
                self.answer_confirmed(now);
            }
            Routed::Transfer(m) => {
                let (files, mut cx) = self.files(now);
                files.on_transfer(&mut cx, conn, m);
                self.copy_news(now);
            }
            Routed::Attrs { id, attrs } => {
                // Those of an upload whose offer waits at the read gate
                // wait with it.
                if !self.gate.follow(conn, id, attrs) {
                    self.files.on_attrs(conn, id, attrs);
                }
            }
            Routed::Sync { round, token, done } => {
                self.writer_said(now, conn, (round, token, done));
            }
        }
    }

    /// `ferry status` from the session on `conn`: asked of every server.
    fn status_start(&mut self, now: Timestamp, conn: ConnId, data: SessionMsg) {
        let SessionMsg::StatusOf { token } = data else {
            let what = format!("{data:?}");
            return self.refuse(conn, Refusal::Unexpected { what }, Link::Session);
        };
        let state = self.replica.state();
        // A login that is not valid any more only loses its user part: the
        // cluster's state is worth seeing all the same.
        let user = token.and_then(|t| {
            let id = self.accounts.verify_token(now, &t, state).ok()?;
            let (files, bytes) = state.catalogue().usage(id);
            Some(status::UserUsage {
                user_id: id,
                username: t.username,
                files,
                bytes,
            })
        });
        self.sessions.run_elsewhere(conn);
        (self.status).start(now, conn, user, &mut self.replica, &mut self.out);
    }

    /// Status questions and answers other servers sent.
    fn status_news(&mut self) {
        let news = self.replica.take_status_news();
        if news.is_empty() {
            return;
        }
        let done = self.status.on_news(news, &self.replica, &mut self.out);
        for (conn, msg) in done {
            self.sessions
                .answer(conn, OpCode::Status, msg, &mut self.out);
        }
    }

    /// SYNC FIN or SYNC WRITING from the session on `conn`: ordered for
    /// its peer if it names the peer's current grant (see `sync_links`).
    fn writer_said(&mut self, now: Timestamp, conn: ConnId, said: (u64, Token, bool)) {
        let Some(peer) = self.peers.peer_of(conn) else {
            // No peer of this session holds a grant: nothing to end.
            return;
        };
        let state = self.replica.state();
        let Some(txn) = (self.syncs).writer_said(now, conn, peer, said, state) else {
            return;
        };
        let origin = self.peers.own_origin();
        // Backlogged: a FIN is sent again by a writer that hears no new
        // grant; a renewal again within 10 s; else the lease runs out.
        let _ = self.replica.submit(now, origin, txn, &mut self.out);
    }

    /// SYNC: the session's peer asks for a round (or joins the running one).
    fn sync_start(&mut self, now: Timestamp, conn: ConnId, data: SessionMsg) {
        let op = OpCode::Sync;
        if data != SessionMsg::Sync {
            let what = format!("{data:?}");
            return self.refuse(conn, Refusal::Unexpected { what }, Link::Session);
        }
        let Some(peer) = self.peers.peer_of(conn) else {
            let msg = SessionMsg::Failed(OpError::NotAPeer);
            return self.sessions.answer(conn, op, msg, &mut self.out);
        };
        let txn = Txn::SyncStart { peer };
        let ordered = (self.sessions).order(now, conn, op, txn, &mut self.replica, &mut self.out);
        if let Err(e) = ordered {
            (self.sessions).answer(conn, op, SessionMsg::Failed(e), &mut self.out);
        }
    }

    /// Runs every operation whose read index this server has reached.
    fn answer_confirmed(&mut self, now: Timestamp) {
        for r in self.gate.ready(&mut self.replica, &mut self.sessions) {
            self.run_op(now, r.conn, r.op, r.data);
            for (id, attrs) in r.attrs {
                self.files.on_attrs(r.conn, id, attrs);
            }
        }
    }

    /// Runs operation `op` of the session on `conn`, its data `data`.
    fn run_op(&mut self, now: Timestamp, conn: ConnId, op: OpCode, data: SessionMsg) {
        if op == OpCode::PeerRegister {
            return self.peer_register(now, conn, data);
        }
        if op == OpCode::Sync {
            return self.sync_start(now, conn, data);
        }
        // A command tried again whose transaction the cluster has applied
        // already: its first result, before any check of the state as it
        // is now (the name it registered is taken by then, the file it
        // deleted gone). An upload goes on and its entry applies as a
        // duplicate: its answer names the content it carries.
        let answered_from_log = matches!(
            op,
            OpCode::Register
                | OpCode::Share
                | OpCode::Unshare
                | OpCode::Delete
                | OpCode::DeleteAccount
        );
        if answered_from_log {
            if let Some(result) = self.sessions.applied_before(conn, &self.replica) {
                let msg = accounts::answer_to(&result)
                    .unwrap_or_else(|| user_files::answer_to(result, None));
                return self.sessions.answer(conn, op, msg, &mut self.out);
            }
        }
        let taken = if op.needs_login() {
            let (files, mut cx) = self.files(now);
            files.on_data(&mut cx, conn, op, data)
        } else {
            let (accounts, mut cx) = self.accounts(now);
            accounts.on_data(&mut cx, conn, op, data)
        };
        if let Err(reason) = taken {
            self.refuse(conn, reason, Link::Session);
        }
    }

    /// REGISTER: the session's user registers a peer listening at the
    /// address the data names (see `peer_links`).
    fn peer_register(&mut self, now: Timestamp, conn: ConnId, data: SessionMsg) {
        let op = OpCode::PeerRegister;
        let SessionMsg::PeerAddr { addr } = data else {
            let what = format!("{data:?}");
            return self.refuse(conn, Refusal::Unexpected { what }, Link::Session);
        };
        let user = match self.sessions.user(conn) {
            Some(token) => (self.accounts).verify_token(now, token, self.replica.state()),
            None => Err(OpError::NotAuthenticated),
        };
        let checked = addr
            .parse::<std::net::SocketAddr>()
            .map_err(|e| OpError::BadPeerAddress {
                reason: format!("{addr:?} is not IP:PORT ({e})"),
            });
        // The peer's own certificate, on this link: other peers will admit
        // only its holder.
        let key = match self.sessions.identity(conn) {
            Identity::Key(key) => Ok(Some(key)),
            Identity::Unchecked => Ok(None),
            other => Err(OpError::BadPeerAddress {
                reason: format!(
                    "a peer registers over a link with a certificate of its own, not {other}"
                ),
            }),
        };
        let (user, addr, key) = match (user, checked, key) {
            (Ok(user), Ok(addr), Ok(key)) => (user, addr, key),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                return self
                    .sessions
                    .answer(conn, op, SessionMsg::Failed(e), &mut self.out)
            }
        };
        let mut ticket = [0u8; 32];
        self.entropy.fill(&mut ticket);
        let txn = Txn::PeerJoin {
            user,
            addr: addr.to_string(),
            ticket_digest: *blake3::hash(&ticket).as_bytes(),
            key,
        };
        let ordered = (self.sessions).order(now, conn, op, txn, &mut self.replica, &mut self.out);
        match ordered {
            Ok(Some(origin)) => (self.peers).joining(origin, conn, ticket, &mut self.entropy),
            Ok(None) => {}
            Err(e) => self
                .sessions
                .answer(conn, op, SessionMsg::Failed(e), &mut self.out),
        }
    }

    /// A transaction of one of our sessions is applied here: answer it.
    fn deliver(&mut self, now: Timestamp, origin: Origin, result: TxnResult) {
        self.blobs.applied(&origin);
        let stored = self.files.applied(&origin);
        let joined = self.peers.joined(now, &origin, &result);
        let Some((conn, op)) = self.sessions.ordering(&origin) else {
            // The client left or gave up; the transaction stands.
            return;
        };
        if let Some((_, msg)) = joined {
            return self.sessions.answer(conn, op, msg, &mut self.out);
        }
        if op == OpCode::Sync {
            if let TxnResult::SyncStarted { round, .. } = &result {
                self.syncs.asked(conn, *round);
            }
            let msg = sync_links::answer_to(&result);
            return self.sessions.answer(conn, op, msg, &mut self.out);
        }
        if let TxnResult::PasswordChanged { user_id, epoch } = result {
            let (accounts, mut cx) = self.accounts(now);
            let msg = accounts.password_changed(&mut cx, user_id, epoch);
            return self.sessions.answer(conn, op, msg, &mut self.out);
        }
        let msg =
            accounts::answer_to(&result).unwrap_or_else(|| user_files::answer_to(result, stored));
        self.answer_stored(origin, conn, op, msg);
    }

    /// Answers that content was stored only while it is on this server's
    /// disk: content named now but missing is being fetched again, and the
    /// answer waits for it, or for the session's deadline.
    fn answer_stored(&mut self, origin: Origin, conn: ConnId, op: OpCode, msg: SessionMsg) {
        let missing = match &msg {
            SessionMsg::FileDone(FileOutcome::Stored { digest, .. }) => {
                Some(*digest).filter(|d| !self.blobs.has(d))
            }
            SessionMsg::BatchDone { outcomes } => outcomes.iter().find_map(|o| match o {
                Landed::Stored { digest, .. } if !self.blobs.has(digest) => Some(*digest),
                _ => None,
            }),
            _ => None,
        };
        match missing {
            Some(d) => self.unvouched.entry(d).or_default().push((origin, msg)),
            None => self.sessions.answer(conn, op, msg, &mut self.out),
        }
    }

    /// Content `d` is on this server's disk again: the answers that waited
    /// for it are given, to the sessions still waiting for them.
    fn vouch(&mut self, d: &[u8; 32]) {
        for (origin, msg) in self.unvouched.remove(d).unwrap_or_default() {
            if let Some((conn, op)) = self.sessions.ordering(&origin) {
                self.answer_stored(origin, conn, op, msg);
            }
        }
    }

    /// The deadline of a connection's stage, or of its session's
    /// operation, passed.
    fn on_deadline(&mut self, now: Timestamp, conn: ConnId) {
        let elsewhere = self.elsewhere(conn);
        match self
            .sessions
            .on_deadline(now, conn, elsewhere, &mut self.out)
        {
            Due::Done => {}
            Due::Refuse(reason) => self.refuse(conn, reason, Link::Session),
            Due::Elsewhere if self.status.deadline(conn).is_some() => {
                let sessions = self.clients() as u32;
                if let Some((conn, msg)) = self.status.on_deadline(conn, sessions, &self.replica) {
                    self.sessions
                        .answer(conn, OpCode::Status, msg, &mut self.out);
                }
            }
            Due::Elsewhere if self.gate.holds(conn) => {
                self.gate
                    .on_deadline(conn, &mut self.replica, &mut self.sessions, &mut self.out);
            }
            Due::Elsewhere => {
                let (files, mut cx) = self.files(now);
                files.on_deadline(&mut cx, conn);
            }
        }
    }

    /// The deadline of the operation the session on `conn` runs outside
    /// the sessions, if any.
    fn elsewhere(&self, conn: ConnId) -> Option<Timestamp> {
        deadline_elsewhere(&self.gate, &self.files, &self.status, conn)
    }

    fn on_file_read(&mut self, now: Timestamp, handle: u64, offset: u64, data: &[u8]) {
        match self.blobs.owner(handle) {
            Some(Owner::Session(conn)) => {
                let (files, mut cx) = self.files(now);
                files.on_read(&mut cx, conn, handle, offset, data);
            }
            Some(Owner::Push(tid)) => {
                self.copies
                    .on_read(now, tid, offset, data, &mut self.blobs, &mut self.out);
                self.copy_news(now);
            }
            _ => self
                .blobs
                .on_read(now, handle, offset, data, &self.replica, &mut self.out),
        }
    }

    fn on_file_persisted(&mut self, now: Timestamp, temp: u64) {
        if self.blobs.persist_voided(temp) {
            let error = "the blob persisted was removed after, as a damaged copy of it".into();
            return self.on_file_failed(now, temp, error, false, true);
        }
        self.persisted(now, temp);
        // Whichever way content came back (fetched, uploaded again), the
        // answers that waited for it go.
        let back: Vec<[u8; 32]> = (self.unvouched.keys())
            .filter(|d| self.blobs.has(d))
            .copied()
            .collect();
        for d in back {
            self.vouch(&d);
        }
    }

    fn persisted(&mut self, now: Timestamp, temp: u64) {
        match self.blobs.owner(temp) {
            Some(Owner::Session(conn)) => {
                let (files, mut cx) = self.files(now);
                files.on_persisted(&mut cx, conn, temp);
                self.copy_news(now);
            }
            Some(Owner::Copy(_)) => {
                self.copies
                    .on_persisted(now, temp, &mut self.blobs, &mut self.out);
            }
            _ => {
                let arrived = self
                    .blobs
                    .on_persisted(now, temp, &self.replica, &mut self.out);
                if let Some(d) = arrived {
                    let (files, mut cx) = self.files(now);
                    files.start_waiting(&mut cx, d);
                }
            }
        }
    }

    fn on_file_failed(
        &mut self,
        now: Timestamp,
        handle: u64,
        error: String,
        no_space: bool,
        missing: bool,
    ) {
        self.blobs.persist_voided(handle);
        // The disk's own words (paths, errno) are for this server's log;
        // a peer hears only what went wrong.
        let reason = if no_space {
            TransferError::NoSpace {
                needed: 0,
                available: 0,
            }
        } else {
            TransferError::Io {
                detail: "the server's disk failed".into(),
            }
        };
        let owner = self.blobs.owner(handle);
        if owner.is_some() && !no_space {
            self.out.event(ServerEvent::FileFailed {
                error: error.clone(),
            });
        }
        match owner {
            Some(Owner::Session(conn)) => {
                let (files, mut cx) = self.files(now);
                files.on_failed(&mut cx, conn, handle, reason);
                self.copy_news(now);
            }
            Some(Owner::Push(_) | Owner::Copy(_)) => {
                self.copies
                    .on_failed(now, handle, reason, &mut self.blobs, &mut self.out);
                self.copy_news(now);
            }
            Some(Owner::Kept) => {
                (self.files).partial_failed(handle, &mut self.blobs, &mut self.out);
            }
            _ => self.blobs.on_failed(
                now,
                handle,
                reason,
                error,
                missing,
                &self.replica,
                &mut self.out,
            ),
        }
    }

    fn refuse(&mut self, conn: ConnId, reason: Refusal, link: Link) {
        sessions::send_refusal(conn, &reason, link, &mut self.out);
        self.forget(conn);
        self.out.event(ServerEvent::Refused { conn, reason });
    }

    /// A client connection is gone, and what its session ran with it.
    fn forget(&mut self, conn: ConnId) {
        let Some(held_slot) = self.sessions.remove(conn) else {
            return;
        };
        self.files
            .forget(conn, &mut self.blobs, &mut self.copies, &mut self.out);
        self.gate.forget(conn, &mut self.replica);
        self.peers.forget(conn);
        self.syncs.forget(conn);
        self.status.forget(conn);
        if held_slot {
            self.out.event(ServerEvent::SessionEnded { conn });
        }
    }
}

/// The deadline of the operation the session on `conn` runs at the read
/// gate, in the user files or in a status question, if any.
fn deadline_elsewhere(
    gate: &ReadGate,
    files: &UserFiles,
    status: &status::Status,
    conn: ConnId,
) -> Option<Timestamp> {
    (gate.deadline(conn))
        .or_else(|| files.deadline(conn))
        .or_else(|| status.deadline(conn))
}

impl Node for Server {
    type Event = ServerEvent;

    fn is_routine(event: &ServerEvent) -> bool {
        matches!(event, ServerEvent::Copied { .. })
    }

    fn handle_input(&mut self, now: Timestamp, input: Input<'_>) {
        match input {
            Input::Accepted {
                conn,
                peer,
                identity,
            } => {
                if let Err(refused) = self.sessions.accept(now, conn, &peer, identity) {
                    sessions::send_refusal(conn, &refused.reason, Link::Session, &mut self.out);
                    if refused.say {
                        let source = crate::accounts::limiter::source_of(&peer);
                        let reason = refused.reason;
                        self.out.event(ServerEvent::SourceCapped { source, reason });
                    }
                }
            }
            Input::Received { conn, bytes } => self.on_bytes(now, conn, bytes),
            Input::Closed { conn } => {
                self.replica
                    .on_closed(now, conn, "connection closed", &mut self.out);
                self.blobs.on_closed(now, conn, &mut self.out);
                self.copies
                    .on_closed(now, conn, &mut self.blobs, &mut self.out);
                self.forget(conn);
                self.copy_news(now);
            }
            Input::Connected { conn, identity } if !identity.may_be(ClusterRole::Server) => {
                // A server dials only servers: whatever answered at that
                // address is not one of this cluster.
                self.out.close(conn);
                let reason = format!("it is not a server of this cluster ({identity})");
                self.dial_failed(now, conn, &reason);
            }
            Input::Connected { conn, .. } => {
                self.replica.on_connected(now, conn, &mut self.out);
                self.blobs.on_connected(conn, &self.replica, &mut self.out);
                self.copies
                    .on_connected(now, conn, &mut self.blobs, &mut self.out);
                self.copy_news(now);
            }
            Input::ConnectFailed { conn, reason } => self.dial_failed(now, conn, &reason),
            Input::Persisted { token } => {
                let done = self.replica.on_persisted(now, token, &mut self.out);
                let applied =
                    !done.is_empty() || self.replica.indexes().applied > self.blobs.synced_at();
                for d in done {
                    self.deliver(now, d.origin, d.result);
                }
                self.answer_confirmed(now);
                if applied {
                    let released = self.replica.take_released();
                    (self.blobs).sync_applied(now, &self.replica, released, &mut self.out);
                    self.peers.push_updates(&self.replica, &mut self.out);
                    let state = self.replica.state();
                    (self.syncs).push(self.peers.linked(), state, &mut self.out);
                }
            }
            Input::FileRead {
                handle,
                offset,
                data,
            } => self.on_file_read(now, handle, offset, data),
            Input::FilePersisted { temp } => self.on_file_persisted(now, temp),
            // A server lists no directory; it never asks.
            Input::Listed { .. } | Input::Renamed { .. } => {}
            Input::FileFailed {
                handle,
                error,
                no_space,
                missing,
            } => self.on_file_failed(now, handle, error, no_space, missing),
            Input::Space { handle, free } if self.status.owns_handle(handle) => {
                let sessions = self.clients() as u32;
                let (status, replica, out) = (&mut self.status, &mut self.replica, &mut self.out);
                if let Some((conn, msg)) =
                    status.on_space(now, handle, free, sessions, replica, out)
                {
                    self.sessions
                        .answer(conn, OpCode::Status, msg, &mut self.out);
                }
            }
            Input::Space { .. } => {}
        }
        // Wherever replication heard them (a link's first bytes included).
        self.status_news();
        (self.files).tidy_partials(now, &self.replica, &mut self.blobs, &mut self.out);
        self.blobs.tidy(now, &self.replica, &mut self.out);
        (self.peers).flush(now, &mut self.replica, &mut self.out);
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        self.replica.handle_timeout(now, &mut self.out);
        (self.peers).handle_timeout(now, &mut self.replica, &mut self.out);
        self.blobs
            .handle_timeout(now, &self.replica, &mut self.out, &mut self.files);
        self.copies
            .handle_timeout(now, &self.replica, &mut self.blobs, &mut self.out);
        self.copy_news(now);
        let late = self.sessions.late(now, |c| {
            deadline_elsewhere(&self.gate, &self.files, &self.status, c)
        });
        for conn in late {
            self.on_deadline(now, conn);
        }
        // Sessions that gave up on an unvouched answer have had theirs.
        let sessions = &self.sessions;
        self.unvouched.retain(|_, waiting| {
            waiting.retain(|(origin, _)| sessions.ordering(origin).is_some());
            !waiting.is_empty()
        });
        (self.files).tidy_partials(now, &self.replica, &mut self.blobs, &mut self.out);
        self.blobs.tidy(now, &self.replica, &mut self.out);
        (self.peers).flush(now, &mut self.replica, &mut self.out);
    }

    fn poll_output(&mut self) -> Option<Output<ServerEvent>> {
        self.out.pop()
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        let sessions = self.sessions.poll_timeout(|c| self.elsewhere(c));
        let parts = earliest(self.blobs.poll_timeout(), self.copies.poll_timeout());
        let parts = earliest(parts, self.peers.poll_timeout());
        let parts = earliest(parts, self.files.poll_timeout());
        earliest(sessions, earliest(self.replica.poll_timeout(), parts))
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
pub(crate) mod user_files_tests;

#[cfg(test)]
mod copies_tests;
#[cfg(test)]
mod downloads_tests;
#[cfg(test)]
mod uploads_tests;

#[cfg(test)]
mod command_tests;

#[cfg(test)]
mod peer_tests;

#[cfg(test)]
mod sync_tests;

#[cfg(test)]
mod password_tests;

#[cfg(test)]
mod dos_tests;

#[cfg(test)]
mod status_tests;

#[cfg(test)]
mod account_delete_tests;

#[cfg(test)]
mod attrs_tests;
#[cfg(test)]
mod resume_tests;
