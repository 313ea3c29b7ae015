//! The file executor: carries out a node's [`FileOp`]s against the local
//! disk, in output order; what waits for the disk is done on a thread of
//! its own (see *The writer thread*).
//!
//! Three roles, chosen when the executor is made:
//!
//! - **Server** ([`Files::server`]): content lives in `DIR/blobs/<hex
//!   digest>`, temporary files in `DIR/tmp/<n>`. At startup leftover
//!   temporary files (from a crash mid-upload) are deleted and `blobs/` is
//!   listed, so the node learns which blobs it holds
//!   (`Recovered::blobs`). Names that are not 64 hex digits are ignored.
//! - **Client**: `FileRef::Local` is the command's one file. For an upload
//!   it is the source ([`Files::source`], or [`Files::source_file`]: open
//!   already, with the size the upload offered), only read. For a
//!   download ([`Files::destination`]) writes go to an unnamed temporary
//!   file in the destination's directory, which `Persist` links in; see
//!   *The client's disk*.
//!
//! **The client's disk** (`files/local.rs`; docs/security.md lists the
//! promises and their tests). A download's temporary file is made with
//! `O_TMPFILE` in the destination's directory: nothing there shows it,
//! and it goes with its descriptor however the process ends, `kill -9`
//! included. Its persist `fsync`s it and links it in (`linkat` of
//! `/proc/self/fd/N`, `AT_SYMLINK_FOLLOW`, which needs no privilege),
//! which fails if the name is taken: without `--force` nothing is ever
//! replaced, not even a file put there during the download. With
//! `--force` (`Existing::ReplaceRegular`) the destination is looked at
//! without following a link (`lstat`): a regular file or a symbolic link
//! may be replaced, anything else (directory, FIFO, socket, device) is
//! refused. The new file takes a replaced file's owner and mode (`fchown`
//! then `fchmod` before the `fsync`; set-ID bits are not carried over; a
//! process that may not give it that owner fails rather than change the
//! file's hands), is linked in under the hidden `.NAME.ferry-partial-PID`,
//! the destination is looked at again, and the hidden name is renamed
//! onto it (a rename replaces the directory entry, a link included, and
//! never writes through it). Where the filesystem has no `O_TMPFILE`
//! (`EOPNOTSUPP`, `EISDIR`, `EINVAL`) or `/proc` is not mounted, the
//! download writes the named `.NAME.ferry-partial-PID` (created anew,
//! never through a link), renamed into place (`renameat2` with
//! `RENAME_NOREPLACE` without `--force`); one left by a `kill -9` is
//! removed by the next `get` into that directory, once its process is
//! gone ([`local::remove_stale_partials`]). A crash before the persist's
//! answer leaves nothing visible at the destination that was not there
//! before (a crash between the link and the rename of a replacement
//! leaves the complete file under its hidden name, removed the same way).
//! An upload of a file whose size is not known in advance (a pipe, a
//! `/proc` file) is first copied to its end into an unnamed file of the
//! system's temporary directory ([`local::spool`]), which is sent; one
//! whose size changes while it is sent fails at its last block
//! ([`CHANGED_WHILE_SENT`]), and the command then sends a copy.
//! `SetAttrs` (a download's attributes, which the user keeps) notes a
//! modification time and permission bits for the download, which its
//! persist sets on the file (`fchmod`, then `futimens`, before the `fsync`
//! and the link), so the name shows them from the moment it appears. The
//! mode is set as it came (within `0o777`), whatever the umask: it is the
//! source file's, as `cp -p` keeps it; but a regular file replaced keeps
//! its own mode (above), and takes only the time.
//! - **Peer** ([`Files::shared_dir`]): `FileRef::Named` is a plain name in
//!   the one directory the peer shares, `DIR`; temporary files are in
//!   `DIR/.ferry-tmp/<n>` (on the same filesystem, so the link into place
//!   is atomic; a directory, so `List` does not show them), created and
//!   emptied of a crash's leftovers at startup. A `Read` opens only a
//!   regular file, never through a link (`O_NOFOLLOW`), and never waits on
//!   a FIFO (looked at with `lstat` first, opened `O_NONBLOCK`, `fstat`ed
//!   after). `Persist` never replaces a file: it links the temporary file
//!   in under its name (`link`, which fails if the name is taken, however
//!   it came to be taken) and removes the temporary file, whatever the
//!   answer. `SetModified` notes a time for the temporary file, which its
//!   persist sets on the file (`futimens`) before the `fsync` and the
//!   link: a copy keeps its original's time, and as the time is the
//!   inode's, not the name's, the name shows it from the moment it
//!   appears. `Rename` never replaces either: `renameat2` with
//!   `RENAME_NOREPLACE`, which the kernel refuses if the name is taken,
//!   or where a filesystem cannot (`EINVAL`, `ENOSYS`) a link under the
//!   new name and an unlink of the old; then an `fsync` of the directory.
//!   Only a regular file is renamed (`lstat`, when the rename is carried
//!   out): a link, its target and the temporary files' directory are
//!   never moved. `List` reads the directory (`lstat` of each entry:
//!   regular files only). Names that are not plain
//!   ([`ferry_core::io::is_plain_name`]) are refused before anything is
//!   touched. A server and a client share no directory: a `Rename` fails,
//!   and a `SetModified` fails the file's persist.
//!
//! **Semantics.** `Write` creates the temporary file on its first write;
//! its bytes reach the file by the time of the `Persist` (see *Fewer
//! system calls* and *The writer thread*). `Persist` makes the temporary
//! file durable (`fsync`), renames it into place and makes the rename
//! durable (`fsync` of the directory); a temporary file that was never
//! written (a zero-byte file) is created empty first. `Discard` removes a
//! temporary file, `Remove` a blob. Persisting a blob that is already there
//! (the same content uploaded again) keeps the one there and drops the
//! copy, without waiting for it to reach the disk. Failures are reported
//! as `FileFailed`, with `no_space` set for a full disk (`ENOSPC`) or an
//! exhausted quota (`EDQUOT`); nothing here panics.
//!
//! **A server's persist does not stop its node.** The `fsync` of a large
//! file takes seconds, and a server's node has heartbeats to send, other
//! sessions to serve and, on the master, the cluster's log to order. So a
//! server's `Persist` is queued on the writer thread behind the file's
//! writes, [`Files::execute`] returns at once, and `FilePersisted` (or
//! `FileFailed`) comes from [`Files::take_answer`] when the disk is done;
//! the writer thread wakes the driver for it. A `Remove` is queued the same
//! way, so it never overtakes a persist asked for before it. A temporary
//! file's number is not free again until its persist is answered. A
//! client's `Persist` still waits (its one transfer has nothing else to
//! do, and none of its timers should run out while its own disk works). A
//! peer's `Persist` and `Remove` are a server's: it has several transfers
//! at once, on several connections, which a wait would stall. A peer's
//! `Rename` goes the same way, in the same queue, so that it finds the
//! file a persist asked for before it put there (and never overtakes it),
//! and its `Renamed` comes from [`Files::take_answer`] in turn.
//!
//! **Reads are answered late.** A `Read` opens its file at once (so a blob
//! removed later in the same drain can still be read through the open
//! descriptor), but the `pread` happens only when the driver feeds the
//! answer back: into reused buffers, so no read allocates and the bytes are
//! copied once, from the page cache to the buffer the node reads from.
//!
//! **Fewer system calls.** A stop-and-wait transfer moves 4 KiB at a time,
//! and a `pread` or `pwrite` per chunk cost more than the copy. So:
//!
//! - A read smaller than 256 KiB reads 256 KiB ahead (one `pread`), and the
//!   next reads of the same handle are served from that buffer while they
//!   fall in it. A buffer belongs to one opening of one file: it goes when
//!   the handle is closed or reopened, and when a `Persist` puts a new file
//!   in the place of the one it was read from. At most 8 such buffers are
//!   kept (2 MiB), the least recently used reused first.
//! - Contiguous writes under 64 KiB to a temporary file are gathered, up
//!   to 256 KiB, and handed on as one write when full, before a write that
//!   does not continue them, and at `Persist` (`Discard` just drops them).
//!   At most 16 files gather at once (4 MiB); writes to others are handed
//!   on as they come.
//!
//! **The writer thread.** Copying bytes into the page cache is the largest
//! cost of receiving a file, so the writes are made on a thread of the
//! executor's own (`files/writer.rs`), in order, at most 4 MiB in flight,
//! while the driver goes on with the transfer. A write that fails there is
//! reported as `FileFailed` for its temporary file (with `no_space` for a
//! full disk), once: the writer thread wakes the driver, which asks
//! [`Files::take_answer`]; the next `Write` of the file reports it too,
//! and its `Persist` fails with the file's first failure. So no file with
//! a hole is ever persisted. A `Discard` unlinks the temporary file at
//! once (writes still queued land in the unlinked file) and forgets its
//! failures, which are never taken for a later file of the same number.
//!
//! **Write-behind.** A temporary file asks the kernel to start writing
//! its data to disk (`sync_file_range`, on Linux) every 2 MiB, without
//! waiting (on the writer thread, after the writes of the range). The disk
//! then works while the transfer goes on, and the `fsync` of `Persist`
//! waits only for the tail, not for the whole file (for a large file that
//! wait used to be a third of the transfer). Every 2 MiB rather than 8:
//! with the writes off the driver's thread it costs the transfer nothing,
//! and a durable upload at the default window gained about a tenth.
//!
//! **Open files are cached** per read handle and per temporary file, so a
//! transfer does not reopen its file for every frame. The cache is bounded
//! (least recently used descriptors are closed and reopened on demand); a
//! read handle is also closed once it has read to the end of its file, and
//! a temporary file when it is persisted or discarded.

