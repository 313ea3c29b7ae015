//! The replicas' logs, checked between steps and after the heal, in every
//! scenario whose servers replicate (replication, files). It reads what
//! each running server reports of its own log and indexes:
//!
//! - indexes are ordered: `applied <= commit <= log length` and
//!   `applied <= durable <= log length` (`applied` is the durably applied
//!   index the server reports);
//! - the commit index never decreases while a server runs, and the applied
//!   index never decreases at all, not even across a restart (it is durable);
//! - **committed entries never change**: the first time any server counts an
//!   entry as committed, the harness remembers it; every server that later
//!   counts index `i` as committed must hold that very entry at `i`, in any
//!   incarnation. This implies the pairwise check, also made: two servers
//!   hold the same entries up to the smaller of their applied indexes;
//! - **at most one master per view**: the first server seen as master of a
//!   view is remembered; another one of the same view is a violation;
//! - a server's view never decreases, not even across a restart (it is
//!   durable before anyone is told of it).
//!
//! [`converged`] tells, after the heal, whether every server holds the same
//! log and state.

use super::durability::Durability;
use crate::server_host::{with_views, ServerSlot, View};
use ferry_core::replication::entry::Entry;
use ferry_core::replication::Indexes;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::rc::Rc;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Seen {
    incarnation: u32,
    /// Indexes at the last check (durable, commit, applied).
    indexes: (u64, u64, u64),
    /// Highest durably applied index ever reported, over all incarnations.
    applied_max: u64,
    /// Highest view ever reported, over all incarnations.
    view_max: u64,
    /// Committed entries of this incarnation checked against the history.
    checked: u64,
}

/// The between-steps monitor.
#[derive(Debug, Default)]
pub struct Watch {
    /// Committed entries as first seen: index `i` at `[i - 1]`, with the
    /// server that first counted it committed.
    history: Vec<(Entry, u32)>,
    seen: BTreeMap<u32, Seen>,
    /// The master of each view, as first seen.
    masters: BTreeMap<u64, u32>,
}

impl Watch {
    /// Checks every running server; returns what is violated.
    pub fn check(&mut self, servers: &[View<'_>]) -> Vec<String> {
        let mut v = Vec::new();
        let mut changed = false;
        for s in servers {
            let r = s.server.replica();
            let Indexes {
                durable,
                commit,
                applied,
            } = r.indexes();
            let len = r.log().len() as u64;
            let host = format!("server{}", s.id);
            if !(applied <= commit && commit <= len && applied <= durable && durable <= len) {
                v.push(format!(
                    "{host} has disordered indexes: durable {durable}, commit {commit}, applied {applied}, log length {len}"
                ));
            }
            let seen = self.seen.entry(s.id).or_default();
            let fresh = seen.incarnation != s.incarnation;
            if fresh {
                seen.incarnation = s.incarnation;
                seen.checked = 0;
            } else if commit < seen.indexes.1 {
                v.push(format!(
                    "{host}'s commit index went back from {} to {commit}",
                    seen.indexes.1
                ));
            }
            if applied < seen.applied_max {
                v.push(format!(
                    "{host}'s durably applied index went back from {} to {applied}{}",
                    seen.applied_max,
                    if fresh { " across a restart" } else { "" }
                ));
            }
            seen.applied_max = seen.applied_max.max(applied);
            let view = r.view();
            if view < seen.view_max {
                v.push(format!(
                    "{host}'s view went back from {} to {view}",
                    seen.view_max
                ));
            }
            seen.view_max = seen.view_max.max(view);
            if r.is_master() {
                let first = *self.masters.entry(view).or_insert(s.id);
                if first != s.id {
                    v.push(format!(
                        "two masters of view {view}: server{first} and {host}"
                    ));
                }
            }
            changed |= fresh || seen.indexes != (durable, commit, applied);
            seen.indexes = (durable, commit, applied);
            // Committed entries never change.
            let log = r.log();
            while seen.checked < commit {
                let i = seen.checked + 1;
                let entry = &log[(i - 1) as usize];
                match self.history.get((i - 1) as usize) {
                    Some((first, by)) if first != entry => {
                        v.push(format!(
                            "server{} holds committed entry #{i} as {entry:?}, but server{by} committed it as {first:?}",
                            s.id
                        ));
                        break;
                    }
                    Some(_) => {}
                    None => self.history.push((entry.clone(), s.id)),
                }
                seen.checked = i;
            }
        }
        if changed {
            v.extend(check_log_agreement(servers));
        }
        v
    }

    /// Views that had a master, and how many.
    pub fn masters(&self) -> usize {
        self.masters.len()
    }

    /// Committed entries seen so far.
    pub fn committed(&self) -> usize {
        self.history.len()
    }

    /// The committed entries seen so far, in log order (entry `i` first
    /// counted committed at `[i - 1]`).
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.history.iter().map(|(e, _)| e)
    }
}

