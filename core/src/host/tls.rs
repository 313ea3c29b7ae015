//! TLS between a node and its world.
//!
//! The host puts one of these between the two when the node's links are
//! encrypted (every node in production and in the simulator). The world
//! reports connections and ciphertext; the node is told of a connection
//! only once its handshake is done — `Accepted` or `Connected`, with the
//! [`Identity`] the other end proved — and then sees plaintext. What the
//! node transmits is encrypted on its way to the world; its `Close` sends
//! TLS's close_notify first.
//!
//! Inputs for the node are owed, as the host owes answers: one world input
//! may complete a handshake and carry several records, and the node takes
//! one input at a time with a drain after each (str0m's rule). Plaintext is
//! fed straight from rustls's buffer. When that buffer is full, ciphertext
//! still to be read waits here and is read as the node takes plaintext, so
//! a connection holds at most rustls's limit of plaintext plus one read.
//!
//! An accepted connection that does not finish its handshake within the
//! configured time is closed; a dialed one is reported `ConnectFailed`,
//! as is one whose handshake fails (a certificate refused, garbage): the
//! reason says why. The node never learns of accepted connections that
//! never opened.

use super::World;
use crate::entropy::Entropy;
use crate::io::{ConnId, Input, Node};
use crate::time::Timestamp;
use crate::tls::provider::with_context;
use crate::tls::{Identity, TlsConfig};
use rustls::pki_types::UnixTime;
use rustls::Connection;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{BufRead, Write};

struct Link {
    tls: Connection,
    /// The handshake's deadline, until it is done.
    deadline: Option<Timestamp>,
    /// An accepted connection's peer address, until the node is told.
    peer: Option<String>,
    /// An accepted connection's source (IP), while its handshake counts
    /// against that source.
    source: Option<String>,
    /// Ciphertext rustls could not take yet: its plaintext buffer was full.
    backlog: Vec<u8>,
    /// Where in `backlog` what rustls has not taken yet begins: taken
    /// bytes are dropped only when all are, so that a large read waiting
    /// behind a full plaintext buffer is not copied again at every turn.
    backlog_at: usize,
    /// A dialed connection that did not open, and why: the node is told
    /// `ConnectFailed` instead of anything else.
    failed: Option<String>,
    /// In `ready`.
    queued: bool,
    /// No more will come: once its plaintext is taken the node hears
    /// `Closed`.
    ended: bool,
    /// The node was told the connection is open.
    told: bool,
}

/// How the reason of a `ConnectFailed` begins when the handshake itself
/// failed (a certificate refused, garbage, a version not spoken), as
/// opposed to a network fault or a timeout: trying again would not help.
pub const REFUSED: &str = "TLS handshake refused: ";

/// The TLS connections of one host.
pub struct TlsLinks {
    config: TlsConfig,
    entropy: Entropy,
    links: BTreeMap<ConnId, Link>,
    /// Links with something owed to the node, in the order it became owed.
    ready: VecDeque<ConnId>,
    deadlines: BTreeSet<(Timestamp, ConnId)>,
    /// Links with records for the world, written when the world is at hand.
    dirty: BTreeSet<ConnId>,
    /// Connections the world must close (after their records are sent).
    closing: Vec<ConnId>,
    /// Dials that failed before anything was opened in the world.
    early: VecDeque<(ConnId, String)>,
    /// Handshakes that failed or timed out, for the curious (tests, stats).
    refused: u64,
    /// Accepted handshakes under way, by source.
    by_source: BTreeMap<String, usize>,
}

impl TlsLinks {
    /// `entropy` is the host's own: seeded from the OS in production, from
    /// the seed in the simulator.
    pub fn new(config: TlsConfig, entropy: Entropy) -> Self {
        TlsLinks {
            config,
            entropy,
            links: BTreeMap::new(),
            ready: VecDeque::new(),
            deadlines: BTreeSet::new(),
            dirty: BTreeSet::new(),
            closing: Vec::new(),
            early: VecDeque::new(),
            refused: 0,
            by_source: BTreeMap::new(),
        }
    }

    /// Handshakes refused or timed out so far.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Connections with a handshake under way.
    pub fn handshaking(&self) -> usize {
        self.deadlines.len()
    }

    pub(super) fn has_owed(&self) -> bool {
        !self.ready.is_empty() || !self.early.is_empty()
    }

