//! Known histories: linearizable ones the checker must accept, and
//! non-linearizable ones it must refuse.

use super::catalogue::{Catalogue, Input, Output};
use super::{check, Op, Verdict};
use std::time::Duration;

const BUDGET: u64 = 100_000;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// An answered operation of `client` over `[invoke, ret]` (ms).
fn op(client: usize, invoke: u64, ret: u64, input: Input, output: Output) -> Op<Input, Output> {
    Op {
        client,
        invoke: ms(invoke),
        ret: Some(ms(ret)),
        input,
        output,
    }
}

/// An operation without an answer, sent at `invoke` (ms).
fn open(client: usize, invoke: u64, input: Input) -> Op<Input, Output> {
    Op {
        client,
        invoke: ms(invoke),
        ret: None,
        input,
        output: Output::Unknown,
    }
}

fn register(user: &str, pw: &str) -> Input {
    Input::Register {
        user: user.into(),
        password: pw.into(),
    }
}

fn login(user: &str, pw: &str) -> Input {
    Input::Login {
        user: user.into(),
        password: pw.into(),
    }
}

fn put(owner: &str, name: &str, size: u64) -> Input {
    Input::Put {
        owner: owner.into(),
        name: name.into(),
        size,
        digest: [size as u8; 32],
        replace: false,
        attrs: None,
    }
}

fn stored(size: u64) -> Output {
    Output::Stored {
        size,
        digest: [size as u8; 32],
    }
}

fn share(owner: &str, name: &str, grantee: &str) -> Input {
    Input::Share {
        owner: owner.into(),
        name: name.into(),
        grantee: grantee.into(),
    }
}

fn ls(user: &str) -> Input {
    Input::Ls { user: user.into() }
}

/// A listing of (owner, name, size, grantees).
fn listing(lines: &[(&str, &str, u64, &[&str])]) -> Output {
    let mut l: Vec<_> = lines
        .iter()
        .map(|(o, n, s, g)| {
            (
                o.to_string(),
                n.to_string(),
                *s,
                None,
                g.iter().map(|g| g.to_string()).collect(),
            )
        })
        .collect();
    l.sort();
    Output::Listing(l)
}

fn verdict(h: &[Op<Input, Output>]) -> Verdict {
    check(&Catalogue, h, BUDGET).0
}

fn assert_linearizable(h: &[Op<Input, Output>]) {
    assert_eq!(verdict(h), Verdict::Linearizable, "{h:#?}");
}

/// Asserts that `h` is refused; returns the explanation.
fn assert_refused(h: &[Op<Input, Output>]) -> String {
    match verdict(h) {
        Verdict::NotLinearizable(why) => why,
        other => panic!("{other:?} for {h:#?}"),
    }
}

#[test]
fn concurrent_registrations_linearize_in_either_order() {
    // Overlapping (client 0 over 0..10 ms, client 1 over 2..8 ms): either
    // may have gone first, so either may have won.
    for winner in [0, 1] {
        let pw = |c: usize| if c == 0 { "pw-a" } else { "pw-b" };
        let span = |c: usize| if c == 0 { (0, 10) } else { (2, 8) };
        let mut h = Vec::new();
        for c in [0, 1] {
            let (reg, log) = match c == winner {
                true => (Output::Registered(1), Output::LoggedIn(1)),
                false => (Output::Taken, Output::BadCredentials),
            };
            let (a, b) = span(c);
            h.push(op(c, a, b, register("alice", pw(c)), reg));
            h.push(op(c, 12, 14, login("alice", pw(c)), log));
        }
        assert_linearizable(&h);
    }
}

#[test]
fn a_timed_out_registration_may_have_taken_effect() {
    // No answer; a retry is told "taken" by its own first try; its
    // password works.
    let h = [
        open(0, 0, register("alice", "pw-a")),
        op(0, 700, 720, register("alice", "pw-a"), Output::Taken),
        op(0, 730, 750, login("alice", "pw-a"), Output::LoggedIn(3)),
    ];
    assert_linearizable(&h);
}

#[test]
fn a_timed_out_registration_may_not_have_taken_effect() {
    let h = [
        open(0, 0, register("alice", "pw-a")),
        op(
            1,
            500,
            520,
            register("alice", "pw-b"),
            Output::Registered(1),
        ),
        op(1, 530, 550, login("alice", "pw-b"), Output::LoggedIn(1)),
        op(0, 600, 610, login("alice", "pw-a"), Output::BadCredentials),
    ];
    assert_linearizable(&h);
}

