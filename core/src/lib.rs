//! Ferry's protocol core.
//!
//! Every protocol is a plain state machine here: bytes, connection events and
//! the current time go in through [`io::Node::handle_input`] and
//! [`io::Node::handle_timeout`]; bytes to send, connections to open or close,
//! and events come out of [`io::Node::poll_output`]; the next deadline comes
//! out of [`io::Node::poll_timeout`]. Nothing here touches a socket, a file,
//! a clock, a thread or an OS random source: the drivers in `runtime-smol`
//! and `sim` do that, and both drive these same machines.

pub mod accounts;
pub mod auth;
pub mod balancer;
pub mod client;
pub mod entropy;
pub mod file_attrs;
pub mod frame;
pub mod host;
pub mod io;
pub mod names;
pub mod outbox;
pub mod peer;
pub mod refusal;
pub mod replication;
pub mod sabotage;
pub mod server;
pub mod store;
pub mod time;
pub mod tls;
pub mod transfer;

#[cfg(test)]
pub(crate) mod testkit;

pub use entropy::Entropy;
pub use file_attrs::FileAttrs;
pub use host::{Host, HostError, Settled, Work, World};
pub use io::{ConnId, FileAnswer, FileFailure, FileOp, FileRef, Input, Node, Output};
pub use time::Timestamp;
