//! TLS in the host: who is told what, and what crosses the wire. Two hosts
//! with worlds that write down their transmits; the test moves the bytes.

use super::tls::{TlsLinks, REFUSED};
use super::*;
use crate::entropy::Entropy;
use crate::io::Identity;
use crate::tls::{Authority, ClusterRole, Credentials, TlsConfig, Trust};

const T0: u64 = 1_800_000_000_000_000;

/// Notes what it is told; sends `greeting` when a connection opens and
/// whatever the test queues.
#[derive(Default)]
struct Ear {
    out: VecDeque<Output<String>>,
    seen: Vec<String>,
    got: Vec<u8>,
    greeting: Vec<u8>,
    /// Sends back what it receives, as it receives it.
    echo: bool,
    /// How many pieces it received.
    pieces: usize,
}

impl Node for Ear {
    type Event = String;

    fn handle_input(&mut self, _now: Timestamp, input: Input<'_>) {
        match input {
            Input::Accepted { conn, identity, .. } | Input::Connected { conn, identity } => {
                self.seen.push(format!("open {identity:?}"));
                if !self.greeting.is_empty() {
                    let bytes = self.greeting.clone();
                    self.out.push_back(Output::Transmit { conn, bytes });
                }
            }
            Input::Received { conn, bytes } => {
                self.got.extend_from_slice(bytes);
                self.pieces += 1;
                if self.echo {
                    let bytes = bytes.to_vec();
                    self.out.push_back(Output::Transmit { conn, bytes });
                }
            }
            Input::ConnectFailed { reason, .. } => self.seen.push(format!("failed {reason}")),
            Input::Closed { .. } => self.seen.push("closed".into()),
            _ => {}
        }
    }
    fn handle_timeout(&mut self, _now: Timestamp) {}
    fn poll_output(&mut self) -> Option<Output<String>> {
        self.out.pop_front()
    }
    fn poll_timeout(&self) -> Option<Timestamp> {
        None
    }
}

#[derive(Default)]
struct Wire {
    now: u64,
    sent: VecDeque<(ConnId, Vec<u8>)>,
    all: Vec<u8>,
    closed: Vec<ConnId>,
    dialed: Vec<ConnId>,
}

impl World for Wire {
    fn now(&self) -> Timestamp {
        Timestamp::from_micros(T0 + self.now)
    }
    fn transmit(&mut self, conn: ConnId, bytes: Vec<u8>) {
        self.all.extend_from_slice(&bytes);
        self.sent.push_back((conn, bytes));
    }
    fn connect(&mut self, conn: ConnId, _addr: String) {
        self.dialed.push(conn);
    }
    fn close(&mut self, conn: ConnId) {
        self.closed.push(conn);
    }
    fn commit(&mut self, _batch: &Batch) -> Result<(), HostError> {
        Err(HostError::NoStore)
    }
    fn file(&mut self, op: FileOp) -> Result<Option<FileAnswer>, HostError> {
        Err(HostError::NoFiles {
            what: file_op_name(&op),
        })
    }
    fn read(&mut self, _: u64, _: u64, _: usize) -> Result<&[u8], FileFailure> {
        Err(FileFailure::other("no files"))
    }
}

type H = Host<Ear, Wire>;

fn now() -> Timestamp {
    Timestamp::from_micros(T0)
}

struct Ca {
    auth: Authority,
    seed: u64,
}

impl Ca {
    fn new(seed: u64) -> Self {
        Ca {
            auth: Authority::generate(&mut Entropy::from_u64(seed), now()).unwrap(),
            seed,
        }
    }
    fn member(&self, role: ClusterRole, n: u64) -> TlsConfig {
        let mut e = Entropy::from_u64(self.seed * 100 + n);
        let own = self.auth.issue(role, "member", &mut e, now()).unwrap();
        TlsConfig::member(&own, self.auth.cert()).unwrap()
    }
}

