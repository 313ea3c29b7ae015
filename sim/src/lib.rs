//! Deterministic simulation of ferry-core under turmoil.
//!
//! - [`driver`]: a thin tokio/turmoil loop that runs any [`ferry_core::Node`]
//!   on simulated TCP, with simulated time.
//! - [`scenario`]: the VOPR-style harness: a seed picks the load and the
//!   faults, the harness steps turmoil, injects faults and checks invariants.
//! - [`invariants`]: what must hold in every run of the connect scenario.
//! - [`replication`]: the replication scenario: clients register and log in
//!   on a three-server cluster while followers restart and are cut off and
//!   the master may crash; its own invariants and account client.
//! - [`files`]: the files scenario: users upload, download, share, unshare,
//!   delete and list through the cluster under the same faults; every answer
//!   is checked against the committed log, every disk against the
//!   catalogue, and every file through every server after the heal.
//! - [`server_host`]: a server host with its own LMDB store and in-memory
//!   disk, which survive the host's crashes and restarts.
//! - [`disk`]: the in-memory disks the driver executes file operations on.
//! - [`attacker`]: a dishonest client that replays its auth code.
//! - [`trace`]: the one-line-per-event trace that the snapshot tests pin.
//! - [`seeds`]: the harness PRNG and the `SIM_SEED` / `SIM_SEEDS` variables.
//! - [`sweep`]: many seeds on a few threads, failures with replay lines.
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
mod harness;
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
pub use scenario::{run_connect_scenario, Faults, Outcome, Plan, Preset, ScenarioConfig};
pub use seeds::{
    files_replay_command, replay_command, replication_replay_command, sweep_count, sweep_count_or,
    sweep_seeds,
};
pub use sweep::{sweep, sweep_threads, sweep_with, RunOutcome, SweepReport};
