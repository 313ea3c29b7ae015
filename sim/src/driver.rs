//! A thin turmoil/tokio driver for any [`ferry_core::Node`].
//!
//! The driver owns sockets, tasks and the clock; the node owns every
//! decision. The loop is the one of `io.rs` (str0m's rule, quinn's timer
//! check):
//!
//! 1. drain every [`Output`] of the node, carrying each one out;
//! 2. if the node's deadline has passed, call `handle_timeout` and go to 1;
//! 3. wait (`select!`, always `biased`) for the next network event or the
//!    deadline, feed it in, and go to 1.
//!
//! Each connection has one task that owns the socket's write half and writes
//! what the node transmits, in order, then flushes and shuts down on
//! [`Output::Close`]; a reader task per connection feeds received bytes into
//! one channel. The driver forgets a connection when the node closes it or
//! the peer does, and ignores whatever its reader reports after that.
//!
//! **Persistence** is runtime-smol's: [`Output::Persist`] is executed in
//! output order, synchronously, against the driver's [`Store`] (a server's
//! `HeedStore`); once the drain is over, each committed batch's token is fed
//! back as [`Input::Persisted`], one at a time, each followed by a drain of
//! its own. Optionally a commit takes simulated time
//! ([`DriverConfig::persist_latency`]): the drain then *waits* that long
//! before committing, as a process blocked on `fsync` does. Outputs after a
//! `Persist` are never carried out before it is durable, which is the order
//! the core relies on. A crash during the wait loses the batch, and the node
//! was never told it was durable. A commit that fails, or a `Persist` with
//! no store, is fatal: the driver stops ([`Stopped::StoreFailed`]) and
//! [`serve`] returns the error, which fails the host.
//!
//! **Files** are executed the same way ([`Output::File`], against the
//! driver's [`SimFiles`]: a server's in-memory [`crate::disk::Disk`], which
//! the harness keeps across the host's restarts, or a client's local file):
//! in output order, synchronously, and what they have to say back
//! (`FileRead`, `FilePersisted`, `FileFailed`) joins the persisted tokens in
//! one queue, in output order, fed back one input at a time with a drain
//! after each, as runtime-smol does. A file `Persist` (an `fsync` and a
//! rename) takes the same simulated disk latency as a store commit, drawn
//! from the same stream: the drain waits before the file moves into place,
//! so a crash meanwhile leaves only a temporary file behind, and the node
//! was never told it was persisted. A file operation with no files
//! configured is fatal, like a `Persist` with no store.
//!
//! **Time** is the Unix epoch of the simulation plus simulated time
//! (`turmoil::since_epoch()`): absolute, as the core expects (token expiry,
//! `Entry::at`), the same on every host, and monotonic across a host's
//! restarts (turmoil keeps ticking a crashed host's clock). Timers map back
//! to `tokio::time::Instant`s (virtual under turmoil) relative to now.
//!
//! Determinism: `BTreeMap`s only, `biased` selects, no real clock, no
//! `spawn_blocking`, no threads; disk latency comes from a [`SimRng`] seeded
//! by the caller.

use crate::disk::{FileAnswer, SimFiles};
use crate::seeds::SimRng;
use crate::trace::SharedTrace;
use ferry_core::store::{Batch, Store};
use ferry_core::{ConnId, FileOp, Input, Node, Output, Timestamp};
use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use turmoil::net::{TcpListener, TcpStream};

#[derive(Clone, Debug)]
pub struct DriverConfig {
    /// Backstop for a dial that gets no answer (a SYN to a crashed host is
    /// never answered). Nodes have their own, shorter, protocol timeouts.
    pub connect_timeout: Duration,
    /// Record a trace line for every accepted connection, naming the peer
    /// host, so a node's connection ids can be matched to hosts.
    pub trace_accepts: bool,
    /// How long a commit (or a file's `Persist`) takes, drawn uniformly per
    /// batch or file; zero (the default) commits at once.
    pub persist_latency: (Duration, Duration),
    /// Seeds the driver's own draws (persist latency). Callers mix in the
    /// host and its incarnation.
    pub seed: u64,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            connect_timeout: Duration::from_secs(10),
            trace_accepts: false,
            persist_latency: (Duration::ZERO, Duration::ZERO),
            seed: 0,
        }
    }
}

