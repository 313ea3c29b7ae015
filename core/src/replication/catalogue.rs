//! The replicated catalogue: who owns which file, its size and content
//! digest, and who it is shared with. File *content* is not here: servers
//! keep it as blobs named by digest, outside the log (see docs/transfer.md).
//!
//! Folders are not things of their own: a file's name is a path
//! (`photos/2024/a.jpg`), and a folder is the names that share its prefix.
//! A folder exists while a file is under it. One name is never both a file
//! and a folder of one owner (`PutFile` refuses the second, as a
//! filesystem would), so `share NAME` and `rm NAME` always know which is
//! meant. A folder share (`owner`, `folder`, `grantee`) lets the grantee
//! read every file under the folder, those there now and those put there
//! later, until it is unshared or the folder is removed (`rm -r`). It is
//! kept in the shares table under the folder's name with a `/` appended,
//! which no file name ends with.

use crate::file_attrs::FileAttrs;
use crate::frame;
use crate::names::{folders_of, is_under};
use crate::store::{Table, Write};
use speedy::{Readable, Writable};
use std::collections::{BTreeMap, BTreeSet};

/// A file as the catalogue knows it. Its encoding is its row of the files
/// table, which has had this layout since the first store: `attrs` is not
/// in it (see [`Table::Attrs`]).
#[derive(Clone, Debug, PartialEq, Eq, Readable, Writable)]
pub struct FileMeta {
    pub owner: u64,
    pub name: String,
    pub size: u64,
    pub digest: [u8; 32],
    /// The master's clock (Unix seconds) when the upload was ordered.
    pub at: u64,
    /// A server known to hold the content.
    pub holder: u32,
    /// The source file's modification time and mode, if the upload gave
    /// them (none for a pipe, nor for files uploaded before attributes
    /// existed). Kept in the attrs table, keyed as the file's row: a row
    /// of the files table grown by a field would not decode in the stores
    /// written before, nor theirs here.
    #[speedy(skip)]
    pub attrs: Option<FileAttrs>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Catalogue {
    files: BTreeMap<(u64, String), FileMeta>,
    /// (owner, name, grantee)
    shares: BTreeSet<(u64, String, u64)>,
    /// (grantee, owner, name): "shared with me" without a scan.
    shared_with: BTreeSet<(u64, u64, String)>,
    /// (digest, owner, name): which files name a content, without a scan.
    /// Servers ask after every applied entry which blobs to keep or fetch;
    /// a scan of every file there made each upload cost O(files).
    by_content: BTreeSet<([u8; 32], u64, String)>,
    /// owner -> bytes of their files: every offer checks the quota, and a
    /// sum over the owner's files made a batch of n files cost O(n²).
    used: BTreeMap<u64, u64>,
    /// (owner, folder, grantee): everything under `folder/`.
    folder_shares: BTreeSet<(u64, String, u64)>,
    /// (grantee, owner, folder).
    folder_shared_with: BTreeSet<(u64, u64, String)>,
    /// Contents that a file stopped naming (deleted, or replaced by other
    /// content) since the last [`Catalogue::take_released`].
    released: Released,
}

/// What [`Catalogue::take_released`] hands out. Not part of the
/// catalogue's value: two catalogues with the same files are equal
/// whatever was taken from them.
#[derive(Clone, Debug, Default)]
struct Released(Vec<[u8; 32]>);

impl PartialEq for Released {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Released {}

pub fn file_key(owner: u64, name: &str) -> Vec<u8> {
    let mut k = owner.to_be_bytes().to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

fn share_key(owner: u64, grantee: u64, name: &str) -> Vec<u8> {
    let mut k = owner.to_be_bytes().to_vec();
    k.extend_from_slice(&grantee.to_be_bytes());
    k.extend_from_slice(name.as_bytes());
    k
}

fn enc<T: Writable<speedy::LittleEndian>>(v: &T) -> Vec<u8> {
    v.write_to_vec().unwrap_or_default()
}

impl Catalogue {
    pub fn load_file(&mut self, value: &[u8]) -> Result<(), String> {
        let f: FileMeta = frame::decode(value).map_err(|e| format!("files table: {e}"))?;
        self.insert(f);
        Ok(())
    }

    /// A row of the attrs table, loaded after every file's row.
    pub fn load_attrs(&mut self, key: &[u8], value: &[u8]) -> Result<(), String> {
        let (owner, name) = match key {
            [o0, o1, o2, o3, o4, o5, o6, o7, name @ ..] => (
                u64::from_be_bytes([*o0, *o1, *o2, *o3, *o4, *o5, *o6, *o7]),
                String::from_utf8(name.to_vec()).map_err(|_| "attrs table: name is not UTF-8")?,
            ),
            _ => return Err("attrs table: short key".into()),
        };
        let attrs: FileAttrs = frame::decode(value).map_err(|e| format!("attrs table: {e}"))?;
        match self.files.get_mut(&(owner, name)) {
            Some(f) => f.attrs = Some(attrs),
            // Written and removed with its file, in one batch: an orphan is
            // a store damaged some other way.
            None => return Err("attrs table: a row for no file".into()),
        }
        Ok(())
    }

    pub fn load_share(&mut self, key: &[u8]) -> Result<(), String> {
        if key.len() < 16 {
            return Err("shares table: short key".into());
        }
        let owner = u64::from_be_bytes(key[..8].try_into().map_err(|_| "shares key")?);
        let grantee = u64::from_be_bytes(key[8..16].try_into().map_err(|_| "shares key")?);
        let name =
            String::from_utf8(key[16..].to_vec()).map_err(|_| "shares table: name is not UTF-8")?;
        if let Some(folder) = name.strip_suffix('/') {
            let folder = folder.to_string();
            self.folder_shares.insert((owner, folder.clone(), grantee));
            self.folder_shared_with.insert((grantee, owner, folder));
            return Ok(());
        }
        self.shares.insert((owner, name.clone(), grantee));
        self.shared_with.insert((grantee, owner, name));
        Ok(())
    }

    /// `owner`'s files under `folder`, at any depth, in name order (names
    /// sharing a prefix are neighbours in the map).
    pub fn under<'a>(&'a self, owner: u64, folder: &'a str) -> impl Iterator<Item = &'a FileMeta> {
        self.files
            .range((owner, format!("{folder}/"))..)
            .take_while(move |((o, n), _)| *o == owner && is_under(n, folder))
            .map(|(_, f)| f)
    }

    /// Is `name` one of `owner`'s folders (a file is under it)?
    pub fn is_folder(&self, owner: u64, name: &str) -> bool {
        self.under(owner, name).next().is_some()
    }

    /// Why `owner` may not have a file named `name`, if they may not: it is
    /// a folder of theirs, or one of its folders is a file of theirs.
    pub fn conflict(&self, owner: u64, name: &str) -> Option<String> {
        if self.is_folder(owner, name) {
            return Some(format!("{name} is a folder"));
        }
        folders_of(name)
            .find(|f| self.get(owner, f).is_some())
            .map(|f| format!("{f} is a file, so it cannot be a folder"))
    }

    /// Is `owner`'s `name` in a folder they share with `user`?
    fn in_shared_folder(&self, user: u64, owner: u64, name: &str) -> bool {
        folders_of(name).any(|f| self.folder_shares.contains(&(owner, f.to_string(), user)))
    }

    pub fn get(&self, owner: u64, name: &str) -> Option<&FileMeta> {
        self.files.get(&(owner, name.to_string()))
    }

    /// May `user` download `owner`'s file `name`?
    pub fn can_read(&self, user: u64, owner: u64, name: &str) -> bool {
        self.get(owner, name).is_some()
            && (user == owner
                || self.shares.contains(&(owner, name.to_string(), user))
                || self.in_shared_folder(user, owner, name))
    }

    /// The user's own files, then the files shared with them (by file or
    /// by folder, each once), by owner and name.
    pub fn visible_to(&self, user: u64) -> Vec<&FileMeta> {
        self.visible_after(user, None, None).collect()
    }

    /// What `user` may see, in the listing's order (their own files by
    /// name, then the files shared with them by owner and name), after the
    /// file `after` (owner, name), and of that only what is under folder
    /// `prefix`. For a listing in pages: each page starts where the last
    /// ended, whatever changed in between.
    pub fn visible_after<'a>(
        &'a self,
        user: u64,
        prefix: Option<&'a str>,
        after: Option<(u64, &str)>,
    ) -> impl Iterator<Item = &'a FileMeta> + 'a {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        let wanted = move |name: &str| prefix.is_none_or(|p| is_under(name, p));
        let first = (user, prefix.map(|p| format!("{p}/")).unwrap_or_default());
        let own_from = match after {
            None => Some(Included(first)),
            Some((o, n)) if o == user => Some(Excluded((user, n.to_string()).max(first))),
            // Past the user's own files already.
            Some(_) => None,
        };
        let own = own_from
            .into_iter()
            .flat_map(move |from| self.files.range((from, Unbounded)))
            .take_while(move |((o, n), _)| *o == user && wanted(n))
            .map(|(_, f)| f);
        let mut shared: BTreeMap<(u64, &str), &FileMeta> = BTreeMap::new();
        let by_file = self
            .shared_with
            .range((user, 0, String::new())..)
            .take_while(|(g, _, _)| *g == user)
            .filter_map(|(_, o, n)| self.files.get(&(*o, n.clone())));
        let by_folder = self
            .folder_shared_with
            .range((user, 0, String::new())..)
            .take_while(|(g, _, _)| *g == user)
            .flat_map(|(_, o, folder)| self.under(*o, folder));
        for f in by_file.chain(by_folder).filter(|f| wanted(&f.name)) {
            shared.insert((f.owner, f.name.as_str()), f);
        }
        let past = after
            .filter(|(o, _)| *o != user)
            .map(|(o, n)| (o, n.to_string()));
        let shared = shared.into_iter().filter(move |((o, n), _)| {
            (past.as_ref()).is_none_or(|(po, pn)| (*o, *n) > (*po, pn.as_str()))
        });
        own.chain(shared.map(|(_, f)| f))
    }

    /// Bytes of the files `owner` owns.
    pub fn bytes_of(&self, owner: u64) -> u64 {
        self.used.get(&owner).copied().unwrap_or(0)
    }

    /// `size` bytes of `owner`'s went; an owner with none left has no
    /// entry, so that equal catalogues have equal totals.
    fn unuse(&mut self, owner: u64, size: u64) {
        if let Some(u) = self.used.get_mut(&owner) {
            *u = u.saturating_sub(size);
            if *u == 0 {
                self.used.remove(&owner);
            }
        }
    }

    /// Grantees of a file, for `ls` of one's own files.
    /// Who may read `owner`'s `name` besides them: its grantees and those
    /// of the folders it is in, for `ls` of one's own files.
    pub fn readers(&self, owner: u64, name: &str) -> Vec<u64> {
        let mut all: BTreeSet<u64> = self.grantees(owner, name).into_iter().collect();
        for f in folders_of(name) {
            all.extend(self.folder_grantees(owner, f));
        }
        all.into_iter().collect()
    }

    /// Every folder share, as (owner, folder, grantee).
    pub fn folder_shares(&self) -> impl Iterator<Item = (u64, &str, u64)> {
        (self.folder_shares.iter()).map(|(o, f, g)| (*o, f.as_str(), *g))
    }

    /// Whom `owner` shares folder `folder` with.
    pub fn folder_grantees(&self, owner: u64, folder: &str) -> Vec<u64> {
        self.folder_shares
            .range((owner, folder.to_string(), 0)..)
            .take_while(|(o, f, _)| *o == owner && f == folder)
            .map(|(_, _, g)| *g)
            .collect()
    }

    /// Grantees of a file (shares of that file alone).
    pub fn grantees(&self, owner: u64, name: &str) -> Vec<u64> {
        self.shares
            .range((owner, name.to_string(), 0)..)
            .take_while(|(o, n, _)| *o == owner && n == name)
            .map(|(_, _, g)| *g)
            .collect()
    }

    /// How many files `owner` owns, and their bytes.
    pub fn usage(&self, owner: u64) -> (u64, u64) {
        self.owned_by(owner)
            .fold((0, 0), |(n, b), f| (n + 1, b + f.size))
    }

    /// `owner`'s own files, by name.
    pub fn owned_by(&self, owner: u64) -> impl Iterator<Item = &FileMeta> {
        self.files
            .range((owner, String::new())..)
            .take_while(move |((o, _), _)| *o == owner)
            .map(|(_, f)| f)
    }

    /// True if any file is shared with `user`.
    pub fn shared_with_anyone(&self, user: u64) -> bool {
        (self.shared_with.range((user, 0, String::new())..))
            .next()
            .is_some_and(|(g, _, _)| *g == user)
    }

    /// How many files name this content.
    pub fn refs(&self, digest: &[u8; 32]) -> usize {
        self.named_by(digest).count()
    }

    /// Does any file name this content?
    pub fn names(&self, digest: &[u8; 32]) -> bool {
        self.named_by(digest).next().is_some()
    }

    /// A file that names this content, if any.
    pub fn with_content(&self, digest: &[u8; 32]) -> Option<&FileMeta> {
        let (_, o, n) = self.named_by(digest).next()?;
        self.files.get(&(*o, n.clone()))
    }

    /// The contents files stopped naming since the last call (each may be
    /// named still, by another file): after an apply, a server looks only
    /// at those for blobs to collect, not at every blob it has.
    pub fn take_released(&mut self) -> Vec<[u8; 32]> {
        std::mem::take(&mut self.released.0)
    }

    /// Every content some file names, each once, in order.
    pub fn contents(&self) -> impl Iterator<Item = &[u8; 32]> {
        let mut last: Option<&[u8; 32]> = None;
        self.by_content.iter().filter_map(move |(d, _, _)| {
            let fresh = last != Some(d);
            last = Some(d);
            fresh.then_some(d)
        })
    }

    fn named_by<'a>(
        &'a self,
        digest: &'a [u8; 32],
    ) -> impl Iterator<Item = &'a ([u8; 32], u64, String)> + 'a {
        self.by_content
            .range((*digest, 0, String::new())..)
            .take_while(move |(d, _, _)| d == digest)
    }

