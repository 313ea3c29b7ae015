//! In-memory disks for the simulation: what the driver executes a node's
//! [`FileOp`]s against.
//!
//! - [`Disk`], a server's: blobs named by their BLAKE3 digest and numbered
//!   temporary files. The harness owns it (`Rc<RefCell<_>>`), not the host,
//!   so it outlives the host's crashes: blobs survive; temporary files are
//!   left behind by a crash and removed when the host starts again
//!   ([`Disk::start`]), as runtime-smol cleans `DATA/tmp/` at startup. The
//!   start also lists the blobs, for `Recovered::blobs`.
//! - [`LocalFile`], a client's one local file: the source of an upload and
//!   the destination of a download (written through a hidden partial file,
//!   renamed onto the destination by `Persist`, removed by `Discard`).
//!
//! The semantics are runtime-smol's (`runtime-smol/src/files.rs`), and so is
//! the order: the driver executes a server's writes, persists and removes
//! in one queue, behind any `Persist` still in progress, and the rest at
//! once (see [`crate::driver`]). A `Write` creates its temporary file and
//! writes (these writes never fail); `Persist` moves the temporary file
//! into place (a never-written one becomes an empty file; a blob already
//! there is kept and the copy dropped) and answers `FilePersisted`;
//! `Discard` and `Remove` answer nothing; a `Read` of a missing file
//! answers `FileFailed`, a read past the end answers fewer bytes. Reads are
//! answered with the bytes the file held when the read was executed, as
//! runtime-smol's descriptor opened at that moment would read them. Blobs
//! change in place only when the harness makes one rot ([`Disk::rot`]: a
//! flipped bit).
//!
//! Things a correct node never does are answered as runtime-smol answers
//! them and also recorded in [`Disk::anomalies`] / [`LocalFile::anomalies`],
//! which the scenarios check: a blob persisted under a name that is not the
//! digest of its bytes, a server naming a client's local file or the other
//! way round, a client removing a file.

use ferry_core::{FileOp, FileRef};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::rc::Rc;
use std::sync::Arc;

pub type SharedDisk = Rc<RefCell<Disk>>;
pub type SharedLocal = Rc<RefCell<LocalFile>>;

/// What an executed operation has to say back to the node; the driver feeds
/// it back after the drain, in the order operations were executed (like
/// `Persisted`; see [`crate::driver`]).
#[derive(Clone, Debug)]
pub enum FileAnswer {
    Read {
        handle: u64,
        offset: u64,
        /// The whole file as it was when the read was executed, and the
        /// part of it read.
        file: Arc<[u8]>,
        start: usize,
        end: usize,
    },
    Persisted {
        temp: u64,
    },
    Failed {
        handle: u64,
        error: String,
        no_space: bool,
        /// As runtime-smol's `ENOENT`: the file is not there.
        missing: bool,
    },
}

impl FileAnswer {
    fn failed(handle: u64, error: String) -> Self {
        FileAnswer::Failed {
            handle,
            error,
            no_space: false,
            missing: false,
        }
    }

    fn read(handle: u64, offset: u64, len: usize, file: Arc<[u8]>) -> Self {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(file.len());
        let end = start.saturating_add(len).min(file.len());
        FileAnswer::Read {
            handle,
            offset,
            file,
            start,
            end,
        }
    }
}

/// A node's files, as its driver executes them.
#[derive(Clone)]
pub enum SimFiles {
    Server(SharedDisk),
    Client(SharedLocal),
}

impl SimFiles {
    /// Carries out `op`: what the node is to be told, if anything, and a
    /// line for the trace when a blob comes or goes.
    pub fn execute(&self, op: FileOp) -> (Option<FileAnswer>, Option<String>) {
        match self {
            SimFiles::Server(d) => {
                let line = match &op {
                    FileOp::Remove {
                        file: FileRef::Blob(b),
                    } if d.borrow().blobs.contains_key(b) => {
                        Some(format!("blob {} removed from disk", short(b)))
                    }
                    _ => None,
                };
                let persisted = match &op {
                    FileOp::Persist {
                        to: FileRef::Blob(b),
                        ..
                    } => Some(*b),
                    _ => None,
                };
                let answer = d.borrow_mut().execute(op);
                let line = line.or_else(|| {
                    let b = persisted?;
                    let size = d.borrow().blobs.get(&b).map_or(0, |c| c.len());
                    Some(format!("blob {} on disk ({size} bytes)", short(&b)))
                });
                (answer, line)
            }
            SimFiles::Client(l) => (l.borrow_mut().execute(op), None),
        }
    }

