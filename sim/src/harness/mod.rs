//! The one harness every scenario runs on: a turmoil simulation seeded
//! from the run's seed, its hosts (the balancer, the servers with their
//! stores and disks, the clients), the faults injected into them, the
//! trace, and the guarded steps; [`Harness::finish`] turns it into the
//! run's [`Outcome`].
//!
//! A scenario owns a `Harness` and what is its own (its clients' records,
//! its checks) beside it; it decides when to step, admit clients, inject
//! faults and heal.

use crate::disk::{shared_disk, SharedDisk};
use crate::driver::{serve, DriverConfig};
use crate::server_host::{add_server, run_dir, store_dir, with_views, ServerObserver};
use crate::server_host::{ServerSlot, ServerSpec, View};
use crate::sweep::panic_message;
use crate::trace::{secs, SharedTrace, Trace, HARNESS};
use ferry_core::auth::ClusterSecret;
use ferry_core::balancer::{Balancer, BalancerConfig, BalancerEvent, ServerAddr};
use ferry_core::replication::ReplicaConfig;
use ferry_core::server::ServerConfig;
use ferry_core::Entropy;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

mod faults;
mod outcome;
mod settle;
pub use faults::{
    failover_faults, fault_text, replicated_faults, FailoverParams, Fault, FaultParams,
};
pub use outcome::{Details, Outcome};
pub use settle::{Settle, Settling};

pub const BALANCER: &str = "balancer";
pub const BALANCER_PORT: u16 = 7000;
/// A fixed epoch (Unix seconds), so nothing in a run depends on the wall
/// clock.
pub const EPOCH_SECS: u64 = 1_780_000_000;
/// The master of the replicated scenarios, by configuration.
pub const MASTER: u32 = 1;
/// The secret every node of the simulated cluster shares.
const SECRET: &[u8] = b"ferry-sim-cluster-secret";

/// The host name of server `id`.
pub fn server_host(id: u32) -> String {
    format!("server{id}")
}

/// The port server `id` listens on.
pub fn server_port(id: u32) -> u16 {
    BALANCER_PORT + id as u16
}

/// Servers `1..=servers` as the balancer and the replicas address them.
pub fn server_addrs(servers: u32) -> Vec<ServerAddr> {
    (1..=servers)
        .map(|id| ServerAddr {
            id,
            addr: format!("{}:{}", server_host(id), server_port(id)),
        })
        .collect()
}

/// The knobs of a run every scenario has.
pub struct SimParams {
    pub seed: u64,
    /// turmoil's limit; a run that needs longer has a client that hangs.
    pub duration: Duration,
    pub tick: Duration,
    pub latency: (Duration, Duration),
    pub servers: u32,
    /// Whether the servers resume from their stores (the replicated
    /// scenarios); the trace says so of each restart.
    pub stores: bool,
}

/// A balancer node, kept while it runs so that checks can read it.
pub type BalancerSlot = Rc<RefCell<Option<Rc<RefCell<Balancer>>>>>;

/// The simulation, its hosts, and what the harness knows of the faults it
/// injected.
pub struct Harness {
    pub seed: u64,
    pub sim: turmoil::Sim<'static>,
    /// The servers' stores; removed after the simulation is dropped.
    run_dir: tempfile::TempDir,
    pub trace: SharedTrace,
    secret: ClusterSecret,
    /// How many servers the cluster has.
    pub cluster: u32,
    stores: bool,
    /// The servers' slots and disks, server `id` at `id - 1`; both outlive
    /// the server's crashes.
    pub servers: Vec<Rc<RefCell<ServerSlot>>>,
    pub disks: Vec<SharedDisk>,
    pub balancer: BalancerSlot,
    /// Every host registered so far, for partitions and repairs.
    hosts: Vec<String>,
    /// Faults of the plan not injected yet, the next one first.
    faults: VecDeque<(Duration, Fault)>,
    /// Indexed by server id.
    crashed: Vec<bool>,
    cut: Vec<bool>,
    /// The servers "the master" faults struck, by their number.
    struck: std::collections::BTreeMap<u8, u32>,
    pub violations: Vec<String>,
    pub steps: u64,
}