    fn insert(&mut self, f: FileMeta) -> Option<FileMeta> {
        let digest = f.digest;
        self.by_content.insert((digest, f.owner, f.name.clone()));
        if f.size > 0 {
            *self.used.entry(f.owner).or_default() += f.size;
        }
        let old = self.files.insert((f.owner, f.name.clone()), f)?;
        self.unuse(old.owner, old.size);
        // Replaced: the old content is no longer named by this file.
        if old.digest != digest {
            (self.by_content).remove(&(old.digest, old.owner, old.name.clone()));
            self.released.0.push(old.digest);
        }
        Some(old)
    }

    pub fn all(&self) -> impl Iterator<Item = &FileMeta> {
        self.files.values()
    }

    pub fn put(&mut self, f: FileMeta, writes: &mut Vec<Write>) -> Option<FileMeta> {
        let key = file_key(f.owner, &f.name);
        writes.push(Write::Put {
            table: Table::Files,
            key: key.clone(),
            value: enc(&f),
        });
        let had_attrs = self
            .get(f.owner, &f.name)
            .is_some_and(|o| o.attrs.is_some());
        match &f.attrs {
            Some(a) => writes.push(Write::Put {
                table: Table::Attrs,
                key,
                value: enc(a),
            }),
            // A file replaced by one without attributes (from a pipe) must
            // not come back from a restart with the old file's.
            None if had_attrs => writes.push(Write::Delete {
                table: Table::Attrs,
                key,
            }),
            None => {}
        }
        self.insert(f)
    }

