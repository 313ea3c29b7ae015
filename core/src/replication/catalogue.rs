//! The replicated catalogue: who owns which file, its size and content
//! digest, and who it is shared with. File *content* is not here: servers
//! keep it as blobs named by digest, outside the log (see docs/transfer.md).

use crate::frame;
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
        self.shares.insert((owner, name.clone(), grantee));
        self.shared_with.insert((grantee, owner, name));
        Ok(())
    }

    pub fn get(&self, owner: u64, name: &str) -> Option<&FileMeta> {
        self.files.get(&(owner, name.to_string()))
    }

    /// May `user` download `owner`'s file `name`?
    pub fn can_read(&self, user: u64, owner: u64, name: &str) -> bool {
        self.get(owner, name).is_some()
            && (user == owner || self.shares.contains(&(owner, name.to_string(), user)))
    }

    /// The user's own files, then the files shared with them.
    pub fn visible_to(&self, user: u64) -> Vec<&FileMeta> {
        let own = self
            .files
            .range((user, String::new())..)
            .take_while(|((o, _), _)| *o == user)
            .map(|(_, f)| f);
        let shared = self
            .shared_with
            .range((user, 0, String::new())..)
            .take_while(|(g, _, _)| *g == user)
            .filter_map(|(_, o, n)| self.files.get(&(*o, n.clone())));
        own.chain(shared).collect()
    }

    /// Grantees of a file, for `ls` of one's own files.
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
        names.len() as u64
    }

    pub fn digest_into(&self, h: &mut blake3::Hasher) {
        for f in self.files.values() {
            h.update(&enc(f));
        }
        for (o, n, g) in &self.shares {
            h.update(&share_key(*o, *g, n));
        }
    }
}
