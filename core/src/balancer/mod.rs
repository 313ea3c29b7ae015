//! The balancer: finds a server with a free slot for each client.
//!
//! For each client request it asks servers round-robin "are you available?"
//! over a fresh connection, showing the auth code it minted for the client
//! and a proof that it holds the cluster secret. A yes means "I have a free
//! slot and am caught up, now"; it reserves nothing, so a flood of requests
//! costs the servers no slot. The client then gets the server's address and
//! the code, which is good for `code_ttl` (2 s): the slot is taken only by
//! the client's HELLO, and a server that filled up meanwhile refuses it and
//! the client asks again. A server that refuses the connection, breaks it,
//! or stays silent past the probe timeout is skipped and avoided for a
//! back-off period. When a whole round finds no yes the client gets
//! `NoServer`, never a hang.

pub mod messages;
pub mod per_source;

use crate::auth::{AuthCode, ClusterSecret};
use crate::entropy::Entropy;
use crate::frame::FrameDecoder;
use crate::io::{ConnId, Input, Node, Output};
use crate::outbox::{drain_messages, Outbox};
use crate::refusal::{Refusal, PROTOCOL_VERSION};
use crate::sabotage::{self, Sabotage};
use crate::time::{earliest, Timestamp};
use crate::tls::ClusterRole;
pub use messages::{BalancerMsg, ProbeMsg};
use per_source::{PerSource, PerSourceLimit};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerAddr {
    pub id: u32,
    pub addr: String,
}

#[derive(Clone, Debug)]
pub struct BalancerConfig {
    pub servers: Vec<ServerAddr>,
    /// How long a server may take to connect and answer a probe.
    pub probe_timeout: Duration,
    /// How long a silent server is avoided.
    pub backoff: Duration,
    /// How long a client may take to send its request after connecting.
    pub request_timeout: Duration,
    /// How long one client's search may take in all. Shorter than the
    /// client's own patience (5 s), so that a round through many silent
    /// servers ends in a clear `NoServer`, not in the client timing out.
    pub search_budget: Duration,
    /// Clients served at once; more are refused as overloaded.
    pub max_pending: usize,
    /// Requests one source address may make (see [`per_source`]).
    pub per_source: PerSourceLimit,
    /// How long the auth code handed to a client is good for.
    pub code_ttl: Duration,
}

impl BalancerConfig {
    pub fn new(servers: Vec<ServerAddr>) -> Self {
        BalancerConfig {
            servers,
            probe_timeout: Duration::from_secs(1),
            backoff: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            search_budget: Duration::from_secs(3),
            max_pending: 1024,
            per_source: PerSourceLimit::default(),
            code_ttl: crate::auth::CODE_TTL,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BalancerEvent {
    Probing {
        client: ConnId,
        server: u32,
    },
    Answered {
        server: u32,
        available: bool,
    },
    /// The server did not answer; it is avoided until the back-off ends.
    Skipped {
        server: u32,
        why: String,
    },
    Assigned {
        client: ConnId,
        server: u32,
        code: String,
    },
    NoServer {
        client: ConnId,
        tally: Tally,
    },
    Refused {
        client: ConnId,
        reason: Refusal,
    },
}

impl fmt::Display for BalancerEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BalancerEvent::Probing { client, server } => {
                write!(f, "probe server {server} for client {client}")
            }
            BalancerEvent::Answered { server, available } => write!(
                f,
                "server {server} answered {}",
                if *available { "yes" } else { "no" }
            ),
            BalancerEvent::Skipped { server, why } => write!(f, "skip server {server}: {why}"),
            BalancerEvent::Assigned {
                client,
                server,
                code,
            } => write!(f, "assign client {client} to server {server} code {code}"),
            BalancerEvent::NoServer { client, tally } => {
                write!(f, "no server for client {client}: {tally}")
            }
            BalancerEvent::Refused { client, reason } => {
                write!(f, "refuse client {client}: {reason}")
            }
        }
    }
}

struct Pending {
    decoder: FrameDecoder,
    stage: Stage,
}

enum Stage {
    AwaitRequest {
        deadline: Timestamp,
    },
    Searching {
        /// Server indexes still to ask in this round, in order.
        plan: Vec<usize>,
        /// When the search gives up, whatever is left of the plan.
        until: Timestamp,
        tally: Tally,
        probe: ConnId,
    },
}

/// What one search's probes heard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub probed: u32,
    pub busy: u32,
    pub no_master: u32,
    pub catching_up: u32,
}

