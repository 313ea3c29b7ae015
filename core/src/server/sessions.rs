//! Client connections: the balancer's probes, and client sessions.
//!
//! A server has `max_clients` slots: established sessions and sessions
//! mid-handshake each hold one. A probe asks whether a slot is free and the
//! server is caught up with the master, now; the answer reserves nothing.
//! The client presents the code the balancer minted with HELLO (HELLO →
//! HELLO ACK → ACK), which takes a slot if one is still free: the code says
//! itself how long it is good for, and the server remembers it only to
//! refuse it a second time (`spent_codes`). An established session then
//! runs one operation at a time: the client sends the operation's code
//! (`Begin`), the server lets it proceed (`Proceed`), the client sends the
//! operation's data, and the server answers.
//!
//! What the unauthenticated may hold is bounded: every connection must
//! have proved a login within `login_timeout` of its accept (`Login`, or
//! `WhoAmI` with a token) or it is closed, and one source address may hold
//! only so many connections (`source_caps`).
//!
//! This part keeps each connection's stage and the operation its session
//! runs, answers, and orders transactions through the master on a
//! session's behalf. What an operation does is the business of the accounts
//! and of the user files; while one of them runs it ([`Op::Elsewhere`]), it
//! keeps the operation's state and deadline, and the server asks it.

use super::config::ServerConfig;
use super::event::ServerEvent;
use super::messages::{FileOutcome, OpCode, OpError, SessionMsg, SESSION_TAGS};
use super::source_caps::{Refused, SourceCounts};
use super::spent_codes::SpentCodes;
use crate::accounts::limiter::source_of;
use crate::accounts::token::SessionToken;
use crate::auth::{AuthCode, ClusterSecret};
use crate::balancer::messages::{BalancerMsg, ProbeMsg};
use crate::entropy::Entropy;
use crate::file_attrs::FileAttrs;
use crate::frame::{self, FrameDecoder};
use crate::io::{ConnId, Identity};
use crate::outbox::Outbox;
use crate::refusal::{Refusal, PROTOCOL_VERSION};
use crate::replication::entry::{Origin, Txn, TxnResult};
use crate::replication::sync_round::Token;
use crate::replication::Readiness;
use crate::replication::Replica;
use crate::time::{earliest, Timestamp};
use crate::transfer::TransferMsg;
use std::collections::BTreeMap;
use std::time::Duration;

/// Where an established session is in the operation it is running.
enum Op {
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
    },
    /// Run by the accounts or the user files, which hold its state and
    /// its deadline.
    Elsewhere,
}

impl Op {
    /// `elsewhere`: the deadline of an operation run elsewhere.
    fn deadline(&self, elsewhere: Option<Timestamp>) -> Option<Timestamp> {
        match self {
            Op::Idle => None,
            Op::AwaitData { deadline, .. } | Op::Ordering { deadline, .. } => Some(*deadline),
            Op::Elsewhere => elsewhere,
        }
    }
}

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

    fn deadline(&self, elsewhere: Option<Timestamp>) -> Option<Timestamp> {
        match self {
            Stage::Opening { deadline } | Stage::AwaitAck { deadline, .. } => Some(*deadline),
            // An operation's deadline is always the nearer one: every frame
            // pushes the idle deadline a whole idle timeout away.
            Stage::Established {
                op, idle_deadline, ..
            } => Some(op.deadline(elsewhere).unwrap_or(*idle_deadline)),
        }
    }
}

struct Conn {
    decoder: FrameDecoder,
    stage: Stage,
    /// Where the connection comes from, for counting failed logins and
    /// connections (`accounts::limiter::source_of`).
    source: String,
    /// What its TLS handshake proved: links only servers of the cluster
    /// may open are refused to anything else.
    identity: Identity,
    /// Counted against its source's caps (its source is not a member of
    /// the cluster).
    counted: bool,
    /// When it must have proved a login by; `None` once it has.
    login_by: Option<Timestamp>,
}

