//! Messages of the client ↔ balancer link and the balancer ↔ server probe link.
//!
//! Tags of every link live in disjoint ranges so that a server, whose one
//! listener serves several links, can tell them apart by the first byte.

use crate::auth::AuthCode;
use crate::refusal::Refusal;
use speedy::{Readable, Writable};

/// Client ↔ balancer.
#[derive(Clone, Debug, PartialEq, Eq, Readable, Writable)]
#[speedy(tag_type = u8)]
pub enum BalancerMsg {
    /// Client → balancer: find me a server.
    #[speedy(tag = 1)]
    GetServer { version: u16 },
    /// Balancer → client: that server said yes; present this code to it.
    #[speedy(tag = 2)]
    Assigned {
        server_id: u32,
        addr: String,
        code: AuthCode,
    },
    /// Balancer → client: a whole round found no server that would take
    /// the client, and why: full (`busy`), alive but following no master
    /// (`no_master`: an election, or cut off from the majority), still
    /// catching up with the master (`catching_up`); the rest did not
    /// answer.
    #[speedy(tag = 3)]
    NoServer {
        probed: u32,
        busy: u32,
        no_master: u32,
        catching_up: u32,
    },
    #[speedy(tag = 4)]
    Refused(Refusal),
}

/// Balancer ↔ server: "are you available?".
#[derive(Clone, Debug, PartialEq, Eq, Readable, Writable)]
#[speedy(tag_type = u8)]
pub enum ProbeMsg {
    /// Balancer → server. The code is the one the client will present;
    /// `proof` (`ClusterSecret::probe_proof` of the code) shows that the
    /// prober holds the cluster secret, which the code alone does not: its
    /// client holds that too. A yes reserves nothing.
    #[speedy(tag = 10)]
    Probe {
        version: u16,
        code: AuthCode,
        proof: [u8; 32],
    },
    /// Server → balancer: yes: I have a free slot and have caught up with
    /// the master, now.
    #[speedy(tag = 11)]
    Available,
    #[speedy(tag = 12)]
    Busy,
    #[speedy(tag = 13)]
    Refused(Refusal),
    /// Server → balancer: no: I follow no live master (an election is on,
    /// or I am cut off from the majority).
    #[speedy(tag = 14)]
    NoMaster,
    /// Server → balancer: no: I have not applied what the master committed.
    #[speedy(tag = 15)]
    CatchingUp,
}

/// First tag byte of [`BalancerMsg`] frames. A server answers GET SERVER
/// too, by assigning itself (see `server::sessions`).
pub const BALANCER_TAGS: std::ops::Range<u8> = 1..10;

/// First tag byte of [`ProbeMsg`] frames.
pub const PROBE_TAGS: std::ops::Range<u8> = 10..20;
