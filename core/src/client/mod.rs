//! The client's side of getting a session: ask the balancer, then handshake
//! with the server it names.
//!
//! Balancer: connect, GET SERVER, receive ASSIGNED(addr, code) or NO SERVER.
//! Server: connect, HELLO(code), receive HELLO ACK, send ACK. Each step has a
//! timeout. If the assigned server cannot be reached, refuses the code
//! (expired, say), or has filled up since it told the balancer it had a
//! free slot (a yes reserves nothing), the client goes back to the
//! balancer, a bounded number of times.

use crate::auth::AuthCode;
use crate::balancer::messages::BalancerMsg;
use crate::file_attrs::FileAttrs;
use crate::frame::FrameDecoder;
use crate::io::{ConnId, Identity, Input, Node, Output};
use crate::io::{FileOp, FileRef};
use crate::outbox::{drain_messages, Outbox};
use crate::refusal::{Refusal, PROTOCOL_VERSION};
use crate::replication::sync_round::Token;
use crate::server::messages::{ListCursor, Listed, OpError, Request, Response, SessionMsg};
use crate::time::Timestamp;
use crate::tls::Fingerprint;
use crate::transfer::messages::resume_point;
use crate::transfer::{
    Receiver, ReceiverOutput, Sender, SenderConfig, SenderOutput, TransferError, TransferMsg,
};
use std::fmt;
use std::time::Duration;

mod batch;
mod downloads;
use batch::Outgoing;
pub use batch::{BYTES_IN_FLIGHT, FILES_IN_FLIGHT};
use downloads::Incoming;

#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub balancer: String,
    /// How long each step (connect, answer) may take.
    pub step_timeout: Duration,
    /// How many times the client asks the balancer before giving up.
    pub attempts: u32,
    /// How long an operation may take, end to end. Longer than the server's
    /// own request timeout, so the server's clearer answer arrives first.
    pub op_timeout: Duration,
    /// Chunks in flight when uploading.
    pub window: u64,
    /// How often an established, idle session pings the server, which
    /// closes sessions silent for longer than its idle timeout (60 s).
    pub ping_interval: Duration,
    /// The command's id (random, the same on each try of one command): its
    /// mutations are applied once however many servers it is tried through.
    pub command_id: Option<u64>,
    /// The command's numbered operations (`OpCode::numbered`) answered on
    /// its earlier tries, which this try does not send again.
    pub command_done: u64,
    /// Give a download the modification time and mode the server sends
    /// with it (`ferry get`); false for `--no-preserve`, and for a copy
    /// bound for standard output.
    pub preserve: bool,
    /// A server (`host:port`) to ask first, in the balancer's place (a
    /// server asked so assigns itself): the one an interrupted upload of
    /// this command went to, which keeps what arrived of it (partial
    /// uploads are that server's alone). Any failure with it goes to the
    /// balancer, without costing an attempt.
    pub prefer: Option<String>,
}

