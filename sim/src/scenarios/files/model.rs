//! A model of the replicated catalogue, written from the specification
//! (docs/transfer.md, docs/replication.md) rather than from the core's
//! `State`, replayed over the committed log the harness recorded.
//!
//! [`History::replay`] keeps the model's state after every prefix of the log
//! (`states[k]` after entries `1..=k`), so a check can ask "is there a point
//! `k` of the log, within the bounds the run allows, at which this answer
//! was right?". The final state is compared with every server's.

use ferry_core::replication::entry::{Entry, Txn};
use ferry_core::server::messages::Listed;
use ferry_core::server::Server;
use ferry_core::FileAttrs;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelFile {
    pub size: u64,
    pub digest: [u8; 32],
    /// Its modification time and mode as logged, with only the `rwx` bits
    /// of the mode kept (the specification's rule, applied here itself).
    pub attrs: Option<FileAttrs>,
}

/// What a file keeps of the attributes it was sent with (the
/// specification's rule, written here again): the `rwx` bits of the mode,
/// a time within its second's nanoseconds.
pub fn kept(a: FileAttrs) -> FileAttrs {
    FileAttrs {
        mode: a.mode & 0o777,
        mtime_nanos: a.mtime_nanos.min(999_999_999),
        ..a
    }
}

/// What applying an entry did, by the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A retry of a request this session already had applied: no effect.
    Duplicate,
    Registered(u64),
    UsernameTaken,
    Revoked,
    /// A change of the peer registry or of a SYNC round, which the
    /// catalogue's model leaves alone.
    Peers,
    /// A login counted or a password changed, which the catalogue's model
    /// leaves alone too.
    Logins,
    Stored,
    FileExists,
    NoSuchFile,
    NoSuchUser,
    CannotShareWithSelf,
    Shared,
    Unshared,
    NotShared,
    Deleted,
    /// A batch's files, each applied as `PutFile` would be: what became of
    /// each is [`History::files`].
    Batch,
    /// `rm -r` of a folder (or of what was left of its shares).
    FolderDeleted,
    /// An upload whose name was a folder, or in a folder that was a file.
    NameConflict,
    AccountDeleted,
}

/// The catalogue (and the users it refers to) at one point of the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Catalogue {
    pub users: BTreeMap<u64, String>,
    pub by_name: BTreeMap<String, u64>,
    pub files: BTreeMap<(u64, String), ModelFile>,
    /// (owner, name, grantee)
    pub shares: BTreeSet<(u64, String, u64)>,
    /// (owner, folder, grantee): every file under `folder/`, now and later.
    pub folder_shares: BTreeSet<(u64, String, u64)>,
    /// Last request applied per (server, session): retries apply once.
    sessions: BTreeMap<(u32, u64), u64>,
    /// The highest id of a deleted account: ids are never given twice.
    retired: u64,
}

impl Catalogue {
    fn put(
        &mut self,
        owner: u64,
        name: &str,
        size: u64,
        digest: [u8; 32],
        replace: bool,
        attrs: Option<FileAttrs>,
    ) -> Outcome {
        // Ordered before its owner's account was deleted, applied after:
        // it stores nothing. (Ids are given in order, so an id not above
        // the highest deleted one and not a user's was deleted.)
        if owner <= self.retired && !self.users.contains_key(&owner) {
            return Outcome::NoSuchUser;
        }
        let k = (owner, name.to_string());
        if self.files.contains_key(&k) && !replace {
            return Outcome::FileExists;
        }
        if self.conflicts(owner, name) {
            return Outcome::NameConflict;
        }
        let attrs = attrs.map(kept);
        self.files.insert(
            k,
            ModelFile {
                size,
                digest,
                attrs,
            },
        );
        Outcome::Stored
    }

    pub fn apply(&mut self, e: &Entry) -> Outcome {
        self.apply_each(e).0
    }

    /// [`Catalogue::apply`], and for a `PutFiles` what became of each of
    /// its files, in order (`Stored`, `FileExists` or `NameConflict`);
    /// empty for any other entry, and for a retried one.
    pub fn apply_each(&mut self, e: &Entry) -> (Outcome, Vec<Outcome>) {
        if let Txn::PutFiles {
            owner,
            files,
            replace,
            ..
        } = &e.txn
        {
            if self.retried(e) {
                return (Outcome::Duplicate, Vec::new());
            }
            let each = (files.iter())
                .map(|f| self.put(*owner, &f.name, f.size, f.digest, *replace, f.attrs))
                .collect();
            return (Outcome::Batch, each);
        }
        (self.apply_one(e), Vec::new())
    }

