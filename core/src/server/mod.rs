//! A file server: answers the balancer's probes and runs client sessions.
//!
//! One listener serves every link; the first frame's tag says which link a
//! connection speaks. A server has `max_clients` slots: established sessions,
//! sessions mid-handshake and live reservations each hold one, and it answers
//! a probe "yes" only while a slot is free.

pub mod messages;
pub mod reservations;

use crate::auth::{AuthCode, ClusterSecret};
use crate::balancer::messages::{ProbeMsg, PROBE_TAGS};
use crate::frame::{self, FrameDecoder};
use crate::io::{ConnId, Input, Node, Output};
use crate::outbox::Outbox;
use crate::refusal::{Refusal, PROTOCOL_VERSION};
use crate::time::{earliest, Timestamp};
pub use messages::{SessionMsg, SESSION_TAGS};
use reservations::Reservations;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub id: u32,
    pub max_clients: u32,
    /// How long a slot reserved for a client stays reserved.
    pub reservation_ttl: Duration,
    /// How long each step of a handshake may take.
    pub handshake_timeout: Duration,
    /// Silence after which an established session is closed and its slot
    /// freed. A client that vanished without a FIN (power loss, partition)
    /// must not hold a slot forever; live clients ping well within this.
    pub idle_timeout: Duration,
}

impl ServerConfig {
    pub fn new(id: u32) -> Self {
        ServerConfig {
            id,
            max_clients: 64,
            reservation_ttl: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerEvent {
    Probed { available: bool, code: String },
    ReservationsLapsed { count: usize },
    Established { conn: ConnId, code: String },
    Refused { conn: ConnId, reason: Refusal },
    SessionEnded { conn: ConnId },
}

impl fmt::Display for ServerEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerEvent::Probed { available, code } => write!(
                f,
                "probe {code}: {}",
                if *available {
                    "yes, slot reserved"
                } else {
                    "no"
                }
            ),
            ServerEvent::ReservationsLapsed { count } => {
                write!(f, "{count} reservation(s) lapsed")
            }
            ServerEvent::Established { conn, code } => {
                write!(f, "session {conn} established with code {code}")
            }
            ServerEvent::Refused { conn, reason } => write!(f, "refuse {conn}: {reason}"),
            ServerEvent::SessionEnded { conn } => write!(f, "session {conn} ended"),
        }
    }
}

enum Stage {
    /// Connected; the first frame will say which link this is.
    Opening {
        deadline: Timestamp,
    },
    /// HELLO accepted and answered; waiting for the client's ACK.
    AwaitAck {
        deadline: Timestamp,
    },
    Established {
        idle_deadline: Timestamp,
    },
}

impl Stage {
    fn holds_slot(&self) -> bool {
        matches!(self, Stage::AwaitAck { .. } | Stage::Established { .. })
    }

    fn deadline(&self) -> Option<Timestamp> {
        match self {
            Stage::Opening { deadline } | Stage::AwaitAck { deadline } => Some(*deadline),
            Stage::Established { idle_deadline } => Some(*idle_deadline),
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
    conns: BTreeMap<ConnId, Conn>,
    reservations: Reservations,
    out: Outbox<ServerEvent>,
}

impl Server {
    pub fn new(cfg: ServerConfig, secret: ClusterSecret) -> Self {
        let ttl = cfg.reservation_ttl;
        Server {
            cfg,
            secret,
            conns: BTreeMap::new(),
            reservations: Reservations::new(ttl),
            out: Outbox::default(),
        }
    }

    pub fn id(&self) -> u32 {
        self.cfg.id
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
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.decoder.push(bytes);
        loop {
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            let payload = match c.decoder.next_payload() {
                Ok(Some(p)) => p.to_vec(),
                Ok(None) => return,
                Err(e) => {
                    return self.refuse(
                        conn,
                        Refusal::Malformed {
                            detail: e.to_string(),
                        },
                        Link::Session,
                    )
                }
            };
            let tag = payload.first().copied().unwrap_or(0);
            let opening = matches!(c.stage, Stage::Opening { .. });
            if opening && PROBE_TAGS.contains(&tag) {
                return self.on_probe(now, conn, &payload);
            }
            if !SESSION_TAGS.contains(&tag) {
                return self.refuse(
                    conn,
                    Refusal::Malformed {
                        detail: format!("unknown message tag {tag}"),
                    },
                    Link::Session,
                );
            }
            match frame::decode::<SessionMsg>(&payload) {
                Ok(msg) => self.on_session_msg(now, conn, msg),
                Err(e) => {
                    return self.refuse(
                        conn,
                        Refusal::Malformed {
                            detail: e.to_string(),
                        },
                        Link::Session,
                    )
                }
            }
        }
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
                let r = Refusal::Unexpected {
                    what: format!("{other:?}"),
                };
                return self.refuse(conn, r, Link::Probe);
            }
            Err(e) => {
                let r = Refusal::Malformed {
                    detail: e.to_string(),
                };
                return self.refuse(conn, r, Link::Probe);
            }
        };
        if let Err(r) = self.check_code(&code) {
            return self.refuse(conn, r, Link::Probe);
        }
        self.reservations.expire(now);
        let available = self.has_free_slot() && self.reservations.reserve(now, code.nonce).is_ok();
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
            stage: Stage::Established { idle_deadline },
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
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.stage = Stage::AwaitAck { deadline };
                }
                self.out.send(
                    conn,
                    &SessionMsg::HelloAck {
                        server_id: self.cfg.id,
                    },
                );
                self.out.event(ServerEvent::Established {
                    conn,
                    code: code.label(),
                });
            }
            (Stage::AwaitAck { .. }, SessionMsg::Ack) => {
                let idle_deadline = now + self.cfg.idle_timeout;
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.stage = Stage::Established { idle_deadline };
                }
            }
            (Stage::Established { .. }, SessionMsg::Ping) => {
                self.out.send(conn, &SessionMsg::Pong);
            }
            (_, other) => {
                let r = Refusal::Unexpected {
                    what: format!("{other:?}"),
                };
                self.refuse(conn, r, Link::Session);
            }
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
            Input::Closed { conn } => self.forget(conn),
            // The server dials nobody yet.
            Input::Connected { .. } | Input::ConnectFailed { .. } => {}
        }
    }

    fn handle_timeout(&mut self, now: Timestamp) {
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
            let step = match self.conns.get(&conn).map(|c| &c.stage) {
                Some(Stage::AwaitAck { .. }) => "the client's ACK",
                Some(Stage::Established { .. }) => "any message from an idle session",
                _ => "the first message",
            };
            let r = Refusal::Timeout { step: step.into() };
            self.refuse(conn, r, Link::Session);
        }
    }

    fn poll_output(&mut self) -> Option<Output<ServerEvent>> {
        self.out.pop()
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        let conns = self.conns.values().filter_map(|c| c.stage.deadline()).min();
        earliest(conns, self.reservations.next_deadline())
    }
}

#[cfg(test)]
mod tests;
