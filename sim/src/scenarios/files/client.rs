//! The programs of the files scenario: file clients that upload (one file,
//! or a batch: file `i` read through handle `i`), download, share,
//! unshare, delete and list as one user, and the verifier of the
//! healed cluster. (Users are registered and logged in by the replication
//! scenario's account client, before any of this.)
//!
//! A file client runs its planned operations one after the other. Each needs
//! a session proven with `WhoAmI { token }` (the user's login token): the
//! client opens one through the balancer when it has none, or when the plan
//! says to start afresh, and keeps it while the operations succeed. An
//! operation that ends without an answer (a timeout, a lost session) costs
//! the session. Its local file is an in-memory [`LocalFile`]: the source of
//! an upload, the destination of a download.
//!
//! Around each operation the client leaves [`Stamp`]s for the harness, which
//! pins down which points of the log the answer may reflect (see
//! [`super::invariants`]).

use crate::clients::session::{self, OpEnd};
use crate::disk::{describe_attrs, short, LocalFile, ManyFiles, SharedLocal, SimFiles};
use crate::driver::{Describe, Driver, DriverConfig};
use crate::harness::{server_host, server_port, BALANCER, BALANCER_PORT};
use crate::seeds::SimRng;
use crate::trace::SharedTrace;
use ferry_core::accounts::token::SessionToken;
use ferry_core::client::{Client, ClientConfig, ClientError, ClientEvent};
use ferry_core::server::messages::{FileOutcome, Landed};
use ferry_core::server::{OpError, Request, Response};
use ferry_core::transfer::TransferError;
use ferry_core::FileAttrs;
use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::fmt;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// Pause before a client tries another session.
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Sessions a client tries before it gives up on an operation.
const SESSION_TRIES: u32 = 2;

/// One user of the scenario.
#[derive(Clone, Debug)]
pub struct UserPlan {
    pub username: String,
    pub password: String,
}

/// One file of a batch of uploads, in the plan.
#[derive(Clone)]
pub struct BatchFile {
    pub name: String,
    pub content: Arc<[u8]>,
    pub digest: [u8; 32],
}

impl fmt::Debug for BatchFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} ({} bytes, {})",
            self.name,
            self.content.len(),
            short(&self.digest)
        )
    }
}

/// What a file client does, in its plan.
#[derive(Clone)]
pub enum OpPlan {
    Upload {
        name: String,
        content: Arc<[u8]>,
        digest: [u8; 32],
        replace: bool,
        /// The modification time and mode the client sends with it.
        attrs: Option<FileAttrs>,
    },
    /// `ferry put` of several files: one batch (`UploadMany`), file `i`
    /// read through handle `i`, each stored or failed on its own and the
    /// stored ones ordered as one `PutFiles` entry.
    UploadMany {
        files: Vec<BatchFile>,
        replace: bool,
    },
    /// `ferry put` of more files than one batch takes: a command the
    /// client names (`SessionMsg::Command { id, done }`), its batches sent
    /// one after the other in one session, each recorded as an
    /// `UploadMany` with its place in the command ([`CommandStep`]). If
    /// the session is lost (or dies as `die` says), the command is tried
    /// once more through another server from its first batch not answered,
    /// as `ferry` does: each batch sent again must be applied once, and
    /// each answer must be what the cluster did.
    PutCommand {
        id: u64,
        batches: Vec<Vec<BatchFile>>,
        replace: bool,
        die: Option<(usize, Die)>,
    },
    /// `owner`: an index into the users, `None` for one's own file.
    Download {
        owner: Option<usize>,
        name: String,
    },
    /// `ferry get` of several files: one batch (`DownloadMany`), each
    /// file `(owner, name)` as a single download names it, received
    /// through temporary handle `i` into a destination of its own.
    DownloadMany {
        files: Vec<(Option<usize>, String)>,
    },
    Share {
        name: String,
        user: usize,
    },
    Unshare {
        name: String,
        user: usize,
    },
    Delete {
        name: String,
    },
    /// `rm -r`: a folder and everything under it.
    DeleteFolder {
        name: String,
    },
    List,
    /// `ls`, then download the listed file `pick % files` (if any): the
    /// user's way to find files shared with them.
    Browse {
        pick: u32,
    },
    /// `ferry account delete`, with the user's password: the user, their
    /// files and shares go. Only ever a client's last step; the user's
    /// other clients find their sessions refused from then on.
    DeleteAccount,
}

/// Where the first try of a [`OpPlan::PutCommand`] dies, in the batch
/// its plan names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Die {
    /// Once every byte of the batch is acknowledged: its answer is lost,
    /// though the cluster may apply it.
    Sent,
    /// Right after the batch's answer.
    Answered,
}

/// An operation's place in a client-named command: the command's id and
/// the operation's number in it (its batches count from 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct CommandStep {
    pub id: u64,
    pub number: u64,
}

