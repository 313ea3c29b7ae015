//! Log entries: the transactions the master orders.

use super::sync_round::Token;
use crate::accounts::password::PasswordHash;
use crate::file_attrs::FileAttrs;
use crate::tls::Fingerprint;
use speedy::{Readable, Writable};

/// Who asked for a transaction: a client session on some server, and the
/// session's request number. A retry carries the same origin, so it is
/// applied once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Readable, Writable)]
pub struct Origin {
    pub server: u32,
    pub session: u64,
    pub request: u64,
}

impl Origin {
    /// The bit that marks a session id a client chose (`SessionMsg::
    /// Command`): one command's id, the same through whichever server it is
    /// tried, so that a command retried through another server after its
    /// first server died is applied once. Servers draw their own ids with
    /// this bit clear.
    pub const CLIENT_CHOSEN: u64 = 1 << 63;

    pub fn client_chosen(&self) -> bool {
        self.session & Self::CLIENT_CHOSEN != 0
    }

    /// Whose requests a retry is recognised among: the session on its
    /// server, or a client-chosen command on any server.
    pub fn dedup_key(&self) -> (u32, u64) {
        match self.client_chosen() {
            true => (0, self.session),
            false => (self.server, self.session),
        }
    }
}

/// A mutation of the replicated state.
#[derive(Clone, Debug, PartialEq, Eq, Readable, Writable)]
#[speedy(tag_type = u8)]
pub enum Txn {
    #[speedy(tag = 1)]
    Register {
        username: String,
        password: PasswordHash,
    },
    /// Logout: the token id is refused everywhere until it would have expired.
    #[speedy(tag = 2)]
    Revoke { token_id: [u8; 16], expires: u64 },
    /// `PutFile` as logged before files had attributes (protocol 6 and
    /// earlier): still read from the logs of those servers and applied as
    /// a `PutFile` without attributes, never written.
    #[speedy(tag = 3)]
    PutFileV1 {
        owner: u64,
        name: String,
        size: u64,
        digest: [u8; 32],
        replace: bool,
        holder: u32,
    },
    #[speedy(tag = 4)]
    Share {
        owner: u64,
        name: String,
        grantee: String,
    },
    #[speedy(tag = 5)]
    Unshare {
        owner: u64,
        name: String,
        grantee: String,
    },
    #[speedy(tag = 6)]
    Delete { owner: u64, name: String },
    /// A new master's first entry. Entries of earlier views commit only
    /// once an entry of the current view does (a count of copies alone
    /// could be overwritten by a later master; Raft's §5.4.2), so a master
    /// elected with nothing to order would otherwise never commit what it
    /// inherited, nor answer a read.
    #[speedy(tag = 7)]
    Noop,
    /// `user`'s peer listening at `addr` registers (`replication::registry`).
    #[speedy(tag = 8)]
    PeerJoin {
        user: u64,
        addr: String,
        ticket_digest: [u8; 32],
        /// The certificate the peer presented on its link to the tracker:
        /// other peers admit only the holder of its key.
        key: Option<Fingerprint>,
    },
    /// The server holding peer `peer`'s link heard from it: its lease goes on.
    #[speedy(tag = 9)]
    PeerRenew { peer: u64 },
    /// Peer `peer` leaves: it said so, its link closed, or (`expired`) the
    /// master saw its lease run out.
    #[speedy(tag = 10)]
    PeerLeave { peer: u64, expired: bool },
    /// Peer `peer` asked for a SYNC round (`replication::sync_round`): one
    /// starts, its first writer granted by this entry, or the running one
    /// is joined.
    #[speedy(tag = 11)]
    SyncStart { peer: u64 },
    /// SYNC FIN: the writer `peer` of `round` is done under `token`; the
    /// grant moves on.
    #[speedy(tag = 12)]
    SyncDone { round: u64, peer: u64, token: Token },
    /// The writer `peer` of `round` is still writing: its lease goes on.
    #[speedy(tag = 13)]
    SyncRenew { round: u64, peer: u64, token: Token },
    /// The master saw the lease of `round`'s grant `token` run out.
    #[speedy(tag = 14)]
    SyncExpire { round: u64, token: Token },
    /// A wrong password for `username` from `source` (the client's address
    /// as the server saw it), ordered by the server that saw it: counted
    /// for the whole cluster (`replication::logins`).
    #[speedy(tag = 15)]
    LoginFailed { username: String, source: String },
    /// A right password for `username` from `source`: its failures are
    /// cleared and it is trusted (`accounts::limiter`).
    #[speedy(tag = 16)]
    LoginSucceeded { username: String, source: String },
    /// `user` changed their password to `password` (hashed by the server
    /// that took it): every session token issued before is refused.
    #[speedy(tag = 17)]
    ChangePassword { user: u64, password: PasswordHash },
    /// `PutFiles` as logged before files had attributes: read and
    /// applied, never written (see `PutFileV1`).
    #[speedy(tag = 18)]
    PutFilesV1 {
        owner: u64,
        files: Vec<NewFileV1>,
        replace: bool,
        holder: u32,
    },
    /// `grantee` may read every file under `owner`'s `folder`, now and
    /// later (`catalogue`).
    #[speedy(tag = 19)]
    ShareFolder {
        owner: u64,
        folder: String,
        grantee: String,
    },
    #[speedy(tag = 20)]
    UnshareFolder {
        owner: u64,
        folder: String,
        grantee: String,
    },
    /// `rm -r`: every file under `owner`'s `folder`, and the shares of it
    /// and of the folders under it.
    #[speedy(tag = 21)]
    DeleteFolder { owner: u64, folder: String },
    /// `user` deleted their account (having given its password to the
    /// server that ordered this): the user, their files, the shares they
    /// granted and were granted, and their peers go; the name is free
    /// again, the id never given out again.
    #[speedy(tag = 22)]
    DeleteAccount { user: u64 },
    /// Upload complete: `holder` has the verified content. `attrs`: the
    /// source file's modification time and mode, if it had them (not a
    /// pipe's). A variant of its own, not a field added to tag 3, so that
    /// the entries servers logged before still decode (docs/replication.md,
    /// "Stores from earlier versions").
    #[speedy(tag = 23)]
    PutFile {
        owner: u64,
        name: String,
        size: u64,
        digest: [u8; 32],
        replace: bool,
        holder: u32,
        attrs: Option<FileAttrs>,
    },
    /// Uploads of one batch (`ferry put` of many files), each complete and
    /// copied like a `PutFile`'s: applied one after another as `PutFile`s
    /// would be, in one entry, so that a thousand small files cost the log
    /// a few entries and fsyncs rather than a thousand.
    #[speedy(tag = 24)]
    PutFiles {
        owner: u64,
        files: Vec<NewFile>,
        replace: bool,
        holder: u32,
    },
}

