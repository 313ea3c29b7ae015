//! Pieces the scenario harnesses (connect, replication, files) share: the
//! turmoil builder, the fault plan of the replicated scenarios, the
//! balancer host, one guarded turmoil step, and the link bookkeeping that
//! partitions and repairs need.

use crate::driver::{serve, DriverConfig};
use crate::seeds::SimRng;
use crate::server_host::ServerSlot;
use crate::sweep::panic_message;
use crate::trace::SharedTrace;
use ferry_core::auth::ClusterSecret;
use ferry_core::balancer::{Balancer, BalancerConfig, ServerAddr};
use ferry_core::Entropy;
use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

mod outcome;
pub use outcome::{Details, Outcome};

pub const BALANCER: &str = "balancer";
pub const BALANCER_PORT: u16 = 7000;

/// The host name of server `id`.
pub fn server_host(id: u32) -> String {
    format!("server{id}")
}

/// The port server `id` listens on.
pub fn server_port(id: u32) -> u16 {
    BALANCER_PORT + id as u16
}

/// A fixed epoch (Unix seconds), so nothing in a run depends on the wall
/// clock.
pub const EPOCH_SECS: u64 = 1_780_000_000;
/// The master of the replicated scenarios, by configuration.
pub const MASTER: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Crash(u32),
    Restart(u32),
    Partition(u32),
    Repair(u32),
}

/// The simulation's knobs every scenario has.
pub(crate) struct SimParams {
    pub seed: u64,
    pub epoch_secs: u64,
    pub duration: Duration,
    pub tick: Duration,
    pub latency: (Duration, Duration),
}

/// A turmoil simulation seeded and timed as `p` says.
pub(crate) fn build_sim(p: SimParams) -> turmoil::Sim<'static> {
    turmoil::Builder::new()
        .rng_seed(p.seed)
        .epoch(UNIX_EPOCH + Duration::from_secs(p.epoch_secs))
        .simulation_duration(p.duration)
        .tick_duration(p.tick)
        .min_message_latency(p.latency.0)
        .max_message_latency(p.latency.1)
        .build()
}

/// Servers `1..=servers` as the balancer and the replicas address them.
pub(crate) fn server_addrs(servers: u32) -> Vec<ServerAddr> {
    (1..=servers)
        .map(|id| ServerAddr {
            id,
            addr: format!("{}:{}", server_host(id), server_port(id)),
        })
        .collect()
}

/// How the trace and the plans name `f`.
pub(crate) fn fault_text(f: Fault) -> String {
    match f {
        Fault::Crash(s) => format!("crash {}", server_host(s)),
        Fault::Restart(s) => format!("restart {} from its store", server_host(s)),
        Fault::Partition(s) => format!("partition {} from every host", server_host(s)),
        Fault::Repair(s) => format!("repair {}'s links", server_host(s)),
    }
}

/// The knobs of the replicated scenarios' fault plan.
pub(crate) struct FaultParams {
    pub servers: u32,
    pub master: u32,
    pub fault_window: (Duration, Duration),
    pub other_follower_cut_pct: u32,
    pub master_crash_pct: u32,
}

/// A follower restarted (at once or after a while), a follower cut off
/// (usually the other one) and later reconnected, and maybe the master
/// crashed and restarted; sorted by time.
pub(crate) fn replicated_faults(rng: &mut SimRng, cfg: &FaultParams) -> Vec<(Duration, Fault)> {
    let mut faults = Vec::new();
    if cfg.servers < 3 {
        return faults;
    }
    let followers: Vec<u32> = (1..=cfg.servers).filter(|s| *s != cfg.master).collect();
    let bounced = *rng.pick(&followers);
    let at = rng.duration(cfg.fault_window.0, cfg.fault_window.1);
    let down = if rng.chance(30) {
        Duration::ZERO
    } else {
        rng.duration(Duration::from_millis(100), Duration::from_secs(3))
    };
    faults.push((at, Fault::Crash(bounced)));
    faults.push((at + down, Fault::Restart(bounced)));
    let others: Vec<u32> = followers
        .iter()
        .copied()
        .filter(|s| *s != bounced)
        .collect();
    let cut = if rng.chance(cfg.other_follower_cut_pct) {
        *rng.pick(&others)
    } else {
        bounced
    };
    let at = rng.duration(cfg.fault_window.0, cfg.fault_window.1);
    let len = rng.duration(Duration::from_millis(500), Duration::from_secs(6));
    faults.push((at, Fault::Partition(cut)));
    faults.push((at + len, Fault::Repair(cut)));
    if rng.chance(cfg.master_crash_pct) {
        let at = rng.duration(cfg.fault_window.0, cfg.fault_window.1);
        let down = rng.duration(Duration::from_millis(200), Duration::from_secs(4));
        faults.push((at, Fault::Crash(cfg.master)));
        faults.push((at + down, Fault::Restart(cfg.master)));
    }
    faults.sort_by_key(|(at, _)| *at);
    faults
}

