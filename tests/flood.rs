//! One machine flooding a cluster from one source address, for the tests
//! and the benchmark of denial of service by the unauthenticated: requests
//! to the balancer as fast as it answers, and connections to every server
//! that send nothing (half-open) or say HELLO with a code the balancer gave
//! and then nothing (idle sessions that never log in).
//!
//! Loopback has all of 127.0.0.0/8: the flooder binds [`FLOOD_IP`], so a
//! real client at 127.0.0.1 is another source for the balancer and the
//! servers. It speaks TLS as a client does (trusting the test authority),
//! but for its half-open connections, which never start a handshake.

use ferry_core::auth::AuthCode;
use ferry_core::balancer::BalancerMsg;
use ferry_core::frame::{self, FrameDecoder};
use ferry_core::refusal::PROTOCOL_VERSION;
use ferry_core::server::SessionMsg;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use speedy::{LittleEndian, Readable, Writable};
use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// The flooder's address.
pub const FLOOD_IP: &str = "127.0.0.2";

/// How long the flooder waits for any one answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// A TCP connection to `addr` from `ip` (any port).
pub fn connect_from(ip: &str, addr: &str) -> io::Result<TcpStream> {
    let to: SocketAddr = addr.parse().map_err(io::Error::other)?;
    let from: SocketAddr = format!("{ip}:0").parse().map_err(io::Error::other)?;
    let socket = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP))?;
    socket.bind(&SockAddr::from(from))?;
    socket.connect_timeout(&SockAddr::from(to), ANSWER_WITHIN)?;
    let stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(ANSWER_WITHIN))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A TLS session of the flooder's, as a client's: every call on rustls
/// runs with randomness and time lent (see `ferry_core::tls::provider`).
pub struct Session {
    stream: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    entropy: ferry_core::Entropy,
}

fn now() -> ferry_core::Timestamp {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    ferry_core::Timestamp::from_duration(since)
}

impl Session {
    /// A TLS session to `addr` from `ip`, its handshake done.
    pub fn open(ip: &str, addr: &str) -> io::Result<Session> {
        use std::sync::OnceLock;
        static CONFIG: OnceLock<ferry_core::tls::TlsConfig> = OnceLock::new();
        let config = CONFIG.get_or_init(|| {
            // The authority the processes were given (a benchmark's), else
            // the tests'.
            let path = std::env::var_os("FERRY_CA")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| crate::test_authority().join("ca.pem"));
            let pem = std::fs::read_to_string(path).expect("the authority's certificate");
            let ca =
                ferry_core::tls::certs::certs_from_pem(&pem).expect("a certificate")[0].clone();
            ferry_core::tls::TlsConfig::client(ferry_core::tls::Trust::Ca(ca))
                .expect("a client configuration")
        });
        let tcp = connect_from(ip, addr)?;
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&now().as_micros().to_le_bytes());
        seed[8..16].copy_from_slice(&tcp.local_addr()?.port().to_le_bytes().repeat(4));
        let mut entropy = ferry_core::Entropy::from_seed(seed);
        let conn = with(&mut entropy, || config.connect_raw()).map_err(io::Error::other)?;
        let mut session = Session {
            stream: rustls::StreamOwned::new(conn, tcp),
            entropy,
        };
        let Session { stream, entropy } = &mut session;
        with(entropy, || stream.conn.complete_io(&mut stream.sock))?;
        Ok(session)
    }

    fn socket(&self) -> &TcpStream {
        &self.stream.sock
    }
}

fn with<R>(entropy: &mut ferry_core::Entropy, f: impl FnOnce() -> R) -> R {
    ferry_core::tls::provider::with_context(entropy, now(), f)
}

impl Read for Session {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Session { stream, entropy } = self;
        with(entropy, || stream.read(buf))
    }
}

impl Write for Session {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Session { stream, entropy } = self;
        with(entropy, || stream.write(buf))
    }
    fn flush(&mut self) -> io::Result<()> {
        let Session { stream, entropy } = self;
        with(entropy, || stream.flush())
    }
}

/// A connection the flooder holds: a silent TCP one, or a TLS session.
pub trait Held: Read {
    fn tcp(&self) -> &TcpStream;
}

impl Held for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Held for Session {
    fn tcp(&self) -> &TcpStream {
        self.socket()
    }
}

fn send<M: Writable<LittleEndian>>(s: &mut impl Write, msg: &M) -> io::Result<()> {
    let bytes = frame::encode(msg).map_err(io::Error::other)?;
    s.write_all(&bytes)?;
    s.flush()
}

