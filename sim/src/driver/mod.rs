//! A thin turmoil/tokio driver for any [`ferry_core::Node`].
//!
//! The driver owns sockets, tasks and the clock; the node owns every
//! decision. The node runs in `ferry-core`'s one pump, [`Host`], which
//! carries its outputs out and feeds back their answers in the order
//! `io.rs` writes down; the driver supplies the simulated world it acts on,
//! [`SimWorld`]. The loop around it is the one of `io.rs` (str0m's rule,
//! quinn's timer check):
//!
//! 1. settle the host: every output carried out, every answer fed back;
//! 2. if the node's deadline has passed, call `handle_timeout` and go to 1;
//! 3. wait (`select!`, always `biased`) for the next network event, the
//!    disk's next completion (see *Files*) or the deadline, feed it in, and
//!    go to 1.
//!
//! Each connection has one task that owns the socket's write half and writes
//! what the node transmits, in order, then flushes and shuts down when the
//! node closes it; a reader task per connection feeds received bytes into
//! one channel. The world forgets a connection when the node closes it or
//! the peer does, and ignores whatever its reader reports after that.
//!
//! **Waits.** The world makes the node wait where a process would be
//! blocked (the host parks the work, `Settled::Wait`, and the driver sleeps
//! in simulated time): a store commit takes
//! [`DriverConfig::persist_latency`], as a process blocked on `fsync`; a
//! client's file persist takes [`DriverConfig::file_persist_latency`] (its
//! one transfer has nothing else to do); a read takes
//! [`DriverConfig::read_latency`] just before its bytes are fed, as
//! runtime-smol's `pread` on the driver's thread. Meanwhile no network
//! input and no timer reaches the node, while what the drain already sent
//! goes out. A crash during a wait loses the work: a batch the node was
//! never told was durable.
//!
//! **Files** are carried out on [`SimFiles`] (a server's in-memory disk or
//! a peer's shared directory, which the harness keeps across the host's
//! restarts, or a client's local file) as runtime-smol's executor and its writer thread carry them out
//! (`runtime-smol/src/files.rs`):
//!
//! - A server's (or a peer's) `Write`, `Persist` and `Remove` join one FIFO
//!   queue (the writer thread's), in output order, and take effect strictly in that
//!   order. A `Persist` (`fsync`, rename, `fsync` of the directory) takes
//!   [`DriverConfig::file_persist_latency`], drawn from the driver's stream
//!   when it reaches the head of the queue (none for a blob already on
//!   disk: it is kept and the copy dropped unsynced); the other operations
//!   take none but wait behind it. With a zero latency and an empty queue
//!   an operation is carried out at once, in the drain.
//! - Meanwhile the server keeps running: network input, its timeouts and
//!   its other outputs go on. When the head's time comes (a branch of the
//!   loop's `select!`, after network events and before the node's
//!   deadline; or at the loop's head if it passed during a wait), the world
//!   carries it out and every operation behind it up to the next `Persist`,
//!   which starts its own latency.
//! - A `Read` (and a `List`) is carried out at once, against the disk as it is at that
//!   moment (a `Persist` or `Remove` still queued has not happened yet), as
//!   runtime-smol opens the file at once; but a read of a temporary file
//!   (the kept part of an upload, read back to resume it) joins the queue
//!   if writes of that file are still in it, and is answered once they are
//!   done, as runtime-smol waits for them before it reads. So is a `Discard`: the temporary
//!   file goes at once, and its writes still queued with it (they would
//!   land in the unlinked file); unless the file is being persisted, which
//!   moves it, and the discard does nothing.
//! - A crash (turmoil drops the host's task, and the driver with it) loses
//!   whatever is still queued, and nothing of it is carried out afterwards:
//!   a lost `Persist` leaves only its temporary file behind (removed at the
//!   next start), and the node was never told it was persisted; a lost
//!   `Remove` leaves a blob the server collects after its next start.
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

use crate::disk::SimFiles;
use crate::seeds::SimRng;
use crate::tls::TlsRole;
use crate::trace::SharedTrace;
use ferry_core::host::{file_op_name, Work};
use ferry_core::io::Identity;
use ferry_core::store::{Batch, Store};
use ferry_core::{
    ConnId, FileAnswer, FileFailure, FileOp, FileRef, Host, HostError, Input, Node, Output,
    Settled, Timestamp, World,
};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::rc::Rc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use turmoil::net::{TcpListener, TcpStream};