use buffers::{ReadAhead, WriteBuffers, READ_AHEAD};
use ferry_core::io::{is_plain_name, DirEntry};
use ferry_core::transfer::BLOCK_BYTES;
use ferry_core::FileAttrs;
pub use ferry_core::{FileAnswer, FileFailure};
use ferry_core::{FileOp, FileRef};
use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use writer::{Existing, Finished, Placing, Writer};

/// The directory of blobs under a server's file root.
pub const BLOBS_DIR: &str = "blobs";
/// The directory of temporary files under a server's file root.
pub const TMP_DIR: &str = "tmp";

/// The directory of temporary files inside a peer's shared directory.
pub const SHARED_TMP_DIR: &str = ".ferry-tmp";

/// Open descriptors kept at most.
pub const MAX_OPEN: usize = 128;

/// Written bytes after which a temporary file's writeback is started.
const WRITE_BEHIND: u64 = 2 << 20;

/// What the error of an upload whose file grew or shrank while it was
/// sent says (the sender's own words for a short read say it too): the
/// command then sends a copy read to its end instead.
pub const CHANGED_WHILE_SENT: &str = "changed while it was being sent";

/// The largest read a node may ask for at once.
pub const MAX_READ: usize = 16 << 20;

/// A failed system call on `path`, as the node is told.
pub(crate) fn io_failure(what: &str, path: &Path, e: &io::Error) -> FileFailure {
    FileFailure {
        error: format!("{what} {}: {e}", path.display()),
        no_space: is_no_space(e),
        missing: e.kind() == io::ErrorKind::NotFound,
    }
}

/// A full disk (`ENOSPC`) or an exhausted quota (`EDQUOT`).
pub fn is_no_space(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded)
        || matches!(e.raw_os_error(), Some(ENOSPC) | Some(EDQUOT))
}

const ENOSPC: i32 = 28;
#[cfg(target_os = "linux")]
const EDQUOT: i32 = 122;
#[cfg(not(target_os = "linux"))]
const EDQUOT: i32 = 69;

/// A file a client reads to upload it: opened here by its path, or
/// already open (`file`) with the size the upload offered, which it must
/// still have when its last block is read.
#[derive(Clone, Debug)]
pub struct Source {
    pub path: PathBuf,
    pub file: Option<Arc<File>>,
    pub size: Option<u64>,
}

impl Dest {
    /// A download to `path` through its partial file ([`part_path`]), and
    /// whether a partial file was there to take up (see
    /// [`Files::destination`]).
    fn resumable(path: &Path, replace: bool) -> (Dest, bool) {
        let partial = part_path(path);
        let kept = local::take_up_part(&partial, BLOCK_BYTES).unwrap_or(None);
        let dest = Dest {
            path: path.to_path_buf(),
            partial,
            replace,
            unnamed: false,
            kept: kept.unwrap_or(0),
        };
        (dest, kept.is_some())
    }
}

/// The command's local files, for a client.
#[derive(Clone, Debug)]
enum Local {
    /// Read from this file, whatever the read handle.
    Source(Source),
    /// Read from file `handle` of these (a batch of uploads).
    Sources(Vec<Source>),
    /// Write to this file, whatever the temporary handle.
    Destination(Dest),
    /// Write file `temp` of these (a batch of downloads).
    Destinations(Vec<Dest>),
}

