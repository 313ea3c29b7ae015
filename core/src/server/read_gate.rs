//! Linearizable operations: a server handles a client's operation only
//! once it has applied everything committed before the operation arrived.
//!
//! Every operation's data waits here while the master confirms, with a
//! heartbeat round a majority answers, that it is still master, and says
//! what it has committed (`Replica::ask_read_index`); once this server has
//! applied that far, the operation runs. So a read sees every write
//! acknowledged anywhere before it began, whichever server the balancer
//! chose; and a write's checks against the state (the file exists, the
//! token's user is known) see them too. During an election the operation
//! waits for the next master; a master cut off from the majority cannot
//! confirm, and neither can a server with no master: after the request
//! timeout the client is told the cluster is unavailable, never given a
//! stale answer.

use super::event::ServerEvent;
use super::messages::{OpCode, OpError, SessionMsg};
use super::sessions::Sessions;
use crate::file_attrs::FileAttrs;
use crate::io::ConnId;
use crate::outbox::Outbox;
use crate::replication::Replica;
use crate::time::Timestamp;
use std::collections::BTreeMap;
use std::time::Duration;

/// Messages kept to follow a held operation's data, at most: an upload's
/// offer is followed by one, and a client sending more gains nothing.
const MAX_FOLLOWING: usize = 4;

/// An operation waiting for its read index.
struct Held {
    op: OpCode,
    data: SessionMsg,
    read: u64,
    deadline: Timestamp,
    /// The attributes that followed an upload's offer (its data) while it
    /// waited: they wait with it, and reach the upload once it runs.
    attrs: Vec<(u64, FileAttrs)>,
}

/// An operation whose read index is reached: to run now.
pub(super) struct Ready {
    pub(super) conn: ConnId,
    pub(super) op: OpCode,
    pub(super) data: SessionMsg,
    /// What followed its data while it waited (see [`ReadGate::follow`]).
    pub(super) attrs: Vec<(u64, FileAttrs)>,
}

pub(super) struct ReadGate {
    held: BTreeMap<ConnId, Held>,
    request_timeout: Duration,
}

impl ReadGate {
    pub(super) fn new(request_timeout: Duration) -> Self {
        ReadGate {
            held: BTreeMap::new(),
            request_timeout,
        }
    }

    /// Holds operation `op` of the session on `conn` until its read index
    /// is reached (see [`ReadGate::ready`]), through an election if need
    /// be, for at most the request timeout.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn hold(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        op: OpCode,
        data: SessionMsg,
        replica: &mut Replica,
        sessions: &mut Sessions,
        out: &mut Outbox<ServerEvent>,
    ) {
        let read = replica.ask_read_index(now, out);
        let deadline = now + self.request_timeout;
        self.held.insert(
            conn,
            Held {
                op,
                data,
                read,
                deadline,
                attrs: Vec::new(),
            },
        );
        sessions.run_elsewhere(conn);
    }

    /// Attributes that follow the data of the operation held for `conn`,
    /// if one is: kept for it (its data is one upload's offer, so a few).
    /// False if none is held.
    pub(super) fn follow(&mut self, conn: ConnId, id: u64, attrs: FileAttrs) -> bool {
        let Some(h) = self.held.get_mut(&conn) else {
            return false;
        };
        if h.attrs.len() < MAX_FOLLOWING {
            h.attrs.push((id, attrs));
        }
        true
    }

    /// The operations whose read index this server has reached, to run now
    /// (their sessions idle again).
    pub(super) fn ready(&mut self, replica: &mut Replica, sessions: &mut Sessions) -> Vec<Ready> {
        let due: Vec<ConnId> = self
            .held
            .iter()
            .filter(|(_, h)| replica.read_index_ready(h.read))
            .map(|(c, _)| *c)
            .collect();
        let mut ready = Vec::with_capacity(due.len());
        for conn in due {
            if let Some(h) = self.held.remove(&conn) {
                replica.forget_read_index(h.read);
                sessions.set_idle(conn);
                ready.push(Ready {
                    conn,
                    op: h.op,
                    data: h.data,
                    attrs: h.attrs,
                });
            }
        }
        ready
    }

    pub(super) fn holds(&self, conn: ConnId) -> bool {
        self.held.contains_key(&conn)
    }

    pub(super) fn deadline(&self, conn: ConnId) -> Option<Timestamp> {
        self.held.get(&conn).map(|h| h.deadline)
    }

    /// The operation on `conn` waited for its read index in vain.
    pub(super) fn on_deadline(
        &mut self,
        conn: ConnId,
        replica: &mut Replica,
        sessions: &mut Sessions,
        out: &mut Outbox<ServerEvent>,
    ) {
        let Some(h) = self.held.remove(&conn) else {
            return;
        };
        replica.forget_read_index(h.read);
        let reason = "no master confirmed this server up to date in time (an election, \
                      or this server is cut off from the majority)"
            .into();
        sessions.answer(
            conn,
            h.op,
            SessionMsg::Failed(OpError::Unavailable { reason }),
            out,
        );
    }

    /// The session on `conn` is gone.
    pub(super) fn forget(&mut self, conn: ConnId, replica: &mut Replica) {
        if let Some(h) = self.held.remove(&conn) {
            replica.forget_read_index(h.read);
        }
    }
}
