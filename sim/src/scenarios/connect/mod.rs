//! The "connect" scenario: clients ask the balancer for a server and open a
//! session on it, while the harness crashes one server and partitions another.
//!
//! VOPR-style: a seed picks the swarm options ([`ConnectConfig::swarm`]) and
//! a concrete [`ConnectPlan`] (client start times, hold times, fault times); the
//! harness runs turmoil step by step, injects the faults when their time
//! comes, and checks invariants between steps. A *safety* phase runs with
//! faults until every client has finished; then the cluster is healed (the
//! crashed server restarted, the partition repaired) and a *liveness* phase
//! starts one more client that must connect.

pub mod attacker;
pub mod invariants;

use crate::driver::{serve, Ctx, Driver, DriverConfig, Flow};
use crate::harness::{
    apply_fault, build_sim, cut_off_newcomer, guarded_step, Details, FaultState, Outcome, SimParams,
};
use crate::harness::{server_host, server_port, Fault, BALANCER, BALANCER_PORT, EPOCH_SECS};
use crate::seeds::SimRng;
use crate::seeds::{replay_command, Preset};
use crate::server_host::{add_server, run_dir, store_dir, ServerSlot, ServerSpec};
use crate::sweep::{sweep_with, SweepReport};
use crate::trace::{secs, SharedTrace, Trace, HARNESS};
use attacker::{AttackEvent, ReplayAttacker};
use ferry_core::accounts::password::PasswordParams;
use ferry_core::auth::ClusterSecret;
use ferry_core::balancer::{Balancer, BalancerConfig, BalancerEvent, ServerAddr};
use ferry_core::client::{Client, ClientConfig, ClientEvent};
use ferry_core::replication::ReplicaConfig;
use ferry_core::server::{ServerConfig, ServerEvent};
use ferry_core::Entropy;
use invariants::{AttackRecord, ClientRecord, ClientResult, Established, Observations};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

/// Host name of the client that replays its auth code.
pub const ATTACKER: &str = "attacker";
/// The secret every node of the simulated cluster shares.
const SECRET: &[u8] = b"ferry-sim-cluster-secret";
/// How long the healed cluster gets before the liveness probe starts: longer
/// than a reservation's TTL (10 s) and the balancer's back-off (5 s).
const SETTLE: Duration = Duration::from_secs(11);
/// Simulated time run after the last client, before the final checks, so
/// that closes in flight arrive.
const COOL_DOWN: Duration = Duration::from_secs(1);
/// Servers close sessions silent for this long; shorter than production's
/// 60 s so that a session whose close was lost (a partitioned client is as
/// good as one that lost power) is reclaimed within the healing period.
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Clients ping well within the idle timeout.
const PING_INTERVAL: Duration = Duration::from_secs(1);

/// Which faults the harness injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Faults {
    None,
    /// One server crashes (and usually restarts later); another is cut off
    /// from every host and later reconnected. Both at seeded times.
    CrashAndPartition,
    /// Every server is down before the first client starts.
    AllServersDown,
}

/// The knobs of a scenario; [`ConnectConfig::swarm`] draws them from a seed.
#[derive(Clone, Debug)]
pub struct ConnectConfig {
    /// How this config was made, for the replay command.
    pub preset: Preset,
    pub servers: u32,
    /// Slots per server.
    pub max_clients: u32,
    pub clients: u32,
    /// Clients start uniformly within this window...
    pub start_window: (Duration, Duration),
    /// ...except the first `holders`, which start in the first 200 ms and
    /// hold their session for `long_hold`, to fill servers early.
    pub holders: u32,
    pub long_hold: Duration,
    /// Chance (percent) that any other client holds its session a while.
    pub hold_chance_pct: u32,
    pub hold: (Duration, Duration),
    pub faults: Faults,
    /// When the crash and the partition start.
    pub fault_window: (Duration, Duration),
    /// Chance (percent) that the crashed server comes back during the run.
    pub restart_chance_pct: u32,
    pub latency: (Duration, Duration),
    /// Chance (percent) that a client who replays its auth code joins in.
    pub attacker_chance_pct: u32,
    /// Heal the cluster after the safety phase and require a client to connect.
    pub liveness: bool,
    pub tick: Duration,
    /// turmoil's limit; a run that needs longer has a client that hangs.
    pub duration: Duration,
}

