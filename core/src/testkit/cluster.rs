//! A whole cluster of servers in memory, for unit tests of replication,
//! accounts and files. Each server runs in the one [`Host`], on a
//! [`MemWorld`]: its store a `MemStore`, its disk a [`MemDisk`], its network
//! a list of what it sent, which the cluster carries between servers in
//! FIFO order. Links can be cut (silently, as a partition is). Store and
//! disk survive a crash; everything else of the server goes.

use crate::balancer::messages::ProbeMsg;
use crate::balancer::ServerAddr;
use crate::file_attrs::FileAttrs;
use crate::frame::FrameDecoder;
use crate::host::mem_dir::MemDir;
use crate::host::mem_disk::MemDisk;
use crate::host::{Host, HostError, World};
use crate::io::{ConnId, FileAnswer, FileFailure, FileOp, Input};
use crate::refusal::PROTOCOL_VERSION;
use crate::replication::ReplicaConfig;
use crate::server::{OpError, Request, SessionMsg};
use crate::server::{Server, ServerConfig, ServerEvent};
use crate::store::{Batch, MemStore, Store};
use crate::time::Timestamp;
use crate::transfer::{Receiver, ReceiverOutput, Sender, SenderConfig, SenderOutput, TransferMsg};
use crate::Entropy;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::ControlFlow;
use std::time::Duration;

/// Node index in the cluster; node `i` is server id `i + 1`.
pub type Ix = usize;

/// A network input on its way to a server.
enum Msg {
    Accepted(ConnId),
    Connected(ConnId),
    ConnectFailed(ConnId),
    Received(ConnId, Vec<u8>),
    Closed(ConnId),
}

/// What a server asked of its network, for the cluster to carry out.
pub(super) enum NetOut {
    Transmit(ConnId, Vec<u8>),
    Connect(ConnId, String),
    Close(ConnId),
}

/// One node's world in memory: a server's (its files on [`MemDisk`]) or a
/// peer's ([`MemWorld::shared_dir`]: its files in a [`MemDir`]).
#[derive(Default)]
pub struct MemWorld {
    now: Timestamp,
    pub store: MemStore,
    pub disk: MemDisk,
    /// A peer's shared directory; file work goes here, not to `disk`, when
    /// there is one.
    pub dir: Option<MemDir>,
    net: Vec<NetOut>,
    /// While set, `FilePersisted` answers wait in `held` (a slow disk).
    hold_persists: bool,
    held: Vec<FileAnswer>,
    /// While set, every read is answered this much later (a slow disk).
    pub(super) read_delay: Option<Duration>,
    slow_reads: VecDeque<(Timestamp, FileAnswer)>,
    /// Answers due, for the host to take.
    due: VecDeque<FileAnswer>,
}

impl MemWorld {
    /// A peer's world: its files are one shared directory, empty.
    pub fn shared_dir() -> Self {
        MemWorld {
            dir: Some(MemDir::default()),
            ..MemWorld::default()
        }
    }

    /// Sets the world's clock (a node run outside a [`Cluster`]).
    pub fn set_now(&mut self, now: Timestamp) {
        self.now = now;
    }

    /// What the node asked of the network since the last call.
    pub(super) fn take_net(&mut self) -> Vec<NetOut> {
        std::mem::take(&mut self.net)
    }

    /// What a crash loses: everything but the store and the disk.
    pub(crate) fn crash(&mut self) {
        self.net.clear();
        self.held.clear();
        self.slow_reads.clear();
        self.due.clear();
    }

    /// Slow reads whose time has come join the answers due, in the order
    /// asked, as a runtime's do.
    fn release_reads(&mut self, now: Timestamp) {
        while self.slow_reads.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, answer)) = self.slow_reads.pop_front() {
                self.due.push_back(answer);
            }
        }
    }
}

impl World for MemWorld {
    fn now(&self) -> Timestamp {
        self.now
    }

    fn transmit(&mut self, conn: ConnId, bytes: Vec<u8>) {
        self.net.push(NetOut::Transmit(conn, bytes));
    }

    fn connect(&mut self, conn: ConnId, addr: String) {
        self.net.push(NetOut::Connect(conn, addr));
    }

    fn close(&mut self, conn: ConnId) {
        self.net.push(NetOut::Close(conn));
    }

    fn commit(&mut self, batch: &Batch) -> Result<(), HostError> {
        Ok(self.store.commit(batch)?)
    }

    fn file(&mut self, op: FileOp) -> Result<Option<FileAnswer>, HostError> {
        let read = matches!(op, FileOp::Read { .. });
        let answer = match self.dir.as_mut() {
            Some(dir) => dir.execute(op, self.now.as_micros() / 1000),
            None => self.disk.execute(op),
        };
        match answer {
            Some(a @ FileAnswer::Persisted { .. }) if self.hold_persists => {
                self.held.push(a);
                Ok(None)
            }
            Some(a) if read => match self.read_delay {
                Some(delay) => {
                    self.slow_reads.push_back((self.now + delay, a));
                    Ok(None)
                }
                None => Ok(Some(a)),
            },
            other => Ok(other),
        }
    }

    fn take_file_answer(&mut self) -> Option<FileAnswer> {
        self.due.pop_front()
    }

    fn read(&mut self, handle: u64, offset: u64, len: usize) -> Result<&[u8], FileFailure> {
        match self.dir.as_mut() {
            Some(dir) => dir.read(handle, offset, len),
            None => self.disk.read(handle, offset, len),
        }
    }
}

type ServerHost = Host<Server, MemWorld>;

