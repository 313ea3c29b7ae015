//! The run loop: one node, its sockets, its timer, on the caller's thread.
//!
//! **Rule (str0m's):** after every input, drain *every* output before taking
//! the next input. Then take the next input the sockets have (see
//! [`crate::net`]: accepts, connects, bytes, hang-ups, at most a budget of
//! bytes per connection before the others' turn), or, with none, wait in
//! one `epoll_wait` for the first of: a socket event, the node's deadline,
//! or one of the driver's own (connect timeouts, lingers). A wakeup before
//! the node's deadline just loops: the node's timer never fires early.
//!
//! Bytes the node transmits are queued on their connection during the
//! drain and written once the drain is done: all the frames of one drain go
//! out in one `writev`, before any answer the driver owes (see
//! *Persistence*) is fed back.
//!
//! A connection the node closed is forgotten at once: whatever its socket
//! still reports (bytes, `Closed`) is dropped, so the node is never told
//! about a connection it no longer knows.
//!
//! **Persistence and files.** What a node's persists and file work
//! mean, and the order their answers come back in, is `ferry-core`'s
//! (`io.rs`), carried out by its one pump, [`Host`]. This driver supplies
//! the world the host acts on, [`RealWorld`]: the sockets ([`crate::net`]),
//! the store (a `HeedStore` for a server) and the file executor
//! ([`crate::files`]). A server's file `Persist` can wait seconds for the
//! disk: the node runs on meanwhile, and its answer comes when the
//! executor's writer thread is done (which wakes the driver). A store that
//! fails to commit, or file work asked of a driver without an executor, is
//! fatal: the error is logged, nothing more is carried out, and the driver
//! stops with a [`DriverError`] rather than let the node act on state it
//! could not save.

use crate::clock::Clock;
use crate::files::Files;
use crate::net::{Net, Stopper};
use ferry_core::host::tls::TlsLinks;
use ferry_core::store::{Batch, Store, StoreError};
use ferry_core::tls::TlsConfig;
use ferry_core::{
    ConnId, Entropy, FileAnswer, FileFailure, FileOp, Host, HostError, Node, Settled, Timestamp,
    World,
};
use std::convert::Infallible;
use std::fmt;
use std::net::TcpListener;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a driver stopped. All but [`DriverError::Stopped`] are fatal to the
/// node: its state may be ahead of what is durable, so it must not go on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DriverError {
    /// The store could not commit a batch.
    Store { node: String, error: StoreError },
    /// The node asked to persist, but the driver has no store.
    NoStore { node: String },
    /// The node asked for file work, but the driver has no file executor.
    NoFiles { node: String },
    /// The driver cannot poll its sockets (out of file descriptors, say).
    Poll { node: String, error: String },
    /// A [`Stopper`] asked the driver to stop. Not a failure: the driver
    /// can run again.
    Stopped { node: String },
}

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DriverError::Store { node, error } => {
                write!(f, "{node} stopped: {error}")
            }
            DriverError::NoStore { node } => write!(
                f,
                "{node} stopped: it asked to persist a batch but has no store"
            ),
            DriverError::NoFiles { node } => write!(
                f,
                "{node} stopped: it asked for file work but has no file storage"
            ),
            DriverError::Poll { node, error } => write!(f, "{node} stopped: {error}"),
            DriverError::Stopped { node } => write!(f, "{node} stopped on request"),
        }
    }
}

impl std::error::Error for DriverError {}

/// What [`Driver::run`] returns: only ever an error.
pub type RunResult = Result<Infallible, DriverError>;

/// The production world: real sockets, real time, the node's store and its
/// file executor.
pub struct RealWorld {
    name: String,
    clock: Clock,
    net: Net,
    store: Option<Box<dyn Store + Send>>,
    files: Option<Files>,
}

impl RealWorld {
    /// A world named `name` in log lines, with its clock started now, no
    /// listener, no store and no file executor.
    pub fn new(name: &str) -> Self {
        RealWorld {
            name: name.to_string(),
            clock: Clock::new(),
            net: Net::new(name),
            store: None,
            files: None,
        }
    }

    /// Carries file work out with `files`.
    pub fn with_files(mut self, files: Files) -> Self {
        self.set_files(files);
        self
    }

    fn set_files(&mut self, mut files: Files) {
        // The writer thread's answers wake the loop.
        let stopper = self.net.stopper();
        files.set_wake(Arc::new(move || stopper.wake()));
        self.files = Some(files);
    }

