//! The "peers" scenario: four `ferry peer` hosts on a three-server cluster
//! (server 1 the master, every server with its store), each sharing a
//! directory seeded with files whose names collide across peers. Each
//! peer registers through its own server, then follows a seeded script:
//! connect, PUT, GET, a bad name now and then, quit and rejoin; meanwhile
//! servers crash and restart (the master too), a follower is cut off, and
//! peers crash and come back (or one stays down). Then the cluster is
//! healed: every live peer must hear the same list, the registry's, with
//! exactly the live peers, a last PUT between two of them must work, and a
//! last SYNC round among the live peers must end at every one of them with
//! their directories alike.
//!
//! SYNC rounds: in most runs a peer or two say `sync` while the faults
//! strike; the plan may crash the writer of a given turn a moment into it,
//! crash the master a moment into the first round, or stall a writer (a
//! slow disk, its messages to and from its server held) so that its lease
//! runs out while it still sends and the next writer's token fences it
//! off.
//!
//! Invariants (`invariants.rs`), after every step: the replicas' logs
//! (`checkers::replica_log`); nothing outside a directory, no content a
//! peer did not hold under that name, no file replaced or lost; every
//! admitted or CONNECT OK peer a registration of the committed log, at
//! its address; every PUT OK, GET OK and "received" true of both
//! directories; and the rounds' invariants (`rounds.rs`): at most one valid
//! write lease, no write under a stale token, each peer granted once per
//! round, a quiet round's directories alike with every version kept. After
//! the heal: the lists, the last PUT, and the last round.

mod host;
pub mod invariants;
mod rounds;

use crate::checkers::replica_log::{converged, ReplicaChecks};
use crate::clients::account::{add_account_client, AccountPlan, AccountRecord, Login};
use crate::clients::account::{SharedRecords, TryResult};
use crate::disk::shared_dir;
use crate::driver::DriverConfig;
use crate::harness::{fault_text, replicated_faults, Details, Fault, FaultParams, Harness};
use crate::harness::{Outcome, Settle, Settling, SimParams, EPOCH_SECS, MASTER};
use crate::seeds::{replay_command_in, Preset, SimRng};
use crate::trace::secs;
use ferry_core::accounts::password::PasswordParams;
use ferry_core::peer::PeerEvent;
use ferry_core::replication::ReplicaConfig;
use ferry_core::server::{Response, ServerConfig};
use host::{add_peer_host, peer_host, Command, PeerState, SharedPeers, PEER_PORT};
use invariants::{check_admission, check_transfers, joins, lists_converged, DirWatch};
use rounds::Rounds;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

const USERS: [&str; 4] = ["alice", "bob", "carol", "dave"];
/// Few names, so that peers hold different files under one name.
const NAMES: [&str; 6] = [
    "notes.txt",
    "photo.jpg",
    "empty",
    "song (live).mp3",
    "data.bin",
    "report.pdf",
];
/// Names the node must refuse before anything leaves it.
const BAD_NAMES: [&str; 5] = ["../x", "a/b", "..", "bell\u{7}name", "/etc/passwd"];
/// How long the healed cluster and the peers get to agree: a peer left
/// down is expired when its 30 s lease runs out.
const SETTLE_MAX: Duration = Duration::from_secs(90);
/// How long the last PUT gets.
const FINAL_MAX: Duration = Duration::from_secs(20);
const FINAL_NAME: &str = "final-check.bin";
/// How long the last SYNC round gets, from the last PUT (a round left
/// running by the faults may have to wait for a lease of 30 s first).
const FINAL_SYNC_MAX: Duration = Duration::from_secs(120);
/// Last rounds asked before one must be quiet.
const FINAL_SYNC_TRIES: u32 = 3;
/// A master crash the plan aims at the first round, as `Fault` numbers it.
const ROUND_MASTER: u8 = 9;

/// The knobs; [`PeersConfig::swarm`] draws them from a seed.
#[derive(Clone, Debug)]
pub struct PeersConfig {
    pub preset: Preset,
    pub peers: usize,
    pub latency: (Duration, Duration),
    pub master_crash_pct: u32,
    /// Peers crashed in the run (each restarted, but maybe one).
    pub peer_crashes: u32,
    /// Chance (percent) that the first peer crashed stays down.
    pub stays_down_pct: u32,
    /// Chance (percent) that peers say `sync` while the faults strike.
    pub sync_pct: u32,
    /// Chances (percent), in a run with SYNC: the writer of a turn crashes
    /// a moment into it; the master crashes a moment into the first
    /// round; a writer stalls (slow disk, its server's messages held) until
    /// its lease runs out.
    pub writer_crash_pct: u32,
    pub round_master_crash_pct: u32,
    pub stall_pct: u32,
    pub tick: Duration,
    pub duration: Duration,
}

