//! A peer as one sans-IO node: its tracker link, the connections to and
//! from other peers, and the transfers on them. The runtime (`ferry peer`)
//! feeds it the network and the shared directory's file answers, and calls
//! its methods for the user's commands; everything it has to say comes out
//! as [`PeerEvent`]s.

use super::event::{LinkInfo, PeerEvent};
use super::link::{Link, Stage, Step};
use super::messages::PeerMsg;
use super::tracker::Tracker;
use super::transfers::Transfers;
use super::turn::SyncSide;
use crate::accounts::token::SessionToken;
use crate::io::{ConnId, Input, Node, Output};
use crate::names::{check_name, normalize};
use crate::outbox::{drain_messages, Outbox};
use crate::server::messages::PeerInfo;
use crate::time::{earliest, Timestamp};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct PeerConfig {
    /// Where this peer listens, as other peers reach it (`IP:PORT`).
    pub advertise: String,
    /// The saved login; a peer registers as a Ferry user.
    pub token: Option<SessionToken>,
    /// Chunks in flight per transfer.
    pub window: u64,
    /// How long a connection may take to open and be admitted.
    pub step_timeout: Duration,
    /// How long a transfer may go without a word from the other end.
    pub idle_timeout: Duration,
    /// Connections at once, both directions together.
    pub max_links: usize,
}

impl PeerConfig {
    pub fn new(advertise: impl Into<String>, token: Option<SessionToken>) -> Self {
        PeerConfig {
            advertise: advertise.into(),
            token,
            window: crate::transfer::sender::DEFAULT_WINDOW,
            step_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(10),
            max_links: 64,
        }
    }
}

/// Why a command could not start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerError {
    NoSuchLink(u32),
    /// The connection is still opening.
    NotOpen(u32),
    BadName(String),
    TooManyLinks,
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerError::NoSuchLink(id) => write!(f, "no connection {id} (see `conns`)"),
            PeerError::NotOpen(id) => write!(f, "connection {id} is not open yet"),
            PeerError::BadName(reason) => write!(f, "bad file name: {reason}"),
            PeerError::TooManyLinks => f.write_str("too many connections open"),
        }
    }
}

impl std::error::Error for PeerError {}

/// Dialed connection ids of links start here, clear of the tracker's.
const LINK_BASE: u64 = 1 << 32;

pub struct PeerNode {
    cfg: PeerConfig,
    pub(super) tracker: Tracker,
    pub(super) links: BTreeMap<ConnId, Link>,
    next_link: u32,
    next_dial: u64,
    pub(super) transfers: Transfers,
    pub(super) sync: SyncSide,
    pub(super) out: Outbox<PeerEvent>,
}

impl PeerNode {
    pub fn new(cfg: PeerConfig) -> Self {
        PeerNode {
            tracker: Tracker::new(cfg.advertise.clone(), cfg.token.clone()),
            links: BTreeMap::new(),
            next_link: 0,
            next_dial: LINK_BASE,
            transfers: Transfers::new(cfg.window, cfg.idle_timeout),
            sync: SyncSide::new(),
            out: Outbox::default(),
            cfg,
        }
    }

    /// This peer's id, while registered.
    pub fn me(&self) -> Option<u64> {
        self.tracker.me().map(|(id, _)| id)
    }

    /// The tracker's last list.
    pub fn peers(&self) -> &[PeerInfo] {
        self.tracker.peers()
    }

    /// The connections, by number.
    pub fn links(&self) -> Vec<LinkInfo> {
        let mut v: Vec<LinkInfo> = (self.links.values())
            .map(|l| LinkInfo {
                link: l.id,
                peer: l.peer(),
                addr: l.addr.clone(),
                dialed: l.dialed,
            })
            .collect();
        v.sort_by_key(|l| l.link);
        v
    }

    /// REGISTER through `addr` (a balancer or any server).
    pub fn register(&mut self, now: Timestamp, addr: String) {
        self.tracker.register(now, addr, &mut self.out);
    }

    /// Leaves the tracker's list and closes every connection.
    pub fn quit(&mut self) {
        self.tracker.leave(&mut self.out);
        let conns: Vec<ConnId> = self.links.keys().copied().collect();
        for conn in conns {
            self.drop_link(conn, None);
        }
    }

    /// Is anything still going on (registering, connections, transfers)?
    pub fn is_idle(&self) -> bool {
        !self.tracker.is_active() && self.links.is_empty()
    }

