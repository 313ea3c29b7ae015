//! The scenarios, each a plan drawn from a seed, the client programs that
//! carry it out on [`crate::harness::Harness`], and the invariants of its
//! own:
//!
//! - [`connect`]: getting a session through the balancer while a server
//!   crashes and another is cut off;
//! - [`replication`]: registering and logging in on a three-server cluster
//!   while followers restart and are cut off and the master may crash;
//! - [`files`]: uploads, downloads, shares and deletes under the same
//!   faults, every disk checked against the catalogue after the heal.
//!
//! A scenario imports from the layers below it, never from another
//! scenario: what two of them share (the account client, the log checks)
//! lives in [`crate::clients`] or [`crate::checkers`].

pub mod connect;
pub mod files;
pub mod peers;
pub mod replication;