/// Any two servers hold the same entries up to the smaller of their applied
/// indexes.
pub fn check_log_agreement(servers: &[View<'_>]) -> Vec<String> {
    let mut v = Vec::new();
    for (i, a) in servers.iter().enumerate() {
        for b in &servers[i + 1..] {
            let (ra, rb) = (a.server.replica(), b.server.replica());
            let upto = ra.indexes().applied.min(rb.indexes().applied) as usize;
            let (la, lb) = (&ra.log()[..upto], &rb.log()[..upto]);
            if let Some(k) = (0..upto).find(|&k| la[k] != lb[k]) {
                v.push(format!(
                    "server{} and server{} both applied entry #{} but differ: {:?} vs {:?}",
                    a.id,
                    b.id,
                    k + 1,
                    la[k],
                    lb[k]
                ));
            }
        }
    }
    v
}

/// The healed cluster's common state, if every server has converged: the
/// same indexes, everything durable committed and applied, the same log and
/// the same state digest. Otherwise what differs.
pub fn converged(servers: &[View<'_>], expected: usize) -> Result<String, String> {
    if servers.len() != expected {
        return Err(format!("only {} of {expected} servers run", servers.len()));
    }
    let first = servers[0].server.replica();
    let Indexes {
        durable: d,
        commit: c,
        applied: a,
    } = first.indexes();
    let mut why = String::new();
    for s in servers {
        let r = s.server.replica();
        let ours = r.indexes();
        let (sd, sc, sa) = (ours.durable, ours.commit, ours.applied);
        if (sd, sc, sa) != (d, c, a) || sa != sd || r.log().len() as u64 != sd {
            let _ = write!(
                why,
                "server{}: durable {sd}, commit {sc}, applied {sa}, log {}; ",
                s.id,
                r.log().len()
            );
        } else if r.log() != first.log() {
            let _ = write!(why, "server{}: a different log; ", s.id);
        } else if r.state().digest() != first.state().digest() {
            let _ = write!(why, "server{}: a different state digest; ", s.id);
        }
    }
    if why.is_empty() {
        let digest = first.state().digest();
        Ok(format!(
            "log {d}, commit {c}, applied {a} on every server; {} user(s); state digest {:02x}{:02x}{:02x}{:02x}",
            first.state().users().count(),
            digest[0],
            digest[1],
            digest[2],
            digest[3]
        ))
    } else {
        let Indexes {
            durable: d,
            commit: c,
            applied: a,
        } = first.indexes();
        Err(format!(
            "servers differ (server{} has durable {d}, commit {c}, applied {a}): {}",
            servers[0].id,
            why.trim_end_matches("; ")
        ))
    }
}

/// The between-steps checks of a replicated cluster: the [`Watch`] on the
/// logs the servers report, and the durability of what they count
/// committed in their stores ([`Durability`]).
#[derive(Debug, Default)]
pub struct ReplicaChecks {
    pub watch: Watch,
    durability: Durability,
}

impl ReplicaChecks {
    /// Checks every running server of `servers`; returns what is
    /// violated.
    pub fn check(&mut self, servers: &[Rc<RefCell<ServerSlot>>]) -> Vec<String> {
        let logs: Vec<_> = servers.iter().map(|s| s.borrow().durable.clone()).collect();
        with_views(servers, |views| {
            let mut v = self.watch.check(views);
            v.extend(self.durability.check(&logs, views));
            v
        })
    }
}

/// Servers resumed from crafted stores, for the checks' unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use ferry_core::accounts::password::{hash, PasswordParams};
    use ferry_core::auth::ClusterSecret;
    use ferry_core::frame;
    use ferry_core::replication::entry::{Origin, Txn};
    use ferry_core::replication::state::State;
    use ferry_core::replication::ReplicaConfig;
    use ferry_core::server::Server;
    use ferry_core::server::ServerConfig;
    use ferry_core::store::{Recovered, Write};
    use ferry_core::{Entropy, Timestamp};
    use std::time::Duration;

    pub(crate) const EPOCH: u64 = 1_780_000_000;

    pub(crate) fn register(index: u64, name: &str, password: &str) -> Entry {
        Entry {
            index,
            view: 1,
            at: EPOCH,
            origin: Origin {
                server: 1,
                session: index,
                request: 1,
            },
            txn: Txn::Register {
                username: name.into(),
                password: hash(PasswordParams::TESTING, [index as u8; 16], password).unwrap(),
            },
        }
    }

    /// A server resumed from a store holding `log`, `applied` of it applied.
    pub(crate) fn server(id: u32, log: &[Entry], applied: u64) -> Server {
        let mut state = State::default();
        let mut rows = BTreeMap::new();
        for e in &log[..applied as usize] {
            for w in state.apply(e).writes {
                if let Write::Put { table, key, value } = w {
                    rows.insert((table, key), value);
                }
            }
        }
        let rec = Recovered {
            log: log
                .iter()
                .map(|e| (e.index, frame::encode(e).unwrap()[frame::PREFIX..].to_vec()))
                .collect(),
            tables: rows.into_iter().map(|((t, k), v)| (t, k, v)).collect(),
            applied,
            view: 1,
            vote: None,
            blobs: Vec::new(),
        };
        let cfg = ServerConfig {
            password: PasswordParams::TESTING,
            ..ServerConfig::new(id)
        };
        let secret = ClusterSecret::from_bytes(b"ferry-sim-cluster-secret").unwrap();
        let now = Timestamp::from_duration(Duration::from_secs(EPOCH));
        let replica = ReplicaConfig::new(id, 1, Vec::new());
        Server::new(cfg, replica, secret, Entropy::from_u64(1), &rec, now).unwrap()
    }

    pub(crate) fn view(id: u32, incarnation: u32, server: &Server) -> View<'_> {
        View {
            id,
            incarnation,
            server,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{register, server, view};
    use super::*;

    #[test]
    fn servers_that_agree_pass() {
        let log = [
            register(1, "alice", "pw-alice1"),
            register(2, "bob", "pw-bob-12"),
        ];
        let (a, b) = (server(1, &log, 2), server(2, &log, 1));
        let mut w = Watch::default();
        assert_eq!(
            w.check(&[view(1, 1, &a), view(2, 1, &b)]),
            Vec::<String>::new()
        );
        assert_eq!(w.committed(), 2);
        assert!(converged(&[view(1, 1, &a), view(2, 1, &b)], 2).is_err());
        let b = server(2, &log, 2);
        let state = converged(&[view(1, 1, &a), view(2, 1, &b)], 2).unwrap();
        assert!(state.starts_with("log 2, commit 2, applied 2"), "{state}");
    }

    #[test]
    fn a_committed_entry_that_changes_is_caught() {
        let a = server(1, &[register(1, "alice", "pw-alice1")], 1);
        let b = server(2, &[register(1, "alicia", "pw-alice1")], 1);
        let v = Watch::default().check(&[view(1, 1, &a), view(2, 1, &b)]);
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v[0].contains("committed entry #1"), "{v:?}");
        assert!(v[1].contains("both applied entry #1 but differ"), "{v:?}");
        // Also when the two are never up at once.
        let mut w = Watch::default();
        assert!(w.check(&[view(1, 1, &a)]).is_empty());
        let v = w.check(&[view(2, 1, &b)]);
        assert!(v[0].contains("server1 committed it as"), "{v:?}");
    }

    #[test]
    fn an_applied_index_that_goes_back_across_a_restart_is_caught() {
        let log = [
            register(1, "alice", "pw-alice1"),
            register(2, "bob", "pw-bob-12"),
        ];
        let mut w = Watch::default();
        assert!(w.check(&[view(2, 1, &server(2, &log, 2))]).is_empty());
        let v = w.check(&[view(2, 2, &server(2, &log, 1))]);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            v[0].contains("went back from 2 to 1 across a restart"),
            "{v:?}"
        );
    }
}
