//! The "replication" scenario: clients register usernames through the
//! balancer on a three-server cluster (server 1 the master), while the
//! harness restarts a follower, cuts a follower off, and maybe crashes the
//! master; then the cluster is healed and must converge.
//!
//! VOPR-style, like the connect scenario: a seed picks the swarm options
//! ([`ReplicationConfig::swarm`]) and a [`ReplicationPlan`] (who registers
//! which name when, who logs in where, when each fault strikes); the harness
//! steps turmoil, injects the faults when their time comes, and checks the
//! replication invariants ([`invariants::Watch`]) after every step. Once
//! every client is done, the cluster is healed, a late client must register
//! and log in, and every server must reach the same log and state; then the
//! account invariants are checked on every server.
//!
//! Every server has its own LMDB store ([`crate::server_host`]): a restarted
//! server resumes from it.

pub mod invariants;

use crate::checkers::linearizability::record::{self, LinCheck};
use crate::checkers::replica_log::{converged, ReplicaChecks};
use crate::clients::account::{
    add_account_client, AccountPlan, AccountRecord, Login, SharedRecords, TryResult,
};
use crate::driver::DriverConfig;
use crate::harness::{failover_faults, fault_text, replicated_faults, Details, FailoverParams};
use crate::harness::{Fault, FaultParams, Harness};
use crate::harness::{Outcome, Settle, Settling, SimParams, EPOCH_SECS, MASTER};
use crate::seeds::Preset;
use crate::seeds::{replay_command_in, SimRng};
use crate::trace::secs;
use ferry_core::accounts::password::PasswordParams;
use ferry_core::replication::ReplicaConfig;
use ferry_core::server::{OpError, Response, ServerConfig};
use invariants::check_accounts;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

/// Names clients pick from; fewer names than clients, so names collide.
const NAMES: [&str; 10] = [
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
];
/// When the late client starts after the heal.
const LATE_AFTER: Duration = Duration::from_secs(1);
/// How long the healed cluster gets to converge.
const SETTLE_MAX: Duration = Duration::from_secs(20);

/// The knobs; [`ReplicationConfig::swarm`] draws them from a seed.
#[derive(Clone, Debug)]
pub struct ReplicationConfig {
    /// [`Preset::Swarm`] or [`Preset::Custom`], for the replay command.
    pub preset: Preset,
    pub servers: u32,
    pub clients: u32,
    /// How many names of [`NAMES`] the clients draw from.
    pub names: u32,
    pub start_window: (Duration, Duration),
    /// Chance (percent) that a client starts around a fault's time (from
    /// 400 ms before to 300 ms after) rather than in `start_window`.
    pub near_fault_pct: u32,
    /// Chance (percent) that a client logs in after registering, and that
    /// it does so on a new session rather than the same one.
    pub login_chance_pct: u32,
    pub login_elsewhere_pct: u32,
    pub attempts: u32,
    pub latency: (Duration, Duration),
    /// How long a store commit takes (the host waits, as on `fsync`).
    pub persist_latency: (Duration, Duration),
    pub fault_window: (Duration, Duration),
    /// Chance (percent) that the master crashes (and comes back).
    pub master_crash_pct: u32,
    /// Chance (percent) that the partitioned follower is the other one than
    /// the one restarted.
    pub other_follower_cut_pct: u32,
    /// The failover scenario's faults instead ([`failover_faults`]): the
    /// master crashed, maybe the next one too, maybe a master cut off.
    pub failover: Option<Failover>,
    /// Treat a login refused for an account whose registration was already
    /// acknowledged (wherever the balancer sent the client) as a violation:
    /// read-your-writes across servers, which followers keep by asking the
    /// master's read index before answering "unknown user". On by default.
    pub strict_reads: bool,
    pub tick: Duration,
    /// turmoil's limit; a run that needs longer has a client that hangs.
    pub duration: Duration,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            preset: Preset::Custom,
            servers: 3,
            clients: 6,
            names: 4,
            start_window: (Duration::ZERO, Duration::from_secs(8)),
            near_fault_pct: 50,
            login_chance_pct: 60,
            login_elsewhere_pct: 50,
            attempts: 3,
            latency: (Duration::from_millis(1), Duration::from_millis(25)),
            persist_latency: (Duration::ZERO, Duration::ZERO),
            fault_window: (Duration::from_millis(300), Duration::from_secs(9)),
            master_crash_pct: 35,
            other_follower_cut_pct: 75,
            failover: None,
            strict_reads: true,
            tick: Duration::from_millis(2),
            duration: Duration::from_secs(180),
        }
    }
}