impl Default for ConnectConfig {
    fn default() -> Self {
        ConnectConfig {
            preset: Preset::Custom,
            servers: 3,
            max_clients: 2,
            clients: 6,
            start_window: (Duration::ZERO, Duration::from_secs(6)),
            holders: 0,
            long_hold: Duration::from_secs(8),
            hold_chance_pct: 50,
            hold: (Duration::from_secs(1), Duration::from_secs(6)),
            faults: Faults::CrashAndPartition,
            fault_window: (Duration::from_millis(500), Duration::from_secs(6)),
            restart_chance_pct: 70,
            latency: (Duration::from_millis(1), Duration::from_millis(25)),
            attacker_chance_pct: 0,
            liveness: true,
            tick: Duration::from_millis(2),
            duration: Duration::from_secs(120),
        }
    }
}

impl ConnectConfig {
    /// Swarm testing: each seed gets its own mix of load and timing.
    pub fn swarm(seed: u64) -> Self {
        let mut rng = SimRng::new(seed, 1);
        let max_clients = *rng.pick(&[1, 2, 2, 3, 3, 8]);
        let clients = rng.range(4, 9) as u32;
        let holders = rng.range(0, 2) as u32;
        let max_latency = *rng.pick(&[5, 25, 60, 150]);
        ConnectConfig {
            preset: Preset::Swarm,
            max_clients,
            clients,
            holders,
            hold_chance_pct: *rng.pick(&[20, 50, 80]),
            latency: (Duration::from_millis(1), Duration::from_millis(max_latency)),
            attacker_chance_pct: 50,
            ..ConnectConfig::default()
        }
    }

    /// The config `preset` names for `seed`; `None` for [`Preset::Custom`].
    pub fn for_preset(preset: Preset, seed: u64) -> Option<Self> {
        match preset {
            Preset::Swarm => Some(Self::swarm(seed)),
            Preset::AllServersDown => Some(Self::all_servers_down()),
            Preset::AllServersBusy => Some(Self::all_servers_busy()),
            Preset::Custom => None,
        }
    }

    /// Every server is down: clients must get a clear "no server", not hang.
    pub fn all_servers_down() -> Self {
        ConnectConfig {
            preset: Preset::AllServersDown,
            clients: 3,
            faults: Faults::AllServersDown,
            start_window: (Duration::from_secs(1), Duration::from_secs(3)),
            liveness: false,
            ..ConnectConfig::default()
        }
    }

    /// Every slot is held by an early client: later clients must get a clear
    /// "no server (all busy)".
    pub fn all_servers_busy() -> Self {
        ConnectConfig {
            preset: Preset::AllServersBusy,
            max_clients: 1,
            clients: 6,
            holders: 3,
            long_hold: Duration::from_secs(20),
            hold_chance_pct: 0,
            start_window: (Duration::from_secs(3), Duration::from_secs(8)),
            faults: Faults::None,
            liveness: false,
            ..ConnectConfig::default()
        }
    }
}

#[derive(Clone, Debug)]
pub struct ClientPlan {
    pub name: String,
    pub start: Duration,
    pub hold: Option<Duration>,
}

/// The concrete run a seed and a config describe.
#[derive(Clone, Debug)]
pub struct ConnectPlan {
    pub clients: Vec<ClientPlan>,
    /// When the code-replaying client starts, if there is one.
    pub attacker: Option<Duration>,
    /// Sorted by time.
    pub faults: Vec<(Duration, Fault)>,
}