    pub fn share(&mut self, owner: u64, name: &str, grantee: u64, writes: &mut Vec<Write>) -> bool {
        writes.push(Write::Put {
            table: Table::Shares,
            key: share_key(owner, grantee, name),
            value: Vec::new(),
        });
        self.shared_with.insert((grantee, owner, name.to_string()));
        self.shares.insert((owner, name.to_string(), grantee))
    }

    pub fn unshare(
        &mut self,
        owner: u64,
        name: &str,
        grantee: u64,
        writes: &mut Vec<Write>,
    ) -> bool {
        writes.push(Write::Delete {
            table: Table::Shares,
            key: share_key(owner, grantee, name),
        });
        self.shared_with.remove(&(grantee, owner, name.to_string()));
        self.shares.remove(&(owner, name.to_string(), grantee))
    }

    pub fn share_folder(
        &mut self,
        owner: u64,
        folder: &str,
        grantee: u64,
        writes: &mut Vec<Write>,
    ) -> bool {
        writes.push(Write::Put {
            table: Table::Shares,
            key: share_key(owner, grantee, &format!("{folder}/")),
            value: Vec::new(),
        });
        self.folder_shared_with
            .insert((grantee, owner, folder.to_string()));
        self.folder_shares
            .insert((owner, folder.to_string(), grantee))
    }

