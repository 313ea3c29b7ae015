//! A server's disk in memory: blobs named by their BLAKE3 digest and
//! numbered temporary files, with the semantics [`crate::io`] writes down.
//! The in-memory worlds (the unit tests' cluster, the simulator) carry a
//! server's file work out on it; the conformance suite holds it to the same
//! contract as the production disk.
//!
//! It belongs to whoever runs the server, not to the server's world, so it
//! outlives a crash: blobs survive; temporary files are left behind and
//! removed when the server starts again ([`MemDisk::start`]).
//!
//! Reads are answered with the bytes the file held when the read was
//! carried out (the production disk opens the file at that moment): a blob
//! that rots or goes afterwards does not change a read already made.
//!
//! Things a correct server never does are answered as the production disk
//! answers them and also recorded in [`MemDisk::anomalies`], which the
//! simulator checks: a blob persisted under a name that is not the digest
//! of its bytes, a server naming a client's local file.

use crate::io::{FileAnswer, FileFailure, FileOp, FileRef};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::sync::Arc;

#[derive(Default)]
pub struct MemDisk {
    pub blobs: BTreeMap<[u8; 32], Arc<[u8]>>,
    pub temps: BTreeMap<u64, Vec<u8>>,
    /// Blobs whose reads fail (a bad sector: `EIO`).
    pub unreadable: BTreeSet<[u8; 32]>,
    /// Temporary files whose writes fail for lack of space.
    pub full: BTreeSet<u64>,
    /// Temporary files a write failed for: said once, and their persist
    /// fails.
    failed: BTreeSet<u64>,
    /// Things a correct server never asks for (see the module docs).
    pub anomalies: Vec<String>,
    /// Blobs persisted (from uploads and fetches) and removed, over all
    /// starts.
    pub persisted: u64,
    pub removed: u64,
    reads: Reads,
}

impl fmt::Debug for MemDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemDisk")
            .field("blobs", &self.blobs.len())
            .field("temps", &self.temps.keys().collect::<Vec<_>>())
            .field("anomalies", &self.anomalies)
            .finish()
    }
}

/// The size a memory disk claims, so that its free space moves as blobs
/// come and go.
pub const MEM_DISK_SIZE: u64 = 1 << 40;

impl MemDisk {
    /// Bytes held in blobs and temporary files.
    pub fn used(&self) -> u64 {
        let blobs = self.blobs.values().map(|b| b.len() as u64);
        let temps = self.temps.values().map(|t| t.len() as u64);
        blobs.chain(temps).sum()
    }

    /// What a starting server does with its disk: remove the temporary files
    /// a crash left behind, and list the blobs (sorted) for
    /// `Recovered::blobs`. Returns the blobs and how many temporary files
    /// were removed.
    pub fn start(&mut self) -> (Vec<[u8; 32]>, usize) {
        let leftover = self.temps.len();
        self.temps.clear();
        self.failed.clear();
        self.reads = Reads::default();
        (self.blobs.keys().copied().collect(), leftover)
    }

    /// Flips bit `bit` of blob `d` where it lies, as a disk that rots:
    /// reads carried out from now on see the damage, reads already carried
    /// out keep what they read. Returns the damaged content (a new
    /// allocation, so a copy fetched again later is told from it by
    /// `Arc::ptr_eq`); `None` if there is no such blob or no such bit.
    pub fn rot(&mut self, d: &[u8; 32], bit: u64) -> Option<Arc<[u8]>> {
        let blob = self.blobs.get_mut(d)?;
        let byte = usize::try_from(bit / 8).ok().filter(|&i| i < blob.len())?;
        let mut bytes = blob.to_vec();
        bytes[byte] ^= 1 << (bit % 8);
        let rotten: Arc<[u8]> = bytes.into();
        *blob = rotten.clone();
        Some(rotten)
    }

    /// Blob `d`'s bytes, if it is here.
    pub fn blob(&self, d: &[u8; 32]) -> Option<&[u8]> {
        self.blobs.get(d).map(|b| &b[..])
    }