impl OpPlan {
    /// The request of a client of `user`, whose login is `token`; `None`
    /// for [`OpPlan::Browse`], which becomes a `List` and a `Download` as
    /// it runs.
    pub fn request(
        &self,
        users: &[UserPlan],
        user: usize,
        token: &SessionToken,
    ) -> Option<Request> {
        Some(match self {
            OpPlan::Upload {
                name,
                content,
                replace,
                attrs,
                ..
            } => Request::Upload {
                name: name.clone(),
                size: content.len() as u64,
                replace: *replace,
                attrs: *attrs,
            },
            OpPlan::UploadMany { files, replace } => Request::UploadMany {
                files: (files.iter())
                    .map(|f| (f.name.clone(), f.content.len() as u64))
                    .collect(),
                replace: *replace,
                // As from pipes: the batch's files carry no attributes.
                attrs: Vec::new(),
            },
            OpPlan::Download { owner, name } => Request::Download {
                owner: owner.map(|u| users[u].username.clone()),
                name: name.clone(),
            },
            OpPlan::DownloadMany { files } => Request::DownloadMany {
                files: (files.iter())
                    .map(|(o, n)| (o.map(|u| users[u].username.clone()), n.clone()))
                    .collect(),
            },
            OpPlan::Share { name, user } => Request::Share {
                name: name.clone(),
                user: users[*user].username.clone(),
            },
            OpPlan::Unshare { name, user } => Request::Unshare {
                name: name.clone(),
                user: users[*user].username.clone(),
            },
            OpPlan::Delete { name } => Request::Delete { name: name.clone() },
            OpPlan::DeleteFolder { name } => Request::DeleteFolder { name: name.clone() },
            OpPlan::List => Request::List,
            OpPlan::PutCommand { .. } => return None,
            OpPlan::DeleteAccount => Request::DeleteAccount {
                token: token.clone(),
                password: users[user].password.clone(),
            },
            OpPlan::Browse { .. } => return None,
        })
    }

    /// One line for the plan and the trace.
    pub fn describe(&self, users: &[UserPlan]) -> String {
        match self {
            OpPlan::Upload {
                name,
                content,
                digest,
                replace,
                attrs,
            } => format!(
                "upload {name:?} ({} bytes, {}){}{}",
                content.len(),
                short(digest),
                if *replace { " --force" } else { "" },
                attrs.map_or(String::new(), |a| format!(" ({})", describe_attrs(&a)))
            ),
            OpPlan::UploadMany { files, replace } => {
                let each: Vec<String> = files.iter().map(|f| format!("{f:?}")).collect();
                format!(
                    "upload {} files: {}{}",
                    files.len(),
                    each.join(", "),
                    if *replace { " --force" } else { "" }
                )
            }
            OpPlan::PutCommand {
                batches,
                replace,
                die,
                ..
            } => {
                let files: usize = batches.iter().map(Vec::len).sum();
                format!(
                    "put {files} files as one command of {} batches{}{}",
                    batches.len(),
                    if *replace { " --force" } else { "" },
                    match die {
                        None => String::new(),
                        Some((i, Die::Sent)) => format!(" (dies once batch {} is sent)", i + 1),
                        Some((i, Die::Answered)) =>
                            format!(" (dies once batch {} is answered)", i + 1),
                    }
                )
            }
            OpPlan::Download { owner: None, name } => format!("download {name:?}"),
            OpPlan::Download {
                owner: Some(o),
                name,
            } => format!("download {}'s {name:?}", users[*o].username),
            OpPlan::DownloadMany { files } => {
                let each: Vec<String> = (files.iter())
                    .map(|(o, n)| match o {
                        None => format!("{n:?}"),
                        Some(o) => format!("{}'s {n:?}", users[*o].username),
                    })
                    .collect();
                format!("download {} files: {}", files.len(), each.join(", "))
            }
            OpPlan::Share { name, user } => {
                format!("share {name:?} with {}", users[*user].username)
            }
            OpPlan::Unshare { name, user } => {
                format!("unshare {name:?} from {}", users[*user].username)
            }
            OpPlan::Delete { name } => format!("delete {name:?}"),
            OpPlan::DeleteFolder { name } => format!("delete folder {name:?}"),
            OpPlan::List => "ls".to_string(),
            OpPlan::Browse { .. } => "ls, then get a listed file".to_string(),
            OpPlan::DeleteAccount => "delete the account".to_string(),
        }
    }
}

impl fmt::Debug for OpPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpPlan::Upload {
                name,
                content,
                digest,
                replace,
                attrs,
            } => write!(
                f,
                "Upload({name:?}, {} bytes, {}, replace: {replace}, attrs: {attrs:?})",
                content.len(),
                short(digest)
            ),
            OpPlan::UploadMany { files, replace } => {
                write!(f, "UploadMany({files:?}, replace: {replace})")
            }
            OpPlan::PutCommand {
                id,
                batches,
                replace,
                die,
            } => write!(
                f,
                "PutCommand({id:#x}, {batches:?}, replace: {replace}, die: {die:?})"
            ),
            OpPlan::Download { owner, name } => write!(f, "Download({owner:?}, {name:?})"),
            OpPlan::DownloadMany { files } => write!(f, "DownloadMany({files:?})"),
            OpPlan::Share { name, user } => write!(f, "Share({name:?}, user #{user})"),
            OpPlan::Unshare { name, user } => write!(f, "Unshare({name:?}, user #{user})"),
            OpPlan::Delete { name } => write!(f, "Delete({name:?})"),
            OpPlan::DeleteFolder { name } => write!(f, "DeleteFolder({name:?})"),
            OpPlan::List => f.write_str("List"),
            OpPlan::Browse { pick } => write!(f, "Browse({pick})"),
            OpPlan::DeleteAccount => f.write_str("DeleteAccount"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Step {
    /// Pause before the operation.
    pub think: Duration,
    /// Close the current session first and open another.
    pub new_session: bool,
    pub op: OpPlan,
    /// An upload whose client dies once this many of its bytes are
    /// acknowledged (its session dropped where it stands), and which is
    /// run again at once, on a new session that asks the same server
    /// first, as `ferry put` does after a cut-off upload: the server kept
    /// what arrived, and the upload may resume from it.
    pub cut: Option<u64>,
}

#[derive(Clone, Debug)]
pub struct FilesClientPlan {
    /// The host name.
    pub name: String,
    /// Index into the users.
    pub user: usize,
    /// After the setup.
    pub start: Duration,
    pub steps: Vec<Step>,
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpResult {
    /// No session proven as the user could be had.
    NoSession(String),
    /// The server answered (a download's answer is the client's own
    /// `Downloaded` once the file is in place).
    Answer(Response),
    /// It failed on the client's side (a timeout, a refusal).
    Failed(ClientError),
    /// The session ended before the answer came.
    Lost,
}

impl fmt::Display for OpResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpResult::NoSession(e) => write!(f, "no session: {e}"),
            OpResult::Answer(r) => r.fmt(f),
            OpResult::Failed(e) => write!(f, "failed: {e}"),
            OpResult::Lost => f.write_str("session lost before the answer"),
        }
    }
}

