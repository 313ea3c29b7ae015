//! `ferry status` on the server: the view of the cluster one server gives.
//!
//! The server a client asks reports on itself and puts the question to
//! every other server over the replication links (`ReplicaMsg::StatusAsk`),
//! then answers the client once every server it asked has answered or its
//! patience ([`STATUS_PATIENCE`]) has run out: a server whose link is down,
//! or that is silent, shows as not answering instead of holding the
//! command. Each report's free disk space comes from the server's own world
//! (`FileOp::Space`), asked when the question arrives.
//!
//! The operation does not wait at the read gate: it must answer while
//! there is no master (that is when it is most wanted). Its user part
//! (the file count and bytes) is therefore this server's applied state,
//! which may lag the master by what `behind` says.

use super::messages::SessionMsg;
use crate::balancer::ServerAddr;
use crate::io::{ConnId, FileOp};
use crate::outbox::Outbox;
use crate::replication::messages::ReplicaMsg;
use crate::replication::status::{Role, ServerReport, StatusNews};
use crate::replication::Replica;
use crate::time::Timestamp;
use speedy::{Readable, Writable};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// How long a status question waits for the other servers. Healthy
/// servers answer within a round trip; one that has not by then is shown
/// as not answering.
pub const STATUS_PATIENCE: Duration = Duration::from_millis(1500);

/// Handles of this part's questions to the disk: a range of their own, so
/// that they never meet the blob store's (only `Input::Space` answers them).
const SPACE_HANDLES: u64 = 1 << 60;

/// The answer to `ferry status`.
#[derive(Clone, Debug, PartialEq, Eq, Readable, Writable)]
pub struct ClusterStatus {
    /// The server that answered (the client's).
    pub answered_by: u32,
    /// Every server of the cluster, by id.
    pub servers: Vec<ServerStatus>,
    /// The asking user's own files, if the question carried a valid login.
    pub user: Option<UserUsage>,
}

/// One server, as the answering server saw it.
#[derive(Clone, Debug, PartialEq, Eq, Readable, Writable)]
pub struct ServerStatus {
    pub id: u32,
    /// Its address, as the cluster's configuration names it; `None` for
    /// the answering server itself (the client knows it).
    pub addr: Option<String>,
    /// Its report; `None` if it did not answer in time.
    pub report: Option<ServerReport>,
    /// Entries the master has committed that this server has not applied
    /// yet; `None` if it did not answer or no master did.
    pub behind: Option<u64>,
}

/// What a user stores.
#[derive(Clone, Debug, PartialEq, Eq, Readable, Writable)]
pub struct UserUsage {
    pub user_id: u64,
    pub username: String,
    pub files: u64,
    pub bytes: u64,
}

/// A question of one of this server's sessions, being gathered.
struct Gather {
    conn: ConnId,
    deadline: Timestamp,
    user: Option<UserUsage>,
    /// Our own report, once the disk has said its free space.
    own: Option<ServerReport>,
    /// Servers asked that have not answered yet.
    waiting: BTreeSet<u32>,
    answers: BTreeMap<u32, ServerReport>,
}

/// Who waits for a disk's answer.
enum Want {
    /// Our own report, for our question `id`.
    Own(u64),
    /// Server `peer`'s question `id`.
    Peer { peer: u32, id: u64 },
}

#[derive(Default)]
pub(super) struct Status {
    next_id: u64,
    next_handle: u64,
    gathers: BTreeMap<u64, Gather>,
    disk: BTreeMap<u64, Want>,
}

impl Status {
    /// The session on `conn` asks; `user` is its login's usage, if any.
    pub(super) fn start(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        user: Option<UserUsage>,
        replica: &mut Replica,
        out: &mut Outbox<super::ServerEvent>,
    ) {
        self.next_id += 1;
        let id = self.next_id;
        let peers: Vec<u32> = replica.peers().iter().map(|p| p.id).collect();
        let mut waiting = BTreeSet::new();
        for peer in peers {
            // A server whose link is down cannot answer: it is not waited for.
            if replica.send_status(now, peer, &ReplicaMsg::StatusAsk { id }, out) {
                waiting.insert(peer);
            }
        }
        self.gathers.insert(
            id,
            Gather {
                conn,
                deadline: now + STATUS_PATIENCE,
                user,
                own: None,
                waiting,
                answers: BTreeMap::new(),
            },
        );
        self.ask_disk(Want::Own(id), out);
    }

    fn ask_disk(&mut self, want: Want, out: &mut Outbox<super::ServerEvent>) {
        let handle = SPACE_HANDLES + self.next_handle;
        self.next_handle += 1;
        self.disk.insert(handle, want);
        out.file(FileOp::Space { handle });
    }

    /// Status messages from other servers: questions are put to our disk,
    /// answers noted. Returns the sessions' answers now complete.
    pub(super) fn on_news(
        &mut self,
        news: Vec<StatusNews>,
        replica: &Replica,
        out: &mut Outbox<super::ServerEvent>,
    ) -> Vec<(ConnId, SessionMsg)> {
        let mut done = Vec::new();
        for n in news {
            match n {
                StatusNews::Asked { peer, id } => self.ask_disk(Want::Peer { peer, id }, out),
                StatusNews::Answered { peer, id, report } => {
                    let Some(g) = self.gathers.get_mut(&id) else {
                        continue; // answered too late
                    };
                    // Only the server asked answers for itself.
                    if g.waiting.remove(&peer) && report.id == peer {
                        g.answers.insert(peer, report);
                    }
                    done.extend(self.finish_if_complete(id, replica));
                }
            }
        }
        done
    }

    /// True if `handle` is one of this part's questions to the disk.
    pub(super) fn owns_handle(&self, handle: u64) -> bool {
        self.disk.contains_key(&handle)
    }

