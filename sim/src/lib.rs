//! Deterministic simulation of ferry-core under turmoil.
//!
//! The modules depend on each other one way only, from the bottom up (a
//! module imports only from the layers above it in this list):
//!
//! 1. [`trace`], [`seeds`] (the PRNG, presets, replay commands) and
//!    [`sweep`] (many seeds on a few threads);
//! 2. [`disk`]: the in-memory disks;
//! 3. [`driver`]: the simulated world a node's host acts on (turmoil TCP,
//!    simulated time and disk latencies);
//! 4. [`server_host`]: a server host with its own LMDB store and in-memory
//!    disk, which survive its crashes; its views for the checkers;
//! 5. [`harness`]: the turmoil builder, fault plans and their injection,
//!    the balancer host, guarded steps;
//! 6. [`clients`]: client programs more than one scenario runs (a client
//!    session, the account client);
//! 7. [`checkers`]: invariants of the cluster itself rather than of one
//!    scenario's clients (assignments, durability, the replicas' logs, the
//!    linearizability of the clients' history);
//! 8. [`scenarios`]: connect, replication and files, each with its plan,
//!    its own client programs and its own invariants; no scenario imports
//!    another;
//! 9. the `ferry-sim` binary and the tests.
//!
//! Determinism rules (see `architecture-anchors.md` §3.3): hosts and clients
//! are registered in a fixed order, nothing iterates a `HashMap`, every
//! `select!` is `biased`, nothing reads the real clock or spawns threads.

pub mod checkers;
pub mod clients;
pub mod disk;
pub mod driver;
pub mod harness;
#[cfg(test)]
mod layers;
pub mod scenarios;
pub mod seeds;
pub mod server_host;
pub mod sweep;
pub mod tls;
pub mod trace;

pub use harness::{Details, Outcome};
pub use scenarios::connect::{
    run_connect_scenario, sweep, ConnectConfig, ConnectOutcome, ConnectPlan, Faults,
};
pub use scenarios::files::{
    run_files_scenario, FetchWaits, FilesConfig, FilesDetails, FilesOutcome, FilesPlan,
};
pub use scenarios::peers::{
    run_peers_scenario, PeersConfig, PeersDetails, PeersOutcome, PeersPlan,
};
pub use scenarios::replication::{
    run_replication_scenario, ReplicationConfig, ReplicationDetails, ReplicationOutcome,
    ReplicationPlan,
};
pub use seeds::Preset;
pub use seeds::{
    files_replay_command, replay_command, replication_replay_command, sweep_count, sweep_count_or,
    sweep_seeds,
};
pub use sweep::{sweep_threads, sweep_with, RunOutcome, SweepReport};
