//! Faults: what the harness does to servers and their links, and the fault
//! plan of the replicated scenarios.

use super::server_host;
use crate::seeds::SimRng;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Crash(u32),
    Restart(u32),
    Partition(u32),
    Repair(u32),
}

/// How the trace and the plans name `f`; a restart is said to be "from its
/// store" where `stores` (the replicated scenarios, whose servers resume
/// from what their stores hold).
pub fn fault_text(f: Fault, stores: bool) -> String {
    match f {
        Fault::Crash(s) => format!("crash {}", server_host(s)),
        Fault::Restart(s) if stores => format!("restart {} from its store", server_host(s)),
        Fault::Restart(s) => format!("restart {}", server_host(s)),
        Fault::Partition(s) => format!("partition {} from every host", server_host(s)),
        Fault::Repair(s) => format!("repair {}'s links", server_host(s)),
    }
}

/// The knobs of the replicated scenarios' fault plan.
pub struct FaultParams {
    pub servers: u32,
    pub master: u32,
    pub fault_window: (Duration, Duration),
    pub other_follower_cut_pct: u32,
    pub master_crash_pct: u32,
}

/// A follower restarted (at once or after a while), a follower cut off
/// (usually the other one) and later reconnected, and maybe the master
/// crashed and restarted; sorted by time.
pub fn replicated_faults(rng: &mut SimRng, cfg: &FaultParams) -> Vec<(Duration, Fault)> {
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
