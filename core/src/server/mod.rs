//! A file server: answers the balancer's probes, runs client sessions, and
//! takes part in master replication.
//!
//! One listener serves every link; the first frame's tag says which link a
//! connection speaks (probe, session or replication). A server has
//! `max_clients` slots: established sessions, sessions mid-handshake and live
//! reservations each hold one, and it answers a probe "yes" only while a slot
//! is free and it is caught up with the master.

mod blobs;
mod config;
mod event;
mod files;
pub mod messages;
mod ops;
pub mod reservations;
pub mod scrub;

use crate::accounts::limiter::LoginLimiter;
use crate::accounts::token::SessionToken;
use crate::auth::{AuthCode, ClusterSecret};
use crate::balancer::messages::{ProbeMsg, PROBE_TAGS};
use crate::entropy::Entropy;
use crate::frame::{self, FrameDecoder};
use crate::io::{ConnId, Input, Node, Output};
use crate::outbox::Outbox;
use crate::refusal::{Refusal, PROTOCOL_VERSION};
use crate::replication::catalogue::FileMeta;
use crate::replication::entry::Origin;
use crate::replication::messages::REPLICA_TAGS;
use crate::replication::{Replica, ReplicaConfig};
use crate::store::Recovered;
use crate::time::{earliest, Timestamp};
use crate::transfer::{Receiver, Sender};
use blobs::BlobStore;
pub use blobs::{BlobMsg, BLOB_TAGS};
pub use config::ServerConfig;
pub use event::ServerEvent;
use files::AwaitingDownloads;
pub use files::{check_name, MAX_NAME};
pub use messages::{OpCode, OpError, Request, Response, SessionMsg, SESSION_TAGS};
use reservations::Reservations;
use std::collections::BTreeMap;

/// A read to run again once this server has caught up with the master's
/// commit index as of the moment the read arrived.
enum Confirm {
    Login { name: String, password: String },
    WhoAmI { token: SessionToken },
}

/// Where an established session is in the operation it is running.
enum Op {
    /// Waiting for the master's read index before answering.
    Confirming {
        op: OpCode,
        read: u64,
        again: Confirm,
        deadline: Timestamp,
    },
    Idle,
    /// `Proceed` sent; waiting for the operation's data.
    AwaitData {
        op: OpCode,
        deadline: Timestamp,
    },
    /// Submitted to the master; waiting until applied here.
    Ordering {
        op: OpCode,
        origin: Origin,
        deadline: Timestamp,
        /// For an upload: what was stored, to tell the client.
        stored: Option<(u64, [u8; 32])>,
    },
    /// Receiving an upload into temporary file `temp`.
    Uploading {
        receiver: Box<Receiver>,
        temp: u64,
        replace: bool,
    },
    /// Sending a download, reading through `handle`.
    Downloading {
        sender: Box<Sender>,
        handle: u64,
    },
    /// A download whose content is still being fetched from a peer.
    AwaitBlob {
        meta: FileMeta,
        deadline: Timestamp,
    },
}

impl Op {
    fn deadline(&self) -> Option<Timestamp> {
        match self {
            Op::Idle => None,
            Op::AwaitData { deadline, .. }
            | Op::Ordering { deadline, .. }
            | Op::Confirming { deadline, .. }
            | Op::AwaitBlob { deadline, .. } => Some(*deadline),
            Op::Uploading { receiver, .. } => receiver.poll_timeout(),
            Op::Downloading { sender, .. } => sender.poll_timeout(),
        }
    }
}

// Nearly every connection is `Established`; boxing it would allocate per
// session to save bytes on the short-lived stages.
#[allow(clippy::large_enum_variant)]
enum Stage {
    /// Connected; the first frame will say which link this is.
    Opening { deadline: Timestamp },
    /// HELLO accepted and answered; waiting for the client's ACK.
    AwaitAck { deadline: Timestamp, session: u64 },
    Established {
        session: u64,
        requests: u64,
        op: Op,
        idle_deadline: Timestamp,
        /// The login this session proved with `WhoAmI`; file operations
        /// act as this user and no other.
        user: Option<SessionToken>,
    },
}

impl Stage {
    fn holds_slot(&self) -> bool {
        !matches!(self, Stage::Opening { .. })
    }

    fn deadline(&self) -> Option<Timestamp> {
        match self {
            Stage::Opening { deadline } | Stage::AwaitAck { deadline, .. } => Some(*deadline),
            // An operation's deadline is always the nearer one: every frame
            // pushes the idle deadline a whole idle timeout away.
            Stage::Established {
                op, idle_deadline, ..
            } => Some(op.deadline().unwrap_or(*idle_deadline)),
        }
    }
}

