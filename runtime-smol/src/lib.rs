//! The production driver for `ferry-core` nodes.
//!
//! A [`Driver`] runs any [`ferry_core::Node`]: it owns the sockets, the clock
//! and the timer, and moves bytes and time between them and the node. It
//! makes no protocol decision of its own; everything it does is spelled out
//! by the node's [`Output`](ferry_core::Output)s. A driver runs on the
//! thread that calls it and blocks it while it waits; [`Group`] runs
//! several, a thread each.
//!
//! **Why mio, not an async runtime.** The crate began on smol (hence its
//! name). A node is one state machine that handles one input at a time, so
//! an executor, tasks and channels bought it nothing, and async-io's
//! reactor cost a lot per message: every wait armed a timerfd and re-armed
//! the oneshot registrations (`epoll_ctl`), every read first failed with
//! `EAGAIN`, and bytes crossed channels between socket tasks and the node.
//! A stop-and-wait upload (W = 1) made about 15 system calls per 4 KiB
//! chunk on the client and ran at 0.22–0.39× a bare blocking loop. The
//! driver now polls its own sockets with mio on its own thread:
//! edge-triggered registrations made once, one `epoll_wait` per wakeup
//! (a timerfd re-armed only for an earlier deadline wakes it for timers),
//! reads straight into one buffer handed to the node, writes straight from
//! the node's frames (`writev`): 3 system calls per chunk on each side, and
//! about 0.5× the bare loop. While events come close together it also
//! busy-polls briefly before sleeping (`net/spin.rs`): on a VM a sleep and
//! a wakeup cost as much as the rest of a 4 KiB round trip, and with it a
//! stop-and-wait transfer runs at about 0.75–0.8× the bare loop (the rest
//! is the node's own work and the disk; figures in `docs/transfer.md`).
//!
//! **Why not smol's own poller either.** The same loop was ported to the
//! `polling` crate (the reactor beneath async-io), edge-triggered, and
//! measured on 2026-12-05. It costs 8 system calls per chunk on each side.
//! Its `Poller::wait` also re-arms its own timerfd and its oneshot
//! notification eventfd on every wait, and it cannot register
//! `EPOLLRDHUP`, so each burst of reads has to end with one that fails
//! with `EAGAIN`. Stop-and-wait uploads ran at 0.60–0.66× the mio
//! driver's, so mio stayed (figures in `docs/decisions.md`).
//!
//! - [`clock`]: real time as the core's [`Timestamp`](ferry_core::Timestamp),
//!   counted from the Unix epoch.
//! - [`driver`]: the run loop (str0m's rule: drain every output after every
//!   input, then wait for the next input or the timer), and the execution of
//!   `Persist` outputs against a store.
//! - `net` and `conn`: the sockets: accepting, dialing, reading with a
//!   budget per connection, queued writes, closing with a linger, and
//!   when to busy-poll.
//! - [`group`]: several drivers on threads of their own, for a whole cluster
//!   in one process.
//! - [`files`]: the execution of `File` outputs (blobs and temporary files
//!   of a server, the local file of a client command).
//! - [`store`]: the heed (LMDB) implementation of the core's `Store`.
//! - [`seed`]: OS randomness for [`Entropy::from_seed`](ferry_core::Entropy::from_seed).

pub mod clock;
mod conn;
pub mod driver;
pub mod files;
pub mod group;
mod net;
pub mod seed;
pub mod store;

pub use clock::Clock;
pub use conn::{CONNECT_TIMEOUT, LINGER, MAX_QUEUED, READ_BUFFER};
pub use driver::{Driver, DriverError, RunResult};
pub use files::Files;
pub use group::Group;
pub use net::{Stopper, ACCEPT_RETRY, READ_BUDGET};
pub use seed::{os_entropy, os_seed};