impl ClientConfig {
    pub fn new(balancer: impl Into<String>) -> Self {
        ClientConfig {
            balancer: balancer.into(),
            step_timeout: Duration::from_secs(5),
            attempts: 3,
            op_timeout: Duration::from_secs(15),
            window: crate::transfer::sender::DEFAULT_WINDOW,
            ping_interval: Duration::from_secs(20),
            command_id: None,
            command_done: 0,
            preserve: true,
            prefer: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientError {
    /// The balancer found no server that would take us, and why.
    NoServer(crate::balancer::Tally),
    /// A peer refused us, with its reason.
    Refused { by: Peer, reason: Refusal },
    /// A peer could not be reached or hung up.
    Unreachable { peer: Peer, reason: String },
    /// A peer did not answer in time.
    Timeout { peer: Peer, step: &'static str },
    /// A peer sent something we cannot read.
    Protocol { peer: Peer, detail: String },
    /// A peer's certificate was refused: it is not who it should be (or
    /// the cluster's authority changed). Never retried.
    Untrusted { peer: Peer, reason: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    Balancer,
    Server,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Peer::Balancer => "balancer",
            Peer::Server => "server",
        })
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::NoServer(tally) => write!(f, "no server available: {tally}"),
            ClientError::Refused { by, reason } => write!(f, "{by} refused: {reason}"),
            ClientError::Unreachable { peer, reason } => {
                write!(f, "cannot reach the {peer}: {reason}")
            }
            ClientError::Timeout { peer, step } => {
                write!(f, "the {peer} did not answer in time ({step})")
            }
            ClientError::Protocol { peer, detail } => {
                write!(f, "the {peer} broke the protocol: {detail}")
            }
            ClientError::Untrusted { peer, reason } => {
                write!(f, "the {peer} is not trusted: {reason}")
            }
        }
    }
}

impl std::error::Error for ClientError {}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEvent {
    Assigned {
        server_id: u32,
        addr: String,
    },
    /// Going back to the balancer after a failure with the assigned server.
    Retrying {
        error: ClientError,
    },
    Connected {
        server_id: u32,
        addr: String,
    },
    Failed(ClientError),
    /// The established session was closed by the server.
    Disconnected,
    /// The answer to a [`Client::request`].
    Response(Response),
    /// Bytes of an upload acknowledged, or of a download received.
    Progress {
        bytes: u64,
        total: u64,
    },
    /// Bytes of file `file` of a batch acknowledged.
    FileProgress {
        file: u64,
        bytes: u64,
        total: u64,
    },
    /// The server is still fetching the download's content from another
    /// server: `bytes` of `total` are there.
    Fetching {
        bytes: u64,
        total: u64,
    },
    /// The upload is on the server, which is copying it to the others
    /// (made from its copy, as after a resumed upload): `bytes` of
    /// `total` are on the furthest.
    Copying {
        bytes: u64,
        total: u64,
    },
    /// The transfer goes on past the first `bytes` of `total`, which the
    /// receiving end kept from an interrupted try (an upload's server, or
    /// a download's partial file) and which are the file's.
    Resumed {
        bytes: u64,
        total: u64,
    },
    /// The receiving end kept `bytes` of an interrupted try that are not
    /// this file's (it changed since, or the kept copy did): the transfer
    /// starts over from the first byte.
    StartedOver {
        bytes: u64,
    },
    /// UPDATE: the tracker's list of registered peers, pushed to a session
    /// that registered one, at any time.
    PeerUpdate {
        peers: Vec<crate::server::messages::PeerInfo>,
    },
    /// SYNC OK: this session's peer may write in `round` under `token`,
    /// until it says [`Client::sync_fin`]. At any time.
    SyncOk {
        round: u64,
        token: Token,
        order: Vec<u64>,
    },
    /// SYNC READ: peer `writer` writes in `round` under `token`. At any
    /// time.
    SyncRead {
        round: u64,
        writer: u64,
        token: Token,
        order: Vec<u64>,
    },
    /// SYNC END: every turn of `round` is over. At any time.
    SyncEnd {
        round: u64,
    },
}

impl fmt::Display for ClientEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientEvent::Assigned { server_id, addr } => {
                write!(f, "assigned server {server_id} at {addr}")
            }
            ClientEvent::Retrying { error } => write!(f, "retry after: {error}"),
            ClientEvent::Connected { server_id, addr } => {
                write!(f, "connected to server {server_id} at {addr}")
            }
            ClientEvent::Failed(e) => write!(f, "failed: {e}"),
            ClientEvent::Disconnected => f.write_str("disconnected by server"),
            ClientEvent::Response(r) => r.fmt(f),
            ClientEvent::Progress { bytes, total } => write!(f, "{bytes} of {total} bytes"),
            ClientEvent::FileProgress { file, bytes, total } => {
                write!(f, "file {file}: {bytes} of {total} bytes")
            }
            ClientEvent::Fetching { bytes, total } => {
                write!(
                    f,
                    "the server is fetching the content: {bytes} of {total} bytes"
                )
            }
            ClientEvent::Copying { bytes, total } => {
                write!(
                    f,
                    "the server is copying it to the others: {bytes} of {total} bytes"
                )
            }
            ClientEvent::Resumed { bytes, total } => {
                write!(f, "resuming at {bytes} of {total} bytes")
            }
            ClientEvent::StartedOver { bytes } => {
                write!(
                    f,
                    "the {bytes} bytes kept are not this file's: starting over"
                )
            }
            ClientEvent::PeerUpdate { peers } => write!(f, "UPDATE: {} peer(s)", peers.len()),
            ClientEvent::SyncOk { round, token, .. } => {
                write!(f, "SYNC OK: round {round}, write under token {token}")
            }
            ClientEvent::SyncRead {
                round,
                writer,
                token,
                ..
            } => write!(
                f,
                "SYNC READ: round {round}, peer {writer} writes under token {token}"
            ),
            ClientEvent::SyncEnd { round } => write!(f, "SYNC END: round {round}"),
        }
    }
}

enum State {
    Idle,
    Balancer {
        conn: ConnId,
        deadline: Timestamp,
        connected: bool,
    },
    Server {
        conn: ConnId,
        deadline: Timestamp,
        server_id: u32,
        addr: String,
        code: AuthCode,
        connected: bool,
    },
    /// Told by the balancer to ask again later (too many requests from
    /// this address).
    Waiting {
        until: Timestamp,
    },
    Established {
        conn: ConnId,
        server_id: u32,
        addr: String,
        op: Option<PendingOp>,
        /// When to ping next.
        ping_at: Timestamp,
        /// Silence from the server until then means it is gone.
        alive_until: Timestamp,
    },
    Done,
}

/// An operation in flight: the seeds' code → proceed → data → result.
struct PendingOp {
    request: Request,
    proceeded: bool,
    deadline: Timestamp,
    xfer: Option<Xfer>,
    /// A download's attributes, as the server sent them after its offer.
    attrs: Option<FileAttrs>,
    /// A download's temporary file holds this many bytes already (see
    /// [`Client::resume_next_download`]).
    kept: Option<u64>,
    /// A listing's pages so far, and where the next one starts.
    listed: Vec<Listed>,
    list_after: Option<ListCursor>,
}

/// The file transfer of an upload or download in progress.
enum Xfer {
    Up(Box<Sender>),
    Down(Box<Receiver>),
    /// A batch of uploads.
    Many(Box<Outgoing>),
    /// A batch of downloads.
    Gets(Box<Incoming>),
}

/// The read handle and temporary file number of the command's one transfer.
const LOCAL: u64 = 0;

/// Why [`Client::request`] could not start an operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestError {
    NotConnected,
    Busy,
}

