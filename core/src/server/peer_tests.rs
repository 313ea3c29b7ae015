//! The tracker's side: REGISTER OK and UPDATE on sessions of peers
//! registered through different servers, leases kept while a session
//! lives, and a peer gone with its session.

use crate::io::{ConnId, Input};
use crate::server::messages::PeerInfo;
use crate::server::user_files_tests::{login_token, proven_session};
use crate::server::{OpError, Request, SessionMsg};
use crate::testkit::cluster::Cluster;
use std::time::Duration;

fn register(c: &mut Cluster, ix: usize, s: ConnId, addr: &str) -> Vec<SessionMsg> {
    let got = c.request(ix, s, &Request::PeerRegister { addr: addr.into() });
    c.run_for(Duration::from_millis(500));
    [got, c.received(ix, s)].concat()
}

/// The last UPDATE in `msgs`, as (user, addr) pairs.
fn last_update(msgs: &[SessionMsg]) -> Option<Vec<(String, String)>> {
    msgs.iter().rev().find_map(|m| match m {
        SessionMsg::PeerUpdate { peers } => Some(
            peers
                .iter()
                .map(|p: &PeerInfo| (p.user.clone(), p.addr.clone()))
                .collect(),
        ),
        _ => None,
    })
}

#[test]
fn peers_registered_through_different_servers_see_each_other_until_one_leaves() {
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    let (alice, bob) = (login_token(&mut c, "alice"), login_token(&mut c, "bob"));
    let a = proven_session(&mut c, 0, &alice, None);
    let got = register(&mut c, 0, a, "10.0.0.1:9000");
    match &got[..] {
        [SessionMsg::PeerRegistered { peer, ticket }, SessionMsg::PeerUpdate { peers }] => {
            // The list names the peer by its id and the ticket by its
            // digest, never the ticket itself.
            assert_eq!(peers.len(), 1);
            assert_eq!(peers[0].peer, *peer);
            assert_eq!(peers[0].ticket_digest, *blake3::hash(ticket).as_bytes());
        }
        other => panic!("REGISTER OK, then UPDATE: {other:?}"),
    }

    let b = proven_session(&mut c, 1, &bob, None);
    let got = register(&mut c, 1, b, "10.0.0.2:9000");
    let both = vec![
        ("alice".to_string(), "10.0.0.1:9000".to_string()),
        ("bob".to_string(), "10.0.0.2:9000".to_string()),
    ];
    assert_eq!(last_update(&got), Some(both.clone()));
    // Alice's server pushed the same list to her.
    assert_eq!(last_update(&c.received(0, a)), Some(both));

    // 45 s on, past the 30 s lease: renewed while the sessions live.
    for _ in 0..9 {
        c.send(0, a, &SessionMsg::Ping);
        c.send(1, b, &SessionMsg::Ping);
        c.run_for(Duration::from_secs(5));
    }
    c.received(0, a);
    assert_eq!(c.server(2).replica().state().registry().all().count(), 2);

    // Alice's session ends: bob hears she left.
    c.input(0, Input::Closed { conn: a });
    c.run_for(Duration::from_millis(500));
    let bob_only = vec![("bob".to_string(), "10.0.0.2:9000".to_string())];
    assert_eq!(last_update(&c.received(1, b)), Some(bob_only));
}

#[test]
fn register_fails_without_a_login_or_with_a_bad_address() {
    let mut c = Cluster::new(1);
    c.run_for(Duration::from_secs(1));
    let s = c.open_session(0);
    c.send(
        0,
        s,
        &SessionMsg::Begin {
            op: crate::server::OpCode::PeerRegister,
        },
    );
    assert_eq!(
        c.received(0, s),
        [SessionMsg::Failed(OpError::NotAuthenticated)]
    );
    let alice = login_token(&mut c, "alice");
    let s = proven_session(&mut c, 0, &alice, None);
    for bad in ["nowhere", "10.0.0.1", "10.0.0.1:99999", "../x:1"] {
        let got = register(&mut c, 0, s, bad);
        assert!(
            matches!(
                got[..],
                [SessionMsg::Failed(OpError::BadPeerAddress { .. })]
            ),
            "{bad}: {got:?}"
        );
    }
    assert_eq!(c.server(0).replica().state().registry().all().count(), 0);
}

/// `register HOST PORT` may name any server: asked GET SERVER, a server
/// assigns itself (an empty address: "present the code here") with a code
/// that opens one session, once.
#[test]
fn a_server_asked_for_a_server_assigns_itself_with_a_single_use_code() {
    use crate::balancer::messages::BalancerMsg;
    use crate::refusal::{Refusal, PROTOCOL_VERSION};
    let mut c = Cluster::new(3);
    c.run_for(Duration::from_secs(1));
    let ask = BalancerMsg::GetServer {
        version: PROTOCOL_VERSION,
    };
    let asked = c.open_raw(1, &ask);
    let code = match &c.received_as::<BalancerMsg>(1, asked)[..] {
        [BalancerMsg::Assigned {
            server_id: 2,
            addr,
            code,
        }] if addr.is_empty() => code.clone(),
        other => panic!("server 2 assigns itself: {other:?}"),
    };
    let hello = SessionMsg::Hello {
        version: PROTOCOL_VERSION,
        code: code.clone(),
    };
    let s = c.open_raw(1, &hello);
    assert!(
        matches!(
            c.received(1, s)[..],
            [SessionMsg::HelloAck { server_id: 2 }]
        ),
        "the code opens a session on server 2"
    );
    // Spent: a second session with it is refused.
    let again = c.open_raw(1, &hello);
    assert!(matches!(
        c.received(1, again)[..],
        [SessionMsg::Refused(Refusal::CodeUsed)]
    ));
    // And another server does not take it.
    let elsewhere = c.open_raw(2, &hello);
    assert!(matches!(
        c.received(2, elsewhere)[..],
        [SessionMsg::Refused(Refusal::WrongServer { .. })]
    ));
    // A wrong version is refused on the balancer's terms.
    let old = c.open_raw(1, &BalancerMsg::GetServer { version: 1 });
    assert!(matches!(
        c.received_as::<BalancerMsg>(1, old)[..],
        [BalancerMsg::Refused(Refusal::VersionMismatch { .. })]
    ));
}
