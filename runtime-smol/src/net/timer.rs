//! The driver's timer: a timerfd in the poll, re-armed only when a deadline
//! comes before the one it is armed for.
//!
//! An `epoll_wait` with a timeout arms a kernel timer for every wait, and
//! on a virtual machine programming the timer hardware is costly (it traps
//! to the hypervisor): about 2 µs per wait on the development VM, a tenth
//! of a stop-and-wait round trip. A node's deadline moves with nearly
//! every message (a transfer's resend timer is pushed back by every ACK),
//! but almost always later. So the timerfd stays armed for the earliest
//! deadline asked for while later ones come and go, and the poll waits
//! without a timeout: the timer fires about once per resend interval, the
//! driver finds the node's deadline not yet due, and arms again. A timer
//! that fires before a deadline only makes the driver loop; it never makes
//! a timeout fire early.

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd};
use std::time::{Duration, Instant};

pub(super) struct Timer {
    fd: File,
    /// When the timer fires, if it is armed.
    armed: Option<Instant>,
}

impl Timer {
    pub fn new(registry: &Registry, token: Token) -> io::Result<Timer> {
        // SAFETY: timerfd_create takes no pointers; a descriptor it returns
        // is ours alone.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor owned by nobody else.
        let fd = unsafe { File::from_raw_fd(fd) };
        registry.register(&mut SourceFd(&fd.as_raw_fd()), token, Interest::READABLE)?;
        Ok(Timer { fd, armed: None })
    }

    /// Makes sure the timer fires at `at` or before (it may already be
    /// armed for earlier).
    pub fn arm_by(&mut self, at: Instant, now: Instant) -> io::Result<()> {
        if self.armed.is_some_and(|armed| armed <= at) {
            return Ok(());
        }
        // A zero time would disarm the timer instead.
        let after = at
            .saturating_duration_since(now)
            .max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: after.as_secs().try_into().unwrap_or(libc::time_t::MAX),
                tv_nsec: after.subsec_nanos().into(),
            },
        };
        // SAFETY: `spec` is a valid itimerspec for the call's duration; the
        // old value is not asked for.
        let set =
            unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if set < 0 {
            return Err(io::Error::last_os_error());
        }
        self.armed = Some(now + after);
        Ok(())
    }

    /// The timer fired: it is disarmed.
    pub fn fired(&mut self) {
        self.armed = None;
        // Clears the expiry count; with nothing to read it says WouldBlock,
        // which is as good.
        let mut count = [0u8; 8];
        let _ = (&self.fd).read(&mut count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll};

    /// Waits for the timer's event; returns how long it took.
    fn wait_for_fire(poll: &mut Poll, timer: &mut Timer, since: Instant) -> Duration {
        let mut events = Events::with_capacity(4);
        loop {
            poll.poll(&mut events, Some(Duration::from_secs(5)))
                .unwrap();
            assert!(!events.is_empty(), "the timer did not fire within 5 s");
            if events.iter().any(|e| e.token() == Token(7)) {
                timer.fired();
                return since.elapsed();
            }
        }
    }

    #[test]
    fn an_earlier_deadline_rearms_and_a_later_one_does_not() {
        let mut poll = Poll::new().unwrap();
        let mut timer = Timer::new(poll.registry(), Token(7)).unwrap();
        let start = Instant::now();
        timer
            .arm_by(start + Duration::from_secs(60), start)
            .unwrap();
        timer
            .arm_by(start + Duration::from_millis(30), start)
            .unwrap();
        let took = wait_for_fire(&mut poll, &mut timer, start);
        assert!(took >= Duration::from_millis(30), "{took:?}");

        // Armed for 30 ms: a later deadline leaves it so (the driver loops
        // when it fires and arms again).
        let start = Instant::now();
        timer
            .arm_by(start + Duration::from_millis(30), start)
            .unwrap();
        timer
            .arm_by(start + Duration::from_secs(60), start)
            .unwrap();
        let took = wait_for_fire(&mut poll, &mut timer, start);
        assert!(took >= Duration::from_millis(30) && took < Duration::from_secs(5));
    }
}