pub struct Client {
    cfg: ClientConfig,
    state: State,
    decoder: FrameDecoder,
    attempts_left: u32,
    /// How long the balancer has made this client wait so far.
    waited: Duration,
    next_dial: u64,
    /// The authority that vouched for the first member reached: every
    /// other member must be vouched for by the same (a client trusting on
    /// first use learns it here; see [`Client::authority`]).
    authority: Option<Fingerprint>,
    /// The address asked for a server now: the balancer, or the server
    /// preferred ([`ClientConfig::prefer`]) while it is tried.
    asking: String,
    /// The preferred server has not been tried yet, or is being tried.
    preferring: bool,
    /// The next operation's temporary file holds its first bytes already
    /// (see [`Client::resume_next_download`]).
    kept: Option<u64>,
    out: Outbox<ClientEvent>,
}

/// How long a client waits in all when the balancer says "too many".
const MAX_POLITE_WAIT: Duration = Duration::from_secs(30);

impl Client {
    pub fn new(cfg: ClientConfig) -> Self {
        let attempts = cfg.attempts.max(1);
        let preferring = cfg.prefer.is_some();
        Client {
            asking: cfg.balancer.clone(),
            preferring,
            kept: None,
            cfg,
            state: State::Idle,
            decoder: FrameDecoder::default(),
            attempts_left: attempts,
            waited: Duration::ZERO,
            next_dial: 0,
            authority: None,
            out: Outbox::default(),
        }
    }

    /// The next operation's download goes to a temporary file
    /// (`FileRef::Temp` of the local file) that holds the first `held`
    /// bytes of an earlier, interrupted try: they are read back and
    /// offered to the server with RESUME, which sends the rest if they are
    /// the file's, or everything if not. Said before [`Client::request`];
    /// an operation that is no download forgets it.
    pub fn resume_next_download(&mut self, held: u64) {
        self.kept = Some(held);
    }

    /// The fingerprint of the cluster's authority, once a member's
    /// certificate has shown it.
    pub fn authority(&self) -> Option<Fingerprint> {
        self.authority
    }

    /// Is `identity` a member of the cluster this client talks to?
    fn check_member(&mut self, identity: Identity) -> Result<(), String> {
        match identity {
            Identity::Unchecked => Ok(()),
            Identity::Cluster { ca, .. } => match self.authority {
                None => {
                    self.authority = Some(ca);
                    Ok(())
                }
                Some(known) if known == ca => Ok(()),
                Some(known) => Err(format!(
                    "its certificate is issued by {ca}, not by the authority of the \
                     members reached before ({known})"
                )),
            },
            Identity::Anonymous | Identity::Key(_) => {
                Err("it presents no certificate of the cluster's authority".into())
            }
        }
    }

    /// Starts asking the balancer for a server.
    pub fn start(&mut self, now: Timestamp) {
        if matches!(self.state, State::Idle) {
            self.ask_balancer(now);
        }
    }

    /// The established session, if any: (connection, server id, address).
    pub fn session(&self) -> Option<(ConnId, u32, &str)> {
        match &self.state {
            State::Established {
                conn,
                server_id,
                addr,
                ..
            } => Some((*conn, *server_id, addr)),
            _ => None,
        }
    }

    /// Starts an operation on the established session; its answer comes
    /// as [`ClientEvent::Response`]. One operation at a time.
    pub fn request(&mut self, now: Timestamp, request: Request) -> Result<(), RequestError> {
        let State::Established { conn, op, .. } = &mut self.state else {
            return Err(RequestError::NotConnected);
        };
        if op.is_some() {
            return Err(RequestError::Busy);
        }
        self.out
            .send(*conn, &SessionMsg::Begin { op: request.op() });
        *op = Some(PendingOp {
            request,
            proceeded: false,
            deadline: now + self.cfg.op_timeout,
            xfer: None,
            attrs: None,
            kept: self.kept.take(),
            listed: Vec::new(),
            list_after: None,
        });
        Ok(())
    }

    /// SYNC FIN: this session's peer is done writing under `token` in
    /// `round`. Not an operation: sent at once, even while one runs.
    pub fn sync_fin(&mut self, round: u64, token: Token) -> Result<(), RequestError> {
        self.say(SessionMsg::SyncFin { round, token })
    }

    /// SYNC WRITING: this session's peer is still writing under `token`;
    /// its lease goes on. Send it at least every
    /// [`crate::server::SYNC_WRITING_EVERY`] while writing.
    pub fn sync_writing(&mut self, round: u64, token: Token) -> Result<(), RequestError> {
        self.say(SessionMsg::SyncWriting { round, token })
    }

    /// Sends a message that is no operation's on the established session.
    fn say(&mut self, msg: SessionMsg) -> Result<(), RequestError> {
        let State::Established { conn, .. } = &self.state else {
            return Err(RequestError::NotConnected);
        };
        self.out.send(*conn, &msg);
        Ok(())
    }

    /// Ends the session (or the attempt to get one).
    pub fn close(&mut self) {
        if let Some(conn) = self.current_conn() {
            self.out.close(conn);
        }
        self.state = State::Done;
    }

