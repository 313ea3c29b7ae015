//! A peer's shared directory in memory: plain names, each with its content
//! and modification time, and numbered temporary files, with the semantics
//! [`crate::io`] writes down for named files. The in-memory worlds (the
//! unit tests', the simulator's) carry a peer's file work out on it; the
//! conformance suite holds it to the same contract as the production one.
//!
//! Like [`MemDisk`](super::mem_disk::MemDisk) it belongs to whoever runs
//! the peer, so it outlives a crash: files stay; temporary files are left
//! behind and removed when the peer starts again ([`MemDir::start`]). The
//! user's side of the directory (files put in, read out) is
//! [`MemDir::put`], [`MemDir::get`] and [`MemDir::list`].
//!
//! There are no links, FIFOs or subdirectories here: every entry is a
//! regular file, so what the production directory refuses for being
//! something else cannot happen.
//!
//! Things a correct peer never does (a name that is not plain, a blob or a
//! client's file) are answered as the production directory answers them
//! and recorded in [`MemDir::anomalies`].

use super::mem_disk::{no_space, write_at, Reads};
use crate::io::{is_plain_name, DirEntry, FileAnswer, FileFailure, FileOp, FileRef};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

/// A file of the directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemFile {
    pub content: Arc<[u8]>,
    /// Unix milliseconds.
    pub modified_ms: u64,
}

#[derive(Default)]
pub struct MemDir {
    pub files: BTreeMap<String, MemFile>,
    pub temps: BTreeMap<u64, Vec<u8>>,
    /// Modification times given to temporary files (`SetModified`).
    modified: BTreeMap<u64, u64>,
    /// Temporary files whose writes fail for lack of space.
    pub full: BTreeSet<u64>,
    /// Temporary files a write failed for: said once, and their persist
    /// fails.
    failed: BTreeSet<u64>,
    /// Things a correct peer never asks for (see the module docs).
    pub anomalies: Vec<String>,
    reads: Reads,
}

impl fmt::Debug for MemDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemDir")
            .field("files", &self.files.keys().collect::<Vec<_>>())
            .field("temps", &self.temps.keys().collect::<Vec<_>>())
            .field("anomalies", &self.anomalies)
            .finish()
    }
}

impl MemDir {
    /// What a starting peer does with its directory: remove the temporary
    /// files a crash left behind. Returns how many there were.
    pub fn start(&mut self) -> usize {
        let leftover = self.temps.len();
        self.temps.clear();
        self.modified.clear();
        self.failed.clear();
        self.reads = Reads::default();
        leftover
    }

    /// Puts a file in the directory from outside the node (the user's
    /// doing), replacing one of that name.
    pub fn put(&mut self, name: &str, content: &[u8], modified_ms: u64) {
        let file = MemFile {
            content: content.into(),
            modified_ms,
        };
        self.files.insert(name.to_string(), file);
    }

