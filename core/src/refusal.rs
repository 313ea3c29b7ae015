//! Protocol version and the typed reasons a peer gives when it refuses.

use speedy::{Readable, Writable};
use std::fmt;

/// Bumped on any incompatible change to a link's messages. Every link's first
/// message carries it, and a mismatch is refused with [`Refusal::VersionMismatch`].
///
/// 5: auth codes carry their own times (`AuthCode::issued_ms`, `expires_ms`)
/// and probes a proof of the cluster secret.
/// 6: folders: `SessionMsg::ListUnder`, `OpCode::DeleteFolder`,
/// `FileOutcome::FolderDeleted`, `OpError::IsAFolder` and `NameConflict`,
/// `TransferError::Conflict`; names may be paths.
/// 7: files' attributes: `SessionMsg::Attrs` (tag 120) follows an offer,
/// `Listed::attrs`; the log's `Txn::PutFile` and `PutFiles` are tags 23 and
/// 24, with attributes (tags 3 and 18, protocol 6's, are still read from
/// stores). Batches of downloads (`OpCode::DownloadMany`,
/// `SessionMsg::FileNames` and `SentAll`); session messages may take tags
/// 120..160.
/// Resume: `TransferMsg::Resume` and `Restart`, and ACK(0) before
/// ACCEPT (a receiver still hashing what it kept).
/// 8: `SessionMsg::Command` carries `done`, and a command numbers only the
/// operations that may order a transaction (`OpCode::numbered`): a try
/// through another server leaves out what was answered.
pub const PROTOCOL_VERSION: u16 = 8;

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
    /// The auth code's time was up before the client presented it.
    CodeExpired,
    /// The server cannot vouch for the auth code: it was minted before the
    /// server started (which forgot the codes used before), or its times do
    /// not fit the server's clock.
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
    /// Every session slot of the server is taken (it had one free when the
    /// balancer asked, and another client took it first).
    ServerFull,
    /// Too many connections from this address at once: `limit` of them not
    /// logged in (`unauthenticated`), or `limit` in all.
    TooManyConnections {
        limit: u32,
        unauthenticated: bool,
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
            Refusal::CodeUnknown => f.write_str(
                "auth code is not known to this server (minted before it started, \
                 or by a clock out of step with its own)",
            ),
            Refusal::Timeout { step } => write!(f, "timed out waiting for {step}"),
            Refusal::Overloaded => f.write_str("node is overloaded, try again later"),
            Refusal::TooMany { retry_after_ms } => write!(
                f,
                "too many requests from this address; try again in {:.1} s",
                *retry_after_ms as f64 / 1000.0
            ),
            Refusal::ServerFull => f.write_str(
                "every session slot of the server is taken; ask the balancer for another",
            ),
            Refusal::TooManyConnections {
                limit,
                unauthenticated: true,
            } => write!(
                f,
                "too many connections from this address: at most {limit} may be open \
                 without a login"
            ),
            Refusal::TooManyConnections {
                limit,
                unauthenticated: false,
            } => write!(
                f,
                "too many connections from this address: at most {limit} may be open"
            ),
        }
    }
}