/// Registers the balancer host of the replicated scenarios (no events
/// observed). Never restarted: its nonces come from the seed alone.
pub(crate) fn add_plain_balancer(
    sim: &mut turmoil::Sim<'static>,
    servers: Vec<ServerAddr>,
    secret: &ClusterSecret,
    trace: &SharedTrace,
    seed: u64,
) {
    let bcfg = BalancerConfig::new(servers);
    let (trace, secret) = (trace.clone(), secret.clone());
    sim.host(BALANCER, move || {
        let (bcfg, trace, secret) = (bcfg.clone(), trace.clone(), secret.clone());
        async move {
            let node = Balancer::new(bcfg, secret, Entropy::from_u64(seed));
            let node = Rc::new(RefCell::new(node));
            trace.borrow_mut().record_now(BALANCER, "up");
            let dcfg = DriverConfig {
                trace_accepts: true,
                ..DriverConfig::default()
            };
            serve(BALANCER, BALANCER_PORT, node, None, trace, dcfg, |_, _| {}).await
        }
    });
}

/// One turmoil step, counted in `steps`. `Some(all_done)` if it went well;
/// `None` after recording a violation: a panic, a host's failure, or (when
/// the simulation ran out of time) the text `hang` makes of the error.
pub(crate) fn guarded_step(
    sim: &mut turmoil::Sim<'static>,
    steps: &mut u64,
    violations: &mut Vec<String>,
    at: &str,
    hang: impl FnOnce(String) -> String,
) -> Option<bool> {
    let result = catch_unwind(AssertUnwindSafe(|| sim.step()));
    *steps += 1;
    match result {
        Ok(Ok(all_done)) => return Some(all_done),
        Err(panic) => violations.push(format!(
            "a node or the driver panicked at {at}: {}",
            panic_message(&*panic)
        )),
        Ok(Err(e)) if !e.to_string().starts_with("Ran for duration") => {
            violations.push(format!("a host failed at {at}: {e}"))
        }
        Ok(Err(e)) => violations.push(hang(e.to_string())),
    }
    None
}

/// Calls `f` for each link between server `s` and every other host.
pub(crate) fn for_links(
    sim: &mut turmoil::Sim<'static>,
    hosts: &[String],
    s: u32,
    mut f: impl FnMut(&mut turmoil::Sim<'static>, &str, &str),
) {
    let me = server_host(s);
    for h in hosts.iter().filter(|h| **h != me) {
        f(sim, &me, h);
    }
}

/// A server cut off now is cut off from the newcomer `name` too (`cut` is
/// indexed by server id).
pub(crate) fn cut_off_newcomer(
    sim: &mut turmoil::Sim<'static>,
    cut: &[bool],
    servers: u32,
    name: &str,
) {
    for s in 1..=servers {
        if cut[s as usize] {
            sim.partition(server_host(s), name);
        }
    }
}

/// What the harness knows of its servers and links, for [`apply_fault`].
pub(crate) struct FaultState<'a> {
    pub sim: &'a mut turmoil::Sim<'static>,
    /// Every host registered so far.
    pub hosts: &'a [String],
    /// The servers' slots, server `id` at `id - 1`.
    pub servers: &'a [Rc<RefCell<ServerSlot>>],
    /// Indexed by server id.
    pub crashed: &'a mut [bool],
    pub cut: &'a mut [bool],
}

