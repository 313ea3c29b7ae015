//! `ferry peer`: a peer's side of the seeds' peer-to-peer design (see
//! `docs/peers.md`). Built so far: the admission of a connecting peer.

pub mod connect;
