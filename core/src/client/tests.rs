use super::*;
use crate::testkit::*;

fn client() -> Client {
    let mut c = Client::new(ClientConfig::new("balancer:7000"));
    c.start(ms(0));
    c
}

fn code() -> AuthCode {
    secret().mint(2, [4; 16], ms(0), crate::auth::CODE_TTL)
}

fn recv<M: speedy::Writable<speedy::LittleEndian>>(
    c: &mut Client,
    now: Timestamp,
    conn: ConnId,
    msg: &M,
) -> Vec<Output<ClientEvent>> {
    let bytes = bytes_of(msg);
    c.handle_input(
        now,
        Input::Received {
            conn,
            bytes: &bytes,
        },
    );
    drain(c)
}

/// Drives the client up to the point where it dialed the assigned server.
fn assigned(c: &mut Client) -> ConnId {
    let outs = drain(c);
    assigned_after(c, &outs)
}

/// Like `assigned`, from outputs that hold the balancer dial.
fn assigned_after(c: &mut Client, outs: &[Output<ClientEvent>]) -> ConnId {
    let (bal, addr) = connects(outs)[0].clone();
    assert_eq!(addr, "balancer:7000");
    c.handle_input(
        ms(1),
        Input::Connected {
            conn: bal,
            identity: crate::io::Identity::Unchecked,
        },
    );
    let outs = drain(c);
    assert_eq!(
        sent::<BalancerMsg, _>(&outs, bal),
        vec![BalancerMsg::GetServer {
            version: PROTOCOL_VERSION
        }]
    );
    let outs = recv(
        c,
        ms(2),
        bal,
        &BalancerMsg::Assigned {
            server_id: 2,
            addr: "server2:7002".into(),
            code: code(),
        },
    );
    assert!(closed(&outs, bal));
    let (srv, addr) = connects(&outs)[0].clone();
    assert_eq!(addr, "server2:7002");
    srv
}

#[test]
fn full_handshake_establishes_a_session() {
    let mut c = client();
    let srv = assigned(&mut c);
    c.handle_input(
        ms(3),
        Input::Connected {
            conn: srv,
            identity: crate::io::Identity::Unchecked,
        },
    );
    let outs = drain(&mut c);
    assert_eq!(
        sent::<SessionMsg, _>(&outs, srv),
        vec![SessionMsg::Hello {
            version: PROTOCOL_VERSION,
            code: code()
        }]
    );
    let outs = recv(&mut c, ms(4), srv, &SessionMsg::HelloAck { server_id: 2 });
    assert_eq!(sent::<SessionMsg, _>(&outs, srv), vec![SessionMsg::Ack]);
    assert_eq!(
        events(&outs),
        vec![ClientEvent::Connected {
            server_id: 2,
            addr: "server2:7002".into()
        }]
    );
    assert_eq!(c.session(), Some((srv, 2, "server2:7002")));
    assert_eq!(
        c.poll_timeout(),
        Some(ms(4) + Duration::from_secs(20)),
        "next ping"
    );
    c.handle_input(ms(5), Input::Closed { conn: srv });
    assert_eq!(events(&drain(&mut c)), vec![ClientEvent::Disconnected]);
    assert!(c.is_done());
}

#[test]
fn no_server_is_a_clear_failure_not_a_retry() {
    let mut c = client();
    let (bal, _) = connects(&drain(&mut c))[0].clone();
    c.handle_input(
        ms(1),
        Input::Connected {
            conn: bal,
            identity: crate::io::Identity::Unchecked,
        },
    );
    drain(&mut c);
    let outs = recv(
        &mut c,
        ms(2),
        bal,
        &BalancerMsg::NoServer {
            probed: 3,
            busy: 1,
            no_master: 1,
            catching_up: 0,
        },
    );
    let evs = events(&outs);
    let tally = crate::balancer::Tally {
        probed: 3,
        busy: 1,
        no_master: 1,
        catching_up: 0,
    };
    assert_eq!(evs, vec![ClientEvent::Failed(ClientError::NoServer(tally))]);
    assert_eq!(
        evs[0].to_string(),
        "failed: no server available: no master elected yet \
         (3 asked: 1 busy, 1 without a master, 1 not answering)"
    );
    let says = |probed, busy, no_master| {
        crate::balancer::Tally {
            probed,
            busy,
            no_master,
            catching_up: 0,
        }
        .to_string()
    };
    assert_eq!(says(3, 3, 0), "all busy (3 asked)");
    assert_eq!(says(3, 0, 0), "none answering (3 asked)");
    assert_eq!(says(2, 0, 2), "no master elected yet (2 asked)");
    // Numbers from the wire that do not add up (a lying balancer) are
    // said as they came, never a panic.
    assert!(!says(0, 1, 2).is_empty());
    assert!(!says(u32::MAX, u32::MAX, u32::MAX).is_empty());
    assert!(c.is_done());
}

#[test]
fn unreachable_balancer_fails_without_retry() {
    let mut c = client();
    let (bal, _) = connects(&drain(&mut c))[0].clone();
    c.handle_input(
        ms(1),
        Input::ConnectFailed {
            conn: bal,
            reason: "connection refused".into(),
        },
    );
    let outs = drain(&mut c);
    assert!(connects(&outs).is_empty());
    assert_eq!(
        events(&outs),
        vec![ClientEvent::Failed(ClientError::Unreachable {
            peer: Peer::Balancer,
            reason: "connection refused".into()
        })]
    );
}

