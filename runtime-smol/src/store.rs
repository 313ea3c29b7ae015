//! The durable store: LMDB through heed, one environment per server under its
//! data directory. Every `Batch` the core emits commits in one write
//! transaction, so a crash leaves either all of it or none of it.
//!
//! A store holds an exclusive lock on `ferry.lock` in its directory while it
//! is open, so two servers (or two `ferry up`s) given the same data
//! directory fail clearly instead of both writing one log. The OS releases
//! the lock when the process dies.

use ferry_core::store::{Batch, Recovered, Store, StoreError, Table, Write, MAX_KEY};
use heed::byteorder::BigEndian;
use heed::types::{Bytes, Str, U64};
use heed::{CommitOrAbort, Database, Env, EnvOpenOptions};
use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

type Log = Database<'static, U64<BigEndian>, Bytes>;
type Rows = Database<'static, Bytes, Bytes>;
type Meta = Database<'static, Str, U64<BigEndian>>;

/// Address space reserved for the map; LMDB grows the file sparsely.
const MAP_SIZE: usize = 8 << 30;

/// Name of the lock file in a store's directory.
pub const LOCK_FILE: &str = "ferry.lock";

pub struct HeedStore {
    env: Env,
    /// Held, locked, for as long as the store is open.
    _lock: File,
    log: Log,
    tables: Vec<(Table, Rows)>,
    meta: Meta,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

impl HeedStore {
    /// Opens (creating if needed) the store in `dir`. Fails if another
    /// store has it open, in this process or another.
    pub fn open(dir: &Path) -> Result<HeedStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
        let lock = lock_dir(dir)?;
        // SAFETY: the directory is this server's alone; Ferry never opens the
        // same environment twice in one process, nor modifies its files
        // outside LMDB, nor uses it over a network filesystem.
        let env = unsafe {
            EnvOpenOptions::new()
                .map_size(MAP_SIZE)
                .max_dbs(16)
                .open(dir)
                .map_err(|e| err(format!("{}: {e}", dir.display())))?
        };
        if env.max_key_size() < MAX_KEY {
            return Err(err(format!(
                "this build's LMDB takes keys of at most {} bytes; Ferry's are up to {MAX_KEY}",
                env.max_key_size()
            )));
        }
        let wtxn = env.write_txn().map_err(err)?;
        let (log, meta, rows) = env
            .create_databases_and_commit(wtxn, |opener, wtxn| -> Result<_, heed::Error> {
                let log = opener.create_database(wtxn, Some("log"))?;
                let meta = opener.create_database(wtxn, Some("meta"))?;
                let mut rows = Vec::new();
                for t in Table::ALL {
                    rows.push(opener.create_database(wtxn, Some(t.name()))?);
                }
                let rows: [_; Table::ALL.len()] = rows
                    .try_into()
                    .map_err(|_| heed::Error::Io(std::io::Error::other("table count")))?;
                Ok(CommitOrAbort::<_, ()>::Commit((log, meta, rows)))
            })
            .map_err(err)?
            .unwrap_commit();
        let (log, meta, rows): (Log, Meta, [Rows; Table::ALL.len()]) = (log, meta, rows);
        let tables = Table::ALL.into_iter().zip(rows).collect();
        Ok(HeedStore {
            env,
            _lock: lock,
            log,
            tables,
            meta,
        })
    }

    fn table(&self, t: Table) -> Result<Rows, StoreError> {
        self.tables
            .iter()
            .find(|(x, _)| *x == t)
            .map(|(_, db)| *db)
            .ok_or_else(|| err(format!("no table {}", t.name())))
    }
}

/// Takes the exclusive lock on `dir`'s lock file.
fn lock_dir(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| err(format!("{}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(err(format!(
            "{} is in use by another ferry server",
            dir.display()
        ))),
        Err(TryLockError::Error(e)) => Err(err(format!("{}: {e}", path.display()))),
    }
}