    fn on_transfer(&mut self, now: Timestamp, m: TransferMsg) {
        let op_timeout = self.cfg.op_timeout;
        let State::Established { op: Some(p), .. } = &mut self.state else {
            return;
        };
        let current = match &mut p.xfer {
            Some(Xfer::Up(s)) => Some(s.id()),
            Some(Xfer::Down(r)) => Some(r.id()),
            Some(Xfer::Many(o)) => {
                p.deadline = now + op_timeout;
                o.on_msg(now, m);
                return self.pump(now);
            }
            Some(Xfer::Gets(i)) => {
                p.deadline = now + op_timeout;
                i.on_msg(now, m);
                return self.pump(now);
            }
            None => None,
        };
        match current {
            Some(id) if id == m.id() => {}
            None if matches!(m, TransferMsg::Offer { .. }) => {}
            // A late message of an earlier transfer of this session (see
            // `on_server_msg`): not this operation's, and no sign of life
            // of it either.
            _ => return,
        }
        p.deadline = now + op_timeout;
        match (&mut p.xfer, m) {
            (Some(Xfer::Up(s)), m) => s.on_msg(now, m),
            (Some(Xfer::Down(r)), m) => r.on_msg(now, m),
            (Some(Xfer::Many(_) | Xfer::Gets(_)), _) => {}
            (None, TransferMsg::Offer { id, name, size }) => {
                if matches!(p.request, Request::Download { .. }) {
                    let mut r = Receiver::new(now, id, name, size, op_timeout);
                    match p.kept.take() {
                        // Only a file shorter than this one is written on:
                        // a longer one would keep bytes past its end.
                        Some(held) if held < size && resume_point(held, size) > 0 => {
                            r.resume(now, held)
                        }
                        // Kept, but of no use for a file of this size:
                        // written anew, nothing of the old left.
                        Some(held) if held > 0 => {
                            self.out.file(FileOp::Discard { temp: LOCAL });
                            r.accept(now);
                        }
                        Some(_) | None => r.accept(now),
                    }
                    p.xfer = Some(Xfer::Down(Box::new(r)));
                }
            }
            (None, _) => {}
        }
        self.pump(now);
    }

    /// Carries out what the transfer in progress asks for.
    fn pump(&mut self, now: Timestamp) {
        let State::Established {
            op: Some(p), conn, ..
        } = &mut self.state
        else {
            return;
        };
        let conn = *conn;
        let mut finished = None;
        match &mut p.xfer {
            Some(Xfer::Up(s)) => {
                let (total, attrs) = match &p.request {
                    Request::Upload { size, attrs, .. } => (*size, *attrs),
                    _ => (0, None),
                };
                while let Some(o) = s.poll_output() {
                    match o {
                        SenderOutput::Send(m) => {
                            let offer = matches!(m, TransferMsg::Offer { .. });
                            let id = m.id();
                            self.out.send(conn, &SessionMsg::Transfer(m));
                            if let Some(attrs) = attrs.filter(|_| offer) {
                                self.out.send(conn, &SessionMsg::Attrs { id, attrs });
                            }
                        }
                        SenderOutput::Read { offset, len } => self.out.file(FileOp::Read {
                            handle: LOCAL,
                            file: FileRef::Local,
                            offset,
                            len,
                        }),
                        SenderOutput::Progress { bytes } => {
                            self.out.event(ClientEvent::Progress { bytes, total })
                        }
                        SenderOutput::Resumed { from } => {
                            self.out.event(ClientEvent::Resumed { bytes: from, total })
                        }
                        SenderOutput::StartedOver { from } => {
                            self.out.event(ClientEvent::StartedOver { bytes: from })
                        }
                        // Success is the server's FileDone, after replication.
                        SenderOutput::Finished(Ok(_)) => {}
                        SenderOutput::Finished(Err(e)) => {
                            finished = Some(Response::Failed(OpError::Transfer(e)))
                        }
                    }
                }
            }
            Some(Xfer::Down(r)) => {
                let total = r.size();
                // Held back until the reason is known: a download cut off
                // keeps its file for the next try to resume.
                let mut discard = false;
                while let Some(o) = r.poll_output() {
                    match o {
                        ReceiverOutput::Send(m) => self.out.send(conn, &SessionMsg::Transfer(m)),
                        ReceiverOutput::Write { offset, data } => self.out.file(FileOp::Write {
                            temp: LOCAL,
                            offset,
                            data,
                        }),
                        ReceiverOutput::Commit { .. } => {
                            if let Some(attrs) = p.attrs.filter(|_| self.cfg.preserve) {
                                self.out.file(FileOp::SetAttrs { temp: LOCAL, attrs });
                            }
                            self.out.file(FileOp::Persist {
                                temp: LOCAL,
                                to: FileRef::Local,
                            })
                        }
                        ReceiverOutput::Discard => discard = true,
                        ReceiverOutput::Progress { bytes } => {
                            self.out.event(ClientEvent::Progress { bytes, total })
                        }
                        ReceiverOutput::Read { offset, len } => self.out.file(FileOp::Read {
                            handle: LOCAL,
                            file: FileRef::Temp(LOCAL),
                            offset,
                            len,
                        }),
                        ReceiverOutput::Resumed { from } => {
                            self.out.event(ClientEvent::Resumed { bytes: from, total })
                        }
                        ReceiverOutput::StartOver { from } => {
                            self.out.event(ClientEvent::StartedOver { bytes: from })
                        }
                        ReceiverOutput::Finished(Ok(digest)) => {
                            finished = Some(Response::Downloaded {
                                size: total,
                                digest,
                            })
                        }
                        ReceiverOutput::Finished(Err(e)) => {
                            // The server went silent or gave up sending:
                            // what arrived is sound, kept for the next try.
                            let cut_off =
                                matches!(e, TransferError::Timeout | TransferError::Cancelled);
                            if discard && !cut_off {
                                self.out.file(FileOp::Discard { temp: LOCAL });
                            }
                            discard = false;
                            finished = Some(Response::Failed(OpError::Transfer(e)))
                        }
                    }
                }
                if discard {
                    self.out.file(FileOp::Discard { temp: LOCAL });
                }
            }
            Some(Xfer::Many(o)) => o.pump(now, conn, &mut self.out),
            Some(Xfer::Gets(i)) => i.pump(conn, &mut self.out),
            None => {}
        }
        if let Some(r) = finished {
            p.xfer = None;
            self.state_op_done(r);
        }
    }

