//! A dishonest client that replays its auth code, so that "no code is
//! accepted twice" is tested against someone who tries.
//!
//! It asks the balancer for a server like an honest client, then presents
//! the code it got on two connections to the assigned server at once, and on
//! a third connection to another server. At most one presentation may be
//! accepted, and never the one to the other server.
//!
//! It is a sans-IO [`Node`] like the real ones, run by the same driver; it
//! speaks the real messages through the core's framing.

use ferry_core::auth::AuthCode;
use ferry_core::balancer::BalancerMsg;
use ferry_core::frame::FrameDecoder;
use ferry_core::outbox::{drain_messages, Outbox};
use ferry_core::refusal::{Refusal, PROTOCOL_VERSION};
use ferry_core::server::SessionMsg;
use ferry_core::{ConnId, Input, Node, Output, Timestamp};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// How long the whole attempt may take before the attacker gives up.
const PATIENCE: Duration = Duration::from_secs(8);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttackEvent {
    GotCode {
        server: u32,
        code: String,
        presentations: usize,
    },
    NoCode {
        why: String,
    },
    Accepted {
        conn: ConnId,
        server: u32,
    },
    Refused {
        conn: ConnId,
        server: u32,
        reason: Refusal,
    },
    Lost {
        conn: ConnId,
        server: u32,
        why: String,
    },
    Done,
}

impl fmt::Display for AttackEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttackEvent::GotCode {
                server,
                code,
                presentations,
            } => write!(
                f,
                "got code {code} for server {server}; present it {presentations} times"
            ),
            AttackEvent::NoCode { why } => write!(f, "got no code: {why}"),
            AttackEvent::Accepted { conn, server } => {
                write!(f, "replayed code ACCEPTED by server {server} on {conn}")
            }
            AttackEvent::Refused {
                conn,
                server,
                reason,
            } => write!(
                f,
                "replayed code refused by server {server} on {conn}: {reason}"
            ),
            AttackEvent::Lost { conn, server, why } => {
                write!(f, "no answer from server {server} on {conn}: {why}")
            }
            AttackEvent::Done => f.write_str("done"),
        }
    }
}

/// How one presentation of the code ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Presented {
    Pending,
    Accepted,
    Refused(Refusal),
    Lost(String),
}

struct Presentation {
    server: u32,
    decoder: FrameDecoder,
    result: Presented,
}

pub struct ReplayAttacker {
    balancer: String,
    /// Every server of the cluster: (id, address).
    servers: Vec<(u32, String)>,
    balancer_conn: Option<(ConnId, FrameDecoder)>,
    code: Option<AuthCode>,
    presentations: BTreeMap<ConnId, Presentation>,
    next_dial: u64,
    deadline: Option<Timestamp>,
    done: bool,
    out: Outbox<AttackEvent>,
}

impl ReplayAttacker {
    pub fn new(balancer: String, servers: Vec<(u32, String)>) -> Self {
        ReplayAttacker {
            balancer,
            servers,
            balancer_conn: None,
            code: None,
            presentations: BTreeMap::new(),
            next_dial: 0,
            deadline: None,
            done: false,
            out: Outbox::default(),
        }
    }

    pub fn start(&mut self, now: Timestamp) {
        let conn = self.dial(self.balancer.clone());
        self.balancer_conn = Some((conn, FrameDecoder::default()));
        self.deadline = Some(now + PATIENCE);
    }

    /// The server the code was minted for, and how each presentation ended.
    pub fn results(&self) -> (Option<u32>, Vec<(u32, Presented)>) {
        let target = self.code.as_ref().map(|c| c.server_id);
        let results = self
            .presentations
            .values()
            .map(|p| (p.server, p.result.clone()))
            .collect();
        (target, results)
    }

    fn dial(&mut self, addr: String) -> ConnId {
        let conn = ConnId::dialed(self.next_dial);
        self.next_dial += 1;
        self.out.connect(conn, addr);
        conn
    }

    fn on_balancer_msg(&mut self, msg: BalancerMsg) {
        if let Some((conn, _)) = self.balancer_conn.take() {
            self.out.close(conn);
        }
        let BalancerMsg::Assigned {
            server_id, code, ..
        } = msg
        else {
            return self.give_up(format!("{msg:?}"));
        };
        // Twice to the server the code is for, once to another one.
        let mut targets = vec![server_id, server_id];
        if let Some((other, _)) = self.servers.iter().find(|(id, _)| *id != server_id) {
            targets.push(*other);
        }
        self.out.event(AttackEvent::GotCode {
            server: server_id,
            code: code.label(),
            presentations: targets.len(),
        });
        self.code = Some(code);
        for server in targets {
            let Some((_, addr)) = self.servers.iter().find(|(id, _)| *id == server) else {
                continue;
            };
            let conn = self.dial(addr.clone());
            self.presentations.insert(
                conn,
                Presentation {
                    server,
                    decoder: FrameDecoder::default(),
                    result: Presented::Pending,
                },
            );
        }
    }