    /// Waits until the file executor's writer thread has done everything
    /// it was given.
    pub fn wait_idle(&mut self) {
        if let Some(files) = self.files.as_mut() {
            files.wait_idle();
        }
    }
}

impl World for RealWorld {
    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn transmit(&mut self, conn: ConnId, bytes: Vec<u8>) {
        self.net.transmit(conn, bytes);
    }

    fn connect(&mut self, conn: ConnId, addr: String) {
        tracing::debug!(node = %self.name, "{conn}: dial {addr}");
        self.net.connect(conn, addr, Instant::now());
    }

    fn close(&mut self, conn: ConnId) {
        self.net.close(conn);
    }

    fn flush(&mut self) {
        self.net.flush();
    }

    fn commit(&mut self, batch: &Batch) -> Result<(), HostError> {
        match self.store.as_mut() {
            Some(store) => Ok(store.commit(batch)?),
            None => Err(HostError::NoStore),
        }
    }

    fn file(&mut self, op: FileOp) -> Result<Option<FileAnswer>, HostError> {
        match self.files.as_mut() {
            Some(files) => Ok(files.execute(op)),
            None => Err(HostError::NoFiles {
                what: ferry_core::host::file_op_name(&op),
            }),
        }
    }

    fn take_file_answer(&mut self) -> Option<FileAnswer> {
        self.files.as_mut()?.take_answer()
    }

    fn read(&mut self, handle: u64, offset: u64, len: usize) -> Result<&[u8], FileFailure> {
        match self.files.as_mut() {
            Some(files) => files.read(handle, offset, len),
            // Only an executor hands out reads.
            None => Err(FileFailure::other("no file storage")),
        }
    }
}

/// Runs one node against real sockets and real time.
pub struct Driver<N: Node> {
    host: Host<N, RealWorld>,
    /// Set by the first fatal error; the driver does nothing after it.
    failed: Option<DriverError>,
}

impl<N: Node> Driver<N> {
    /// A driver whose clock starts now. It dials what the node asks for and
    /// accepts nothing until given a listener with [`Driver::listen`].
    pub fn new(node: N) -> Self {
        Driver {
            host: Host::new(node, RealWorld::new("node")),
            failed: None,
        }
    }

    fn world(&mut self) -> &mut RealWorld {
        self.host.world_mut()
    }

    /// Commits the node's `Persist` outputs to `store`.
    pub fn with_store(mut self, store: Box<dyn Store + Send>) -> Self {
        self.world().store = Some(store);
        self
    }

    /// Executes the node's file work with `files`.
    pub fn with_files(mut self, files: Files) -> Self {
        self.world().set_files(files);
        self
    }

    /// Executes the node's file work with `files` from now on, once the
    /// executor used so far has done all it was given: for a client that
    /// moves another local file in its next request.
    pub fn replace_files(&mut self, files: Files) {
        self.world().wait_idle();
        self.world().set_files(files);
    }

