//! The sockets of one driver, polled with mio on the driver's own thread.
//!
//! One `epoll_wait` per wakeup, with the earliest deadline (the node's or
//! the driver's own: connect timeouts, lingers, an accept pause) as its
//! timeout. Every socket is registered once, edge-triggered, for reading
//! and writing; readiness is remembered per connection (see `conn`) and
//! used up by reads and writes, so a message costs a read or a write and
//! no system call to re-arm anything.
//!
//! **Inputs.** Sockets with something to report wait in a list; the
//! driver takes one [`Input`] at a time from it ([`Net::next_input`]) and
//! drains the node after each. A connection reads at most [`READ_BUDGET`]
//! bytes per wakeup: then it waits for the others to have had their turn,
//! so a peer that floods cannot starve the rest. A connection's inputs come
//! in order: `Accepted` or `Connected` first, then bytes, then `Closed`,
//! and none once the node has closed it.
//!
//! **Outputs.** Bytes to send are queued on their connection and written
//! when the driver flushes, after each round of draining: all the frames of
//! a drain go out in one `writev`. Only what the socket does not take stays
//! queued, until epoll says the socket is writable again.
//!
//! Accepting is in `accept`, dialing in `dial`.

use crate::conn::{Conn, State, CLOSE_FLUSH, LINGER, MAX_QUEUED, READ_BUFFER};
use accept::Listener;
use ferry_core::io::Identity;
use ferry_core::{ConnId, Input};

use mio::{Events, Poll, Token, Waker};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes one connection may read per wakeup before the others' turn.
pub const READ_BUDGET: usize = 4 * READ_BUFFER;

/// Connections accepted per wakeup before the others' turn.
const ACCEPT_BUDGET: usize = 32;

/// Pause after a failed accept (for example, out of file descriptors), so a
/// persistent error does not spin.
pub const ACCEPT_RETRY: Duration = Duration::from_millis(100);

mod accept;
mod dial;
mod spin;
#[cfg(test)]
mod tests;
mod timer;

const LISTENER: usize = 0;
const WAKER: usize = 1;
const TIMER: usize = 2;
const FIRST_CONN: usize = 3;

/// Stops a running driver from another thread: its `run_until` returns
/// [`DriverError::Stopped`](crate::DriverError::Stopped) soon after.
#[derive(Clone)]
pub struct Stopper {
    flag: Arc<AtomicBool>,
    waker: Option<Arc<Waker>>,
}

impl Stopper {
    pub fn stop(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.wake();
    }

    /// Wakes the driver without stopping it: it looks at what it has to
    /// do (a write that failed on the file writer thread, say).
    pub(crate) fn wake(&self) {
        if let Some(waker) = &self.waker {
            if let Err(e) = waker.wake() {
                tracing::warn!("cannot wake the driver: {e}");
            }
        }
    }
}

/// What the sockets have to tell the node; bytes stay in the read buffer.
enum Got {
    Accepted { conn: ConnId, peer: String },
    Connected(ConnId),
    ConnectFailed(ConnId, String),
    Received(ConnId, usize),
    Closed(ConnId),
}

/// Addresses of a host name, from a resolver thread.
type Resolved = (usize, Result<Vec<SocketAddr>, String>);

pub struct Net {
    name: String,
    /// `None` only if the poll could not be made; `fatal` says why.
    poll: Option<Poll>,
    events: Events,
    waker: Option<Arc<Waker>>,
    /// `None` if it could not be made: the poll's timeout serves instead.
    timer: Option<timer::Timer>,
    stop: Arc<AtomicBool>,
    /// A failure of the poll itself: the driver stops with it.
    pub fatal: Option<String>,
    listener: Option<Listener>,
    next_accept: u64,
    conns: HashMap<usize, Conn>,
    /// Connections the node knows, by its name for them.
    ids: HashMap<ConnId, usize>,
    /// Never reused, so a late event cannot reach a newer connection.
    next_token: usize,
    /// Sockets to look at this round, in order.
    ready: VecDeque<usize>,
    /// Sockets that used up their budget: looked at again after the next
    /// poll (which then does not wait). Not `queued` meanwhile, so an
    /// event for one puts it on `ready` at its turn, once.
    carry: Vec<usize>,
    /// Connections with bytes queued since the last flush.
    dirty: Vec<usize>,
    /// The driver's own deadlines, by socket.
    timers: BTreeSet<(Instant, usize)>,
    resolved_tx: mpsc::Sender<Resolved>,
    resolved_rx: mpsc::Receiver<Resolved>,
    buf: Vec<u8>,
    spin: spin::Spin,
}

