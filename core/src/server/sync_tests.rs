//! SYNC rounds through the cluster: peers registered through different
//! servers take turns (SYNC OK to one, SYNC READ to the others, SYNC END
//! at the end); stale SYNC FINs, writers that leave or fall silent, and a
//! master that dies mid-round. Every step checks the fencing invariant.

use crate::io::{ConnId, Input};
use crate::replication::sync_round::Token;
use crate::server::user_files_tests::{login_token, proven_session};
use crate::server::{Request, SessionMsg};
use crate::testkit::cluster::Cluster;
use std::collections::BTreeMap;
use std::time::Duration;

/// A registered peer's session.
#[derive(Clone, Copy, Debug)]
struct Peer {
    ix: usize,
    conn: ConnId,
    id: u64,
}

/// The fencing invariant, watched from outside: every token names one
/// grant (one writer) on every server; a server's grant never goes back;
/// and each SYNC OK any peer hears carries a token greater than every
/// grant told before it, so at most one grant is current at a time.
#[derive(Default)]
struct Fence {
    writers: BTreeMap<Token, u64>,
    per_server: BTreeMap<usize, Token>,
    last_ok: Option<Token>,
}

impl Fence {
    fn grant(&mut self, token: Token, writer: u64, whence: &str) {
        let w = *self.writers.entry(token).or_insert(writer);
        assert_eq!(w, writer, "{whence}: token {token} names two writers");
    }

    /// The grant each of the live servers `up` holds now.
    fn check_states(&mut self, c: &Cluster, up: &[usize]) {
        for &ix in up {
            let Some(r) = c.server(ix).replica().state().sync().current() else {
                continue;
            };
            self.grant(r.token, r.writer, &format!("server {}", ix + 1));
            let before = self.per_server.insert(ix, r.token);
            assert!(
                before.is_none_or(|b| b <= r.token),
                "server {}'s grant went back from {before:?} to {}",
                ix + 1,
                r.token
            );
        }
    }

    /// What peer `p` heard.
    fn check_msgs(&mut self, p: &Peer, msgs: &[SessionMsg]) {
        for m in msgs {
            match m {
                SessionMsg::SyncOk { token, .. } => {
                    self.grant(*token, p.id, "SYNC OK");
                    assert!(
                        self.last_ok.is_none_or(|l| l < *token),
                        "SYNC OK {token} after {:?}",
                        self.last_ok
                    );
                    self.last_ok = Some(*token);
                }
                SessionMsg::SyncRead { writer, token, .. } => {
                    assert_ne!(*writer, p.id, "told to read its own turn");
                    self.grant(*token, *writer, "SYNC READ");
                }
                _ => {}
            }
        }
    }
}

struct Round {
    c: Cluster,
    peers: Vec<Peer>,
    fence: Fence,
    up: Vec<usize>,
}

impl Round {
    /// Three servers; alice, bob and carol each register a peer through
    /// the server `at` names.
    fn new(at: [usize; 3]) -> Round {
        let mut c = Cluster::new(3);
        c.run_for(Duration::from_secs(1));
        let mut peers = Vec::new();
        for (i, name) in ["alice", "bob", "carol"].into_iter().enumerate() {
            let token = login_token(&mut c, name);
            let ix = at[i];
            let conn = proven_session(&mut c, ix, &token, None);
            let addr = format!("10.0.0.{}:9000", i + 1);
            let got = c.request(ix, conn, &Request::PeerRegister { addr });
            c.run_for(Duration::from_millis(500));
            let got = [got, c.received(ix, conn)].concat();
            let id = got.iter().find_map(|m| match m {
                SessionMsg::PeerRegistered { peer, .. } => Some(*peer),
                _ => None,
            });
            let id = id.expect("REGISTER OK");
            peers.push(Peer { ix, conn, id });
        }
        Round {
            c,
            peers,
            fence: Fence::default(),
            up: vec![0, 1, 2],
        }
    }

    /// Runs `d` with every peer pinging every 5 s; what each heard of
    /// rounds (by peer), checked against the fence.
    fn run(&mut self, d: Duration) -> Vec<Vec<SessionMsg>> {
        let mut heard = vec![Vec::new(); self.peers.len()];
        let mut left = d;
        while !left.is_zero() {
            let step = left.min(Duration::from_secs(5));
            for p in &self.peers {
                self.c.send(p.ix, p.conn, &SessionMsg::Ping);
            }
            self.c.run_for(step);
            left -= step;
            self.hear(&mut heard);
        }
        heard
    }