/// Where a download goes: written through an unnamed temporary file in
/// `path`'s directory (`O_TMPFILE`), linked in when persisted; or, where
/// none can be made (or `unnamed` is false), through the named `partial`,
/// renamed onto `path`.
#[derive(Clone, Debug)]
struct Dest {
    path: PathBuf,
    partial: PathBuf,
    replace: bool,
    unnamed: bool,
    /// Bytes the partial file held when taken up, to resume from.
    kept: u64,
}

#[derive(Clone, Debug)]
enum Role {
    Server {
        blobs: PathBuf,
        tmp: PathBuf,
    },
    Client(Local),
    /// A peer's shared directory and its temporary files' directory in it.
    Peer {
        dir: PathBuf,
        tmp: PathBuf,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Key {
    Read(u64),
    Temp(u64),
}

struct Open {
    /// Shared with the writer thread while it writes to it.
    file: Arc<File>,
    /// Unique to this opening, for its read-ahead buffer.
    id: u64,
    /// The file a read handle reads (to close it when that file goes).
    of: Option<FileRef>,
    /// Length of a read handle's file when it was opened.
    len: u64,
    used: u64,
    /// A temporary file's bytes written since writeback was last started,
    /// as a range.
    dirty: Option<(u64, u64)>,
}

/// Executes file operations for one node. See the module docs.
pub struct Files {
    role: Role,
    open: HashMap<Key, Open>,
    /// Temporary files created by this executor (and not yet persisted or
    /// discarded), with the number of their opening; a later open of one of
    /// these must not truncate it.
    created: HashMap<u64, u64>,
    /// Temporary files whose write failed, with the first failure: later
    /// writes are skipped (the node was told once) until the file is
    /// discarded, and its persist fails as that write did (a full disk
    /// stays a full disk, whenever the writer thread's word arrived).
    broken: HashMap<u64, FileFailure>,
    /// Temporary files handed to the writer thread to persist, until it
    /// answers: their names are not free.
    persisting: HashSet<u64>,
    /// A download's temporary files that have no name (`O_TMPFILE`).
    unnamed: HashSet<u64>,
    /// Modification times temporary files are to have once persisted
    /// (`SetModified`), or why they cannot, which fails the persist.
    modified: HashMap<u64, Result<SystemTime, FileFailure>>,
    /// Permission bits a download is to have once persisted (`SetAttrs`).
    modes: HashMap<u64, u32>,
    /// Read handles answered `Read` whose bytes the world has not taken
    /// yet ([`Files::read`]): never closed to stay under [`MAX_OPEN`], or
    /// the read the node was promised would fail (a batch of 256 files in
    /// flight failed half of them so).
    pending: HashSet<u64>,
    clock: u64,
    /// Ids of openings.
    opened: u64,
    buf: Vec<u8>,
    ahead: ReadAhead,
    gathered: WriteBuffers,
    writer: Writer,
}

impl Files {
    fn with_role(role: Role) -> Self {
        Files {
            role,
            open: HashMap::new(),
            created: HashMap::new(),
            broken: HashMap::new(),
            persisting: HashSet::new(),
            unnamed: HashSet::new(),
            modified: HashMap::new(),
            modes: HashMap::new(),
            pending: HashSet::new(),
            clock: 0,
            opened: 0,
            buf: Vec::new(),
            ahead: ReadAhead::default(),
            gathered: WriteBuffers::default(),
            writer: Writer::default(),
        }
    }

    /// A server's files under `root` (created if missing). Deletes leftover
    /// temporary files and returns the digests of the blobs present, for
    /// `Recovered::blobs`.
    pub fn server(root: &Path) -> io::Result<(Files, Vec<[u8; 32]>)> {
        let blobs = root.join(BLOBS_DIR);
        let tmp = root.join(TMP_DIR);
        for dir in [&blobs, &tmp] {
            std::fs::create_dir_all(dir)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
        }
        remove_leftovers(&tmp)?;
        let mut present = Vec::new();
        for entry in read_dir(&blobs)? {
            let name = entry.file_name();
            match name.to_str().and_then(parse_hex) {
                Some(d) if entry.file_type().is_ok_and(|t| t.is_file()) => present.push(d),
                _ => tracing::warn!("ignoring {} (not a blob)", entry.path().display()),
            }
        }
        present.sort_unstable();
        Ok((Files::with_role(Role::Server { blobs, tmp }), present))
    }

    /// A peer sharing directory `dir`, which must exist. Creates its
    /// temporary files' directory in it and removes the temporary files a
    /// crash left there.
    pub fn shared_dir(dir: &Path) -> io::Result<Files> {
        if !std::fs::metadata(dir).map_err(|e| at(dir, e))?.is_dir() {
            return Err(at(dir, ErrorKind::NotADirectory.into()));
        }
        let tmp = dir.join(SHARED_TMP_DIR);
        match std::fs::create_dir(&tmp) {
            Err(e) if e.kind() != ErrorKind::AlreadyExists => return Err(at(&tmp, e)),
            _ => {}
        }
        // Not through a link: the temporary files would be written
        // elsewhere, maybe on another filesystem, where linking them into
        // place fails.
        if !std::fs::symlink_metadata(&tmp)
            .map_err(|e| at(&tmp, e))?
            .is_dir()
        {
            return Err(at(&tmp, ErrorKind::NotADirectory.into()));
        }
        remove_leftovers(&tmp)?;
        let dir = dir.to_path_buf();
        Ok(Files::with_role(Role::Peer { dir, tmp }))
    }

    /// A client whose local file is `path`, to be read (an upload).
    pub fn source(path: &Path) -> Files {
        Files::with_role(Role::Client(Local::Source(Source {
            path: path.to_path_buf(),
            file: None,
            size: None,
        })))
    }

    /// A client uploading `file`, open already, which the upload offered
    /// as `size` bytes (`path` names it in errors). Its size is looked at
    /// again when its last block is read: a file that grew or shrank while
    /// it was sent fails the read with an error saying it
    /// [`CHANGED_WHILE_SENT`], rather than be stored cut short.
    pub fn source_file(path: &Path, file: Arc<File>, size: u64) -> Files {
        Files::with_role(Role::Client(Local::Source(Source {
            path: path.to_path_buf(),
            file: Some(file),
            size: Some(size),
        })))
    }

    /// A client uploading a batch: read handle `i` reads `sources[i]` (as
    /// [`Files::source`] or [`Files::source_file`] would).
    pub fn sources(sources: Vec<Source>) -> Files {
        Files::with_role(Role::Client(Local::Sources(sources)))
    }

    /// The source read handle `handle` reads, if this is an upload.
    fn source_of(&self, handle: u64) -> Option<&Source> {
        match &self.role {
            Role::Client(Local::Source(s)) => Some(s),
            Role::Client(Local::Sources(v)) => usize::try_from(handle).ok().and_then(|i| v.get(i)),
            _ => None,
        }
    }

    /// A client whose local file is `path`, to be written (a download)
    /// that can be resumed: through its partial file beside it,
    /// `.NAME.ferry-part` ([`part_path`]), which replaces an existing
    /// `path` only if `replace`. A partial file there already (what an
    /// interrupted download of it left) is cut back to a whole number of
    /// blocks and written on, not over: [`Files::kept`] says how much it
    /// holds, which the node reads back to resume from (`FileRef::Temp`).
    /// Never through a link: one in the partial file's place fails the
    /// download's first write.
    pub fn destination(path: &Path, replace: bool) -> Files {
        let (dest, taken_up) = Dest::resumable(path, replace);
        let mut files = Files::with_role(Role::Client(Local::Destination(dest)));
        if taken_up {
            files.write_on(0);
        }
        files
    }

    /// A client downloading a batch (`DownloadMany`): temporary handle `i`
    /// writes `paths[i].0`, as [`Files::destination`] would (through its
    /// partial file, which replaces an existing file only if `paths[i].1`).
    /// A batch is not resumed: the node writes each file from its start,
    /// and [`Files::kept`] is 0.
    pub fn destinations(paths: &[(PathBuf, bool)]) -> Files {
        let mut taken = Vec::new();
        let dests = (paths.iter().enumerate())
            .map(|(i, (path, replace))| {
                let partial = part_path(path);
                // Emptied: written from its start, it must not keep a tail
                // of what an earlier try left.
                if let Ok(Some(_)) = local::take_up_part(&partial, u64::MAX) {
                    taken.push(i as u64);
                }
                Dest {
                    path: path.clone(),
                    partial,
                    replace: *replace,
                    unnamed: false,
                    kept: 0,
                }
            })
            .collect();
        let mut files = Files::with_role(Role::Client(Local::Destinations(dests)));
        for temp in taken {
            files.write_on(temp);
        }
        files
    }

    /// Temporary file `temp` is opened to write on, not created anew: the
    /// file the command locked (`local::lock_part`) is the one written.
    fn write_on(&mut self, temp: u64) {
        self.opened += 1;
        self.created.insert(temp, self.opened);
    }

    /// Where temporary file `temp` of a download goes.
    fn dest_of(&self, temp: u64) -> Option<&Dest> {
        match &self.role {
            Role::Client(Local::Destination(d)) => Some(d),
            Role::Client(Local::Destinations(v)) => {
                usize::try_from(temp).ok().and_then(|i| v.get(i))
            }
            _ => None,
        }
    }

    /// A client whose local file is `path`, to be written (a download)
    /// that leaves nothing if it does not finish: through an unnamed
    /// temporary file beside it (see *The client's disk*), which replaces
    /// an existing `path` only if `replace`.
    pub fn destination_unnamed(path: &Path, replace: bool) -> Files {
        let partial = partial_path(path);
        Files::with_role(Role::Client(Local::Destination(Dest {
            path: path.to_path_buf(),
            partial,
            replace,
            unnamed: true,
            kept: 0,
        })))
    }

    /// Bytes a download's partial file held when this executor took it up
    /// (see [`Files::destination`]); 0 for anything else.
    pub fn kept(&self) -> u64 {
        match &self.role {
            Role::Client(Local::Destination(d)) => d.kept,
            _ => 0,
        }
    }

    /// A download that writes through its named partial file, as where
    /// the filesystem cannot make an unnamed one (for tests of that road).
    #[cfg(test)]
    pub(crate) fn named_partial(mut self) -> Self {
        if let Role::Client(Local::Destination(d)) = &mut self.role {
            d.unnamed = false;
        }
        self
    }

    /// The named temporary file of a download, if this is one: where it
    /// writes when no unnamed file can be made, and the name the file
    /// takes for a moment before it replaces an existing destination.
    pub fn partial(&self) -> Option<&Path> {
        match &self.role {
            Role::Client(Local::Destination(d)) => Some(&d.partial),
            _ => None,
        }
    }

    /// Descriptors open now (for tests of the bound).
    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// Carries out `op`. Returns what the node is to be told, if anything:
    /// the driver feeds it back after the drain, in order.
    pub fn execute(&mut self, op: FileOp) -> Option<FileAnswer> {
        match op {
            FileOp::Read {
                handle,
                file,
                offset,
                len,
            } => {
                if len > MAX_READ {
                    let failure = FileFailure::other(format!(
                        "a read of {len} bytes is over the limit of {MAX_READ}"
                    ));
                    return Some(FileAnswer::Failed { handle, failure });
                }
                match self.open_read(handle, file) {
                    Ok(()) => {
                        self.pending.insert(handle);
                        Some(FileAnswer::Read {
                            handle,
                            offset,
                            len,
                        })
                    }
                    Err(failure) => Some(FileAnswer::Failed { handle, failure }),
                }
            }
            FileOp::Write { temp, offset, data } => {
                if self.broken.contains_key(&temp) {
                    return None;
                }
                match self.write(temp, offset, data) {
                    Ok(()) => None,
                    Err(failure) => {
                        self.broken.insert(temp, failure.clone());
                        Some(FileAnswer::Failed {
                            handle: temp,
                            failure,
                        })
                    }
                }
            }
            FileOp::Persist { temp, to } => match self.persist(temp, to) {
                Ok(true) => Some(FileAnswer::Persisted { temp }),
                Ok(false) => None,
                Err(failure) => Some(FileAnswer::Failed {
                    handle: temp,
                    failure,
                }),
            },
            FileOp::Discard { temp } => {
                self.discard(temp);
                None
            }
            FileOp::Remove { file } => {
                self.remove(file);
                None
            }
            FileOp::List { handle } => Some(match self.list() {
                Ok(entries) => FileAnswer::Listed { handle, entries },
                Err(failure) => FileAnswer::Failed { handle, failure },
            }),
            FileOp::SetModified { temp, modified_ms } => {
                self.set_modified(temp, modified_ms);
                None
            }
            FileOp::SetAttrs { temp, attrs } => {
                self.set_attrs(temp, attrs);
                None
            }
            FileOp::Rename { handle, from, to } => self
                .rename(handle, from, to)
                .err()
                .map(|failure| FileAnswer::Failed { handle, failure }),
            FileOp::Space { handle } => {
                let dir = match &self.role {
                    Role::Server { blobs, .. } => Some(blobs.as_path()),
                    Role::Peer { dir, .. } => Some(dir.as_path()),
                    Role::Client(_) => None,
                };
                let free = dir.and_then(local::free_space);
                Some(FileAnswer::Space { handle, free })
            }
        }
    }

    /// Reads for a [`FileAnswer::Read`]: up to `len` bytes at `offset`,
    /// fewer only at the end of the file. The bytes stay valid until the
    /// next call.
    pub fn read(&mut self, handle: u64, offset: u64, len: usize) -> Result<&[u8], FileFailure> {
        self.pending.remove(&handle);
        self.clock += 1;
        let clock = self.clock;
        let Some(open) = self.open.get_mut(&Key::Read(handle)) else {
            return Err(FileFailure::other(format!(
                "read handle {handle} is not open"
            )));
        };
        open.used = clock;
        let (id, file_len) = (open.id, open.len);
        // Done with the file once its end is read; a resend reopens it.
        if offset.saturating_add(len as u64) >= file_len {
            if let Some(open) = self.open.remove(&Key::Read(handle)) {
                self.ahead.forget(open.id);
                self.check_unchanged(handle, &open.file)?;
                return read_into(&mut self.buf, &open.file, offset, len);
            }
        }
        let Some(open) = self.open.get(&Key::Read(handle)) else {
            return Err(FileFailure::other(format!(
                "read handle {handle} is not open"
            )));
        };
        if len >= READ_AHEAD {
            return read_into(&mut self.buf, &open.file, offset, len);
        }
        if self.ahead.holds(id, offset, len) {
            return Ok(self.ahead.get(id, offset, len));
        }
        let file = &open.file;
        self.ahead
            .fill(id, offset, len, |buf, at| file.read_at(buf, at))
            .map_err(|e| FileFailure {
                error: format!("read failed: {e}"),
                no_space: false,
                missing: false,
            })
    }

    /// An upload's file, at its last block, still has the size the upload
    /// offered (see [`Files::source_file`]).
    fn check_unchanged(&self, handle: u64, file: &File) -> Result<(), FileFailure> {
        let Some(Source {
            path,
            size: Some(size),
            ..
        }) = self.source_of(handle)
        else {
            return Ok(());
        };
        let now = file
            .metadata()
            .map_err(|e| io_failure("cannot stat", path, &e))?
            .len();
        if now == *size {
            return Ok(());
        }
        Err(FileFailure::other(format!(
            "{} {CHANGED_WHILE_SENT} ({size} bytes when the upload began, {now} now)",
            path.display()
        )))
    }

    /// Where `file` is; `handle` picks the source of a batch of uploads
    /// (written files, removals and renames are never of those).
    fn local_path(&self, handle: u64, file: &FileRef) -> Result<PathBuf, FileFailure> {
        if let (Some(source), FileRef::Local) = (self.source_of(handle), file) {
            return Ok(source.path.clone());
        }
        match (&self.role, file) {
            (Role::Server { blobs, .. }, FileRef::Blob(d)) => Ok(blobs.join(hex(d))),
            (_, FileRef::Temp(temp)) => self.temp_path(*temp),
            (Role::Client(Local::Destination(_) | Local::Destinations(_)), FileRef::Local) => {
                match self.dest_of(handle) {
                    Some(d) => Ok(d.path.clone()),
                    None => Err(FileFailure::other(format!("no local file {handle}"))),
                }
            }
            (Role::Peer { dir, .. }, FileRef::Named(name)) if is_plain_name(name) => {
                Ok(dir.join(name))
            }
            (Role::Peer { .. }, FileRef::Named(name)) => Err(FileFailure::other(format!(
                "{name:?} is not a plain file name"
            ))),
            (_, file) => Err(FileFailure::other(format!(
                "{file:?} is not a file this node has"
            ))),
        }
    }

    fn temp_path(&self, temp: u64) -> Result<PathBuf, FileFailure> {
        match &self.role {
            Role::Server { tmp, .. } | Role::Peer { tmp, .. } => Ok(tmp.join(temp.to_string())),
            Role::Client(Local::Destination(_) | Local::Destinations(_)) => {
                match self.dest_of(temp) {
                    Some(d) => Ok(d.partial.clone()),
                    None => Err(FileFailure::other(format!("no local file {temp}"))),
                }
            }
            Role::Client(Local::Source(_) | Local::Sources(_)) => Err(FileFailure::other(
                "an upload writes no local file".to_string(),
            )),
        }
    }

    fn open_read(&mut self, handle: u64, file: FileRef) -> Result<(), FileFailure> {
        self.clock += 1;
        if let Some(open) = self.open.get_mut(&Key::Read(handle)) {
            if open.of.as_ref() == Some(&file) {
                open.used = self.clock;
                return Ok(());
            }
        }
        let path = self.local_path(handle, &file)?;
        // A temporary file is read as written so far: what is gathered or
        // queued for it is written first.
        if let FileRef::Temp(temp) = file {
            self.flush_gathered(temp)?;
            self.writer.wait_writes_of(temp);
        }
        let opened = match (self.source_of(handle), &file) {
            (
                Some(Source {
                    file: Some(f),
                    size: Some(size),
                    ..
                }),
                FileRef::Local,
            ) => Some((Arc::clone(f), *size)),
            _ => None,
        };
        let (f, len) = match (opened, file.clone()) {
            // Read through the descriptor the command opened: the file
            // whose size it offered, whatever the path names now.
            (Some((f, size)), _) => (f, size),
            (None, FileRef::Named(_) | FileRef::Temp(_)) => {
                let f = open_regular(&path)?;
                let len = f
                    .metadata()
                    .map_err(|e| io_failure("cannot stat", &path, &e))?
                    .len();
                (Arc::new(f), len)
            }
            (None, _) => {
                let f = File::open(&path).map_err(|e| io_failure("cannot open", &path, &e))?;
                let len = f
                    .metadata()
                    .map_err(|e| io_failure("cannot stat", &path, &e))?
                    .len();
                (Arc::new(f), len)
            }
        };
        self.opened += 1;
        self.insert(
            Key::Read(handle),
            Open {
                file: f,
                id: self.opened,
                of: Some(file),
                len,
                used: self.clock,
                dirty: None,
            },
        );
        Ok(())
    }

    fn insert(&mut self, key: Key, open: Open) {
        while self.open.len() >= MAX_OPEN && !self.open.contains_key(&key) {
            let pending = &self.pending;
            let Some(oldest) = (self.open.iter())
                .filter(|(k, _)| !matches!(k, Key::Read(h) if pending.contains(h)))
                .min_by_key(|(_, o)| o.used)
                .map(|(k, _)| *k)
            else {
                break;
            };
            if let Some(old) = self.open.remove(&oldest) {
                self.ahead.forget(old.id);
            }
        }
        if let Some(old) = self.open.insert(key, open) {
            self.ahead.forget(old.id);
        }
    }

    /// The temporary file's descriptor, created (empty) on first use.
    fn temp_file(&mut self, temp: u64) -> Result<&Arc<File>, FileFailure> {
        self.clock += 1;
        let clock = self.clock;
        if !self.open.contains_key(&Key::Temp(temp)) {
            if self.persisting.contains(&temp) {
                return Err(FileFailure::other(format!(
                    "temporary file {temp} is still being persisted"
                )));
            }
            let path = self.temp_path(temp)?;
            let fresh = !self.created.contains_key(&temp);
            let f = self.open_temp(temp, &path, fresh)?;
            self.opened += 1;
            if fresh {
                self.created.insert(temp, self.opened);
            }
            self.insert(
                Key::Temp(temp),
                Open {
                    file: Arc::new(f),
                    id: self.opened,
                    of: None,
                    len: 0,
                    used: clock,
                    dirty: None,
                },
            );
        }
        match self.open.get_mut(&Key::Temp(temp)) {
            Some(open) => {
                open.used = clock;
                Ok(&open.file)
            }
            None => Err(FileFailure::other(format!(
                "temporary file {temp} is not open"
            ))),
        }
    }

    /// Opens temporary file `temp` at `path` (created if `fresh`). A
    /// download's is unnamed where the filesystem allows (see *The
    /// client's disk*), and cannot be reopened; where it is named, a new
    /// one is new: a file left under the name (by a process of the same
    /// id) is removed first, and a link there is never followed.
    fn open_temp(&mut self, temp: u64, path: &Path, fresh: bool) -> Result<File, FileFailure> {
        if let Some((dest, unnamed)) = self.dest_of(temp).map(|d| (d.path.clone(), d.unnamed)) {
            let dir = dest.parent().unwrap_or(Path::new(""));
            if self.unnamed.contains(&temp) {
                return Err(FileFailure::other(format!(
                    "the temporary file of {} was closed and cannot be reopened",
                    dest.display()
                )));
            }
            if fresh && unnamed {
                match local::open_unnamed(dir) {
                    Ok(Some(f)) => {
                        self.unnamed.insert(temp);
                        return Ok(f);
                    }
                    Ok(None) => {}
                    Err(e) => return Err(io_failure("cannot create a file in", dir, &e)),
                }
            }
            let mut options = OpenOptions::new();
            // Private while partial (see `local::new_file_mode`).
            options
                .write(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW);
            if fresh {
                match std::fs::remove_file(path) {
                    Err(e) if e.kind() != ErrorKind::NotFound => {
                        return Err(io_failure("cannot remove", path, &e))
                    }
                    _ => {}
                }
                options.create_new(true);
            }
            return options
                .open(path)
                .map_err(|e| io_failure("cannot create", path, &e));
        }
        self.temp_options(fresh)
            .open(path)
            .map_err(|e| io_failure("cannot create", path, &e))
    }

    /// How a temporary file is opened. A peer's temporary files are in the
    /// directory it shares, where someone else may put a link: a new one
    /// must be new (`O_EXCL`), and one reopened is never a link.
    fn temp_options(&self, fresh: bool) -> OpenOptions {
        let mut options = OpenOptions::new();
        options.write(true);
        match (&self.role, fresh) {
            (Role::Peer { .. }, true) => options.create_new(true),
            (Role::Peer { .. }, false) => options.custom_flags(libc::O_NOFOLLOW),
            (_, fresh) => options.create(true).truncate(fresh),
        };
        options
    }

    /// Gathers the write if it can (see the module docs), else hands
    /// what was gathered and then this to the writer thread. A failure of
    /// an earlier write of the file that has come back is this write's.
    fn write(&mut self, temp: u64, offset: u64, data: Vec<u8>) -> Result<(), FileFailure> {
        // Created (or failing) at the first write, not later.
        self.temp_file(temp)?;
        let opening = self.created.get(&temp).copied().unwrap_or_default();
        if let Some(failure) = self.writer.take_write_failure(temp, opening) {
            return Err(failure);
        }
        let writer = &mut self.writer;
        if self
            .gathered
            .gather(temp, offset, &data, || writer.buffer())
        {
            return Ok(());
        }
        self.flush_gathered(temp)?;
        let writer = &mut self.writer;
        if self
            .gathered
            .gather(temp, offset, &data, || writer.buffer())
        {
            return Ok(());
        }
        self.write_through(temp, offset, data)
    }

    /// Hands what is gathered for `temp` to the writer thread.
    fn flush_gathered(&mut self, temp: u64) -> Result<(), FileFailure> {
        let Some(g) = self.gathered.take(temp) else {
            return Ok(());
        };
        self.write_through(temp, g.offset, g.data)
    }

    /// Hands a write to the writer thread, and with it, every 2 MiB, the
    /// start of the writeback of what was written.
    fn write_through(&mut self, temp: u64, offset: u64, data: Vec<u8>) -> Result<(), FileFailure> {
        let file = Arc::clone(self.temp_file(temp)?);
        let mut writeback = None;
        if let Some(open) = self.open.get_mut(&Key::Temp(temp)) {
            let end = offset + data.len() as u64;
            let (from, to) = match open.dirty {
                Some((from, to)) => (from.min(offset), to.max(end)),
                None => (offset, end),
            };
            if to - from >= WRITE_BEHIND {
                writeback = Some((from, to - from));
                open.dirty = None;
            } else {
                open.dirty = Some((from, to));
            }
        }
        let opening = self.created.get(&temp).copied().unwrap_or_default();
        self.writer
            .submit(temp, opening, &file, offset, data, writeback);
        Ok(())
    }

    /// Lets the writer thread wake the driver when it has an answer, so
    /// that it asks [`Files::take_answer`].
    pub fn set_wake(&mut self, wake: Arc<dyn Fn() + Send + Sync>) {
        self.writer.set_wake(wake);
    }

    /// An answer of the writer thread not yet given: a finished persist, or
    /// a failed write (told once per file, and nothing about a file that is
    /// gone).
    pub fn take_answer(&mut self) -> Option<FileAnswer> {
        while let Some(finished) = self.writer.take_finished() {
            match finished {
                Finished::WriteFailed {
                    temp,
                    opening,
                    failure,
                } => {
                    if self.created.get(&temp) == Some(&opening) && !self.broken.contains_key(&temp)
                    {
                        self.broken.insert(temp, failure.clone());
                        return Some(FileAnswer::Failed {
                            handle: temp,
                            failure,
                        });
                    }
                }
                Finished::Persisted { temp, result } => {
                    self.persisting.remove(&temp);
                    return Some(match result {
                        Ok(()) => FileAnswer::Persisted { temp },
                        Err(failure) => FileAnswer::Failed {
                            handle: temp,
                            failure,
                        },
                    });
                }
                Finished::Renamed { handle, result } => {
                    return Some(match result {
                        Ok(()) => FileAnswer::Renamed { handle },
                        Err(failure) => FileAnswer::Failed { handle, failure },
                    });
                }
            }
        }
        None
    }

    /// Waits until the writer thread has done everything asked of it.
    pub fn wait_idle(&mut self) {
        self.writer.wait_idle();
    }

    /// Hands the file, once its writes are done, to the writer thread to be
    /// made durable and moved into place. A server or a peer hears the
    /// answer from there (false); a client waits for it (true: persisted).
    /// A peer's temporary file is used up whatever the answer.
    fn persist(&mut self, temp: u64, to: FileRef) -> Result<bool, FileFailure> {
        let placed = self.place(temp, to);
        if placed.is_err() && matches!(self.role, Role::Peer { .. }) {
            self.discard(temp);
        }
        placed
    }

    fn place(&mut self, temp: u64, to: FileRef) -> Result<bool, FileFailure> {
        // Taken first, so that it never outlives this file, whatever fails.
        let modified = self.modified.remove(&temp).transpose();
        let mode = self.modes.remove(&temp);
        let from = self.temp_path(temp)?;
        let target = self.local_path(temp, &to)?;
        let existing = match (&self.role, &to) {
            (Role::Peer { .. }, _) => Existing::Link,
            (Role::Client(_), _) if self.dest_of(temp).is_some_and(|d| d.replace) => {
                Existing::ReplaceRegular
            }
            (Role::Client(_), _) => Existing::Refuse,
            (_, FileRef::Blob(_)) => Existing::Keep,
            _ => Existing::Replace,
        };
        self.flush_gathered(temp)?;
        // A write failed and was reported: the file has a hole.
        if let Some(first) = self.broken.get(&temp) {
            return Err(FileFailure {
                error: format!(
                    "{}: an earlier write failed: {}",
                    from.display(),
                    first.error
                ),
                no_space: first.no_space,
                missing: false,
            });
        }
        let modified = modified?;
        // Reads of the file this one replaces must not be served from
        // what was read ahead of it.
        let replaced: Vec<u64> = self
            .open
            .values()
            .filter(|o| o.of.as_ref() == Some(&to))
            .map(|o| o.id)
            .collect();
        for id in replaced {
            self.ahead.forget(id);
        }
        self.close_reads_of(&FileRef::Temp(temp));
        // Created here if never written (a zero-byte file).
        let file = Arc::clone(self.temp_file(temp)?);
        self.open.remove(&Key::Temp(temp));
        self.created.remove(&temp);
        self.broken.remove(&temp);
        let unnamed = self.unnamed.remove(&temp);
        let placing = Placing {
            temp,
            file,
            from,
            to: target,
            existing,
            modified,
            mode,
            unnamed,
        };
        // A client's one transfer has nothing else to do meanwhile, and its
        // download is not over until the file is in place: it waits here,
        // as it always has, and no timer of its runs during the wait. A
        // batch's files are made durable and linked in behind the network,
        // as a server's are: the next files arrive meanwhile.
        if matches!(self.role, Role::Client(Local::Destination(_))) {
            return self.writer.persist_and_wait(placing).map(|()| true);
        }
        self.persisting.insert(temp);
        self.writer.persist(placing);
        Ok(false)
    }

    fn discard(&mut self, temp: u64) {
        self.close_reads_of(&FileRef::Temp(temp));
        self.gathered.discard(temp);
        self.modified.remove(&temp);
        self.modes.remove(&temp);
        self.open.remove(&Key::Temp(temp));
        self.created.remove(&temp);
        self.broken.remove(&temp);
        self.writer.forget(temp);
        // A file being persisted is the writer thread's to move or leave;
        // an unnamed one went with its descriptor.
        if self.persisting.contains(&temp) || self.unnamed.remove(&temp) {
            return;
        }
        let Ok(path) = self.temp_path(temp) else {
            return;
        };
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("cannot remove {}: {e}", path.display()),
        }
    }

    /// Closes the read handles of `file` (which is going, or going
    /// elsewhere) and forgets what they read ahead.
    fn close_reads_of(&mut self, file: &FileRef) {
        let ahead = &mut self.ahead;
        self.open.retain(|_, o| {
            let keep = o.of.as_ref() != Some(file);
            if !keep {
                ahead.forget(o.id);
            }
            keep
        });
    }

    fn remove(&mut self, file: FileRef) {
        self.close_reads_of(&file);
        if matches!(self.role, Role::Client(_)) {
            tracing::warn!("a client does not remove its local file");
            return;
        }
        match self.local_path(0, &file) {
            Ok(path) => self.writer.remove(path),
            Err(failure) => tracing::warn!("not removed: {}", failure.error),
        }
    }

    /// Notes the modification time a peer's temporary file is to have,
    /// for its persist, which sets it on the file. A time that cannot be
    /// one, or a node that shares no directory, fails the persist: nothing
    /// is answered before it.
    fn set_modified(&mut self, temp: u64, modified_ms: u64) {
        let time = match self.role {
            Role::Peer { .. } => SystemTime::UNIX_EPOCH
                .checked_add(Duration::from_millis(modified_ms))
                .ok_or_else(|| {
                    FileFailure::other(format!(
                        "temporary file {temp}: {modified_ms} ms is no modification time"
                    ))
                }),
            _ => {
                tracing::warn!("a node that shares no directory set a modification time");
                Err(FileFailure::other("this node shares no directory"))
            }
        };
        self.modified.insert(temp, time);
    }

    /// Notes the modification time and mode a download is to have, for
    /// its persist, which sets them on the file before it is made durable
    /// and linked in. A time that cannot be one, or a node that downloads
    /// nothing, fails the persist.
    fn set_attrs(&mut self, temp: u64, attrs: FileAttrs) {
        let attrs = attrs.sanitized();
        let time = match self.role {
            Role::Client(Local::Destination(_) | Local::Destinations(_)) => {
                system_time(attrs.mtime_secs, attrs.mtime_nanos).ok_or_else(|| {
                    FileFailure::other(format!(
                        "temporary file {temp}: {} s is no modification time",
                        attrs.mtime_secs
                    ))
                })
            }
            _ => {
                tracing::warn!("a node that downloads nothing set a download's attributes");
                Err(FileFailure::other("this node downloads nothing"))
            }
        };
        if time.is_ok() {
            self.modes.insert(temp, attrs.mode);
        }
        self.modified.insert(temp, time);
    }

    /// Hands a rename of a peer's file to the writer thread, behind what
    /// was asked before (a persist of `from` among it), which answers it.
    /// Names that are not plain are refused here, before anything is
    /// touched.
    fn rename(&mut self, handle: u64, from: FileRef, to: FileRef) -> Result<(), FileFailure> {
        if !matches!(self.role, Role::Peer { .. }) {
            return Err(FileFailure::other("this node shares no directory"));
        }
        let (from_path, to_path) = (self.local_path(0, &from)?, self.local_path(0, &to)?);
        // A handle of `from` would read on from the file's new name as if
        // it were the old one's.
        self.close_reads_of(&from);
        self.writer.rename(handle, from_path, to_path);
        Ok(())
    }

    /// The regular files at the top of a peer's shared directory, sorted
    /// by name.
    fn list(&self) -> Result<Vec<DirEntry>, FileFailure> {
        let Role::Peer { dir, .. } = &self.role else {
            return Err(FileFailure::other("this node shares no directory"));
        };
        let failed = |e: io::Error| io_failure("cannot list", dir, &e);
        let mut listed = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(failed)? {
            listed.extend(listed_entry(&entry.map_err(failed)?));
        }
        listed.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        Ok(listed)
    }
}

/// `secs` and `nanos` after the Unix epoch (`secs` negative before it),
/// if the system's clock type reaches that far.
pub fn system_time(secs: i64, nanos: u32) -> Option<SystemTime> {
    let whole = Duration::from_secs(secs.unsigned_abs());
    let base = match secs >= 0 {
        true => SystemTime::UNIX_EPOCH.checked_add(whole),
        false => SystemTime::UNIX_EPOCH.checked_sub(whole),
    }?;
    base.checked_add(Duration::from_nanos(nanos.into()))
}

/// A directory entry as `List` shows it: a regular file (not followed if a
/// link: `DirEntry::metadata` is an `lstat`) with a UTF-8 name. One gone
/// since the directory was read is not shown.
fn listed_entry(entry: &std::fs::DirEntry) -> Option<DirEntry> {
    let name = entry.file_name().into_string().ok()?;
    let meta = entry.metadata().ok().filter(|m| m.is_file())?;
    let modified_ms = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Some(DirEntry {
        name,
        size: meta.len(),
        modified_ms,
    })
}

/// Opens a shared directory's file to read it: a regular file only, never
/// through a link. Looked at first so that nothing else (a device, a FIFO)
/// is even opened; opened without following a link and without waiting (a
/// FIFO put in its place meanwhile opens at once), and looked at again
/// through the descriptor, which is what is read.
fn open_regular(path: &Path) -> Result<File, FileFailure> {
    let not_regular = || {
        FileFailure::other(format!(
            "cannot open {}: not a regular file",
            path.display()
        ))
    };
    let before =
        std::fs::symlink_metadata(path).map_err(|e| io_failure("cannot open", path, &e))?;
    if !before.is_file() {
        return Err(not_regular());
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => not_regular(),
            _ => io_failure("cannot open", path, &e),
        })?;
    let after = file
        .metadata()
        .map_err(|e| io_failure("cannot stat", path, &e))?;
    match after.is_file() {
        // O_NONBLOCK means nothing to a regular file's reads.
        true => Ok(file),
        false => Err(not_regular()),
    }
}

