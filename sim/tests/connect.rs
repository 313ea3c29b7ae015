//! Simulation tests of getting a session: balancer, three servers, clients,
//! a crash and a partition, under turmoil.
//!
//! - `cargo run --release -p ferry-sim -- connect --seed N`
//!   re-runs one seed and prints its trace (`--preset all-servers-down`
//!   or `all-servers-busy` for the fixed scenarios; swarm otherwise).
//! - `SIM_SEEDS=N` changes how many seeds `sweep_200_seeds` runs (default
//!   200); `SIM_SEED_BASE` moves the window, `SIM_THREADS` the parallelism.
//! - `INSTA_UPDATE=always cargo test -p ferry-sim --test connect -- trace_snapshot`
//!   rewrites the pinned trace in `snapshots/`; read the diff before keeping it.

mod common;

use ferry_core::balancer::Tally;
use ferry_core::client::ClientError;
use ferry_sim::scenarios::connect::invariants::ClientResult;
use ferry_sim::{
    replay_command, run_connect_scenario, sweep, sweep_count, sweep_seeds, sweep_threads,
    ConnectConfig, ConnectOutcome, Preset,
};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// A seed whose story has it all: a crash that disconnects a client, an
/// attacker whose replayed code is refused (used, wrong server), a partition
/// that makes the balancer skip a server, a probe that gets no answer, a
/// busy server and a "no server", the heal, the late client that connects,
/// and a session the partitioned server never learns has ended.
const SNAPSHOT_SEED: u64 = 191;

fn swarm(seed: u64) -> ConnectOutcome {
    run_connect_scenario(seed, &ConnectConfig::swarm(seed))
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
            "connect scenario, swarm config of seed {SNAPSHOT_SEED}; replay: {}",
            replay_command(SNAPSHOT_SEED, Preset::Swarm)
        ),
    }, {
        insta::assert_snapshot!(format!("sim_connect_seed_{SNAPSHOT_SEED}"), outcome.rendered());
    });
}

#[test]
fn same_seed_same_trace() {
    let seed = 7;
    let a = swarm(seed);
    let b = swarm(seed);
    a.assert_ok();
    assert_eq!(
        a.rendered(),
        b.rendered(),
        "seed {seed} is not deterministic; replay: {}",
        replay_command(seed, Preset::Swarm)
    );
    assert_eq!(a.steps, b.steps);
    let c = swarm(seed + 1);
    assert_ne!(
        a.rendered(),
        c.rendered(),
        "seeds {seed} and {} tell the same story",
        seed + 1
    );
}

#[test]
fn sweep_200_seeds() {
    let seeds: Vec<u64> = sweep_seeds(sweep_count()).collect();
    let threads = sweep_threads();
    let wall = Instant::now();
    let report = sweep(&seeds, threads, Preset::Swarm);
    common::check_sweep(&report, seeds.len(), threads, wall, false);
}

/// Every server is down before anyone asks: each client is told "no server"
/// after the balancer's probes time out, well within its own timeout. (A
/// server that just timed out for another client is in back-off and not
/// asked again, so a client may be told after fewer than three probes.)
#[test]
fn all_servers_down_gives_no_server() {
    let cfg = ConnectConfig::all_servers_down();
    for seed in [1, 2, 3] {
        let outcome = run_connect_scenario(seed, &cfg);
        outcome.assert_ok();
        assert_eq!(outcome.details.clients.len(), cfg.clients as usize);
        for c in &outcome.details.clients {
            let took = c.at.expect("finished") - c.start;
            assert!(
                matches!(
                    c.result,
                    Some(ClientResult::Failed(ClientError::NoServer(Tally {
                        probed: 1..=3,
                        busy: 0,
                        no_master: 0,
                        catching_up: 0,
                    })))
                ),
                "seed {seed}: {} ended with {:?}; replay: {}",
                c.name,
                c.result,
                replay_command(seed, Preset::AllServersDown)
            );
            // Three probes of one second each, plus the network.
            assert!(took < Duration::from_secs(4), "{} took {took:?}", c.name);
        }
    }
}

/// Every slot is held: clients that come later are told "no server, all
/// busy" at once, and nobody hangs.
#[test]
fn all_servers_busy_gives_no_server() {
    let cfg = ConnectConfig::all_servers_busy();
    for seed in [1, 2, 3] {
        let outcome = run_connect_scenario(seed, &cfg);
        outcome.assert_ok();
        let (holders, late) = outcome.details.clients.split_at(cfg.holders as usize);
        let servers: BTreeSet<u32> = holders
            .iter()
            .map(|c| match c.result {
                Some(ClientResult::Connected { server_id, .. }) => server_id,
                ref other => panic!("seed {seed}: holder {} ended with {other:?}", c.name),
            })
            .collect();
        assert_eq!(servers.len(), 3, "seed {seed}: holders share a server");
        for c in late {
            let took = c.at.expect("finished") - c.start;
            assert!(
                matches!(
                    c.result,
                    Some(ClientResult::Failed(ClientError::NoServer(Tally {
                        probed: 3,
                        busy: 3,
                        no_master: 0,
                        catching_up: 0,
                    })))
                ),
                "seed {seed}: {} ended with {:?}; replay: {}",
                c.name,
                c.result,
                replay_command(seed, Preset::AllServersBusy)
            );
            assert!(took < Duration::from_secs(1), "{} took {took:?}", c.name);
        }
    }
}

/// The harness itself: a run that cannot finish in its time is a failure
/// that names the stuck clients and says how to replay it.
#[test]
fn a_hang_is_reported_with_the_stuck_clients() {
    let cfg = ConnectConfig {
        holders: 1,
        clients: 1,
        long_hold: Duration::from_secs(30),
        faults: ferry_sim::Faults::None,
        liveness: false,
        duration: Duration::from_secs(5),
        ..ConnectConfig::default()
    };
    let outcome = run_connect_scenario(11, &cfg);
    assert!(!outcome.is_ok());
    let report = outcome.failure_report();
    assert!(report.contains("unfinished: client1"), "{report}");
    assert!(
        report.contains(&replay_command(11, Preset::Custom)),
        "{report}"
    );
}

/// The balancer's search takes up to `probe_timeout` (1 s) per server and
/// the client waits `step_timeout` (5 s): with six unresponsive servers the
/// search budget (3 s) must end it with a clear "no server", not a timeout.
#[test]
fn many_dead_servers_still_give_no_server() {
    let cfg = ConnectConfig {
        preset: Preset::Custom,
        servers: 6,
        clients: 1,
        ..ConnectConfig::all_servers_down()
    };
    run_connect_scenario(1, &cfg).assert_ok();
}
