//! The poll: smol's `polling::Poller` (epoll on Linux), with every source
//! registered once, edge-triggered, and taken out of the poll before its
//! descriptor is closed.
//!
//! **What a wait costs.** `Poller::wait` is more than an `epoll_wait`: on
//! Linux (polling 3.11) it also sets the poller's own timerfd (disarming
//! it when no timeout is given) and re-arms it (`timerfd_settime`,
//! `epoll_ctl`), and after the wait reads its notification eventfd and
//! re-arms that, which is oneshot (`read`, failing with `EAGAIN` unless
//! notified, and `epoll_ctl`): five system calls per wait where a bare
//! `epoll_wait` is one. Sources themselves are not re-armed: registered
//! with [`PollMode::Edge`], they stay registered for good.
//!
//! **No `EPOLLRDHUP`.** polling registers a readable source for
//! `EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLPRI` and offers no way to ask for
//! `EPOLLRDHUP`, so an event does not say that the peer's FIN came with
//! the bytes it announces; see `Conn::read` for what that costs.

use polling::{Event, Events, PollMode, Poller};
use std::io;
use std::num::NonZeroUsize;
use std::ops::Deref;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What one event says about one source.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ready {
    pub key: usize,
    /// Readable, or hung up, or failed: a read will not block.
    pub readable: bool,
    /// Writable, or hung up, or failed: a write will not block.
    pub writable: bool,
}

pub(super) struct Poll {
    poller: Arc<Poller>,
    events: Events,
    waker: Arc<Waker>,
}

/// Wakes the poll's wait from another thread.
///
/// polling's notification leaves no event behind (`Events` hides it), so
/// a wait that takes it in looks like one that found nothing. A wait that
/// does not sleep (the busy-poll's) would then go on to a wait that does,
/// and sleep through the wake-up. So a wake-up is also a flag, which the
/// poll reads after every wait.
pub(crate) struct Waker {
    poller: Arc<Poller>,
    woken: AtomicBool,
}

impl Waker {
    pub fn wake(&self) -> io::Result<()> {
        // Set before the notification, so a wait that takes the
        // notification in finds the flag set.
        self.woken.store(true, Ordering::SeqCst);
        self.poller.notify()
    }
}

/// What a source is polled for.
#[derive(Debug, Clone, Copy)]
pub(super) enum Interest {
    Read,
    ReadWrite,
}

impl Poll {
    pub fn new() -> io::Result<Poll> {
        let capacity = NonZeroUsize::new(256).unwrap_or(NonZeroUsize::MIN);
        let poller = Arc::new(Poller::new()?);
        Ok(Poll {
            waker: Arc::new(Waker {
                poller: Arc::clone(&poller),
                woken: AtomicBool::new(false),
            }),
            poller,
            events: Events::with_capacity(capacity),
        })
    }

    /// Wakes a wait of this poll from any thread (or the next one, if none
    /// is under way).
    pub fn waker(&self) -> Arc<Waker> {
        Arc::clone(&self.waker)
    }

    /// Polls `socket` under `key` from now on, edge-triggered.
    pub fn register<S: AsFd + AsRawFd>(
        &self,
        socket: S,
        key: usize,
        interest: Interest,
    ) -> io::Result<Source<S>> {
        let event = match interest {
            Interest::Read => Event::readable(key),
            Interest::ReadWrite => Event::all(key),
        };
        // SAFETY: polling asks that a source be deleted from the poller
        // before its descriptor is closed (so that the poller never holds a
        // number the process may give to another file). The socket is moved
        // into the `Source` returned, which owns it from now on and whose
        // `drop` deletes it from this poller (kept alive by the `Arc` it
        // holds) before the socket's own drop closes it. If `add` fails,
        // nothing was registered.
        unsafe { self.poller.add_with_mode(&socket, event, PollMode::Edge)? };
        Ok(Source {
            socket,
            poller: Arc::clone(&self.poller),
        })
    }

    /// Waits for events, at most `timeout` (`None`: until one comes). True
    /// if it brought an event or the poll was woken (since the last wait).
    /// An interrupted wait is retried by polling itself.
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<bool> {
        // polling adds to the list, it does not replace it.
        self.events.clear();
        self.poller.wait(&mut self.events, timeout)?;
        let woken = self.waker.woken.swap(false, Ordering::SeqCst);
        Ok(woken || !self.events.is_empty())
    }

    /// The events of the last wait.
    pub fn events(&self) -> impl Iterator<Item = Ready> + '_ {
        self.events.iter().map(|event| Ready {
            key: event.key,
            readable: event.readable,
            writable: event.writable,
        })
    }
}

/// A socket (or any descriptor) in the poll: deleted from it when dropped,
/// before the descriptor is closed.
pub(crate) struct Source<S: AsFd> {
    socket: S,
    poller: Arc<Poller>,
}

impl<S: AsFd> Deref for Source<S> {
    type Target = S;

    fn deref(&self) -> &S {
        &self.socket
    }
}

impl<S: AsFd> Drop for Source<S> {
    fn drop(&mut self) {
        // Runs before the fields are dropped, so while `socket` is open.
        // It can only fail if the descriptor was never added, which a
        // `Source` rules out.
        if let Err(e) = self.poller.delete(&self.socket) {
            tracing::debug!("cannot take a socket out of the poll: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wake_up_taken_in_by_a_wait_that_does_not_sleep_is_reported_by_it() {
        let mut poll = Poll::new().unwrap();
        assert!(!poll.wait(Some(Duration::ZERO)).unwrap(), "nothing yet");
        poll.waker().wake().unwrap();
        // The busy-poll's wait: had it said nothing, the next wait would
        // sleep with the notification already taken.
        assert!(poll.wait(Some(Duration::ZERO)).unwrap());
        assert!(!poll.wait(Some(Duration::ZERO)).unwrap(), "said once");
    }

    #[test]
    fn a_wake_up_from_another_thread_ends_a_sleeping_wait() {
        let mut poll = Poll::new().unwrap();
        let waker = poll.waker();
        let woke = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            waker.wake().unwrap();
        });
        assert!(poll.wait(Some(Duration::from_secs(10))).unwrap());
        woke.join().unwrap();
    }
}
