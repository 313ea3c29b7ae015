//! Messages of the client ↔ server session link.

pub use super::status::{ClusterStatus, ServerStatus, UserUsage};
use crate::accounts::token::SessionToken;
use crate::auth::AuthCode;
use crate::file_attrs::FileAttrs;
use crate::refusal::Refusal;
use crate::replication::sync_round::Token;
use crate::transfer::{TransferError, TransferMsg};
use speedy::{Readable, Writable};
use std::fmt;

/// Client ↔ server. The handshake is HELLO(code) → HELLO ACK → ACK. Then
/// each operation follows the seeds: the client sends the operation's code
/// (`Begin`), the server lets it proceed (`Proceed`), the client sends the
/// operation's data, and the server answers with a result or `Failed`.
#[derive(Clone, Debug, PartialEq, Eq, Readable, Writable)]
#[speedy(tag_type = u8)]
pub enum SessionMsg {
    /// Client → server: the code the balancer gave me.
    #[speedy(tag = 20)]
    Hello { version: u16, code: AuthCode },
    /// Server → client: code accepted, your slot is held.
    #[speedy(tag = 21)]
    HelloAck { server_id: u32 },
    /// Client → server: the session is established.
    #[speedy(tag = 22)]
    Ack,
    /// The connection is closed for this reason.
    #[speedy(tag = 23)]
    Refused(Refusal),
    #[speedy(tag = 24)]
    Begin { op: OpCode },
    #[speedy(tag = 25)]
    Proceed { op: OpCode },
    /// Data of Register and Login.
    #[speedy(tag = 26)]
    Credentials { username: String, password: String },
    /// Data of Logout and WhoAmI.
    #[speedy(tag = 27)]
    Token { token: SessionToken },
    #[speedy(tag = 28)]
    Registered { user_id: u64 },
    #[speedy(tag = 29)]
    LoggedIn { user_id: u64, token: SessionToken },
    #[speedy(tag = 30)]
    LoggedOut,
    #[speedy(tag = 31)]
    Me { user_id: u64, username: String },
    /// The operation failed; the session goes on.
    #[speedy(tag = 32)]
    Failed(OpError),
    /// Client → server, while idle: I am still here.
    #[speedy(tag = 33)]
    Ping,
    /// Server → client: so am I.
    #[speedy(tag = 34)]
    Pong,
    /// File content, either way (the transfer engine's messages).
    #[speedy(tag = 35)]
    Transfer(TransferMsg),
    /// Data of Download (owner: `None` for one's own) and Delete.
    #[speedy(tag = 36)]
    FileName { owner: Option<String>, name: String },
    /// Data of Share and Unshare.
    #[speedy(tag = 37)]
    ShareWith { name: String, user: String },
    /// Data of List.
    #[speedy(tag = 38)]
    ListAll,
    #[speedy(tag = 39)]
    Listing { files: Vec<Listed> },
    #[speedy(tag = 40)]
    FileDone(FileOutcome),
    /// Server → client, during a download whose content this server is
    /// still fetching from another: `bytes` of `size` have arrived. Sent
    /// about once a second while the fetch moves, so that a large file is
    /// waited for as long as it keeps coming, not for a fixed time. Also
    /// during an upload stored here whose copies to other servers are
    /// made from this server's copy (a resumed upload's): `bytes` of
    /// `size` are on the furthest copy.
    #[speedy(tag = 41)]
    Fetching { bytes: u64, size: u64 },
    /// Client → server, right after `Ack` and before any operation: this
    /// session runs the client's command `id` (random, the same on each try
    /// of the command), so that a command retried through another server
    /// is applied once. `done`: the command's numbered operations
    /// (`OpCode::numbered`) answered on earlier tries, which this try does
    /// not send again; its first gets number `done + 1`.
    #[speedy(tag = 42)]
    Command { id: u64, done: u64 },
    /// Data of PeerRegister: where the peer listens for other peers.
    #[speedy(tag = 43)]
    PeerAddr { addr: String },
    /// REGISTER OK: the peer's id, and the ticket it presents to others.
    #[speedy(tag = 44)]
    PeerRegistered { peer: u64, ticket: [u8; 32] },
    /// UPDATE: the registered peers, pushed at registration and after every
    /// change.
    #[speedy(tag = 45)]
    PeerUpdate { peers: Vec<PeerInfo> },
    /// Data of Sync: the seeds' SYNC, from a registered peer's session.
    #[speedy(tag = 46)]
    Sync,
    /// Sync's answer: the round the peer takes part in (started by its
    /// SYNC, or the one already running).
    #[speedy(tag = 47)]
    SyncStarted { round: u64 },
    /// SYNC OK, server → the writer's session: write access under `token`
    /// until SYNC FIN (or the lease runs out). `order`: the round's turns.
    #[speedy(tag = 48)]
    SyncOk {
        round: u64,
        token: Token,
        order: Vec<u64>,
    },
    /// SYNC READ, server → every other peer session: `writer` holds write
    /// access under `token`; refuse anything stamped with a lower one.
    #[speedy(tag = 49)]
    SyncRead {
        round: u64,
        writer: u64,
        token: Token,
        order: Vec<u64>,
    },
    /// Server → peer sessions told of `round`: every turn is over.
    #[speedy(tag = 50)]
    SyncEnd { round: u64 },
    /// SYNC FIN, the writer → its server, at any time (not an operation):
    /// done writing under `token`.
    #[speedy(tag = 51)]
    SyncFin { round: u64, token: Token },
    /// The writer → its server, at any time, at least every 10 s while it
    /// is still sending files: its write lease goes on.
    #[speedy(tag = 52)]
    SyncWriting { round: u64, token: Token },
    /// Data of ChangePassword: the login it is for, the password now, and
    /// the new one. Answered with `LoggedIn` and a token of the new
    /// password (every token issued before is refused from then on).
    #[speedy(tag = 53)]
    ChangePassword {
        token: SessionToken,
        current: String,
        new: String,
    },
    /// Data of UploadMany: `files` transfers follow, with ids `0..files`
    /// offered in order, several at once.
    #[speedy(tag = 54)]
    Batch { files: u32 },
    /// UploadMany's answer: what became of each file, by id.
    #[speedy(tag = 55)]
    BatchDone { outcomes: Vec<Landed> },
    /// Data of List: only the files under folder `prefix` (at any depth).
    #[speedy(tag = 56)]
    ListUnder { prefix: String },
    // 59 is the range's last: DeleteAccount is answered with `LoggedOut`
    // (every session of the account is over).
    /// Data of Status: the login whose own files to count, if any.
    #[speedy(tag = 57)]
    StatusOf { token: Option<SessionToken> },
    /// Status's answer.
    #[speedy(tag = 58)]
    Status(ClusterStatus),
    /// Data of DeleteAccount: the login to delete, and its password.
    /// Answered `LoggedOut` once the account is gone everywhere.
    #[speedy(tag = 59)]
    DeleteAccount {
        token: SessionToken,
        password: String,
    },
    /// Either way, right after the OFFER of transfer `id` (an upload's by
    /// the client, a download's by the server) and before anything else of
    /// it: the file's modification time and mode. Absent for a file that
    /// has none (read from a pipe, or stored before attributes existed).
    #[speedy(tag = 120)]
    Attrs { id: u64, attrs: FileAttrs },
    /// Data of DownloadMany: the files wanted, each `(owner, name)` as in
    /// `FileName`. The server offers them as transfers whose id is their
    /// place here, several at once.
    #[speedy(tag = 150)]
    FileNames {
        files: Vec<(Option<String>, String)>,
    },
    /// DownloadMany's answer, once every transfer has ended: what became
    /// of each file, by id (`Stored`: sent whole, and acknowledged).
    #[speedy(tag = 151)]
    SentAll { outcomes: Vec<Landed> },
    /// Data of List, for every page after the first: the files listed
    /// after `after` (in the listing's order), all of them or only those
    /// under folder `prefix`.
    #[speedy(tag = 152)]
    ListAfter {
        prefix: Option<String>,
        after: ListCursor,
    },
    /// List's answer when more files follow than one frame holds: a page,
    /// and where the next one starts (asked for with `ListAfter`, as a new
    /// List operation). The last page is a `Listing`: a listing that fits
    /// in one frame is answered just as before pages existed.
    #[speedy(tag = 153)]
    ListingPart {
        files: Vec<Listed>,
        next: ListCursor,
    },
}

