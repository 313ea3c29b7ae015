//! The one pump: runs any [`Node`] against a [`World`].
//!
//! [`crate::io`] says what a node's outputs mean and in what order their
//! answers come back; [`Host`] is the only code that carries that out. The
//! production runtime, the simulator and the core's in-memory test cluster
//! each supply a [`World`] — real sockets, LMDB and files; simulated ones;
//! in-memory ones — and each runs its own loop around the host: wait for
//! the network or a timer, hand the input to the host, [`Host::settle`].
//!
//! A world may need the pump to wait: the simulator makes a store commit,
//! a client's file persist or a slow read take simulated time, during
//! which the node is blocked, as a process waiting in `fsync` or `pread`
//! is. The world says so through [`World::delay`]; the host then parks the
//! work and [`Host::settle`] returns [`Settled::Wait`]; the caller waits
//! that long (its clock, not the host's) and calls `settle` again, which
//! carries the parked work out and goes on. A world that never waits (the
//! production one: its waits are real ones, inside its calls) returns
//! zero and the host never parks.

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod mem_dir;
pub mod mem_disk;
pub mod tls;

use crate::io::{ConnId, FileAnswer, FileFailure, FileOp, Input, Node, Output};
use crate::store::{Batch, StoreError};
use crate::time::{earliest, Timestamp};
use std::any::Any;
use std::collections::VecDeque;
use std::fmt;
use std::ops::ControlFlow;
use std::time::Duration;

/// What a host's outputs act on. Network calls queue or send at once, as
/// the world likes; [`World::flush`] must have sent everything queued when
/// it returns.
pub trait World {
    /// The node's current time.
    fn now(&self) -> Timestamp;

    /// Writes `bytes` on `conn`, after what was written before. A connection
    /// the world does not know (closed, or never opened) drops them.
    fn transmit(&mut self, conn: ConnId, bytes: Vec<u8>);

    /// Opens `conn` to `addr` (`host:port`); the world later reports
    /// `Input::Connected` or `Input::ConnectFailed`.
    fn connect(&mut self, conn: ConnId, addr: String);

    /// Flushes what was transmitted on `conn`, then closes it. The world
    /// forgets it: nothing of it is reported afterwards.
    fn close(&mut self, conn: ConnId);

    /// Sends what `transmit` queued. The host calls it before it feeds each
    /// answer it owes the node.
    fn flush(&mut self) {}

    /// What the node transmits on `conn`, as it wrote it: before TLS
    /// encrypts it (a simulator's trace shows the protocol, not ciphertext).
    fn plaintext(&mut self, conn: ConnId, bytes: &[u8]) {
        let _ = (conn, bytes);
    }

    /// Commits `batch` to the node's store, atomically and durably.
    fn commit(&mut self, batch: &Batch) -> Result<(), HostError>;

    /// Carries out (or queues) a file operation, in output order. An answer
    /// due at once is returned; one that comes later (a persist on a writer
    /// thread, a failed write) is handed out by [`World::take_file_answer`].
    fn file(&mut self, op: FileOp) -> Result<Option<FileAnswer>, HostError>;

    /// The next file answer that became due since the last call.
    fn take_file_answer(&mut self) -> Option<FileAnswer> {
        None
    }

    /// The bytes of a read the world answered with [`FileAnswer::Read`],
    /// read now. They are fed to the node straight from the world's buffer.
    fn read(&mut self, handle: u64, offset: u64, len: usize) -> Result<&[u8], FileFailure>;

    /// How long the node is blocked before `work` is done (a simulated
    /// disk's latency). Asked once per piece of work.
    fn delay(&mut self, work: Work<'_>) -> Duration {
        let _ = work;
        Duration::ZERO
    }
}

/// Work a world may make the node wait for ([`World::delay`]).
#[derive(Debug)]
pub enum Work<'a> {
    /// A store commit, in the drain.
    Commit,
    /// A file operation, in the drain.
    File(&'a FileOp),
    /// The bytes of a read, just before they are fed.
    Read { handle: u64 },
}

