//! The simulation's disks: what the simulated world carries a node's
//! [`FileOp`]s out on.
//!
//! - A server's disk is the core's in-memory one,
//!   [`MemDisk`](ferry_core::host::mem_disk::MemDisk) (here [`Disk`]): blobs
//!   named by their BLAKE3 digest and numbered temporary files, with the
//!   semantics `ferry-core`'s `io.rs` writes down and the conformance suite
//!   holds every disk to. The harness owns it (`Rc<RefCell<_>>`), not the
//!   host, so it outlives the host's crashes: blobs survive; temporary
//!   files are left behind by a crash and removed when the host starts
//!   again (`Disk::start`), as runtime-smol cleans `DATA/tmp/` at startup.
//!   The start also lists the blobs, for `Recovered::blobs`.
//! - [`LocalFile`], a client's one local file: the source of an upload and
//!   the destination of a download (written through a hidden partial file,
//!   renamed onto the destination by `Persist`, removed by `Discard`).
//! - A peer's shared directory is the core's in-memory one,
//!   [`MemDir`](ferry_core::host::mem_dir::MemDir) (here [`Dir`]): plain
//!   names with their content and modification time (the simulated clock's
//!   when a `Persist` puts a file there), never replaced by a `Persist`,
//!   and numbered temporary files `List` does not show. The harness owns it
//!   ([`SharedDir`]) and puts files in, reads them out and lists them
//!   (`Dir::put`, `Dir::get`, `Dir::list`) as the peer's user would; it
//!   outlives the host's crashes, and `Dir::start` removes the temporary
//!   files a crash left, as runtime-smol cleans `DIR/.ferry-tmp/`.
//!
//! When the work is done — a server's or a peer's writes, persists and
//! removes in one queue behind any `Persist` still in progress, the rest at
//! once — is the simulated world's business (see [`crate::driver`]). Reads are answered
//! with the bytes the file held when the read was carried out, as
//! runtime-smol's descriptor opened at that moment would read them. Blobs
//! change in place only when the harness makes one rot (`Disk::rot`: a
//! flipped bit).
//!
//! Things a correct node never does are answered as runtime-smol answers
//! them and also recorded in `Disk::anomalies` / [`LocalFile::anomalies`],
//! which the scenarios check: a blob persisted under a name that is not the
//! digest of its bytes, a server naming a client's local file or the other
//! way round, a client removing a file.

pub use ferry_core::host::mem_dir::MemDir as Dir;
pub use ferry_core::host::mem_disk::{hex, short, MemDisk as Disk};

/// A file's attributes for a trace: its mode, and its time as Unix
/// seconds and nanoseconds.
pub fn describe_attrs(a: &FileAttrs) -> String {
    format!(
        "mode {:04o}, mtime {}.{:09}",
        a.mode, a.mtime_secs, a.mtime_nanos
    )
}
use ferry_core::host::mem_disk::{slice, write_at};
use ferry_core::{FileAnswer, FileAttrs, FileFailure, FileOp, FileRef, Timestamp};
use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;

pub type SharedDisk = Rc<RefCell<Disk>>;
pub type SharedLocal = Rc<RefCell<LocalFile>>;
pub type SharedDir = Rc<RefCell<Dir>>;

/// A server's disk, to be shared between the harness and the server's
/// incarnations.
pub fn shared_disk() -> SharedDisk {
    Rc::new(RefCell::new(Disk::default()))
}

/// A peer's shared directory, empty, to be shared between the harness and
/// the peer's incarnations.
pub fn shared_dir() -> SharedDir {
    Rc::new(RefCell::new(Dir::default()))
}

/// A node's files, as its world carries them out.
#[derive(Clone)]
pub enum SimFiles {
    Server(SharedDisk),
    Client(SharedLocal),
    Peer(SharedDir),
}

