//! Commands named by the client (`SessionMsg::Command`): one command tried
//! through two servers is applied once.

use crate::server::user_files_tests::{
    login_token, names, proven_session, proven_session_after, stored,
};
use crate::server::{OpError, Request, SessionMsg};
use crate::testkit::cluster::Cluster;
use std::time::Duration;

/// The names in the catalogue once the cluster has settled.
fn settled_names(c: &mut Cluster) -> Vec<String> {
    c.settle();
    let state = c.server(0).replica.state();
    (state.catalogue().all()).map(|f| f.name.clone()).collect()
}

fn register(c: &mut Cluster, ix: usize, command: Option<u64>) -> Vec<SessionMsg> {
    let s = c.open_session(ix);
    if let Some(id) = command {
        c.send(ix, s, &SessionMsg::Command { id, done: 0 });
    }
    let req = Request::Register {
        username: "alice".into(),
        password: "password-123".into(),
    };
    let mut got = c.request(ix, s, &req);
    c.run_for(Duration::from_millis(500));
    got.extend(c.received(ix, s));
    got
}

#[test]
fn a_command_tried_again_through_another_server_is_applied_once() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    let first = register(&mut c, 1, Some(42));
    let [SessionMsg::Registered { user_id }] = first[..] else {
        panic!("{first:?}");
    };
    // The same command through another server: the first result, not
    // "username taken".
    assert_eq!(
        register(&mut c, 2, Some(42)),
        [SessionMsg::Registered { user_id }]
    );
    // Another command (or none) registering the same name is refused.
    for other in [Some(43), None] {
        let got = register(&mut c, 0, other);
        assert!(
            matches!(got[..], [SessionMsg::Failed(OpError::UsernameTaken)]),
            "{other:?}: {got:?}"
        );
    }
    c.settle();
    let users = c.server(0).replica.state().users().count();
    assert_eq!(users, 1);
}

/// A command id is taken only before the session's first transaction: a
/// session cannot move to another command's dedup record midway.
#[test]
fn a_command_id_after_a_transaction_is_refused() {
    let mut c = Cluster::new(1);
    c.run_for(Duration::from_secs(1));
    let s = c.open_session(0);
    let req = Request::Register {
        username: "bob".into(),
        password: "password-123".into(),
    };
    c.request(0, s, &req);
    c.run_for(Duration::from_millis(500));
    c.received(0, s);
    c.send(0, s, &SessionMsg::Command { id: 7, done: 0 });
    let got = c.received(0, s);
    assert!(
        matches!(got.last(), Some(SessionMsg::Refused(_))),
        "{got:?}"
    );
}

/// A put and an rm, each tried again through another server after the
/// first try took effect: "stored" and "deleted" again, not "exists" and
/// "no such file", and each applied once.
#[test]
fn a_put_and_an_rm_tried_again_elsewhere_answer_as_the_first_try() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    let t = login_token(&mut c, "alice");
    let content = b"the same bytes on each try".to_vec();
    let s = proven_session(&mut c, 1, &t, Some(100));
    let first = c.upload(1, s, "notes.txt", &content, false);
    assert!(stored(&first), "{first:?}");
    let s = proven_session(&mut c, 2, &t, Some(100));
    let again = c.upload(2, s, "notes.txt", &content, false);
    assert_eq!(again, first);
    // A new command uploading the same name is told it exists.
    let s = proven_session(&mut c, 2, &t, Some(101));
    let other = c.upload(2, s, "notes.txt", &content, false);
    assert!(!stored(&other), "{other:?}");

    let rm = Request::Delete {
        name: "notes.txt".into(),
    };
    let s = proven_session(&mut c, 0, &t, Some(102));
    let deleted = c.request(0, s, &rm);
    c.run_for(Duration::from_millis(300));
    let deleted = [deleted, c.received(0, s)].concat();
    let s = proven_session(&mut c, 1, &t, Some(102));
    let again = c.request(1, s, &rm);
    assert_eq!(again, deleted);
    assert!(
        matches!(
            deleted[..],
            [SessionMsg::FileDone(
                crate::server::messages::FileOutcome::Deleted
            )]
        ),
        "{deleted:?}"
    );
    c.settle();
    assert_eq!(c.server(0).replica.state().catalogue().all().count(), 0);
}