impl Store for HeedStore {
    fn commit(&mut self, batch: &Batch) -> Result<(), StoreError> {
        let mut wtxn = self.env.write_txn().map_err(err)?;
        for w in &batch.writes {
            match w {
                Write::Append { index, entry } => {
                    self.log.put(&mut wtxn, index, entry).map_err(err)?
                }
                Write::TruncateFrom { from } => {
                    self.log.delete_range(&mut wtxn, &(*from..)).map_err(err)?;
                }
                Write::Put { table, key, value } => self
                    .table(*table)?
                    .put(&mut wtxn, key, value)
                    .map_err(err)?,
                Write::Delete { table, key } => {
                    self.table(*table)?.delete(&mut wtxn, key).map_err(err)?;
                }
                Write::SetApplied { index } => {
                    self.meta.put(&mut wtxn, "applied", index).map_err(err)?
                }
                Write::SetView { view } => self.meta.put(&mut wtxn, "view", view).map_err(err)?,
                // No key means no vote: stores older than failover read so.
                Write::SetVote { vote: Some(id) } => self
                    .meta
                    .put(&mut wtxn, "vote", &u64::from(*id))
                    .map_err(err)?,
                Write::SetVote { vote: None } => {
                    self.meta.delete(&mut wtxn, "vote").map_err(err)?;
                }
            }
        }
        wtxn.commit().map_err(err)
    }

    fn load(&self) -> Result<Recovered, StoreError> {
        let rtxn = self.env.read_txn().map_err(err)?;
        let mut rec = Recovered::default();
        for item in self.log.iter(&rtxn).map_err(err)? {
            let (i, e) = item.map_err(err)?;
            rec.log.push((i, e.to_vec()));
        }
        for (t, db) in &self.tables {
            for item in db.iter(&rtxn).map_err(err)? {
                let (k, v) = item.map_err(err)?;
                rec.tables.push((*t, k.to_vec(), v.to_vec()));
            }
        }
        rec.applied = self.meta.get(&rtxn, "applied").map_err(err)?.unwrap_or(0);
        rec.view = self.meta.get(&rtxn, "view").map_err(err)?.unwrap_or(0);
        rec.vote = match self.meta.get(&rtxn, "vote").map_err(err)? {
            None => None,
            Some(id) => Some(u32::try_from(id).map_err(|_| err(format!("vote {id}")))?),
        };
        Ok(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_survive_reopening_and_truncate_works() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = HeedStore::open(dir.path()).unwrap();
            let mut b = Batch::default();
            for i in 1..=3 {
                b.push(Write::Append {
                    index: i,
                    entry: vec![i as u8],
                });
            }
            b.push(Write::Put {
                table: Table::Users,
                key: vec![1],
                value: vec![9],
            });
            b.push(Write::SetApplied { index: 2 });
            s.commit(&b).unwrap();
            let mut b = Batch::default();
            b.push(Write::TruncateFrom { from: 3 });
            b.push(Write::Delete {
                table: Table::Users,
                key: vec![1],
            });
            b.push(Write::Put {
                table: Table::Revoked,
                key: vec![2],
                value: vec![3],
            });
            s.commit(&b).unwrap();
        }
        let s = HeedStore::open(dir.path()).unwrap();
        let rec = s.load().unwrap();
        assert_eq!(rec.log, vec![(1, vec![1]), (2, vec![2])]);
        assert_eq!(rec.tables, vec![(Table::Revoked, vec![2], vec![3])]);
        assert_eq!(rec.applied, 2);
    }

