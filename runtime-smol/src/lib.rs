//! The production driver for `ferry-core` nodes, on smol.
//!
//! A [`Driver`] runs any [`ferry_core::Node`]: it owns the sockets, the clock
//! and the timer, and moves bytes and time between them and the node. It
//! makes no protocol decision of its own; everything it does is spelled out
//! by the node's [`Output`](ferry_core::Output)s.
//!
//! - [`clock`]: real time as the core's [`Timestamp`](ferry_core::Timestamp),
//!   counted from the Unix epoch.
//! - `conn`: the listener, dialing, and one reader and one writer task per
//!   connection.
//! - [`driver`]: the run loop (str0m's rule: drain every output after every
//!   input, then wait for the next input or the timer), and the execution of
//!   `Persist` outputs against a store.
//! - [`files`]: the execution of `File` outputs (blobs and temporary files
//!   of a server, the local file of a client command).
//! - [`store`]: the heed (LMDB) implementation of the core's `Store`.
//! - [`seed`]: OS randomness for [`Entropy::from_seed`](ferry_core::Entropy::from_seed).

pub mod clock;
mod conn;
pub mod driver;
pub mod files;
pub mod seed;
pub mod store;

pub use clock::Clock;
pub use conn::{CONNECT_TIMEOUT, READ_BUFFER};
pub use driver::{run_all, Driver, DriverError, RunResult};
pub use files::Files;
pub use seed::{os_entropy, os_seed};
