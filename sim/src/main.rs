//! `ferry-sim`: runs a simulation scenario over many seeds, or one seed
//! with its trace.
//!
//! ```text
//! ferry-sim files --seeds 3000            # a sweep: seeds 1..=3000
//! ferry-sim files --seed 238              # one seed: its trace
//! ferry-sim connect --seeds 500 --preset all-servers-down
//! ferry-sim peers --seeds 200
//! ```
//!
//! A sweep prints each failing seed's first violation and the one-line
//! command that replays it, then one summary line; it exits non-zero if any
//! seed failed.

use clap::{Parser, ValueEnum};
use ferry_sim::checkers::linearizability::record::{HISTORIES_CHECKED, HISTORIES_OVER_BUDGET};
use ferry_sim::{
    run_connect_scenario, run_files_scenario, run_peers_scenario, run_replication_scenario,
    sweep_with, ConnectConfig, FilesConfig, PeersConfig, Preset, ReplicationConfig, RunOutcome,
};
use std::process::ExitCode;
use std::time::Instant;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Scenario {
    /// Clients get a server through the balancer and handshake, while
    /// servers crash and are cut off.
    Connect,
    /// Clients register and log in on a replicated cluster under faults.
    Replication,
    /// Users upload, download, share and delete files under faults.
    Files,
    /// Clients register and log in while masters crash, are cut off and
    /// come back, on three or five servers.
    Failover,
    /// Peers register, connect, PUT and GET between shared directories
    /// while servers and peers crash.
    Peers,
}

#[derive(Parser, Debug)]
#[command(name = "ferry-sim", about = "Deterministic simulation of Ferry")]
struct Args {
    scenario: Scenario,
    /// How many seeds to sweep, from --base on.
    #[arg(long, default_value_t = 300, conflicts_with = "seed")]
    seeds: u64,
    /// The first seed of the sweep.
    #[arg(long, default_value_t = 1)]
    base: u64,
    /// Runs this one seed and prints its trace.
    #[arg(long)]
    seed: Option<u64>,
    /// Threads of the sweep (default: the machine's parallelism, at most 4).
    #[arg(long)]
    threads: Option<usize>,
    /// The connect scenario's configuration: swarm, all-servers-down,
    /// all-servers-busy.
    #[arg(long, default_value = "swarm")]
    preset: String,
    /// Files: no download is served from a point of the log before a
    /// revocation the owner was already told of.
    #[arg(long)]
    strict_revocation: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let Some(preset) = Preset::from_name(&args.preset) else {
        eprintln!(
            "ferry-sim: unknown preset {:?} (swarm, all-servers-down, all-servers-busy)",
            args.preset
        );
        return ExitCode::from(2);
    };
    if !matches!(args.scenario, Scenario::Connect) && preset != Preset::Swarm {
        eprintln!("ferry-sim: only the connect scenario has presets");
        return ExitCode::from(2);
    }
    let run = move |seed: u64| -> Box<dyn RunOutcome + Send> {
        match args.scenario {
            Scenario::Connect => {
                let cfg = ConnectConfig::for_preset(preset, seed)
                    .expect("named presets have a configuration");
                Box::new(run_connect_scenario(seed, &cfg))
            }
            Scenario::Replication => Box::new(run_replication_scenario(
                seed,
                &ReplicationConfig::swarm(seed),
            )),
            Scenario::Failover => Box::new(run_replication_scenario(
                seed,
                &ReplicationConfig::failover(seed),
            )),
            Scenario::Files => {
                let cfg = FilesConfig {
                    strict_revocation: args.strict_revocation,
                    ..FilesConfig::swarm(seed)
                };
                Box::new(run_files_scenario(seed, &cfg))
            }
            Scenario::Peers => Box::new(run_peers_scenario(seed, &PeersConfig::swarm(seed))),
        }
    };
    let name = format!("{:?}", args.scenario).to_lowercase();
    if let Some(seed) = args.seed {
        let outcome = run(seed);
        println!("{}", outcome.rendered());
        for (what, n) in outcome.counts() {
            println!("  {n:>4} {what}");
        }
        if outcome.violations().is_empty() {
            println!("{name}: seed {seed} holds every invariant");
            return ExitCode::SUCCESS;
        }
        println!("{}", outcome.failure_report());
        return ExitCode::FAILURE;
    }
    let seeds: Vec<u64> = (0..args.seeds).map(|i| args.base.wrapping_add(i)).collect();
    let threads = args.threads.unwrap_or_else(ferry_sim::sweep_threads);
    let wall = Instant::now();
    let report = sweep_with(&seeds, threads, run, |seed| {
        format!("cargo run --release -p ferry-sim -- {name} --seed {seed}")
    });
    for f in &report.failures {
        println!("seed {}: {}\n  replay: {}", f.seed, f.summary, f.replay);
    }
    let secs = wall.elapsed().as_secs_f64();
    println!(
        "{name}: {} seeds in {secs:.1} s ({:.1} seeds/s), {} seed(s) with violations{}",
        report.runs,
        report.runs as f64 / secs.max(1e-9),
        report.failures.len(),
        linearizability(&report.counts)
    );
    // What the runs did, summed: the figures docs/simulation.md quotes.
    for (what, n) in &report.counts {
        println!("  {n:>6} {what}");
    }
    match report.is_ok() {
        true => ExitCode::SUCCESS,
        false => ExitCode::FAILURE,
    }
}

/// The linearizability checker's part of the summary line, if the
/// scenario runs it: histories checked, and those it gave up on (over its
/// step budget: counted, not failed).
fn linearizability(counts: &[(&'static str, u64)]) -> String {
    let get = |what: &str| counts.iter().find(|(w, _)| *w == what).map(|(_, n)| *n);
    match get(HISTORIES_CHECKED) {
        Some(checked) => format!(
            "; linearizability: {checked} histories checked, {} over budget",
            get(HISTORIES_OVER_BUDGET).unwrap_or(0)
        ),
        None => String::new(),
    }
}
