//! No denial of service by the unauthenticated (issue 16): a flood of
//! balancer requests, auth codes kept too long or used twice, sessions that
//! never log in, and many connections from one source address.

use super::*;
use crate::accounts::token::SessionToken;
use crate::auth::AuthCode;
use crate::balancer::{Balancer, BalancerConfig, BalancerMsg, ProbeMsg, ServerAddr};
use crate::refusal::PROTOCOL_VERSION;
use crate::testkit::cluster::{addr, Cluster, Ix};
use crate::testkit::*;
use std::time::Duration;

/// Where the flood comes from, and where the real clients are.
const FLOODER: &str = "203.0.113.66:40000";
const ALICE: &str = "198.51.100.7:50000";
const BALANCER: &str = "192.0.2.1:6000";

/// The balancer in front of a [`Cluster`], its probes carried to the
/// servers as a network would, from [`BALANCER`].
struct Front {
    b: Balancer,
    next_client: u64,
}

impl Front {
    fn new(c: &Cluster) -> Self {
        let servers = (0..c.size())
            .map(|ix| ServerAddr {
                id: ix as u32 + 1,
                addr: addr(ix),
            })
            .collect();
        let b = Balancer::new(BalancerConfig::new(servers), secret(), Entropy::from_u64(9));
        Front { b, next_client: 0 }
    }

    /// GET SERVER from a client at `peer`, carried to its end: the
    /// balancer's answer.
    fn ask(&mut self, c: &mut Cluster, peer: &str) -> BalancerMsg {
        let client = ConnId::accepted(self.next_client);
        self.next_client += 1;
        let now = c.now;
        let peer = peer.to_string();
        self.b.handle_input(
            now,
            Input::Accepted {
                conn: client,
                peer,
                identity: crate::io::Identity::Unchecked,
            },
        );
        let req = bytes_of(&BalancerMsg::GetServer {
            version: PROTOCOL_VERSION,
        });
        let bytes = &req;
        self.b.handle_input(
            now,
            Input::Received {
                conn: client,
                bytes,
            },
        );
        let mut probes: BTreeMap<ConnId, (Ix, ConnId)> = BTreeMap::new();
        for _ in 0..100 {
            let outs = drain(&mut self.b);
            if let Some(answer) = sent::<BalancerMsg, _>(&outs, client).into_iter().next() {
                return answer;
            }
            for o in outs {
                match o {
                    Output::Connect { conn, addr } => {
                        let ix = (0..c.size()).find(|ix| ix_addr(*ix) == addr);
                        let ix = ix.expect("a server of the cluster");
                        let server_conn = c.connect_from(ix, BALANCER);
                        probes.insert(conn, (ix, server_conn));
                        self.b.handle_input(
                            now,
                            Input::Connected {
                                conn,
                                identity: crate::io::Identity::Unchecked,
                            },
                        );
                    }
                    Output::Transmit { conn, bytes } => {
                        let Some(&(ix, server_conn)) = probes.get(&conn) else {
                            continue;
                        };
                        c.send_bytes(ix, server_conn, &bytes);
                        for m in c.received_as::<ProbeMsg>(ix, server_conn) {
                            let bytes = &bytes_of(&m);
                            self.b.handle_input(now, Input::Received { conn, bytes });
                        }
                    }
                    _ => {}
                }
            }
        }
        panic!("the balancer never answered");
    }
}

fn ix_addr(ix: Ix) -> String {
    addr(ix)
}

/// A session on server `ix` from a client at `from`, with `code`: HELLO,
/// and ACK if it is accepted; the connection, or what the server said.
fn session_from(
    c: &mut Cluster,
    ix: Ix,
    from: &str,
    code: &AuthCode,
) -> Result<ConnId, Vec<SessionMsg>> {
    let conn = c.connect_from(ix, from);
    let hello = SessionMsg::Hello {
        version: PROTOCOL_VERSION,
        code: code.clone(),
    };
    c.send_bytes(ix, conn, &bytes_of(&hello));
    match &c.received(ix, conn)[..] {
        [SessionMsg::HelloAck { .. }] => {
            c.send(ix, conn, &SessionMsg::Ack);
            Ok(conn)
        }
        other => Err(other.to_vec()),
    }
}

/// Registers `name` and logs in on a session of its own; the token.
fn token_of(c: &mut Cluster, name: &str) -> SessionToken {
    let (username, password) = (name.to_string(), "password-123".to_string());
    let s = c.open_session(0);
    let register = Request::Register {
        username: username.clone(),
        password: password.clone(),
    };
    c.request(0, s, &register);
    c.run_for(Duration::from_millis(300));
    match &c.request(0, s, &Request::Login { username, password })[..] {
        [SessionMsg::LoggedIn { token, .. }] => token.clone(),
        other => panic!("login: {other:?}"),
    }
}

