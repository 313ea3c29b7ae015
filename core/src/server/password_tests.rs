//! Passwords through an in-memory cluster: failed logins counted for the
//! whole cluster per account and per source (docs/security.md,
//! "Passwords"), and changing a password.

use super::user_files_tests::{login_token, proven_session};
use crate::accounts::limiter::{ACCOUNT_CAP_SECS, ACCOUNT_FREE, SOURCE_FREE};
use crate::accounts::token::SessionToken;
use crate::server::{OpError, Request, SessionMsg};
use crate::testkit::cluster::Cluster;
use std::time::Duration;

const PASSWORD: &str = "password-123";
const ATTACKER: &str = "203.0.113.9:40000";
const OWNER: &str = "198.51.100.7:50000";

fn login(c: &mut Cluster, ix: usize, from: &str, name: &str, password: &str) -> Vec<SessionMsg> {
    let s = c.open_session_from(ix, from);
    let login = Request::Login {
        username: name.into(),
        password: password.into(),
    };
    c.request(ix, s, &login)
}

fn wrong(c: &mut Cluster, ix: usize, from: &str) -> Vec<SessionMsg> {
    login(c, ix, from, "alice", "not-the-password")
}

const BAD: SessionMsg = SessionMsg::Failed(OpError::BadCredentials);

fn limited(secs: u64) -> Vec<SessionMsg> {
    vec![SessionMsg::Failed(OpError::RateLimited {
        retry_after_secs: secs,
    })]
}

fn logged_in(got: &[SessionMsg]) -> Option<SessionToken> {
    match got {
        [SessionMsg::LoggedIn { token, .. }] => Some(token.clone()),
        _ => None,
    }
}

/// A cluster of three with alice registered (and logged in once from the
/// test's default source), its clock just past a whole second, so that a
/// few requests in a row fall in the same second (delays count in
/// seconds).
fn cluster_with_alice() -> Cluster {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    login_token(&mut c, "alice");
    align(&mut c);
    c
}

fn align(c: &mut Cluster) {
    let into = c.now.as_micros() % 1_000_000;
    c.run_for(Duration::from_micros(1_000_000 - into + 1000));
}

