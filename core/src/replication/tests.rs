use crate::io::{ConnId, Input, Node, Output};
use crate::replication::entry::{Origin, Txn};
use crate::replication::messages::ReplicaMsg;
use crate::replication::Indexes;
use crate::server::{OpError, Request, SessionMsg};
use crate::testkit::cluster::Cluster;
use crate::testkit::{bytes_of, drain, sent};
use std::time::Duration;

fn indexes(durable: u64, commit: u64, applied: u64) -> Indexes {
    Indexes {
        durable,
        commit,
        applied,
    }
}

fn register(name: &str) -> Request {
    Request::Register {
        username: name.into(),
        password: "password-123".into(),
    }
}

fn login(name: &str, password: &str) -> Request {
    Request::Login {
        username: name.into(),
        password: password.into(),
    }
}

fn assert_converged(c: &Cluster, live: &[usize]) {
    let first = c.server(live[0]).replica();
    for &ix in &live[1..] {
        let r = c.server(ix).replica();
        assert_eq!(r.indexes(), first.indexes(), "server {} indexes", ix + 1);
        assert_eq!(r.log(), first.log(), "server {} log", ix + 1);
        assert_eq!(
            r.state().digest(),
            first.state().digest(),
            "server {} state",
            ix + 1
        );
    }
}

#[test]
fn registrations_through_every_server_are_ordered_and_replicated() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    for (ix, name) in [(0, "alice"), (1, "bob"), (2, "carol")] {
        let s = c.open_session(ix);
        let got = c.request(ix, s, &register(name));
        assert!(
            matches!(got[..], [SessionMsg::Registered { .. }]),
            "{name}: {got:?}"
        );
    }
    c.run_for(Duration::from_secs(1));
    assert_converged(&c, &[0, 1, 2]);
    let ids: Vec<u64> = ["alice", "bob", "carol"]
        .iter()
        .map(|n| c.server(2).replica().state().user_by_name(n).unwrap().id)
        .collect();
    assert_eq!(ids, vec![1, 2, 3]);
    assert_eq!(c.server(0).replica().indexes(), indexes(3, 3, 3));
}

#[test]
fn concurrent_registrations_of_one_name_admit_exactly_one() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    let a = c.open_session(1);
    let b = c.open_session(2);
    for (ix, s) in [(1, a), (2, b)] {
        c.send(
            ix,
            s,
            &SessionMsg::Begin {
                op: register("dave").op(),
            },
        );
        c.received(ix, s);
    }
    // Both data messages are in flight before either is ordered.
    c.send(1, a, &register("Dave").payload());
    c.send(2, b, &register("dave").payload());
    c.run_for(Duration::from_secs(1));
    let mut answers = [c.received(1, a), c.received(2, b)].concat();
    answers.sort_by_key(|m| format!("{m:?}"));
    assert!(
        matches!(
            answers[..],
            [
                SessionMsg::Failed(OpError::UsernameTaken),
                SessionMsg::Registered { user_id: 1 }
            ]
        ),
        "{answers:?}"
    );
    assert_converged(&c, &[0, 1, 2]);
}

#[test]
fn a_restarted_follower_catches_up_what_it_missed() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    let s = c.open_session(0);
    c.request(0, s, &register("alice"));
    c.crash(2);
    c.request(0, s, &register("bob"));
    c.request(0, s, &register("carol"));
    assert_eq!(
        c.server(0).replica().indexes().commit,
        3,
        "a majority of two commits"
    );
    c.restart(2);
    assert!(!c.server(2).replica().is_caught_up(c.now));
    c.run_for(Duration::from_secs(2));
    assert!(c.server(2).replica().is_caught_up(c.now));
    assert_converged(&c, &[0, 1, 2]);
}