impl Conn {
    /// The login deadline, while it applies: an operation running when it
    /// comes (a registration being ordered, say) ends first, by its own
    /// deadline.
    fn login_deadline(&self) -> Option<Timestamp> {
        match &self.stage {
            Stage::Established { op, .. } if !matches!(op, Op::Idle) => None,
            _ => self.login_by,
        }
    }

    fn deadline(&self, elsewhere: Option<Timestamp>) -> Option<Timestamp> {
        earliest(self.stage.deadline(elsewhere), self.login_deadline())
    }
}

/// Which link a refusal is said on.
#[derive(Clone, Copy)]
pub(super) enum Link {
    Probe,
    Session,
    /// A client that asked this server for a server.
    Balancer,
}

/// Tells the other end of `conn` why it is refused, and closes it.
pub(super) fn send_refusal(
    conn: ConnId,
    reason: &Refusal,
    link: Link,
    out: &mut Outbox<ServerEvent>,
) {
    match link {
        Link::Probe => out.send(conn, &ProbeMsg::Refused(reason.clone())),
        Link::Session => out.send(conn, &SessionMsg::Refused(reason.clone())),
        Link::Balancer => out.send(conn, &BalancerMsg::Refused(reason.clone())),
    }
    out.close(conn);
}

/// The next frame of a connection.
pub(super) enum Frame {
    Session(SessionMsg),
    /// The first frame of a connection, and not a session's: it says which
    /// other link the connection is.
    First {
        tag: u8,
        payload: Vec<u8>,
    },
    /// The connection cannot go on.
    Bad(Refusal),
}

/// What a session message leaves to the server.
pub(super) enum Routed {
    Done,
    Refuse(Refusal),
    /// The data of operation `op`, for the part that runs it.
    Data {
        op: OpCode,
        data: SessionMsg,
    },
    /// File content, for a transfer of the user files, if one runs.
    Transfer(TransferMsg),
    /// The attributes of an upload just offered, for the user files.
    Attrs {
        id: u64,
        attrs: FileAttrs,
    },
    /// A SYNC round's writer says it is done (`done`: SYNC FIN) or still
    /// writing, whatever operation its session runs.
    Sync {
        round: u64,
        token: Token,
        done: bool,
    },
}

/// What a connection whose deadline passed leaves to the server.
pub(super) enum Due {
    Done,
    Refuse(Refusal),
    /// The deadline of an operation run elsewhere.
    Elsewhere,
}

pub(super) struct Sessions {
    id: u32,
    secret: ClusterSecret,
    max_clients: u32,
    code_ttl: Duration,
    handshake_timeout: Duration,
    idle_timeout: Duration,
    request_timeout: Duration,
    login_timeout: Duration,
    codes: SpentCodes,
    sources: SourceCounts,
    conns: BTreeMap<ConnId, Conn>,
}

impl Sessions {
    /// `peers`: the addresses of this server's peers; `now`: its start.
    pub(super) fn new(
        cfg: &ServerConfig,
        secret: ClusterSecret,
        peers: &[String],
        now: Timestamp,
    ) -> Self {
        Sessions {
            id: cfg.id,
            secret,
            max_clients: cfg.max_clients,
            code_ttl: cfg.code_ttl,
            handshake_timeout: cfg.handshake_timeout,
            idle_timeout: cfg.idle_timeout,
            request_timeout: cfg.request_timeout,
            login_timeout: cfg.login_timeout,
            codes: SpentCodes::new(now, cfg.clock_skew),
            sources: SourceCounts::new(cfg.per_source, peers),
            conns: BTreeMap::new(),
        }
    }

    /// Slots held by clients (established or mid-handshake).
    pub(super) fn clients(&self) -> usize {
        self.conns.values().filter(|c| c.stage.holds_slot()).count()
    }

    fn has_free_slot(&self) -> bool {
        self.clients() < self.max_clients as usize
    }

