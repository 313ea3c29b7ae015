//! Batches of uploads (`UploadMany`): many files, one transaction.

use super::user_files_tests::{content, names, user};
use crate::replication::entry::Txn;
use crate::server::messages::{Landed, OpCode, OpError};
use crate::server::{ServerEvent, SessionMsg};
use crate::testkit::cluster::Cluster;
use crate::transfer::TransferError;
use std::time::Duration;

fn outcomes(answer: &[SessionMsg]) -> Vec<Landed> {
    match answer {
        [SessionMsg::BatchDone { outcomes }] => outcomes.clone(),
        other => panic!("not a batch's answer: {other:?}"),
    }
}

/// How many entries of each kind of upload server `ix` has in its log.
fn puts_in_log(c: &Cluster, ix: usize) -> (usize, usize) {
    let log = c.server(ix).replica().log();
    let one = log
        .iter()
        .filter(|e| matches!(e.txn, Txn::PutFile { .. }))
        .count();
    let many = log
        .iter()
        .filter(|e| matches!(e.txn, Txn::PutFiles { .. }))
        .count();
    (one, many)
}

#[test]
fn a_batch_of_files_is_stored_as_one_entry_and_each_file_reads_back() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    let a = user(&mut c, 1, "alice");
    // Sizes around the chunk, the block and the batch's room in flight.
    let sizes = [0, 1, 4095, 4096, 4097, 100, 300_000, 131_072, 7, 50_000];
    let owned: Vec<(String, Vec<u8>)> = (sizes.iter().enumerate())
        .map(|(i, n)| (format!("f{i}"), content(*n, i as u64 + 1)))
        .collect();
    let files: Vec<(&str, &[u8])> = owned.iter().map(|(n, d)| (n.as_str(), &d[..])).collect();
    let got = outcomes(&c.upload_many(1, a, &files, false));
    assert_eq!(got.len(), files.len());
    for (o, (_, data)) in got.iter().zip(&owned) {
        let want = Landed::Stored {
            size: data.len() as u64,
            digest: *blake3::hash(data).as_bytes(),
        };
        assert_eq!(o, &want);
    }
    assert_eq!(puts_in_log(&c, 1), (0, 1), "one entry for the whole batch");
    // Every file reads back whole, from every server.
    c.run_for(Duration::from_secs(2));
    for ix in 0..3 {
        let s = user(&mut c, ix, "alice");
        for (name, data) in &owned {
            assert_eq!(
                c.download(ix, s, None, name).as_ref(),
                Ok(data),
                "{name} on {ix}"
            );
        }
    }
    // Each content durable on a majority before the answer.
    for (_, data) in &owned {
        let d = blake3::hash(data);
        let holders = (0..3).filter(|ix| c.disk(*ix).blob(d.as_bytes()).is_some());
        assert!(holders.count() >= 2);
    }
}

