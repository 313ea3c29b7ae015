//! `ferry account delete` through an in-memory cluster: the password is
//! asked again; once it is right, the account, its files (content
//! collected on every server), its shares both ways and its sessions go,
//! everywhere alike, and the name can be registered again.

use super::user_files_tests::{content, login_token, names, proven_session, stored};
use crate::server::messages::FileOutcome;
use crate::server::{OpError, Request, SessionMsg};
use crate::testkit::cluster::Cluster;
use std::time::Duration;

fn delete(
    c: &mut Cluster,
    ix: usize,
    token: &crate::accounts::token::SessionToken,
    password: &str,
) -> Vec<SessionMsg> {
    let s = c.open_session(ix);
    let req = Request::DeleteAccount {
        token: token.clone(),
        password: password.into(),
    };
    let got = c.request(ix, s, &req);
    c.run_for(Duration::from_millis(300));
    got
}

#[test]
fn a_deleted_account_leaves_nothing_on_any_server() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    let alice = login_token(&mut c, "alice");
    let bob = login_token(&mut c, "bob");
    let (a, b) = (
        proven_session(&mut c, 1, &alice, None),
        proven_session(&mut c, 2, &bob, None),
    );
    let mine = content(30_000, 7);
    let theirs = content(5_000, 8);
    assert!(stored(&c.upload(1, a, "mine", &mine, false)));
    assert!(stored(&c.upload(2, b, "theirs", &theirs, false)));
    let share = |name: &str, user: &str| Request::Share {
        name: name.into(),
        user: user.into(),
    };
    let shared = [SessionMsg::FileDone(FileOutcome::Shared)];
    assert_eq!(c.request(1, a, &share("mine", "bob")), shared);
    assert_eq!(c.request(2, b, &share("theirs", "alice")), shared);
    c.run_for(Duration::from_secs(1));
    let digest = *blake3::hash(&mine).as_bytes();
    assert!((0..3).all(|ix| c.disk(ix).blobs.contains_key(&digest)));
    assert_eq!(names(&mut c, 2, b).len(), 2);

    // A wrong password changes nothing, and says so as a login would.
    let bad = delete(&mut c, 2, &alice, "not-her-password");
    assert_eq!(bad, [SessionMsg::Failed(OpError::BadCredentials)]);
    assert_eq!(names(&mut c, 2, b).len(), 2);

    assert_eq!(
        delete(&mut c, 2, &alice, "password-123"),
        [SessionMsg::LoggedOut]
    );
    c.run_for(Duration::from_secs(1));

    // Every server applied the same thing.
    let digest_of = |c: &Cluster, ix: usize| c.server(ix).replica().state().digest();
    assert!((1..3).all(|ix| digest_of(&c, ix) == digest_of(&c, 0)));
    for ix in 0..3 {
        let state = c.server(ix).replica().state();
        assert!(state.holds_nothing_of(alice.user_id), "server {}", ix + 1);
        assert!(
            !c.disk(ix).blobs.contains_key(&digest),
            "content on {}",
            ix + 1
        );
    }
    // bob sees his own file only, no longer shared with anyone, and cannot
    // fetch alice's.
    assert_eq!(
        names(&mut c, 2, b),
        [("bob".to_string(), "theirs".to_string())]
    );
    let gone = c.download(2, b, Some("alice"), "mine");
    assert_eq!(gone, Err(vec![SessionMsg::Failed(OpError::NoSuchFile)]));

    // Her session, already proven, and her token are refused from now on.
    let listed = c.request(1, a, &Request::List);
    assert!(
        matches!(
            &listed[..],
            [SessionMsg::Failed(OpError::InvalidSession { .. })]
        ),
        "{listed:?}"
    );
    let s = c.open_session(0);
    let who = c.request(
        0,
        s,
        &Request::WhoAmI {
            token: alice.clone(),
        },
    );
    assert!(
        matches!(
            &who[..],
            [SessionMsg::Failed(OpError::InvalidSession { .. })]
        ),
        "{who:?}"
    );

    // The name is free again, for a new user with a new id.
    let again = login_token(&mut c, "alice");
    assert_ne!(again.user_id, alice.user_id);
    let fresh = proven_session(&mut c, 0, &again, None);
    assert!(
        names(&mut c, 0, fresh).is_empty(),
        "nothing of the old alice"
    );
}