impl SimFiles {
    /// Carries out `op` at `now`: what the node is to be told, if anything,
    /// and a line for the trace when a blob comes or goes or a named file
    /// comes.
    pub fn execute(&self, op: FileOp, now: Timestamp) -> (Option<FileAnswer>, Option<String>) {
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
            SimFiles::Peer(d) => {
                let name = match &op {
                    FileOp::Persist {
                        to: FileRef::Named(n),
                        ..
                    } => Some(n.clone()),
                    _ => None,
                };
                let answer = d.borrow_mut().execute(op, now.as_micros() / 1000);
                let line = match (&answer, name) {
                    (Some(FileAnswer::Persisted { .. }), Some(n)) => {
                        let size = d.borrow().get(&n).map_or(0, <[u8]>::len);
                        Some(format!("{n} in the shared directory ({size} bytes)"))
                    }
                    _ => None,
                };
                (answer, line)
            }
        }
    }

    /// The bytes of a read answered `FileAnswer::Read`, as the file was
    /// when the read was carried out; copied into `buf`, which the node
    /// reads from.
    pub fn read(
        &self,
        handle: u64,
        offset: u64,
        len: usize,
        buf: &mut Vec<u8>,
    ) -> Result<(), FileFailure> {
        buf.clear();
        match self {
            SimFiles::Server(d) => buf.extend_from_slice(d.borrow_mut().read(handle, offset, len)?),
            SimFiles::Client(l) => buf.extend_from_slice(l.borrow_mut().read(handle, offset, len)?),
            SimFiles::Peer(d) => buf.extend_from_slice(d.borrow_mut().read(handle, offset, len)?),
        }
        Ok(())
    }

    /// True if `op` must wait for the disk (an `fsync`): `Persist`.
    pub fn is_sync(op: &FileOp) -> bool {
        matches!(op, FileOp::Persist { .. })
    }

    /// True if `op` persists a blob this server's disk holds already (a
    /// name a peer holds is refused, after the `fsync`, as runtime-smol
    /// does when the name is taken while its file is made durable).
    pub fn holds_target(&self, op: &FileOp) -> bool {
        match self {
            SimFiles::Server(d) => d.borrow().holds_target(op),
            SimFiles::Client(_) | SimFiles::Peer(_) => false,
        }
    }
}

/// A client's local files. The harness sets [`LocalFile::sources`] before
/// an upload, clears [`LocalFile::dest`] before a download and sets
/// [`LocalFile::many`] (to nothing received yet) before a batch of
/// downloads, `None` before a single one.
#[derive(Default)]
pub struct LocalFile {
    /// What an upload reads, by read handle: a single upload's file is
    /// handle 0, file `i` of a batch (`UploadMany`) handle `i`, as
    /// runtime-smol's `Files::sources` serves them.
    pub sources: Vec<Arc<[u8]>>,
    /// The hidden partial file of a download in progress.
    pub partial: Option<Vec<u8>>,
    /// The downloaded file, once persisted.
    pub dest: Option<Arc<[u8]>>,
    /// The attributes the download in progress was given (`SetAttrs`).
    pub partial_attrs: Option<FileAttrs>,
    /// The downloaded file's, once persisted.
    pub dest_attrs: Option<FileAttrs>,
    /// A batch of downloads (`DownloadMany`) in progress: file `i`
    /// written through temporary handle `i` and persisted to a
    /// destination of its own, as runtime-smol's `Files::destinations`
    /// does. While it is `None`, every handle is the single download's
    /// (`partial` and `dest`).
    pub many: Option<ManyFiles>,
    pub anomalies: Vec<String>,
    /// Reads carried out and not yet fed: the handle, and its source as
    /// it was.
    reads: VecDeque<(u64, Arc<[u8]>)>,
    reading: Option<Arc<[u8]>>,
}

/// The local files of a batch of downloads, by temporary handle (file `i`
/// of the batch is handle `i`).
#[derive(Clone, Debug, Default)]
pub struct ManyFiles {
    /// Each file's partial file, while it is received.
    pub partials: BTreeMap<u64, Vec<u8>>,
    pub partial_attrs: BTreeMap<u64, FileAttrs>,
    /// Each file's destination, once persisted.
    pub dests: BTreeMap<u64, Arc<[u8]>>,
    pub dest_attrs: BTreeMap<u64, FileAttrs>,
}

impl LocalFile {
    pub fn shared() -> SharedLocal {
        Rc::new(RefCell::new(LocalFile::default()))
    }

