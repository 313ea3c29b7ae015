use super::*;
use crate::testkit::*;

fn servers(n: u32) -> Vec<ServerAddr> {
    (1..=n)
        .map(|id| ServerAddr {
            id,
            addr: format!("server{id}:700{id}"),
        })
        .collect()
}

fn balancer(n: u32) -> Balancer {
    Balancer::new(
        BalancerConfig::new(servers(n)),
        secret(),
        Entropy::from_u64(1),
    )
}

const CLIENT: ConnId = ConnId {
    dialed: false,
    n: 1,
};

/// Accepts a client, sends GetServer, returns the first probe's connection and address.
fn ask(b: &mut Balancer, now: Timestamp, client: ConnId) -> (ConnId, String) {
    b.handle_input(
        now,
        Input::Accepted {
            identity: crate::io::Identity::Unchecked,
            conn: client,
            peer: "c".into(),
        },
    );
    let req = bytes_of(&BalancerMsg::GetServer {
        version: PROTOCOL_VERSION,
    });
    b.handle_input(
        now,
        Input::Received {
            conn: client,
            bytes: &req,
        },
    );
    let outs = drain(b);
    connects(&outs).into_iter().next().expect("a probe")
}

fn answer(
    b: &mut Balancer,
    now: Timestamp,
    probe: ConnId,
    msg: ProbeMsg,
) -> Vec<Output<BalancerEvent>> {
    b.handle_input(
        now,
        Input::Connected {
            conn: probe,
            identity: crate::io::Identity::Unchecked,
        },
    );
    let outs = drain(b);
    let probes: Vec<ProbeMsg> = sent(&outs, probe);
    assert!(matches!(probes[..], [ProbeMsg::Probe { .. }]));
    let bytes = bytes_of(&msg);
    b.handle_input(
        now,
        Input::Received {
            conn: probe,
            bytes: &bytes,
        },
    );
    drain(b)
}

#[test]
fn yes_assigns_the_server_with_a_code_it_can_verify() {
    let mut b = balancer(3);
    let (probe, addr) = ask(&mut b, ms(0), CLIENT);
    assert_eq!(addr, "server1:7001");
    b.handle_input(
        ms(1),
        Input::Connected {
            conn: probe,
            identity: crate::io::Identity::Unchecked,
        },
    );
    let outs = drain(&mut b);
    let [ProbeMsg::Probe {
        code: probed,
        proof,
        ..
    }] = &sent::<ProbeMsg, _>(&outs, probe)[..]
    else {
        panic!("expected one probe");
    };
    assert!(secret().verify_probe(probed, proof));
    // Minted when the search began, good for two seconds.
    assert_eq!((probed.issued_ms, probed.expires_ms), (0, 2000));
    let yes = bytes_of(&ProbeMsg::Available);
    b.handle_input(
        ms(2),
        Input::Received {
            conn: probe,
            bytes: &yes,
        },
    );
    let outs = drain(&mut b);
    let msgs: Vec<BalancerMsg> = sent(&outs, CLIENT);
    let [BalancerMsg::Assigned {
        server_id: 1,
        addr,
        code,
    }] = &msgs[..]
    else {
        panic!("expected an assignment, got {msgs:?}");
    };
    assert_eq!(addr, "server1:7001");
    assert_eq!(
        code, probed,
        "the client gets the code the server was shown"
    );
    assert!(secret().verify(code));
    assert!(closed(&outs, CLIENT) && closed(&outs, probe));
    assert_eq!(b.pending(), 0);
}

#[test]
fn no_moves_on_round_robin_and_a_full_round_of_no_says_no_server() {
    let mut b = balancer(3);
    let (p1, a1) = ask(&mut b, ms(0), CLIENT);
    let outs = answer(&mut b, ms(1), p1, ProbeMsg::Busy);
    let (p2, a2) = connects(&outs)[0].clone();
    let outs = answer(&mut b, ms(2), p2, ProbeMsg::Busy);
    let (p3, a3) = connects(&outs)[0].clone();
    assert_eq!(
        [a1, a2, a3],
        ["server1:7001", "server2:7002", "server3:7003"]
    );
    let outs = answer(&mut b, ms(3), p3, ProbeMsg::Busy);
    let msgs: Vec<BalancerMsg> = sent(&outs, CLIENT);
    assert_eq!(
        msgs,
        vec![BalancerMsg::NoServer {
            probed: 3,
            busy: 3,
            no_master: 0,
            catching_up: 0
        }]
    );
    assert!(closed(&outs, CLIENT));
    assert!(connects(&outs).is_empty(), "no second round");
}