    /// Replaces blob `d`'s bytes where it lies (a disk that damages it);
    /// false if it is not here.
    pub fn damage(&mut self, d: &[u8; 32], f: impl FnOnce(&mut Vec<u8>)) -> bool {
        let Some(blob) = self.blobs.get_mut(d) else {
            return false;
        };
        let mut bytes = blob.to_vec();
        f(&mut bytes);
        *blob = bytes.into();
        true
    }

    /// Would a `Persist` of `op` find its blob already there (and keep it)?
    pub fn holds_target(&self, op: &FileOp) -> bool {
        match op {
            FileOp::Persist {
                to: FileRef::Blob(d),
                ..
            } => self.blobs.contains_key(d),
            _ => false,
        }
    }

    /// Carries out `op` at once; what the node is to be told, if anything.
    pub fn execute(&mut self, op: FileOp) -> Option<FileAnswer> {
        match op {
            FileOp::Read {
                handle,
                file: FileRef::Blob(d),
                offset,
                len,
            } => Some(match self.blobs.get(&d) {
                Some(_) if self.unreadable.contains(&d) => FileAnswer::Failed {
                    handle,
                    failure: FileFailure::other("input/output error"),
                },
                Some(b) => {
                    self.reads.open(handle, b.clone());
                    FileAnswer::Read {
                        handle,
                        offset,
                        len,
                    }
                }
                None => FileAnswer::Failed {
                    handle,
                    failure: FileFailure::missing(format!(
                        "cannot open blob {}: no such file",
                        hex(&d)
                    )),
                },
            }),
            FileOp::Read {
                handle,
                file: FileRef::Temp(temp),
                offset,
                len,
            } => Some(match self.temps.get(&temp) {
                Some(bytes) => {
                    self.reads.open(handle, bytes.as_slice().into());
                    FileAnswer::Read {
                        handle,
                        offset,
                        len,
                    }
                }
                None => FileAnswer::Failed {
                    handle,
                    failure: FileFailure::missing(format!(
                        "cannot open temporary file {temp}: no such file"
                    )),
                },
            }),
            FileOp::Write { temp, .. } if self.full.contains(&temp) => {
                self.temps.entry(temp).or_default();
                self.failed.insert(temp).then(|| FileAnswer::Failed {
                    handle: temp,
                    failure: no_space(temp),
                })
            }
            FileOp::Write { temp, offset, data } => {
                write_at(self.temps.entry(temp).or_default(), offset, &data);
                None
            }
            FileOp::Persist { temp, .. } if self.failed.remove(&temp) => {
                self.temps.remove(&temp);
                Some(FileAnswer::Failed {
                    handle: temp,
                    failure: no_space(temp),
                })
            }
            FileOp::Persist {
                temp,
                to: FileRef::Blob(d),
            } => {
                let content = self.temps.remove(&temp).unwrap_or_default();
                let actual = *blake3::hash(&content).as_bytes();
                if actual != d {
                    self.anomalies.push(format!(
                        "temporary file {temp} ({} bytes, digest {}) persisted as blob {}",
                        content.len(),
                        short(&actual),
                        short(&d)
                    ));
                }
                // The blob there is kept and the copy dropped (crate::io):
                // a copy that rotted stays rotten until it is removed.
                self.blobs.entry(d).or_insert_with(|| content.into());
                self.persisted += 1;
                Some(FileAnswer::Persisted { temp })
            }
            FileOp::Discard { temp } => {
                self.temps.remove(&temp);
                self.failed.remove(&temp);
                None
            }
            FileOp::Remove {
                file: FileRef::Blob(d),
            } => {
                if self.blobs.remove(&d).is_some() {
                    self.removed += 1;
                }
                None
            }
            FileOp::Read { handle, file, .. } => {
                self.anomalies
                    .push(format!("a server read {file:?}, not a blob"));
                Some(FileAnswer::Failed {
                    handle,
                    failure: FileFailure::other(format!("{file:?} is not a file this node has")),
                })
            }
            FileOp::Persist { temp, to } => {
                self.anomalies.push(format!(
                    "a server persisted temporary file {temp} as {to:?}"
                ));
                self.temps.remove(&temp);
                Some(FileAnswer::Failed {
                    handle: temp,
                    failure: FileFailure::other(format!("{to:?} is not a file this node has")),
                })
            }
            FileOp::Remove { file } => {
                self.anomalies.push(format!("a server removed {file:?}"));
                None
            }
            FileOp::SetModified { temp, .. } => {
                self.anomalies
                    .push(format!("a server set a modification time on {temp}"));
                None
            }
            FileOp::SetAttrs { temp, .. } => {
                self.anomalies
                    .push(format!("a server set attributes on {temp}"));
                None
            }
            FileOp::Rename { handle, .. } => {
                self.anomalies.push("a server renamed a file".into());
                Some(FileAnswer::Failed {
                    handle,
                    failure: FileFailure::other("a server has no shared directory"),
                })
            }
            FileOp::Space { handle } => Some(FileAnswer::Space {
                handle,
                free: Some(MEM_DISK_SIZE.saturating_sub(self.used())),
            }),
            FileOp::List { handle } => {
                self.anomalies.push("a server listed a directory".into());
                Some(FileAnswer::Failed {
                    handle,
                    failure: FileFailure::other("a server has no shared directory"),
                })
            }
        }
    }