impl Tally {
    /// Servers that did not answer (down, cut off, or refusing).
    pub fn silent(&self) -> u32 {
        // The figures come off the wire: they need not add up, nor fit.
        let heard = (self.busy)
            .saturating_add(self.no_master)
            .saturating_add(self.catching_up);
        self.probed.saturating_sub(heard)
    }
}

/// "none answering (3 asked)", "no master elected yet (3 asked: 2 without a
/// master, 1 not answering)": the case first, then the figures.
impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let silent = self.silent();
        let case = if silent == self.probed {
            "none answering"
        } else if self.busy == self.probed {
            "all busy"
        } else if self.no_master > 0 {
            "no master elected yet"
        } else if self.catching_up > 0 {
            "servers are catching up with the master"
        } else {
            "none free"
        };
        write!(f, "{case} ({} asked", self.probed)?;
        let parts: Vec<String> = [
            (self.busy, "busy"),
            (self.no_master, "without a master"),
            (self.catching_up, "catching up"),
            (silent, "not answering"),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0 && *n < self.probed)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        if !parts.is_empty() {
            write!(f, ": {}", parts.join(", "))?;
        }
        f.write_str(")")
    }
}

struct Probe {
    client: ConnId,
    server: usize,
    code: AuthCode,
    deadline: Timestamp,
    decoder: FrameDecoder,
}

pub struct Balancer {
    cfg: BalancerConfig,
    secret: ClusterSecret,
    entropy: Entropy,
    cursor: usize,
    backoff_until: Vec<Timestamp>,
    clients: BTreeMap<ConnId, Pending>,
    probes: BTreeMap<ConnId, Probe>,
    next_dial: u64,
    per_source: PerSource,
    out: Outbox<BalancerEvent>,
}

enum ProbeOutcome {
    Yes,
    No(NoBecause),
    Silent(String),
}

#[derive(Clone, Copy, Debug)]
enum NoBecause {
    Busy,
    NoMaster,
    CatchingUp,
}

impl Balancer {
    pub fn new(cfg: BalancerConfig, secret: ClusterSecret, entropy: Entropy) -> Self {
        let n = cfg.servers.len();
        Balancer {
            secret,
            entropy,
            cursor: 0,
            backoff_until: vec![Timestamp::ZERO; n],
            clients: BTreeMap::new(),
            probes: BTreeMap::new(),
            next_dial: 0,
            per_source: PerSource::new(cfg.per_source),
            out: Outbox::default(),
            cfg,
        }
    }

    /// Clients currently being served (for tests and metrics).
    pub fn pending(&self) -> usize {
        self.clients.len()
    }

    fn on_client_bytes(&mut self, now: Timestamp, conn: ConnId, bytes: &[u8]) {
        let Some(p) = self.clients.get_mut(&conn) else {
            return;
        };
        p.decoder.push(bytes);
        let mut msgs = Vec::new();
        if let Err(e) = drain_messages::<BalancerMsg>(&mut p.decoder, &mut msgs) {
            return self.refuse_client(
                conn,
                Refusal::Malformed {
                    detail: e.to_string(),
                },
            );
        }
        for msg in msgs {
            let Some(p) = self.clients.get(&conn) else {
                return;
            };
            match (&p.stage, msg) {
                (Stage::AwaitRequest { .. }, BalancerMsg::GetServer { version }) => {
                    if version != PROTOCOL_VERSION {
                        return self.refuse_client(
                            conn,
                            Refusal::VersionMismatch {
                                ours: PROTOCOL_VERSION,
                                theirs: version,
                            },
                        );
                    }
                    let plan = self.round_plan(now);
                    let Some(p) = self.clients.get_mut(&conn) else {
                        return;
                    };
                    p.stage = Stage::Searching {
                        plan,
                        until: now + self.cfg.search_budget,
                        tally: Tally::default(),
                        probe: ConnId::dialed(u64::MAX),
                    };
                    self.probe_next(now, conn);
                }
                (_, other) => {
                    return self.refuse_client(
                        conn,
                        Refusal::Unexpected {
                            what: format!("{other:?}"),
                        },
                    )
                }
            }
        }
    }

