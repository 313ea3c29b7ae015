//! What must hold in every run, whatever the seed.
//!
//! Checked between steps (server capacity) and after the run (outcomes).
//! Each check returns the violations it found as readable sentences; the
//! harness stops a run at the first one found between steps.

use super::attacker::Presented;
use ferry_core::client::{ClientError, Peer};
use ferry_core::refusal::Refusal;
use ferry_core::server::Server;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

/// A session a server accepted (its `Established` event).
#[derive(Clone, Debug)]
pub struct Established {
    pub at: Duration,
    pub server: u32,
    /// Counts the server's starts: 1 for the first, 2 after one restart...
    pub incarnation: u32,
    pub code: String,
    /// The client's address as the server saw it.
    pub peer: Option<SocketAddr>,
}

/// How a client's attempt to get a session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientResult {
    Connected {
        server_id: u32,
        /// The client's end of the session, matched against the server's.
        local: Option<SocketAddr>,
    },
    Failed(ClientError),
}

#[derive(Clone, Debug)]
pub struct ClientRecord {
    pub name: String,
    pub start: Duration,
    /// Set when the client's program finished; `None` means it hung.
    pub result: Option<ClientResult>,
    /// When the result was reported.
    pub at: Option<Duration>,
    /// What ended a connected session early, if something did.
    pub ended_early: Option<String>,
    /// The liveness probe of the healed cluster: it must connect.
    pub must_connect: bool,
    /// Its program returned (after holding and leaving, if it connected).
    pub finished: bool,
}

/// What the replaying attacker achieved.
#[derive(Clone, Debug)]
pub struct AttackRecord {
    pub name: String,
    pub start: Duration,
    pub finished: bool,
    /// The server its code was minted for, if it got one.
    pub target: Option<u32>,
    /// Where it presented the code, and how each presentation ended.
    pub results: Vec<(u32, Presented)>,
}

/// Everything the harness observed, filled in by host and client programs.
#[derive(Debug, Default)]
pub struct Observations {
    pub established: Vec<Established>,
    /// Labels of the codes the balancer handed out.
    pub assigned: BTreeSet<String>,
    /// Labels of the codes servers were probed with, and their answers
    /// (true: "yes").
    pub probed: BTreeMap<String, bool>,
    pub clients: Vec<ClientRecord>,
    pub attacks: Vec<AttackRecord>,
}

/// A server never holds more slots than it has (a probe's yes holds none;
/// a HELLO takes one only if one is free).
pub fn check_server_capacity(server: &Server, max_clients: u32) -> Result<(), String> {
    let (clients, max) = (server.clients(), max_clients as usize);
    if clients > max {
        return Err(format!(
            "server {} holds {clients} slots but has only {max}",
            server.id()
        ));
    }
    Ok(())
}

/// The checks that need the whole run.
pub fn check_outcomes(obs: &Observations) -> Vec<String> {
    let mut v = Vec::new();
    check_every_client_finished(obs, &mut v);
    check_codes_single_use(obs, &mut v);
    check_connected_means_established(obs, &mut v);
    check_replays_refused(obs, &mut v);
    v.extend(crate::checkers::assignments::check(
        &obs.probed,
        &obs.assigned,
    ));
    v
}

/// A replayed code opens at most one session, and only on its own server.
fn check_replays_refused(obs: &Observations, v: &mut Vec<String>) {
    for a in &obs.attacks {
        if !a.finished {
            v.push(format!("{} never finished", a.name));
            continue;
        }
        let accepted: Vec<u32> = a
            .results
            .iter()
            .filter(|(_, r)| *r == Presented::Accepted)
            .map(|(s, _)| *s)
            .collect();
        if accepted.len() > 1 {
            v.push(format!(
                "{} presented one code {} times and it was accepted {} times (servers {accepted:?})",
                a.name,
                a.results.len(),
                accepted.len()
            ));
        }
        if let Some(wrong) = accepted.iter().find(|s| Some(**s) != a.target) {
            v.push(format!(
                "{}'s code for server {:?} was accepted by server {wrong}",
                a.name, a.target
            ));
        }
    }
}

