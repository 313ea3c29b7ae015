//! What every client command does: get a session on some server through the
//! balancer, then run its operations on it, one after the other.

use crate::error::CliError;
use crate::tls_files;
use crate::ClientArgs;
use ferry_core::accounts::token::SessionToken;
use ferry_core::client::{Client, ClientConfig, ClientError, ClientEvent, Peer};
use ferry_core::server::{OpError, Request, Response};
use ferry_core::transfer::TransferError;
use ferry_runtime_smol::{Driver, Files};
use std::ops::ControlFlow;
use std::time::Duration;

/// How long to wait, at exit, for the last messages (the session ACK) to go
/// out.
const FLUSH_PATIENCE: Duration = Duration::from_secs(1);

/// The server a session was established with.
pub struct Session {
    pub server_id: u32,
    pub addr: String,
}

/// How far an operation has come, for a progress bar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Bytes of the transfer moved so far.
    Transfer { bytes: u64, total: u64 },
    /// Bytes of file `file` of a batch moved so far.
    File { file: u64, bytes: u64, total: u64 },
    /// The server is still fetching the download's content from another
    /// server; this much of it is there.
    ServerFetching { bytes: u64, total: u64 },
    /// The upload is on the server, which is copying it to the others.
    ServerCopying { bytes: u64, total: u64 },
    /// A session was made with this server (an upload that may be cut off
    /// notes where it went: see `resume_file`).
    Session { server_id: u32, addr: String },
    /// The transfer goes on past the first `bytes`, which the receiving
    /// end kept from an interrupted try.
    Resumed { bytes: u64, total: u64 },
    /// What the receiving end kept of an interrupted try (`bytes`) is not
    /// this file's: the transfer starts over.
    StartedOver { bytes: u64 },
}

/// Makes the executor of the local file a request moves, if it moves one;
/// `Err(reason)`: the request cannot run here (it is answered as a failed
/// transfer for that reason, and not sent).
pub type MakeFiles<'a> = Box<dyn FnMut(&Request) -> Option<Result<Files, String>> + 'a>;

/// How a command runs its operations: the client's configuration, the
/// local files its requests move, who hears of progress, and whether a
/// failed request ends the run.
pub struct Plan<'a> {
    pub cfg: ClientConfig,
    /// Makes the executor of the local file a request moves, just before
    /// the request runs (on every attempt); `None` keeps the one before.
    pub files: Option<MakeFiles<'a>>,
    /// Called as an operation moves.
    pub progress: Option<&'a mut dyn FnMut(Progress)>,
    /// Run every request even if one fails (a command of many files),
    /// except the first (the login's proof); otherwise the run stops at
    /// the first that fails.
    pub keep_going: bool,
}

impl Plan<'_> {
    /// No local file, no progress, the default configuration.
    pub fn new<'a>(args: &ClientArgs) -> Plan<'a> {
        Plan {
            cfg: ClientConfig::new(args.balancer.clone()),
            files: None,
            progress: None,
            keep_going: false,
        }
    }
}

/// Gets a session and, if `request` is given, runs it. Returns the session
/// and the server's answer. An answer of `Failed` is returned as it is (the
/// caller may want to look at it); see [`ok`] to turn it into an error.
/// With `--verbose`, tells stderr which server the session is with.
pub fn run_one(
    args: &ClientArgs,
    request: Option<Request>,
) -> Result<(Session, Option<Response>), CliError> {
    let (session, mut answers) = run(args, Plan::new(args), request.into_iter().collect())?;
    Ok((session, answers.pop()))
}

/// Runs `request` as the saved login: the session first proves the login
/// with `WhoAmI { token }`, then runs the request. Returns the request's
/// answer; a refused login is the command's error.
pub fn run_as(
    args: &ClientArgs,
    plan: Plan<'_>,
    token: SessionToken,
    request: Request,
) -> Result<Response, CliError> {
    let mut answers = run_all_as(args, plan, token, vec![request])?.into_iter();
    answers
        .next()
        .ok_or_else(|| CliError::Failed("the server gave no answer".into()))
}