#[test]
fn files_refused_in_a_batch_fail_alone_with_their_reason() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    let a = user(&mut c, 0, "alice");
    let old = content(10, 1);
    let got = outcomes(&c.upload_many(0, a, &[("taken", &old[..])], false));
    assert!(matches!(got[..], [Landed::Stored { .. }]));
    let x = content(5000, 2);
    let files: Vec<(&str, &[u8])> = vec![
        ("good", &x),
        ("taken", &x),
        ("../escape", &x),
        ("good", &x),
        ("also good", &x),
    ];
    let got = outcomes(&c.upload_many(0, a, &files, false));
    assert!(matches!(got[0], Landed::Stored { .. }), "{got:?}");
    assert_eq!(
        got[1],
        Landed::Failed(OpError::Transfer(TransferError::Exists))
    );
    assert!(
        matches!(
            &got[2],
            Landed::Failed(OpError::Transfer(TransferError::BadName { .. }))
        ),
        "{got:?}"
    );
    assert!(
        matches!(&got[3], Landed::Failed(OpError::Transfer(TransferError::BadName { reason })) if reason.contains("twice")),
        "{got:?}"
    );
    assert!(matches!(got[4], Landed::Stored { .. }), "{got:?}");
    // The answer's event names what it vouches for: each file stored, and
    // none of the failed (the simulator checks each on the disks).
    let vouched = c.events.iter().rev().find_map(|(ix, e)| match e {
        ServerEvent::Answered {
            op: OpCode::UploadMany,
            stored,
            ..
        } if *ix == 0 => Some(stored.clone()),
        _ => None,
    });
    let dx = *blake3::hash(&x).as_bytes();
    assert_eq!(vouched, Some(vec![dx, dx]));
    let mut listed = names(&mut c, 0, a);
    listed.sort();
    let want: Vec<(String, String)> = ["also good", "good", "taken"]
        .iter()
        .map(|n| ("alice".to_string(), n.to_string()))
        .collect();
    assert_eq!(listed, want);
    // "taken" kept its old content.
    assert_eq!(c.download(0, a, None, "taken"), Ok(old));
    // With --force, the taken name is replaced.
    let files: Vec<(&str, &[u8])> = vec![("taken", &x)];
    let got = outcomes(&c.upload_many(0, a, &files, true));
    assert!(matches!(got[..], [Landed::Stored { .. }]), "{got:?}");
    assert_eq!(c.download(0, a, None, "taken"), Ok(x));
}

#[test]
fn a_batch_past_its_bound_or_empty_is_refused() {
    let mut c = Cluster::new(1);
    c.run_for(Duration::from_secs(1));
    for files in [0, 100_000] {
        let a = user(&mut c, 0, "alice");
        let op = OpCode::UploadMany;
        c.send(0, a, &SessionMsg::Begin { op });
        assert_eq!(c.received(0, a), vec![SessionMsg::Proceed { op }]);
        c.send(0, a, &SessionMsg::Batch { files });
        c.run_for(Duration::from_millis(100));
        let got = c.received(0, a);
        assert!(
            matches!(got[..], [SessionMsg::Refused(_)]),
            "{files} files: {got:?}"
        );
    }
}

#[test]
fn a_session_gone_mid_batch_stores_nothing_and_leaves_nothing_behind() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    let a = user(&mut c, 0, "alice");
    let op = OpCode::UploadMany;
    c.send(0, a, &SessionMsg::Begin { op });
    assert_eq!(c.received(0, a), vec![SessionMsg::Proceed { op }]);
    c.send(0, a, &SessionMsg::Batch { files: 3 });
    c.run_for(Duration::from_millis(100));
    // One file whole, one half sent, one never offered.
    let whole = content(9000, 1);
    let mut s = crate::transfer::Sender::new(
        c.now,
        0,
        "whole".into(),
        whole.len() as u64,
        Default::default(),
    );
    for _ in 0..200 {
        while let Some(o) = s.poll_output() {
            match o {
                crate::transfer::SenderOutput::Send(m) => c.send(0, a, &SessionMsg::Transfer(m)),
                crate::transfer::SenderOutput::Read { offset, len } => {
                    let o = offset as usize;
                    s.on_read(offset, &whole[o..o + len]);
                }
                _ => {}
            }
        }
        for m in c.received(0, a) {
            if let SessionMsg::Transfer(t) = m {
                s.on_msg(c.now, t);
            }
        }
        if s.is_finished() {
            break;
        }
        c.run_for(Duration::from_millis(10));
    }
    assert!(s.is_finished());
    c.input(0, crate::io::Input::Closed { conn: a });
    c.run_for(Duration::from_secs(70));
    assert_eq!(puts_in_log(&c, 0), (0, 0));
    let d = blake3::hash(&whole);
    for ix in 0..3 {
        assert_eq!(c.disk(ix).blob(d.as_bytes()), None, "server {ix} kept it");
    }
    assert!(!c.events.iter().any(|(_, e)| matches!(
        e,
        ServerEvent::Answered {
            op: OpCode::UploadMany,
            ..
        }
    )));
}

