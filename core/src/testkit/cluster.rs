//! A whole cluster of servers in memory, for unit tests of replication and
//! accounts: outputs are carried between nodes in FIFO order, persists go to
//! a `MemStore` at once, and links can be cut (silently, as a partition is).

use crate::balancer::messages::ProbeMsg;
use crate::balancer::ServerAddr;
use crate::frame::FrameDecoder;
use crate::io::{ConnId, Input, Node, Output};
use crate::io::{FileOp, FileRef};
use crate::refusal::PROTOCOL_VERSION;
use crate::replication::ReplicaConfig;
use crate::server::{OpError, Request, SessionMsg};
use crate::server::{Server, ServerConfig, ServerEvent};
use crate::store::{MemStore, Store};
use crate::time::Timestamp;
use crate::transfer::{Receiver, ReceiverOutput, Sender, SenderConfig, SenderOutput, TransferMsg};
use crate::Entropy;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// Node index in the cluster; node `i` is server id `i + 1`.
pub type Ix = usize;

enum Msg {
    Input(Ix, Owned),
}

enum Owned {
    Accepted(ConnId),
    Connected(ConnId),
    ConnectFailed(ConnId),
    Received(ConnId, Vec<u8>),
    Closed(ConnId),
    Persisted(u64),
    FileRead(u64, u64, Vec<u8>),
    FilePersisted(u64),
    /// A failed read; true: the file is missing.
    FileFailed(u64, bool),
}

/// One server's disk: blobs survive a crash, temporary files do not.
#[derive(Default)]
pub struct Disk {
    pub blobs: BTreeMap<[u8; 32], Vec<u8>>,
    pub temps: BTreeMap<u64, Vec<u8>>,
    /// Blobs there whose reads fail (a bad sector: EIO).
    pub unreadable: BTreeSet<[u8; 32]>,
}

pub struct Cluster {
    pub servers: Vec<Option<Server>>,
    pub stores: Vec<MemStore>,
    pub disks: Vec<Disk>,
    pub events: Vec<(Ix, ServerEvent)>,
    pub now: Timestamp,
    links: BTreeMap<(Ix, ConnId), (Ix, ConnId)>,
    cut: BTreeSet<(Ix, Ix)>,
    queue: VecDeque<Msg>,
    next_accept: u64,
    size: usize,
    /// While set, FilePersisted answers wait in `held` (a slow disk).
    pub hold_persists: bool,
    held: Vec<(Ix, u64)>,
    /// While set, every read is answered this much later (a slow disk),
    /// as time runs ([`Cluster::run_for`]).
    pub read_delay: Option<Duration>,
    slow_reads: Vec<(Timestamp, Ix, Owned)>,
    /// `Fetching` messages [`Cluster::download`] heard, as (bytes, size).
    pub fetching_told: Vec<(u64, u64)>,
    /// Bytes servers sent to test clients, per (server, connection).
    inbox: BTreeMap<(Ix, ConnId), FrameDecoder>,
}

pub fn addr(ix: Ix) -> String {
    format!("server{}:7000", ix + 1)
}

fn ix_of(addr: &str) -> Option<Ix> {
    addr.strip_prefix("server")?
        .split(':')
        .next()?
        .parse::<usize>()
        .ok()?
        .checked_sub(1)
}

impl Cluster {
    /// `size` servers; server 1 is the master. The clock starts at a
    /// plausible Unix time so token expiry has meaning.
    pub fn new(size: usize) -> Self {
        let mut c = Cluster {
            servers: Vec::new(),
            stores: vec![MemStore::default(); size],
            disks: (0..size).map(|_| Disk::default()).collect(),
            events: Vec::new(),
            now: Timestamp::from_micros(1_800_000_000 * 1_000_000),
            links: BTreeMap::new(),
            cut: BTreeSet::new(),
            queue: VecDeque::new(),
            next_accept: 1000,
            size,
            inbox: BTreeMap::new(),
            hold_persists: false,
            held: Vec::new(),
            read_delay: None,
            slow_reads: Vec::new(),
            fetching_told: Vec::new(),
        };
        for ix in 0..size {
            let s = c.boot(ix);
            c.servers.push(Some(s));
        }
        c.settle();
        c
    }

    fn boot(&self, ix: Ix) -> Server {
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
        let mut rec = self.stores[ix].load().unwrap();
        rec.blobs = self.disks[ix].blobs.keys().copied().collect();
        Server::new(
            cfg,
            ReplicaConfig::new(id, 1, peers),
            super::secret(),
            Entropy::from_u64(id as u64),
            &rec,
            self.now,
        )
        .unwrap()
    }

    pub fn server(&self, ix: Ix) -> &Server {
        self.servers[ix].as_ref().unwrap()
    }

