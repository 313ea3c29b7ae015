//! Resuming uploads through an in-memory cluster: what a server keeps of
//! an upload cut off (`partials`), the same upload tried again resuming
//! from it, and every way the kept part goes.

use super::partials::PartialKey;
use super::user_files_tests::{content, login_token, proven_session, stored};
use crate::server::{Request, ServerConfig, ServerEvent, SessionMsg};
use crate::testkit::cluster::Cluster;
use crate::transfer::messages::resume_point;
use std::time::Duration;

const MIB: usize = 1 << 20;

/// A cluster of `servers` (configured by `tweak`) and a session of
/// alice's on server 1.
fn alice_on(
    servers: usize,
    tweak: fn(&mut ServerConfig),
) -> (Cluster, crate::accounts::token::SessionToken) {
    let mut c = Cluster::new_with(servers, tweak);
    c.run_for(Duration::from_secs(1));
    let token = login_token(&mut c, "alice");
    (c, token)
}

/// Bytes server `ix` keeps of partial uploads, and how many.
fn kept(c: &Cluster, ix: usize) -> (u64, usize) {
    let p = c.server(ix).files.partials();
    (p.bytes(), p.len())
}

/// Temporary files on server `ix`'s disk.
fn temps(c: &Cluster, ix: usize) -> usize {
    c.disk(ix).temps.len()
}

fn digest(b: &[u8]) -> [u8; 32] {
    *blake3::hash(b).as_bytes()
}

fn dropped(c: &Cluster, ix: usize) -> Vec<&'static str> {
    (c.events.iter())
        .filter(|(i, _)| *i == ix)
        .filter_map(|(_, e)| match e {
            ServerEvent::PartialDropped { why, .. } => Some(*why),
            _ => None,
        })
        .collect()
}

#[test]
fn an_upload_cut_at_sixty_percent_resumes_where_the_server_kept_it() {
    let (mut c, alice) = alice_on(3, |_| {});
    let data = content(3 * MIB + 1234, 1);
    let cut = (data.len() * 6 / 10) as u64;
    let s = proven_session(&mut c, 0, &alice, None);
    let first = c.upload_seen(0, s, "big.bin", &data, false, Some(cut));
    assert!(first.answers.is_empty(), "{:?}", first.answers);
    c.run_for(Duration::from_millis(200));
    let (bytes, n) = kept(&c, 0);
    assert_eq!(n, 1, "the cut upload is kept");
    assert!(bytes >= cut, "{bytes} kept, {cut} acknowledged");
    assert_eq!(temps(&c, 0), 1);

    let s = proven_session(&mut c, 0, &alice, None);
    let again = c.upload_seen(0, s, "big.bin", &data, false, None);
    assert!(stored(&again.answers), "{:?}", again.answers);
    let from = again.resumed.expect("the upload resumed");
    assert_eq!(from, resume_point(bytes, data.len() as u64));
    assert!(
        from >= cut - crate::transfer::BLOCK_BYTES,
        "resumed at {from}"
    );
    assert_eq!(again.started_over, None);
    assert!(c
        .events
        .iter()
        .any(|(ix, e)| *ix == 0 && *e == ServerEvent::UploadResumed { conn: s, from }));
    // The right content is stored, and copied to the others from the blob
    // (the copies could not stream what this server alone held).
    c.run_for(Duration::from_secs(2));
    let d = digest(&data);
    for ix in 0..3 {
        assert_eq!(c.disk(ix).blob(&d), Some(&data[..]), "server {}", ix + 1);
    }
    let on_2 = proven_session(&mut c, 1, &alice, None);
    let got = c.download(1, on_2, None, "big.bin");
    assert_eq!(got.as_deref(), Ok(&data[..]));
    // Nothing kept, nothing left over.
    assert_eq!(kept(&c, 0), (0, 0));
    assert_eq!(temps(&c, 0), 0);
}

