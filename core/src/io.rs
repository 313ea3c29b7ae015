//! The contract between a protocol node and the world that runs it.
//!
//! A runtime owns sockets, timers and disks; a node owns every decision. The
//! runtime feeds [`Input`]s and expired timers in, then drains every
//! [`Output`] before it feeds the next input (str0m's rule), and sleeps until
//! [`Node::poll_timeout`] or the next input, whichever comes first.
//!
//! What the outputs *mean* — the order they are carried out in, and the order
//! their answers come back — is written once, here and in [`crate::host`],
//! whose [`Host`](crate::host::Host) is the one pump every runtime (the
//! production one, the simulator, the unit tests' in-memory cluster) uses.
//! A runtime supplies only a [`World`](crate::host::World): the sockets,
//! the store and the disk the outputs act on.
//!
//! ## The order of things
//!
//! - Outputs are carried out in the order the node emits them.
//! - `Persist { token, batch }` commits `batch` atomically before the next
//!   output is carried out; `Input::Persisted { token }` is fed back after
//!   the drain, never within it. Batches commit in output order.
//! - `File(op)` is handed to the world in output order. Whatever the world
//!   answers (`FileRead`, `FilePersisted`, `FileFailed`) joins the persisted
//!   tokens in one queue, in the order it became due, and is fed back after
//!   the drain, one input at a time, each followed by a drain of its own.
//! - Before an owed answer is fed, what the drain transmitted is flushed to
//!   the network: a sender that reads its next block when fed does so while
//!   the chunk just sent is on its way.
//! - A store that cannot commit, or file work asked of a world without a
//!   disk, is fatal: nothing more is carried out, and the runtime stops the
//!   node rather than let it act on state it could not save.
//!
//! ## Files
//!
//! - `Write` creates its temporary file on the first write. Its bytes are in
//!   the file by the time of the file's `Persist`; a write that fails is
//!   reported as `FileFailed` for the temporary file (with `no_space` for a
//!   full disk), and the file's `Persist` then fails too: no file with a
//!   hole is ever persisted.
//! - `Persist { temp, to }` makes the temporary file durable and moves it to
//!   `to`, then answers `FilePersisted { temp }` (or `FileFailed`); a
//!   temporary file never written becomes an empty file. A crash before the
//!   answer leaves nothing visible at `to` that was not there before.
//!   **Onto a blob that is already there**, the blob there is kept and the
//!   copy dropped: a blob's name is the digest of its content, so the two
//!   hold the same bytes, and replacing would cost an `fsync` and a rename
//!   for nothing (decision of issue 13; a copy damaged on disk is the
//!   scrub's business, which removes it before anything is fetched again).
//! - `Read` answers with the bytes the file holds when the read is carried
//!   out (fewer than asked only at its end), `missing` if it is not there.
//!   A read of `FileRef::Temp(n)` sees every write to temporary file `n`
//!   asked for before it (a world that writes behind waits for them); a
//!   temporary file is read only to resume a transfer, never persisted or
//!   removed through that name.
//! - `Discard` removes a temporary file (nothing is answered); `Remove`
//!   removes a blob (nothing is answered; a missing one is no error).
//! - **Named files** (a peer's shared directory). A name is one plain
//!   component: a world refuses an empty name, `.`, `..` or one holding `/`
//!   or NUL ([`is_plain_name`]) with `FileFailed`, touching nothing, though
//!   the node checks names itself, more strictly. `Read` of a name reads
//!   only a regular file directly in the directory: never through a
//!   symbolic link, never a FIFO or a device; `missing` if nothing has that
//!   name. `Persist` onto a name **never replaces** what is there — it
//!   fails with an error saying the name exists (neither `missing` nor
//!   `no_space`) — so two writers of one name cannot lose either's file;
//!   whatever it answers, the temporary file is gone after it. Temporary
//!   files (several at once: one per transfer) live where `List` does not
//!   show them, and a start removes those a crash left. `List` answers the
//!   directory as it is when carried out: the regular files at its top (not
//!   links, directories or FIFOs) whose names are UTF-8, sorted by name,
//!   with size and modification time (Unix ms); a `Persist` not yet
//!   answered may or may not be in it. `Remove` of a name removes that
//!   entry and nothing else.
//! - A world may take its time for a server's or a peer's `Persist` and
//!   `Remove`, and a peer's `Rename` (a writer thread, a disk queue) while
//!   the node runs on (it has other sessions to serve, or other
//!   transfers); their answers come when they are done, and a `Remove` or
//!   a `Rename` never overtakes a `Persist` asked for before it.

use crate::file_attrs::FileAttrs;
use crate::store::Batch;
use crate::time::Timestamp;
pub use crate::tls::Identity;
use std::fmt;