impl ReplicationConfig {
    /// Swarm testing: each seed gets its own mix of load and timing.
    pub fn swarm(seed: u64) -> Self {
        let mut rng = SimRng::new(seed, 11);
        let clients = rng.range(4, 10) as u32;
        // Fewer names than clients: at least two clients want one name.
        let names = rng.range(2, u64::from(clients) - 1) as u32;
        let max_latency = *rng.pick(&[5, 25, 60, 150]);
        let persist = *rng.pick(&[(0, 0), (0, 2), (1, 10)]);
        ReplicationConfig {
            preset: Preset::Swarm,
            clients,
            names,
            login_chance_pct: *rng.pick(&[30, 60, 90]),
            latency: (Duration::from_millis(1), Duration::from_millis(max_latency)),
            persist_latency: (
                Duration::from_millis(persist.0),
                Duration::from_millis(persist.1),
            ),
            ..ReplicationConfig::default()
        }
    }
}

/// The failover scenario's knobs (see [`failover_faults`]).
#[derive(Clone, Copy, Debug)]
pub struct Failover {
    pub master_cut_pct: u32,
    pub second_crash_pct: u32,
    pub follower_bounce_pct: u32,
}

impl ReplicationConfig {
    /// The failover scenario: the replication scenario's clients on three
    /// or five servers, while masters are crashed, cut off and restarted.
    pub fn failover(seed: u64) -> Self {
        let mut rng = SimRng::new(seed, 13);
        let servers = *rng.pick(&[3, 3, 5]);
        ReplicationConfig {
            servers,
            failover: Some(Failover {
                master_cut_pct: 50,
                second_crash_pct: if servers == 5 { 70 } else { 35 },
                follower_bounce_pct: 30,
            }),
            ..ReplicationConfig::swarm(seed)
        }
    }

    /// The scenario's name, as `ferry-sim` takes it.
    pub fn scenario(&self) -> &'static str {
        match self.failover {
            Some(_) => "failover",
            None => "replication",
        }
    }
}

/// The concrete run a seed and a config describe.
#[derive(Clone, Debug)]
pub struct ReplicationPlan {
    pub clients: Vec<AccountPlan>,
    /// Sorted by time.
    pub faults: Vec<(Duration, Fault)>,
}

impl ReplicationPlan {
    pub fn new(seed: u64, cfg: &ReplicationConfig) -> Self {
        let mut rng = SimRng::new(seed, 12);
        let faults = Self::faults(&mut rng, cfg);
        let clients = (1..=cfg.clients)
            .map(|i| {
                let name = format!("client{i}");
                let base = NAMES[rng.range(0, u64::from(cfg.names.clamp(1, 10)) - 1) as usize];
                // Names are case-insensitive: "Alice" is alice.
                let username = if rng.chance(25) {
                    let mut c = base.chars();
                    c.next()
                        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                        .unwrap_or_default()
                } else {
                    base.to_string()
                };
                // Half the clients come in a burst around a fault, so that
                // operations are in flight when it strikes.
                let start = match faults.is_empty() || !rng.chance(cfg.near_fault_pct) {
                    true => rng.duration(cfg.start_window.0, cfg.start_window.1),
                    false => {
                        let (at, _) = *rng.pick(&faults);
                        let before = Duration::from_millis(400).min(at);
                        rng.duration(at - before, at + Duration::from_millis(300))
                    }
                };
                let login = if !rng.chance(cfg.login_chance_pct) {
                    Login::No
                } else if rng.chance(cfg.login_elsewhere_pct) {
                    Login::NewSession
                } else {
                    Login::SameSession
                };
                AccountPlan {
                    password: format!("pw-{name}-{:08x}", rng.next_u64() as u32),
                    name,
                    username,
                    start,
                    login,
                    attempts: cfg.attempts,
                    must_succeed: false,
                }
            })
            .collect();
        ReplicationPlan { clients, faults }
    }