    /// True if `op` must wait for the disk (an `fsync`): `Persist`.
    pub fn is_sync(op: &FileOp) -> bool {
        matches!(op, FileOp::Persist { .. })
    }

    /// True if `op` persists a blob this server's disk holds already.
    pub fn holds_target(&self, op: &FileOp) -> bool {
        match (self, op) {
            (
                SimFiles::Server(d),
                FileOp::Persist {
                    to: FileRef::Blob(b),
                    ..
                },
            ) => d.borrow().blobs.contains_key(b),
            _ => false,
        }
    }
}

/// A server's disk. See the module docs.
#[derive(Default)]
pub struct Disk {
    pub blobs: BTreeMap<[u8; 32], Arc<[u8]>>,
    pub temps: BTreeMap<u64, Vec<u8>>,
    /// Things a correct server never asks for (see the module docs).
    pub anomalies: Vec<String>,
    /// Blobs persisted (from uploads and fetches) and removed, over all
    /// incarnations.
    pub persisted: u64,
    pub removed: u64,
}

impl fmt::Debug for Disk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Disk")
            .field("blobs", &self.blobs.len())
            .field("temps", &self.temps.keys().collect::<Vec<_>>())
            .field("anomalies", &self.anomalies)
            .finish()
    }
}

impl Disk {
    pub fn shared() -> SharedDisk {
        Rc::new(RefCell::new(Disk::default()))
    }

    /// What a starting server does with its disk: remove the temporary files
    /// a crash left behind, and list the blobs (sorted) for
    /// `Recovered::blobs`. Returns the blobs and how many temporary files
    /// were removed.
    pub fn start(&mut self) -> (Vec<[u8; 32]>, usize) {
        let leftover = self.temps.len();
        self.temps.clear();
        (self.blobs.keys().copied().collect(), leftover)
    }

    /// Flips bit `bit` of blob `d` where it lies, as a disk that rots:
    /// reads executed from now on see the damage, reads already executed
    /// keep what they read. Returns the damaged content (a new allocation,
    /// so a copy fetched again later is told from it by `Arc::ptr_eq`);
    /// `None` if there is no such blob or no such bit.
    pub fn rot(&mut self, d: &[u8; 32], bit: u64) -> Option<Arc<[u8]>> {
        let blob = self.blobs.get_mut(d)?;
        let byte = usize::try_from(bit / 8).ok().filter(|&i| i < blob.len())?;
        let mut bytes = blob.to_vec();
        bytes[byte] ^= 1 << (bit % 8);
        let rotten: Arc<[u8]> = bytes.into();
        *blob = rotten.clone();
        Some(rotten)
    }

    pub fn execute(&mut self, op: FileOp) -> Option<FileAnswer> {
        match op {
            FileOp::Read {
                handle,
                file: FileRef::Blob(d),
                offset,
                len,
            } => Some(match self.blobs.get(&d) {
                Some(b) => FileAnswer::read(handle, offset, len, b.clone()),
                None => FileAnswer::Failed {
                    handle,
                    error: format!("cannot open blob {}: no such file", hex(&d)),
                    no_space: false,
                    missing: true,
                },
            }),
            FileOp::Write { temp, offset, data } => {
                write_at(self.temps.entry(temp).or_default(), offset, &data);
                None
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
                // runtime-smol keeps a blob already there and drops the
                // copy: a copy that rotted stays rotten until it is removed.
                self.blobs.entry(d).or_insert_with(|| content.into());
                self.persisted += 1;
                Some(FileAnswer::Persisted { temp })
            }
            FileOp::Discard { temp } => {
                self.temps.remove(&temp);
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
                Some(FileAnswer::failed(
                    handle,
                    format!("{file:?} is not a file this node has"),
                ))
            }
            FileOp::Persist { temp, to } => {
                self.anomalies.push(format!(
                    "a server persisted temporary file {temp} as {to:?}"
                ));
                self.temps.remove(&temp);
                Some(FileAnswer::failed(
                    temp,
                    format!("{to:?} is not a file this node has"),
                ))
            }
            FileOp::Remove { file } => {
                self.anomalies.push(format!("a server removed {file:?}"));
                None
            }
        }
    }
}