    /// The content of file `name`, if it is here.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.files.get(name).map(|f| &f.content[..])
    }

    /// The directory as `List` answers it.
    pub fn list(&self) -> Vec<DirEntry> {
        self.files
            .iter()
            .map(|(name, f)| DirEntry {
                name: name.clone(),
                size: f.content.len() as u64,
                modified_ms: f.modified_ms,
            })
            .collect()
    }

    /// Carries out `op` at once, at `now_ms` (Unix milliseconds: the
    /// modification time of a file it persists); what the node is to be
    /// told, if anything.
    pub fn execute(&mut self, op: FileOp, now_ms: u64) -> Option<FileAnswer> {
        match op {
            FileOp::Read {
                handle,
                file,
                offset,
                len,
            } => Some(self.read_named(handle, &file, offset, len)),
            FileOp::Write { temp, offset, data } => self.write(temp, offset, &data),
            FileOp::Persist { temp, to } => Some(self.persist(temp, &to, now_ms)),
            FileOp::Discard { temp } => {
                self.temps.remove(&temp);
                self.modified.remove(&temp);
                self.failed.remove(&temp);
                None
            }
            FileOp::SetModified { temp, modified_ms } => {
                self.temps.entry(temp).or_default();
                self.modified.insert(temp, modified_ms);
                None
            }
            FileOp::SetAttrs { temp, .. } => {
                self.anomalies
                    .push(format!("a peer set a download's attributes on {temp}"));
                None
            }
            FileOp::Rename { handle, from, to } => Some(self.rename(handle, &from, &to)),
            FileOp::Remove { file } => {
                if let Some(name) = self.name_of(&file, "removed") {
                    self.files.remove(name);
                }
                None
            }
            // A peer never asks; a directory in memory has no size.
            FileOp::Space { handle } => Some(FileAnswer::Space { handle, free: None }),
            FileOp::List { handle } => Some(FileAnswer::Listed {
                handle,
                entries: self.list(),
            }),
        }
    }

    /// The bytes of a read answered [`FileAnswer::Read`]: as the file was
    /// when the read was carried out.
    pub fn read(&mut self, handle: u64, offset: u64, len: usize) -> Result<&[u8], FileFailure> {
        self.reads.read(handle, offset, len)
    }

    /// The plain name `file` is, if it is one. If not, a correct peer
    /// would never have asked: noted as an anomaly.
    fn name_of<'f>(&mut self, file: &'f FileRef, what: &str) -> Option<&'f str> {
        match file {
            FileRef::Named(name) if is_plain_name(name) => Some(name),
            other => {
                self.anomalies.push(format!("a peer {what} {other:?}"));
                None
            }
        }
    }

    fn read_named(&mut self, handle: u64, file: &FileRef, offset: u64, len: usize) -> FileAnswer {
        let Some(name) = self.name_of(file, "read") else {
            return failed(handle, not_here(file));
        };
        match self.files.get(name) {
            Some(f) => {
                self.reads.open(handle, f.content.clone());
                FileAnswer::Read {
                    handle,
                    offset,
                    len,
                }
            }
            None => failed(
                handle,
                FileFailure::missing(format!("cannot open {name}: no such file")),
            ),
        }
    }

    fn write(&mut self, temp: u64, offset: u64, data: &[u8]) -> Option<FileAnswer> {
        let file = self.temps.entry(temp).or_default();
        if self.full.contains(&temp) {
            return self
                .failed
                .insert(temp)
                .then(|| failed(temp, no_space(temp)));
        }
        write_at(file, offset, data);
        None
    }

    /// Uses the temporary file up whatever the answer (see [`crate::io`]).
    fn persist(&mut self, temp: u64, to: &FileRef, now_ms: u64) -> FileAnswer {
        let content = self.temps.remove(&temp).unwrap_or_default();
        let modified_ms = self.modified.remove(&temp).unwrap_or(now_ms);
        if self.failed.remove(&temp) {
            return failed(temp, no_space(temp));
        }
        let Some(name) = self.name_of(to, "persisted a file as") else {
            return failed(temp, not_here(to));
        };
        if self.files.contains_key(name) {
            return failed(temp, FileFailure::exists(name));
        }
        let file = MemFile {
            content: content.into(),
            modified_ms,
        };
        self.files.insert(name.to_string(), file);
        FileAnswer::Persisted { temp }
    }

    /// Moves a file to a free name; never replaces one.
    fn rename(&mut self, handle: u64, from: &FileRef, to: &FileRef) -> FileAnswer {
        let (Some(from), Some(to)) = (
            self.name_of(from, "renamed").map(str::to_string),
            self.name_of(to, "renamed a file to").map(str::to_string),
        ) else {
            return failed(handle, FileFailure::other("not plain names"));
        };
        // Missing before taken, whatever is at `to` (as a kernel's rename
        // looks up `from` first).
        if !self.files.contains_key(&from) {
            let failure = FileFailure::missing(format!("cannot rename {from}: no such file"));
            return failed(handle, failure);
        }
        if self.files.contains_key(&to) {
            return failed(handle, FileFailure::exists(&to));
        }
        if let Some(file) = self.files.remove(&from) {
            self.files.insert(to, file);
        }
        FileAnswer::Renamed { handle }
    }
}

fn failed(handle: u64, failure: FileFailure) -> FileAnswer {
    FileAnswer::Failed { handle, failure }
}

fn not_here(file: &FileRef) -> FileFailure {
    FileFailure::other(format!("{file:?} is not a file this node has"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &str) -> FileRef {
        FileRef::Named(name.into())
    }

    #[test]
    fn a_persisted_file_takes_the_time_of_its_persist_and_a_leftover_goes_at_start() {
        let mut d = MemDir::default();
        d.execute(
            FileOp::Write {
                temp: 1,
                offset: 0,
                data: b"abc".to_vec(),
            },
            5,
        );
        let answer = d.execute(
            FileOp::Persist {
                temp: 1,
                to: named("a"),
            },
            42,
        );
        assert_eq!(answer, Some(FileAnswer::Persisted { temp: 1 }));
        assert_eq!(
            d.list(),
            [DirEntry {
                name: "a".into(),
                size: 3,
                modified_ms: 42
            }]
        );
        d.execute(
            FileOp::Write {
                temp: 2,
                offset: 0,
                data: b"half".to_vec(),
            },
            50,
        );
        assert_eq!(d.start(), 1);
        assert!(d.temps.is_empty() && d.anomalies.is_empty());
        assert_eq!(d.get("a"), Some(&b"abc"[..]));
    }

    #[test]
    fn what_a_correct_peer_never_asks_is_refused_and_noted() {
        let mut d = MemDir::default();
        let answer = d.execute(
            FileOp::Read {
                handle: 1,
                file: FileRef::Blob([0; 32]),
                offset: 0,
                len: 1,
            },
            0,
        );
        assert!(matches!(answer, Some(FileAnswer::Failed { handle: 1, .. })));
        d.execute(FileOp::Remove { file: named("..") }, 0);
        assert_eq!(d.anomalies.len(), 2, "{:?}", d.anomalies);
    }
}