/// A command of several uploads cut off after its last answered one, and
/// tried again through another server from its start: the upload whose
/// file is there already orders nothing this time, and the ones after it
/// must still be told apart from what the first try applied. (Numbered by
/// the transactions they ordered, the retried "b" took the first try's
/// "a"'s number and "c" took "b"'s: "c" was answered stored and never
/// applied.)
#[test]
fn a_command_of_several_uploads_tried_again_applies_each_once_and_the_new_ones() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    let t = login_token(&mut c, "alice");
    let (a, b, cc) = (b"aaa".to_vec(), b"bbbb".to_vec(), b"ccccc".to_vec());
    let s = proven_session(&mut c, 1, &t, Some(200));
    assert!(stored(&c.upload(1, s, "a", &a, false)));
    let first_b = c.upload(1, s, "b", &b, false);
    assert!(stored(&first_b), "{first_b:?}");
    // The first try's session is lost before it hears of "b" (say), and
    // the command runs again from its start elsewhere.
    let s = proven_session(&mut c, 2, &t, Some(200));
    let again_a = c.upload(2, s, "a", &a, false);
    assert!(
        !stored(&again_a),
        "there already, nothing ordered: {again_a:?}"
    );
    assert_eq!(c.upload(2, s, "b", &b, false), first_b, "b's first answer");
    let new_c = c.upload(2, s, "c", &cc, false);
    assert!(stored(&new_c), "{new_c:?}");
    assert_eq!(
        settled_names(&mut c),
        ["a", "b", "c"],
        "c applied, each once"
    );
}

/// A command tried again from where its answers stop (`Command { done }`,
/// as `ferry` tries one): the proof of the login and a listing are sent
/// again and numbered on neither try; the upload whose answer was lost is
/// answered as the first try applied it, and the one after it is new.
#[test]
fn a_command_tried_again_after_its_answered_operations_numbers_the_rest_as_before() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    let t = login_token(&mut c, "alice");
    let (a, b, cc) = (b"aaa".to_vec(), b"bbbb".to_vec(), b"ccccc".to_vec());
    let s = proven_session(&mut c, 1, &t, Some(300));
    assert!(names(&mut c, 1, s).is_empty());
    assert!(stored(&c.upload(1, s, "a", &a, false)));
    let first_b = c.upload(1, s, "b", &b, false);
    assert!(stored(&first_b), "{first_b:?}");
    // The answer to "b" is lost with the session: the next try says one
    // mutation ("a") was answered and starts at "b".
    let s = proven_session_after(&mut c, 2, &t, Some(300), 1);
    assert_eq!(names(&mut c, 2, s).len(), 2, "a listing, not numbered");
    assert_eq!(c.upload(2, s, "b", &b, false), first_b, "b's first answer");
    let new_c = c.upload(2, s, "c", &cc, false);
    assert!(stored(&new_c), "{new_c:?}");
    assert_eq!(settled_names(&mut c), ["a", "b", "c"], "each applied once");
}

/// A batch of a command whose first try was applied (its answer lost),
/// tried again through another server, where what arrives differs: a file
/// changed since (other bytes, same size), and a file the first try was
/// told exists, still taken. Each file is answered as the first try's
/// entry did (the changed one with the content the cluster holds, not
/// the one sent again), the taken one "exists" as before, and nothing is
/// applied twice. (Answered from this try's own transfers by order, a
/// retried batch whose files reached its entry differently told files
/// stored by the first try "not stored": found by the simulator's
/// commands.)
#[test]
fn a_batch_tried_again_is_answered_file_by_file_as_its_first_entry_did() {
    use crate::server::messages::Landed;
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    let t = login_token(&mut c, "alice");
    let s = proven_session(&mut c, 0, &t, None);
    let taken = b"taken before".to_vec();
    assert!(stored(&c.upload(0, s, "taken", &taken, false)));
    let (a, b, b2) = (b"aaaa".to_vec(), b"bbbb".to_vec(), b"BBBB".to_vec());
    let digest = |d: &[u8]| *blake3::hash(d).as_bytes();
    let s = proven_session(&mut c, 1, &t, Some(500));
    let first = c.upload_many(1, s, &[("a", &a), ("b", &b), ("taken", &a)], false);
    let [SessionMsg::BatchDone { outcomes }] = &first[..] else {
        panic!("{first:?}");
    };
    let want = vec![
        Landed::Stored {
            size: 4,
            digest: digest(&a),
        },
        Landed::Stored {
            size: 4,
            digest: digest(&b),
        },
        Landed::Failed(OpError::Transfer(crate::transfer::TransferError::Exists)),
    ];
    assert_eq!(outcomes, &want);
    c.settle();
    // The answer is lost; the command tries again elsewhere, "b" changed.
    let s = proven_session(&mut c, 2, &t, Some(500));
    let again = c.upload_many(2, s, &[("a", &a), ("b", &b2), ("taken", &a)], false);
    assert_eq!(again, first, "answered as the first try's entry did");
    c.settle();
    let state = c.server(0).replica.state();
    let cat = state.catalogue();
    let held: Vec<(&str, [u8; 32])> = cat.all().map(|f| (f.name.as_str(), f.digest)).collect();
    assert_eq!(
        held,
        [
            ("a", digest(&a)),
            ("b", digest(&b)),
            ("taken", digest(&taken))
        ]
    );
}