fn host(config: TlsConfig, seed: u64, greeting: &[u8]) -> H {
    let node = Ear {
        greeting: greeting.to_vec(),
        ..Ear::default()
    };
    Host::new(node, Wire::default()).with_tls(TlsLinks::new(config, Entropy::from_u64(seed)))
}

fn settle(h: &mut H) {
    h.settle(|_, _| ControlFlow::<()>::Continue(())).unwrap();
}

const D: ConnId = ConnId { dialed: true, n: 1 };
const A: ConnId = ConnId {
    dialed: false,
    n: 1,
};

/// `a` dials `b`; bytes are moved until both are quiet.
fn dial(a: &mut H, b: &mut H) {
    a.node_mut().out.push_back(Output::Connect {
        conn: D,
        addr: "b:1".into(),
    });
    settle(a);
    b.handle_input(Input::Accepted {
        conn: A,
        peer: "10.0.0.1:5".into(),
        identity: Identity::Unchecked,
    });
    a.handle_input(Input::Connected {
        conn: D,
        identity: Identity::Unchecked,
    });
    shuttle(a, b);
}

fn shuttle(a: &mut H, b: &mut H) {
    loop {
        settle(a);
        settle(b);
        let mut moved = false;
        while let Some((conn, bytes)) = a.world_mut().sent.pop_front() {
            assert_eq!(conn, D);
            b.handle_input(Input::Received {
                conn: A,
                bytes: &bytes,
            });
            moved = true;
        }
        while let Some((conn, bytes)) = b.world_mut().sent.pop_front() {
            assert_eq!(conn, A);
            a.handle_input(Input::Received {
                conn: D,
                bytes: &bytes,
            });
            moved = true;
        }
        if !moved {
            return;
        }
    }
}

#[test]
fn members_prove_themselves_to_each_other_and_the_wire_holds_no_plaintext() {
    let ca = Ca::new(1);
    let secret = b"the password is correct horse battery staple".repeat(3000);
    let mut a = host(ca.member(ClusterRole::Server, 1), 11, &secret);
    let mut b = host(ca.member(ClusterRole::Balancer, 2), 12, b"hello back");
    dial(&mut a, &mut b);
    let fp = ca.auth.fingerprint();
    let server = Identity::Cluster {
        role: ClusterRole::Server,
        ca: fp,
    };
    let balancer = Identity::Cluster {
        role: ClusterRole::Balancer,
        ca: fp,
    };
    assert_eq!(a.node().seen, vec![format!("open {balancer:?}")]);
    assert_eq!(b.node().seen, vec![format!("open {server:?}")]);
    // 132 KB: several records, more than rustls holds as plaintext at once.
    assert_eq!(b.node().got, secret);
    assert_eq!(a.node().got, b"hello back");
    let wire = &a.world().all;
    assert!(wire.len() > secret.len());
    assert!(!wire.windows(16).any(|w| w == &secret[..16]));
    assert!(!b.world().all.windows(10).any(|w| w == b"hello back"));
    // A close says close_notify; the other end hears Closed.
    a.node_mut().out.push_back(Output::Close { conn: D });
    settle(&mut a);
    assert_eq!(a.world().closed, vec![D]);
    shuttle(&mut a, &mut b);
    assert_eq!(b.node().seen.last().map(String::as_str), Some("closed"));
}

#[test]
fn what_a_node_sends_while_received_records_wait_follows_in_order() {
    let ca = Ca::new(4);
    // Records of 16 KiB: b takes them one at a time and answers each
    // while the rest of the same read still waits to be decrypted.
    let stream: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let mut a = host(ca.member(ClusterRole::Server, 1), 7, &stream);
    let mut b = host(ca.member(ClusterRole::Server, 2), 8, b"");
    b.node_mut().echo = true;
    dial(&mut a, &mut b);
    assert!(b.node().pieces >= 13, "{} records", b.node().pieces);
    assert_eq!(b.node().got, stream);
    assert_eq!(a.node().got, stream);
}