    /// The pages of the listing in flight, with its last page.
    fn listed_with(&mut self, last: Vec<Listed>) -> Vec<Listed> {
        match &mut self.state {
            State::Established { op: Some(p), .. } if !p.listed.is_empty() => {
                let mut all = std::mem::take(&mut p.listed);
                all.extend(last);
                all
            }
            _ => last,
        }
    }

    fn state_op_done(&mut self, r: Response) {
        if let State::Established { op, .. } = &mut self.state {
            *op = None;
        }
        self.out.event(ClientEvent::Response(r));
    }

    fn on_file(&mut self, now: Timestamp, input: Input<'_>) {
        let State::Established { op: Some(p), .. } = &mut self.state else {
            return;
        };
        match (&mut p.xfer, input) {
            (
                Some(Xfer::Many(o)),
                Input::FileRead {
                    handle,
                    offset,
                    data,
                },
            ) => o.on_read(handle, offset, data),
            (Some(Xfer::Many(o)), Input::FileFailed { handle, error, .. }) => {
                o.on_read_error(handle, error)
            }
            (Some(Xfer::Gets(i)), Input::FilePersisted { temp }) => i.persisted(temp),
            (
                Some(Xfer::Gets(i)),
                Input::FileFailed {
                    handle,
                    error,
                    no_space,
                    ..
                },
            ) => i.file_failed(handle, written(error, no_space, 0)),
            (Some(Xfer::Up(s)), Input::FileRead { offset, data, .. }) => s.on_read(offset, data),
            (Some(Xfer::Up(s)), Input::FileFailed { error, .. }) => s.on_read_error(error),
            // The kept part of the file, read back to resume.
            (Some(Xfer::Down(r)), Input::FileRead { offset, data, .. }) => r.on_read(offset, data),
            (Some(Xfer::Down(r)), Input::FileFailed { .. }) if r.is_rehashing() => {
                r.on_read_error()
            }
            (Some(Xfer::Down(r)), Input::FilePersisted { .. }) => r.committed(),
            (
                Some(Xfer::Down(r)),
                Input::FileFailed {
                    error, no_space, ..
                },
            ) => r.fail(written(error, no_space, r.size())),
            _ => return,
        }
        self.pump(now);
    }

    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn dial(&mut self, addr: String) -> ConnId {
        let conn = ConnId::dialed(self.next_dial);
        self.next_dial += 1;
        self.decoder = FrameDecoder::default();
        self.out.connect(conn, addr);
        conn
    }

    fn ask_balancer(&mut self, now: Timestamp) {
        self.asking = match (&self.cfg.prefer, self.preferring) {
            (Some(server), true) => server.clone(),
            _ => {
                self.attempts_left -= 1;
                self.cfg.balancer.clone()
            }
        };
        let conn = self.dial(self.asking.clone());
        self.state = State::Balancer {
            conn,
            deadline: now + self.cfg.step_timeout,
            connected: false,
        };
    }

    fn current_conn(&self) -> Option<ConnId> {
        match &self.state {
            State::Balancer { conn, .. }
            | State::Server { conn, .. }
            | State::Established { conn, .. } => Some(*conn),
            State::Idle | State::Waiting { .. } | State::Done => None,
        }
    }

    fn peer(&self) -> Peer {
        match self.state {
            State::Balancer { .. } => Peer::Balancer,
            _ => Peer::Server,
        }
    }

    /// Ends the attempt with `error`: retried through the balancer if it
    /// happened with a server and attempts remain, reported otherwise.
    fn fail(&mut self, now: Timestamp, error: ClientError) {
        if let Some(conn) = self.current_conn() {
            self.out.close(conn);
        }
        // The server preferred did not work out, whatever the reason (it
        // is down, full, or no longer there): the balancer picks one.
        let before_session = matches!(self.state, State::Balancer { .. } | State::Server { .. });
        if self.preferring && before_session {
            self.preferring = false;
            self.out.event(ClientEvent::Retrying { error });
            return self.ask_balancer(now);
        }
        let retryable = matches!(self.state, State::Server { .. })
            && !matches!(
                error,
                ClientError::Refused {
                    reason: Refusal::VersionMismatch { .. } | Refusal::BadCode,
                    ..
                } | ClientError::Untrusted { .. }
            );
        if retryable && self.attempts_left > 0 {
            self.out.event(ClientEvent::Retrying { error });
            self.ask_balancer(now);
        } else {
            self.state = State::Done;
            self.out.event(ClientEvent::Failed(error));
        }
    }