/// A client's one local file. The harness sets [`LocalFile::source`] before
/// an upload and clears [`LocalFile::dest`] before a download.
#[derive(Default)]
pub struct LocalFile {
    /// What an upload reads.
    pub source: Arc<[u8]>,
    /// The hidden partial file of a download in progress.
    pub partial: Option<Vec<u8>>,
    /// The downloaded file, once persisted.
    pub dest: Option<Arc<[u8]>>,
    pub anomalies: Vec<String>,
}

impl LocalFile {
    pub fn shared() -> SharedLocal {
        Rc::new(RefCell::new(LocalFile::default()))
    }

    pub fn execute(&mut self, op: FileOp) -> Option<FileAnswer> {
        match op {
            FileOp::Read {
                handle,
                file: FileRef::Local,
                offset,
                len,
            } => Some(FileAnswer::read(handle, offset, len, self.source.clone())),
            FileOp::Write { offset, data, .. } => {
                write_at(self.partial.get_or_insert_with(Vec::new), offset, &data);
                None
            }
            FileOp::Persist {
                temp,
                to: FileRef::Local,
            } => {
                let content = self.partial.take().unwrap_or_default();
                self.dest = Some(content.into());
                Some(FileAnswer::Persisted { temp })
            }
            FileOp::Discard { .. } => {
                self.partial = None;
                None
            }
            FileOp::Read { handle, file, .. } => {
                self.anomalies.push(format!("a client read {file:?}"));
                Some(FileAnswer::failed(
                    handle,
                    format!("{file:?} is not a file this node has"),
                ))
            }
            FileOp::Persist { temp, to } => {
                self.anomalies
                    .push(format!("a client persisted its download as {to:?}"));
                Some(FileAnswer::failed(
                    temp,
                    format!("{to:?} is not a file this node has"),
                ))
            }
            FileOp::Remove { file } => {
                self.anomalies.push(format!("a client removed {file:?}"));
                None
            }
        }
    }
}

/// Writes `data` at `offset` of `file`, which grows as needed (a gap is
/// zeros). Appends, the usual case, are copied once: no zeroing first,
/// which unoptimized builds do a byte at a time (a sweep moves gigabytes).
fn write_at(file: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let o = usize::try_from(offset).expect("a simulated file fits in memory");
    if file.len() < o {
        file.resize(o, 0);
    }
    let inside = data.len().min(file.len() - o);
    file[o..o + inside].copy_from_slice(&data[..inside]);
    file.extend_from_slice(&data[inside..]);
}