    /// The servers to ask for one request: every server once, starting at the
    /// round-robin cursor, leaving out those in back-off, unless all are in
    /// back-off, in which case all are asked (they may have come back).
    fn round_plan(&self, now: Timestamp) -> Vec<usize> {
        let n = self.cfg.servers.len();
        let order: Vec<usize> = (0..n).map(|i| (self.cursor + i) % n).collect();
        let healthy: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&i| self.backoff_until[i] <= now)
            .collect();
        if healthy.is_empty() {
            order
        } else {
            healthy
        }
    }

    fn probe_next(&mut self, now: Timestamp, client: ConnId) {
        let Some(Pending {
            stage:
                Stage::Searching {
                    plan,
                    until,
                    tally,
                    probe,
                },
            ..
        }) = self.clients.get_mut(&client)
        else {
            return;
        };
        let until = *until;
        if plan.is_empty() || now >= until {
            let tally = *tally;
            let msg = BalancerMsg::NoServer {
                probed: tally.probed,
                busy: tally.busy,
                no_master: tally.no_master,
                catching_up: tally.catching_up,
            };
            self.out.send(client, &msg);
            self.out.close(client);
            self.clients.remove(&client);
            self.out.event(BalancerEvent::NoServer { client, tally });
            return;
        }
        let idx = plan.remove(0);
        tally.probed += 1;
        let conn = ConnId::dialed(self.next_dial);
        self.next_dial += 1;
        *probe = conn;
        self.cursor = (idx + 1) % self.cfg.servers.len();
        let server = &self.cfg.servers[idx];
        let code = (self.secret).mint(server.id, self.entropy.bytes(), now, self.cfg.code_ttl);
        self.out.connect(conn, server.addr.clone());
        self.out.event(BalancerEvent::Probing {
            client,
            server: server.id,
        });
        self.probes.insert(
            conn,
            Probe {
                client,
                server: idx,
                code,
                deadline: (now + self.cfg.probe_timeout).min(until),
                decoder: FrameDecoder::default(),
            },
        );
    }

    fn on_probe_bytes(&mut self, now: Timestamp, conn: ConnId, bytes: &[u8]) {
        let Some(probe) = self.probes.get_mut(&conn) else {
            return;
        };
        probe.decoder.push(bytes);
        let mut msgs = Vec::new();
        let outcome = match drain_messages::<ProbeMsg>(&mut probe.decoder, &mut msgs) {
            Err(e) => ProbeOutcome::Silent(format!("bad answer: {e}")),
            Ok(()) => match msgs.into_iter().next() {
                None => return,
                Some(ProbeMsg::Available) => ProbeOutcome::Yes,
                Some(ProbeMsg::Busy) if sabotage::on(Sabotage::BalancerTakesNoForYes) => {
                    ProbeOutcome::Yes
                }
                Some(ProbeMsg::Busy) => ProbeOutcome::No(NoBecause::Busy),
                Some(ProbeMsg::NoMaster) => ProbeOutcome::No(NoBecause::NoMaster),
                Some(ProbeMsg::CatchingUp) => ProbeOutcome::No(NoBecause::CatchingUp),
                Some(ProbeMsg::Refused(r)) => ProbeOutcome::Silent(format!("refused: {r}")),
                Some(other) => ProbeOutcome::Silent(format!("unexpected answer {other:?}")),
            },
        };
        self.finish_probe(now, conn, outcome);
    }

    fn finish_probe(&mut self, now: Timestamp, conn: ConnId, outcome: ProbeOutcome) {
        let Some(probe) = self.probes.remove(&conn) else {
            return;
        };
        self.out.close(conn);
        let server = self.cfg.servers[probe.server].clone();
        match outcome {
            ProbeOutcome::Yes => {
                self.out.event(BalancerEvent::Answered {
                    server: server.id,
                    available: true,
                });
                let label = probe.code.label();
                self.out.send(
                    probe.client,
                    &BalancerMsg::Assigned {
                        server_id: server.id,
                        addr: server.addr,
                        code: probe.code,
                    },
                );
                self.out.close(probe.client);
                self.clients.remove(&probe.client);
                self.out.event(BalancerEvent::Assigned {
                    client: probe.client,
                    server: server.id,
                    code: label,
                });
                return;
            }
            ProbeOutcome::No(because) => {
                self.out.event(BalancerEvent::Answered {
                    server: server.id,
                    available: false,
                });
                if let Some(Pending {
                    stage: Stage::Searching { tally, .. },
                    ..
                }) = self.clients.get_mut(&probe.client)
                {
                    match because {
                        NoBecause::Busy => tally.busy += 1,
                        NoBecause::NoMaster => tally.no_master += 1,
                        NoBecause::CatchingUp => tally.catching_up += 1,
                    }
                }
            }
            ProbeOutcome::Silent(why) => {
                self.backoff_until[probe.server] = now + self.cfg.backoff;
                self.out.event(BalancerEvent::Skipped {
                    server: server.id,
                    why,
                });
            }
        }
        self.probe_next(now, probe.client);
    }

    fn refuse_client(&mut self, conn: ConnId, reason: Refusal) {
        self.out.send(conn, &BalancerMsg::Refused(reason.clone()));
        self.out.close(conn);
        self.drop_client(conn);
        self.out.event(BalancerEvent::Refused {
            client: conn,
            reason,
        });
    }

    /// Forgets a client and abandons its probe (which reserved nothing).
    fn drop_client(&mut self, conn: ConnId) {
        if let Some(Pending {
            stage: Stage::Searching { probe, .. },
            ..
        }) = self.clients.remove(&conn)
        {
            if self.probes.remove(&probe).is_some() {
                self.out.close(probe);
            }
        }
    }
}

