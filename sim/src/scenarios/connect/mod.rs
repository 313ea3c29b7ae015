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

use crate::driver::{Ctx, Driver, DriverConfig, Flow};
use crate::harness::{fault_text, server_addrs, server_host, Details, Fault, Harness, Outcome};
use crate::harness::{SimParams, BALANCER, BALANCER_PORT};
use crate::seeds::SimRng;
use crate::seeds::{replay_command, Preset};
use crate::sweep::{sweep_with, SweepReport};
use crate::trace::{secs, SharedTrace};
use attacker::{AttackEvent, ReplayAttacker};
use ferry_core::accounts::password::PasswordParams;
use ferry_core::balancer::BalancerEvent;
use ferry_core::client::{Client, ClientConfig, ClientEvent};
use ferry_core::replication::ReplicaConfig;
use ferry_core::server::{ServerConfig, ServerEvent};
use invariants::{AttackRecord, ClientRecord, ClientResult, Established, Observations};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

/// Host name of the client that replays its auth code.
pub const ATTACKER: &str = "attacker";
/// How long the healed cluster gets before the liveness probe starts: longer
/// than the balancer's back-off (5 s) and a session's login timeout (below),
/// so that what the faulty phase left has gone.
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
/// This scenario's clients stand for logged-in users holding a slot (it is
/// about slots, not accounts): they never log in, and hold sessions longer
/// than production's login timeout (10 s), which would close them.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(60);

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
            lines.push(format!("plan: {} at {}", fault_text(*f, false), secs(*at)));
        }
        lines
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
    let mut c = Connect::new(seed, cfg, &plan);
    let mut phase = Phase::Safety;
    loop {
        c.admit_due_clients();
        c.h.inject_due(Duration::ZERO);
        let Some(all_done) = c.step() else {
            break;
        };
        if !c.check_capacity() {
            break;
        }
        let idle = all_done && c.waiting.is_empty();
        match phase {
            Phase::Safety | Phase::Liveness if !idle => {}
            Phase::Safety if cfg.liveness => {
                c.heal_and_send_late_client();
                phase = Phase::Liveness;
            }
            Phase::Safety | Phase::Liveness => {
                phase = Phase::CoolDown(c.h.now() + COOL_DOWN);
            }
            Phase::CoolDown(until) if c.h.now() >= until => break,
            Phase::CoolDown(_) => {}
        }
    }
    if c.h.violations.is_empty() {
        c.check_final_state();
    }
    let clients = c.obs.borrow().clients.clone();
    let replay = replay_command(seed, cfg.preset);
    c.h.finish(
        replay,
        ConnectDetails {
            config: cfg.clone(),
            plan,
            clients,
        },
    )
}

/// The harness, and the state the connect programs report into.
struct Connect<'c> {
    cfg: &'c ConnectConfig,
    h: Harness,
    obs: Shared<Observations>,
    /// Programs not started yet, the next one last.
    waiting: Vec<(ClientPlan, Who)>,
}

impl<'c> Connect<'c> {
    fn new(seed: u64, cfg: &'c ConnectConfig, plan: &ConnectPlan) -> Self {
        let params = SimParams {
            seed,
            duration: cfg.duration,
            tick: cfg.tick,
            latency: cfg.latency,
            servers: cfg.servers,
            stores: false,
        };
        let h = Harness::new(params, plan.faults.clone(), plan.describe(cfg));
        let mut c = Connect {
            cfg,
            h,
            obs: Rc::default(),
            waiting: Vec::new(),
        };
        // Hosts first, in a fixed order: turmoil runs them in registration
        // order.
        let obs = c.obs.clone();
        c.h.add_balancer(move |ev| {
            if let BalancerEvent::Assigned { code, .. } = ev {
                obs.borrow_mut().assigned.insert(code.clone());
            }
        });
        for id in 1..=cfg.servers {
            c.add_server(id);
        }
        c.plan_programs(plan);
        c
    }

    /// Registers server `id`: a cluster of its own (it is its own master,
    /// with no peers), so replication changes nothing here. Its program runs
    /// again at each restart with a fresh node; its store survives, but this
    /// scenario writes nothing to it.
    fn add_server(&mut self, id: u32) {
        let server = ServerConfig {
            max_clients: self.cfg.max_clients,
            idle_timeout: IDLE_TIMEOUT,
            login_timeout: LOGIN_TIMEOUT,
            password: PasswordParams::TESTING,
            ..ServerConfig::new(id)
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
        let replica = ReplicaConfig::new(id, id, Vec::new());
        let driver = DriverConfig::default();
        self.h.add_server(server, replica, driver, Rc::new(observe));
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
        let now = self.h.now();
        while self.waiting.last().is_some_and(|(c, _)| c.start <= now) {
            let (c, who) = self.waiting.pop().expect("checked above");
            let (trace, obs) = (self.h.trace.clone(), &self.obs);
            self.h.add_client(&c.name, |sim| match who {
                Who::Client(index) => add_client(sim, &c, index, &trace, obs),
                Who::Attacker(index) => {
                    let servers = server_addrs(self.cfg.servers)
                        .into_iter()
                        .map(|s| (s.id, s.addr))
                        .collect();
                    add_attacker(sim, &c, index, servers, &trace, obs)
                }
            });
        }
    }

    /// One turmoil step. `Some(true)` once every client program is done;
    /// `None` if the run must stop (a violation was recorded).
    fn step(&mut self) -> Option<bool> {
        let obs = &self.obs;
        self.h.step(|| {
            let o = obs.borrow();
            let clients = o.clients.iter().filter(|c| !c.finished);
            let attackers = o.attacks.iter().filter(|a| !a.finished);
            clients
                .map(|c| c.name.clone())
                .chain(attackers.map(|a| a.name.clone()))
                .collect()
        })
    }

    /// No running server holds more than its slots. False on a violation.
    fn check_capacity(&mut self) -> bool {
        let max = self.cfg.max_clients;
        let found = self
            .h
            .servers
            .iter()
            .filter_map(|slot| {
                let node = slot.borrow().node.clone()?;
                let held = invariants::check_server_capacity(&node.borrow(), max);
                held.err()
            })
            .collect();
        self.h.holds(found)
    }

    /// Restarts what is down, repairs what is cut, and sends one more client
    /// once the back-offs of the faulty phase have run out.
    fn heal_and_send_late_client(&mut self) {
        let now = self.h.now();
        self.h
            .record("all clients done; heal the cluster, then a late client must connect");
        self.h.heal();
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
        let h = &mut self.h;
        h.violations
            .extend(invariants::check_outcomes(&self.obs.borrow()));
        if let Some(b) = &*h.balancer.borrow() {
            let pending = b.borrow().pending();
            if pending != 0 {
                h.violations.push(format!(
                    "balancer still serves {pending} client(s) after every client left"
                ));
            }
        }
        // Every session must be gone: closed by its client, or reclaimed by
        // the server's idle timeout when the close was lost in a partition
        // (turmoil TCP does not retransmit, so such a FIN is gone for good,
        // as if the client had lost power).
        for (i, slot) in h.servers.iter().enumerate() {
            let id = i as u32 + 1;
            let Some(node) = &slot.borrow().node else {
                continue;
            };
            let held = node.borrow().clients();
            if held != 0 {
                let host = server_host(id);
                h.violations.push(format!(
                    "{host} still counts {held} session(s) after every client left"
                ));
            }
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
