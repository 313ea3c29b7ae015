//! The peers scenario's invariants, from outside the nodes: the shared
//! directories as the harness reads them after every step, the events the
//! peers told (checked against the directories and the committed log), and
//! the lists they converge on after the heal.

use super::host::{PeerState, Seen};
use crate::disk::short;
use crate::server_host::View;
use ferry_core::peer::sync_plan::conflict_name;
use ferry_core::peer::PeerEvent;
use ferry_core::replication::entry::{Entry, Txn};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;

/// A file's content and its digest.
type Held = (Arc<[u8]>, [u8; 32]);

/// What the directories held, step after step.
#[derive(Default)]
pub struct DirWatch {
    /// Every (name, digest) some peer held at the start, and the same
    /// version under its conflict name (where a SYNC round keeps a version
    /// that lost its name): all content a peer may come to hold under that
    /// name.
    held: BTreeSet<(String, [u8; 32])>,
    /// Each file a peer's directory held, by (peer, name): its content
    /// (compared by pointer first, so that a file is hashed once) and its
    /// digest.
    seen: BTreeMap<(usize, String), Held>,
}

impl DirWatch {
    /// Adds (name, digest) of `content` to what peers may hold.
    pub fn provide(&mut self, name: &str, content: &[u8]) {
        let d = digest(content);
        self.held.insert((conflict_name(name, &d), d));
        self.held.insert((name.to_string(), d));
    }

    /// Nothing outside a directory, nothing invented, nothing replaced or
    /// lost. A SYNC round may move a version off its name (for a version
    /// that wins it), but only to its conflict name, in the same
    /// directory: the version is still there.
    pub fn check(&mut self, peers: &[PeerState]) -> Vec<String> {
        let mut v = Vec::new();
        for (k, p) in peers.iter().enumerate() {
            let dir = p.dir.borrow();
            if let Some(a) = dir.anomalies.first() {
                v.push(format!(
                    "{}: its directory saw what a correct peer never asks: {a}",
                    p.name
                ));
            }
            for (name, f) in &dir.files {
                let key = (k, name.clone());
                match self.seen.get(&key) {
                    Some((c, _)) if Arc::ptr_eq(c, &f.content) => continue,
                    Some((_, d)) if *d != digest(&f.content) && !set_aside(&dir, name, d) => {
                        v.push(format!(
                            "{}: {name:?} was replaced: {} became {}, and {} is not under its conflict name",
                            p.name,
                            short(d),
                            short(&digest(&f.content)),
                            short(d)
                        ))
                    }
                    _ => {}
                }
                let d = digest(&f.content);
                if !self.held.contains(&(name.clone(), d)) {
                    v.push(format!(
                        "{}: {name:?} holds content {} ({} bytes) that no peer held under that name",
                        p.name,
                        short(&d),
                        f.content.len()
                    ));
                }
                self.seen.insert(key, (f.content.clone(), d));
            }
            let mut gone = Vec::new();
            for ((pk, name), (_, d)) in &self.seen {
                if *pk != k || dir.files.contains_key(name) {
                    continue;
                }
                match set_aside(&dir, name, d) {
                    // Moved to its conflict name (seen there from now on).
                    true => gone.push((k, name.clone())),
                    false => v.push(format!(
                        "{}: {name:?} disappeared from its directory",
                        p.name
                    )),
                }
            }
            for key in gone {
                self.seen.remove(&key);
            }
        }
        v
    }
}

/// Does `dir` keep version `d` of `name` under its conflict name?
fn set_aside(dir: &crate::disk::Dir, name: &str, d: &[u8; 32]) -> bool {
    (dir.files.get(&conflict_name(name, d))).is_some_and(|f| digest(&f.content) == *d)
}

pub fn digest(b: &[u8]) -> [u8; 32] {
    *blake3::hash(b).as_bytes()
}