    pub(super) fn poll_timeout(&self) -> Option<Timestamp> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// A network input from the world. Nothing is fed to the node here.
    pub(super) fn on_net(&mut self, now: Timestamp, input: Input<'_>) {
        match input {
            Input::Accepted { conn, peer, .. } => self.accepted(now, conn, peer),
            Input::Connected { conn, .. } => {
                if self.links.contains_key(&conn) {
                    // The ClientHello made at the connect goes out now.
                    self.dirty.insert(conn);
                }
            }
            Input::ConnectFailed { conn, reason } => {
                if self.links.contains_key(&conn) {
                    self.fail_dialed(conn, reason, false);
                }
            }
            Input::Received { conn, bytes } => self.received(now, conn, bytes),
            Input::Closed { conn } => self.world_closed(conn),
            // Not the network's: the host never passes these here.
            Input::Persisted { .. }
            | Input::FileRead { .. }
            | Input::FilePersisted { .. }
            | Input::Listed { .. }
            | Input::Renamed { .. }
            | Input::FileFailed { .. } => {}
        }
    }

    fn accepted(&mut self, now: Timestamp, conn: ConnId, peer: String) {
        // One machine holding handshakes open costs the others nothing:
        // past its share, its connections are closed unread.
        let source = source_of(&peer).to_string();
        let open = self.by_source.get(&source).copied().unwrap_or(0);
        if open >= self.config.handshakes_per_source {
            self.refused += 1;
            self.closing.push(conn);
            return;
        }
        let Some(accept) = self.config.accept.clone() else {
            // A host that presents nothing cannot be a TLS server.
            self.refused += 1;
            self.closing.push(conn);
            return;
        };
        let made = with_context(&mut self.entropy, now, || {
            rustls::ServerConnection::new(accept)
        });
        match made {
            Ok(tls) => {
                self.insert(now, conn, Connection::Server(tls), Some(peer));
                *self.by_source.entry(source.clone()).or_insert(0) += 1;
                if let Some(link) = self.links.get_mut(&conn) {
                    link.source = Some(source);
                }
            }
            Err(_) => {
                self.refused += 1;
                self.closing.push(conn);
            }
        }
    }

    fn insert(&mut self, now: Timestamp, conn: ConnId, mut tls: Connection, peer: Option<String>) {
        // What the node sends is bounded by its own windows, not here.
        tls.set_buffer_limit(None);
        let deadline = now + self.config.handshake_timeout;
        self.deadlines.insert((deadline, conn));
        self.links.insert(
            conn,
            Link {
                tls,
                deadline: Some(deadline),
                peer,
                source: None,
                backlog: Vec::new(),
                backlog_at: 0,
                failed: None,
                queued: false,
                ended: false,
                told: false,
            },
        );
    }

    /// The node dials: the TLS client is made now, its hello sent once the
    /// world says the connection is open.
    pub(super) fn connect(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        addr: String,
        world: &mut impl World,
    ) {
        let dial = self.config.dial.clone();
        let made = with_context(&mut self.entropy, now, || {
            rustls::ClientConnection::new(dial, TlsConfig::server_name())
        });
        match made {
            Ok(tls) => {
                self.insert(now, conn, Connection::Client(tls), None);
                world.connect(conn, addr);
            }
            // Nothing was opened in the world: only the node is told.
            Err(e) => self
                .early
                .push_back((conn, format!("cannot start TLS: {e}"))),
        }
    }

    fn received(&mut self, now: Timestamp, conn: ConnId, bytes: &[u8]) {
        let Some(link) = self.links.get_mut(&conn) else {
            return;
        };
        if link.ended {
            return;
        }
        if link.backlog.is_empty() {
            let mut rest = bytes;
            let result = pump(
                &mut link.tls,
                &mut link.ended,
                &mut self.entropy,
                now,
                &mut rest,
            );
            if !rest.is_empty() && result.is_ok() {
                link.backlog.extend_from_slice(rest);
                link.backlog_at = 0;
            }
            self.after_pump(conn, result);
        } else {
            // What rustls took is dropped before more is added: the
            // backlog holds at most what one turn could not give it.
            link.backlog.drain(..link.backlog_at);
            link.backlog_at = 0;
            link.backlog.extend_from_slice(bytes);
            self.pump_backlog(now, conn);
        }
    }

    fn pump_backlog(&mut self, now: Timestamp, conn: ConnId) {
        let Some(link) = self.links.get_mut(&conn) else {
            return;
        };
        let Link {
            tls,
            ended,
            backlog,
            backlog_at,
            ..
        } = link;
        let mut rest = &backlog[*backlog_at..];
        let before = rest.len();
        let result = pump(tls, ended, &mut self.entropy, now, &mut rest);
        *backlog_at += before - rest.len();
        if *backlog_at >= backlog.len() || result.is_err() {
            backlog.clear();
            *backlog_at = 0;
        }
        self.after_pump(conn, result);
    }