#[test]
fn a_partitioned_follower_rejoins_after_healing() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    c.partition(0, 2);
    let s = c.open_session(1);
    c.request(1, s, &register("alice"));
    c.request(1, s, &register("bob"));
    c.run_for(Duration::from_secs(5));
    assert!(
        !c.server(2).replica().is_caught_up(c.now),
        "silence is detected"
    );
    assert_eq!(c.server(2).replica().indexes().applied, 0);
    c.heal();
    c.run_for(Duration::from_secs(5));
    assert!(c.server(2).replica().is_caught_up(c.now));
    assert_converged(&c, &[0, 1, 2]);
}

#[test]
fn without_a_majority_nothing_commits_and_the_client_is_told() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    c.crash(1);
    c.crash(2);
    let s = c.open_session(0);
    assert!(
        c.request(0, s, &register("alice")).is_empty(),
        "no answer: the master cannot even confirm it is still master"
    );
    c.run_for(Duration::from_secs(11));
    let got = c.received(0, s);
    // (Then the session, which never logged in, is closed: its login
    // deadline passed while the registration waited.)
    assert!(
        matches!(
            got[..],
            [SessionMsg::Failed(OpError::Unavailable { .. }), ..]
        ),
        "{got:?}"
    );
    assert_eq!(c.server(0).replica().indexes(), indexes(0, 0, 0));
    assert!(
        !c.server(0).replica().is_master(),
        "a master that hears no majority steps down"
    );
    // Once a follower is back there is a majority again: a master is
    // elected and takes writes.
    c.restart(1);
    c.run_for(Duration::from_secs(4));
    assert!(c.server(0).replica().is_master() || c.server(1).replica().is_master());
    let s = c.open_session(1);
    let got = c.request(1, s, &register("alice"));
    assert!(
        matches!(got[..], [SessionMsg::Registered { .. }]),
        "{got:?}"
    );
    assert!(c
        .server(1)
        .replica()
        .state()
        .user_by_name("alice")
        .is_some());
}

#[test]
fn a_restarted_master_resumes_from_its_store() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    let s = c.open_session(1);
    c.request(1, s, &register("alice"));
    c.crash(0);
    c.restart(0);
    assert_eq!(c.server(0).replica().indexes(), indexes(1, 1, 1));
    c.run_for(Duration::from_secs(5));
    let s = c.open_session(2);
    let got = c.request(2, s, &register("bob"));
    assert!(
        matches!(got[..], [SessionMsg::Registered { user_id: 2 }]),
        "{got:?}"
    );
    c.run_for(Duration::from_secs(1));
    assert_converged(&c, &[0, 1, 2]);
}

#[test]
fn a_retried_forward_is_logged_once() {
    let mut c = Cluster::new(1);
    let origin = Origin {
        server: 1,
        session: 7,
        request: 1,
    };
    let txn = Txn::Revoke {
        token_id: [1; 16],
        expires: u64::MAX,
    };
    let mut out = crate::outbox::Outbox::<crate::server::ServerEvent>::default();
    let now = c.now;
    let s = c.server_mut(0);
    let r = &mut s.replica;
    r.submit(now, origin, txn.clone(), &mut out).unwrap();
    r.submit(now, origin, txn, &mut out).unwrap();
    assert_eq!(r.log().len(), 1);
}

/// Server 2 of two, its link to server 1 fed by hand, to watch what it
/// sends and when.
fn lone_follower() -> (crate::server::Server, ConnId) {
    let mut c = Cluster::new(2);
    c.crash(0);
    let mut f = c.take_server(1);
    f.handle_timeout(c.now + Duration::from_millis(300));
    let dial = drain(&mut f)
        .into_iter()
        .find_map(|o| match o {
            Output::Connect { conn, .. } => Some(conn),
            _ => None,
        })
        .expect("server 2 dials server 1");
    f.handle_input(
        c.now,
        Input::Connected {
            conn: dial,
            identity: crate::io::Identity::Unchecked,
        },
    );
    let outs = drain(&mut f);
    assert!(matches!(
        sent::<ReplicaMsg, _>(&outs, dial)[..],
        [ReplicaMsg::Join { from: 2, to: 1, .. }]
    ));
    for m in [ReplicaMsg::Challenge { nonce: [7; 16] }, ReplicaMsg::Ready] {
        let bytes = bytes_of(&m);
        f.handle_input(
            c.now,
            Input::Received {
                conn: dial,
                bytes: &bytes,
            },
        );
    }
    drain(&mut f);
    (f, dial)
}