impl ConnectPlan {
    pub fn new(seed: u64, cfg: &ConnectConfig) -> ConnectPlan {
        let mut rng = SimRng::new(seed, 2);
        let clients = (1..=cfg.clients)
            .map(|i| {
                let name = format!("client{i}");
                if i <= cfg.holders {
                    let start = rng.duration(Duration::ZERO, Duration::from_millis(200));
                    return ClientPlan {
                        name,
                        start,
                        hold: Some(cfg.long_hold),
                    };
                }
                let start = rng.duration(cfg.start_window.0, cfg.start_window.1);
                let hold = rng
                    .chance(cfg.hold_chance_pct)
                    .then(|| rng.duration(cfg.hold.0, cfg.hold.1));
                ClientPlan { name, start, hold }
            })
            .collect();
        let mut faults = Vec::new();
        match cfg.faults {
            Faults::None => {}
            Faults::AllServersDown => {
                faults.extend((1..=cfg.servers).map(|s| (Duration::ZERO, Fault::Crash(s))));
            }
            Faults::CrashAndPartition => {
                let crashed = rng.range(1, u64::from(cfg.servers)) as u32;
                let at = rng.duration(cfg.fault_window.0, cfg.fault_window.1);
                faults.push((at, Fault::Crash(crashed)));
                if rng.chance(cfg.restart_chance_pct) {
                    let down = rng.duration(Duration::from_millis(50), Duration::from_secs(6));
                    faults.push((at + down, Fault::Restart(crashed)));
                }
                if cfg.servers > 1 {
                    let offset = rng.range(1, u64::from(cfg.servers) - 1) as u32;
                    let cut = (crashed - 1 + offset) % cfg.servers + 1;
                    let at = rng.duration(cfg.fault_window.0, cfg.fault_window.1);
                    let len = rng.duration(Duration::from_millis(200), Duration::from_secs(6));
                    faults.push((at, Fault::Partition(cut)));
                    faults.push((at + len, Fault::Repair(cut)));
                }
            }
        }
        faults.sort_by_key(|(at, _)| *at);
        let attacker = rng
            .chance(cfg.attacker_chance_pct)
            .then(|| rng.duration(cfg.start_window.0, cfg.start_window.1));
        ConnectPlan {
            clients,
            attacker,
            faults,
        }
    }

    fn describe(&self, cfg: &ConnectConfig) -> Vec<String> {
        let holding = self.clients.iter().filter(|c| c.hold.is_some()).count();
        let mut lines = vec![format!(
            "plan: {} servers with {} slot(s) each, {} client(s) ({} hold a session), latency {}..{} ms",
            cfg.servers,
            cfg.max_clients,
            self.clients.len(),
            holding,
            cfg.latency.0.as_millis(),
            cfg.latency.1.as_millis(),
        )];
        if let Some(at) = self.attacker {
            lines.push(format!(
                "plan: {ATTACKER} replays its auth code at {}",
                secs(at)
            ));
        }
        for (at, f) in &self.faults {
            lines.push(format!("plan: {} at {}", fault_text(*f), secs(*at)));
        }
        lines
    }
}

fn fault_text(f: Fault) -> String {
    match f {
        Fault::Crash(s) => format!("crash {}", server_host(s)),
        Fault::Restart(s) => format!("restart {}", server_host(s)),
        Fault::Partition(s) => format!("partition {} from every host", server_host(s)),
        Fault::Repair(s) => format!("repair {}'s links", server_host(s)),
    }
}

/// What a connect run adds to its [`Outcome`].
#[derive(Debug)]
pub struct ConnectDetails {
    pub config: ConnectConfig,
    pub plan: ConnectPlan,
    pub clients: Vec<ClientRecord>,
}

impl Details for ConnectDetails {
    const TRACE_TAIL: usize = 40;
}

pub type ConnectOutcome = Outcome<ConnectDetails>;

type Shared<T> = Rc<RefCell<T>>;

/// Which record a waiting program reports into.
#[derive(Clone, Copy)]
enum Who {
    Client(usize),
    Attacker(usize),
}

enum Phase {
    /// Faults are injected; clients come and go.
    Safety,
    /// The cluster is healed; the late client must connect.
    Liveness,
    /// Everyone is done; closes in flight arrive until then.
    CoolDown(Duration),
}

/// Runs the connect scenario for `seed` and checks every invariant.
pub fn run_connect_scenario(seed: u64, cfg: &ConnectConfig) -> ConnectOutcome {
    let plan = ConnectPlan::new(seed, cfg);
    let mut h = Harness::new(seed, cfg, &plan);
    let mut faults = plan.faults.clone().into_iter().peekable();
    let mut phase = Phase::Safety;
    loop {
        h.admit_due_clients();
        while let Some((_, fault)) = faults.next_if(|(at, _)| *at <= h.sim.elapsed()) {
            h.inject(fault);
        }
        let Some(all_done) = h.step() else {
            break;
        };
        if !h.check_capacity() {
            break;
        }
        let idle = all_done && h.waiting.is_empty();
        match phase {
            Phase::Safety | Phase::Liveness if !idle => {}
            Phase::Safety if cfg.liveness => {
                // Later faults of the plan are dropped.
                faults = Vec::new().into_iter().peekable();
                h.heal_and_send_late_client();
                phase = Phase::Liveness;
            }
            Phase::Safety | Phase::Liveness => {
                phase = Phase::CoolDown(h.sim.elapsed() + COOL_DOWN);
            }
            Phase::CoolDown(until) if h.sim.elapsed() >= until => break,
            Phase::CoolDown(_) => {}
        }
    }
    if h.violations.is_empty() {
        h.check_final_state();
    }
    h.into_outcome(seed, cfg, plan)
}