/// What an observer wants after seeing an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Return from [`Driver::run`] once the current outputs are drained.
    Stop,
}

/// Why [`Driver::run`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    ByObserver,
    Deadline,
    /// A commit failed, or the node asked to persist without a store or
    /// for file work without files; see [`Driver::failure`]. Fatal: nothing
    /// more of the node is carried out.
    StoreFailed,
}

/// What an observer can see besides the event itself.
pub struct Ctx<'a> {
    pub host: &'a str,
    pub now: Timestamp,
    conns: &'a BTreeMap<ConnId, Conn>,
}

impl Ctx<'_> {
    /// The local address of an open connection (known once it is connected).
    pub fn local_addr(&self, conn: ConnId) -> Option<SocketAddr> {
        self.conns.get(&conn).and_then(|c| c.local)
    }

    /// The peer address of an open connection (known once it is connected).
    pub fn peer_addr(&self, conn: ConnId) -> Option<SocketAddr> {
        self.conns.get(&conn).and_then(|c| c.peer)
    }
}

enum Net {
    Accepted {
        stream: TcpStream,
        peer: SocketAddr,
    },
    Connected {
        conn: ConnId,
        local: SocketAddr,
        peer: SocketAddr,
    },
    ConnectFailed {
        conn: ConnId,
        reason: String,
    },
    Received {
        conn: ConnId,
        bytes: Vec<u8>,
    },
    Closed {
        conn: ConnId,
    },
}

enum Cmd {
    Write(Vec<u8>),
    Close,
}

struct Conn {
    cmds: mpsc::UnboundedSender<Cmd>,
    local: Option<SocketAddr>,
    peer: Option<SocketAddr>,
}

enum Wake {
    Net(Net),
    Timer,
}

pub struct Driver<N: Node> {
    host: Rc<str>,
    node: Rc<RefCell<N>>,
    trace: SharedTrace,
    cfg: DriverConfig,
    conns: BTreeMap<ConnId, Conn>,
    tx: mpsc::UnboundedSender<Net>,
    rx: mpsc::UnboundedReceiver<Net>,
    next_accept: u64,
    /// Connection tasks, awaited by [`Driver::shutdown`].
    tasks: Vec<JoinHandle<()>>,
    store: Option<Box<dyn Store>>,
    files: Option<SimFiles>,
    /// What the node is owed, in output order: tokens of committed batches
    /// (`Input::Persisted`) and answers of file operations.
    answers: VecDeque<Answer>,
    failed: Option<String>,
    rng: SimRng,
    tap: Option<Tap>,
    describe: Option<Describe<N::Event>>,
}

/// An input owed to the node for something it asked of its disk.
enum Answer {
    Persisted(u64),
    File(FileAnswer),
}

/// Describes a transmitted frame for the trace, if it is worth a line. The
/// second argument names the peer's host (looked up only when called).
pub type Tap = Rc<dyn Fn(&[u8], &dyn Fn() -> String) -> Option<String>>;

/// An event's trace line: `None` leaves it out of the trace (observers
/// still see it). Without one, the event's `Display` text.
pub type Describe<E> = Rc<dyn Fn(&E) -> Option<String>>;

