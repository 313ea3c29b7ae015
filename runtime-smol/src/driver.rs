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

use crate::clock::Clock;
use crate::conn::{self, Flushing, Inbound, Writer};
use async_channel::{Receiver, Sender};
use async_io::Timer;
use ferry_core::{ConnId, Input, Node, Output, Timestamp};
use futures_lite::future;
use smol::net::TcpListener;
use smol::Task;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

/// Waits on several drivers spawned with `smol::spawn(driver.run())`, for
/// running a whole cluster in one process. Never returns; a panic in any
/// driver is re-raised here rather than lost with its task.
pub async fn run_all(drivers: Vec<Task<Infallible>>) -> Infallible {
    let mut all: Pin<Box<dyn Future<Output = Infallible> + Send>> = Box::pin(future::pending());
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
        }
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
        self.accept_task = Some(conn::accept_loop(listener, next, inbound, flushing));
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

    /// Runs until `on_event` breaks, and returns what it broke with. Every
    /// event is logged and then passed to `on_event`; the outputs queued
    /// after a break are still executed, but their events are only logged.
    ///
    /// The future may be dropped at any await point (to stop on a signal,
    /// say with `future::or(driver.run_until(..), stop)`): no input is lost
    /// and the driver can be run again.
    pub async fn run_until<B>(
        &mut self,
        mut on_event: impl FnMut(N::Event) -> ControlFlow<B>,
    ) -> B {
        loop {
            if let Some(value) = self.drain(&mut on_event) {
                return value;
            }
            let now = self.clock.now();
            let deadline = self.node.poll_timeout();
            if deadline.is_some_and(|d| d <= now) {
                self.node.handle_timeout(now);
                continue;
            }
            let timer = match deadline.and_then(|d| self.clock.instant(d)) {
                Some(at) => Timer::at(at),
                None => Timer::never(),
            };
            let inbound = async {
                // The driver holds a sender, so the channel never closes.
                match self.inbound.recv().await {
                    Ok(event) => Wake::Inbound(event),
                    Err(_) => future::pending().await,
                }
            };
            let timer = async {
                timer.await;
                Wake::Timer
            };
            match future::or(inbound, timer).await {
                Wake::Inbound(event) => self.on_inbound(event),
                // The deadline is checked at the top of the loop.
                Wake::Timer => {}
            }
        }
    }

    /// Runs forever, logging events. Returns only by being dropped.
    pub async fn run(mut self) -> Infallible {
        self.run_until(|_| ControlFlow::Continue(())).await
    }

    /// Stops: executes the outputs still queued, closes every connection as
    /// if the node had closed them, and waits until everything is flushed
    /// and the sockets are shut, or until `patience` runs out. For a process
    /// about to exit, whose last message (an ACK, say) would otherwise die
    /// with it.
    pub async fn close(mut self, patience: Duration) {
        // Outputs queued by calls on the node since the last run go first.
        self.drain(&mut |_| ControlFlow::<()>::Continue(()));
        for writer in std::mem::take(&mut self.conns).into_values() {
            writer.close();
        }
        let all_flushed = self.all_flushed.clone();
        // Drops the listener, our `flushing` token, and the inbound channel,
        // so that readers stop at their next event.
        drop(self);
        let flushed = async {
            let _ = all_flushed.recv().await;
        };
        future::or(flushed, async {
            Timer::after(patience).await;
        })
        .await;
    }

    /// Executes every queued output. Returns the value of the first break.
    fn drain<B>(&mut self, on_event: &mut impl FnMut(N::Event) -> ControlFlow<B>) -> Option<B> {
        let mut stop = None;
        while let Some(output) = self.node.poll_output() {
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
                    let writer = conn::dial(conn, addr, inbound, flushing);
                    self.conns.insert(conn, writer);
                }
                Output::Close { conn } => {
                    if let Some(writer) = self.conns.remove(&conn) {
                        writer.close();
                    }
                }
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
