//! The run loop: one node, its sockets, its timer.
//!
//! **Rule (str0m's):** after every input, drain *every* output before waiting
//! for the next input. Then wait for the first of: an inbound socket event or
//! the node's deadline. `futures_lite::future::or` polls its first argument
//! first, so when both are ready the socket event wins, deterministically.
//!
//! A connection the node closed is forgotten at once: whatever its reader
//! still reports (bytes, `Closed`) is dropped, so the node is never told
//! about a connection it no longer knows.
//!
//! **Persistence.** `Output::Persist` is executed in output order, like every
//! output: the batch is committed to the driver's store synchronously, and its
//! token is queued. Once the drain is over, the queued tokens are fed back as
//! `Input::Persisted`, one at a time and in commit order, each followed by a
//! drain of its own (the rule again). A store that fails to commit, or a
//! `Persist` with no store configured, is fatal: the error is logged, no
//! further output is executed, and the driver stops with a [`DriverError`]
//! rather than let the node act on state it could not save.
//!
//! **Files.** `Output::File` is executed in output order too, by the
//! driver's [`Files`] executor (see [`crate::files`]). What it has to say
//! back (`FileRead`, `FilePersisted`, `FileFailed`) is queued with the
//! persisted tokens, in one queue in output order, and fed back the same
//! way: one input, then a drain. A read's bytes are read only when they are
//! fed, into the executor's one reusable buffer. A node that asks for file
//! work from a driver without an executor stops it ([`DriverError::NoFiles`]).

use crate::clock::Clock;
use crate::conn::{self, Flushing, Inbound, Writer};
use crate::files::{FileAnswer, Files};
use async_channel::{Receiver, Sender};
use async_io::Timer;
use ferry_core::store::{Batch, Store, StoreError};
use ferry_core::{ConnId, Input, Node, Output, Timestamp};
use futures_lite::future;
use smol::net::TcpListener;
use smol::{Executor, Task};
use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a driver stopped. Both are fatal to the node: its state may be ahead
/// of what is durable, so it must not go on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DriverError {
    /// The store could not commit a batch.
    Store { node: String, error: StoreError },
    /// The node asked to persist, but the driver has no store.
    NoStore { node: String },
    /// The node asked for file work, but the driver has no file executor.
    NoFiles { node: String },
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
        }
    }
}

impl std::error::Error for DriverError {}

/// What [`Driver::run`] returns: only ever an error.
pub type RunResult = Result<Infallible, DriverError>;

/// Waits on several drivers spawned with `smol::spawn(driver.run())`, for
/// running a whole cluster in one process. Returns the first driver's fatal
/// error; a panic in any driver is re-raised here rather than lost with its
/// task.
pub async fn run_all(drivers: Vec<Task<RunResult>>) -> RunResult {
    let mut all: Pin<Box<dyn Future<Output = RunResult> + Send>> = Box::pin(future::pending());
    for task in drivers {
        all = Box::pin(future::or(all, task));
    }
    all.await
}

/// Socket events buffered between the socket tasks and the node; a full
/// buffer makes readers wait, which pushes back on fast peers.
const INBOUND_BUFFER: usize = 256;

/// Runs one node against real sockets and real time.
pub struct Driver<N: Node> {
    node: N,
    name: String,
    clock: Clock,
    conns: BTreeMap<ConnId, Writer>,
    inbound_tx: Sender<Inbound>,
    inbound: Receiver<Inbound>,
    /// Cancelled when the driver is dropped.
    accept_task: Option<Task<()>>,
    next_accept: Arc<AtomicU64>,
    flushing: Flushing,
    /// Closed once the driver and every writer task dropped `flushing`.
    all_flushed: Receiver<()>,
    store: Option<Box<dyn Store + Send>>,
    files: Option<Files>,
    /// Answers to feed back, in output order: tokens of committed batches
    /// and the results of file work.
    answers: VecDeque<Answer>,
    /// Set by the first fatal error; the driver does nothing after it.
    failed: Option<DriverError>,
    /// Runs the socket tasks, on the thread that runs the driver.
    executor: Arc<Executor<'static>>,
}