/// The last file of a listing's page: its owner's id and its name. A
/// listing is in the order of the user's own files by name, then the
/// files shared with them by owner and name.
#[derive(Clone, Debug, PartialEq, Eq, Readable, Writable)]
pub struct ListCursor {
    pub owner: u64,
    pub name: String,
}

/// What became of one file of a batch.
#[derive(Clone, Debug, PartialEq, Eq, Readable, Writable)]
#[speedy(tag_type = u8)]
pub enum Landed {
    Stored { size: u64, digest: [u8; 32] },
    Failed(OpError),
}

/// One registered peer, as UPDATE lists it.
#[derive(Clone, Debug, PartialEq, Eq, Readable, Writable)]
pub struct PeerInfo {
    pub peer: u64,
    pub user: String,
    pub addr: String,
    /// BLAKE3 of the ticket the peer presents on connect.
    pub ticket_digest: [u8; 32],
    /// The fingerprint of its certificate: only the holder of its key is
    /// that peer.
    pub key: Option<crate::tls::Fingerprint>,
}

/// First tag byte of [`SessionMsg`] frames: 20..60, full since protocol 6,
/// and 120..160 for the messages after.
pub const SESSION_TAGS: Tags = Tags(&[20..60, 120..160]);

/// Tag ranges of one kind of link.
pub struct Tags(pub &'static [std::ops::Range<u8>]);

impl Tags {
    pub fn contains(&self, tag: &u8) -> bool {
        self.0.iter().any(|r| r.contains(tag))
    }
}

/// The seeds' "request special codes".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Readable, Writable)]
#[speedy(tag_type = u8)]
pub enum OpCode {
    Register,
    Login,
    Logout,
    /// Also authenticates the session for the file operations that follow.
    WhoAmI,
    Upload,
    /// Upload that replaces a file of the same name (`--force`).
    UploadReplace,
    Download,
    List,
    Share,
    Unshare,
    Delete,
    /// Register this session's peer with the tracker (`ferry peer`).
    PeerRegister,
    /// SYNC: ask for a round among the registered peers (a peer session).
    Sync,
    /// Change the password of the login the data carries (`ferry passwd`).
    ChangePassword,
    /// Several uploads in one operation (`ferry put` of many files): their
    /// transfers overlap and the cluster orders them as one transaction.
    UploadMany,
    /// UploadMany replacing files of the same names (`--force`).
    UploadManyReplace,
    /// `rm -r`: a folder and everything under it (data: `FileName`).
    DeleteFolder,
    /// The cluster's servers, and the user's own files if the data carries
    /// a login (`ferry status`).
    Status,
    /// Delete the account of the login the data carries, with everything
    /// it owns (`ferry account delete`).
    DeleteAccount,
    /// Receive several files in one operation (`ferry get A B C DIR`).
    DownloadMany,
}

impl OpCode {
    /// Operations a client-named command numbers (see
    /// `SessionMsg::Command`): the ones that may order a transaction, whose
    /// result a try through another server must find in the log. Reads are
    /// not numbered, so that a try may send again what it needs (the proof
    /// of its login) and leave out what was answered.
    pub fn numbered(self) -> bool {
        !matches!(
            self,
            OpCode::WhoAmI
                | OpCode::Download
                | OpCode::DownloadMany
                | OpCode::List
                | OpCode::Status
        )
    }

    /// Operations that act as a logged-in user.
    pub fn needs_login(self) -> bool {
        !matches!(
            self,
            OpCode::Register
                | OpCode::Login
                | OpCode::Logout
                | OpCode::WhoAmI
                | OpCode::ChangePassword
                | OpCode::Status
                | OpCode::DeleteAccount
        )
    }
}

/// One line of `ferry ls`.
#[derive(Clone, Debug, PartialEq, Eq, Readable, Writable)]
pub struct Listed {
    pub owner: String,
    pub name: String,
    pub size: u64,
    /// Unix seconds of the upload.
    pub at: u64,
    /// For one's own files: who they are shared with.
    pub shared_with: Vec<String>,
    /// The file's modification time and mode, if it has them.
    pub attrs: Option<FileAttrs>,
}

#[derive(Clone, Debug, PartialEq, Eq, Readable, Writable)]
#[speedy(tag_type = u8)]
pub enum FileOutcome {
    Stored {
        size: u64,
        digest: [u8; 32],
    },
    Shared,
    Unshared,
    Deleted,
    /// `rm -r`: this many files went.
    FolderDeleted {
        files: u64,
    },
}

/// Why an operation failed. Each has one clear message.
#[derive(Clone, Debug, PartialEq, Eq, Readable, Writable)]
#[speedy(tag_type = u8)]
pub enum OpError {
    UsernameTaken,
    InvalidUsername {
        reason: String,
    },
    InvalidPassword {
        reason: String,
    },
    /// Unknown user and wrong password look the same on purpose.
    BadCredentials,
    RateLimited {
        retry_after_secs: u64,
    },
    InvalidSession {
        reason: String,
    },
    /// The cluster could not complete the operation now; it may have taken
    /// effect anyway if it was already ordered.
    Unavailable {
        reason: String,
    },
    /// File operations need a session proven by a login token first.
    NotAuthenticated,
    /// No such file, or not shared with you (the same answer on purpose).
    NoSuchFile,
    NoSuchUser,
    FileExists,
    CannotShareWithSelf,
    NotShared,
    BadName {
        reason: String,
    },
    Transfer(TransferError),
    BadPeerAddress {
        reason: String,
    },
    /// A peer operation on a session that registered no peer (or whose
    /// peer has left the registry).
    NotAPeer,
    /// `rm NAME` of a folder (it takes `rm -r`).
    IsAFolder,
    /// The name is a folder, or one of its folders is a file.
    NameConflict {
        reason: String,
    },
}

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpError::UsernameTaken => f.write_str("username taken"),
            OpError::InvalidUsername { reason } => write!(f, "invalid username: {reason}"),
            OpError::InvalidPassword { reason } => write!(f, "invalid password: {reason}"),
            OpError::BadCredentials => f.write_str("invalid username or password"),
            OpError::RateLimited { retry_after_secs } => write!(
                f,
                "too many failed logins; try again in {retry_after_secs} s"
            ),
            OpError::InvalidSession { reason } => {
                write!(f, "not logged in ({reason}); run `ferry login`")
            }
            OpError::Unavailable { reason } => write!(f, "cluster unavailable: {reason}"),
            OpError::NotAuthenticated => f.write_str("not logged in; run `ferry login`"),
            OpError::NoSuchFile => f.write_str("no such file (or it is not shared with you)"),
            OpError::NoSuchUser => f.write_str("no such user"),
            OpError::FileExists => {
                f.write_str("a file of that name exists; use --force to replace it")
            }
            OpError::CannotShareWithSelf => f.write_str("you own that file already"),
            OpError::NotShared => f.write_str("the file is not shared with that user"),
            OpError::BadName { reason } => write!(f, "bad file name: {reason}"),
            OpError::BadPeerAddress { reason } => write!(f, "bad peer address: {reason}"),
            OpError::NotAPeer => f.write_str("this session has no registered peer; register first"),
            OpError::IsAFolder => f.write_str("that is a folder; remove it with rm -r"),
            OpError::NameConflict { reason } => {
                write!(f, "{reason}: a name is a file or a folder, not both")
            }
            OpError::Transfer(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for OpError {}

/// What a client asks for.
#[derive(Clone, PartialEq, Eq)]
pub enum Request {
    Register {
        username: String,
        password: String,
    },
    Login {
        username: String,
        password: String,
    },
    Logout {
        token: SessionToken,
    },
    WhoAmI {
        token: SessionToken,
    },
    /// Send the command's local file (`FileRef::Local`) of `size` bytes;
    /// `attrs`: its modification time and mode, to keep with it.
    Upload {
        name: String,
        size: u64,
        replace: bool,
        attrs: Option<FileAttrs>,
    },
    /// Send the command's local files, file `i` read through handle `i`,
    /// as one batch of at most [`crate::replication::entry::BATCH_FILES`].
    /// `attrs[i]`: file `i`'s modification time and mode (none past the
    /// end).
    UploadMany {
        files: Vec<(String, u64)>,
        replace: bool,
        attrs: Vec<Option<FileAttrs>>,
    },
    /// Receive into the command's local file (`FileRef::Local`).
    Download {
        owner: Option<String>,
        name: String,
    },
    /// Receive the files `(owner, name)`, file `i` written through temporary
    /// handle `i` and persisted to `FileRef::Local`, whose place the
    /// command's world knows by that handle. At most
    /// [`crate::replication::entry::BATCH_FILES`].
    DownloadMany {
        files: Vec<(Option<String>, String)>,
    },
    List,
    /// List the files under folder `prefix`.
    ListUnder {
        prefix: String,
    },
    Share {
        name: String,
        user: String,
    },
    Unshare {
        name: String,
        user: String,
    },
    Delete {
        name: String,
    },
    /// A folder and everything under it (or a file of that name).
    DeleteFolder {
        name: String,
    },
    /// Register with the tracker as a peer listening at `addr`.
    PeerRegister {
        addr: String,
    },
    /// SYNC: a round among the registered peers, for this session's peer.
    Sync,
    /// Changes the password of `token`'s user from `current` to `new`.
    ChangePassword {
        token: SessionToken,
        current: String,
        new: String,
    },
    /// The cluster's servers; with a login, its user's files too.
    Status {
        token: Option<SessionToken>,
    },
    /// Deletes `token`'s user, who proves it again with `password`.
    DeleteAccount {
        token: SessionToken,
        password: String,
    },
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Passwords never reach a log or a trace.
        match self {
            Request::Register { username, .. } => write!(f, "Register({username})"),
            Request::Login { username, .. } => write!(f, "Login({username})"),
            Request::Logout { token } => write!(f, "Logout(user {})", token.user_id),
            Request::WhoAmI { token } => write!(f, "WhoAmI(user {})", token.user_id),
            Request::Upload { name, size, .. } => write!(f, "Upload({name}, {size})"),
            Request::UploadMany { files, .. } => write!(f, "UploadMany({} files)", files.len()),
            Request::Download { owner, name } => write!(f, "Download({owner:?}, {name})"),
            Request::DownloadMany { files } => write!(f, "DownloadMany({} files)", files.len()),
            Request::List => f.write_str("List"),
            Request::ListUnder { prefix } => write!(f, "ListUnder({prefix})"),
            Request::DeleteFolder { name } => write!(f, "DeleteFolder({name})"),
            Request::Share { name, user } => write!(f, "Share({name}, {user})"),
            Request::Unshare { name, user } => write!(f, "Unshare({name}, {user})"),
            Request::Delete { name } => write!(f, "Delete({name})"),
            Request::PeerRegister { addr } => write!(f, "PeerRegister({addr})"),
            Request::Sync => f.write_str("Sync"),
            Request::ChangePassword { token, .. } => {
                write!(f, "ChangePassword(user {})", token.user_id)
            }
            Request::Status { token } => {
                write!(f, "Status(user {:?})", token.as_ref().map(|t| t.user_id))
            }
            Request::DeleteAccount { token, .. } => {
                write!(f, "DeleteAccount(user {})", token.user_id)
            }
        }
    }
}

impl Request {
    pub fn op(&self) -> OpCode {
        match self {
            Request::Register { .. } => OpCode::Register,
            Request::Login { .. } => OpCode::Login,
            Request::Logout { .. } => OpCode::Logout,
            Request::WhoAmI { .. } => OpCode::WhoAmI,
            Request::Upload { replace: false, .. } => OpCode::Upload,
            Request::Upload { replace: true, .. } => OpCode::UploadReplace,
            Request::UploadMany { replace: false, .. } => OpCode::UploadMany,
            Request::UploadMany { replace: true, .. } => OpCode::UploadManyReplace,
            Request::Download { .. } => OpCode::Download,
            Request::List | Request::ListUnder { .. } => OpCode::List,
            Request::DeleteFolder { .. } => OpCode::DeleteFolder,
            Request::Share { .. } => OpCode::Share,
            Request::Unshare { .. } => OpCode::Unshare,
            Request::Delete { .. } => OpCode::Delete,
            Request::PeerRegister { .. } => OpCode::PeerRegister,
            Request::Sync => OpCode::Sync,
            Request::ChangePassword { .. } => OpCode::ChangePassword,
            Request::Status { .. } => OpCode::Status,
            Request::DeleteAccount { .. } => OpCode::DeleteAccount,
            Request::DownloadMany { .. } => OpCode::DownloadMany,
        }
    }

    /// The data message that follows `Proceed`; an upload's is the
    /// transfer's OFFER, which its sender makes.
    pub fn payload(&self) -> SessionMsg {
        match self {
            Request::Upload { name, size, .. } => SessionMsg::Transfer(TransferMsg::Offer {
                id: 0,
                name: name.clone(),
                size: *size,
            }),
            Request::Download { owner, name } => SessionMsg::FileName {
                owner: owner.clone(),
                name: name.clone(),
            },
            Request::Delete { name } | Request::DeleteFolder { name } => SessionMsg::FileName {
                owner: None,
                name: name.clone(),
            },
            Request::List => SessionMsg::ListAll,
            Request::DownloadMany { files } => SessionMsg::FileNames {
                files: files.clone(),
            },
            Request::UploadMany { files, .. } => SessionMsg::Batch {
                files: files.len() as u32,
            },
            Request::ListUnder { prefix } => SessionMsg::ListUnder {
                prefix: prefix.clone(),
            },
            Request::Share { name, user } | Request::Unshare { name, user } => {
                SessionMsg::ShareWith {
                    name: name.clone(),
                    user: user.clone(),
                }
            }
            Request::Register { username, password } | Request::Login { username, password } => {
                SessionMsg::Credentials {
                    username: username.clone(),
                    password: password.clone(),
                }
            }
            Request::Logout { token } | Request::WhoAmI { token } => SessionMsg::Token {
                token: token.clone(),
            },
            Request::PeerRegister { addr } => SessionMsg::PeerAddr { addr: addr.clone() },
            Request::Sync => SessionMsg::Sync,
            Request::ChangePassword {
                token,
                current,
                new,
            } => SessionMsg::ChangePassword {
                token: token.clone(),
                current: current.clone(),
                new: new.clone(),
            },
            Request::Status { token } => SessionMsg::StatusOf {
                token: token.clone(),
            },
            Request::DeleteAccount { token, password } => SessionMsg::DeleteAccount {
                token: token.clone(),
                password: password.clone(),
            },
        }
    }
}

/// What a client gets back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    Registered {
        user_id: u64,
    },
    LoggedIn {
        user_id: u64,
        token: SessionToken,
    },
    LoggedOut,
    Me {
        user_id: u64,
        username: String,
    },
    Listing(Vec<Listed>),
    File(FileOutcome),
    /// The download is complete, verified, and in the local file.
    Downloaded {
        size: u64,
        digest: [u8; 32],
    },
    /// REGISTER OK: the peer's id and its ticket.
    PeerRegistered {
        peer: u64,
        ticket: [u8; 32],
    },
    /// SYNC's answer: the round this peer takes part in.
    SyncStarted {
        round: u64,
    },
    /// UploadMany's answer: each file's, by its place in the request.
    Batch(Vec<Landed>),
    /// DownloadMany's answer: each file's, by its place in the request
    /// (`Stored`: received whole, verified and persisted).
    Received(Vec<Landed>),
    Status(ClusterStatus),
    Failed(OpError),
}