/// The simulation, the shared state its programs report into, and what the
/// harness knows about the faults it injected.
struct Harness<'c> {
    cfg: &'c ConnectConfig,
    seed: u64,
    sim: turmoil::Sim<'static>,
    /// The servers' stores; removed after the simulation is dropped.
    run_dir: tempfile::TempDir,
    trace: SharedTrace,
    obs: Shared<Observations>,
    balancer: Shared<Option<Rc<RefCell<Balancer>>>>,
    servers: Vec<Shared<ServerSlot>>,
    /// Every server as (id, address), for the attacker.
    server_addrs: Vec<(u32, String)>,
    /// Hosts registered so far.
    hosts: Vec<String>,
    /// Programs not started yet, the next one last.
    waiting: Vec<(ClientPlan, Who)>,
    /// Indexed by server id.
    crashed: Vec<bool>,
    cut: Vec<bool>,
    violations: Vec<String>,
    steps: u64,
}

impl<'c> Harness<'c> {
    fn new(seed: u64, cfg: &'c ConnectConfig, plan: &ConnectPlan) -> Self {
        let sim = build_sim(SimParams {
            seed,
            epoch_secs: EPOCH_SECS,
            duration: cfg.duration,
            tick: cfg.tick,
            latency: cfg.latency,
        });
        let trace = Trace::shared();
        for line in plan.describe(cfg) {
            trace.borrow_mut().record(Duration::ZERO, HARNESS, line);
        }
        let n = cfg.servers as usize + 1;
        let mut h = Harness {
            cfg,
            seed,
            sim,
            run_dir: run_dir().expect("a temporary directory for the stores"),
            trace,
            obs: Rc::default(),
            balancer: Rc::default(),
            servers: Vec::new(),
            server_addrs: (1..=cfg.servers)
                .map(|id| (id, format!("{}:{}", server_host(id), server_port(id))))
                .collect(),
            hosts: Vec::new(),
            waiting: Vec::new(),
            crashed: vec![false; n],
            cut: vec![false; n],
            violations: Vec::new(),
            steps: 0,
        };
        // Hosts first, in a fixed order: turmoil runs them in registration
        // order.
        let secret = ClusterSecret::from_bytes(SECRET).expect("secret is long enough");
        h.add_balancer(seed, &secret);
        for id in 1..=cfg.servers {
            h.add_server(id, &secret);
        }
        h.plan_programs(plan);
        h
    }

    fn add_balancer(&mut self, seed: u64, secret: &ClusterSecret) {
        let servers = self
            .server_addrs
            .iter()
            .map(|(id, addr)| ServerAddr {
                id: *id,
                addr: addr.clone(),
            })
            .collect();
        let bcfg = BalancerConfig::new(servers);
        let (trace, obs, slot) = (self.trace.clone(), self.obs.clone(), self.balancer.clone());
        let secret = secret.clone();
        self.sim.host(BALANCER, move || {
            let (trace, obs, slot) = (trace.clone(), obs.clone(), slot.clone());
            // The balancer is never restarted here; if it were, its entropy
            // would need the incarnation mixed in, or it would mint the same
            // nonces again.
            let node = Balancer::new(bcfg.clone(), secret.clone(), Entropy::from_u64(seed));
            async move {
                let node = Rc::new(RefCell::new(node));
                *slot.borrow_mut() = Some(node.clone());
                trace.borrow_mut().record_now(BALANCER, "up");
                let dcfg = DriverConfig {
                    trace_accepts: true,
                    ..DriverConfig::default()
                };
                serve(
                    BALANCER,
                    BALANCER_PORT,
                    node,
                    None,
                    trace,
                    dcfg,
                    move |_, ev| {
                        if let BalancerEvent::Assigned { code, .. } = ev {
                            obs.borrow_mut().assigned.insert(code.clone());
                        }
                    },
                )
                .await
            }
        });
        self.hosts.push(BALANCER.to_string());
    }