    fn hear(&mut self, heard: &mut [Vec<SessionMsg>]) {
        for (i, p) in self.peers.iter().enumerate() {
            let msgs: Vec<SessionMsg> = (self.c.received(p.ix, p.conn).into_iter())
                .filter(|m| {
                    matches!(
                        m,
                        SessionMsg::SyncStarted { .. }
                            | SessionMsg::SyncOk { .. }
                            | SessionMsg::SyncRead { .. }
                            | SessionMsg::SyncEnd { .. }
                    )
                })
                .collect();
            self.fence.check_msgs(p, &msgs);
            heard[i].extend(msgs);
        }
        self.fence.check_states(&self.c, &self.up);
    }

    /// Peer `i` asks SYNC: the round it is answered with.
    fn sync(&mut self, i: usize) -> (u64, Vec<Vec<SessionMsg>>) {
        let p = self.peers[i];
        self.c.send(
            p.ix,
            p.conn,
            &SessionMsg::Begin {
                op: Request::Sync.op(),
            },
        );
        self.c.send(p.ix, p.conn, &SessionMsg::Sync);
        let heard = self.run(Duration::from_millis(500));
        let round = heard[i].iter().find_map(|m| match m {
            SessionMsg::SyncStarted { round } => Some(*round),
            _ => None,
        });
        (round.expect("SYNC answered"), heard)
    }

    fn fin(&mut self, i: usize, round: u64, token: Token) -> Vec<Vec<SessionMsg>> {
        let p = self.peers[i];
        self.c
            .send(p.ix, p.conn, &SessionMsg::SyncFin { round, token });
        self.run(Duration::from_millis(500))
    }

    fn index_of(&self, id: u64) -> usize {
        (self.peers.iter().position(|p| p.id == id)).expect("a peer of the test")
    }
}

/// Of what peers heard: the one SYNC OK (whose, its token), checking that
/// every other peer heard SYNC READ of the same grant.
fn one_writer(heard: &[Vec<SessionMsg>], round: u64) -> (usize, Token) {
    let oks: Vec<(usize, Token)> = (heard.iter().enumerate())
        .flat_map(|(i, msgs)| {
            msgs.iter().filter_map(move |m| match m {
                SessionMsg::SyncOk {
                    round: r, token, ..
                } if *r == round => Some((i, *token)),
                _ => None,
            })
        })
        .collect();
    let [(w, token)] = oks[..] else {
        panic!("one SYNC OK: {heard:?}");
    };
    for (i, msgs) in heard.iter().enumerate().filter(|(i, _)| *i != w) {
        let read = msgs.iter().any(|m| {
            matches!(m, SessionMsg::SyncRead { round: r, token: t, .. } if *r == round && *t == token)
        });
        assert!(read, "peer {i} heard no SYNC READ of {token}: {msgs:?}");
    }
    (w, token)
}

fn quiet(heard: &[Vec<SessionMsg>]) -> bool {
    heard.iter().all(|m| m.is_empty())
}

#[test]
fn peers_through_three_servers_take_turns_each_writes_once_then_sync_end() {
    let mut r = Round::new([0, 1, 2]);
    let (round, heard) = r.sync(1);
    let (mut w, mut token) = one_writer(&heard, round);
    // The order is by peer id: alice registered first.
    assert_eq!(w, 0);
    let order: Vec<u64> = r.peers.iter().map(|p| p.id).collect();
    assert!(heard[w].contains(&SessionMsg::SyncOk {
        round,
        token,
        order: order.clone()
    }));

    // Carol asks during the round: she joins it, no new round.
    let (joined, heard) = r.sync(2);
    assert_eq!(joined, round);
    assert_eq!(heard[2], [SessionMsg::SyncStarted { round }], "no re-send");

    // SYNC FIN may come while the writer's session has an operation open:
    // it is not taken for the operation's data.
    let p = r.peers[w];
    let list = Request::List;
    r.c.send(p.ix, p.conn, &SessionMsg::Begin { op: list.op() });
    for next in 1..3 {
        let before = token;
        let heard = r.fin(w, round, token);
        if next == 1 {
            r.c.send(p.ix, p.conn, &list.payload());
            r.c.run_for(Duration::from_millis(50));
            let answer = r.c.received(p.ix, p.conn);
            assert!(
                matches!(answer[..], [SessionMsg::Listing { .. }]),
                "{answer:?}"
            );
        }
        (w, token) = one_writer(&heard, round);
        assert_eq!(w, next);
        assert!(token > before);
        // A stale SYNC FIN (the last writer's, with its old token) changes
        // nothing and tells nobody anything.
        let heard = r.fin(next - 1, round, before);
        assert!(quiet(&heard), "{heard:?}");
        let state = r.c.server(0).replica().state().sync().current().cloned();
        assert_eq!(state.map(|s| (s.writer, s.token)), Some((order[w], token)));
    }
    let written =
        r.c.server(2)
            .replica()
            .state()
            .sync()
            .current()
            .unwrap()
            .written
            .clone();
    assert_eq!(written, order[..2]);
    let heard = r.fin(w, round, token);
    for msgs in &heard {
        assert_eq!(msgs[..], [SessionMsg::SyncEnd { round }]);
    }
    for ix in 0..3 {
        let sync = r.c.server(ix).replica().state().sync();
        assert!(sync.current().is_none());
        assert_eq!(sync.last_finished(), Some(round));
    }
    // A new round has a new id, and tokens go on growing.
    let (again, heard) = r.sync(0);
    assert!(again > round);
    let (_, fresh) = one_writer(&heard, again);
    assert!(fresh > token);
}

