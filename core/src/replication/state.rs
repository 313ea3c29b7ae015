//! The replicated state machine: what every server holds once it has applied
//! the log up to some index. Applying is deterministic (it reads nothing but
//! the state and the entry), so servers that applied the same prefix hold the
//! same state.

use super::catalogue::{Catalogue, FileMeta};
use super::entry::{name_key, Entry, FileResult, NewFile, Origin, Txn, TxnResult};
use super::logins::Logins;
use super::registry::{Joining, Registry};
use super::sync_round::SyncRounds;
use crate::accounts::password::PasswordHash;
use crate::file_attrs::FileAttrs;
use crate::frame;
use crate::store::{Table, Write};
use speedy::{Readable, Writable};
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Eq, Readable, Writable)]
pub struct User {
    pub id: u64,
    pub name: String,
    pub password: PasswordHash,
}

/// What applying one entry did: the writes that make it durable, and the
/// transaction's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub writes: Vec<Write>,
    pub result: TxnResult,
}

/// Last request applied for one client session, and what it produced.
#[derive(Clone, Debug, PartialEq, Eq, Readable, Writable)]
struct ClientRecord {
    request: u64,
    result: TxnResult,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    users: BTreeMap<u64, User>,
    by_name: BTreeMap<String, u64>,
    revoked: BTreeMap<[u8; 16], u64>,
    clients: BTreeMap<(u32, u64), ClientRecord>,
    catalogue: Catalogue,
    registry: Registry,
    sync: SyncRounds,
    logins: Logins,
    /// Per user who changed their password: the epoch their session
    /// tokens must carry (absent: 0).
    epochs: BTreeMap<u64, u32>,
    /// The highest id of a deleted account (0: none deleted). A new user's
    /// id is above it, so that a token of a deleted account, whose MAC
    /// names its id, can never pass for a later user's.
    retired: u64,
}

fn enc<T: Writable<speedy::LittleEndian>>(v: &T) -> Vec<u8> {
    v.write_to_vec().unwrap_or_default()
}

fn client_key(server: u32, session: u64) -> Vec<u8> {
    let mut k = server.to_be_bytes().to_vec();
    k.extend_from_slice(&session.to_be_bytes());
    k
}

impl State {
    /// Rebuilds the state from stored table rows.
    pub fn from_rows(rows: &[(Table, Vec<u8>, Vec<u8>)]) -> Result<State, String> {
        let mut s = State::default();
        // A file's attributes are loaded onto its file: after every file.
        let (attrs, rows): (Vec<_>, Vec<_>) = rows.iter().partition(|(t, _, _)| *t == Table::Attrs);
        for (table, key, value) in rows.into_iter().chain(attrs) {
            let bad = |e: crate::frame::FrameError| format!("{} table: {e}", table.name());
            match table {
                Table::Users => {
                    let u: User = frame::decode(value).map_err(bad)?;
                    s.by_name.insert(u.name.clone(), u.id);
                    s.users.insert(u.id, u);
                }
                Table::Revoked => {
                    let id: [u8; 16] = key
                        .as_slice()
                        .try_into()
                        .map_err(|_| "revoked table: bad key".to_string())?;
                    s.revoked.insert(id, frame::decode(value).map_err(bad)?);
                }
                Table::Clients => {
                    let (server, session) = match key.as_slice() {
                        [a, b, c, d, rest @ ..] if rest.len() == 8 => {
                            let mut sess = [0u8; 8];
                            sess.copy_from_slice(rest);
                            (
                                u32::from_be_bytes([*a, *b, *c, *d]),
                                u64::from_be_bytes(sess),
                            )
                        }
                        _ => return Err("clients table: bad key".into()),
                    };
                    s.clients
                        .insert((server, session), frame::decode(value).map_err(bad)?);
                }
                Table::Files => s.catalogue.load_file(value)?,
                Table::Shares => s.catalogue.load_share(key)?,
                Table::Peers => s.registry.load(value)?,
                Table::Sync => s.sync.load(key, value)?,
                Table::Logins => s.logins.load(key, value)?,
                Table::Epochs => {
                    let id: [u8; 8] = key
                        .as_slice()
                        .try_into()
                        .map_err(|_| "epochs table: bad key".to_string())?;
                    let epoch = frame::decode(value).map_err(bad)?;
                    s.epochs.insert(u64::from_be_bytes(id), epoch);
                }
                Table::Retired => s.retired = s.retired.max(frame::decode(value).map_err(bad)?),
                Table::Attrs => s.catalogue.load_attrs(key, value)?,
            }
        }
        Ok(s)
    }

    pub fn user_by_name(&self, name: &str) -> Option<&User> {
        self.by_name.get(name).and_then(|id| self.users.get(id))
    }