/// Hands network input `m` to a node's host.
fn feed<N: crate::io::Node>(h: &mut Host<N, MemWorld>, m: &Msg) {
    match m {
        Msg::Accepted(c) => h.handle_input(Input::Accepted {
            identity: crate::io::Identity::Unchecked,
            conn: *c,
            peer: "peer".into(),
        }),
        Msg::Connected(c) => h.handle_input(Input::Connected {
            conn: *c,
            identity: crate::io::Identity::Unchecked,
        }),
        Msg::ConnectFailed(c) => h.handle_input(Input::ConnectFailed {
            conn: *c,
            reason: "refused".into(),
        }),
        Msg::Received(c, b) => h.handle_input(Input::Received { conn: *c, bytes: b }),
        Msg::Closed(c) => h.handle_input(Input::Closed { conn: *c }),
    }
}

pub struct Cluster {
    /// Running servers; a crashed one's world (store and disk) waits in
    /// `down`.
    hosts: Vec<Option<ServerHost>>,
    down: Vec<Option<MemWorld>>,
    pub events: Vec<(Ix, ServerEvent)>,
    pub now: Timestamp,
    links: BTreeMap<(Ix, ConnId), (Ix, ConnId)>,
    cut: BTreeSet<(Ix, Ix)>,
    queue: VecDeque<(Ix, Msg)>,
    pub(super) next_accept: u64,
    size: usize,
    /// `Fetching` messages [`Cluster::download`] heard, as (bytes, size).
    pub fetching_told: Vec<(u64, u64)>,
    /// The attributes the last download's offer came with, if any.
    pub attrs_told: Option<FileAttrs>,
    /// The attributes that followed each offer of the last
    /// [`Cluster::download_many`], by file.
    pub batch_attrs_told: BTreeMap<u64, FileAttrs>,
    /// Bytes servers sent to test clients, per (server, connection).
    pub(super) inbox: BTreeMap<(Ix, ConnId), FrameDecoder>,
    /// Peers (`ferry peer` nodes), network nodes `size..`; see
    /// [`Cluster::add_peer`].
    pub(super) peers: Vec<super::peers::PeerSlot>,
    /// What the peers said, by peer number (from 0).
    pub peer_events: Vec<(usize, crate::peer::PeerEvent)>,
    /// The address test clients connect from, as the servers see it.
    client_addr: String,
    /// Test clients' connections the servers closed.
    closed: BTreeSet<(Ix, ConnId)>,
    /// Changes every server's configuration at every start.
    tweak: fn(&mut ServerConfig),
}

pub fn addr(ix: Ix) -> String {
    format!("server{}:7000", ix + 1)
}

/// The number in `PREFIXn:port`, from 1.
fn numbered(addr: &str, prefix: &str) -> Option<usize> {
    addr.strip_prefix(prefix)?
        .split(':')
        .next()?
        .parse::<usize>()
        .ok()?
        .checked_sub(1)
}

/// What a client's upload saw ([`Cluster::upload_seen`]).
#[derive(Debug, Default)]
pub struct UploadSeen {
    /// The server's answers that are not transfer messages.
    pub answers: Vec<SessionMsg>,
    /// Where the transfer resumed, if it did.
    pub resumed: Option<u64>,
    /// The bytes the server kept that were not this content's, if any.
    pub started_over: Option<u64>,
    /// How the client's sender ended, if it did.
    pub sent: Option<Result<[u8; 32], crate::transfer::TransferError>>,
    /// How many times the server said it was copying the upload to the
    /// others (`Fetching`).
    pub told_copying: usize,
}

impl Cluster {
    /// `size` servers; server 1 is the master. The clock starts at a
    /// plausible Unix time so token expiry has meaning.
    pub fn new(size: usize) -> Self {
        Self::new_with(size, |_| {})
    }

    /// Like [`Cluster::new`], with every server's configuration changed by
    /// `tweak` (at every start).
    pub fn new_with(size: usize, tweak: fn(&mut ServerConfig)) -> Self {
        let mut c = Cluster {
            hosts: (0..size).map(|_| None).collect(),
            down: (0..size).map(|_| Some(MemWorld::default())).collect(),
            events: Vec::new(),
            now: Timestamp::from_micros(1_800_000_000 * 1_000_000),
            links: BTreeMap::new(),
            cut: BTreeSet::new(),
            queue: VecDeque::new(),
            next_accept: 1000,
            size,
            inbox: BTreeMap::new(),
            fetching_told: Vec::new(),
            attrs_told: None,
            batch_attrs_told: BTreeMap::new(),
            peers: Vec::new(),
            peer_events: Vec::new(),
            client_addr: "client".into(),
            closed: BTreeSet::new(),
            tweak,
        };
        for ix in 0..size {
            c.boot(ix);
        }
        c.settle();
        c
    }

    /// Starts server `ix` from the store and disk its world kept.
    fn boot(&mut self, ix: Ix) {
        let Some(mut world) = self.down[ix].take() else {
            return;
        };
        let id = ix as u32 + 1;
        let peers = (0..self.size)
            .filter(|&j| j != ix)
            .map(|j| ServerAddr {
                id: j as u32 + 1,
                addr: addr(j),
            })
            .collect();
        let mut cfg = ServerConfig::new(id);
        cfg.password = crate::accounts::password::PasswordParams::TESTING;
        (self.tweak)(&mut cfg);
        let mut rec = world.store.load().unwrap();
        rec.blobs = world.disk.start().0;
        world.now = self.now;
        let server = Server::new(
            cfg,
            ReplicaConfig::new(id, 1, peers),
            super::secret(),
            Entropy::from_u64(id as u64),
            &rec,
            self.now,
        )
        .unwrap();
        self.hosts[ix] = Some(Host::new(server, world));
    }

