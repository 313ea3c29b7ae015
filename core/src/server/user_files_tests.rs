use crate::accounts::token::SessionToken;
use crate::io::ConnId;
use crate::replication::entry::{Origin, Txn};
use crate::server::messages::FileOutcome;
use crate::server::scrub::Verdict;
use crate::server::ServerConfig;
use crate::server::{OpError, Request, ServerEvent, SessionMsg};
use crate::testkit::cluster::Cluster;
use crate::transfer::{TransferError, TransferMsg};
use crate::Entropy;
use std::time::Duration;

pub(super) fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0; len];
    Entropy::from_u64(seed).fill(&mut v);
    v
}

/// Registers `name` (if needed) and returns a session on `ix` logged in as it.
pub(super) fn user(c: &mut Cluster, ix: usize, name: &str) -> ConnId {
    let s = c.open_session(ix);
    let creds = |n: &str| (n.to_string(), "password-123".to_string());
    let (u, p) = creds(name);
    c.request(
        ix,
        s,
        &Request::Register {
            username: u.clone(),
            password: p.clone(),
        },
    );
    c.run_for(Duration::from_millis(200));
    let got = c.request(
        ix,
        s,
        &Request::Login {
            username: u,
            password: p,
        },
    );
    let [SessionMsg::LoggedIn { token, .. }] = &got[..] else {
        panic!("login {name}: {got:?}");
    };
    let me = c.request(
        ix,
        s,
        &Request::WhoAmI {
            token: token.clone(),
        },
    );
    assert!(matches!(me[..], [SessionMsg::Me { .. }]), "{me:?}");
    s
}

/// A login token for `name`, registered on a session of its own on
/// server 1.
pub(crate) fn login_token(c: &mut Cluster, name: &str) -> SessionToken {
    let s = c.open_session(0);
    let (username, password) = (name.to_string(), "password-123".to_string());
    let register = Request::Register {
        username: username.clone(),
        password: password.clone(),
    };
    c.request(0, s, &register);
    c.run_for(Duration::from_millis(300));
    match &c.request(0, s, &Request::Login { username, password })[..] {
        [SessionMsg::LoggedIn { token, .. }] => token.clone(),
        other => panic!("login {name}: {other:?}"),
    }
}

/// A session on `ix` proven as `token`'s user, running client command
/// `command` if given (`SessionMsg::Command`, sent before anything else).
pub(super) fn proven_session(
    c: &mut Cluster,
    ix: usize,
    token: &SessionToken,
    command: Option<u64>,
) -> ConnId {
    proven_session_after(c, ix, token, command, 0)
}

/// [`proven_session`], for a try of the command after its first `done`
/// numbered operations were answered.
pub(super) fn proven_session_after(
    c: &mut Cluster,
    ix: usize,
    token: &SessionToken,
    command: Option<u64>,
    done: u64,
) -> ConnId {
    let s = c.open_session(ix);
    if let Some(id) = command {
        c.send(ix, s, &SessionMsg::Command { id, done });
    }
    let who = Request::WhoAmI {
        token: token.clone(),
    };
    let me = c.request(ix, s, &who);
    assert!(matches!(me[..], [SessionMsg::Me { .. }]), "{me:?}");
    s
}

pub(super) fn stored(answer: &[SessionMsg]) -> bool {
    matches!(answer, [SessionMsg::FileDone(FileOutcome::Stored { .. })])
}

pub(super) fn names(c: &mut Cluster, ix: usize, s: ConnId) -> Vec<(String, String)> {
    match &c.request(ix, s, &Request::List)[..] {
        [SessionMsg::Listing { files }] => files
            .iter()
            .map(|f| (f.owner.clone(), f.name.clone()))
            .collect(),
        other => panic!("{other:?}"),
    }
}

/// A cluster of `servers` where alice (logged in on server 1) stored
/// `name`: the cluster, her session, the content and its digest.
fn with_upload(
    servers: usize,
    name: &str,
    len: usize,
    seed: u64,
) -> (Cluster, ConnId, Vec<u8>, [u8; 32]) {
    let mut c = Cluster::new(servers);
    c.run_for(Duration::from_secs(1));
    let a = user(&mut c, 0, "alice");
    let data = content(len, seed);
    assert!(stored(&c.upload(0, a, name, &data, false)));
    let digest = *blake3::hash(&data).as_bytes();
    (c, a, data, digest)
}

#[test]
fn an_upload_through_one_server_downloads_byte_identical_through_another() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    let a = user(&mut c, 1, "alice");
    let data = content(300 * 1024 + 7, 1);
    assert!(stored(&c.upload(1, a, "photo.jpg", &data, false)));
    c.run_for(Duration::from_secs(2));
    let digest = *blake3::hash(&data).as_bytes();
    for ix in 0..3 {
        assert_eq!(
            c.disk(ix).blob(&digest),
            Some(&data[..]),
            "server {} holds the content",
            ix + 1
        );
    }
    let a2 = user(&mut c, 2, "alice");
    assert_eq!(c.download(2, a2, None, "photo.jpg"), Ok(data));
    assert_eq!(
        names(&mut c, 2, a2),
        vec![("alice".into(), "photo.jpg".into())]
    );
}

#[test]
fn a_server_that_lacks_the_content_fetches_it_for_a_download() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    let a = user(&mut c, 0, "alice");
    c.crash(2);
    let data = content(50_000, 2);
    assert!(stored(&c.upload(0, a, "doc", &data, false)));
    c.restart(2);
    assert!(!c
        .disk_mut(2)
        .blobs
        .contains_key(blake3::hash(&data).as_bytes()));
    // Long enough to rejoin the master, not to have fetched in the background.
    c.run_for(Duration::from_millis(1));
    let a3 = user(&mut c, 2, "alice");

    assert_eq!(c.download(2, a3, None, "doc"), Ok(data));
}

#[test]
fn content_that_rotted_on_a_servers_disk_fails_the_download_instead_of_arriving() {
    let (mut c, a, _, digest) = with_upload(1, "ledger", 200_000, 3);
    assert!(
        c.disk_mut(0).damage(&digest, |b| b[123_456] ^= 0x20),
        "the blob is on disk"
    );
    let got = c.download(0, a, None, "ledger");
    assert!(
        matches!(
            &got.as_deref().map_err(|m| &m[..]),
            Err([SessionMsg::Failed(OpError::Transfer(
                TransferError::DigestMismatch
            ))])
        ),
        "{:?}",
        got.map(|d| d.len())
    );
}