/// Lower-case hex of a digest.
pub fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// The first four bytes of a digest, in hex, for traces.
pub fn short(d: &[u8; 32]) -> String {
    hex(&d[..4])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(b: &[u8]) -> [u8; 32] {
        *blake3::hash(b).as_bytes()
    }

    #[test]
    fn blobs_survive_a_restart_and_temporary_files_do_not() {
        let mut d = Disk::default();
        let content = b"hello".to_vec();
        let w = |temp, data: &[u8]| FileOp::Write {
            temp,
            offset: 0,
            data: data.to_vec(),
        };
        assert!(d.execute(w(1, &content)).is_none());
        let to = FileRef::Blob(digest(&content));
        assert!(matches!(
            d.execute(FileOp::Persist { temp: 1, to }),
            Some(FileAnswer::Persisted { temp: 1 })
        ));
        d.execute(w(2, b"half"));
        let (blobs, leftover) = d.start();
        assert_eq!(blobs, vec![digest(&content)]);
        assert_eq!(leftover, 1);
        assert!(d.temps.is_empty() && d.anomalies.is_empty());
    }

    #[test]
    fn reads_answer_what_the_file_held_and_missing_blobs_fail() {
        let mut d = Disk::default();
        let b: Vec<u8> = (0..10).collect();
        d.blobs.insert(digest(&b), b.clone().into());
        let read = |d: &mut Disk, offset, len| {
            d.execute(FileOp::Read {
                handle: 3,
                file: FileRef::Blob(digest(&b)),
                offset,
                len,
            })
        };
        match read(&mut d, 8, 4) {
            Some(FileAnswer::Read {
                file, start, end, ..
            }) => assert_eq!(&file[start..end], &[8, 9]),
            other => panic!("{other:?}"),
        }
        d.execute(FileOp::Remove {
            file: FileRef::Blob(digest(&b)),
        });
        assert!(matches!(
            read(&mut d, 0, 4),
            Some(FileAnswer::Failed { handle: 3, .. })
        ));
    }

    #[test]
    fn a_rotten_blob_reads_damaged_and_a_second_persist_keeps_it() {
        let mut d = Disk::default();
        let b: Vec<u8> = (0..10).collect();
        let name = digest(&b);
        d.blobs.insert(name, b.clone().into());
        let before = d.execute(FileOp::Read {
            handle: 1,
            file: FileRef::Blob(name),
            offset: 0,
            len: 10,
        });
        assert!(d.rot(&name, 8 * 10).is_none(), "no such bit");
        assert!(d.rot(&[0; 32], 0).is_none(), "no such blob");
        let rotten = d.rot(&name, 8 * 3 + 1).expect("a bit of the blob");
        assert_eq!(rotten[3], 3 ^ 2);
        match before {
            Some(FileAnswer::Read {
                file, start, end, ..
            }) => assert_eq!(&file[start..end], &b[..], "read before the rot"),
            other => panic!("{other:?}"),
        }
        // The same content uploaded again: runtime-smol keeps the blob
        // there, rotten or not.
        d.execute(FileOp::Write {
            temp: 2,
            offset: 0,
            data: b.clone(),
        });
        d.execute(FileOp::Persist {
            temp: 2,
            to: FileRef::Blob(name),
        });
        assert!(Arc::ptr_eq(&d.blobs[&name], &rotten));
        assert!(d.temps.is_empty() && d.anomalies.is_empty());
    }

    #[test]
    fn writes_land_where_they_are_asked_to() {
        let mut f = Vec::new();
        write_at(&mut f, 0, b"abc");
        write_at(&mut f, 3, b"de");
        assert_eq!(f, b"abcde");
        write_at(&mut f, 1, b"XYZW");
        assert_eq!(f, b"aXYZW");
        write_at(&mut f, 2, b"12345");
        assert_eq!(f, b"aX12345");
        write_at(&mut f, 9, b"!");
        assert_eq!(f, b"aX12345\0\0!");
    }

    #[test]
    fn a_blob_named_by_another_digest_is_an_anomaly() {
        let mut d = Disk::default();
        d.execute(FileOp::Write {
            temp: 1,
            offset: 0,
            data: b"x".to_vec(),
        });
        d.execute(FileOp::Persist {
            temp: 1,
            to: FileRef::Blob([0; 32]),
        });
        assert_eq!(d.anomalies.len(), 1);
    }

    #[test]
    fn a_download_becomes_visible_only_when_persisted() {
        let mut l = LocalFile::default();
        l.execute(FileOp::Write {
            temp: 0,
            offset: 0,
            data: b"abc".to_vec(),
        });
        assert!(l.dest.is_none());
        l.execute(FileOp::Persist {
            temp: 0,
            to: FileRef::Local,
        });
        assert_eq!(l.dest.as_deref(), Some(&b"abc"[..]));
        l.execute(FileOp::Write {
            temp: 0,
            offset: 0,
            data: b"zz".to_vec(),
        });
        l.execute(FileOp::Discard { temp: 0 });
        assert!(l.partial.is_none());
        assert_eq!(l.dest.as_deref(), Some(&b"abc"[..]));
    }
}
