//! Simulation tests of replication and accounts: balancer, three servers
//! (server 1 the master) with LMDB stores, clients registering colliding
//! usernames and logging in, a follower restarted from its store, a follower
//! cut off, maybe the master crashed; then the heal, and convergence.
//!
//! - `cargo run --release -p ferry-sim -- replication --seed N`
//!   re-runs one seed and prints its trace.
//! - `SIM_SEEDS=N` changes how many seeds `sweep_300_seeds` runs (default
//!   300); `SIM_SEED_BASE` moves the window, `SIM_THREADS` the parallelism.
//! - `INSTA_UPDATE=always cargo test -p ferry-sim --test replication -- trace_snapshot`
//!   rewrites the pinned trace in `snapshots/`; read the diff before keeping it.

mod common;

use ferry_sim::{
    replication_replay_command, run_replication_scenario, sweep_count_or, sweep_seeds,
    sweep_threads, sweep_with, Preset, ReplicationConfig, ReplicationOutcome,
};
use std::time::Instant;

/// A seed whose story has it all: server2 cut off (it times out, rejoins on
/// a new link after the repair and catches up #1), then crashed and
/// restarted from its store; the master crashed and restarted from its
/// store, the followers saying "no" to the balancer meanwhile, so clients
/// are told "no server" and try again; two clients' registrations of "bob"
/// forwarded by server3 at once, the master's order deciding (#2 registered,
/// #3 username taken); a login on another server than the registration's;
/// a client that lost "alice" refused at login; the late client;
/// convergence.
const SNAPSHOT_SEED: u64 = 393;

/// Seeds `sweep_300_seeds` runs unless `SIM_SEEDS` says otherwise.
const SWEEP_SEEDS: u64 = 300;

fn swarm(seed: u64) -> ReplicationOutcome {
    run_replication_scenario(seed, &ReplicationConfig::swarm(seed))
}

#[test]
fn trace_snapshot() {
    let outcome = swarm(SNAPSHOT_SEED);
    outcome.assert_ok();
    insta::with_settings!({
        snapshot_path => "../../snapshots",
        prepend_module_to_snapshot => false,
        omit_expression => true,
        description => format!(
            "replication scenario, swarm config of seed {SNAPSHOT_SEED}; replay: {}",
            replication_replay_command(SNAPSHOT_SEED, Preset::Swarm)
        ),
    }, {
        insta::assert_snapshot!(format!("sim_replication_seed_{SNAPSHOT_SEED}"), outcome.rendered());
    });
}

#[test]
fn same_seed_same_trace() {
    let seed = 5;
    let a = swarm(seed);
    let b = swarm(seed);
    a.assert_ok();
    assert_eq!(
        a.rendered(),
        b.rendered(),
        "seed {seed} is not deterministic; replay: {}",
        replication_replay_command(seed, Preset::Swarm)
    );
    assert_eq!(a.steps, b.steps);
    assert_eq!(a.details.converged, b.details.converged);
    let c = swarm(seed + 1);
    assert_ne!(
        a.rendered(),
        c.rendered(),
        "seeds {seed} and {} tell the same story",
        seed + 1
    );
}

#[test]
fn sweep_300_seeds() {
    let seeds: Vec<u64> = sweep_seeds(sweep_count_or(SWEEP_SEEDS)).collect();
    let threads = sweep_threads();
    let wall = Instant::now();
    let report = sweep_with(&seeds, threads, swarm, |seed| {
        replication_replay_command(seed, Preset::Swarm)
    });
    common::check_sweep(&report, seeds.len(), threads, wall, true);
}
