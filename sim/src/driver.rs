//! A thin turmoil/tokio driver for any [`ferry_core::Node`].
//!
//! The driver owns sockets, tasks and the clock; the node owns every
//! decision. The loop is the one of `io.rs` (str0m's rule, quinn's timer
//! check):
//!
//! 1. drain every [`Output`] of the node, carrying each one out;
//! 2. if the node's deadline has passed, call `handle_timeout` and go to 1;
//! 3. wait (`select!`, always `biased`) for the next network event, the
//!    disk's next completion (see *Files*) or the deadline, feed it in, and
//!    go to 1.
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
//! **Files** ([`Output::File`]) are executed against the driver's
//! [`SimFiles`] (a server's in-memory [`crate::disk::Disk`], which the
//! harness keeps across the host's restarts, or a client's local file) as
//! runtime-smol's executor and its writer thread execute them
//! (`runtime-smol/src/files.rs`):
//!
//! - A server's `Write`, `Persist` and `Remove` join one FIFO queue (the
//!   writer thread's), in output order, and take effect strictly in that
//!   order. A `Persist` (`fsync`, rename, `fsync` of the directory) takes
//!   simulated time, [`DriverConfig::file_persist_latency`], drawn from the
//!   driver's stream when it reaches the head of the queue (none for a blob
//!   already on disk: runtime-smol keeps it and drops the copy unsynced);
//!   the other operations take none but wait behind it. With a zero latency
//!   and an empty queue an operation is executed at once, in the drain, as
//!   before this queue existed.
//! - Meanwhile the server keeps running: network input, its timeouts and
//!   its other outputs go on. When the head's time comes (a branch of the
//!   loop's `select!`, after network events and before the node's
//!   deadline; or at the loop's head if it passed during a store commit
//!   or a slow read),
//!   the driver executes it and every operation behind it up to the next
//!   `Persist`, which starts its own latency.
//! - A `Read` is executed at once, against the disk as it is at that moment
//!   (a `Persist` or `Remove` still queued has not happened yet), as
//!   runtime-smol opens the file at once. So is a `Discard`: the temporary
//!   file goes at once, and its writes still queued with it (they would
//!   land in the unlinked file); unless the file is being persisted, which
//!   moves it, and the discard does nothing.
//! - A `Read` may take simulated time ([`DriverConfig::read_latency`],
//!   drawn from the driver's stream per read): runtime-smol does the
//!   `pread` on the driver's thread when it feeds the answer, so the
//!   driver *waits* that long just before it feeds the bytes, and the
//!   node is blocked meanwhile (no network input, no timer), while what
//!   the drain already sent goes out. A failed read (a missing blob) fails
//!   when it is opened, at once.
//! - A client's work is all done in the drain, in output order, and its
//!   `Persist` takes its latency there: the drain *waits*, no timer of the
//!   client runs meanwhile, and network input waits for the drain (as
//!   runtime-smol's client waits for its own persist).
//! - What the disk has to say back (`FileRead`, `FilePersisted`,
//!   `FileFailed`) joins the persisted tokens in one queue, in the order it
//!   became due, and is fed back one input at a time, each followed by a
//!   drain, once the drain in progress is over, as runtime-smol does.
//! - A crash (turmoil drops the host's task, and the driver with it) loses
//!   whatever is still queued, and nothing of it is executed afterwards: a
//!   lost `Persist` leaves only its temporary file behind (removed at the
//!   next start), and the node was never told it was persisted; a lost
//!   `Remove` leaves a blob the server collects after its next start.
//!
//! A file operation with no files configured is fatal, like a `Persist`
//! with no store.
//!
//! **Time** is the Unix epoch of the simulation plus simulated time
//! (`turmoil::since_epoch()`): absolute, as the core expects (token expiry,
//! `Entry::at`), the same on every host, and monotonic across a host's
//! restarts (turmoil keeps ticking a crashed host's clock). Timers map back
//! to `tokio::time::Instant`s (virtual under turmoil) relative to now.
//!
//! Determinism: `BTreeMap`s only, `biased` selects, no real clock, no
//! `spawn_blocking`, no threads (the disk queue is a `VecDeque` and an
//! instant); disk latency comes from a [`SimRng`] seeded by the caller,
//! drawn only when a latency is configured (a driver without one draws
//! nothing).