    /// CONNECT to the peer at `addr`: the new connection's number; CONNECT
    /// OK or FAIL follows as an event.
    pub fn connect(&mut self, now: Timestamp, addr: String) -> Result<u32, PeerError> {
        if self.links.len() >= self.cfg.max_links {
            return Err(PeerError::TooManyLinks);
        }
        self.next_dial += 1;
        let conn = ConnId::dialed(self.next_dial);
        self.next_link += 1;
        let id = self.next_link;
        let link = Link::new(id, addr.clone(), true, now + self.cfg.step_timeout);
        self.links.insert(conn, link);
        self.out.connect(conn, addr);
        Ok(id)
    }

    fn open_link(&self, id: u32) -> Result<ConnId, PeerError> {
        let (conn, link) = (self.links.iter())
            .find(|(_, l)| l.id == id)
            .ok_or(PeerError::NoSuchLink(id))?;
        match link.stage {
            Stage::Open { .. } => Ok(*conn),
            _ => Err(PeerError::NotOpen(id)),
        }
    }

    /// PUT the file `name` of the shared directory to connection `link`.
    /// Names travel in Unicode NFC: `name` is normalized first (as typed,
    /// `café` may come in either form), so the file read is the one of
    /// that name in NFC.
    pub fn put(&mut self, link: u32, name: &str) -> Result<(), PeerError> {
        let name = normalize(name);
        check_name(&name).map_err(PeerError::BadName)?;
        let conn = self.open_link(link)?;
        (self.transfers).put(conn, link, name, &mut self.out);
        Ok(())
    }

    /// GET the file `name` from connection `link` into the shared directory
    /// (`name` normalized to NFC first, as for `put`).
    pub fn get(&mut self, link: u32, name: &str) -> Result<(), PeerError> {
        let name = normalize(name);
        check_name(&name).map_err(PeerError::BadName)?;
        let conn = self.open_link(link)?;
        (self.transfers).get(conn, link, name, &mut self.out);
        Ok(())
    }

    /// Ends connection `conn`; `failed` says why it never opened, if so.
    fn drop_link(&mut self, conn: ConnId, failed: Option<String>) {
        let Some(link) = self.links.remove(&conn) else {
            return;
        };
        self.out.close(conn);
        self.transfers.link_closed(conn, &mut self.out);
        self.out.event(match (failed, link.dialed) {
            (Some(reason), true) if link.peer().is_none() => PeerEvent::ConnectFailed {
                link: link.id,
                addr: link.addr,
                reason,
            },
            _ => PeerEvent::Closed { link: link.id },
        });
    }

    fn on_bytes(&mut self, now: Timestamp, conn: ConnId, bytes: &[u8]) {
        let Some(link) = self.links.get_mut(&conn) else {
            return;
        };
        link.decoder.push(bytes);
        let mut msgs = Vec::new();
        if let Err(e) = drain_messages::<PeerMsg>(&mut link.decoder, &mut msgs) {
            // Nothing sent after garbage can be trusted to line up.
            return self.drop_link(conn, Some(format!("unreadable message: {e}")));
        }
        for msg in msgs {
            let me = self.tracker.me().map(|(id, _)| id);
            let Some(link) = self.links.get_mut(&conn) else {
                return;
            };
            let id = link.id;
            match link.on_msg(msg, me, self.tracker.peers()) {
                Step::Open { peer, reply } => {
                    if let Some(reply) = reply {
                        self.out.send(conn, &reply);
                    }
                    let event = if link.dialed {
                        PeerEvent::Connected {
                            link: id,
                            peer,
                            addr: link.addr.clone(),
                        }
                    } else {
                        PeerEvent::Accepted {
                            link: id,
                            peer,
                            from: link.addr.clone(),
                        }
                    };
                    self.out.event(event);
                }
                Step::Fail {
                    reason,
                    refused,
                    reply,
                } => {
                    if let Some(reply) = reply {
                        self.out.send(conn, &reply);
                    }
                    if let Some(reason) = refused {
                        let from = link.addr.clone();
                        self.out.event(PeerEvent::Refused { from, reason });
                    }
                    return self.drop_link(conn, Some(reason));
                }
                Step::Pass(
                    msg @ (PeerMsg::SyncList { .. }
                    | PeerMsg::SyncListing { .. }
                    | PeerMsg::SyncPut { .. }
                    | PeerMsg::SyncYield { .. }
                    | PeerMsg::SyncYielded { .. }
                    | PeerMsg::SyncRefused { .. }),
                ) => self.on_sync_msg(now, conn, msg),
                Step::Pass(msg) => {
                    (self.transfers).on_msg(now, conn, id, msg, &mut self.out);
                    self.advance(now);
                }
            }
        }
    }
}