#[test]
fn silent_balancer_times_out() {
    let mut c = client();
    let (bal, _) = connects(&drain(&mut c))[0].clone();
    c.handle_input(
        ms(1),
        Input::Connected {
            conn: bal,
            identity: crate::io::Identity::Unchecked,
        },
    );
    drain(&mut c);
    assert_eq!(c.poll_timeout(), Some(ms(5000)));
    c.handle_timeout(ms(5000));
    assert_eq!(
        events(&drain(&mut c)),
        vec![ClientEvent::Failed(ClientError::Timeout {
            peer: Peer::Balancer,
            step: "server assignment"
        })]
    );
}

#[test]
fn dead_assigned_server_sends_the_client_back_to_the_balancer() {
    let mut c = client();
    let srv = assigned(&mut c);
    c.handle_input(
        ms(3),
        Input::ConnectFailed {
            conn: srv,
            reason: "refused".into(),
        },
    );
    let outs = drain(&mut c);
    assert!(matches!(events(&outs)[..], [ClientEvent::Retrying { .. }]));
    assert_eq!(connects(&outs)[0].1, "balancer:7000");
}

#[test]
fn retries_are_bounded() {
    let mut c = client();
    let mut outs = drain(&mut c);
    for attempt in 0..3 {
        let srv = assigned_after(&mut c, &outs);
        c.handle_input(
            ms(3),
            Input::Connected {
                conn: srv,
                identity: crate::io::Identity::Unchecked,
            },
        );
        drain(&mut c);
        c.handle_timeout(ms(3) + Duration::from_secs(5));
        outs = drain(&mut c);
        if attempt < 2 {
            assert!(matches!(events(&outs)[..], [ClientEvent::Retrying { .. }]));
        } else {
            assert_eq!(
                events(&outs),
                vec![ClientEvent::Failed(ClientError::Timeout {
                    peer: Peer::Server,
                    step: "hello ack"
                })]
            );
        }
    }
    assert!(c.is_done());
}

#[test]
fn refused_code_is_retried_but_a_version_mismatch_is_final() {
    let mut c = client();
    let srv = assigned(&mut c);
    c.handle_input(
        ms(3),
        Input::Connected {
            conn: srv,
            identity: crate::io::Identity::Unchecked,
        },
    );
    drain(&mut c);
    let outs = recv(
        &mut c,
        ms(4),
        srv,
        &SessionMsg::Refused(Refusal::CodeExpired),
    );
    assert!(matches!(events(&outs)[..], [ClientEvent::Retrying { .. }]));

    let mut c = client();
    let srv = assigned(&mut c);
    c.handle_input(
        ms(3),
        Input::Connected {
            conn: srv,
            identity: crate::io::Identity::Unchecked,
        },
    );
    drain(&mut c);
    let r = Refusal::VersionMismatch { ours: 2, theirs: 1 };
    let outs = recv(&mut c, ms(4), srv, &SessionMsg::Refused(r.clone()));
    assert_eq!(
        events(&outs),
        vec![ClientEvent::Failed(ClientError::Refused {
            by: Peer::Server,
            reason: r
        })]
    );
}

#[test]
fn a_full_server_or_a_busy_source_at_hello_sends_the_client_back_to_the_balancer() {
    let busy = Refusal::TooManyConnections {
        limit: 8,
        unauthenticated: true,
    };
    for reason in [Refusal::ServerFull, busy] {
        let mut c = client();
        let srv = assigned(&mut c);
        c.handle_input(
            ms(3),
            Input::Connected {
                conn: srv,
                identity: crate::io::Identity::Unchecked,
            },
        );
        drain(&mut c);
        let outs = recv(&mut c, ms(4), srv, &SessionMsg::Refused(reason));
        assert!(matches!(events(&outs)[..], [ClientEvent::Retrying { .. }]));
        assert!(
            connects(&outs).iter().any(|(_, a)| a == "balancer:7000"),
            "{outs:?}"
        );
    }
}

#[test]
fn garbage_from_the_server_is_a_protocol_error() {
    let mut c = client();
    let srv = assigned(&mut c);
    c.handle_input(
        ms(3),
        Input::Connected {
            conn: srv,
            identity: crate::io::Identity::Unchecked,
        },
    );
    drain(&mut c);
    c.handle_input(
        ms(4),
        Input::Received {
            conn: srv,
            bytes: &[2, 0, 0, 0, 0xee, 0xee],
        },
    );
    let outs = drain(&mut c);
    assert!(closed(&outs, srv));
    assert!(matches!(
        events(&outs)[..],
        [ClientEvent::Retrying {
            error: ClientError::Protocol { .. }
        }]
    ));
}

#[test]
fn a_server_naming_another_id_is_not_trusted() {
    let mut c = client();
    let srv = assigned(&mut c);
    c.handle_input(
        ms(3),
        Input::Connected {
            conn: srv,
            identity: crate::io::Identity::Unchecked,
        },
    );
    drain(&mut c);
    let outs = recv(&mut c, ms(4), srv, &SessionMsg::HelloAck { server_id: 9 });
    assert!(c.session().is_none());
    assert!(matches!(events(&outs)[..], [ClientEvent::Retrying { .. }]));
}