/// The verdicts of the checks server `ix` made, in order.
fn verdicts(c: &Cluster, ix: usize) -> Vec<Verdict> {
    c.events
        .iter()
        .filter(|(i, _)| *i == ix)
        .filter_map(|(_, e)| match e {
            ServerEvent::BlobChecked { verdict, .. } => Some(verdict.clone()),
            _ => None,
        })
        .collect()
}

fn damaged(got: &Result<Vec<u8>, Vec<SessionMsg>>) -> bool {
    matches!(
        got.as_deref().map_err(|m| &m[..]),
        Err([SessionMsg::Failed(OpError::Transfer(
            TransferError::DigestMismatch
        ))])
    )
}

#[test]
fn a_damaged_copy_found_by_a_download_is_replaced_from_another_server() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    let a = user(&mut c, 0, "alice");
    let data = content(400_000, 5);
    assert!(stored(&c.upload(0, a, "album", &data, false)));
    c.run_for(Duration::from_secs(3));
    let digest = *blake3::hash(&data).as_bytes();
    assert!(
        c.disk_mut(1).damage(&digest, |b| b[399_999] ^= 0x80),
        "server 2 fetched it"
    );
    let a2 = user(&mut c, 1, "alice");
    assert!(damaged(&c.download(1, a2, None, "album")));
    c.run_for(Duration::from_secs(5));
    assert!(
        matches!(verdicts(&c, 1)[..], [Verdict::Damaged { .. }]),
        "{:?}",
        verdicts(&c, 1)
    );
    assert_eq!(c.disk(1).blob(&digest), Some(&data[..]), "a sound copy");
    assert_eq!(c.download(1, a2, None, "album"), Ok(data));
    assert!(verdicts(&c, 0).is_empty() && verdicts(&c, 2).is_empty());
}

#[test]
fn the_only_copy_damaged_is_removed_so_that_an_upload_can_replace_it() {
    let (mut c, a, data, digest) = with_upload(1, "notes", 10_000, 6);
    c.disk_mut(0).damage(&digest, |b| b.truncate(9_000));
    // Cut short: the server's own read finds it, before any digest.
    let got = c.download(0, a, None, "notes");
    assert!(
        matches!(
            got.as_deref().map_err(|m| &m[..]),
            Err([SessionMsg::Failed(OpError::Transfer(
                TransferError::Io { .. }
            ))])
        ),
        "{got:?}"
    );
    c.run_for(Duration::from_secs(1));
    assert!(matches!(verdicts(&c, 0)[..], [Verdict::Damaged { .. }]));
    assert!(!c.disk_mut(0).blobs.contains_key(&digest), "removed");
    // The same content again: stored anew, not taken as already there.
    assert!(stored(&c.upload(0, a, "notes", &data, true)));
    assert_eq!(c.download(0, a, None, "notes"), Ok(data));
}

#[test]
fn a_blob_that_cannot_be_read_is_kept_and_the_client_hears_no_disk_details() {
    let (mut c, a, data, digest) = with_upload(1, "bad-sector", 5_000, 8);
    c.disk_mut(0).unreadable.insert(digest);
    let got = c.download(0, a, None, "bad-sector");
    let Err(msgs) = &got else {
        panic!("downloaded an unreadable blob");
    };
    let [SessionMsg::Failed(OpError::Transfer(TransferError::Io { detail }))] = &msgs[..] else {
        panic!("{msgs:?}");
    };
    assert_eq!(detail, "the server's disk failed");
    c.run_for(Duration::from_secs(1));
    assert!(matches!(verdicts(&c, 0)[..], [Verdict::Unreadable { .. }]));
    let logged = c.events.iter().any(
        |(_, e)| matches!(e, ServerEvent::FileFailed { error } if error == "input/output error"),
    );
    assert!(logged, "the disk's words are logged on the server");
    // The sector reads again: served, for the copy was kept.
    c.disk_mut(0).unreadable.clear();
    assert_eq!(c.download(0, a, None, "bad-sector"), Ok(data));
}

#[test]
fn a_file_deleted_during_its_download_still_arrives_whole_as_it_began() {
    let (mut c, a, data, digest) = with_upload(1, "big.bin", 3_000_000, 21);
    let other = user(&mut c, 0, "alice");
    let got = c.download_while(0, a, None, "big.bin", |c| {
        let gone = c.request(
            0,
            other,
            &Request::Delete {
                name: "big.bin".into(),
            },
        );
        assert_eq!(gone, vec![SessionMsg::FileDone(FileOutcome::Deleted)]);
    });
    assert_eq!(got.map(|d| d == data), Ok(true), "the content as it was");
    c.run_for(Duration::from_secs(1));
    assert!(
        !c.disk(0).blobs.contains_key(&digest),
        "collected once the download is over"
    );
}

#[test]
fn a_blob_removed_behind_the_servers_back_is_fetched_again() {
    let (mut c, _, data, digest) = with_upload(2, "gone", 50_000, 9);
    c.run_for(Duration::from_secs(3));
    assert_eq!(c.disk(1).blob(&digest), Some(&data[..]));
    c.disk_mut(1).blobs.remove(&digest);
    let a2 = user(&mut c, 1, "alice");
    assert!(c.download(1, a2, None, "gone").is_err());
    c.run_for(Duration::from_secs(3));
    assert!(matches!(
        verdicts(&c, 1)[..],
        [Verdict::Damaged { ref why }] if why.contains("missing")
    ));
    assert_eq!(c.disk(1).blob(&digest), Some(&data[..]), "fetched again");
    assert_eq!(c.download(1, a2, None, "gone"), Ok(data));
    assert!(verdicts(&c, 0).is_empty());
}

#[test]
fn a_client_that_falsely_claims_damage_costs_a_check_and_nothing_else() {
    let (mut c, a, data, digest) = with_upload(1, "sound", 300_000, 7);
    let req = Request::Download {
        owner: None,
        name: "sound".into(),
    };
    let got = c.request(0, a, &req);
    let [SessionMsg::Transfer(TransferMsg::Offer { id, .. })] = got[..] else {
        panic!("{got:?}");
    };
    let abort = TransferMsg::Abort {
        id,
        reason: TransferError::DigestMismatch,
    };
    c.send(0, a, &SessionMsg::Transfer(abort));
    c.run_for(Duration::from_secs(1));
    assert_eq!(verdicts(&c, 0), vec![Verdict::Sound]);
    assert_eq!(c.disk(0).blob(&digest), Some(&data[..]), "kept");
    assert_eq!(c.download(0, a, None, "sound"), Ok(data));
}