#[test]
fn sync_without_a_registered_peer_is_refused() {
    let mut c = Cluster::new(1);
    c.run_for(Duration::from_secs(1));
    let alice = login_token(&mut c, "alice");
    let s = proven_session(&mut c, 0, &alice, None);
    assert_eq!(
        c.request(0, s, &Request::Sync),
        [SessionMsg::Failed(crate::server::OpError::NotAPeer)]
    );
}

#[test]
fn a_writer_whose_session_closes_passes_the_grant_on() {
    let mut r = Round::new([0, 1, 2]);
    let (round, heard) = r.sync(2);
    let (w, token) = one_writer(&heard, round);
    let p = r.peers[w];
    r.c.input(p.ix, Input::Closed { conn: p.conn });
    r.peers.remove(w);
    let heard = r.run(Duration::from_secs(1));
    let (next, moved) = one_writer(&heard, round);
    assert_eq!(
        r.peers[next].id,
        r.c.server(0)
            .replica()
            .state()
            .sync()
            .current()
            .unwrap()
            .writer
    );
    assert!(moved > token);
}

#[test]
fn a_silent_writer_keeps_the_grant_while_it_says_writing_and_loses_it_when_its_lease_runs_out() {
    let mut r = Round::new([0, 1, 2]);
    let (round, heard) = r.sync(0);
    let (w, token) = one_writer(&heard, round);
    // SYNC WRITING every 10 s holds the grant for a minute, twice the lease.
    for _ in 0..6 {
        let p = r.peers[w];
        r.c.send(p.ix, p.conn, &SessionMsg::SyncWriting { round, token });
        assert!(quiet(&r.run(Duration::from_secs(10))));
    }
    // Silent from now on (its last word was 10 s ago), though its session
    // lives on pings: 25 s after that word it still writes; by 40 s, past
    // the 30 s lease, the master has moved the grant on.
    assert!(quiet(&r.run(Duration::from_secs(15))));
    let heard = r.run(Duration::from_secs(15));
    let (next, moved) = one_writer(&heard, round);
    assert_eq!(next, r.index_of(r.peers[w].id) + 1);
    assert!(moved > token);
    let written =
        r.c.server(1)
            .replica()
            .state()
            .sync()
            .current()
            .unwrap()
            .written
            .clone();
    assert!(written.is_empty(), "the silent writer wrote nothing");
}

#[test]
fn a_new_master_continues_the_round_with_larger_tokens() {
    // The peers' servers are 2 and 3: server 1, the master, dies.
    let mut r = Round::new([1, 2, 1]);
    let (round, heard) = r.sync(0);
    let (w, first) = one_writer(&heard, round);
    assert_eq!(w, 0);
    let heard = r.fin(0, round, first);
    let (w, second) = one_writer(&heard, round);
    assert_eq!(w, 1);

    r.c.crash(0);
    r.up = vec![1, 2];
    // Bob's FIN comes while there is no master: it waits, then applies.
    let early = r.fin(1, round, second);
    let later = r.run(Duration::from_secs(15));
    let heard: Vec<Vec<SessionMsg>> = (early.into_iter().zip(later))
        .map(|(a, b)| [a, b].concat())
        .collect();
    let (w, third) = one_writer(&heard, round);
    assert_eq!(w, 2);
    assert!(
        third > second && third.view > second.view,
        "{third} after {second}"
    );
    let heard = r.fin(2, round, third);
    for msgs in &heard {
        assert_eq!(msgs[..], [SessionMsg::SyncEnd { round }]);
    }
}
