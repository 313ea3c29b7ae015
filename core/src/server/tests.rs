use super::*;
use crate::auth::AuthCode;
use crate::balancer::messages::ProbeMsg;
use crate::refusal::PROTOCOL_VERSION;
use crate::testkit::*;
use std::time::Duration;

fn server(max: u32) -> Server {
    server_with(max, |_| {})
}

/// A server whose sessions need not log in for an hour: for what happens
/// to a session later than the login timeout.
fn lenient(max: u32) -> Server {
    server_with(max, |cfg| cfg.login_timeout = Duration::from_secs(3600))
}

fn server_with(max: u32, tweak: impl FnOnce(&mut ServerConfig)) -> Server {
    let mut cfg = ServerConfig::new(1);
    cfg.max_clients = max;
    tweak(&mut cfg);
    let replica = crate::replication::ReplicaConfig::new(1, 1, vec![]);
    let rec = crate::store::Recovered::default();
    Server::new(
        cfg,
        replica,
        secret(),
        crate::Entropy::from_u64(1),
        &rec,
        ms(0),
    )
    .unwrap()
}

fn conn(n: u64) -> ConnId {
    ConnId::accepted(n)
}

fn feed(s: &mut Server, now: Timestamp, c: ConnId, bytes: &[u8]) -> Vec<Output<ServerEvent>> {
    s.handle_input(
        now,
        Input::Accepted {
            identity: crate::io::Identity::Unchecked,
            conn: c,
            peer: "p".into(),
        },
    );
    s.handle_input(now, Input::Received { conn: c, bytes });
    drain(s)
}

/// A balancer probe for `code`; returns the answer.
fn probe(s: &mut Server, now: Timestamp, c: ConnId, code: &AuthCode) -> ProbeMsg {
    let msg = bytes_of(&ProbeMsg::Probe {
        version: PROTOCOL_VERSION,
        code: code.clone(),
        proof: secret().probe_proof(code),
    });
    let outs = feed(s, now, c, &msg);
    assert!(
        closed(&outs, c),
        "probe connections are closed after the answer"
    );
    let answers: Vec<ProbeMsg> = sent(&outs, c);
    assert_eq!(answers.len(), 1);
    answers.into_iter().next().unwrap()
}

fn hello(s: &mut Server, now: Timestamp, c: ConnId, code: &AuthCode) -> Vec<SessionMsg> {
    let msg = bytes_of(&SessionMsg::Hello {
        version: PROTOCOL_VERSION,
        code: code.clone(),
    });
    let outs = feed(s, now, c, &msg);
    sent(&outs, c)
}

/// A code for server 1 minted at 0 (the balancer's clock), good for 2 s.
fn code(n: u8) -> AuthCode {
    code_at(n, ms(0))
}

fn code_at(n: u8, minted: Timestamp) -> AuthCode {
    secret().mint(1, [n; 16], minted, crate::auth::CODE_TTL)
}

#[test]
fn probe_hello_ack_ack_establishes_a_session() {
    let mut s = lenient(2);
    assert_eq!(probe(&mut s, ms(0), conn(1), &code(1)), ProbeMsg::Available);
    assert_eq!(s.clients(), 0, "a yes holds no slot");
    assert_eq!(
        hello(&mut s, ms(10), conn(2), &code(1)),
        vec![SessionMsg::HelloAck { server_id: 1 }]
    );
    assert_eq!(s.clients(), 1, "HELLO took the slot");
    let ack = bytes_of(&SessionMsg::Ack);
    s.handle_input(
        ms(11),
        Input::Received {
            conn: conn(2),
            bytes: &ack,
        },
    );
    assert!(drain(&mut s).is_empty());
    // An established session lives as long as it is not silent.
    let ping = bytes_of(&SessionMsg::Ping);
    s.handle_input(
        ms(50_000),
        Input::Received {
            conn: conn(2),
            bytes: &ping,
        },
    );
    let outs = drain(&mut s);
    assert_eq!(
        sent::<SessionMsg, _>(&outs, conn(2)),
        vec![SessionMsg::Pong]
    );
    s.handle_timeout(ms(60_011));
    drain(&mut s);
    assert_eq!(s.clients(), 1);
    s.handle_input(ms(60_001), Input::Closed { conn: conn(2) });
    let outs = drain(&mut s);
    assert_eq!(
        events(&outs),
        vec![ServerEvent::SessionEnded { conn: conn(2) }]
    );
    assert_eq!(s.clients(), 0);
}