#[test]
fn a_fetch_refuses_a_holders_damaged_copy_and_takes_another_servers() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    let a = user(&mut c, 0, "alice");
    c.crash(2);
    let data = content(150_000, 4);
    assert!(stored(&c.upload(0, a, "thesis", &data, false)));
    c.run_for(Duration::from_secs(3));
    let digest = *blake3::hash(&data).as_bytes();
    assert_eq!(
        c.disk(1).blob(&digest),
        Some(&data[..]),
        "server 2 fetched it"
    );
    // The holder's copy rots; server 3 comes back and asks the holder first.
    assert!(
        c.disk_mut(0).damage(&digest, |b| b[77_777] ^= 0x04),
        "the holder has it"
    );
    c.restart(2);
    c.run_for(Duration::from_secs(30));
    assert_eq!(c.disk(2).blob(&digest), Some(&data[..]), "the sound copy");
    let a3 = user(&mut c, 2, "alice");
    assert_eq!(c.download(2, a3, None, "thesis"), Ok(data));
}

#[test]
fn a_done_resent_while_the_file_was_made_durable_does_not_end_the_session() {
    let mut c = Cluster::new(1);
    c.run_for(Duration::from_secs(1));
    let a = user(&mut c, 0, "alice");
    let data = content(10_000, 7);
    assert!(stored(&c.upload(0, a, "f", &data, false)));
    // What a sender resends when DONE ACK is slow to come: it reaches the
    // server after the upload was answered.
    let digest = *blake3::hash(&data).as_bytes();
    c.send(
        0,
        a,
        &SessionMsg::Transfer(crate::transfer::TransferMsg::Done { id: 0, digest }),
    );
    c.send(
        0,
        a,
        &SessionMsg::Transfer(crate::transfer::TransferMsg::Ack { id: 0, upto: 3 }),
    );
    c.run_for(Duration::from_millis(10));
    assert_eq!(c.received(0, a), vec![], "no refusal");
    assert_eq!(names(&mut c, 0, a), vec![("alice".into(), "f".into())]);
}

#[test]
fn a_download_waits_for_a_long_fetch_as_long_as_it_moves() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    let a = user(&mut c, 0, "alice");
    c.crash(2);
    let data = content(4 << 20, 5);
    assert!(stored(&c.upload(0, a, "big", &data, false)));
    // A slow disk: each 128 KiB read takes a second, so fetching the
    // content takes far longer than a request may (10 s).
    c.set_read_delay(Some(Duration::from_secs(1)));
    c.restart(2);
    c.run_for(Duration::from_millis(1));
    let a3 = user(&mut c, 2, "alice");
    let start = c.now;
    let got = c.download(2, a3, None, "big");
    assert!(got.as_ref() == Ok(&data), "{:?}", got.map(|d| d.len()));
    assert!(
        c.now > start + Duration::from_secs(10),
        "the fetch was not slow"
    );
    // Told how far the fetch came, about once a second, and the figures
    // only grow.
    let told = &c.fetching_told;
    assert!(told.len() >= 5, "{told:?}");
    assert!(told.windows(2).all(|w| w[0].0 <= w[1].0), "{told:?}");
    assert!(told
        .iter()
        .all(|&(bytes, size)| size == data.len() as u64 && bytes <= size));
}

#[test]
fn a_download_whose_fetch_stalls_is_refused_in_time() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    let a = user(&mut c, 0, "alice");
    c.crash(2);
    let data = content(300_000, 6);
    assert!(stored(&c.upload(0, a, "doc", &data, false)));
    // A disk that never answers: the fetch starts and nothing arrives.
    c.set_read_delay(Some(Duration::from_secs(1000)));
    c.restart(2);
    c.run_for(Duration::from_millis(1));
    let a3 = user(&mut c, 2, "alice");
    let start = c.now;
    let got = c.download(2, a3, None, "doc");
    assert!(
        matches!(&got, Err(m) if matches!(m.as_slice(), [SessionMsg::Failed(OpError::Unavailable { .. })])),
        "{:?}",
        got.map(|d| d.len())
    );
    // Within the server's patience, before the client's own (15 s).
    assert!(c.now < start + Duration::from_secs(15));
    assert!(c.fetching_told.is_empty());
}

#[test]
fn sharing_grants_and_unsharing_revokes_downloads_everywhere() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    let a = user(&mut c, 0, "alice");
    let b = user(&mut c, 1, "bob");
    let data = content(9000, 3);
    assert!(stored(&c.upload(0, a, "notes.txt", &data, false)));
    c.run_for(Duration::from_secs(1));
    let denied = c.download(1, b, Some("alice"), "notes.txt");
    assert_eq!(denied, Err(vec![SessionMsg::Failed(OpError::NoSuchFile)]));
    let got = c.request(
        0,
        a,
        &Request::Share {
            name: "notes.txt".into(),
            user: "bob".into(),
        },
    );
    assert_eq!(got, vec![SessionMsg::FileDone(FileOutcome::Shared)]);
    c.run_for(Duration::from_secs(1));
    assert_eq!(
        c.download(1, b, Some("alice"), "notes.txt"),
        Ok(data.clone())
    );
    assert_eq!(
        names(&mut c, 1, b),
        vec![("alice".into(), "notes.txt".into())]
    );
    // Bob cannot act as the owner.
    let got = c.request(
        1,
        b,
        &Request::Delete {
            name: "notes.txt".into(),
        },
    );
    assert_eq!(got, vec![SessionMsg::Failed(OpError::NoSuchFile)]);
    let got = c.request(
        0,
        a,
        &Request::Unshare {
            name: "notes.txt".into(),
            user: "bob".into(),
        },
    );
    assert_eq!(got, vec![SessionMsg::FileDone(FileOutcome::Unshared)]);
    c.run_for(Duration::from_secs(1));
    for ix in 1..3 {
        let b = user(&mut c, ix, "bob");
        assert_eq!(
            c.download(ix, b, Some("alice"), "notes.txt"),
            Err(vec![SessionMsg::Failed(OpError::NoSuchFile)])
        );
    }
}

#[test]
fn share_errors_are_specific() {
    let mut c = Cluster::new(1);
    let a = user(&mut c, 0, "alice");
    assert!(stored(&c.upload(0, a, "f", b"x", false)));
    let share = |name: &str, user: &str| Request::Share {
        name: name.into(),
        user: user.into(),
    };
    assert_eq!(
        c.request(0, a, &share("nope", "alice")),
        vec![SessionMsg::Failed(OpError::NoSuchFile)]
    );
    assert_eq!(
        c.request(0, a, &share("f", "zed")),
        vec![SessionMsg::Failed(OpError::NoSuchUser)]
    );
    assert_eq!(
        c.request(0, a, &share("f", "alice")),
        vec![SessionMsg::Failed(OpError::CannotShareWithSelf)]
    );
}