fn who_am_i(c: &mut Cluster, ix: Ix, conn: ConnId, token: &SessionToken) {
    let token = token.clone();
    let got = c.request(ix, conn, &Request::WhoAmI { token });
    assert!(matches!(got[..], [SessionMsg::Me { .. }]), "{got:?}");
}

fn small_servers(cfg: &mut ServerConfig) {
    cfg.max_clients = 16;
}

#[test]
fn a_flood_of_balancer_requests_leaves_real_clients_their_slots() {
    // 48 slots in all. A yes that reserved one (10 s) let 48 requests from
    // anyone fill the cluster; the balancer lets one source ask 60 at once.
    let mut c = Cluster::new_with(3, small_servers);
    c.run_for(Duration::from_secs(1));
    let mut front = Front::new(&c);
    let mut codes = Vec::new();
    for _ in 0..300 {
        if let BalancerMsg::Assigned {
            server_id, code, ..
        } = front.ask(&mut c, FLOODER)
        {
            codes.push((server_id as usize - 1, code));
        }
    }
    assert_eq!(codes.len(), 60, "one source's burst at the balancer");
    for ix in 0..3 {
        assert_eq!(c.server(ix).clients(), 0, "no slot is held for a code");
    }
    let BalancerMsg::Assigned {
        server_id, code, ..
    } = front.ask(&mut c, ALICE)
    else {
        panic!("alice gets no server");
    };
    let alice = session_from(&mut c, server_id as usize - 1, ALICE, &code);
    assert!(alice.is_ok(), "{alice:?}");

    // The flooder uses its codes too: it holds at most 8 sessions that do
    // not log in per server, and not for long.
    let mut held = [0; 3];
    for (ix, code) in &codes {
        if session_from(&mut c, *ix, FLOODER, code).is_ok() {
            held[*ix] += 1;
        }
    }
    assert!(held.iter().all(|h| *h <= 8), "{held:?}");
    for _ in 0..10 {
        let BalancerMsg::Assigned {
            server_id, code, ..
        } = front.ask(&mut c, ALICE)
        else {
            panic!("a real client gets no server during the flood");
        };
        let ix = server_id as usize - 1;
        assert!(session_from(&mut c, ix, ALICE, &code).is_ok());
    }
    c.run_for(Duration::from_secs(11));
    let left: usize = (0..3).map(|ix| c.server(ix).clients()).sum();
    assert_eq!(left, 0, "every session that did not log in was closed");
}

#[test]
fn a_code_used_after_its_time_is_refused_as_expired() {
    let mut c = Cluster::new(1);
    let (early, late) = (c.mint_code(0), c.mint_code(0));
    // Good for 2 s, and half a second more for a server's clock ahead.
    c.run_for(Duration::from_millis(2500));
    assert!(session_from(&mut c, 0, ALICE, &early).is_ok());
    c.run_for(Duration::from_millis(1));
    let got = session_from(&mut c, 0, ALICE, &late);
    assert_eq!(got, Err(vec![SessionMsg::Refused(Refusal::CodeExpired)]));
    assert_eq!(c.server(0).clients(), 1);
}

#[test]
fn a_code_used_twice_is_refused_as_used_and_after_a_restart_as_unknown() {
    let mut c = Cluster::new(1);
    let code = c.mint_code(0);
    assert!(session_from(&mut c, 0, ALICE, &code).is_ok());
    let again = session_from(&mut c, 0, FLOODER, &code);
    assert_eq!(again, Err(vec![SessionMsg::Refused(Refusal::CodeUsed)]));
    // A restarted server has forgotten the codes spent before: it takes
    // none minted before it started.
    c.run_for(Duration::from_millis(100));
    c.crash(0);
    c.restart(0);
    let after = session_from(&mut c, 0, FLOODER, &code);
    assert_eq!(after, Err(vec![SessionMsg::Refused(Refusal::CodeUnknown)]));
    let fresh = c.mint_code(0);
    assert!(session_from(&mut c, 0, ALICE, &fresh).is_ok());
}