#[test]
fn a_changed_source_of_the_same_name_and_size_starts_over() {
    let (mut c, alice) = alice_on(1, |_| {});
    let old = content(2 * MIB, 2);
    let new = content(2 * MIB, 3);
    let s = proven_session(&mut c, 0, &alice, None);
    c.upload_seen(0, s, "f", &old, false, Some(MIB as u64));
    c.run_for(Duration::from_millis(200));
    assert_eq!(kept(&c, 0).1, 1);
    let s = proven_session(&mut c, 0, &alice, None);
    let again = c.upload_seen(0, s, "f", &new, false, None);
    assert!(stored(&again.answers), "{:?}", again.answers);
    assert_eq!(again.resumed, None);
    assert!(again.started_over.is_some());
    let d = digest(&new);
    assert_eq!(c.disk(0).blob(&d), Some(&new[..]));
    assert!(c.disk(0).blob(&digest(&old)).is_none());
    assert_eq!(kept(&c, 0), (0, 0));
    assert_eq!(temps(&c, 0), 0);
}

#[test]
fn a_kept_part_damaged_on_disk_is_caught_and_the_upload_starts_over() {
    let (mut c, alice) = alice_on(1, |_| {});
    let data = content(2 * MIB, 4);
    let s = proven_session(&mut c, 0, &alice, None);
    c.upload_seen(0, s, "f", &data, false, Some(MIB as u64 + 5000));
    c.run_for(Duration::from_millis(200));
    // The disk damages what was kept, well inside the part resumed from.
    let disk = c.disk_mut(0);
    let temp = disk.temps.values_mut().next().expect("the kept file");
    temp[70_000] ^= 0x10;
    let s = proven_session(&mut c, 0, &alice, None);
    let again = c.upload_seen(0, s, "f", &data, false, None);
    assert!(stored(&again.answers), "{:?}", again.answers);
    assert!(again.started_over.is_some(), "{again:?}");
    assert_eq!(c.disk(0).blob(&digest(&data)), Some(&data[..]));
    assert!(c.disk(0).anomalies.is_empty(), "{:?}", c.disk(0).anomalies);
}

#[test]
fn another_name_or_size_does_not_resume_and_a_completed_upload_drops_what_was_kept() {
    let (mut c, alice) = alice_on(1, |_| {});
    let data = content(2 * MIB, 5);
    let s = proven_session(&mut c, 0, &alice, None);
    c.upload_seen(0, s, "f", &data, false, Some(MIB as u64));
    c.run_for(Duration::from_millis(200));
    let s = proven_session(&mut c, 0, &alice, None);
    let other = c.upload_seen(0, s, "g", &data, false, None);
    assert!(stored(&other.answers));
    assert_eq!(other.resumed, None);
    assert_eq!(kept(&c, 0).1, 1, "f's part is still kept");
    // f, stored at another size: f's part is of no more use.
    let s = proven_session(&mut c, 0, &alice, None);
    let smaller = content(MIB, 6);
    let f = c.upload_seen(0, s, "f", &smaller, false, None);
    assert!(stored(&f.answers));
    assert_eq!(f.resumed, None);
    assert_eq!(kept(&c, 0), (0, 0));
    assert_eq!(temps(&c, 0), 0);
    assert_eq!(dropped(&c, 0), ["an upload of that name completed"]);
}

#[test]
fn a_part_kept_expires_after_partial_keep() {
    let (mut c, alice) = alice_on(1, |cfg| cfg.partial_keep = Duration::from_secs(30));
    let data = content(MIB, 7);
    let s = proven_session(&mut c, 0, &alice, None);
    c.upload_seen(0, s, "f", &data, false, Some(600_000));
    c.run_for(Duration::from_secs(29));
    assert_eq!(kept(&c, 0).1, 1);
    c.run_for(Duration::from_secs(2));
    assert_eq!(kept(&c, 0), (0, 0));
    assert_eq!(temps(&c, 0), 0);
    assert_eq!(dropped(&c, 0), ["it expired"]);
    // And the upload then starts over, and stores.
    let s = proven_session(&mut c, 0, &alice, None);
    let again = c.upload_seen(0, s, "f", &data, false, None);
    assert!(stored(&again.answers));
    assert_eq!(again.resumed, None);
}