/// One file of [`Txn::PutFiles`].
#[derive(Clone, Debug, PartialEq, Eq, Readable, Writable)]
pub struct NewFile {
    pub name: String,
    pub size: u64,
    pub digest: [u8; 32],
    pub attrs: Option<FileAttrs>,
}

/// One file of [`Txn::PutFilesV1`].
#[derive(Clone, Debug, PartialEq, Eq, Readable, Writable)]
pub struct NewFileV1 {
    pub name: String,
    pub size: u64,
    pub digest: [u8; 32],
}

impl From<&NewFileV1> for NewFile {
    fn from(f: &NewFileV1) -> NewFile {
        NewFile {
            name: f.name.clone(),
            size: f.size,
            digest: f.digest,
            attrs: None,
        }
    }
}

/// Files in one [`Txn::PutFiles`] at most.
pub const BATCH_FILES: usize = 256;
/// Bytes of the names in one [`Txn::PutFiles`] at most: with
/// [`BATCH_FILES`], what keeps its entry well inside a frame.
pub const BATCH_NAME_BYTES: usize = 64 * 1024;

impl Txn {
    /// The contents this transaction names, if it stores files.
    pub fn contents(&self) -> Vec<[u8; 32]> {
        match self {
            Txn::PutFile { digest, .. } | Txn::PutFileV1 { digest, .. } => vec![*digest],
            Txn::PutFiles { files, .. } => files.iter().map(|f| f.digest).collect(),
            Txn::PutFilesV1 { files, .. } => files.iter().map(|f| f.digest).collect(),
            _ => Vec::new(),
        }
    }