fn entry(index: u64) -> crate::replication::entry::Entry {
    crate::replication::entry::Entry {
        index,
        view: 1,
        at: 0,
        origin: Origin {
            server: 1,
            session: 1,
            request: index,
        },
        txn: Txn::Revoke {
            token_id: [index as u8; 16],
            expires: u64::MAX,
        },
    }
}

fn append(prev_index: u64, entries: Vec<crate::replication::entry::Entry>, commit: u64) -> Vec<u8> {
    bytes_of(&ReplicaMsg::Append {
        view: 1,
        prev_index,
        prev_view: if prev_index == 0 { 0 } else { 1 },
        last: prev_index + entries.len() as u64,
        entries,
        commit,
        seq: 1,
    })
}

#[test]
fn an_append_is_acknowledged_only_once_durable() {
    let (mut f, conn) = lone_follower();
    let now = crate::Timestamp::from_micros(1);
    let p = append(0, vec![entry(1), entry(2)], 0);
    f.handle_input(now, Input::Received { conn, bytes: &p });
    let outs = drain(&mut f);
    let token = outs.iter().find_map(|o| match o {
        Output::Persist { token, .. } => Some(*token),
        _ => None,
    });
    assert!(token.is_some(), "entries are persisted");
    assert!(
        sent::<ReplicaMsg, _>(&outs, conn).is_empty(),
        "no acknowledgement before the commit"
    );
    f.handle_input(
        now,
        Input::Persisted {
            token: token.unwrap(),
        },
    );
    let outs = drain(&mut f);
    assert_eq!(
        sent::<ReplicaMsg, _>(&outs, conn),
        vec![ReplicaMsg::AppendReply {
            view: 1,
            ok: true,
            matched: 2,
            seq: 1,
        }]
    );
}

#[test]
fn duplicate_appends_are_ignored_and_a_gap_is_refused_with_where_to_resume() {
    let (mut f, conn) = lone_follower();
    let now = crate::Timestamp::from_micros(1);
    let p = append(0, vec![entry(1)], 1);
    f.handle_input(now, Input::Received { conn, bytes: &p });
    let first = drain(&mut f);
    assert_eq!(
        first
            .iter()
            .filter(|o| matches!(o, Output::Persist { .. }))
            .count(),
        2,
        "append, then apply"
    );
    f.handle_input(now, Input::Received { conn, bytes: &p });
    let again = drain(&mut f);
    assert!(
        again.iter().all(|o| !matches!(o, Output::Persist { .. })),
        "duplicate ignored"
    );
    assert_eq!(f.replica().log().len(), 1);
    let gap = append(2, vec![entry(3)], 1);
    f.handle_input(now, Input::Received { conn, bytes: &gap });
    let outs = drain(&mut f);
    assert_eq!(
        sent::<ReplicaMsg, _>(&outs, conn),
        vec![ReplicaMsg::AppendReply {
            view: 1,
            ok: false,
            matched: 1,
            seq: 1,
        }],
        "refused: resume after entry 1"
    );
    assert_eq!(f.replica().log().len(), 1);
}

