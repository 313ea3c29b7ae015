//! Copies of uploads: a put is "stored" only once a majority of disks hold
//! its content.

use super::user_files_tests::{content, names, stored, user};
use crate::refusal::{Refusal, PROTOCOL_VERSION};
use crate::server::messages::{OpCode, OpError};
use crate::server::{BlobMsg, ServerEvent, SessionMsg};
use crate::testkit::cluster::Cluster;
use std::time::Duration;

/// Where in the cluster's events server `ix` said `what` first.
fn first(c: &Cluster, ix: usize, what: impl Fn(&ServerEvent) -> bool) -> Option<usize> {
    c.events.iter().position(|(i, e)| *i == ix && what(e))
}

fn answered_upload(e: &ServerEvent) -> bool {
    matches!(
        e,
        ServerEvent::Answered {
            op: OpCode::Upload,
            ..
        }
    )
}

#[test]
fn a_put_is_answered_only_after_its_copy_is_durable_on_another_server() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    let a = user(&mut c, 1, "alice");
    let data = content(300_000, 1);
    let digest = *blake3::hash(&data).as_bytes();
    assert!(stored(&c.upload(1, a, "f", &data, false)));
    let copied = first(&c, 1, |e| matches!(e, ServerEvent::Copied { .. }));
    let answered = first(&c, 1, answered_upload);
    assert!(
        copied.is_some() && copied < answered,
        "the copy ({copied:?}) comes before the answer ({answered:?})"
    );
    let holders = (0..3).filter(|ix| c.disk(*ix).blob(&digest) == Some(&data[..]));
    assert!(holders.count() >= 2);
}

/// Copies server 0 made before it answered the upload, and in all.
fn copies_of_upload(c: &Cluster) -> (usize, usize) {
    let answered = first(c, 0, answered_upload).unwrap_or(usize::MAX);
    let copied = |events: &[(usize, ServerEvent)]| {
        (events.iter())
            .filter(|(i, e)| *i == 0 && matches!(e, ServerEvent::Copied { .. }))
            .count()
    };
    let before = copied(&c.events[..answered.min(c.events.len())]);
    (before, copied(&c.events))
}

#[test]
fn a_five_server_cluster_makes_two_copies_of_a_large_file_before_answering() {
    let mut c = Cluster::new(5);
    c.run_for(Duration::from_secs(1));
    let a = user(&mut c, 0, "alice");
    let data = content(super::copies::SMALL as usize + 50_000, 2);
    assert!(stored(&c.upload(0, a, "f", &data, false)));
    c.run_for(Duration::from_secs(2));
    // A majority, no more: the others fetch it once its entry is applied.
    assert_eq!(copies_of_upload(&c), (2, 2));
}

#[test]
fn a_small_file_is_copied_to_every_server_and_answered_once_a_majority_holds_it() {
    let mut c = Cluster::new(5);
    c.run_for(Duration::from_secs(1));
    let a = user(&mut c, 0, "alice");
    let data = content(50_000, 2);
    let dialed = c.connections_made();
    assert!(stored(&c.upload(0, a, "f", &data, false)));
    c.run_for(Duration::from_secs(2));
    let (before, all) = copies_of_upload(&c);
    assert!(before >= 2, "{before} copies before the answer");
    assert_eq!(all, 4, "every other server got a copy");
    // One link to each, and no fetch of it.
    assert_eq!(c.connections_made() - dialed, 4);
    let d = blake3::hash(&data);
    assert!((0..5).all(|ix| c.disk(ix).blob(d.as_bytes()).is_some()));
}

#[test]
fn a_copy_cut_short_is_made_again_from_the_blob_to_another_server() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    let a = user(&mut c, 0, "alice");
    let data = content(400_000, 3);
    let digest = *blake3::hash(&data).as_bytes();
    // The live copy goes to server 2 (the first of the others); it
    // crashes mid-upload.
    let mut answer = c.upload_then(0, a, "f", &data, false, |c| c.crash(1));
    if answer.is_empty() {
        // The copy made again waits a little after the failed one.
        c.run_for(Duration::from_secs(3));
        answer = c.received(0, a);
    }
    assert!(stored(&answer), "{answer:?}");
    let failed = first(&c, 0, |e| {
        matches!(e, ServerEvent::CopyFailed { to: 2, .. })
    });
    let copied = first(&c, 0, |e| matches!(e, ServerEvent::Copied { to: 3 }));
    let answered = first(&c, 0, answered_upload);
    assert!(failed.is_some(), "the copy to server 2 failed");
    assert!(
        copied.is_some() && copied < answered,
        "copied to server 3 first"
    );
    assert_eq!(c.disk(2).blob(&digest), Some(&data[..]));
}