impl Harness {
    /// A simulation seeded and timed as `p` says, whose trace starts with
    /// the lines of `plan`, and which will inject `faults` (sorted by time)
    /// when [`Harness::inject_due`] finds them due.
    pub fn new(p: SimParams, faults: Vec<(Duration, Fault)>, plan: Vec<String>) -> Self {
        crate::tls::begin(p.seed);
        let sim = turmoil::Builder::new()
            .rng_seed(p.seed)
            .epoch(UNIX_EPOCH + Duration::from_secs(EPOCH_SECS))
            .simulation_duration(p.duration)
            .tick_duration(p.tick)
            .min_message_latency(p.latency.0)
            .max_message_latency(p.latency.1)
            .build();
        let trace = Trace::shared();
        for line in plan {
            trace.borrow_mut().record(Duration::ZERO, HARNESS, line);
        }
        let n = p.servers as usize + 1;
        Harness {
            seed: p.seed,
            sim,
            run_dir: run_dir().expect("a temporary directory for the stores"),
            trace,
            secret: ClusterSecret::from_bytes(SECRET).expect("the secret is long enough"),
            cluster: p.servers,
            stores: p.stores,
            servers: Vec::new(),
            disks: Vec::new(),
            balancer: Rc::default(),
            hosts: Vec::new(),
            faults: faults.into(),
            crashed: vec![false; n],
            cut: vec![false; n],
            struck: std::collections::BTreeMap::new(),
            violations: Vec::new(),
            steps: 0,
        }
    }

    /// Simulated time so far.
    pub fn now(&self) -> Duration {
        self.sim.elapsed()
    }

    /// Records a line of the harness's own in the trace.
    pub fn record(&self, text: impl Into<String>) {
        self.trace.borrow_mut().record(self.now(), HARNESS, text);
    }

    /// Registers the balancer host; `observe` sees its events. Never
    /// restarted: its nonces come from the seed alone (a restart would need
    /// the incarnation mixed in, or it would mint the same nonces again).
    pub fn add_balancer(&mut self, observe: impl Fn(&BalancerEvent) + 'static) {
        let bcfg = BalancerConfig::new(server_addrs(self.cluster));
        let (trace, secret, slot) = (
            self.trace.clone(),
            self.secret.clone(),
            self.balancer.clone(),
        );
        let (seed, observe) = (self.seed, Rc::new(observe));
        self.sim.host(BALANCER, move || {
            let (bcfg, trace, secret) = (bcfg.clone(), trace.clone(), secret.clone());
            let (slot, observe) = (slot.clone(), observe.clone());
            async move {
                let node = Balancer::new(bcfg, secret, Entropy::from_u64(seed));
                let node = Rc::new(RefCell::new(node));
                *slot.borrow_mut() = Some(node.clone());
                trace.borrow_mut().record_now(BALANCER, "up");
                let dcfg = DriverConfig {
                    trace_accepts: true,
                    ..DriverConfig::default()
                };
                serve(BALANCER, BALANCER_PORT, node, None, trace, dcfg, |_, ev| {
                    observe(ev)
                })
                .await
            }
        });
        self.hosts.push(BALANCER.to_string());
    }

    /// Every server but `id`, as its replica config names its peers.
    pub fn peers_of(&self, id: u32) -> Vec<ServerAddr> {
        server_addrs(self.cluster)
            .into_iter()
            .filter(|p| p.id != id)
            .collect()
    }

    /// The directory of server `id`'s store.
    pub fn store_dir(&self, id: u32) -> PathBuf {
        store_dir(self.run_dir.path(), self.seed, &server_host(id))
    }

    /// Registers server `server.id` (the next one) with its own store and
    /// disk, which survive its crashes; `observe` sees its events.
    pub fn add_server(
        &mut self,
        server: ServerConfig,
        replica: ReplicaConfig,
        driver: DriverConfig,
        observe: ServerObserver,
    ) {
        let id = server.id;
        let slot = Rc::new(RefCell::new(ServerSlot::default()));
        self.servers.push(slot.clone());
        let disk = shared_disk();
        self.disks.push(disk.clone());
        let host = server_host(id);
        let spec = ServerSpec {
            host: host.clone(),
            port: server_port(id),
            server,
            replica,
            secret: self.secret.clone(),
            seed: self.seed,
            store_dir: self.store_dir(id),
            disk,
            driver,
        };
        add_server(&mut self.sim, spec, slot, self.trace.clone(), observe);
        self.hosts.push(host);
    }