    /// A connection from `peer` (its address as the listener saw it), its
    /// other end proved to be `identity`, or why it is refused: its source
    /// holds as many as it may. The caller tells it so and closes it.
    /// Members of the cluster (proved by their certificates) are not
    /// counted against their source.
    pub(super) fn accept(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        peer: &str,
        identity: Identity,
    ) -> Result<(), Refused> {
        let source = source_of(peer);
        let counted = match identity {
            Identity::Cluster { .. } => false,
            _ => self.sources.admit(now, &source)?,
        };
        let deadline = now + self.handshake_timeout;
        self.conns.insert(
            conn,
            Conn {
                decoder: FrameDecoder::default(),
                stage: Stage::Opening { deadline },
                source,
                counted,
                login_by: Some(now + self.login_timeout),
                identity,
            },
        );
        Ok(())
    }

    /// Forgets `conn`, and counts it out of its source's connections.
    fn drop_conn(&mut self, conn: ConnId) -> Option<Conn> {
        let c = self.conns.remove(&conn)?;
        if c.counted {
            self.sources.left(&c.source, c.login_by.is_none());
        }
        Some(c)
    }

    /// The session on `conn` proved a login: it may stay, and no longer
    /// counts as unauthenticated.
    fn logged_in(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.login_by.take().is_some() && c.counted {
            self.sources.logged_in(&c.source);
        }
    }

    /// What the other end of `conn` proved to be.
    pub(super) fn identity(&self, conn: ConnId) -> Identity {
        self.conns
            .get(&conn)
            .map_or(Identity::Anonymous, |c| c.identity)
    }

    /// Where the connection `conn` comes from (empty if it is not ours).
    pub(super) fn source(&self, conn: ConnId) -> &str {
        self.conns.get(&conn).map_or("", |c| c.source.as_str())
    }

    /// Bytes that arrived on `conn`; false if it is not a connection of
    /// ours.
    pub(super) fn push(&mut self, conn: ConnId, bytes: &[u8]) -> bool {
        let Some(c) = self.conns.get_mut(&conn) else {
            return false;
        };
        c.decoder.push(bytes);
        true
    }

    /// The next complete frame of `conn`, if any.
    pub(super) fn next_frame(&mut self, conn: ConnId) -> Option<Frame> {
        let c = self.conns.get_mut(&conn)?;
        // Session messages, file content among them, are decoded in place;
        // only a connection's first frame, which may hand the connection
        // to another link, is copied out.
        let opening = matches!(c.stage, Stage::Opening { .. });
        let payload = match c.decoder.next_payload() {
            Ok(Some(p)) => p,
            Ok(None) => return None,
            Err(e) => {
                let detail = e.to_string();
                return Some(Frame::Bad(Refusal::Malformed { detail }));
            }
        };
        let tag = payload.first().copied().unwrap_or(0);
        Some(if SESSION_TAGS.contains(&tag) {
            match frame::decode::<SessionMsg>(payload) {
                Ok(msg) => Frame::Session(msg),
                Err(e) => {
                    let detail = e.to_string();
                    Frame::Bad(Refusal::Malformed { detail })
                }
            }
        } else if opening {
            Frame::First {
                tag,
                payload: payload.to_vec(),
            }
        } else {
            let detail = format!("unknown message tag {tag}");
            Frame::Bad(Refusal::Malformed { detail })
        })
    }

    /// Hands a connection that is another link's over: its decoder, with
    /// whatever followed the first frame.
    pub(super) fn take(&mut self, conn: ConnId) -> Option<FrameDecoder> {
        self.drop_conn(conn).map(|c| c.decoder)
    }

    /// Forgets `conn`: `Some(true)` if it held a slot, `None` if it was not
    /// ours.
    pub(super) fn remove(&mut self, conn: ConnId) -> Option<bool> {
        self.drop_conn(conn).map(|c| c.stage.holds_slot())
    }

