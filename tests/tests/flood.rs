//! Denial of service by the unauthenticated, with real processes: one
//! source address floods the balancer and every server, and a real client
//! at another address is still served.

use ferry_core::refusal::Refusal;
use ferry_tests::flood::{self, Asked, Held, FLOOD_IP};
use ferry_tests::{balancer_with_alice, Cluster, DEADLINE, POLL};
use std::collections::BTreeMap;
use std::net::TcpStream;
use std::time::{Duration, Instant};

const PASSWORD: &str = "correct horse battery";

/// Polls `held` until at most `open` remain open, for at most
/// [`DEADLINE`]; returns the refusals of those the server closed.
fn closed_down_to(held: &mut Vec<impl Held>, open: usize) -> Vec<Option<Refusal>> {
    let start = Instant::now();
    let mut refusals = Vec::new();
    loop {
        held.retain_mut(|s| {
            let (closed, said) = flood::closed_by_peer(s);
            if closed {
                refusals.push(flood::refusal_in(&said));
            }
            !closed
        });
        if held.len() <= open {
            return refusals;
        }
        assert!(start.elapsed() < DEADLINE, "{} still open", held.len());
        std::thread::sleep(POLL);
    }
}

#[test]
fn one_source_flooding_the_balancer_and_every_server_leaves_ls_working() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    // 16 slots per server, 48 in all: fewer than the codes one source gets
    // from the balancer in a burst (60). When a probe's yes reserved a slot
    // for 10 s, or a session could stay without ever logging in, this
    // flood took every slot.
    let cluster = Cluster::start_with(3, data.path(), &["--max-clients", "16"]);
    let servers: Vec<(u32, String)> = (1..=3)
        .map(|id| (id, cluster.addr(id).to_string()))
        .collect();
    let (_balancer, alice) = balancer_with_alice(&servers, home.path(), PASSWORD);
    let put = alice.run(&["put", "/proc/self/status", "--as", "status"]);
    assert!(put.status.success(), "{put:?}");

    // 300 requests to the balancer, back to back; every code it hands out
    // is used at once for a session that never logs in.
    let (mut told_to_wait, mut codes, mut other) = (0, 0, Vec::new());
    let mut sessions: BTreeMap<String, Vec<flood::Session>> = BTreeMap::new();
    let mut hello_refused = Vec::new();
    for _ in 0..300 {
        match flood::ask_balancer(FLOOD_IP, &alice.balancer).expect("the balancer answers") {
            Asked::Assigned { addr, code } => {
                codes += 1;
                match flood::hello(FLOOD_IP, &addr, code).expect("the server answers") {
                    Ok(s) => sessions.entry(addr).or_default().push(s),
                    Err(said) => hello_refused.push(said),
                }
            }
            Asked::TooMany => told_to_wait += 1,
            // "No server": what a flood that took every slot would hear.
            Asked::Other(what) => other.push(what),
        }
    }
    assert!(
        codes >= 60 && told_to_wait > 0,
        "{codes} codes, {told_to_wait} told to wait"
    );
    assert!(other.is_empty(), "{other:?}");
    for (addr, held) in &sessions {
        assert!(held.len() <= 8, "{} idle sessions on {addr}", held.len());
    }
    assert!(
        hello_refused
            .iter()
            .all(|r| r.contains("TooManyConnections")),
        "{hello_refused:?}"
    );

    // 100 connections to each server that never start their TLS
    // handshake: past the source's share of handshakes under way (32),
    // closed at once, unread (there is no one to tell a reason to yet).
    let mut half_open = Vec::new();
    for (_, addr) in &servers {
        let mut held: Vec<TcpStream> = (0..100)
            .map(|_| flood::connect_from(FLOOD_IP, addr).expect("connect"))
            .collect();
        let share = ferry_core::tls::HANDSHAKES_PER_SOURCE;
        let refusals = closed_down_to(&mut held, share);
        assert!(refusals.len() >= 100 - share, "{}", refusals.len());
        assert!(refusals.iter().all(Option::is_none), "{refusals:?}");
        half_open.extend(held);
    }

    // Everything the flood may hold is held: the real client is served.
    let started = Instant::now();
    let ls = alice.run(&["ls"]);
    assert!(ls.status.success(), "{ls:?}");
    assert!(ls.stdout.contains("status"), "{ls:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "ls took {:?}",
        started.elapsed()
    );

    // And it holds it only for a while: idle sessions are closed when
    // their login time is up (half-open ones sooner).
    let mut idle: Vec<flood::Session> = sessions.into_values().flatten().collect();
    let n = idle.len();
    let refusals = closed_down_to(&mut idle, 0);
    assert_eq!(refusals.len(), n);
    assert!(
        refusals
            .iter()
            .all(|r| matches!(r, Some(Refusal::Timeout { step }) if step.starts_with("a login"))),
        "{refusals:?}"
    );
    closed_down_to(&mut half_open, 0);
}