    fn on_balancer_msg(&mut self, now: Timestamp, msg: BalancerMsg) {
        match msg {
            BalancerMsg::Assigned {
                server_id,
                addr,
                code,
            } => {
                if let Some(old) = self.current_conn() {
                    self.out.close(old);
                }
                // A server asked in a balancer's place assigns itself.
                let addr = match addr.is_empty() {
                    true => self.asking.clone(),
                    false => addr,
                };
                self.out.event(ClientEvent::Assigned {
                    server_id,
                    addr: addr.clone(),
                });
                let conn = self.dial(addr.clone());
                self.state = State::Server {
                    conn,
                    deadline: now + self.cfg.step_timeout,
                    server_id,
                    addr,
                    code,
                    connected: false,
                };
            }
            BalancerMsg::NoServer {
                probed,
                busy,
                no_master,
                catching_up,
            } => {
                let tally = crate::balancer::Tally {
                    probed,
                    busy,
                    no_master,
                    catching_up,
                };
                self.fail(now, ClientError::NoServer(tally))
            }
            // A polite client waits as long as it is told, within its
            // patience, rather than failing a script that runs fast.
            BalancerMsg::Refused(Refusal::TooMany { retry_after_ms })
                if self.waited + Duration::from_millis(retry_after_ms) <= MAX_POLITE_WAIT =>
            {
                let wait = Duration::from_millis(retry_after_ms.max(1));
                self.waited += wait;
                if let Some(conn) = self.current_conn() {
                    self.out.close(conn);
                }
                self.state = State::Waiting { until: now + wait };
            }
            BalancerMsg::Refused(reason) => self.fail(
                now,
                ClientError::Refused {
                    by: Peer::Balancer,
                    reason,
                },
            ),
            BalancerMsg::GetServer { .. } => self.fail(
                now,
                ClientError::Protocol {
                    peer: Peer::Balancer,
                    detail: "balancer sent a request".into(),
                },
            ),
        }
    }

    fn on_server_msg(&mut self, now: Timestamp, msg: SessionMsg) {
        if let State::Established { alive_until, .. } = &mut self.state {
            *alive_until = now + self.cfg.ping_interval * 3;
        }
        match (&self.state, msg) {
            (
                State::Server {
                    conn,
                    server_id,
                    addr,
                    ..
                },
                SessionMsg::HelloAck { server_id: said },
            ) if *server_id == said => {
                let (conn, server_id, addr) = (*conn, *server_id, addr.clone());
                self.out.send(conn, &SessionMsg::Ack);
                if let Some(id) = self.cfg.command_id {
                    let done = self.cfg.command_done;
                    self.out.send(conn, &SessionMsg::Command { id, done });
                }
                self.out.event(ClientEvent::Connected {
                    server_id,
                    addr: addr.clone(),
                });
                self.state = State::Established {
                    conn,
                    server_id,
                    addr,
                    op: None,
                    ping_at: now + self.cfg.ping_interval,
                    alive_until: now + self.cfg.ping_interval * 3,
                };
            }
            (
                State::Established {
                    op: Some(p), conn, ..
                },
                SessionMsg::Proceed { op },
            ) if !p.proceeded && p.request.op() == op => {
                let conn = *conn;
                let payload = match (&p.list_after, &p.request) {
                    (Some(after), Request::ListUnder { prefix }) => SessionMsg::ListAfter {
                        prefix: Some(prefix.clone()),
                        after: after.clone(),
                    },
                    (Some(after), _) => SessionMsg::ListAfter {
                        prefix: None,
                        after: after.clone(),
                    },
                    (None, request) => request.payload(),
                };
                let upload = match &p.request {
                    Request::Upload { name, size, .. } => Some((name.clone(), *size)),
                    _ => None,
                };
                let cfg = SenderConfig {
                    window: self.cfg.window,
                    ..SenderConfig::default()
                };
                let is_upload = upload.is_some();
                if let State::Established { op: Some(p), .. } = &mut self.state {
                    p.proceeded = true;
                    p.deadline = now + self.cfg.op_timeout;
                    if let Some((name, size)) = upload {
                        // The sender's OFFER is the upload's data.
                        p.xfer = Some(Xfer::Up(Box::new(Sender::new(now, 0, name, size, cfg))));
                    } else if let Request::UploadMany { files, attrs, .. } = &p.request {
                        // The files go once the server says it is ready.
                        let o = Outgoing::new(files.clone(), attrs.clone(), cfg);
                        p.xfer = Some(Xfer::Many(Box::new(o)));
                    } else if let Request::DownloadMany { files } = &p.request {
                        let preserve = self.cfg.preserve;
                        let i = Incoming::new(files.len(), self.cfg.op_timeout, preserve);
                        p.xfer = Some(Xfer::Gets(Box::new(i)));
                    }
                }
                if !is_upload {
                    self.out.send(conn, &payload);
                }
                self.pump(now);
            }
            (State::Established { op: Some(p), .. }, SessionMsg::Transfer(m)) if p.proceeded => {
                self.on_transfer(now, m);
            }
            (
                State::Established {
                    op:
                        Some(PendingOp {
                            xfer: Some(Xfer::Many(_)),
                            request: Request::UploadMany { files: ours, .. },
                            ..
                        }),
                    ..
                },
                SessionMsg::Batch { files },
            ) if files as usize == ours.len() => {
                if let State::Established {
                    op:
                        Some(PendingOp {
                            xfer: Some(Xfer::Many(o)),
                            deadline,
                            ..
                        }),
                    ..
                } = &mut self.state
                {
                    *deadline = now + self.cfg.op_timeout;
                    o.start(now);
                }
                self.pump(now);
            }
            // A transfer message after its transfer ended: a sender that
            // resent DONE while this client made its download durable (an
            // fsync of a large file outlasts the resend timer). The download
            // has its answer already; the session goes on.
            (State::Established { .. }, SessionMsg::Transfer(_)) => {}
            (
                State::Established {
                    op:
                        Some(PendingOp {
                            xfer: Some(Xfer::Down(r)),
                            ..
                        }),
                    ..
                },
                SessionMsg::Attrs { id, attrs },
            ) if r.id() == id => {
                if let State::Established { op: Some(p), .. } = &mut self.state {
                    p.attrs = Some(attrs.sanitized());
                }
            }
            (
                State::Established {
                    op:
                        Some(PendingOp {
                            xfer: Some(Xfer::Gets(_)),
                            ..
                        }),
                    ..
                },
                SessionMsg::Attrs { id, attrs },
            ) => {
                if let State::Established {
                    op:
                        Some(PendingOp {
                            xfer: Some(Xfer::Gets(i)),
                            ..
                        }),
                    ..
                } = &mut self.state
                {
                    i.set_attrs(id, attrs);
                }
            }
            // Another transfer's (one that ended): nothing to keep.
            (State::Established { .. }, SessionMsg::Attrs { .. }) => {}
            (State::Established { op: Some(p), .. }, SessionMsg::ListingPart { files, next })
                if p.proceeded
                    && matches!(p.request, Request::List | Request::ListUnder { .. }) =>
            {
                // More than a frame holds: the next page is asked for as
                // a List operation of its own.
                if let State::Established {
                    op: Some(p), conn, ..
                } = &mut self.state
                {
                    p.listed.extend(files);
                    p.list_after = Some(next);
                    p.proceeded = false;
                    p.deadline = now + self.cfg.op_timeout;
                    (self.out).send(*conn, &SessionMsg::Begin { op: p.request.op() });
                }
            }
            (State::Established { op: Some(p), .. }, msg)
                if p.proceeded && Response::from_msg(&msg).is_some() =>
            {
                if let Some(r) = Response::from_msg(&msg) {
                    let r = match (r, &p.xfer) {
                        (Response::Batch(v), Some(Xfer::Many(o))) => Response::Batch(o.outcomes(v)),
                        (Response::Received(v), Some(Xfer::Gets(i))) => {
                            Response::Received(i.outcomes(v))
                        }
                        (r, _) => r,
                    };
                    let r = match r {
                        Response::Listing(last) => Response::Listing(self.listed_with(last)),
                        r => r,
                    };
                    self.state_op_done(r);
                }
            }
            (State::Established { op: Some(p), .. }, SessionMsg::Fetching { bytes, size })
                if p.proceeded
                    && matches!(p.request, Request::Download { .. } | Request::Upload { .. }) =>
            {
                // The server is working on it: wait on.
                let upload = matches!(p.request, Request::Upload { .. });
                let deadline = now + self.cfg.op_timeout;
                if let State::Established { op: Some(p), .. } = &mut self.state {
                    p.deadline = deadline;
                }
                self.out.event(match upload {
                    true => ClientEvent::Copying { bytes, total: size },
                    false => ClientEvent::Fetching { bytes, total: size },
                });
            }
            (State::Established { .. }, SessionMsg::Pong) => {}
            (State::Established { .. }, SessionMsg::PeerUpdate { peers }) => {
                self.out.event(ClientEvent::PeerUpdate { peers });
            }
            (
                State::Established { .. },
                SessionMsg::SyncOk {
                    round,
                    token,
                    order,
                },
            ) => {
                (self.out).event(ClientEvent::SyncOk {
                    round,
                    token,
                    order,
                });
            }
            (
                State::Established { .. },
                SessionMsg::SyncRead {
                    round,
                    writer,
                    token,
                    order,
                },
            ) => {
                (self.out).event(ClientEvent::SyncRead {
                    round,
                    writer,
                    token,
                    order,
                });
            }
            (State::Established { .. }, SessionMsg::SyncEnd { round }) => {
                self.out.event(ClientEvent::SyncEnd { round });
            }
            (State::Established { conn, op, .. }, SessionMsg::Refused(reason)) => {
                // The session is over. With an operation in flight that
                // operation failed, and the reason is worth telling;
                // otherwise it is a disconnection, not a failure to connect.
                let busy = op.is_some();
                self.out.close(*conn);
                self.state = State::Done;
                self.out.event(if busy {
                    ClientEvent::Failed(ClientError::Refused {
                        by: Peer::Server,
                        reason,
                    })
                } else {
                    ClientEvent::Disconnected
                });
            }
            (_, SessionMsg::Refused(reason)) => self.fail(
                now,
                ClientError::Refused {
                    by: Peer::Server,
                    reason,
                },
            ),
            (_, other) => self.fail(
                now,
                ClientError::Protocol {
                    peer: Peer::Server,
                    detail: format!("unexpected {other:?}"),
                },
            ),
        }
    }