    /// Is `code` this cluster's, for this server? Its times are
    /// [`SpentCodes`]' business.
    fn check_code(&self, code: &AuthCode) -> Result<(), Refusal> {
        if !self.secret.verify(code) {
            return Err(Refusal::BadCode);
        }
        if code.server_id != self.id {
            return Err(Refusal::WrongServer {
                ours: self.id,
                theirs: code.server_id,
            });
        }
        Ok(())
    }

    /// A balancer's probe, the first frame of `conn`: answered and closed,
    /// or refused (on the probe link).
    pub(super) fn on_probe(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        payload: &[u8],
        replica: &Replica,
        out: &mut Outbox<ServerEvent>,
    ) -> Result<(), Refusal> {
        let (code, proof) = match frame::decode::<ProbeMsg>(payload) {
            Ok(ProbeMsg::Probe {
                version,
                code,
                proof,
            }) => {
                if version != PROTOCOL_VERSION {
                    return Err(Refusal::VersionMismatch {
                        ours: PROTOCOL_VERSION,
                        theirs: version,
                    });
                }
                (code, proof)
            }
            Ok(other) => {
                let what = format!("{other:?}");
                return Err(Refusal::Unexpected { what });
            }
            Err(e) => {
                let detail = e.to_string();
                return Err(Refusal::Malformed { detail });
            }
        };
        self.check_code(&code)?;
        // The code alone proves nothing: its client holds it too.
        if !self.secret.verify_probe(&code, &proof) {
            return Err(Refusal::BadCode);
        }
        // A balancer whose clock is behind ours, in our first moments:
        // its codes would be refused (see `spent_codes`) for a moment.
        let early = self.codes.minted_before_start(&code);
        if !early {
            // An expired code here means clocks out of step: said, so that
            // the balancer's log tells the operator.
            self.codes.check(now, &code)?;
            let source = self.source(conn).to_string();
            self.sources.proved(now, &source);
        }
        // A server that follows no live master, or has not caught up with
        // it, would serve stale accounts: it says no, and why, until then.
        let answer = match replica.readiness(now) {
            Readiness::NoMaster => ProbeMsg::NoMaster,
            Readiness::CatchingUp => ProbeMsg::CatchingUp,
            Readiness::Ready if early => ProbeMsg::CatchingUp,
            Readiness::Ready if self.has_free_slot() => ProbeMsg::Available,
            Readiness::Ready => ProbeMsg::Busy,
        };
        let available = answer == ProbeMsg::Available;
        out.send(conn, &answer);
        out.close(conn);
        self.drop_conn(conn);
        out.event(ServerEvent::Probed {
            available,
            code: code.label(),
        });
        Ok(())
    }

    /// GET SERVER asked of this server rather than of a balancer (a peer
    /// registers through "any Ferry server"): the server assigns itself —
    /// a code it mints, good for `code_ttl`, if a slot is free now — or
    /// says why not, as a balancer's round of one server would. The empty
    /// address tells the client to present the code here.
    pub(super) fn on_get_server(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        payload: &[u8],
        replica: &Replica,
        entropy: &mut Entropy,
        out: &mut Outbox<ServerEvent>,
    ) -> Result<(), Refusal> {
        match frame::decode::<BalancerMsg>(payload) {
            Ok(BalancerMsg::GetServer { version }) if version == PROTOCOL_VERSION => {}
            Ok(BalancerMsg::GetServer { version }) => {
                return Err(Refusal::VersionMismatch {
                    ours: PROTOCOL_VERSION,
                    theirs: version,
                })
            }
            Ok(other) => {
                let what = format!("{other:?}");
                return Err(Refusal::Unexpected { what });
            }
            Err(e) => {
                let detail = e.to_string();
                return Err(Refusal::Malformed { detail });
            }
        }
        let mut nonce = [0u8; 16];
        entropy.fill(&mut nonce);
        // (busy, no master, catching up): a round of one server.
        let none = |(busy, no_master, catching_up)| BalancerMsg::NoServer {
            probed: 1,
            busy,
            no_master,
            catching_up,
        };
        let answer = match replica.readiness(now) {
            Readiness::NoMaster => none((0, 1, 0)),
            Readiness::CatchingUp => none((0, 0, 1)),
            Readiness::Ready if self.has_free_slot() => BalancerMsg::Assigned {
                server_id: self.id,
                addr: String::new(),
                code: self.secret.mint(self.id, nonce, now, self.code_ttl),
            },
            Readiness::Ready => none((1, 0, 0)),
        };
        let available = matches!(answer, BalancerMsg::Assigned { .. });
        out.send(conn, &answer);
        out.close(conn);
        self.drop_conn(conn);
        out.event(ServerEvent::Probed {
            available,
            code: format!("s{}:direct", self.id),
        });
        Ok(())
    }