    pub fn user(&self, id: u64) -> Option<&User> {
        self.users.get(&id)
    }

    pub fn users(&self) -> impl Iterator<Item = &User> {
        self.users.values()
    }

    pub fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The SYNC round in progress, if any, and the last one finished.
    pub fn sync(&self) -> &SyncRounds {
        &self.sync
    }

    /// What the cluster remembers of logins (`replication::logins`).
    pub fn logins(&self) -> &Logins {
        &self.logins
    }

    /// The password epoch of `user`: how many times they changed their
    /// password. Session tokens must carry it.
    pub fn epoch(&self, user: u64) -> u32 {
        self.epochs.get(&user).copied().unwrap_or(0)
    }

    /// See [`Catalogue::take_released`].
    pub fn take_released(&mut self) -> Vec<[u8; 32]> {
        self.catalogue.take_released()
    }

    pub fn is_revoked(&self, token_id: &[u8; 16]) -> bool {
        self.revoked.contains_key(token_id)
    }

    /// The result already produced for `origin`, if its request was applied.
    pub fn applied_result(&self, origin: &Origin) -> Option<&TxnResult> {
        self.clients
            .get(&origin.dedup_key())
            .filter(|r| r.request == origin.request)
            .map(|r| &r.result)
    }

    /// True if `origin`'s request (or a later one of its session) was applied.
    pub fn has_applied(&self, origin: &Origin) -> bool {
        self.clients
            .get(&origin.dedup_key())
            .is_some_and(|r| r.request >= origin.request)
    }

