//! One connection: its socket, what is still to be written to it, and the
//! readiness epoll last reported for it.
//!
//! Registrations are edge-triggered: epoll says once that a socket became
//! readable or writable, and says it again only after something changes.
//! So a connection remembers the readiness it was told of until a read or
//! a write shows it used up (`WouldBlock`, or a short transfer: see
//! [`Conn::read`] and [`OutQueue::write_to`]).

use ferry_core::ConnId;
use mio::net::TcpStream;
use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long dialing may take before it is reported as failed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes read from a socket at a time.
pub const READ_BUFFER: usize = 64 * 1024;

/// How long a closed connection waits for the peer to hang up before it is
/// torn down. Closing a socket with unread input makes the kernel reset the
/// connection, which can destroy the last bytes sent (a refusal, say) before
/// the peer reads them; so the connection is half-closed once flushed, input
/// is read and dropped, and the socket goes once the peer hangs up or this
/// time is up.
pub const LINGER: Duration = Duration::from_secs(2);

/// How long a connection the node closed may take to flush what was sent
/// on it. A peer that reads nothing for this long is not going to; without
/// a bound, every such connection would keep its socket and its queue for
/// good.
pub const CLOSE_FLUSH: Duration = Duration::from_secs(30);

/// Bytes not yet written to one connection, at most. The node's transfers
/// keep at most a window in flight (1 MiB by default, 256 MiB for the
/// largest window the command line allows), so only a peer that stopped
/// reading for good gets here; the connection is then broken off and the
/// node told `Closed`, as for any broken connection, rather than memory
/// growing without end. Nothing is ever dropped from a live connection
/// silently. (The unit tests use a small bound, to reach it.)
#[cfg(not(test))]
pub const MAX_QUEUED: usize = 320 << 20;
#[cfg(test)]
pub const MAX_QUEUED: usize = 1 << 20;

/// Frames handed to one `writev` at most (Linux allows 1024).
const MAX_IOV: usize = 64;

/// Where a connection is in its life.
#[derive(Debug)]
pub enum State {
    /// Waiting for the addresses of a host name, resolved on another thread.
    Resolving {
        addr: String,
    },
    /// A non-blocking connect in progress to one address; `rest` are tried
    /// in turn if it fails.
    Connecting {
        addr: String,
        rest: VecDeque<SocketAddr>,
        last_error: String,
    },
    Open,
    /// The node let go of the connection (or the peer hung up): flush
    /// (within [`CLOSE_FLUSH`]), then half-close (`shut`), then read and
    /// drop input until the peer hangs up or the linger ends.
    Closing {
        shut: bool,
    },
}

pub struct Conn {
    /// The node's name for it; meaningful only while `live`.
    pub id: ConnId,
    /// Whether the node still knows the connection: only then is it told
    /// anything about it.
    pub live: bool,
    pub stream: Option<TcpStream>,
    pub state: State,
    pub out: OutQueue,
    /// Epoll said readable, and no read has shown the socket drained since.
    pub readable: bool,
    /// The peer's FIN (or an error) was seen: read until the end, whatever
    /// the size of the reads.
    pub read_closed: bool,
    /// Epoll said writable, and no write has filled the socket since.
    pub writable: bool,
    /// A write failed: the connection is broken.
    pub broken: Option<io::Error>,
    /// The peer's end of stream was read.
    pub eof: bool,
    /// In the driver's list of connections to look at.
    pub queued: bool,
    /// Bytes this connection may still read before the others get a turn.
    pub budget: usize,
    /// Connect timeout or end of linger, whichever applies.
    pub deadline: Option<Instant>,
}

impl Conn {
    pub fn new(id: ConnId, stream: Option<TcpStream>, state: State) -> Conn {
        Conn {
            id,
            live: true,
            stream,
            state,
            out: OutQueue::default(),
            readable: false,
            read_closed: false,
            writable: false,
            broken: None,
            eof: false,
            queued: false,
            budget: 0,
            deadline: None,
        }
    }

    /// Whether bytes can go to the socket now: connected, not known to be
    /// full, with something to write.
    pub fn can_write(&self) -> bool {
        matches!(self.state, State::Open | State::Closing { shut: false })
            && self.writable
            && self.broken.is_none()
            && !self.out.is_empty()
    }

    /// Writes what is queued, as far as the socket takes it. A failure
    /// marks the connection broken.
    pub fn flush(&mut self) {
        if !self.can_write() {
            return;
        }
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        match self.out.write_to(stream) {
            Ok(Flushed::All) => {}
            Ok(Flushed::Blocked) => self.writable = false,
            Err(e) => self.broken = Some(e),
        }
    }

