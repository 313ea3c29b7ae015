//! What a peer tells its user: the seeds' answers (REGISTER OK, UPDATE,
//! CONNECT OK / FAIL, PUT and GET OK / FAIL) and what other peers did to
//! its directory.

use super::connect::ConnectFail;
use crate::replication::sync_round::Token;
use crate::server::messages::PeerInfo;
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerEvent {
    /// REGISTER OK: this peer's id on the tracker's list.
    Registered { peer: u64 },
    /// REGISTER FAIL, with the reason.
    RegisterFailed { reason: String },
    /// The link to the tracker broke after registering, or the cluster
    /// could not take the registration now; the peer registers again (and
    /// gets a new id).
    TrackerLost { reason: String },
    /// UPDATE: the tracker's list of registered peers.
    Update { peers: Vec<PeerInfo> },
    /// CONNECT OK on a connection this peer opened.
    Connected { link: u32, peer: u64, addr: String },
    /// CONNECT FAIL on a connection this peer opened.
    ConnectFailed {
        link: u32,
        addr: String,
        reason: String,
    },
    /// Another peer connected and was admitted.
    Accepted { link: u32, peer: u64, from: String },
    /// A connecting peer was refused.
    Refused { from: String, reason: ConnectFail },
    /// A connection closed (either end, or a broken link).
    Closed { link: u32 },
    /// PUT OK and the transfer done: the other peer holds the file.
    PutDone { link: u32, name: String, size: u64 },
    PutFailed {
        link: u32,
        name: String,
        reason: String,
    },
    /// GET OK and the transfer done: the file is in this directory.
    GetDone { link: u32, name: String, size: u64 },
    GetFailed {
        link: u32,
        name: String,
        reason: String,
    },
    /// Another peer PUT a file into this directory; `token` is the write
    /// token a SYNC write came under (`None` for a plain PUT), so that an
    /// observer can check no write of a fenced-off writer lands.
    Received {
        link: u32,
        name: String,
        size: u64,
        token: Option<Token>,
    },
    /// Another peer's PUT into this directory failed.
    ReceiveFailed {
        link: u32,
        name: String,
        reason: String,
    },
    /// Another peer got a file of this directory.
    Served { link: u32, name: String, size: u64 },
    /// The cluster started (or joined this peer to) a SYNC round.
    SyncStarted { round: u64 },
    /// SYNC could not be asked.
    SyncFailed { reason: String },
    /// SYNC OK: this peer's turn to write.
    SyncWriting { round: u64, token: Token },
    /// SYNC READ: another peer writes, under `token`.
    SyncReading {
        round: u64,
        writer: u64,
        token: Token,
    },
    /// This peer's turn is over: SYNC FIN said, having sent `files` files.
    SyncFin { round: u64, files: u64 },
    /// A reader in this peer's turn could not be brought up to date.
    SyncSkipped {
        round: u64,
        peer: u64,
        reason: String,
    },
    /// SYNC END: every turn of the round is over.
    SyncEnd { round: u64 },
    /// A version that lost its name here was kept as `aside`.
    SetAside { name: String, aside: String },
}

/// A connection, as `conns` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    pub link: u32,
    /// The other peer's id, once admitted.
    pub peer: Option<u64>,
    pub addr: String,
    /// This peer opened it.
    pub dialed: bool,
}

/// A name from another peer, fit for a terminal: control and invisible
/// characters escaped.
pub use crate::names::shown;

impl fmt::Display for PeerEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerEvent::Registered { peer } => write!(f, "REGISTER OK: this is peer {peer}"),
            PeerEvent::RegisterFailed { reason } => write!(f, "REGISTER FAIL {reason}"),
            PeerEvent::TrackerLost { reason } => {
                write!(f, "tracker: {reason}; registering again in a moment")
            }
            PeerEvent::Update { peers } => {
                write!(f, "UPDATE: {} peer(s)", peers.len())?;
                for p in peers {
                    write!(f, "\n  peer {} {} at {}", p.peer, shown(&p.user), p.addr)?;
                }
                Ok(())
            }
            PeerEvent::Connected { link, peer, addr } => {
                write!(f, "CONNECT OK {link}: peer {peer} at {addr}")
            }
            PeerEvent::ConnectFailed { link, addr, reason } => {
                write!(f, "CONNECT FAIL {link} ({addr}): {reason}")
            }
            PeerEvent::Accepted { link, peer, from } => {
                write!(f, "connection {link}: peer {peer} connected from {from}")
            }
            PeerEvent::Refused { from, reason } => {
                write!(f, "refused a connection from {from}: {reason}")
            }
            PeerEvent::Closed { link } => write!(f, "connection {link} closed"),
            PeerEvent::PutDone { link, name, size } => {
                write!(f, "PUT OK {link} {}: {size} bytes sent", shown(name))
            }
            PeerEvent::PutFailed { link, name, reason } => {
                write!(f, "PUT FAIL {link} {}: {reason}", shown(name))
            }
            PeerEvent::GetDone { link, name, size } => {
                write!(f, "GET OK {link} {}: {size} bytes received", shown(name))
            }
            PeerEvent::GetFailed { link, name, reason } => {
                write!(f, "GET FAIL {link} {}: {reason}", shown(name))
            }
            PeerEvent::Received {
                link, name, size, ..
            } => {
                write!(f, "received {} ({size} bytes) on {link}", shown(name))
            }
            PeerEvent::ReceiveFailed { link, name, reason } => {
                write!(f, "did not receive {} on {link}: {reason}", shown(name))
            }
            PeerEvent::Served { link, name, size } => {
                write!(f, "sent {} ({size} bytes) on {link}", shown(name))
            }
            PeerEvent::SyncStarted { round } => write!(f, "SYNC: round {round}"),
            PeerEvent::SyncFailed { reason } => write!(f, "SYNC FAIL {reason}"),
            PeerEvent::SyncWriting { round, token } => {
                write!(f, "SYNC OK: round {round}, writing (token {token})")
            }
            PeerEvent::SyncReading { round, writer, .. } => {
                write!(f, "SYNC READ: round {round}, peer {writer} writes")
            }
            PeerEvent::SyncFin { round, files } => {
                write!(f, "SYNC FIN: round {round}, {files} file(s) sent")
            }
            PeerEvent::SyncSkipped {
                round,
                peer,
                reason,
            } => {
                write!(f, "SYNC: round {round}, peer {peer} skipped: {reason}")
            }
            PeerEvent::SyncEnd { round } => write!(f, "SYNC END: round {round}"),
            PeerEvent::SetAside { name, aside } => {
                write!(f, "kept {} as {}", shown(name), shown(aside))
            }
        }
    }
}
