//! What a server tells its operator: the events its parts emit.

use super::messages::OpCode;
use super::scrub::Verdict;
use crate::io::ConnId;
use crate::refusal::Refusal;
use crate::replication::ReplicaEvent;
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerEvent {
    Probed {
        available: bool,
        code: String,
    },
    Established {
        conn: ConnId,
        code: String,
    },
    Refused {
        conn: ConnId,
        reason: Refusal,
    },
    SessionEnded {
        conn: ConnId,
    },
    /// New connections from `source` are refused: it holds as many as it
    /// may. Said once a minute per source while it lasts, not once per
    /// connection of a flood.
    SourceCapped {
        source: String,
        reason: Refusal,
    },
    /// An operation finished; never carries a password.
    Answered {
        conn: ConnId,
        op: OpCode,
        outcome: String,
        /// The contents an upload's "stored" vouches for (a batch's: each
        /// file it answers stored): by then each must be durable on a
        /// majority of the servers (the simulator checks their disks at
        /// this event). Empty for any other answer.
        stored: Vec<[u8; 32]>,
    },
    /// A file operation failed on this server's disk (the error names
    /// paths, so it is logged here and not sent to peers).
    FileFailed {
        error: String,
    },
    /// A check of a blob a receiver found damaged is over.
    BlobChecked {
        digest: String,
        verdict: Verdict,
    },
    /// A copy of an upload is durable on server `to`.
    Copied {
        to: u32,
    },
    /// A copy of an upload to server `to` was given up.
    CopyFailed {
        to: u32,
        why: String,
    },
    /// An upload cut off was kept to resume: `bytes` of user `user`'s
    /// `name` (of `size` bytes).
    PartialKept {
        user: u64,
        name: String,
        size: u64,
        bytes: u64,
    },
    /// A kept partial upload was let go of, and why.
    PartialDropped {
        user: u64,
        name: String,
        bytes: u64,
        why: &'static str,
    },
    /// An upload on `conn` resumed past the first `from` bytes, kept from
    /// an earlier try.
    UploadResumed {
        conn: ConnId,
        from: u64,
    },
    Replica(ReplicaEvent),
}

impl From<ReplicaEvent> for ServerEvent {
    fn from(e: ReplicaEvent) -> Self {
        ServerEvent::Replica(e)
    }
}

impl fmt::Display for ServerEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerEvent::Probed { available, code } => write!(
                f,
                "probe {code}: {}",
                if *available { "yes, a slot is free" } else { "no" }
            ),
            ServerEvent::Established { conn, code } => {
                write!(f, "session {conn} established with code {code}")
            }
            ServerEvent::Refused { conn, reason } => write!(f, "refuse {conn}: {reason}"),
            ServerEvent::SessionEnded { conn } => write!(f, "session {conn} ended"),
            ServerEvent::SourceCapped { source, reason } => {
                write!(f, "refusing connections from {source}: {reason}")
            }
            ServerEvent::Answered {
                conn, op, outcome, ..
            } => {
                write!(f, "{op:?} on {conn}: {outcome}")
            }
            ServerEvent::FileFailed { error } => write!(f, "disk: {error}"),
            ServerEvent::BlobChecked { digest, verdict } => match verdict {
                Verdict::Sound => write!(
                    f,
                    "blob {digest}: a receiver found it damaged, but it is sound on disk"
                ),
                Verdict::Damaged { why } => write!(
                    f,
                    "blob {digest} is damaged on disk ({why}): removed, to be fetched again"
                ),
                Verdict::Unreadable { error } => write!(
                    f,
                    "blob {digest}: a receiver found it damaged, and it cannot be read to check ({error}); kept"
                ),
            },
            ServerEvent::Copied { to } => write!(f, "copy of an upload durable on server{to}"),
            ServerEvent::CopyFailed { to, why } => {
                write!(f, "copy of an upload to server{to} given up: {why}")
            }
            ServerEvent::PartialKept {
                user,
                name,
                size,
                bytes,
            } => write!(
                f,
                "kept {bytes} of {size} bytes of user{user}'s {name:?} (upload cut off) to resume"
            ),
            ServerEvent::PartialDropped {
                user,
                name,
                bytes,
                why,
            } => write!(
                f,
                "dropped the {bytes} bytes kept of user{user}'s {name:?}: {why}"
            ),
            ServerEvent::UploadResumed { conn, from } => {
                write!(f, "upload on {conn} resumed at byte {from}")
            }
            ServerEvent::Replica(e) => e.fmt(f),
        }
    }
}
