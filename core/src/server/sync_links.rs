//! The servers' side of SYNC rounds (SYNC OK, SYNC READ, SYNC FIN): what
//! each server tells the peer sessions linked to it, and what it orders
//! for their writers. The round itself is replicated state
//! (`replication::sync_round`); see `docs/peers.md`.
//!
//! After every applied batch the server compares the round with what it
//! last told each linked session, and tells only what changed: SYNC OK
//! `{ round, token, order }` to the writer's session, SYNC READ
//! `{ round, writer, token, order }` to every other linked peer session —
//! peers that registered during the round too, so that they hear the token
//! that fences the writer's PUTs — and SYNC END `{ round }` once the round
//! a session was told of is over. Every server pushes from its own applied
//! state, so all peers hear the same writer and token for the same index.
//!
//! The writer's messages are not operations (they may come while its
//! session runs one): SYNC FIN orders `SyncDone`, and SYNC WRITING, which
//! a writer sends at least every [`WRITING_EVERY`] while it is still sending
//! files, orders `SyncRenew`. A silent writer is not renewed, even if its
//! session lives on pings: its lease runs out and the master moves on.
//! Messages that do not name this session's current grant are dropped
//! here (this server has applied the grant it told, so anything else is
//! older); the state machine checks again when the entry applies.

use super::event::ServerEvent;
use super::messages::{OpError, SessionMsg};
use crate::io::ConnId;
use crate::outbox::Outbox;
use crate::replication::entry::{Txn, TxnResult};
use crate::replication::state::State;
use crate::replication::sync_round::Token;
use crate::time::Timestamp;
use std::collections::BTreeMap;
use std::time::Duration;

/// How often a writer says SYNC WRITING while it writes (a third of the
/// lease).
pub const WRITING_EVERY: Duration = Duration::from_secs(10);

/// Renewals closer together than this are not ordered: a writer that
/// chatters does not flood the log.
const RENEW_AT_MOST_EVERY: Duration = Duration::from_secs(2);

/// What a session was last told of rounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Told {
    /// Its SYNC was answered with `round`, nothing pushed yet.
    Asked {
        round: u64,
    },
    /// SYNC OK or SYNC READ of the grant `token` of `round`.
    Grant {
        round: u64,
        token: Token,
    },
    Ended {
        round: u64,
    },
}

impl Told {
    fn round(self) -> u64 {
        match self {
            Told::Asked { round } | Told::Grant { round, .. } | Told::Ended { round } => round,
        }
    }
}

#[derive(Default)]
pub(super) struct SyncLinks {
    told: BTreeMap<ConnId, Told>,
    /// When a renewal was last ordered for a writer's session.
    renewed: BTreeMap<ConnId, Timestamp>,
}

impl SyncLinks {
    /// The session on `conn` asked SYNC and is answered with `round`.
    pub(super) fn asked(&mut self, conn: ConnId, round: u64) {
        let fresh = self.told.get(&conn).is_none_or(|t| t.round() < round);
        if fresh {
            self.told.insert(conn, Told::Asked { round });
        }
    }

    /// After entries were applied: tells each linked session (with its
    /// peer) what changed in the round since it was last told.
    pub(super) fn push(
        &mut self,
        linked: impl Iterator<Item = (ConnId, u64)>,
        state: &State,
        out: &mut Outbox<ServerEvent>,
    ) {
        let current = state.sync().current();
        for (conn, peer) in linked {
            let told = self.told.get(&conn).copied();
            if let Some(t) = told {
                let over = current.is_none_or(|r| r.id != t.round());
                if over && !matches!(t, Told::Ended { .. }) {
                    let round = t.round();
                    out.send(conn, &SessionMsg::SyncEnd { round });
                    self.told.insert(conn, Told::Ended { round });
                }
            }
            let Some(r) = current else {
                continue;
            };
            let now = Told::Grant {
                round: r.id,
                token: r.token,
            };
            if told == Some(now) {
                continue;
            }
            let msg = match r.writer == peer {
                true => SessionMsg::SyncOk {
                    round: r.id,
                    token: r.token,
                    order: r.order.clone(),
                },
                false => SessionMsg::SyncRead {
                    round: r.id,
                    writer: r.writer,
                    token: r.token,
                    order: r.order.clone(),
                },
            };
            out.send(conn, &msg);
            self.told.insert(conn, now);
        }
    }

    /// SYNC FIN (`done`) or SYNC WRITING from the session on `conn`, whose
    /// peer is `peer`: the transaction to order, if it names the current
    /// grant and is due.
    pub(super) fn writer_said(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        peer: u64,
        (round, token, done): (u64, Token, bool),
        state: &State,
    ) -> Option<Txn> {
        let r = state.sync().current()?;
        if (r.id, r.writer, r.token) != (round, peer, token) {
            return None;
        }
        if done {
            return Some(Txn::SyncDone { round, peer, token });
        }
        let recent = (self.renewed.get(&conn)).is_some_and(|at| now < *at + RENEW_AT_MOST_EVERY);
        if recent {
            return None;
        }
        self.renewed.insert(conn, now);
        Some(Txn::SyncRenew { round, peer, token })
    }

    /// The session on `conn` ended.
    pub(super) fn forget(&mut self, conn: ConnId) {
        self.told.remove(&conn);
        self.renewed.remove(&conn);
    }
}

/// The answer to a session's SYNC, from its `SyncStart`'s result.
pub(super) fn answer_to(result: &TxnResult) -> SessionMsg {
    match result {
        TxnResult::SyncStarted { round, .. } => SessionMsg::SyncStarted { round: *round },
        // The peer left the registry before its SYNC applied.
        TxnResult::NoSuchPeer => SessionMsg::Failed(OpError::NotAPeer),
        other => SessionMsg::Failed(OpError::Unavailable {
            reason: format!("the sync request came back as {other:?}"),
        }),
    }
}
