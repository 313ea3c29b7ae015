//! Elections: a candidate's part, and every server's answer to one.
//!
//! A follower that hears no master for its election timeout first asks
//! whether the others *would* elect it for the next view (pre-vote; nothing
//! changes anywhere). A server says yes only if it has no live master
//! itself and the candidate's log is at least as complete as its own. With
//! a majority's yes, the candidate moves to the next view, votes for
//! itself, makes both durable, and asks for real. A server votes once per
//! view, durably before it answers, for a candidate whose log is at least
//! as complete as its own; so two masters of one view cannot be, and a
//! master holds every committed entry (Raft §5.2, §5.4.1, §9.6).

use super::messages::ReplicaMsg;
use super::{ReplicaEvent, Shell};
use crate::outbox::Outbox;
use crate::time::Timestamp;
use std::collections::BTreeSet;

/// A candidate for `view`: asking (`pre`) or standing.
pub(super) struct Candidate {
    view: u64,
    pre: bool,
    grants: BTreeSet<u32>,
    election_at: Timestamp,
}

pub(super) enum Tally {
    Waiting,
    PreVoteWon,
    Won,
}

/// A vote asked of this server.
pub(super) struct Ask {
    pub from: u32,
    pub view: u64,
    pub last_index: u64,
    pub last_view: u64,
}

/// The question a candidate of `view` asks.
fn question(view: u64, pre: bool, sh: &Shell) -> ReplicaMsg {
    ReplicaMsg::Vote {
        view,
        last_index: sh.len(),
        last_view: sh.last_view(),
        pre,
    }
}

impl Candidate {
    /// Asks every peer whether it would elect us for the next view. True
    /// if we need nobody (a cluster of one).
    pub(super) fn pre_vote<E: From<ReplicaEvent>>(
        now: Timestamp,
        election_at: Timestamp,
        sh: &mut Shell,
        out: &mut Outbox<E>,
    ) -> (Candidate, bool) {
        let view = sh.view + 1;
        out.event(ReplicaEvent::Campaign { view, pre: true }.into());
        let ask = question(view, true, sh);
        for peer in sh.links.live() {
            sh.send(now, peer, &ask, out);
        }
        let c = Candidate {
            view,
            pre: true,
            grants: BTreeSet::from([sh.cfg.me]),
            election_at,
        };
        let won = c.grants.len() >= sh.cfg.majority();
        (c, won)
    }

    /// Moves to the next view with our own vote, durably, then asks for
    /// real. True if we need nobody.
    pub(super) fn stand<E: From<ReplicaEvent>>(
        election_at: Timestamp,
        sh: &mut Shell,
        out: &mut Outbox<E>,
    ) -> (Candidate, bool) {
        sh.view += 1;
        sh.vote = Some(sh.cfg.me);
        let view = sh.view;
        out.event(ReplicaEvent::Campaign { view, pre: false }.into());
        let ask = question(view, false, sh);
        let then = sh
            .links
            .live()
            .into_iter()
            .map(|p| (p, ask.clone()))
            .collect();
        sh.persist_meta(then, out);
        let c = Candidate {
            view,
            pre: false,
            grants: BTreeSet::from([sh.cfg.me]),
            election_at,
        };
        let won = c.grants.len() >= sh.cfg.majority()
            || crate::sabotage::on(crate::sabotage::Sabotage::ElectedWithoutVotes);
        (c, won)
    }

    pub(super) fn election_due(&self, now: Timestamp) -> bool {
        self.election_at <= now
    }

    pub(super) fn election_at(&self) -> Timestamp {
        self.election_at
    }

    /// A link came up mid-election: ask that peer too (for real only once
    /// our own vote is durable; the batch that makes it so asks the peers
    /// live then).
    pub(super) fn link_up<E>(
        &self,
        now: Timestamp,
        peer: u32,
        sh: &mut Shell,
        out: &mut Outbox<E>,
    ) {
        if self.pre || sh.view_durable >= self.view {
            let ask = question(self.view, self.pre, sh);
            sh.send(now, peer, &ask, out);
        }
    }

    pub(super) fn on_reply(
        &mut self,
        peer: u32,
        view: u64,
        granted: bool,
        pre: bool,
        sh: &Shell,
    ) -> Tally {
        if !granted || pre != self.pre || view != self.view {
            return Tally::Waiting;
        }
        self.grants.insert(peer);
        if self.grants.len() < sh.cfg.majority() {
            return Tally::Waiting;
        }
        match self.pre {
            true => Tally::PreVoteWon,
            false => Tally::Won,
        }
    }
}

/// Answers `ask`, for real or not (`pre`). `live_master`: this server has
/// heard from a master within `dead_after` (or is one). True if granted.
pub(super) fn answer<E>(
    now: Timestamp,
    ask: Ask,
    pre: bool,
    live_master: bool,
    sh: &mut Shell,
    out: &mut Outbox<E>,
) -> bool {
    let complete = (ask.last_view, ask.last_index) >= (sh.last_view(), sh.len());
    if pre {
        let granted = ask.view > sh.view && complete && !live_master;
        let view = if granted { ask.view } else { sh.view };
        let reply = ReplicaMsg::VoteReply {
            view,
            granted,
            pre: true,
        };
        sh.send(now, ask.from, &reply, out);
        return granted;
    }
    // A later view was adopted before this answer; an earlier one is over.
    let granted = ask.view == sh.view
        && complete
        && sh.vote.is_none_or(|v| v == ask.from)
        && ask.from != sh.cfg.me;
    let reply = ReplicaMsg::VoteReply {
        view: sh.view,
        granted,
        pre: false,
    };
    if granted {
        // The vote is durable before the candidate hears of it: a server
        // that restarted and voted again in the same view could elect two
        // masters.
        sh.vote = Some(ask.from);
        sh.persist_meta(vec![(ask.from, reply)], out);
    } else {
        sh.send(now, ask.from, &reply, out);
    }
    granted
}