#[test]
fn a_put_no_other_server_can_take_is_refused_in_time_and_names_nothing() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    let a = user(&mut c, 0, "alice");
    // Both other servers' disks are full: every file they write fails.
    for ix in 1..3 {
        c.disk_mut(ix).full.extend(1..1_000_000);
    }
    let data = content(100_000, 4);
    let answer = c.upload(0, a, "f", &data, false);
    assert!(!stored(&answer));
    c.run_for(Duration::from_secs(11));
    let got = c.received(0, a);
    assert!(
        matches!(&got[..], [SessionMsg::Failed(OpError::Unavailable { reason })] if reason.contains("majority")),
        "{answer:?} {got:?}"
    );
    assert!(names(&mut c, 0, a).is_empty(), "nothing was stored");
}

#[test]
fn a_copy_without_the_cluster_secret_is_refused() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    let push = BlobMsg::Push {
        version: PROTOCOL_VERSION,
        from: 2,
        nonce: [1; 16],
        mac: [0; 32],
    };
    let conn = c.open_raw(0, &push);
    let got: Vec<BlobMsg> = c.received_as(0, conn);
    assert_eq!(got, vec![BlobMsg::Refused(Refusal::BadCode)]);
}

#[test]
fn a_copy_that_stops_moving_does_not_hold_the_upload_back() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    let a = user(&mut c, 0, "alice");
    let data = content(4 << 20, 5);
    let digest = *blake3::hash(&data).as_bytes();
    // The live copy goes to server 2, which goes out of reach as the
    // upload starts: its copy stops moving, and the client's acks with it
    // for a while.
    let start = c.now;
    let mut answer = c.upload_then(0, a, "f", &data, false, |c| c.partition(0, 1));
    while answer.is_empty() && c.now.saturating_since(start) < Duration::from_secs(30) {
        c.run_for(Duration::from_millis(100));
        answer = c.received(0, a);
    }
    assert!(stored(&answer), "{answer:?}");
    let took = c.now.saturating_since(start);
    assert!(took < Duration::from_secs(4), "stored after {took:?}");
    let behind = first(
        &c,
        0,
        |e| matches!(e, ServerEvent::CopyFailed { to: 2, why } if why.contains("fell behind")),
    );
    assert!(behind.is_some(), "the copy to server 2 was dropped");
    assert_eq!(
        c.disk(2).blob(&digest),
        Some(&data[..]),
        "copied to server 3"
    );
}

#[test]
fn a_copy_landing_after_its_entry_is_applied_is_not_fetched_again_nor_kept_too_long() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    let a = user(&mut c, 0, "alice");
    // The copy links are up before the file that counts.
    assert!(stored(&c.upload(0, a, "warm", &content(1000, 4), false)));
    let data = content(30_000, 5);
    let digest = *blake3::hash(&data).as_bytes();
    let dialed = c.connections_made();
    // Server 2's disk lags: the entry naming the file is applied there
    // before its copy is on disk.
    c.hold_persists_of(2);
    assert!(stored(&c.upload(0, a, "f", &data, false)));
    c.run_for(Duration::from_millis(500));
    c.release_persists();
    c.run_for(Duration::from_secs(1));
    assert_eq!(c.disk(2).blob(&digest), Some(&data[..]));
    assert_eq!(
        c.connections_made(),
        dialed,
        "no fetch of content on its way"
    );
    // Replaced at once: the old content goes from every disk now, not
    // after the time an unnamed copy is kept.
    assert!(stored(&c.upload(0, a, "f", &content(30_000, 6), true)));
    c.run_for(Duration::from_secs(2));
    for ix in 0..3 {
        assert_eq!(c.disk(ix).blob(&digest), None, "server {ix} let it go");
    }
}