#[test]
fn an_older_views_uncommitted_suffix_is_replaced_but_never_a_committed_entry() {
    let (mut f, conn) = lone_follower();
    let now = crate::Timestamp::from_micros(1);
    let p = append(0, vec![entry(1), entry(2), entry(3)], 1);
    f.handle_input(now, Input::Received { conn, bytes: &p });
    drain(&mut f);
    // A master of view 3 whose log has a different entry 2.
    let mut other = entry(2);
    other.view = 3;
    other.txn = Txn::Noop;
    let p = bytes_of(&ReplicaMsg::Append {
        view: 3,
        prev_index: 1,
        prev_view: 1,
        entries: vec![other.clone()],
        commit: 1,
        last: 2,
        seq: 1,
    });
    f.handle_input(now, Input::Received { conn, bytes: &p });
    let outs = drain(&mut f);
    let batches: Vec<_> = outs
        .iter()
        .filter_map(|o| match o {
            Output::Persist { batch, .. } => Some(batch.writes.clone()),
            _ => None,
        })
        .collect();
    assert!(
        batches
            .iter()
            .flatten()
            .any(|w| matches!(w, crate::store::Write::TruncateFrom { from: 2 })),
        "{batches:?}"
    );
    assert_eq!(f.replica().log().len(), 2);
    assert_eq!(f.replica().log()[1], other);
    assert_eq!(f.replica().view(), 3);
    // Entry 1 is committed: no master may rewrite it.
    let mut rewrite = entry(1);
    rewrite.view = 3;
    let p = bytes_of(&ReplicaMsg::Append {
        view: 3,
        prev_index: 0,
        prev_view: 0,
        entries: vec![rewrite],
        commit: 1,
        last: 1,
        seq: 2,
    });
    f.handle_input(now, Input::Received { conn, bytes: &p });
    let outs = drain(&mut f);
    assert!(outs
        .iter()
        .any(|o| matches!(o, Output::Close { conn: c } if *c == conn)));
    assert_eq!(f.replica().log()[0], entry(1));
}

#[test]
fn a_stale_view_is_not_obeyed_and_is_told_the_current_one() {
    let (mut f, conn) = lone_follower();
    let now = crate::Timestamp::from_micros(1);
    let p = bytes_of(&ReplicaMsg::Append {
        view: 0,
        prev_index: 0,
        prev_view: 0,
        entries: vec![entry(1)],
        commit: 1,
        last: 1,
        seq: 4,
    });
    f.handle_input(now, Input::Received { conn, bytes: &p });
    let outs = drain(&mut f);
    assert!(f.replica().log().is_empty());
    assert_eq!(
        sent::<ReplicaMsg, _>(&outs, conn),
        vec![ReplicaMsg::AppendReply {
            view: 1,
            ok: false,
            matched: 0,
            seq: 4
        }]
    );
}

#[test]
fn a_vote_is_durable_before_the_candidate_hears_of_it() {
    let (mut f, conn) = lone_follower();
    let now = crate::Timestamp::from_micros(1);
    let ask = bytes_of(&ReplicaMsg::Vote {
        view: 2,
        last_index: 0,
        last_view: 0,
        pre: false,
    });
    f.handle_input(now, Input::Received { conn, bytes: &ask });
    let outs = drain(&mut f);
    assert!(sent::<ReplicaMsg, _>(&outs, conn).is_empty());
    let persists: Vec<(u64, crate::store::Batch)> = outs
        .into_iter()
        .filter_map(|o| match o {
            Output::Persist { token, batch } => Some((token, batch)),
            _ => None,
        })
        .collect();
    assert!(persists.iter().any(|(_, b)| b
        .writes
        .contains(&crate::store::Write::SetVote { vote: Some(1) })));
    for (token, _) in persists {
        f.handle_input(now, Input::Persisted { token });
    }
    let outs = drain(&mut f);
    assert_eq!(
        sent::<ReplicaMsg, _>(&outs, conn),
        vec![ReplicaMsg::VoteReply {
            view: 2,
            granted: true,
            pre: false
        }]
    );
    // One vote per view: a second candidate of view 2 is refused.
    f.handle_input(now, Input::Received { conn, bytes: &ask });
    let outs = drain(&mut f);
    assert!(
        sent::<ReplicaMsg, _>(&outs, conn).is_empty() || {
            matches!(
                sent::<ReplicaMsg, _>(&outs, conn)[..],
                [ReplicaMsg::VoteReply { granted: true, .. }]
            )
        },
        "the same candidate asking again may hear yes again"
    );
}