    /// Registers server `id`: a cluster of its own (it is its own master,
    /// with no peers), so replication changes nothing here. Its program runs
    /// again at each restart with a fresh node; its store survives, but this
    /// scenario writes nothing to it.
    fn add_server(&mut self, id: u32, secret: &ClusterSecret) {
        let slot = Rc::new(RefCell::new(ServerSlot::default()));
        self.servers.push(slot.clone());
        let host = server_host(id);
        let spec = ServerSpec {
            host: host.clone(),
            port: server_port(id),
            server: ServerConfig {
                max_clients: self.cfg.max_clients,
                idle_timeout: IDLE_TIMEOUT,
                password: PasswordParams::TESTING,
                ..ServerConfig::new(id)
            },
            replica: ReplicaConfig::new(id, id, Vec::new()),
            secret: secret.clone(),
            seed: self.seed,
            store_dir: store_dir(self.run_dir.path(), self.seed, &host),
            disk: crate::disk::shared_disk(),
            driver: DriverConfig::default(),
        };
        let obs = self.obs.clone();
        let observe = move |ctx: &Ctx<'_>, ev: &ServerEvent, incarnation: u32| {
            if let ServerEvent::Probed { available, code } = ev {
                obs.borrow_mut().probed.insert(code.clone(), *available);
            }
            if let ServerEvent::Established { conn, code } = ev {
                obs.borrow_mut().established.push(Established {
                    at: turmoil::sim_elapsed().unwrap_or_default(),
                    server: id,
                    incarnation,
                    code: code.clone(),
                    peer: ctx.peer_addr(*conn),
                });
            }
        };
        add_server(
            &mut self.sim,
            spec,
            slot,
            self.trace.clone(),
            Rc::new(observe),
        );
        self.hosts.push(host);
    }

    /// Queues every client program of the plan. Clients join the network
    /// only when they start (turmoil's cost per step grows with the number
    /// of hosts), but their records exist from the start, so one that never
    /// runs is still reported.
    fn plan_programs(&mut self, plan: &ConnectPlan) {
        for c in &plan.clients {
            let index = new_record(&self.obs, c, false);
            self.waiting.push((c.clone(), Who::Client(index)));
        }
        if let Some(start) = plan.attacker {
            let mut o = self.obs.borrow_mut();
            o.attacks.push(AttackRecord {
                name: ATTACKER.into(),
                start,
                finished: false,
                target: None,
                results: Vec::new(),
            });
            let index = o.attacks.len() - 1;
            let c = ClientPlan {
                name: ATTACKER.into(),
                start,
                hold: None,
            };
            self.waiting.push((c, Who::Attacker(index)));
        }
        // The next to start goes last; equal starts keep their order
        // (clients by number, then the attacker).
        self.waiting.reverse();
        self.waiting
            .sort_by_key(|(c, _)| std::cmp::Reverse(c.start));
    }

    /// Registers every program whose start time has come.
    fn admit_due_clients(&mut self) {
        let now = self.sim.elapsed();
        while self.waiting.last().is_some_and(|(c, _)| c.start <= now) {
            let (c, who) = self.waiting.pop().expect("checked above");
            match who {
                Who::Client(index) => add_client(&mut self.sim, &c, index, &self.trace, &self.obs),
                Who::Attacker(index) => add_attacker(
                    &mut self.sim,
                    &c,
                    index,
                    self.server_addrs.clone(),
                    &self.trace,
                    &self.obs,
                ),
            }
            // A server cut off now is cut off from the newcomer too.
            cut_off_newcomer(&mut self.sim, &self.cut, self.cfg.servers, &c.name);
            self.hosts.push(c.name);
        }
    }

    fn inject(&mut self, fault: Fault) {
        self.trace.borrow_mut().record(
            self.sim.elapsed(),
            HARNESS,
            format!("!! {}", fault_text(fault)),
        );
        apply_fault(
            FaultState {
                sim: &mut self.sim,
                hosts: &self.hosts,
                servers: &self.servers,
                crashed: &mut self.crashed,
                cut: &mut self.cut,
            },
            fault,
            // As before: a restart here leaves the slot to the new incarnation.
            false,
        );
    }

    /// One turmoil step. `Some(true)` once every client program is done;
    /// `None` if the run must stop (a violation was recorded).
    fn step(&mut self) -> Option<bool> {
        let at = secs(self.sim.elapsed());
        let obs = &self.obs;
        guarded_step(
            &mut self.sim,
            &mut self.steps,
            &mut self.violations,
            &at,
            |e| {
                let o = obs.borrow();
                let clients = o.clients.iter().filter(|c| !c.finished);
                let attackers = o.attacks.iter().filter(|a| !a.finished);
                let stuck: Vec<&str> = clients
                    .map(|c| c.name.as_str())
                    .chain(attackers.map(|a| a.name.as_str()))
                    .collect();
                format!("clients hang: {e} (unfinished: {})", stuck.join(", "))
            },
        )
    }

    /// No running server holds more than its slots. False on a violation.
    fn check_capacity(&mut self) -> bool {
        for slot in &self.servers {
            if let Some(node) = &slot.borrow().node {
                let max = self.cfg.max_clients;
                if let Err(v) = invariants::check_server_capacity(&node.borrow(), max) {
                    let at = secs(self.sim.elapsed());
                    self.violations.push(format!("at {at}: {v}"));
                }
            }
        }
        self.violations.is_empty()
    }

    /// Restarts what is down, repairs what is cut, and sends one more client
    /// once reservations and back-offs of the faulty phase have run out.
    fn heal_and_send_late_client(&mut self) {
        let now = self.sim.elapsed();
        self.trace.borrow_mut().record(
            now,
            HARNESS,
            "all clients done; heal the cluster, then a late client must connect",
        );
        for s in 1..=self.cfg.servers {
            if self.crashed[s as usize] {
                self.inject(Fault::Restart(s));
            }
            if self.cut[s as usize] {
                self.inject(Fault::Repair(s));
            }
        }
        let late = ClientPlan {
            name: "late".into(),
            start: now + SETTLE,
            hold: None,
        };
        let index = new_record(&self.obs, &late, true);
        self.waiting.push((late, Who::Client(index)));
    }

    /// Checks that need the whole run, once every client has left.
    fn check_final_state(&mut self) {
        self.violations
            .extend(invariants::check_outcomes(&self.obs.borrow()));
        if let Some(b) = &*self.balancer.borrow() {
            let pending = b.borrow().pending();
            if pending != 0 {
                self.violations.push(format!(
                    "balancer still serves {pending} client(s) after every client left"
                ));
            }
        }
        // Every session must be gone: closed by its client, or reclaimed by
        // the server's idle timeout when the close was lost in a partition
        // (turmoil TCP does not retransmit, so such a FIN is gone for good,
        // as if the client had lost power).
        for (i, slot) in self.servers.iter().enumerate() {
            let id = i as u32 + 1;
            let Some(node) = &slot.borrow().node else {
                continue;
            };
            let held = node.borrow().clients();
            if held != 0 {
                let host = server_host(id);
                self.violations.push(format!(
                    "{host} still counts {held} session(s) after every client left"
                ));
            }
        }
    }

    fn into_outcome(self, seed: u64, cfg: &ConnectConfig, plan: ConnectPlan) -> ConnectOutcome {
        let sim_time = self.sim.elapsed();
        // The hosts' programs hold clones of the trace and observations.
        drop(self.sim);
        let trace = self.trace.borrow().clone();
        let clients = self.obs.borrow().clients.clone();
        Outcome {
            seed,
            trace,
            violations: self.violations,
            sim_time,
            steps: self.steps,
            replay: replay_command(seed, cfg.preset),
            details: ConnectDetails {
                config: cfg.clone(),
                plan,
                clients,
            },
        }
    }
}