#[test]
fn the_bound_on_space_drops_the_oldest_parts_first() {
    // Parts of 1 to 1.25 MiB (cut at 1 MiB, a window of 128 KiB on its
    // way): room for two, per user and in all.
    let (mut c, alice) = alice_on(1, |cfg| {
        cfg.partial_user_bytes = 2 * MIB as u64 + 600_000;
        cfg.partial_bytes = 3 * MIB as u64 - 100_000;
    });
    let bob = login_token(&mut c, "bob");
    let data = content(2 * MIB, 8);
    let cut = |c: &mut Cluster, who, name: &str| {
        let s = proven_session(c, 0, who, None);
        c.upload_seen(0, s, name, &data, false, Some(MIB as u64));
        c.run_for(Duration::from_millis(100));
    };
    cut(&mut c, &alice, "a1");
    cut(&mut c, &alice, "a2");
    assert_eq!(kept(&c, 0).1, 2);
    cut(&mut c, &alice, "a3");
    // alice's oldest went for her own third.
    let key = |name: &str, user| PartialKey {
        user,
        name: name.into(),
        size: data.len() as u64,
    };
    let p = |c: &Cluster, name: &str, user| {
        c.server(0).files.partials().get(&key(name, user)).is_some()
    };
    assert!(
        !p(&c, "a1", alice.user_id) && p(&c, "a2", alice.user_id) && p(&c, "a3", alice.user_id)
    );
    // bob's part takes the server past its bound: the oldest of all goes.
    cut(&mut c, &bob, "b1");
    assert!(!p(&c, "a2", alice.user_id) && p(&c, "a3", alice.user_id) && p(&c, "b1", bob.user_id));
    assert_eq!(temps(&c, 0), 2);
    assert_eq!(
        dropped(&c, 0),
        [
            "the user's partial uploads took more than allowed",
            "the server's partial uploads took more than allowed"
        ]
    );
}

#[test]
fn a_deleted_account_leaves_no_part_kept() {
    let (mut c, alice) = alice_on(1, |_| {});
    let data = content(MIB, 9);
    let s = proven_session(&mut c, 0, &alice, None);
    c.upload_seen(0, s, "f", &data, false, Some(600_000));
    c.run_for(Duration::from_millis(100));
    assert_eq!(kept(&c, 0).1, 1);
    let s = c.open_session(0);
    let req = Request::DeleteAccount {
        token: alice.clone(),
        password: "password-123".into(),
    };
    assert_eq!(c.request(0, s, &req), [SessionMsg::LoggedOut]);
    c.run_for(Duration::from_millis(300));
    assert_eq!(kept(&c, 0), (0, 0));
    assert_eq!(temps(&c, 0), 0);
    assert_eq!(dropped(&c, 0), ["its user is gone"]);
}

#[test]
fn a_restarted_server_keeps_no_part_and_the_upload_starts_over() {
    let (mut c, alice) = alice_on(3, |_| {});
    let data = content(MIB, 10);
    let s = proven_session(&mut c, 1, &alice, None);
    c.upload_seen(1, s, "f", &data, false, Some(600_000));
    c.run_for(Duration::from_millis(100));
    assert_eq!(kept(&c, 1).1, 1);
    c.crash(1);
    c.restart(1);
    c.run_for(Duration::from_secs(3));
    assert_eq!(temps(&c, 1), 0);
    assert_eq!(kept(&c, 1), (0, 0));
    let s = proven_session(&mut c, 1, &alice, None);
    let again = c.upload_seen(1, s, "f", &data, false, None);
    assert!(stored(&again.answers), "{:?}", again.answers);
    assert_eq!(again.resumed, None);
}

#[test]
fn an_upload_cut_twice_resumes_twice() {
    let (mut c, alice) = alice_on(1, |_| {});
    let data = content(3 * MIB, 11);
    let s = proven_session(&mut c, 0, &alice, None);
    c.upload_seen(0, s, "f", &data, false, Some(MIB as u64));
    let s = proven_session(&mut c, 0, &alice, None);
    let second = c.upload_seen(0, s, "f", &data, false, Some(2 * MIB as u64));
    assert!(second.resumed.is_some());
    let s = proven_session(&mut c, 0, &alice, None);
    let third = c.upload_seen(0, s, "f", &data, false, None);
    assert!(stored(&third.answers));
    assert!(third
        .resumed
        .is_some_and(|from| from >= MIB as u64 * 2 - 131_072));
    assert_eq!(c.disk(0).blob(&digest(&data)), Some(&data[..]));
    assert_eq!(temps(&c, 0), 0);
}

