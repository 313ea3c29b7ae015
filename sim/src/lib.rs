//! Deterministic simulation of ferry-core under turmoil.
//!
//! The modules depend on each other one way only, from the bottom up:
//!
//! - the harness: [`trace`], [`seeds`] (the PRNG, presets, replay commands)
//!   and [`sweep`] (many seeds on a few threads) at the bottom; [`disk`]
//!   (the in-memory disks); [`driver`] (the simulated world a node's host
//!   acts on: turmoil TCP, simulated time and disk latencies);
//!   [`server_host`] (a server host with its own LMDB store and in-memory
//!   disk, which survive its crashes; its views for the checkers);
//!   [`harness`] (the turmoil builder, fault plans and their injection,
//!   the balancer host, guarded steps);
//! - [`checkers`]: invariants checked from outside the nodes (assignments,
//!   durability), each proven against a deliberate bug;
//! - the scenarios, each with its own invariants: [`scenario`] (connect:
//!   getting a session, with [`invariants`] and the replaying [`attacker`]),
//!   [`replication`] (register and log in on a three-server cluster while
//!   followers restart and are cut off and the master may crash) and
//!   [`files`] (uploads, downloads, shares and deletes under the same
//!   faults, every disk checked against the catalogue after the heal),
//!   which builds on replication's.
//!
//! Determinism rules (see `architecture-anchors.md` §3.3): hosts and clients
//! are registered in a fixed order, nothing iterates a `HashMap`, every
//! `select!` is `biased`, nothing reads the real clock or spawns threads.

pub mod attacker;
pub mod checkers;
mod client_session;
pub mod disk;
pub mod driver;
pub mod files;
pub mod harness;
pub mod invariants;
pub mod replication;
pub mod scenario;
pub mod seeds;
pub mod server_host;
pub mod sweep;
pub mod trace;

pub use files::{run_files_scenario, FetchWaits, FilesConfig, FilesOutcome, FilesPlan};
pub use replication::{
    run_replication_scenario, ReplicationConfig, ReplicationOutcome, ReplicationPlan,
};
pub use scenario::{run_connect_scenario, sweep, Faults, Outcome, Plan, ScenarioConfig};
pub use seeds::Preset;
pub use seeds::{
    files_replay_command, replay_command, replication_replay_command, sweep_count, sweep_count_or,
    sweep_seeds,
};
pub use sweep::{sweep_threads, sweep_with, RunOutcome, SweepReport};