impl Default for PeersConfig {
    fn default() -> Self {
        PeersConfig {
            preset: Preset::Custom,
            peers: 4,
            latency: (Duration::from_millis(1), Duration::from_millis(25)),
            master_crash_pct: 35,
            peer_crashes: 1,
            stays_down_pct: 30,
            sync_pct: 85,
            writer_crash_pct: 35,
            round_master_crash_pct: 30,
            stall_pct: 12,
            // 3 ms, not 2: SYNC rounds doubled the simulated time of a run
            // (a last round, leases of 30 s run out mid-round), and a step
            // costs the same whatever happens in it.
            tick: Duration::from_millis(3),
            duration: Duration::from_secs(300),
        }
    }
}

impl PeersConfig {
    pub fn swarm(seed: u64) -> Self {
        let mut rng = SimRng::new(seed, 41);
        let max_latency = *rng.pick(&[5, 25, 60]);
        PeersConfig {
            preset: Preset::Swarm,
            latency: (Duration::from_millis(1), Duration::from_millis(max_latency)),
            peer_crashes: rng.range(0, 2) as u32,
            ..PeersConfig::default()
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerFault {
    Crash(usize),
    Restart(usize),
}

/// Faults aimed at a round: they strike when it gets there, not at a
/// time of the plan.
#[derive(Clone, Copy, Debug)]
pub struct RoundFaults {
    /// The writer of the `turn`th grant heard (from 1) crashes `after`
    /// its SYNC OK, and comes back `down` later.
    pub writer_crash: Option<(u32, Duration, Duration)>,
    /// The master crashes `after` the first round starts, and comes back
    /// `down` later.
    pub master_crash: Option<(Duration, Duration)>,
    /// The writer of the `turn`th grant stalls: each disk read takes
    /// `read`, and its messages to and from its server are held, for
    /// `lasts`.
    pub stall: Option<(u32, Duration, Duration)>,
}

/// What the scenario does at a time it decided during the run.
#[derive(Clone, Copy, Debug)]
enum Later {
    Server(Fault),
    Peer(PeerFault),
    Unstall,
}

/// The concrete run a seed describes; times count from the end of the
/// setup.
#[derive(Clone, Debug)]
pub struct PeersPlan {
    /// Each peer's initial files.
    pub files: Vec<Vec<(String, Vec<u8>)>>,
    /// Each peer's commands, by time.
    pub scripts: Vec<Vec<(Duration, Command)>>,
    pub faults: Vec<(Duration, Fault)>,
    pub peer_faults: Vec<(Duration, PeerFault)>,
    pub round_faults: RoundFaults,
    /// The peer crashed that the plan does not restart, if any.
    pub stays_down: Option<usize>,
}

impl PeersPlan {
    pub fn new(seed: u64, cfg: &PeersConfig) -> Self {
        let mut rng = SimRng::new(seed, 42);
        let files: Vec<Vec<(String, Vec<u8>)>> =
            (0..cfg.peers).map(|_| initial_files(&mut rng)).collect();
        let scripts = (0..cfg.peers)
            .map(|k| {
                let own: Vec<String> = files[k].iter().map(|(n, _)| n.clone()).collect();
                script(&mut rng, k, cfg.peers, &own)
            })
            .collect();
        let faults = replicated_faults(
            &mut rng,
            &FaultParams {
                servers: 3,
                master: MASTER,
                fault_window: (Duration::from_millis(300), Duration::from_secs(9)),
                other_follower_cut_pct: 75,
                master_crash_pct: cfg.master_crash_pct,
            },
        );
        let mut peer_faults = Vec::new();
        let mut stays_down = None;
        for i in 0..cfg.peer_crashes {
            let k = rng.range(0, cfg.peers as u64 - 1) as usize;
            let at = rng.duration(Duration::from_millis(500), Duration::from_secs(10));
            peer_faults.push((at, PeerFault::Crash(k)));
            let stays = i == 0 && rng.chance(cfg.stays_down_pct);
            if stays {
                stays_down = Some(k);
            } else {
                let down = rng.duration(Duration::from_millis(200), Duration::from_secs(4));
                peer_faults.push((at + down, PeerFault::Restart(k)));
            }
        }
        peer_faults.sort_by_key(|(at, _)| *at);
        // SYNC draws from a stream of its own: the rest of a seed's plan is
        // what it was before rounds were added.
        let mut rng = SimRng::new(seed, 44);
        let mut scripts: Vec<Vec<(Duration, Command)>> = scripts;
        let mut syncs = 0;
        if rng.chance(cfg.sync_pct) {
            let k = rng.range(0, cfg.peers as u64 - 1) as usize;
            let at = rng.duration(Duration::from_secs(1), Duration::from_secs(10));
            scripts[k].push((at, Command::Sync));
            syncs += 1;
            if rng.chance(50) {
                // Late, when the scripts are mostly done: often quiet.
                let k = rng.range(0, cfg.peers as u64 - 1) as usize;
                let at = rng.duration(Duration::from_secs(12), Duration::from_secs(16));
                scripts[k].push((at, Command::Sync));
            }
            for s in &mut scripts {
                s.sort_by_key(|(at, _)| *at);
            }
        }
        let mut round_faults = RoundFaults {
            writer_crash: None,
            master_crash: None,
            stall: None,
        };
        if syncs > 0 {
            if rng.chance(cfg.writer_crash_pct) {
                let turn = rng.range(1, 4) as u32;
                let after = rng.duration(Duration::ZERO, Duration::from_millis(400));
                let down = rng.duration(Duration::from_millis(200), Duration::from_secs(4));
                round_faults.writer_crash = Some((turn, after, down));
            }
            if rng.chance(cfg.round_master_crash_pct) {
                let after = rng.duration(Duration::ZERO, Duration::from_millis(1500));
                let down = rng.duration(Duration::from_millis(500), Duration::from_secs(4));
                round_faults.master_crash = Some((after, down));
            }
            if rng.chance(cfg.stall_pct) {
                let turn = rng.range(1, 3) as u32;
                let read = rng.duration(Duration::from_secs(2), Duration::from_secs(4));
                // Just past its lease (30 s): the writer, fast again, sends
                // what it was sending while the reader has heard the next
                // token (and must cancel it); well within a session's
                // patience (60 s).
                let lasts = rng.duration(Duration::from_secs(31), Duration::from_secs(36));
                round_faults.stall = Some((turn, read, lasts));
            }
        }
        PeersPlan {
            files,
            scripts,
            faults,
            peer_faults,
            round_faults,
            stays_down,
        }
    }

    /// When the last planned thing happens.
    fn end(&self) -> Duration {
        let scripts = self.scripts.iter().flatten().map(|(at, _)| *at);
        let faults = self.faults.iter().map(|(at, _)| *at);
        let peers = self.peer_faults.iter().map(|(at, _)| *at);
        scripts.chain(faults).chain(peers).max().unwrap_or_default()
    }

    fn describe(&self, cfg: &PeersConfig) -> Vec<String> {
        let mut lines = vec![format!(
            "plan: 3 servers (server{MASTER} the master), {} peers, latency {}..{} ms; times after the setup",
            cfg.peers,
            cfg.latency.0.as_millis(),
            cfg.latency.1.as_millis()
        )];
        for (k, files) in self.files.iter().enumerate() {
            let list: Vec<String> = (files.iter())
                .map(|(n, c)| format!("{n} ({} bytes)", c.len()))
                .collect();
            lines.push(format!(
                "plan: {} ({}) registers through server{}, shares {}",
                peer_host(k),
                USERS[k % USERS.len()],
                k % 3 + 1,
                list.join(", ")
            ));
            for (at, c) in &self.scripts[k] {
                lines.push(format!("plan: {} at {}: {c:?}", peer_host(k), secs(*at)));
            }
        }
        for (at, f) in &self.faults {
            lines.push(format!("plan: {} at {}", fault_text(*f, true), secs(*at)));
        }
        for (at, f) in &self.peer_faults {
            lines.push(format!("plan: {} at {}", peer_fault_text(*f), secs(*at)));
        }
        let rf = &self.round_faults;
        if let Some((turn, after, down)) = rf.writer_crash {
            lines.push(format!(
                "plan: the writer of grant #{turn} crashes {} into its turn, back {} later",
                secs(after),
                secs(down)
            ));
        }
        if let Some((after, down)) = rf.master_crash {
            lines.push(format!(
                "plan: the master crashes {} into the first round, back {} later",
                secs(after),
                secs(down)
            ));
        }
        if let Some((turn, read, lasts)) = rf.stall {
            lines.push(format!(
                "plan: the writer of grant #{turn} stalls (disk reads of {}, messages to and from its server held) for {}",
                secs(read),
                secs(lasts)
            ));
        }
        lines
    }
}

fn peer_fault_text(f: PeerFault) -> String {
    match f {
        PeerFault::Crash(k) => format!("crash {}", peer_host(k)),
        PeerFault::Restart(k) => format!("restart {} on its directory", peer_host(k)),
    }
}

/// One to three files of the pool, of edge sizes or random ones.
fn initial_files(rng: &mut SimRng) -> Vec<(String, Vec<u8>)> {
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for _ in 0..rng.range(1, 3) {
        let name = rng.pick(&NAMES).to_string();
        let size = match name.as_str() {
            "empty" => 0,
            _ => match rng.range(0, 4) {
                0 => *rng.pick(&[1, 4095, 4096, 8192, 131_072]),
                1 => rng.range(64 * 1024, 200 * 1024) as usize,
                _ => rng.range(2, 64 * 1024) as usize,
            },
        };
        let content = (0..size).map(|_| rng.next_u64() as u8).collect();
        files.insert(name, content);
    }
    files.into_iter().collect()
}

/// Peer `k`'s commands: a first connect, then 4–10 more within 1–12 s of
/// the setup's end. A PUT offers mostly one of the peer's own files.
fn script(rng: &mut SimRng, k: usize, peers: usize, own: &[String]) -> Vec<(Duration, Command)> {
    let other = |rng: &mut SimRng| (k + rng.range(1, peers as u64 - 1) as usize) % peers;
    let first = rng.duration(Duration::from_millis(500), Duration::from_secs(2));
    let mut cmds = vec![(first, Command::Connect(other(rng)))];
    for _ in 0..rng.range(4, 10) {
        let at = rng.duration(Duration::from_secs(1), Duration::from_secs(12));
        let name = rng.pick(&NAMES).to_string();
        let pick = rng.next_u64();
        let cmd = match rng.range(0, 99) {
            0..=24 => Command::Connect(other(rng)),
            25..=54 => Command::Put {
                pick,
                name: match own.is_empty() || rng.chance(25) {
                    true => name,
                    false => rng.pick(own).clone(),
                },
            },
            55..=86 => Command::Get { pick, name },
            87..=94 => Command::BadName {
                name: rng.pick(&BAD_NAMES).to_string(),
                put: rng.chance(50),
            },
            _ => {
                let back = rng.duration(Duration::from_millis(300), Duration::from_secs(3));
                cmds.push((at + back, Command::Rejoin));
                Command::Quit
            }
        };
        cmds.push((at, cmd));
    }
    cmds.sort_by_key(|(at, _)| *at);
    cmds
}

/// What a peers run adds to its [`Outcome`].
#[derive(Debug)]
pub struct PeersDetails {
    pub counts: Vec<(&'static str, u64)>,
}

pub type PeersOutcome = Outcome<PeersDetails>;

impl Details for PeersDetails {
    fn counts(&self) -> Vec<(&'static str, u64)> {
        self.counts.clone()
    }
}

enum Phase {
    /// Users register and log in; no faults.
    Setup,
    /// Faults strike; peers follow their scripts.
    Safety { t0: Duration },
    /// Everything is healed; the lists must agree.
    Healing(Settle),
    /// The last PUT, from the first live peer to the second.
    Final { since: Duration, from: usize },
    /// The last SYNC round, asked by the first live peer once no round
    /// runs.
    FinalSync {
        since: Duration,
        asked: Option<Duration>,
    },
}

/// Runs the peers scenario for `seed` and checks every invariant.
pub fn run_peers_scenario(seed: u64, cfg: &PeersConfig) -> PeersOutcome {
    let plan = PeersPlan::new(seed, cfg);
    let mut p = Peers::new(seed, cfg, &plan);
    let mut phase = Phase::Setup;
    loop {
        if let Phase::Safety { t0 } = phase {
            p.h.inject_due(t0);
            p.due(t0);
        }
        if !p.step() {
            break;
        }
        let now = p.h.now();
        match &mut phase {
            Phase::Setup => {
                if !p.accounts.borrow().iter().all(|r| r.finished) {
                    continue;
                }
                if let Err(why) = p.start_peers() {
                    p.h.violations.push(why);
                    break;
                }
                phase = Phase::Safety { t0: now };
            }
            Phase::Safety { t0 } => {
                // Faults aimed at rounds may still be due (a stall lasts
                // up to a minute).
                if now >= *t0 + plan.end() + Duration::from_secs(3) && p.later.is_empty() {
                    p.heal();
                    phase = Phase::Healing(Settle::new(now, SETTLE_MAX));
                }
            }
            Phase::Healing(settle) => {
                let h = &p.h;
                let (peers, live) = (&p.peers, p.live());
                let agreed = || {
                    h.with_views(|v| {
                        let state = converged(v, 3)?;
                        let lists = lists_converged(v, &peers.borrow(), &live)?;
                        Ok(format!("{state}; {lists}"))
                    })
                };
                match settle.poll(now, h.steps, None, agreed) {
                    Settling::Waiting => {}
                    Settling::Settled(state) => {
                        p.h.record(format!("converged: {state}"));
                        match p.final_put() {
                            Some(from) => phase = Phase::Final { since: now, from },
                            None => break,
                        }
                    }
                    Settling::TimedOut(why) => {
                        p.h.violations.push(why);
                        break;
                    }
                }
            }
            Phase::Final { since, from } => match p.final_outcome.clone() {
                Some(Ok(())) => {
                    phase = Phase::FinalSync {
                        since: now,
                        asked: None,
                    }
                }
                Some(Err(why)) => {
                    p.h.violations.push(why);
                    break;
                }
                None if now > *since + FINAL_MAX => {
                    p.h.violations.push(format!(
                        "the last PUT from {} did not finish within {}",
                        peer_host(*from),
                        secs(FINAL_MAX)
                    ));
                    break;
                }
                None => {}
            },
            Phase::FinalSync { since, asked } => match p.final_sync(now, *since, asked) {
                Ok(false) => {}
                Ok(true) => break,
                Err(why) => {
                    p.h.violations.push(why);
                    break;
                }
            },
        }
    }
    p.finish_admission();
    let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
    for s in p.peers.borrow().iter() {
        for (what, n) in &s.counts {
            *counts.entry(what).or_default() += n;
        }
    }
    counts.insert("peer crashes", p.peer_crashes);
    let ended = p.rounds.counts.get("rounds ended").copied().unwrap_or(0);
    counts.extend(std::mem::take(&mut p.rounds.counts));
    if cfg.latency.1 >= Duration::from_millis(25) {
        counts.insert("rounds ended under 25-60 ms latency", ended);
    }
    counts.insert("entries committed", p.replicas.watch.committed() as u64);
    let details = PeersDetails {
        counts: counts.into_iter().collect(),
    };
    let replay = replay_command_in("peers", seed, cfg.preset);
    p.h.finish(replay, details)
}

/// The harness, and what the peers scenario keeps beside it.
struct Peers<'c> {
    cfg: &'c PeersConfig,
    plan: &'c PeersPlan,
    h: Harness,
    accounts: SharedRecords,
    peers: SharedPeers,
    /// Each peer's commands still to come, the next one last.
    scripts: Vec<Vec<(Duration, Command)>>,
    peer_faults: Vec<(Duration, PeerFault)>,
    down: Vec<bool>,
    /// Each peer's address (`IP:PORT`), once its host is registered.
    addrs: Vec<String>,
    dirs: DirWatch,
    /// Admissions whose peer id the committed log did not show yet.
    pending: Vec<host::Seen>,
    replicas: ReplicaChecks,
    peer_crashes: u64,
    /// The peer sending the last PUT, and how it ended.
    final_from: Option<usize>,
    final_outcome: Option<Result<(), String>>,
    rounds: Rounds,
    /// What the scenario decided to do later, by time.
    later: Vec<(Duration, Later)>,
    /// SYNC OKs heard so far (the round faults count grants by them).
    grants_heard: u32,
    /// Until the heal: faults may strike.
    faulting: bool,
    master_crash_armed: bool,
    /// The stalled writer and the server whose messages it has held.
    stalled: Option<(usize, u32)>,
    /// The last round: the peer that asked, the round it started, and the
    /// peers that heard its SYNC END.
    final_asker: Option<usize>,
    final_round: Option<u64>,
    final_ends: BTreeSet<usize>,
    final_tries: u32,
}

impl<'c> Peers<'c> {
    fn new(seed: u64, cfg: &'c PeersConfig, plan: &'c PeersPlan) -> Self {
        let params = SimParams {
            seed,
            duration: cfg.duration,
            tick: cfg.tick,
            latency: cfg.latency,
            servers: 3,
            stores: true,
        };
        let h = Harness::new(params, plan.faults.clone(), plan.describe(cfg));
        let accounts = (0..cfg.peers)
            .map(|k| {
                let user = USERS[k % USERS.len()];
                AccountRecord::new(AccountPlan {
                    name: user.to_string(),
                    username: user.to_string(),
                    password: format!("pw-{user}-{:08x}", seed as u32),
                    start: Duration::from_millis(100 * k as u64),
                    login: Login::SameSession,
                    attempts: 3,
                    must_succeed: true,
                })
            })
            .collect();
        let mut dirs = DirWatch::default();
        let peers = (0..cfg.peers)
            .map(|k| {
                let dir = shared_dir();
                for (name, content) in &plan.files[k] {
                    dir.borrow_mut().put(name, content, EPOCH_SECS * 1000);
                    dirs.provide(name, content);
                }
                PeerState::new(k, (k % 3) as u32 + 1, dir)
            })
            .collect();
        let mut scripts = plan.scripts.clone();
        for s in &mut scripts {
            s.reverse();
        }
        let mut peer_faults = plan.peer_faults.clone();
        peer_faults.reverse();
        let mut p = Peers {
            cfg,
            plan,
            h,
            accounts: Rc::new(RefCell::new(accounts)),
            peers: Rc::new(RefCell::new(peers)),
            scripts,
            peer_faults,
            down: vec![false; cfg.peers],
            addrs: Vec::new(),
            dirs,
            pending: Vec::new(),
            replicas: ReplicaChecks::default(),
            peer_crashes: 0,
            final_from: None,
            final_outcome: None,
            rounds: Rounds::default(),
            later: Vec::new(),
            grants_heard: 0,
            faulting: true,
            master_crash_armed: false,
            stalled: None,
            final_asker: None,
            final_round: None,
            final_ends: BTreeSet::new(),
            final_tries: 0,
        };
        p.h.add_balancer(|_| {});
        for id in 1..=3 {
            let server = ServerConfig {
                password: PasswordParams::TESTING,
                ..ServerConfig::new(id)
            };
            let replica = ReplicaConfig::new(id, MASTER, p.h.peers_of(id));
            (p.h).add_server(
                server,
                replica,
                DriverConfig::default(),
                Rc::new(|_, _, _| {}),
            );
        }
        for k in 0..cfg.peers {
            let (accounts, trace) = (&p.accounts, p.h.trace.clone());
            let name = USERS[k % USERS.len()];
            p.h.add_client(name, |sim| add_account_client(sim, k, accounts, &trace));
        }
        p
    }

    /// Hands each peer its user's login and starts the peer hosts.
    fn start_peers(&mut self) -> Result<(), String> {
        for (k, r) in self.accounts.borrow().iter().enumerate() {
            let token = r.login.iter().find_map(|t| match &t.result {
                TryResult::Answer(Response::LoggedIn { token, .. }) => Some(token.clone()),
                _ => None,
            });
            let Some(token) = token else {
                return Err(format!(
                    "setup: {} could not register and log in without faults",
                    r.plan.username
                ));
            };
            self.peers.borrow_mut()[k].token = Some(token);
        }
        self.h.record(
            "setup done: every user logged in; the peers start and the plan's clock starts",
        );
        let names: Vec<String> = (0..self.cfg.peers).map(peer_host).collect();
        let (peers, trace, seed) = (&self.peers, self.h.trace.clone(), self.h.seed);
        self.h.add_clients(&names, |sim| {
            for k in 0..names.len() {
                add_peer_host(sim, k, peers, &trace, seed);
            }
        });
        self.addrs = (names.iter())
            .map(|n| format!("{}:{PEER_PORT}", self.h.sim.lookup(n.as_str())))
            .collect();
        Ok(())
    }

    /// Queues the commands due, and crashes or restarts the peers due.
    fn due(&mut self, t0: Duration) {
        let now = self.h.now();
        for k in 0..self.scripts.len() {
            while self.scripts[k]
                .last()
                .is_some_and(|(at, _)| t0 + *at <= now)
            {
                let Some((_, cmd)) = self.scripts[k].pop() else {
                    break;
                };
                if self.down[k] {
                    continue;
                }
                match cmd {
                    Command::Rejoin => self.rejoin(k),
                    Command::Quit => {
                        self.rounds.disturb(now, format!("{} quit", peer_host(k)));
                        self.peers.borrow_mut()[k].commands.push_back(cmd);
                    }
                    cmd => self.peers.borrow_mut()[k].commands.push_back(cmd),
                }
            }
        }
        while self
            .peer_faults
            .last()
            .is_some_and(|(at, _)| t0 + *at <= now)
        {
            let Some((_, f)) = self.peer_faults.pop() else {
                break;
            };
            self.peer_fault(f);
        }
        self.later.sort_by_key(|(at, _)| *at);
        let due = self.later.iter().take_while(|(at, _)| *at <= now).count();
        for (_, l) in self.later.drain(..due).collect::<Vec<_>>() {
            match l {
                Later::Server(f) => self.h.inject(f),
                Later::Peer(f) => self.peer_fault(f),
                Later::Unstall => self.unstall(),
            }
        }
    }

    /// Peer `k`, which quit, comes back as a new process on its
    /// directory: the harness bounces its host. The quit must have left
    /// no temporary file behind.
    fn rejoin(&mut self, k: usize) {
        let now = self.h.now();
        self.rounds
            .disturb(now, format!("{} rejoined", peer_host(k)));
        self.h.record(format!(
            "{} rejoins: a new process on its directory",
            peer_host(k)
        ));
        let mut peers = self.peers.borrow_mut();
        let p = &mut peers[k];
        let leftover = p.dir.borrow().temps.len();
        // A stalled disk may still hold the quit's work when the new
        // process starts (which removes what is left, as `ferry peer`
        // does at its start): only a quit on a working disk must clean up.
        let slow = p.read_latency.get().1 > Duration::ZERO;
        if leftover > 0 && !slow {
            let why = format!("a quit left {leftover} temporary file(s) in the directory");
            p.problems.push(why);
        }
        p.node = None;
        p.commands.clear();
        p.count("rejoins after a quit");
        drop(peers);
        self.h.sim.bounce(peer_host(k));
    }

    /// A SYNC OK was heard by peer `k`: the round faults aimed at this
    /// grant strike.
    fn on_grant(&mut self, k: usize) {
        if !self.faulting {
            return;
        }
        self.grants_heard += 1;
        let now = self.h.now();
        let rf = self.plan.round_faults;
        if let Some((turn, after, down)) = rf.writer_crash {
            if turn == self.grants_heard {
                self.later
                    .push((now + after, Later::Peer(PeerFault::Crash(k))));
                let back = now + after + down;
                self.later.push((back, Later::Peer(PeerFault::Restart(k))));
            }
        }
        if let Some((turn, read, lasts)) = rf.stall {
            if turn == self.grants_heard && self.stalled.is_none() {
                let server = self.peers.borrow()[k].server;
                self.h.record(format!(
                    "!! {} stalls in its turn: disk reads of {}, its messages to and from server{server} held",
                    peer_host(k),
                    secs(read)
                ));
                self.peers.borrow()[k].read_latency.set((read, read));
                // Held, not dropped: the session outlives the stall (a
                // dropped segment would break its stream for good, and the
                // server would notice only after a minute's silence).
                self.h
                    .sim
                    .hold(peer_host(k), crate::harness::server_host(server));
                self.stalled = Some((k, server));
                self.later.push((now + lasts, Later::Unstall));
            }
        }
    }

    /// The first round started: the master crash aimed at it is armed.
    fn on_round(&mut self) {
        if self.master_crash_armed || !self.faulting {
            return;
        }
        self.master_crash_armed = true;
        if let Some((after, down)) = self.plan.round_faults.master_crash {
            let now = self.h.now();
            let crash = Later::Server(Fault::CrashMaster(ROUND_MASTER));
            let restart = Later::Server(Fault::RestartMaster(ROUND_MASTER));
            self.later.push((now + after, crash));
            self.later.push((now + after + down, restart));
        }
    }

    /// The stalled writer's disk is fast again and its link to its server
    /// repaired.
    fn unstall(&mut self) {
        let Some((k, server)) = self.stalled.take() else {
            return;
        };
        self.h.record(format!(
            "!! {} no longer stalls: its disk is fast and its messages to and from server{server} go on",
            peer_host(k)
        ));
        let zero = (Duration::ZERO, Duration::ZERO);
        self.peers.borrow()[k].read_latency.set(zero);
        self.h
            .sim
            .release(peer_host(k), crate::harness::server_host(server));
        let now = self.h.now();
        self.rounds
            .disturb(now, format!("{} stalled", peer_host(k)));
    }

    fn peer_fault(&mut self, f: PeerFault) {
        match f {
            PeerFault::Crash(k) if self.down[k] => return,
            PeerFault::Restart(k) if !self.down[k] => return,
            _ => {}
        }
        self.h.record(format!("!! {}", peer_fault_text(f)));
        let now = self.h.now();
        self.rounds.disturb(now, peer_fault_text(f));
        match f {
            PeerFault::Crash(k) => {
                if self.rounds.in_turn(k, &self.peers.borrow()) {
                    *self
                        .rounds
                        .counts
                        .entry("writers crashed mid-turn")
                        .or_default() += 1;
                }
                self.h.sim.crash(peer_host(k));
                let mut peers = self.peers.borrow_mut();
                peers[k].node = None;
                peers[k].commands.clear();
                self.down[k] = true;
                self.peer_crashes += 1;
            }
            PeerFault::Restart(k) => {
                self.h.sim.bounce(peer_host(k));
                self.down[k] = false;
            }
        }
    }

    /// One step and every between-steps check; false if the run must stop.
    fn step(&mut self) -> bool {
        let accounts = &self.accounts;
        let stepped = self.h.step(|| {
            (accounts.borrow().iter())
                .filter(|c| !c.finished)
                .map(|c| c.plan.name.clone())
                .collect()
        });
        if stepped.is_none() {
            return false;
        }
        let mut found = self.replicas.check(&self.h.servers);
        let mut peers = self.peers.borrow_mut();
        found.extend(self.dirs.check(&peers));
        let seen: Vec<host::Seen> = peers.iter_mut().flat_map(|p| p.events.drain(..)).collect();
        found.extend(check_transfers(&seen, &peers));
        for p in peers.iter_mut() {
            found.extend(p.problems.drain(..).map(|e| format!("{}: {e}", p.name)));
        }
        drop(peers);
        let now = self.h.now();
        for s in &seen {
            self.final_seen(s);
            found.extend(self.rounds.observe(now, s));
            if let PeerEvent::SyncWriting { .. } = s.event {
                self.on_grant(s.peer);
            }
        }
        if self.stalled.is_some() {
            self.rounds.disturb(now, "a writer is stalled");
        }
        let healthy = self.h.healthy();
        let rounds = &mut self.rounds;
        found.extend(self.h.with_views(|v| rounds.check_servers(now, v, healthy)));
        let peers = self.peers.borrow();
        let (entries, committed) = (
            self.replicas.watch.entries(),
            self.replicas.watch.committed(),
        );
        found.extend(self.rounds.apply_committed(now, entries, committed, &peers));
        found.extend(self.rounds.check_beliefs(&peers));
        drop(peers);
        if self.rounds.current().is_some() {
            self.on_round();
        }
        let admissions: Vec<host::Seen> = (seen.into_iter())
            .filter(|s| {
                matches!(
                    s.event,
                    PeerEvent::Accepted { .. } | PeerEvent::Connected { .. }
                )
            })
            .collect();
        if !admissions.is_empty() || !self.pending.is_empty() {
            let joins = joins(self.replicas.watch.entries());
            let mut later = Vec::new();
            for s in std::mem::take(&mut self.pending)
                .into_iter()
                .chain(admissions)
            {
                match check_admission(&s, &joins) {
                    Some(Ok(())) => {}
                    Some(Err(why)) => found.push(why),
                    None => later.push(s),
                }
            }
            self.pending = later;
        }
        self.h.holds(found)
    }

    /// Whatever is left unresolved at the end names a peer id no committed
    /// entry registered.
    fn finish_admission(&mut self) {
        let joins = joins(self.replicas.watch.entries());
        for s in std::mem::take(&mut self.pending) {
            let why = match check_admission(&s, &joins) {
                Some(Ok(())) => continue,
                Some(Err(why)) => why,
                None => format!(
                    "peer{}: \"{}\" at {}, but no committed entry registered that peer",
                    s.peer + 1,
                    s.event,
                    secs(s.at)
                ),
            };
            self.h.violations.push(why);
        }
    }

    /// Restarts every server down and repairs every link; restarts the
    /// peers down whose plan restarts them (one may stay down).
    fn heal(&mut self) {
        self.h
            .record("the plan is done; heal the cluster, then the peers' lists must agree");
        self.h.heal();
        self.faulting = false;
        self.unstall();
        self.later.clear();
        for k in 0..self.down.len() {
            if self.down[k] && self.plan.stays_down != Some(k) {
                self.peer_fault(PeerFault::Restart(k));
            }
        }
        self.peer_faults.clear();
        for s in &mut self.scripts {
            s.clear();
        }
    }

    /// The live peers and their addresses.
    fn live(&self) -> Vec<(usize, String)> {
        (0..self.down.len())
            .filter(|k| !self.down[*k])
            .map(|k| (k, self.addrs[k].clone()))
            .collect()
    }

    /// Puts a new file in the first live peer's directory and asks it to
    /// PUT it to the second; the first's index, or `None` with a violation
    /// if fewer than two peers live.
    fn final_put(&mut self) -> Option<usize> {
        let live = self.live();
        let [(from, _), (to, _), ..] = live[..] else {
            self.h
                .violations
                .push("fewer than two live peers for the last PUT".into());
            return None;
        };
        let mut rng = SimRng::new(self.h.seed, 43);
        let content: Vec<u8> = (0..rng.range(1, 50_000))
            .map(|_| rng.next_u64() as u8)
            .collect();
        self.dirs.provide(FINAL_NAME, &content);
        let mut peers = self.peers.borrow_mut();
        peers[from]
            .dir
            .borrow_mut()
            .put(FINAL_NAME, &content, EPOCH_SECS * 1000);
        peers[from].commands.push_back(Command::FinalPut {
            to,
            name: FINAL_NAME.into(),
        });
        drop(peers);
        self.final_from = Some(from);
        self.h.record(format!(
            "the last PUT: {} sends {FINAL_NAME} ({} bytes) to {}",
            peer_host(from),
            content.len(),
            peer_host(to)
        ));
        Some(from)
    }

    /// Notes how the last PUT ended, if `s` says (the transfer check
    /// compares both directories).
    fn final_seen(&mut self, s: &host::Seen) {
        match s.event {
            PeerEvent::SyncStarted { round } if Some(s.peer) == self.final_asker => {
                self.final_round.get_or_insert(round);
            }
            PeerEvent::SyncEnd { round } if Some(round) == self.final_round => {
                self.final_ends.insert(s.peer);
            }
            _ => {}
        }
        let Some(from) = self.final_from else {
            return;
        };
        if s.peer != from {
            return;
        }
        self.final_outcome = match &s.event {
            PeerEvent::PutDone { name, .. } if name == FINAL_NAME => Some(Ok(())),
            PeerEvent::PutFailed { name, .. } if name == FINAL_NAME => {
                Some(Err(format!("the last PUT failed: {}", s.event)))
            }
            _ => return,
        };
    }

    /// The last round: once no round runs, the first live peer asks SYNC
    /// (again every 5 s until the cluster answers); done (`Ok(true)`) when
    /// the round ended in the committed log, every live peer heard its
    /// SYNC END, and it was quiet and among every live peer (its checks
    /// ran when it ended).
    fn final_sync(
        &mut self,
        now: Duration,
        since: Duration,
        asked: &mut Option<Duration>,
    ) -> Result<bool, String> {
        let live: Vec<usize> = self.live().into_iter().map(|(k, _)| k).collect();
        let Some(&asker) = live.first() else {
            return Err("no live peer for the last round".into());
        };
        if now > since + FINAL_SYNC_MAX {
            return Err(format!(
                "the last SYNC round (round {:?}) did not end at every live peer within {}: SYNC END heard by {:?} of {live:?}",
                self.final_round,
                secs(FINAL_SYNC_MAX),
                self.final_ends
            ));
        }
        let Some(round) = self.final_round else {
            let wait = asked.map_or(Duration::from_millis(1500), |_| Duration::from_secs(5));
            let from = asked.unwrap_or(since);
            if self.rounds.current().is_none() && now >= from + wait {
                self.final_asker = Some(asker);
                self.peers.borrow_mut()[asker]
                    .commands
                    .push_back(Command::Sync);
                *asked = Some(now);
                self.h
                    .record(format!("the last round: {} asks SYNC", peer_host(asker)));
            }
            return Ok(false);
        };
        let Some(verdict) = self.rounds.verdict(round) else {
            return Ok(false);
        };
        if let Some(why) = verdict.disturbed.clone() {
            // A late effect of the faults (a SYNC asked into a partition
            // times out 15 s later; a session whose stream a partition
            // broke is closed after a minute's silence; either way the peer
            // registers again): the round was checked as a disturbed one,
            // and a peer that registered again may never hear its SYNC END.
            // The next one must be quiet.
            self.final_tries += 1;
            if self.final_tries >= FINAL_SYNC_TRIES {
                return Err(format!(
                    "the last round {round} was not quiet ({why}), after {} tries",
                    self.final_tries
                ));
            }
            self.h.record(format!(
                "the last round {round} was not quiet: {why}; again"
            ));
            self.final_round = None;
            self.final_ends.clear();
            // Asked again in 5 s, when what disturbed this one is past.
            *asked = Some(now);
            return Ok(false);
        }
        if !live.iter().all(|k| self.final_ends.contains(k)) {
            return Ok(false);
        }
        if verdict.participants != live {
            return Err(format!(
                "the last round {round} ran among peers {:?}, the live peers are {live:?}",
                verdict.participants
            ));
        }
        let files = self.peers.borrow()[asker].dir.borrow().files.len();
        self.h.record(format!(
            "the last round {round} ended: {} live peers hold the same {files} file(s)",
            live.len()
        ));
        Ok(true)
    }
}