fn listed_under(c: &mut Cluster, ix: usize, s: ConnId, prefix: &str) -> Vec<(String, String)> {
    let list = Request::ListUnder {
        prefix: prefix.into(),
    };
    match &c.request(ix, s, &list)[..] {
        [SessionMsg::Listing { files }] => files
            .iter()
            .map(|f| (f.owner.clone(), f.name.clone()))
            .collect(),
        other => panic!("{other:?}"),
    }
}

/// Names of about 900 bytes: a few hundred of them fill a frame.
fn long_name(folder: &str, i: usize) -> String {
    let deep = format!("{}/", "n".repeat(220)).repeat(4);
    format!("{folder}/{deep}{i:05}")
}

/// Stores `names` (empty files) for the session's user, in batches.
fn store_all(c: &mut Cluster, ix: usize, s: ConnId, names: &[String]) {
    for chunk in names.chunks(48) {
        let files: Vec<(&str, &[u8])> = chunk.iter().map(|n| (n.as_str(), &b""[..])).collect();
        let answer = c.upload_many(ix, s, &files, false);
        assert!(
            matches!(&answer[..], [SessionMsg::BatchDone { outcomes }]
                if outcomes.iter().all(|o| matches!(o, crate::server::messages::Landed::Stored { .. }))),
            "{answer:?}"
        );
    }
}

/// A name of the longest path, shared as a file and as a folder: every row
/// it makes fits in a store (the test cluster's refuses a key longer than
/// LMDB takes, as LMDB would, which stops the server).
#[test]
fn a_name_of_the_longest_path_is_stored_shared_and_listed() {
    let mut c = Cluster::new(2);
    c.run_for(Duration::from_secs(1));
    let a = user(&mut c, 0, "alice");
    let _b = user(&mut c, 1, "bob");
    let folder = [
        "a".repeat(255),
        "b".repeat(255),
        "c".repeat(255),
        "d".repeat(254),
    ]
    .join("/");
    let name = format!("{folder}/e");
    assert_eq!(name.len(), crate::names::MAX_PATH);
    assert!(stored(&c.upload(0, a, &name, b"x", false)));
    for shared in [&name, &folder] {
        let share = Request::Share {
            name: shared.clone(),
            user: "bob".into(),
        };
        assert_eq!(
            c.request(0, a, &share),
            vec![SessionMsg::FileDone(FileOutcome::Shared)]
        );
    }
    let (files, _) = c.list_pages(0, a, None);
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].shared_with, vec!["bob".to_string()]);
    // One byte more is refused, and stops nothing.
    let longer = format!("{folder}/ef");
    let answer = c.upload(0, a, &longer, b"x", false);
    assert!(!stored(&answer), "{answer:?}");
    assert!(stored(&c.upload(1, _b, "still-up", b"y", false)));
}

#[test]
fn a_listing_larger_than_a_frame_comes_in_pages_each_file_once_in_order() {
    let mut c = Cluster::new(1);
    c.run_for(Duration::from_secs(1));
    let a = user(&mut c, 0, "alice");
    let b = user(&mut c, 0, "bob");
    let mine: Vec<String> = (0..400).map(|i| long_name("big", i)).collect();
    store_all(&mut c, 0, a, &mine);
    store_all(&mut c, 0, a, &["top-1".to_string(), "top-2".to_string()]);
    let theirs: Vec<String> = (0..100).map(|i| long_name("theirs", i)).collect();
    store_all(&mut c, 0, b, &theirs);
    let share = Request::Share {
        name: "theirs".into(),
        user: "alice".into(),
    };
    assert_eq!(
        c.request(0, b, &share),
        vec![SessionMsg::FileDone(FileOutcome::Shared)]
    );
    let names = |files: &[crate::server::messages::Listed]| -> Vec<(String, String)> {
        (files.iter())
            .map(|f| (f.owner.clone(), f.name.clone()))
            .collect()
    };
    let own = |v: &[String]| -> Vec<(String, String)> {
        v.iter().map(|n| ("alice".to_string(), n.clone())).collect()
    };
    // Her own by name, then bob's: every file once, across the pages.
    let (all, pages) = c.list_pages(0, a, None);
    let mut want = own(&mine);
    want.extend(own(&["top-1".into(), "top-2".into()]));
    want.extend(theirs.iter().map(|n| ("bob".to_string(), n.clone())));
    assert_eq!(names(&all), want);
    assert!(pages >= 3, "{pages} page(s)");
    // A folder's listing, in pages too, holds only what is under it.
    let (big, pages) = c.list_pages(0, a, Some("big"));
    assert_eq!(names(&big), own(&mine));
    assert!(pages >= 2, "{pages} page(s)");
    let (shared, _) = c.list_pages(0, a, Some("theirs"));
    assert_eq!(shared.len(), theirs.len());
    // A listing that fits in a frame is one answer, as before pages.
    let (top, pages) = c.list_pages(0, b, None);
    assert_eq!((top.len(), pages), (100, 1));
}

