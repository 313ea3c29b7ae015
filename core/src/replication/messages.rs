//! Messages of the server ↔ server replication links.
//!
//! Every pair of servers shares one link, dialed by the lower id. The
//! dialer proves it holds the cluster secret (JOIN → CHALLENGE → PROOF →
//! READY); then either end may send any of the rest. A reply goes back on
//! the link its request came on.

use super::entry::{Entry, Origin, Txn};
use super::status::ServerReport;
use crate::refusal::Refusal;
use speedy::{Readable, Writable};

#[derive(Clone, Debug, PartialEq, Eq, Readable, Writable)]
#[speedy(tag_type = u8)]
pub enum ReplicaMsg {
    /// Dialer → acceptor: I am server `from` and want server `to`.
    #[speedy(tag = 80)]
    Join { version: u16, from: u32, to: u32 },
    /// Acceptor → dialer: prove you hold the cluster secret.
    #[speedy(tag = 81)]
    Challenge { nonce: [u8; 16] },
    #[speedy(tag = 82)]
    Proof { mac: [u8; 32] },
    /// Acceptor → dialer: proven; the link is up.
    #[speedy(tag = 83)]
    Ready,
    /// Master → follower: entries after `(prev_index, prev_view)`, which
    /// the follower must hold for them to follow on (Raft's AppendEntries);
    /// with no entries, a heartbeat. `last` is the master's log end and
    /// `seq` the master's heartbeat round, echoed so that reads can tell a
    /// majority still follows this master.
    #[speedy(tag = 84)]
    Append {
        view: u64,
        prev_index: u64,
        prev_view: u64,
        entries: Vec<Entry>,
        commit: u64,
        last: u64,
        seq: u64,
    },
    /// Follower → master. `ok`: my log matches yours and is durable up to
    /// `matched`. Not `ok`: it does not follow on from your `prev`; mine
    /// certainly matches up to `matched`, send from there.
    #[speedy(tag = 85)]
    AppendReply {
        view: u64,
        ok: bool,
        matched: u64,
        seq: u64,
    },
    /// Candidate → all: make me master of `view`; my log ends at
    /// `(last_index, last_view)`. `pre`: would you? (Raft's pre-vote: asks
    /// without disturbing anyone, so that a server cut off from the rest
    /// cannot, once back, depose a master that was doing fine.)
    #[speedy(tag = 86)]
    Vote {
        view: u64,
        last_index: u64,
        last_view: u64,
        pre: bool,
    },
    /// `view`: the view asked about if granted, else the replier's own.
    #[speedy(tag = 87)]
    VoteReply { view: u64, granted: bool, pre: bool },
    #[speedy(tag = 88)]
    Refused(Refusal),
    /// Follower → master: a client's transaction, to be ordered.
    #[speedy(tag = 89)]
    Forward { view: u64, origin: Origin, txn: Txn },
    /// Follower → master: what is committed now? The master answers once a
    /// majority has confirmed, after the question arrived, that it is still
    /// master (Raft's ReadIndex), so the answer covers every write
    /// acknowledged anywhere before the question was asked.
    #[speedy(tag = 90)]
    ReadIndex { view: u64, id: u64 },
    #[speedy(tag = 91)]
    ReadIndexReply { view: u64, id: u64, commit: u64 },
    /// Keeps a quiet link's silence meaningful: a link that hears nothing
    /// for `dead_after` is dead (a partition can stall TCP silently).
    #[speedy(tag = 92)]
    Ping { view: u64 },
    /// Any server → any other: how are you (`ferry status`)? Answered at
    /// once with `StatusReply`, whatever the views; the asker gives up on
    /// a server that does not answer within its deadline.
    #[speedy(tag = 93)]
    StatusAsk { id: u64 },
    #[speedy(tag = 94)]
    StatusReply { id: u64, report: ServerReport },
}

impl ReplicaMsg {
    /// The view a message speaks in, for messages that carry one.
    pub fn view(&self) -> Option<u64> {
        match self {
            ReplicaMsg::Append { view, .. }
            | ReplicaMsg::AppendReply { view, .. }
            | ReplicaMsg::Forward { view, .. }
            | ReplicaMsg::ReadIndex { view, .. }
            | ReplicaMsg::ReadIndexReply { view, .. }
            | ReplicaMsg::Ping { view } => Some(*view),
            ReplicaMsg::Vote { view, pre, .. } | ReplicaMsg::VoteReply { view, pre, .. } => {
                (!pre).then_some(*view)
            }
            _ => None,
        }
    }
}

/// First tag byte of [`ReplicaMsg`] frames.
pub const REPLICA_TAGS: std::ops::Range<u8> = 80..100;
