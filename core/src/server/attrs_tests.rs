//! Files' attributes through the servers: sent after an upload's offer,
//! ordered with it, listed, and sent after a download's offer, on every
//! server; a store written before attributes existed still serves.

use super::user_files_tests::{content, login_token, proven_session, stored, user};
use crate::file_attrs::FileAttrs;
use crate::replication::entry::Origin;
use crate::replication::v6;
use crate::server::messages::Landed;
use crate::server::{Request, SessionMsg};
use crate::store::{Batch, Store, Write};
use crate::testkit::cluster::Cluster;
use std::time::Duration;

const A: FileAttrs = FileAttrs {
    mtime_secs: 1_600_000_000,
    mtime_nanos: 123_456_789,
    mode: 0o640,
};

fn listed_attrs(
    c: &mut Cluster,
    ix: usize,
    s: crate::io::ConnId,
) -> Vec<(String, Option<FileAttrs>)> {
    match &c.request(ix, s, &Request::List)[..] {
        [SessionMsg::Listing { files }] => {
            (files.iter()).map(|f| (f.name.clone(), f.attrs)).collect()
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_uploads_attributes_are_listed_and_sent_with_it_by_every_server() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    let a = user(&mut c, 0, "alice");
    let data = content(10_000, 1);
    let set_id = FileAttrs { mode: 0o4755, ..A };
    assert!(stored(&c.upload_with(
        0,
        a,
        "a",
        &data,
        false,
        Some(A),
        |_| {}
    )));
    assert!(stored(&c.upload_with(
        0,
        a,
        "suid",
        &data,
        false,
        Some(set_id),
        |_| {}
    )));
    assert!(stored(&c.upload(0, a, "plain", b"no attributes", false)));
    c.run_for(Duration::from_millis(500));
    for ix in 0..3 {
        let s = user(&mut c, ix, "alice");
        let listed = listed_attrs(&mut c, ix, s);
        let expected = [
            ("a".to_string(), Some(A)),
            ("plain".to_string(), None),
            // The set-user-ID bit never passes a server.
            ("suid".to_string(), Some(FileAttrs { mode: 0o755, ..A })),
        ];
        assert_eq!(listed, expected, "server {}", ix + 1);
        assert_eq!(c.download(ix, s, None, "a"), Ok(data.clone()));
        assert_eq!(c.attrs_told, Some(A), "server {}", ix + 1);
        assert_eq!(
            c.download(ix, s, None, "plain"),
            Ok(b"no attributes".to_vec())
        );
        assert_eq!(c.attrs_told, None);
    }
}

#[test]
fn a_batchs_files_keep_their_own_attributes() {
    let mut c = Cluster::new(1);
    c.run_for(Duration::from_secs(1));
    let a = user(&mut c, 0, "alice");
    let b = FileAttrs::new(-1, 0, 0o755);
    let files: [(&str, &[u8]); 3] = [("d/x", b"x"), ("d/y", b"y"), ("d/z", b"z")];
    let got = c.upload_many_with(0, a, &files, false, &[Some(A), None, Some(b)]);
    let [SessionMsg::BatchDone { outcomes }] = &got[..] else {
        panic!("{got:?}");
    };
    assert!(outcomes.iter().all(|o| matches!(o, Landed::Stored { .. })));
    let listed = listed_attrs(&mut c, 0, a);
    assert_eq!(
        listed,
        [
            ("d/x".to_string(), Some(A)),
            ("d/y".to_string(), None),
            ("d/z".to_string(), Some(b))
        ]
    );
}

#[test]
fn the_attributes_of_a_refused_upload_are_dropped_and_the_session_goes_on() {
    let mut c = Cluster::new(1);
    c.run_for(Duration::from_secs(1));
    let a = user(&mut c, 0, "alice");
    assert!(stored(&c.upload(0, a, "taken", b"first", false)));
    // Refused at its offer: the attributes that follow find the session
    // idle again.
    let got = c.upload_with(0, a, "taken", b"second", false, Some(A), |_| {});
    assert!(got.is_empty(), "refused by its transfer's REJECT: {got:?}");
    // Nothing of them sticks to the session's next upload.
    assert!(stored(&c.upload(0, a, "next", b"next", false)));
    assert!(!c.is_closed(0, a));
    assert_eq!(
        listed_attrs(&mut c, 0, a),
        [("next".to_string(), None), ("taken".to_string(), None)]
    );
}

/// A server of protocol 6 logged uploads as `PutFile` (tag 3) and
/// `PutFiles` (tag 18) without attributes, and kept no attrs table. A
/// server of today started on its store replays those entries, lists and
/// serves their files, and stores new files with attributes beside them.
#[test]
fn a_store_written_before_attributes_replays_and_serves() {
    let mut c = Cluster::new(1);
    c.run_for(Duration::from_secs(1));
    user(&mut c, 0, "alice");
    c.run_for(Duration::from_millis(200));
    c.crash(0);
    let rec = c.store(0).load().expect("load");
    let (next, view) = (rec.log.len() as u64 + 1, rec.view.max(1));
    let (one, two) = (b"written by protocol 6".to_vec(), b"and its batch".to_vec());
    let digest = |d: &[u8]| *blake3::hash(d).as_bytes();
    let origin = |request| Origin {
        server: 1,
        session: 4242,
        request,
    };
    let old = [
        v6::Entry {
            index: next,
            view,
            at: 1_000,
            origin: origin(1),
            txn: v6::Txn::PutFile {
                owner: 1,
                name: "old.txt".into(),
                size: one.len() as u64,
                digest: digest(&one),
                replace: false,
                holder: 1,
            },
        },
        v6::Entry {
            index: next + 1,
            view,
            at: 1_001,
            origin: origin(2),
            txn: v6::Txn::PutFiles {
                owner: 1,
                files: vec![v6::NewFile {
                    name: "old/b".into(),
                    size: two.len() as u64,
                    digest: digest(&two),
                }],
                replace: false,
                holder: 1,
            },
        },
    ];
    let writes = (old.iter())
        .map(|e| Write::Append {
            index: e.index,
            entry: v6::bytes(e),
        })
        .collect();
    c.store_mut(0).commit(&Batch { writes }).expect("commit");
    for d in [&one, &two] {
        c.disk_mut(0).blobs.insert(digest(d), d.clone().into());
    }
    c.restart(0);
    c.run_for(Duration::from_secs(1));
    // (A restarted test server draws the session ids it drew before, which
    // the dedup table knows: a command id keeps this session's apart.)
    let token = login_token(&mut c, "alice");
    let s = proven_session(&mut c, 0, &token, Some(0xa77));
    assert_eq!(
        listed_attrs(&mut c, 0, s),
        [("old.txt".to_string(), None), ("old/b".to_string(), None)]
    );
    assert_eq!(c.download(0, s, None, "old/b"), Ok(two));
    assert_eq!(c.attrs_told, None);
    // New files keep theirs beside the old ones, through another restart.
    let got = c.upload_with(0, s, "new", b"new", false, Some(A), |_| {});
    assert!(stored(&got), "{got:?}");
    c.crash(0);
    c.restart(0);
    c.run_for(Duration::from_secs(1));
    let s = proven_session(&mut c, 0, &token, Some(0xa78));
    let listed = listed_attrs(&mut c, 0, s);
    assert_eq!(
        listed,
        [
            ("new".to_string(), Some(A)),
            ("old.txt".to_string(), None),
            ("old/b".to_string(), None)
        ]
    );
    assert_eq!(c.download(0, s, None, "old.txt"), Ok(one));
}

#[test]
fn a_batch_of_downloads_sends_each_files_attributes_after_its_offer() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    let a = user(&mut c, 0, "alice");
    let (x, y) = (content(5000, 1), content(100, 2));
    let files: Vec<(&str, &[u8])> = vec![("x", &x), ("y", &y)];
    c.upload_many_with(0, a, &files, false, &[None, Some(A)]);
    c.run_for(Duration::from_secs(1));
    let a1 = user(&mut c, 1, "alice");
    let (got, answer) = c.download_many(1, a1, &[(None, "x"), (None, "y")]);
    assert!(
        matches!(&answer[..], [SessionMsg::SentAll { .. }]),
        "{answer:?}"
    );
    assert_eq!((got.get(&0), got.get(&1)), (Some(&x), Some(&y)));
    assert_eq!(
        c.batch_attrs_told.clone().into_iter().collect::<Vec<_>>(),
        vec![(1, A)],
        "y's attributes, and none for x, which has none"
    );
}
