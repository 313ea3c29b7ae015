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
//! one input at a time with a drain after each (str0m's rule).
//!
//! rustls runs in its unbuffered mode, where the records are in buffers of
//! ours: what the world brings is kept in the link and decrypted there one
//! record at a time, as the node takes them, so a connection holds at most
//! what the world gave it and one record's plaintext; what the node
//! transmits is encrypted straight into the buffer handed to the world.
//! rustls encrypts only when no received record waits for the node (its
//! `WriteTraffic` state), so what the node transmits meanwhile is held, in
//! order, until it has taken them.
//!
//! An accepted connection that does not finish its handshake within the
//! configured time is closed; a dialed one is reported `ConnectFailed`,
//! as is one whose handshake fails (a certificate refused, garbage): the
//! reason says why. The node never learns of accepted connections that
//! never opened.

use super::World;
use crate::balancer::per_source::source_of;
use crate::entropy::Entropy;
use crate::io::{ConnId, Input, Node};
use crate::time::Timestamp;
use crate::tls::provider::with_context;
use crate::tls::{Identity, TlsConfig};
use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::UnixTime;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, EncryptError, InsufficientSizeError,
    UnbufferedStatus, WriteTraffic,
};
use rustls::CommonState;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

enum Tls {
    Client(UnbufferedClientConnection),
    Server(UnbufferedServerConnection),
}

impl Tls {
    fn common(&self) -> &CommonState {
        match self {
            Tls::Client(c) => c,
            Tls::Server(s) => s,
        }
    }
}

/// Runs `$body` on the status of one `process_tls_records` of `$tls` over
/// `$buf`: client and server connections have the same states, of
/// different types.
macro_rules! process {
    ($tls:expr, $buf:expr, |$status:ident| $body:expr) => {
        match $tls {
            Tls::Client(c) => {
                let $status = c.process_tls_records($buf);
                $body
            }
            Tls::Server(s) => {
                let $status = s.process_tls_records($buf);
                $body
            }
        }
    };
}

struct Link {
    tls: Tls,
    /// Ciphertext from the world; rustls has not discarded `incoming[at..]`.
    incoming: Vec<u8>,
    at: usize,
    io: Io,
    /// The handshake's deadline, until it is done.
    deadline: Option<Timestamp>,
    /// An accepted connection's peer address, until the node is told.
    peer: Option<String>,
    /// An accepted connection's source (IP), while its handshake counts
    /// against that source.
    source: Option<String>,
    /// A dialed connection that did not open, and why: the node is told
    /// `ConnectFailed` instead of anything else.
    failed: Option<String>,
    /// In `ready`.
    queued: bool,
    /// The node was told the connection is open.
    told: bool,
}