#[test]
fn a_shared_folder_is_readable_now_and_later_and_rm_r_takes_it_all() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    let a = user(&mut c, 0, "alice");
    let b = user(&mut c, 1, "bob");
    let one = content(5000, 11);
    assert!(stored(&c.upload(0, a, "photos/2024/a.jpg", &one, false)));
    assert!(stored(&c.upload(0, a, "photos-old", b"x", false)));
    let share = |name: &str| Request::Share {
        name: name.into(),
        user: "bob".into(),
    };
    assert_eq!(
        c.request(0, a, &share("photos")),
        vec![SessionMsg::FileDone(FileOutcome::Shared)]
    );
    // A file put under the folder after the share is shared too.
    let two = content(7000, 12);
    assert!(stored(&c.upload(0, a, "photos/b c/-d.jpg", &two, false)));
    c.run_for(Duration::from_secs(1));
    assert_eq!(
        c.download(1, b, Some("alice"), "photos/b c/-d.jpg"),
        Ok(two)
    );
    assert_eq!(
        c.download(1, b, Some("alice"), "photos/2024/a.jpg"),
        Ok(one)
    );
    assert_eq!(
        c.download(1, b, Some("alice"), "photos-old"),
        Err(vec![SessionMsg::Failed(OpError::NoSuchFile)])
    );
    let alice = |n: &str| ("alice".to_string(), n.to_string());
    assert_eq!(
        listed_under(&mut c, 1, b, "photos"),
        [alice("photos/2024/a.jpg"), alice("photos/b c/-d.jpg")]
    );
    assert_eq!(
        listed_under(&mut c, 0, a, "photos/2024"),
        [alice("photos/2024/a.jpg")]
    );
    // A name is a file or a folder: neither can take the other's place
    // (the offer is rejected; the CLI's tests read the reason).
    let before = names(&mut c, 0, a);
    for clash in ["photos", "photos/2024", "photos-old/x"] {
        assert!(!stored(&c.upload(0, a, clash, b"y", false)), "{clash}");
    }
    assert_eq!(names(&mut c, 0, a), before);
    // rm of a folder needs -r; bob cannot remove alice's.
    let rm = |name: &str| Request::Delete { name: name.into() };
    let rm_r = |name: &str| Request::DeleteFolder { name: name.into() };
    assert_eq!(
        c.request(0, a, &rm("photos")),
        vec![SessionMsg::Failed(OpError::IsAFolder)]
    );
    assert_eq!(
        c.request(1, b, &rm_r("photos")),
        vec![SessionMsg::Failed(OpError::NoSuchFile)]
    );
    assert_eq!(
        c.request(0, a, &rm_r("photos")),
        vec![SessionMsg::FileDone(FileOutcome::FolderDeleted {
            files: 2
        })]
    );
    c.run_for(Duration::from_secs(1));
    assert_eq!(names(&mut c, 0, a), [alice("photos-old")]);
    assert!(listed_under(&mut c, 1, b, "photos").is_empty());
    // The share went with the folder: a new photos/ is alice's alone.
    assert!(stored(&c.upload(0, a, "photos/new", b"z", false)));
    c.run_for(Duration::from_secs(1));
    assert_eq!(
        c.download(1, b, Some("alice"), "photos/new"),
        Err(vec![SessionMsg::Failed(OpError::NoSuchFile)])
    );
    for ix in 0..3 {
        assert_eq!(c.disk(ix).blobs.len(), 2, "server {ix}");
    }
}

#[test]
fn unsharing_a_folder_revokes_what_is_under_it() {
    let mut c = Cluster::new(1);
    let a = user(&mut c, 0, "alice");
    let b = user(&mut c, 0, "bob");
    assert!(stored(&c.upload(0, a, "d/e/f", b"x", false)));
    let req = |share: bool| match share {
        true => Request::Share {
            name: "d".into(),
            user: "bob".into(),
        },
        false => Request::Unshare {
            name: "d".into(),
            user: "bob".into(),
        },
    };
    assert_eq!(
        c.request(0, a, &req(true)),
        vec![SessionMsg::FileDone(FileOutcome::Shared)]
    );
    assert_eq!(c.download(0, b, Some("alice"), "d/e/f"), Ok(b"x".to_vec()));
    assert_eq!(
        c.request(0, a, &req(false)),
        vec![SessionMsg::FileDone(FileOutcome::Unshared)]
    );
    assert_eq!(
        c.request(0, a, &req(false)),
        vec![SessionMsg::Failed(OpError::NotShared)]
    );
    assert_eq!(
        c.download(0, b, Some("alice"), "d/e/f"),
        Err(vec![SessionMsg::Failed(OpError::NoSuchFile)])
    );
    // A share outlives the files under its folder: emptied by rm, the
    // folder can still be unshared (and then it is nothing at all).
    assert_eq!(
        c.request(0, a, &req(true)),
        vec![SessionMsg::FileDone(FileOutcome::Shared)]
    );
    let rm = Request::Delete {
        name: "d/e/f".into(),
    };
    assert_eq!(
        c.request(0, a, &rm),
        vec![SessionMsg::FileDone(FileOutcome::Deleted)]
    );
    assert_eq!(
        c.request(0, a, &req(true)),
        vec![SessionMsg::Failed(OpError::NoSuchFile)]
    );
    assert_eq!(
        c.request(0, a, &req(false)),
        vec![SessionMsg::FileDone(FileOutcome::Unshared)]
    );
    assert_eq!(
        c.request(0, a, &req(false)),
        vec![SessionMsg::Failed(OpError::NoSuchFile)]
    );
    // Bob sees no folder of alice's to share.
    let theirs = Request::Share {
        name: "d".into(),
        user: "alice".into(),
    };
    assert_eq!(
        c.request(0, b, &theirs),
        vec![SessionMsg::Failed(OpError::NoSuchFile)]
    );
}

#[test]
fn delete_removes_the_content_from_every_server() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    let a = user(&mut c, 0, "alice");
    let data = content(20_000, 4);
    assert!(stored(&c.upload(0, a, "tmp.bin", &data, false)));
    c.run_for(Duration::from_secs(2));
    let digest = *blake3::hash(&data).as_bytes();
    assert!((0..3).all(|ix| c.disk(ix).blobs.contains_key(&digest)));
    let got = c.request(
        0,
        a,
        &Request::Delete {
            name: "tmp.bin".into(),
        },
    );
    assert_eq!(got, vec![SessionMsg::FileDone(FileOutcome::Deleted)]);
    c.run_for(Duration::from_secs(1));
    assert!(
        (0..3).all(|ix| !c.disk(ix).blobs.contains_key(&digest)),
        "content gone everywhere"
    );
    assert!(names(&mut c, 0, a).is_empty());
}

#[test]
fn reuploading_a_name_needs_replace() {
    let mut c = Cluster::new(1);
    let a = user(&mut c, 0, "alice");
    assert!(stored(&c.upload(0, a, "f", b"one", false)));
    let again = c.upload(0, a, "f", b"two", false);
    assert!(
        again.is_empty() || again == vec![SessionMsg::Failed(OpError::FileExists)],
        "{again:?}"
    );
    assert_eq!(c.download(0, a, None, "f"), Ok(b"one".to_vec()));
    assert!(stored(&c.upload(0, a, "f", b"two", true)));
    assert_eq!(c.download(0, a, None, "f"), Ok(b"two".to_vec()));
    // The replaced content is garbage now.
    c.run_for(Duration::from_secs(1));
    assert!(!c
        .disk_mut(0)
        .blobs
        .contains_key(blake3::hash(b"one").as_bytes()));
}