impl<N: Node> Driver<N> {
    /// Must be called inside a turmoil host or client.
    pub fn new(host: &str, node: Rc<RefCell<N>>, trace: SharedTrace, cfg: DriverConfig) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let rng = SimRng::new(cfg.seed, 7);
        Driver {
            host: host.into(),
            node,
            trace,
            cfg,
            conns: BTreeMap::new(),
            tx,
            rx,
            next_accept: 0,
            tasks: Vec::new(),
            store: None,
            files: None,
            answers: VecDeque::new(),
            failed: None,
            rng,
            tap: None,
            describe: None,
        }
    }

    /// Shows `tap` every chunk of bytes the node transmits (with
    /// `ferry-core`'s outbox, one whole frame) and records what it says in
    /// the trace. For messages that have no event of their own; it decides
    /// nothing.
    pub fn with_tap(mut self, tap: Tap) -> Self {
        self.tap = Some(tap);
        self
    }

    /// Traces events as `describe` says (shorter, or not at all: progress
    /// reports, say); observers still see every event.
    pub fn with_describe(mut self, describe: Describe<N::Event>) -> Self {
        self.describe = Some(describe);
        self
    }

    /// Commits the node's `Persist` outputs to `store`.
    pub fn with_store(mut self, store: Box<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Executes the node's file operations against `files`.
    pub fn with_files(mut self, files: SimFiles) -> Self {
        self.files = Some(files);
        self
    }

    /// The node's current time: see [`now`].
    pub fn now(&self) -> Timestamp {
        now()
    }

    /// Why the driver stopped for good, if it did.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Runs `f` on the node (a command such as `Client::start`); its outputs
    /// are carried out by the next [`Driver::run`].
    pub fn with_node<R>(&mut self, f: impl FnOnce(&mut N, Timestamp) -> R) -> R {
        let now = self.now();
        f(&mut self.node.borrow_mut(), now)
    }

    /// Accepts connections on `listener` for as long as the host lives.
    pub fn listen(&mut self, listener: TcpListener) {
        let tx = self.tx.clone();
        tokio::task::spawn_local(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                if tx.send(Net::Accepted { stream, peer }).is_err() {
                    return;
                }
            }
        });
    }

    /// Drives the node until `observe` returns [`Flow::Stop`] or `until`
    /// passes. `observe` sees every event after it is recorded in the trace.
    pub async fn run<F>(&mut self, until: Option<Instant>, mut observe: F) -> Stopped
    where
        F: FnMut(&Ctx<'_>, &N::Event) -> Flow,
    {
        loop {
            let stop = self.settle(&mut observe).await;
            if self.failed.is_some() {
                return Stopped::StoreFailed;
            }
            if stop {
                return Stopped::ByObserver;
            }
            let deadline = self.node.borrow().poll_timeout().map(|t| self.instant(t));
            let now = Instant::now();
            if deadline.is_some_and(|d| d <= now) {
                let ts = self.now();
                self.node.borrow_mut().handle_timeout(ts);
                continue;
            }
            if until.is_some_and(|u| u <= now) {
                return Stopped::Deadline;
            }
            let wake_at = match (deadline, until) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let wake = tokio::select! {
                biased;
                Some(ev) = self.rx.recv() => Wake::Net(ev),
                () = sleep_until(wake_at) => Wake::Timer,
            };
            match wake {
                Wake::Net(ev) => self.on_net(ev),
                // The loop head handles the node's deadline and `until`.
                Wake::Timer => {}
            }
        }
    }

    /// Drives the node forever (a host's main loop), or until its store
    /// fails.
    pub async fn run_forever(&mut self, mut observe: impl FnMut(&Ctx<'_>, &N::Event)) {
        self.run(None, |ctx, ev| {
            observe(ctx, ev);
            Flow::Continue
        })
        .await;
    }

    /// Closes every connection (FIN after what was already queued) and waits
    /// briefly for the writers to finish: what an OS does for a process that
    /// exits. A client future calls this before it returns, because turmoil
    /// stops running a client's tasks once its future is done.
    pub async fn shutdown(&mut self) {
        for (_, c) in std::mem::take(&mut self.conns) {
            let _ = c.cmds.send(Cmd::Close);
        }
        let tasks = std::mem::take(&mut self.tasks);
        let _ = tokio::time::timeout(Duration::from_secs(1), async move {
            for t in tasks {
                let _ = t.await;
            }
        })
        .await;
    }

    /// The instant a node's deadline stands for (now, if it has passed).
    fn instant(&self, t: Timestamp) -> Instant {
        Instant::now() + t.saturating_since(self.now())
    }

    /// Drains, then feeds back each committed batch's `Persisted` (and each
    /// file answer) and drains again, until the node is quiet. True if the
    /// observer asked to stop (the answers left are fed on the next run).
    /// Stops at a store failure.
    async fn settle<F>(&mut self, observe: &mut F) -> bool
    where
        F: FnMut(&Ctx<'_>, &N::Event) -> Flow,
    {
        loop {
            let stop = self.drain(observe).await;
            if stop || self.failed.is_some() {
                return stop;
            }
            let Some(answer) = self.answers.pop_front() else {
                return false;
            };
            let now = self.now();
            let mut node = self.node.borrow_mut();
            match answer {
                Answer::Persisted(token) => node.handle_input(now, Input::Persisted { token }),
                Answer::File(FileAnswer::Persisted { temp }) => {
                    node.handle_input(now, Input::FilePersisted { temp })
                }
                Answer::File(FileAnswer::Failed {
                    handle,
                    error,
                    no_space,
                }) => node.handle_input(
                    now,
                    Input::FileFailed {
                        handle,
                        error,
                        no_space,
                    },
                ),
                Answer::File(FileAnswer::Read {
                    handle,
                    offset,
                    file,
                    start,
                    end,
                }) => node.handle_input(
                    now,
                    Input::FileRead {
                        handle,
                        offset,
                        data: &file[start..end],
                    },
                ),
            }
        }
    }

    /// Carries out every pending output, up to a store failure. True if the
    /// observer asked to stop.
    async fn drain<F>(&mut self, observe: &mut F) -> bool
    where
        F: FnMut(&Ctx<'_>, &N::Event) -> Flow,
    {
        let mut stop = false;
        while self.failed.is_none() {
            let Some(out) = self.node.borrow_mut().poll_output() else {
                break;
            };
            match out {
                Output::Transmit { conn, bytes } => {
                    if let Some(tap) = &self.tap {
                        let conns = &self.conns;
                        let peer = || match conns.get(&conn).and_then(|c| c.peer) {
                            Some(p) => {
                                turmoil::reverse_lookup(p.ip()).unwrap_or_else(|| p.to_string())
                            }
                            None => "?".to_string(),
                        };
                        if let Some(line) = tap(&bytes, &peer) {
                            self.trace.borrow_mut().record_now(&self.host, line);
                        }
                    }
                    if let Some(c) = self.conns.get(&conn) {
                        let _ = c.cmds.send(Cmd::Write(bytes));
                    }
                }
                Output::Connect { conn, addr } => self.dial(conn, addr),
                Output::Close { conn } => {
                    if let Some(c) = self.conns.remove(&conn) {
                        let _ = c.cmds.send(Cmd::Close);
                    }
                }
                Output::Persist { token, batch } => self.persist(token, &batch).await,
                Output::File(op) => self.file(op).await,
                Output::Event(ev) => {
                    let line = match &self.describe {
                        Some(d) => d(&ev),
                        None => Some(ev.to_string()),
                    };
                    if let Some(line) = line {
                        self.trace.borrow_mut().record_now(&self.host, line);
                    }
                    let ctx = Ctx {
                        host: &self.host,
                        now: self.now(),
                        conns: &self.conns,
                    };
                    if observe(&ctx, &ev) == Flow::Stop {
                        stop = true;
                    }
                }
            }
        }
        stop
    }

    /// Commits a batch (after the disk's latency, if any) and queues its
    /// token, or records the fatal error.
    async fn persist(&mut self, token: u64, batch: &Batch) {
        let (lo, hi) = self.cfg.persist_latency;
        if !hi.is_zero() {
            tokio::time::sleep(self.rng.duration(lo, hi)).await;
        }
        let result = match self.store.as_mut() {
            Some(store) => store.commit(batch).map_err(|e| e.to_string()),
            None => Err("the node asked to persist a batch but has no store".to_string()),
        };
        match result {
            Ok(()) => self.answers.push_back(Answer::Persisted(token)),
            Err(e) => self.fail(e),
        }
    }

    /// Carries out a file operation (a `Persist` after the disk's latency,
    /// if any) and queues its answer, or records the fatal error.
    async fn file(&mut self, op: FileOp) {
        let Some(files) = self.files.clone() else {
            let what = match op {
                FileOp::Read { .. } => "a read",
                FileOp::Write { .. } => "a write",
                FileOp::Persist { .. } => "a persist",
                FileOp::Discard { .. } => "a discard",
                FileOp::Remove { .. } => "a remove",
            };
            return self.fail(format!(
                "the node asked for file work ({what}) but has no files"
            ));
        };
        let (lo, hi) = self.cfg.persist_latency;
        if SimFiles::is_sync(&op) && !hi.is_zero() {
            tokio::time::sleep(self.rng.duration(lo, hi)).await;
        }
        let (answer, line) = files.execute(op);
        if let Some(line) = line {
            self.trace.borrow_mut().record_now(&self.host, line);
        }
        if let Some(answer) = answer {
            self.answers.push_back(Answer::File(answer));
        }
    }

    fn fail(&mut self, e: String) {
        let text = format!("stopped: {e}");
        self.trace.borrow_mut().record_now(&self.host, text);
        self.failed = Some(e);
    }

    fn on_net(&mut self, ev: Net) {
        let now = self.now();
        match ev {
            Net::Accepted { stream, peer } => {
                let conn = ConnId::accepted(self.next_accept);
                self.next_accept += 1;
                let local = stream.local_addr().ok();
                let cmds = self.spawn_pump(conn, PumpStart::Open(stream));
                self.conns.insert(
                    conn,
                    Conn {
                        cmds,
                        local,
                        peer: Some(peer),
                    },
                );
                if self.cfg.trace_accepts {
                    let who =
                        turmoil::reverse_lookup(peer.ip()).unwrap_or_else(|| peer.to_string());
                    self.trace
                        .borrow_mut()
                        .record_now(&self.host, format!("accept {conn} from {who}"));
                }
                let input = Input::Accepted {
                    conn,
                    peer: peer.to_string(),
                };
                self.node.borrow_mut().handle_input(now, input);
            }
            Net::Connected { conn, local, peer } => {
                // A connection the node closed while it was being opened is
                // shut down by its task, which finds the Close queued.
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.local = Some(local);
                    c.peer = Some(peer);
                    self.node
                        .borrow_mut()
                        .handle_input(now, Input::Connected { conn });
                }
            }
            Net::ConnectFailed { conn, reason } => {
                if self.conns.remove(&conn).is_some() {
                    self.node
                        .borrow_mut()
                        .handle_input(now, Input::ConnectFailed { conn, reason });
                }
            }
            Net::Received { conn, bytes } => {
                if self.conns.contains_key(&conn) {
                    let input = Input::Received {
                        conn,
                        bytes: &bytes,
                    };
                    self.node.borrow_mut().handle_input(now, input);
                }
            }
            Net::Closed { conn } => {
                if let Some(c) = self.conns.remove(&conn) {
                    // Nobody will write on it again: close our half too.
                    let _ = c.cmds.send(Cmd::Close);
                    self.node
                        .borrow_mut()
                        .handle_input(now, Input::Closed { conn });
                }
            }
        }
    }

    fn dial(&mut self, conn: ConnId, addr: String) {
        let cmds = self.spawn_pump(
            conn,
            PumpStart::Dial {
                addr,
                timeout: self.cfg.connect_timeout,
            },
        );
        self.conns.insert(
            conn,
            Conn {
                cmds,
                local: None,
                peer: None,
            },
        );
    }

    fn spawn_pump(&mut self, conn: ConnId, start: PumpStart) -> mpsc::UnboundedSender<Cmd> {
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let tx = self.tx.clone();
        self.tasks.retain(|t| !t.is_finished());
        self.tasks
            .push(tokio::task::spawn_local(pump(conn, start, cmd_rx, tx)));
        cmd_tx
    }
}

enum PumpStart {
    Open(TcpStream),
    Dial { addr: String, timeout: Duration },
}

/// One connection's task: opens it if asked, starts its reader, then writes
/// in order until told to close (or the driver goes away), and shuts down.
async fn pump(
    conn: ConnId,
    start: PumpStart,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    tx: mpsc::UnboundedSender<Net>,
) {
    let stream = match start {
        PumpStart::Open(s) => s,
        PumpStart::Dial { addr, timeout } => {
            match tokio::time::timeout(timeout, TcpStream::connect(addr.as_str())).await {
                Ok(Ok(s)) => {
                    if let (Ok(local), Ok(peer)) = (s.local_addr(), s.peer_addr()) {
                        let _ = tx.send(Net::Connected { conn, local, peer });
                    }
                    s
                }
                Ok(Err(e)) => {
                    let reason = connect_error(&e);
                    let _ = tx.send(Net::ConnectFailed { conn, reason });
                    return;
                }
                Err(_) => {
                    let reason = "connect timed out".to_string();
                    let _ = tx.send(Net::ConnectFailed { conn, reason });
                    return;
                }
            }
        }
    };
    let (mut rd, mut wr) = stream.into_split();
    let rtx = tx.clone();
    // The reader runs until EOF or reset even after the node closed the
    // connection: dropping a read half with unread bytes would send a RST.
    tokio::task::spawn_local(async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = rtx.send(Net::Closed { conn });
                    return;
                }
                Ok(n) => {
                    let bytes = buf[..n].to_vec();
                    if rtx.send(Net::Received { conn, bytes }).is_err() {
                        return;
                    }
                }
            }
        }
    });
    while let Some(cmd) = cmds.recv().await {
        match cmd {
            Cmd::Write(bytes) => {
                if wr.write_all(&bytes).await.is_err() {
                    let _ = tx.send(Net::Closed { conn });
                    break;
                }
            }
            Cmd::Close => break,
        }
    }
    let _ = wr.flush().await;
    let _ = wr.shutdown().await;
}

