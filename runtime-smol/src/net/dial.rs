//! Dialing for the node: host names resolved off the driver's thread, a
//! non-blocking connect to each address in turn, all within
//! [`CONNECT_TIMEOUT`]; `Connected` or `ConnectFailed` once known.

use super::{Got, Net, READ_BUDGET};
use crate::conn::{Conn, State, CONNECT_TIMEOUT};
use ferry_core::ConnId;
use mio::net::TcpStream;
use mio::{Interest, Token};
use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Instant;

impl Net {
    /// Starts dialing `addr` for the node's connection `conn`.
    pub fn connect(&mut self, conn: ConnId, addr: String, now: Instant) {
        let token = self.next_token;
        self.next_token += 1;
        let mut c = Conn::new(conn, None, State::Resolving { addr: addr.clone() });
        c.deadline = Some(now + CONNECT_TIMEOUT);
        self.timers.insert((now + CONNECT_TIMEOUT, token));
        if let Some(old) = self.ids.insert(conn, token) {
            // The node reuses a name it still had: the old connection is
            // forgotten, as if closed.
            self.let_go(old);
        }
        self.conns.insert(token, c);
        match addr.parse::<SocketAddr>() {
            Ok(ip) => self.resolved(token, Ok(vec![ip])),
            Err(_) => self.resolve(token, addr),
        }
    }

    /// Resolves a host name on a thread of its own: a slow DNS server must
    /// not hold up the node.
    fn resolve(&mut self, token: usize, addr: String) {
        let tx = self.resolved_tx.clone();
        let waker = self.waker.clone();
        let spawned = std::thread::Builder::new()
            .name("ferry-resolve".into())
            .spawn(move || {
                let result = addr
                    .to_socket_addrs()
                    .map(|addrs| addrs.collect())
                    .map_err(|e| format!("{addr}: {e}"));
                if tx.send((token, result)).is_ok() {
                    if let Some(waker) = waker {
                        let _ = waker.wake();
                    }
                }
            });
        if let Err(e) = spawned {
            self.resolved(token, Err(format!("cannot resolve: {e}")));
        }
    }

    /// The addresses to dial for connection `token`: starts on the first.
    pub(super) fn resolved(&mut self, token: usize, result: Result<Vec<SocketAddr>, String>) {
        let Some(c) = self.conns.get_mut(&token) else {
            return;
        };
        let State::Resolving { addr } = &c.state else {
            return;
        };
        let (rest, last_error) = match result {
            Ok(addrs) if addrs.is_empty() => (VecDeque::new(), format!("{addr}: no address")),
            Ok(addrs) => (addrs.into(), String::new()),
            Err(e) => (VecDeque::new(), e),
        };
        c.state = State::Connecting {
            addr: addr.clone(),
            rest,
            last_error,
        };
        self.dial_next(token);
    }

    /// Starts a connect to the next address of a dialing connection; with
    /// none left, the connection is due to be reported failed.
    fn dial_next(&mut self, token: usize) {
        let Some(c) = self.conns.get_mut(&token) else {
            return;
        };
        let State::Connecting {
            addr,
            rest,
            last_error,
        } = &mut c.state
        else {
            return;
        };
        c.stream = None;
        while let Some(ip) = rest.pop_front() {
            let started = TcpStream::connect(ip).and_then(|mut stream| {
                match &self.poll {
                    Some(poll) => poll.registry().register(
                        &mut stream,
                        Token(token),
                        Interest::READABLE | Interest::WRITABLE,
                    )?,
                    None => return Err(io::Error::other("no poll")),
                }
                Ok(stream)
            });
            match started {
                Ok(stream) => {
                    c.stream = Some(stream);
                    return;
                }
                Err(e) => *last_error = format!("{addr}: {e}"),
            }
        }
        // Nothing left to try: reported when the connection is looked at.
        if !c.queued {
            c.queued = true;
            self.ready.push_back(token);
        }
    }

    pub(super) fn service_dial(&mut self, token: usize, now: Instant) -> Option<Got> {
        let c = self.conns.get_mut(&token)?;
        let timed_out = c.deadline.is_some_and(|at| at <= now);
        let (addr, last_error) = match &c.state {
            State::Resolving { addr } => (addr, ""),
            State::Connecting {
                addr, last_error, ..
            } => (addr, last_error.as_str()),
            _ => return None,
        };
        let connecting = matches!(c.state, State::Connecting { .. });
        if connecting && c.stream.is_none() {
            let reason = if last_error.is_empty() {
                format!("{addr}: cannot connect")
            } else {
                last_error.to_string()
            };
            return self.dial_failed(token, reason);
        }
        if timed_out {
            let reason = format!("{addr}: no connection after {}s", CONNECT_TIMEOUT.as_secs());
            return self.dial_failed(token, reason);
        }
        if !connecting || (!c.readable && !c.writable) {
            return None;
        }
        let stream = c.stream.as_ref()?;
        // How mio says to learn a non-blocking connect's outcome: an error,
        // or a peer address once connected.
        let outcome = match stream.take_error() {
            Ok(Some(e)) | Err(e) => Err(e),
            Ok(None) => match stream.peer_addr() {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
                Err(e) => Err(e),
            },
        };
        c.readable = false;
        c.writable = false;
        match outcome {
            // Not yet: wait for the next event.
            Ok(false) => None,
            Ok(true) => {
                let _ = stream.set_nodelay(true);
                let (live, conn) = (c.live, c.id);
                c.state = State::Open;
                // Connected, so writable; readable is worth a try too (an
                // edge that came with the connect's own is not repeated).
                c.writable = true;
                c.readable = true;
                c.budget = READ_BUDGET;
                self.set_deadline(token, None);
                if !live {
                    // Closed by the node while dialing: deliver, then close.
                    self.start_closing(token, now);
                }
                self.dirty.push(token);
                // Its bytes, if any, come after `Connected`.
                self.queue(token);
                if live {
                    tracing::debug!(node = %self.name, "{conn}: connected");
                    Some(Got::Connected(conn))
                } else {
                    None
                }
            }
            Err(e) => {
                if let State::Connecting {
                    addr, last_error, ..
                } = &mut c.state
                {
                    *last_error = format!("{addr}: {e}");
                }
                self.dial_next(token);
                let c = self.conns.get(&token)?;
                match &c.state {
                    State::Connecting { last_error, .. } if c.stream.is_none() => {
                        let reason = last_error.clone();
                        self.dial_failed(token, reason)
                    }
                    _ => None,
                }
            }
        }
    }

    fn dial_failed(&mut self, token: usize, reason: String) -> Option<Got> {
        let c = self.conns.get(&token)?;
        let (live, conn) = (c.live, c.id);
        self.drop_conn(token);
        if live {
            tracing::debug!(node = %self.name, "{conn}: connect failed: {reason}");
            Some(Got::ConnectFailed(conn, reason))
        } else {
            None
        }
    }
}