#[test]
fn stale_connection_events_are_ignored() {
    let mut c = client();
    let (bal, _) = connects(&drain(&mut c))[0].clone();
    let srv = {
        c.handle_input(
            ms(1),
            Input::Connected {
                conn: bal,
                identity: crate::io::Identity::Unchecked,
            },
        );
        drain(&mut c);
        let outs = recv(
            &mut c,
            ms(2),
            bal,
            &BalancerMsg::Assigned {
                server_id: 2,
                addr: "s".into(),
                code: code(),
            },
        );
        connects(&outs)[0].0
    };
    c.handle_input(ms(3), Input::Closed { conn: bal });
    assert!(drain(&mut c).is_empty());
    c.handle_input(
        ms(3),
        Input::Connected {
            conn: srv,
            identity: crate::io::Identity::Unchecked,
        },
    );
    assert_eq!(drain(&mut c).len(), 1);
}

fn established() -> (Client, ConnId) {
    let mut c = client();
    let srv = assigned(&mut c);
    c.handle_input(
        ms(3),
        Input::Connected {
            conn: srv,
            identity: crate::io::Identity::Unchecked,
        },
    );
    drain(&mut c);
    recv(&mut c, ms(4), srv, &SessionMsg::HelloAck { server_id: 2 });
    (c, srv)
}

#[test]
fn an_operation_follows_code_proceed_data_result() {
    let (mut c, srv) = established();
    let req = Request::Register {
        username: "alice".into(),
        password: "password-1".into(),
    };
    assert_eq!(
        Client::new(ClientConfig::new("b")).request(ms(5), req.clone()),
        Err(RequestError::NotConnected)
    );
    c.request(ms(5), req.clone()).unwrap();
    assert_eq!(c.request(ms(5), req.clone()), Err(RequestError::Busy));
    let outs = drain(&mut c);
    assert_eq!(
        sent::<SessionMsg, _>(&outs, srv),
        vec![SessionMsg::Begin {
            op: crate::server::OpCode::Register
        }]
    );
    let outs = recv(
        &mut c,
        ms(6),
        srv,
        &SessionMsg::Proceed {
            op: crate::server::OpCode::Register,
        },
    );
    assert_eq!(sent::<SessionMsg, _>(&outs, srv), vec![req.payload()]);
    let outs = recv(&mut c, ms(7), srv, &SessionMsg::Registered { user_id: 4 });
    assert_eq!(
        events(&outs),
        vec![ClientEvent::Response(Response::Registered { user_id: 4 })]
    );
    // The session is free for the next operation.
    c.request(
        ms(8),
        Request::Login {
            username: "alice".into(),
            password: "password-1".into(),
        },
    )
    .unwrap();
}

#[test]
fn a_proceed_for_another_operation_is_a_protocol_error() {
    let (mut c, srv) = established();
    c.request(
        ms(5),
        Request::Register {
            username: "alice".into(),
            password: "password-1".into(),
        },
    )
    .unwrap();
    drain(&mut c);
    let outs = recv(
        &mut c,
        ms(6),
        srv,
        &SessionMsg::Proceed {
            op: crate::server::OpCode::Login,
        },
    );
    assert!(matches!(
        events(&outs)[..],
        [ClientEvent::Failed(ClientError::Protocol { .. })]
    ));
}

#[test]
fn an_idle_session_pings_and_a_silent_server_is_noticed() {
    let (mut c, srv) = established();
    let t = ms(4) + Duration::from_secs(20);
    c.handle_timeout(t);
    let outs = drain(&mut c);
    assert_eq!(sent::<SessionMsg, _>(&outs, srv), vec![SessionMsg::Ping]);
    // A pong keeps the session alive past the original silence limit.
    recv(&mut c, t, srv, &SessionMsg::Pong);
    c.handle_timeout(ms(4) + Duration::from_secs(60));
    assert!(c.session().is_some());
    // Then total silence for three intervals ends it.
    for s in [80, 100, 120] {
        c.handle_timeout(t + Duration::from_secs(s - 20));
    }
    let outs = drain(&mut c);
    assert!(events(&outs).contains(&ClientEvent::Disconnected));
    assert!(closed(&outs, srv));
}

#[test]
fn a_refusal_after_connecting_is_a_disconnection() {
    let (mut c, srv) = established();
    let outs = recv(
        &mut c,
        ms(5),
        srv,
        &SessionMsg::Refused(Refusal::Timeout { step: "x".into() }),
    );
    assert_eq!(events(&outs), vec![ClientEvent::Disconnected]);
    assert!(c.is_done());
}

#[test]
fn an_unanswered_operation_times_out() {
    let (mut c, srv) = established();
    c.request(
        ms(5),
        Request::Register {
            username: "alice".into(),
            password: "password-1".into(),
        },
    )
    .unwrap();
    drain(&mut c);
    recv(
        &mut c,
        ms(6),
        srv,
        &SessionMsg::Proceed {
            op: crate::server::OpCode::Register,
        },
    );
    assert_eq!(
        c.poll_timeout(),
        Some(ms(15_006)),
        "15 s from the last word of the server"
    );
    c.handle_timeout(ms(15_006));
    let outs = drain(&mut c);
    assert!(closed(&outs, srv));
    assert_eq!(
        events(&outs),
        vec![ClientEvent::Failed(ClientError::Timeout {
            peer: Peer::Server,
            step: "the result"
        })]
    );
}