/// Runs `requests` as the saved login, in one session: see [`run_as`].
/// Returns their answers, in order: all of them with `keep_going`, else up
/// to the first that failed.
pub fn run_all_as(
    args: &ClientArgs,
    plan: Plan<'_>,
    token: SessionToken,
    requests: Vec<Request>,
) -> Result<Vec<Response>, CliError> {
    let all = std::iter::once(Request::WhoAmI { token }).chain(requests);
    let (_, answers) = run(args, plan, all.collect())?;
    let mut answers = answers.into_iter();
    match answers.next() {
        // The login was refused: that is the error.
        Some(Response::Failed(e)) => Err(CliError::op(&e)),
        Some(_) => Ok(answers.collect()),
        None => Err(CliError::Failed("the server gave no answer".into())),
    }
}

/// Gets a session and runs `requests` on it in order, stopping after the
/// first that fails. Returns the answers so far.
///
/// If the session is lost midway (its server died, hung up or stopped
/// answering, or said it is unavailable), the run is tried once more with
/// a new server from the balancer, from the first request not answered
/// (the proof of the login is sent again). Both tries carry one random
/// command id (`ClientConfig::command_id`), and the second says how many
/// of the command's mutations were answered (`command_done`), so that each
/// mutation sent again keeps its number and the cluster applies it once
/// even if the first try's server had sent it on before it died.
pub fn run(
    args: &ClientArgs,
    plan: Plan<'_>,
    requests: Vec<Request>,
) -> Result<(Session, Vec<Response>), CliError> {
    let Plan {
        mut cfg,
        mut files,
        mut progress,
        keep_going,
    } = plan;
    cfg.command_id = Some(command_id()?);
    let trust = tls_files::client_trust(args.ca.as_deref(), &args.balancer)?;
    let tls = tls_files::client_config(trust.clone())?;
    let mut met = None;
    let mut attempt = |requests: Vec<Request>, done: u64| -> (Result<Session, Stop>, Answers) {
        let entropy = match ferry_runtime_smol::os_entropy() {
            Ok(entropy) => entropy,
            Err(e) => {
                let e = CliError::Failed(format!("cannot seed TLS: {e}"));
                return (Err(Stop::Failed(e)), Answers::default());
            }
        };
        let cfg = ClientConfig {
            command_done: done,
            ..cfg.clone()
        };
        let mut driver = Driver::new(Client::new(cfg))
            .with_tls(tls.clone(), entropy)
            .named("client");
        let now = driver.now();
        driver.node_mut().start(now);
        let mut hooks = Hooks {
            files: &mut files,
            progress: &mut progress,
            keep_going,
        };
        let mut answers = Answers::default();
        let result = run_requests(args, &mut driver, requests, &mut hooks, &mut answers);
        met = met.or(driver.node().authority());
        driver.close(FLUSH_PATIENCE);
        (result, answers)
    };
    let (first, answered) = waiting(|| attempt(requests.clone(), 0));
    let result = match first {
        Err(Stop::Lost(why)) => {
            eprintln!("ferry: {why}; trying once more through the balancer");
            // What was answered stays answered: sent again, an upload
            // stored is "exists" and a refusal may no longer be one. The
            // proof of the login is sent again (it is no mutation, so it
            // is not numbered), then the requests not answered, the first
            // of which takes the number it had.
            let n = answered.responses.len().min(requests.len());
            let proofs: Vec<Request> = (requests[..n].iter())
                .filter(|r| matches!(r, Request::WhoAmI { .. }))
                .cloned()
                .collect();
            let sent_again = proofs.len();
            let rest = proofs.into_iter().chain(requests[n..].iter().cloned());
            let (again, retried) = waiting(|| attempt(rest.clone().collect(), answered.numbered));
            let mut answers = answered.responses;
            let mut retried = retried.responses.into_iter();
            let proofs: Vec<Response> = retried.by_ref().take(sent_again).collect();
            match proofs
                .into_iter()
                .find(|r| matches!(r, Response::Failed(_)))
            {
                // Refused now (the login was revoked meanwhile): that is
                // the answer of the first request left.
                Some(refused) => answers.push(refused),
                None => answers.extend(retried),
            }
            again
                .map(|session| (session, answers))
                .map_err(Stop::into_error)
        }
        other => other
            .map(|session| (session, answered.responses))
            .map_err(Stop::into_error),
    };
    tls_files::remember_first_use(&trust, &args.balancer, met);
    result.map_err(|e| tls_files::explain_untrusted(e, &trust))
}