    /// A message of the session on `conn`: the handshake and what is not
    /// any operation's are dealt with here.
    pub(super) fn on_msg(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        msg: SessionMsg,
        entropy: &mut Entropy,
        out: &mut Outbox<ServerEvent>,
    ) -> Routed {
        let idle_timeout = self.idle_timeout;
        let Some(c) = self.conns.get_mut(&conn) else {
            return Routed::Done;
        };
        if let Stage::Established { idle_deadline, .. } = &mut c.stage {
            *idle_deadline = now + idle_timeout;
        }
        // A command id names the session's transactions from the first on:
        // taken only before any (later, the session would share another
        // command's dedup record midway).
        if let (
            Stage::Established {
                session,
                requests: requests @ 0,
                op: Op::Idle,
                ..
            },
            SessionMsg::Command { id, done },
        ) = (&mut c.stage, &msg)
        {
            *session = id | Origin::CLIENT_CHOSEN;
            // Its earlier tries' answered operations: this try's first
            // mutation takes the number after them, as it had there.
            *requests = *done;
            return Routed::Done;
        }
        match (&c.stage, msg) {
            (Stage::Opening { .. }, SessionMsg::Hello { version, code }) => {
                if version != PROTOCOL_VERSION {
                    return Routed::Refuse(Refusal::VersionMismatch {
                        ours: PROTOCOL_VERSION,
                        theirs: version,
                    });
                }
                if let Err(r) = self.check_code(&code) {
                    return Routed::Refuse(r);
                }
                if let Err(r) = self.codes.check(now, &code) {
                    return Routed::Refuse(r);
                }
                // The probe's yes reserved nothing: another client may
                // have taken the last slot since. This one asks the
                // balancer again.
                if !self.has_free_slot() {
                    return Routed::Refuse(Refusal::ServerFull);
                }
                if let Err(r) = self.codes.spend(now, &code) {
                    return Routed::Refuse(r);
                }
                let deadline = now + self.handshake_timeout;
                // Random, so that a restarted server never reuses a session
                // id that the replicated dedup table remembers.
                let session = entropy.next_u64() & !Origin::CLIENT_CHOSEN;
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.stage = Stage::AwaitAck { deadline, session };
                }
                out.send(conn, &SessionMsg::HelloAck { server_id: self.id });
                out.event(ServerEvent::Established {
                    conn,
                    code: code.label(),
                });
            }
            (Stage::AwaitAck { session, .. }, SessionMsg::Ack) => {
                let session = *session;
                let idle_deadline = now + idle_timeout;
                c.stage = Stage::Established {
                    session,
                    requests: 0,
                    op: Op::Idle,
                    idle_deadline,
                    user: None,
                };
            }
            (Stage::Established { .. }, SessionMsg::Ping) => {
                out.send(conn, &SessionMsg::Pong);
            }
            // Like a ping, these may come in the middle of an operation (a
            // peer may be registering, or asking SYNC, when its turn ends):
            // never an operation's data.
            (Stage::Established { .. }, SessionMsg::SyncFin { round, token }) => {
                return Routed::Sync {
                    round,
                    token,
                    done: true,
                }
            }
            (Stage::Established { .. }, SessionMsg::SyncWriting { round, token }) => {
                return Routed::Sync {
                    round,
                    token,
                    done: false,
                }
            }
            (
                Stage::Established {
                    op: Op::Idle, user, ..
                },
                SessionMsg::Begin { op },
            ) => {
                if op.needs_login() && user.is_none() {
                    out.send(conn, &SessionMsg::Failed(OpError::NotAuthenticated));
                    return Routed::Done;
                }
                let deadline = now + self.handshake_timeout;
                self.set_op(conn, Op::AwaitData { op, deadline });
                if op.numbered() {
                    self.number_op(conn);
                }
                out.send(conn, &SessionMsg::Proceed { op });
            }
            (
                Stage::Established {
                    op: Op::Elsewhere, ..
                },
                SessionMsg::Transfer(m),
            ) => return Routed::Transfer(m),
            (
                Stage::Established {
                    op: Op::Elsewhere, ..
                },
                SessionMsg::Attrs { id, attrs },
            ) => return Routed::Attrs { id, attrs },
            // They follow an offer, which may have been refused (the
            // session is idle again) before they came: never an
            // operation's data.
            (Stage::Established { .. }, SessionMsg::Attrs { .. }) => {}
            (
                Stage::Established {
                    op: Op::AwaitData { op, .. },
                    ..
                },
                data,
            ) => return Routed::Data { op: *op, data },
            // A transfer message after its transfer ended: a sender that
            // resent DONE while the file was being made durable (an fsync
            // of gigabytes outlasts its resend timer), or a late duplicate
            // ack. The transfer has its answer already; the session goes on.
            (Stage::Established { .. }, SessionMsg::Transfer(_)) => {}
            (_, other) => {
                let what = match other {
                    SessionMsg::Credentials { .. } => "Credentials".to_string(),
                    SessionMsg::ChangePassword { .. } => "ChangePassword".to_string(),
                    SessionMsg::DeleteAccount { .. } => "DeleteAccount".to_string(),
                    other => format!("{other:?}"),
                };
                return Routed::Refuse(Refusal::Unexpected { what });
            }
        }
        Routed::Done
    }

    /// A session of a command the client numbered (`SessionMsg::Command`)
    /// numbers each of its mutations (`OpCode::numbered`), whether or not
    /// it orders a transaction: a try of the command through another server
    /// starts after the ones answered and runs the rest in the same order,
    /// so each gets the number it had, and the cluster tells the mutation
    /// it applied from a new one. (By transactions alone, a try whose first
    /// operations order nothing, their files being there already, numbered
    /// the rest lower, and they were taken for mutations applied before.)
    /// A server's own sessions number their transactions.
    fn number_op(&mut self, conn: ConnId) {
        if let Some(Conn {
            stage: Stage::Established {
                session, requests, ..
            },
            ..
        }) = self.conns.get_mut(&conn)
        {
            if *session & Origin::CLIENT_CHOSEN != 0 {
                *requests += 1;
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

    /// The session's operation is run elsewhere from now on.
    pub(super) fn run_elsewhere(&mut self, conn: ConnId) {
        self.set_op(conn, Op::Elsewhere);
    }

    /// The session's operation ended without an answer (a transfer says
    /// how it ended itself).
    pub(super) fn set_idle(&mut self, conn: ConnId) {
        self.set_op(conn, Op::Idle);
    }

    /// The login the session on `conn` proved, if any.
    pub(super) fn user(&self, conn: ConnId) -> Option<&SessionToken> {
        match self.conns.get(&conn).map(|c| &c.stage) {
            Some(Stage::Established { user, .. }) => user.as_ref(),
            _ => None,
        }
    }

    /// The session on `conn` now acts as `token`'s user, and only this one.
    pub(super) fn prove(&mut self, conn: ConnId, token: SessionToken) {
        if let Some(Conn {
            stage: Stage::Established { user, .. },
            ..
        }) = self.conns.get_mut(&conn)
        {
            *user = Some(token);
            self.logged_in(conn);
        }
    }

    /// Answers the session's operation; the session is idle again.
    pub(super) fn answer(
        &mut self,
        conn: ConnId,
        op: OpCode,
        msg: SessionMsg,
        out: &mut Outbox<ServerEvent>,
    ) {
        let outcome = match &msg {
            SessionMsg::Failed(e) => e.to_string(),
            SessionMsg::LoggedIn { user_id, .. } => format!("logged in user {user_id}"),
            // Not every digest of a batch of hundreds of files: a count
            // (each file's failure is the client's to tell).
            SessionMsg::BatchDone { outcomes } => {
                let stored = (outcomes.iter())
                    .filter(|o| matches!(o, super::messages::Landed::Stored { .. }))
                    .count();
                format!("stored {stored} of {} files", outcomes.len())
            }
            SessionMsg::SentAll { outcomes } => {
                let sent = (outcomes.iter())
                    .filter(|o| matches!(o, super::messages::Landed::Stored { .. }))
                    .count();
                format!("sent {sent} of {} files", outcomes.len())
            }
            // Not a line of megabytes for each `ls` of a large account.
            SessionMsg::Listing { files } => format!("listing of {} file(s)", files.len()),
            SessionMsg::ListingPart { files, .. } => {
                format!("listing page of {} file(s)", files.len())
            }
            other => format!("{other:?}"),
        };
        let stored = match &msg {
            SessionMsg::FileDone(FileOutcome::Stored { digest, .. }) => vec![*digest],
            SessionMsg::BatchDone { outcomes } => (outcomes.iter())
                .filter_map(|o| match o {
                    super::messages::Landed::Stored { digest, .. } => Some(*digest),
                    super::messages::Landed::Failed(_) => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        if let SessionMsg::LoggedIn { .. } = msg {
            // A password just proved (a login, or a password change).
            self.logged_in(conn);
        }
        out.send(conn, &msg);
        self.set_op(conn, Op::Idle);
        out.event(ServerEvent::Answered {
            conn,
            op,
            outcome,
            stored,
        });
    }

    /// Answers now, or not yet (`Ok(None)`: ordered through the master, or
    /// waiting for a transfer; answered later).
    pub(super) fn reply(
        &mut self,
        conn: ConnId,
        op: OpCode,
        reply: Result<Option<SessionMsg>, OpError>,
        out: &mut Outbox<ServerEvent>,
    ) {
        match reply {
            Ok(None) => {}
            Ok(Some(msg)) => self.answer(conn, op, msg, out),
            Err(e) => self.answer(conn, op, SessionMsg::Failed(e), out),
        }
    }

    /// Sends `txn` to the master on behalf of the session on `conn`; the
    /// session waits until it is applied here. The transaction's origin,
    /// unless `conn` has no session.
    pub(super) fn order(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        op: OpCode,
        txn: Txn,
        replica: &mut Replica,
        out: &mut Outbox<ServerEvent>,
    ) -> Result<Option<Origin>, OpError> {
        let deadline = now + self.request_timeout;
        self.order_by(now, deadline, conn, op, txn, replica, out)
    }

    /// [`Sessions::order`], answering "unavailable" at `deadline` if the
    /// transaction is not applied by then.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn order_by(
        &mut self,
        now: Timestamp,
        deadline: Timestamp,
        conn: ConnId,
        op: OpCode,
        txn: Txn,
        replica: &mut Replica,
        out: &mut Outbox<ServerEvent>,
    ) -> Result<Option<Origin>, OpError> {
        let Some(Conn {
            stage: Stage::Established {
                session, requests, ..
            },
            ..
        }) = self.conns.get_mut(&conn)
        else {
            return Ok(None);
        };
        // A client's command numbered the operation at its start.
        if *session & Origin::CLIENT_CHOSEN == 0 {
            *requests += 1;
        }
        let origin = Origin {
            server: self.id,
            session: *session,
            request: *requests,
        };
        if replica.submit(now, origin, txn, out).is_err() {
            return Err(OpError::Unavailable {
                reason: "too many requests are waiting for the master".into(),
            });
        }
        self.set_op(
            conn,
            Op::Ordering {
                op,
                origin,
                deadline,
            },
        );
        Ok(Some(origin))
    }

    /// The session waiting for `origin`'s transaction, and its operation.
    pub(super) fn ordering(&self, origin: &Origin) -> Option<(ConnId, OpCode)> {
        self.conns.iter().find_map(|(id, c)| match &c.stage {
            Stage::Established {
                op: Op::Ordering { op, origin: o, .. },
                ..
            } if o == origin => Some((*id, *op)),
            _ => None,
        })
    }

    /// The result the cluster already gave the next transaction of the
    /// session on `conn`, if the session is a client-named command tried
    /// again (its first try went through another server, or this one).
    pub(super) fn applied_before(&self, conn: ConnId, replica: &Replica) -> Option<TxnResult> {
        let Some(Conn {
            stage: Stage::Established {
                session, requests, ..
            },
            ..
        }) = self.conns.get(&conn)
        else {
            return None;
        };
        // The operation running: numbered at its start (`number_op`).
        let origin = Origin {
            server: self.id,
            session: *session,
            request: *requests,
        };
        let state = replica.state();
        origin
            .client_chosen()
            .then(|| state.applied_result(&origin).cloned())
            .flatten()
    }

    /// The connections whose deadline has passed; `elsewhere` gives the
    /// deadline of an operation run elsewhere.
    pub(super) fn late(
        &self,
        now: Timestamp,
        elsewhere: impl Fn(ConnId) -> Option<Timestamp>,
    ) -> Vec<ConnId> {
        self.conns
            .iter()
            .filter(|(id, c)| c.deadline(elsewhere(**id)).is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect()
    }

    /// `conn`'s deadline passed. `elsewhere`: the deadline of its operation,
    /// if that is run elsewhere.
    pub(super) fn on_deadline(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        elsewhere: Option<Timestamp>,
        out: &mut Outbox<ServerEvent>,
    ) -> Due {
        let Some(c) = self.conns.get(&conn) else {
            return Due::Done;
        };
        if c.login_deadline().is_some_and(|d| d <= now) {
            let secs = self.login_timeout.as_secs_f64();
            let step = format!("a login: a session must log in within {secs} s of connecting");
            return Due::Refuse(Refusal::Timeout { step });
        }
        let step = match &c.stage {
            // The operation's own deadline, if it has one, comes first.
            Stage::Established {
                op, idle_deadline, ..
            } if op.deadline(elsewhere).is_none_or(|d| d > now) => {
                if *idle_deadline > now {
                    return Due::Done;
                }
                "any message from an idle session"
            }
            Stage::Established {
                op: Op::Elsewhere, ..
            } => return Due::Elsewhere,
            Stage::Established {
                op: Op::Ordering { op, .. },
                ..
            } => {
                let op = *op;
                let reason =
                    "the master did not order the request in time; it may still take effect".into();
                let msg = SessionMsg::Failed(OpError::Unavailable { reason });
                self.answer(conn, op, msg, out);
                return Due::Done;
            }
            Stage::Established {
                op: Op::AwaitData { .. },
                ..
            } => "the operation's data",
            Stage::Established { op: Op::Idle, .. } => "any message from an idle session",
            Stage::AwaitAck { .. } => "the client's ACK",
            Stage::Opening { .. } => "the first message",
        };
        Due::Refuse(Refusal::Timeout { step: step.into() })
    }

    pub(super) fn poll_timeout(
        &self,
        elsewhere: impl Fn(ConnId) -> Option<Timestamp>,
    ) -> Option<Timestamp> {
        self.conns
            .iter()
            .filter_map(|(id, c)| c.deadline(elsewhere(*id)))
            .min()
    }
}

/// The refusal of data that does not belong to operation `op`.
pub(super) fn wrong_data(op: OpCode) -> Refusal {
    let what = format!("data that does not belong to {op:?}");
    Refusal::Unexpected { what }
}