#[test]
fn close_ends_the_session() {
    let (mut c, srv) = established();
    c.close();
    assert!(closed(&drain(&mut c), srv));
    assert!(c.is_done());
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn a_done_resent_while_the_download_was_made_durable_does_not_end_the_session() {
    use crate::transfer::TransferMsg;
    let (mut c, srv) = established();
    let data = b"abc".to_vec();
    let digest = *blake3::hash(&data).as_bytes();
    let size = data.len() as u64;
    let xfer = SessionMsg::Transfer;
    let done = |id| xfer(TransferMsg::Done { id, digest });
    let begin = |c: &mut Client, at: u64| {
        let req = Request::Download {
            owner: None,
            name: "f".into(),
        };
        c.request(ms(at), req.clone()).unwrap();
        drain(c);
        recv(c, ms(at), srv, &SessionMsg::Proceed { op: req.op() });
    };
    let offer = |c: &mut Client, at: u64, id: u64| {
        let name = "f".into();
        recv(c, ms(at), srv, &xfer(TransferMsg::Offer { id, name, size }));
    };
    // Chunks and DONE; the file is made durable while the server resends
    // DONE (its resend timer is shorter than a large file's fsync).
    let finish = |c: &mut Client, at: u64, id: u64| {
        let chunks = TransferMsg::Chunks {
            id,
            seq: 0,
            data: data.clone(),
        };
        recv(c, ms(at), srv, &xfer(chunks));
        let outs = recv(c, ms(at), srv, &done(id));
        let persist = |o: &Output<ClientEvent>| matches!(o, Output::File(FileOp::Persist { .. }));
        assert!(outs.iter().any(persist), "{outs:?}");
        assert!(recv(c, ms(at + 1), srv, &done(id)).is_empty());
        c.handle_input(ms(at + 2), Input::FilePersisted { temp: LOCAL });
        assert_eq!(
            events(&drain(c)),
            vec![ClientEvent::Response(Response::Downloaded { size, digest })]
        );
    };
    begin(&mut c, 5);
    offer(&mut c, 6, 5);
    finish(&mut c, 7, 5);
    // The DONE resent last arrives after the download was answered...
    let outs = recv(&mut c, ms(20), srv, &done(5));
    assert_eq!(events(&outs), vec![], "no protocol error");
    // ...or during the next download, before and after its OFFER: it is
    // not that transfer's.
    begin(&mut c, 21);
    assert_eq!(events(&recv(&mut c, ms(22), srv, &done(5))), vec![]);
    offer(&mut c, 23, 6);
    assert_eq!(events(&recv(&mut c, ms(24), srv, &done(5))), vec![]);
    finish(&mut c, 25, 6);
    assert!(c.session().is_some());
}

/// REGISTER OK answers the operation; UPDATEs come at any time after,
/// between operations or during one, and never disturb it.
#[test]
fn a_peer_registration_is_answered_and_updates_arrive_at_any_time() {
    use crate::server::messages::PeerInfo;
    let (mut c, srv) = established();
    let req = Request::PeerRegister {
        addr: "10.0.0.1:9000".into(),
    };
    c.request(ms(5), req.clone()).unwrap();
    drain(&mut c);
    let op = crate::server::OpCode::PeerRegister;
    let outs = recv(&mut c, ms(6), srv, &SessionMsg::Proceed { op });
    assert_eq!(sent::<SessionMsg, _>(&outs, srv), vec![req.payload()]);
    let registered = SessionMsg::PeerRegistered {
        peer: 7,
        ticket: [1; 32],
    };
    let outs = recv(&mut c, ms(7), srv, &registered);
    assert_eq!(
        events(&outs),
        vec![ClientEvent::Response(Response::PeerRegistered {
            peer: 7,
            ticket: [1; 32]
        })]
    );
    let peers = vec![PeerInfo {
        peer: 7,
        user: "alice".into(),
        addr: "10.0.0.1:9000".into(),
        ticket_digest: [2; 32],
        key: None,
    }];
    let update = SessionMsg::PeerUpdate {
        peers: peers.clone(),
    };
    let outs = recv(&mut c, ms(8), srv, &update);
    assert_eq!(
        events(&outs),
        vec![ClientEvent::PeerUpdate {
            peers: peers.clone()
        }]
    );
    // During another operation, too.
    c.request(ms(9), Request::List).unwrap();
    drain(&mut c);
    let outs = recv(&mut c, ms(10), srv, &update);
    assert_eq!(events(&outs), vec![ClientEvent::PeerUpdate { peers }]);
    assert!(!c.is_done());
}

/// SYNC's answer is an operation's; SYNC OK, READ and END are events at
/// any time, during an operation too; SYNC FIN and SYNC WRITING go out at
/// once, even while an operation runs.
#[test]
fn sync_is_answered_its_pushes_arrive_at_any_time_and_fin_goes_out_at_once() {
    use crate::replication::sync_round::Token;
    let (mut c, srv) = established();
    c.request(ms(5), Request::Sync).unwrap();
    drain(&mut c);
    let op = crate::server::OpCode::Sync;
    let outs = recv(&mut c, ms(6), srv, &SessionMsg::Proceed { op });
    assert_eq!(sent::<SessionMsg, _>(&outs, srv), vec![SessionMsg::Sync]);
    let token = Token { view: 2, index: 9 };
    let ok = SessionMsg::SyncOk {
        round: 9,
        token,
        order: vec![4, 7],
    };
    // A push while SYNC waits for its answer is an event, not the answer.
    let outs = recv(&mut c, ms(7), srv, &ok);
    let event = ClientEvent::SyncOk {
        round: 9,
        token,
        order: vec![4, 7],
    };
    assert_eq!(events(&outs), vec![event]);
    let outs = recv(&mut c, ms(8), srv, &SessionMsg::SyncStarted { round: 9 });
    assert_eq!(
        events(&outs),
        vec![ClientEvent::Response(Response::SyncStarted { round: 9 })]
    );
    c.request(ms(9), Request::List).unwrap();
    drain(&mut c);
    c.sync_writing(9, token).unwrap();
    c.sync_fin(9, token).unwrap();
    let outs = drain(&mut c);
    assert_eq!(
        sent::<SessionMsg, _>(&outs, srv),
        vec![
            SessionMsg::SyncWriting { round: 9, token },
            SessionMsg::SyncFin { round: 9, token }
        ]
    );
    let next = Token { view: 2, index: 11 };
    let read = SessionMsg::SyncRead {
        round: 9,
        writer: 7,
        token: next,
        order: vec![4, 7],
    };
    let outs = recv(&mut c, ms(10), srv, &read);
    assert!(matches!(
        events(&outs)[..],
        [ClientEvent::SyncRead { writer: 7, .. }]
    ));
    let outs = recv(&mut c, ms(11), srv, &SessionMsg::SyncEnd { round: 9 });
    assert_eq!(events(&outs), vec![ClientEvent::SyncEnd { round: 9 }]);
    assert!(!c.is_done());
}

/// Told "too many" by the balancer, a client waits as long as it is told
/// and asks again, without spending an attempt; past its patience it fails.
#[test]
fn a_client_told_to_wait_waits_and_asks_again() {
    let mut c = client();
    let outs = drain(&mut c);
    let (bal, _) = connects(&outs)[0].clone();
    c.handle_input(
        ms(1),
        Input::Connected {
            conn: bal,
            identity: crate::io::Identity::Unchecked,
        },
    );
    drain(&mut c);
    let too_many = BalancerMsg::Refused(Refusal::TooMany {
        retry_after_ms: 700,
    });
    let outs = recv(&mut c, ms(2), bal, &too_many);
    assert!(closed(&outs, bal));
    assert!(connects(&outs).is_empty(), "not before the wait");
    assert_eq!(c.poll_timeout(), Some(ms(702)));
    c.handle_timeout(ms(702));
    let outs = drain(&mut c);
    let (again, addr) = connects(&outs)[0].clone();
    assert_eq!(addr, "balancer:7000");
    // A wait longer than its patience is a failure that says why.
    c.handle_input(
        ms(703),
        Input::Connected {
            conn: again,
            identity: crate::io::Identity::Unchecked,
        },
    );
    drain(&mut c);
    let too_long = BalancerMsg::Refused(Refusal::TooMany {
        retry_after_ms: 60_000,
    });
    let outs = recv(&mut c, ms(704), again, &too_long);
    assert!(outs.iter().any(|o| matches!(
        o,
        Output::Event(ClientEvent::Failed(ClientError::Refused {
            reason: Refusal::TooMany { .. },
            ..
        }))
    )));
}

/// A batch of downloads: every offer accepted at once, each file written
/// through its own temporary file and persisted, the answer the server's
/// with this side's own failures told as this side knows them.
#[test]
fn a_batch_of_downloads_takes_every_offer_at_once_each_through_its_own_file() {
    use crate::server::messages::Landed;
    use crate::transfer::{TransferError, TransferMsg};
    let (mut c, srv) = established();
    let xfer = SessionMsg::Transfer;
    let req = Request::DownloadMany {
        files: vec![(None, "a".into()), (Some("bob".into()), "b".into())],
    };
    c.request(ms(5), req.clone()).unwrap();
    drain(&mut c);
    let outs = recv(&mut c, ms(6), srv, &SessionMsg::Proceed { op: req.op() });
    assert_eq!(sent::<SessionMsg, _>(&outs, srv), vec![req.payload()]);
    let data = [b"alpha".to_vec(), b"beta!".to_vec()];
    let mut accepted = Vec::new();
    for id in 0..2u64 {
        let (name, size) = (format!("f{id}"), data[id as usize].len() as u64);
        let outs = recv(
            &mut c,
            ms(7),
            srv,
            &xfer(TransferMsg::Offer { id, name, size }),
        );
        accepted.extend(sent::<SessionMsg, _>(&outs, srv));
    }
    assert_eq!(
        accepted,
        vec![
            xfer(TransferMsg::Accept { id: 0 }),
            xfer(TransferMsg::Accept { id: 1 })
        ],
        "both accepted before either file's content"
    );
    // File 1's attributes follow its offer.
    let attrs = crate::file_attrs::FileAttrs {
        mtime_secs: 1_600_000_000,
        mtime_nanos: 5,
        mode: 0o640,
    };
    recv(&mut c, ms(7), srv, &SessionMsg::Attrs { id: 1, attrs });
    // An offer of a file not asked for is no transfer of this batch.
    let stray = TransferMsg::Offer {
        id: 2,
        name: "x".into(),
        size: 1,
    };
    assert!(sent::<SessionMsg, _>(&recv(&mut c, ms(7), srv, &xfer(stray)), srv).is_empty());
    for id in 0..2u64 {
        let chunk = TransferMsg::Chunks {
            id,
            seq: 0,
            data: data[id as usize].clone(),
        };
        let outs = recv(&mut c, ms(8), srv, &xfer(chunk));
        let wrote = outs
            .iter()
            .any(|o| matches!(o, Output::File(FileOp::Write { temp, .. }) if *temp == id));
        assert!(
            wrote,
            "file {id} written through temporary file {id}: {outs:?}"
        );
    }
    // File 0 lands; file 1's persist fails (the disk is full).
    let digest = |d: &[u8]| *blake3::hash(d).as_bytes();
    for id in 0..2u64 {
        let done = TransferMsg::Done {
            id,
            digest: digest(&data[id as usize]),
        };
        let outs = recv(&mut c, ms(9), srv, &xfer(done));
        let persist = outs.iter().position(|o| {
            matches!(o, Output::File(FileOp::Persist { temp, to: FileRef::Local }) if *temp == id)
        });
        assert!(persist.is_some(), "{outs:?}");
        let set = outs.iter().position(|o| {
            matches!(o, Output::File(FileOp::SetAttrs { temp, attrs: a }) if *temp == id && *a == attrs)
        });
        match id {
            0 => assert_eq!(set, None, "file 0 has no attributes"),
            _ => assert!(
                set < persist && set.is_some(),
                "set before the persist: {outs:?}"
            ),
        }
    }
    c.handle_input(ms(10), Input::FilePersisted { temp: 0 });
    let outs = drain(&mut c);
    assert_eq!(
        sent::<SessionMsg, _>(&outs, srv),
        vec![xfer(TransferMsg::DoneAck { id: 0 })]
    );
    c.handle_input(
        ms(10),
        Input::FileFailed {
            handle: 1,
            error: "No space left on device".into(),
            no_space: true,
            missing: false,
        },
    );
    drain(&mut c);
    let server_says = vec![
        Landed::Stored {
            size: 5,
            digest: digest(&data[0]),
        },
        Landed::Failed(crate::server::OpError::Transfer(TransferError::Cancelled)),
    ];
    let outs = recv(
        &mut c,
        ms(11),
        srv,
        &SessionMsg::SentAll {
            outcomes: server_says.clone(),
        },
    );
    let Some(ClientEvent::Response(Response::Received(got))) = events(&outs).pop() else {
        panic!("{outs:?}");
    };
    assert_eq!(got[0], server_says[0]);
    assert!(
        matches!(
            got[1],
            Landed::Failed(crate::server::OpError::Transfer(
                TransferError::NoSpace { .. }
            ))
        ),
        "{got:?}"
    );
}

/// A file of a batch of downloads this side received whole and persisted
/// is received, though the server's sender gave up waiting for its DONE
/// ACK while this side's disk was slow to persist it (the server answers
/// it failed): the file is in place, as a single download's is.
#[test]
fn a_batch_file_in_place_is_received_whatever_the_server_says() {
    use crate::server::messages::Landed;
    use crate::transfer::{TransferError, TransferMsg};
    let (mut c, srv) = established();
    let xfer = SessionMsg::Transfer;
    let req = Request::DownloadMany {
        files: vec![(None, "a".into()), (None, "b".into())],
    };
    c.request(ms(5), req.clone()).unwrap();
    drain(&mut c);
    recv(&mut c, ms(6), srv, &SessionMsg::Proceed { op: req.op() });
    let data = b"alpha".to_vec();
    let digest = *blake3::hash(&data).as_bytes();
    let offer = TransferMsg::Offer {
        id: 0,
        name: "a".into(),
        size: data.len() as u64,
    };
    recv(&mut c, ms(7), srv, &xfer(offer));
    let chunk = TransferMsg::Chunks {
        id: 0,
        seq: 0,
        data: data.clone(),
    };
    recv(&mut c, ms(8), srv, &xfer(chunk));
    recv(
        &mut c,
        ms(9),
        srv,
        &xfer(TransferMsg::Done { id: 0, digest }),
    );
    // The persist takes long; the server's sender gives up meanwhile.
    c.handle_input(ms(9_000), Input::FilePersisted { temp: 0 });
    drain(&mut c);
    let server_says = vec![
        Landed::Failed(crate::server::OpError::Transfer(TransferError::Timeout)),
        Landed::Failed(crate::server::OpError::NoSuchFile),
    ];
    let outs = recv(
        &mut c,
        ms(9_001),
        srv,
        &SessionMsg::SentAll {
            outcomes: server_says.clone(),
        },
    );
    let Some(ClientEvent::Response(Response::Received(got))) = events(&outs).pop() else {
        panic!("{outs:?}");
    };
    assert_eq!(
        got,
        vec![
            Landed::Stored {
                size: data.len() as u64,
                digest
            },
            server_says[1].clone()
        ]
    );
}

/// An upload's attributes go right after its OFFER; a download's, heard
/// after its OFFER, are set on its file before it is persisted, unless the
/// client was told not to keep them.
#[test]
fn attributes_follow_an_offer_and_are_set_before_the_download_is_persisted() {
    use crate::file_attrs::FileAttrs;
    use crate::transfer::TransferMsg;
    let attrs = FileAttrs::new(1_600_000_000, 42, 0o640);
    let (mut c, srv) = established();
    let up = Request::Upload {
        name: "f".into(),
        size: 3,
        replace: false,
        attrs: Some(attrs),
    };
    c.request(ms(5), up.clone()).unwrap();
    drain(&mut c);
    let outs = recv(&mut c, ms(6), srv, &SessionMsg::Proceed { op: up.op() });
    let said = sent::<SessionMsg, _>(&outs, srv);
    assert!(
        matches!(
            &said[..],
            [SessionMsg::Transfer(TransferMsg::Offer { id: 0, .. }), SessionMsg::Attrs { id: 0, attrs: a }]
                if *a == attrs
        ),
        "{said:?}"
    );

    let download = |preserve: bool| {
        let (mut c, srv) = established();
        c.cfg.preserve = preserve;
        let req = Request::Download {
            owner: None,
            name: "f".into(),
        };
        c.request(ms(5), req.clone()).unwrap();
        drain(&mut c);
        recv(&mut c, ms(6), srv, &SessionMsg::Proceed { op: req.op() });
        let data = b"abc".to_vec();
        let digest = *blake3::hash(&data).as_bytes();
        let xfer = SessionMsg::Transfer;
        let offer = TransferMsg::Offer {
            id: 9,
            name: "f".into(),
            size: 3,
        };
        recv(&mut c, ms(7), srv, &xfer(offer));
        // Another transfer's are not this one's.
        let other = FileAttrs::new(0, 0, 0o777);
        recv(
            &mut c,
            ms(7),
            srv,
            &SessionMsg::Attrs {
                id: 8,
                attrs: other,
            },
        );
        // What a server must not send is masked here too.
        let sent = FileAttrs {
            mode: 0o6640,
            ..attrs
        };
        recv(
            &mut c,
            ms(7),
            srv,
            &SessionMsg::Attrs { id: 9, attrs: sent },
        );
        let chunks = TransferMsg::Chunks {
            id: 9,
            seq: 0,
            data,
        };
        recv(&mut c, ms(8), srv, &xfer(chunks));
        let outs = recv(
            &mut c,
            ms(8),
            srv,
            &xfer(TransferMsg::Done { id: 9, digest }),
        );
        let files: Vec<&FileOp> = (outs.iter())
            .filter_map(|o| match o {
                Output::File(op @ (FileOp::SetAttrs { .. } | FileOp::Persist { .. })) => Some(op),
                _ => None,
            })
            .collect();
        assert!(c.session().is_some());
        format!("{files:?}")
    };
    assert_eq!(
        download(true),
        format!("[SetAttrs {{ temp: 0, attrs: {attrs:?} }}, Persist {{ temp: 0, to: Local }}]")
    );
    assert_eq!(download(false), "[Persist { temp: 0, to: Local }]");
}

#[test]
fn a_preferred_server_is_asked_first_and_the_balancer_when_it_fails() {
    let cfg = ClientConfig {
        prefer: Some("server3:7003".into()),
        ..ClientConfig::new("balancer:7000")
    };
    // It answers: it assigns itself, and the session is made with it.
    let mut c = Client::new(cfg.clone());
    c.start(ms(0));
    let (asked, addr) = connects(&drain(&mut c))[0].clone();
    assert_eq!(addr, "server3:7003");
    let identity = crate::io::Identity::Unchecked;
    c.handle_input(
        ms(1),
        Input::Connected {
            conn: asked,
            identity,
        },
    );
    drain(&mut c);
    let assigned = BalancerMsg::Assigned {
        server_id: 3,
        addr: String::new(),
        code: code(),
    };
    let outs = recv(&mut c, ms(2), asked, &assigned);
    assert_eq!(connects(&outs)[0].1, "server3:7003");
    // It is down: the balancer is asked, as if nothing had been tried
    // (every attempt is still the balancer's).
    let mut c = Client::new(ClientConfig { attempts: 1, ..cfg });
    c.start(ms(0));
    let (asked, _) = connects(&drain(&mut c))[0].clone();
    let reason = "connection refused".into();
    c.handle_input(
        ms(1),
        Input::ConnectFailed {
            conn: asked,
            reason,
        },
    );
    let outs = drain(&mut c);
    assert!(matches!(events(&outs)[..], [ClientEvent::Retrying { .. }]));
    assigned_after(&mut c, &outs);
}

/// A download whose destination kept `held` bytes of `data` (a file of
/// 4 blocks and a bit): the client reads them back and offers RESUME.
fn resumed_download(data: &[u8], held: usize) -> (Client, ConnId, Vec<Output<ClientEvent>>) {
    use crate::transfer::TransferMsg;
    let (mut c, srv) = established();
    c.resume_next_download(held as u64);
    let req = Request::Download {
        owner: None,
        name: "f".into(),
    };
    c.request(ms(5), req.clone()).unwrap();
    drain(&mut c);
    recv(&mut c, ms(5), srv, &SessionMsg::Proceed { op: req.op() });
    let size = data.len() as u64;
    let offer = TransferMsg::Offer {
        id: 1,
        name: "f".into(),
        size,
    };
    let mut outs = recv(&mut c, ms(6), srv, &SessionMsg::Transfer(offer));
    // The kept part is read back from the temporary file, a block at a
    // time, and hashed.
    let mut all = Vec::new();
    for _ in 0..10 {
        let reads: Vec<(u64, usize)> = (outs.iter())
            .filter_map(|o| match o {
                Output::File(FileOp::Read {
                    file: FileRef::Temp(LOCAL),
                    offset,
                    len,
                    ..
                }) => Some((*offset, *len)),
                _ => None,
            })
            .collect();
        all.extend(outs);
        if reads.is_empty() {
            break;
        }
        outs = Vec::new();
        for (offset, len) in reads {
            let o = offset as usize;
            let input = Input::FileRead {
                handle: LOCAL,
                offset,
                data: &data[o..(o + len).min(data.len())],
            };
            c.handle_input(ms(7), input);
            outs.extend(drain(&mut c));
        }
    }
    (c, srv, all)
}

#[test]
fn a_download_resumes_from_the_kept_file_and_a_cut_keeps_it_for_the_next_try() {
    use crate::transfer::{TransferMsg, BLOCK_BYTES};
    let data: Vec<u8> = (0..4 * BLOCK_BYTES as usize + 5000)
        .map(|i| i as u8)
        .collect();
    let held = 2 * BLOCK_BYTES as usize + 100;
    let (mut c, srv, outs) = resumed_download(&data, held);
    let from = 2 * BLOCK_BYTES;
    let prefix = *blake3::hash(&data[..from as usize]).as_bytes();
    assert_eq!(
        sent::<SessionMsg, _>(&outs, srv),
        vec![SessionMsg::Transfer(TransferMsg::Resume {
            id: 1,
            from,
            prefix
        })]
    );
    let chunks = TransferMsg::Chunks {
        id: 1,
        seq: from / 4096,
        data: data[from as usize..from as usize + 4096].to_vec(),
    };
    let outs = recv(&mut c, ms(8), srv, &SessionMsg::Transfer(chunks));
    let total = data.len() as u64;
    assert!(events(&outs).contains(&ClientEvent::Resumed { bytes: from, total }));
    // The server falls silent: the download fails, and what arrived stays
    // for the next try (no discard).
    let mut outs = Vec::new();
    while let Some(t) = c.poll_timeout().filter(|t| *t < ms(60_000)) {
        c.handle_timeout(t);
        outs.extend(drain(&mut c));
        if c.is_done()
            || events(&outs)
                .iter()
                .any(|e| matches!(e, ClientEvent::Response(_)))
        {
            break;
        }
    }
    let discards = |outs: &[Output<ClientEvent>]| {
        (outs.iter())
            .filter(|o| matches!(o, Output::File(FileOp::Discard { .. })))
            .count()
    };
    assert_eq!(discards(&outs), 0, "{outs:?}");
    // Content that arrives damaged is not kept.
    let (mut c, srv, _) = resumed_download(&data, held);
    let mut rest = data[from as usize..].to_vec();
    rest[10] ^= 1;
    for (i, piece) in rest.chunks(BLOCK_BYTES as usize).enumerate() {
        let chunks = TransferMsg::Chunks {
            id: 1,
            seq: (from + i as u64 * BLOCK_BYTES) / 4096,
            data: piece.to_vec(),
        };
        recv(&mut c, ms(8), srv, &SessionMsg::Transfer(chunks));
    }
    let done = TransferMsg::Done {
        id: 1,
        digest: *blake3::hash(&data).as_bytes(),
    };
    let outs = recv(&mut c, ms(9), srv, &SessionMsg::Transfer(done));
    assert_eq!(discards(&outs), 1, "{outs:?}");
}

/// A listing in pages: each `ListingPart` asks for the next page as a List
/// operation of its own, and the pages reach the application as one.
#[test]
fn a_listing_in_pages_is_asked_for_page_by_page_and_answered_whole() {
    let (mut c, srv) = established();
    let file = |name: &str| Listed {
        owner: "alice".into(),
        name: name.into(),
        size: 1,
        at: 0,
        shared_with: Vec::new(),
        attrs: None,
    };
    let op = crate::server::OpCode::List;
    c.request(
        ms(5),
        Request::ListUnder {
            prefix: "docs".into(),
        },
    )
    .unwrap();
    drain(&mut c);
    let outs = recv(&mut c, ms(6), srv, &SessionMsg::Proceed { op });
    let first = SessionMsg::ListUnder {
        prefix: "docs".into(),
    };
    assert_eq!(sent::<SessionMsg, _>(&outs, srv), vec![first]);
    let next = ListCursor {
        owner: 1,
        name: "docs/a".into(),
    };
    let part = SessionMsg::ListingPart {
        files: vec![file("docs/a")],
        next: next.clone(),
    };
    let outs = recv(&mut c, ms(7), srv, &part);
    assert!(events(&outs).is_empty(), "not answered yet");
    assert_eq!(
        sent::<SessionMsg, _>(&outs, srv),
        vec![SessionMsg::Begin { op }]
    );
    let outs = recv(&mut c, ms(8), srv, &SessionMsg::Proceed { op });
    let more = SessionMsg::ListAfter {
        prefix: Some("docs".into()),
        after: next,
    };
    assert_eq!(sent::<SessionMsg, _>(&outs, srv), vec![more]);
    let last = SessionMsg::Listing {
        files: vec![file("docs/b")],
    };
    let outs = recv(&mut c, ms(9), srv, &last);
    assert_eq!(
        events(&outs),
        vec![ClientEvent::Response(Response::Listing(vec![
            file("docs/a"),
            file("docs/b")
        ]))]
    );
    // The next listing starts afresh.
    c.request(ms(10), Request::List).unwrap();
    drain(&mut c);
    let outs = recv(&mut c, ms(11), srv, &SessionMsg::Proceed { op });
    assert_eq!(sent::<SessionMsg, _>(&outs, srv), vec![SessionMsg::ListAll]);
    let outs = recv(&mut c, ms(12), srv, &SessionMsg::Listing { files: vec![] });
    assert_eq!(
        events(&outs),
        vec![ClientEvent::Response(Response::Listing(vec![]))]
    );
}