#[test]
fn an_unanswered_write_takes_effect_only_after_it_was_sent() {
    // The ls at 0..10 cannot see a put sent at 20.
    let h = [
        op(1, 0, 10, ls("bob"), listing(&[("bob", "f", 3, &[])])),
        open(0, 20, put("bob", "f", 3)),
    ];
    assert_refused(&h);
    // A later ls may see it; once seen, it stays (nothing removes it).
    let h = [
        open(0, 0, put("bob", "f", 3)),
        op(1, 10, 20, ls("bob"), listing(&[("bob", "f", 3, &[])])),
        op(1, 30, 40, ls("bob"), listing(&[])),
    ];
    assert_refused(&h);
    let h = [
        open(0, 0, put("bob", "f", 3)),
        op(1, 10, 20, ls("bob"), listing(&[])),
        op(1, 30, 40, ls("bob"), listing(&[("bob", "f", 3, &[])])),
    ];
    assert_linearizable(&h);
}

#[test]
fn a_stale_read_after_an_acknowledged_write_is_caught() {
    let h = [
        op(0, 0, 10, put("bob", "f", 3), stored(3)),
        op(1, 20, 30, ls("bob"), listing(&[])),
    ];
    let why = assert_refused(&h);
    assert!(why.contains("bob: ls"), "{why}");
    assert!(why.contains("bob: put \"f\""), "{why}");
    // Overlapping the put, the same listing is fine.
    let h = [
        op(0, 0, 10, put("bob", "f", 3), stored(3)),
        op(1, 5, 30, ls("bob"), listing(&[])),
    ];
    assert_linearizable(&h);
}

#[test]
fn a_lost_acknowledged_registration_is_caught() {
    let h = [
        op(0, 0, 10, register("alice", "pw-a"), Output::Registered(1)),
        op(1, 20, 30, login("alice", "pw-a"), Output::BadCredentials),
    ];
    assert_refused(&h);
    // Nor may a login say another user id.
    let h = [
        op(0, 0, 10, register("alice", "pw-a"), Output::Registered(1)),
        op(1, 20, 30, login("alice", "pw-a"), Output::LoggedIn(2)),
    ];
    assert_refused(&h);
}

#[test]
fn two_acknowledged_registrations_of_one_name_are_caught() {
    // Sequential or concurrent: only one may win.
    for (a, b) in [((0, 10), (20, 30)), ((0, 30), (5, 25))] {
        let h = [
            op(
                0,
                a.0,
                a.1,
                register("alice", "pw-a"),
                Output::Registered(1),
            ),
            op(
                1,
                b.0,
                b.1,
                register("alice", "pw-b"),
                Output::Registered(2),
            ),
        ];
        assert_refused(&h);
    }
}

#[test]
fn a_listing_missing_an_acknowledged_upload_is_caught() {
    let h = [
        op(0, 0, 10, put("bob", "a", 1), stored(1)),
        op(0, 20, 30, put("bob", "b", 2), stored(2)),
        op(1, 25, 40, ls("bob"), listing(&[("bob", "a", 1, &[])])),
    ];
    // "b" might not be in yet: the ls overlaps its put.
    assert_linearizable(&h);
    let h = [
        op(0, 0, 10, put("bob", "a", 1), stored(1)),
        op(0, 20, 30, put("bob", "b", 2), stored(2)),
        op(1, 35, 40, ls("bob"), listing(&[("bob", "a", 1, &[])])),
    ];
    assert_refused(&h);
}

#[test]
fn shares_show_in_the_grantees_listing_and_link_the_parts() {
    let h = [
        op(0, 0, 5, register("bob", "pw-b"), Output::Registered(1)),
        op(1, 0, 5, register("carol", "pw-c"), Output::Registered(2)),
        op(0, 10, 20, put("bob", "f", 3), stored(3)),
        op(0, 30, 40, share("bob", "f", "carol"), Output::Shared),
        op(1, 50, 60, ls("carol"), listing(&[("bob", "f", 3, &[])])),
        op(
            0,
            50,
            60,
            ls("bob"),
            listing(&[("bob", "f", 3, &["carol"])]),
        ),
        // An unrelated user: a part of its own.
        op(2, 0, 5, register("dave", "pw-d"), Output::Registered(3)),
    ];
    let (v, stats) = check(&Catalogue, &h, BUDGET);
    assert_eq!(v, Verdict::Linearizable);
    assert_eq!(stats.parts, 2);
    // Carol's listing without the share, after it was acknowledged.
    let mut stale = h.to_vec();
    stale[4].output = listing(&[]);
    assert_refused(&stale);
    // Sharing with a user before they registered: "no such user" only
    // then.
    let h = [
        op(0, 0, 10, put("bob", "f", 3), stored(3)),
        op(0, 20, 30, share("bob", "f", "carol"), Output::NoSuchUser),
        op(1, 40, 50, register("carol", "pw-c"), Output::Registered(2)),
        op(0, 60, 70, share("bob", "f", "carol"), Output::NoSuchUser),
    ];
    assert_refused(&h);
    assert_linearizable(&h[..3]);
}

