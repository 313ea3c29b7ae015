//! Batches of downloads (`DownloadMany`): many files, one operation.

use super::user_files_tests::{content, user};
use crate::client::FILES_IN_FLIGHT;
use crate::server::messages::{Landed, OpError, Request};
use crate::server::SessionMsg;
use crate::testkit::cluster::Cluster;
use crate::transfer::TransferMsg;
use std::time::Duration;

fn outcomes(answer: &[SessionMsg]) -> Vec<Landed> {
    match answer {
        [SessionMsg::SentAll { outcomes }] => outcomes.clone(),
        other => panic!("not a batch of downloads' answer: {other:?}"),
    }
}

fn digest(data: &[u8]) -> [u8; 32] {
    *blake3::hash(data).as_bytes()
}

#[test]
fn a_batch_of_downloads_brings_each_file_whole_and_refuses_the_others_alone() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    let a = user(&mut c, 0, "alice");
    let b = user(&mut c, 1, "bob");
    // Sizes around the chunk, the window and the batch's room in flight.
    let sizes = [0, 1, 4095, 4096, 4097, 300_000, 9_000_000, 7];
    let files: Vec<(String, Vec<u8>)> = (sizes.iter().enumerate())
        .map(|(i, n)| (format!("d/f{i}"), content(*n, i as u64 + 40)))
        .collect();
    let offered: Vec<(&str, &[u8])> = (files.iter())
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    let stored = c.upload_many(0, a, &offered, false);
    assert!(
        matches!(&stored[..], [SessionMsg::BatchDone { .. }]),
        "{stored:?}"
    );
    let secret = content(500, 99);
    assert!(!c.upload(1, b, "secret", &secret, false).is_empty());
    c.run_for(Duration::from_secs(2));
    // Asked through another server: alice's files, one missing, and bob's
    // file that is not shared with her.
    let a1 = user(&mut c, 1, "alice");
    let mut asked: Vec<(Option<&str>, &str)> =
        files.iter().map(|(n, _)| (None, n.as_str())).collect();
    asked.insert(3, (None, "d/missing"));
    asked.push((Some("bob"), "secret"));
    let (got, answer) = c.download_many(1, a1, &asked);
    let outcomes = outcomes(&answer);
    assert_eq!(outcomes.len(), asked.len());
    for (i, (name, data)) in files.iter().enumerate() {
        let id = if i < 3 { i } else { i + 1 };
        let want = Landed::Stored {
            size: data.len() as u64,
            digest: digest(data),
        };
        assert_eq!(outcomes[id], want, "{name}");
        let arrived = got.get(&(id as u64)).cloned().unwrap_or_default();
        assert!(arrived == *data, "{name} arrived whole");
    }
    assert_eq!(outcomes[3], Landed::Failed(OpError::NoSuchFile));
    assert_eq!(
        outcomes[asked.len() - 1],
        Landed::Failed(OpError::NoSuchFile)
    );
    assert!(!got.contains_key(&3), "nothing sent for a refused file");
}

#[test]
fn the_files_of_a_batch_are_offered_together_within_its_bound() {
    let mut c = Cluster::new(1);
    c.run_for(Duration::from_secs(1));
    let a = user(&mut c, 0, "alice");
    let files: Vec<(String, Vec<u8>)> = (0..FILES_IN_FLIGHT + 30)
        .map(|i| (format!("f{i}"), content(1000, i as u64)))
        .collect();
    for chunk in files.chunks(50) {
        let offered: Vec<(&str, &[u8])> = (chunk.iter())
            .map(|(n, d)| (n.as_str(), d.as_slice()))
            .collect();
        c.upload_many(0, a, &offered, false);
    }
    let req = Request::DownloadMany {
        files: files.iter().map(|(n, _)| (None, n.clone())).collect(),
    };
    // One round trip after the request: as many offers as the bound lets
    // go, not one file at a time.
    let first = c.request(0, a, &req);
    let offers = (first.iter())
        .filter(|m| matches!(m, SessionMsg::Transfer(TransferMsg::Offer { .. })))
        .count();
    assert_eq!(offers, FILES_IN_FLIGHT, "{first:?}");
}

#[test]
fn a_batch_of_downloads_past_its_bound_or_empty_is_refused() {
    let mut c = Cluster::new(1);
    c.run_for(Duration::from_secs(1));
    for n in [0, crate::replication::entry::BATCH_FILES + 1] {
        let a = user(&mut c, 0, &format!("user{n}"));
        let req = Request::DownloadMany {
            files: (0..n).map(|i| (None, format!("f{i}"))).collect(),
        };
        let got = c.request(0, a, &req);
        assert!(
            matches!(&got[..], [SessionMsg::Refused(_)]),
            "{n} files: {got:?}"
        );
    }
}

#[test]
fn a_file_of_the_batch_whose_content_no_server_can_send_fails_alone() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    let a = user(&mut c, 0, "alice");
    let near = content(3000, 1);
    let far = content(2_000_000, 2);
    let offered: Vec<(&str, &[u8])> = vec![("near", &near), ("far", &far)];
    c.upload_many(0, a, &offered, false);
    c.run_for(Duration::from_secs(3));
    // Servers 0 and 2 come back without far's content, and server 1, the
    // only one left holding it, is down.
    c.crash(1);
    for ix in [0, 2] {
        c.crash(ix);
        c.disk_mut(ix).blobs.remove(&digest(&far));
        c.restart(ix);
    }
    c.run_for(Duration::from_secs(2));
    let a2 = user(&mut c, 2, "alice");
    let (got, answer) = c.download_many(2, a2, &[(None, "far"), (None, "near")]);
    let outcomes = outcomes(&answer);
    assert!(
        matches!(&outcomes[0], Landed::Failed(OpError::Unavailable { reason })
            if reason.contains("no server holding it sent it within 10 s")),
        "{outcomes:?}"
    );
    assert_eq!(got.get(&1), Some(&near), "the other file did not wait");
    // Once its holder is back, the batch brings both.
    c.restart(1);
    c.run_for(Duration::from_secs(5));
    let (got, answer) = c.download_many(2, a2, &[(None, "far"), (None, "near")]);
    assert!(outcomes_all_stored(&answer), "{answer:?}");
    assert_eq!(got.get(&0), Some(&far));
}

fn outcomes_all_stored(answer: &[SessionMsg]) -> bool {
    outcomes(answer)
        .iter()
        .all(|o| matches!(o, Landed::Stored { .. }))
}

#[test]
fn a_session_gone_mid_batch_leaves_no_read_behind() {
    let mut c = Cluster::new(1);
    c.run_for(Duration::from_secs(1));
    let a = user(&mut c, 0, "alice");
    let big = content(3_000_000, 5);
    c.upload_many(0, a, &[("big", &big), ("small", &big[..10])], false);
    let req = Request::DownloadMany {
        files: vec![(None, "big".into()), (None, "small".into())],
    };
    let first = c.request(0, a, &req);
    assert!(!first.is_empty());
    c.input(0, crate::io::Input::Closed { conn: a });
    c.run_for(Duration::from_secs(1));
    // Deleted and collected: no read of the gone session holds it.
    let a2 = user(&mut c, 0, "alice");
    c.request(0, a2, &Request::Delete { name: "big".into() });
    c.run_for(Duration::from_secs(1));
    assert!(!c.disk(0).blobs.contains_key(&digest(&big)), "collected");
}