/// Timeouts handled at one simulated instant beyond which the node is taken
/// to spin (see [`Driver::run`]).
const LIVELOCK_SPINS: u32 = 10_000;

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

/// Every byte the hosts of this thread put on the wire, and what their
/// nodes wrote before TLS, while a capture is on: for tests of what an
/// eavesdropper sees.
pub mod capture {
    use std::cell::RefCell;

    #[derive(Default)]
    pub struct Captured {
        /// What crossed the network (ciphertext).
        pub wire: Vec<u8>,
        /// What the nodes transmitted, before TLS.
        pub plaintext: Vec<u8>,
    }

    thread_local! {
        static ON: RefCell<Option<Captured>> = const { RefCell::new(None) };
    }

    /// Starts capturing (what was captured before is dropped).
    pub fn start() {
        ON.with(|c| *c.borrow_mut() = Some(Captured::default()));
    }

    /// Stops, and hands over what was captured.
    pub fn take() -> Captured {
        ON.with(|c| c.borrow_mut().take()).unwrap_or_default()
    }

    pub(super) fn wire(bytes: &[u8]) {
        ON.with(|c| {
            if let Some(c) = c.borrow_mut().as_mut() {
                c.wire.extend_from_slice(bytes);
            }
        });
    }

    pub(super) fn plaintext(bytes: &[u8]) {
        ON.with(|c| {
            if let Some(c) = c.borrow_mut().as_mut() {
                c.plaintext.extend_from_slice(bytes);
            }
        });
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

/// A node shared with the harness, which reads it between steps.
pub struct SharedNode<N>(Rc<RefCell<N>>);

impl<N: Node> Node for SharedNode<N> {
    type Event = N::Event;

    fn handle_input(&mut self, now: Timestamp, input: Input<'_>) {
        self.0.borrow_mut().handle_input(now, input);
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        self.0.borrow_mut().handle_timeout(now);
    }

    fn poll_output(&mut self) -> Option<Output<N::Event>> {
        self.0.borrow_mut().poll_output()
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        self.0.borrow().poll_timeout()
    }
}

/// The simulated world a node's host acts on: turmoil's TCP (a task per
/// connection), the node's store, and its files on an in-memory disk with a
/// queue in simulated time (see *Files*).
pub struct SimWorld {
    host: Rc<str>,
    trace: SharedTrace,
    cfg: DriverConfig,
    conns: BTreeMap<ConnId, Conn>,
    tx: mpsc::UnboundedSender<Net>,
    /// Connection tasks, awaited by [`Driver::shutdown`].
    tasks: Vec<JoinHandle<()>>,
    store: Option<Box<dyn Store>>,
    files: Option<SimFiles>,
    /// A server's disk queue (runtime-smol's writer thread): writes,
    /// persists and removes not carried out yet, in output order.
    disk: VecDeque<FileOp>,
    /// When the `Persist` at the head of `disk` is done, once it has
    /// started.
    disk_ready: Option<Instant>,
    /// What the disk queue finished, for the host to take.
    due: VecDeque<FileAnswer>,
    /// The bytes of the read being fed.
    read_buf: Vec<u8>,
    rng: SimRng,
    tap: Option<Tap>,
}

/// Describes a transmitted frame for the trace, if it is worth a line. The
/// second argument names the peer's host (looked up only when called).
pub type Tap = Rc<dyn Fn(&[u8], &dyn Fn() -> String) -> Option<String>>;

/// An event's trace line: `None` leaves it out of the trace (observers
/// still see it). Without one, the event's `Display` text.
pub type Describe<E> = Rc<dyn Fn(&E) -> Option<String>>;

impl World for SimWorld {
    fn now(&self) -> Timestamp {
        now()
    }

    fn plaintext(&mut self, conn: ConnId, bytes: &[u8]) {
        capture::plaintext(bytes);
        if let Some(tap) = &self.tap {
            let conns = &self.conns;
            let peer = || match conns.get(&conn).and_then(|c| c.peer) {
                Some(p) => turmoil::reverse_lookup(p.ip()).unwrap_or_else(|| p.to_string()),
                None => "?".to_string(),
            };
            if let Some(line) = tap(bytes, &peer) {
                self.trace.borrow_mut().record_now(&self.host, line);
            }
        }
    }

    fn transmit(&mut self, conn: ConnId, bytes: Vec<u8>) {
        capture::wire(&bytes);
        if let Some(c) = self.conns.get(&conn) {
            let _ = c.cmds.send(Cmd::Write(bytes));
        }
    }

    fn connect(&mut self, conn: ConnId, addr: String) {
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

    fn close(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.remove(&conn) {
            let _ = c.cmds.send(Cmd::Close);
        }
    }

    fn commit(&mut self, batch: &Batch) -> Result<(), HostError> {
        match self.store.as_mut() {
            Some(store) => Ok(store.commit(batch)?),
            None => Err(HostError::NoStore),
        }
    }

    /// A read, a listing, a discard and all of a client's work at once; a
    /// server's or a peer's other work through the disk queue.
    fn file(&mut self, op: FileOp) -> Result<Option<FileAnswer>, HostError> {
        let Some(files) = self.files.clone() else {
            return Err(HostError::NoFiles {
                what: file_op_name(&op),
            });
        };
        let writes_queued = |t: u64| {
            (self.disk.iter()).any(|q| matches!(q, FileOp::Write { temp, .. } if *temp == t))
        };
        match (&files, op) {
            // A temporary file is read as written: behind its writes still
            // queued (runtime-smol waits for them).
            (
                SimFiles::Server(_),
                op @ FileOp::Read {
                    file: FileRef::Temp(t),
                    ..
                },
            ) if writes_queued(t) => {
                self.disk.push_back(op);
                self.work_disk();
                Ok(None)
            }
            (
                _,
                op @ (FileOp::Read { .. }
                | FileOp::List { .. }
                | FileOp::SetModified { .. }
                | FileOp::SetAttrs { .. }
                | FileOp::Space { .. }),
            )
            | (SimFiles::Client(_), op) => Ok(self.execute(&files, op)),
            (_, FileOp::Discard { temp }) => Ok(self.discard(&files, temp)),
            (_, op) => {
                self.disk.push_back(op);
                self.work_disk();
                Ok(None)
            }
        }
    }

    fn take_file_answer(&mut self) -> Option<FileAnswer> {
        self.due.pop_front()
    }

    fn read(&mut self, handle: u64, offset: u64, len: usize) -> Result<&[u8], FileFailure> {
        let Some(files) = self.files.as_ref() else {
            return Err(FileFailure::other("no files"));
        };
        files.read(handle, offset, len, &mut self.read_buf)?;
        Ok(&self.read_buf)
    }

    /// A store commit, a client's file persist and a read's bytes take the
    /// latencies the configuration gives, drawn from the driver's stream;
    /// the node waits for them, as a process blocked on `fsync` or `pread`.
    fn delay(&mut self, work: Work<'_>) -> Duration {
        match work {
            Work::Commit => {
                let (lo, hi) = self.cfg.persist_latency;
                match hi.is_zero() {
                    true => Duration::ZERO,
                    false => self.rng.duration(lo, hi),
                }
            }
            Work::File(op) => match &self.files {
                Some(SimFiles::Client(_)) if SimFiles::is_sync(op) => self.file_persist_latency(),
                _ => Duration::ZERO,
            },
            Work::Read { .. } => self.read_latency(),
        }
    }
}

impl SimWorld {
    /// A world for host `host` that sends what its connections receive to
    /// `tx`; no store, no files.
    fn new(
        host: &str,
        trace: SharedTrace,
        cfg: DriverConfig,
        tx: mpsc::UnboundedSender<Net>,
    ) -> Self {
        let rng = SimRng::new(cfg.seed, 7);
        SimWorld {
            host: host.into(),
            trace,
            cfg,
            conns: BTreeMap::new(),
            tx,
            tasks: Vec::new(),
            store: None,
            files: None,
            disk: VecDeque::new(),
            disk_ready: None,
            due: VecDeque::new(),
            read_buf: Vec::new(),
            rng,
            tap: None,
        }
    }

    /// A server's `Discard`, at once: runtime-smol unlinks the temporary
    /// file (its writes still queued land in the unlinked file: they are
    /// dropped here), unless the file is being persisted, which moves it.
    fn discard(&mut self, files: &SimFiles, temp: u64) -> Option<FileAnswer> {
        let of_temp = |op: &FileOp, persist: bool| match op {
            FileOp::Persist { temp: t, .. } => persist && *t == temp,
            FileOp::Write { temp: t, .. } => !persist && *t == temp,
            _ => false,
        };
        if self.disk.iter().any(|op| of_temp(op, true)) {
            return None;
        }
        self.disk.retain(|op| !of_temp(op, false));
        self.execute(files, FileOp::Discard { temp })
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
                if let Some(answer) = self.execute(&files, op) {
                    self.due.push_back(answer);
                }
            }
        }
    }

    /// Executes a file operation and records its trace line; its answer,
    /// if any.
    fn execute(&mut self, files: &SimFiles, op: FileOp) -> Option<FileAnswer> {
        let (answer, line) = files.execute(op, now());
        if let Some(line) = line {
            self.trace.borrow_mut().record_now(&self.host, line);
        }
        answer
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

pub struct Driver<N: Node> {
    node: Rc<RefCell<N>>,
    host: Host<SharedNode<N>, SimWorld>,
    rx: mpsc::UnboundedReceiver<Net>,
    next_accept: u64,
    failed: Option<String>,
    describe: Option<Describe<N::Event>>,
}

impl<N: Node> Driver<N> {
    /// Must be called inside a turmoil host or client. The node's links
    /// run TLS as its kind does in production ([`crate::tls`]).
    pub fn new(host: &str, node: Rc<RefCell<N>>, trace: SharedTrace, cfg: DriverConfig) -> Self
    where
        N: TlsRole,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        let world = SimWorld::new(host, trace, cfg, tx);
        let mut pump = Host::new(SharedNode(node.clone()), world);
        if let Some(tls) = crate::tls::links(host, N::tls_role()) {
            pump = pump.with_tls(tls);
        }
        Driver {
            host: pump,
            node,
            rx,
            next_accept: 0,
            failed: None,
            describe: None,
        }
    }

    fn world(&mut self) -> &mut SimWorld {
        self.host.world_mut()
    }

    /// Shows `tap` every chunk of bytes the node transmits (with
    /// `ferry-core`'s outbox, one whole frame) and records what it says in
    /// the trace. For messages that have no event of their own; it decides
    /// nothing.
    /// Encrypts every link of the node with TLS, as production does.
    pub fn with_tls(mut self, tls: ferry_core::host::tls::TlsLinks) -> Self {
        self.host = self.host.with_tls(tls);
        self
    }

    pub fn with_tap(mut self, tap: Tap) -> Self {
        self.world().tap = Some(tap);
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
        self.world().store = Some(store);
        self
    }

    /// Executes the node's file operations against `files`.
    pub fn with_files(mut self, files: SimFiles) -> Self {
        self.world().files = Some(files);
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
        let tx = self.world().tx.clone();
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
        // A node whose deadline stays in the past however often its timeout
        // is handled would spin here forever at one simulated instant: a bug
        // in the node, reported as one rather than as a hung sweep.
        let mut spins: (Option<Instant>, u32) = (None, 0);
        loop {
            let stop = self.settle(&mut observe).await;
            if self.failed.is_some() {
                return Stopped::StoreFailed;
            }
            if stop {
                return Stopped::ByObserver;
            }
            let now = Instant::now();
            let disk_ready = self.world().disk_ready;
            if disk_ready.is_some_and(|d| d <= now) {
                self.world().work_disk();
                continue;
            }
            let deadline = self.host.poll_timeout().map(|t| self.instant(t));
            if deadline.is_some_and(|d| d <= now) {
                spins = match spins {
                    (Some(at), n) if at == now => (Some(at), n + 1),
                    _ => (Some(now), 1),
                };
                assert!(
                    spins.1 < LIVELOCK_SPINS,
                    "livelock: the node's deadline stays at {deadline:?} (now {now:?}) \
                     after {LIVELOCK_SPINS} timeouts handled at one instant"
                );
                self.host.handle_timeout_if_due();
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
                () = sleep_until(disk_ready) => Wake::Disk,
                () = sleep_until(wake_at) => Wake::Timer,
            };
            match wake {
                Wake::Net(ev) => self.on_net(ev),
                Wake::Disk => self.world().work_disk(),
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
        for (_, c) in std::mem::take(&mut self.world().conns) {
            let _ = c.cmds.send(Cmd::Close);
        }
        let tasks = std::mem::take(&mut self.world().tasks);
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

    /// The host's settle, waiting in simulated time whenever the world
    /// makes the node wait. True if the observer asked to stop (the answers
    /// left are fed on the next run). Stops at a store failure.
    async fn settle<F>(&mut self, observe: &mut F) -> bool
    where
        F: FnMut(&Ctx<'_>, &N::Event) -> Flow,
    {
        loop {
            let describe = self.describe.clone();
            let settled = self.host.settle(|world, ev| {
                let line = match &describe {
                    Some(d) => d(&ev),
                    None => Some(ev.to_string()),
                };
                if let Some(line) = line {
                    world.trace.borrow_mut().record_now(&world.host, line);
                }
                let ctx = Ctx {
                    host: &world.host,
                    now: now(),
                    conns: &world.conns,
                };
                match observe(&ctx, &ev) {
                    Flow::Stop => ControlFlow::Break(()),
                    Flow::Continue => ControlFlow::Continue(()),
                }
            });
            match settled {
                Ok(Settled::Quiet) => return false,
                Ok(Settled::Break(())) => return true,
                Ok(Settled::Wait(wait)) => tokio::time::sleep(wait).await,
                Err(e) => {
                    self.fail(e);
                    return false;
                }
            }
        }
    }

    fn fail(&mut self, e: HostError) {
        let e = match e {
            HostError::Store(e) => e.to_string(),
            HostError::NoStore => "the node asked to persist a batch but has no store".to_string(),
            HostError::NoFiles { what } => {
                format!("the node asked for file work ({what}) but has no files")
            }
        };
        let text = format!("stopped: {e}");
        let w = self.host.world();
        w.trace.borrow_mut().record_now(&w.host, text);
        self.failed = Some(e);
    }

    fn on_net(&mut self, ev: Net) {
        match ev {
            Net::Accepted { stream, peer } => {
                let conn = ConnId::accepted(self.next_accept);
                self.next_accept += 1;
                let local = stream.local_addr().ok();
                let w = self.world();
                let cmds = w.spawn_pump(conn, PumpStart::Open(stream));
                w.conns.insert(
                    conn,
                    Conn {
                        cmds,
                        local,
                        peer: Some(peer),
                    },
                );
                if w.cfg.trace_accepts {
                    let who =
                        turmoil::reverse_lookup(peer.ip()).unwrap_or_else(|| peer.to_string());
                    w.trace
                        .borrow_mut()
                        .record_now(&w.host, format!("accept {conn} from {who}"));
                }
                // Nothing is proven by a socket: the host's TLS says who
                // the other end is.
                self.host.handle_input(Input::Accepted {
                    conn,
                    peer: peer.to_string(),
                    identity: Identity::Anonymous,
                });
            }
            Net::Connected { conn, local, peer } => {
                // A connection the node closed while it was being opened is
                // shut down by its task, which finds the Close queued.
                if let Some(c) = self.world().conns.get_mut(&conn) {
                    c.local = Some(local);
                    c.peer = Some(peer);
                    self.host.handle_input(Input::Connected {
                        conn,
                        identity: Identity::Anonymous,
                    });
                }
            }
            Net::ConnectFailed { conn, reason } => {
                if self.world().conns.remove(&conn).is_some() {
                    self.host
                        .handle_input(Input::ConnectFailed { conn, reason });
                }
            }
            Net::Received { conn, bytes } => {
                if self.world().conns.contains_key(&conn) {
                    self.host.handle_input(Input::Received {
                        conn,
                        bytes: &bytes,
                    });
                }
            }
            Net::Closed { conn } => {
                if let Some(c) = self.world().conns.remove(&conn) {
                    // Nobody will write on it again: close our half too.
                    let _ = c.cmds.send(Cmd::Close);
                    self.host.handle_input(Input::Closed { conn });
                }
            }
        }
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
pub async fn serve<N: Node + TlsRole>(
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
mod conformance_tests;
#[cfg(test)]
mod tests;
