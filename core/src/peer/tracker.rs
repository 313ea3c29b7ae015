//! The peer's link to the tracker: an ordinary client session (through a
//! balancer, or straight to a server), proven with the saved login, on
//! which the peer registers (REGISTER OK) and then hears UPDATE whenever
//! the list changes. The session's pings keep the registration alive; the
//! server renews the lease while they come.
//!
//! The session is a [`Client`] node driven from inside the peer. Its
//! connection ids are moved into a range of their own (one per attempt),
//! so that the peer's own connections and a late word about an earlier
//! attempt's never reach the wrong owner. A registration lost after REGISTER
//! OK (its server died, the link broke) is made again, with growing pauses;
//! one refused before it (no login, bad address) is reported and left.

use super::event::PeerEvent;
use crate::accounts::token::SessionToken;
use crate::client::{Client, ClientConfig, ClientEvent};
use crate::io::{ConnId, Input, Node, Output};
use crate::outbox::Outbox;
use crate::replication::sync_round::Token;
use crate::server::messages::{OpError, PeerInfo, Request, Response};
use crate::time::{earliest, Timestamp};
use std::time::Duration;

/// Dialed connection ids of attempt `g` are `TRACKER_BASE + g << 24 + n`.
const TRACKER_BASE: u64 = 1 << 48;
const ATTEMPT_SPAN: u64 = 1 << 24;
/// Pauses between attempts after a registration is lost.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

enum Stage {
    Off,
    /// Getting a session, then proving the login.
    Proving,
    /// `PeerRegister` asked.
    Registering,
    Registered {
        peer: u64,
    },
    /// Lost after REGISTER OK; the next attempt at `at`.
    Waiting {
        at: Timestamp,
    },
}

pub(super) struct Tracker {
    /// The balancer's or server's address registered through.
    addr: String,
    /// Where this peer listens, as the tracker lists it.
    advertise: String,
    token: Option<SessionToken>,
    client: Option<Client>,
    attempt: u64,
    stage: Stage,
    /// Was this peer ever registered (so a loss is retried)?
    was_registered: bool,
    backoff: Duration,
    ticket: Option<[u8; 32]>,
    peers: Vec<PeerInfo>,
    /// What the cluster said of SYNC rounds, for the node to act on.
    news: Vec<SyncNews>,
}

/// The cluster's word on a SYNC round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum SyncNews {
    /// SYNC OK: this peer writes now.
    Write {
        round: u64,
        token: Token,
        order: Vec<u64>,
    },
    /// SYNC READ: `writer` writes now.
    Read {
        round: u64,
        writer: u64,
        token: Token,
    },
    End {
        round: u64,
    },
}

impl Tracker {
    pub(super) fn new(advertise: String, token: Option<SessionToken>) -> Self {
        Tracker {
            addr: String::new(),
            advertise,
            token,
            client: None,
            attempt: 0,
            stage: Stage::Off,
            was_registered: false,
            backoff: BACKOFF_MIN,
            ticket: None,
            peers: Vec::new(),
            news: Vec::new(),
        }
    }

    /// This peer's id and ticket, while registered.
    pub(super) fn me(&self) -> Option<(u64, [u8; 32])> {
        match (&self.stage, self.ticket) {
            (Stage::Registered { peer }, Some(t)) => Some((*peer, t)),
            _ => None,
        }
    }

    /// The last list heard.
    pub(super) fn peers(&self) -> &[PeerInfo] {
        &self.peers
    }

    pub(super) fn is_active(&self) -> bool {
        !matches!(self.stage, Stage::Off)
    }

    /// What the cluster said of rounds since the last call.
    pub(super) fn take_news(&mut self) -> Vec<SyncNews> {
        std::mem::take(&mut self.news)
    }

    /// SYNC: asks the cluster for a round (answered as an event).
    pub(super) fn request_sync(
        &mut self,
        now: Timestamp,
        out: &mut Outbox<PeerEvent>,
    ) -> Result<(), String> {
        if self.me().is_none() {
            return Err("not registered (run `register` first)".into());
        }
        let c = (self.client.as_mut()).ok_or("not registered (run `register` first)")?;
        c.request(now, Request::Sync)
            .map_err(|_| "the tracker is busy; try again".to_string())?;
        self.pump(now, out);
        Ok(())
    }