impl Response {
    /// The response a server message carries, if it is one.
    pub fn from_msg(msg: &SessionMsg) -> Option<Response> {
        Some(match msg {
            SessionMsg::Registered { user_id } => Response::Registered { user_id: *user_id },
            SessionMsg::LoggedIn { user_id, token } => Response::LoggedIn {
                user_id: *user_id,
                token: token.clone(),
            },
            SessionMsg::LoggedOut => Response::LoggedOut,
            SessionMsg::Me { user_id, username } => Response::Me {
                user_id: *user_id,
                username: username.clone(),
            },
            SessionMsg::Failed(e) => Response::Failed(e.clone()),
            SessionMsg::Listing { files } => Response::Listing(files.clone()),
            SessionMsg::FileDone(o) => Response::File(o.clone()),
            SessionMsg::PeerRegistered { peer, ticket } => Response::PeerRegistered {
                peer: *peer,
                ticket: *ticket,
            },
            SessionMsg::SyncStarted { round } => Response::SyncStarted { round: *round },
            SessionMsg::BatchDone { outcomes } => Response::Batch(outcomes.clone()),
            SessionMsg::SentAll { outcomes } => Response::Received(outcomes.clone()),
            SessionMsg::Status(s) => Response::Status(s.clone()),
            _ => return None,
        })
    }
}