    /// Stops a server: its connections break, its memory is gone, its
    /// store stays.
    pub fn crash(&mut self, ix: Ix) {
        self.servers[ix] = None;
        self.disks[ix].temps.clear();
        let mine: Vec<_> = self
            .links
            .keys()
            .filter(|(i, _)| *i == ix)
            .copied()
            .collect();
        for k in mine {
            if let Some((j, c)) = self.links.remove(&k) {
                self.links.remove(&(j, c));
                self.queue.push_back(Msg::Input(j, Owned::Closed(c)));
            }
        }
        self.queue.retain(|Msg::Input(i, _)| *i != ix);
    }

    pub fn restart(&mut self, ix: Ix) {
        let s = self.boot(ix);
        self.servers[ix] = Some(s);
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
        if let Some(s) = self.servers[ix].as_mut() {
            s.handle_input(self.now, input);
        }
        self.settle();
    }

    /// Delivers queued messages and outputs until nothing moves.
    pub fn settle(&mut self) {
        loop {
            for ix in 0..self.size {
                self.drain(ix);
            }
            let Some(Msg::Input(ix, m)) = self.queue.pop_front() else {
                return;
            };
            let now = self.now;
            let Some(s) = self.servers[ix].as_mut() else {
                continue;
            };
            match &m {
                Owned::Accepted(c) => s.handle_input(
                    now,
                    Input::Accepted {
                        conn: *c,
                        peer: "peer".into(),
                    },
                ),
                Owned::Connected(c) => s.handle_input(now, Input::Connected { conn: *c }),
                Owned::ConnectFailed(c) => s.handle_input(
                    now,
                    Input::ConnectFailed {
                        conn: *c,
                        reason: "refused".into(),
                    },
                ),
                Owned::Received(c, b) => {
                    s.handle_input(now, Input::Received { conn: *c, bytes: b })
                }
                Owned::Closed(c) => s.handle_input(now, Input::Closed { conn: *c }),
                Owned::Persisted(t) => s.handle_input(now, Input::Persisted { token: *t }),
                Owned::FileRead(h, o, d) => s.handle_input(
                    now,
                    Input::FileRead {
                        handle: *h,
                        offset: *o,
                        data: d,
                    },
                ),
                Owned::FilePersisted(t) => s.handle_input(now, Input::FilePersisted { temp: *t }),
                Owned::FileFailed(h, missing) => s.handle_input(
                    now,
                    Input::FileFailed {
                        handle: *h,
                        error: if *missing {
                            "no such file"
                        } else {
                            "input/output error"
                        }
                        .into(),
                        no_space: false,
                        missing: *missing,
                    },
                ),
            }
        }
    }

    fn drain(&mut self, ix: Ix) {
        while let Some(out) = self.servers[ix].as_mut().and_then(|s| s.poll_output()) {
            match out {
                Output::Transmit { conn, bytes } => {
                    if let Some(&(j, c)) = self.links.get(&(ix, conn)) {
                        if !self.cut.contains(&(ix, j)) {
                            self.queue
                                .push_back(Msg::Input(j, Owned::Received(c, bytes)));
                        }
                    } else if let Some(d) = self.inbox.get_mut(&(ix, conn)) {
                        d.push(&bytes);
                    }
                }
                Output::Connect { conn, addr } => match ix_of(&addr) {
                    Some(j)
                        if self.servers.get(j).is_some_and(|s| s.is_some())
                            && !self.cut.contains(&(ix, j)) =>
                    {
                        let acc = ConnId::accepted(self.next_accept);
                        self.next_accept += 1;
                        self.links.insert((ix, conn), (j, acc));
                        self.links.insert((j, acc), (ix, conn));
                        self.queue.push_back(Msg::Input(j, Owned::Accepted(acc)));
                        self.queue.push_back(Msg::Input(ix, Owned::Connected(conn)));
                    }
                    _ => self
                        .queue
                        .push_back(Msg::Input(ix, Owned::ConnectFailed(conn))),
                },
                Output::Close { conn } => {
                    if let Some((j, c)) = self.links.remove(&(ix, conn)) {
                        self.links.remove(&(j, c));
                        self.queue.push_back(Msg::Input(j, Owned::Closed(c)));
                    }
                }
                Output::Persist { token, batch } => {
                    self.stores[ix].commit(&batch).unwrap();
                    self.queue
                        .push_back(Msg::Input(ix, Owned::Persisted(token)));
                }
                Output::Event(e) => self.events.push((ix, e)),
                Output::File(op) => self.file_op(ix, op),
            }
        }
    }