    /// SYNC FIN, or SYNC WRITING (`fin: false`), for the turn under `token`.
    pub(super) fn sync_say(
        &mut self,
        now: Timestamp,
        round: u64,
        token: Token,
        fin: bool,
        out: &mut Outbox<PeerEvent>,
    ) {
        if let Some(c) = self.client.as_mut() {
            let _ = match fin {
                true => c.sync_fin(round, token),
                false => c.sync_writing(round, token),
            };
            self.pump(now, out);
        }
    }

    /// Does `conn` belong to the tracker link?
    pub(super) fn owns(conn: ConnId) -> bool {
        conn.dialed && conn.n >= TRACKER_BASE
    }

    /// Registers through `addr`, leaving any registration made before.
    pub(super) fn register(&mut self, now: Timestamp, addr: String, out: &mut Outbox<PeerEvent>) {
        if self.token.is_none() {
            out.event(PeerEvent::RegisterFailed {
                reason: "not logged in: run `ferry login` first".into(),
            });
            return;
        }
        self.leave(out);
        self.addr = addr;
        self.was_registered = false;
        self.backoff = BACKOFF_MIN;
        self.start(now, out);
    }

    /// Leaves: the session ends, and the server removes this peer.
    pub(super) fn leave(&mut self, out: &mut Outbox<PeerEvent>) {
        if let Some(mut c) = self.client.take() {
            c.close();
            self.forward(&mut c, out);
        }
        self.stage = Stage::Off;
        self.ticket = None;
    }

    fn start(&mut self, now: Timestamp, out: &mut Outbox<PeerEvent>) {
        self.attempt += 1;
        let mut c = Client::new(ClientConfig::new(self.addr.clone()));
        c.start(now);
        self.stage = Stage::Proving;
        self.client = Some(c);
        self.pump(now, out);
    }

    fn base(&self) -> u64 {
        TRACKER_BASE + (self.attempt % (1 << 20)) * ATTEMPT_SPAN
    }

    pub(super) fn handle_input(
        &mut self,
        now: Timestamp,
        input: Input<'_>,
        out: &mut Outbox<PeerEvent>,
    ) {
        let base = self.base();
        let inner = |conn: ConnId| -> Option<ConnId> {
            (conn.n >= base && conn.n < base + ATTEMPT_SPAN).then(|| ConnId::dialed(conn.n - base))
        };
        let Some(c) = self.client.as_mut() else {
            return;
        };
        let input = match input {
            Input::Connected { conn, identity } => {
                inner(conn).map(|conn| Input::Connected { conn, identity })
            }
            Input::ConnectFailed { conn, reason } => {
                inner(conn).map(|conn| Input::ConnectFailed { conn, reason })
            }
            Input::Received { conn, bytes } => {
                inner(conn).map(|conn| Input::Received { conn, bytes })
            }
            Input::Closed { conn } => inner(conn).map(|conn| Input::Closed { conn }),
            _ => None,
        };
        if let Some(input) = input {
            c.handle_input(now, input);
            self.pump(now, out);
        }
    }

    pub(super) fn handle_timeout(&mut self, now: Timestamp, out: &mut Outbox<PeerEvent>) {
        if let Stage::Waiting { at } = self.stage {
            if at <= now {
                self.start(now, out);
            }
            return;
        }
        if let Some(c) = self.client.as_mut() {
            if c.poll_timeout().is_some_and(|t| t <= now) {
                c.handle_timeout(now);
                self.pump(now, out);
            }
        }
    }

    pub(super) fn poll_timeout(&self) -> Option<Timestamp> {
        let waiting = match self.stage {
            Stage::Waiting { at } => Some(at),
            _ => None,
        };
        earliest(waiting, self.client.as_ref().and_then(|c| c.poll_timeout()))
    }

    /// Carries the client's outputs out (its connections moved into this
    /// attempt's range) and acts on its events.
    fn pump(&mut self, now: Timestamp, out: &mut Outbox<PeerEvent>) {
        let Some(mut c) = self.client.take() else {
            return;
        };
        let events = self.forward(&mut c, out);
        self.client = Some(c);
        for e in events {
            self.on_event(now, e, out);
        }
    }