impl fmt::Display for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Response::Registered { user_id } => write!(f, "registered as user {user_id}"),
            Response::LoggedIn { user_id, token } => {
                write!(f, "logged in as {} (user {user_id})", token.username)
            }
            Response::LoggedOut => f.write_str("logged out"),
            Response::Me { user_id, username } => write!(f, "{username} (user {user_id})"),
            Response::PeerRegistered { peer, .. } => write!(f, "REGISTER OK: peer {peer}"),
            Response::SyncStarted { round } => write!(f, "SYNC: round {round}"),
            Response::Listing(files) => write!(f, "{} file(s)", files.len()),
            Response::File(FileOutcome::Stored { size, .. }) => write!(f, "stored {size} bytes"),
            Response::File(FileOutcome::Shared) => f.write_str("shared"),
            Response::File(FileOutcome::Unshared) => f.write_str("unshared"),
            Response::File(FileOutcome::Deleted) => f.write_str("deleted"),
            Response::File(FileOutcome::FolderDeleted { files }) => {
                write!(f, "deleted a folder of {files} file(s)")
            }
            Response::Downloaded { size, .. } => write!(f, "downloaded {size} bytes"),
            Response::Batch(outcomes) => {
                let stored = (outcomes.iter())
                    .filter(|o| matches!(o, Landed::Stored { .. }))
                    .count();
                write!(f, "stored {stored} of {} files", outcomes.len())
            }
            Response::Received(outcomes) => {
                let got = (outcomes.iter())
                    .filter(|o| matches!(o, Landed::Stored { .. }))
                    .count();
                write!(f, "received {got} of {} files", outcomes.len())
            }
            Response::Status(s) => write!(f, "status of {} server(s)", s.servers.len()),
            Response::Failed(e) => write!(f, "failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tag_tests {
    use super::SESSION_TAGS;
    use crate::balancer::messages::{BALANCER_TAGS, PROBE_TAGS};
    use crate::peer::messages::PEER_TAGS;
    use crate::replication::messages::REPLICA_TAGS;
    use crate::server::BLOB_TAGS;

    #[test]
    fn every_link_has_its_own_tags() {
        let mut ranges = vec![
            BALANCER_TAGS,
            PROBE_TAGS,
            BLOB_TAGS,
            REPLICA_TAGS,
            PEER_TAGS,
        ];
        ranges.extend(SESSION_TAGS.0.iter().cloned());
        for tag in 0..=u8::MAX {
            let owners = ranges.iter().filter(|r| r.contains(&tag)).count();
            assert!(owners <= 1, "tag {tag} belongs to {owners} links");
        }
    }
}