    pub fn unshare_folder(
        &mut self,
        owner: u64,
        folder: &str,
        grantee: u64,
        writes: &mut Vec<Write>,
    ) -> bool {
        let had = self
            .folder_shares
            .remove(&(owner, folder.to_string(), grantee));
        if had {
            writes.push(Write::Delete {
                table: Table::Shares,
                key: share_key(owner, grantee, &format!("{folder}/")),
            });
            self.folder_shared_with
                .remove(&(grantee, owner, folder.to_string()));
        }
        had
    }

    /// Removes every file under `folder` with their shares, and the shares
    /// of that folder and of the folders under it. Returns how many files
    /// and how many folder shares went.
    pub fn delete_folder(
        &mut self,
        owner: u64,
        folder: &str,
        writes: &mut Vec<Write>,
    ) -> (u64, usize) {
        let names: Vec<String> = self.under(owner, folder).map(|f| f.name.clone()).collect();
        for n in &names {
            self.delete(owner, n, writes);
        }
        let shares: Vec<(String, u64)> = self
            .folder_shares
            .range((owner, folder.to_string(), 0)..)
            // "a b" sorts between "a" and "a/x": among the names that
            // start with the folder's, keep it and those under it.
            .take_while(|(o, f, _)| *o == owner && f.starts_with(folder))
            .filter(|(_, f, _)| f == folder || is_under(f, folder))
            .map(|(_, f, g)| (f.clone(), *g))
            .collect();
        for (f, g) in &shares {
            self.unshare_folder(owner, f, *g, writes);
        }
        (names.len() as u64, shares.len())
    }

