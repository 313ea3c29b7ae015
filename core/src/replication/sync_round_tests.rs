//! The round's state machine on its own: turns in order, stale entries
//! that change nothing, leases, writers that leave, and the table rows
//! that rebuild it.

use super::*;
use crate::replication::entry::{Origin, Txn};
use crate::replication::state::State;
use crate::store::{Batch, MemStore, Store};

const T: [u8; 32] = [7; 32];

/// A replicated state with users 1..=3, driven one entry at a time.
struct Log {
    state: State,
    store: MemStore,
    index: u64,
    view: u64,
    at: u64,
}

impl Log {
    fn new() -> Log {
        let mut log = Log {
            state: State::default(),
            store: MemStore::default(),
            index: 0,
            view: 1,
            at: 1000,
        };
        for name in ["alice", "bob", "carol"] {
            log.apply(Txn::Register {
                username: name.into(),
                password: crate::accounts::password::hash(
                    crate::accounts::password::PasswordParams::TESTING,
                    [0; 16],
                    "password1",
                )
                .unwrap(),
            });
        }
        log
    }

    fn apply(&mut self, txn: Txn) -> TxnResult {
        self.index += 1;
        let e = Entry {
            index: self.index,
            view: self.view,
            at: self.at,
            origin: Origin {
                server: 1,
                session: 1,
                request: self.index,
            },
            txn,
        };
        let applied = self.state.apply(&e);
        self.store
            .commit(&Batch {
                writes: applied.writes,
            })
            .unwrap();
        applied.result
    }

    /// Registers a peer of `user`; its id.
    fn join(&mut self, user: u64) -> u64 {
        let addr = format!("10.0.0.{}:9000", self.index);
        match self.apply(Txn::PeerJoin {
            user,
            addr,
            ticket_digest: T,
            key: None,
        }) {
            TxnResult::PeerJoined { peer } => peer,
            other => panic!("{other:?}"),
        }
    }

    fn round(&self) -> &Round {
        self.state.sync().current().expect("a round runs")
    }

    /// The current grant as (writer, token).
    fn grant(&self) -> (u64, Token) {
        (self.round().writer, self.round().token)
    }

    fn done(&mut self) -> TxnResult {
        let r = self.round().clone();
        self.apply(Txn::SyncDone {
            round: r.id,
            peer: r.writer,
            token: r.token,
        })
    }

    fn rebuilt(&self) -> State {
        State::from_rows(&self.store.load().unwrap().tables).unwrap()
    }
}

#[test]
fn every_peer_writes_once_in_turn_each_grant_fenced_by_a_larger_token() {
    let mut l = Log::new();
    let peers = [l.join(1), l.join(2), l.join(3)];
    let started = l.apply(Txn::SyncStart { peer: peers[1] });
    let round = l.index;
    assert_eq!(
        started,
        TxnResult::SyncStarted {
            round,
            joined: false
        }
    );
    assert_eq!(l.round().order, peers);
    // The entry that started the round granted the first peer.
    assert_eq!(
        l.grant(),
        (
            peers[0],
            Token {
                view: 1,
                index: round
            }
        )
    );
    let mut last = l.grant().1;
    for (turn, &peer) in peers.iter().enumerate().skip(1) {
        // A new master between turns: tokens still grow.
        l.view += 1;
        let moved = l.done();
        let (writer, token) = l.grant();
        assert_eq!(moved, TxnResult::SyncGranted { round, peer, token });
        assert_eq!(writer, peer);
        assert!(token > last, "turn {turn}: {token} after {last}");
        last = token;
        assert_eq!(l.rebuilt(), l.state);
    }
    assert_eq!(l.done(), TxnResult::SyncFinished { round });
    assert!(l.state.sync().current().is_none());
    assert_eq!(l.state.sync().last_finished(), Some(round));
    let rebuilt = l.rebuilt();
    assert_eq!(rebuilt, l.state);
    assert_eq!(rebuilt.digest(), l.state.digest());
}