/// The next message on `s`; `None` if it was closed first.
fn receive<M>(s: &mut impl Read) -> io::Result<Option<M>>
where
    M: for<'a> Readable<'a, LittleEndian> + Writable<LittleEndian>,
{
    let mut d = FrameDecoder::default();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(p) = d.next_payload().map_err(io::Error::other)? {
            return frame::decode(p).map(Some).map_err(io::Error::other);
        }
        match s.read(&mut buf) {
            Ok(0) => return Ok(None),
            Ok(n) => d.push(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::UnexpectedEof
                ) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e),
        }
    }
}

/// What one request to the balancer got.
#[derive(Debug)]
pub enum Asked {
    Assigned {
        addr: String,
        code: AuthCode,
    },
    /// "Too many requests from this address".
    TooMany,
    Other(String),
}

/// GET SERVER to `balancer`, from `ip`.
pub fn ask_balancer(ip: &str, balancer: &str) -> io::Result<Asked> {
    let mut s = Session::open(ip, balancer)?;
    let version = PROTOCOL_VERSION;
    send(&mut s, &BalancerMsg::GetServer { version })?;
    Ok(match receive::<BalancerMsg>(&mut s)? {
        Some(BalancerMsg::Assigned { addr, code, .. }) => Asked::Assigned { addr, code },
        Some(BalancerMsg::Refused(ferry_core::refusal::Refusal::TooMany { .. })) => Asked::TooMany,
        other => Asked::Other(format!("{other:?}")),
    })
}

/// HELLO with `code` to `server` from `ip`, then ACK, then silence: the
/// connection if the server took it, else what it said.
pub fn hello(ip: &str, server: &str, code: AuthCode) -> io::Result<Result<Session, String>> {
    let mut s = Session::open(ip, server)?;
    let version = PROTOCOL_VERSION;
    send(&mut s, &SessionMsg::Hello { version, code })?;
    match receive::<SessionMsg>(&mut s)? {
        Some(SessionMsg::HelloAck { .. }) => {
            send(&mut s, &SessionMsg::Ack)?;
            Ok(Ok(s))
        }
        other => Ok(Err(format!("{other:?}"))),
    }
}

/// Has the other end closed `s`? What it sent before (a refusal) is read
/// and returned.
pub fn closed_by_peer(s: &mut impl Held) -> (bool, Vec<u8>) {
    let mut said = Vec::new();
    if s.tcp().set_nonblocking(true).is_err() {
        return (true, said);
    }
    let mut buf = [0u8; 1024];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => said.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break true,
        }
    };
    let _ = s.tcp().set_nonblocking(false);
    (closed, said)
}

/// How a flood is going.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Requests to the balancer, and how they were answered.
    pub requests: u64,
    pub assigned: u64,
    pub told_to_wait: u64,
    pub other_answers: u64,
    /// Connections opened to servers that send nothing, and how many of
    /// them the servers closed (refused at once, or timed out).
    pub half_open: u64,
    pub half_open_closed: u64,
    /// HELLOs with a code, those the servers took, and those they closed
    /// afterwards (never logged in).
    pub hellos: u64,
    pub sessions: u64,
    pub sessions_closed: u64,
    /// Connections the flooder could not even open.
    pub connect_errors: u64,
}

impl Tally {
    /// Adds another flood's figures.
    pub fn add(&mut self, o: &Tally) {
        self.requests += o.requests;
        self.assigned += o.assigned;
        self.told_to_wait += o.told_to_wait;
        self.other_answers += o.other_answers;
        self.half_open += o.half_open;
        self.half_open_closed += o.half_open_closed;
        self.hellos += o.hellos;
        self.sessions += o.sessions;
        self.sessions_closed += o.sessions_closed;
        self.connect_errors += o.connect_errors;
    }
}

/// How hard to flood.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Threads asking the balancer back to back.
    pub requesters: usize,
    /// Half-open connections to keep open to each server.
    pub half_open: usize,
    /// Idle sessions to keep open to each server.
    pub idle: usize,
    /// Run the flood's threads at the lowest CPU priority (nice 19): on one
    /// machine, the flooder then stands for another machine, whose CPU is
    /// not the cluster's, and what is measured is what the flood costs the
    /// cluster's processes.
    pub nice: bool,
}

/// Lowers the calling thread's CPU priority to nice 19 (on Linux, nice
/// is per thread); a failure leaves it as it was.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid and setpriority take no pointers; they act on the
    // calling thread only.
    unsafe {
        let tid = libc::gettid();
        let _ = libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19);
    }
}

/// A flood running on threads of its own until [`Flood::stop`].
pub struct Flood {
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    threads: Vec<JoinHandle<()>>,
}

type Codes = Arc<Mutex<VecDeque<(String, AuthCode)>>>;