    fn on_bytes(&mut self, now: Timestamp, bytes: &[u8]) {
        self.decoder.push(bytes);
        let peer = self.peer();
        let result = match peer {
            Peer::Balancer => {
                let mut msgs = Vec::new();
                let r = drain_messages::<BalancerMsg>(&mut self.decoder, &mut msgs);
                for m in msgs {
                    if !matches!(self.state, State::Balancer { .. }) {
                        break;
                    }
                    self.on_balancer_msg(now, m);
                }
                r
            }
            Peer::Server => {
                let mut msgs = Vec::new();
                let r = drain_messages::<SessionMsg>(&mut self.decoder, &mut msgs);
                for m in msgs {
                    if !matches!(self.state, State::Server { .. } | State::Established { .. }) {
                        break;
                    }
                    self.on_server_msg(now, m);
                }
                r
            }
        };
        if let Err(e) = result {
            if self.current_conn().is_some() {
                self.fail(
                    now,
                    ClientError::Protocol {
                        peer,
                        detail: e.to_string(),
                    },
                );
            }
        }
    }
}

impl Client {
    fn on_input(&mut self, now: Timestamp, input: Input<'_>) {
        let current = self.current_conn();
        match input {
            Input::Connected { conn, identity } if Some(conn) == current => {
                if let Err(reason) = self.check_member(identity) {
                    let peer = self.peer();
                    self.fail(now, ClientError::Untrusted { peer, reason });
                    return;
                }
                self.on_connected(conn)
            }
            Input::ConnectFailed { conn, reason } if Some(conn) == current => {
                let peer = self.peer();
                // A certificate refused in the handshake is not a network
                // fault: another try would meet the same certificate.
                match reason.strip_prefix(crate::host::tls::REFUSED) {
                    Some(why) => {
                        let reason = why.to_string();
                        self.fail(now, ClientError::Untrusted { peer, reason })
                    }
                    None => self.fail(now, ClientError::Unreachable { peer, reason }),
                }
            }
            Input::Received { conn, bytes } if Some(conn) == current => self.on_bytes(now, bytes),
            Input::Closed { conn } if Some(conn) == current => {
                if matches!(self.state, State::Established { .. }) {
                    self.state = State::Done;
                    self.out.event(ClientEvent::Disconnected);
                } else {
                    let peer = self.peer();
                    let reason = "connection closed".into();
                    self.fail(now, ClientError::Unreachable { peer, reason });
                }
            }
            input @ (Input::FileRead { .. }
            | Input::FilePersisted { .. }
            | Input::FileFailed { .. }) => self.on_file(now, input),
            // Stale connections from an earlier attempt, or accepts (a
            // client listens for nothing).
            _ => {}
        }
    }

