//! Messages of the file transfer engine. Every link that moves files (client
//! ↔ server, server ↔ server, peer ↔ peer) carries these inside its own
//! message enum.

use speedy::{Readable, Writable};
use std::fmt;

/// The seeds' chunk: 4 KiB, each acknowledged.
pub const CHUNK: usize = 4096;

/// Chunks carried by one `Chunks` frame at most. Acknowledgement stays per
/// chunk (cumulative acks name every chunk); batching only saves frames.
pub const CHUNKS_PER_FRAME: u64 = 32;

/// Chunks in the unit both ends read, hash and write in: 128 KiB, large
/// enough for BLAKE3's SIMD lanes and for a cheap system call, small enough
/// to hold a few per transfer. A frame never straddles two blocks.
pub const BLOCK_CHUNKS: u64 = 32;

/// [`BLOCK_CHUNKS`] in bytes.
pub const BLOCK_BYTES: u64 = BLOCK_CHUNKS * CHUNK as u64;

#[derive(Clone, Debug, PartialEq, Eq, Readable, Writable)]
#[speedy(tag_type = u8)]
pub enum TransferMsg {
    /// Sender → receiver: the file's name and size.
    #[speedy(tag = 1)]
    Offer { id: u64, name: String, size: u64 },
    /// Receiver → sender: ready, send the content.
    #[speedy(tag = 2)]
    Accept { id: u64 },
    /// Receiver → sender: will not take it (the seeds' PUT FAIL).
    #[speedy(tag = 3)]
    Reject { id: u64, reason: TransferError },
    /// Sender → receiver: chunks `seq`, `seq + 1`, … packed back to back;
    /// all are `CHUNK` bytes but the file's last.
    #[speedy(tag = 4)]
    Chunks { id: u64, seq: u64, data: Vec<u8> },
    /// Receiver → sender: every chunk before `upto` has arrived (so each is
    /// acknowledged, several per message).
    #[speedy(tag = 5)]
    Ack { id: u64, upto: u64 },
    /// Sender → receiver: FILE TRANSFER DONE, with the whole file's BLAKE3.
    #[speedy(tag = 6)]
    Done { id: u64, digest: [u8; 32] },
    /// Receiver → sender: the file is complete, verified and in place.
    #[speedy(tag = 7)]
    DoneAck { id: u64 },
    /// Either side: the transfer is over, unsuccessfully.
    #[speedy(tag = 8)]
    Abort { id: u64, reason: TransferError },
    /// Receiver → sender, in ACCEPT's place: the receiver holds the first
    /// `from` bytes of a file of the offered name and size (kept from an
    /// interrupted transfer), whose BLAKE3 is `prefix`. A sender whose own
    /// first `from` bytes hash to `prefix` sends from there; any other
    /// answers RESTART. `from` is a multiple of [`BLOCK_BYTES`] below the
    /// size. See docs/transfer.md, *Resume*.
    #[speedy(tag = 9)]
    Resume {
        id: u64,
        from: u64,
        prefix: [u8; 32],
    },
    /// Sender → receiver, the answer to RESUME when the prefixes differ:
    /// take the file from its first byte. Answered with ACCEPT.
    #[speedy(tag = 10)]
    Restart { id: u64 },
}

impl TransferMsg {
    pub fn id(&self) -> u64 {
        match self {
            TransferMsg::Offer { id, .. }
            | TransferMsg::Accept { id }
            | TransferMsg::Reject { id, .. }
            | TransferMsg::Chunks { id, .. }
            | TransferMsg::Ack { id, .. }
            | TransferMsg::Done { id, .. }
            | TransferMsg::DoneAck { id }
            | TransferMsg::Abort { id, .. }
            | TransferMsg::Resume { id, .. }
            | TransferMsg::Restart { id } => *id,
        }
    }
}

/// Why a transfer did not complete. Typed, so both ends print one reason.
#[derive(Clone, Debug, PartialEq, Eq, Readable, Writable)]
#[speedy(tag_type = u8)]
pub enum TransferError {
    /// The name is not acceptable (separators, `..`, NUL, too long…).
    BadName {
        reason: String,
    },
    /// Not enough space, or over quota.
    NoSpace {
        needed: u64,
        available: u64,
    },
    /// The file would take its owner past their quota.
    OverQuota {
        used: u64,
        quota: u64,
        needed: u64,
    },
    /// A file of that name exists and replacing it was not asked for.
    Exists,
    NotFound,
    /// The peer stayed silent past the timeout.
    Timeout,
    /// The content did not match the digest sent with DONE.
    DigestMismatch,
    /// The peer broke the transfer protocol.
    Protocol {
        detail: String,
    },
    /// Reading or writing the file failed.
    Io {
        detail: String,
    },
    /// The peer gave up.
    Cancelled,
    /// The name is one of the owner's folders, or one of its folders is a
    /// file of theirs.
    Conflict {
        reason: String,
    },
}

impl fmt::Display for TransferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransferError::BadName { reason } => write!(f, "bad file name: {reason}"),
            // What a full disk reports: how much is missing is not known.
            TransferError::NoSpace {
                needed: 0,
                available: 0,
            } => f.write_str("not enough space: the disk is full"),
            TransferError::NoSpace { needed, available } => write!(
                f,
                "not enough space: {needed} bytes needed, {available} available"
            ),
            TransferError::OverQuota {
                used,
                quota,
                needed,
            } => write!(
                f,
                "over quota: {used} of {quota} bytes used, {needed} more needed"
            ),
            TransferError::Exists => {
                f.write_str("a file of that name exists (use --force to replace it)")
            }
            TransferError::NotFound => f.write_str("no such file"),
            TransferError::Timeout => f.write_str("the other side stopped answering"),
            TransferError::DigestMismatch => {
                f.write_str("the content arrived damaged (digest mismatch); nothing was kept")
            }
            TransferError::Protocol { detail } => write!(f, "transfer protocol error: {detail}"),
            TransferError::Io { detail } => write!(f, "file error: {detail}"),
            TransferError::Cancelled => f.write_str("the transfer was cancelled"),
            TransferError::Conflict { reason } => {
                write!(f, "{reason}: a name is a file or a folder, not both")
            }
        }
    }
}

impl std::error::Error for TransferError {}

/// Chunks in a file of `size` bytes.
pub fn chunk_count(size: u64) -> u64 {
    size.div_ceil(CHUNK as u64)
}

/// Where a transfer of a file of `size` bytes can resume when the first
/// `held` bytes are at hand: the last block boundary at or below both
/// `held` and the file's last byte (so at least one chunk is still sent,
/// and both ends read, hash and write whole blocks). 0: nothing to resume.
pub fn resume_point(held: u64, size: u64) -> u64 {
    let last = size.saturating_sub(1);
    held.min(last) / BLOCK_BYTES * BLOCK_BYTES
}
