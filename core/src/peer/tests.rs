//! The peer node against an in-memory cluster of three servers: REGISTER
//! through different servers, UPDATE, CONNECT with admission, PUT and GET
//! through the shared directories, and what a crash or a quit leaves.

use super::connect::ConnectFail;
use super::event::PeerEvent;
use super::messages::PeerMsg;
use super::transfers::Transfers;
use crate::io::{ConnId, FileOp, Output};
use crate::outbox::Outbox;
use crate::server::user_files_tests::login_token;
use crate::testkit::cluster::{addr, Cluster};
use crate::testkit::peers::peer_addr;
use crate::transfer::{TransferError, TransferMsg};
use std::time::Duration;

/// A cluster of three and `users.len()` peers, peer `k` logged in as
/// `users[k]` and registered through server `k % 3`.
fn registered(users: &[&str]) -> Cluster {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    for (k, user) in users.iter().enumerate() {
        let token = login_token(&mut c, user);
        let p = c.add_peer(Some(token));
        c.with_peer(p, |n, now| n.register(now, addr(k % 3)));
        c.run_for(Duration::from_millis(500));
        assert!(c.peer(p).me().is_some(), "{user}: {:?}", c.events_of(p));
    }
    c.run_for(Duration::from_millis(500));
    c
}

fn last_update(c: &Cluster, k: usize) -> Vec<(String, String)> {
    (c.events_of(k).into_iter().rev())
        .find_map(|e| match e {
            PeerEvent::Update { peers } => {
                Some(peers.into_iter().map(|p| (p.user, p.addr)).collect())
            }
            _ => None,
        })
        .unwrap_or_default()
}

/// Connects peer `from` to peer `to`; the connection's number.
fn connect(c: &mut Cluster, from: usize, to: usize) -> u32 {
    let link = c
        .with_peer(from, |n, now| n.connect(now, peer_addr(to)))
        .unwrap();
    c.run_for(Duration::from_millis(100));
    assert!(
        c.events_of(from).contains(&PeerEvent::Connected {
            link,
            peer: c.peer(to).me().unwrap(),
            addr: peer_addr(to)
        }),
        "{:?}",
        c.events_of(from)
    );
    link
}

#[test]
fn peers_registered_through_three_servers_all_hear_the_same_list() {
    let c = registered(&["alice", "bob", "carol"]);
    let want: Vec<(String, String)> = ["alice", "bob", "carol"]
        .iter()
        .enumerate()
        .map(|(k, u)| (u.to_string(), peer_addr(k)))
        .collect();
    for k in 0..3 {
        assert_eq!(last_update(&c, k), want, "peer {k}");
    }
}

#[test]
fn register_without_a_login_is_register_fail_and_a_server_death_is_survived() {
    let mut c = registered(&["alice", "bob"]);
    let nobody = c.add_peer(None);
    c.with_peer(nobody, |n, now| n.register(now, addr(0)));
    assert!(matches!(
        c.events_of(nobody)[..],
        [PeerEvent::RegisterFailed { ref reason }] if reason.contains("not logged in")
    ));

    // bob registered through server 2; it dies. bob registers again (the
    // address is a server, which now refuses: so through another attempt
    // at the same address, which fails until it is back).
    let first = c.peer(1).me().unwrap();
    c.crash(1);
    c.run_for(Duration::from_secs(2));
    assert!(
        (c.events_of(1).iter()).any(|e| matches!(e, PeerEvent::TrackerLost { .. })),
        "{:?}",
        c.events_of(1)
    );
    c.restart(1);
    c.run_for(Duration::from_secs(40));
    let again =
        (c.peer(1).me()).unwrap_or_else(|| panic!("registered again: {:?}", c.events_of(1)));
    assert!(again > first);
    // alice's list has the new bob and, once the old lease runs out, not
    // the old one.
    c.run_for(Duration::from_secs(35));
    assert_eq!(
        last_update(&c, 0),
        vec![
            ("alice".to_string(), peer_addr(0)),
            ("bob".to_string(), peer_addr(1))
        ]
    );
}