    fn on_connected(&mut self, conn: ConnId) {
        match &mut self.state {
            State::Balancer { connected, .. } => {
                *connected = true;
                let msg = BalancerMsg::GetServer {
                    version: PROTOCOL_VERSION,
                };
                self.out.send(conn, &msg);
            }
            State::Server {
                connected, code, ..
            } => {
                *connected = true;
                let msg = SessionMsg::Hello {
                    version: PROTOCOL_VERSION,
                    code: code.clone(),
                };
                self.out.send(conn, &msg);
            }
            _ => {}
        }
    }
}

impl Node for Client {
    type Event = ClientEvent;

    fn handle_input(&mut self, now: Timestamp, input: Input<'_>) {
        self.on_input(now, input)
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        if let State::Established { op: Some(p), .. } = &mut self.state {
            match &mut p.xfer {
                Some(Xfer::Up(s)) => s.handle_timeout(now),
                Some(Xfer::Down(r)) => r.handle_timeout(now),
                Some(Xfer::Many(o)) => o.handle_timeout(now),
                Some(Xfer::Gets(i)) => i.handle_timeout(now),
                None => {}
            }
            self.pump(now);
        }
        let (peer, step, deadline) = match &mut self.state {
            State::Balancer {
                deadline,
                connected,
                ..
            } => (
                Peer::Balancer,
                if *connected {
                    "server assignment"
                } else {
                    "connect"
                },
                *deadline,
            ),
            State::Server {
                deadline,
                connected,
                ..
            } => (
                Peer::Server,
                if *connected { "hello ack" } else { "connect" },
                *deadline,
            ),
            State::Established {
                conn,
                op,
                ping_at,
                alive_until,
                ..
            } => {
                let conn = *conn;
                if let Some(p) = op.as_ref().filter(|p| p.deadline <= now) {
                    let step = if p.proceeded { "the result" } else { "proceed" };
                    self.out.close(conn);
                    self.state = State::Done;
                    let e = ClientError::Timeout {
                        peer: Peer::Server,
                        step,
                    };
                    self.out.event(ClientEvent::Failed(e));
                } else if *alive_until <= now {
                    self.out.close(conn);
                    self.state = State::Done;
                    self.out.event(ClientEvent::Disconnected);
                } else if *ping_at <= now {
                    *ping_at = now + self.cfg.ping_interval;
                    // An operation in flight is traffic enough.
                    if op.is_none() {
                        self.out.send(conn, &SessionMsg::Ping);
                    }
                }
                return;
            }
            State::Waiting { until } => {
                if *until <= now {
                    // The wait was asked of us; it costs no attempt.
                    self.attempts_left += 1;
                    self.ask_balancer(now);
                }
                return;
            }
            _ => return,
        };
        if deadline <= now {
            self.fail(now, ClientError::Timeout { peer, step });
        }
    }

    fn poll_output(&mut self) -> Option<Output<ClientEvent>> {
        self.out.pop()
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        match &self.state {
            State::Balancer { deadline, .. } | State::Server { deadline, .. } => Some(*deadline),
            State::Waiting { until } => Some(*until),
            State::Established {
                op,
                ping_at,
                alive_until,
                ..
            } => {
                let beat = (*ping_at).min(*alive_until);
                let xfer = op.as_ref().and_then(|p| match &p.xfer {
                    Some(Xfer::Up(s)) => s.poll_timeout(),
                    Some(Xfer::Down(r)) => r.poll_timeout(),
                    Some(Xfer::Many(o)) => o.poll_timeout(),
                    Some(Xfer::Gets(i)) => i.poll_timeout(),
                    None => None,
                });
                let t = op.as_ref().map_or(beat, |p| beat.min(p.deadline));
                Some(xfer.map_or(t, |x| t.min(x)))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;

/// Why a received file could not be written: the disk full, or its error.
fn written(error: String, no_space: bool, needed: u64) -> crate::transfer::TransferError {
    if no_space {
        crate::transfer::TransferError::NoSpace {
            needed,
            available: 0,
        }
    } else {
        crate::transfer::TransferError::Io { detail: error }
    }
}