fn connect_error(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        _ => e.to_string(),
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Simulated time as the core sees it: the simulation's Unix epoch
/// (`Builder::epoch`) plus the simulated time elapsed, in microseconds. Only
/// inside a turmoil host or client; a host's clock keeps running while it is
/// down, so a restarted node resumes at the right time.
pub fn now() -> Timestamp {
    let since = turmoil::since_epoch().expect("the driver runs inside a turmoil host");
    Timestamp::from_duration(since)
}

/// A host's main program: listen on `0.0.0.0:port` and drive `node` forever,
/// persisting to `store` if it has one. Returns only if the store fails.
pub async fn serve<N: Node>(
    host: &str,
    port: u16,
    node: Rc<RefCell<N>>,
    store: Option<Box<dyn Store>>,
    trace: SharedTrace,
    cfg: DriverConfig,
    observe: impl FnMut(&Ctx<'_>, &N::Event),
) -> turmoil::Result {
    let listener = TcpListener::bind(("0.0.0.0", port)).await?;
    let mut driver = Driver::new(host, node, trace, cfg);
    if let Some(store) = store {
        driver = driver.with_store(store);
    }
    driver.listen(listener);
    driver.run_forever(observe).await;
    match driver.failure() {
        Some(e) => Err(format!("{host} stopped: {e}").into()),
        None => Ok(()),
    }
}
