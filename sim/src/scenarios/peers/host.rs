//! A peer host: `ferry peer` as a turmoil host, its [`PeerNode`] in the
//! one driver on a shared directory the harness owns. The host listens
//! from its start, registers through its server, and carries out the
//! commands the harness queues for it (its script, then the final PUT);
//! every event it sees goes into the shared record, with the peer at the
//! other end of the connection it happened on, for the checks.
//!
//! A crash is turmoil's (the harness crashes and bounces the host); so is a
//! rejoin after a quit: the quit node idles until the harness bounces the
//! host, which starts a new node on the same directory, as a new `ferry
//! peer` process would. (Replacing the node inside the running driver
//! would hand the new node's connection ids, which start where the old
//! node's did, the bytes of the old node's connections still open.)

use crate::disk::{SharedDir, SimFiles};
use crate::driver::{Driver, DriverConfig, Flow, SharedLatency};
use crate::harness::{server_host, server_port};
use crate::seeds::SimRng;
use crate::trace::SharedTrace;
use ferry_core::accounts::token::SessionToken;
use ferry_core::peer::{PeerConfig, PeerError, PeerEvent, PeerNode};
use ferry_core::replication::sync_round::Token;
use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;
use tokio::time::Instant;
use turmoil::net::TcpListener;

/// Where every peer listens.
pub const PEER_PORT: u16 = 9000;
/// How often a peer host looks at its command queue.
const POLL: Duration = Duration::from_millis(50);
/// Pause before registering again after REGISTER FAIL (its server down).
const REREGISTER_AFTER: Duration = Duration::from_secs(1);

/// The host name of peer `k` (from 0).
pub fn peer_host(k: usize) -> String {
    format!("peer{}", k + 1)
}

/// What the harness asks a peer to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Connect(usize),
    /// PUT `name` on one of the open connections (`pick` chooses which).
    Put {
        pick: u64,
        name: String,
    },
    Get {
        pick: u64,
        name: String,
    },
    /// A name the node must refuse before anything is sent.
    BadName {
        name: String,
        put: bool,
    },
    Quit,
    /// A new node on the same directory, registering again.
    Rejoin,
    /// Connect to the peer and PUT `name` once the connection is open.
    FinalPut {
        to: usize,
        name: String,
    },
    /// SYNC: ask the cluster for a round (or join the one running).
    Sync,
}

/// One event a peer told, with the peer at the other end of its
/// connection, if it has one.
#[derive(Clone, Debug)]
pub struct Seen {
    pub peer: usize,
    pub at: Duration,
    pub event: PeerEvent,
    pub remote: Option<usize>,
    /// The node that told it (see [`PeerState::incarnation`]).
    pub incarnation: u32,
    /// The node's peer id and the highest write token it had heard when
    /// it told the event: what a file that landed was fenced against.
    pub me: Option<u64>,
    pub highest: Token,
}

/// What the harness and peer `k`'s incarnations share.
pub struct PeerState {
    pub name: String,
    /// The server it registers through.
    pub server: u32,
    pub dir: SharedDir,
    pub token: Option<SessionToken>,
    /// The running node, if the host is up.
    pub node: Option<Rc<RefCell<PeerNode>>>,
    pub commands: VecDeque<Command>,
    /// Events not yet taken by the harness's checks.
    pub events: Vec<Seen>,
    /// Things a host saw go wrong that no event says (a quit that left a
    /// temporary file, a bad name taken).
    pub problems: Vec<String>,
    pub counts: BTreeMap<&'static str, u64>,
    pub starts: u32,
    /// Counts the nodes: one more at every start and every rejoin, so that
    /// a check can tell one node's events from the next one's.
    pub incarnation: u32,
    /// The peer's disk reads' latency, kept across its restarts (a
    /// writer stalled mid-turn has a slow disk for a while).
    pub read_latency: SharedLatency,
}

impl PeerState {
    pub fn new(k: usize, server: u32, dir: SharedDir) -> Self {
        PeerState {
            name: peer_host(k),
            server,
            dir,
            token: None,
            node: None,
            commands: VecDeque::new(),
            events: Vec::new(),
            problems: Vec::new(),
            counts: BTreeMap::new(),
            starts: 0,
            incarnation: 0,
            read_latency: SharedLatency::default(),
        }
    }

    pub fn count(&mut self, what: &'static str) {
        *self.counts.entry(what).or_default() += 1;
    }
}

pub type SharedPeers = Rc<RefCell<Vec<PeerState>>>;

/// Where peer `k` listens, as it registers (`IP:PORT`). Inside the
/// simulation only.
pub fn peer_addr(k: usize) -> String {
    format!("{}:{PEER_PORT}", turmoil::lookup(peer_host(k)))
}

/// Registers peer `k`'s host, which starts at once.
pub fn add_peer_host(
    sim: &mut turmoil::Sim<'static>,
    k: usize,
    peers: &SharedPeers,
    trace: &SharedTrace,
    seed: u64,
) {
    let (peers, trace) = (peers.clone(), trace.clone());
    sim.host(peer_host(k), move || {
        let (peers, trace) = (peers.clone(), trace.clone());
        async move { run_peer(k, peers, trace, seed).await }
    });
}