/// Registers the attacker's program, which starts at once: get a code,
/// replay it, record what happened in `obs.attacks[index]`.
fn add_attacker(
    sim: &mut turmoil::Sim<'_>,
    plan: &ClientPlan,
    index: usize,
    servers: Vec<(u32, String)>,
    trace: &SharedTrace,
    obs: &Shared<Observations>,
) {
    let (trace, obs) = (trace.clone(), obs.clone());
    let name = plan.name.clone();
    sim.client(name.clone(), async move {
        trace.borrow_mut().record_now(
            &name,
            "start: ask the balancer for a server, to replay the code",
        );
        let balancer = format!("{BALANCER}:{BALANCER_PORT}");
        let node = Rc::new(RefCell::new(ReplayAttacker::new(balancer, servers)));
        let mut driver = Driver::new(&name, node.clone(), trace.clone(), DriverConfig::default());
        driver.with_node(|n, now| n.start(now));
        driver
            .run(None, |_, ev| match ev {
                AttackEvent::Done => Flow::Stop,
                _ => Flow::Continue,
            })
            .await;
        let (target, results) = node.borrow().results();
        {
            let mut o = obs.borrow_mut();
            let rec = &mut o.attacks[index];
            rec.finished = true;
            rec.target = target;
            rec.results = results;
        }
        driver.shutdown().await;
        Ok(())
    });
}