#[test]
fn round_robin_continues_across_clients() {
    let mut b = balancer(3);
    let (p1, a1) = ask(&mut b, ms(0), CLIENT);
    answer(&mut b, ms(1), p1, ProbeMsg::Available);
    let (_, a2) = ask(&mut b, ms(2), ConnId::accepted(2));
    assert_eq!(a1, "server1:7001");
    assert_eq!(a2, "server2:7002");
}

#[test]
fn silent_server_is_skipped_and_avoided_during_backoff() {
    let mut b = balancer(2);
    let (p1, _) = ask(&mut b, ms(0), CLIENT);
    b.handle_input(
        ms(1),
        Input::Connected {
            conn: p1,
            identity: crate::io::Identity::Unchecked,
        },
    );
    drain(&mut b);
    assert_eq!(b.poll_timeout(), Some(ms(1000)));
    b.handle_timeout(ms(1000));
    let outs = drain(&mut b);
    assert!(closed(&outs, p1));
    assert!(events(&outs)
        .iter()
        .any(|e| matches!(e, BalancerEvent::Skipped { server: 1, .. })));
    let (p2, a2) = connects(&outs)[0].clone();
    assert_eq!(a2, "server2:7002");
    answer(&mut b, ms(1001), p2, ProbeMsg::Available);
    // Server 1 is in back-off: the next client goes straight to server 2.
    let (_, a) = ask(&mut b, ms(2000), ConnId::accepted(2));
    assert_eq!(a, "server2:7002");
    // Once the back-off is over, server 1 is asked again in its turn.
    let (p, a) = ask(&mut b, ms(7000), ConnId::accepted(3));
    assert_eq!(a, "server1:7001");
    answer(&mut b, ms(7001), p, ProbeMsg::Available);
}

#[test]
fn refused_connection_and_broken_probe_skip_the_server() {
    let mut b = balancer(3);
    let (p1, _) = ask(&mut b, ms(0), CLIENT);
    b.handle_input(
        ms(1),
        Input::ConnectFailed {
            conn: p1,
            reason: "refused".into(),
        },
    );
    let outs = drain(&mut b);
    let (p2, _) = connects(&outs)[0].clone();
    b.handle_input(ms(2), Input::Closed { conn: p2 });
    let outs = drain(&mut b);
    let (p3, a3) = connects(&outs)[0].clone();
    assert_eq!(a3, "server3:7003");
    let outs = answer(&mut b, ms(3), p3, ProbeMsg::Busy);
    let msgs: Vec<BalancerMsg> = sent(&outs, CLIENT);
    assert_eq!(
        msgs,
        vec![BalancerMsg::NoServer {
            probed: 3,
            busy: 1,
            no_master: 0,
            catching_up: 0
        }]
    );
}

#[test]
fn when_every_server_is_in_backoff_all_are_asked_anyway() {
    let mut b = balancer(1);
    let (p1, _) = ask(&mut b, ms(0), CLIENT);
    b.handle_input(
        ms(1),
        Input::ConnectFailed {
            conn: p1,
            reason: "down".into(),
        },
    );
    let outs = drain(&mut b);
    assert_eq!(
        sent::<BalancerMsg, _>(&outs, CLIENT),
        vec![BalancerMsg::NoServer {
            probed: 1,
            busy: 0,
            no_master: 0,
            catching_up: 0
        }]
    );
    let (_, a) = ask(&mut b, ms(2), ConnId::accepted(2));
    assert_eq!(a, "server1:7001");
}

