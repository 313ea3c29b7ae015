//! The driver against real loopback sockets, with tiny test nodes.

use ferry_core::{ConnId, Input, Node, Output, Timestamp};
use ferry_runtime_smol::{Driver, DriverError, Group, CONNECT_TIMEOUT, READ_BUDGET, READ_BUFFER};
use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::ops::ControlFlow;
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Accepted(ConnId),
    Connected(ConnId),
    ConnectFailed(String),
    Received(Vec<u8>),
    /// With `count_only`: how many bytes arrived, and on which connection.
    Got(ConnId, usize),
    Closed(ConnId),
    /// Input about a connection the node had closed: the driver must never
    /// let one through.
    Stale(ConnId),
    Fired(Timestamp),
}

impl fmt::Display for Ev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

/// Echoes what it receives; optionally answers each accept with a greeting
/// in pieces followed by a close; optionally dials one address at start;
/// optionally fires a timer once.
#[derive(Default)]
struct TestNode {
    greeting: Option<Vec<Vec<u8>>>,
    echo: bool,
    /// Report received bytes as `Got` (no copy), taking `slow` for each.
    count_only: bool,
    slow: Option<Duration>,
    /// Panic when the timer fires.
    panic_on_timer: bool,
    deadline: Option<Timestamp>,
    closed: BTreeSet<ConnId>,
    out: VecDeque<Output<Ev>>,
}

impl TestNode {
    fn dial(&mut self, addr: String) {
        self.out.push_back(Output::Connect {
            conn: ConnId::dialed(0),
            addr,
        });
    }

    fn stale(&mut self, conn: ConnId) -> bool {
        if self.closed.contains(&conn) {
            self.out.push_back(Output::Event(Ev::Stale(conn)));
            return true;
        }
        false
    }
}

impl Node for TestNode {
    type Event = Ev;

    fn handle_input(&mut self, _now: Timestamp, input: Input<'_>) {
        match input {
            Input::Accepted { conn, .. } => {
                self.out.push_back(Output::Event(Ev::Accepted(conn)));
                if let Some(pieces) = &self.greeting {
                    for bytes in pieces.clone() {
                        self.out.push_back(Output::Transmit { conn, bytes });
                    }
                    self.out.push_back(Output::Close { conn });
                    self.closed.insert(conn);
                }
            }
            Input::Connected { conn, .. } => {
                self.out.push_back(Output::Event(Ev::Connected(conn)));
            }
            Input::ConnectFailed { reason, .. } => {
                self.out.push_back(Output::Event(Ev::ConnectFailed(reason)));
            }
            Input::Received { conn, bytes } => {
                if self.stale(conn) {
                    return;
                }
                if self.count_only {
                    if let Some(slow) = self.slow {
                        // A node that takes a while per input: the socket
                        // then always has more than the driver has read.
                        std::thread::sleep(slow);
                    }
                    self.out
                        .push_back(Output::Event(Ev::Got(conn, bytes.len())));
                    return;
                }
                if self.echo {
                    let bytes = bytes.to_vec();
                    self.out.push_back(Output::Transmit { conn, bytes });
                }
                self.out
                    .push_back(Output::Event(Ev::Received(bytes.to_vec())));
            }
            Input::Closed { conn } => {
                if !self.stale(conn) {
                    self.out.push_back(Output::Event(Ev::Closed(conn)));
                }
            }
            // This node never persists nor touches files (tests/persist.rs
            // and tests/files.rs cover those).
            Input::Persisted { .. }
            | Input::FileRead { .. }
            | Input::FilePersisted { .. }
            | Input::Listed { .. }
            | Input::Renamed { .. }
            | Input::Space { .. }
            | Input::FileFailed { .. } => {}
        }
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        if self.deadline.is_some_and(|d| d <= now) {
            assert!(!self.panic_on_timer, "the test node panics on its timer");
            self.deadline = None;
            self.out.push_back(Output::Event(Ev::Fired(now)));
        }
    }

    fn poll_output(&mut self) -> Option<Output<Ev>> {
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        self.deadline
    }
}

fn listener() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    (l, addr)
}

/// Runs `f` on a thread of its own and fails the test if it does not
/// finish within `secs`.
fn with_deadline<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let test = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(value) => value,
        // The test thread panicked: raise its panic here.
        Err(mpsc::RecvTimeoutError::Disconnected) => match test.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the test thread ended without an answer"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("test did not finish within {secs}s"),
    }
}