    /// Does this transaction name content `d`?
    pub fn names(&self, d: &[u8; 32]) -> bool {
        match self {
            Txn::PutFile { digest, .. } | Txn::PutFileV1 { digest, .. } => digest == d,
            Txn::PutFiles { files, .. } => files.iter().any(|f| &f.digest == d),
            Txn::PutFilesV1 { files, .. } => files.iter().any(|f| &f.digest == d),
            _ => false,
        }
    }

    /// A short description for traces; never includes secrets.
    pub fn describe(&self) -> String {
        match self {
            Txn::Register { username, .. } => format!("register {username}"),
            Txn::Revoke { token_id, .. } => {
                format!("revoke {:02x}{:02x}", token_id[0], token_id[1])
            }
            Txn::PutFile {
                owner, name, size, ..
            }
            | Txn::PutFileV1 {
                owner, name, size, ..
            } => format!("put user{owner}/{name} ({size} bytes)"),
            Txn::Share {
                owner,
                name,
                grantee,
            } => format!("share user{owner}/{name} with {grantee}"),
            Txn::Unshare {
                owner,
                name,
                grantee,
            } => format!("unshare user{owner}/{name} from {grantee}"),
            Txn::Delete { owner, name } => format!("delete user{owner}/{name}"),
            Txn::Noop => "noop (new master)".into(),
            Txn::PeerJoin { user, addr, .. } => format!("peer of user{user} joins at {addr}"),
            Txn::PeerRenew { peer } => format!("peer {peer} renews"),
            Txn::PeerLeave { peer, expired } => match expired {
                true => format!("peer {peer} expires"),
                false => format!("peer {peer} leaves"),
            },
            Txn::SyncStart { peer } => format!("peer {peer} asks for a sync round"),
            Txn::SyncDone { round, peer, token } => {
                format!("peer {peer} is done writing in round {round} (token {token})")
            }
            Txn::SyncRenew { round, peer, token } => {
                format!("peer {peer} renews its write lease in round {round} (token {token})")
            }
            Txn::SyncExpire { round, token } => {
                format!("the write lease {token} of round {round} expires")
            }
            Txn::LoginFailed { username, source } => {
                format!("failed login for {username} from {source}")
            }
            Txn::LoginSucceeded { username, source } => {
                format!("login for {username} from {source}")
            }
            Txn::ChangePassword { user, .. } => format!("user{user} changes their password"),
            Txn::PutFiles { owner, files, .. } => {
                let bytes: u64 = files.iter().map(|f| f.size).sum();
                format!("put {} files of user{owner} ({bytes} bytes)", files.len())
            }
            Txn::PutFilesV1 { owner, files, .. } => {
                let bytes: u64 = files.iter().map(|f| f.size).sum();
                format!("put {} files of user{owner} ({bytes} bytes)", files.len())
            }
            Txn::ShareFolder {
                owner,
                folder,
                grantee,
            } => format!("share folder user{owner}/{folder}/ with {grantee}"),
            Txn::UnshareFolder {
                owner,
                folder,
                grantee,
            } => format!("unshare folder user{owner}/{folder}/ from {grantee}"),
            Txn::DeleteFolder { owner, folder } => format!("delete folder user{owner}/{folder}/"),
            Txn::DeleteAccount { user } => format!("user{user} deletes their account"),
        }
    }
}