#[test]
fn a_client_gone_silent_is_kept_once_the_transfer_times_out() {
    let (mut c, alice) = alice_on(1, |_| {});
    let data = content(2 * MIB, 12);
    let s = proven_session(&mut c, 0, &alice, None);
    c.upload_silenced(0, s, "f", &data, MIB as u64);
    assert_eq!(kept(&c, 0).1, 0, "still going");
    c.run_for(Duration::from_secs(11));
    assert_eq!(kept(&c, 0).1, 1, "kept once the transfer timed out");
    // The session is still there (idle); a new one resumes.
    let s2 = proven_session(&mut c, 0, &alice, None);
    let again = c.upload_seen(0, s2, "f", &data, false, None);
    assert!(stored(&again.answers), "{:?}", again.answers);
    assert!(again.resumed.is_some());
    assert_eq!(temps(&c, 0), 0);
}

#[test]
fn a_resumed_upload_waits_for_its_copies_from_the_blob_as_long_as_they_move() {
    let (mut c, alice) = alice_on(3, |_| {});
    let data = content(3 * MIB, 13);
    let s = proven_session(&mut c, 0, &alice, None);
    c.upload_seen(0, s, "f", &data, false, Some(MIB as u64));
    c.run_for(Duration::from_millis(200));
    // Every read now takes 1.5 s: the copy made from the blob after the
    // resumed upload (24 blocks) takes far longer than a request timeout.
    c.set_read_delay(Some(Duration::from_millis(1500)));
    let started = c.now;
    let s = proven_session(&mut c, 0, &alice, None);
    let again = c.upload_seen(0, s, "f", &data, false, None);
    let took = c.now.saturating_since(started);
    c.set_read_delay(None);
    assert!(stored(&again.answers), "{:?}", again.answers);
    assert!(again.resumed.is_some());
    assert!(took > Duration::from_secs(12), "took {took:?}");
    assert!(again.told_copying >= 5, "told {} times", again.told_copying);
    let d = digest(&data);
    let holders = (0..3).filter(|&ix| c.disk(ix).blob(&d) == Some(&data[..]));
    assert!(holders.count() >= 2, "on a majority when answered");
}

#[test]
fn a_kept_part_gone_from_disk_starts_over() {
    let (mut c, alice) = alice_on(1, |_| {});
    let data = content(2 * MIB, 14);
    let s = proven_session(&mut c, 0, &alice, None);
    c.upload_seen(0, s, "f", &data, false, Some(MIB as u64));
    c.run_for(Duration::from_millis(200));
    assert_eq!(kept(&c, 0).1, 1);
    c.disk_mut(0).temps.clear();
    let s = proven_session(&mut c, 0, &alice, None);
    let again = c.upload_seen(0, s, "f", &data, false, None);
    assert!(stored(&again.answers), "{again:?}");
    assert_eq!(again.resumed, None);
    assert_eq!(c.disk(0).blob(&digest(&data)), Some(&data[..]));
}

#[test]
fn an_upload_given_up_on_while_its_blob_lands_is_not_kept() {
    let (mut c, alice) = alice_on(1, |_| {});
    let data = content(MIB, 15);
    // The blob's persist takes long: the client gives up waiting for its
    // DONE ACK and aborts, as it does after 10 s.
    let s = proven_session(&mut c, 0, &alice, None);
    c.hold_persists();
    let seen = c.upload_seen(0, s, "f", &data, false, None);
    assert!(seen.answers.is_empty(), "{:?}", seen.answers);
    assert_eq!(
        seen.sent,
        Some(Err(crate::transfer::TransferError::Timeout)),
        "{seen:?}"
    );
    c.release_persists();
    c.run_for(Duration::from_secs(2));
    assert_eq!(kept(&c, 0), (0, 0), "a landing blob is no part to keep");
    assert_eq!(temps(&c, 0), 0);
    assert!(c.disk(0).blobs.is_empty(), "nothing names it: collected");
}