    /// Opens an established client session on server `ix` (a probe reserves
    /// the slot, then HELLO, HELLO ACK, ACK), as a test client.
    pub fn open_session(&mut self, ix: Ix) -> ConnId {
        let id = ix as u32 + 1;
        let n = self.next_accept;
        self.next_accept += 2;
        let code = super::secret().mint(id, (n as u128).to_le_bytes());
        let probe = ConnId::accepted(n);
        let conn = ConnId::accepted(n + 1);
        self.inbox.insert((ix, probe), FrameDecoder::default());
        self.inbox.insert((ix, conn), FrameDecoder::default());
        let p = ProbeMsg::Probe {
            version: PROTOCOL_VERSION,
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

    fn send_raw(&mut self, ix: Ix, conn: ConnId, bytes: &[u8]) {
        if !self.links.contains_key(&(ix, conn)) && self.inbox.contains_key(&(ix, conn)) {
            let fresh = self
                .inbox
                .get(&(ix, conn))
                .is_some_and(|d| d.buffered() == 0);
            if fresh {
                if let Some(s) = self.servers[ix].as_mut() {
                    s.handle_input(
                        self.now,
                        Input::Accepted {
                            conn,
                            peer: "client".into(),
                        },
                    );
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

    fn file_op(&mut self, ix: Ix, op: FileOp) {
        let disk = &mut self.disks[ix];
        match op {
            FileOp::Read {
                handle,
                file: FileRef::Blob(d),
                offset,
                len,
            } => {
                let msg = match disk.blobs.get(&d) {
                    Some(_) if disk.unreadable.contains(&d) => Owned::FileFailed(handle, false),
                    Some(b) => {
                        let start = (offset as usize).min(b.len());
                        let end = (start + len).min(b.len());
                        Owned::FileRead(handle, offset, b[start..end].to_vec())
                    }
                    None => Owned::FileFailed(handle, true),
                };
                match self.read_delay {
                    Some(delay) => self.slow_reads.push((self.now + delay, ix, msg)),
                    None => self.queue.push_back(Msg::Input(ix, msg)),
                }
            }
            FileOp::Write { temp, offset, data } => {
                let t = disk.temps.entry(temp).or_default();
                let o = offset as usize;
                if t.len() < o + data.len() {
                    t.resize(o + data.len(), 0);
                }
                t[o..o + data.len()].copy_from_slice(&data);
            }
            FileOp::Persist {
                temp,
                to: FileRef::Blob(d),
            } => {
                let content = disk.temps.remove(&temp).unwrap_or_default();
                disk.blobs.insert(d, content);
                if self.hold_persists {
                    self.held.push((ix, temp));
                } else {
                    self.queue
                        .push_back(Msg::Input(ix, Owned::FilePersisted(temp)));
                }
            }
            FileOp::Discard { temp } => {
                disk.temps.remove(&temp);
            }
            FileOp::Remove {
                file: FileRef::Blob(d),
            } => {
                disk.blobs.remove(&d);
            }
            other => panic!("servers use blobs only: {other:?}"),
        }
    }

    /// Delivers the held FilePersisted answers.
    pub fn release_persists(&mut self) {
        self.hold_persists = false;
        for (ix, temp) in std::mem::take(&mut self.held) {
            self.queue
                .push_back(Msg::Input(ix, Owned::FilePersisted(temp)));
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
        let req = Request::Upload {
            name: name.into(),
            size: content.len() as u64,
            replace,
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
                    SenderOutput::Send(m) => self.send(ix, conn, &SessionMsg::Transfer(m)),
                    SenderOutput::Read { offset, len } => {
                        let o = offset as usize;
                        s.on_read(offset, &content[o..o + len]);
                    }
                    SenderOutput::Progress { .. } | SenderOutput::Finished(_) => {}
                }
            }
            for m in self.received(ix, conn) {
                match m {
                    SessionMsg::Transfer(t) => s.on_msg(self.now, t),
                    other => answers.push(other),
                }
            }
            if !answers.is_empty()
                || (s.is_finished() && s.poll_timeout().is_none() && self.queue.is_empty())
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

    /// Downloads a file through the session; the content, or the answer.
    pub fn download(
        &mut self,
        ix: Ix,
        conn: ConnId,
        owner: Option<&str>,
        name: &str,
    ) -> Result<Vec<u8>, Vec<SessionMsg>> {
        let req = Request::Download {
            owner: owner.map(String::from),
            name: name.into(),
        };
        let got = self.request(ix, conn, &req);
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
                .servers
                .iter()
                .flatten()
                .filter_map(|s| s.poll_timeout())
                .chain(self.slow_reads.iter().map(|(at, ..)| *at))
                .min()
                .unwrap_or(end)
                .max(self.now)
                .min(end);
            self.now = next;
            // Reads come back in the order asked, as a driver's do.
            let now = self.now;
            let due = self
                .slow_reads
                .iter()
                .take_while(|(at, ..)| *at <= now)
                .count();
            for (_, ix, msg) in self.slow_reads.drain(..due).collect::<Vec<_>>() {
                self.queue.push_back(Msg::Input(ix, msg));
            }
            for ix in 0..self.size {
                let now = self.now;
                if let Some(s) = self.servers[ix].as_mut() {
                    if s.poll_timeout().is_some_and(|t| t <= now) {
                        s.handle_timeout(now);
                    }
                }
            }
            self.settle();
            if next == end {
                break;
            }
        }
    }
}