/// A driver running on a thread of its own until stopped; stopping it
/// returns it, so a test can look at its node.
struct Running {
    stopper: ferry_runtime_smol::Stopper,
    thread: std::thread::JoinHandle<(Driver<TestNode>, Vec<Ev>)>,
}

impl Running {
    fn start(mut driver: Driver<TestNode>) -> Running {
        let stopper = driver.stopper();
        let thread = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let result = driver.run_until(|e| {
                seen.push(e);
                ControlFlow::<()>::Continue(())
            });
            assert!(
                matches!(result, Err(DriverError::Stopped { .. })),
                "{result:?}"
            );
            (driver, seen)
        });
        Running { stopper, thread }
    }

    fn stop(self) -> (Driver<TestNode>, Vec<Ev>) {
        self.stopper.stop();
        match self.thread.join() {
            Ok(done) => done,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

fn set_receive_buffer(l: &TcpListener, bytes: libc::c_int) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain setsockopt on a socket the caller owns, with a value
    // of the size given.
    let set = unsafe {
        libc::setsockopt(
            l.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &bytes as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(set, 0);
}

/// Dials `addr` and runs the driver until the connection is up.
fn connect(driver: &mut Driver<TestNode>, addr: String) -> ConnId {
    driver.node_mut().dial(addr);
    driver
        .run_until(|e| match e {
            Ev::Connected(c) => ControlFlow::Break(c),
            other => panic!("unexpected {other:?}"),
        })
        .unwrap()
}

fn transmit(driver: &mut Driver<TestNode>, conn: ConnId, bytes: Vec<u8>) {
    driver
        .node_mut()
        .out
        .push_back(Output::Transmit { conn, bytes });
}

/// Bytes that tell their own position, so a reordering shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i ^ (i >> 8) ^ (i >> 16)) as u8)
        .collect()
}

#[test]
fn dialed_connection_round_trips_bytes_through_an_echoing_node() {
    with_deadline(10, || {
        let (l, addr) = listener();
        let echo = TestNode {
            echo: true,
            ..Default::default()
        };
        let server = Running::start(Driver::new(echo).named("echo").listen(l));

        let mut driver = Driver::new(TestNode::default());
        let conn = connect(&mut driver, addr);
        let mut got = Vec::new();
        for chunk in [&b"hello "[..], b"ferry"] {
            transmit(&mut driver, conn, chunk.to_vec());
        }
        while got.len() < 11 {
            let bytes = driver
                .run_until(|e| match e {
                    Ev::Received(b) => ControlFlow::Break(b),
                    other => panic!("unexpected {other:?}"),
                })
                .unwrap();
            got.extend(bytes);
        }
        assert_eq!(got, b"hello ferry");
        let (_, seen) = server.stop();
        assert_eq!(seen[0], Ev::Accepted(ConnId::accepted(0)));
    });
}

#[test]
fn refused_dial_is_reported_with_the_address() {
    with_deadline(10, || {
        let (l, addr) = listener();
        drop(l);
        let mut driver = Driver::new(TestNode::default());
        driver.node_mut().dial(addr.clone());
        let reason = driver
            .run_until(|e| match e {
                Ev::ConnectFailed(r) => ControlFlow::Break(r),
                other => panic!("unexpected {other:?}"),
            })
            .unwrap();
        assert!(reason.contains(&addr), "{reason}");
        assert!(reason.contains("refused"), "{reason}");
    });
}

#[test]
fn a_host_name_is_resolved_and_its_addresses_tried() {
    with_deadline(10, || {
        // `localhost` may name ::1 before 127.0.0.1; the listener has only
        // the latter, so the dial may have to get past a refusal.
        let (l, addr) = listener();
        let port = addr.rsplit_once(':').unwrap().1;
        let mut driver = Driver::new(TestNode::default());
        let conn = connect(&mut driver, format!("localhost:{port}"));
        let (mut peer, _) = l.accept().unwrap();
        transmit(&mut driver, conn, b"by name".to_vec());
        driver.close(Duration::from_secs(5));
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"by name");
    });
}

#[test]
fn a_dial_nobody_answers_times_out() {
    with_deadline(30, || {
        // A listener whose accept queue is full: the kernel drops further
        // SYNs, so a connect neither succeeds nor fails.
        // SAFETY: plain socket calls on a descriptor this test owns.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        assert!(fd >= 0);
        let std_listener = {
            use std::os::fd::FromRawFd;
            // SAFETY: `fd` is a fresh socket owned by nobody else.
            unsafe { TcpListener::from_raw_fd(fd) }
        };
        let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        sin.sin_family = libc::AF_INET as libc::sa_family_t;
        sin.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: `sin` is a valid sockaddr_in of `len` bytes.
        let bound = unsafe { libc::bind(fd, &sin as *const _ as *const libc::sockaddr, len) };
        assert_eq!(bound, 0);
        // SAFETY: as above.
        assert_eq!(unsafe { libc::listen(fd, 0) }, 0);
        let addr = std_listener.local_addr().unwrap();
        let mut fillers = Vec::new();
        loop {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
                Ok(s) => fillers.push(s),
                Err(_) => break,
            }
            assert!(fillers.len() < 64, "the accept queue never filled");
        }

        let started = Instant::now();
        let mut driver = Driver::new(TestNode::default());
        driver.node_mut().dial(addr.to_string());
        let reason = driver
            .run_until(|e| match e {
                Ev::ConnectFailed(r) => ControlFlow::Break(r),
                other => panic!("unexpected {other:?}"),
            })
            .unwrap();
        assert!(reason.contains("no connection after"), "{reason}");
        assert!(started.elapsed() >= CONNECT_TIMEOUT);
        drop(std_listener);
    });
}