    /// Whether `e` is a retry of a request its session already had
    /// applied; notes it applied otherwise.
    fn retried(&mut self, e: &Entry) -> bool {
        let key = e.origin.dedup_key();
        if (self.sessions.get(&key)).is_some_and(|r| *r >= e.origin.request) {
            return true;
        }
        self.sessions.insert(key, e.origin.request);
        false
    }

    fn apply_one(&mut self, e: &Entry) -> Outcome {
        if e.txn == Txn::Noop {
            // A new master's first entry: no client's, changes nothing.
            return Outcome::Duplicate;
        }
        if self.retried(e) {
            return Outcome::Duplicate;
        }
        match &e.txn {
            Txn::Register { username, .. } => {
                if self.by_name.contains_key(username) {
                    return Outcome::UsernameTaken;
                }
                let last = self.users.keys().next_back().copied().unwrap_or(0);
                let id = last.max(self.retired) + 1;
                self.users.insert(id, username.clone());
                self.by_name.insert(username.clone(), id);
                Outcome::Registered(id)
            }
            Txn::Revoke { .. } => Outcome::Revoked,
            Txn::Noop => Outcome::Duplicate,
            Txn::PeerJoin { .. }
            | Txn::PeerRenew { .. }
            | Txn::PeerLeave { .. }
            | Txn::SyncStart { .. }
            | Txn::SyncDone { .. }
            | Txn::SyncRenew { .. }
            | Txn::SyncExpire { .. } => Outcome::Peers,
            Txn::LoginFailed { .. } | Txn::LoginSucceeded { .. } | Txn::ChangePassword { .. } => {
                Outcome::Logins
            }
            Txn::PutFile {
                owner,
                name,
                size,
                digest,
                replace,
                attrs,
                ..
            } => self.put(*owner, name, *size, *digest, *replace, *attrs),
            Txn::PutFileV1 {
                owner,
                name,
                size,
                digest,
                replace,
                ..
            } => self.put(*owner, name, *size, *digest, *replace, None),
            Txn::PutFilesV1 {
                owner,
                files,
                replace,
                ..
            } => {
                for f in files {
                    self.put(*owner, &f.name, f.size, f.digest, *replace, None);
                }
                Outcome::Batch
            }
            // Applied by `apply_each`.
            Txn::PutFiles { .. } => Outcome::Batch,
            Txn::Share {
                owner,
                name,
                grantee,
            } => {
                if !self.files.contains_key(&(*owner, name.clone())) {
                    return Outcome::NoSuchFile;
                }
                match self.by_name.get(grantee) {
                    None => Outcome::NoSuchUser,
                    Some(g) if g == owner => Outcome::CannotShareWithSelf,
                    Some(g) => {
                        self.shares.insert((*owner, name.clone(), *g));
                        Outcome::Shared
                    }
                }
            }
            Txn::Unshare {
                owner,
                name,
                grantee,
            } => {
                if !self.files.contains_key(&(*owner, name.clone())) {
                    return Outcome::NoSuchFile;
                }
                match self.by_name.get(grantee) {
                    None => Outcome::NoSuchUser,
                    Some(g) => {
                        if self.shares.remove(&(*owner, name.clone(), *g)) {
                            Outcome::Unshared
                        } else {
                            Outcome::NotShared
                        }
                    }
                }
            }
            Txn::Delete { owner, name } => {
                if self.files.remove(&(*owner, name.clone())).is_none() {
                    return Outcome::NoSuchFile;
                }
                self.shares.retain(|(o, n, _)| !(o == owner && n == name));
                Outcome::Deleted
            }
            Txn::ShareFolder {
                owner,
                folder,
                grantee,
            } => {
                if !self.is_folder(*owner, folder) {
                    return Outcome::NoSuchFile;
                }
                match self.by_name.get(grantee) {
                    None => Outcome::NoSuchUser,
                    Some(g) if g == owner => Outcome::CannotShareWithSelf,
                    Some(g) => {
                        self.folder_shares.insert((*owner, folder.clone(), *g));
                        Outcome::Shared
                    }
                }
            }
            Txn::UnshareFolder {
                owner,
                folder,
                grantee,
            } => match self.by_name.get(grantee) {
                None => Outcome::NoSuchUser,
                Some(g) if self.folder_shares.remove(&(*owner, folder.clone(), *g)) => {
                    Outcome::Unshared
                }
                Some(_) if self.is_folder(*owner, folder) => Outcome::NotShared,
                Some(_) => Outcome::NoSuchFile,
            },
            Txn::DeleteFolder { owner, folder } => {
                let under = |n: &str| n.starts_with(&format!("{folder}/"));
                let files = self.files.len();
                let shares = self.folder_shares.len();
                self.files.retain(|(o, n), _| !(o == owner && under(n)));
                self.shares.retain(|(o, n, _)| !(o == owner && under(n)));
                self.folder_shares
                    .retain(|(o, f, _)| !(o == owner && (f == folder || under(f))));
                if files == self.files.len() && shares == self.folder_shares.len() {
                    return Outcome::NoSuchFile;
                }
                Outcome::FolderDeleted
            }
            Txn::DeleteAccount { user } => {
                let Some(name) = self.users.remove(user) else {
                    return Outcome::NoSuchUser;
                };
                self.by_name.remove(&name);
                self.files.retain(|(o, _), _| o != user);
                self.shares.retain(|(o, _, g)| o != user && g != user);
                (self.folder_shares).retain(|(o, _, g)| o != user && g != user);
                self.retired = self.retired.max(*user);
                Outcome::AccountDeleted
            }
        }
    }