/// An input the driver owes the node for an output it executed.
enum Answer {
    Persisted(u64),
    File(FileAnswer),
}

enum Wake {
    Inbound(Inbound),
    Timer,
}

impl<N: Node> Driver<N> {
    /// A driver whose clock starts now. It dials what the node asks for and
    /// accepts nothing until given a listener with [`Driver::listen`].
    pub fn new(node: N) -> Self {
        let (inbound_tx, inbound) = async_channel::bounded(INBOUND_BUFFER);
        let (flushing, all_flushed) = async_channel::bounded(1);
        Driver {
            node,
            name: "node".into(),
            clock: Clock::new(),
            conns: BTreeMap::new(),
            inbound_tx,
            inbound,
            accept_task: None,
            next_accept: Arc::new(AtomicU64::new(0)),
            flushing,
            all_flushed,
            store: None,
            files: None,
            answers: VecDeque::new(),
            failed: None,
            executor: Arc::new(Executor::new()),
        }
    }

    /// Commits the node's `Persist` outputs to `store`.
    pub fn with_store(mut self, store: Box<dyn Store + Send>) -> Self {
        self.store = Some(store);
        self
    }

    /// Executes the node's file work with `files`.
    pub fn with_files(mut self, files: Files) -> Self {
        self.files = Some(files);
        self
    }

    /// Uses `clock` instead of one started by [`Driver::new`]; for a node
    /// that was made with a time from the same clock.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Names the node in log lines (useful when one process runs several).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Feeds the connections `listener` accepts to the node (replacing the
    /// listener given before, if any).
    pub fn listen(mut self, listener: TcpListener) -> Self {
        let next = Arc::clone(&self.next_accept);
        let (inbound, flushing) = (self.inbound_tx.clone(), self.flushing.clone());
        self.accept_task = Some(conn::accept_loop(
            &self.executor,
            listener,
            next,
            inbound,
            flushing,
        ));
        self
    }