    /// The disk answered question `handle`: `free` bytes are free.
    pub(super) fn on_space(
        &mut self,
        now: Timestamp,
        handle: u64,
        free: Option<u64>,
        sessions: u32,
        replica: &mut Replica,
        out: &mut Outbox<super::ServerEvent>,
    ) -> Option<(ConnId, SessionMsg)> {
        let report = replica.report(sessions, free);
        match self.disk.remove(&handle)? {
            Want::Peer { peer, id } => {
                // Its link may have gone meanwhile: then it has given up.
                let _ =
                    replica.send_status(now, peer, &ReplicaMsg::StatusReply { id, report }, out);
                None
            }
            Want::Own(id) => {
                self.gathers.get_mut(&id)?.own = Some(report);
                self.finish_if_complete(id, replica)
            }
        }
    }

    fn finish_if_complete(&mut self, id: u64, replica: &Replica) -> Option<(ConnId, SessionMsg)> {
        let g = self.gathers.get(&id)?;
        let own = g.own.clone()?;
        if !g.waiting.is_empty() {
            return None;
        }
        self.finish(id, own, replica)
    }

    /// Answers question `id` with what has arrived and our own report.
    fn finish(
        &mut self,
        id: u64,
        own: ServerReport,
        replica: &Replica,
    ) -> Option<(ConnId, SessionMsg)> {
        let g = self.gathers.remove(&id)?;
        self.disk
            .retain(|_, w| !matches!(w, Want::Own(i) if *i == id));
        let status = assemble(own, g.answers, replica.peers(), g.user);
        Some((g.conn, SessionMsg::Status(status)))
    }

    /// The deadline of the question of the session on `conn`, if it asked.
    pub(super) fn deadline(&self, conn: ConnId) -> Option<Timestamp> {
        self.gathers
            .values()
            .find(|g| g.conn == conn)
            .map(|g| g.deadline)
    }

    /// The patience of the session on `conn` ran out: it is answered with
    /// what has arrived.
    pub(super) fn on_deadline(
        &mut self,
        conn: ConnId,
        sessions: u32,
        replica: &Replica,
    ) -> Option<(ConnId, SessionMsg)> {
        let (id, g) = self.gathers.iter().find(|(_, g)| g.conn == conn)?;
        // Without its free space if the disk has not said by now.
        let own = (g.own.clone()).unwrap_or_else(|| replica.report(sessions, None));
        self.finish(*id, own, replica)
    }

    /// The session on `conn` is gone.
    pub(super) fn forget(&mut self, conn: ConnId) {
        let gone: Vec<u64> = (self.gathers.iter())
            .filter(|(_, g)| g.conn == conn)
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.gathers.remove(&id);
            self.disk
                .retain(|_, w| !matches!(w, Want::Own(i) if *i == id));
        }
    }
}

/// Every server of the cluster, ours first among equals, by id; how far
/// behind each is, measured against the report of the master of the
/// highest view that answered.
fn assemble(
    own: ServerReport,
    mut answers: BTreeMap<u32, ServerReport>,
    peers: &[ServerAddr],
    user: Option<UserUsage>,
) -> ClusterStatus {
    let answered_by = own.id;
    let mut servers = vec![ServerStatus {
        id: own.id,
        addr: None,
        report: Some(own),
        behind: None,
    }];
    for p in peers {
        servers.push(ServerStatus {
            id: p.id,
            addr: Some(p.addr.clone()),
            report: answers.remove(&p.id),
            behind: None,
        });
    }
    servers.sort_by_key(|s| s.id);
    let master = (servers.iter())
        .filter_map(|s| s.report.as_ref())
        .filter(|r| r.role == Role::Master)
        .max_by_key(|r| r.view)
        .map(|r| r.commit);
    for s in &mut servers {
        s.behind = match (&s.report, master) {
            (Some(r), Some(commit)) => Some(commit.saturating_sub(r.applied)),
            _ => None,
        };
    }
    ClusterStatus {
        answered_by,
        servers,
        user,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(id: u32, role: Role, view: u64, commit: u64, applied: u64) -> ServerReport {
        ServerReport {
            id,
            role,
            view,
            master: Some(1),
            last_index: commit,
            commit,
            applied,
            sessions: 0,
            free_disk: Some(1 << 30),
        }
    }

    fn addr(id: u32) -> ServerAddr {
        ServerAddr {
            id,
            addr: format!("10.0.0.{id}:7000"),
        }
    }

    #[test]
    fn behind_is_measured_against_the_master_of_the_highest_view() {
        let own = report(2, Role::Follower, 3, 10, 7);
        let mut answers = BTreeMap::new();
        // A master of an older view that has not heard yet: not the yardstick.
        answers.insert(1, report(1, Role::Master, 2, 8, 8));
        answers.insert(3, report(3, Role::Master, 3, 12, 12));
        let s = assemble(own, answers, &[addr(1), addr(3), addr(4)], None);
        let ids: Vec<u32> = s.servers.iter().map(|s| s.id).collect();
        assert_eq!(ids, [1, 2, 3, 4]);
        let behind: Vec<Option<u64>> = s.servers.iter().map(|s| s.behind).collect();
        assert_eq!(behind, [Some(4), Some(5), Some(0), None]);
        assert_eq!(s.servers[1].addr, None, "the client knows its own server");
        assert!(s.servers[3].report.is_none(), "4 did not answer");
    }

    #[test]
    fn without_a_master_nobody_is_behind_anything() {
        let own = report(1, Role::Candidate, 4, 9, 9);
        let s = assemble(own, BTreeMap::new(), &[addr(2)], None);
        assert!(s.servers.iter().all(|s| s.behind.is_none()));
    }
}