#[test]
fn put_and_get_move_files_byte_for_byte_and_never_replace_one() {
    let mut c = registered(&["alice", "bob"]);
    let link = connect(&mut c, 0, 1);
    let content: Vec<u8> = (0..300_123u32).map(|i| (i * 7 + i / 4096) as u8).collect();
    c.peer_dir_mut(0).put("report.bin", &content, 1_000);
    c.with_peer(0, |n, _| n.put(link, "report.bin")).unwrap();
    c.run_for(Duration::from_secs(1));
    assert_eq!(c.peer_dir(1).get("report.bin"), Some(&content[..]));
    let told = c.events_of(0);
    assert!(told.contains(&PeerEvent::PutDone {
        link,
        name: "report.bin".into(),
        size: content.len() as u64
    }));
    assert!(c.events_of(1).iter().any(|e| matches!(
        e,
        PeerEvent::Received { name, size: 300_123, token: None, .. } if name == "report.bin"
    )));

    // The same name again, other content: PUT FAIL, bob's copy kept.
    c.peer_dir_mut(0).files.remove("report.bin");
    c.peer_dir_mut(0).put("report.bin", b"other", 2_000);
    c.with_peer(0, |n, _| n.put(link, "report.bin")).unwrap();
    c.run_for(Duration::from_secs(1));
    assert_eq!(c.peer_dir(1).get("report.bin"), Some(&content[..]));
    assert!(c.events_of(0).iter().any(|e| matches!(
        e,
        PeerEvent::PutFailed { reason, .. } if reason.contains("already has")
    )));

    // GET the other way, on the connection bob accepted (number 1 there);
    // an empty file; a missing one.
    c.peer_dir_mut(0).put("notes", b"from alice", 3_000);
    c.peer_dir_mut(0).put("empty", b"", 3_000);
    c.with_peer(1, |n, _| n.get(1, "notes")).unwrap();
    c.with_peer(1, |n, _| n.get(1, "empty")).unwrap();
    c.with_peer(1, |n, _| n.get(1, "missing")).unwrap();
    c.run_for(Duration::from_secs(1));
    assert_eq!(c.peer_dir(1).get("notes"), Some(&b"from alice"[..]));
    assert_eq!(c.peer_dir(1).get("empty"), Some(&b""[..]));
    assert!(c.events_of(1).iter().any(|e| matches!(
        e,
        PeerEvent::GetFailed { name, reason, .. } if name == "missing" && reason.contains("no such file")
    )));
    // A name typed in NFD is the NFC name: bob asks for "cafe\u{301}" and
    // gets alice's "caf\u{e9}", kept under that one name.
    c.peer_dir_mut(0).put("caf\u{e9}", b"menu", 3_000);
    c.with_peer(1, |n, _| n.get(1, "cafe\u{301}")).unwrap();
    c.run_for(Duration::from_secs(1));
    assert_eq!(c.peer_dir(1).get("caf\u{e9}"), Some(&b"menu"[..]));
    assert_eq!(c.peer_dir(1).get("cafe\u{301}"), None);
    // A GET of a name this peer already has is refused before asking.
    c.with_peer(1, |n, _| n.get(1, "notes")).unwrap();
    c.run_for(Duration::from_millis(100));
    assert!(c.events_of(1).iter().any(|e| matches!(
        e,
        PeerEvent::GetFailed { name, reason, .. } if name == "notes" && reason.contains("already")
    )));
    for k in 0..2 {
        assert!(c.peer_dir(k).anomalies.is_empty(), "{:?}", c.peer_dir(k));
        assert!(c.peer_dir(k).temps.is_empty(), "{:?}", c.peer_dir(k));
    }
}

#[test]
fn bad_names_are_refused_before_anything_is_sent() {
    let mut c = registered(&["alice", "bob"]);
    let link = connect(&mut c, 0, 1);
    for bad in [
        "../x",
        "/etc/passwd",
        "..",
        ".",
        "a/b",
        "",
        "x\u{202e}y",
        "nul\0",
        "zero\u{200b}width",
        " leading space",
    ] {
        let put = c.with_peer(0, |n, _| n.put(link, bad));
        assert!(matches!(put, Err(super::PeerError::BadName(_))), "{bad:?}");
        let get = c.with_peer(0, |n, _| n.get(link, bad));
        assert!(matches!(get, Err(super::PeerError::BadName(_))), "{bad:?}");
    }
    assert!(matches!(
        c.with_peer(0, |n, _| n.put(99, "x")),
        Err(super::PeerError::NoSuchLink(99))
    ));
}