/// A file of a batch of downloads as its local destination holds it
/// afterwards, with the attributes it was given; `None`: no file.
pub type LocalCopy = Option<(Arc<[u8]>, Option<FileAttrs>)>;

/// One operation as it happened.
#[derive(Clone, Debug)]
pub struct OpRecord {
    /// What it was (a browse step makes a `List` and a `Download`).
    pub op: OpPlan,
    /// The session's server.
    pub server: Option<u32>,
    pub started: Duration,
    pub ended: Duration,
    /// `None` while it runs.
    pub result: Option<OpResult>,
    /// A download's local file afterwards (`None`: no file).
    pub local: Option<Arc<[u8]>>,
    /// The attributes the client gave that file (`SetAttrs`), if any.
    pub local_attrs: Option<FileAttrs>,
    /// A batch of downloads' local files afterwards, file `i` at `i`
    /// (`None`: no file), with the attributes each was given.
    pub locals: Vec<LocalCopy>,
    /// The durably applied index of the session's server before the
    /// request was sent (a floor: it never decreases), set by the harness.
    pub lo: Option<u64>,
    /// Entries committed anywhere once the answer was in, set by the
    /// harness.
    pub hi: Option<u64>,
    /// When the client heard `Fetching` (a download's server still fetching
    /// the content from another server), in order.
    pub fetching: Vec<Duration>,
    /// Cut by its client's death once this many bytes were acknowledged
    /// (see [`Step::cut`]).
    pub cut: Option<u64>,
    /// Put again after a cut, and resumed past this many bytes.
    pub resumed: Option<u64>,
    /// Its place in a client-named command: a try of the command after a
    /// lost session records the operation again, and the checks take the
    /// records of one step as one operation (see [`merge_tries`]).
    pub command: Option<CommandStep>,
}

#[derive(Clone, Debug)]
pub struct FilesRecord {
    pub plan: FilesClientPlan,
    pub finished: bool,
    pub ops: Vec<OpRecord>,
}

/// What a client tells the harness around an operation: record `op` of
/// client `client` began (on `server`) or ended in the step just run.
#[derive(Clone, Copy, Debug)]
pub struct Stamp {
    pub client: usize,
    pub op: usize,
    pub begin: Option<u32>,
}

/// What the programs share with the harness.
#[derive(Clone)]
pub struct Shared {
    pub trace: SharedTrace,
    pub users: Rc<Vec<UserPlan>>,
    /// Login tokens by user, once the setup is done.
    pub tokens: Rc<RefCell<Vec<Option<SessionToken>>>>,
    pub records: Rc<RefCell<Vec<FilesRecord>>>,
    pub stamps: Rc<RefCell<Vec<Stamp>>>,
    pub verify: Rc<RefCell<VerifyRecord>>,
    /// The clients' drivers: their disk's latency, and a seed each session
    /// mixes its client's name and start time into.
    pub driver: DriverConfig,
    /// The servers, numbered from 1.
    pub servers: u32,
}

/// One session's driver and node.
struct Session {
    driver: Driver<Client>,
    server: Option<u32>,
}

impl Session {
    /// Asks the balancer for a server (or server `prefer` first, in the
    /// balancer's place) and opens a session there; for a try of client
    /// command `(id, done)` if given.
    async fn open(
        name: &str,
        driver: &DriverConfig,
        trace: &SharedTrace,
        local: &SharedLocal,
        prefer: Option<u32>,
        command: Option<(u64, u64)>,
    ) -> (Session, Result<u32, ClientError>) {
        let cfg = ClientConfig {
            prefer: prefer.map(|id| format!("{}:{}", server_host(id), server_port(id))),
            command_id: command.map(|(id, _)| id),
            command_done: command.map_or(0, |(_, done)| done),
            ..ClientConfig::new(format!("{BALANCER}:{BALANCER_PORT}"))
        };
        let node = Rc::new(RefCell::new(Client::new(cfg)));
        let at = elapsed().as_millis() as u64;
        let salt = name.bytes().fold(at, |h, b| {
            h.rotate_left(5) ^ u64::from(b).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        });
        let dcfg = DriverConfig {
            seed: SimRng::new(driver.seed, salt).next_u64(),
            ..driver.clone()
        };
        let driver = Driver::new(name, node, trace.clone(), dcfg)
            .with_files(SimFiles::Client(local.clone()))
            .with_describe(describe_client_events());
        let (driver, result) = session::connect(driver).await;
        let server = result.as_ref().ok().copied();
        (Session { driver, server }, result)
    }