#[test]
fn a_batch_costs_each_server_a_few_collections_not_one_per_file() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    let a = user(&mut c, 1, "alice");
    let owned: Vec<(String, Vec<u8>)> = (0..100)
        .map(|i| (format!("f{i}"), content(4096, i + 1)))
        .collect();
    let files: Vec<(&str, &[u8])> = owned.iter().map(|(n, d)| (n.as_str(), &d[..])).collect();
    let syncs = |c: &Cluster| -> Vec<u64> { (0..3).map(|ix| c.server(ix).blobs.syncs).collect() };
    let before = syncs(&c);
    let got = outcomes(&c.upload_many(1, a, &files, false));
    assert!(got.iter().all(|o| matches!(o, Landed::Stored { .. })));
    // Each collection scans every blob: once per file made 100 files cost
    // each server 100 scans (a copy landing used to trigger one).
    for (ix, (b, a)) in before.iter().zip(syncs(&c)).enumerate() {
        assert!(a - b <= 10, "server {ix} collected {} times", a - b);
    }
}

#[test]
fn the_copies_of_a_batch_share_links_instead_of_dialing_per_file() {
    // Two servers: every file is copied to the other, none fetched.
    let mut c = Cluster::new(2);
    c.run_for(Duration::from_secs(1));
    let a = user(&mut c, 1, "alice");
    let owned: Vec<(String, Vec<u8>)> = (0..60)
        .map(|i| (format!("f{i}"), content(3000, i + 1)))
        .collect();
    let files: Vec<(&str, &[u8])> = owned.iter().map(|(n, d)| (n.as_str(), &d[..])).collect();
    let before = c.connections_made();
    let got = outcomes(&c.upload_many(1, a, &files, false));
    assert!(got.iter().all(|o| matches!(o, Landed::Stored { .. })));
    let copied = (c.events.iter())
        .filter(|(ix, e)| *ix == 1 && matches!(e, ServerEvent::Copied { .. }))
        .count();
    assert!(copied >= 60, "{copied} copies");
    // Several files are in flight at once, so a few links; not one each.
    let made = c.connections_made() - before;
    assert!(made <= 20, "{made} connections for 60 copies");
    // A link left unused closes on its own, at both ends.
    c.run_for(Duration::from_secs(70));
    let a = user(&mut c, 1, "alice");
    let after_idle = c.connections_made();
    let again = outcomes(&c.upload_many(1, a, &[("later", &owned[0].1[..])], false));
    assert!(matches!(again[..], [Landed::Stored { .. }]));
    assert!(
        c.connections_made() > after_idle,
        "a new link after the idle ones closed"
    );
}

#[test]
fn a_batch_keeps_a_name_a_file_or_a_folder_never_both() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    let a = user(&mut c, 0, "alice");
    let x = content(100, 1);
    let got = outcomes(&c.upload_many(0, a, &[("docs/a.txt", &x[..]), ("f", &x[..])], false));
    assert!(
        got.iter().all(|o| matches!(o, Landed::Stored { .. })),
        "{got:?}"
    );
    let conflict = |o: &Landed| {
        matches!(
            o,
            Landed::Failed(OpError::Transfer(TransferError::Conflict { .. }))
        )
    };
    let files: Vec<(&str, &[u8])> = vec![
        ("docs", &x),      // a folder already
        ("f/under", &x),   // under a file
        ("new", &x),       // fine
        ("new/under", &x), // under a file of this batch
        ("deep/x/y", &x),  // fine
        ("deep/x", &x),    // a folder of this batch
    ];
    let got = outcomes(&c.upload_many(0, a, &files, false));
    let clashed: Vec<bool> = got.iter().map(conflict).collect();
    assert_eq!(clashed, [true, true, false, true, false, true], "{got:?}");
    assert!(matches!(got[2], Landed::Stored { .. }) && matches!(got[4], Landed::Stored { .. }));
}