/// Why a host stopped carrying out outputs. Fatal to the node: its state
/// may be ahead of what is durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostError {
    /// The store could not commit a batch.
    Store(StoreError),
    /// The node asked to persist a batch, but its world has no store.
    NoStore,
    /// The node asked for file work (`what`: "a read", "a write"...), but
    /// its world has no disk for it.
    NoFiles { what: &'static str },
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostError::Store(e) => write!(f, "{e}"),
            HostError::NoStore => write!(f, "it asked to persist a batch but has no store"),
            HostError::NoFiles { what } => {
                write!(f, "it asked for file work ({what}) but has no file storage")
            }
        }
    }
}

impl std::error::Error for HostError {}

impl From<StoreError> for HostError {
    fn from(e: StoreError) -> Self {
        HostError::Store(e)
    }
}

/// What an operation is called in [`HostError::NoFiles`].
pub fn file_op_name(op: &FileOp) -> &'static str {
    match op {
        FileOp::Read { .. } => "a read",
        FileOp::Write { .. } => "a write",
        FileOp::Persist { .. } => "a persist",
        FileOp::Discard { .. } => "a discard",
        FileOp::Remove { .. } => "a remove",
        FileOp::List { .. } => "a listing",
        FileOp::SetModified { .. } => "setting a modification time",
        FileOp::SetAttrs { .. } => "setting a download's attributes",
        FileOp::Rename { .. } => "a rename",
        FileOp::Space { .. } => "a look at the free space",
    }
}

/// How [`Host::settle`] ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Settled<B> {
    /// The node is quiet: no output, no answer owed.
    Quiet,
    /// An event handler broke with this value. The drain it broke in was
    /// carried out to its end; answers still owed are fed by the next
    /// `settle`.
    Break(B),
    /// The world blocks the node this long; call `settle` again once it
    /// has passed.
    Wait(Duration),
}

/// An input the host owes the node for an output it carried out.
#[derive(Debug)]
enum Answer {
    Persisted(u64),
    File(FileAnswer),
}

/// Work the world made the node wait for, carried out by the next settle.
enum Parked<E> {
    Output(Output<E>),
    Answer(Answer),
}

/// A node and its world, and the answers the node is owed.
pub struct Host<N: Node, W: World> {
    node: N,
    world: W,
    answers: VecDeque<Answer>,
    parked: Option<Parked<N::Event>>,
    /// A break of the drain that parked, returned once that drain is done.
    broke: Option<Box<dyn Any + Send>>,
    /// Set by the first fatal error; nothing is carried out after it.
    failed: Option<HostError>,
    /// TLS between the node and the world's network, if its links are
    /// encrypted (see [`tls`]).
    tls: Option<tls::TlsLinks>,
}

impl<N: Node, W: World> Host<N, W> {
    pub fn new(node: N, world: W) -> Self {
        Host {
            node,
            world,
            answers: VecDeque::new(),
            parked: None,
            broke: None,
            failed: None,
            tls: None,
        }
    }

    /// The same host with TLS on every link of the node.
    pub fn with_tls(mut self, tls: tls::TlsLinks) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The host's TLS, if its links are encrypted.
    pub fn tls(&self) -> Option<&tls::TlsLinks> {
        self.tls.as_ref()
    }

    pub fn node(&self) -> &N {
        &self.node
    }

    /// The node, for application calls (`Client::start`, say); their
    /// outputs are carried out by the next [`Host::settle`].
    pub fn node_mut(&mut self) -> &mut N {
        &mut self.node
    }

    pub fn world(&self) -> &W {
        &self.world
    }

    pub fn world_mut(&mut self) -> &mut W {
        &mut self.world
    }

    /// The node and its world, mutably at once.
    pub fn parts_mut(&mut self) -> (&mut N, &mut W) {
        (&mut self.node, &mut self.world)
    }

    pub fn into_parts(self) -> (N, W) {
        (self.node, self.world)
    }

    /// The fatal error the host stopped at, if any.
    pub fn failure(&self) -> Option<&HostError> {
        self.failed.as_ref()
    }

    /// True if answers are owed or work is parked: the node is not quiet
    /// even if nothing new happens.
    pub fn is_busy(&self) -> bool {
        !self.answers.is_empty()
            || self.parked.is_some()
            || self.tls.as_ref().is_some_and(|t| t.has_owed())
    }

    /// Feeds one input from the world's network (or from anywhere) at the
    /// world's time. Its outputs are carried out by the next settle. On a
    /// host with TLS, network inputs go to TLS, and what they mean for the
    /// node is fed by the next settle.
    pub fn handle_input(&mut self, input: Input<'_>) {
        let now = self.world.now();
        Self::route(&mut self.node, self.tls.as_mut(), now, input);
    }