    /// Removes a file and every share of it.
    pub fn delete(&mut self, owner: u64, name: &str, writes: &mut Vec<Write>) -> Option<FileMeta> {
        let f = self.files.remove(&(owner, name.to_string()))?;
        self.unuse(owner, f.size);
        self.by_content.remove(&(f.digest, owner, name.to_string()));
        self.released.0.push(f.digest);
        writes.push(Write::Delete {
            table: Table::Files,
            key: file_key(owner, name),
        });
        if f.attrs.is_some() {
            writes.push(Write::Delete {
                table: Table::Attrs,
                key: file_key(owner, name),
            });
        }
        for g in self.grantees(owner, name) {
            self.unshare(owner, name, g, writes);
        }
        Some(f)
    }

    /// Removes every file of `user` (and its shares) and every share
    /// granted to `user`; returns how many files went.
    pub fn remove_user(&mut self, user: u64, writes: &mut Vec<Write>) -> u64 {
        let names: Vec<String> = self.owned_by(user).map(|f| f.name.clone()).collect();
        for name in &names {
            self.delete(user, name, writes);
        }
        let granted: Vec<(u64, String)> = (self.shared_with)
            .range((user, 0, String::new())..)
            .take_while(|(g, _, _)| *g == user)
            .map(|(_, o, n)| (*o, n.clone()))
            .collect();
        for (owner, name) in granted {
            self.unshare(owner, &name, user, writes);
        }
        // Folder shares, theirs and to them (a folder share outlives the
        // files under it).
        let folders: Vec<(u64, String, u64)> = (self.folder_shares.iter())
            .filter(|(o, _, g)| *o == user || *g == user)
            .cloned()
            .collect();
        for (owner, folder, grantee) in folders {
            self.unshare_folder(owner, &folder, grantee, writes);
        }
        names.len() as u64
    }