impl Node for PeerNode {
    type Event = PeerEvent;

    fn handle_input(&mut self, now: Timestamp, input: Input<'_>) {
        let tracker = match &input {
            Input::Connected { conn, .. }
            | Input::ConnectFailed { conn, .. }
            | Input::Received { conn, .. }
            | Input::Closed { conn } => Tracker::owns(*conn),
            _ => false,
        };
        if tracker {
            self.tracker.handle_input(now, input, &mut self.out);
            return self.sync_news(now);
        }
        let sync_file = match &input {
            Input::Listed { handle, .. }
            | Input::FileRead { handle, .. }
            | Input::FileFailed { handle, .. }
            | Input::Renamed { handle } => SyncSide::owns(*handle),
            _ => false,
        };
        if sync_file {
            return match input {
                Input::Listed { handle, entries } => self.sync_listed(now, handle, entries),
                Input::FileRead { handle, data, .. } => self.sync_read(now, handle, data),
                Input::FileFailed { handle, error, .. } => self.sync_failed(now, handle, error),
                Input::Renamed { handle } => self.sync_renamed(handle, Ok(())),
                _ => {}
            };
        }
        match input {
            Input::Accepted {
                conn,
                peer,
                identity,
            } => {
                if self.links.len() >= self.cfg.max_links {
                    self.out.close(conn);
                    return;
                }
                self.next_link += 1;
                let mut link = Link::new(self.next_link, peer, false, now + self.cfg.step_timeout);
                link.identity = identity;
                self.links.insert(conn, link);
            }
            Input::Connected { conn, identity } => {
                let me = self.tracker.me();
                let Some(link) = self.links.get_mut(&conn) else {
                    return;
                };
                link.identity = identity;
                match link.connected(me) {
                    Ok(hello) => self.out.send(conn, &hello),
                    Err(reason) => self.drop_link(conn, Some(reason)),
                }
            }
            Input::ConnectFailed { conn, reason } => {
                self.drop_link(conn, Some(format!("unreachable: {reason}")))
            }
            Input::Received { conn, bytes } => self.on_bytes(now, conn, bytes),
            Input::Closed { conn } => {
                let why = "the other peer closed the connection".to_string();
                self.drop_link(conn, Some(why))
            }
            Input::Listed { handle, entries } => {
                let links = &self.links;
                let open = |c: ConnId| links.get(&c).is_some_and(|l| l.peer().is_some());
                (self.transfers).on_listed(now, handle, Ok(entries), &open, &mut self.out)
            }
            Input::FileRead {
                handle,
                offset,
                data,
            } => self.transfers.on_read(handle, offset, data, &mut self.out),
            Input::FilePersisted { temp } => {
                self.transfers.on_persisted(temp, &mut self.out);
                for name in self.transfers.take_landed() {
                    self.sync.scanner.forget(&name);
                }
                self.advance(now);
            }
            Input::FileFailed {
                handle,
                error,
                no_space,
                ..
            } => {
                let links = &self.links;
                let open = |c: ConnId| links.get(&c).is_some_and(|l| l.peer().is_some());
                // A listing that failed fails its operation; anything else
                // is a transfer's read or write.
                let e = error.clone();
                (self.transfers).on_listed(now, handle, Err(e), &open, &mut self.out);
                (self.transfers).on_file_failed(handle, error, no_space, &mut self.out);
                self.advance(now);
            }
            // A peer keeps no store; its renames are SYNC's (above); it
            // never asks for the free space.
            Input::Persisted { .. } | Input::Renamed { .. } | Input::Space { .. } => {}
        }
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        self.tracker.handle_timeout(now, &mut self.out);
        self.sync_news(now);
        let late: Vec<ConnId> = (self.links.iter())
            .filter(|(_, l)| l.deadline.is_some_and(|d| d <= now))
            .map(|(c, _)| *c)
            .collect();
        for conn in late {
            let why = "the other peer did not answer in time".to_string();
            self.drop_link(conn, Some(why));
        }
        self.transfers.handle_timeout(now, &mut self.out);
        self.sync_timeout(now);
    }

    fn poll_output(&mut self) -> Option<Output<PeerEvent>> {
        self.out.pop()
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        let links = (self.links.values()).fold(None, |t, l| earliest(t, l.deadline));
        let t = earliest(links, self.tracker.poll_timeout());
        let t = earliest(t, self.sync.poll_timeout());
        earliest(t, self.transfers.poll_timeout())
    }
}