#[test]
fn bad_names_are_refused_and_nothing_is_kept() {
    let mut c = Cluster::new(1);
    let a = user(&mut c, 0, "alice");
    // (A client that normalizes never sends "cafe\u{301}"; one that does
    // not is refused rather than given a second "café".)
    for bad in [
        "../etc/passwd",
        "a//b",
        "/abs",
        "dir/",
        "a/../b",
        "a/./b",
        "",
        "..",
        "x\0y",
        "cafe\u{301}",
        "pay\u{200B}pal",
    ] {
        c.upload(0, a, bad, b"data", false);
    }
    assert!(names(&mut c, 0, a).is_empty());
    assert!(c.disk_mut(0).blobs.is_empty());
    assert!(c.disk_mut(0).temps.is_empty());
}

#[test]
fn awkward_sizes_round_trip() {
    let mut c = Cluster::new(2);
    c.run_for(Duration::from_secs(1));
    let a = user(&mut c, 1, "alice");
    for (i, len) in [0usize, 1, 4096, 8192, 4097].into_iter().enumerate() {
        let data = content(len, i as u64);
        let name = format!("f{len}");
        assert!(stored(&c.upload(1, a, &name, &data, false)), "size {len}");
        assert_eq!(c.download(1, a, None, &name), Ok(data), "size {len}");
    }
}

#[test]
fn file_operations_need_a_proven_login() {
    let mut c = Cluster::new(1);
    let s = c.open_session(0);
    c.send(
        0,
        s,
        &SessionMsg::Begin {
            op: crate::server::OpCode::List,
        },
    );
    assert_eq!(
        c.received(0, s),
        vec![SessionMsg::Failed(OpError::NotAuthenticated)]
    );
}

#[test]
fn a_logged_out_token_stops_working_mid_session() {
    let mut c = Cluster::new(1);
    let s = c.open_session(0);
    c.request(
        0,
        s,
        &Request::Register {
            username: "alice".into(),
            password: "password-123".into(),
        },
    );
    let got = c.request(
        0,
        s,
        &Request::Login {
            username: "alice".into(),
            password: "password-123".into(),
        },
    );
    let [SessionMsg::LoggedIn { token, .. }] = &got[..] else {
        panic!()
    };
    c.request(
        0,
        s,
        &Request::WhoAmI {
            token: token.clone(),
        },
    );
    let other = c.open_session(0);
    c.request(
        0,
        other,
        &Request::Logout {
            token: token.clone(),
        },
    );
    let got = c.request(0, s, &Request::List);
    assert!(
        matches!(
            got[..],
            [SessionMsg::Failed(OpError::InvalidSession { .. })]
        ),
        "{got:?}"
    );
}

#[test]
fn over_quota_is_a_clear_refusal() {
    let mut c = Cluster::new(1);
    c.server_mut(0).files.set_quota(10_000);
    let a = user(&mut c, 0, "alice");
    assert!(stored(&c.upload(0, a, "small", &content(6000, 1), false)));
    c.upload(0, a, "big", &content(6000, 2), false);
    assert_eq!(names(&mut c, 0, a), vec![("alice".into(), "small".into())]);
    let _ = TransferError::Exists;
}

/// Kept to resume (see `partials`), but only until it expires.
#[test]
fn a_session_closed_mid_upload_leaves_no_temporary_file_past_partial_keep() {
    let mut c = Cluster::new_with(1, |cfg| cfg.partial_keep = Duration::from_secs(5));
    c.run_for(Duration::from_secs(1));
    let a = user(&mut c, 0, "alice");
    let req = Request::Upload {
        name: "big.bin".into(),
        size: 40 * 4096,
        replace: false,
        attrs: None,
    };
    c.send(0, a, &SessionMsg::Begin { op: req.op() });
    c.received(0, a);
    c.send(0, a, &req.payload());
    c.received(0, a);
    // A whole block: the receiver writes a block at a time.
    let chunk = crate::transfer::TransferMsg::Chunks {
        id: 0,
        seq: 0,
        data: vec![1; crate::transfer::BLOCK_BYTES as usize],
    };
    c.send(0, a, &SessionMsg::Transfer(chunk));
    assert_eq!(c.disk_mut(0).temps.len(), 1, "the upload is under way");
    c.input(0, crate::io::Input::Closed { conn: a });
    assert_eq!(c.disk_mut(0).temps.len(), 1, "kept to resume");
    c.run_for(Duration::from_secs(6));
    assert!(c.disk_mut(0).temps.is_empty(), "the temporary file is gone");
    assert!(c.disk_mut(0).blobs.is_empty());
    // Less than a block arrived: nothing to resume, nothing kept.
    let a = user(&mut c, 0, "alice");
    c.send(0, a, &SessionMsg::Begin { op: req.op() });
    c.received(0, a);
    c.send(0, a, &req.payload());
    c.received(0, a);
    let chunk = crate::transfer::TransferMsg::Chunks {
        id: 0,
        seq: 0,
        data: vec![1; 4096],
    };
    c.send(0, a, &SessionMsg::Transfer(chunk));
    c.input(0, crate::io::Input::Closed { conn: a });
    assert!(c.disk_mut(0).temps.is_empty(), "the temporary file is gone");
}

#[test]
fn a_restarted_server_brings_its_disk_in_line_without_new_entries() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    let a = user(&mut c, 0, "alice");
    let data = content(10_000, 7);
    assert!(stored(&c.upload(0, a, "notes", &data, false)));
    c.run_for(Duration::from_secs(2));
    let digest = *blake3::hash(&data).as_bytes();
    // Server 3 crashes with a fetch cut short: no content. Its log is
    // complete: restarting, it applies nothing new, and must still fetch.
    c.crash(2);
    c.disk_mut(2).blobs.remove(&digest);
    c.restart(2);
    c.run_for(Duration::from_secs(2));
    assert_eq!(c.disk(2).blob(&digest), Some(&data[..]));
}

#[test]
fn a_restarted_master_keeps_an_upload_its_log_has_not_committed_yet() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    user(&mut c, 0, "alice");
    // The master has an upload's content on its disk and its `PutFile` in
    // its log, and both followers are cut off before it commits; then it
    // crashes. (Built by hand: an upload is ordered only once a follower
    // holds a copy, and then it commits at once in this cluster.)
    let data = content(20_000, 5);
    let digest = *blake3::hash(&data).as_bytes();
    let owner = c
        .server(0)
        .replica()
        .state()
        .user_by_name("alice")
        .map(|u| u.id);
    let owner = owner.expect("alice is registered");
    c.partition(0, 1);
    c.partition(0, 2);
    c.disk_mut(0).blobs.insert(digest, data.clone().into());
    let origin = Origin {
        server: 1,
        session: 77,
        request: 1,
    };
    let txn = Txn::PutFile {
        owner,
        name: "notes".into(),
        size: data.len() as u64,
        digest,
        replace: false,
        holder: 1,
        attrs: None,
    };
    let now = c.now;
    c.server_mut(0).submit_for_test(now, origin, txn);
    c.settle();
    assert!(c.disk_mut(0).blobs.contains_key(&digest));
    c.crash(0);
    c.heal();
    c.restart(0);
    // The followers come back, the PutFile commits: the content must still
    // be there, on every server.
    c.run_for(Duration::from_secs(5));
    for ix in 0..3 {
        let held = c.disk(ix).blob(&digest);
        assert_eq!(held, Some(&data[..]), "server {} holds the content", ix + 1);
    }
}