#[test]
fn an_unanswered_share_may_or_may_not_show() {
    let base = [
        op(0, 0, 10, register("carol", "pw-c"), Output::Registered(2)),
        op(1, 0, 10, put("bob", "f", 3), stored(3)),
        open(1, 20, share("bob", "f", "carol")),
    ];
    for seen in [listing(&[]), listing(&[("bob", "f", 3, &[])])] {
        let mut h = base.to_vec();
        h.push(op(0, 30, 40, ls("carol"), seen));
        assert_linearizable(&h);
    }
}

#[test]
fn the_search_gives_up_past_its_budget() {
    // Many concurrent puts of one name without replace, all "stored": the
    // search tries every order before it can say no.
    let mut h: Vec<_> = (0..12)
        .map(|i| op(i, 0, 100, put("bob", "f", i as u64), stored(i as u64)))
        .collect();
    h.push(op(99, 200, 210, ls("bob"), listing(&[])));
    let (v, stats) = check(&Catalogue, &h, 50);
    assert_eq!(v, Verdict::Unknown);
    assert_eq!(stats.over_budget, 1);
    // With enough budget, the memo makes it quick and the answer is no.
    assert!(matches!(
        check(&Catalogue, &h, BUDGET).0,
        Verdict::NotLinearizable(_)
    ));
}

#[test]
fn the_smallest_failing_part_is_reported() {
    let mut h: Vec<_> = (0..6)
        .map(|i| {
            op(
                0,
                i * 10,
                i * 10 + 5,
                put("bob", &format!("f{i}"), 1),
                stored(1),
            )
        })
        .collect();
    h.push(op(0, 100, 110, ls("bob"), listing(&[])));
    h.push(op(
        1,
        0,
        10,
        register("alice", "pw-a"),
        Output::Registered(1),
    ));
    h.push(op(
        2,
        20,
        30,
        register("alice", "pw-b"),
        Output::Registered(2),
    ));
    let why = assert_refused(&h);
    assert!(why.contains("2 operation(s)"), "{why}");
    assert!(why.contains("register alice"), "{why}");
}

#[test]
fn a_folder_share_shows_files_put_under_it_later_and_goes_with_rm_r() {
    let rm_r = |name: &str| Input::RmFolder {
        owner: "bob".into(),
        name: name.into(),
    };
    let h = [
        op(0, 0, 5, register("bob", "pw-b"), Output::Registered(1)),
        op(1, 0, 5, register("carol", "pw-c"), Output::Registered(2)),
        op(0, 10, 20, put("bob", "d/a", 3), stored(3)),
        op(0, 30, 40, share("bob", "d", "carol"), Output::Shared),
        op(0, 50, 60, put("bob", "d/e/b", 4), stored(4)),
        op(
            1,
            70,
            80,
            ls("carol"),
            listing(&[("bob", "d/a", 3, &[]), ("bob", "d/e/b", 4, &[])]),
        ),
        // A file cannot be where the folder is.
        op(0, 90, 95, put("bob", "d", 5), Output::Conflict),
        op(0, 100, 110, rm_r("d"), Output::FolderDeleted),
        op(1, 120, 130, ls("carol"), listing(&[])),
        op(0, 140, 150, put("bob", "d/c", 6), stored(6)),
        // The share went with the folder.
        op(1, 160, 170, ls("carol"), listing(&[])),
    ];
    assert_linearizable(&h);
    // Carol not seeing the file put after the share is caught.
    let mut missing = h.to_vec();
    missing[5].output = listing(&[("bob", "d/a", 3, &[])]);
    assert_refused(&missing);
    // Nor may the folder share outlive rm -r.
    let mut kept = h.to_vec();
    kept[10].output = listing(&[("bob", "d/c", 6, &[])]);
    assert_refused(&kept);
    // A clash where there was none is caught.
    let mut clash = h.to_vec();
    clash[4].output = Output::Conflict;
    assert_refused(&clash);
}

fn delete_account(user: &str) -> Input {
    Input::DeleteAccount { user: user.into() }
}