/// The receiving side checks names itself: a peer that skips its own
/// checks is answered GET FAIL / PUT FAIL and nothing is looked up.
#[test]
fn names_from_the_other_peer_are_checked_before_anything_is_looked_up() {
    let mut t = Transfers::new(16, Duration::from_secs(10));
    let mut out: Outbox<PeerEvent> = Outbox::default();
    let conn = ConnId::accepted(1);
    let now = crate::time::Timestamp::from_micros(0);
    // (Not NFC: this peer's user typed it, its own node would have
    // normalized it; the other one did not.)
    for bad in [
        "../x",
        "..",
        "/etc/passwd",
        "a/b",
        "x\u{7}",
        "cafe\u{301}",
        "a\u{200b}b",
    ] {
        let get = PeerMsg::Get {
            id: 1,
            name: bad.into(),
        };
        t.on_msg(now, conn, 1, get, &mut out);
        let offer = TransferMsg::Offer {
            id: 2,
            name: bad.into(),
            size: 10,
        };
        t.on_msg(
            now,
            conn,
            1,
            PeerMsg::Xfer {
                mine: true,
                msg: offer,
            },
            &mut out,
        );
        let mut sent = Vec::new();
        while let Some(o) = out.pop() {
            match o {
                Output::Transmit { bytes, .. } => {
                    let mut d = crate::frame::FrameDecoder::default();
                    d.push(&bytes);
                    let payload = d.next_payload().unwrap().unwrap().to_vec();
                    sent.push(crate::frame::decode::<PeerMsg>(&payload).unwrap());
                }
                Output::File(FileOp::List { .. }) => panic!("{bad:?} was looked up"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        assert!(
            matches!(
                &sent[..],
                [
                    PeerMsg::GetFail {
                        id: 1,
                        reason: TransferError::BadName { .. }
                    },
                    PeerMsg::Xfer {
                        mine: false,
                        msg: TransferMsg::Reject {
                            id: 2,
                            reason: TransferError::BadName { .. }
                        }
                    }
                ]
            ),
            "{bad:?}: {sent:?}"
        );
    }
}

#[test]
fn only_peers_on_the_list_with_their_own_ticket_are_admitted() {
    let mut c = registered(&["alice", "bob"]);
    // Not registered: it cannot even present itself.
    let dave = login_token(&mut c, "dave");
    let stranger = c.add_peer(Some(dave));
    let link = c
        .with_peer(stranger, |n, now| n.connect(now, peer_addr(1)))
        .unwrap();
    c.run_for(Duration::from_millis(100));
    assert!(c.events_of(stranger).iter().any(|e| matches!(
        e,
        PeerEvent::ConnectFailed { link: l, reason, .. } if *l == link && reason.contains("not registered")
    )));
    // Registered, but bob has not heard of it yet: stop the UPDATE by
    // cutting bob's server off... simpler: a peer whose list lacks the
    // other refuses it. Crash bob's server so bob keeps an old list, then
    // register the stranger elsewhere and connect.
    c.partition(1, 0);
    c.partition(1, 2);
    c.with_peer(stranger, |n, now| n.register(now, addr(0)));
    c.run_for(Duration::from_millis(500));
    assert!(c.peer(stranger).me().is_some());
    let link = c
        .with_peer(stranger, |n, now| n.connect(now, peer_addr(1)))
        .unwrap();
    c.run_for(Duration::from_millis(100));
    let me = c.peer(stranger).me().unwrap();
    assert!(c.events_of(1).contains(&PeerEvent::Refused {
        from: "peer".into(),
        reason: ConnectFail::UnknownPeer { peer: me }
    }));
    assert!(c.events_of(stranger).iter().any(|e| matches!(
        e,
        PeerEvent::ConnectFailed { link: l, reason, .. } if *l == link && reason.contains("unknown peer")
    )));
    // Once bob hears the list, the stranger is admitted.
    c.heal();
    c.run_for(Duration::from_secs(2));
    connect(&mut c, stranger, 1);
}

#[test]
fn a_peer_that_dies_mid_transfer_leaves_no_partial_file_and_quit_leaves_the_list() {
    let mut c = registered(&["alice", "bob", "carol"]);
    let link = connect(&mut c, 0, 1);
    let big = vec![7u8; 8 << 20];
    c.peer_dir_mut(0).put("big", &big, 1);
    c.set_peer_read_delay(0, Some(Duration::from_millis(1)));
    c.with_peer(0, |n, _| n.put(link, "big")).unwrap();
    // Part of the way: bob has a temporary file, no "big".
    c.run_for(Duration::from_millis(20));
    assert!(!c.peer_dir(1).temps.is_empty());
    c.crash_peer(0);
    c.run_for(Duration::from_secs(1));
    assert!(c.peer_dir(1).get("big").is_none());
    assert!(c.peer_dir(1).temps.is_empty(), "{:?}", c.peer_dir(1));
    assert!(c.events_of(1).iter().any(|e| matches!(
        e,
        PeerEvent::ReceiveFailed { name, .. } if name == "big"
    )));
    // alice's process died, so her tracker link closed: she left. carol
    // quits: bob's list loses her too, at once.
    c.with_peer(2, |n, _| n.quit());
    c.run_for(Duration::from_millis(500));
    assert_eq!(last_update(&c, 1), vec![("bob".to_string(), peer_addr(1))]);
    assert!(c.peer(2).is_idle());
}

fn contents(c: &Cluster, k: usize) -> Vec<(String, Vec<u8>)> {
    (c.peer_dir(k).files.iter())
        .map(|(n, f)| (n.clone(), f.content.to_vec()))
        .collect()
}

/// A whole SYNC round among three peers: every peer writes once, in
/// turn; afterwards the three directories hold the same names with the
/// same contents, the newest version of a name both hold keeps it and the
/// others are kept under their conflict names.
#[test]
fn a_sync_round_leaves_every_directory_alike_and_keeps_every_version() {
    use super::sync_plan::conflict_name;
    let mut c = registered(&["alice", "bob", "carol"]);
    let big: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
    c.peer_dir_mut(0).put("a", b"from alice", 1_000);
    c.peer_dir_mut(0).put("x", b"alice's x", 5_000);
    c.peer_dir_mut(0).put("big", &big, 1_000);
    c.peer_dir_mut(1).put("b", b"from bob", 1_000);
    c.peer_dir_mut(1).put("x", b"bob's x (newest)", 9_000);
    c.peer_dir_mut(2).put("c", b"", 1_000);
    c.peer_dir_mut(2).put("x", b"carol's x", 2_000);
    c.with_peer(0, |n, now| n.sync(now)).unwrap();
    c.run_for(Duration::from_secs(10));
    for k in 0..3 {
        let told = c.events_of(k);
        assert!(
            told.iter().any(|e| matches!(e, PeerEvent::SyncFin { .. })),
            "peer {k} wrote: {told:?}"
        );
        assert!(told.iter().any(|e| matches!(e, PeerEvent::SyncEnd { .. })));
    }
    let want = contents(&c, 0);
    assert_eq!(contents(&c, 1), want);
    assert_eq!(contents(&c, 2), want);
    let d = |s: &[u8]| *blake3::hash(s).as_bytes();
    let names: Vec<&str> = want.iter().map(|(n, _)| n.as_str()).collect();
    let mut expected = vec![
        "a".to_string(),
        "b".into(),
        "big".into(),
        "c".into(),
        "x".into(),
        conflict_name("x", &d(b"alice's x")),
        conflict_name("x", &d(b"carol's x")),
    ];
    expected.sort();
    assert_eq!(names, expected);
    assert_eq!(c.peer_dir(0).get("x"), Some(&b"bob's x (newest)"[..]));
    assert_eq!(c.peer_dir(2).get("big"), Some(&big[..]));
    // A copy keeps its original's modification time.
    assert_eq!(c.peer_dir(2).files["b"].modified_ms, 1_000);
    // Every file a reader received came under the token of a turn that
    // peer was told of (SYNC OK to the writer, SYNC READ to the others).
    let told: Vec<_> = (0..3)
        .flat_map(|k| c.events_of(k))
        .filter_map(|e| match e {
            PeerEvent::SyncWriting { token, .. } | PeerEvent::SyncReading { token, .. } => {
                Some(token)
            }
            _ => None,
        })
        .collect();
    for k in 0..3 {
        for e in c.events_of(k) {
            if let PeerEvent::Received { token, .. } = e {
                assert!(token.is_some_and(|t| told.contains(&t)), "{e:?}");
            }
        }
    }
    for k in 0..3 {
        assert!(c.peer_dir(k).anomalies.is_empty(), "{:?}", c.peer_dir(k));
    }
}

/// A writer cut off from the cluster loses its turn when its lease runs
/// out; the next writer's larger token fences off what the old one is
/// still sending: its file never lands, and the round ends among the
/// others with their directories alike.
#[test]
fn a_writer_cut_off_mid_turn_is_fenced_off_by_the_next_token() {
    let mut c = registered(&["alice", "bob", "carol"]);
    let big = vec![9u8; 12 << 20];
    c.peer_dir_mut(0).put("big", &big, 1_000);
    c.peer_dir_mut(1).put("b", b"from bob", 1_000);
    c.peer_dir_mut(2).put("c", b"from carol", 1_000);
    // alice's disk is slow: her turn outlasts her lease.
    c.set_peer_read_delay(0, Some(Duration::from_millis(500)));
    c.with_peer(0, |n, now| n.sync(now)).unwrap();
    c.run_for(Duration::from_secs(1));
    // alice's server (the master) is cut off from the others: her SYNC
    // WRITING no longer reaches the cluster. Hashing her file takes her
    // 24 s; sending it, 24 s more; her lease runs out 30 s after the grant,
    // while she sends it to bob.
    c.partition(0, 1);
    c.partition(0, 2);
    c.run_for(Duration::from_secs(60));
    assert!(c.peer_dir(1).get("big").is_none(), "a fenced write landed");
    assert!(c.peer_dir(1).temps.is_empty());
    assert_eq!(contents(&c, 1), contents(&c, 2));
    assert!(c.peer_dir(1).get("c").is_some() && c.peer_dir(2).get("b").is_some());
    for k in [1, 2] {
        assert!(
            (c.events_of(k).iter()).any(|e| matches!(e, PeerEvent::SyncEnd { .. })),
            "{:?}",
            c.events_of(k)
        );
    }
    assert!((c.events_of(1).iter()).any(|e| matches!(
        e,
        PeerEvent::ReceiveFailed { name, reason, .. } if name == "big" && reason.contains("stale")
    )));
}

/// A copy made by a plain PUT or GET takes the receiver's time, so one
/// version may be the newest at one peer and lose at another: here bob's
/// version lost its name once already and is kept under its conflict
/// name, and bob also still holds it under the name. When alice's newer
/// version takes the name, bob's rename to the conflict name (which never
/// replaces) cannot happen; the version is kept there already, so the
/// name goes, and the round still leaves both directories alike.
#[test]
fn a_yield_whose_version_is_kept_already_gives_up_the_name() {
    use super::sync_plan::conflict_name;
    let mut c = registered(&["alice", "bob"]);
    let bobs = b"bob's x".to_vec();
    let aside = conflict_name("x", blake3::hash(&bobs).as_bytes());
    c.peer_dir_mut(0).put("x", b"alice's x (newest)", 9_000);
    c.peer_dir_mut(1).put("x", &bobs, 5_000);
    c.peer_dir_mut(1).put(&aside, &bobs, 2_000);
    c.with_peer(0, |n, now| n.sync(now)).unwrap();
    c.run_for(Duration::from_secs(10));
    for k in 0..2 {
        assert!(
            (c.events_of(k).iter()).any(|e| matches!(e, PeerEvent::SyncEnd { .. })),
            "{:?}",
            c.events_of(k)
        );
    }
    assert_eq!(contents(&c, 0), contents(&c, 1));
    assert_eq!(c.peer_dir(1).get("x"), Some(&b"alice's x (newest)"[..]));
    assert_eq!(c.peer_dir(0).get(&aside), Some(&bobs[..]));
}

/// A file that takes longer to send than a reader has to answer (30 s)
/// is still sent: the reader's patience does not run while a transfer
/// moves (it has its own idle timeout), and the writer does not spin on a
/// deadline it will not act on.
#[test]
fn a_put_that_outlasts_the_readers_patience_ends_the_turn() {
    let mut c = registered(&["alice", "bob"]);
    let big = vec![5u8; 20 << 20];
    c.peer_dir_mut(0).put("big", &big, 1_000);
    // Hashing takes alice 40 s, sending 40 s more.
    c.set_peer_read_delay(0, Some(Duration::from_millis(500)));
    c.with_peer(0, |n, now| n.sync(now)).unwrap();
    c.run_for(Duration::from_secs(120));
    assert_eq!(c.peer_dir(1).get("big").map(<[u8]>::len), Some(big.len()));
    for k in 0..2 {
        assert!(
            (c.events_of(k).iter()).any(|e| matches!(e, PeerEvent::SyncEnd { .. })),
            "{:?}",
            c.events_of(k)
        );
    }
}

/// A SYNC copy keeps its original's modification time, so the version
/// that takes a name can match the one set aside in size and time: the
/// digest a reader cached for the name must not be taken for the new
/// version's. carol's `x` (v1) gives way to alice's v2 of the same size
/// and time; in bob's turn carol must list v2 under `x`, and set v2 aside
/// for bob's v3, not take it for v1 (which is kept already) and drop it.
#[test]
fn a_version_that_takes_a_name_is_hashed_anew_though_its_size_and_time_match() {
    use super::sync_plan::conflict_name;
    let mut c = registered(&["alice", "bob", "carol"]);
    let d = |s: &[u8]| *blake3::hash(s).as_bytes();
    let mut versions: Vec<Vec<u8>> = (0..10)
        .map(|i| format!("version {i}").into_bytes())
        .collect();
    versions.sort_by_key(|v| d(v));
    let (v1, v2, v3) = (&versions[0], &versions[1], &versions[2]);
    c.peer_dir_mut(0).put("x", v2, 1_000);
    c.peer_dir_mut(1).put("x", v3, 1_000);
    c.peer_dir_mut(2).put("x", v1, 1_000);
    c.with_peer(0, |n, now| n.sync(now)).unwrap();
    c.run_for(Duration::from_secs(10));
    let asides: Vec<String> = (c.events_of(2).into_iter())
        .filter_map(|e| match e {
            PeerEvent::SetAside { aside, .. } => Some(aside),
            _ => None,
        })
        .collect();
    assert_eq!(
        asides,
        vec![conflict_name("x", &d(v1)), conflict_name("x", &d(v2))]
    );
    assert_eq!(contents(&c, 0), contents(&c, 2));
    assert_eq!(contents(&c, 1), contents(&c, 2));
    assert_eq!(c.peer_dir(2).get("x"), Some(&v3[..]));
}

/// What arrives on a peer's listener from anyone: a forged ticket, another
/// version, garbage, a message out of turn — each is refused or dropped,
/// the connection closed, and the peer goes on serving.
#[test]
fn forged_tickets_other_versions_and_garbage_are_refused_without_harm() {
    use super::messages::PEER_PROTOCOL_VERSION;
    let mut c = registered(&["alice", "bob"]);
    let alice = c.size();
    let bob_id = c.peer(1).me().unwrap();
    let hello = |peer, ticket, version| {
        crate::frame::encode(&PeerMsg::Connect {
            version,
            peer,
            ticket,
        })
        .unwrap()
    };
    // bob is listed, but this is not his ticket.
    let forged = c.raw_to_peer(0, &hello(bob_id, [7; 32], PEER_PROTOCOL_VERSION));
    assert_eq!(
        c.received_as::<PeerMsg>(alice, forged),
        vec![PeerMsg::ConnectFail {
            reason: ConnectFail::BadTicket
        }]
    );
    let old = c.raw_to_peer(0, &hello(bob_id, [7; 32], 99));
    assert!(matches!(
        c.received_as::<PeerMsg>(alice, old)[..],
        [PeerMsg::ConnectFail {
            reason: ConnectFail::Version { theirs: 99, .. }
        }]
    ));
    // A GET before CONNECT, a frame too large, and bytes that are no frame.
    let early = crate::frame::encode(&PeerMsg::Get {
        id: 1,
        name: "x".into(),
    })
    .unwrap();
    c.raw_to_peer(0, &early);
    c.raw_to_peer(0, &[0xff; 16]);
    c.raw_to_peer(0, &u32::MAX.to_be_bytes());
    c.run_for(Duration::from_secs(6));
    // None of them is left open, and alice still serves bob.
    assert!(c.peer(0).links().is_empty(), "{:?}", c.peer(0).links());
    let link = connect(&mut c, 1, 0);
    c.peer_dir_mut(0).put("still", b"here", 1);
    c.with_peer(1, |n, _| n.get(link, "still")).unwrap();
    c.run_for(Duration::from_secs(1));
    assert_eq!(c.peer_dir(1).get("still"), Some(&b"here"[..]));
}

/// A directory whose listing is larger than a frame is listed in pages:
/// the round still brings both peers to the same files.
#[test]
fn a_sync_round_over_directories_larger_than_a_frame_lists_them_in_pages() {
    let mut c = registered(&["alice", "bob"]);
    for i in 0..4000 {
        let name = format!("a-long-shared-file-name-so-that-the-listing-is-large-{i:05}");
        for k in 0..2 {
            c.peer_dir_mut(k).put(&name, &[(i % 256) as u8], 1_000);
        }
    }
    c.peer_dir_mut(0).put("only alice", b"a", 1_000);
    c.peer_dir_mut(1).put("only bob", b"b", 1_000);
    c.with_peer(1, |n, now| n.sync(now)).unwrap();
    c.run_for(Duration::from_secs(10));
    for k in 0..2 {
        assert!(
            (c.events_of(k).iter()).any(|e| matches!(e, PeerEvent::SyncEnd { .. })),
            "peer {k}"
        );
        assert_eq!(c.peer_dir(k).files.len(), 4002, "peer {k}");
    }
    assert_eq!(contents(&c, 0), contents(&c, 1));
}

/// A file whose name other peers would refuse (here with a zero-width
/// space) is not offered in a round; the rest of the round goes on.
#[test]
fn a_name_other_peers_would_refuse_is_not_offered_in_a_round() {
    let mut c = registered(&["alice", "bob"]);
    c.peer_dir_mut(0).put("zero\u{200b}width", b"hidden", 1_000);
    c.peer_dir_mut(0).put("plain", b"shown", 1_000);
    c.with_peer(0, |n, now| n.sync(now)).unwrap();
    c.run_for(Duration::from_secs(5));
    assert_eq!(c.peer_dir(1).get("plain"), Some(&b"shown"[..]));
    assert!(c.peer_dir(1).get("zero\u{200b}width").is_none());
    let failed = (c.events_of(0).into_iter())
        .filter(|e| {
            matches!(
                e,
                PeerEvent::PutFailed { .. } | PeerEvent::SyncSkipped { .. }
            )
        })
        .count();
    assert_eq!(failed, 0, "{:?}", c.events_of(0));
    assert!(c
        .events_of(1)
        .iter()
        .any(|e| matches!(e, PeerEvent::SyncEnd { .. })));
}

/// A file whose name on disk is in another normal form (NFD, as some
/// programs write names) is the same name: PUT by its NFC name sends it
/// under that name, and a GET of the NFC name finds it; a file arriving
/// under the NFC name is refused where the NFD one is (one name).
#[test]
fn a_name_on_disk_in_another_normal_form_is_the_same_name() {
    let mut c = registered(&["alice", "bob"]);
    let link = connect(&mut c, 0, 1);
    c.peer_dir_mut(0).put("cafe\u{301}", b"decomposed", 1_000);
    c.with_peer(0, |n, _| n.put(link, "café")).unwrap();
    c.run_for(Duration::from_secs(1));
    assert_eq!(c.peer_dir(1).get("café"), Some(&b"decomposed"[..]));
    // bob asks alice for it by its NFC name, over the link he accepted:
    // alice finds it, and bob already has it, so he refuses to ask.
    c.peer_dir_mut(0).put("nai\u{308}ve", b"naive", 1_000);
    c.with_peer(1, |n, _| n.get(1, "naïve")).unwrap();
    c.run_for(Duration::from_secs(1));
    assert_eq!(c.peer_dir(1).get("naïve"), Some(&b"naive"[..]));
    // alice holds "naïve" (as NFD): a PUT of it from bob is refused.
    c.with_peer(1, |n, _| n.put(1, "naïve")).unwrap();
    c.run_for(Duration::from_secs(1));
    assert!(
        c.peer_dir(0).get("naïve").is_none(),
        "a second, look-alike name"
    );
    assert!(c.events_of(1).iter().any(|e| matches!(
        e,
        PeerEvent::PutFailed { name, .. } if name == "naïve"
    )));
}