    /// Feeds the input `next` takes from the world, if there is one: for
    /// inputs that borrow the world's buffers. True if one was fed.
    pub fn pull_input(&mut self, next: impl FnOnce(&mut W) -> Option<Input<'_>>) -> bool {
        let now = self.world.now();
        match next(&mut self.world) {
            Some(input) => {
                Self::route(&mut self.node, self.tls.as_mut(), now, input);
                true
            }
            None => false,
        }
    }

    fn route(node: &mut N, tls: Option<&mut tls::TlsLinks>, now: Timestamp, input: Input<'_>) {
        match (tls, input) {
            (
                Some(tls),
                input @ (Input::Accepted { .. }
                | Input::Connected { .. }
                | Input::ConnectFailed { .. }
                | Input::Received { .. }
                | Input::Closed { .. }),
            ) => tls.on_net(now, input),
            (_, input) => node.handle_input(now, input),
        }
    }

    /// The next deadline: the node's, or a TLS handshake's.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        earliest(
            self.node.poll_timeout(),
            self.tls.as_ref().and_then(|t| t.poll_timeout()),
        )
    }

    /// Handles what is due by the world's clock: handshakes that ran out of
    /// time, then the node's `handle_timeout`. True if anything was due.
    pub fn handle_timeout_if_due(&mut self) -> bool {
        let now = self.world.now();
        let mut due = false;
        if let Some(tls) = &mut self.tls {
            if tls.poll_timeout().is_some_and(|d| d <= now) {
                tls.handle_timeout(now);
                due = true;
            }
        }
        if self.node.poll_timeout().is_some_and(|d| d <= now) {
            self.node.handle_timeout(now);
            due = true;
        }
        due
    }

    /// Carries out every output of the node, then feeds back what it is
    /// owed, one input at a time, each followed by a drain, until the node
    /// is quiet, an event handler breaks, or the world makes the node wait.
    /// Every event is passed to `on_event`; the first break is the one
    /// returned (events after it are still passed, their breaks ignored).
    /// What was transmitted is flushed before each answer is fed and before
    /// this returns.
    pub fn settle<B: Send + 'static>(
        &mut self,
        mut on_event: impl FnMut(&mut W, N::Event) -> ControlFlow<B>,
    ) -> Result<Settled<B>, HostError> {
        let settled = self.settle_node(&mut on_event);
        if let Some(tls) = &mut self.tls {
            tls.sync(&mut self.world);
        }
        self.world.flush();
        settled
    }

    fn settle_node<B: Send + 'static>(
        &mut self,
        on_event: &mut impl FnMut(&mut W, N::Event) -> ControlFlow<B>,
    ) -> Result<Settled<B>, HostError> {
        // A drain that broke and then parked breaks when it is done.
        let mut brk = self
            .broke
            .take()
            .and_then(|b| b.downcast::<B>().ok())
            .map(|b| *b);
        loop {
            if let Some(e) = &self.failed {
                return Err(e.clone());
            }
            if let Some(tls) = &mut self.tls {
                tls.sync(&mut self.world);
            }
            if let Some(wait) = self.drain(on_event, &mut brk) {
                if let Some(value) = brk {
                    self.broke = Some(Box::new(value));
                }
                return Ok(Settled::Wait(wait));
            }
            // A failure wins over a break in the same drain.
            if let Some(e) = &self.failed {
                return Err(e.clone());
            }
            if let Some(value) = brk {
                return Ok(Settled::Break(value));
            }
            // What the network brought comes before the answers of work
            // the node asked for since: as it would without TLS, where it
            // is fed before the settle that carries that work out.
            if let Some(tls) = &mut self.tls {
                tls.sync(&mut self.world);
                let now = self.world.now();
                if tls.feed_next(now, &mut self.node) {
                    continue;
                }
            }
            self.take_due();
            let Some(answer) = self.answers.pop_front() else {
                return Ok(Settled::Quiet);
            };
            self.world.flush();
            if let Answer::File(FileAnswer::Read { handle, .. }) = &answer {
                let wait = self.world.delay(Work::Read { handle: *handle });
                if !wait.is_zero() {
                    self.parked = Some(Parked::Answer(answer));
                    return Ok(Settled::Wait(wait));
                }
            }
            self.feed(answer);
        }
    }

    /// Carries out the parked work, if any, then every queued output, up to
    /// a fatal error or a wait.
    fn drain<B>(
        &mut self,
        on_event: &mut impl FnMut(&mut W, N::Event) -> ControlFlow<B>,
        brk: &mut Option<B>,
    ) -> Option<Duration> {
        match self.parked.take() {
            Some(Parked::Output(output)) => self.carry_out(output, on_event, brk),
            Some(Parked::Answer(answer)) => self.feed(answer),
            None => {}
        }
        while self.failed.is_none() {
            let Some(output) = self.node.poll_output() else {
                break;
            };
            let work = match &output {
                Output::Persist { .. } => Some(Work::Commit),
                Output::File(op) => Some(Work::File(op)),
                _ => None,
            };
            if let Some(work) = work {
                let wait = self.world.delay(work);
                if !wait.is_zero() {
                    self.parked = Some(Parked::Output(output));
                    return Some(wait);
                }
            }
            self.carry_out(output, on_event, brk);
        }
        None
    }

    fn carry_out<B>(
        &mut self,
        output: Output<N::Event>,
        on_event: &mut impl FnMut(&mut W, N::Event) -> ControlFlow<B>,
        brk: &mut Option<B>,
    ) {
        match output {
            Output::Transmit { conn, bytes } => {
                self.world.plaintext(conn, &bytes);
                match &mut self.tls {
                    Some(tls) => tls.transmit(conn, bytes),
                    None => self.world.transmit(conn, bytes),
                }
            }
            Output::Connect { conn, addr } => match &mut self.tls {
                Some(tls) => tls.connect(self.world.now(), conn, addr, &mut self.world),
                None => self.world.connect(conn, addr),
            },
            Output::Close { conn } => match &mut self.tls {
                Some(tls) => tls.close(self.world.now(), conn, &mut self.world),
                None => self.world.close(conn),
            },
            Output::Persist { token, batch } => match self.world.commit(&batch) {
                Ok(()) => self.answers.push_back(Answer::Persisted(token)),
                Err(e) => self.fail(e),
            },
            Output::File(op) => {
                match self.world.file(op) {
                    Ok(Some(answer)) => self.answers.push_back(Answer::File(answer)),
                    Ok(None) => {}
                    Err(e) => return self.fail(e),
                }
                // Work the world finished meanwhile (a queue that moved)
                // is owed in the order it became due.
                self.take_due();
            }
            Output::Event(event) => {
                if let ControlFlow::Break(value) = on_event(&mut self.world, event) {
                    brk.get_or_insert(value);
                }
            }
        }
    }

    /// Feeds one owed answer to the node.
    fn feed(&mut self, answer: Answer) {
        let now = self.world.now();
        let failed = |handle, failure: FileFailure| Input::FileFailed {
            handle,
            error: failure.error,
            no_space: failure.no_space,
            missing: failure.missing,
        };
        match answer {
            Answer::Persisted(token) => self.node.handle_input(now, Input::Persisted { token }),
            Answer::File(FileAnswer::Persisted { temp }) => {
                self.node.handle_input(now, Input::FilePersisted { temp })
            }
            Answer::File(FileAnswer::Listed { handle, entries }) => self.node.handle_input(
                now,
                Input::Listed {
                    handle,
                    entries: &entries,
                },
            ),
            Answer::File(FileAnswer::Renamed { handle }) => {
                self.node.handle_input(now, Input::Renamed { handle })
            }
            Answer::File(FileAnswer::Space { handle, free }) => {
                self.node.handle_input(now, Input::Space { handle, free })
            }
            Answer::File(FileAnswer::Failed { handle, failure }) => {
                self.node.handle_input(now, failed(handle, failure))
            }
            Answer::File(FileAnswer::Read {
                handle,
                offset,
                len,
            }) => match self.world.read(handle, offset, len) {
                Ok(data) => self.node.handle_input(
                    now,
                    Input::FileRead {
                        handle,
                        offset,
                        data,
                    },
                ),
                Err(failure) => self.node.handle_input(now, failed(handle, failure)),
            },
        }
    }

    fn take_due(&mut self) {
        while let Some(answer) = self.world.take_file_answer() {
            self.answers.push_back(Answer::File(answer));
        }
    }

    fn fail(&mut self, e: HostError) {
        self.failed.get_or_insert(e);
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod tls_tests;