    fn give_up(&mut self, why: String) {
        self.out.event(AttackEvent::NoCode { why });
        self.finish();
    }

    fn settle(&mut self, conn: ConnId, result: Presented) {
        let Some(p) = self.presentations.get_mut(&conn) else {
            return;
        };
        if p.result != Presented::Pending {
            return;
        }
        let server = p.server;
        p.result = result.clone();
        self.out.event(match result {
            Presented::Accepted => AttackEvent::Accepted { conn, server },
            Presented::Refused(reason) => AttackEvent::Refused {
                conn,
                server,
                reason,
            },
            Presented::Lost(why) => AttackEvent::Lost { conn, server, why },
            Presented::Pending => return,
        });
        if self
            .presentations
            .values()
            .all(|p| p.result != Presented::Pending)
        {
            self.finish();
        }
    }

    fn finish(&mut self) {
        if !self.done {
            self.done = true;
            self.deadline = None;
            self.out.event(AttackEvent::Done);
        }
    }

    fn on_session_bytes(&mut self, conn: ConnId, bytes: &[u8]) {
        let Some(p) = self.presentations.get_mut(&conn) else {
            return;
        };
        p.decoder.push(bytes);
        let mut msgs = Vec::new();
        if let Err(e) = drain_messages::<SessionMsg>(&mut p.decoder, &mut msgs) {
            return self.settle(conn, Presented::Lost(format!("unreadable answer: {e}")));
        }
        for msg in msgs {
            match msg {
                SessionMsg::HelloAck { .. } => {
                    self.out.send(conn, &SessionMsg::Ack);
                    self.settle(conn, Presented::Accepted);
                }
                SessionMsg::Refused(r) => self.settle(conn, Presented::Refused(r)),
                other => self.settle(conn, Presented::Lost(format!("unexpected {other:?}"))),
            }
        }
    }
}

impl Node for ReplayAttacker {
    type Event = AttackEvent;

    fn handle_input(&mut self, now: Timestamp, input: Input<'_>) {
        let _ = now;
        let balancer = self.balancer_conn.as_ref().map(|(c, _)| *c);
        let to_balancer = |c: ConnId| Some(c) == balancer;
        match input {
            Input::Connected { conn, .. } if to_balancer(conn) => {
                let msg = BalancerMsg::GetServer {
                    version: PROTOCOL_VERSION,
                };
                self.out.send(conn, &msg);
            }
            Input::Connected { conn, .. } => {
                if let Some(code) = &self.code {
                    let msg = SessionMsg::Hello {
                        version: PROTOCOL_VERSION,
                        code: code.clone(),
                    };
                    self.out.send(conn, &msg);
                }
            }
            Input::Received { conn, bytes } if to_balancer(conn) => {
                let Some((_, decoder)) = &mut self.balancer_conn else {
                    return;
                };
                decoder.push(bytes);
                let mut msgs = Vec::new();
                match drain_messages::<BalancerMsg>(decoder, &mut msgs) {
                    Err(e) => self.give_up(format!("unreadable answer: {e}")),
                    Ok(()) => {
                        if let Some(msg) = msgs.into_iter().next() {
                            self.on_balancer_msg(msg);
                        }
                    }
                }
            }
            Input::Received { conn, bytes } => self.on_session_bytes(conn, bytes),
            Input::ConnectFailed { conn, reason } if to_balancer(conn) => {
                self.balancer_conn = None;
                self.give_up(reason);
            }
            Input::Closed { conn } if to_balancer(conn) => {
                self.balancer_conn = None;
                self.give_up("balancer closed the connection".into());
            }
            Input::ConnectFailed { conn, reason } => self.settle(conn, Presented::Lost(reason)),
            Input::Closed { conn } => {
                self.settle(conn, Presented::Lost("connection closed".into()))
            }
            // It listens for nothing, persists nothing and has no files.
            Input::Accepted { .. }
            | Input::Persisted { .. }
            | Input::FileRead { .. }
            | Input::FilePersisted { .. }
            | Input::Listed { .. }
            | Input::Renamed { .. }
            | Input::Space { .. }
            | Input::FileFailed { .. } => {}
        }
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        if self.deadline.is_some_and(|d| d <= now) {
            if let Some((conn, _)) = self.balancer_conn.take() {
                self.out.close(conn);
                return self.give_up("the balancer did not answer in time".into());
            }
            let pending: Vec<ConnId> = self
                .presentations
                .iter()
                .filter(|(_, p)| p.result == Presented::Pending)
                .map(|(c, _)| *c)
                .collect();
            for conn in pending {
                self.out.close(conn);
                self.settle(conn, Presented::Lost("no answer in time".into()));
            }
            self.finish();
        }
    }

    fn poll_output(&mut self) -> Option<Output<AttackEvent>> {
        self.out.pop()
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        self.deadline
    }
}

/// The attacker speaks TLS as any client does: what it replays is the
/// protocol's, inside a link of its own.
impl crate::tls::TlsRole for ReplayAttacker {
    fn tls_role() -> crate::tls::SimTls {
        crate::tls::SimTls::Client
    }
}