#[test]
fn a_fetch_whose_offer_never_comes_is_given_up_and_tried_again() {
    use crate::balancer::ServerAddr;
    use crate::io::{Input, Node};
    use crate::replication::ReplicaConfig;
    use crate::server::{Server, ServerConfig};
    use crate::store::Store;
    use crate::testkit::cluster::addr;
    use crate::testkit::{closed, connects, drain, secret};

    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    let a = user(&mut c, 1, "alice");
    assert!(stored(&c.upload(1, a, "notes", &content(5000, 3), false)));
    c.run_for(Duration::from_secs(2));
    // Server 1 (the master) again from its store, without the content, and
    // no follower connected: it has no timer but the fetch's.
    let rec = c.store_mut(0).load().unwrap();
    let peers = (1..3)
        .map(|j| ServerAddr {
            id: j as u32 + 1,
            addr: addr(j),
        })
        .collect();
    let now = c.now;
    let mut s = Server::new(
        ServerConfig::new(1),
        ReplicaConfig::new(1, 1, peers),
        secret(),
        Entropy::from_u64(9),
        &rec,
        now,
    )
    .unwrap();
    // Replication dials every peer too; the fetch is the other dial.
    let dialed: Vec<_> = connects(&drain(&mut s))
        .into_iter()
        .filter(|(c, _)| c.n & crate::replication::REPLICA_DIALS == 0)
        .collect();
    let [(conn, _)] = dialed[..] else {
        panic!("one fetch dialed at start: {dialed:?}");
    };
    // Connected and asked; the answer is lost (a partition, say).
    s.handle_input(
        now,
        Input::Connected {
            conn,
            identity: crate::io::Identity::Unchecked,
        },
    );
    drain(&mut s);
    // Replication's timers (its dials) run too: step through them until
    // the fetch gives up, within the fetch's patience.
    let mut given_up = false;
    while !given_up {
        let t = s.poll_timeout().expect("the fetch waits with a deadline");
        assert!(t <= now + Duration::from_secs(10), "{t:?}");
        s.handle_timeout(t);
        given_up = closed(&drain(&mut s), conn);
    }
    // And tried again, from a server, before long.
    let mut again = 0;
    while again == 0 {
        let t = s.poll_timeout().expect("and tried again");
        assert!(t <= now + Duration::from_secs(20), "{t:?}");
        s.handle_timeout(t);
        again = connects(&drain(&mut s))
            .into_iter()
            .filter(|(c, _)| c.n & crate::replication::REPLICA_DIALS == 0)
            .count();
    }
    assert_eq!(again, 1, "from a server");
}

#[test]
fn a_session_that_ends_while_its_upload_is_persisted_leaves_no_garbage() {
    let mut c = Cluster::new(1);
    let a = user(&mut c, 0, "alice");
    c.hold_persists();
    let data = content(10_000, 7);
    c.upload(0, a, "f", &data, false);
    let digest = *blake3::hash(&data).as_bytes();
    assert!(
        c.disk_mut(0).blobs.contains_key(&digest),
        "the blob landed on disk"
    );
    // The client vanishes before the server hears the blob is durable.
    c.input(0, crate::io::Input::Closed { conn: a });
    c.release_persists();
    c.run_for(Duration::from_secs(1));
    let ev: Vec<String> = c.events.iter().map(|(_, e)| e.to_string()).collect();
    assert!(
        !c.disk_mut(0).blobs.contains_key(&digest),
        "collected: no file names it {ev:#?}"
    );
    let b = user(&mut c, 0, "alice");
    assert!(names(&mut c, 0, b).is_empty());
}

#[test]
fn a_restarted_follower_collects_an_upload_the_master_never_ordered() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    let a = user(&mut c, 1, "alice");
    // Server 2 takes an upload, and the master goes out of reach during
    // the transfer: the content lands, the `PutFile` waits to be
    // forwarded; then server 2 crashes, and its memory of the upload is
    // gone.
    let data = content(9_000, 11);
    let digest = *blake3::hash(&data).as_bytes();
    let cut = |c: &mut Cluster| c.partition(0, 1);
    assert!(!stored(&c.upload_then(1, a, "draft", &data, false, cut)));
    assert!(c.disk_mut(1).blobs.contains_key(&digest));
    c.crash(1);
    c.heal();
    c.restart(1);
    // Nothing new is ever applied: the blob must still go, once server 2
    // has rejoined and caught up with everything the master had, and the
    // time a copy is kept is up (the copy server 3 took, too).
    let keep = ServerConfig::new(1).copy_keep;
    c.run_for(keep + Duration::from_secs(5));
    for ix in 0..3 {
        assert!(
            !c.disk_mut(ix).blobs.contains_key(&digest),
            "server {} collected the never-ordered upload's content",
            ix + 1
        );
    }
    let b = user(&mut c, 0, "alice");
    assert!(names(&mut c, 0, b).is_empty(), "and no file names it");
}

#[test]
fn a_restarted_follower_holds_unnamed_content_until_it_has_caught_up() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    let a = user(&mut c, 1, "alice");
    let before = c.store(1).clone();
    let data = content(9_000, 12);
    let digest = *blake3::hash(&data).as_bytes();
    assert!(stored(&c.upload(1, a, "kept", &data, false)));
    c.run_for(Duration::from_secs(1));
    // Server 2 comes back from a crash with its store as it was before the
    // upload's entry reached it (the crash came first) but the content on
    // disk, and cannot reach the master: it must not take the content
    // nothing names yet for garbage.
    c.crash(1);
    *c.store_mut(1) = before;
    c.partition(0, 1);
    c.partition(1, 2);
    c.restart(1);
    c.run_for(Duration::from_secs(3));
    assert!(
        c.disk_mut(1).blobs.contains_key(&digest),
        "held while server 2 cannot know"
    );
    c.heal();
    c.run_for(Duration::from_secs(5));
    assert_eq!(c.disk(1).blob(&digest), Some(&data[..]));
}