#[test]
fn the_same_seeds_put_the_same_bytes_on_the_wire() {
    let run = || {
        let ca = Ca::new(3);
        let mut a = host(ca.member(ClusterRole::Server, 1), 5, b"x");
        let mut b = host(ca.member(ClusterRole::Server, 2), 6, b"y");
        dial(&mut a, &mut b);
        (a.world().all.clone(), b.world().all.clone())
    };
    let (a1, b1) = run();
    let (a2, b2) = run();
    assert_eq!(a1, a2);
    assert_eq!(b1, b2);
}

#[test]
fn a_client_is_anonymous_and_trusts_only_its_authority() {
    let ca = Ca::new(1);
    let client = TlsConfig::client(Trust::Ca(ca.auth.cert().clone())).unwrap();
    let mut c = host(client, 1, b"hi");
    let mut s = host(ca.member(ClusterRole::Server, 1), 2, b"");
    dial(&mut c, &mut s);
    assert_eq!(
        s.node().seen,
        vec![format!("open {:?}", Identity::Anonymous)]
    );
    assert_eq!(s.node().got, b"hi");

    // A server whose certificate another authority issued.
    let other = Ca::new(2);
    let client = TlsConfig::client(Trust::Ca(ca.auth.cert().clone())).unwrap();
    let mut c = host(client, 1, b"hi");
    let mut s = host(other.member(ClusterRole::Server, 1), 2, b"");
    dial(&mut c, &mut s);
    let seen = &c.node().seen;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(
        seen[0].starts_with(&format!("failed {REFUSED}")),
        "{seen:?}"
    );
    assert!(
        seen[0].contains("not issued by the cluster's authority"),
        "{seen:?}"
    );
    assert!(s.node().seen.is_empty(), "the server never heard of it");
    assert!(s.node().got.is_empty() && c.world().closed == vec![D]);
}

#[test]
fn members_refuse_members_of_another_cluster() {
    let ours = Ca::new(1);
    let theirs = Ca::new(2);
    let mut a = host(theirs.member(ClusterRole::Server, 1), 1, b"replicate me");
    let mut b = host(ours.member(ClusterRole::Server, 1), 2, b"");
    dial(&mut a, &mut b);
    assert!(b.node().seen.is_empty() && b.node().got.is_empty());
    assert_eq!(b.tls().map(|t| t.refused()), Some(1));
    let seen = &a.node().seen;
    assert!(
        seen[0].starts_with(&format!("failed {REFUSED}")),
        "{seen:?}"
    );
}

#[test]
fn first_use_learns_the_authority_and_a_pin_refuses_another() {
    let ca = Ca::new(1);
    let mut c = host(TlsConfig::client(Trust::FirstUse).unwrap(), 1, b"");
    let mut s = host(ca.member(ClusterRole::Balancer, 1), 2, b"");
    dial(&mut c, &mut s);
    let learnt = Identity::Cluster {
        role: ClusterRole::Balancer,
        ca: ca.auth.fingerprint(),
    };
    assert_eq!(c.node().seen, vec![format!("open {learnt:?}")]);

    let pinned = TlsConfig::client(Trust::Pinned(ca.auth.fingerprint())).unwrap();
    let mut c = host(pinned, 1, b"");
    let impostor = Ca::new(9);
    let mut s = host(impostor.member(ClusterRole::Balancer, 1), 2, b"");
    dial(&mut c, &mut s);
    let seen = &c.node().seen;
    assert!(seen[0].contains("authority has changed"), "{seen:?}");
    assert!(
        seen[0].contains(&ca.auth.fingerprint().to_string()),
        "{seen:?}"
    );
}

