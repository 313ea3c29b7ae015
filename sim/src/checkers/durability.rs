//! Nothing committed lives on fewer than a majority of disks, and nothing
//! is applied before it is committed.
//!
//! Each server's store is watched from outside its node: every batch the
//! store commits updates that server's [`DurableLog`] (an entry's digest
//! per log index), whoever the incarnation, so the log a crash leaves is
//! the log the check sees. After every step:
//!
//! - every entry a running server counts as committed is held, the same
//!   entry, by a majority of all servers' stores (running or not);
//! - no follower has applied beyond the highest commit index any master
//!   has reported (of any view: a commit index, once reached, is a fact):
//!   a follower that applies what only it and the master hold has applied
//!   something the cluster had not decided.
//!
//! A node's own indexes are not taken for what its store holds: a follower
//! that acknowledges before its disk has the entry, or a master that counts
//! its own copy as a majority, is caught by the stores.

use crate::server_host::{SharedDurableLog, View};
use std::collections::BTreeMap;

/// The checker, with what it remembers between steps.
#[derive(Debug, Default)]
pub struct Durability {
    /// The highest commit index a master has reported.
    master_commit: u64,
    /// What the last check saw: every store's commit count, every running
    /// server's commit index. Nothing changed, nothing to check again.
    last: Vec<u64>,
}

impl Durability {
    /// Checks `servers` (the running ones) against `logs` (every server's,
    /// server `i + 1` at `i`).
    pub fn check(&mut self, logs: &[SharedDurableLog], servers: &[View<'_>]) -> Vec<String> {
        let mut v = Vec::new();
        for m in servers.iter().filter(|s| s.server.replica().is_master()) {
            self.master_commit = self.master_commit.max(m.server.replica().indexes().commit);
        }
        for s in servers.iter().filter(|s| !s.server.replica().is_master()) {
            let applied = s.server.replica().indexes().applied;
            if applied > self.master_commit {
                v.push(format!(
                    "server{} applied entry {applied}, but the master has committed only up to {}",
                    s.id, self.master_commit
                ));
            }
        }
        let logs: Vec<_> = logs.iter().map(|l| l.borrow()).collect();
        let now: Vec<u64> = logs
            .iter()
            .map(|l| l.commits)
            .chain(servers.iter().map(|s| s.server.replica().indexes().commit))
            .collect();
        if now == self.last {
            return v;
        }
        self.last = now;
        let majority = logs.len() / 2 + 1;
        let top = servers
            .iter()
            .map(|s| (s.server.replica().indexes().commit, s.id))
            .max();
        let Some((top, by)) = top else {
            return v;
        };
        for index in 1..=top {
            let mut held: BTreeMap<&[u8; 32], usize> = BTreeMap::new();
            for l in &logs {
                if let Some(d) = l.get(index) {
                    *held.entry(d).or_default() += 1;
                }
            }
            let most = held.values().copied().max().unwrap_or(0);
            if most < majority {
                v.push(format!(
                    "entry {index} is committed (server{by} counts up to {top}) but only {most} of {} stores hold it",
                    logs.len()
                ));
                break;
            }
        }
        v
    }
}