/// One incarnation of peer `k`: up until crashed.
async fn run_peer(k: usize, peers: SharedPeers, trace: SharedTrace, seed: u64) -> turmoil::Result {
    let name = peer_host(k);
    let (dir, token, server, starts, read_latency) = {
        let mut all = peers.borrow_mut();
        let p = &mut all[k];
        p.starts += 1;
        p.incarnation += 1;
        let latency = p.read_latency.clone();
        (p.dir.clone(), p.token.clone(), p.server, p.starts, latency)
    };
    let leftover = dir.borrow_mut().start();
    trace.borrow_mut().record_now(
        &name,
        format!("up (start #{starts}); {leftover} leftover temporary file(s) removed"),
    );
    let listener = TcpListener::bind(("0.0.0.0", PEER_PORT)).await?;
    let cfg = PeerConfig::new(peer_addr(k), token);
    let node = Rc::new(RefCell::new(PeerNode::new(cfg)));
    peers.borrow_mut()[k].node = Some(node.clone());
    let dcfg = DriverConfig {
        seed: SimRng::new(seed, 300 + k as u64).next_u64() ^ u64::from(starts),
        read_latency,
        ..DriverConfig::default()
    };
    let mut driver = Driver::new(&name, node, trace.clone(), dcfg).with_files(SimFiles::Peer(dir));
    driver.listen(listener);
    let register_at = format!("{}:{}", server_host(server), server_port(server));
    let mut script = Script {
        k,
        peers: peers.clone(),
        register_at,
        links: BTreeMap::new(),
        reregister: None,
        final_put: None,
    };
    script.register(&mut driver);
    loop {
        let until = Instant::now() + POLL;
        let (peers, links) = (&script.peers, &mut script.links);
        let mut failed_register = false;
        driver
            .run(Some(until), |_, ev| {
                failed_register |= matches!(ev, PeerEvent::RegisterFailed { .. });
                record(k, peers, links, ev);
                Flow::Continue
            })
            .await;
        if let Some(e) = driver.failure() {
            return Err(format!("{name} stopped: {e}").into());
        }
        if failed_register {
            script.reregister = Some(Instant::now() + REREGISTER_AFTER);
        }
        script.tick(&mut driver);
    }
}

/// Notes `ev` of peer `k` in the shared record, with its remote peer.
fn record(k: usize, peers: &SharedPeers, links: &mut BTreeMap<u32, usize>, ev: &PeerEvent) {
    let mut all = peers.borrow_mut();
    let remote = match ev {
        PeerEvent::Connected { link, addr, .. } => {
            let r = (0..all.len()).find(|j| peer_addr(*j) == *addr);
            if let Some(r) = r {
                links.insert(*link, r);
            }
            r
        }
        PeerEvent::Accepted { link, from, .. } => {
            let host = (from.parse::<SocketAddr>().ok())
                .and_then(|a| turmoil::reverse_lookup(a.ip()))
                .unwrap_or_default();
            let r = (0..all.len()).find(|j| peer_host(*j) == host);
            if let Some(r) = r {
                links.insert(*link, r);
            }
            r
        }
        PeerEvent::PutDone { link, .. }
        | PeerEvent::GetDone { link, .. }
        | PeerEvent::Received { link, .. } => links.get(link).copied(),
        _ => None,
    };
    let p = &mut all[k];
    // The node is not borrowed while the driver passes its events on.
    let (me, highest) = (p.node.as_ref())
        .and_then(|n| n.try_borrow().ok())
        .map_or((None, Token::default()), |n| (n.me(), n.sync_highest()));
    p.count(match ev {
        PeerEvent::Registered { .. } => "registrations (REGISTER OK)",
        PeerEvent::RegisterFailed { .. } => "REGISTER FAIL",
        PeerEvent::TrackerLost { .. } => "registrations lost and made again",
        PeerEvent::Update { .. } => "UPDATEs heard",
        PeerEvent::Connected { .. } => "CONNECT OK",
        PeerEvent::ConnectFailed { .. } => "CONNECT FAIL",
        PeerEvent::Accepted { .. } => "connections admitted",
        PeerEvent::Refused { .. } => "connections refused",
        PeerEvent::Closed { .. } => "connections closed",
        PeerEvent::PutDone { .. } => "PUT OK",
        PeerEvent::PutFailed { .. } => "PUT FAIL",
        PeerEvent::GetDone { .. } => "GET OK",
        PeerEvent::GetFailed { .. } => "GET FAIL",
        PeerEvent::Received { .. } => "files received",
        PeerEvent::ReceiveFailed { .. } => "receives failed",
        PeerEvent::Served { .. } => "files served",
        PeerEvent::SyncStarted { .. } => "SYNC asked",
        PeerEvent::SyncFailed { .. } => "SYNC FAIL",
        PeerEvent::SyncWriting { .. } => "SYNC OK (turns to write)",
        PeerEvent::SyncReading { .. } => "SYNC READ",
        PeerEvent::SyncFin { .. } => "SYNC FIN",
        PeerEvent::SyncSkipped { .. } => "readers skipped in a turn",
        PeerEvent::SyncEnd { .. } => "SYNC END",
        PeerEvent::SetAside { .. } => "versions set aside",
    });
    p.events.push(Seen {
        peer: k,
        at: turmoil::sim_elapsed().unwrap_or_default(),
        event: ev.clone(),
        remote,
        incarnation: p.incarnation,
        me,
        highest,
    });
}