#[test]
fn an_impostor_without_the_secret_cannot_link() {
    let mut c = Cluster::new(2);
    let conn = ConnId::accepted(99);
    let now = c.now;
    let m = c.server_mut(0);
    m.handle_input(
        now,
        Input::Accepted {
            identity: crate::io::Identity::Unchecked,
            conn,
            peer: "x".into(),
        },
    );
    let join = bytes_of(&ReplicaMsg::Join {
        version: crate::refusal::PROTOCOL_VERSION,
        from: 2,
        to: 1,
    });
    m.handle_input(now, Input::Received { conn, bytes: &join });
    let outs = drain(m);
    assert!(matches!(
        sent::<ReplicaMsg, _>(&outs, conn)[..],
        [ReplicaMsg::Challenge { .. }]
    ));
    let proof = bytes_of(&ReplicaMsg::Proof { mac: [0; 32] });
    m.handle_input(
        now,
        Input::Received {
            conn,
            bytes: &proof,
        },
    );
    let outs = drain(m);
    assert!(outs
        .iter()
        .any(|o| matches!(o, Output::Close { conn: cc } if *cc == conn)));
    assert!(
        !sent::<ReplicaMsg, _>(&outs, conn).contains(&ReplicaMsg::Ready),
        "not linked"
    );
}

/// The servers that think they are master, and their views.
fn masters(c: &Cluster, live: &[usize]) -> Vec<(usize, u64)> {
    live.iter()
        .filter(|&&ix| c.server(ix).replica().is_master())
        .map(|&ix| (ix, c.server(ix).replica().view()))
        .collect()
}

#[test]
fn when_the_master_crashes_another_is_elected_and_nothing_committed_is_lost() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    let s = c.open_session(1);
    let got = c.request(1, s, &register("alice"));
    assert!(
        matches!(got[..], [SessionMsg::Registered { .. }]),
        "{got:?}"
    );
    c.crash(0);
    c.run_for(Duration::from_secs(3));
    let m = masters(&c, &[1, 2]);
    assert_eq!(m.len(), 1, "one new master: {m:?}");
    assert!(m[0].1 >= 2, "in a later view: {m:?}");
    for ix in [1, 2] {
        assert!(
            c.server(ix).replica().is_caught_up(c.now),
            "server {}",
            ix + 1
        );
    }
    let s = c.open_session(2);
    let got = c.request(2, s, &register("bob"));
    assert!(
        matches!(got[..], [SessionMsg::Registered { user_id: 2 }]),
        "{got:?}"
    );
    // The old master comes back, follows, and catches up.
    c.restart(0);
    c.run_for(Duration::from_secs(3));
    assert!(!c.server(0).replica().is_master());
    assert!(c.server(0).replica().is_caught_up(c.now));
    assert_converged(&c, &[0, 1, 2]);
    assert!(c.server(0).replica().state().user_by_name("bob").is_some());
}

#[test]
fn a_master_cut_off_from_the_majority_steps_down_and_its_uncommitted_entries_go() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    c.partition(0, 1);
    c.partition(0, 2);
    // A client of the cut-off master cannot even start: the master cannot
    // confirm it is still master.
    let s = c.open_session(0);
    assert!(c.request(0, s, &register("mallory")).is_empty());
    assert!(c.server(0).replica().log().is_empty());
    // One that got in just before the cut: its entry cannot commit.
    let origin = Origin {
        server: 1,
        session: 77,
        request: 1,
    };
    let txn = Txn::Revoke {
        token_id: [7; 16],
        expires: u64::MAX,
    };
    let now = c.now;
    c.server_mut(0).submit_for_test(now, origin, txn);
    c.settle();
    assert_eq!(c.server(0).replica().log().len(), 1);
    assert_eq!(c.server(0).replica().indexes(), indexes(1, 0, 0));
    c.run_for(Duration::from_secs(3));
    assert!(!c.server(0).replica().is_master(), "stepped down");
    assert!(!c.server(0).replica().is_caught_up(c.now));
    let m = masters(&c, &[1, 2]);
    assert_eq!(m.len(), 1, "the majority elected one: {m:?}");
    let s = c.open_session(1);
    let got = c.request(1, s, &register("alice"));
    assert!(
        matches!(got[..], [SessionMsg::Registered { .. }]),
        "{got:?}"
    );
    c.heal();
    c.run_for(Duration::from_secs(3));
    assert_converged(&c, &[0, 1, 2]);
    // The cut-off master's entry was never committed: its place in the
    // log went to the new master's; the transaction, still pending on
    // server 1, was sent to the new master and ordered once.
    let st = c.server(0).replica().state();
    assert!(st.user_by_name("alice").is_some());
    let log = c.server(0).replica().log();
    assert!(log[0].view > 1, "entry 1 is the new view's: {log:?}");
    let ours = log.iter().filter(|e| e.origin == origin).count();
    assert_eq!(ours, 1, "ordered once: {log:?}");
    assert!(st.is_revoked(&[7; 16]));
}