struct Conn {
    decoder: FrameDecoder,
    stage: Stage,
}

pub struct Server {
    cfg: ServerConfig,
    secret: ClusterSecret,
    entropy: Entropy,
    conns: BTreeMap<ConnId, Conn>,
    reservations: Reservations,
    pub(crate) replica: Replica,
    blobs: BlobStore,
    limiter: LoginLimiter,
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
        let mut replica =
            Replica::recover(replica, secret.clone(), replica_entropy, recovered, now)?;
        let mut out = Outbox::default();
        replica.resume(now, &mut out);
        let ttl = cfg.reservation_ttl;
        let blobs = BlobStore::new(&cfg, secret.clone(), &recovered.blobs);
        let mut server = Server {
            cfg,
            secret,
            entropy,
            conns: BTreeMap::new(),
            reservations: Reservations::new(ttl),
            replica,
            blobs,
            limiter: LoginLimiter::default(),
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
        self.cfg.id
    }

    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// Slots held by clients (established or mid-handshake).
    pub fn clients(&self) -> usize {
        self.conns.values().filter(|c| c.stage.holds_slot()).count()
    }

    /// Slots held by clients plus slots reserved for clients on their way.
    pub fn slots_taken(&self) -> usize {
        self.clients() + self.reservations.live()
    }

    fn has_free_slot(&self) -> bool {
        self.slots_taken() < self.cfg.max_clients as usize
    }

