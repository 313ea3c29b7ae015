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
//! Time is `tokio::time::Instant` (virtual under turmoil) since the driver
//! started, so a node that is started afresh after a bounce starts at zero.
//!
//! Determinism: `BTreeMap`s only, `biased` selects, no real clock, no
//! `spawn_blocking`, no threads.

use crate::trace::SharedTrace;
use ferry_core::{ConnId, Input, Node, Output, Timestamp};
use std::cell::RefCell;
use std::collections::BTreeMap;
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
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            connect_timeout: Duration::from_secs(10),
            trace_accepts: false,
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
    start: Instant,
    conns: BTreeMap<ConnId, Conn>,
    tx: mpsc::UnboundedSender<Net>,
    rx: mpsc::UnboundedReceiver<Net>,
    next_accept: u64,
    /// Connection tasks, awaited by [`Driver::shutdown`].
    tasks: Vec<JoinHandle<()>>,
}

impl<N: Node> Driver<N> {
    /// Must be called inside a turmoil host or client: the clock starts now.
    pub fn new(host: &str, node: Rc<RefCell<N>>, trace: SharedTrace, cfg: DriverConfig) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Driver {
            host: host.into(),
            node,
            trace,
            cfg,
            start: Instant::now(),
            conns: BTreeMap::new(),
            tx,
            rx,
            next_accept: 0,
            tasks: Vec::new(),
        }
    }

    /// The node's current time.
    pub fn now(&self) -> Timestamp {
        Timestamp::from_duration(Instant::now().saturating_duration_since(self.start))
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
            if self.drain(&mut observe) {
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

    /// Drives the node forever (a host's main loop).
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

    fn instant(&self, t: Timestamp) -> Instant {
        self.start + t.as_duration()
    }

    /// Carries out every pending output. True if the observer asked to stop.
    fn drain<F>(&mut self, observe: &mut F) -> bool
    where
        F: FnMut(&Ctx<'_>, &N::Event) -> Flow,
    {
        let mut stop = false;
        loop {
            let Some(out) = self.node.borrow_mut().poll_output() else {
                return stop;
            };
            match out {
                Output::Transmit { conn, bytes } => {
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
                Output::Event(ev) => {
                    self.trace
                        .borrow_mut()
                        .record_now(&self.host, ev.to_string());
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

/// A host's main program: listen on `0.0.0.0:port` and drive `node` forever.
pub async fn serve<N: Node>(
    host: &str,
    port: u16,
    node: Rc<RefCell<N>>,
    trace: SharedTrace,
    cfg: DriverConfig,
    observe: impl FnMut(&Ctx<'_>, &N::Event),
) -> turmoil::Result {
    let listener = TcpListener::bind(("0.0.0.0", port)).await?;
    let mut driver = Driver::new(host, node, trace, cfg);
    driver.listen(listener);
    driver.run_forever(observe).await;
    Ok(())
}