    /// One read into `buf`. `Ok(None)`: nothing to read now. `Ok(Some(0))`:
    /// end of stream.
    ///
    /// A read that fills less than `buf` means the socket was drained
    /// (Linux reports new data with a new edge), so readiness is dropped
    /// without the extra read that would only fail with `WouldBlock`;
    /// unless the peer's FIN was already reported, which comes with no
    /// further edge.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let Some(stream) = self.stream.as_mut() else {
            self.readable = false;
            return Ok(None);
        };
        loop {
            match stream.read(buf) {
                Ok(n) => {
                    if n == 0 {
                        self.eof = true;
                        self.readable = false;
                    } else if n < buf.len() && !self.read_closed {
                        self.readable = false;
                    }
                    self.budget = self.budget.saturating_sub(n.max(1));
                    return Ok(Some(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.readable = false;
                    return Ok(None);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.readable = false;
                    return Err(e);
                }
            }
        }
    }
}

/// How far a flush got.
#[derive(Debug, PartialEq, Eq)]
pub enum Flushed {
    All,
    /// The socket took less than offered: its buffer is full, and epoll
    /// reports writable again once there is room.
    Blocked,
}

/// Frames waiting for the socket, in order, written with `writev` so that
/// a drain that queued many frames costs one system call, not one each.
#[derive(Debug, Default)]
pub struct OutQueue {
    frames: VecDeque<Vec<u8>>,
    /// Bytes of the first frame already written.
    head: usize,
    /// Bytes queued and not yet written.
    len: usize,
}

impl OutQueue {
    pub fn push(&mut self, bytes: Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        self.len += bytes.len();
        self.frames.push_back(bytes);
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Writes as much as `w` takes. A short write is taken as a full
    /// socket buffer (as it is for a non-blocking TCP socket), so the next
    /// attempt waits for epoll to say writable instead of failing with
    /// `WouldBlock` first.
    pub fn write_to(&mut self, w: &mut impl Write) -> io::Result<Flushed> {
        while !self.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IOV];
            let mut count = 0;
            let mut offered = 0;
            for (i, frame) in self.frames.iter().take(MAX_IOV).enumerate() {
                let bytes = if i == 0 { &frame[self.head..] } else { frame };
                slices[i] = IoSlice::new(bytes);
                offered += bytes.len();
                count += 1;
            }
            match w.write_vectored(&slices[..count]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.consume(n);
                    if n < offered {
                        return Ok(Flushed::Blocked);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flushed::Blocked),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Flushed::All)
    }

    fn consume(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            let Some(front) = self.frames.front() else {
                return;
            };
            let left = front.len() - self.head;
            if n < left {
                self.head += n;
                return;
            }
            n -= left;
            self.head = 0;
            self.frames.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes at most `room` bytes per call, then would block once.
    struct Pipe {
        got: Vec<u8>,
        room: usize,
        calls: usize,
    }

    impl Write for Pipe {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }

        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.calls += 1;
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut took = 0;
            for b in bufs {
                let n = b.len().min(self.room - took);
                self.got.extend_from_slice(&b[..n]);
                took += n;
            }
            self.room -= took;
            Ok(took)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn queued_frames_go_out_in_order_across_short_writes() {
        let mut q = OutQueue::default();
        let frames: Vec<Vec<u8>> = (0..200u32)
            .map(|i| vec![i as u8; 1 + (i as usize % 7)])
            .collect();
        let want: Vec<u8> = frames.concat();
        for f in &frames {
            q.push(f.clone());
        }
        q.push(Vec::new());
        assert_eq!(q.len(), want.len());
        let mut pipe = Pipe {
            got: Vec::new(),
            room: 0,
            calls: 0,
        };
        // A full socket: nothing moves, and the queue says so.
        assert_eq!(q.write_to(&mut pipe).unwrap(), Flushed::Blocked);
        let mut rounds = 0;
        loop {
            pipe.room = 13;
            rounds += 1;
            if q.write_to(&mut pipe).unwrap() == Flushed::All {
                break;
            }
        }
        assert_eq!(pipe.got, want);
        assert!(q.is_empty());
        assert_eq!(rounds, want.len().div_ceil(13));
    }

    #[test]
    fn many_frames_take_one_call_per_batch_of_iovecs() {
        let mut q = OutQueue::default();
        for i in 0..(3 * MAX_IOV) {
            q.push(vec![i as u8; 10]);
        }
        let mut pipe = Pipe {
            got: Vec::new(),
            room: usize::MAX / 2,
            calls: 0,
        };
        assert_eq!(q.write_to(&mut pipe).unwrap(), Flushed::All);
        assert_eq!(pipe.calls, 3);
        assert_eq!(pipe.got.len(), 30 * MAX_IOV);
    }
}