fn count(tally: &Mutex<Tally>, f: impl FnOnce(&mut Tally)) {
    f(&mut tally.lock().unwrap_or_else(|e| e.into_inner()));
}

impl Flood {
    /// Floods `balancer` and `servers` (their addresses as the balancer
    /// names them) from [`FLOOD_IP`].
    pub fn start(balancer: &str, servers: &[String], plan: Plan) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let codes: Codes = Arc::default();
        let mut threads = Vec::new();
        for _ in 0..plan.requesters {
            let (stop, tally, codes) = (stop.clone(), tally.clone(), codes.clone());
            let balancer = balancer.to_string();
            threads.push(thread::spawn(move || {
                if plan.nice {
                    lower_priority();
                }
                while !stop.load(Ordering::Relaxed) {
                    request(&balancer, &tally, &codes);
                }
            }));
        }
        for server in servers {
            let (stop, tally, codes) = (stop.clone(), tally.clone(), codes.clone());
            let server = server.clone();
            threads.push(thread::spawn(move || {
                if plan.nice {
                    lower_priority();
                }
                hold(&server, plan, &stop, &tally, &codes);
            }));
        }
        Flood {
            stop,
            tally,
            threads,
        }
    }

    pub fn tally(&self) -> Tally {
        self.tally.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Stops the flood and closes its connections.
    pub fn stop(mut self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.tally()
    }
}

/// One request to the balancer; a code it gives joins `codes`.
fn request(balancer: &str, tally: &Mutex<Tally>, codes: &Codes) {
    let asked = ask_balancer(FLOOD_IP, balancer);
    count(tally, |t| match &asked {
        Ok(Asked::Assigned { .. }) => {
            t.requests += 1;
            t.assigned += 1;
        }
        Ok(Asked::TooMany) => {
            t.requests += 1;
            t.told_to_wait += 1;
        }
        Ok(Asked::Other(_)) => {
            t.requests += 1;
            t.other_answers += 1;
        }
        Err(_) => t.connect_errors += 1,
    });
    if let Ok(Asked::Assigned { addr, code }) = asked {
        let mut q = codes.lock().unwrap_or_else(|e| e.into_inner());
        q.push_back((addr, code));
        // Codes are good for seconds; old ones are worth nothing.
        while q.len() > 1000 {
            q.pop_front();
        }
    }
}

/// Keeps `plan.half_open` silent connections and `plan.idle` idle
/// sessions open to `server`, opening new ones as it closes them.
fn hold(server: &str, plan: Plan, stop: &AtomicBool, tally: &Mutex<Tally>, codes: &Codes) {
    let mut half_open: Vec<TcpStream> = Vec::new();
    let mut idle: Vec<Session> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let before = (half_open.len(), idle.len());
        half_open.retain_mut(|s| !closed_by_peer(s).0);
        idle.retain_mut(|s| !closed_by_peer(s).0);
        count(tally, |t| {
            t.half_open_closed += (before.0 - half_open.len()) as u64;
            t.sessions_closed += (before.1 - idle.len()) as u64;
        });
        // At most a burst of each per round, so that a refusing server is
        // asked again and again rather than all at once. Sessions first:
        // they hold slots, and the server counts both kinds together.
        for _ in 0..plan.idle.saturating_sub(idle.len()).min(32) {
            let code = {
                let mut q = codes.lock().unwrap_or_else(|e| e.into_inner());
                let at = q.iter().position(|(a, _)| a == server);
                at.and_then(|i| q.remove(i))
            };
            let Some((_, code)) = code else {
                break;
            };
            count(tally, |t| t.hellos += 1);
            match hello(FLOOD_IP, server, code) {
                Ok(Ok(s)) => {
                    idle.push(s);
                    count(tally, |t| t.sessions += 1);
                }
                Ok(Err(_)) => {}
                Err(_) => count(tally, |t| t.connect_errors += 1),
            }
        }
        for _ in 0..plan.half_open.saturating_sub(half_open.len()).min(32) {
            match connect_from(FLOOD_IP, server) {
                Ok(s) => {
                    half_open.push(s);
                    count(tally, |t| t.half_open += 1);
                }
                Err(_) => count(tally, |t| t.connect_errors += 1),
            }
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The refusal in what a server sent before it closed a connection, if
/// that was one.
pub fn refusal_in(bytes: &[u8]) -> Option<ferry_core::refusal::Refusal> {
    let mut d = FrameDecoder::default();
    d.push(bytes);
    match frame::decode::<SessionMsg>(d.next_payload().ok()??) {
        Ok(SessionMsg::Refused(r)) => Some(r),
        _ => None,
    }
}