    /// The longest key the core writes (a folder share of a name of the
    /// longest path) commits and reads back: with LMDB's default limit of
    /// 511 bytes such a share stopped every server that applied it.
    #[test]
    fn the_longest_key_commits_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let key = vec![7u8; MAX_KEY];
        {
            let mut s = HeedStore::open(dir.path()).unwrap();
            let mut b = Batch::default();
            for table in [Table::Files, Table::Shares, Table::Attrs] {
                b.push(Write::Put {
                    table,
                    key: key.clone(),
                    value: vec![1],
                });
            }
            s.commit(&b).unwrap();
        }
        let s = HeedStore::open(dir.path()).unwrap();
        let rec = s.load().unwrap();
        assert_eq!(rec.tables.len(), 3);
        assert!(rec.tables.iter().all(|(_, k, _)| *k == key));
    }

    /// A data directory from before the peer registry has no `peers`
    /// table, one from before SYNC rounds no `sync` table, one from
    /// before logins were counted cluster-wide no `logins` or `epochs`
    /// table, and one from before files had attributes (protocol 6) no
    /// `attrs` table: each opens unchanged, gains the tables it lacks,
    /// empty, and keeps its rows.
    #[test]
    fn a_store_from_before_the_newer_tables_opens_and_gains_them() {
        let before_peers = ["log", "users", "files", "shares", "clients", "revoked"];
        let before_sync = [&before_peers[..], &["peers"]].concat();
        let before_logins = [&before_sync[..], &["sync"]].concat();
        let before_attrs = [&before_logins[..], &["logins", "epochs", "retired"]].concat();
        let olds = [
            &before_peers[..],
            &before_sync[..],
            &before_logins[..],
            &before_attrs[..],
        ];
        for old in olds {
            let dir = tempfile::tempdir().unwrap();
            {
                // SAFETY: a fresh directory, opened once, by this test alone.
                let env = unsafe { EnvOpenOptions::new().max_dbs(16).open(dir.path()).unwrap() };
                let wtxn = env.write_txn().unwrap();
                env.create_databases_and_commit(wtxn, |opener, wtxn| -> Result<_, heed::Error> {
                    for name in old {
                        let db: Database<'_, Bytes, Bytes> =
                            opener.create_database(wtxn, Some(name))?;
                        if *name == "users" {
                            db.put(wtxn, &[1], &[2])?;
                        }
                    }
                    let _: Database<'_, Str, U64<BigEndian>> =
                        opener.create_database(wtxn, Some("meta"))?;
                    Ok(CommitOrAbort::<_, ()>::Commit(()))
                })
                .unwrap();
            }
            let mut s = HeedStore::open(dir.path()).unwrap();
            let rec = s.load().unwrap();
            assert_eq!(rec.tables, vec![(Table::Users, vec![1], vec![2])]);
            let mut b = Batch::default();
            let newer = [
                Table::Peers,
                Table::Sync,
                Table::Logins,
                Table::Epochs,
                Table::Retired,
                Table::Attrs,
            ];
            for table in newer {
                b.push(Write::Put {
                    table,
                    key: vec![9],
                    value: vec![8],
                });
            }
            s.commit(&b).unwrap();
            drop(s);
            let rec = HeedStore::open(dir.path()).unwrap().load().unwrap();
            for table in newer {
                assert!(rec.tables.contains(&(table, vec![9], vec![8])), "{table:?}");
            }
        }
    }

    /// Stores written before failover have a view and no vote: they load
    /// as "no vote", and a vote, once cast, is kept and can be cleared.
    #[test]
    fn a_store_without_a_vote_loads_as_no_vote_and_votes_persist() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = HeedStore::open(dir.path()).unwrap();
            let mut b = Batch::default();
            b.push(Write::SetView { view: 1 });
            b.push(Write::SetApplied { index: 0 });
            s.commit(&b).unwrap();
        }
        let mut s = HeedStore::open(dir.path()).unwrap();
        let rec = s.load().unwrap();
        assert_eq!((rec.view, rec.vote), (1, None));
        let mut b = Batch::default();
        b.push(Write::SetView { view: 4 });
        b.push(Write::SetVote { vote: Some(3) });
        s.commit(&b).unwrap();
        drop(s);
        let mut s = HeedStore::open(dir.path()).unwrap();
        assert_eq!(s.load().map(|r| (r.view, r.vote)).unwrap(), (4, Some(3)));
        let mut b = Batch::default();
        b.push(Write::SetView { view: 5 });
        b.push(Write::SetVote { vote: None });
        s.commit(&b).unwrap();
        assert_eq!(s.load().map(|r| (r.view, r.vote)).unwrap(), (5, None));
    }

    #[test]
    fn a_directory_is_opened_by_one_store_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let first = HeedStore::open(dir.path()).unwrap();
        let Err(e) = HeedStore::open(dir.path()) else {
            panic!("opened twice");
        };
        assert!(
            e.to_string().contains("in use by another ferry server"),
            "{e}"
        );
        drop(first);
        assert!(HeedStore::open(dir.path()).is_ok());
    }
}