    pub fn digest_into(&self, h: &mut blake3::Hasher) {
        for f in self.files.values() {
            h.update(&enc(f));
        }
        for (o, n, g) in &self.shares {
            h.update(&share_key(*o, *g, n));
        }
        // Nothing when there are none: a catalogue without folder shares
        // digests as it did before they existed.
        for (o, f, g) in &self.folder_shares {
            h.update(&share_key(*o, *g, &format!("{f}/")));
        }
        // Likewise attributes (which `enc` of a file leaves out): a
        // catalogue of files without any digests as it did before them.
        for f in self.files.values() {
            if let Some(a) = &f.attrs {
                h.update(&file_key(f.owner, &f.name));
                h.update(&enc(a));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(owner: u64, name: &str, d: u8) -> FileMeta {
        FileMeta {
            owner,
            name: name.into(),
            size: u64::from(d) * 10,
            digest: [d; 32],
            at: 0,
            holder: 1,
            attrs: None,
        }
    }

    /// The content index says what a scan of every file would.
    fn agrees(c: &Catalogue) {
        let scanned: BTreeSet<[u8; 32]> = c.all().map(|f| f.digest).collect();
        let indexed: Vec<[u8; 32]> = c.contents().copied().collect();
        assert_eq!(indexed, scanned.iter().copied().collect::<Vec<_>>());
        for d in 0..6u8 {
            let d = [d; 32];
            let n = c.all().filter(|f| f.digest == d).count();
            assert_eq!(c.refs(&d), n);
            assert_eq!(c.names(&d), n > 0);
            assert_eq!(c.with_content(&d).map(|f| f.digest), (n > 0).then_some(d));
        }
        for owner in 0..6 {
            let sum: u64 = c.all().filter(|f| f.owner == owner).map(|f| f.size).sum();
            assert_eq!(c.bytes_of(owner), sum, "bytes of owner {owner}");
        }
        // The totals are part of the value: the same files loaded afresh
        // make an equal catalogue.
        let mut loaded = Catalogue::default();
        for f in c.all() {
            loaded.load_file(&enc(f)).expect("load");
        }
        assert_eq!(loaded.used, c.used);
    }

    #[test]
    fn the_content_index_follows_puts_replacements_and_deletes() {
        let mut c = Catalogue::default();
        let w = &mut Vec::new();
        c.put(file(1, "a", 1), w);
        c.put(file(2, "a", 1), w);
        c.put(file(1, "b", 2), w);
        agrees(&c);
        // Replaced with other content, then with the same.
        c.put(file(1, "a", 3), w);
        agrees(&c);
        c.put(file(1, "a", 3), w);
        agrees(&c);
        // Empty files count nothing, and leave no total behind.
        c.put(file(3, "empty", 0), w);
        c.put(file(3, "full", 4), w);
        agrees(&c);
        c.delete(3, "full", w);
        agrees(&c);
        c.delete(2, "a", w);
        agrees(&c);
        assert!(!c.names(&[1; 32]));
        c.delete(1, "a", w);
        c.delete(1, "b", w);
        c.delete(3, "empty", w);
        agrees(&c);
        assert_eq!(c.contents().count(), 0);
        assert!(c.used.is_empty());
        // Loaded from the store: indexed the same way.
        let mut loaded = Catalogue::default();
        loaded.load_file(&enc(&file(4, "x", 5))).expect("load");
        agrees(&loaded);
        assert!(loaded.names(&[5; 32]));
    }
}