/// Polls `poll` without sleeping, yielding the processor between polls,
/// until it has events or `budget` from `started` is spent. True if it has.
fn spin(
    poll: &mut Poll,
    events: &mut Events,
    started: Instant,
    budget: Duration,
) -> io::Result<bool> {
    if budget.is_zero() {
        return Ok(false);
    }
    loop {
        match poll.poll(events, Some(Duration::ZERO)) {
            Ok(()) if !events.is_empty() => return Ok(true),
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        if started.elapsed() >= budget {
            return Ok(false);
        }
        std::thread::yield_now();
    }
}

impl Net {
    pub fn new(name: &str) -> Net {
        let (resolved_tx, resolved_rx) = mpsc::channel();
        let mut fatal = None;
        let (poll, waker) = match Poll::new().and_then(|poll| {
            let waker = Waker::new(poll.registry(), Token(WAKER))?;
            Ok((poll, waker))
        }) {
            Ok((poll, waker)) => (Some(poll), Some(Arc::new(waker))),
            Err(e) => {
                fatal = Some(format!("cannot poll sockets: {e}"));
                (None, None)
            }
        };
        let timer =
            poll.as_ref()
                .and_then(|p| match timer::Timer::new(p.registry(), Token(TIMER)) {
                    Ok(timer) => Some(timer),
                    Err(e) => {
                        tracing::warn!("no timerfd ({e}); the poll times out instead");
                        None
                    }
                });
        Net {
            name: name.to_string(),
            poll,
            events: Events::with_capacity(256),
            waker,
            timer,
            stop: Arc::new(AtomicBool::new(false)),
            fatal,
            listener: None,
            next_accept: 0,
            conns: HashMap::new(),
            ids: HashMap::new(),
            next_token: FIRST_CONN,
            ready: VecDeque::new(),
            carry: Vec::new(),
            dirty: Vec::new(),
            timers: BTreeSet::new(),
            resolved_tx,
            resolved_rx,
            buf: vec![0; READ_BUFFER],
            spin: spin::Spin::from_env(),
        }
    }

    pub fn rename(&mut self, name: &str) {
        self.name = name.to_string();
    }

    pub fn stopper(&self) -> Stopper {
        Stopper {
            flag: Arc::clone(&self.stop),
            waker: self.waker.clone(),
        }
    }

    /// Whether a stop was asked for (once per request).
    pub fn take_stop(&self) -> bool {
        self.stop.swap(false, Ordering::SeqCst)
    }

    /// Queues bytes for a connection the node knows; they are written at
    /// the next [`Net::flush`].
    pub fn transmit(&mut self, conn: ConnId, bytes: Vec<u8>) {
        let Some(&token) = self.ids.get(&conn) else {
            tracing::debug!(node = %self.name, "{conn}: transmit on unknown connection dropped");
            return;
        };
        let Some(c) = self.conns.get_mut(&token) else {
            return;
        };
        if c.broken.is_some() {
            return; // Its `Closed` is on its way to the node.
        }
        if c.out.len() + bytes.len() > MAX_QUEUED {
            tracing::warn!(node = %self.name, "{conn}: the peer left {} bytes unread; giving up on it", c.out.len());
            c.broken = Some(io::Error::other("the peer stopped reading"));
            self.queue(token);
            return;
        }
        // After a flush a queue is empty or waits for the socket, so a
        // first frame is the one to put the connection on the list.
        let first = c.out.is_empty();
        c.out.push(bytes);
        if first && c.can_write() {
            self.dirty.push(token);
        }
    }

    /// Writes what the node queued since the last flush.
    pub fn flush(&mut self) {
        for token in std::mem::take(&mut self.dirty) {
            let Some(c) = self.conns.get_mut(&token) else {
                continue;
            };
            c.flush();
            if c.broken.is_some() || (matches!(c.state, State::Closing { .. }) && c.out.is_empty())
            {
                self.queue(token);
            }
        }
    }

    /// The node closed `conn`: it hears no more of it. What it sent is
    /// still flushed, then the connection is half-closed and lingers.
    pub fn close(&mut self, conn: ConnId) {
        if let Some(token) = self.ids.remove(&conn) {
            self.let_go(token);
        }
    }

    fn let_go(&mut self, token: usize) {
        let Some(c) = self.conns.get_mut(&token) else {
            return;
        };
        c.live = false;
        match c.state {
            State::Open => self.start_closing(token, Instant::now()),
            State::Closing { .. } => {}
            // Dialing goes on, so that what the node sent meanwhile is
            // delivered; failure is then reported to no one.
            State::Resolving { .. } | State::Connecting { .. } => {}
        }
        self.queue(token);
    }

    /// Flush, half-close, linger: see [`State::Closing`].
    fn start_closing(&mut self, token: usize, now: Instant) {
        if let Some(c) = self.conns.get_mut(&token) {
            c.state = State::Closing { shut: false };
            self.set_deadline(token, Some(now + CLOSE_FLUSH));
        }
    }

    /// Closes every connection as the node would, and stops accepting.
    pub fn close_all(&mut self) {
        self.listener = None;
        let ids: Vec<ConnId> = self.ids.keys().copied().collect();
        for id in ids {
            self.close(id);
        }
    }

    /// Whether no connection is left (all flushed and shut).
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Whether sockets still have input this round: the next wait must not
    /// block.
    pub fn busy(&self) -> bool {
        !self.carry.is_empty() || !self.ready.is_empty()
    }

    /// The earliest of the driver's own deadlines.
    fn next_deadline(&self) -> Option<Instant> {
        self.timers.first().map(|(at, _)| *at)
    }

    fn queue(&mut self, token: usize) {
        let queued = if token == LISTENER {
            self.listener.as_mut().map(|l| &mut l.queued)
        } else {
            self.conns.get_mut(&token).map(|c| &mut c.queued)
        };
        if let Some(queued) = queued {
            if !*queued {
                *queued = true;
                self.ready.push_back(token);
            }
        }
    }

    fn set_deadline(&mut self, token: usize, at: Option<Instant>) {
        let Some(c) = self.conns.get_mut(&token) else {
            return;
        };
        if let Some(old) = std::mem::replace(&mut c.deadline, at) {
            self.timers.remove(&(old, token));
        }
        if let Some(at) = at {
            self.timers.insert((at, token));
        }
    }

    fn drop_conn(&mut self, token: usize) {
        if let Some(c) = self.conns.remove(&token) {
            if let Some(at) = c.deadline {
                self.timers.remove(&(at, token));
            }
            if c.live && self.ids.get(&c.id) == Some(&token) {
                self.ids.remove(&c.id);
            }
        }
    }

    /// Waits for socket events, until `until` (the node's deadline) or the
    /// driver's own next deadline at the latest, and lists the sockets to
    /// look at. It may end later than asked (never earlier: see `timer`;
    /// `now` may be a little old, which only makes the wait longer), or
    /// early on an event.
    pub fn wait(&mut self, until: Option<Instant>, now: Instant) -> io::Result<()> {
        let until = match (until, self.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let busy = self.busy();
        let timeout = match (until, self.timer.as_mut()) {
            _ if busy => Some(Duration::ZERO),
            (None, _) => None,
            (Some(at), timer) => {
                match timer.map(|t| t.arm_by(at, now)) {
                    Some(Ok(())) => None,
                    // Without a timer, the poll's own timeout, which mio
                    // rounds up to whole milliseconds.
                    Some(Err(_)) | None => Some(at.saturating_duration_since(now)),
                }
            }
        };
        let Some(poll) = self.poll.as_mut() else {
            return Err(io::Error::other("no poll"));
        };
        let started = Instant::now();
        let spin_for = if busy {
            Duration::ZERO
        } else {
            self.spin
                .allowance(until.map(|at| at.saturating_duration_since(now)))
        };
        if !spin(poll, &mut self.events, started, spin_for)? {
            match poll.poll(&mut self.events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.spin.waited(started.elapsed());
        let mut woken = false;
        for event in self.events.iter() {
            let token = event.token().0;
            let queued = match token {
                WAKER => {
                    woken = true;
                    continue;
                }
                TIMER => {
                    if let Some(timer) = self.timer.as_mut() {
                        timer.fired();
                    }
                    continue;
                }
                LISTENER => match self.listener.as_mut() {
                    Some(l) => {
                        l.ready = true;
                        &mut l.queued
                    }
                    None => continue,
                },
                _ => {
                    let Some(c) = self.conns.get_mut(&token) else {
                        continue;
                    };
                    // A fresh budget for each wakeup it has news in.
                    c.budget = READ_BUDGET;
                    let closed = event.is_read_closed() || event.is_error();
                    c.readable |= event.is_readable() || closed;
                    c.read_closed |= closed;
                    c.writable |=
                        event.is_writable() || event.is_write_closed() || event.is_error();
                    &mut c.queued
                }
            };
            if !*queued {
                *queued = true;
                self.ready.push_back(token);
            }
        }
        if woken {
            while let Ok((token, result)) = self.resolved_rx.try_recv() {
                self.resolved(token, result);
            }
        }
        for token in std::mem::take(&mut self.carry) {
            self.queue(token);
        }
        Ok(())
    }

    /// The next thing to tell the node, if any socket has one now. Sockets
    /// whose deadline passed are looked at too.
    pub fn next_input(&mut self, now: Instant) -> Option<Input<'_>> {
        while let Some(&(at, token)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            if token == LISTENER {
                if let Some(l) = self.listener.as_mut() {
                    l.paused_until = None;
                }
            }
            self.queue(token);
        }
        let got = loop {
            let token = self.ready.pop_front()?;
            let got = if token == LISTENER {
                self.service_listener(now)
            } else {
                self.service(token, now)
            };
            if let Some(got) = got {
                break got;
            }
        };
        Some(match got {
            // Nothing is proven by a socket: the host's TLS, which takes
            // these, says who the other end is.
            Got::Accepted { conn, peer } => Input::Accepted {
                conn,
                peer,
                identity: Identity::Anonymous,
            },
            Got::Connected(conn) => Input::Connected {
                conn,
                identity: Identity::Anonymous,
            },
            Got::ConnectFailed(conn, reason) => Input::ConnectFailed { conn, reason },
            Got::Received(conn, n) => Input::Received {
                conn,
                bytes: &self.buf[..n],
            },
            Got::Closed(conn) => Input::Closed { conn },
        })
    }

    /// Does the next thing connection `token` has to do; returns what the
    /// node is to be told of it, if anything.
    fn service(&mut self, token: usize, now: Instant) -> Option<Got> {
        let c = self.conns.get_mut(&token)?;
        c.queued = false;
        match c.state {
            State::Resolving { .. } | State::Connecting { .. } => self.service_dial(token, now),
            State::Open => self.service_open(token),
            State::Closing { .. } => {
                self.service_closing(token, now);
                None
            }
        }
    }

    fn service_open(&mut self, token: usize) -> Option<Got> {
        let c = self.conns.get_mut(&token)?;
        if c.can_write() {
            c.flush();
        }
        if let Some(e) = c.broken.take() {
            let conn = c.id;
            tracing::debug!(node = %self.name, "{conn}: broken: {e}");
            self.drop_conn(token);
            return Some(Got::Closed(conn));
        }
        if !c.readable {
            return None;
        }
        if c.budget == 0 {
            c.budget = READ_BUDGET;
            self.carry.push(token);
            return None;
        }
        let conn = c.id;
        match c.read(&mut self.buf) {
            Ok(None) => None,
            Ok(Some(0)) => {
                tracing::debug!(node = %self.name, "{conn}: closed by peer");
                // The node forgets it; what it queued is still flushed.
                self.ids.remove(&conn);
                c.live = false;
                self.start_closing(token, Instant::now());
                self.queue(token);
                Some(Got::Closed(conn))
            }
            Ok(Some(n)) => {
                if c.readable {
                    if c.budget == 0 {
                        c.budget = READ_BUDGET;
                        self.carry.push(token);
                    } else {
                        c.queued = true;
                        self.ready.push_front(token);
                    }
                }
                Some(Got::Received(conn, n))
            }
            Err(e) => {
                tracing::debug!(node = %self.name, "{conn}: read failed: {e}");
                self.drop_conn(token);
                Some(Got::Closed(conn))
            }
        }
    }

    /// A connection the node let go of: flush, half-close, then read and
    /// drop input until the peer hangs up or the linger ends.
    fn service_closing(&mut self, token: usize, now: Instant) {
        let Some(c) = self.conns.get_mut(&token) else {
            return;
        };
        if c.can_write() {
            c.flush();
        }
        let lingered = c.deadline.is_some_and(|at| at <= now);
        if c.broken.is_some() || lingered {
            self.drop_conn(token);
            return;
        }
        if let State::Closing { shut: false } = c.state {
            if !c.out.is_empty() {
                return; // Flushed when the socket has room.
            }
            if c.eof {
                self.drop_conn(token);
                return;
            }
            let shut = c
                .stream
                .as_ref()
                .map(|s| s.shutdown(Shutdown::Write).is_ok());
            if shut != Some(true) {
                self.drop_conn(token);
                return;
            }
            c.state = State::Closing { shut: true };
            self.set_deadline(token, Some(now + LINGER));
        }
        let Some(c) = self.conns.get_mut(&token) else {
            return;
        };
        while c.readable {
            if c.budget == 0 {
                c.budget = READ_BUDGET;
                self.carry.push(token);
                return;
            }
            match c.read(&mut self.buf) {
                Ok(None) => {}
                Ok(Some(0)) | Err(_) => {
                    self.drop_conn(token);
                    return;
                }
                Ok(Some(_)) => {}
            }
        }
    }
}