/// What a link's rustls states act on.
#[derive(Default)]
struct Io {
    /// What the node transmitted, not encrypted yet.
    pending: VecDeque<Vec<u8>>,
    /// Records for the world.
    outgoing: Vec<u8>,
    /// A decrypted record waits for the node.
    readable: bool,
    /// The node closed the connection: received records are dropped, and
    /// close_notify follows what it transmitted.
    closing: bool,
    close_sent: bool,
    /// No more will come: once its plaintext is taken the node hears
    /// `Closed`.
    ended: bool,
    /// rustls failed: nothing more is processed.
    failed: bool,
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
    /// Links the node transmitted on since the last [`TlsLinks::sync`]:
    /// what it transmits in one go is encrypted together, as few records
    /// (see [`Io::write`]).
    unsent: BTreeSet<ConnId>,
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
            unsent: BTreeSet::new(),
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
            // The ClientHello made at the connect goes out now.
            Input::Connected { conn, .. } => self.advance(now, conn),
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
            | Input::Space { .. }
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
            UnbufferedServerConnection::new(accept)
        });
        match made {
            Ok(tls) => {
                self.insert(now, conn, Tls::Server(tls), Some(peer));
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

    fn insert(&mut self, now: Timestamp, conn: ConnId, tls: Tls, peer: Option<String>) {
        let deadline = now + self.config.handshake_timeout;
        self.deadlines.insert((deadline, conn));
        self.links.insert(
            conn,
            Link {
                tls,
                incoming: Vec::new(),
                at: 0,
                io: Io::default(),
                deadline: Some(deadline),
                peer,
                source: None,
                failed: None,
                queued: false,
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
            UnbufferedClientConnection::new(dial, TlsConfig::server_name())
        });
        match made {
            Ok(tls) => {
                self.insert(now, conn, Tls::Client(tls), None);
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
        if link.io.ended {
            return;
        }
        // What rustls discarded goes before more is added: the buffer
        // holds what the node has not taken and a record's beginning.
        link.incoming.drain(..link.at);
        link.at = 0;
        link.incoming.extend_from_slice(bytes);
        self.advance(now, conn);
    }

    /// Runs rustls on what `conn` holds, then sees to what that leaves to
    /// do: records to send, a handshake done or failed, something owed to
    /// the node.
    fn advance(&mut self, now: Timestamp, conn: ConnId) {
        let Some(link) = self.links.get_mut(&conn) else {
            return;
        };
        let result = with_context(&mut self.entropy, now, || run(link));
        if !link.io.outgoing.is_empty() {
            self.dirty.insert(conn);
        }
        if let Err(e) = result {
            // The alert rustls queued goes out before the close.
            self.closing.push(conn);
            link.io.ended = true;
            link.io.readable = false;
            if !link.told {
                self.refused += 1;
                if link.peer.is_none() {
                    self.fail_dialed(conn, format!("{REFUSED}{}", describe(&e)), false);
                }
                // An accepted one is dropped once its alert is sent.
                return;
            }
        }
        if let Some(deadline) = link.deadline {
            if !link.tls.common().is_handshaking() {
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
        let accepted_unopened = link.peer.is_some() && !link.told && link.io.ended;
        if accepted_unopened {
            return;
        }
        let owes = link.failed.is_some()
            || (link.deadline.is_none() && !link.told)
            || link.io.readable
            || link.io.ended;
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
            link.io.ended = true;
            link.failed.get_or_insert(reason);
        }
        self.enqueue_if_owed(conn);
    }

    fn world_closed(&mut self, conn: ConnId) {
        let Some(link) = self.links.get_mut(&conn) else {
            return;
        };
        if link.told {
            link.io.ended = true;
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
        self.unsent.remove(&conn);
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

    /// Takes what the node transmits, to encrypt at the next
    /// [`TlsLinks::sync`] (or once rustls may, if it may not yet) with
    /// whatever else it transmits on the link meanwhile.
    pub(super) fn transmit(&mut self, conn: ConnId, bytes: Vec<u8>) {
        let Some(link) = self.links.get_mut(&conn) else {
            return;
        };
        link.io.pending.push_back(bytes);
        self.unsent.insert(conn);
    }

    /// The node closes `conn`: what it transmitted, close_notify, then the
    /// world closes it. What was received and not taken is dropped.
    pub(super) fn close(&mut self, now: Timestamp, conn: ConnId, world: &mut impl World) {
        if let Some(link) = self.links.get_mut(&conn) {
            link.io.closing = true;
            link.io.readable = false;
            let _ = with_context(&mut self.entropy, now, || run(link));
            self.flush(conn, world);
        }
        self.forget(conn);
        world.close(conn);
    }

    fn flush(&mut self, conn: ConnId, world: &mut impl World) {
        if let Some(link) = self.links.get_mut(&conn) {
            if !link.io.outgoing.is_empty() {
                world.transmit(conn, std::mem::take(&mut link.io.outgoing));
            }
        }
        self.dirty.remove(&conn);
    }

    /// Encrypts what the node transmitted since the last call, and hands
    /// the world the records and closes it owes.
    pub(super) fn sync(&mut self, world: &mut impl World) {
        if !self.unsent.is_empty() {
            let now = world.now();
            for conn in std::mem::take(&mut self.unsent) {
                self.advance(now, conn);
            }
        }
        while let Some(conn) = self.dirty.pop_first() {
            self.flush(conn, world);
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
                let certs = link.tls.common().peer_certificates();
                let peer = link.peer.take();
                let identity = self.config.identity(certs, at, peer.is_some());
                feed_open(node, now, conn, identity, peer);
                self.enqueue_if_owed(conn);
                return true;
            }
            if link.io.readable {
                link.io.readable = false;
                let Link {
                    tls, incoming, at, ..
                } = link;
                let buf = &mut incoming[*at..];
                let discard = process!(tls, buf, |status| feed_record(status, node, now, conn));
                *at += discard;
                // The next record, and what the node transmitted meanwhile.
                self.advance(now, conn);
                return true;
            }
            if link.io.ended {
                self.forget(conn);
                node.handle_input(now, Input::Closed { conn });
                return true;
            }
        }
        false
    }
}

/// Runs rustls on `link` until it needs more from the world or a record
/// waits for the node: handshake records are written to `outgoing`, and
/// what the node transmitted is encrypted there once rustls may.
fn run(link: &mut Link) -> Result<(), rustls::Error> {
    loop {
        if link.io.readable || link.io.failed {
            return Ok(());
        }
        let buf = &mut link.incoming[link.at..];
        let io = &mut link.io;
        let (discard, next) = process!(&mut link.tls, buf, |status| step(status, io));
        link.at += discard;
        if link.at == link.incoming.len() {
            link.incoming.clear();
            link.at = 0;
        }
        match next {
            Next::Again => {}
            Next::Stop => return Ok(()),
            Next::Failed(e) => {
                // Its alert, if rustls made one, goes out. rustls hands it
                // out before it looks at the input again; once it is out,
                // it must not be asked again.
                let io = &mut link.io;
                io.failed = true;
                let buf = &mut link.incoming[link.at..];
                let discard = process!(&mut link.tls, buf, |status| alert(status, io));
                link.at += discard;
                return Err(e);
            }
        }
    }
}

enum Next {
    Again,
    Stop,
    Failed(rustls::Error),
}

/// Acts on one state of rustls. Returns what to discard of the incoming
/// buffer and whether to go on.
fn step<Data>(status: UnbufferedStatus<'_, '_, Data>, io: &mut Io) -> (usize, Next) {
    let UnbufferedStatus { mut discard, state } = status;
    let next = match state {
        Err(e) => Next::Failed(e),
        Ok(ConnectionState::ReadTraffic(mut read)) => {
            if io.closing {
                // The node closed it: nobody takes this.
                if let Some(Ok(record)) = read.next_record() {
                    discard += record.discard;
                }
                Next::Again
            } else {
                io.readable = true;
                Next::Stop
            }
        }
        Ok(ConnectionState::PeerClosed) => {
            io.ended = true;
            Next::Again
        }
        Ok(ConnectionState::Closed) => {
            io.ended = true;
            Next::Stop
        }
        Ok(ConnectionState::EncodeTlsData(mut encode)) => {
            encode_into(&mut encode, &mut io.outgoing);
            Next::Again
        }
        Ok(ConnectionState::TransmitTlsData(mut transmit)) => {
            // Records go to the world in the order they were written here.
            let written = match transmit.may_encrypt_app_data() {
                Some(mut write) => io.write(&mut write),
                None => Ok(()),
            };
            transmit.done();
            match written {
                Ok(()) => Next::Again,
                Err(e) => Next::Failed(e),
            }
        }
        Ok(ConnectionState::WriteTraffic(mut write)) => match io.write(&mut write) {
            Ok(()) => Next::Stop,
            Err(e) => Next::Failed(e),
        },
        // Waiting for the other end's handshake; early data is never
        // enabled.
        Ok(_) => Next::Stop,
    };
    (discard, next)
}

/// After a failure: writes the alert rustls queued, if any.
fn alert<Data>(status: UnbufferedStatus<'_, '_, Data>, io: &mut Io) -> usize {
    let UnbufferedStatus { discard, state } = status;
    if let Ok(ConnectionState::EncodeTlsData(mut encode)) = state {
        encode_into(&mut encode, &mut io.outgoing);
    }
    discard
}

impl Io {
    /// Encrypts what the node transmitted, then close_notify if it closed.
    /// Small messages are gathered into records of up to [`MAX_FRAGMENT`]:
    /// a batch of small files is a stream of offers, chunks and acks of a
    /// few dozen bytes each, and a record apiece (an AEAD seal here and an
    /// open at the other end, 22 bytes, and rustls' bookkeeping) cost more
    /// than the messages. A large one is encrypted where it lies, never
    /// copied.
    fn write<Data>(&mut self, write: &mut WriteTraffic<'_, Data>) -> Result<(), rustls::Error> {
        let mut gathered: Vec<u8> = Vec::new();
        while let Some(plain) = self.pending.pop_front() {
            let fits = gathered.len() + plain.len() <= MAX_FRAGMENT;
            if !fits && !gathered.is_empty() {
                encrypt_into(write, &gathered, &mut self.outgoing)?;
                gathered.clear();
            }
            let alone = self.pending.front().is_none_or(|next| {
                plain.len() >= MAX_FRAGMENT || plain.len() + next.len() > MAX_FRAGMENT
            });
            if gathered.is_empty() && alone {
                encrypt_into(write, &plain, &mut self.outgoing)?;
            } else {
                gathered.extend_from_slice(&plain);
            }
        }
        if !gathered.is_empty() {
            encrypt_into(write, &gathered, &mut self.outgoing)?;
        }
        if self.closing && !self.close_sent {
            self.close_sent = true;
            let start = self.outgoing.len();
            self.outgoing.resize(start + CLOSE_NOTIFY_ROOM, 0);
            let n = write
                .queue_close_notify(&mut self.outgoing[start..])
                .unwrap_or(0);
            self.outgoing.truncate(start + n);
        }
        Ok(())
    }
}

/// A TLS 1.3 record's bytes beyond its plaintext: header (5), inner
/// content type (1), AEAD tag (16).
const RECORD_OVERHEAD: usize = 22;

/// The most plaintext one record carries.
const MAX_FRAGMENT: usize = 16 * 1024;

/// An encrypted close_notify alert, with room to spare.
const CLOSE_NOTIFY_ROOM: usize = 64;

fn encrypt_into<Data>(
    write: &mut WriteTraffic<'_, Data>,
    plain: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), rustls::Error> {
    let start = out.len();
    let records = plain.len().div_ceil(MAX_FRAGMENT).max(1);
    let mut room = plain.len() + records * RECORD_OVERHEAD;
    loop {
        out.resize(start + room, 0);
        match write.encrypt(plain, &mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            // Room for a key update rustls sends first, say.
            Err(EncryptError::InsufficientSize(InsufficientSizeError { required_size })) => {
                room = required_size
            }
            Err(_) => {
                out.truncate(start);
                return Err(rustls::Error::EncryptError);
            }
        }
    }
}

fn encode_into<Data>(encode: &mut EncodeTlsData<'_, Data>, out: &mut Vec<u8>) {
    let start = out.len();
    let mut room = 0;
    loop {
        out.resize(start + room, 0);
        match encode.encode(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return;
            }
            Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
                room = required_size
            }
            Err(_) => {
                out.truncate(start);
                return;
            }
        }
    }
}

/// Feeds the node the record waiting. Returns what to discard.
fn feed_record<Data, N: Node>(
    status: UnbufferedStatus<'_, '_, Data>,
    node: &mut N,
    now: Timestamp,
    conn: ConnId,
) -> usize {
    let UnbufferedStatus { mut discard, state } = status;
    if let Ok(ConnectionState::ReadTraffic(mut read)) = state {
        if let Some(Ok(record)) = read.next_record() {
            discard += record.discard;
            node.handle_input(
                now,
                Input::Received {
                    conn,
                    bytes: record.payload,
                },
            );
        }
    }
    discard
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