    /// Registers client host `name`, whose program `register` adds to the
    /// simulation. A server cut off now is cut off from it too.
    pub fn add_client(&mut self, name: &str, register: impl FnOnce(&mut turmoil::Sim<'static>)) {
        self.add_clients(&[name.to_string()], register);
    }

    /// Registers client hosts `names`, whose programs `register` adds.
    pub fn add_clients(
        &mut self,
        names: &[String],
        register: impl FnOnce(&mut turmoil::Sim<'static>),
    ) {
        register(&mut self.sim);
        for name in names {
            for s in 1..=self.cluster {
                if self.cut[s as usize] {
                    self.sim.partition(server_host(s), name.as_str());
                }
            }
            self.hosts.push(name.clone());
        }
    }

    /// Injects every fault of the plan due by now, the plan's times
    /// counting from `offset`.
    pub fn inject_due(&mut self, offset: Duration) {
        let now = self.now();
        while self
            .faults
            .front()
            .is_some_and(|(at, _)| offset + *at <= now)
        {
            let (_, fault) = self.faults.pop_front().expect("checked above");
            self.inject(fault);
        }
    }

    /// Applies `fault` and says so in the trace. A crash drops the server's
    /// node and closes its store; a restart closes the store too (the
    /// bounce ends the running incarnation) and drops the node.
    pub fn inject(&mut self, fault: Fault) {
        let fault = match self.resolve(fault) {
            Ok(f) => f,
            Err(why) => {
                return self.record(format!("!! {}: {why}", fault_text(fault, self.stores)))
            }
        };
        if let Fault::Crash(s) = fault {
            if self.crashed[s as usize] {
                let text = fault_text(fault, self.stores);
                return self.record(format!("!! {text}: already down"));
            }
        }
        self.record(format!("!! {}", fault_text(fault, self.stores)));
        match fault {
            Fault::Crash(s) => {
                self.sim.crash(server_host(s));
                self.servers[s as usize - 1].borrow_mut().crash();
                self.crashed[s as usize] = true;
            }
            Fault::Restart(s) => {
                let mut slot = self.servers[s as usize - 1].borrow_mut();
                slot.close_store();
                slot.node = None;
                drop(slot);
                self.sim.bounce(server_host(s));
                self.crashed[s as usize] = false;
            }
            Fault::Partition(s) => {
                self.for_links(s, |sim, a, b| sim.partition(a, b));
                self.cut[s as usize] = true;
            }
            Fault::Repair(s) => {
                self.for_links(s, |sim, a, b| sim.repair(a, b));
                self.cut[s as usize] = false;
            }
            // Resolved to one of the above.
            Fault::CrashMaster(_)
            | Fault::RestartMaster(_)
            | Fault::PartitionMaster(_)
            | Fault::RepairMaster(_) => {}
        }
    }

    /// The concrete fault a "the master" fault means now: the running
    /// server that is master in the highest view, remembered under the
    /// fault's number for its undoing.
    fn resolve(&mut self, fault: Fault) -> Result<Fault, &'static str> {
        match fault {
            Fault::CrashMaster(k) | Fault::PartitionMaster(k) => {
                let master = self.with_views(|views| {
                    views
                        .iter()
                        .filter(|v| v.server.replica().is_master())
                        .max_by_key(|v| v.server.replica().view())
                        .map(|v| v.id)
                });
                let Some(s) = master.filter(|s| !self.crashed[*s as usize]) else {
                    return Err("no master now, nothing to do");
                };
                self.struck.insert(k, s);
                Ok(fault.on(s))
            }
            Fault::RestartMaster(k) | Fault::RepairMaster(k) => match self.struck.get(&k) {
                Some(&s) => Ok(fault.on(s)),
                None => Err("that fault found no master, nothing to undo"),
            },
            concrete => Ok(concrete),
        }
    }

    /// Calls `f` for each link between server `s` and every other host.
    fn for_links(&mut self, s: u32, mut f: impl FnMut(&mut turmoil::Sim<'static>, &str, &str)) {
        let me = server_host(s);
        for h in self.hosts.iter().filter(|h| **h != me) {
            f(&mut self.sim, &me, h);
        }
    }

    /// No server is down or cut off.
    pub fn healthy(&self) -> bool {
        !self.crashed.iter().any(|c| *c) && !self.cut.iter().any(|c| *c)
    }

    /// Drops the plan's faults still to come, restarts every server that is
    /// down and repairs every link that is cut.
    pub fn heal(&mut self) {
        self.faults.clear();
        for s in 1..=self.cluster {
            if self.crashed[s as usize] {
                self.inject(Fault::Restart(s));
            }
            if self.cut[s as usize] {
                self.inject(Fault::Repair(s));
            }
        }
    }

    /// One turmoil step, counted. `Some(all_done)` if it went well (every
    /// client program done); `None` after recording a violation: a panic, a
    /// host's failure, or a hang when the simulation ran out of time, with
    /// the programs `unfinished` names.
    pub fn step(&mut self, unfinished: impl FnOnce() -> Vec<String>) -> Option<bool> {
        let at = secs(self.now());
        let result = catch_unwind(AssertUnwindSafe(|| self.sim.step()));
        self.steps += 1;
        let violation = match result {
            Ok(Ok(all_done)) => return Some(all_done),
            Err(panic) => format!(
                "a node or the driver panicked at {at}: {}",
                panic_message(&*panic)
            ),
            Ok(Err(e)) if !e.to_string().starts_with("Ran for duration") => {
                format!("a host failed at {at}: {e}")
            }
            Ok(Err(e)) => format!(
                "clients hang: {e} (unfinished: {})",
                unfinished().join(", ")
            ),
        };
        self.violations.push(violation);
        None
    }

    /// True if nothing in `found` (a check's violations) is; otherwise
    /// records each, stamped with the time.
    pub fn holds(&mut self, found: Vec<String>) -> bool {
        let at = secs(self.now());
        let none = found.is_empty();
        self.violations
            .extend(found.into_iter().map(|v| format!("at {at}: {v}")));
        none
    }

    /// Calls `f` with a view of every running server, in id order.
    pub fn with_views<R>(&self, f: impl FnOnce(&[View<'_>]) -> R) -> R {
        with_views(&self.servers, f)
    }

    /// The run's outcome, with the scenario's `details`. The simulation
    /// goes first: its hosts hold clones of the trace and of the stores,
    /// which must be closed before their directory is removed.
    pub fn finish<D>(self, replay: String, details: D) -> Outcome<D> {
        let sim_time = self.now();
        drop(self.sim);
        let trace = self.trace.borrow().clone();
        drop(self.run_dir);
        Outcome {
            seed: self.seed,
            trace,
            violations: self.violations,
            sim_time,
            steps: self.steps,
            replay,
            details,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::accounts::password::PasswordParams;
    use ferry_core::store::{Batch, Store, Write};
    use ferry_runtime_smol::store::HeedStore;

    /// Crashes and restarts a server at the same simulated instant, again
    /// and again, through [`Harness::inject`] as every scenario does.
    /// Before each crash the test keeps a handle to the running
    /// incarnation's store, as a task or a thread of it that outlived the
    /// crash would: the next incarnation must still open its store (never
    /// "in use"), and the old handle must reach nothing.
    #[test]
    fn a_crash_and_a_restart_at_one_instant_never_find_the_store_in_use() {
        const ROUNDS: u32 = 60;
        let params = SimParams {
            seed: 1,
            duration: Duration::from_secs(3600),
            tick: Duration::from_millis(2),
            latency: (Duration::from_millis(1), Duration::from_millis(2)),
            servers: 1,
            stores: true,
        };
        let mut h = Harness::new(params, Vec::new(), Vec::new());
        let server = ServerConfig {
            password: PasswordParams::TESTING,
            ..ServerConfig::new(1)
        };
        let replica = ReplicaConfig::new(1, 1, Vec::new());
        h.add_server(
            server,
            replica,
            DriverConfig::default(),
            Rc::new(|_, _, _| {}),
        );
        let (dir, slot) = (h.store_dir(1), h.servers[0].clone());
        let up = |h: &mut Harness, incarnation: u32| {
            for _ in 0..50 {
                if let Err(e) = h.sim.step() {
                    panic!("start #{incarnation}: {e}");
                }
                let s = slot.borrow();
                if s.incarnation == incarnation && s.node.is_some() {
                    return;
                }
            }
            panic!("start #{incarnation} never came up");
        };
        up(&mut h, 1);
        for round in 1..=ROUNDS {
            let running = slot.borrow().store().cloned().expect("an open store");
            // The lock is real: while an incarnation runs, nobody else
            // opens its directory.
            let Err(e) = HeedStore::open(&dir) else {
                panic!("round {round}: a second open of a running server's store");
            };
            assert!(e.to_string().contains("in use"), "{e}");
            h.inject(Fault::Crash(1));
            h.inject(Fault::Restart(1));
            up(&mut h, round + 1);
            let mut stale = running;
            assert!(!stale.is_open(), "round {round}: the crashed store is open");
            let mut batch = Batch::default();
            batch.push(Write::SetApplied { index: 99 });
            let Err(e) = stale.commit(&batch) else {
                panic!("round {round}: a crashed incarnation committed");
            };
            assert!(e.to_string().contains("closed by a crash"), "{e}");
        }
        let last = slot.borrow().store().cloned().expect("an open store");
        assert_ne!(last.load().expect("the store loads").applied, 99);
    }
}