#[test]
fn a_full_server_answers_no_and_refuses_a_hello_it_has_no_slot_for() {
    let mut s = server(1);
    assert_eq!(probe(&mut s, ms(0), conn(1), &code(1)), ProbeMsg::Available);
    // Both were told yes: the slot is the first HELLO's.
    assert_eq!(probe(&mut s, ms(0), conn(2), &code(2)), ProbeMsg::Available);
    assert!(matches!(
        hello(&mut s, ms(1), conn(3), &code(1))[..],
        [SessionMsg::HelloAck { .. }]
    ));
    assert_eq!(probe(&mut s, ms(2), conn(4), &code(3)), ProbeMsg::Busy);
    assert_eq!(
        hello(&mut s, ms(3), conn(5), &code(2)),
        vec![SessionMsg::Refused(Refusal::ServerFull)]
    );
    assert_eq!(s.clients(), 1);
}

#[test]
fn a_code_is_single_use() {
    let mut s = server(4);
    probe(&mut s, ms(0), conn(1), &code(1));
    assert!(matches!(
        hello(&mut s, ms(1), conn(2), &code(1))[..],
        [SessionMsg::HelloAck { .. }]
    ));
    assert_eq!(
        hello(&mut s, ms(2), conn(3), &code(1)),
        vec![SessionMsg::Refused(Refusal::CodeUsed)]
    );
    assert_eq!(s.clients(), 1);
}

#[test]
fn probes_reserve_nothing_however_many() {
    let mut s = server(1);
    for n in 0..200u64 {
        let c = code_at((n % 250) as u8, ms(n));
        assert_eq!(
            probe(&mut s, ms(n), conn(1000 + n), &c),
            ProbeMsg::Available
        );
    }
    assert_eq!(s.clients(), 0);
    assert_eq!(s.poll_timeout(), None, "nothing waits to lapse");
    assert!(matches!(
        hello(&mut s, ms(300), conn(1), &code_at(251, ms(300)))[..],
        [SessionMsg::HelloAck { .. }]
    ));
}

#[test]
fn a_code_is_good_for_two_seconds_and_the_skew() {
    let mut s = server(1);
    assert_eq!(probe(&mut s, ms(0), conn(1), &code(1)), ProbeMsg::Available);
    assert_eq!(
        hello(&mut s, ms(2501), conn(2), &code(1)),
        vec![SessionMsg::Refused(Refusal::CodeExpired)]
    );
    assert!(matches!(
        hello(&mut s, ms(2500), conn(3), &code(2))[..],
        [SessionMsg::HelloAck { .. }]
    ));
}

#[test]
fn a_probe_without_the_balancers_proof_is_refused() {
    let mut s = server(1);
    let client_held = bytes_of(&ProbeMsg::Probe {
        version: PROTOCOL_VERSION,
        code: code(1),
        proof: code(1).mac,
    });
    let outs = feed(&mut s, ms(0), conn(1), &client_held);
    assert_eq!(
        sent::<ProbeMsg, _>(&outs, conn(1)),
        vec![ProbeMsg::Refused(Refusal::BadCode)]
    );
}

#[test]
fn forged_and_misdirected_codes_are_refused() {
    let mut s = server(4);
    let forged = ClusterSecret::from_bytes(b"some-other-cluster-secret")
        .unwrap()
        .mint(1, [1; 16], ms(0), crate::auth::CODE_TTL);
    assert_eq!(
        probe(&mut s, ms(0), conn(1), &forged),
        ProbeMsg::Refused(Refusal::BadCode)
    );
    let other = secret().mint(2, [1; 16], ms(0), crate::auth::CODE_TTL);
    assert_eq!(
        probe(&mut s, ms(0), conn(2), &other),
        ProbeMsg::Refused(Refusal::WrongServer { ours: 1, theirs: 2 })
    );
    assert_eq!(
        hello(&mut s, ms(0), conn(3), &forged),
        vec![SessionMsg::Refused(Refusal::BadCode)]
    );
    assert_eq!(
        hello(&mut s, ms(0), conn(4), &other),
        vec![SessionMsg::Refused(Refusal::WrongServer {
            ours: 1,
            theirs: 2
        })]
    );
}