    fn on_bytes(&mut self, now: Timestamp, conn: ConnId, bytes: &[u8]) {
        if self.replica.owns(conn) {
            self.replica.on_bytes(now, conn, bytes, &mut self.out);
            return self.answer_confirmed(now);
        }
        if self.blobs.owns(conn) {
            return self.on_blob_bytes(now, conn, bytes);
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.decoder.push(bytes);
        loop {
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            // Session messages, file content among them, are decoded in
            // place; only a connection's first frame, which may hand the
            // connection to another link, is copied out.
            let opening = matches!(c.stage, Stage::Opening { .. });
            let frame = match c.decoder.next_payload() {
                Ok(Some(p)) => {
                    let tag = p.first().copied().unwrap_or(0);
                    if SESSION_TAGS.contains(&tag) {
                        Ok(frame::decode::<SessionMsg>(p))
                    } else if opening {
                        Err((tag, p.to_vec()))
                    } else {
                        Err((tag, Vec::new()))
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    let detail = e.to_string();
                    return self.refuse(conn, Refusal::Malformed { detail }, Link::Session);
                }
            };
            match frame {
                Ok(Ok(msg)) => self.on_session_msg(now, conn, msg),
                Ok(Err(e)) => {
                    let detail = e.to_string();
                    return self.refuse(conn, Refusal::Malformed { detail }, Link::Session);
                }
                Err((tag, payload)) if opening => {
                    if PROBE_TAGS.contains(&tag) {
                        return self.on_probe(now, conn, &payload);
                    }
                    if blobs::BLOB_TAGS.contains(&tag) {
                        if let Some(c) = self.conns.remove(&conn) {
                            self.blobs.adopt(
                                now,
                                conn,
                                c.decoder,
                                &payload,
                                &self.replica,
                                &mut self.out,
                            );
                            self.on_blob_bytes(now, conn, &[]);
                        }
                        return;
                    }
                    if REPLICA_TAGS.contains(&tag) {
                        // Replication takes the connection over, with
                        // whatever bytes followed the first frame.
                        if let Some(c) = self.conns.remove(&conn) {
                            self.replica
                                .adopt(now, conn, c.decoder, &payload, &mut self.out);
                            self.replica.on_bytes(now, conn, &[], &mut self.out);
                        }
                        return;
                    }
                    let detail = format!("unknown message tag {tag}");
                    return self.refuse(conn, Refusal::Malformed { detail }, Link::Session);
                }
                Err((tag, _)) => {
                    let detail = format!("unknown message tag {tag}");
                    return self.refuse(conn, Refusal::Malformed { detail }, Link::Session);
                }
            }
        }
    }

    fn on_blob_bytes(&mut self, now: Timestamp, conn: ConnId, bytes: &[u8]) {
        let mut waiting = AwaitingDownloads {
            conns: &mut self.conns,
            patience: self.cfg.request_timeout,
        };
        self.blobs
            .on_bytes(now, conn, bytes, &self.replica, &mut self.out, &mut waiting);
    }

    fn on_probe(&mut self, now: Timestamp, conn: ConnId, payload: &[u8]) {
        let code = match frame::decode::<ProbeMsg>(payload) {
            Ok(ProbeMsg::Probe { version, code }) => {
                if version != PROTOCOL_VERSION {
                    let r = Refusal::VersionMismatch {
                        ours: PROTOCOL_VERSION,
                        theirs: version,
                    };
                    return self.refuse(conn, r, Link::Probe);
                }
                code
            }
            Ok(other) => {
                let what = format!("{other:?}");
                return self.refuse(conn, Refusal::Unexpected { what }, Link::Probe);
            }
            Err(e) => {
                let detail = e.to_string();
                return self.refuse(conn, Refusal::Malformed { detail }, Link::Probe);
            }
        };
        if let Err(r) = self.check_code(&code) {
            return self.refuse(conn, r, Link::Probe);
        }
        self.reservations.expire(now);
        // A follower that has not caught up with the master would serve
        // stale accounts: it says no until it has.
        let available = self.replica.is_caught_up(now)
            && self.has_free_slot()
            && self.reservations.reserve(now, code.nonce).is_ok();
        let answer = if available {
            ProbeMsg::Available
        } else {
            ProbeMsg::Busy
        };
        self.out.send(conn, &answer);
        self.out.close(conn);
        self.conns.remove(&conn);
        self.out.event(ServerEvent::Probed {
            available,
            code: code.label(),
        });
    }

    fn check_code(&self, code: &AuthCode) -> Result<(), Refusal> {
        if !self.secret.verify(code) {
            return Err(Refusal::BadCode);
        }
        if code.server_id != self.cfg.id {
            return Err(Refusal::WrongServer {
                ours: self.cfg.id,
                theirs: code.server_id,
            });
        }
        Ok(())
    }

    fn on_session_msg(&mut self, now: Timestamp, conn: ConnId, msg: SessionMsg) {
        if let Some(Conn {
            stage: Stage::Established { idle_deadline, .. },
            ..
        }) = self.conns.get_mut(&conn)
        {
            *idle_deadline = now + self.cfg.idle_timeout;
        }
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        match (&c.stage, msg) {
            (Stage::Opening { .. }, SessionMsg::Hello { version, code }) => {
                if version != PROTOCOL_VERSION {
                    let r = Refusal::VersionMismatch {
                        ours: PROTOCOL_VERSION,
                        theirs: version,
                    };
                    return self.refuse(conn, r, Link::Session);
                }
                if let Err(r) = self.check_code(&code) {
                    return self.refuse(conn, r, Link::Session);
                }
                if let Err(r) = self.reservations.redeem(now, code.nonce) {
                    return self.refuse(conn, r, Link::Session);
                }
                let deadline = now + self.cfg.handshake_timeout;
                // Random, so that a restarted server never reuses a session
                // id that the replicated dedup table remembers.
                let session = self.entropy.next_u64();
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.stage = Stage::AwaitAck { deadline, session };
                }
                let ack = SessionMsg::HelloAck {
                    server_id: self.cfg.id,
                };
                self.out.send(conn, &ack);
                self.out.event(ServerEvent::Established {
                    conn,
                    code: code.label(),
                });
            }
            (Stage::AwaitAck { session, .. }, SessionMsg::Ack) => {
                let session = *session;
                let idle_deadline = now + self.cfg.idle_timeout;
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.stage = Stage::Established {
                        session,
                        requests: 0,
                        op: Op::Idle,
                        idle_deadline,
                        user: None,
                    };
                }
            }
            (Stage::Established { .. }, SessionMsg::Ping) => {
                self.out.send(conn, &SessionMsg::Pong);
            }
            (
                Stage::Established {
                    op: Op::Idle, user, ..
                },
                SessionMsg::Begin { op },
            ) => {
                if op.needs_login() && user.is_none() {
                    return self
                        .out
                        .send(conn, &SessionMsg::Failed(OpError::NotAuthenticated));
                }
                let deadline = now + self.cfg.handshake_timeout;
                self.set_op(conn, Op::AwaitData { op, deadline });
                self.out.send(conn, &SessionMsg::Proceed { op });
            }
            (
                Stage::Established {
                    op: Op::Uploading { .. } | Op::Downloading { .. },
                    ..
                },
                SessionMsg::Transfer(m),
            ) => {
                self.on_session_transfer(now, conn, m);
            }
            (
                Stage::Established {
                    op: Op::AwaitData { op, .. },
                    ..
                },
                data,
            ) => {
                let op = *op;
                self.on_op_data(now, conn, op, data);
            }
            // A transfer message after its transfer ended: a sender that
            // resent DONE while the file was being made durable (an fsync
            // of gigabytes outlasts its resend timer), or a late duplicate
            // ack. The transfer has its answer already; the session goes on.
            (Stage::Established { .. }, SessionMsg::Transfer(_)) => {}
            (_, other) => {
                let what = match other {
                    SessionMsg::Credentials { .. } => "Credentials".to_string(),
                    other => format!("{other:?}"),
                };
                self.refuse(conn, Refusal::Unexpected { what }, Link::Session);
            }
        }
    }