/// Removes what a crash left in a temporary files' directory.
fn remove_leftovers(tmp: &Path) -> io::Result<()> {
    for entry in read_dir(tmp)? {
        let path = entry.path();
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::info!("removed leftover temporary file {}", path.display()),
            Err(e) => tracing::warn!("cannot remove {}: {e}", path.display()),
        }
    }
    Ok(())
}

/// `e`, saying which path it was about.
fn at(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Reads up to `len` bytes at `offset` into `buf` (fewer only at the end of
/// the file).
fn read_into<'a>(
    buf: &'a mut Vec<u8>,
    file: &File,
    offset: u64,
    len: usize,
) -> Result<&'a [u8], FileFailure> {
    if buf.len() < len {
        buf.resize(len, 0);
    }
    let mut got = 0;
    while got < len {
        match file.read_at(&mut buf[got..len], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(FileFailure {
                    error: format!("read failed: {e}"),
                    no_space: false,
                    missing: false,
                })
            }
        }
    }
    Ok(&buf[..got])
}

/// Asks the kernel to start writing a range of `file` to disk, without
/// waiting for it. Only a hint: failures show at the `fsync`.
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: the descriptor is open for as long as `file` is borrowed;
    // sync_file_range reads no memory of ours.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _offset: u64, _len: u64) {}