    fn faults(rng: &mut SimRng, cfg: &ReplicationConfig) -> Vec<(Duration, Fault)> {
        if let Some(f) = cfg.failover {
            let p = FailoverParams {
                fault_window: cfg.fault_window,
                master_cut_pct: f.master_cut_pct,
                second_crash_pct: f.second_crash_pct,
                follower_bounce_pct: f.follower_bounce_pct,
                servers: cfg.servers,
            };
            return failover_faults(rng, &p);
        }
        replicated_faults(
            rng,
            &FaultParams {
                servers: cfg.servers,
                master: MASTER,
                fault_window: cfg.fault_window,
                other_follower_cut_pct: cfg.other_follower_cut_pct,
                master_crash_pct: cfg.master_crash_pct,
            },
        )
    }

    fn describe(&self, cfg: &ReplicationConfig) -> Vec<String> {
        let mut lines = vec![format!(
            "plan: {} servers (server{MASTER} the first master), {} client(s) over {} name(s), latency {}..{} ms, disk {}..{} ms",
            cfg.servers,
            self.clients.len(),
            cfg.names,
            cfg.latency.0.as_millis(),
            cfg.latency.1.as_millis(),
            cfg.persist_latency.0.as_millis(),
            cfg.persist_latency.1.as_millis(),
        )];
        for c in &self.clients {
            let login = match c.login {
                Login::No => "",
                Login::SameSession => ", log in on the same session",
                Login::NewSession => ", log in on a new session",
            };
            lines.push(format!(
                "plan: {} registers {} at {}{login}",
                c.name,
                c.username,
                secs(c.start)
            ));
        }
        for (at, f) in &self.faults {
            lines.push(format!("plan: {} at {}", fault_text(*f, true), secs(*at)));
        }
        lines
    }
}

/// What a replication run adds to its [`Outcome`].
#[derive(Debug)]
pub struct ReplicationDetails {
    pub config: ReplicationConfig,
    pub plan: ReplicationPlan,
    pub clients: Vec<AccountRecord>,
    /// The converged cluster, in one line, if it converged.
    pub converged: Option<String>,
    /// Entries committed in the run.
    pub committed: usize,
    /// Views that had a master in the run.
    pub masters: usize,
    /// The linearizability check of the clients' history.
    pub lin: LinCheck,
}

pub type ReplicationOutcome = Outcome<ReplicationDetails>;