    /// Applies one entry: the state changes in memory, and the writes that
    /// make the same change durable come back with the result.
    pub fn apply(&mut self, entry: &Entry) -> Applied {
        let o = entry.origin;
        if entry.txn == Txn::Noop {
            // No client asked for it: nothing to remember for retries.
            return Applied {
                writes: Vec::new(),
                result: TxnResult::Noop,
            };
        }
        if let Some(r) = self.clients.get(&o.dedup_key()) {
            if r.request >= o.request {
                // A retry that the master logged twice: applied once.
                let result = if r.request == o.request {
                    r.result.clone()
                } else {
                    TxnResult::UsernameTaken
                };
                return Applied {
                    writes: Vec::new(),
                    result,
                };
            }
        }
        let mut writes = Vec::new();
        let result = match &entry.txn {
            Txn::Register { username, password } => {
                if self.by_name.contains_key(username) {
                    TxnResult::UsernameTaken
                } else {
                    let last = self.users.keys().next_back().copied().unwrap_or(0);
                    let id = last.max(self.retired) + 1;
                    let user = User {
                        id,
                        name: username.clone(),
                        password: password.clone(),
                    };
                    writes.push(Write::Put {
                        table: Table::Users,
                        key: id.to_be_bytes().to_vec(),
                        value: enc(&user),
                    });
                    self.by_name.insert(username.clone(), id);
                    self.users.insert(id, user);
                    TxnResult::Registered { user_id: id }
                }
            }
            Txn::Revoke { token_id, expires } => {
                // Forget revocations of tokens that have expired anyway, by
                // the master's clock in the entry, so every replica agrees.
                let stale: Vec<[u8; 16]> = self
                    .revoked
                    .iter()
                    .filter(|(_, e)| **e < entry.at)
                    .map(|(k, _)| *k)
                    .collect();
                for k in stale {
                    self.revoked.remove(&k);
                    writes.push(Write::Delete {
                        table: Table::Revoked,
                        key: k.to_vec(),
                    });
                }
                self.revoked.insert(*token_id, *expires);
                writes.push(Write::Put {
                    table: Table::Revoked,
                    key: token_id.to_vec(),
                    value: enc(expires),
                });
                TxnResult::Revoked
            }
            Txn::PutFile {
                owner,
                name,
                size,
                digest,
                replace,
                holder,
                attrs,
            } => {
                let meta = FileMeta {
                    owner: *owner,
                    name: name.clone(),
                    size: *size,
                    digest: *digest,
                    at: entry.at,
                    holder: *holder,
                    attrs: attrs.map(FileAttrs::sanitized),
                };
                self.put_file(meta, *replace, &mut writes)
            }
            Txn::PutFileV1 {
                owner,
                name,
                size,
                digest,
                replace,
                holder,
            } => {
                let meta = FileMeta {
                    owner: *owner,
                    name: name.clone(),
                    size: *size,
                    digest: *digest,
                    at: entry.at,
                    holder: *holder,
                    attrs: None,
                };
                self.put_file(meta, *replace, &mut writes)
            }
            Txn::PutFiles {
                owner,
                files,
                replace,
                holder,
            } => self.put_files(entry.at, *owner, files, *replace, *holder, &mut writes),
            Txn::PutFilesV1 {
                owner,
                files,
                replace,
                holder,
            } => {
                let files: Vec<NewFile> = files.iter().map(NewFile::from).collect();
                self.put_files(entry.at, *owner, &files, *replace, *holder, &mut writes)
            }
            Txn::Share {
                owner,
                name,
                grantee,
            } => match self.by_name.get(grantee) {
                _ if self.catalogue.get(*owner, name).is_none() => TxnResult::NoSuchFile,
                None => TxnResult::NoSuchUser,
                Some(g) if g == owner => TxnResult::CannotShareWithSelf,
                Some(g) => {
                    self.catalogue.share(*owner, name, *g, &mut writes);
                    TxnResult::Shared
                }
            },
            Txn::Unshare {
                owner,
                name,
                grantee,
            } => match self.by_name.get(grantee) {
                _ if self.catalogue.get(*owner, name).is_none() => TxnResult::NoSuchFile,
                None => TxnResult::NoSuchUser,
                Some(g) => {
                    if self.catalogue.unshare(*owner, name, *g, &mut writes) {
                        TxnResult::Unshared
                    } else {
                        writes.clear();
                        TxnResult::NotShared
                    }
                }
            },
            Txn::Delete { owner, name } => match self.catalogue.delete(*owner, name, &mut writes) {
                Some(_) => TxnResult::Deleted,
                None => TxnResult::NoSuchFile,
            },
            Txn::ShareFolder {
                owner,
                folder,
                grantee,
            } => match self.by_name.get(grantee) {
                _ if !self.catalogue.is_folder(*owner, folder) => TxnResult::NoSuchFile,
                None => TxnResult::NoSuchUser,
                Some(g) if g == owner => TxnResult::CannotShareWithSelf,
                Some(g) => {
                    self.catalogue.share_folder(*owner, folder, *g, &mut writes);
                    TxnResult::Shared
                }
            },
            Txn::UnshareFolder {
                owner,
                folder,
                grantee,
            } => match self.by_name.get(grantee) {
                None => TxnResult::NoSuchUser,
                Some(g)
                    if self
                        .catalogue
                        .unshare_folder(*owner, folder, *g, &mut writes) =>
                {
                    TxnResult::Unshared
                }
                // (A share outlives the files under its folder: unsharing
                // a folder emptied by `rm` works.)
                Some(_) if self.catalogue.is_folder(*owner, folder) => TxnResult::NotShared,
                Some(_) => TxnResult::NoSuchFile,
            },
            Txn::DeleteFolder { owner, folder } => {
                match self.catalogue.delete_folder(*owner, folder, &mut writes) {
                    (0, 0) => TxnResult::NoSuchFile,
                    (files, _) => TxnResult::FolderDeleted { files },
                }
            }
            Txn::Noop => TxnResult::Noop,
            Txn::PeerJoin {
                user,
                addr,
                ticket_digest,
                key,
            } => match self.users.contains_key(user) {
                true => (self.registry).join(
                    entry.index,
                    Joining {
                        user: *user,
                        addr,
                        ticket_digest: *ticket_digest,
                        key: *key,
                    },
                    entry.at,
                    &mut writes,
                ),
                false => TxnResult::NoSuchUser,
            },
            Txn::PeerRenew { peer } => self.registry.renew(*peer, entry.at, &mut writes),
            Txn::PeerLeave { peer, expired } => {
                (self.registry).leave(*peer, *expired, entry.at, &mut writes)
            }
            Txn::SyncStart { peer } => match self.registry.get(*peer) {
                Some(_) => (self.sync).start(*peer, &self.registry, entry, &mut writes),
                None => TxnResult::NoSuchPeer,
            },
            Txn::SyncDone { round, peer, token } => {
                (self.sync).done(*round, *peer, *token, &self.registry, entry, &mut writes)
            }
            Txn::SyncRenew { round, peer, token } => {
                (self.sync).renew(*round, *peer, *token, entry.at, &mut writes)
            }
            Txn::SyncExpire { round, token } => {
                (self.sync).expire(*round, *token, &self.registry, entry, &mut writes)
            }
            Txn::LoginFailed { username, source } => {
                let known = self.by_name.contains_key(username);
                (self.logins).failed(username, known, source, entry.at, &mut writes)
            }
            Txn::LoginSucceeded { username, source } => {
                (self.logins).succeeded(username, source, entry.at, &mut writes)
            }
            Txn::ChangePassword { user, password } => match self.users.get_mut(user) {
                None => TxnResult::NoSuchUser,
                Some(u) => {
                    u.password = password.clone();
                    writes.push(Write::Put {
                        table: Table::Users,
                        key: user.to_be_bytes().to_vec(),
                        value: enc(&*u),
                    });
                    let epoch = self.epochs.entry(*user).or_insert(0);
                    *epoch = epoch.saturating_add(1);
                    writes.push(Write::Put {
                        table: Table::Epochs,
                        key: user.to_be_bytes().to_vec(),
                        value: enc(&*epoch),
                    });
                    TxnResult::PasswordChanged {
                        user_id: *user,
                        epoch: *epoch,
                    }
                }
            },
            Txn::DeleteAccount { user } => self.delete_account(*user, &mut writes),
        };
        if matches!(
            entry.txn,
            Txn::PeerJoin { .. } | Txn::PeerLeave { .. } | Txn::DeleteAccount { .. }
        ) {
            // A writer that left (or was replaced by its own restart) has
            // had its turn: the grant moves on in this same entry. The
            // entry's result stays the registry's.
            (self.sync).registry_changed(&self.registry, entry, &mut writes);
        }
        let record = ClientRecord {
            request: o.request,
            result: result.clone(),
        };
        writes.push(Write::Put {
            table: Table::Clients,
            key: client_key(o.dedup_key().0, o.dedup_key().1),
            value: enc(&record),
        });
        self.clients.insert(o.dedup_key(), record);
        Applied { writes, result }
    }