    /// Opens a session and proves it as the token's user, trying up to
    /// [`SESSION_TRIES`] sessions.
    async fn open_as(
        name: &str,
        driver: &DriverConfig,
        trace: &SharedTrace,
        local: &SharedLocal,
        token: &SessionToken,
        prefer: Option<u32>,
        command: Option<(u64, u64)>,
    ) -> Result<Session, String> {
        let mut why = String::new();
        for attempt in 0..SESSION_TRIES {
            if attempt > 0 {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            let (mut s, opened) = Session::open(name, driver, trace, local, prefer, command).await;
            if let Err(e) = opened {
                why = e.to_string();
                s.close().await;
                continue;
            }
            match s.prove(token).await {
                Ok(()) => return Ok(s),
                Err(e) => {
                    why = e;
                    s.close().await;
                }
            }
        }
        Err(why)
    }

    /// `WhoAmI { token }`: the session acts as the token's user from now on.
    async fn prove(&mut self, token: &SessionToken) -> Result<(), String> {
        let who = Request::WhoAmI {
            token: token.clone(),
        };
        match self.op(who).await {
            OpResult::Answer(Response::Me { .. }) => Ok(()),
            other => Err(format!("whoami: {other}")),
        }
    }

    /// Runs one operation and waits for its end.
    async fn op(&mut self, request: Request) -> OpResult {
        self.op_watching(request, |_| {}).await
    }

    /// Runs one operation and waits for its end; `watch` sees the client's
    /// events meanwhile.
    async fn op_watching(&mut self, request: Request, watch: impl FnMut(&ClientEvent)) -> OpResult {
        match session::request_watching(&mut self.driver, request, watch).await {
            OpEnd::Answer(r) => OpResult::Answer(r),
            OpEnd::Failed(e) => OpResult::Failed(e),
            OpEnd::Lost => OpResult::Lost,
        }
    }

    /// Runs one operation, stopped where it stands once `stop` says so
    /// (then it is lost).
    async fn op_until(
        &mut self,
        request: Request,
        stop: impl FnMut(&ClientEvent) -> bool,
    ) -> OpResult {
        match session::request_until(&mut self.driver, request, stop).await {
            OpEnd::Answer(r) => OpResult::Answer(r),
            OpEnd::Failed(e) => OpResult::Failed(e),
            OpEnd::Lost => OpResult::Lost,
        }
    }

    async fn close(self) {
        session::close(self.driver).await;
    }
}

/// How often a download waiting for its server's fetch gets a trace line
/// for the `Fetching` it hears (about one a second): its first, then one
/// in this long.
const FETCHING_LINE_EVERY: Duration = Duration::from_secs(5);

/// A file client's trace lines: no progress reports, `Fetching` now and
/// then (see [`FETCHING_LINE_EVERY`]), and contents named by their digest.
fn describe_client_events() -> Describe<ClientEvent> {
    // When the operation in progress last had a `Fetching` line.
    let shown: Cell<Option<Duration>> = Cell::new(None);
    Rc::new(move |e| {
        match e {
            ClientEvent::Fetching { .. } | ClientEvent::Copying { .. } => {
                let now = elapsed();
                if shown.get().is_some_and(|t| now < t + FETCHING_LINE_EVERY) {
                    return None;
                }
                shown.set(Some(now));
            }
            ClientEvent::Response(_) | ClientEvent::Failed(_) | ClientEvent::Disconnected => {
                shown.set(None)
            }
            _ => {}
        }
        describe_client_event(e)
    })
}

/// "batch answered: 2 of 3 files stored" (or `received`).
fn batch_answered(outcomes: &[Landed], done: &str) -> String {
    let landed = (outcomes.iter())
        .filter(|o| matches!(o, Landed::Stored { .. }))
        .count();
    format!(
        "batch answered: {landed} of {} files {done}",
        outcomes.len()
    )
}

/// A file client's trace line for one event: no progress reports, and
/// contents named by their digest.
fn describe_client_event(e: &ClientEvent) -> Option<String> {
    Some(match e {
        ClientEvent::Progress { .. } | ClientEvent::FileProgress { .. } => return None,
        // Each file's outcome follows on a line of its own (`run_op`).
        ClientEvent::Response(Response::Batch(outcomes)) => batch_answered(outcomes, "stored"),
        ClientEvent::Response(Response::Received(outcomes)) => batch_answered(outcomes, "received"),
        ClientEvent::Response(Response::Downloaded { size, digest }) => {
            format!("downloaded {size} bytes, {}", short(digest))
        }
        ClientEvent::Response(Response::File(FileOutcome::Stored { size, digest })) => {
            format!("stored {size} bytes as {}", short(digest))
        }
        ClientEvent::Response(Response::Listing(files)) => {
            let names: Vec<String> = files
                .iter()
                .map(|f| format!("{}/{}", f.owner, f.name))
                .collect();
            format!("{} file(s): {}", files.len(), names.join(", "))
        }
        other => other.to_string(),
    })
}

fn elapsed() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

/// Registers the program of file client `records[index]`, which starts at
/// once. The user's token must be there (the setup is over).
pub fn add_files_client(sim: &mut turmoil::Sim<'_>, index: usize, shared: &Shared) {
    let shared = shared.clone();
    let plan = shared.records.borrow()[index].plan.clone();
    sim.client(plan.name.clone(), async move {
        let name = plan.name.as_str();
        let trace = &shared.trace;
        let users = &shared.users;
        let token = shared.tokens.borrow()[plan.user]
            .clone()
            .ok_or("the user has no token")?;
        let local = LocalFile::shared();
        trace.borrow_mut().record_now(
            name,
            format!(
                "start: {} operation(s) as {}",
                plan.steps.len(),
                users[plan.user].username
            ),
        );
        let mut session: Option<Session> = None;
        for step in &plan.steps {
            if !step.think.is_zero() {
                tokio::time::sleep(step.think).await;
            }
            if step.new_session {
                if let Some(s) = session.take() {
                    s.close().await;
                }
            }
            // A command runs in sessions of its own (named from the start).
            if let OpPlan::PutCommand {
                id,
                batches,
                replace,
                die,
            } = &step.op
            {
                if let Some(s) = session.take() {
                    s.close().await;
                }
                let command = Command {
                    id: *id,
                    batches,
                    replace: *replace,
                    die: *die,
                };
                run_command(index, &command, &shared, &local, &token).await;
                continue;
            }
            if session.is_none() {
                match Session::open_as(name, &shared.driver, trace, &local, &token, None, None)
                    .await
                {
                    Ok(s) => session = Some(s),
                    Err(why) => {
                        let what = step.op.describe(users);
                        trace
                            .borrow_mut()
                            .record_now(name, format!("give up on {what}: no session ({why})"));
                        let mut r = shared.records.borrow_mut();
                        r[index].ops.push(OpRecord {
                            op: step.op.clone(),
                            server: None,
                            started: elapsed(),
                            ended: elapsed(),
                            result: Some(OpResult::NoSession(why)),
                            local: None,
                            local_attrs: None,
                            locals: Vec::new(),
                            lo: None,
                            hi: None,
                            fetching: Vec::new(),
                            cut: None,
                            resumed: None,
                            command: None,
                        });
                        continue;
                    }
                }
            }
            // An upload its client dies in: run until the cut, the session
            // dropped where it stands; then put again at once, from a new
            // session that asks the same server first.
            if let (Some(cut), Some(s)) = (step.cut, session.as_mut()) {
                let server = s.server;
                run_op_cut(s, index, step.op.clone(), Some(cut), &shared, &local).await;
                if let Some(s) = session.take() {
                    s.close().await;
                }
                trace
                    .borrow_mut()
                    .record_now(name, "died mid-upload; put again");
                let again =
                    Session::open_as(name, &shared.driver, trace, &local, &token, server, None)
                        .await;
                match again {
                    Ok(s) => session = Some(s),
                    Err(why) => {
                        let what = step.op.describe(users);
                        trace
                            .borrow_mut()
                            .record_now(name, format!("give up on {what}: no session ({why})"));
                        continue;
                    }
                }
            }
            let Some(s) = session.as_mut() else {
                continue;
            };
            let mut answered = match &step.op {
                OpPlan::Browse { pick } => {
                    let listing = run_op(s, index, OpPlan::List, &shared, &local).await;
                    match listing {
                        OpResult::Answer(Response::Listing(files)) if !files.is_empty() => {
                            let f = &files[*pick as usize % files.len()];
                            let me = &users[plan.user].username;
                            let owner = match &f.owner {
                                o if o == me => None,
                                o => users.iter().position(|u| u.username == *o),
                            };
                            let get = OpPlan::Download {
                                owner,
                                name: f.name.clone(),
                            };
                            let got = run_op(s, index, get, &shared, &local).await;
                            matches!(got, OpResult::Answer(_))
                        }
                        other => matches!(other, OpResult::Answer(_)),
                    }
                }
                op => {
                    let r = run_op(s, index, op.clone(), &shared, &local).await;
                    matches!(r, OpResult::Answer(_))
                }
            };
            if s.server.is_none() {
                answered = false;
            }
            if !answered {
                if let Some(s) = session.take() {
                    s.close().await;
                }
            }
        }
        if let Some(s) = session.take() {
            s.close().await;
        }
        let anomalies = std::mem::take(&mut local.borrow_mut().anomalies);
        if !anomalies.is_empty() {
            return Err(format!("{name}'s local file: {}", anomalies.join("; ")).into());
        }
        trace.borrow_mut().record_now(name, "done");
        shared.records.borrow_mut()[index].finished = true;
        Ok(())
    })
}

/// A [`OpPlan::PutCommand`] as it runs.
struct Command<'a> {
    id: u64,
    batches: &'a [Vec<BatchFile>],
    replace: bool,
    die: Option<(usize, Die)>,
}