    fn world(&self, ix: Ix) -> &MemWorld {
        match &self.hosts[ix] {
            Some(h) => h.world(),
            None => self.down[ix].as_ref().expect("a server is up or down"),
        }
    }

    fn world_mut(&mut self, ix: Ix) -> &mut MemWorld {
        match &mut self.hosts[ix] {
            Some(h) => h.world_mut(),
            None => self.down[ix].as_mut().expect("a server is up or down"),
        }
    }

    pub fn server(&self, ix: Ix) -> &Server {
        self.hosts[ix].as_ref().unwrap().node()
    }

    pub fn server_mut(&mut self, ix: Ix) -> &mut Server {
        self.hosts[ix].as_mut().unwrap().node_mut()
    }

    /// Server `ix`'s node, out of the cluster, to be driven by hand. Its
    /// world goes down: the server is crashed as far as the cluster knows.
    pub fn take_server(&mut self, ix: Ix) -> Server {
        let host = self.hosts[ix].take().unwrap();
        let (server, mut world) = host.into_parts();
        world.crash();
        self.down[ix] = Some(world);
        server
    }

    /// Server `ix`'s disk, whether it is up or down.
    pub fn disk(&self, ix: Ix) -> &MemDisk {
        &self.world(ix).disk
    }

    pub fn disk_mut(&mut self, ix: Ix) -> &mut MemDisk {
        &mut self.world_mut(ix).disk
    }

    /// Server `ix`'s store, whether it is up or down.
    pub fn store(&self, ix: Ix) -> &MemStore {
        &self.world(ix).store
    }

    pub fn store_mut(&mut self, ix: Ix) -> &mut MemStore {
        &mut self.world_mut(ix).store
    }

    /// Makes every disk's file persists wait until
    /// [`Cluster::release_persists`].
    pub fn hold_persists(&mut self) {
        for ix in 0..self.size {
            self.world_mut(ix).hold_persists = true;
        }
    }

    /// Makes server `ix`'s file persists wait until
    /// [`Cluster::release_persists`]: a disk slower than the others.
    pub fn hold_persists_of(&mut self, ix: Ix) {
        self.world_mut(ix).hold_persists = true;
    }

    /// Makes every disk's reads come back `delay` later (or at once).
    pub fn set_read_delay(&mut self, delay: Option<Duration>) {
        for ix in 0..self.size {
            self.world_mut(ix).read_delay = delay;
        }
    }

    /// Stops a server: its connections break, its memory is gone, its
    /// store and its disk stay.
    pub fn crash(&mut self, ix: Ix) {
        if self.hosts[ix].is_some() {
            drop(self.take_server(ix));
        }
        self.drop_links_of(ix);
    }

    /// Node `ix` is gone: the other end of each of its links hears it
    /// close, and nothing on its way to it arrives.
    pub(super) fn drop_links_of(&mut self, ix: Ix) {
        let mine: Vec<_> = self
            .links
            .keys()
            .filter(|(i, _)| *i == ix)
            .copied()
            .collect();
        for k in mine {
            if let Some((j, c)) = self.links.remove(&k) {
                self.links.remove(&(j, c));
                self.queue.push_back((j, Msg::Closed(c)));
            }
        }
        self.queue.retain(|(i, _)| *i != ix);
    }

    /// Servers in the cluster.
    pub fn size(&self) -> usize {
        self.size
    }

    pub fn restart(&mut self, ix: Ix) {
        self.boot(ix);
        self.settle();
    }