use crate::disk::{FileAnswer, SimFiles};
use crate::seeds::SimRng;
use crate::trace::SharedTrace;
use ferry_core::store::{Batch, Store};
use ferry_core::{ConnId, FileOp, Input, Node, Output, Timestamp};
use std::cell::{Cell, RefCell};
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
    /// How long a store commit takes, drawn uniformly per batch; the drain
    /// waits. Zero (the default) commits at once.
    pub persist_latency: (Duration, Duration),
    /// How long a file's `Persist` takes, drawn uniformly per file: for a
    /// server when it reaches the head of the disk queue, and the node keeps
    /// running; for a client in the drain, which waits. Zero (the default)
    /// persists at once.
    pub file_persist_latency: (Duration, Duration),
    /// How long a successful file `Read` takes, drawn uniformly per read
    /// when its answer is fed; the node waits (see *Files*). Shared, so the
    /// harness can make a disk fast again while its hosts run (and across
    /// their restarts); zero (the default) reads at once.
    pub read_latency: SharedLatency,
    /// Seeds the driver's own draws (disk latencies). Callers mix in the
    /// host and its incarnation.
    pub seed: u64,
}

/// A latency range the harness may change while the hosts run.
pub type SharedLatency = Rc<Cell<(Duration, Duration)>>;

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            connect_timeout: Duration::from_secs(10),
            trace_accepts: false,
            persist_latency: (Duration::ZERO, Duration::ZERO),
            file_persist_latency: (Duration::ZERO, Duration::ZERO),
            read_latency: Rc::new(Cell::new((Duration::ZERO, Duration::ZERO))),
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
    Disk,
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
    /// What the node is owed, in the order it became due: tokens of
    /// committed batches (`Input::Persisted`) and answers of file
    /// operations.
    answers: VecDeque<Answer>,
    /// A server's disk queue (runtime-smol's writer thread): writes,
    /// persists and removes not carried out yet, in output order.
    disk: VecDeque<FileOp>,
    /// When the `Persist` at the head of `disk` is done, once it has
    /// started.
    disk_ready: Option<Instant>,
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
            disk: VecDeque::new(),
            disk_ready: None,
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
            let now = Instant::now();
            if self.disk_ready.is_some_and(|d| d <= now) {
                self.work_disk();
                continue;
            }
            let deadline = self.node.borrow().poll_timeout().map(|t| self.instant(t));
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
                () = sleep_until(self.disk_ready) => Wake::Disk,
                () = sleep_until(wake_at) => Wake::Timer,
            };
            match wake {
                Wake::Net(ev) => self.on_net(ev),
                Wake::Disk => self.work_disk(),
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
            // runtime-smol reads when it feeds the answer, on the driver's
            // thread: the node waits for the disk.
            if let Answer::File(FileAnswer::Read { .. }) = answer {
                let latency = self.read_latency();
                if !latency.is_zero() {
                    tokio::time::sleep(latency).await;
                }
            }
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
                    missing,
                }) => node.handle_input(
                    now,
                    Input::FileFailed {
                        handle,
                        error,
                        no_space,
                        missing,
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

    /// Carries out a file operation as runtime-smol does (see *Files*):
    /// a read, a discard and all of a client's work at once (a client's
    /// `Persist` after its latency, which the drain waits for); a server's
    /// other work through the disk queue. Or records the fatal error.
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
        match (&files, op) {
            (_, op @ FileOp::Read { .. }) => self.execute(&files, op),
            (SimFiles::Client(_), op) => {
                if SimFiles::is_sync(&op) {
                    let latency = self.file_persist_latency();
                    tokio::time::sleep(latency).await;
                }
                self.execute(&files, op);
            }
            (SimFiles::Server(_), FileOp::Discard { temp }) => self.discard(&files, temp),
            (SimFiles::Server(_), op) => {
                self.disk.push_back(op);
                self.work_disk();
            }
        }
    }

    /// A server's `Discard`, at once: runtime-smol unlinks the temporary
    /// file (its writes still queued land in the unlinked file: they are
    /// dropped here), unless the file is being persisted, which moves it.
    fn discard(&mut self, files: &SimFiles, temp: u64) {
        let of_temp = |op: &FileOp, persist: bool| match op {
            FileOp::Persist { temp: t, .. } => persist && *t == temp,
            FileOp::Write { temp: t, .. } => !persist && *t == temp,
            _ => false,
        };
        if self.disk.iter().any(|op| of_temp(op, true)) {
            return;
        }
        self.disk.retain(|op| !of_temp(op, false));
        self.execute(files, FileOp::Discard { temp });
    }

    /// A draw of [`DriverConfig::file_persist_latency`] (none if it is
    /// zero).
    fn file_persist_latency(&mut self) -> Duration {
        let (lo, hi) = self.cfg.file_persist_latency;
        match hi.is_zero() {
            true => Duration::ZERO,
            false => self.rng.duration(lo, hi),
        }
    }

    /// A draw of [`DriverConfig::read_latency`] (none if it is zero).
    fn read_latency(&mut self) -> Duration {
        let (lo, hi) = self.cfg.read_latency.get();
        match hi.is_zero() {
            true => Duration::ZERO,
            false => self.rng.duration(lo, hi),
        }
    }

    /// Carries out the disk queue from its head up to a `Persist` whose
    /// time has not come, starting that `Persist`'s latency (drawn from the
    /// driver's stream; none for a blob already on disk, which runtime-smol
    /// keeps, dropping the copy without an `fsync`) if it had not started.
    fn work_disk(&mut self) {
        let Some(files) = self.files.clone() else {
            return;
        };
        while let Some(head) = self.disk.front() {
            if SimFiles::is_sync(head) {
                let ready = match self.disk_ready {
                    Some(at) => at,
                    None => {
                        let latency = match files.holds_target(head) {
                            true => Duration::ZERO,
                            false => self.file_persist_latency(),
                        };
                        let at = Instant::now() + latency;
                        self.disk_ready = Some(at);
                        at
                    }
                };
                if ready > Instant::now() {
                    return;
                }
                self.disk_ready = None;
            }
            if let Some(op) = self.disk.pop_front() {
                self.execute(&files, op);
            }
        }
    }

    /// Executes a file operation, records its trace line and queues its
    /// answer.
    fn execute(&mut self, files: &SimFiles, op: FileOp) {
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

#[cfg(test)]
mod tests {
    //! The disk queue, with a scripted node: what runs while a file
    //! `Persist` takes its time, in which order the disk sees the work, and
    //! what a crash leaves.

    use super::*;
    use crate::disk::{Disk, LocalFile};
    use crate::trace::Trace;
    use ferry_core::FileRef;
    use std::time::UNIX_EPOCH;

    const TEMP: u64 = 1;
    const OTHER: u64 = 2;
    const TICK: Duration = Duration::from_millis(500);

    fn blob() -> [u8; 32] {
        *blake3::hash(b"content").as_bytes()
    }

    /// Emits its script at once, then a timeout every [`TICK`]; writes down
    /// every input and timeout, with the time and what `state` says of the
    /// disk.
    struct Scripted {
        out: VecDeque<Output<String>>,
        next_tick: Option<Timestamp>,
        state: Rc<dyn Fn() -> String>,
        log: Rc<RefCell<Vec<String>>>,
    }

    impl Scripted {
        fn note(&self, what: &str) {
            let at = turmoil::sim_elapsed().unwrap_or_default().as_millis();
            let line = format!("{at} ms: {what} ({})", (self.state)());
            self.log.borrow_mut().push(line);
        }
    }

    impl Node for Scripted {
        type Event = String;

        fn handle_input(&mut self, _: Timestamp, input: Input<'_>) {
            let what = match input {
                Input::FilePersisted { temp } => format!("persisted {temp}"),
                Input::FileRead { handle, data, .. } => {
                    format!("read {handle}: {} bytes", data.len())
                }
                Input::FileFailed { handle, .. } => format!("read {handle} failed"),
                other => format!("{other:?}"),
            };
            self.note(&what);
        }

        fn handle_timeout(&mut self, now: Timestamp) {
            self.note("tick");
            self.next_tick = Some(now + TICK);
        }

        fn poll_output(&mut self) -> Option<Output<String>> {
            self.out.pop_front()
        }

        fn poll_timeout(&self) -> Option<Timestamp> {
            self.next_tick
        }
    }

    fn write(temp: u64, data: &[u8]) -> Output<String> {
        Output::File(FileOp::Write {
            temp,
            offset: 0,
            data: data.to_vec(),
        })
    }

    /// A server's work, in this output order: Write, Persist, a read of the
    /// blob, Write of another file, Discard of both, Remove of the blob, an
    /// event.
    fn server_script() -> VecDeque<Output<String>> {
        VecDeque::from([
            write(TEMP, b"content"),
            Output::File(FileOp::Persist {
                temp: TEMP,
                to: FileRef::Blob(blob()),
            }),
            Output::File(FileOp::Read {
                handle: 9,
                file: FileRef::Blob(blob()),
                offset: 0,
                len: 3,
            }),
            write(OTHER, b"more"),
            Output::File(FileOp::Discard { temp: TEMP }),
            Output::File(FileOp::Discard { temp: OTHER }),
            Output::File(FileOp::Remove {
                file: FileRef::Blob(blob()),
            }),
            Output::Event("outputs after the persist".into()),
        ])
    }

    /// Runs a scripted node on host "node" with `files` (a persist takes
    /// 2 s, a read `read`), crashing it at `crash_at` if given, for 4 s;
    /// its log and trace.
    fn run(
        files: SimFiles,
        script: fn() -> VecDeque<Output<String>>,
        crash_at: Option<Duration>,
        read: Duration,
    ) -> (Vec<String>, Trace) {
        let mut sim = turmoil::Builder::new()
            .epoch(UNIX_EPOCH + Duration::from_secs(1_800_000_000))
            .tick_duration(Duration::from_millis(1))
            .simulation_duration(Duration::from_secs(60))
            .build();
        let log = Rc::new(RefCell::new(Vec::new()));
        let trace = Trace::shared();
        let state: Rc<dyn Fn() -> String> = match &files {
            SimFiles::Server(d) => {
                let d = d.clone();
                Rc::new(move || {
                    let d = d.borrow();
                    let temps: Vec<&u64> = d.temps.keys().collect();
                    format!("{} blob, temps {temps:?}", d.blobs.len())
                })
            }
            SimFiles::Client(l) => {
                let l = l.clone();
                Rc::new(move || format!("dest {:?}", l.borrow().dest.as_deref()))
            }
        };
        let (l, t) = (log.clone(), trace.clone());
        sim.host("node", move || {
            let (files, state) = (files.clone(), state.clone());
            let (log, trace) = (l.clone(), t.clone());
            async move {
                let node = Scripted {
                    out: script(),
                    next_tick: Some(now() + TICK),
                    state,
                    log,
                };
                let cfg = DriverConfig {
                    file_persist_latency: (Duration::from_secs(2), Duration::from_secs(2)),
                    read_latency: Rc::new(Cell::new((read, read))),
                    ..DriverConfig::default()
                };
                let node = Rc::new(RefCell::new(node));
                let mut driver = Driver::new("node", node, trace, cfg).with_files(files);
                driver.run_forever(|_, _| {}).await;
                Ok(())
            }
        });
        while sim.elapsed() < Duration::from_secs(4) {
            if crash_at.is_some_and(|at| sim.elapsed() >= at) {
                sim.crash("node");
            }
            sim.step().expect("the node runs");
        }
        let trace = trace.borrow().clone();
        drop(sim);
        let log = log.borrow().clone();
        (log, trace)
    }

    #[test]
    fn a_server_runs_while_a_persist_takes_its_time_and_its_disk_keeps_the_order() {
        let disk = Disk::shared();
        let (log, trace) = run(
            SimFiles::Server(disk.clone()),
            server_script,
            None,
            Duration::ZERO,
        );
        assert_eq!(
            &log[..6],
            [
                // The read ran at once: the blob was not there yet. The
                // discards too: the other file's write behind the persist
                // is dropped; the file being persisted is left to it.
                "0 ms: read 9 failed (0 blob, temps [1])",
                "500 ms: tick (0 blob, temps [1])",
                "1000 ms: tick (0 blob, temps [1])",
                "1500 ms: tick (0 blob, temps [1])",
                // The Remove behind the Persist ran right after it, in the
                // same step: the node hears of a blob that is gone already.
                "2000 ms: persisted 1 (0 blob, temps [])",
                "2000 ms: tick (0 blob, temps [])",
            ],
            "{log:#?}"
        );
        let d = disk.borrow();
        assert_eq!((d.persisted, d.removed), (1, 1));
        let text = trace.render();
        let event = text.find("outputs after the persist").expect("the event");
        let landed = text.find("on disk").expect("the blob's line");
        assert!(event < landed, "the drain went on meanwhile:\n{text}");
        assert!(text.contains("2.000s node      blob"), "{text}");
    }

    #[test]
    fn a_crash_loses_what_the_disk_had_not_done_and_nothing_runs_afterwards() {
        let disk = Disk::shared();
        let crash = Some(Duration::from_secs(1));
        let (log, _) = run(
            SimFiles::Server(disk.clone()),
            server_script,
            crash,
            Duration::ZERO,
        );
        assert!(
            log.iter().all(|l| !l.contains("persisted")),
            "the node was never told: {log:#?}"
        );
        let d = disk.borrow();
        assert!(d.blobs.is_empty() && d.persisted == 0 && d.removed == 0);
        // Only the temporary file being persisted is left (the next start
        // removes it).
        assert_eq!(d.temps.keys().collect::<Vec<_>>(), [&TEMP]);
    }

    /// runtime-smol reads when it feeds the answer, on the driver's thread:
    /// a slow read holds up its node, timers and all, after the drain that
    /// asked for it is over; a read of a missing blob fails at once.
    #[test]
    fn a_slow_read_holds_up_its_node() {
        let script = || {
            let read = |handle, file| {
                Output::File(FileOp::Read {
                    handle,
                    file,
                    offset: 0,
                    len: 5,
                })
            };
            VecDeque::from([
                read(1, FileRef::Blob(blob())),
                read(2, FileRef::Blob([0; 32])),
                Output::Event("the drain goes on".into()),
            ])
        };
        let disk = Disk::shared();
        disk.borrow_mut()
            .blobs
            .insert(blob(), b"content".to_vec().into());
        let read = Duration::from_millis(1500);
        let (log, trace) = run(SimFiles::Server(disk), script, None, read);
        assert_eq!(
            &log[..4],
            [
                "1500 ms: read 1: 5 bytes (1 blob, temps [])",
                "1500 ms: read 2 failed (1 blob, temps [])",
                "1500 ms: tick (1 blob, temps [])",
                "2000 ms: tick (1 blob, temps [])",
            ],
            "{log:#?}"
        );
        let text = trace.render();
        assert!(
            text.contains("0.000s node      the drain goes on"),
            "{text}"
        );
    }

    /// runtime-smol's client waits for its own persist, timers and all.
    #[test]
    fn a_clients_persist_holds_up_its_node() {
        let script = || {
            VecDeque::from([
                write(0, b"abc"),
                Output::File(FileOp::Persist {
                    temp: 0,
                    to: FileRef::Local,
                }),
            ])
        };
        let (log, _) = run(
            SimFiles::Client(LocalFile::shared()),
            script,
            None,
            Duration::ZERO,
        );
        assert_eq!(
            &log[..3],
            [
                "2000 ms: persisted 0 (dest Some([97, 98, 99]))",
                "2000 ms: tick (dest Some([97, 98, 99]))",
                "2500 ms: tick (dest Some([97, 98, 99]))",
            ],
            "{log:#?}"
        );
    }
}