#[test]
fn version_mismatch_is_refused_on_both_links() {
    let mut s = server(4);
    let p = bytes_of(&ProbeMsg::Probe {
        version: 0,
        code: code(1),
        proof: [0; 32],
    });
    let outs = feed(&mut s, ms(0), conn(1), &p);
    assert_eq!(
        sent::<ProbeMsg, _>(&outs, conn(1)),
        vec![ProbeMsg::Refused(Refusal::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs: 0
        })]
    );
    let h = bytes_of(&SessionMsg::Hello {
        version: PROTOCOL_VERSION + 1,
        code: code(1),
    });
    let outs = feed(&mut s, ms(0), conn(2), &h);
    assert_eq!(
        sent::<SessionMsg, _>(&outs, conn(2)),
        vec![SessionMsg::Refused(Refusal::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs: PROTOCOL_VERSION + 1
        })]
    );
    assert!(closed(&outs, conn(2)));
}

#[test]
fn silence_after_connect_or_after_hello_ack_is_timed_out() {
    let mut s = server(4);
    s.handle_input(
        ms(0),
        Input::Accepted {
            identity: crate::io::Identity::Unchecked,
            conn: conn(1),
            peer: "p".into(),
        },
    );
    assert_eq!(s.poll_timeout(), Some(ms(5000)));
    s.handle_timeout(ms(5000));
    let outs = drain(&mut s);
    assert!(closed(&outs, conn(1)));

    probe(&mut s, ms(6000), conn(2), &code_at(1, ms(6000)));
    hello(&mut s, ms(6001), conn(3), &code_at(1, ms(6000)));
    assert_eq!(s.clients(), 1);
    s.handle_timeout(ms(11_001));
    let outs = drain(&mut s);
    assert!(matches!(
        sent::<SessionMsg, _>(&outs, conn(3))[..],
        [SessionMsg::Refused(Refusal::Timeout { .. })]
    ));
    assert_eq!(s.clients(), 0, "the slot is freed");
}

#[test]
fn messages_out_of_order_are_refused() {
    let mut s = server(4);
    let ack = bytes_of(&SessionMsg::Ack);
    let outs = feed(&mut s, ms(0), conn(1), &ack);
    assert!(matches!(
        sent::<SessionMsg, _>(&outs, conn(1))[..],
        [SessionMsg::Refused(Refusal::Unexpected { .. })]
    ));
    // A probe on an established session is not a probe.
    probe(&mut s, ms(0), conn(2), &code(1));
    hello(&mut s, ms(1), conn(3), &code(1));
    let p = bytes_of(&ProbeMsg::Probe {
        version: PROTOCOL_VERSION,
        code: code(2),
        proof: secret().probe_proof(&code(2)),
    });
    s.handle_input(
        ms(2),
        Input::Received {
            conn: conn(3),
            bytes: &p,
        },
    );
    let outs = drain(&mut s);
    assert!(closed(&outs, conn(3)));
    assert_eq!(s.clients(), 0);
}

#[test]
fn garbage_closes_the_connection_without_panicking() {
    let mut e = crate::Entropy::from_u64(3);
    for i in 0..500 {
        let mut s = server(2);
        let mut bytes = vec![0u8; (e.next_u64() % 80) as usize + 5];
        e.fill(&mut bytes);
        let len = (bytes.len() - 4) as u32;
        if i % 2 == 0 {
            bytes[..4].copy_from_slice(&len.to_le_bytes());
        }
        feed(&mut s, ms(0), conn(1), &bytes);
        assert_eq!(s.clients(), 0);
    }
    let mut s = server(2);
    let outs = feed(&mut s, ms(0), conn(1), &u32::MAX.to_le_bytes());
    assert!(matches!(
        sent::<SessionMsg, _>(&outs, conn(1))[..],
        [SessionMsg::Refused(Refusal::Malformed { .. })]
    ));
    assert!(closed(&outs, conn(1)));
}

#[test]
fn a_silent_established_session_is_closed_and_its_slot_freed() {
    let mut s = lenient(1);
    probe(&mut s, ms(0), conn(1), &code(1));
    hello(&mut s, ms(1), conn(2), &code(1));
    let ack = bytes_of(&SessionMsg::Ack);
    s.handle_input(
        ms(2),
        Input::Received {
            conn: conn(2),
            bytes: &ack,
        },
    );
    s.handle_timeout(ms(60_001));
    drain(&mut s);
    assert_eq!(s.clients(), 1);
    s.handle_timeout(ms(60_002));
    let outs = drain(&mut s);
    assert!(closed(&outs, conn(2)));
    assert_eq!(s.clients(), 0);
    assert_eq!(
        probe(&mut s, ms(60_003), conn(3), &code_at(2, ms(60_003))),
        ProbeMsg::Available
    );
}