#[test]
fn a_follower_cut_off_and_back_does_not_depose_a_master_that_was_fine() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    let view = c.server(0).replica().view();
    c.partition(0, 2);
    c.partition(1, 2);
    c.run_for(Duration::from_secs(5));
    assert_eq!(
        c.server(2).replica().view(),
        view,
        "its pre-votes found no majority, so its view never moved"
    );
    c.heal();
    c.run_for(Duration::from_secs(3));
    assert!(c.server(0).replica().is_master());
    assert_eq!(c.server(0).replica().view(), view);
    assert!(c.server(2).replica().is_caught_up(c.now));
}

#[test]
fn a_master_cut_off_cannot_confirm_a_read() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    c.partition(0, 1);
    c.partition(0, 2);
    let now = c.now;
    let mut out = crate::outbox::Outbox::<crate::server::ServerEvent>::default();
    let r = &mut c.server_mut(0).replica;
    let id = r.ask_read_index(now, &mut out);
    c.run_for(Duration::from_millis(500));
    assert!(!c.server(0).replica().read_index_ready(id));
}

#[test]
fn login_works_on_any_server_and_hides_which_part_was_wrong() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    let s = c.open_session(1);
    c.request(1, s, &register("alice"));
    c.run_for(Duration::from_secs(1));
    let s2 = c.open_session(2);
    let got = c.request(2, s2, &login("ALICE", "password-123"));
    let [SessionMsg::LoggedIn { user_id: 1, token }] = &got[..] else {
        panic!("{got:?}");
    };
    assert_eq!(token.username, "alice");
    let wrong = c.request(2, s2, &login("alice", "password-124"));
    let unknown = c.request(2, s2, &login("mallory", "password-123"));
    assert_eq!(wrong, unknown);
    assert_eq!(wrong, vec![SessionMsg::Failed(OpError::BadCredentials)]);
    // whoami through a third server trusts the token, not a client-sent id.
    let s0 = c.open_session(0);
    let got = c.request(
        0,
        s0,
        &Request::WhoAmI {
            token: token.clone(),
        },
    );
    assert_eq!(
        got,
        vec![SessionMsg::Me {
            user_id: 1,
            username: "alice".into()
        }]
    );
    let mut forged = token.clone();
    forged.user_id = 2;
    let got = c.request(0, s0, &Request::WhoAmI { token: forged });
    assert!(matches!(
        got[..],
        [SessionMsg::Failed(OpError::InvalidSession { .. })]
    ));
}

#[test]
fn repeated_login_failures_are_rate_limited() {
    let mut c = Cluster::new(1);
    let s = c.open_session(0);
    c.request(0, s, &register("alice"));
    for _ in 0..crate::accounts::limiter::SOURCE_FREE {
        assert_eq!(
            c.request(0, s, &login("alice", "wrong-password")),
            vec![SessionMsg::Failed(OpError::BadCredentials)]
        );
    }
    let got = c.request(0, s, &login("alice", "password-123"));
    let [SessionMsg::Failed(OpError::RateLimited { retry_after_secs })] = got[..] else {
        panic!("{got:?}");
    };
    c.run_for(Duration::from_secs(retry_after_secs));
    let got = c.request(0, s, &login("alice", "password-123"));
    assert!(matches!(got[..], [SessionMsg::LoggedIn { .. }]));
}