#[test]
fn garbage_answer_from_a_server_skips_it() {
    let mut b = balancer(2);
    let (p1, _) = ask(&mut b, ms(0), CLIENT);
    b.handle_input(
        ms(1),
        Input::Connected {
            conn: p1,
            identity: crate::io::Identity::Unchecked,
        },
    );
    drain(&mut b);
    b.handle_input(
        ms(2),
        Input::Received {
            conn: p1,
            bytes: &[1, 0, 0, 0, 250],
        },
    );
    let outs = drain(&mut b);
    assert!(events(&outs)
        .iter()
        .any(|e| matches!(e, BalancerEvent::Skipped { server: 1, .. })));
    assert_eq!(connects(&outs)[0].1, "server2:7002");
}

#[test]
fn version_mismatch_is_refused_clearly() {
    let mut b = balancer(1);
    b.handle_input(
        ms(0),
        Input::Accepted {
            identity: crate::io::Identity::Unchecked,
            conn: CLIENT,
            peer: "c".into(),
        },
    );
    let req = bytes_of(&BalancerMsg::GetServer { version: 999 });
    b.handle_input(
        ms(0),
        Input::Received {
            conn: CLIENT,
            bytes: &req,
        },
    );
    let outs = drain(&mut b);
    assert_eq!(
        sent::<BalancerMsg, _>(&outs, CLIENT),
        vec![BalancerMsg::Refused(Refusal::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs: 999
        })]
    );
    assert!(closed(&outs, CLIENT));
    assert!(connects(&outs).is_empty());
}

#[test]
fn garbage_and_oversized_frames_from_a_client_are_refused() {
    for bytes in [
        vec![9, 0, 0, 0, 0xff, 1, 2, 3, 4, 5, 6, 7, 8],
        u32::MAX.to_le_bytes().to_vec(),
    ] {
        let mut b = balancer(1);
        b.handle_input(
            ms(0),
            Input::Accepted {
                identity: crate::io::Identity::Unchecked,
                conn: CLIENT,
                peer: "c".into(),
            },
        );
        b.handle_input(
            ms(0),
            Input::Received {
                conn: CLIENT,
                bytes: &bytes,
            },
        );
        let outs = drain(&mut b);
        let msgs: Vec<BalancerMsg> = sent(&outs, CLIENT);
        assert!(matches!(
            msgs[..],
            [BalancerMsg::Refused(Refusal::Malformed { .. })]
        ));
        assert!(closed(&outs, CLIENT));
        assert_eq!(b.pending(), 0);
    }
}

#[test]
fn silent_client_is_timed_out() {
    let mut b = balancer(1);
    b.handle_input(
        ms(0),
        Input::Accepted {
            identity: crate::io::Identity::Unchecked,
            conn: CLIENT,
            peer: "c".into(),
        },
    );
    assert_eq!(b.poll_timeout(), Some(ms(5000)));
    b.handle_timeout(ms(4999));
    assert!(drain(&mut b).is_empty());
    b.handle_timeout(ms(5000));
    let outs = drain(&mut b);
    assert!(matches!(
        sent::<BalancerMsg, _>(&outs, CLIENT)[..],
        [BalancerMsg::Refused(Refusal::Timeout { .. })]
    ));
    assert_eq!(b.pending(), 0);
    assert_eq!(b.poll_timeout(), None);
}

#[test]
fn client_leaving_mid_search_abandons_the_probe() {
    let mut b = balancer(2);
    let (p1, _) = ask(&mut b, ms(0), CLIENT);
    b.handle_input(ms(1), Input::Closed { conn: CLIENT });
    let outs = drain(&mut b);
    assert!(closed(&outs, p1));
    assert_eq!(b.pending(), 0);
    // A late answer on the abandoned probe is ignored.
    let yes = bytes_of(&ProbeMsg::Available);
    b.handle_input(
        ms(2),
        Input::Received {
            conn: p1,
            bytes: &yes,
        },
    );
    assert!(drain(&mut b).is_empty());
}

