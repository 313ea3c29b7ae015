//! The account client of the replication scenario: register a username
//! through the balancer, and maybe log in afterwards.
//!
//! A client tries up to `attempts` sessions to get a *definite* answer to its
//! registration (`Registered` or `username taken`). An answer that leaves the
//! outcome open (`cluster unavailable ... it may still take effect`, a
//! timeout, a lost session) makes it retry on a new session, with a new
//! origin: so a client can be told "username taken" because of its own
//! earlier attempt, which is why the invariants compare passwords, not just
//! answers. A client that planned to log in does so once it has a definite
//! answer, on the same session or on a new one (another server, perhaps).

use super::session::{self, OpEnd};
use crate::driver::{Driver, DriverConfig};
use crate::harness::{BALANCER, BALANCER_PORT};
use crate::trace::SharedTrace;
use ferry_core::client::{Client, ClientConfig, ClientError};
use ferry_core::server::{OpError, Request, Response};
use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

/// Pause before a client tries again on a new session.
const RETRY_PAUSE: Duration = Duration::from_millis(700);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Login {
    No,
    /// On the session that got the registration's answer.
    SameSession,
    /// On a new session, wherever the balancer sends it.
    NewSession,
}

#[derive(Clone, Debug)]
pub struct AccountPlan {
    /// The client's host name.
    pub name: String,
    /// As typed: may differ from the stored name in case.
    pub username: String,
    /// Unique to the client, so a login proves whose registration won.
    pub password: String,
    pub start: Duration,
    pub login: Login,
    /// Sessions the client tries, for the registration and for the login.
    pub attempts: u32,
    /// The liveness probe of the healed cluster: it must register and log in.
    pub must_succeed: bool,
}

/// How one try of an operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TryResult {
    /// No session: the balancer or the servers could not give one.
    NoSession(ClientError),
    /// The server answered.
    Answer(Response),
    /// The operation failed on the client's side (a timeout, a refusal).
    Failed(ClientError),
    /// The session ended before the answer came.
    Lost,
}

impl TryResult {
    /// True if the answer settles the registration either way.
    fn is_definite_register(&self) -> bool {
        matches!(
            self,
            TryResult::Answer(
                Response::Registered { .. } | Response::Failed(OpError::UsernameTaken)
            )
        )
    }
}

