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
    /// Whichever server is master when the fault strikes, remembered as
    /// the `k`th master struck, so that [`Fault::RestartMaster`] and
    /// [`Fault::RepairMaster`] with the same `k` undo it. With no master
    /// at that moment, the fault (and its undoing) is a no-op.
    CrashMaster(u8),
    RestartMaster(u8),
    PartitionMaster(u8),
    RepairMaster(u8),
}

impl Fault {
    /// The same fault on server `s`, for one that names "the master".
    pub fn on(self, s: u32) -> Fault {
        match self {
            Fault::CrashMaster(_) => Fault::Crash(s),
            Fault::RestartMaster(_) => Fault::Restart(s),
            Fault::PartitionMaster(_) => Fault::Partition(s),
            Fault::RepairMaster(_) => Fault::Repair(s),
            concrete => concrete,
        }
    }
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
        Fault::CrashMaster(k) => format!("crash the master (#{k})"),
        Fault::RestartMaster(k) => format!("restart master #{k} from its store"),
        Fault::PartitionMaster(k) => format!("partition the master (#{k}) from every host"),
        Fault::RepairMaster(k) => format!("repair master #{k}'s links"),
    }
}

/// The knobs of the failover scenario's fault plan.
pub struct FailoverParams {
    pub fault_window: (Duration, Duration),
    /// Chance (percent) that the master is also cut off from every host
    /// (the majority and the clients) for a while.
    pub master_cut_pct: u32,
    /// Chance (percent) that the master elected after the first crash is
    /// lost too, before the first comes back.
    pub second_crash_pct: u32,
    /// Chance (percent) that a follower crashes and comes back as well.
    pub follower_bounce_pct: u32,
    pub servers: u32,
}

/// The master crashed and later restarted on its store; maybe the next
/// master lost too before it is back; maybe a master cut off from every
/// host while clients keep writing to it (it comes back with a longer log
/// that never committed); maybe a follower restarted. Sorted by time.
pub fn failover_faults(rng: &mut SimRng, p: &FailoverParams) -> Vec<(Duration, Fault)> {
    let mut faults = Vec::new();
    let (from, to) = p.fault_window;
    let at = rng.duration(from, to);
    let down = rng.duration(Duration::from_millis(200), Duration::from_secs(5));
    faults.push((at, Fault::CrashMaster(0)));
    if rng.chance(p.second_crash_pct) {
        // After the first election, before the first master is back.
        let gap = rng.duration(Duration::from_millis(1500), Duration::from_secs(4));
        let down2 = rng.duration(Duration::from_millis(500), Duration::from_secs(4));
        faults.push((at + gap, Fault::CrashMaster(1)));
        faults.push((at + gap + down2, Fault::RestartMaster(1)));
        faults.push((
            at + gap.max(down) + Duration::from_millis(100),
            Fault::RestartMaster(0),
        ));
    } else {
        faults.push((at + down, Fault::RestartMaster(0)));
    }
    if rng.chance(p.master_cut_pct) {
        let at = rng.duration(from, to);
        let len = rng.duration(Duration::from_millis(500), Duration::from_secs(6));
        faults.push((at, Fault::PartitionMaster(2)));
        faults.push((at + len, Fault::RepairMaster(2)));
    }
    if rng.chance(p.follower_bounce_pct) {
        let s = rng.range(1, u64::from(p.servers)) as u32;
        let at = rng.duration(from, to);
        let down = rng.duration(Duration::ZERO, Duration::from_secs(3));
        faults.push((at, Fault::Crash(s)));
        faults.push((at + down, Fault::Restart(s)));
    }
    faults.sort_by_key(|(at, _)| *at);
    faults
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