#[test]
fn a_session_that_never_logs_in_is_closed_after_the_login_timeout() {
    let mut c = Cluster::new(1);
    let token = token_of(&mut c, "alice");
    let start = c.now;
    let idle = c.open_session(0);
    let proven = c.open_session(0);
    who_am_i(&mut c, 0, proven, &token);
    let registered = c.open_session(0);
    let bob = Request::Register {
        username: "bob".into(),
        password: "password-456".into(),
    };
    let got = c.request(0, registered, &bob);
    assert!(
        matches!(got[..], [SessionMsg::Registered { .. }]),
        "{got:?}"
    );
    let logged_in = c.open_session(0);
    let login = Request::Login {
        username: "bob".into(),
        password: "password-456".into(),
    };
    let got = c.request(0, logged_in, &login);
    assert!(matches!(got[..], [SessionMsg::LoggedIn { .. }]), "{got:?}");
    let all = [idle, proven, registered, logged_in];
    // Pinging is no login.
    let until = start + Duration::from_millis(9900);
    while c.now < until {
        for s in all {
            c.send(0, s, &SessionMsg::Ping);
        }
        c.run_for(until.saturating_since(c.now).min(Duration::from_secs(1)));
    }
    assert!(all.iter().all(|s| !c.is_closed(0, *s)));
    c.run_for(Duration::from_millis(1000));
    for s in [idle, registered] {
        assert!(c.is_closed(0, s));
        let got = c.received(0, s);
        let Some(SessionMsg::Refused(Refusal::Timeout { step })) = got.last() else {
            panic!("{got:?}");
        };
        assert!(step.starts_with("a login: "), "{step}");
    }
    for s in [proven, logged_in] {
        assert!(!c.is_closed(0, s), "a session that logged in stays");
    }
    let said = c.events.iter().filter(|(_, e)| {
        matches!(e, ServerEvent::Refused { reason: Refusal::Timeout { step }, .. } if step.starts_with("a login"))
    });
    assert_eq!(said.count(), 2);
    // A connection that says nothing is gone sooner, at the handshake's
    // timeout.
    let half_open = c.connect_from(0, FLOODER);
    c.run_for(Duration::from_secs(5));
    assert!(c.is_closed(0, half_open));
}

#[test]
fn one_source_holds_a_few_connections_without_a_login_and_others_are_not_held() {
    let mut c = Cluster::new(1);
    let idle: Vec<ConnId> = (0..8).map(|_| c.connect_from(0, FLOODER)).collect();
    let ninth = c.connect_from(0, "203.0.113.66:40009");
    assert_eq!(
        c.received(0, ninth),
        vec![SessionMsg::Refused(Refusal::TooManyConnections {
            limit: 8,
            unauthenticated: true
        })]
    );
    assert!(c.is_closed(0, ninth));
    assert!(idle.iter().all(|s| !c.is_closed(0, *s)));
    // Said once, however many are refused.
    for _ in 0..20 {
        c.connect_from(0, FLOODER);
    }
    let capped = (c.events.iter()).filter(|(_, e)| matches!(e, ServerEvent::SourceCapped { .. }));
    assert_eq!(capped.count(), 1);
    // Another machine is not held by it.
    let code = c.mint_code(0);
    assert!(session_from(&mut c, 0, ALICE, &code).is_ok());
    // Once the idle ones are gone, the source may connect again.
    c.run_for(Duration::from_secs(5));
    assert!(idle.iter().all(|s| c.is_closed(0, *s)));
    let code = c.mint_code(0);
    assert!(session_from(&mut c, 0, FLOODER, &code).is_ok());
}

#[test]
fn logged_in_sessions_make_room_for_others_up_to_the_cap_in_all() {
    let mut c = Cluster::new_with(1, |cfg| {
        cfg.per_source = SourceCaps {
            unauthenticated: 2,
            all: 3,
        }
    });
    let token = token_of(&mut c, "alice");
    let from = "[2001:db8:5:6::1]:7000";
    let code = c.mint_code(0);
    let first = session_from(&mut c, 0, from, &code).expect("a session");
    c.connect_from(0, from);
    // An IPv6 source is its /64.
    let third = c.connect_from(0, "[2001:db8:5:6::2]:7001");
    assert!(c.is_closed(0, third));
    who_am_i(&mut c, 0, first, &token);
    let third = c.connect_from(0, from);
    assert!(!c.is_closed(0, third), "the login made room");
    let fourth = c.connect_from(0, from);
    assert_eq!(
        c.received(0, fourth),
        vec![SessionMsg::Refused(Refusal::TooManyConnections {
            limit: 3,
            unauthenticated: false
        })]
    );
}

#[test]
fn the_balancers_address_is_exempt_once_it_proved_the_secret() {
    let mut c = Cluster::new(1);
    let before: Vec<ConnId> = (0..9).map(|_| c.connect_from(0, BALANCER)).collect();
    assert!(
        c.is_closed(0, before[8]),
        "a stranger until it proves the secret"
    );
    c.run_for(Duration::from_secs(5));
    let mut front = Front::new(&c);
    assert!(matches!(
        front.ask(&mut c, ALICE),
        BalancerMsg::Assigned { .. }
    ));
    let after: Vec<ConnId> = (0..20).map(|_| c.connect_from(0, BALANCER)).collect();
    assert!(after.iter().all(|s| !c.is_closed(0, *s)));
}