/// A random id for one command (its tries share it).
fn command_id() -> Result<u64, CliError> {
    let mut id = [0u8; 8];
    getrandom::fill(&mut id)
        .map_err(|e| CliError::Failed(format!("no randomness from the system: {e}")))?;
    Ok(u64::from_le_bytes(id))
}

/// Why an attempt stopped short.
enum Stop {
    /// The session was lost: another server may do better.
    Lost(String),
    /// No server could take a session for a reason that passes (no master
    /// elected yet, or servers catching up): the same, a little later.
    Wait(ClientError),
    /// Anything else: the command's error.
    Failed(CliError),
}

impl Stop {
    fn into_error(self) -> CliError {
        match self {
            Stop::Lost(why) => CliError::Failed(why),
            Stop::Wait(e) => failed(e),
            Stop::Failed(e) => e,
        }
    }
}

/// How long a command waits, in all, for a cluster that has no master or
/// whose servers are catching up: an election takes a second or two, and
/// one that takes much longer is a cluster that lost its majority.
const WAIT_FOR_CLUSTER: Duration = Duration::from_secs(15);

/// Runs `attempt` again, after a pause that doubles each time (0.1 s to
/// 2 s), while it stops for a reason that passes, for up to
/// [`WAIT_FOR_CLUSTER`] in all; says once on stderr what it waits for.
fn waiting<T, A>(mut attempt: impl FnMut() -> (Result<T, Stop>, A)) -> (Result<T, Stop>, A) {
    let start = std::time::Instant::now();
    let mut pause = Duration::from_millis(100);
    let mut told = false;
    loop {
        match attempt() {
            (Err(Stop::Wait(e)), _) if start.elapsed() + pause <= WAIT_FOR_CLUSTER => {
                if !told {
                    eprintln!("ferry: {e}; waiting for the cluster");
                    told = true;
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

/// An error of the client during a session's request: a lost server is
/// worth another try, the rest is not.
fn during_request(error: ClientError) -> Stop {
    match &error {
        ClientError::Unreachable {
            peer: Peer::Server, ..
        }
        | ClientError::Timeout {
            peer: Peer::Server, ..
        } => Stop::Lost(error.to_string()),
        _ => Stop::Failed(failed(error)),
    }
}

/// The answers of one try, in the order of its requests.
#[derive(Default)]
struct Answers {
    responses: Vec<Response>,
    /// How many of them are the server's answers to numbered operations
    /// (`OpCode::numbered`; not a file that failed here before it was
    /// asked for).
    numbered: u64,
}

/// What [`run_requests`] takes of a [`Plan`].
struct Hooks<'p, 'a> {
    files: &'p mut Option<MakeFiles<'a>>,
    progress: &'p mut Option<&'a mut dyn FnMut(Progress)>,
    keep_going: bool,
}

/// The session's part of [`run`]: handshake, then the requests. An answer
/// "unavailable" (the server is cut off, or could not get the request
/// ordered or copied in time) counts as a lost session: another server may
/// do better.
fn run_requests(
    args: &ClientArgs,
    driver: &mut Driver<Client>,
    requests: Vec<Request>,
    hooks: &mut Hooks<'_, '_>,
    answered: &mut Answers,
) -> Result<Session, Stop> {
    let answers = &mut answered.responses;
    let progress = &mut *hooks.progress;
    let fatal = |e: String| Stop::Failed(CliError::Failed(e));
    let session = driver
        .run_until(|event| match event {
            ClientEvent::Connected { server_id, addr } => {
                ControlFlow::Break(Ok(Session { server_id, addr }))
            }
            ClientEvent::Failed(error) => ControlFlow::Break(Err(error)),
            _ => ControlFlow::Continue(()),
        })
        .map_err(|e| fatal(e.to_string()))?
        .map_err(|e| match e {
            // The cluster is electing a master, or its servers are
            // catching up with one: soon over.
            ClientError::NoServer(tally) if tally.no_master > 0 || tally.catching_up > 0 => {
                Stop::Wait(ClientError::NoServer(tally))
            }
            e => Stop::Failed(failed(e)),
        })?;
    if args.verbose {
        eprintln!("via server {} at {}", session.server_id, session.addr);
    }
    if let Some(progress) = progress.as_mut() {
        progress(Progress::Session {
            server_id: session.server_id,
            addr: session.addr.clone(),
        });
    }
    answers.clear();
    answered.numbered = 0;
    for request in requests {
        let op = request.op();
        match hooks.files.as_mut().and_then(|make| make(&request)) {
            Some(Ok(files)) => {
                // A download's partial file from an interrupted try: resumed.
                let kept = files.kept();
                driver.replace_files(files);
                if kept > 0 {
                    driver.node_mut().resume_next_download(kept);
                }
            }
            Some(Err(detail)) => {
                answers.push(Response::Failed(OpError::Transfer(TransferError::Io {
                    detail,
                })));
                if !hooks.keep_going || answers.len() == 1 {
                    break;
                }
                continue;
            }
            None => {}
        }
        let now = driver.now();
        driver
            .node_mut()
            .request(now, request)
            .map_err(|e| fatal(format!("cannot start {op:?} on the session: {e:?}")))?;
        let response = driver
            .run_until(|event| match event {
                ClientEvent::Response(r) => ControlFlow::Break(Ok(r)),
                ClientEvent::Progress { bytes, total } => {
                    if let Some(progress) = progress.as_mut() {
                        progress(Progress::Transfer { bytes, total });
                    }
                    ControlFlow::Continue(())
                }
                ClientEvent::FileProgress { file, bytes, total } => {
                    if let Some(progress) = progress.as_mut() {
                        progress(Progress::File { file, bytes, total });
                    }
                    ControlFlow::Continue(())
                }
                ClientEvent::Fetching { bytes, total } => {
                    if let Some(progress) = progress.as_mut() {
                        progress(Progress::ServerFetching { bytes, total });
                    }
                    ControlFlow::Continue(())
                }
                ClientEvent::Copying { bytes, total } => {
                    if let Some(progress) = progress.as_mut() {
                        progress(Progress::ServerCopying { bytes, total });
                    }
                    ControlFlow::Continue(())
                }
                ClientEvent::Resumed { bytes, total } => {
                    if let Some(progress) = progress.as_mut() {
                        progress(Progress::Resumed { bytes, total });
                    }
                    ControlFlow::Continue(())
                }
                ClientEvent::StartedOver { bytes } => {
                    if let Some(progress) = progress.as_mut() {
                        progress(Progress::StartedOver { bytes });
                    }
                    ControlFlow::Continue(())
                }
                ClientEvent::Failed(error) => ControlFlow::Break(Err(during_request(error))),
                ClientEvent::Disconnected => ControlFlow::Break(Err(Stop::Lost(format!(
                    "server {} closed the session",
                    session.server_id
                )))),
                _ => ControlFlow::Continue(()),
            })
            .map_err(|e| fatal(e.to_string()))??;
        if let Response::Failed(OpError::Unavailable { reason }) = &response {
            return Err(Stop::Lost(format!(
                "server {} is unavailable: {reason}",
                session.server_id
            )));
        }
        let failed = matches!(response, Response::Failed(_));
        answers.push(response);
        if op.numbered() {
            answered.numbered += 1;
        }
        if failed && (!hooks.keep_going || answers.len() == 1) {
            break;
        }
    }
    Ok(session)
}

/// The server's answer, or its `Failed` reason as the command's error.
pub fn ok(response: Option<Response>) -> Result<Response, CliError> {
    match response {
        Some(Response::Failed(e)) => Err(CliError::op(&e)),
        Some(r) => Ok(r),
        None => Err(CliError::Failed("the server gave no answer".into())),
    }
}

/// An answer that does not belong to the request.
pub fn unexpected(response: Response) -> CliError {
    CliError::Failed(format!("unexpected answer from the server: {response}"))
}

fn failed(error: ClientError) -> CliError {
    CliError::client(&error)
}