/// Applies `fault` and notes it in `st`. A crash drops the server's node and
/// closes its store; a restart closes the store too (the bounce ends the
/// running incarnation), and drops the node when `drop_node_on_restart`.
pub(crate) fn apply_fault(st: FaultState<'_>, fault: Fault, drop_node_on_restart: bool) {
    match fault {
        Fault::Crash(s) => {
            st.sim.crash(server_host(s));
            st.servers[s as usize - 1].borrow_mut().crash();
            st.crashed[s as usize] = true;
        }
        Fault::Restart(s) => {
            let mut slot = st.servers[s as usize - 1].borrow_mut();
            slot.close_store();
            if drop_node_on_restart {
                slot.node = None;
            }
            drop(slot);
            st.sim.bounce(server_host(s));
            st.crashed[s as usize] = false;
        }
        Fault::Partition(s) => {
            for_links(st.sim, st.hosts, s, |sim, a, b| sim.partition(a, b));
            st.cut[s as usize] = true;
        }
        Fault::Repair(s) => {
            for_links(st.sim, st.hosts, s, |sim, a, b| sim.repair(a, b));
            st.cut[s as usize] = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server_host::{add_server, run_dir, store_dir, ServerSpec};
    use crate::trace::Trace;
    use ferry_core::accounts::password::PasswordParams;
    use ferry_core::replication::ReplicaConfig;
    use ferry_core::server::ServerConfig;
    use ferry_core::store::{Batch, Store, Write};
    use ferry_runtime_smol::store::HeedStore;

    /// Crashes and restarts a server at the same simulated instant, again
    /// and again, through [`apply_fault`] as every scenario does. Before
    /// each crash the test keeps a handle to the running incarnation's
    /// store, as a task or a thread of it that outlived the crash would:
    /// the next incarnation must still open its store (never "in use"),
    /// and the old handle must reach nothing.
    #[test]
    fn a_crash_and_a_restart_at_one_instant_never_find_the_store_in_use() {
        const ROUNDS: u32 = 60;
        let runs = run_dir().expect("a temporary directory");
        let dir = store_dir(runs.path(), 1, &server_host(1));
        let mut sim = build_sim(SimParams {
            seed: 1,
            epoch_secs: 1_700_000_000,
            duration: Duration::from_secs(3600),
            tick: Duration::from_millis(2),
            latency: (Duration::from_millis(1), Duration::from_millis(2)),
        });
        let slot = Rc::new(RefCell::new(ServerSlot::default()));
        let secret = ClusterSecret::from_bytes(b"ferry-sim-cluster-secret").expect("long enough");
        let spec = ServerSpec {
            host: server_host(1),
            port: server_port(1),
            server: ServerConfig {
                password: PasswordParams::TESTING,
                ..ServerConfig::new(1)
            },
            replica: ReplicaConfig::new(1, 1, Vec::new()),
            secret,
            seed: 1,
            store_dir: dir.clone(),
            disk: crate::disk::shared_disk(),
            driver: DriverConfig::default(),
        };
        add_server(
            &mut sim,
            spec,
            slot.clone(),
            Trace::shared(),
            Rc::new(|_, _, _| {}),
        );
        let hosts = vec![server_host(1)];
        let (mut crashed, mut cut) = (vec![false; 2], vec![false; 2]);
        let up = |sim: &mut turmoil::Sim<'static>, incarnation: u32| {
            for _ in 0..50 {
                if let Err(e) = sim.step() {
                    panic!("start #{incarnation}: {e}");
                }
                let s = slot.borrow();
                if s.incarnation == incarnation && s.node.is_some() {
                    return;
                }
            }
            panic!("start #{incarnation} never came up");
        };
        up(&mut sim, 1);
        for round in 1..=ROUNDS {
            let running = slot.borrow().store().cloned().expect("an open store");
            // The lock is real: while an incarnation runs, nobody else
            // opens its directory.
            let Err(e) = HeedStore::open(&dir) else {
                panic!("round {round}: a second open of a running server's store");
            };
            assert!(e.to_string().contains("in use"), "{e}");
            let servers = [slot.clone()];
            for fault in [Fault::Crash(1), Fault::Restart(1)] {
                let st = FaultState {
                    sim: &mut sim,
                    hosts: &hosts,
                    servers: &servers,
                    crashed: &mut crashed,
                    cut: &mut cut,
                };
                apply_fault(st, fault, round % 2 == 0);
            }
            up(&mut sim, round + 1);
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