/// Runs a client-named command of batches of uploads, as `ferry put` of
/// many files does: its batches one after the other in one session; if
/// that session is lost (or dies where the plan says), once more through
/// another server, saying how many batches were answered (`done`) and
/// sending the rest. Each batch's tries are recorded as `UploadMany`s
/// with its [`CommandStep`].
async fn run_command(
    index: usize,
    command: &Command<'_>,
    shared: &Shared,
    local: &SharedLocal,
    token: &SessionToken,
) {
    let name = shared.records.borrow()[index].plan.name.clone();
    let trace = &shared.trace;
    let n = command.batches.len();
    let mut answered = 0;
    let mut first = None;
    for attempt in 0..2 {
        // The second try goes elsewhere: the first's server may be gone,
        // and a retry through another server is the case to check.
        let prefer = first.map(|s: u32| s % shared.servers.max(1) + 1);
        let named = Some((command.id, answered as u64));
        let opened =
            Session::open_as(&name, &shared.driver, trace, local, token, prefer, named).await;
        let mut s = match opened {
            Ok(s) => s,
            Err(why) => {
                trace.borrow_mut().record_now(
                    &name,
                    format!(
                        "give up on the command's batches {}..={n}: no session ({why})",
                        answered + 1
                    ),
                );
                return;
            }
        };
        first = first.or(s.server);
        let mut lost = false;
        for (i, files) in command.batches.iter().enumerate().skip(answered) {
            let op = OpPlan::UploadMany {
                files: files.clone(),
                replace: command.replace,
            };
            let step = CommandStep {
                id: command.id,
                number: i as u64 + 1,
            };
            let dies = command.die.filter(|(at, _)| attempt == 0 && *at == i);
            let stop = match dies {
                Some((_, Die::Sent)) => Cut::AllSent,
                _ => Cut::Never,
            };
            let r = run_op_as(&mut s, index, op, stop, Some(step), shared, local).await;
            // "Unavailable" is no answer: the try ends, the batch is sent
            // again.
            let unavailable = matches!(
                r,
                OpResult::Answer(Response::Failed(OpError::Unavailable { .. }))
            );
            if !matches!(r, OpResult::Answer(_)) || unavailable || s.server.is_none() {
                lost = true;
                break;
            }
            answered = i + 1;
            if dies.is_some() {
                lost = true;
                break;
            }
        }
        s.close().await;
        if !lost || answered == n {
            return;
        }
        trace.borrow_mut().record_now(
            &name,
            format!("the command's session is lost after {answered} of {n} batches answered; once more through another server"),
        );
    }
}