#[test]
fn close_flushes_queued_writes_and_is_never_reported_back() {
    with_deadline(10, || {
        let (l, addr) = listener();
        let node = TestNode {
            greeting: Some(vec![
                b"one ".to_vec(),
                b"two ".to_vec(),
                vec![b'x'; 200_000],
            ]),
            ..Default::default()
        };
        let server = Running::start(Driver::new(node).listen(l));
        for _ in 0..3 {
            let mut s = TcpStream::connect(addr.as_str()).unwrap();
            // Unread bytes on the server side must not break the flush.
            s.write_all(b"ignored").unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            assert_eq!(got.len(), 8 + 200_000);
            assert!(got.starts_with(b"one two x"));
        }
        // A fresh round trip after the closes: any stale input would have
        // been reported by now.
        let mut s = TcpStream::connect(addr.as_str()).unwrap();
        s.read_to_end(&mut Vec::new()).unwrap();
        let (_, seen) = server.stop();
        assert!(
            !seen
                .iter()
                .any(|e| matches!(e, Ev::Stale(_) | Ev::Closed(_))),
            "{seen:?}"
        );
        let ids: Vec<_> = seen
            .iter()
            .filter_map(|e| match e {
                Ev::Accepted(c) => Some(*c),
                _ => None,
            })
            .collect();
        assert_eq!(ids, (0..4).map(ConnId::accepted).collect::<Vec<_>>());
    });
}

#[test]
fn peer_hang_up_is_reported_as_closed() {
    with_deadline(10, || {
        let (l, addr) = listener();
        let mut driver = Driver::new(TestNode::default()).listen(l);
        let mut client = TcpStream::connect(addr.as_str()).unwrap();
        let conn = driver
            .run_until(|e| match e {
                Ev::Accepted(c) => ControlFlow::Break(c),
                other => panic!("unexpected {other:?}"),
            })
            .unwrap();
        // Bytes then the hang-up, both before the driver looks: the bytes
        // still come first, then `Closed`.
        client.write_all(b"last words").unwrap();
        drop(client);
        let mut got = Vec::new();
        let closed = driver
            .run_until(|e| match e {
                Ev::Received(b) => {
                    got.extend(b);
                    ControlFlow::Continue(())
                }
                Ev::Closed(c) => ControlFlow::Break(c),
                other => panic!("unexpected {other:?}"),
            })
            .unwrap();
        assert_eq!(closed, conn);
        assert_eq!(got, b"last words");
    });
}

#[test]
fn timer_fires_at_the_deadline_not_before() {
    with_deadline(10, || {
        let started = Instant::now();
        let mut driver = Driver::new(TestNode::default());
        // Not a whole number of milliseconds, so a timeout rounded down
        // would wake early.
        let deadline = driver.now() + Duration::from_micros(50_700);
        driver.node_mut().deadline = Some(deadline);
        let fired = driver
            .run_until(|e| match e {
                Ev::Fired(t) => ControlFlow::Break(t),
                other => panic!("unexpected {other:?}"),
            })
            .unwrap();
        assert!(fired >= deadline);
        assert!(started.elapsed() >= Duration::from_micros(50_700));
    });
}