#[test]
fn too_many_pending_clients_are_refused_as_overloaded() {
    let mut cfg = BalancerConfig::new(servers(1));
    cfg.max_pending = 1;
    let mut b = Balancer::new(cfg, secret(), Entropy::from_u64(1));
    b.handle_input(
        ms(0),
        Input::Accepted {
            identity: crate::io::Identity::Unchecked,
            conn: CLIENT,
            peer: "c".into(),
        },
    );
    let second = ConnId::accepted(2);
    b.handle_input(
        ms(0),
        Input::Accepted {
            identity: crate::io::Identity::Unchecked,
            conn: second,
            peer: "c".into(),
        },
    );
    let outs = drain(&mut b);
    assert_eq!(
        sent::<BalancerMsg, _>(&outs, second),
        vec![BalancerMsg::Refused(Refusal::Overloaded)]
    );
    assert!(closed(&outs, second));
}

#[test]
fn no_servers_configured_means_no_server() {
    let mut b = balancer(0);
    b.handle_input(
        ms(0),
        Input::Accepted {
            identity: crate::io::Identity::Unchecked,
            conn: CLIENT,
            peer: "c".into(),
        },
    );
    let req = bytes_of(&BalancerMsg::GetServer {
        version: PROTOCOL_VERSION,
    });
    b.handle_input(
        ms(0),
        Input::Received {
            conn: CLIENT,
            bytes: &req,
        },
    );
    let outs = drain(&mut b);
    assert_eq!(
        sent::<BalancerMsg, _>(&outs, CLIENT),
        vec![BalancerMsg::NoServer {
            probed: 0,
            busy: 0,
            no_master: 0,
            catching_up: 0
        }]
    );
}

#[test]
fn a_search_through_many_silent_servers_ends_within_its_budget() {
    let mut b = balancer(8);
    let (mut probe, _) = ask(&mut b, ms(0), CLIENT);
    let mut now = ms(0);
    let mut last = Vec::new();
    for _ in 0..8 {
        b.handle_input(
            now,
            Input::Connected {
                conn: probe,
                identity: crate::io::Identity::Unchecked,
            },
        );
        drain(&mut b);
        now = b.poll_timeout().expect("a probe deadline");
        b.handle_timeout(now);
        last = drain(&mut b);
        match connects(&last).first() {
            Some((p, _)) => probe = *p,
            None => break,
        }
    }
    assert_eq!(now, ms(3000), "the budget, not 8 probe timeouts");
    assert_eq!(
        sent::<BalancerMsg, _>(&last, CLIENT),
        vec![BalancerMsg::NoServer {
            probed: 3,
            busy: 0,
            no_master: 0,
            catching_up: 0
        }]
    );
}

/// One machine asking for servers as fast as it can is told to wait, with
/// how long, before any server is probed; another machine is served.
#[test]
fn a_source_over_its_rate_is_told_to_wait_before_any_probe() {
    use super::per_source::PerSourceLimit;
    let mut cfg = BalancerConfig::new(servers(1));
    cfg.per_source = PerSourceLimit {
        burst: 2,
        per_second: 1,
        sources: 16,
    };
    let mut b = Balancer::new(cfg, secret(), Entropy::from_u64(1));
    let accept = |b: &mut Balancer, n: u64, peer: &str| {
        let conn = ConnId::accepted(n);
        b.handle_input(
            ms(0),
            Input::Accepted {
                identity: crate::io::Identity::Unchecked,
                conn,
                peer: peer.into(),
            },
        );
        conn
    };
    accept(&mut b, 1, "10.0.0.9:4001");
    accept(&mut b, 2, "10.0.0.9:4002");
    drain(&mut b);
    let third = accept(&mut b, 3, "10.0.0.9:4003");
    let outs = drain(&mut b);
    assert_eq!(
        sent::<BalancerMsg, _>(&outs, third),
        vec![BalancerMsg::Refused(Refusal::TooMany {
            retry_after_ms: 1000
        })]
    );
    assert!(closed(&outs, third));
    assert!(connects(&outs).is_empty(), "no server was probed for it");
    let other = accept(&mut b, 4, "10.0.0.10:4001");
    assert!(sent::<BalancerMsg, _>(&drain(&mut b), other).is_empty());
    assert_eq!(b.pending(), 3);
}