    /// The driver's current time, for calls on the node such as
    /// `Client::start(now)`.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub fn node(&self) -> &N {
        &self.node
    }

    /// The node, for application calls. Their outputs are executed when the
    /// driver runs next.
    pub fn node_mut(&mut self) -> &mut N {
        &mut self.node
    }

    /// Runs until `on_event` breaks, and returns what it broke with, or
    /// until a fatal error. Every event is logged and then passed to
    /// `on_event`; the outputs queued after a break are still executed, but
    /// their events are only logged.
    ///
    /// The future may be dropped at any await point (to stop on a signal,
    /// say with `future::or(driver.run_until(..), stop)`): no input is lost
    /// and the driver can be run again. After a fatal error it returns that
    /// error at once, every time.
    pub async fn run_until<B>(
        &mut self,
        on_event: impl FnMut(N::Event) -> ControlFlow<B>,
    ) -> Result<B, DriverError> {
        // The socket tasks run while, and where, the node runs.
        let executor = Arc::clone(&self.executor);
        executor.run(self.run_node(on_event)).await
    }

    async fn run_node<B>(
        &mut self,
        mut on_event: impl FnMut(N::Event) -> ControlFlow<B>,
    ) -> Result<B, DriverError> {
        // The timer stays armed for the earliest deadline asked for while
        // later ones come and go: arming a timer wakes the reactor, and a
        // node's deadline moves with nearly every message (a transfer's
        // resend timer, say). A timer that fires early just re-arms.
        let mut armed: Option<(Instant, Timer)> = None;
        loop {
            if let Some(value) = self.settle(&mut on_event)? {
                return Ok(value);
            }
            let now = self.clock.now();
            let deadline = self.node.poll_timeout();
            if deadline.is_some_and(|d| d <= now) {
                self.node.handle_timeout(now);
                continue;
            }
            match deadline.and_then(|d| self.clock.instant(d)) {
                Some(at) if armed.as_ref().is_none_or(|(t, _)| at < *t) => {
                    armed = Some((at, Timer::at(at)));
                }
                _ => {}
            }
            let inbound = async {
                // The driver holds a sender, so the channel never closes.
                match self.inbound.recv().await {
                    Ok(event) => Wake::Inbound(event),
                    Err(_) => future::pending().await,
                }
            };
            let timer = async {
                match armed.as_mut() {
                    Some((_, timer)) => {
                        timer.await;
                    }
                    None => future::pending::<()>().await,
                }
                Wake::Timer
            };
            match future::or(inbound, timer).await {
                Wake::Inbound(event) => self.on_inbound(event),
                // The deadline is checked at the top of the loop.
                Wake::Timer => armed = None,
            }
        }
    }

    /// Runs until a fatal error, logging events. Otherwise it returns only
    /// by being dropped.
    pub async fn run(mut self) -> RunResult {
        self.run_until(|_| ControlFlow::Continue(())).await
    }

    /// Stops: executes the outputs still queued, closes every connection as
    /// if the node had closed them, and waits until everything is flushed
    /// and the sockets are shut, or until `patience` runs out. For a process
    /// about to exit, whose last message (an ACK, say) would otherwise die
    /// with it.
    ///
    /// After a fatal error nothing more is sent: connections are closed
    /// with what was already queued on them.
    pub async fn close(mut self, patience: Duration) {
        // Outputs queued by calls on the node since the last run go first.
        let _ = self.settle(&mut |_| ControlFlow::<()>::Continue(()));
        for writer in std::mem::take(&mut self.conns).into_values() {
            writer.close();
        }
        let all_flushed = self.all_flushed.clone();
        let executor = Arc::clone(&self.executor);
        // Drops the listener, our `flushing` token, and the inbound channel,
        // so that readers stop at their next event.
        drop(self);
        let flushed = async {
            let _ = all_flushed.recv().await;
        };
        let waited = future::or(flushed, async {
            Timer::after(patience).await;
        });
        // The writers run on the driver's executor: run it meanwhile. Tasks
        // still running after this (readers lingering) are cancelled with
        // the executor.
        executor.run(waited).await;
    }

    /// Drains, then feeds back each committed batch's `Persisted` and
    /// drains again, until the node is quiet. Stops early at a break (the
    /// tokens left are fed on the next run) or a fatal error.
    fn settle<B>(
        &mut self,
        on_event: &mut impl FnMut(N::Event) -> ControlFlow<B>,
    ) -> Result<Option<B>, DriverError> {
        loop {
            if let Some(e) = &self.failed {
                return Err(e.clone());
            }
            let stop = self.drain(on_event);
            // A failure wins over a break in the same drain.
            if let Some(e) = &self.failed {
                return Err(e.clone());
            }
            if let Some(value) = stop {
                return Ok(Some(value));
            }
            let Some(answer) = self.answers.pop_front() else {
                return Ok(None);
            };
            self.feed(answer);
        }
    }

    /// Feeds one owed input to the node.
    fn feed(&mut self, answer: Answer) {
        let now = self.clock.now();
        let input = match answer {
            Answer::Persisted(token) => Input::Persisted { token },
            Answer::File(FileAnswer::Persisted { temp }) => Input::FilePersisted { temp },
            Answer::File(FileAnswer::Failed { handle, failure }) => Input::FileFailed {
                handle,
                error: failure.error,
                no_space: failure.no_space,
            },
            Answer::File(FileAnswer::Read {
                handle,
                offset,
                len,
            }) => {
                // Only an executor hands out reads.
                let Some(files) = self.files.as_mut() else {
                    return;
                };
                let input = match files.read(handle, offset, len) {
                    Ok(data) => Input::FileRead {
                        handle,
                        offset,
                        data,
                    },
                    Err(failure) => Input::FileFailed {
                        handle,
                        error: failure.error,
                        no_space: failure.no_space,
                    },
                };
                return self.node.handle_input(now, input);
            }
        };
        self.node.handle_input(now, input);
    }

    /// Executes every queued output, up to a fatal error. Returns the value
    /// of the first break.
    fn drain<B>(&mut self, on_event: &mut impl FnMut(N::Event) -> ControlFlow<B>) -> Option<B> {
        let mut stop = None;
        while self.failed.is_none() {
            let Some(output) = self.node.poll_output() else {
                break;
            };
            match output {
                Output::Transmit { conn, bytes } => match self.conns.get(&conn) {
                    Some(writer) => writer.send(bytes),
                    None => {
                        tracing::debug!(node = %self.name, "{conn}: transmit on unknown connection dropped")
                    }
                },
                Output::Connect { conn, addr } => {
                    tracing::debug!(node = %self.name, "{conn}: dial {addr}");
                    let (inbound, flushing) = (self.inbound_tx.clone(), self.flushing.clone());
                    let writer = conn::dial(&self.executor, conn, addr, inbound, flushing);
                    self.conns.insert(conn, writer);
                }
                Output::Close { conn } => {
                    if let Some(writer) = self.conns.remove(&conn) {
                        writer.close();
                    }
                }
                Output::Persist { token, batch } => self.persist(token, &batch),
                Output::File(op) => match self.files.as_mut() {
                    Some(files) => {
                        if let Some(answer) = files.execute(op) {
                            self.answers.push_back(Answer::File(answer));
                        }
                    }
                    None => {
                        let e = DriverError::NoFiles {
                            node: self.name.clone(),
                        };
                        tracing::error!(node = %self.name, "{e}");
                        self.failed = Some(e);
                    }
                },
                Output::Event(event) => {
                    tracing::info!(node = %self.name, "{event}");
                    if stop.is_none() {
                        if let ControlFlow::Break(value) = on_event(event) {
                            stop = Some(value);
                        }
                    }
                }
            }
        }
        stop
    }

    /// Commits a batch and queues its token, or records the fatal error.
    fn persist(&mut self, token: u64, batch: &Batch) {
        let node = self.name.clone();
        let result = match self.store.as_mut() {
            Some(store) => store
                .commit(batch)
                .map_err(|error| DriverError::Store { node, error }),
            None => Err(DriverError::NoStore { node }),
        };
        match result {
            Ok(()) => self.answers.push_back(Answer::Persisted(token)),
            Err(e) => {
                tracing::error!(node = %self.name, "{e}");
                self.failed = Some(e);
            }
        }
    }

    fn on_inbound(&mut self, event: Inbound) {
        let now = self.clock.now();
        let name = &self.name;
        match event {
            Inbound::Accepted { conn, peer, writer } => {
                tracing::debug!(node = %name, "{conn}: accepted from {peer}");
                self.conns.insert(conn, writer);
                self.node.handle_input(now, Input::Accepted { conn, peer });
            }
            Inbound::Connected { conn } if self.conns.contains_key(&conn) => {
                self.node.handle_input(now, Input::Connected { conn });
            }
            Inbound::Received { conn, bytes } if self.conns.contains_key(&conn) => {
                let bytes = &bytes[..];
                self.node.handle_input(now, Input::Received { conn, bytes });
            }
            Inbound::ConnectFailed { conn, reason } if self.conns.contains_key(&conn) => {
                tracing::debug!(node = %name, "{conn}: connect failed: {reason}");
                self.conns.remove(&conn);
                self.node
                    .handle_input(now, Input::ConnectFailed { conn, reason });
            }
            Inbound::Closed { conn } if self.conns.contains_key(&conn) => {
                tracing::debug!(node = %name, "{conn}: closed by peer");
                self.conns.remove(&conn);
                self.node.handle_input(now, Input::Closed { conn });
            }
            // News of a connection the node has already closed.
            _ => {}
        }
    }
}