/// Identifies one connection of a node. Connections the node dials are
/// numbered by the node; connections the driver accepts are numbered by the
/// driver, so the two never collide.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId {
    pub dialed: bool,
    pub n: u64,
}

impl ConnId {
    pub fn accepted(n: u64) -> Self {
        ConnId { dialed: false, n }
    }
    pub fn dialed(n: u64) -> Self {
        ConnId { dialed: true, n }
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", if self.dialed { "d" } else { "a" }, self.n)
    }
}

/// What happened in the world.
#[derive(Debug)]
pub enum Input<'a> {
    /// A peer connected to one of the node's listeners (and, on a host
    /// with TLS, completed its handshake: `identity` is what it proved).
    Accepted {
        conn: ConnId,
        peer: String,
        identity: Identity,
    },
    /// A connection the node asked for is open (its TLS handshake done:
    /// `identity` is what the other end proved).
    Connected { conn: ConnId, identity: Identity },
    /// A connection the node asked for could not be opened.
    ConnectFailed { conn: ConnId, reason: String },
    /// Bytes arrived on a connection.
    Received { conn: ConnId, bytes: &'a [u8] },
    /// The peer closed the connection, or it broke.
    Closed { conn: ConnId },
    /// The batch of `Output::Persist { token }` is durable.
    Persisted { token: u64 },
    /// The bytes of a `FileOp::Read` (fewer than asked only at end of file).
    FileRead {
        handle: u64,
        offset: u64,
        data: &'a [u8],
    },
    /// `FileOp::Persist` of temporary file `temp` is done: the file is
    /// durable and in place.
    FilePersisted { temp: u64 },
    /// The answer to `FileOp::List`: the directory's regular files, by name.
    Listed {
        handle: u64,
        entries: &'a [DirEntry],
    },
    /// `FileOp::Rename { handle, .. }` is done (durably).
    Renamed { handle: u64 },
    /// The answer to `FileOp::Space`: bytes free to an unprivileged writer
    /// on the filesystem the node's files live on; `None` if the world
    /// could not tell.
    Space { handle: u64, free: Option<u64> },
    /// A file operation on `handle` (a read handle or a temporary file)
    /// failed. `no_space` says the disk or quota is full; `missing`, that
    /// the file does not exist (a blob removed behind the server's back is
    /// gone for certain, where another failure may pass).
    FileFailed {
        handle: u64,
        error: String,
        no_space: bool,
        missing: bool,
    },
}

/// A file a node names. Servers keep content as blobs named by digest;
/// clients read from or write to the one local file of their command; a
/// peer reads and writes plain names in the one directory it shares.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FileRef {
    Blob([u8; 32]),
    Local,
    /// A temporary file of the node's, as written so far: only read (the
    /// kept part of an upload or a download cut off, read back to resume
    /// it).
    Temp(u64),
    /// A plain name (no separators; the node checks it) in the node's
    /// shared directory.
    Named(String),
}

/// Can `name` name a file in a shared directory at all: one component,
/// neither empty nor `.` or `..`, no `/` and no NUL? The world's own check,
/// so that nothing outside the directory is ever touched whatever a node
/// asks; a node's rules for names are stricter.
pub fn is_plain_name(name: &str) -> bool {
    !matches!(name, "" | "." | "..") && !name.contains(['/', '\0'])
}

/// A regular file at the top of a peer's shared directory.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DirEntry {
    pub name: String,
    pub size: u64,
    /// Modification time, Unix milliseconds.
    pub modified_ms: u64,
}

