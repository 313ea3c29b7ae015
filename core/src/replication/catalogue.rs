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

use crate::frame;
use crate::names::{folders_of, is_under};
use crate::store::{Table, Write};
use speedy::{Readable, Writable};
use std::collections::{BTreeMap, BTreeSet};

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
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Catalogue {
    files: BTreeMap<(u64, String), FileMeta>,
    /// (owner, name, grantee)
    shares: BTreeSet<(u64, String, u64)>,
    /// (grantee, owner, name): "shared with me" without a scan.
    shared_with: BTreeSet<(u64, u64, String)>,
    /// (owner, folder, grantee): everything under `folder/`.
    folder_shares: BTreeSet<(u64, String, u64)>,
    /// (grantee, owner, folder).
    folder_shared_with: BTreeSet<(u64, u64, String)>,
}

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
        self.files.insert((f.owner, f.name.clone()), f);
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
        let own = self
            .files
            .range((user, String::new())..)
            .take_while(|((o, _), _)| *o == user)
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
        for f in by_file.chain(by_folder) {
            shared.insert((f.owner, f.name.as_str()), f);
        }
        own.chain(shared.into_values()).collect()
    }

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

    /// How many files name this content.
    pub fn refs(&self, digest: &[u8; 32]) -> usize {
        self.files.values().filter(|f| &f.digest == digest).count()
    }

    pub fn all(&self) -> impl Iterator<Item = &FileMeta> {
        self.files.values()
    }

    pub fn put(&mut self, f: FileMeta, writes: &mut Vec<Write>) -> Option<FileMeta> {
        writes.push(Write::Put {
            table: Table::Files,
            key: file_key(f.owner, &f.name),
            value: enc(&f),
        });
        self.files.insert((f.owner, f.name.clone()), f)
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
        writes.push(Write::Delete {
            table: Table::Files,
            key: file_key(owner, name),
        });
        for g in self.grantees(owner, name) {
            self.unshare(owner, name, g, writes);
        }
        Some(f)
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
    }
}