#[test]
fn a_deleted_account_takes_its_shares_with_it() {
    let before = [
        op(0, 0, 1, register("alice", "pw-a"), Output::Registered(1)),
        op(1, 2, 3, register("bob", "pw-b"), Output::Registered(2)),
        op(0, 4, 5, put("alice", "notes", 14), stored(14)),
        op(1, 4, 5, put("bob", "x", 3), stored(3)),
        op(0, 6, 7, share("alice", "notes", "bob"), Output::Shared),
        op(0, 8, 9, delete_account("alice"), Output::AccountDeleted),
    ];
    // bob's listing after the deletion is empty...
    let mut h = before.to_vec();
    h.push(op(1, 10, 11, ls("bob"), listing(&[("bob", "x", 3, &[])])));
    assert_linearizable(&h);
    // ...never still alice's file, nor may she be shared with any more.
    let mut h = before.to_vec();
    let stale = [("alice", "notes", 14, &[][..]), ("bob", "x", 3, &[])];
    h.push(op(1, 10, 11, ls("bob"), listing(&stale)));
    assert_refused(&h);
    let mut h = before.to_vec();
    h.push(op(1, 10, 11, share("bob", "x", "alice"), Output::Shared));
    assert_refused(&h);
    let mut h = before.to_vec();
    h.push(op(
        1,
        10,
        11,
        share("bob", "x", "alice"),
        Output::NoSuchUser,
    ));
    assert_linearizable(&h);
    // The account is gone: a second deletion cannot say it deleted it.
    let mut h = before.to_vec();
    h.push(op(
        0,
        10,
        11,
        delete_account("alice"),
        Output::AccountDeleted,
    ));
    assert_refused(&h);
}

/// The files of a batch that reached the log: (name, size), digests as
/// [`put`]'s.
fn put_many(owner: &str, files: &[(&str, u64)], replace: bool) -> Input {
    Input::PutMany {
        owner: owner.into(),
        files: (files.iter())
            .map(|(n, s)| (n.to_string(), *s, [*s as u8; 32]))
            .collect(),
        replace,
    }
}

#[test]
fn a_batch_takes_effect_at_one_point_file_by_file() {
    let base = [
        op(0, 0, 10, put("bob", "a", 1), stored(1)),
        // "a" exists: told so in the batch; "b" stored with it.
        op(
            0,
            20,
            30,
            put_many("bob", &[("a", 2), ("b", 3)], false),
            Output::Batch(vec![Output::Exists, stored(3)]),
        ),
    ];
    let mut h = base.to_vec();
    h.push(op(
        1,
        40,
        50,
        ls("bob"),
        listing(&[("bob", "a", 1, &[]), ("bob", "b", 3, &[])]),
    ));
    assert_linearizable(&h);
    // A listing after the answer without the batch's stored file.
    let mut lost = base.to_vec();
    lost.push(op(1, 40, 50, ls("bob"), listing(&[("bob", "a", 1, &[])])));
    assert!(assert_refused(&lost).contains("bob: ls"));
    // A listing that saw one file of the batch and not the other: the
    // files are one entry, never half applied.
    let half = [
        op(
            0,
            0,
            30,
            put_many("bob", &[("a", 2), ("b", 3)], false),
            Output::Batch(vec![stored(2), stored(3)]),
        ),
        op(1, 10, 20, ls("bob"), listing(&[("bob", "a", 2, &[])])),
    ];
    assert_refused(&half);
    // "exists" for a file that could not exist, and a stored file whose
    // name was taken without --force.
    let exists = [op(
        0,
        0,
        10,
        put_many("bob", &[("a", 2)], false),
        Output::Batch(vec![Output::Exists]),
    )];
    assert_refused(&exists);
    let taken = [
        op(0, 0, 10, put("bob", "a", 1), stored(1)),
        op(
            0,
            20,
            30,
            put_many("bob", &[("a", 2)], false),
            Output::Batch(vec![stored(2)]),
        ),
    ];
    assert_refused(&taken);
    // A batch whose outcomes are not one per file.
    let short = [op(
        0,
        0,
        10,
        put_many("bob", &[("a", 2), ("b", 3)], false),
        Output::Batch(vec![stored(2)]),
    )];
    assert_refused(&short);
}

#[test]
fn many_unanswered_uploads_do_not_exhaust_the_search() {
    // Twenty files of unanswered batches, each maybe stored, then listings
    // that saw none of them: the search tries the answered operations
    // before the optional ones, instead of most subsets of these first.
    let mut h: Vec<_> = (0..20)
        .map(|i| open(0, i, put("bob", &format!("f{i}"), 1)))
        .collect();
    for i in 0..10 {
        h.push(op(1, 100 + 10 * i, 105 + 10 * i, ls("bob"), listing(&[])));
    }
    let (v, stats) = check(&Catalogue, &h, 1_000);
    assert_eq!(v, Verdict::Linearizable);
    assert!(stats.steps <= 100, "{stats:?}");
    // One of them seen by the last listing: taken when needed. (Worst
    // case, one seen far down the list, it is still a search of subsets:
    // the budget bounds it, and counts it over budget.)
    let last = h.len() - 1;
    h[last].output = listing(&[("bob", "f0", 1, &[])]);
    assert_eq!(check(&Catalogue, &h, 1_000).0, Verdict::Linearizable);
}
