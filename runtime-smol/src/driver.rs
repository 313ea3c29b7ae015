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
//! fed, into the executor's reusable buffers. The exception is a server's
//! file `Persist`, which can wait seconds for the disk: the node runs on
//! meanwhile, and its answer joins the queue when the executor's writer
//! thread is done (which wakes the driver). A node that asks for file
//! work from a driver without an executor stops it ([`DriverError::NoFiles`]).

use crate::clock::Clock;
use crate::files::{FileAnswer, Files};
use crate::net::{Net, Stopper};
use ferry_core::store::{Batch, Store, StoreError};
use ferry_core::{Input, Node, Output, Timestamp};
use std::collections::VecDeque;
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

/// Runs one node against real sockets and real time.
pub struct Driver<N: Node> {
    node: N,
    name: String,
    clock: Clock,
    net: Net,
    store: Option<Box<dyn Store + Send>>,
    files: Option<Files>,
    /// Answers to feed back, in output order: tokens of committed batches
    /// and the results of file work.
    answers: VecDeque<Answer>,
    /// Set by the first fatal error; the driver does nothing after it.
    failed: Option<DriverError>,
}

/// An input the driver owes the node for an output it executed.
enum Answer {
    Persisted(u64),
    File(FileAnswer),
}

impl<N: Node> Driver<N> {
    /// A driver whose clock starts now. It dials what the node asks for and
    /// accepts nothing until given a listener with [`Driver::listen`].
    pub fn new(node: N) -> Self {
        let name = "node".to_string();
        let net = Net::new(&name);
        Driver {
            node,
            name,
            clock: Clock::new(),
            net,
            store: None,
            files: None,
            answers: VecDeque::new(),
            failed: None,
        }
    }

    /// Commits the node's `Persist` outputs to `store`.
    pub fn with_store(mut self, store: Box<dyn Store + Send>) -> Self {
        self.store = Some(store);
        self
    }

    /// Executes the node's file work with `files`.
    pub fn with_files(mut self, mut files: Files) -> Self {
        let stopper = self.net.stopper();
        files.set_wake(Arc::new(move || stopper.wake()));
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
        self.net.rename(&self.name);
        self
    }

    /// Feeds the connections `listener` accepts to the node (replacing the
    /// listener given before, if any), numbered `ConnId::accepted(0)`, 1,
    /// and so on.
    pub fn listen(mut self, listener: TcpListener) -> Self {
        self.net.listen(listener);
        self
    }

    /// Something another thread can stop [`Driver::run_until`] with.
    pub fn stopper(&self) -> Stopper {
        self.net.stopper()
    }

    /// The node's name in log lines.
    pub fn name(&self) -> &str {
        &self.name
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
    /// until a fatal error or a [`Stopper`]. Every event is logged and then
    /// passed to `on_event`; the outputs queued after a break are still
    /// executed, but their events are only logged. Input not yet fed at a
    /// break (bytes read, accepts, answers) is kept for the next run.
    /// After a fatal error it returns that error at once, every time.
    pub fn run_until<B>(
        &mut self,
        mut on_event: impl FnMut(N::Event) -> ControlFlow<B>,
    ) -> Result<B, DriverError> {
        if let Some(error) = self.net.fatal.take() {
            self.fail(DriverError::Poll {
                node: self.name.clone(),
                error,
            });
        }
        loop {
            if let Some(value) = self.settle(&mut on_event)? {
                return Ok(value);
            }
            if self.net.take_stop() {
                return Err(DriverError::Stopped {
                    node: self.name.clone(),
                });
            }
            // One reading of the clock serves the whole turn.
            let instant = Instant::now();
            let now = self.clock.at(instant);
            let deadline = self.node.poll_timeout();
            if deadline.is_some_and(|d| d <= now) {
                self.node.handle_timeout(now);
                continue;
            }
            if let Some(input) = self.net.next_input(instant) {
                self.node.handle_input(now, input);
                continue;
            }
            let until = deadline.and_then(|d| self.clock.instant(d));
            if let Err(e) = self.net.wait(until, instant) {
                self.fail(DriverError::Poll {
                    node: self.name.clone(),
                    error: format!("cannot poll sockets: {e}"),
                });
            }
        }
    }

    /// Runs until a fatal error (or a [`Stopper`]), logging events.
    pub fn run(mut self) -> RunResult {
        self.run_until(|_| ControlFlow::Continue(()))
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
        self.net.close_all();
        loop {
            self.net.flush();
            let now = Instant::now();
            // No connection is the node's any more: nothing comes out.
            while self.net.next_input(now).is_some() {}
            if self.net.is_empty() || now >= until {
                return;
            }
            if self.net.wait(Some(until), now).is_err() {
                return;
            }
        }
    }

    fn fail(&mut self, e: DriverError) {
        if self.failed.is_none() {
            tracing::error!(node = %self.name, "{e}");
            self.failed = Some(e);
        }
    }

    /// [`Driver::settle_node`], then the bytes it queued go to the sockets.
    fn settle<B>(
        &mut self,
        on_event: &mut impl FnMut(N::Event) -> ControlFlow<B>,
    ) -> Result<Option<B>, DriverError> {
        let settled = self.settle_node(on_event);
        self.net.flush();
        settled
    }

    /// Drains, then feeds back each committed batch's `Persisted` and
    /// drains again, until the node is quiet. Stops early at a break (the
    /// tokens left are fed on the next run) or a fatal error.
    fn settle_node<B>(
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
            // Persists finish and writes fail on the writer thread,
            // whenever they do.
            if let Some(files) = self.files.as_mut() {
                while let Some(answer) = files.take_answer() {
                    self.answers.push_back(Answer::File(answer));
                }
            }
            let Some(answer) = self.answers.pop_front() else {
                return Ok(None);
            };
            // What the drain sent goes out before the answer is worked on:
            // a sender that reads and hashes its next block when fed does
            // it while the chunk just sent is on its way.
            self.net.flush();
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
                missing: failure.missing,
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
                        missing: failure.missing,
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
                Output::Transmit { conn, bytes } => self.net.transmit(conn, bytes),
                Output::Connect { conn, addr } => {
                    tracing::debug!(node = %self.name, "{conn}: dial {addr}");
                    self.net.connect(conn, addr, Instant::now());
                }
                Output::Close { conn } => self.net.close(conn),
                Output::Persist { token, batch } => self.persist(token, &batch),
                Output::File(op) => match self.files.as_mut() {
                    Some(files) => {
                        if let Some(answer) = files.execute(op) {
                            self.answers.push_back(Answer::File(answer));
                        }
                    }
                    None => self.fail(DriverError::NoFiles {
                        node: self.name.clone(),
                    }),
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
            Err(e) => self.fail(e),
        }
    }
}