    fn forward(&self, c: &mut Client, out: &mut Outbox<PeerEvent>) -> Vec<ClientEvent> {
        let base = self.base();
        let outer = |conn: ConnId| ConnId::dialed(base + conn.n);
        let mut events = Vec::new();
        while let Some(o) = c.poll_output() {
            match o {
                Output::Transmit { conn, bytes } => out.transmit(outer(conn), bytes),
                Output::Connect { conn, addr } => out.connect(outer(conn), addr),
                Output::Close { conn } => out.close(outer(conn)),
                Output::Event(e) => events.push(e),
                // The tracker's session moves no file and keeps no store.
                Output::Persist { .. } | Output::File(_) => {}
            }
        }
        events
    }

    fn on_event(&mut self, now: Timestamp, e: ClientEvent, out: &mut Outbox<PeerEvent>) {
        match e {
            ClientEvent::Connected { .. } => {
                if let (Some(c), Some(token)) = (self.client.as_mut(), self.token.clone()) {
                    let _ = c.request(now, Request::WhoAmI { token });
                    self.pump(now, out);
                }
            }
            ClientEvent::Response(r) => self.on_response(now, r, out),
            ClientEvent::PeerUpdate { peers } => {
                self.peers = peers.clone();
                out.event(PeerEvent::Update { peers });
            }
            ClientEvent::SyncOk {
                round,
                token,
                order,
            } => self.news.push(SyncNews::Write {
                round,
                token,
                order,
            }),
            ClientEvent::SyncRead {
                round,
                writer,
                token,
                ..
            } => self.news.push(SyncNews::Read {
                round,
                writer,
                token,
            }),
            ClientEvent::SyncEnd { round } => self.news.push(SyncNews::End { round }),
            ClientEvent::Failed(e) => self.lost(now, e.to_string(), out),
            ClientEvent::Disconnected => {
                self.lost(now, "the server closed the session".into(), out)
            }
            _ => {}
        }
    }

    fn on_response(&mut self, now: Timestamp, r: Response, out: &mut Outbox<PeerEvent>) {
        match (&self.stage, r) {
            (Stage::Proving, Response::Me { .. }) => {
                self.stage = Stage::Registering;
                let addr = self.advertise.clone();
                if let Some(c) = self.client.as_mut() {
                    let _ = c.request(now, Request::PeerRegister { addr });
                }
                self.pump(now, out);
            }
            (Stage::Registering, Response::PeerRegistered { peer, ticket }) => {
                self.stage = Stage::Registered { peer };
                self.ticket = Some(ticket);
                self.was_registered = true;
                self.backoff = BACKOFF_MIN;
                out.event(PeerEvent::Registered { peer });
            }
            // The cluster could not order it now (an election, a server
            // catching up): worth another try, as a lost link is.
            (_, Response::SyncStarted { round }) => out.event(PeerEvent::SyncStarted { round }),
            (Stage::Registered { .. }, Response::Failed(e)) => out.event(PeerEvent::SyncFailed {
                reason: e.to_string(),
            }),
            (_, Response::Failed(e @ OpError::Unavailable { .. })) => {
                if let Some(mut c) = self.client.take() {
                    c.close();
                    self.forward(&mut c, out);
                }
                self.retry(now, e.to_string(), out);
            }
            (_, Response::Failed(e)) => {
                out.event(PeerEvent::RegisterFailed {
                    reason: e.to_string(),
                });
                self.leave(out);
            }
            _ => {}
        }
    }

    /// Registers again after a pause that grows with each failure.
    fn retry(&mut self, now: Timestamp, reason: String, out: &mut Outbox<PeerEvent>) {
        self.ticket = None;
        out.event(PeerEvent::TrackerLost { reason });
        self.stage = Stage::Waiting {
            at: now + self.backoff,
        };
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    /// The session is gone: registered peers try again later; a first
    /// registration reports the failure.
    fn lost(&mut self, now: Timestamp, reason: String, out: &mut Outbox<PeerEvent>) {
        self.client = None;
        self.ticket = None;
        if self.was_registered {
            self.retry(now, reason, out);
        } else {
            out.event(PeerEvent::RegisterFailed { reason });
            self.stage = Stage::Off;
        }
    }
}