/// What applying a transaction produced, as told to the client that asked.
#[derive(Clone, Debug, PartialEq, Eq, Readable, Writable)]
#[speedy(tag_type = u8)]
pub enum TxnResult {
    #[speedy(tag = 1)]
    Registered { user_id: u64 },
    #[speedy(tag = 2)]
    UsernameTaken,
    #[speedy(tag = 3)]
    Revoked,
    #[speedy(tag = 4)]
    FileStored,
    #[speedy(tag = 5)]
    FileExists,
    #[speedy(tag = 6)]
    NoSuchFile,
    #[speedy(tag = 7)]
    NoSuchUser,
    #[speedy(tag = 8)]
    Shared,
    #[speedy(tag = 9)]
    Unshared,
    #[speedy(tag = 10)]
    NotShared,
    #[speedy(tag = 11)]
    Deleted,
    #[speedy(tag = 12)]
    CannotShareWithSelf,
    #[speedy(tag = 13)]
    Noop,
    #[speedy(tag = 14)]
    PeerJoined { peer: u64 },
    #[speedy(tag = 15)]
    PeerRenewed,
    #[speedy(tag = 16)]
    PeerLeft,
    #[speedy(tag = 17)]
    NoSuchPeer,
    /// `round` started with this entry, or was running and is joined.
    #[speedy(tag = 18)]
    SyncStarted { round: u64, joined: bool },
    /// The grant moved on to `peer`, fenced by `token`.
    #[speedy(tag = 19)]
    SyncGranted { round: u64, peer: u64, token: Token },
    /// Every peer of `round`'s order has had its turn.
    #[speedy(tag = 20)]
    SyncFinished { round: u64 },
    /// The writer's lease runs on (a renewal, or an expiry that a renewal
    /// beat).
    #[speedy(tag = 21)]
    SyncRenewed,
    /// The entry named a grant that is no longer current: nothing changed.
    #[speedy(tag = 22)]
    SyncStale,
    /// The failed login is counted.
    #[speedy(tag = 23)]
    LoginFailed,
    /// The successful login is recorded (its source's count cleared).
    #[speedy(tag = 24)]
    LoginRecorded,
    /// The password is changed; tokens must now be of this epoch.
    #[speedy(tag = 25)]
    PasswordChanged { user_id: u64, epoch: u32 },
    /// A `PutFiles`: each file's result, in order (`FileStored` or
    /// `FileExists`).
    #[speedy(tag = 26)]
    Files(Vec<TxnResult>),
    /// `rm -r`: this many files went (and the folder's shares).
    #[speedy(tag = 27)]
    FolderDeleted { files: u64 },
    /// The name is a folder, or one of its folders is a file.
    #[speedy(tag = 28)]
    NameConflict { reason: String },
    /// The account is gone, with `files` files.
    // 26 is main's `Files`, 27-28 the folders': not reused.
    #[speedy(tag = 29)]
    AccountDeleted { user_id: u64, files: u64 },
    /// A `PutFiles`: each file's result, in order, with the file it was
    /// (`Files`, tag 26, is what stores written before it hold). The
    /// names let a batch tried again, whose files that reached its entry
    /// may differ from the first try's, be answered file by file with
    /// what the first try's entry did.
    #[speedy(tag = 30)]
    FilesOf(Vec<FileResult>),
}

/// One file of a `PutFiles` as applied.
#[derive(Clone, Debug, PartialEq, Eq, Readable, Writable)]
pub struct FileResult {
    /// The file's name, as [`name_key`] gives it (8 bytes, not up to
    /// 1,024: the result is kept in the dedup table).
    pub name: u64,
    pub size: u64,
    pub digest: [u8; 32],
    /// `FileStored`, `FileExists`, `NameConflict` or `NoSuchUser`.
    pub result: TxnResult,
}

/// A name as a [`FileResult`] keeps it: the first 8 bytes of its BLAKE3
/// hash (two names of one batch that collide would be two of 2^64).
pub fn name_key(name: &str) -> u64 {
    let h = blake3::hash(name.as_bytes());
    let mut k = [0u8; 8];
    k.copy_from_slice(&h.as_bytes()[..8]);
    u64::from_le_bytes(k)
}

#[derive(Clone, Debug, PartialEq, Eq, Readable, Writable)]
pub struct Entry {
    pub index: u64,
    /// The master's view when it ordered the entry: with the index, what
    /// names an entry across servers (two entries with the same index and
    /// view are the same entry; Raft's log matching).
    pub view: u64,
    /// The master's clock (Unix seconds) when it ordered the entry: the one
    /// time every replica agrees on, used for deterministic expiry.
    pub at: u64,
    pub origin: Origin,
    pub txn: Txn,
}