    /// Removes `user` and everything that is theirs. Their failed logins
    /// stay, kept by name: guesses at a name are throttled whoever holds it.
    fn delete_account(&mut self, user: u64, writes: &mut Vec<Write>) -> TxnResult {
        let Some(u) = self.users.remove(&user) else {
            return TxnResult::NoSuchUser;
        };
        self.by_name.remove(&u.name);
        let key = user.to_be_bytes().to_vec();
        writes.push(Write::Delete {
            table: Table::Users,
            key: key.clone(),
        });
        if self.epochs.remove(&user).is_some() {
            writes.push(Write::Delete {
                table: Table::Epochs,
                key,
            });
        }
        let files = self.catalogue.remove_user(user, writes);
        self.registry.remove_user(user, writes);
        if user > self.retired {
            self.retired = user;
            // One row; LMDB takes no empty key.
            writes.push(Write::Put {
                table: Table::Retired,
                key: b"max".to_vec(),
                value: enc(&user),
            });
        }
        TxnResult::AccountDeleted {
            user_id: user,
            files,
        }
    }

    /// True once `user`'s account is gone, or was never: nothing of the
    /// state names them (files, shares, peers, password epoch).
    pub fn holds_nothing_of(&self, user: u64) -> bool {
        !self.users.contains_key(&user)
            && self.catalogue.owned_by(user).next().is_none()
            && !self.catalogue.shared_with_anyone(user)
            && self.registry.all().all(|p| p.user != user)
            && !self.epochs.contains_key(&user)
    }

    /// A batch's uploads, each applied as a `PutFile` of its own.
    fn put_files(
        &mut self,
        at: u64,
        owner: u64,
        files: &[NewFile],
        replace: bool,
        holder: u32,
        writes: &mut Vec<Write>,
    ) -> TxnResult {
        let results = files.iter().map(|f| {
            let meta = FileMeta {
                owner,
                name: f.name.clone(),
                size: f.size,
                digest: f.digest,
                at,
                holder,
                attrs: f.attrs.map(FileAttrs::sanitized),
            };
            FileResult {
                name: name_key(&f.name),
                size: f.size,
                digest: f.digest,
                result: self.put_file(meta, replace, writes),
            }
        });
        TxnResult::FilesOf(results.collect())
    }

    /// A file upload's effect: stored, unless the name is taken and
    /// replacing it was not asked for, or is a folder's (or under a file).
    fn put_file(&mut self, meta: FileMeta, replace: bool, writes: &mut Vec<Write>) -> TxnResult {
        // An upload whose owner was there when its server ordered it, and
        // whose account was deleted before it was applied: nothing of a
        // deleted user may come back.
        if !self.users.contains_key(&meta.owner) {
            return TxnResult::NoSuchUser;
        }
        if self.catalogue.get(meta.owner, &meta.name).is_some() && !replace {
            return TxnResult::FileExists;
        }
        if let Some(reason) = self.catalogue.conflict(meta.owner, &meta.name) {
            return TxnResult::NameConflict { reason };
        }
        self.catalogue.put(meta, writes);
        TxnResult::FileStored
    }