/// The records of an operation's tries (a step of a client-named command
/// tried again after a lost session) as one operation: from the first
/// try's start and log floor (`lo`) to the end of the try with an answer
/// (or the last), with that try's server, answer and ceiling (`hi`).
/// Other records are as they are.
pub fn merge_tries(ops: &[OpRecord]) -> Vec<OpRecord> {
    let mut merged: Vec<OpRecord> = Vec::new();
    let mut at: std::collections::BTreeMap<CommandStep, usize> = Default::default();
    for o in ops {
        let Some(step) = o.command else {
            merged.push(o.clone());
            continue;
        };
        let Some(&i) = at.get(&step) else {
            at.insert(step, merged.len());
            merged.push(o.clone());
            continue;
        };
        let m = &mut merged[i];
        let answered = |r: &Option<OpResult>| matches!(r, Some(OpResult::Answer(_)));
        if answered(&m.result) && !answered(&o.result) {
            continue;
        }
        let (started, lo) = (m.started, m.lo);
        *m = OpRecord {
            started,
            lo,
            ..o.clone()
        };
    }
    merged
}

/// The clients' records with each operation's tries as one
/// ([`merge_tries`]): what the checks read.
pub fn merged(records: &[FilesRecord]) -> Vec<FilesRecord> {
    (records.iter())
        .map(|r| FilesRecord {
            plan: r.plan.clone(),
            finished: r.finished,
            ops: merge_tries(&r.ops),
        })
        .collect()
}

/// Runs one operation on the session, recording it (with its stamps).
async fn run_op(
    s: &mut Session,
    index: usize,
    op: OpPlan,
    shared: &Shared,
    local: &SharedLocal,
) -> OpResult {
    run_op_cut(s, index, op, None, shared, local).await
}

/// [`run_op`], stopped where it stands once `cut` bytes of an upload are
/// acknowledged (see [`Step::cut`]).
async fn run_op_cut(
    s: &mut Session,
    index: usize,
    op: OpPlan,
    cut: Option<u64>,
    shared: &Shared,
    local: &SharedLocal,
) -> OpResult {
    let stop = match cut {
        Some(cut) => Cut::AtBytes(cut),
        None => Cut::Never,
    };
    run_op_as(s, index, op, stop, None, shared, local).await
}

/// Where an operation is stopped where it stands (its session then lost).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cut {
    Never,
    /// An upload, once this many of its bytes are acknowledged.
    AtBytes(u64),
    /// A batch of uploads, once every byte of its files is acknowledged.
    AllSent,
}

/// [`run_op_cut`] for step `command` of a client-named command.
async fn run_op_as(
    s: &mut Session,
    index: usize,
    op: OpPlan,
    stop: Cut,
    command: Option<CommandStep>,
    shared: &Shared,
    local: &SharedLocal,
) -> OpResult {
    let cut = match stop {
        Cut::AtBytes(cut) => Some(cut),
        Cut::Never | Cut::AllSent => None,
    };
    let user = shared.records.borrow()[index].plan.user;
    let token = shared.tokens.borrow()[user].clone();
    let Some(request) = token.and_then(|t| op.request(&shared.users, user, &t)) else {
        return OpResult::Lost;
    };
    {
        let mut l = local.borrow_mut();
        match &op {
            OpPlan::Upload { content, .. } => l.sources = vec![content.clone()],
            OpPlan::UploadMany { files, .. } => {
                l.sources = files.iter().map(|f| f.content.clone()).collect()
            }
            OpPlan::Download { .. } => {
                l.dest = None;
                l.dest_attrs = None;
                l.partial = None;
                l.many = None;
            }
            OpPlan::DownloadMany { .. } => l.many = Some(ManyFiles::default()),
            _ => {}
        }
    }
    let name = shared.records.borrow()[index].plan.name.clone();
    shared
        .trace
        .borrow_mut()
        .record_now(&name, op.describe(&shared.users));
    let rec = {
        let mut r = shared.records.borrow_mut();
        let ops = &mut r[index].ops;
        ops.push(OpRecord {
            op: op.clone(),
            server: s.server,
            started: elapsed(),
            ended: elapsed(),
            result: None,
            local: None,
            local_attrs: None,
            locals: Vec::new(),
            lo: None,
            hi: None,
            fetching: Vec::new(),
            cut,
            resumed: None,
            command,
        });
        ops.len() - 1
    };
    shared.stamps.borrow_mut().push(Stamp {
        client: index,
        op: rec,
        begin: s.server,
    });
    let mut fetching = Vec::new();
    let mut resumed = None;
    let result = match stop {
        Cut::AtBytes(cut) => {
            let passed = |ev: &ClientEvent| matches!(ev, ClientEvent::Progress { bytes, .. } if *bytes >= cut);
            s.op_until(request, passed).await
        }
        Cut::AllSent => {
            let sizes: Vec<u64> = match &op {
                OpPlan::UploadMany { files, .. } => {
                    files.iter().map(|f| f.content.len() as u64).collect()
                }
                _ => Vec::new(),
            };
            let mut acked = vec![0; sizes.len()];
            let all_sent = |ev: &ClientEvent| {
                if let ClientEvent::FileProgress { file, bytes, .. } = ev {
                    if let Some(a) = acked.get_mut(*file as usize) {
                        *a = *bytes;
                    }
                }
                acked == sizes
            };
            s.op_until(request, all_sent).await
        }
        Cut::Never => {
            s.op_watching(request, |ev| match ev {
                ClientEvent::Fetching { .. } => fetching.push(elapsed()),
                ClientEvent::Resumed { bytes, .. } => resumed = Some(*bytes),
                _ => {}
            })
            .await
        }
    };
    shared.stamps.borrow_mut().push(Stamp {
        client: index,
        op: rec,
        begin: None,
    });
    if let (OpPlan::UploadMany { files, .. }, OpResult::Answer(Response::Batch(outcomes))) =
        (&op, &result)
    {
        let mut t = shared.trace.borrow_mut();
        for (i, (f, o)) in files.iter().zip(outcomes).enumerate() {
            t.record_now(&name, landed_line(i, files.len(), &f.name, o));
        }
    }
    if let (OpPlan::DownloadMany { files }, OpResult::Answer(Response::Received(outcomes))) =
        (&op, &result)
    {
        let mut t = shared.trace.borrow_mut();
        for (i, ((o, n), landed)) in files.iter().zip(outcomes).enumerate() {
            let file = match o {
                None => format!("{n:?}"),
                Some(o) => format!("{}'s {n:?}", shared.users[*o].username),
            };
            t.record_now(&name, received_line(i, files.len(), &file, landed));
        }
    }
    let locals = match &op {
        OpPlan::DownloadMany { files } => {
            let l = local.borrow();
            (0..files.len() as u64)
                .map(|i| {
                    let m = l.many.as_ref()?;
                    Some((m.dests.get(&i)?.clone(), m.dest_attrs.get(&i).copied()))
                })
                .collect()
        }
        _ => Vec::new(),
    };
    let (downloaded, attrs) = match op {
        OpPlan::Download { .. } => {
            let l = local.borrow();
            (l.dest.clone(), l.dest_attrs)
        }
        _ => (None, None),
    };
    let mut r = shared.records.borrow_mut();
    let o = &mut r[index].ops[rec];
    o.ended = elapsed();
    o.result = Some(result.clone());
    o.resumed = resumed;
    o.local = downloaded;
    o.local_attrs = attrs;
    o.locals = locals;
    o.fetching = fetching;
    result
}