impl fmt::Display for TryResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryResult::NoSession(e) => write!(f, "no session: {e}"),
            TryResult::Answer(r) => r.fmt(f),
            TryResult::Failed(e) => write!(f, "failed: {e}"),
            TryResult::Lost => f.write_str("session lost before the answer"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Try {
    /// Simulated time when the request was sent (for a try without a
    /// session, when it ended): the operation took effect no sooner.
    pub started: Duration,
    /// Simulated time when it ended.
    pub at: Duration,
    /// The server of the session, if there was one.
    pub server: Option<u32>,
    pub result: TryResult,
}

/// What one account client did, filled in as it goes.
#[derive(Clone, Debug)]
pub struct AccountRecord {
    pub plan: AccountPlan,
    pub finished: bool,
    pub register: Vec<Try>,
    pub login: Vec<Try>,
}

impl AccountRecord {
    pub fn new(plan: AccountPlan) -> Self {
        AccountRecord {
            plan,
            finished: false,
            register: Vec::new(),
            login: Vec::new(),
        }
    }

    /// The user id of a `Registered` answer, if the client got one.
    pub fn registered(&self) -> Option<u64> {
        self.register.iter().find_map(|t| match t.result {
            TryResult::Answer(Response::Registered { user_id }) => Some(user_id),
            _ => None,
        })
    }

    /// The `LoggedIn` answer, if the client got one: (user id, token's
    /// username, token's expiry).
    pub fn logged_in(&self) -> Option<(u64, &str, u64)> {
        self.login.iter().find_map(|t| match &t.result {
            TryResult::Answer(Response::LoggedIn { user_id, token }) => {
                Some((*user_id, token.username.as_str(), token.expires))
            }
            _ => None,
        })
    }
}

pub type SharedRecords = Rc<RefCell<Vec<AccountRecord>>>;

/// One session's driver and node.
struct Session {
    driver: Driver<Client>,
    server: Option<u32>,
}

impl Session {
    /// Asks the balancer for a server and opens a session there.
    async fn open(name: &str, trace: &SharedTrace) -> (Session, Result<u32, ClientError>) {
        let cfg = ClientConfig::new(format!("{BALANCER}:{BALANCER_PORT}"));
        let node = Rc::new(RefCell::new(Client::new(cfg)));
        let driver = Driver::new(name, node, trace.clone(), DriverConfig::default());
        let (driver, result) = session::connect(driver).await;
        let server = result.as_ref().ok().copied();
        (Session { driver, server }, result)
    }

    /// Runs one operation and waits for its end.
    async fn op(&mut self, request: Request) -> TryResult {
        match session::request(&mut self.driver, request).await {
            OpEnd::Answer(r) => TryResult::Answer(r),
            OpEnd::Failed(e) => TryResult::Failed(e),
            OpEnd::Lost => TryResult::Lost,
        }
    }

    async fn close(self) {
        session::close(self.driver).await;
    }
}

fn elapsed() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

/// Registers the client program of `records[index]`, which starts at once.
pub fn add_account_client(
    sim: &mut turmoil::Sim<'_>,
    index: usize,
    records: &SharedRecords,
    trace: &SharedTrace,
) {
    let plan = records.borrow()[index].plan.clone();
    let (records, trace) = (records.clone(), trace.clone());
    sim.client(plan.name.clone(), async move {
        let name = plan.name.as_str();
        let then = match plan.login {
            Login::No => "",
            Login::SameSession => ", then log in on the same session",
            Login::NewSession => ", then log in on a new session",
        };
        trace
            .borrow_mut()
            .record_now(name, format!("start: register {}{then}", plan.username));
        let register = Request::Register {
            username: plan.username.clone(),
            password: plan.password.clone(),
        };
        let login = Request::Login {
            username: plan.username.clone(),
            password: plan.password.clone(),
        };
        let push = |into_login: bool, server: Option<u32>, started: Duration, result: TryResult| {
            let t = Try {
                started,
                at: elapsed(),
                server,
                result,
            };
            let mut r = records.borrow_mut();
            let rec = &mut r[index];
            if into_login {
                rec.login.push(t);
            } else {
                rec.register.push(t);
            }
        };

        // Register until the answer is definite, or the attempts run out.
        let mut kept: Option<Session> = None;
        for attempt in 0..plan.attempts {
            if attempt > 0 {
                tokio::time::sleep(RETRY_PAUSE).await;
                trace.borrow_mut().record_now(
                    name,
                    format!("try again on a new session: register {}", plan.username),
                );
            }
            let (mut session, opened) = Session::open(name, &trace).await;
            if let Err(e) = opened {
                push(false, None, elapsed(), TryResult::NoSession(e));
                session.close().await;
                continue;
            }
            let started = elapsed();
            let result = session.op(register.clone()).await;
            let definite = result.is_definite_register();
            push(false, session.server, started, result);
            if definite {
                kept = Some(session);
                break;
            }
            session.close().await;
        }

        // Log in, if planned and the registration was settled.
        if let Some(session) = kept {
            let mut current = match plan.login {
                Login::SameSession => Some(session),
                Login::No | Login::NewSession => {
                    session.close().await;
                    None
                }
            };
            if plan.login != Login::No {
                for attempt in 0..plan.attempts {
                    let mut session = match current.take() {
                        Some(s) => s,
                        None => {
                            if attempt > 0 {
                                tokio::time::sleep(RETRY_PAUSE).await;
                            }
                            trace.borrow_mut().record_now(
                                name,
                                format!("log in as {} on a new session", plan.username),
                            );
                            let (session, opened) = Session::open(name, &trace).await;
                            if let Err(e) = opened {
                                push(true, None, elapsed(), TryResult::NoSession(e));
                                session.close().await;
                                continue;
                            }
                            session
                        }
                    };
                    let started = elapsed();
                    let result = session.op(login.clone()).await;
                    let answered = matches!(result, TryResult::Answer(_));
                    push(true, session.server, started, result);
                    session.close().await;
                    if answered {
                        break;
                    }
                }
            }
        }
        trace.borrow_mut().record_now(name, "done");
        records.borrow_mut()[index].finished = true;
        Ok(())
    });
}