/// A peer incarnation's own state between polls.
struct Script {
    k: usize,
    peers: SharedPeers,
    register_at: String,
    /// The other peer of each connection of the current node.
    links: BTreeMap<u32, usize>,
    reregister: Option<Instant>,
    /// The final PUT's connection and name, once it is dialed.
    final_put: Option<(u32, String)>,
}

impl Script {
    fn register(&mut self, driver: &mut Driver<PeerNode>) {
        let addr = self.register_at.clone();
        driver.with_node(|n, now| n.register(now, addr));
    }

    /// Carries out the commands queued, and what waits for a moment.
    fn tick(&mut self, driver: &mut Driver<PeerNode>) {
        if self.reregister.is_some_and(|at| at <= Instant::now()) {
            self.reregister = None;
            self.register(driver);
        }
        if let Some((link, name)) = self.final_put.clone() {
            let open = driver
                .with_node(|n, _| (n.links().iter()).any(|l| l.link == link && l.peer.is_some()));
            if open {
                self.final_put = None;
                let r = driver.with_node(|n, _| n.put(link, &name));
                self.note(
                    r.err()
                        .map(|e| format!("final PUT of {name} did not start: {e}")),
                );
            }
        }
        loop {
            let cmd = self.peers.borrow_mut()[self.k].commands.pop_front();
            let Some(cmd) = cmd else {
                return;
            };
            self.carry_out(driver, cmd);
        }
    }

    fn carry_out(&mut self, driver: &mut Driver<PeerNode>, cmd: Command) {
        let open = |driver: &mut Driver<PeerNode>, pick: u64| -> Option<u32> {
            let open: Vec<u32> = driver.with_node(|n, _| {
                (n.links().into_iter())
                    .filter(|l| l.peer.is_some())
                    .map(|l| l.link)
                    .collect()
            });
            (!open.is_empty()).then(|| open[(pick % open.len() as u64) as usize])
        };
        match cmd {
            Command::Connect(j) => {
                let addr = peer_addr(j);
                let r = driver.with_node(|n, now| n.connect(now, addr));
                if let Err(e) = r {
                    self.note(Some(format!("connect to peer{} refused: {e}", j + 1)));
                }
            }
            Command::Put { pick, name } | Command::Get { pick, name }
                if open(driver, pick).is_none() =>
            {
                let _ = (pick, name);
                self.count("operations skipped: no open connection");
            }
            Command::Put { pick, name } => {
                let link = open(driver, pick).unwrap_or_default();
                let r = driver.with_node(|n, _| n.put(link, &name));
                self.unexpected(r, &name);
            }
            Command::Get { pick, name } => {
                let link = open(driver, pick).unwrap_or_default();
                let r = driver.with_node(|n, _| n.get(link, &name));
                self.unexpected(r, &name);
            }
            Command::BadName { name, put } => {
                let link = open(driver, 0).unwrap_or(1);
                let r = driver.with_node(|n, _| match put {
                    true => n.put(link, &name),
                    false => n.get(link, &name),
                });
                match r {
                    Err(PeerError::BadName(_)) => self.count("bad names refused"),
                    other => self.note(Some(format!(
                        "the bad name {name:?} was not refused locally: {other:?}"
                    ))),
                }
            }
            Command::Quit => {
                driver.with_node(|n, _| n.quit());
                self.reregister = None;
                self.final_put = None;
                self.count("quits");
            }
            // The harness restarts the host: a new process (see
            // `Peers::rejoin`).
            Command::Rejoin => {}
            Command::Sync => match driver.with_node(|n, now| n.sync(now)) {
                Ok(()) => self.count("SYNC commands"),
                Err(_) => self.count("SYNC commands not sent (not registered, or busy)"),
            },
            Command::FinalPut { to, name } => {
                let addr = peer_addr(to);
                match driver.with_node(|n, now| n.connect(now, addr)) {
                    Ok(link) => self.final_put = Some((link, name)),
                    Err(e) => self.note(Some(format!("final connect refused: {e}"))),
                }
            }
        }
    }

    /// A good name's PUT or GET on an open connection starts.
    fn unexpected(&mut self, r: Result<(), PeerError>, name: &str) {
        if let Err(e) = r {
            self.note(Some(format!("PUT/GET of {name:?} did not start: {e}")));
        }
    }

    fn note(&mut self, problem: Option<String>) {
        if let Some(p) = problem {
            self.peers.borrow_mut()[self.k].problems.push(p);
        }
    }

    fn count(&mut self, what: &'static str) {
        self.peers.borrow_mut()[self.k].count(what);
    }
}