    fn set_op(&mut self, conn: ConnId, new: Op) {
        if let Some(Conn {
            stage: Stage::Established { op, .. },
            ..
        }) = self.conns.get_mut(&conn)
        {
            *op = new;
        }
    }

    fn refuse(&mut self, conn: ConnId, reason: Refusal, link: Link) {
        match link {
            Link::Probe => self.out.send(conn, &ProbeMsg::Refused(reason.clone())),
            Link::Session => self.out.send(conn, &SessionMsg::Refused(reason.clone())),
        }
        self.out.close(conn);
        self.forget(conn);
        self.out.event(ServerEvent::Refused { conn, reason });
    }

    fn forget(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.remove(&conn) {
            // A transfer cut short: its handle is done with, and an
            // upload's temporary file is thrown away.
            if let Stage::Established { op, .. } = &c.stage {
                match op {
                    // Its blob is already on its way: let it land, then
                    // collect it (no PutFile will name it).
                    Op::Uploading { temp, .. } if self.blobs.persisting(*temp) => {
                        self.blobs.orphan(*temp);
                    }
                    Op::Uploading { temp, .. } => {
                        self.out.file(crate::io::FileOp::Discard { temp: *temp });
                        self.blobs.forget_handle(*temp);
                    }
                    Op::Downloading { handle, .. } => self.blobs.forget_handle(*handle),
                    _ => {}
                }
            }
            if c.stage.holds_slot() {
                self.out.event(ServerEvent::SessionEnded { conn });
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Link {
    Probe,
    Session,
}

impl Node for Server {
    type Event = ServerEvent;

    fn handle_input(&mut self, now: Timestamp, input: Input<'_>) {
        match input {
            Input::Accepted { conn, .. } => {
                let deadline = now + self.cfg.handshake_timeout;
                self.conns.insert(
                    conn,
                    Conn {
                        decoder: FrameDecoder::default(),
                        stage: Stage::Opening { deadline },
                    },
                );
            }
            Input::Received { conn, bytes } => self.on_bytes(now, conn, bytes),
            Input::Closed { conn } => {
                self.replica
                    .on_closed(now, conn, "connection closed", &mut self.out);
                self.blobs.on_closed(now, conn, &mut self.out);
                self.forget(conn);
            }
            Input::Connected { conn } => {
                self.replica.on_connected(conn, &mut self.out);
                self.blobs.on_connected(conn, &self.replica, &mut self.out);
            }
            Input::ConnectFailed { conn, reason } => {
                self.replica.on_closed(now, conn, &reason, &mut self.out);
                self.blobs.on_closed(now, conn, &mut self.out);
            }
            Input::Persisted { token } => {
                let done = self.replica.on_persisted(now, token, &mut self.out);
                let applied =
                    !done.is_empty() || self.replica.indexes().applied > self.blobs.synced_at();
                for d in done {
                    self.deliver(d.origin, d.result);
                }
                self.answer_confirmed(now);
                if applied {
                    self.blobs.sync(now, &self.replica, &mut self.out);
                }
            }
            Input::FileRead {
                handle,
                offset,
                data,
            } => self.on_file_read(now, handle, offset, data),
            Input::FilePersisted { temp } => self.on_file_persisted(now, temp),
            Input::FileFailed {
                handle,
                error,
                no_space,
                missing,
            } => self.on_file_failed(now, handle, error, no_space, missing),
        }
        self.blobs.release_held(now, &self.replica, &mut self.out);
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        self.replica.handle_timeout(now, &mut self.out);
        let mut waiting = AwaitingDownloads {
            conns: &mut self.conns,
            patience: self.cfg.request_timeout,
        };
        self.blobs
            .handle_timeout(now, &self.replica, &mut self.out, &mut waiting);
        let lapsed = self.reservations.expire(now);
        if lapsed > 0 {
            self.out
                .event(ServerEvent::ReservationsLapsed { count: lapsed });
        }
        let late: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.stage.deadline().is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        for conn in late {
            self.on_deadline(now, conn);
        }
        self.blobs.release_held(now, &self.replica, &mut self.out);
    }

    fn poll_output(&mut self) -> Option<Output<ServerEvent>> {
        self.out.pop()
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        let conns = self.conns.values().filter_map(|c| c.stage.deadline()).min();
        earliest(
            earliest(conns, self.reservations.next_deadline()),
            earliest(self.replica.poll_timeout(), self.blobs.poll_timeout()),
        )
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod files_tests;