impl Details for ReplicationDetails {
    /// How often interesting things happened, for a sweep's summary.
    fn counts(&self) -> Vec<(&'static str, u64)> {
        let mut registered = 0;
        let mut taken = 0;
        let mut open = 0;
        let mut no_session = 0;
        let mut logged_in = 0;
        let mut stale = 0;
        for c in &self.clients {
            for t in &c.register {
                match &t.result {
                    TryResult::Answer(Response::Registered { .. }) => registered += 1,
                    TryResult::Answer(Response::Failed(OpError::UsernameTaken)) => taken += 1,
                    TryResult::NoSession(_) => no_session += 1,
                    _ => open += 1,
                }
            }
            for t in &c.login {
                match &t.result {
                    TryResult::Answer(Response::LoggedIn { .. }) => logged_in += 1,
                    // Its own registration, not yet applied where it logged in.
                    TryResult::Answer(Response::Failed(OpError::BadCredentials))
                        if c.registered().is_some() =>
                    {
                        stale += 1
                    }
                    TryResult::NoSession(_) => no_session += 1,
                    _ => {}
                }
            }
        }
        let crashes = |s: u32| {
            self.plan
                .faults
                .iter()
                .filter(|(_, f)| *f == Fault::Crash(s))
                .count() as u64
        };
        vec![
            ("registrations acknowledged", registered),
            ("registrations told 'username taken'", taken),
            (
                "register tries left open (unavailable, timeout, lost)",
                open,
            ),
            ("tries without a session", no_session),
            ("logins", logged_in),
            (
                "logins refused by a server that had not applied the registration yet",
                stale,
            ),
            (
                "runs with a master crash",
                crashes(MASTER)
                    + self
                        .plan
                        .faults
                        .iter()
                        .any(|(_, f)| *f == Fault::CrashMaster(0)) as u64,
            ),
            (
                "runs that lost a second master",
                self.plan
                    .faults
                    .iter()
                    .any(|(_, f)| *f == Fault::CrashMaster(1)) as u64,
            ),
            (
                "runs with a master cut off",
                self.plan
                    .faults
                    .iter()
                    .any(|(_, f)| *f == Fault::PartitionMaster(2)) as u64,
            ),
            ("views that had a master", self.masters as u64),
            ("entries committed", self.committed as u64),
        ]
        .into_iter()
        .chain(self.lin.counts())
        .collect()
    }
}

enum Phase {
    /// Faults are injected; clients register and log in.
    Safety,
    /// Everything is healed; the late client runs and the servers converge.
    Healing(Settle),
}

/// Runs the replication scenario for `seed` and checks every invariant.
pub fn run_replication_scenario(seed: u64, cfg: &ReplicationConfig) -> ReplicationOutcome {
    let plan = ReplicationPlan::new(seed, cfg);
    let mut r = Replication::new(seed, cfg, &plan);
    let mut phase = Phase::Safety;
    let mut converged_state = None;
    loop {
        r.admit_due_clients();
        r.h.inject_due(Duration::ZERO);
        let Some(all_done) = r.step() else {
            break;
        };
        let found = r.replicas.check(&r.h.servers);
        if !r.h.holds(found) {
            break;
        }
        let idle = all_done && r.waiting.is_empty();
        let now = r.h.now();
        match &mut phase {
            Phase::Safety if idle => {
                r.heal_and_send_late_client();
                phase = Phase::Healing(Settle::new(now, SETTLE_MAX));
            }
            Phase::Safety => {}
            Phase::Healing(settle) => {
                let busy = (!idle).then_some("the late client is still running");
                let h = &r.h;
                let n = cfg.servers as usize;
                match settle.poll(now, h.steps, busy, || h.with_views(|v| converged(v, n))) {
                    Settling::Waiting => {}
                    Settling::Settled(state) => {
                        converged_state = Some(state);
                        break;
                    }
                    Settling::TimedOut(why) => {
                        r.h.violations.push(why);
                        break;
                    }
                }
            }
        }
    }
    if let Some(state) = &converged_state {
        r.h.record(format!("converged: {state}"));
        r.check_final_state();
    }
    let lin = r.check_linearizability();
    let replay = replay_command_in(cfg.scenario(), seed, cfg.preset);
    let details = ReplicationDetails {
        config: cfg.clone(),
        plan,
        clients: r.records.borrow().clone(),
        converged: converged_state,
        committed: r.replicas.watch.committed(),
        masters: r.replicas.watch.masters(),
        lin,
    };
    let replay = match cfg.strict_reads {
        true => format!("SIM_STRICT_READS=1 {replay}"),
        false => replay,
    };
    r.h.finish(replay, details)
}

/// The harness, and the records the account clients report into.
struct Replication<'c> {
    cfg: &'c ReplicationConfig,
    h: Harness,
    records: SharedRecords,
    /// Records of programs not started yet, the next one last.
    waiting: Vec<usize>,
    replicas: ReplicaChecks,
}