/// File work the node asks of its driver. Temporary files are numbered by
/// the node; the driver creates one on its first write and keeps it out of
/// sight until it is persisted.
#[derive(Debug, PartialEq, Eq)]
pub enum FileOp {
    /// Read `len` bytes at `offset` of `file`; answer with
    /// `Input::FileRead { handle, .. }` or `Input::FileFailed { handle, .. }`.
    Read {
        handle: u64,
        file: FileRef,
        offset: u64,
        len: usize,
    },
    /// Write into temporary file `temp` (created on first write).
    Write {
        temp: u64,
        offset: u64,
        data: Vec<u8>,
    },
    /// Make temporary file `temp` durable and move it to `to` (a blob there
    /// is kept, a name there is never replaced, a client's file is replaced
    /// if the user asked); answer `Input::FilePersisted { temp }` or
    /// `FileFailed`.
    Persist { temp: u64, to: FileRef },
    /// Remove temporary file `temp` if it exists.
    Discard { temp: u64 },
    /// Remove a file (a blob nobody references any more, a name of the
    /// shared directory).
    Remove { file: FileRef },
    /// List the regular files at the top of the node's shared directory;
    /// answer `Input::Listed { handle, .. }` or `Input::FileFailed`.
    List { handle: u64 },
    /// Give temporary file `temp` this modification time (Unix ms), which
    /// it keeps when persisted (a copy is never newer than its original).
    /// Nothing is answered; a failure fails the file's `Persist`.
    SetModified { temp: u64, modified_ms: u64 },
    /// Give a client's download, temporary file `temp`, this modification
    /// time and these permission bits (masked again to
    /// [`FileAttrs::MODE_BITS`]), which it has once persisted: set before
    /// it is made durable, and before its name shows it. (A download that
    /// replaces a regular file keeps that file's mode, as a replacement
    /// always does: it takes the time only.) Nothing is
    /// answered; a failure fails the file's `Persist`. Only a client asks
    /// it (a server's blob is shared by every file of its content).
    SetAttrs { temp: u64, attrs: FileAttrs },
    /// Rename named file `from` to `to` in the shared directory, **never
    /// replacing** a file at `to`; answer `Input::Renamed { handle }` or
    /// `Input::FileFailed { handle, .. }` (`missing` if `from` is not
    /// there, whatever `to` is; else an error saying it exists if `to`
    /// is). Only a regular file is renamed, never a link or what it points
    /// to.
    Rename {
        handle: u64,
        from: FileRef,
        to: FileRef,
    },
    /// How much room is left where the node's files live; answer
    /// `Input::Space { handle, .. }`, never `FileFailed` (a world that
    /// cannot tell answers `free: None`).
    Space { handle: u64 },
}

/// How a file operation failed, as the node is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileFailure {
    pub error: String,
    /// The disk or the quota is full.
    pub no_space: bool,
    /// The file does not exist.
    pub missing: bool,
}

impl FileFailure {
    pub fn other(error: impl Into<String>) -> Self {
        FileFailure {
            error: error.into(),
            no_space: false,
            missing: false,
        }
    }

    pub fn missing(error: impl Into<String>) -> Self {
        FileFailure {
            missing: true,
            ..FileFailure::other(error)
        }
    }

    /// A persist onto a name that is there: never replaced (see the
    /// module docs), in the same words in every world.
    pub fn exists(name: &str) -> Self {
        FileFailure::other(format!("{name} already exists"))
    }

    pub fn no_space(error: impl Into<String>) -> Self {
        FileFailure {
            no_space: true,
            ..FileFailure::other(error)
        }
    }
}

/// What a world has to say back about a file operation. The host turns it
/// into the node's input when it is fed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileAnswer {
    /// A read, carried out (its file opened) but its bytes not read yet: the
    /// host asks the world for them ([`crate::host::World::read`]) when it
    /// feeds the answer, so they go straight from the world's buffer to the
    /// node.
    Read {
        handle: u64,
        offset: u64,
        len: usize,
    },
    Persisted {
        temp: u64,
    },
    Listed {
        handle: u64,
        entries: Vec<DirEntry>,
    },
    Renamed {
        handle: u64,
    },
    Space {
        handle: u64,
        free: Option<u64>,
    },
    Failed {
        handle: u64,
        failure: FileFailure,
    },
}

/// What the node wants done.
#[derive(Debug, PartialEq, Eq)]
pub enum Output<E> {
    /// Write these bytes on the connection, in order.
    Transmit { conn: ConnId, bytes: Vec<u8> },
    /// Open a connection to `addr` (`host:port`); report Connected or ConnectFailed.
    Connect { conn: ConnId, addr: String },
    /// Flush what was transmitted, then close. The node has forgotten the
    /// connection; a later `Closed` for it is ignored.
    Close { conn: ConnId },
    /// Commit this batch to the node's store, atomically, then report
    /// `Input::Persisted { token }`. Batches are committed in the order they
    /// are output. A store that cannot commit is fatal to the node: the
    /// driver stops it rather than let it act on state it could not save.
    Persist { token: u64, batch: Batch },
    /// File work; see [`FileOp`].
    File(FileOp),
    /// Something the application or a trace should know.
    Event(E),
}

/// A sans-IO protocol node.
pub trait Node {
    type Event: fmt::Display + fmt::Debug;

    fn handle_input(&mut self, now: Timestamp, input: Input<'_>);

    /// Called when `now` has reached the deadline from [`Node::poll_timeout`].
    fn handle_timeout(&mut self, now: Timestamp);

    fn poll_output(&mut self) -> Option<Output<Self::Event>>;

    /// The next instant at which [`Node::handle_timeout`] must be called.
    fn poll_timeout(&self) -> Option<Timestamp>;

    /// Whether `event` happens once per file or more (a copy made, say):
    /// a runtime logs it below its other events, so that a batch of a
    /// thousand files does not write thousands of lines.
    fn is_routine(_event: &Self::Event) -> bool {
        false
    }
}
