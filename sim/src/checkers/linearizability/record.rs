//! The simulator's client records as histories of the catalogue model, and
//! the check a scenario runs at the end of each seed.
//!
//! Which answers settle what (each client's operations never overlap):
//!
//! - a definite answer of the catalogue (registered, taken, logged in, bad
//!   credentials, stored, exists, deleted, shared, no such file...) is the
//!   operation's output, returned when the client heard it;
//! - a refusal before the request reaches the catalogue (no session, not
//!   logged in, an invalid username or password, a bad file name, no
//!   space) changes nothing and says nothing of the catalogue: left out;
//! - a write without an answer (a timeout, a lost session, a client still
//!   waiting at the end) or answered "cluster unavailable: it may still
//!   take effect" (any other failure too) is **optional**: it may take
//!   effect, at any time after it was sent, or never;
//! - a read (login, `ls`) without a definite answer is left out: it
//!   changed nothing, and says nothing.
//!
//! The file clients' records are turned into operations by the files
//! scenario (`scenarios::files::history`), by these rules; downloads are
//! not checked here: their content is judged against the log by the files
//! scenario's own invariants.

use super::catalogue::{Catalogue, Input, Output};
use super::{check, Op, Stats, Verdict};
use crate::clients::account::{AccountRecord, TryResult};
use ferry_core::server::{OpError, Response};

pub type History = Vec<Op<Input, Output>>;

/// Steps of the search per part of a history before it gives up
/// ("unknown"). The scenarios' parts need a few hundred at most: the
/// budget only bounds a pathological one.
pub const BUDGET: u64 = 200_000;

/// Usernames are case-insensitive: the catalogue knows them folded.
pub fn fold(user: &str) -> String {
    user.to_ascii_lowercase()
}

/// The account clients' registrations and logins; their clients are
/// numbered from `first_client`. With `strict_reads` off, a login refused
/// "bad credentials" is not checked: the scenario then allows a server to
/// answer before it has applied the registration.
pub fn accounts(records: &[AccountRecord], first_client: usize, strict_reads: bool) -> History {
    let mut h = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let client = first_client + i;
        let user = fold(&r.plan.username);
        let password = r.plan.password.clone();
        for t in &r.register {
            let input = Input::Register {
                user: user.clone(),
                password: password.clone(),
            };
            let output = match &t.result {
                TryResult::NoSession(_) => continue,
                TryResult::Answer(Response::Registered { user_id }) => Output::Registered(*user_id),
                TryResult::Answer(Response::Failed(OpError::UsernameTaken)) => Output::Taken,
                TryResult::Answer(Response::Failed(
                    OpError::InvalidUsername { .. } | OpError::InvalidPassword { .. },
                )) => continue,
                _ => Output::Unknown,
            };
            h.push(op(client, t.started, t.at, input, output));
        }
        for t in &r.login {
            let input = Input::Login {
                user: user.clone(),
                password: password.clone(),
            };
            let output = match &t.result {
                TryResult::Answer(Response::LoggedIn { user_id, .. }) => Output::LoggedIn(*user_id),
                TryResult::Answer(Response::Failed(OpError::BadCredentials)) if strict_reads => {
                    Output::BadCredentials
                }
                _ => continue,
            };
            h.push(op(client, t.started, t.at, input, output));
        }
    }
    h
}

/// An operation; an unknown output makes it optional (no return).
pub fn op(
    client: usize,
    invoke: std::time::Duration,
    at: std::time::Duration,
    input: Input,
    output: Output,
) -> Op<Input, Output> {
    let ret = (output != Output::Unknown).then_some(at);
    Op {
        client,
        invoke,
        ret,
        input,
        output,
    }
}

/// The check of one seed's history, for its outcome. The default: not
/// checked (a run stopped before its clients were done, whose records lack
/// the operations still on their way).
#[derive(Clone, Debug, Default)]
pub struct LinCheck {
    pub checked: bool,
    pub stats: Stats,
    pub unknown: bool,
    /// The violation, if the history is not linearizable.
    pub violation: Option<String>,
}

impl LinCheck {
    pub fn of(history: &[Op<Input, Output>]) -> Self {
        let (verdict, stats) = check(&Catalogue, history, BUDGET);
        LinCheck {
            checked: true,
            stats,
            unknown: verdict == Verdict::Unknown,
            violation: match verdict {
                Verdict::NotLinearizable(why) => Some(format!(
                    "linearizability: the clients' history is not linearizable: {why}"
                )),
                _ => None,
            },
        }
    }

    /// For a sweep's summary (`ferry-sim` names the first two in its last
    /// line).
    pub fn counts(&self) -> Vec<(&'static str, u64)> {
        vec![
            (HISTORIES_CHECKED, u64::from(self.checked)),
            (HISTORIES_OVER_BUDGET, u64::from(self.unknown)),
            ("linearizability: operations checked", self.stats.ops),
            ("linearizability: parts checked", self.stats.parts),
            ("linearizability: search steps", self.stats.steps),
        ]
    }
}

pub const HISTORIES_CHECKED: &str = "linearizability: histories checked";
pub const HISTORIES_OVER_BUDGET: &str = "linearizability: histories over budget";