/// Every client ends with a server or a clear error, and between honest
/// nodes of one version there is never a protocol error or a refusal that
/// means a node misbehaved.
fn check_every_client_finished(obs: &Observations, v: &mut Vec<String>) {
    for c in &obs.clients {
        match &c.result {
            _ if !c.finished => v.push(format!("{} never finished", c.name)),
            None => v.push(format!("{} finished without a result", c.name)),
            Some(ClientResult::Failed(e)) if c.must_connect => v.push(format!(
                "{} (liveness probe of the healed cluster) failed: {e}",
                c.name
            )),
            Some(ClientResult::Failed(e)) if !is_expected_failure(e) => v.push(format!(
                "{} failed with an error honest nodes never cause: {e}",
                c.name
            )),
            Some(_) => {}
        }
    }
}

/// Failures that the injected faults and load can cause. The balancer is
/// never faulted, so a client that cannot reach it, or waits for it in vain,
/// found a bug (for example a search that outlasts the client's patience).
/// Anything else (malformed or unexpected messages, bad or misdirected codes,
/// version mismatches) means a node broke the protocol.
fn is_expected_failure(e: &ClientError) -> bool {
    match e {
        ClientError::NoServer(_) => true,
        ClientError::Unreachable { peer, .. } | ClientError::Timeout { peer, .. } => {
            *peer == Peer::Server
        }
        ClientError::Refused { by, reason } => matches!(
            (by, reason),
            (
                Peer::Server,
                Refusal::CodeExpired
                    | Refusal::CodeUnknown
                    | Refusal::Timeout { .. }
                    | Refusal::ServerFull
            ) | (Peer::Balancer, Refusal::Overloaded)
        ),
        // Every member is issued by the one authority: a refusal is a bug.
        ClientError::Protocol { .. } | ClientError::Untrusted { .. } => false,
    }
}

/// No auth code opens two sessions, on any server, and every code a server
/// accepted was handed out by the balancer.
fn check_codes_single_use(obs: &Observations, v: &mut Vec<String>) {
    let mut seen: BTreeMap<(u32, &str), &Established> = BTreeMap::new();
    for e in &obs.established {
        if let Some(first) = seen.insert((e.server, &e.code), e) {
            v.push(format!(
                "code {} accepted twice by server {}: at {:?} (incarnation {}) and at {:?} (incarnation {})",
                e.code, e.server, first.at, first.incarnation, e.at, e.incarnation
            ));
        }
        if !obs.assigned.contains(&e.code) {
            v.push(format!(
                "server {} accepted code {} that the balancer never handed out",
                e.server, e.code
            ));
        }
        if !e.code.starts_with(&format!("s{}:", e.server)) {
            v.push(format!(
                "server {} accepted code {} minted for another server",
                e.server, e.code
            ));
        }
    }
}