#[test]
fn peers_are_named_by_their_own_certificates() {
    let mut e = Entropy::from_u64(4);
    let p1 = Credentials::self_signed(&mut e, now()).unwrap();
    let p2 = Credentials::self_signed(&mut e, now()).unwrap();
    let ca = Ca::new(1);
    let trust = || Trust::Ca(ca.auth.cert().clone());
    let mut a = host(TlsConfig::peer(&p1, trust()).unwrap(), 1, b"PUT");
    let mut b = host(TlsConfig::peer(&p2, trust()).unwrap(), 2, b"OK");
    dial(&mut a, &mut b);
    assert_eq!(
        a.node().seen,
        vec![format!("open {:?}", Identity::Key(p2.fingerprint()))]
    );
    assert_eq!(
        b.node().seen,
        vec![format!("open {:?}", Identity::Key(p1.fingerprint()))]
    );
    // A peer dialing a tracker is known to it by the same key.
    let mut s = host(ca.member(ClusterRole::Server, 1), 3, b"");
    let mut a = host(TlsConfig::peer(&p1, trust()).unwrap(), 1, b"");
    dial(&mut a, &mut s);
    assert_eq!(
        s.node().seen,
        vec![format!("open {:?}", Identity::Key(p1.fingerprint()))]
    );
    // A plain client refuses a peer's own certificate where a member's
    // belongs.
    let mut c = host(TlsConfig::client(trust()).unwrap(), 1, b"");
    let mut b = host(TlsConfig::peer(&p2, trust()).unwrap(), 2, b"");
    dial(&mut c, &mut b);
    assert!(
        c.node().seen[0].contains("certificate of its own"),
        "{:?}",
        c.node().seen
    );
}

#[test]
fn silence_and_garbage_are_closed_without_the_node_hearing() {
    let ca = Ca::new(1);
    let mut s = host(ca.member(ClusterRole::Server, 1), 2, b"");
    s.handle_input(Input::Accepted {
        conn: A,
        peer: "10.0.0.9:1".into(),
        identity: Identity::Unchecked,
    });
    settle(&mut s);
    let deadline = s.poll_timeout().expect("a handshake deadline");
    assert_eq!(deadline, now() + crate::tls::HANDSHAKE_TIMEOUT);
    s.world_mut().now = crate::tls::HANDSHAKE_TIMEOUT.as_micros() as u64;
    assert!(s.handle_timeout_if_due());
    settle(&mut s);
    assert_eq!(s.world().closed, vec![A]);
    assert!(s.node().seen.is_empty());
    assert_eq!(s.poll_timeout(), None);

    let b = ConnId::accepted(2);
    s.handle_input(Input::Accepted {
        conn: b,
        peer: "10.0.0.9:2".into(),
        identity: Identity::Unchecked,
    });
    s.handle_input(Input::Received {
        conn: b,
        bytes: b"GET / HTTP/1.1\r\n\r\n",
    });
    settle(&mut s);
    assert_eq!(s.world().closed, vec![A, b]);
    assert!(s.node().seen.is_empty());
    assert_eq!(
        s.tls().map(|t| (t.refused(), t.handshaking())),
        Some((2, 0))
    );
}

#[test]
fn one_source_holds_only_its_share_of_handshakes() {
    let ca = Ca::new(1);
    let mut s = host(
        ca.member(ClusterRole::Server, 1)
            .with_handshakes_per_source(3),
        2,
        b"",
    );
    let accept = |s: &mut H, n: u64, peer: &str| {
        s.handle_input(Input::Accepted {
            conn: ConnId::accepted(n),
            peer: peer.into(),
            identity: Identity::Unchecked,
        });
        settle(s);
    };
    for n in 1..=4 {
        accept(&mut s, n, &format!("10.0.0.66:{n}"));
    }
    // The fourth from that machine is closed unread; another machine and
    // an IPv6 one are not held up.
    assert_eq!(s.world().closed, vec![ConnId::accepted(4)]);
    accept(&mut s, 5, "10.0.0.7:1");
    accept(&mut s, 6, "[::1]:9");
    assert_eq!(s.tls().map(|t| t.handshaking()), Some(5));
    // Once its handshakes time out, the machine may try again.
    s.world_mut().now = crate::tls::HANDSHAKE_TIMEOUT.as_micros() as u64;
    s.handle_timeout_if_due();
    settle(&mut s);
    accept(&mut s, 7, "10.0.0.66:7");
    assert_eq!(s.tls().map(|t| t.handshaking()), Some(1));
    assert!(!s.world().closed.contains(&ConnId::accepted(7)));
}
