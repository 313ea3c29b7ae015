//! Protocol version and the typed reasons a peer gives when it refuses.

use speedy::{Readable, Writable};
use std::fmt;

/// Bumped on any incompatible change to a link's messages. Every link's first
/// message carries it, and a mismatch is refused with [`Refusal::VersionMismatch`].
pub const PROTOCOL_VERSION: u16 = 4;

/// Why a node refused a request or closed a connection. Sent on the wire, so
/// both ends print the same clear reason.
#[derive(Clone, Debug, PartialEq, Eq, Readable, Writable)]
#[speedy(tag_type = u8)]
pub enum Refusal {
    VersionMismatch {
        ours: u16,
        theirs: u16,
    },
    Malformed {
        detail: String,
    },
    Unexpected {
        what: String,
    },
    /// The auth code was not minted with this cluster's secret.
    BadCode,
    /// The auth code names another server.
    WrongServer {
        ours: u32,
        theirs: u32,
    },
    /// The auth code was already used once.
    CodeUsed,
    /// The auth code's reservation lapsed before the client arrived.
    CodeExpired,
    /// The auth code was never reserved here (for example, this server restarted).
    CodeUnknown,
    /// The peer was too slow for a step of the protocol.
    Timeout {
        step: String,
    },
    /// The node has no capacity for this request.
    Overloaded,
    /// Too many requests from this address; ask again after this long.
    TooMany {
        retry_after_ms: u64,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::VersionMismatch { ours, theirs } => write!(
                f,
                "protocol version mismatch: the refusing side speaks v{ours}, the other v{theirs}"
            ),
            Refusal::Malformed { detail } => write!(f, "malformed message: {detail}"),
            Refusal::Unexpected { what } => write!(f, "unexpected message: {what}"),
            Refusal::BadCode => f.write_str("auth code is not valid for this cluster"),
            Refusal::WrongServer { ours, theirs } => {
                write!(f, "auth code is for server {theirs}, this is server {ours}")
            }
            Refusal::CodeUsed => f.write_str("auth code was already used"),
            Refusal::CodeExpired => f.write_str("auth code expired before it was used"),
            Refusal::CodeUnknown => f.write_str("auth code is not known to this server"),
            Refusal::Timeout { step } => write!(f, "timed out waiting for {step}"),
            Refusal::Overloaded => f.write_str("node is overloaded, try again later"),
            Refusal::TooMany { retry_after_ms } => write!(
                f,
                "too many requests from this address; try again in {:.1} s",
                *retry_after_ms as f64 / 1000.0
            ),
        }
    }
}
