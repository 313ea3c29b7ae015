//! `ferry peer`: a peer's side of the seeds' peer-to-peer design (see
//! `docs/peers.md`). A peer registers with the cluster (the tracker link),
//! admits connections from peers on the tracker's list, and moves files of
//! its shared directory with PUT and GET.

pub mod connect;
mod event;
mod link;
pub mod messages;
mod node;
mod scan;
pub mod sync_plan;
mod tracker;
mod transfers;
mod turn;

pub use event::{shown, LinkInfo, PeerEvent};
pub use node::{PeerConfig, PeerError, PeerNode};

#[cfg(test)]
mod tests;