    pub fn execute(&mut self, op: FileOp) -> Option<FileAnswer> {
        if let Some(m) = &mut self.many {
            match op {
                FileOp::Write { temp, offset, data } => {
                    write_at(m.partials.entry(temp).or_default(), offset, &data);
                    return None;
                }
                FileOp::SetAttrs { temp, attrs } => {
                    m.partial_attrs.insert(temp, attrs);
                    return None;
                }
                FileOp::Persist {
                    temp,
                    to: FileRef::Local,
                } => {
                    let content = m.partials.remove(&temp).unwrap_or_default();
                    m.dests.insert(temp, content.into());
                    match m.partial_attrs.remove(&temp) {
                        Some(a) => m.dest_attrs.insert(temp, a),
                        None => m.dest_attrs.remove(&temp),
                    };
                    return Some(FileAnswer::Persisted { temp });
                }
                FileOp::Discard { temp } => {
                    m.partials.remove(&temp);
                    m.partial_attrs.remove(&temp);
                    return None;
                }
                other => return self.execute_one(other),
            }
        }
        self.execute_one(op)
    }

    /// [`LocalFile::execute`] outside a batch of downloads: every
    /// temporary handle is the single download's.
    fn execute_one(&mut self, op: FileOp) -> Option<FileAnswer> {
        match op {
            FileOp::Read {
                handle,
                file: FileRef::Local,
                offset,
                len,
            } => match self.sources.get(handle as usize) {
                Some(source) => {
                    self.reads.push_back((handle, source.clone()));
                    Some(FileAnswer::Read {
                        handle,
                        offset,
                        len,
                    })
                }
                None => {
                    self.anomalies.push(format!(
                        "a client read handle {handle} of {} local file(s)",
                        self.sources.len()
                    ));
                    Some(FileAnswer::Failed {
                        handle,
                        failure: FileFailure::other(format!("no local file {handle}")),
                    })
                }
            },
            // The kept part of a download, read back to resume it.
            FileOp::Read {
                handle,
                file: FileRef::Temp(_),
                offset,
                len,
            } => Some(match &self.partial {
                Some(partial) => {
                    self.reads.push_back((handle, partial.as_slice().into()));
                    FileAnswer::Read {
                        handle,
                        offset,
                        len,
                    }
                }
                None => FileAnswer::Failed {
                    handle,
                    failure: FileFailure::missing("no partial file"),
                },
            }),
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
                self.dest_attrs = self.partial_attrs.take();
                Some(FileAnswer::Persisted { temp })
            }
            FileOp::Discard { .. } => {
                self.partial = None;
                self.partial_attrs = None;
                None
            }
            FileOp::Read { handle, file, .. } => {
                self.anomalies.push(format!("a client read {file:?}"));
                Some(FileAnswer::Failed {
                    handle,
                    failure: FileFailure::other(format!("{file:?} is not a file this node has")),
                })
            }
            FileOp::Persist { temp, to } => {
                self.anomalies
                    .push(format!("a client persisted its download as {to:?}"));
                Some(FileAnswer::Failed {
                    handle: temp,
                    failure: FileFailure::other(format!("{to:?} is not a file this node has")),
                })
            }
            FileOp::Remove { file } => {
                self.anomalies.push(format!("a client removed {file:?}"));
                None
            }
            FileOp::SetModified { temp, .. } => {
                self.anomalies
                    .push(format!("a client set a modification time on {temp}"));
                None
            }
            FileOp::SetAttrs { attrs, .. } => {
                self.partial_attrs = Some(attrs);
                None
            }
            FileOp::Rename { handle, .. } => {
                self.anomalies.push("a client renamed a file".into());
                Some(FileAnswer::Failed {
                    handle,
                    failure: FileFailure::other("a client shares no directory"),
                })
            }
            FileOp::Space { handle } => {
                self.anomalies
                    .push("a client asked for the free space".into());
                Some(FileAnswer::Space { handle, free: None })
            }
            FileOp::List { handle } => {
                self.anomalies.push("a client listed a directory".into());
                Some(FileAnswer::Failed {
                    handle,
                    failure: FileFailure::other("a client shares no directory"),
                })
            }
        }
    }

    /// The bytes of a read answered `FileAnswer::Read`.
    pub fn read(&mut self, handle: u64, offset: u64, len: usize) -> Result<&[u8], FileFailure> {
        match self.reads.pop_front() {
            Some((h, file)) if h == handle => Ok(slice(self.reading.insert(file), offset, len)),
            Some((h, _)) => {
                // The world feeds reads in the order it carried them out.
                (self.anomalies).push(format!("read {h} fed as read {handle}"));
                Err(FileFailure::other("a read fed out of order"))
            }
            None => Err(FileFailure::other("a read that was never opened")),
        }
    }
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
                handle,
                offset,
                len,
            }) => assert_eq!(d.read(handle, offset, len), Ok(&[8, 9][..])),
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
                handle,
                offset,
                len,
            }) => assert_eq!(
                d.read(handle, offset, len),
                Ok(&b[..]),
                "read before the rot"
            ),
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
    fn read_handle_i_reads_file_i_of_a_batch() {
        let files = SimFiles::Client(LocalFile::shared());
        let SimFiles::Client(l) = &files else {
            unreachable!()
        };
        l.borrow_mut().sources = vec![b"zero".to_vec().into(), b"one!".to_vec().into()];
        let read = |handle| FileOp::Read {
            handle,
            file: FileRef::Local,
            offset: 1,
            len: 3,
        };
        let at = Timestamp::from_micros(0);
        let mut buf = Vec::new();
        // Carried out in one order, fed in the same order.
        for h in [1, 0] {
            let (answer, _) = files.execute(read(h), at);
            assert!(matches!(answer, Some(FileAnswer::Read { handle, .. }) if handle == h));
        }
        files.read(1, 1, 3, &mut buf).expect("file 1");
        assert_eq!(buf, b"ne!");
        files.read(0, 1, 3, &mut buf).expect("file 0");
        assert_eq!(buf, b"ero");
        // A handle past the batch: refused, and never a correct client's.
        let (answer, _) = files.execute(read(2), at);
        assert!(matches!(answer, Some(FileAnswer::Failed { handle: 2, .. })));
        assert_eq!(l.borrow().anomalies.len(), 1);
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

    #[test]
    fn a_batch_of_downloads_persists_file_i_to_destination_i() {
        let mut l = LocalFile {
            many: Some(ManyFiles::default()),
            ..LocalFile::default()
        };
        let write = |temp, data: &[u8]| FileOp::Write {
            temp,
            offset: 0,
            data: data.to_vec(),
        };
        let persist = |temp| FileOp::Persist {
            temp,
            to: FileRef::Local,
        };
        l.execute(write(1, b"one"));
        l.execute(write(0, b"zero"));
        l.execute(write(2, b"two"));
        let attrs = FileAttrs {
            mtime_secs: 7,
            mtime_nanos: 0,
            mode: 0o600,
        };
        l.execute(FileOp::SetAttrs { temp: 1, attrs });
        assert_eq!(
            l.execute(persist(1)),
            Some(FileAnswer::Persisted { temp: 1 })
        );
        l.execute(FileOp::Discard { temp: 2 });
        // An empty file has no write: persisted empty all the same.
        l.execute(persist(3));
        let m = l.many.as_ref().expect("a batch");
        assert_eq!(m.dests.get(&1).map(|d| &d[..]), Some(&b"one"[..]));
        assert_eq!(m.dest_attrs.get(&1), Some(&attrs));
        assert_eq!(m.dests.get(&3).map(|d| d.len()), Some(0));
        assert!(!m.dests.contains_key(&0) && !m.dests.contains_key(&2));
        assert_eq!(m.partials.keys().collect::<Vec<_>>(), [&0]);
        // The single download's file is left alone.
        assert!(l.dest.is_none() && l.partial.is_none());
        assert!(l.anomalies.is_empty());
    }

    #[test]
    fn a_peer_file_takes_the_simulated_time_and_is_traced_once_in_place() {
        let dir = shared_dir();
        let files = SimFiles::Peer(dir.clone());
        let at = Timestamp::from_micros(1_800_000_000_123_000);
        let write = FileOp::Write {
            temp: 4,
            offset: 0,
            data: b"abc".to_vec(),
        };
        assert_eq!(files.execute(write, at), (None, None));
        let persist = || FileOp::Persist {
            temp: 4,
            to: FileRef::Named("notes.txt".into()),
        };
        let (answer, line) = files.execute(persist(), at);
        assert_eq!(answer, Some(FileAnswer::Persisted { temp: 4 }));
        assert_eq!(
            line.as_deref(),
            Some("notes.txt in the shared directory (3 bytes)")
        );
        assert_eq!(dir.borrow().list()[0].modified_ms, 1_800_000_000_123);
        // Once there, never replaced: no line for a refused persist.
        let (answer, line) = files.execute(persist(), at);
        assert!(matches!(answer, Some(FileAnswer::Failed { handle: 4, .. })));
        assert_eq!(line, None);
        assert_eq!(dir.borrow().get("notes.txt"), Some(&b"abc"[..]));
    }
}