#[test]
fn guesses_through_different_servers_share_one_count_and_the_delay_grows() {
    let mut c = cluster_with_alice();
    for i in 0..SOURCE_FREE as usize {
        assert_eq!(wrong(&mut c, i % 3, ATTACKER), [BAD], "free failure {i}");
    }
    // The fourth guess, through any server, must wait: refused before its
    // password is even hashed.
    for ix in 0..3 {
        assert_eq!(wrong(&mut c, ix, ATTACKER), limited(1), "server {}", ix + 1);
    }
    // Each further failure doubles the wait.
    let mut waits = Vec::new();
    for k in 0..4 {
        c.run_for(Duration::from_secs(1 << k));
        assert_eq!(wrong(&mut c, k % 3, ATTACKER), [BAD]);
        match &wrong(&mut c, (k + 1) % 3, ATTACKER)[..] {
            [SessionMsg::Failed(OpError::RateLimited { retry_after_secs })] => {
                waits.push(*retry_after_secs)
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(waits, [2, 4, 8, 16]);
    // Even the right password waits its turn.
    assert_eq!(login(&mut c, 2, ATTACKER, "alice", PASSWORD), limited(16));
    // And an unknown name is counted the same way, so the answers do not
    // tell who exists.
    for _ in 0..SOURCE_FREE {
        assert_eq!(login(&mut c, 0, ATTACKER, "nobody", PASSWORD), [BAD]);
    }
    assert_eq!(login(&mut c, 1, ATTACKER, "nobody", PASSWORD), limited(1));
    let digest = c.server(0).replica().state().digest();
    for ix in 1..3 {
        assert_eq!(c.server(ix).replica().state().digest(), digest);
    }
}

#[test]
fn the_owner_logs_in_while_attackers_are_throttled() {
    let mut c = cluster_with_alice();
    assert!(logged_in(&login(&mut c, 0, OWNER, "alice", PASSWORD)).is_some());
    c.run_for(Duration::from_millis(100));
    align(&mut c);
    // Many sources, one guess each: the account-wide count climbs.
    for i in 0..ACCOUNT_FREE as usize {
        let from = format!("203.0.113.{}:1", 100 + i);
        assert_eq!(wrong(&mut c, i % 3, &from), [BAD], "source {i}");
    }
    // A fresh source is held by the account-wide delay…
    let held = wrong(&mut c, 1, "192.0.2.1:1");
    let [SessionMsg::Failed(OpError::RateLimited { retry_after_secs })] = held[..] else {
        panic!("{held:?}");
    };
    assert!((1..=ACCOUNT_CAP_SECS).contains(&retry_after_secs));
    // …but the owner, from where they logged in before, is not.
    let got = login(&mut c, 2, OWNER, "alice", PASSWORD);
    assert!(logged_in(&got).is_some(), "{got:?}");
    // From a new place the owner waits at most the account-wide cap, then
    // gets in.
    let laptop = "192.0.2.77:1";
    let got = login(&mut c, 0, laptop, "alice", PASSWORD);
    let [SessionMsg::Failed(OpError::RateLimited { retry_after_secs })] = got[..] else {
        panic!("{got:?}");
    };
    assert!(retry_after_secs <= ACCOUNT_CAP_SECS);
    c.run_for(Duration::from_secs(retry_after_secs));
    let got = login(&mut c, 0, laptop, "alice", PASSWORD);
    assert!(logged_in(&got).is_some(), "{got:?}");
}

#[test]
fn a_successful_login_clears_its_source_count() {
    let mut c = cluster_with_alice();
    for _ in 0..SOURCE_FREE {
        assert_eq!(wrong(&mut c, 1, OWNER), [BAD]);
    }
    assert_eq!(wrong(&mut c, 2, OWNER), limited(1));
    c.run_for(Duration::from_secs(1));
    let got = login(&mut c, 2, OWNER, "alice", PASSWORD);
    assert!(logged_in(&got).is_some(), "{got:?}");
    c.run_for(Duration::from_millis(100));
    for _ in 0..SOURCE_FREE {
        assert_eq!(wrong(&mut c, 0, OWNER), [BAD], "free again");
    }
}

#[test]
fn counts_survive_a_master_failover() {
    let mut c = cluster_with_alice();
    for _ in 0..SOURCE_FREE {
        assert_eq!(wrong(&mut c, 1, ATTACKER), [BAD]);
    }
    for k in 0..3 {
        c.run_for(Duration::from_secs(1 << k));
        assert_eq!(wrong(&mut c, 1 + k % 2, ATTACKER), [BAD]);
    }
    // The next try waits 8 s; the master dies, another is elected.
    c.crash(0);
    c.run_for(Duration::from_secs(3));
    let got = wrong(&mut c, 2, ATTACKER);
    let [SessionMsg::Failed(OpError::RateLimited { retry_after_secs })] = got[..] else {
        panic!("the new master's cluster forgot the count: {got:?}");
    };
    assert!((4..8).contains(&retry_after_secs), "{retry_after_secs}");
    // The old master comes back knowing them too, from its store.
    c.restart(0);
    c.run_for(Duration::from_secs(3));
    let got = wrong(&mut c, 0, ATTACKER);
    assert!(
        matches!(got[..], [SessionMsg::Failed(OpError::RateLimited { .. })]),
        "{got:?}"
    );
}

fn change(
    c: &mut Cluster,
    ix: usize,
    token: &SessionToken,
    current: &str,
    new: &str,
) -> Vec<SessionMsg> {
    let s = c.open_session(ix);
    let req = Request::ChangePassword {
        token: token.clone(),
        current: current.into(),
        new: new.into(),
    };
    c.request(ix, s, &req)
}

fn who(c: &mut Cluster, ix: usize, token: &SessionToken) -> Vec<SessionMsg> {
    let s = c.open_session(ix);
    c.request(
        ix,
        s,
        &Request::WhoAmI {
            token: token.clone(),
        },
    )
}

#[test]
fn a_new_password_refuses_every_earlier_token_on_every_server() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    let first = login_token(&mut c, "alice");
    let other = logged_in(&login(&mut c, 1, OWNER, "alice", PASSWORD)).unwrap();
    let proven = proven_session(&mut c, 2, &other, None);
    let bob = login_token(&mut c, "bob");
    // A weak new password is refused before anything else.
    let got = change(&mut c, 2, &first, PASSWORD, "short");
    assert!(
        matches!(
            got[..],
            [SessionMsg::Failed(OpError::InvalidPassword { .. })]
        ),
        "{got:?}"
    );
    const NEW: &str = "a-new-password-456";
    let got = change(&mut c, 2, &first, PASSWORD, NEW);
    let new = logged_in(&got).unwrap_or_else(|| panic!("{got:?}"));
    c.run_for(Duration::from_millis(100));
    for ix in 0..3 {
        for old in [&first, &other] {
            assert_eq!(
                who(&mut c, ix, old),
                [SessionMsg::Failed(OpError::InvalidSession {
                    reason: "the password was changed since this login".into()
                })],
                "server {}",
                ix + 1
            );
        }
        assert!(matches!(who(&mut c, ix, &new)[..], [SessionMsg::Me { .. }]));
        assert!(matches!(who(&mut c, ix, &bob)[..], [SessionMsg::Me { .. }]));
        assert_eq!(login(&mut c, ix, OWNER, "alice", PASSWORD), [BAD]);
        c.run_for(Duration::from_secs(1));
        let got = login(&mut c, ix, OWNER, "alice", NEW);
        assert!(logged_in(&got).is_some(), "{got:?}");
    }
    // A session that proved the old login before the change is refused.
    let got = c.request(2, proven, &Request::List);
    assert!(
        matches!(
            got[..],
            [SessionMsg::Failed(OpError::InvalidSession { .. })]
        ),
        "{got:?}"
    );
    // A restarted server reads the epoch back from its store.
    c.crash(1);
    c.restart(1);
    c.run_for(Duration::from_secs(3));
    assert!(matches!(
        who(&mut c, 1, &other)[..],
        [SessionMsg::Failed(OpError::InvalidSession { .. })]
    ));
    assert!(matches!(who(&mut c, 1, &new)[..], [SessionMsg::Me { .. }]));
    // A wrong current password is a failed login, and counted as one.
    for _ in 0..SOURCE_FREE {
        assert_eq!(
            change(&mut c, 0, &new, "wrong-password", "whatever-else"),
            [BAD]
        );
    }
    let got = change(&mut c, 1, &new, NEW, "whatever-else");
    assert!(
        matches!(got[..], [SessionMsg::Failed(OpError::RateLimited { .. })]),
        "{got:?}"
    );
}
