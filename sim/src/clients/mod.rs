//! Client programs more than one scenario runs.
//!
//! - [`session`]: the steps of one client session (connect through the
//!   balancer, run a request to its end, close);
//! - [`account`]: register a username and maybe log in, on as many
//!   sessions as it takes (the replication scenario's clients, the files
//!   scenario's setup).

pub mod account;
pub(crate) mod session;
