//! What TLS in the host costs per byte, with no network or disk in the
//! way: two hosts in one thread, one sending frames of a transfer's size
//! (128 KiB, as `Chunks` carries them), the other acknowledging each, the
//! bytes moved between them in reads of the runtime's size (64 KiB).
//! Prints MB/s through cleartext hosts and through TLS hosts, and what TLS
//! adds per byte (both ends' work, in one thread): the cost a real link
//! pays beside its network and disk. `cargo bench -p ferry-core --bench
//! tls` (`FERRY_BENCH_MIB` sets the amount, default 1024).

use ferry_core::entropy::Entropy;
use ferry_core::host::tls::TlsLinks;
use ferry_core::host::{Host, HostError, World};
use ferry_core::io::{ConnId, FileAnswer, FileFailure, FileOp, Identity, Input, Node, Output};
use ferry_core::store::Batch;
use ferry_core::time::Timestamp;
use ferry_core::tls::{Authority, ClusterRole, TlsConfig};
use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::time::Instant;

const FRAME: usize = 128 * 1024;
const READ: usize = 64 * 1024;
const WINDOW: usize = 8;
const T0: u64 = 1_800_000_000_000_000;

/// Sends `frames` frames, at most `WINDOW` unacknowledged; or, as the
/// receiver, acknowledges each whole frame with 16 bytes.
struct Pipe {
    out: VecDeque<Output<String>>,
    conn: Option<ConnId>,
    to_send: usize,
    in_flight: usize,
    received: usize,
    acked: usize,
    sender: bool,
}

impl Pipe {
    fn new(sender: bool, frames: usize) -> Self {
        Pipe {
            out: VecDeque::new(),
            conn: None,
            to_send: if sender { frames } else { 0 },
            in_flight: 0,
            received: 0,
            acked: 0,
            sender,
        }
    }

    fn fill(&mut self) {
        let Some(conn) = self.conn else { return };
        while self.sender && self.to_send > 0 && self.in_flight < WINDOW {
            self.to_send -= 1;
            self.in_flight += 1;
            let bytes = vec![(self.to_send % 251) as u8; FRAME];
            self.out.push_back(Output::Transmit { conn, bytes });
        }
    }
}

impl Node for Pipe {
    type Event = String;

    fn handle_input(&mut self, _now: Timestamp, input: Input<'_>) {
        match input {
            Input::Accepted { conn, .. } | Input::Connected { conn, .. } => {
                self.conn = Some(conn);
                self.fill();
            }
            Input::Received { conn, bytes } => {
                self.received += bytes.len();
                if self.sender {
                    self.in_flight -= bytes.len() / 16;
                    self.acked += bytes.len() / 16;
                    self.fill();
                } else {
                    while self.received >= FRAME {
                        self.received -= FRAME;
                        self.acked += 1;
                        let bytes = vec![1; 16];
                        self.out.push_back(Output::Transmit { conn, bytes });
                    }
                }
            }
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
    sent: Vec<u8>,
}

impl World for Wire {
    fn now(&self) -> Timestamp {
        Timestamp::from_micros(T0)
    }
    fn transmit(&mut self, _conn: ConnId, bytes: Vec<u8>) {
        // Copied, as a kernel would, into a buffer that stays.
        self.sent.extend_from_slice(&bytes);
    }
    fn connect(&mut self, _conn: ConnId, _addr: String) {}
    fn close(&mut self, _conn: ConnId) {}
    fn commit(&mut self, _batch: &Batch) -> Result<(), HostError> {
        Err(HostError::NoStore)
    }
    fn file(&mut self, _op: FileOp) -> Result<Option<FileAnswer>, HostError> {
        Err(HostError::NoStore)
    }
    fn read(&mut self, _: u64, _: u64, _: usize) -> Result<&[u8], FileFailure> {
        Err(FileFailure::other("no files"))
    }
}

type H = Host<Pipe, Wire>;

fn settle(h: &mut H) {
    let _ = h.settle(|_, _| ControlFlow::<()>::Continue(()));
}

/// Moves what `from` sent to `to`, in reads of `READ`. True if any moved.
fn carry(from: &mut H, to: &mut H, conn: ConnId) -> bool {
    let sent = &from.world().sent;
    for bytes in sent.chunks(READ) {
        to.handle_input(Input::Received { conn, bytes });
        settle(to);
    }
    let moved = !sent.is_empty();
    from.world_mut().sent.clear();
    moved
}

fn run(tls: Option<(TlsConfig, TlsConfig)>, frames: usize) -> f64 {
    let mut a = Host::new(Pipe::new(true, frames), Wire::default());
    let mut b = Host::new(Pipe::new(false, 0), Wire::default());
    if let Some((ca, cb)) = tls {
        a = a.with_tls(TlsLinks::new(ca, Entropy::from_u64(1)));
        b = b.with_tls(TlsLinks::new(cb, Entropy::from_u64(2)));
    }
    let dialed = ConnId { dialed: true, n: 1 };
    let accepted = ConnId {
        dialed: false,
        n: 1,
    };
    let start = Instant::now();
    a.node_mut().out.push_back(Output::Connect {
        conn: dialed,
        addr: "b:1".into(),
    });
    settle(&mut a);
    b.handle_input(Input::Accepted {
        conn: accepted,
        peer: "10.0.0.1:5".into(),
        identity: Identity::Anonymous,
    });
    a.handle_input(Input::Connected {
        conn: dialed,
        identity: Identity::Anonymous,
    });
    loop {
        settle(&mut a);
        settle(&mut b);
        let there = carry(&mut a, &mut b, accepted);
        let back = carry(&mut b, &mut a, dialed);
        if !there && !back {
            break;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    assert_eq!(b.node().acked, frames, "every frame arrived");
    assert_eq!(a.node().acked, frames, "every ack arrived");
    (frames * FRAME) as f64 / elapsed / 1e6
}

fn main() {
    let mib: usize = std::env::var("FERRY_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let frames = mib * 1024 * 1024 / FRAME;
    let now = Timestamp::from_micros(T0);
    let mut e = Entropy::from_u64(7);
    let ca = Authority::generate(&mut e, now).expect("an authority");
    let mut member = |role| {
        let own = ca.issue(role, "bench", &mut e, now).expect("a cert");
        TlsConfig::member(&own, ca.cert()).expect("a config")
    };
    let configs = (member(ClusterRole::Server), member(ClusterRole::Server));
    println!(
        "{mib} MiB in {} KiB frames, one thread, two hosts",
        FRAME / 1024
    );
    // A first run of each warms the allocator (its first large buffers
    // come from fresh pages); then the median of five alternating runs.
    run(None, frames / 4);
    run(Some(configs.clone()), frames / 4);
    let (mut clear, mut tls) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        clear.push(run(None, frames));
        tls.push(run(Some(configs.clone()), frames));
    }
    let (clear, tls) = (median(clear), median(tls));
    // Seconds per byte through TLS, less through cleartext: what TLS adds.
    let added = 1e3 / tls - 1e3 / clear;
    println!(
        "cleartext {clear:.0} MB/s, TLS {tls:.0} MB/s: TLS adds {added:.2} ns per byte \
         (encrypt and decrypt)"
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