/// A client that reports `Connected { server_id }` has a session on that
/// server: the server accepted a session from the client's address.
fn check_connected_means_established(obs: &Observations, v: &mut Vec<String>) {
    for c in &obs.clients {
        let Some(ClientResult::Connected { server_id, local }) = &c.result else {
            continue;
        };
        let Some(local) = local else {
            v.push(format!(
                "{} connected but its session address is unknown",
                c.name
            ));
            continue;
        };
        let found = obs.established.iter().any(|e| {
            e.server == *server_id && e.peer == Some(*local) && c.at.is_none_or(|at| e.at <= at)
        });
        if !found {
            v.push(format!(
                "{} reports a session on server {server_id}, but that server established none from {local}",
                c.name
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::balancer::Tally;

    fn established(server: u32, code: &str, peer: &str) -> Established {
        Established {
            at: Duration::from_secs(1),
            server,
            incarnation: 1,
            code: code.into(),
            peer: Some(peer.parse().unwrap()),
        }
    }

    fn client(name: &str, result: Option<ClientResult>) -> ClientRecord {
        ClientRecord {
            name: name.into(),
            start: Duration::ZERO,
            result,
            at: Some(Duration::from_secs(2)),
            ended_early: None,
            must_connect: false,
            finished: true,
        }
    }

    fn connected(server_id: u32, local: &str) -> Option<ClientResult> {
        Some(ClientResult::Connected {
            server_id,
            local: Some(local.parse().unwrap()),
        })
    }

    fn healthy() -> Observations {
        Observations {
            probed: [("s1:aaaaaa".to_string(), true)].into(),
            established: vec![established(1, "s1:aaaaaa", "10.0.0.9:5000")],
            assigned: ["s1:aaaaaa".to_string()].into(),
            clients: vec![
                client("c1", connected(1, "10.0.0.9:5000")),
                client(
                    "c2",
                    Some(ClientResult::Failed(ClientError::NoServer(Tally {
                        probed: 3,
                        busy: 3,
                        no_master: 0,
                        catching_up: 0,
                    }))),
                ),
            ],
            attacks: Vec::new(),
        }
    }

    #[test]
    fn a_healthy_run_passes() {
        assert_eq!(check_outcomes(&healthy()), Vec::<String>::new());
    }

    #[test]
    fn a_client_that_never_finished_is_reported() {
        let mut o = healthy();
        let mut c3 = client("c3", None);
        c3.finished = false;
        o.clients.push(c3);
        assert_eq!(check_outcomes(&o), vec!["c3 never finished".to_string()]);
    }

    #[test]
    fn protocol_errors_and_a_silent_balancer_are_violations() {
        let mut o = healthy();
        let bad = ClientError::Protocol {
            peer: Peer::Server,
            detail: "x".into(),
        };
        o.clients
            .push(client("c3", Some(ClientResult::Failed(bad))));
        let slow = ClientError::Timeout {
            peer: Peer::Balancer,
            step: "server assignment",
        };
        o.clients
            .push(client("c4", Some(ClientResult::Failed(slow))));
        let v = check_outcomes(&o);
        assert_eq!(v.len(), 2, "{v:?}");
    }

    #[test]
    fn a_code_accepted_twice_is_reported() {
        let mut o = healthy();
        o.established
            .push(established(1, "s1:aaaaaa", "10.0.0.8:5000"));
        let v = check_outcomes(&o);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("accepted twice"), "{v:?}");
    }

    #[test]
    fn a_code_the_balancer_never_minted_or_for_another_server_is_reported() {
        let mut o = healthy();
        o.established
            .push(established(2, "s1:bbbbbb", "10.0.0.8:5000"));
        let v = check_outcomes(&o);
        assert_eq!(v.len(), 2, "{v:?}");
    }

    #[test]
    fn connected_without_a_session_on_that_server_is_reported() {
        let mut o = healthy();
        o.clients[0].result = connected(2, "10.0.0.9:5000");
        let v = check_outcomes(&o);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("established none"), "{v:?}");
    }

    #[test]
    fn a_replay_accepted_twice_is_reported() {
        let mut o = healthy();
        o.attacks.push(AttackRecord {
            name: "attacker".into(),
            start: Duration::ZERO,
            finished: true,
            target: Some(1),
            results: vec![(1, Presented::Accepted), (1, Presented::Accepted)],
        });
        let v = check_outcomes(&o);
        assert_eq!(v.len(), 1, "{v:?}");
        o.attacks[0].results = vec![
            (1, Presented::Accepted),
            (1, Presented::Refused(Refusal::CodeUsed)),
            (
                2,
                Presented::Refused(Refusal::WrongServer { ours: 2, theirs: 1 }),
            ),
        ];
        assert_eq!(check_outcomes(&o), Vec::<String>::new());
    }
}