    /// Has `owner` a file under `folder/`?
    pub fn is_folder(&self, owner: u64, folder: &str) -> bool {
        let prefix = format!("{folder}/");
        (self.files.keys()).any(|(o, n)| *o == owner && n.starts_with(&prefix))
    }

    /// May `owner` not have a file `name`: is it a folder of theirs, or is
    /// a folder it is in a file of theirs?
    pub fn conflicts(&self, owner: u64, name: &str) -> bool {
        self.is_folder(owner, name)
            || (name.match_indices('/')).any(|(i, _)| self.file(owner, &name[..i]).is_some())
    }

    /// Is `owner`'s `name` in a folder shared with `user`?
    fn folder_shared(&self, owner: u64, name: &str, user: u64) -> bool {
        (self.folder_shares.iter())
            .any(|(o, f, g)| *o == owner && *g == user && name.starts_with(&format!("{f}/")))
    }

    /// Who may read `owner`'s `name` besides them, in id order.
    fn readers(&self, owner: u64, name: &str) -> Vec<u64> {
        let by_file = (self.shares.iter())
            .filter(|(o, n, _)| *o == owner && n == name)
            .map(|(_, _, g)| *g);
        let by_folder = (self.folder_shares.iter())
            .filter(|(o, f, _)| *o == owner && name.starts_with(&format!("{f}/")))
            .map(|(_, _, g)| *g);
        let all: BTreeSet<u64> = by_file.chain(by_folder).collect();
        all.into_iter().collect()
    }

    pub fn file(&self, owner: u64, name: &str) -> Option<ModelFile> {
        self.files.get(&(owner, name.to_string())).copied()
    }

    /// The content `user` may download as `owner`'s `name`, if any.
    pub fn readable(&self, user: u64, owner: u64, name: &str) -> Option<[u8; 32]> {
        let f = self.file(owner, name)?;
        (user == owner
            || self.shares.contains(&(owner, name.to_string(), user))
            || self.folder_shared(owner, name, user))
        .then_some(f.digest)
    }

    /// The attributes of the file `user` may download as `owner`'s
    /// `name`, if it is there for them: `Some(None)` for one without.
    pub fn readable_attrs(&self, user: u64, owner: u64, name: &str) -> Option<Option<FileAttrs>> {
        self.readable(user, owner, name)?;
        self.file(owner, name).map(|f| f.attrs)
    }

    /// Is `name` shared with `grantee`, as a file or as a folder?
    pub fn is_shared(&self, owner: u64, name: &str, grantee: u64) -> bool {
        let key = (owner, name.to_string(), grantee);
        self.shares.contains(&key) || self.folder_shares.contains(&key)
    }

