//! Durable storage as the core sees it.
//!
//! The core decides *what* is written; a [`Store`] makes it durable. A store
//! is a dumb, transactional record keeper: a replication log (index → entry
//! bytes), a few tables of records (key → value bytes), and a small meta
//! table (applied index, view). Everything in one [`Batch`] commits in one
//! transaction or not at all, which is what lets "apply entry i" and "applied
//! index = i" never disagree after a crash.
//!
//! The core never calls a store itself: it emits `Persist` effects and waits
//! for the driver to report `Persisted`, so nothing that depends on a write
//! is sent before the write is durable. Drivers call [`Store::commit`] and
//! [`Store::load`]. The heed (LMDB) store lives in `runtime-smol`; the
//! in-memory [`MemStore`] here serves unit tests.

use std::collections::BTreeMap;
use std::fmt;

/// The tables of replicated state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Users,
    Files,
    Shares,
    /// Per client session: last request applied and its result (dedup).
    Clients,
    /// Revoked session tokens until they expire.
    Revoked,
    /// Registered peers (`replication::registry`).
    Peers,
    /// The SYNC round in progress and the last one finished
    /// (`replication::sync_round`).
    Sync,
    /// Failed and successful logins per username (`replication::logins`).
    Logins,
    /// Per user who changed their password: how many times (the epoch
    /// their session tokens must carry).
    Epochs,
    /// The highest user id of a deleted account (one row, absent until an
    /// account is deleted): ids are never given out twice.
    Retired,
    /// Per file that has them (keyed as in `Files`): its modification time
    /// and mode. A table of its own so that the files table's rows keep
    /// the layout every store has (a store from before attributes has no
    /// such table: its files have none).
    Attrs,
}

impl Table {
    pub const ALL: [Table; 11] = [
        Table::Users,
        Table::Files,
        Table::Shares,
        Table::Clients,
        Table::Revoked,
        Table::Peers,
        Table::Sync,
        Table::Logins,
        Table::Epochs,
        Table::Retired,
        Table::Attrs,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Table::Users => "users",
            Table::Files => "files",
            Table::Shares => "shares",
            Table::Clients => "clients",
            Table::Revoked => "revoked",
            Table::Peers => "peers",
            Table::Sync => "sync",
            Table::Logins => "logins",
            Table::Epochs => "epochs",
            Table::Retired => "retired",
            Table::Attrs => "attrs",
        }
    }
}

/// One write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// Log entry at `index` (speedy-encoded `replication::Entry`).
    Append {
        index: u64,
        entry: Vec<u8>,
    },
    /// Drops log entries with index ≥ `from` (a follower's divergent suffix).
    TruncateFrom {
        from: u64,
    },
    Put {
        table: Table,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        table: Table,
        key: Vec<u8>,
    },
    /// The last log index whose effects are in the tables.
    SetApplied {
        index: u64,
    },
    /// The highest view this server has seen (a Raft term).
    SetView {
        view: u64,
    },
    /// Whom this server voted for in its current view, if anyone.
    SetVote {
        vote: Option<u32>,
    },
}

/// Writes that commit together.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    pub writes: Vec<Write>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }
    pub fn push(&mut self, w: Write) {
        self.writes.push(w);
    }
}

/// Everything a node needs to resume after a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    pub log: Vec<(u64, Vec<u8>)>,
    pub tables: Vec<(Table, Vec<u8>, Vec<u8>)>,
    pub applied: u64,
    pub view: u64,
    /// Whom this server voted for in `view` (absent in stores older than
    /// failover: no vote).
    pub vote: Option<u32>,
    /// Content blobs present on this server's disk (listed by the driver).
    pub blobs: Vec<[u8; 32]>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreError(pub String);

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "storage error: {}", self.0)
    }
}

impl std::error::Error for StoreError {}

/// The longest key a batch holds: a folder share's row, (owner, grantee,
/// a name of [`crate::names::MAX_PATH`] bytes and a `/`). A store must take
/// keys this long: a key it refused would stop every server that applies
/// the entry, and a name's length is the user's to choose.
pub const MAX_KEY: usize = 8 + 8 + crate::names::MAX_PATH + 1;

pub trait Store {
    /// Makes the whole batch durable, atomically.
    fn commit(&mut self, batch: &Batch) -> Result<(), StoreError>;
    /// Reads back everything committed.
    fn load(&self) -> Result<Recovered, StoreError>;
}

/// An in-memory store with the same semantics, for tests.
#[derive(Clone, Debug, Default)]
pub struct MemStore {
    log: BTreeMap<u64, Vec<u8>>,
    tables: BTreeMap<(Table, Vec<u8>), Vec<u8>>,
    applied: u64,
    view: u64,
    vote: Option<u32>,
    /// Commits made, for tests that count them.
    pub commits: u64,
}

impl Store for MemStore {
    fn commit(&mut self, batch: &Batch) -> Result<(), StoreError> {
        // As LMDB's limit would, refusing the whole batch: no key of the
        // core's may be longer than every store takes.
        let too_long = batch.writes.iter().find_map(|w| match w {
            Write::Put { key, .. } | Write::Delete { key, .. } => {
                (key.len() > MAX_KEY).then_some(key.len())
            }
            _ => None,
        });
        if let Some(len) = too_long {
            return Err(StoreError(format!(
                "a key of {len} bytes (at most {MAX_KEY})"
            )));
        }
        for w in &batch.writes {
            match w {
                Write::Append { index, entry } => {
                    self.log.insert(*index, entry.clone());
                }
                Write::TruncateFrom { from } => {
                    self.log.split_off(from);
                }
                Write::Put { table, key, value } => {
                    self.tables.insert((*table, key.clone()), value.clone());
                }
                Write::Delete { table, key } => {
                    self.tables.remove(&(*table, key.clone()));
                }
                Write::SetApplied { index } => self.applied = *index,
                Write::SetView { view } => self.view = *view,
                Write::SetVote { vote } => self.vote = *vote,
            }
        }
        self.commits += 1;
        Ok(())
    }

    fn load(&self) -> Result<Recovered, StoreError> {
        Ok(Recovered {
            log: self.log.iter().map(|(i, e)| (*i, e.clone())).collect(),
            tables: self
                .tables
                .iter()
                .map(|((t, k), v)| (*t, k.clone(), v.clone()))
                .collect(),
            applied: self.applied,
            view: self.view,
            vote: self.vote,
            blobs: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_store_refuses_a_batch_with_a_key_too_long_for_lmdb_whole() {
        let mut s = MemStore::default();
        let mut b = Batch::default();
        b.push(Write::SetApplied { index: 3 });
        b.push(Write::Put {
            table: Table::Files,
            key: vec![0; MAX_KEY],
            value: vec![1],
        });
        s.commit(&b).expect("the longest key");
        let mut b = Batch::default();
        b.push(Write::SetApplied { index: 4 });
        b.push(Write::Delete {
            table: Table::Files,
            key: vec![0; MAX_KEY + 1],
        });
        assert!(s.commit(&b).is_err());
        let rec = s.load().unwrap();
        assert_eq!(rec.applied, 3, "nothing of the refused batch");
        assert_eq!(rec.tables.len(), 1);
    }
}