/// The trace line of what became of file `i` of a batch of `n`.
pub fn landed_line(i: usize, n: usize, name: &str, o: &Landed) -> String {
    let what = match o {
        Landed::Stored { size, digest } => format!("stored {size} bytes as {}", short(digest)),
        Landed::Failed(e) => format!("failed: {e}"),
    };
    format!("file {}/{n} {name:?}: {what}", i + 1)
}

/// The trace line of what became of file `i` of a batch of `n` downloads
/// (`file`: its name, and its owner's if another user's).
pub fn received_line(i: usize, n: usize, file: &str, o: &Landed) -> String {
    let what = match o {
        Landed::Stored { size, digest } => format!("received {size} bytes, {}", short(digest)),
        Landed::Failed(e) => format!("failed: {e}"),
    };
    format!("file {}/{n} {file}: {what}", i + 1)
}

/// What the verifier checks for one user on every server.
#[derive(Clone, Debug)]
pub struct VerifyTask {
    pub user: usize,
    /// The user's own files, by name.
    pub own: Vec<String>,
    /// Files shared with the user: (owner's name, name).
    pub shared: Vec<(String, String)>,
    /// Another user's file not shared with this one, if there is one.
    pub forbidden: Option<(String, String)>,
}

/// One download of the verifier.
#[derive(Clone, Debug)]
pub struct VerifyDownload {
    pub owner: Option<String>,
    pub name: String,
    /// The last try's.
    pub result: OpResult,
    pub local: Option<Arc<[u8]>>,
    /// The attributes the client gave the local file, if any.
    pub local_attrs: Option<FileAttrs>,
    /// The tries that arrived damaged (see [`arrived_damaged`]), as
    /// (start, end), the last one's too if it did.
    pub damaged: Vec<(Duration, Duration)>,
}

/// Tries of a verifier's download that arrived damaged, at most.
const DAMAGED_TRIES: usize = 5;
/// Pause before a verifier tries a download that arrived damaged again:
/// its server checks its copy, finds it damaged, removes it and fetches it
/// again meanwhile (the next try waits for that fetch, hearing `Fetching`).
const DAMAGED_PAUSE: Duration = Duration::from_secs(2);
/// How long after its first try a verifier's download may start again.
const DAMAGED_WINDOW: Duration = Duration::from_secs(30);

/// A download that ended because the content arrived damaged: a copy that
/// rotted on its server's disk. (Or, through a server that removed such a
/// copy while it read it for this download, a failed read: `Io`.)
pub fn arrived_damaged(result: &OpResult) -> bool {
    matches!(
        result,
        OpResult::Answer(Response::Failed(OpError::Transfer(
            TransferError::DigestMismatch | TransferError::Io { .. }
        )))
    )
}

/// The verifier's session of one user on one server.
#[derive(Clone, Debug)]
pub struct VerifyVisit {
    pub user: usize,
    pub server: u32,
    pub listing: OpResult,
    pub downloads: Vec<VerifyDownload>,
}

#[derive(Clone, Debug, Default)]
pub struct VerifyRecord {
    /// Verifiers started and finished.
    pub started: usize,
    pub finished: usize,
    /// (user, server) still to visit; a verifier takes one when the
    /// balancer sends it to that server.
    pub todo: BTreeSet<(usize, u32)>,
    pub visits: Vec<VerifyVisit>,
    /// Sessions that could not be had, or were sent where nobody needs
    /// anything any more.
    pub misses: Vec<String>,
}