    /// The bytes of a read answered [`FileAnswer::Read`]: as the file was
    /// when the read was carried out.
    pub fn read(&mut self, handle: u64, offset: u64, len: usize) -> Result<&[u8], FileFailure> {
        self.reads.read(handle, offset, len)
    }
}

/// Reads carried out and not yet fed: the file as it was, per handle, in
/// the order asked (answers are fed in that order).
#[derive(Default)]
pub struct Reads {
    pending: BTreeMap<u64, VecDeque<Arc<[u8]>>>,
    /// The read being fed.
    reading: Option<Arc<[u8]>>,
}

impl Reads {
    /// A read of `file` as it is now, carried out for `handle`.
    pub fn open(&mut self, handle: u64, file: Arc<[u8]>) {
        self.pending.entry(handle).or_default().push_back(file);
    }

    /// The bytes of `handle`'s oldest read not yet fed.
    pub fn read(&mut self, handle: u64, offset: u64, len: usize) -> Result<&[u8], FileFailure> {
        let file = self.pending.get_mut(&handle).and_then(|q| q.pop_front());
        if self.pending.get(&handle).is_some_and(|q| q.is_empty()) {
            self.pending.remove(&handle);
        }
        let Some(file) = file else {
            return Err(FileFailure::other(format!(
                "read handle {handle} was never opened"
            )));
        };
        Ok(slice(self.reading.insert(file), offset, len))
    }
}

pub(crate) fn no_space(temp: u64) -> FileFailure {
    FileFailure::no_space(format!(
        "cannot write temporary file {temp}: no space left on device"
    ))
}

/// `len` bytes of `file` at `offset`, fewer at its end.
pub fn slice(file: &[u8], offset: u64, len: usize) -> &[u8] {
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(file.len());
    let end = start.saturating_add(len).min(file.len());
    &file[start..end]
}

/// Writes `data` at `offset` of `file`, growing it (with zeros in a gap).
pub fn write_at(file: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let o = usize::try_from(offset).unwrap_or(usize::MAX);
    if file.len() < o {
        file.resize(o, 0);
    }
    let inside = data.len().min(file.len() - o);
    file[o..o + inside].copy_from_slice(&data[..inside]);
    file.extend_from_slice(&data[inside..]);
}

pub fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// The first four bytes of a digest, in hex, for traces.
pub fn short(d: &[u8; 32]) -> String {
    hex(&d[..4])
}