#[test]
fn an_upload_whose_session_gave_up_waiting_releases_its_pin_once_applied() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    let a1 = user(&mut c, 0, "alice");
    let a2 = user(&mut c, 1, "alice");
    // Through server 2, cut off from the master during the transfer: the
    // answer times out ("it may still take effect").
    let late = content(7_000, 21);
    let late_digest = *blake3::hash(&late).as_bytes();
    let cut = |c: &mut Cluster| c.partition(0, 1);
    assert!(
        c.upload_then(1, a2, "f", &late, false, cut).is_empty(),
        "no answer yet"
    );
    c.run_for(Duration::from_secs(11));
    let answer = c.received(1, a2);
    assert!(
        matches!(
            answer[..],
            [SessionMsg::Failed(OpError::Unavailable { .. })]
        ),
        "{answer:?}"
    );
    // Meanwhile the same name is stored through the master.
    let first = content(5_000, 22);
    assert!(stored(&c.upload(0, a1, "f", &first, false)));
    // Healed, server 2's `PutFile` is ordered and refused (the name is
    // taken): its content is named by nothing and must go.
    c.heal();
    c.run_for(Duration::from_secs(5));
    assert!(
        !c.disk_mut(1).blobs.contains_key(&late_digest),
        "the refused upload's content is collected"
    );
    let digest = *blake3::hash(&first).as_bytes();
    for ix in 0..3 {
        assert_eq!(
            c.disk(ix).blob(&digest),
            Some(&first[..]),
            "server {}",
            ix + 1
        );
    }
}

#[test]
fn the_uploads_own_server_serves_its_content_before_applying_the_entry() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    let a = user(&mut c, 1, "alice");
    // The master applies the upload before server 2 (its holder) does, and
    // server 3 may ask server 2 in between: it is served at once, with no
    // refusal and retry a second later (no time passes here).
    let data = content(30_000, 31);
    assert!(stored(&c.upload(1, a, "early", &data, false)));
    let digest = *blake3::hash(&data).as_bytes();
    for ix in 0..3 {
        assert_eq!(
            c.disk(ix).blob(&digest),
            Some(&data[..]),
            "server {}",
            ix + 1
        );
    }
}

/// Server 3 fetched `data` (uploaded through server `via` as alice, while
/// server 3 was down) and sent it to disk; the disk has not answered yet.
/// Returns the content's digest.
fn fetch_held_on_server_3(c: &mut Cluster, via: usize, data: &[u8]) -> [u8; 32] {
    c.run_for(Duration::from_secs(1));
    let a = user(c, via, "alice");
    c.crash(2);
    assert!(stored(&c.upload(via, a, "f", data, false)));
    c.run_for(Duration::from_secs(2));
    let digest = *blake3::hash(data).as_bytes();
    assert!((0..2).all(|ix| c.disk(ix).blobs.contains_key(&digest)));
    // A slow disk from now on: blobs land, the answers wait.
    c.hold_persists();
    c.restart(2);
    c.run_for(Duration::from_secs(2));
    assert!(
        c.disk_mut(2).blobs.contains_key(&digest),
        "server 3 fetched the content and sent it to disk"
    );
    digest
}

fn delete_f(c: &mut Cluster, ix: usize) {
    let a = user(c, ix, "alice");
    let got = c.request(ix, a, &Request::Delete { name: "f".into() });
    assert_eq!(got, vec![SessionMsg::FileDone(FileOutcome::Deleted)]);
    c.run_for(Duration::from_secs(1));
}

#[test]
fn a_fetched_blob_deleted_before_the_disk_answers_is_collected_when_it_lands() {
    let mut c = Cluster::new(3);
    let digest = fetch_held_on_server_3(&mut c, 0, &content(20_000, 41));
    // The file is deleted: server 3 no longer wants the content it is
    // persisting.
    delete_f(&mut c, 0);
    c.release_persists();
    c.run_for(Duration::from_secs(1));
    for ix in 0..3 {
        assert!(
            !c.disk_mut(ix).blobs.contains_key(&digest),
            "server {} collected the content",
            ix + 1
        );
    }
}

#[test]
fn a_fetch_whose_link_breaks_before_the_disk_answers_keeps_track_of_its_blob() {
    let mut c = Cluster::new(3);
    // Server 3 fetches from server 2, the upload's holder.
    let data = content(20_000, 42);
    let digest = fetch_held_on_server_3(&mut c, 1, &data);
    // The holder goes away before server 3's disk answers: the fetch's
    // link breaks, and the fetch is given up (to be tried again).
    c.crash(1);
    c.run_for(Duration::from_millis(10));
    delete_f(&mut c, 0);
    c.release_persists();
    c.run_for(Duration::from_secs(1));
    assert!(
        !c.disk_mut(2).blobs.contains_key(&digest),
        "server 3 collected the content"
    );
    // Content still named when it lands is kept, known, and served.
    c.restart(1);
    let more = content(20_000, 43);
    let digest = fetch_held_on_server_3(&mut c, 0, &more);
    c.crash(0);
    c.restart(0);
    c.release_persists();
    c.run_for(Duration::from_secs(3));
    let a3 = user(&mut c, 2, "alice");
    assert_eq!(c.download(2, a3, None, "f"), Ok(more));
    assert!(c.disk_mut(2).blobs.contains_key(&digest));
}

#[test]
fn content_no_server_can_send_is_refused_with_what_happened() {
    let (mut c, _, data, digest) = with_upload(3, "far", 2_000_000, 31);
    c.run_for(Duration::from_secs(3));
    assert_eq!(c.disk(2).blob(&digest), Some(&data[..]));
    // Servers 0 and 2 come back without the content, and server 1, the
    // only one left holding it, is down: a fetch cannot move.
    c.crash(1);
    for ix in [0, 2] {
        c.crash(ix);
        c.disk_mut(ix).blobs.remove(&digest);
        c.restart(ix);
    }
    c.run_for(Duration::from_secs(2));
    let a = user(&mut c, 2, "alice");
    let got = c.download(2, a, None, "far");
    let Err(answer) = got else {
        panic!("served without the content: {got:?}");
    };
    let told = format!("{answer:?}");
    assert!(
        told.contains("not on this server yet, and no server holding it sent it within 10 s"),
        "{told}"
    );
    // Once its holder is back, the fetch completes and the file is served.
    c.restart(1);
    c.run_for(Duration::from_secs(5));
    assert_eq!(c.download(2, a, None, "far"), Ok(data));
}