    /// Uses `clock` instead of one started by [`Driver::new`]; for a node
    /// that was made with a time from the same clock.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.world().clock = clock;
        self
    }

    /// Encrypts every link of the node with TLS as `config` says, drawing
    /// the handshakes' randomness from `entropy` (seeded from the OS).
    pub fn with_tls(mut self, config: TlsConfig, entropy: Entropy) -> Self {
        self.host = self.host.with_tls(TlsLinks::new(config, entropy));
        self
    }

    /// Names the node in log lines (useful when one process runs several).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        let w = self.world();
        w.name = name.into();
        w.net.rename(&w.name);
        self
    }

    /// Feeds the connections `listener` accepts to the node (replacing the
    /// listener given before, if any), numbered `ConnId::accepted(0)`, 1,
    /// and so on.
    pub fn listen(mut self, listener: TcpListener) -> Self {
        self.world().net.listen(listener);
        self
    }

    /// Something another thread can stop [`Driver::run_until`] with.
    pub fn stopper(&self) -> Stopper {
        self.host.world().net.stopper()
    }

    /// The node's name in log lines.
    pub fn name(&self) -> &str {
        &self.host.world().name
    }

    /// The driver's current time, for calls on the node such as
    /// `Client::start(now)`.
    pub fn now(&self) -> Timestamp {
        self.host.world().clock.now()
    }

    pub fn node(&self) -> &N {
        self.host.node()
    }

    /// The node, for application calls. Their outputs are executed when the
    /// driver runs next.
    pub fn node_mut(&mut self) -> &mut N {
        self.host.node_mut()
    }

    /// Runs until `on_event` breaks, and returns what it broke with, or
    /// until a fatal error or a [`Stopper`]. Every event is logged and then
    /// passed to `on_event`; the outputs queued after a break are still
    /// executed, but their events are only logged. Input not yet fed at a
    /// break (bytes read, accepts, answers) is kept for the next run.
    /// After a fatal error it returns that error at once, every time.
    pub fn run_until<B: Send + 'static>(
        &mut self,
        mut on_event: impl FnMut(N::Event) -> ControlFlow<B>,
    ) -> Result<B, DriverError> {
        if let Some(error) = self.world().net.fatal.take() {
            let node = self.name().to_string();
            self.fail(DriverError::Poll { node, error });
        }
        loop {
            if let Some(value) = self.settle(&mut on_event)? {
                return Ok(value);
            }
            if self.world().net.take_stop() {
                return Err(DriverError::Stopped {
                    node: self.name().to_string(),
                });
            }
            // Timers, then the network, then sleep: the host routes both
            // through its TLS, if it has any.
            if self.host.handle_timeout_if_due() {
                continue;
            }
            let instant = Instant::now();
            if self.host.pull_input(|world| world.net.next_input(instant)) {
                continue;
            }
            let deadline = self.host.poll_timeout();
            let world = self.host.world_mut();
            let until = deadline.and_then(|d| world.clock.instant(d));
            if let Err(e) = world.net.wait(until, instant) {
                let node = self.name().to_string();
                self.fail(DriverError::Poll {
                    node,
                    error: format!("cannot poll sockets: {e}"),
                });
            }
        }
    }

    /// Runs until a fatal error (or a [`Stopper`]), logging events.
    pub fn run(mut self) -> RunResult {
        self.run_until(|_| ControlFlow::<Infallible>::Continue(()))
            .map(|never| match never {})
    }

    /// Stops: executes the outputs still queued, closes every connection as
    /// if the node had closed them (flushed, half-closed, lingering for the
    /// peer to hang up), stops accepting, and waits until every connection
    /// is done or `patience` runs out. For a process about to exit, whose
    /// last message (an ACK, say) would otherwise die with it.
    ///
    /// After a fatal error nothing more is sent: connections are closed
    /// with what was already queued on them.
    pub fn close(mut self, patience: Duration) {
        let until = Instant::now() + patience;
        // Outputs queued by calls on the node since the last run go first.
        let _ = self.settle(&mut |_| ControlFlow::<()>::Continue(()));
        let net = &mut self.world().net;
        net.close_all();
        loop {
            net.flush();
            let now = Instant::now();
            // No connection is the node's any more: nothing comes out.
            while net.next_input(now).is_some() {}
            if net.is_empty() || now >= until {
                return;
            }
            if net.wait(Some(until), now).is_err() {
                return;
            }
        }
    }

    fn fail(&mut self, e: DriverError) {
        if self.failed.is_none() {
            tracing::error!(node = %self.name(), "{e}");
            self.failed = Some(e);
        }
    }

    /// The host's settle (every output carried out, every answer fed, what
    /// was transmitted flushed), with every event logged before `on_event`
    /// sees it. Stops early at a break or a fatal error.
    fn settle<B: Send + 'static>(
        &mut self,
        on_event: &mut impl FnMut(N::Event) -> ControlFlow<B>,
    ) -> Result<Option<B>, DriverError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let mut broke = false;
        let settled = self.host.settle(|world, event| {
            match N::is_routine(&event) {
                true => tracing::debug!(node = %world.name, "{event}"),
                false => tracing::info!(node = %world.name, "{event}"),
            }
            if broke {
                return ControlFlow::Continue(());
            }
            let flow = on_event(event);
            broke = flow.is_break();
            flow
        });
        match settled {
            Ok(Settled::Break(value)) => Ok(Some(value)),
            // The real world never makes the node wait: its waits are real
            // ones, inside its calls.
            Ok(Settled::Quiet | Settled::Wait(_)) => Ok(None),
            Err(e) => {
                let node = self.name().to_string();
                let e = match e {
                    HostError::Store(error) => DriverError::Store { node, error },
                    HostError::NoStore => DriverError::NoStore { node },
                    HostError::NoFiles { .. } => DriverError::NoFiles { node },
                };
                self.fail(e.clone());
                Err(e)
            }
        }
    }
}
