//! Simulation tests of failover: the replication scenario's clients on three
//! or five servers while the master is crashed (and maybe the next one
//! too), cut off from every host while clients write to it, and restarted
//! on its store; a follower maybe restarted too. Checked after every step:
//! committed entries never change and agree everywhere, at most one master
//! per view, views never go back, everything committed is on a majority of
//! stores; at the end, every acknowledged registration is there, the healed
//! cluster converges and takes a late client's registration.
//!
//! - `cargo run --release -p ferry-sim -- failover --seed N` re-runs one
//!   seed and prints its trace; `-- failover --seeds 10000` is the long
//!   campaign.
//! - `SIM_SEEDS=N` changes how many seeds `sweep_1000_seeds` runs.

mod common;

use ferry_sim::seeds::replay_command_in;
use ferry_sim::{
    run_replication_scenario, sweep_count_or, sweep_seeds, sweep_threads, sweep_with, Preset,
    ReplicationConfig, ReplicationOutcome,
};
use std::time::Instant;

const SWEEP_SEEDS: u64 = 1000;

fn failover(seed: u64) -> ReplicationOutcome {
    run_replication_scenario(seed, &ReplicationConfig::failover(seed))
}

#[test]
fn sweep_1000_seeds() {
    let seeds: Vec<u64> = sweep_seeds(sweep_count_or(SWEEP_SEEDS)).collect();
    let threads = sweep_threads();
    let wall = Instant::now();
    let report = sweep_with(&seeds, threads, failover, |seed| {
        replay_command_in("failover", seed, Preset::Swarm)
    });
    common::check_sweep(&report, seeds.len(), threads, wall, true);
    // The sweep exercised what it is for.
    let count = |what: &str| {
        report
            .counts
            .iter()
            .find(|(w, _)| *w == what)
            .map_or(0, |(_, n)| *n)
    };
    let runs = seeds.len() as u64;
    assert!(
        count("runs with a master crash") >= runs,
        "{:?}",
        report.counts
    );
    assert!(
        count("runs that lost a second master") > 0,
        "{:?}",
        report.counts
    );
    assert!(
        count("runs with a master cut off") > 0,
        "{:?}",
        report.counts
    );
    assert!(
        count("views that had a master") > runs,
        "{:?}",
        report.counts
    );
}

/// The failed master's seat is taken: some seed elects a new master and
/// the old one comes back as a follower of a later view.
#[test]
fn a_crashed_master_is_replaced_and_returns_as_a_follower() {
    let seed = 3;
    let outcome = failover(seed);
    outcome.assert_ok();
    let trace = outcome.rendered();
    let replay = replay_command_in("failover", seed, Preset::Swarm);
    assert!(trace.contains("elected master of view"), "replay: {replay}");
    assert!(
        trace.contains("server1   following server"),
        "the old master follows: replay: {replay}"
    );
}

#[test]
fn same_seed_same_trace() {
    let a = failover(7);
    let b = failover(7);
    a.assert_ok();
    assert_eq!(a.rendered(), b.rendered());
    assert_ne!(a.rendered(), failover(8).rendered());
}