    /// A digest of the whole state, for convergence checks.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        for u in self.users.values() {
            h.update(&enc(u));
        }
        for (k, v) in &self.revoked {
            h.update(k);
            h.update(&v.to_le_bytes());
        }
        self.catalogue.digest_into(&mut h);
        self.registry.digest_into(&mut h);
        self.sync.digest_into(&mut h);
        // Both empty in a cluster that never saw a failed login or a
        // changed password: its digest is as before they existed.
        self.logins.digest_into(&mut h);
        for (user, epoch) in &self.epochs {
            h.update(&user.to_le_bytes());
            h.update(&epoch.to_le_bytes());
        }
        // Left out while 0: a cluster that never deleted an account has
        // the digest it had before accounts could be.
        if self.retired != 0 {
            h.update(b"retired");
            h.update(&self.retired.to_le_bytes());
        }
        for ((s, sess), r) in &self.clients {
            h.update(&s.to_le_bytes());
            h.update(&sess.to_le_bytes());
            h.update(&enc(r));
        }
        *h.finalize().as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::password::{hash, PasswordParams};
    use crate::store::{Batch, MemStore, Store};

    fn register(index: u64, session: u64, request: u64, name: &str) -> Entry {
        Entry {
            index,
            view: 1,
            at: 100,
            origin: Origin {
                server: 1,
                session,
                request,
            },
            txn: Txn::Register {
                username: name.into(),
                password: hash(PasswordParams::TESTING, [0; 16], "password1").unwrap(),
            },
        }
    }

    #[test]
    fn register_assigns_ids_and_refuses_a_taken_name() {
        let mut s = State::default();
        assert_eq!(
            s.apply(&register(1, 1, 1, "alice")).result,
            TxnResult::Registered { user_id: 1 }
        );
        assert_eq!(
            s.apply(&register(2, 2, 1, "bob")).result,
            TxnResult::Registered { user_id: 2 }
        );
        assert_eq!(
            s.apply(&register(3, 3, 1, "alice")).result,
            TxnResult::UsernameTaken
        );
        assert_eq!(s.user_by_name("alice").map(|u| u.id), Some(1));
    }

    #[test]
    fn a_retried_request_is_applied_once_with_the_same_result() {
        let mut s = State::default();
        let first = s.apply(&register(1, 1, 1, "alice"));
        let again = s.apply(&register(2, 1, 1, "alice"));
        assert_eq!(again.result, first.result);
        assert!(again.writes.is_empty(), "no writes for a duplicate");
        assert_eq!(s.users().count(), 1);
    }

    #[test]
    fn state_rebuilt_from_its_writes_is_identical() {
        let mut s = State::default();
        let mut store = MemStore::default();
        let entries = [register(1, 1, 1, "alice"), register(2, 2, 1, "bob")];
        for e in &entries {
            let Applied { writes, .. } = s.apply(e);
            store.commit(&Batch { writes }).unwrap();
        }
        let revoke = Entry {
            index: 3,
            view: 1,
            at: 100,
            origin: Origin {
                server: 2,
                session: 9,
                request: 1,
            },
            txn: Txn::Revoke {
                token_id: [5; 16],
                expires: 200,
            },
        };
        let Applied { writes, result: r } = s.apply(&revoke);
        assert_eq!(r, TxnResult::Revoked);
        store.commit(&Batch { writes }).unwrap();
        let join = |index, user| Entry {
            index,
            origin: Origin {
                request: index,
                ..revoke.origin
            },
            txn: Txn::PeerJoin {
                user,
                addr: "10.0.0.1:9000".into(),
                ticket_digest: [3; 32],
                key: None,
            },
            ..revoke.clone()
        };
        let Applied { writes, result: r } = s.apply(&join(4, 2));
        assert_eq!(r, TxnResult::PeerJoined { peer: 4 });
        store.commit(&Batch { writes }).unwrap();
        // Only a user of the cluster registers a peer.
        let Applied { writes, result: r } = s.apply(&join(5, 77));
        assert_eq!(r, TxnResult::NoSuchUser);
        store.commit(&Batch { writes }).unwrap();
        let rebuilt = State::from_rows(&store.load().unwrap().tables).unwrap();
        assert_eq!(rebuilt, s);
        assert_eq!(rebuilt.digest(), s.digest());
        assert!(rebuilt.is_revoked(&[5; 16]));
    }

    fn entry(index: u64, txn: Txn) -> Entry {
        Entry {
            index,
            view: 1,
            at: 100,
            origin: Origin {
                server: 1,
                session: 1000 + index,
                request: 1,
            },
            txn,
        }
    }

    /// alice (1) owns two files, one shared with bob (2); bob owns one
    /// shared with alice; alice registered a peer and changed her password.
    fn alice_and_bob() -> (State, MemStore, u64) {
        let mut s = State::default();
        let mut store = MemStore::default();
        let mut i = 0;
        let mut apply = |s: &mut State, e: Entry| {
            let Applied { writes, .. } = s.apply(&e);
            store.commit(&Batch { writes }).unwrap();
        };
        for name in ["alice", "bob"] {
            i += 1;
            apply(&mut s, register(i, 100 + i, 1, name));
        }
        let put = |owner, name: &str| Txn::PutFile {
            owner,
            name: name.into(),
            size: 10,
            digest: [owner as u8; 32],
            replace: false,
            holder: 1,
            attrs: None,
        };
        let share = |owner, name: &str, grantee: &str| Txn::Share {
            owner,
            name: name.into(),
            grantee: grantee.into(),
        };
        let pw = hash(PasswordParams::TESTING, [1; 16], "password2").unwrap();
        let txns = [
            put(1, "a1"),
            put(1, "a2"),
            put(2, "b1"),
            share(1, "a1", "bob"),
            share(2, "b1", "alice"),
            Txn::PeerJoin {
                user: 1,
                addr: "10.0.0.1:9000".into(),
                ticket_digest: [3; 32],
                key: None,
            },
            Txn::ChangePassword {
                user: 1,
                password: pw,
            },
        ];
        for txn in txns {
            i += 1;
            apply(&mut s, entry(i, txn));
        }
        (s, store, i)
    }

    #[test]
    fn deleting_an_account_removes_all_that_is_theirs_and_frees_the_name() {
        let (mut s, mut store, i) = alice_and_bob();
        assert!(!s.holds_nothing_of(1));
        let Applied { writes, result } = s.apply(&entry(i + 1, Txn::DeleteAccount { user: 1 }));
        assert_eq!(
            result,
            TxnResult::AccountDeleted {
                user_id: 1,
                files: 2
            }
        );
        store.commit(&Batch { writes }).unwrap();
        assert!(s.holds_nothing_of(1));
        assert!(s.user_by_name("alice").is_none());
        assert_eq!(s.epoch(1), 0);
        // bob keeps his file, no longer shared with anyone.
        let b1 = s.catalogue().get(2, "b1").map(|f| f.size);
        assert_eq!(b1, Some(10));
        assert!(s.catalogue().grantees(2, "b1").is_empty());
        assert!(!s.catalogue().can_read(2, 1, "a1"));
        assert_eq!(
            s.catalogue().refs(&[1; 32]),
            0,
            "alice's content is garbage"
        );

        // Deleting again: nothing left to delete.
        let again = s.apply(&entry(i + 2, Txn::DeleteAccount { user: 1 }));
        assert_eq!(again.result, TxnResult::NoSuchUser);
        store
            .commit(&Batch {
                writes: again.writes,
            })
            .unwrap();

        // The name is free; the id is not given again, even after a restart.
        let rebuilt = State::from_rows(&store.load().unwrap().tables).unwrap();
        assert_eq!(rebuilt, s);
        assert_eq!(rebuilt.digest(), s.digest());
        let mut rebuilt = rebuilt;
        let back = rebuilt.apply(&register(i + 3, 999, 1, "alice"));
        assert_eq!(back.result, TxnResult::Registered { user_id: 3 });
        assert!(rebuilt.catalogue().owned_by(3).next().is_none());
    }

    /// The race a sweep found (files seed 1799): an upload is ordered by a
    /// server that checked its session's login, and the account's deletion
    /// is ordered before it. Applied after the deletion, it stores nothing.
    #[test]
    fn an_upload_applied_after_its_owners_deletion_stores_nothing() {
        let (mut s, _, i) = alice_and_bob();
        s.apply(&entry(i + 1, Txn::DeleteAccount { user: 1 }));
        let put = Txn::PutFile {
            owner: 1,
            name: "late".into(),
            size: 1,
            digest: [7; 32],
            replace: true,
            holder: 1,
            attrs: None,
        };
        assert_eq!(s.apply(&entry(i + 2, put)).result, TxnResult::NoSuchUser);
        let batch = Txn::PutFiles {
            owner: 1,
            files: vec![super::super::entry::NewFile {
                name: "later".into(),
                size: 1,
                digest: [8; 32],
                attrs: None,
            }],
            replace: false,
            holder: 1,
        };
        let r = s.apply(&entry(i + 3, batch)).result;
        let TxnResult::FilesOf(each) = r else {
            panic!("{r:?}");
        };
        let results: Vec<&TxnResult> = each.iter().map(|f| &f.result).collect();
        assert_eq!(results, [&TxnResult::NoSuchUser]);
        assert_eq!(each[0].name, name_key("later"));
        assert!(s.holds_nothing_of(1));
        assert_eq!(s.catalogue().refs(&[7; 32]), 0);
    }

    #[test]
    fn the_highest_deleted_id_is_not_given_again() {
        let (mut s, _, i) = alice_and_bob();
        s.apply(&entry(i + 1, Txn::DeleteAccount { user: 2 }));
        let r = s.apply(&register(i + 2, 999, 1, "carol")).result;
        assert_eq!(r, TxnResult::Registered { user_id: 3 });
    }

    #[test]
    fn replicas_that_apply_a_deletion_hold_the_same_state() {
        let (mut a, _, i) = alice_and_bob();
        let (mut b, _, _) = alice_and_bob();
        let del = entry(i + 1, Txn::DeleteAccount { user: 1 });
        assert_eq!(a.apply(&del), b.apply(&del));
        assert_eq!(a.digest(), b.digest());
        let (untouched, _, _) = alice_and_bob();
        assert_ne!(a.digest(), untouched.digest());
    }

    #[test]
    fn expired_revocations_are_pruned_deterministically() {
        let mut s = State::default();
        let mut e = Entry {
            index: 1,
            view: 1,
            at: 100,
            origin: Origin {
                server: 1,
                session: 1,
                request: 1,
            },
            txn: Txn::Revoke {
                token_id: [1; 16],
                expires: 150,
            },
        };
        s.apply(&e);
        e.index = 2;
        e.at = 151;
        e.origin.request = 2;
        e.txn = Txn::Revoke {
            token_id: [2; 16],
            expires: 300,
        };
        s.apply(&e);
        assert!(!s.is_revoked(&[1; 16]));
        assert!(s.is_revoked(&[2; 16]));
    }

    /// Entries of one client session, numbered as they are applied.
    struct Log {
        state: State,
        index: u64,
        store: MemStore,
    }

    impl Log {
        fn new(users: &[&str]) -> Log {
            let mut log = Log {
                state: State::default(),
                index: 0,
                store: MemStore::default(),
            };
            for u in users {
                let e = register(0, 0, 0, u);
                log.apply(e.txn);
            }
            log
        }

        fn apply(&mut self, txn: Txn) -> TxnResult {
            self.index += 1;
            let e = Entry {
                index: self.index,
                view: 1,
                at: 100 + self.index,
                origin: Origin {
                    server: 1,
                    session: 7,
                    request: self.index,
                },
                txn,
            };
            let Applied { writes, result } = self.state.apply(&e);
            self.store.commit(&Batch { writes }).unwrap();
            result
        }

        fn put(&mut self, owner: u64, name: &str) -> TxnResult {
            self.apply(Txn::PutFile {
                owner,
                name: name.into(),
                size: 1,
                digest: [self.index as u8; 32],
                replace: false,
                holder: 1,
                attrs: None,
            })
        }

        fn share_folder(&mut self, owner: u64, folder: &str, grantee: &str) -> TxnResult {
            self.apply(Txn::ShareFolder {
                owner,
                folder: folder.into(),
                grantee: grantee.into(),
            })
        }

        fn can_read(&self, user: u64, owner: u64, name: &str) -> bool {
            self.state.catalogue().can_read(user, owner, name)
        }

        fn visible(&self, user: u64) -> Vec<String> {
            (self.state.catalogue().visible_to(user).iter())
                .map(|f| format!("{}:{}", f.owner, f.name))
                .collect()
        }

        fn rebuilt_is_identical(&self) {
            let rebuilt = State::from_rows(&self.store.load().unwrap().tables).unwrap();
            assert_eq!(rebuilt, self.state);
            assert_eq!(rebuilt.digest(), self.state.digest());
        }
    }

    #[test]
    fn a_folder_share_lets_the_grantee_read_what_is_under_it_now_and_later() {
        let mut l = Log::new(&["alice", "bob", "carol"]);
        assert_eq!(l.put(1, "photos/2024/a.jpg"), TxnResult::FileStored);
        assert_eq!(l.put(1, "photos b/x"), TxnResult::FileStored);
        assert_eq!(l.put(1, "photosx"), TxnResult::FileStored);
        assert_eq!(l.put(1, "notes.txt"), TxnResult::FileStored);
        assert_eq!(l.share_folder(1, "photos", "bob"), TxnResult::Shared);
        assert!(l.can_read(2, 1, "photos/2024/a.jpg"));
        // Later files too, at any depth.
        assert_eq!(l.put(1, "photos/b.jpg"), TxnResult::FileStored);
        assert_eq!(l.put(1, "photos/2025/deep/c.jpg"), TxnResult::FileStored);
        assert!(l.can_read(2, 1, "photos/b.jpg"));
        assert!(l.can_read(2, 1, "photos/2025/deep/c.jpg"));
        // Not the neighbours whose names merely start alike, nor another
        // user, nor a file that does not exist.
        assert!(!l.can_read(2, 1, "photos b/x"));
        assert!(!l.can_read(2, 1, "photosx"));
        assert!(!l.can_read(2, 1, "notes.txt"));
        assert!(!l.can_read(3, 1, "photos/b.jpg"));
        assert!(!l.can_read(2, 1, "photos/none.jpg"));
        assert_eq!(
            l.visible(2),
            [
                "1:photos/2024/a.jpg",
                "1:photos/2025/deep/c.jpg",
                "1:photos/b.jpg"
            ]
        );
        // Shared by file and by folder: listed once.
        let share = Txn::Share {
            owner: 1,
            name: "photos/b.jpg".into(),
            grantee: "bob".into(),
        };
        assert_eq!(l.apply(share), TxnResult::Shared);
        assert_eq!(l.visible(2).len(), 3);
        assert_eq!(
            l.state.catalogue().readers(1, "photos/2025/deep/c.jpg"),
            [2]
        );
        l.rebuilt_is_identical();
        // A subfolder's share, then the folder's unshared: the subfolder's
        // stays.
        assert_eq!(l.share_folder(1, "photos/2025", "carol"), TxnResult::Shared);
        assert!(l.can_read(3, 1, "photos/2025/deep/c.jpg"));
        assert!(!l.can_read(3, 1, "photos/b.jpg"));
        let unshare = |who: &str| Txn::UnshareFolder {
            owner: 1,
            folder: "photos".into(),
            grantee: who.into(),
        };
        assert_eq!(l.apply(unshare("bob")), TxnResult::Unshared);
        assert_eq!(l.apply(unshare("bob")), TxnResult::NotShared);
        assert_eq!(l.apply(unshare("nobody")), TxnResult::NoSuchUser);
        assert!(!l.can_read(2, 1, "photos/2024/a.jpg"));
        // The file share is its own.
        assert!(l.can_read(2, 1, "photos/b.jpg"));
        assert!(l.can_read(3, 1, "photos/2025/deep/c.jpg"));
        l.rebuilt_is_identical();
    }

    #[test]
    fn folder_shares_are_refused_for_what_is_not_a_folder() {
        let mut l = Log::new(&["alice", "bob"]);
        l.put(1, "a/b");
        l.put(2, "theirs/x");
        assert_eq!(l.share_folder(1, "nothing", "bob"), TxnResult::NoSuchFile);
        // A file is not a folder; another user's folder is not ours.
        assert_eq!(l.share_folder(1, "a/b", "bob"), TxnResult::NoSuchFile);
        assert_eq!(l.share_folder(1, "theirs", "bob"), TxnResult::NoSuchFile);
        assert_eq!(l.share_folder(1, "a", "zed"), TxnResult::NoSuchUser);
        assert_eq!(
            l.share_folder(1, "a", "alice"),
            TxnResult::CannotShareWithSelf
        );
        assert!(!l.can_read(1, 2, "theirs/x"));
    }

    #[test]
    fn a_name_is_a_file_or_a_folder_never_both() {
        let mut l = Log::new(&["alice", "bob"]);
        assert_eq!(l.put(1, "a/b/c"), TxnResult::FileStored);
        for (name, why) in [
            ("a", "a is a folder"),
            ("a/b", "a/b is a folder"),
            ("a/b/c/d", "a/b/c is a file, so it cannot be a folder"),
        ] {
            assert_eq!(
                l.put(1, name),
                TxnResult::NameConflict { reason: why.into() },
                "{name}"
            );
        }
        // Another owner's names are theirs; a sibling is fine.
        assert_eq!(l.put(2, "a"), TxnResult::FileStored);
        assert_eq!(l.put(1, "a/b2"), TxnResult::FileStored);
        assert_eq!(l.put(1, "ab"), TxnResult::FileStored);
    }

    #[test]
    fn deleting_a_folder_removes_its_files_and_its_shares_only() {
        let mut l = Log::new(&["alice", "bob"]);
        for n in ["p/1", "p/q/2", "p q/3", "pq", "x/p/4"] {
            assert_eq!(l.put(1, n), TxnResult::FileStored);
        }
        l.put(2, "p/theirs");
        assert_eq!(l.share_folder(1, "p", "bob"), TxnResult::Shared);
        assert_eq!(l.share_folder(1, "p/q", "bob"), TxnResult::Shared);
        assert_eq!(l.share_folder(1, "p q", "bob"), TxnResult::Shared);
        let rm = |folder: &str| Txn::DeleteFolder {
            owner: 1,
            folder: folder.into(),
        };
        assert_eq!(l.apply(rm("p")), TxnResult::FolderDeleted { files: 2 });
        let left: Vec<String> = l.visible(1);
        assert_eq!(left, ["1:p q/3", "1:pq", "1:x/p/4"]);
        assert_eq!(l.visible(2), ["2:p/theirs", "1:p q/3"]);
        // Its shares went with it: a new p/ is not shared.
        l.put(1, "p/new");
        assert!(!l.can_read(2, 1, "p/new"));
        assert_eq!(l.apply(rm("p/none")), TxnResult::NoSuchFile);
        l.rebuilt_is_identical();
    }
}