/// One download of the verifier, tried again (up to [`DAMAGED_TRIES`]
/// times, within [`DAMAGED_WINDOW`]) while the content arrives damaged.
async fn verify_download(
    s: &mut Session,
    name: &str,
    trace: &SharedTrace,
    local: &SharedLocal,
    owner: Option<String>,
    file: String,
) -> VerifyDownload {
    let first = elapsed();
    let mut damaged = Vec::new();
    loop {
        {
            let mut l = local.borrow_mut();
            l.dest = None;
            l.dest_attrs = None;
            l.partial = None;
        }
        let request = Request::Download {
            owner: owner.clone(),
            name: file.clone(),
        };
        let started = elapsed();
        let result = s.op(request).await;
        if arrived_damaged(&result) {
            damaged.push((started, elapsed()));
            let again = elapsed() + DAMAGED_PAUSE;
            if damaged.len() < DAMAGED_TRIES && again <= first + DAMAGED_WINDOW {
                trace.borrow_mut().record_now(
                    name,
                    format!(
                        "the content arrived damaged; try again in {} s",
                        DAMAGED_PAUSE.as_secs()
                    ),
                );
                tokio::time::sleep(DAMAGED_PAUSE).await;
                continue;
            }
        }
        return VerifyDownload {
            owner,
            name: file,
            local: local.borrow().dest.clone(),
            local_attrs: local.borrow().dest_attrs,
            result,
            damaged,
        };
    }
}

/// Sessions a verifier may open, per (user, server) to visit.
const VISIT_TRIES: usize = 3;
/// Pause after a session that found nothing to do, so that the tries
/// outlast the balancer's back-off (5 s) for a server it found silent
/// while it was down or cut off.
const MISS_PAUSE: Duration = Duration::from_secs(1);

/// Registers `workers` verifiers (`verify1`...). Each opens sessions
/// through the balancer; wherever it is sent, it proves the session as a
/// user who still has that server to visit, and there runs `ls`, downloads
/// every own and shared file, and a download that must be refused. Until
/// every user has visited every server, or the tries run out.
pub fn add_verifiers(
    sim: &mut turmoil::Sim<'_>,
    workers: usize,
    servers: u32,
    tasks: Vec<VerifyTask>,
    shared: &Shared,
) {
    {
        let mut v = shared.verify.borrow_mut();
        for t in &tasks {
            for s in 1..=servers {
                v.todo.insert((t.user, s));
            }
        }
        v.started += workers;
    }
    let tasks = Rc::new(tasks);
    let tries = tasks.len() * servers as usize * VISIT_TRIES;
    for w in 1..=workers {
        let (shared, tasks) = (shared.clone(), tasks.clone());
        let name = format!("verify{w}");
        sim.client(name.clone(), async move {
            let name = name.as_str();
            let trace = &shared.trace;
            let users = &shared.users;
            let local = LocalFile::shared();
            for _ in 0..tries {
                if shared.verify.borrow().todo.is_empty() {
                    break;
                }
                let (mut s, opened) =
                    Session::open(name, &shared.driver, trace, &local, None, None).await;
                let server = match opened {
                    Ok(server) => server,
                    Err(e) => {
                        shared.verify.borrow_mut().misses.push(e.to_string());
                        s.close().await;
                        tokio::time::sleep(MISS_PAUSE).await;
                        continue;
                    }
                };
                let task = {
                    let mut v = shared.verify.borrow_mut();
                    let t = tasks.iter().find(|t| v.todo.contains(&(t.user, server)));
                    if let Some(t) = t {
                        v.todo.remove(&(t.user, server));
                    }
                    t
                };
                let Some(task) = task else {
                    shared
                        .verify
                        .borrow_mut()
                        .misses
                        .push(format!("sent to server {server}, visited by everyone"));
                    s.close().await;
                    tokio::time::sleep(MISS_PAUSE).await;
                    continue;
                };
                let username = &users[task.user].username;
                let token = shared.tokens.borrow()[task.user].clone();
                let proven = match &token {
                    Some(t) => s.prove(t).await,
                    None => Err("the user has no token".into()),
                };
                if let Err(why) = proven {
                    {
                        let mut v = shared.verify.borrow_mut();
                        v.todo.insert((task.user, server));
                        v.misses.push(why);
                    }
                    s.close().await;
                    continue;
                }
                trace.borrow_mut().record_now(
                    name,
                    format!(
                        "verify {username} on server {server}: ls, {} own and {} shared file(s){}",
                        task.own.len(),
                        task.shared.len(),
                        match &task.forbidden {
                            Some((o, n)) => format!(", and {o}'s {n:?} must be refused"),
                            None => String::new(),
                        }
                    ),
                );
                let listing = s.op(Request::List).await;
                let mut wanted: Vec<(Option<String>, String)> =
                    task.own.iter().map(|n| (None, n.clone())).collect();
                wanted.extend(
                    task.shared
                        .iter()
                        .chain(&task.forbidden)
                        .map(|(o, n)| (Some(o.clone()), n.clone())),
                );
                let mut downloads = Vec::new();
                for (owner, file) in wanted {
                    downloads.push(verify_download(&mut s, name, trace, &local, owner, file).await);
                }
                shared.verify.borrow_mut().visits.push(VerifyVisit {
                    user: task.user,
                    server,
                    listing,
                    downloads,
                });
                s.close().await;
            }
            trace.borrow_mut().record_now(name, "done");
            shared.verify.borrow_mut().finished += 1;
            Ok(())
        });
    }
}