fn new_record(obs: &Shared<Observations>, plan: &ClientPlan, must_connect: bool) -> usize {
    let mut o = obs.borrow_mut();
    o.clients.push(ClientRecord {
        name: plan.name.clone(),
        start: plan.start,
        result: None,
        at: None,
        ended_early: None,
        must_connect,
        finished: false,
    });
    o.clients.len() - 1
}

/// Registers a client program, which starts at once: get a session, hold it
/// a while if planned, leave, and record how it went in `obs.clients[index]`.
fn add_client(
    sim: &mut turmoil::Sim<'_>,
    plan: &ClientPlan,
    index: usize,
    trace: &SharedTrace,
    obs: &Shared<Observations>,
) {
    let (trace, obs) = (trace.clone(), obs.clone());
    let (name, hold) = (plan.name.clone(), plan.hold);
    sim.client(name.clone(), async move {
        trace
            .borrow_mut()
            .record_now(&name, "start: ask the balancer for a server");
        let cfg = ClientConfig {
            ping_interval: PING_INTERVAL,
            ..ClientConfig::new(format!("{BALANCER}:{BALANCER_PORT}"))
        };
        let node = Rc::new(RefCell::new(Client::new(cfg)));
        let mut driver = Driver::new(&name, node.clone(), trace.clone(), DriverConfig::default());
        driver.with_node(|n, now| n.start(now));

        let mut result = None;
        driver
            .run(None, |ctx, ev| match ev {
                ClientEvent::Connected { server_id, .. } => {
                    let local = node
                        .borrow()
                        .session()
                        .and_then(|(c, _, _)| ctx.local_addr(c));
                    result = Some(ClientResult::Connected {
                        server_id: *server_id,
                        local,
                    });
                    Flow::Stop
                }
                ClientEvent::Failed(e) => {
                    result = Some(ClientResult::Failed(e.clone()));
                    Flow::Stop
                }
                _ => Flow::Continue,
            })
            .await;
        let connected = matches!(result, Some(ClientResult::Connected { .. }));
        {
            let mut o = obs.borrow_mut();
            o.clients[index].result = result;
            o.clients[index].at = turmoil::sim_elapsed();
        }

        if connected {
            let mut ended = None;
            if let Some(hold) = hold {
                trace
                    .borrow_mut()
                    .record_now(&name, format!("hold the session for {}", secs(hold)));
                let until = tokio::time::Instant::now() + hold;
                driver
                    .run(Some(until), |_, ev| match ev {
                        ClientEvent::Disconnected | ClientEvent::Failed(_) => {
                            ended = Some(ev.to_string());
                            Flow::Stop
                        }
                        _ => Flow::Continue,
                    })
                    .await;
            }
            if ended.is_none() {
                trace
                    .borrow_mut()
                    .record_now(&name, "leave: close the session");
            }
            obs.borrow_mut().clients[index].ended_early = ended;
        }
        driver.shutdown().await;
        obs.borrow_mut().clients[index].finished = true;
        Ok(())
    });
}

/// Runs the connect scenario `preset` names for every seed, on `threads`
/// threads. A run that panics is a failure of its seed, not of the sweep.
pub fn sweep(seeds: &[u64], threads: usize, preset: Preset) -> SweepReport {
    let run = |seed| {
        let cfg = ConnectConfig::for_preset(preset, seed).expect("a sweep needs a named preset");
        run_connect_scenario(seed, &cfg)
    };
    sweep_with(seeds, threads, run, |seed| replay_command(seed, preset))
}