#[test]
fn a_stale_done_renew_or_expiry_changes_nothing() {
    let mut l = Log::new();
    let (a, b) = (l.join(1), l.join(2));
    l.apply(Txn::SyncStart { peer: a });
    let round = l.round().id;
    let (_, first) = l.grant();
    l.done();
    let (writer, token) = l.grant();
    assert_eq!(writer, b);
    let before = l.state.clone();
    let stale = [
        // The first writer's FIN again, under its old token.
        Txn::SyncDone {
            round,
            peer: a,
            token: first,
        },
        // The right writer with an old token, the right token for another
        // peer, and another round.
        Txn::SyncDone {
            round,
            peer: b,
            token: first,
        },
        Txn::SyncDone {
            round,
            peer: a,
            token,
        },
        Txn::SyncDone {
            round: round + 1,
            peer: b,
            token,
        },
        Txn::SyncRenew {
            round,
            peer: a,
            token: first,
        },
        Txn::SyncExpire {
            round,
            token: first,
        },
    ];
    for txn in stale {
        let what = txn.describe();
        assert_eq!(l.apply(txn), TxnResult::SyncStale, "{what}");
        assert_eq!(l.state.sync(), before.sync(), "{what}");
    }
    assert_eq!(l.grant(), (b, token));
}

#[test]
fn sync_during_a_round_joins_it_and_a_newcomer_has_no_turn() {
    let mut l = Log::new();
    let a = l.join(1);
    l.apply(Txn::SyncStart { peer: a });
    let round = l.round().id;
    let b = l.join(2);
    assert_eq!(
        l.apply(Txn::SyncStart { peer: b }),
        TxnResult::SyncStarted {
            round,
            joined: true
        }
    );
    assert_eq!(l.round().order, [a]);
    assert_eq!(l.done(), TxnResult::SyncFinished { round });
    // An unregistered asker starts nothing.
    assert_eq!(l.apply(Txn::SyncStart { peer: 999 }), TxnResult::NoSuchPeer);
    assert!(l.state.sync().current().is_none());
}

#[test]
fn a_lease_runs_out_unless_renewed_and_a_late_expiry_spares_a_renewed_writer() {
    let mut l = Log::new();
    let (a, b) = (l.join(1), l.join(2));
    l.apply(Txn::SyncStart { peer: a });
    let (round, (_, token)) = (l.round().id, l.grant());
    let until = l.at + SYNC_LEASE_SECS;
    assert_eq!(l.round().lease_until, until);
    assert!(l.state.sync().expired(until).is_none());
    assert!(l.state.sync().expired(until + 1).is_some());
    // Renewed at +20 (a renewal never shortens it) ...
    l.at += 20;
    let renew = Txn::SyncRenew {
        round,
        peer: a,
        token,
    };
    assert_eq!(l.apply(renew), TxnResult::SyncRenewed);
    assert_eq!(l.round().lease_until, until + 20);
    // ... so the master's expiry, decided before the renewal and applied
    // at +31, finds the lease running.
    l.at += 11;
    let expire = Txn::SyncExpire { round, token };
    assert_eq!(l.apply(expire.clone()), TxnResult::SyncRenewed);
    assert_eq!(l.grant(), (a, token));
    // Past the renewed lease it moves on, with a new token.
    l.at += 20;
    let moved = l.apply(expire);
    let (writer, next) = l.grant();
    assert_eq!(writer, b);
    assert_eq!(
        moved,
        TxnResult::SyncGranted {
            round,
            peer: b,
            token: next
        }
    );
    assert!(next > token);
    assert!(
        l.round().written.is_empty(),
        "a passed-over writer wrote nothing"
    );
}

#[test]
fn a_writer_that_leaves_passes_the_grant_on_in_the_same_entry_and_leavers_are_skipped() {
    let mut l = Log::new();
    let (a, b, c) = (l.join(1), l.join(2), l.join(3));
    l.apply(Txn::SyncStart { peer: c });
    let round = l.round().id;
    // Bob leaves before his turn; alice, the writer, then leaves too.
    l.apply(Txn::PeerLeave {
        peer: b,
        expired: false,
    });
    assert_eq!(l.grant().0, a);
    assert_eq!(
        l.apply(Txn::PeerLeave {
            peer: a,
            expired: false
        }),
        TxnResult::PeerLeft
    );
    let (writer, token) = l.grant();
    assert_eq!(
        (writer, token),
        (
            c,
            Token {
                view: 1,
                index: l.index
            }
        )
    );
    assert_eq!(l.rebuilt(), l.state);
    // Carol's peer restarts and registers again at its address: the old
    // registration, the writer, is gone, and with it the round.
    let addr = l.state.registry().get(c).map(|p| p.addr.clone()).unwrap();
    l.apply(Txn::PeerJoin {
        user: 3,
        addr,
        ticket_digest: T,
        key: None,
    });
    assert!(l.state.sync().current().is_none());
    assert_eq!(l.state.sync().last_finished(), Some(round));
    assert_eq!(l.rebuilt(), l.state);
}
