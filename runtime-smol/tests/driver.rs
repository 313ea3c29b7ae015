//! The driver against real loopback sockets, with tiny test nodes.

use ferry_core::{ConnId, Input, Node, Output, Timestamp};
use ferry_runtime_smol::Driver;
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use smol::net::{TcpListener, TcpStream};
use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Accepted(ConnId),
    Connected(ConnId),
    ConnectFailed(String),
    Received(Vec<u8>),
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
            Input::Connected { conn } => {
                self.out.push_back(Output::Event(Ev::Connected(conn)));
            }
            Input::ConnectFailed { reason, .. } => {
                self.out.push_back(Output::Event(Ev::ConnectFailed(reason)));
            }
            Input::Received { conn, bytes } => {
                if self.stale(conn) {
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
            | Input::FileFailed { .. } => {}
        }
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        if self.deadline.is_some_and(|d| d <= now) {
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

async fn listener() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    (l, addr)
}

fn with_deadline<T>(secs: u64, f: impl std::future::Future<Output = T>) -> T {
    smol::block_on(future::or(f, async {
        smol::Timer::after(Duration::from_secs(secs)).await;
        panic!("test did not finish within {secs}s");
    }))
}

/// Dials `addr` and runs the driver until the connection is up.
async fn connect(driver: &mut Driver<TestNode>, addr: String) -> ConnId {
    driver.node_mut().dial(addr);
    driver
        .run_until(|e| match e {
            Ev::Connected(c) => ControlFlow::Break(c),
            other => panic!("unexpected {other:?}"),
        })
        .await
        .unwrap()
}

#[test]
fn dialed_connection_round_trips_bytes_through_an_echoing_node() {
    with_deadline(10, async {
        let (l, addr) = listener().await;
        let echo = TestNode {
            echo: true,
            ..Default::default()
        };
        let _server = smol::spawn(Driver::new(echo).named("echo").listen(l).run());

        let mut driver = Driver::new(TestNode::default());
        let conn = connect(&mut driver, addr).await;
        let mut got = Vec::new();
        for chunk in [&b"hello "[..], b"ferry"] {
            driver.node_mut().out.push_back(Output::Transmit {
                conn,
                bytes: chunk.to_vec(),
            });
        }
        while got.len() < 11 {
            let bytes = driver
                .run_until(|e| match e {
                    Ev::Received(b) => ControlFlow::Break(b),
                    other => panic!("unexpected {other:?}"),
                })
                .await
                .unwrap();
            got.extend(bytes);
        }
        assert_eq!(got, b"hello ferry");
    });
}

#[test]
fn refused_dial_is_reported_with_the_address() {
    with_deadline(10, async {
        let (l, addr) = listener().await;
        drop(l);
        let mut driver = Driver::new(TestNode::default());
        driver.node_mut().dial(addr.clone());
        let reason = driver
            .run_until(|e| match e {
                Ev::ConnectFailed(r) => ControlFlow::Break(r),
                other => panic!("unexpected {other:?}"),
            })
            .await
            .unwrap();
        assert!(reason.contains(&addr), "{reason}");
    });
}

#[test]
fn close_flushes_queued_writes_and_is_never_reported_back() {
    with_deadline(10, async {
        let (l, addr) = listener().await;
        let node = TestNode {
            greeting: Some(vec![
                b"one ".to_vec(),
                b"two ".to_vec(),
                vec![b'x'; 200_000],
            ]),
            ..Default::default()
        };
        let (events_tx, events) = async_channel::unbounded();
        let _server = smol::spawn(async move {
            Driver::new(node)
                .listen(l)
                .run_until(|e| {
                    let _ = events_tx.try_send(e);
                    ControlFlow::<()>::Continue(())
                })
                .await
        });
        for _ in 0..3 {
            let mut s = TcpStream::connect(addr.as_str()).await.unwrap();
            // Unread bytes on the server side must not break the flush.
            s.write_all(b"ignored").await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            assert_eq!(got.len(), 8 + 200_000);
            assert!(got.starts_with(b"one two x"));
        }
        // A fresh round trip after the closes: any stale input would have
        // been reported by now.
        let mut s = TcpStream::connect(addr.as_str()).await.unwrap();
        s.read_to_end(&mut Vec::new()).await.unwrap();
        let mut seen = Vec::new();
        while seen.iter().filter(|e| matches!(e, Ev::Accepted(_))).count() < 4 {
            seen.push(events.recv().await.unwrap());
        }
        while let Ok(e) = events.try_recv() {
            seen.push(e);
        }
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
    with_deadline(10, async {
        let (l, addr) = listener().await;
        let mut driver = Driver::new(TestNode::default()).listen(l);
        let client = TcpStream::connect(addr.as_str()).await.unwrap();
        let conn = driver
            .run_until(|e| match e {
                Ev::Accepted(c) => ControlFlow::Break(c),
                other => panic!("unexpected {other:?}"),
            })
            .await
            .unwrap();
        drop(client);
        let closed = driver
            .run_until(|e| match e {
                Ev::Closed(c) => ControlFlow::Break(c),
                other => panic!("unexpected {other:?}"),
            })
            .await
            .unwrap();
        assert_eq!(closed, conn);
    });
}

#[test]
fn timer_fires_at_the_deadline_not_before() {
    with_deadline(10, async {
        let started = Instant::now();
        let mut driver = Driver::new(TestNode::default());
        let deadline = driver.now() + Duration::from_millis(50);
        driver.node_mut().deadline = Some(deadline);
        let fired = driver
            .run_until(|e| match e {
                Ev::Fired(t) => ControlFlow::Break(t),
                other => panic!("unexpected {other:?}"),
            })
            .await
            .unwrap();
        assert!(fired >= deadline);
        assert!(started.elapsed() >= Duration::from_millis(50));
    });
}

#[test]
fn close_flushes_every_connection_before_returning() {
    with_deadline(10, async {
        let (l, addr) = listener().await;
        let mut driver = Driver::new(TestNode::default());
        let conn = connect(&mut driver, addr).await;
        let (mut peer, _) = l.accept().await.unwrap();
        // More than the socket buffers hold, so the flush takes a while.
        let payload: Vec<u8> = (0..4_000_000u32).map(|i| i as u8).collect();
        driver.node_mut().out.push_back(Output::Transmit {
            conn,
            bytes: payload.clone(),
        });

        let started = Instant::now();
        let patience = Duration::from_secs(5);
        let read = async move {
            let mut got = Vec::new();
            peer.read_to_end(&mut got).await.unwrap();
            got // and hang up
        };
        let ((), got) = future::zip(driver.close(patience), read).await;
        assert!(
            started.elapsed() < patience,
            "close waited out its patience"
        );
        assert!(got == payload, "peer got {} bytes", got.len());
    });
}
