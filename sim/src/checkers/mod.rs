//! Invariant checkers of the cluster itself, not of one scenario's clients.
//!
//! The first two look at a run from outside every node: they trust no
//! node's account of itself, only what another party (a server's own
//! answer, a store's contents) shows. Each is proven by a test that
//! switches a bug on (`ferry_core::sabotage`) and sees it fire
//! (`sim/tests/checkers.rs`).
//!
//! - [`assignments`]: the balancer hands out only servers that answered
//!   "yes" to that very probe.
//! - [`durability`]: every committed entry is durable on a majority of the
//!   servers' stores, and no server applies an entry before the master has
//!   committed it.
//! - [`replica_log`]: what the running servers report of their own logs
//!   (indexes ordered and never going back, committed entries never
//!   changing, logs agreeing), and whether the healed cluster converged.
//! - [`linearizability`]: the clients' own history (what each asked, when,
//!   and what it was answered) has an order, consistent with real time, in
//!   which a sequential model of the catalogue gives every answer.

pub mod assignments;
pub mod durability;
pub mod linearizability;
pub mod replica_log;