fn read_dir(dir: &Path) -> io::Result<Vec<std::fs::DirEntry>> {
    let wrap = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", dir.display()));
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(wrap)? {
        entries.push(entry.map_err(wrap)?);
    }
    Ok(entries)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    // An empty parent means the current directory.
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)?.sync_all()
}

/// `.NAME.ferry-part` beside `path`: the partial file of a download that
/// can be resumed (one per destination, whichever process writes it).
pub fn part_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "download".into());
    let part = format!(".{name}.ferry-part");
    match path.parent() {
        Some(dir) => dir.join(part),
        None => PathBuf::from(part),
    }
}

/// `.NAME.ferry-partial-PID` beside `path`: the named temporary file of a
/// download that cannot be resumed, where no unnamed file can be made.
pub fn partial_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "download".into());
    let partial = format!(".{name}.ferry-partial-{}", std::process::id());
    match path.parent() {
        Some(dir) => dir.join(partial),
        None => PathBuf::from(partial),
    }
}

/// Lower-case hex of a digest, as blob files are named.
pub fn hex(d: &[u8; 32]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(64);
    for b in d {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// A digest from 64 hex digits (either case); `None` for anything else.
pub fn parse_hex(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut d = [0u8; 32];
    for (i, out) in d.iter_mut().enumerate() {
        *out = digit(b[2 * i])? << 4 | digit(b[2 * i + 1])?;
    }
    Some(d)
}

mod buffers;
pub mod local;
#[cfg(test)]
mod tests;
mod writer;