#[test]
fn logout_is_honoured_on_every_server() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    let s = c.open_session(0);
    c.request(0, s, &register("alice"));
    let got = c.request(0, s, &login("alice", "password-123"));
    let [SessionMsg::LoggedIn { token, .. }] = &got[..] else {
        panic!("{got:?}")
    };
    let s1 = c.open_session(1);
    assert_eq!(
        c.request(
            1,
            s1,
            &Request::Logout {
                token: token.clone()
            }
        ),
        vec![SessionMsg::LoggedOut]
    );
    c.run_for(Duration::from_secs(1));
    for ix in 0..3 {
        let s = c.open_session(ix);
        let got = c.request(
            ix,
            s,
            &Request::WhoAmI {
                token: token.clone(),
            },
        );
        assert!(
            matches!(
                got[..],
                [SessionMsg::Failed(OpError::InvalidSession { .. })]
            ),
            "server {}: {got:?}",
            ix + 1
        );
    }
}

#[test]
fn expired_tokens_are_refused() {
    let mut c = Cluster::new(1);
    let s = c.open_session(0);
    c.request(0, s, &register("alice"));
    let got = c.request(0, s, &login("alice", "password-123"));
    let [SessionMsg::LoggedIn { token, .. }] = &got[..] else {
        panic!("{got:?}")
    };
    c.run_for(Duration::from_secs(24 * 3600));
    // The idle session itself was closed long ago; a new one is needed.
    let s = c.open_session(0);
    let got = c.request(
        0,
        s,
        &Request::WhoAmI {
            token: token.clone(),
        },
    );
    assert!(
        matches!(&got[..], [SessionMsg::Failed(OpError::InvalidSession { reason })] if reason.contains("expired"))
    );
}

#[test]
fn bad_usernames_and_passwords_get_clear_errors() {
    let mut c = Cluster::new(1);
    let s = c.open_session(0);
    let got = c.request(0, s, &register("../etc"));
    assert!(matches!(
        got[..],
        [SessionMsg::Failed(OpError::InvalidUsername { .. })]
    ));
    let got = c.request(
        0,
        s,
        &Request::Register {
            username: "alice".into(),
            password: "short".into(),
        },
    );
    assert!(matches!(
        got[..],
        [SessionMsg::Failed(OpError::InvalidPassword { .. })]
    ));
    assert!(c.server(0).replica().log().is_empty());
}

#[test]
fn passwords_never_reach_events_or_the_log() {
    let mut c = Cluster::new(2);
    c.run_for(Duration::from_secs(1));
    let s = c.open_session(1);
    c.request(
        1,
        s,
        &Request::Register {
            username: "alice".into(),
            password: "hunter2-secret".into(),
        },
    );
    c.request(1, s, &login("alice", "hunter2-secret"));
    let text: String = c
        .events
        .iter()
        .map(|(_, e)| format!("{e} {e:?}\n"))
        .collect();
    assert!(!text.contains("hunter2"), "{text}");
    let log = format!("{:?}", c.server(0).replica().log());
    assert!(!log.contains("hunter2"));
}

#[test]
fn a_lone_master_applies_what_it_appended_before_a_crash() {
    use crate::store::{Batch, Store, Write};
    use speedy::Writable;
    // Crashed after the append was durable, before the apply was.
    let mut c = Cluster::new(1);
    let mut b = Batch::default();
    b.push(Write::Append {
        index: 1,
        entry: entry(1).write_to_vec().unwrap(),
    });
    c.store_mut(0).commit(&b).unwrap();
    c.crash(0);
    c.restart(0);
    // Applied at once, without waiting for another proposal.
    assert_eq!(c.server(0).replica().indexes(), indexes(1, 1, 1));
}

#[test]
fn a_silently_stalled_follower_stops_taking_clients_within_two_heartbeats() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    assert!(c.server(2).replica().is_caught_up(c.now));
    // The link stays "up": nothing closes it, messages just stop arriving.
    c.partition(0, 2);
    c.run_for(Duration::from_millis(1100));
    assert!(!c.server(2).replica().is_caught_up(c.now));
}

