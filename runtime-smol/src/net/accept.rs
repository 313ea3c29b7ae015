//! Accepting: connections numbered `ConnId::accepted(0)`, 1, and so on, a
//! budget of accepts per wakeup, and a pause after a failed accept.

use super::{Got, Net, ACCEPT_BUDGET, ACCEPT_RETRY, LISTENER, READ_BUDGET};
use crate::conn::{Conn, State};
use ferry_core::ConnId;
use mio::net::TcpListener;
use mio::{Interest, Token};
use std::io;
use std::time::Instant;

/// The node's listener, as the driver polls it.
pub(super) struct Listener {
    pub socket: TcpListener,
    /// Epoll said there are connections to accept, and no accept has
    /// failed with `WouldBlock` since.
    pub ready: bool,
    pub paused_until: Option<Instant>,
    /// The last accept failed (out of descriptors, say): said once, not at
    /// every retry.
    pub failing: bool,
    pub budget: usize,
    pub queued: bool,
}

impl Net {
    /// Accepts connections from `listener` from now on, instead of any
    /// listener given before.
    pub fn listen(&mut self, listener: std::net::TcpListener) {
        let registered = listener.set_nonblocking(true).and_then(|()| {
            let mut socket = TcpListener::from_std(listener);
            match &self.poll {
                Some(poll) => {
                    poll.registry()
                        .register(&mut socket, Token(LISTENER), Interest::READABLE)?
                }
                None => return Err(io::Error::other("no poll")),
            }
            Ok(socket)
        });
        match registered {
            Ok(socket) => {
                self.listener = Some(Listener {
                    socket,
                    ready: true,
                    paused_until: None,
                    failing: false,
                    budget: ACCEPT_BUDGET,
                    queued: false,
                });
                self.queue(LISTENER);
            }
            Err(e) => {
                if self.fatal.is_none() {
                    self.fatal = Some(format!("cannot poll the listener: {e}"));
                }
            }
        }
    }

    pub(super) fn service_listener(&mut self, now: Instant) -> Option<Got> {
        let l = self.listener.as_mut()?;
        l.queued = false;
        if !l.ready || l.paused_until.is_some() {
            return None;
        }
        if l.budget == 0 {
            l.budget = ACCEPT_BUDGET;
            self.carry.push(LISTENER);
            return None;
        }
        l.budget -= 1;
        let (mut stream, peer) = match l.socket.accept() {
            Ok(accepted) => accepted,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                l.ready = false;
                l.budget = ACCEPT_BUDGET;
                return None;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                l.queued = true;
                self.ready.push_front(LISTENER);
                return None;
            }
            Err(e) => {
                if l.failing {
                    tracing::debug!(node = %self.name, "accept failed again: {e}");
                } else {
                    tracing::warn!(
                        node = %self.name,
                        "accept failed: {e}; trying again every {ACCEPT_RETRY:?}"
                    );
                }
                l.failing = true;
                let at = now + ACCEPT_RETRY;
                l.paused_until = Some(at);
                self.timers.insert((at, LISTENER));
                return None;
            }
        };
        if l.failing {
            l.failing = false;
            tracing::info!(node = %self.name, "accepting connections again");
        }
        l.queued = true;
        self.ready.push_front(LISTENER);
        let token = self.next_token;
        self.next_token += 1;
        let poll = self.poll.as_ref()?;
        if let Err(e) = poll.registry().register(
            &mut stream,
            Token(token),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            tracing::warn!(node = %self.name, "cannot poll a connection from {peer}: {e}");
            return None;
        }
        // Control messages are small; do not let Nagle hold them back.
        let _ = stream.set_nodelay(true);
        let conn = ConnId::accepted(self.next_accept);
        self.next_accept += 1;
        let mut c = Conn::new(conn, Some(stream), State::Open);
        c.budget = READ_BUDGET;
        self.conns.insert(token, c);
        self.ids.insert(conn, token);
        tracing::debug!(node = %self.name, "{conn}: accepted from {peer}");
        Some(Got::Accepted {
            conn,
            peer: peer.to_string(),
        })
    }
}
