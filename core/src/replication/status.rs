//! Status questions between servers, for `ferry status`: the server a
//! client asks puts the question to every other server over the
//! replication links, and each answers with a report of itself. The
//! replica only carries them (`ReplicaMsg::StatusAsk`, `StatusReply`) and
//! fills in what it knows (role, view, log positions); the server adds
//! what only it knows (its sessions, its disk's free space) and does the
//! gathering, with its deadline (`server::status`).

use speedy::{Readable, Writable};

/// What a server is in the replication, as it sees itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Readable, Writable)]
#[speedy(tag_type = u8)]
pub enum Role {
    #[speedy(tag = 1)]
    Master,
    #[speedy(tag = 2)]
    Follower,
    /// Standing for election: no master known to it.
    #[speedy(tag = 3)]
    Candidate,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
        }
    }
}

/// One server's answer to a status question.
#[derive(Clone, Debug, PartialEq, Eq, Readable, Writable)]
pub struct ServerReport {
    pub id: u32,
    pub role: Role,
    pub view: u64,
    /// The master it follows (itself if master); `None` during an election.
    pub master: Option<u32>,
    /// The end of its log, as durable on its disk.
    pub last_index: u64,
    /// The highest index it knows to be committed.
    pub commit: u64,
    /// The highest index applied with its effects durable.
    pub applied: u64,
    /// Client sessions holding a slot.
    pub sessions: u32,
    /// Bytes free on the disk its files live on; `None` if its world could
    /// not tell.
    pub free_disk: Option<u64>,
}

/// A status message that arrived, for the server to act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatusNews {
    /// Server `peer` asks for our report, as its question `id`.
    Asked { peer: u32, id: u64 },
    /// Server `peer` answered our question `id`.
    Answered {
        peer: u32,
        id: u64,
        report: ServerReport,
    },
}