#[test]
fn close_flushes_every_connection_before_returning() {
    with_deadline(10, || {
        let (l, addr) = listener();
        let mut driver = Driver::new(TestNode::default());
        let conn = connect(&mut driver, addr);
        let (mut peer, _) = l.accept().unwrap();
        // More than the socket buffers hold, so the flush takes a while.
        let payload = pattern(4_000_000);
        transmit(&mut driver, conn, payload.clone());

        let started = Instant::now();
        let patience = Duration::from_secs(5);
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            peer.read_to_end(&mut got).unwrap();
            got // and hang up
        });
        driver.close(patience);
        assert!(
            started.elapsed() < patience,
            "close waited out its patience"
        );
        let got = reader.join().unwrap();
        assert!(got == payload, "peer got {} bytes", got.len());
    });
}

#[test]
fn close_gives_up_after_its_patience_on_a_peer_that_never_reads() {
    with_deadline(10, || {
        let (l, addr) = listener();
        set_receive_buffer(&l, 4096);
        let mut driver = Driver::new(TestNode::default());
        let conn = connect(&mut driver, addr);
        // Accepted, then never read from nor closed.
        let (peer, _) = l.accept().unwrap();
        transmit(&mut driver, conn, pattern(8_000_000));
        let started = Instant::now();
        let patience = Duration::from_millis(300);
        driver.close(patience);
        let waited = started.elapsed();
        // The bound is what returns: the peer would have kept it forever
        // (with_deadline fails the test if close never returns).
        assert!(waited >= patience, "close returned after {waited:?}");
        drop(peer);
    });
}

#[test]
fn a_peer_that_does_not_read_gets_every_byte_in_order_once_it_does() {
    with_deadline(30, || {
        let (l, addr) = listener();
        let mut driver = Driver::new(TestNode::default());
        let conn = connect(&mut driver, addr);
        let (mut peer, _) = l.accept().unwrap();
        // 32 MiB in frames of assorted sizes, far more than the socket
        // buffers: most of it has to wait in the driver's queue.
        let payload = pattern(32 << 20);
        let mut at = 0;
        let mut size = 1;
        while at < payload.len() {
            let end = (at + size).min(payload.len());
            transmit(&mut driver, conn, payload[at..end].to_vec());
            at = end;
            size = size * 7 % 300_007 + 1;
        }
        let now = driver.now();
        driver
            .node_mut()
            .out
            .push_back(Output::Event(Ev::Fired(now)));
        // The break comes after the transmits were handed to the socket.
        driver
            .run_until(|e| match e {
                Ev::Fired(_) => ControlFlow::Break(()),
                other => panic!("unexpected {other:?}"),
            })
            .unwrap();
        let (read_tx, read_rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut got = vec![0u8; 32 << 20];
            let mut n = 0;
            while n < got.len() {
                match peer.read(&mut got[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) => panic!("{e}"),
                }
            }
            got.truncate(n);
            let _ = read_tx.send(());
            got // and hang up
        });
        // The driver writes the rest as the peer reads, until it hangs up.
        let closed = driver
            .run_until(|e| match e {
                Ev::Closed(c) => ControlFlow::Break(c),
                other => panic!("unexpected {other:?}"),
            })
            .unwrap();
        assert_eq!(closed, conn);
        read_rx.recv().unwrap();
        let got = reader.join().unwrap();
        assert_eq!(got.len(), payload.len());
        assert!(got == payload, "bytes arrived out of order");
    });
}

#[test]
fn close_after_a_large_transmit_delivers_everything_then_eof() {
    with_deadline(30, || {
        let (l, addr) = listener();
        let mut driver = Driver::new(TestNode::default());
        let conn = connect(&mut driver, addr);
        let (mut peer, _) = l.accept().unwrap();
        let payload = pattern(16 << 20);
        for frame in payload.chunks(100_000) {
            transmit(&mut driver, conn, frame.to_vec());
        }
        driver.node_mut().out.push_back(Output::Close { conn });
        driver.node_mut().closed.insert(conn);
        // The peer sends something the node never reads, and only starts
        // reading once the node has closed.
        peer.write_all(b"unread").unwrap();
        let running = Running::start(driver);
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap();
        assert_eq!(got.len(), payload.len());
        assert!(got == payload, "bytes arrived out of order");
        let (_, seen) = running.stop();
        assert!(seen.is_empty(), "{seen:?}");
    });
}