    /// Drops every message between `a` and `b` from now on, silently.
    pub fn partition(&mut self, a: Ix, b: Ix) {
        self.cut.insert((a, b));
        self.cut.insert((b, a));
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Feeds one input to server `ix` and carries every consequence.
    pub fn input(&mut self, ix: Ix, input: Input<'_>) {
        self.sync_clock();
        if let Some(h) = self.hosts[ix].as_mut() {
            h.handle_input(input);
        }
        self.settle();
    }

    /// Delivers queued messages and outputs until nothing moves.
    pub fn settle(&mut self) {
        self.sync_clock();
        loop {
            for ix in 0..self.size {
                self.settle_host(ix);
            }
            for k in 0..self.peers.len() {
                self.settle_peer(k);
            }
            let Some((ix, m)) = self.queue.pop_front() else {
                return;
            };
            if ix < self.size {
                if let Some(h) = self.hosts[ix].as_mut() {
                    feed(h, &m);
                }
            } else if let Some(h) = self.peers[ix - self.size].host.as_mut() {
                feed(h, &m);
            }
        }
    }

    /// Node `ix` of the network: a server, or (from `size` on) a peer.
    fn ix_of(&self, addr: &str) -> Option<Ix> {
        numbered(addr, "server")
            .filter(|&ix| ix < self.size)
            .or_else(|| numbered(addr, "10.0.1.").map(|k| self.size + k))
    }

    fn is_up(&self, ix: Ix) -> bool {
        match ix.checked_sub(self.size) {
            None => self.hosts.get(ix).is_some_and(|s| s.is_some()),
            Some(k) => self.peers.get(k).is_some_and(|p| p.host.is_some()),
        }
    }

    /// Settles server `ix`'s host, then carries what it sent.
    fn settle_host(&mut self, ix: Ix) {
        let Some(h) = self.hosts[ix].as_mut() else {
            return;
        };
        let mut events = Vec::new();
        let settled = h.settle(|_, e| {
            events.push(e);
            ControlFlow::<()>::Continue(())
        });
        if let Err(e) = settled {
            panic!("server {} stopped: {e}", ix + 1);
        }
        self.events.extend(events.into_iter().map(|e| (ix, e)));
        let net = std::mem::take(&mut h.world_mut().net);
        for out in net {
            self.carry(ix, out);
        }
    }

    pub(super) fn carry(&mut self, ix: Ix, out: NetOut) {
        match out {
            NetOut::Transmit(conn, bytes) => {
                if let Some(&(j, c)) = self.links.get(&(ix, conn)) {
                    if !self.cut.contains(&(ix, j)) {
                        self.queue.push_back((j, Msg::Received(c, bytes)));
                    }
                } else if let Some(d) = self.inbox.get_mut(&(ix, conn)) {
                    d.push(&bytes);
                }
            }
            NetOut::Connect(conn, addr) => match self.ix_of(&addr) {
                Some(j) if self.is_up(j) && !self.cut.contains(&(ix, j)) => {
                    let acc = ConnId::accepted(self.next_accept);
                    self.next_accept += 1;
                    self.links.insert((ix, conn), (j, acc));
                    self.links.insert((j, acc), (ix, conn));
                    self.queue.push_back((j, Msg::Accepted(acc)));
                    self.queue.push_back((ix, Msg::Connected(conn)));
                }
                _ => self.queue.push_back((ix, Msg::ConnectFailed(conn))),
            },
            NetOut::Close(conn) => {
                if let Some((j, c)) = self.links.remove(&(ix, conn)) {
                    self.links.remove(&(j, c));
                    self.queue.push_back((j, Msg::Closed(c)));
                } else if self.inbox.contains_key(&(ix, conn)) {
                    self.closed.insert((ix, conn));
                }
            }
        }
    }

    /// A code for server `ix` minted now by the balancer, good for its
    /// usual two seconds.
    pub fn mint_code(&mut self, ix: Ix) -> crate::auth::AuthCode {
        let n = self.next_accept;
        self.next_accept += 1;
        let nonce = (n as u128).to_le_bytes();
        super::secret().mint(ix as u32 + 1, nonce, self.now, crate::auth::CODE_TTL)
    }

    /// Opens an established client session on server `ix` (a probe, then
    /// HELLO, HELLO ACK, ACK), as a test client.
    pub fn open_session(&mut self, ix: Ix) -> ConnId {
        let id = ix as u32 + 1;
        let code = self.mint_code(ix);
        let n = self.next_accept;
        self.next_accept += 2;
        let probe = ConnId::accepted(n);
        let conn = ConnId::accepted(n + 1);
        self.inbox.insert((ix, probe), FrameDecoder::default());
        self.inbox.insert((ix, conn), FrameDecoder::default());
        let p = ProbeMsg::Probe {
            version: PROTOCOL_VERSION,
            proof: super::secret().probe_proof(&code),
            code: code.clone(),
        };
        self.send_raw(ix, probe, &super::bytes_of(&p));
        self.send_raw(
            ix,
            conn,
            &super::bytes_of(&SessionMsg::Hello {
                version: PROTOCOL_VERSION,
                code,
            }),
        );
        assert!(
            matches!(self.received(ix, conn)[..], [SessionMsg::HelloAck { .. }]),
            "session on server {id}"
        );
        self.send(ix, conn, &SessionMsg::Ack);
        conn
    }

    /// [`Cluster::open_session`] from a client at `addr` (`IP:PORT`), so
    /// that failed logins count against that source.
    pub fn open_session_from(&mut self, ix: Ix, addr: &str) -> ConnId {
        let before = std::mem::replace(&mut self.client_addr, addr.to_string());
        let conn = self.open_session(ix);
        self.client_addr = before;
        conn
    }

    /// A connection to server `ix` from `addr` (`IP:PORT`) that has sent
    /// nothing yet, as a half-open one; [`Cluster::send_bytes`] sends on it.
    pub fn connect_from(&mut self, ix: Ix, addr: &str) -> ConnId {
        let conn = ConnId::accepted(self.next_accept);
        self.next_accept += 1;
        self.inbox.insert((ix, conn), FrameDecoder::default());
        self.sync_clock();
        if let Some(h) = self.hosts[ix].as_mut() {
            h.handle_input(Input::Accepted {
                identity: crate::io::Identity::Unchecked,
                conn,
                peer: addr.to_string(),
            });
        }
        self.settle();
        conn
    }

    /// Sends `bytes` as they are on a test client's connection.
    pub fn send_bytes(&mut self, ix: Ix, conn: ConnId, bytes: &[u8]) {
        self.input(ix, Input::Received { conn, bytes });
    }

    /// Did server `ix` close the test client's connection `conn`?
    pub fn is_closed(&self, ix: Ix, conn: ConnId) -> bool {
        self.closed.contains(&(ix, conn))
    }

    /// Opens a connection to server `ix` that sends `first` (any link's
    /// first message) and returns it; [`Cluster::received_as`] reads the
    /// answers.
    pub fn open_raw<M: speedy::Writable<speedy::LittleEndian>>(
        &mut self,
        ix: Ix,
        first: &M,
    ) -> ConnId {
        let conn = ConnId::accepted(self.next_accept);
        self.next_accept += 1;
        self.inbox.insert((ix, conn), FrameDecoder::default());
        self.send_raw(ix, conn, &super::bytes_of(first));
        conn
    }

    /// Messages of type `M` server `ix` sent on `conn` since the last call.
    pub fn received_as<M>(&mut self, ix: Ix, conn: ConnId) -> Vec<M>
    where
        M: for<'a> speedy::Readable<'a, speedy::LittleEndian>
            + speedy::Writable<speedy::LittleEndian>,
    {
        let mut msgs = Vec::new();
        if let Some(d) = self.inbox.get_mut(&(ix, conn)) {
            while let Ok(Some(p)) = d.next_payload() {
                if let Ok(m) = crate::frame::decode(p) {
                    msgs.push(m);
                }
            }
        }
        msgs
    }

    fn send_raw(&mut self, ix: Ix, conn: ConnId, bytes: &[u8]) {
        if !self.links.contains_key(&(ix, conn)) && self.inbox.contains_key(&(ix, conn)) {
            let fresh = self
                .inbox
                .get(&(ix, conn))
                .is_some_and(|d| d.buffered() == 0);
            if fresh {
                self.sync_clock();
                if let Some(h) = self.hosts[ix].as_mut() {
                    h.handle_input(Input::Accepted {
                        identity: crate::io::Identity::Unchecked,
                        conn,
                        peer: self.client_addr.clone(),
                    });
                }
            }
        }
        self.input(ix, Input::Received { conn, bytes });
    }

    pub fn send(&mut self, ix: Ix, conn: ConnId, msg: &SessionMsg) {
        self.input(
            ix,
            Input::Received {
                conn,
                bytes: &super::bytes_of(msg),
            },
        );
    }

    /// Messages the server sent to a test client since the last call.
    pub fn received(&mut self, ix: Ix, conn: ConnId) -> Vec<SessionMsg> {
        self.received_as(ix, conn)
    }

    /// Runs one operation the way a client does (code, proceed, data) and
    /// returns what the server sent back, after letting the cluster run.
    pub fn request(&mut self, ix: Ix, conn: ConnId, req: &Request) -> Vec<SessionMsg> {
        self.send(ix, conn, &SessionMsg::Begin { op: req.op() });
        let proceed = self.received(ix, conn);
        assert_eq!(proceed, vec![SessionMsg::Proceed { op: req.op() }]);
        self.send(ix, conn, &req.payload());
        self.run_for(Duration::from_millis(50));
        self.received(ix, conn)
    }

    /// Lists what the session's user sees (under `prefix`, if given) the
    /// way a client does, page after page: the files, and how many pages
    /// they came in. Every page must fit in a frame.
    pub fn list_pages(
        &mut self,
        ix: Ix,
        conn: ConnId,
        prefix: Option<&str>,
    ) -> (Vec<crate::server::messages::Listed>, usize) {
        let first = match prefix {
            Some(p) => Request::ListUnder { prefix: p.into() },
            None => Request::List,
        };
        let mut answer = self.request(ix, conn, &first);
        let mut files = Vec::new();
        let mut pages = 1;
        loop {
            for m in &answer {
                let len = super::bytes_of(m).len();
                assert!(len <= crate::frame::MAX_FRAME + 4, "a page of {len} bytes");
            }
            match answer.as_slice() {
                [SessionMsg::Listing { files: last }] => {
                    files.extend(last.iter().cloned());
                    return (files, pages);
                }
                [SessionMsg::ListingPart { files: part, next }] => {
                    assert!(!part.is_empty(), "an empty page");
                    files.extend(part.iter().cloned());
                    let more = SessionMsg::ListAfter {
                        prefix: prefix.map(String::from),
                        after: next.clone(),
                    };
                    self.send(ix, conn, &SessionMsg::Begin { op: first.op() });
                    let proceed = self.received(ix, conn);
                    assert_eq!(proceed, vec![SessionMsg::Proceed { op: first.op() }]);
                    self.send(ix, conn, &more);
                    self.run_for(Duration::from_millis(50));
                    answer = self.received(ix, conn);
                    pages += 1;
                }
                other => panic!("a listing's page, not {other:?}"),
            }
        }
    }

    /// Delivers the held `FilePersisted` answers, and holds no more.
    pub fn release_persists(&mut self) {
        for ix in 0..self.size {
            let w = self.world_mut(ix);
            w.hold_persists = false;
            let held = std::mem::take(&mut w.held);
            w.due.extend(held);
        }
        self.settle();
    }

    /// Uploads `content` as `name` through the session, the way a client
    /// does; returns the server's final answer.
    pub fn upload(
        &mut self,
        ix: Ix,
        conn: ConnId,
        name: &str,
        content: &[u8],
        replace: bool,
    ) -> Vec<SessionMsg> {
        self.upload_then(ix, conn, name, content, replace, |_| {})
    }

    /// Like [`Cluster::upload`], calling `meanwhile` once the server has
    /// accepted the offer (the operation is past the server's read gate
    /// and the content is on its way): for faults that strike mid-upload.
    pub fn upload_then(
        &mut self,
        ix: Ix,
        conn: ConnId,
        name: &str,
        content: &[u8],
        replace: bool,
        meanwhile: impl FnOnce(&mut Cluster),
    ) -> Vec<SessionMsg> {
        self.upload_with(ix, conn, name, content, replace, None, meanwhile)
    }

    /// Like [`Cluster::upload_then`], the file's `attrs` sent after its
    /// offer, as a client sends them.
    #[allow(clippy::too_many_arguments)]
    pub fn upload_with(
        &mut self,
        ix: Ix,
        conn: ConnId,
        name: &str,
        content: &[u8],
        replace: bool,
        attrs: Option<FileAttrs>,
        meanwhile: impl FnOnce(&mut Cluster),
    ) -> Vec<SessionMsg> {
        let mut meanwhile = Some(meanwhile);
        let req = Request::Upload {
            name: name.into(),
            size: content.len() as u64,
            replace,
            attrs,
        };
        self.send(ix, conn, &SessionMsg::Begin { op: req.op() });
        let got = self.received(ix, conn);
        if got != vec![SessionMsg::Proceed { op: req.op() }] {
            return got;
        }
        let mut s = Sender::new(
            self.now,
            0,
            name.into(),
            content.len() as u64,
            SenderConfig::default(),
        );
        let mut answers = Vec::new();
        for _ in 0..100_000 {
            while let Some(o) = s.poll_output() {
                match o {
                    SenderOutput::Send(m) => {
                        let (offer, id) = (matches!(m, TransferMsg::Offer { .. }), m.id());
                        self.send(ix, conn, &SessionMsg::Transfer(m));
                        if let Some(attrs) = attrs.filter(|_| offer) {
                            self.send(ix, conn, &SessionMsg::Attrs { id, attrs });
                        }
                    }
                    SenderOutput::Read { offset, len } => {
                        let o = offset as usize;
                        s.on_read(offset, &content[o..o + len]);
                    }
                    SenderOutput::Progress { .. }
                    | SenderOutput::Resumed { .. }
                    | SenderOutput::StartedOver { .. }
                    | SenderOutput::Finished(_) => {}
                }
            }
            for m in self.received(ix, conn) {
                match m {
                    SessionMsg::Transfer(t) => {
                        s.on_msg(self.now, t);
                        if let Some(f) = meanwhile.take() {
                            f(self);
                        }
                    }
                    other => answers.push(other),
                }
            }
            if !answers.is_empty()
                || (s.is_finished() && s.poll_timeout().is_none() && self.is_idle())
            {
                if answers.is_empty() {
                    self.run_for(Duration::from_millis(100));
                    answers.extend(
                        self.received(ix, conn)
                            .into_iter()
                            .filter(|m| !matches!(m, SessionMsg::Transfer(_))),
                    );
                }
                return answers;
            }
            self.run_for(Duration::from_millis(10));
        }
        answers
    }

    /// Uploads `content` as `name` the way a client does, as
    /// [`Cluster::upload`]; with `cut`, the client vanishes (its
    /// connection closes, as when it is killed) once that many bytes are
    /// acknowledged. Its window is 32 chunks, so that the server holds
    /// little more than what was acknowledged when it is cut. What the
    /// client saw.
    pub fn upload_seen(
        &mut self,
        ix: Ix,
        conn: ConnId,
        name: &str,
        content: &[u8],
        replace: bool,
        cut: Option<u64>,
    ) -> UploadSeen {
        self.upload_cut(ix, conn, name, content, replace, cut, true)
    }

    /// Like [`Cluster::upload_seen`] with a cut, but the client falls
    /// silent instead (its connection stays open: a network that drops
    /// everything).
    pub fn upload_silenced(
        &mut self,
        ix: Ix,
        conn: ConnId,
        name: &str,
        content: &[u8],
        cut: u64,
    ) -> UploadSeen {
        self.upload_cut(ix, conn, name, content, false, Some(cut), false)
    }

    #[allow(clippy::too_many_arguments)]
    fn upload_cut(
        &mut self,
        ix: Ix,
        conn: ConnId,
        name: &str,
        content: &[u8],
        replace: bool,
        cut: Option<u64>,
        close: bool,
    ) -> UploadSeen {
        let mut seen = UploadSeen::default();
        let req = Request::Upload {
            name: name.into(),
            size: content.len() as u64,
            replace,
            attrs: None,
        };
        self.send(ix, conn, &SessionMsg::Begin { op: req.op() });
        let got = self.received(ix, conn);
        if got != vec![SessionMsg::Proceed { op: req.op() }] {
            seen.answers = got;
            return seen;
        }
        let size = content.len() as u64;
        let cfg = SenderConfig {
            window: 32,
            ..SenderConfig::default()
        };
        let mut s = Sender::new(self.now, 0, name.into(), size, cfg);
        for _ in 0..100_000 {
            // The client's timers too: resends, and giving up.
            if s.poll_timeout().is_some_and(|t| t <= self.now) {
                s.handle_timeout(self.now);
            }
            while let Some(o) = s.poll_output() {
                match o {
                    SenderOutput::Send(m) => self.send(ix, conn, &SessionMsg::Transfer(m)),
                    SenderOutput::Read { offset, len } => {
                        let o = offset as usize;
                        s.on_read(offset, &content[o..o + len]);
                    }
                    SenderOutput::Resumed { from } => seen.resumed = Some(from),
                    SenderOutput::StartedOver { from } => seen.started_over = Some(from),
                    SenderOutput::Progress { .. } => {}
                    SenderOutput::Finished(r) => seen.sent = Some(r),
                }
            }
            if cut.is_some_and(|at| s.acked_bytes() >= at) {
                if close {
                    self.input(ix, Input::Closed { conn });
                }
                return seen;
            }
            for m in self.received(ix, conn) {
                match m {
                    SessionMsg::Transfer(t) => s.on_msg(self.now, t),
                    // The server copies it to the others: wait on.
                    SessionMsg::Fetching { .. } => seen.told_copying += 1,
                    other => seen.answers.push(other),
                }
            }
            // Failed on the client's side (it gave up waiting): its ABORT
            // went out, and the command ends.
            if !seen.answers.is_empty() || matches!(seen.sent, Some(Err(_))) {
                return seen;
            }
            self.run_for(Duration::from_millis(10));
        }
        seen
    }

    /// Connections made between nodes so far (every dial that opened).
    pub fn connections_made(&self) -> u64 {
        self.next_accept
    }

    /// Uploads `files` as one batch (`UploadMany`), every offer sent at
    /// once; the answers that are not transfer messages (`BatchDone`).
    pub fn upload_many(
        &mut self,
        ix: Ix,
        conn: ConnId,
        files: &[(&str, &[u8])],
        replace: bool,
    ) -> Vec<SessionMsg> {
        self.upload_many_with(ix, conn, files, replace, &[])
    }

    /// Like [`Cluster::upload_many`], file `i`'s `attrs[i]` sent after its
    /// offer.
    pub fn upload_many_with(
        &mut self,
        ix: Ix,
        conn: ConnId,
        files: &[(&str, &[u8])],
        replace: bool,
        attrs: &[Option<FileAttrs>],
    ) -> Vec<SessionMsg> {
        let req = Request::UploadMany {
            files: (files.iter())
                .map(|(n, c)| (n.to_string(), c.len() as u64))
                .collect(),
            replace,
            attrs: attrs.to_vec(),
        };
        self.send(ix, conn, &SessionMsg::Begin { op: req.op() });
        let got = self.received(ix, conn);
        if got != vec![SessionMsg::Proceed { op: req.op() }] {
            return got;
        }
        self.send(ix, conn, &req.payload());
        let mut ready = false;
        for _ in 0..1000 {
            let got = self.received(ix, conn);
            if got == vec![req.payload()] {
                ready = true;
                break;
            }
            if !got.is_empty() {
                return got;
            }
            self.run_for(Duration::from_millis(10));
        }
        if !ready {
            return Vec::new();
        }
        let mut senders: Vec<Sender> = (files.iter().enumerate())
            .map(|(i, (n, c))| {
                let cfg = SenderConfig::default();
                Sender::new(self.now, i as u64, n.to_string(), c.len() as u64, cfg)
            })
            .collect();
        let mut answers = Vec::new();
        for _ in 0..100_000 {
            for (i, s) in senders.iter_mut().enumerate() {
                while let Some(o) = s.poll_output() {
                    match o {
                        SenderOutput::Send(m) => {
                            let offer = matches!(m, TransferMsg::Offer { .. });
                            self.send(ix, conn, &SessionMsg::Transfer(m));
                            let a = attrs.get(i).copied().flatten().filter(|_| offer);
                            if let Some(attrs) = a {
                                let id = i as u64;
                                self.send(ix, conn, &SessionMsg::Attrs { id, attrs });
                            }
                        }
                        SenderOutput::Read { offset, len } => {
                            let o = offset as usize;
                            s.on_read(offset, &files[i].1[o..o + len]);
                        }
                        SenderOutput::Progress { .. }
                        | SenderOutput::Resumed { .. }
                        | SenderOutput::StartedOver { .. }
                        | SenderOutput::Finished(_) => {}
                    }
                }
            }
            for m in self.received(ix, conn) {
                match m {
                    SessionMsg::Transfer(t) => {
                        if let Some(s) = senders.get_mut(t.id() as usize) {
                            s.on_msg(self.now, t);
                        }
                    }
                    other => answers.push(other),
                }
            }
            if !answers.is_empty() {
                return answers;
            }
            self.run_for(Duration::from_millis(10));
        }
        answers
    }

    /// Downloads `files` as one batch (`DownloadMany`), accepting every
    /// offer at once; what arrived of each file (whole or not), and the
    /// answers that are not transfer messages (`SentAll`).
    pub fn download_many(
        &mut self,
        ix: Ix,
        conn: ConnId,
        files: &[(Option<&str>, &str)],
    ) -> (BTreeMap<u64, Vec<u8>>, Vec<SessionMsg>) {
        let req = Request::DownloadMany {
            files: (files.iter())
                .map(|(o, n)| (o.map(String::from), n.to_string()))
                .collect(),
        };
        self.batch_attrs_told.clear();
        let mut pending = self.request(ix, conn, &req);
        let mut receivers: BTreeMap<u64, Receiver> = BTreeMap::new();
        let mut contents: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        let mut answers = Vec::new();
        for _ in 0..100_000 {
            for m in std::mem::take(&mut pending) {
                match m {
                    SessionMsg::Transfer(TransferMsg::Offer { id, name, size }) => {
                        let mut rx =
                            Receiver::new(self.now, id, name, size, Duration::from_secs(10));
                        rx.accept(self.now);
                        receivers.insert(id, rx);
                    }
                    SessionMsg::Transfer(t) => {
                        if let Some(rx) = receivers.get_mut(&t.id()) {
                            rx.on_msg(self.now, t);
                        }
                    }
                    SessionMsg::Attrs { id, attrs } if receivers.contains_key(&id) => {
                        self.batch_attrs_told.insert(id, attrs);
                    }
                    other => answers.push(other),
                }
            }
            let mut sends = Vec::new();
            for (id, rx) in receivers.iter_mut() {
                while let Some(o) = rx.poll_output() {
                    match o {
                        ReceiverOutput::Send(m) => sends.push(m),
                        ReceiverOutput::Write { offset, data } => {
                            let content = contents.entry(*id).or_default();
                            let o = offset as usize;
                            if content.len() < o + data.len() {
                                content.resize(o + data.len(), 0);
                            }
                            content[o..o + data.len()].copy_from_slice(&data);
                        }
                        // Durable at once in memory.
                        ReceiverOutput::Commit { .. } => rx.committed(),
                        _ => {}
                    }
                }
            }
            for m in sends {
                self.send(ix, conn, &SessionMsg::Transfer(m));
            }
            if !answers.is_empty() {
                return (contents, answers);
            }
            self.run_for(Duration::from_millis(10));
            pending = self.received(ix, conn);
        }
        (contents, answers)
    }

    /// Downloads a file through the session; the content, or the answer.
    pub fn download(
        &mut self,
        ix: Ix,
        conn: ConnId,
        owner: Option<&str>,
        name: &str,
    ) -> Result<Vec<u8>, Vec<SessionMsg>> {
        self.download_while(ix, conn, owner, name, |_| {})
    }

    /// Like [`Cluster::download`], calling `meanwhile` once, as soon as
    /// the first content has arrived (the rest still to come).
    pub fn download_while(
        &mut self,
        ix: Ix,
        conn: ConnId,
        owner: Option<&str>,
        name: &str,
        meanwhile: impl FnOnce(&mut Cluster),
    ) -> Result<Vec<u8>, Vec<SessionMsg>> {
        let mut meanwhile = Some(meanwhile);
        let req = Request::Download {
            owner: owner.map(String::from),
            name: name.into(),
        };
        let got = self.request(ix, conn, &req);
        self.attrs_told = None;
        let mut r: Option<Receiver> = None;
        let mut content = Vec::new();
        let mut pending = got;
        for _ in 0..100_000 {
            for m in std::mem::take(&mut pending) {
                match (m, &mut r) {
                    (SessionMsg::Transfer(TransferMsg::Offer { id, name, size }), None) => {
                        let mut rx =
                            Receiver::new(self.now, id, name, size, Duration::from_secs(10));
                        rx.accept(self.now);
                        r = Some(rx);
                    }
                    (SessionMsg::Transfer(t), Some(rx)) => rx.on_msg(self.now, t),
                    (SessionMsg::Attrs { id, attrs }, Some(rx)) if rx.id() == id => {
                        self.attrs_told = Some(attrs)
                    }
                    (SessionMsg::Fetching { bytes, size }, None) => {
                        self.fetching_told.push((bytes, size))
                    }
                    (other, _) => return Err(vec![other]),
                }
            }
            if let Some(rx) = r.as_mut() {
                let mut sends = Vec::new();
                while let Some(o) = rx.poll_output() {
                    match o {
                        ReceiverOutput::Send(m) => sends.push(m),
                        ReceiverOutput::Write { offset, data } => {
                            let o = offset as usize;
                            if content.len() < o + data.len() {
                                content.resize(o + data.len(), 0);
                            }
                            content[o..o + data.len()].copy_from_slice(&data);
                        }
                        ReceiverOutput::Commit { .. } => rx.committed(),
                        ReceiverOutput::Finished(Ok(_)) => {
                            for m in sends {
                                self.send(ix, conn, &SessionMsg::Transfer(m));
                            }
                            return Ok(content);
                        }
                        ReceiverOutput::Finished(Err(e)) => {
                            // The receiver's ABORT goes out, as a client's does.
                            for m in sends {
                                self.send(ix, conn, &SessionMsg::Transfer(m));
                            }
                            return Err(vec![SessionMsg::Failed(OpError::Transfer(e))]);
                        }
                        _ => {}
                    }
                }
                for m in sends {
                    self.send(ix, conn, &SessionMsg::Transfer(m));
                }
            }
            if !content.is_empty() {
                if let Some(f) = meanwhile.take() {
                    f(self);
                }
            }
            self.run_for(Duration::from_millis(10));
            pending = self.received(ix, conn);
        }
        Err(Vec::new())
    }

    /// Advances the clock in steps, firing timers, for `d`.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        let mut steps = 0;
        while self.now < end {
            steps += 1;
            assert!(
                steps < 100_000,
                "timers do not advance: livelock at {}",
                self.now
            );
            let next = self
                .hosts
                .iter()
                .flatten()
                .flat_map(|h| {
                    let reads = h.world().slow_reads.front().map(|(at, _)| *at);
                    h.poll_timeout().into_iter().chain(reads)
                })
                .chain(
                    self.peers
                        .iter()
                        .filter_map(|p| p.host.as_ref())
                        .flat_map(|h| {
                            let reads = h.world().slow_reads.front().map(|(at, _)| *at);
                            h.poll_timeout().into_iter().chain(reads)
                        }),
                )
                .min()
                .unwrap_or(end)
                .max(self.now)
                .min(end);
            self.now = next;
            self.sync_clock();
            for h in self.hosts.iter_mut().flatten() {
                h.world_mut().release_reads(next);
                h.handle_timeout_if_due();
            }
            for h in self.peers.iter_mut().filter_map(|p| p.host.as_mut()) {
                h.world_mut().release_reads(next);
                h.handle_timeout_if_due();
            }
            self.settle();
            if next == end {
                break;
            }
        }
    }

    /// Nothing on its way between servers, and no server owed an answer.
    fn is_idle(&self) -> bool {
        self.queue.is_empty()
            && self.hosts.iter().flatten().all(|h| !h.is_busy())
            && (self.peers.iter()).all(|p| p.host.as_ref().is_none_or(|h| !h.is_busy()))
    }

    /// Every running server's world tells the cluster's time.
    fn sync_clock(&mut self) {
        for h in self.hosts.iter_mut().flatten() {
            h.world_mut().now = self.now;
        }
        for h in self.peers.iter_mut().filter_map(|p| p.host.as_mut()) {
            h.world_mut().now = self.now;
        }
    }
}