    /// What a pump of `conn` leaves to do: records to send, a handshake
    /// that failed, something owed to the node.
    fn after_pump(&mut self, conn: ConnId, result: Result<(), rustls::Error>) {
        let Some(link) = self.links.get_mut(&conn) else {
            return;
        };
        if link.tls.wants_write() {
            self.dirty.insert(conn);
        }
        if let Err(e) = result {
            // The alert rustls queued goes out before the close.
            self.closing.push(conn);
            if link.told {
                link.ended = true;
            } else if link.peer.is_none() {
                self.refused += 1;
                self.fail_dialed(conn, format!("{REFUSED}{}", describe(&e)), false);
                return;
            } else {
                // Never told to the node: dropped once its alert is sent.
                self.refused += 1;
                link.ended = true;
                return;
            }
        }
        if let Some(deadline) = link.deadline {
            if !link.tls.is_handshaking() {
                link.deadline = None;
                self.deadlines.remove(&(deadline, conn));
                let source = link.source.take();
                self.release(source);
            }
        }
        self.enqueue_if_owed(conn);
    }

    fn enqueue_if_owed(&mut self, conn: ConnId) {
        let Some(link) = self.links.get_mut(&conn) else {
            return;
        };
        let accepted_unopened = link.peer.is_some() && !link.told && link.ended;
        if accepted_unopened {
            return;
        }
        let owes = link.failed.is_some()
            || (link.deadline.is_none() && !link.told)
            || has_plaintext(&mut link.tls)
            || link.ended;
        if owes && !link.queued {
            link.queued = true;
            self.ready.push_back(conn);
        }
    }

    /// A dialed connection did not open: the node is told why. `close`:
    /// the world's connection is still open and must be closed.
    fn fail_dialed(&mut self, conn: ConnId, reason: String, close: bool) {
        if close {
            self.closing.push(conn);
        }
        if let Some(link) = self.links.get_mut(&conn) {
            if let Some(deadline) = link.deadline.take() {
                self.deadlines.remove(&(deadline, conn));
            }
            link.ended = true;
            link.failed.get_or_insert(reason);
        }
        self.enqueue_if_owed(conn);
    }

    fn world_closed(&mut self, conn: ConnId) {
        let Some(link) = self.links.get_mut(&conn) else {
            return;
        };
        if link.told {
            link.ended = true;
            self.enqueue_if_owed(conn);
        } else if link.peer.is_none() {
            self.fail_dialed(
                conn,
                "the connection closed during the TLS handshake".into(),
                false,
            );
        } else {
            self.forget(conn);
        }
    }

    fn forget(&mut self, conn: ConnId) {
        if let Some(link) = self.links.remove(&conn) {
            if let Some(deadline) = link.deadline {
                self.deadlines.remove(&(deadline, conn));
            }
            self.release(link.source);
        }
        self.dirty.remove(&conn);
    }