#[test]
fn a_flooding_peer_does_not_starve_another_connection() {
    with_deadline(30, || {
        let (l, addr) = listener();
        // Accepted sockets inherit a large receive buffer, so the flooder
        // stays far ahead of the node and every read comes back full: the
        // socket never looks drained.
        set_receive_buffer(&l, 4 << 20);
        let node = TestNode {
            count_only: true,
            slow: Some(Duration::from_millis(1)),
            ..Default::default()
        };
        let mut driver = Driver::new(node).listen(l);
        // The flooder writes for as long as the connection lives.
        let flood_addr = addr.clone();
        let flooder = std::thread::spawn(move || {
            let mut s = TcpStream::connect(flood_addr.as_str()).unwrap();
            let block = vec![0xf1u8; 64 << 10];
            while s.write_all(&block).is_ok() {}
        });
        let flood = driver
            .run_until(|e| match e {
                Ev::Accepted(c) => ControlFlow::Break(c),
                other => panic!("unexpected {other:?}"),
            })
            .unwrap();
        // The flood is under way: the node has read some of it, in full
        // reads.
        let mut full = 0;
        driver
            .run_until(|e| match e {
                Ev::Got(c, n) if c == flood && n == READ_BUFFER => {
                    full += 1;
                    if full == 2 {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                }
                Ev::Got(c, _) if c == flood => ControlFlow::Continue(()),
                other => panic!("unexpected {other:?}"),
            })
            .unwrap();
        let mut other = TcpStream::connect(addr.as_str()).unwrap();
        other.write_all(b"ping").unwrap();
        let mut flooded = 0;
        let mut other_id = None;
        driver
            .run_until(|e| match e {
                Ev::Got(c, n) if c == flood => {
                    flooded += n;
                    ControlFlow::Continue(())
                }
                Ev::Accepted(c) => {
                    other_id = Some(c);
                    ControlFlow::Continue(())
                }
                Ev::Got(c, n) if Some(c) == other_id => {
                    assert_eq!(n, 4);
                    ControlFlow::Break(())
                }
                other => panic!("unexpected {other:?}"),
            })
            .unwrap();
        // The ping waited for no more than a few turns of the flooder: it
        // never drains its socket, so a driver that read each connection
        // until it would block would not have come back at all.
        assert!(
            flooded <= 3 * READ_BUDGET,
            "{flooded} flood bytes went before the ping"
        );
        drop(driver);
        flooder.join().unwrap();
    });
}

#[test]
fn bytes_past_the_read_budget_are_read_without_a_new_event() {
    with_deadline(30, || {
        let (l, addr) = listener();
        set_receive_buffer(&l, 4 << 20);
        let node = TestNode {
            count_only: true,
            ..Default::default()
        };
        let mut driver = Driver::new(node).listen(l);
        // Sent at once, then nothing more: after its budget the connection
        // has bytes waiting but no new edge will say so.
        let mut peer = TcpStream::connect(addr.as_str()).unwrap();
        let total = 2 << 20;
        peer.write_all(&pattern(total)).unwrap();
        let mut got = 0;
        driver
            .run_until(|e| match e {
                Ev::Accepted(_) => ControlFlow::Continue(()),
                Ev::Got(_, n) => {
                    got += n;
                    if got == total {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                }
                other => panic!("unexpected {other:?}"),
            })
            .unwrap();
        assert_eq!(got, total);
    });
}

#[test]
fn a_stopper_stops_a_driver_from_another_thread() {
    with_deadline(10, || {
        let (l, _) = listener();
        let running = Running::start(Driver::new(TestNode::default()).listen(l));
        // `stop` returns once the driver's run ended with `Stopped`.
        let (driver, seen) = running.stop();
        assert!(seen.is_empty());
        let e = DriverError::Stopped {
            node: driver.name().to_string(),
        };
        assert_eq!(e.to_string(), "node stopped on request");
    });
}

#[test]
fn a_group_raises_the_panic_of_a_driver() {
    with_deadline(10, || {
        let mut group = Group::new();
        let calm = Driver::new(TestNode::default()).named("calm");
        group.spawn(calm).unwrap();
        let mut driver = Driver::new(TestNode {
            panic_on_timer: true,
            ..Default::default()
        })
        .named("panicky");
        let soon = driver.now() + Duration::from_millis(10);
        driver.node_mut().deadline = Some(soon);
        group.spawn(driver).unwrap();
        let raised = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| group.wait()));
        let panic = raised.expect_err("the panic was lost");
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        assert!(message.contains("panics on its timer"), "{message}");
    });
}