    fn name_of(&self, id: u64) -> String {
        self.users
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("user{id}"))
    }

    /// What `ls` shows `user`, in a canonical order: (owner, name, size,
    /// grantees of one's own files in id order).
    pub fn listing(&self, user: u64) -> Vec<ListLine> {
        let mut lines = Vec::new();
        for ((owner, name), f) in &self.files {
            if *owner == user {
                let shared_with = (self.readers(*owner, name).into_iter())
                    .map(|g| self.name_of(g))
                    .collect();
                let line = (self.name_of(*owner), name.clone(), f.size, f.attrs);
                lines.push((line, shared_with));
            } else if self.readable(user, *owner, name).is_some() {
                let line = (self.name_of(*owner), name.clone(), f.size, f.attrs);
                lines.push((line, Vec::new()));
            }
        }
        lines.sort();
        lines
    }

    /// Every digest the catalogue names.
    pub fn digests(&self) -> BTreeSet<[u8; 32]> {
        self.files.values().map(|f| f.digest).collect()
    }

    /// Where `server`'s applied state differs from this one, if it does.
    pub fn differs_from(&self, server: &Server) -> Option<String> {
        let state = server.replica().state();
        let users: BTreeMap<u64, String> = state.users().map(|u| (u.id, u.name.clone())).collect();
        if users != self.users {
            return Some(format!("users {users:?}, the log says {:?}", self.users));
        }
        let mut files = BTreeMap::new();
        let mut shares = BTreeSet::new();
        for f in state.catalogue().all() {
            files.insert(
                (f.owner, f.name.clone()),
                ModelFile {
                    size: f.size,
                    digest: f.digest,
                    attrs: f.attrs,
                },
            );
            for g in state.catalogue().grantees(f.owner, &f.name) {
                shares.insert((f.owner, f.name.clone(), g));
            }
        }
        if files != self.files {
            return Some(format!(
                "files {}, the log says {}",
                describe_files(&files),
                describe_files(&self.files)
            ));
        }
        if shares != self.shares {
            return Some(format!("shares {shares:?}, the log says {:?}", self.shares));
        }
        let folder_shares: BTreeSet<(u64, String, u64)> = (state.catalogue().folder_shares())
            .map(|(o, f, g)| (o, f.to_string(), g))
            .collect();
        if folder_shares != self.folder_shares {
            return Some(format!(
                "folder shares {folder_shares:?}, the log says {:?}",
                self.folder_shares
            ));
        }
        None
    }
}

/// One line of a listing: (owner, name, size, attributes), grantees.
pub type ListLine = ((String, String, u64, Option<FileAttrs>), Vec<String>);

/// A server's listing in the model's canonical form.
pub fn canonical(listing: &[Listed]) -> Vec<ListLine> {
    let mut lines: Vec<ListLine> = listing
        .iter()
        .map(|l| {
            let line = (l.owner.clone(), l.name.clone(), l.size, l.attrs);
            (line, l.shared_with.clone())
        })
        .collect();
    lines.sort();
    lines
}

