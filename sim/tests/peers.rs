//! Simulation tests of `ferry peer`: four peers on a three-server cluster
//! (server 1 the master, stores on), registering through their own
//! servers, connecting, PUT and GET between shared directories, quitting
//! and rejoining, and SYNC rounds, while servers (the master too) and
//! peers crash and writers crash or stall mid-turn; then the heal, one
//! list for every live peer, a last PUT and a last SYNC round.
//!
//! - `cargo run --release -p ferry-sim -- peers --seed N` re-runs one seed
//!   and prints its trace.
//! - `SIM_SEEDS=N` changes how many seeds `sweep_500_seeds` runs (default
//!   500: 126 s unoptimized on two threads of an otherwise idle machine);
//!   `SIM_SEED_BASE` moves the window, `SIM_THREADS` the parallelism.
//! - `INSTA_UPDATE=always cargo test -p ferry-sim --test peers -- trace_snapshot`
//!   rewrites the pinned trace in `snapshots/`; read the diff before keeping it.

mod common;

use ferry_sim::seeds::replay_command_in;
use ferry_sim::{
    run_peers_scenario, sweep_count_or, sweep_seeds, sweep_threads, sweep_with, PeersConfig,
    PeersOutcome, Preset,
};
use std::time::Instant;

const SNAPSHOT_SEED: u64 = 7;

/// Seeds `sweep_500_seeds` runs unless `SIM_SEEDS` says otherwise.
const SWEEP_SEEDS: u64 = 500;

fn swarm(seed: u64) -> PeersOutcome {
    run_peers_scenario(seed, &PeersConfig::swarm(seed))
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
            "peers scenario, swarm config of seed {SNAPSHOT_SEED}; replay: {}",
            replay_command_in("peers", SNAPSHOT_SEED, Preset::Swarm)
        ),
    }, {
        insta::assert_snapshot!(format!("sim_peers_seed_{SNAPSHOT_SEED}"), outcome.rendered());
    });
}

#[test]
fn same_seed_same_trace() {
    let seed = 5;
    let (a, b) = (swarm(seed), swarm(seed));
    a.assert_ok();
    assert_eq!(
        a.rendered(),
        b.rendered(),
        "seed {seed} is not deterministic"
    );
    assert_eq!(a.steps, b.steps);
    assert_ne!(a.rendered(), swarm(seed + 1).rendered());
}

#[test]
fn sweep_500_seeds() {
    let seeds: Vec<u64> = sweep_seeds(sweep_count_or(SWEEP_SEEDS)).collect();
    let threads = sweep_threads();
    let wall = Instant::now();
    let report = sweep_with(&seeds, threads, swarm, |seed| {
        replay_command_in("peers", seed, Preset::Swarm)
    });
    common::check_sweep(&report, seeds.len(), threads, wall, true);
}
