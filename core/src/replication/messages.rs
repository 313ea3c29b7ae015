//! Messages of the server ↔ server replication link.

use super::entry::{Entry, Origin, Txn};
use crate::refusal::Refusal;
use speedy::{Readable, Writable};

/// Follower ↔ master. Followers dial the master; the master authenticates
/// them with a challenge, then streams log entries and heartbeats.
#[derive(Clone, Debug, PartialEq, Eq, Readable, Writable)]
#[speedy(tag_type = u8)]
pub enum ReplicaMsg {
    /// Follower → master: I am server `from`; my log ends at `last`.
    #[speedy(tag = 80)]
    Join { version: u16, from: u32, last: u64 },
    /// Master → follower: prove you hold the cluster secret.
    #[speedy(tag = 81)]
    Challenge { nonce: [u8; 16] },
    #[speedy(tag = 82)]
    Proof { mac: [u8; 32] },
    /// Master → follower: joined; entries after your `last` follow.
    #[speedy(tag = 83)]
    Welcome { view: u64, last: u64, commit: u64 },
    /// Master → follower: contiguous entries, and the commit index.
    #[speedy(tag = 84)]
    Prepare {
        view: u64,
        entries: Vec<Entry>,
        commit: u64,
    },
    /// Follower → master: my log is durable up to `durable`.
    #[speedy(tag = 85)]
    PrepareOk { view: u64, durable: u64 },
    /// Master → follower, periodically: liveness, log end and commit index.
    #[speedy(tag = 86)]
    Heartbeat { view: u64, last: u64, commit: u64 },
    /// Follower → master: a client's transaction, to be ordered.
    #[speedy(tag = 87)]
    Forward { view: u64, origin: Origin, txn: Txn },
    #[speedy(tag = 88)]
    Refused(Refusal),
    /// Follower → master: what is your commit index now? (Read-your-writes:
    /// the answer is sent after the question arrived, so it covers every
    /// write acknowledged before the question was asked.)
    #[speedy(tag = 49)]
    ReadIndex { view: u64, id: u64 },
    #[speedy(tag = 50)]
    ReadIndexReply { view: u64, id: u64, commit: u64 },
}

/// First tag byte of [`ReplicaMsg`] frames.
pub const REPLICA_TAGS: std::ops::Range<u8> = 80..100;