    /// A handshake of `source` is over (done or given up).
    fn release(&mut self, source: Option<String>) {
        let Some(source) = source else {
            return;
        };
        if let Some(n) = self.by_source.get_mut(&source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.by_source.remove(&source);
            }
        }
    }

    /// Handshakes past their deadline are given up.
    pub(super) fn handle_timeout(&mut self, now: Timestamp) {
        while let Some(&(deadline, conn)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            self.refused += 1;
            let dialed = self.links.get(&conn).is_some_and(|l| l.peer.is_none());
            if dialed {
                self.fail_dialed(conn, "the TLS handshake timed out".into(), true);
            } else {
                self.forget(conn);
                self.closing.push(conn);
            }
        }
    }

    /// Encrypts what the node transmits.
    pub(super) fn transmit(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        bytes: &[u8],
        world: &mut impl World,
    ) {
        let Some(link) = self.links.get_mut(&conn) else {
            return;
        };
        // Writing to rustls's own buffer, unlimited: cannot fail.
        let _ = with_context(&mut self.entropy, now, || {
            link.tls.writer().write_all(bytes)
        });
        flush(conn, link, world);
    }

    /// The node closes `conn`: close_notify, then the world closes it.
    pub(super) fn close(&mut self, now: Timestamp, conn: ConnId, world: &mut impl World) {
        if let Some(link) = self.links.get_mut(&conn) {
            with_context(&mut self.entropy, now, || link.tls.send_close_notify());
            flush(conn, link, world);
        }
        self.forget(conn);
        world.close(conn);
    }

    /// Hands the world the records and closes it owes.
    pub(super) fn sync(&mut self, world: &mut impl World) {
        while let Some(conn) = self.dirty.pop_first() {
            if let Some(link) = self.links.get_mut(&conn) {
                flush(conn, link, world);
            }
        }
        for conn in std::mem::take(&mut self.closing) {
            // An accepted connection the node never heard of is gone now.
            if self
                .links
                .get(&conn)
                .is_some_and(|l| l.peer.is_some() && !l.told)
            {
                self.forget(conn);
            }
            world.close(conn);
        }
    }

    /// Feeds the node the next input owed, if any. True if one was fed.
    pub(super) fn feed_next<N: Node>(&mut self, now: Timestamp, node: &mut N) -> bool {
        if let Some((conn, reason)) = self.early.pop_front() {
            node.handle_input(now, Input::ConnectFailed { conn, reason });
            return true;
        }
        while let Some(conn) = self.ready.pop_front() {
            let Some(link) = self.links.get_mut(&conn) else {
                continue;
            };
            link.queued = false;
            if let Some(reason) = link.failed.take() {
                self.forget(conn);
                node.handle_input(now, Input::ConnectFailed { conn, reason });
                return true;
            }
            if link.deadline.is_none() && !link.told {
                link.told = true;
                let at = UnixTime::since_unix_epoch(now.as_duration());
                let certs = link.tls.peer_certificates();
                let peer = link.peer.take();
                let identity = self.config.identity(certs, at, peer.is_some());
                feed_open(node, now, conn, identity, peer);
                self.enqueue_if_owed(conn);
                return true;
            }
            let chunk = match link.tls.reader().into_first_chunk() {
                Ok(chunk) => chunk,
                Err(_) => &[],
            };
            if !chunk.is_empty() {
                let n = chunk.len();
                node.handle_input(now, Input::Received { conn, bytes: chunk });
                link.tls.reader().consume(n);
                if link.backlog_at < link.backlog.len() && !has_plaintext(&mut link.tls) {
                    self.pump_backlog(now, conn);
                }
                self.enqueue_if_owed(conn);
                return true;
            }
            if link.ended {
                self.forget(conn);
                node.handle_input(now, Input::Closed { conn });
                return true;
            }
        }
        false
    }
}

/// A TLS error in words: ours as we wrote them (rustls shows another
/// library's certificate errors in Debug form).
fn describe(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => {
            format!("its certificate is refused: {}", other.0)
        }
        other => other.to_string(),
    }
}

/// The IP of `ip:port` (`[v6]:port` too); the whole text if it has no
/// port.
fn source_of(peer: &str) -> &str {
    match peer.rsplit_once(':') {
        Some((ip, port)) if port.parse::<u16>().is_ok() => {
            ip.trim_start_matches('[').trim_end_matches(']')
        }
        _ => peer,
    }
}

fn feed_open<N: Node>(
    node: &mut N,
    now: Timestamp,
    conn: ConnId,
    identity: Identity,
    peer: Option<String>,
) {
    match peer {
        Some(peer) => node.handle_input(
            now,
            Input::Accepted {
                conn,
                peer,
                identity,
            },
        ),
        None => node.handle_input(now, Input::Connected { conn, identity }),
    }
}

fn has_plaintext(tls: &mut Connection) -> bool {
    tls.reader().fill_buf().is_ok_and(|b| !b.is_empty())
}

/// Gives rustls what of `input` it takes, processing each read; stops
/// early when its plaintext buffer is full, leaving the rest in `input`.
fn pump(
    tls: &mut Connection,
    ended: &mut bool,
    entropy: &mut Entropy,
    now: Timestamp,
    input: &mut &[u8],
) -> Result<(), rustls::Error> {
    with_context(entropy, now, || {
        while !input.is_empty() {
            match tls.read_tls(input) {
                Ok(0) => {
                    // After the peer's close_notify nothing more is read.
                    *input = &[];
                    *ended = true;
                }
                Ok(_) => {}
                // Its plaintext buffer is full: the rest waits.
                Err(_) => break,
            }
            let state = tls.process_new_packets()?;
            if state.peer_has_closed() {
                *ended = true;
            }
        }
        Ok(())
    })
}

fn flush(conn: ConnId, link: &mut Link, world: &mut impl World) {
    while link.tls.wants_write() {
        let mut out = Vec::new();
        match link.tls.write_tls(&mut out) {
            Ok(0) | Err(_) => break,
            Ok(_) => world.transmit(conn, out),
        }
    }
}