/// Every transfer reported done left the receiving directory holding the
/// name with the sender's content.
pub fn check_transfers(seen: &[Seen], peers: &[PeerState]) -> Vec<String> {
    let mut v = Vec::new();
    for s in seen {
        let (name, sender_is_remote) = match &s.event {
            PeerEvent::PutDone { name, .. } => (name, false),
            PeerEvent::GetDone { name, .. } | PeerEvent::Received { name, .. } => (name, true),
            _ => continue,
        };
        let me = &peers[s.peer].name;
        let Some(r) = s.remote else {
            v.push(format!(
                "{me}: \"{}\" names no known peer at the other end",
                s.event
            ));
            continue;
        };
        let (from, to) = match sender_is_remote {
            true => (r, s.peer),
            false => (s.peer, r),
        };
        let sent = peers[from].dir.borrow().get(name).map(digest);
        let got = peers[to].dir.borrow().get(name).map(digest);
        // A SYNC write may send a version under its conflict name, and the
        // sender's own copy may have been set aside since by a later
        // writer: the sender holds what arrived under one of those names.
        let synced = got.is_some_and(|g| {
            (peers[from].dir.borrow().files.iter()).any(|(n, f)| {
                (n == name || conflict_name(n, &g) == *name || *n == conflict_name(name, &g))
                    && digest(&f.content) == g
            })
        });
        if (sent.is_none() || sent != got) && !synced {
            v.push(format!(
                "{me}: \"{}\" but {} holds {} and {} holds {}",
                s.event,
                peers[from].name,
                sent.map_or("nothing".into(), |d| short(&d)),
                peers[to].name,
                got.map_or("nothing".into(), |d| short(&d)),
            ));
        }
    }
    v
}

/// Every registration the committed log made: peer id (the entry's index)
/// and the address registered.
pub fn joins<'e>(entries: impl Iterator<Item = &'e Entry>) -> BTreeMap<u64, String> {
    entries
        .filter_map(|e| match &e.txn {
            Txn::PeerJoin { addr, .. } => Some((e.index, addr.clone())),
            _ => None,
        })
        .collect()
}

/// Admission: a peer admitted (or answering CONNECT OK) is a registration
/// of the committed log, at the address it connected from (or was dialed
/// at). `None` if the log does not have the id (yet).
pub fn check_admission(s: &Seen, joins: &BTreeMap<u64, String>) -> Option<Result<(), String>> {
    let (peer, ip_of) = match &s.event {
        PeerEvent::Accepted { peer, from, .. } => (*peer, from),
        PeerEvent::Connected { peer, addr, .. } => (*peer, addr),
        _ => return Some(Ok(())),
    };
    let registered = joins.get(&peer)?;
    let ip = |a: &str| a.parse::<SocketAddr>().ok().map(|a| a.ip());
    Some(match ip(registered) == ip(ip_of) && ip(ip_of).is_some() {
        true => Ok(()),
        false => Err(format!(
            "peer{}: \"{}\", but peer {peer} registered at {registered}",
            s.peer + 1,
            s.event
        )),
    })
}

/// The lists after the heal: every live peer registered, and its last
/// UPDATE equal to the registry of the applied state, which holds exactly
/// the live peers. `live` holds each live peer's index and address.
pub fn lists_converged(
    views: &[View<'_>],
    peers: &[PeerState],
    live: &[(usize, String)],
) -> Result<String, String> {
    let Some(first) = views.first() else {
        return Err("no server runs".into());
    };
    let registry: BTreeSet<(u64, String, [u8; 32])> = (first.server.replica().state())
        .registry()
        .all()
        .map(|r| (r.id, r.addr.clone(), r.ticket_digest))
        .collect();
    let mut ids = Vec::new();
    for (k, addr) in live {
        let Some(node) = &peers[*k].node else {
            return Err(format!("{} is not running", peers[*k].name));
        };
        let node = node.borrow();
        let Some(me) = node.me() else {
            return Err(format!("{} is not registered", peers[*k].name));
        };
        if !registry.iter().any(|(id, a, _)| *id == me && a == addr) {
            return Err(format!(
                "{} (peer {me}) is not in the registry",
                peers[*k].name
            ));
        }
        let heard: BTreeSet<(u64, String, [u8; 32])> = (node.peers().iter())
            .map(|p| (p.peer, p.addr.clone(), p.ticket_digest))
            .collect();
        if heard != registry {
            return Err(format!(
                "{}'s last UPDATE lists {:?}, the registry {:?}",
                peers[*k].name,
                heard.iter().map(|p| p.0).collect::<Vec<_>>(),
                registry.iter().map(|p| p.0).collect::<Vec<_>>()
            ));
        }
        ids.push(me);
    }
    if registry.len() != live.len() {
        return Err(format!(
            "the registry lists {:?}, the live peers are {ids:?}",
            registry.iter().map(|p| p.0).collect::<Vec<_>>()
        ));
    }
    Ok(format!("{} live peer(s) {ids:?} listed alike", live.len()))
}
