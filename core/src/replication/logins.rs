//! Failed and successful logins, in the replicated state, so that every
//! server counts a guess made through any other (the rule itself is
//! `accounts::limiter`; the design is docs/security.md, "Passwords").
//!
//! The server that saw a wrong password orders `LoginFailed { username,
//! source }`; one that saw a right one from a source with failures, or one
//! not yet (or not lately) trusted, orders `LoginSucceeded`. Applying
//! either rewrites the account's record under the entry's time (`at`), so
//! every replica holds the same counts, and a new master inherits them.
//!
//! Records are kept per username, known or not (an unknown name must be
//! throttled alike, or the answers would tell who exists). Registered
//! users' records are bounded by the number of users; the others (names
//! nobody registered, which anyone can make up) by `MAX_UNKNOWN`, the
//! stalest dropped first. A record is dropped once nothing in it is left
//! worth keeping.

use super::entry::TxnResult;
use crate::accounts::limiter::AccountLogins;
use crate::frame;
use crate::store::{Table, Write};
use speedy::Writable;
use std::collections::BTreeMap;

/// Records of names no user holds, at most.
pub const MAX_UNKNOWN: usize = 10_000;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Logins {
    accounts: BTreeMap<String, AccountLogins>,
    /// Which of them are of names no user held when last written.
    unknown: BTreeMap<String, ()>,
}

impl Logins {
    pub fn load(&mut self, key: &[u8], value: &[u8]) -> Result<(), String> {
        let name = String::from_utf8(key.to_vec()).map_err(|_| "logins table: bad key")?;
        let (known, rec): (bool, AccountLogins) =
            frame::decode(value).map_err(|e| format!("logins table: {e}"))?;
        if !known {
            self.unknown.insert(name.clone(), ());
        }
        self.accounts.insert(name, rec);
        Ok(())
    }

    /// `username`'s record (empty if it has none).
    pub fn account(&self, username: &str) -> AccountLogins {
        self.accounts.get(username).cloned().unwrap_or_default()
    }

    /// Names with a record.
    pub fn len(&self) -> usize {
        self.accounts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }

    /// A wrong password for `username` (`known`: a user holds the name)
    /// from `source`, at `at`.
    pub fn failed(
        &mut self,
        username: &str,
        known: bool,
        source: &str,
        at: u64,
        writes: &mut Vec<Write>,
    ) -> TxnResult {
        let mut rec = self.account(username);
        rec.fail(source, at);
        self.store(username, known, rec, at, writes);
        TxnResult::LoginFailed
    }

    /// A right password for `username` from `source`, at `at`.
    pub fn succeeded(
        &mut self,
        username: &str,
        source: &str,
        at: u64,
        writes: &mut Vec<Write>,
    ) -> TxnResult {
        let mut rec = self.account(username);
        rec.succeed(source, at);
        self.store(username, true, rec, at, writes);
        TxnResult::LoginRecorded
    }

    fn store(
        &mut self,
        username: &str,
        known: bool,
        rec: AccountLogins,
        at: u64,
        writes: &mut Vec<Write>,
    ) {
        if rec.stale(at) {
            self.remove(username, writes);
            return;
        }
        writes.push(Write::Put {
            table: Table::Logins,
            key: username.as_bytes().to_vec(),
            value: (known, &rec).write_to_vec().unwrap_or_default(),
        });
        self.accounts.insert(username.to_string(), rec);
        match known {
            true => self.unknown.remove(username),
            false => self.unknown.insert(username.to_string(), ()),
        };
        while self.unknown.len() > MAX_UNKNOWN {
            let stalest = (self.unknown.keys())
                .filter_map(|n| self.accounts.get(n).map(|r| (r.latest(), n.clone())))
                .min();
            match stalest {
                Some((_, name)) => self.remove(&name, writes),
                None => break,
            }
        }
    }

    fn remove(&mut self, username: &str, writes: &mut Vec<Write>) {
        self.unknown.remove(username);
        if self.accounts.remove(username).is_some() {
            writes.push(Write::Delete {
                table: Table::Logins,
                key: username.as_bytes().to_vec(),
            });
        }
    }

    pub fn digest_into(&self, h: &mut blake3::Hasher) {
        for (name, rec) in &self.accounts {
            let known = !self.unknown.contains_key(name);
            h.update(name.as_bytes());
            h.update(&(known, rec).write_to_vec().unwrap_or_default());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Batch, MemStore, Store};

    #[test]
    fn unknown_names_are_bounded_and_records_reload_alike() {
        let mut l = Logins::default();
        let mut store = MemStore::default();
        let mut writes = Vec::new();
        l.failed("alice", true, "1.1.1.1", 100, &mut writes);
        for i in 0..MAX_UNKNOWN + 5 {
            l.failed(
                &format!("junk{i}"),
                false,
                "6.6.6.6",
                100 + i as u64,
                &mut writes,
            );
        }
        assert_eq!(l.len(), MAX_UNKNOWN + 1);
        assert!(l.account("alice").account.failures == 1);
        assert!(l.account("junk0").sources.is_empty(), "the stalest went");
        store.commit(&Batch { writes }).unwrap();
        let mut back = Logins::default();
        for (t, k, v) in store.load().unwrap().tables {
            assert_eq!(t, Table::Logins);
            back.load(&k, &v).unwrap();
        }
        assert_eq!(back, l);
    }
}