impl Node for Balancer {
    type Event = BalancerEvent;

    fn handle_input(&mut self, now: Timestamp, input: Input<'_>) {
        match input {
            Input::Accepted { conn, peer, .. } => {
                // One machine asking as fast as it can is told to wait
                // before it costs any server anything.
                if let Err(wait) = self.per_source.take(now, &peer) {
                    let retry_after_ms = wait.as_millis() as u64;
                    let refusal = Refusal::TooMany { retry_after_ms };
                    self.out.send(conn, &BalancerMsg::Refused(refusal));
                    self.out.close(conn);
                    return;
                }
                if self.clients.len() >= self.cfg.max_pending {
                    self.out
                        .send(conn, &BalancerMsg::Refused(Refusal::Overloaded));
                    self.out.close(conn);
                    return;
                }
                self.clients.insert(
                    conn,
                    Pending {
                        decoder: FrameDecoder::default(),
                        stage: Stage::AwaitRequest {
                            deadline: now + self.cfg.request_timeout,
                        },
                    },
                );
            }
            Input::Connected { conn, identity } => {
                // The auth code is for a server of this cluster only.
                if self.probes.contains_key(&conn) && !identity.may_be(ClusterRole::Server) {
                    let why = format!("it is not a server of this cluster ({identity})");
                    self.finish_probe(now, conn, ProbeOutcome::Silent(why));
                    return;
                }
                if let Some(probe) = self.probes.get(&conn) {
                    let msg = ProbeMsg::Probe {
                        version: PROTOCOL_VERSION,
                        code: probe.code.clone(),
                        proof: self.secret.probe_proof(&probe.code),
                    };
                    self.out.send(conn, &msg);
                }
            }
            Input::ConnectFailed { conn, reason } => {
                self.finish_probe(now, conn, ProbeOutcome::Silent(reason));
            }
            Input::Received { conn, bytes } => {
                if self.probes.contains_key(&conn) {
                    self.on_probe_bytes(now, conn, bytes);
                } else {
                    self.on_client_bytes(now, conn, bytes);
                }
            }
            Input::Persisted { .. }
            | Input::FileRead { .. }
            | Input::FilePersisted { .. }
            | Input::Listed { .. }
            | Input::Renamed { .. }
            | Input::Space { .. }
            | Input::FileFailed { .. } => {}
            Input::Closed { conn } => {
                if self.probes.contains_key(&conn) {
                    self.finish_probe(now, conn, ProbeOutcome::Silent("connection closed".into()));
                } else {
                    self.drop_client(conn);
                }
            }
        }
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        let silent: Vec<ConnId> = self
            .probes
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(c, _)| *c)
            .collect();
        for conn in silent {
            self.finish_probe(now, conn, ProbeOutcome::Silent("no answer in time".into()));
        }
        let idle: Vec<ConnId> = self
            .clients
            .iter()
            .filter(|(_, p)| matches!(p.stage, Stage::AwaitRequest { deadline } if deadline <= now))
            .map(|(c, _)| *c)
            .collect();
        for conn in idle {
            self.refuse_client(
                conn,
                Refusal::Timeout {
                    step: "a server request".into(),
                },
            );
        }
    }

    fn poll_output(&mut self) -> Option<Output<BalancerEvent>> {
        self.out.pop()
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        let probes = self.probes.values().map(|p| p.deadline).min();
        let clients = self
            .clients
            .values()
            .filter_map(|p| match p.stage {
                Stage::AwaitRequest { deadline } => Some(deadline),
                Stage::Searching { .. } => None,
            })
            .min();
        earliest(probes, clients)
    }
}

#[cfg(test)]
mod tests;