#[test]
fn a_login_right_after_registering_elsewhere_waits_for_the_masters_read_index() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    // Server 3 hears nothing more from the master for a while, but its link
    // still looks alive: it would answer from a stale state.
    c.partition(0, 2);
    let s = c.open_session(1);
    assert!(matches!(
        c.request(1, s, &register("alice"))[..],
        [SessionMsg::Registered { .. }]
    ));
    let s3 = c.open_session(2);
    c.send(
        2,
        s3,
        &SessionMsg::Begin {
            op: login("alice", "x").op(),
        },
    );
    c.received(2, s3);
    c.send(2, s3, &login("alice", "password-123").payload());
    assert!(
        c.received(2, s3).is_empty(),
        "no stale 'invalid username or password'"
    );
    c.heal();
    c.run_for(Duration::from_secs(5));
    let got = c.received(2, s3);
    let ev: Vec<String> = c
        .events
        .iter()
        .filter(|(i, _)| *i == 2)
        .map(|(_, e)| e.to_string())
        .collect();
    assert!(
        matches!(got[..], [SessionMsg::LoggedIn { user_id: 1, .. }]),
        "{got:?} {ev:#?}"
    );
}

/// The peers registered on server `ix`, by id, as its applied state says.
fn peers_on(c: &Cluster, ix: usize) -> Vec<u64> {
    let state = c.server(ix).replica().state();
    state.registry().all().map(|p| p.id).collect()
}

/// A peer whose lease is renewed stays; one whose lease runs out is
/// expired by the master, and by the next master if the first is lost
/// meanwhile; every server's list agrees.
#[test]
fn peer_leases_run_out_unless_renewed_and_a_new_master_expires_them() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    let s = c.open_session(0);
    c.request(0, s, &register("alice"));
    c.run_for(Duration::from_millis(500));
    let submit = |c: &mut Cluster, request: u64, txn: Txn| {
        let origin = Origin {
            server: 1,
            session: 99,
            request,
        };
        let now = c.now;
        c.server_mut(0).submit_for_test(now, origin, txn);
        c.run_for(Duration::from_millis(500));
    };
    let join = |addr: &str| Txn::PeerJoin {
        user: 1,
        addr: addr.into(),
        ticket_digest: [0; 32],
        key: None,
    };
    submit(&mut c, 1, join("10.0.0.1:9000"));
    submit(&mut c, 2, join("10.0.0.2:9000"));
    let (kept, lapsed) = match peers_on(&c, 0)[..] {
        [a, b] => (a, b),
        ref other => panic!("two peers registered: {other:?}"),
    };
    for ix in 0..3 {
        assert_eq!(peers_on(&c, ix), [kept, lapsed], "server {}", ix + 1);
    }
    // 40 s: one peer renewed every 10 s, the other never.
    for request in 3..7 {
        submit(&mut c, request, Txn::PeerRenew { peer: kept });
        c.run_for(Duration::from_millis(9_500));
    }
    for ix in 0..3 {
        assert_eq!(peers_on(&c, ix), [kept], "server {}", ix + 1);
    }
    // The master is lost; the next one expires what lapses later.
    c.crash(0);
    c.run_for(Duration::from_secs(40));
    assert!(masters(&c, &[1, 2]).len() == 1);
    for ix in 1..3 {
        assert!(peers_on(&c, ix).is_empty(), "server {}", ix + 1);
    }
}

#[test]
fn a_batchs_result_is_traced_as_counts_not_one_word_per_file() {
    use super::entry::TxnResult;
    let mut each = vec![TxnResult::FileStored; 230];
    each.insert(3, TxnResult::FileExists);
    each.push(TxnResult::FileExists);
    assert_eq!(
        super::described(&TxnResult::Files(each)),
        "Files(230 FileStored, 2 FileExists)"
    );
    assert_eq!(super::described(&TxnResult::FileStored), "FileStored");
}