fn describe_files(files: &BTreeMap<(u64, String), ModelFile>) -> String {
    let parts: Vec<String> = files
        .iter()
        .map(|((o, n), f)| {
            format!(
                "user{o}/{n} ({} bytes, {}{})",
                f.size,
                crate::disk::short(&f.digest),
                f.attrs.map_or(String::new(), |a| format!(
                    ", {}",
                    crate::disk::describe_attrs(&a)
                ))
            )
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

/// The committed log replayed through the model.
#[derive(Clone, Debug, Default)]
pub struct History {
    pub entries: Vec<Entry>,
    /// `states[k]`: after entries `1..=k`.
    pub states: Vec<Catalogue>,
    /// `outcomes[k - 1]`: what entry `k` did.
    pub outcomes: Vec<Outcome>,
    /// `files[k - 1]`: what entry `k`, a `PutFiles`, did with each of its
    /// files (empty for other entries).
    pub files: Vec<Vec<Outcome>>,
}

impl History {
    pub fn replay(entries: &[Entry]) -> Self {
        let mut states = Vec::with_capacity(entries.len() + 1);
        let mut outcomes = Vec::with_capacity(entries.len());
        let mut files = Vec::with_capacity(entries.len());
        let mut c = Catalogue::default();
        states.push(c.clone());
        for e in entries {
            let (o, each) = c.apply_each(e);
            outcomes.push(o);
            files.push(each);
            states.push(c.clone());
        }
        History {
            entries: entries.to_vec(),
            states,
            outcomes,
            files,
        }
    }

    /// What entry `k`, a `PutFiles`, did with each of its files.
    pub fn file_outcomes(&self, k: u64) -> &[Outcome] {
        (k.checked_sub(1))
            .and_then(|i| self.files.get(i as usize))
            .map_or(&[], Vec::as_slice)
    }

    pub fn last(&self) -> &Catalogue {
        self.states
            .last()
            .expect("the empty prefix is always there")
    }

    /// The prefixes `lo..=hi` (clamped to the log), as (k, state).
    pub fn between(&self, lo: u64, hi: u64) -> impl Iterator<Item = (u64, &Catalogue)> {
        let hi = (hi as usize).min(self.states.len() - 1);
        let lo = (lo as usize).min(hi + 1);
        self.states[lo..=hi]
            .iter()
            .enumerate()
            .map(move |(i, s)| ((lo + i) as u64, s))
    }

    /// Entries `1..=hi` with what they did, as (k, entry, outcome).
    pub fn upto(&self, hi: u64) -> impl Iterator<Item = (u64, &Entry, Outcome)> {
        let hi = (hi as usize).min(self.entries.len());
        self.entries[..hi]
            .iter()
            .zip(&self.outcomes)
            .enumerate()
            .map(|(i, (e, o))| (i as u64 + 1, e, *o))
    }

    /// The content entry `k` stored as `owner`'s `name` (a `PutFile`, or
    /// a file of a `PutFiles`), if it stored one.
    pub fn stored_as(&self, k: u64, owner: u64, name: &str) -> Option<[u8; 32]> {
        let e = self.entries.get(k.checked_sub(1)? as usize)?;
        match &e.txn {
            Txn::PutFile {
                owner: o,
                name: n,
                digest,
                ..
            } if *o == owner && n == name => {
                (self.outcomes[k as usize - 1] == Outcome::Stored).then_some(*digest)
            }
            Txn::PutFiles {
                owner: o, files, ..
            } if *o == owner => (files.iter())
                .zip(self.file_outcomes(k))
                .find(|(f, r)| f.name == name && **r == Outcome::Stored)
                .map(|(f, _)| f.digest),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::replication::entry::Origin;

    fn entry(index: u64, session: u64, request: u64, txn: Txn) -> Entry {
        Entry {
            index,
            view: 1,
            at: 0,
            origin: Origin {
                server: 1,
                session,
                request,
            },
            txn,
        }
    }

    fn register(name: &str) -> Txn {
        Txn::Register {
            username: name.into(),
            password: ferry_core::accounts::password::PasswordHash {
                params: ferry_core::accounts::password::PasswordParams::TESTING,
                salt: [0; 16],
                hash: [0; 32],
            },
        }
    }

    fn put(owner: u64, name: &str, d: u8, replace: bool) -> Txn {
        Txn::PutFile {
            owner,
            name: name.into(),
            size: 1,
            digest: [d; 32],
            replace,
            holder: 1,
            attrs: None,
        }
    }

    #[test]
    fn shares_follow_the_log_and_deletes_take_them_away() {
        let log = vec![
            entry(1, 1, 1, register("alice")),
            entry(2, 2, 1, register("bob")),
            entry(3, 1, 2, put(1, "a", 7, false)),
            entry(4, 1, 3, put(1, "a", 8, false)),
            entry(
                5,
                1,
                4,
                Txn::Share {
                    owner: 1,
                    name: "a".into(),
                    grantee: "bob".into(),
                },
            ),
            // A retry of request 4, logged twice: applied once.
            entry(
                6,
                1,
                4,
                Txn::Share {
                    owner: 1,
                    name: "a".into(),
                    grantee: "bob".into(),
                },
            ),
            entry(
                7,
                1,
                5,
                Txn::Delete {
                    owner: 1,
                    name: "a".into(),
                },
            ),
        ];
        let h = History::replay(&log);
        assert_eq!(
            h.outcomes,
            vec![
                Outcome::Registered(1),
                Outcome::Registered(2),
                Outcome::Stored,
                Outcome::FileExists,
                Outcome::Shared,
                Outcome::Duplicate,
                Outcome::Deleted
            ]
        );
        assert_eq!(h.states[5].readable(2, 1, "a"), Some([7; 32]));
        assert_eq!(h.states[4].readable(2, 1, "a"), None);
        assert_eq!(h.last().readable(1, 1, "a"), None);
        assert!(h.last().shares.is_empty());
        assert_eq!(
            h.states[5].listing(1),
            vec![(("alice".into(), "a".into(), 1, None), vec!["bob".into()])]
        );
        assert_eq!(h.between(2, 3).map(|(k, _)| k).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(h.between(9, 99).count(), 0);
    }

    fn put_files(owner: u64, files: &[(&str, u8)], replace: bool) -> Txn {
        Txn::PutFiles {
            owner,
            files: (files.iter())
                .map(|(n, d)| ferry_core::replication::entry::NewFile {
                    name: n.to_string(),
                    size: 1,
                    digest: [*d; 32],
                    attrs: None,
                })
                .collect(),
            replace,
            holder: 1,
        }
    }

    #[test]
    fn a_batch_applies_each_file_as_a_put_would() {
        let log = vec![
            entry(1, 1, 1, register("alice")),
            entry(2, 1, 2, put(1, "a", 7, false)),
            entry(3, 1, 3, put(1, "d/x", 7, false)),
            // "a" exists, "d" is a folder, "b" is new.
            entry(
                4,
                1,
                4,
                put_files(1, &[("a", 8), ("d", 8), ("b", 9)], false),
            ),
            // Retried: applied once.
            entry(5, 1, 4, put_files(1, &[("b", 5)], true)),
            entry(6, 1, 5, put_files(1, &[("a", 8), ("b", 5)], true)),
        ];
        let h = History::replay(&log);
        use Outcome::*;
        assert_eq!(h.outcomes[3..], [Batch, Duplicate, Batch]);
        assert_eq!(h.file_outcomes(4), [FileExists, NameConflict, Stored]);
        assert!(h.file_outcomes(5).is_empty());
        assert_eq!(h.file_outcomes(6), [Stored, Stored]);
        assert_eq!(h.file_outcomes(99), []);
        assert_eq!(h.stored_as(4, 1, "b"), Some([9; 32]));
        assert_eq!(h.stored_as(4, 1, "a"), None, "it existed");
        assert_eq!(h.stored_as(5, 1, "b"), None, "a retry");
        assert_eq!(h.stored_as(2, 1, "a"), Some([7; 32]));
        assert_eq!(h.stored_as(2, 2, "a"), None, "another owner's");
        assert_eq!(h.states[4].file(1, "b").map(|f| f.digest), Some([9; 32]));
        assert_eq!(h.last().file(1, "a").map(|f| f.digest), Some([8; 32]));
    }

    #[test]
    fn an_upload_applied_after_its_owners_deletion_stores_nothing() {
        let log = vec![
            entry(1, 1, 1, register("alice")),
            entry(2, 2, 1, register("bob")),
            entry(3, 1, 2, Txn::DeleteAccount { user: 1 }),
            entry(4, 3, 1, put(1, "late", 7, true)),
            entry(5, 2, 2, put(2, "b", 8, false)),
        ];
        let h = History::replay(&log);
        assert_eq!(h.outcomes[3..], [Outcome::NoSuchUser, Outcome::Stored]);
        assert_eq!(h.last().file(1, "late"), None);
    }

    #[test]
    fn folder_shares_cover_what_is_put_under_the_folder_until_rm_r() {
        let share_folder = |folder: &str| Txn::ShareFolder {
            owner: 1,
            folder: folder.into(),
            grantee: "bob".into(),
        };
        let log = vec![
            entry(1, 1, 1, register("alice")),
            entry(2, 2, 1, register("bob")),
            entry(3, 1, 2, share_folder("d")),
            entry(4, 1, 3, put(1, "d/a", 7, false)),
            entry(5, 1, 4, share_folder("d")),
            entry(6, 1, 5, put(1, "d/e/b", 8, false)),
            entry(7, 1, 6, put(1, "d", 9, false)),
            entry(8, 1, 7, put(1, "dx", 9, false)),
            entry(
                9,
                1,
                8,
                Txn::DeleteFolder {
                    owner: 1,
                    folder: "d".into(),
                },
            ),
            entry(10, 1, 9, put(1, "d/c", 5, false)),
        ];
        let h = History::replay(&log);
        assert_eq!(
            h.outcomes[2..],
            [
                Outcome::NoSuchFile,
                Outcome::Stored,
                Outcome::Shared,
                Outcome::Stored,
                Outcome::NameConflict,
                Outcome::Stored,
                Outcome::FolderDeleted,
                Outcome::Stored,
            ]
        );
        assert_eq!(h.states[6].readable(2, 1, "d/e/b"), Some([8; 32]));
        assert_eq!(h.states[6].readable(2, 1, "dx"), None);
        assert_eq!(h.states[8].readable(2, 1, "dx"), None);
        assert_eq!(
            h.states[6].listing(1)[0],
            (("alice".into(), "d/a".into(), 1, None), vec!["bob".into()])
        );
        assert_eq!(h.last().readable(2, 1, "d/c"), None);
        assert!(h.last().folder_shares.is_empty());
    }
}