impl<'c> Replication<'c> {
    fn new(seed: u64, cfg: &'c ReplicationConfig, plan: &ReplicationPlan) -> Self {
        let params = SimParams {
            seed,
            duration: cfg.duration,
            tick: cfg.tick,
            latency: cfg.latency,
            servers: cfg.servers,
            stores: true,
        };
        let h = Harness::new(params, plan.faults.clone(), plan.describe(cfg));
        let records: Vec<AccountRecord> = plan
            .clients
            .iter()
            .cloned()
            .map(AccountRecord::new)
            .collect();
        let mut waiting: Vec<usize> = (0..records.len()).collect();
        // The next to start goes last; equal starts keep their order.
        waiting.reverse();
        waiting.sort_by_key(|&i| std::cmp::Reverse(plan.clients[i].start));
        let mut r = Replication {
            cfg,
            h,
            records: Rc::new(RefCell::new(records)),
            waiting,
            replicas: ReplicaChecks::default(),
        };
        r.h.add_balancer(|_| {});
        for id in 1..=cfg.servers {
            // With the master and its peers wired, and its own store.
            let server = ServerConfig {
                password: PasswordParams::TESTING,
                ..ServerConfig::new(id)
            };
            let replica = ReplicaConfig::new(id, MASTER, r.h.peers_of(id));
            let driver = DriverConfig {
                persist_latency: cfg.persist_latency,
                ..DriverConfig::default()
            };
            r.h.add_server(server, replica, driver, Rc::new(|_, _, _| {}));
        }
        r
    }

    /// Registers every client whose start time has come.
    fn admit_due_clients(&mut self) {
        let now = self.h.now();
        while let Some(&i) = self.waiting.last() {
            let (start, name) = {
                let r = self.records.borrow();
                (r[i].plan.start, r[i].plan.name.clone())
            };
            if start > now {
                break;
            }
            self.waiting.pop();
            let (records, trace) = (&self.records, self.h.trace.clone());
            self.h
                .add_client(&name, |sim| add_account_client(sim, i, records, &trace));
        }
    }

    /// One turmoil step. `Some(true)` once every client program is done;
    /// `None` if the run must stop (a violation was recorded).
    fn step(&mut self) -> Option<bool> {
        let records = &self.records;
        self.h.step(|| {
            let r = records.borrow();
            let stuck = r.iter().filter(|c| !c.finished);
            stuck.map(|c| c.plan.name.clone()).collect()
        })
    }

    /// Restarts what is down, repairs what is cut, and sends a late client
    /// that must register and log in.
    fn heal_and_send_late_client(&mut self) {
        let now = self.h.now();
        self.h.record(
            "all clients done; heal the cluster, then a late client must register and log in",
        );
        self.h.heal();
        let late = AccountPlan {
            name: "late".into(),
            username: "latecomer".into(),
            password: format!("pw-late-{:08x}", self.h.seed as u32),
            start: now + LATE_AFTER,
            // The same session: a server answers only once it has applied
            // the registration, so this login must work. (Another server
            // may not have applied it yet; ordinary clients cover that.)
            login: Login::SameSession,
            attempts: self.cfg.attempts,
            must_succeed: true,
        };
        let mut r = self.records.borrow_mut();
        r.push(AccountRecord::new(late));
        self.waiting.push(r.len() - 1);
    }

    /// The clients' history against the catalogue's model, once every
    /// client is done (a record lacks an operation still on its way).
    fn check_linearizability(&mut self) -> LinCheck {
        let records = self.records.borrow();
        if !records.iter().all(|r| r.finished) {
            return LinCheck::default();
        }
        let lin = LinCheck::of(&record::accounts(&records, 0, self.cfg.strict_reads));
        drop(records);
        self.h.violations.extend(lin.violation.clone());
        lin
    }

    fn check_final_state(&mut self) {
        let run_secs = self.h.now().as_secs() + 1;
        let records = self.records.borrow();
        let strict = self.cfg.strict_reads;
        let v = self
            .h
            .with_views(|views| check_accounts(views, &records, EPOCH_SECS, run_secs, strict));
        drop(records);
        self.h.violations.extend(v);
    }
}
