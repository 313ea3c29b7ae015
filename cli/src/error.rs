//! How a command fails, and the exit code each failure gets: scripts tell
//! the common refusals apart by code (README, "Exit codes").

use ferry_core::client::ClientError;
use ferry_core::server::OpError;
use ferry_core::transfer::TransferError;
use std::fmt;

#[derive(Debug)]
pub enum CliError {
    /// The command line or the configuration is wrong (exit code 2, like
    /// clap's own usage errors).
    Usage(String),
    /// The command ran and failed (exit code 1).
    Failed(String),
    /// The cluster said no, for a reason worth its own exit code.
    Refused { kind: Refusal, message: String },
}

/// Refusals a script may want to tell apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No such file, user or share (exit code 3).
    NotFound,
    /// Not logged in, a wrong password, a session that ended, too many
    /// tries (exit code 4).
    NotAllowed,
    /// No server could be had: none free, none answering, no master
    /// (exit code 5).
    NoServer,
    /// The name is taken: a file without --force, a username, a name that
    /// is a folder or under a file (exit code 6).
    Conflict,
}

/// What an interrupted command (Ctrl-C, SIGTERM) exits with.
pub const INTERRUPTED: u8 = 130;

impl Refusal {
    pub fn exit_code(self) -> u8 {
        match self {
            Refusal::NotFound => 3,
            Refusal::NotAllowed => 4,
            Refusal::NoServer => 5,
            Refusal::Conflict => 6,
        }
    }

    /// The refusal an answer of the cluster is, if it is one of these.
    pub fn of_op(e: &OpError) -> Option<Refusal> {
        match e {
            OpError::NoSuchFile
            | OpError::NoSuchUser
            | OpError::NotShared
            | OpError::Transfer(TransferError::NotFound) => Some(Refusal::NotFound),
            OpError::BadCredentials
            | OpError::RateLimited { .. }
            | OpError::InvalidSession { .. }
            | OpError::NotAuthenticated => Some(Refusal::NotAllowed),
            OpError::Unavailable { .. } => Some(Refusal::NoServer),
            OpError::FileExists
            | OpError::UsernameTaken
            | OpError::NameConflict { .. }
            | OpError::Transfer(TransferError::Exists | TransferError::Conflict { .. }) => {
                Some(Refusal::Conflict)
            }
            _ => None,
        }
    }
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Failed(_) => 1,
            CliError::Refused { kind, .. } => kind.exit_code(),
        }
    }

    /// The cluster's answer `e` as the command's error.
    pub fn op(e: &OpError) -> CliError {
        let message = e.to_string();
        match Refusal::of_op(e) {
            Some(kind) => CliError::Refused { kind, message },
            None => CliError::Failed(message),
        }
    }

    /// The client's failure `e` as the command's error.
    pub fn client(e: &ClientError) -> CliError {
        let message = e.to_string();
        match e {
            ClientError::NoServer(_) => CliError::Refused {
                kind: Refusal::NoServer,
                message,
            },
            _ => CliError::Failed(message),
        }
    }

    /// What several failures of one command (one per file) come to: their
    /// kind if they share one, else a plain failure.
    pub fn of_many(kinds: &[Option<Refusal>], message: String) -> CliError {
        match kinds.split_first() {
            Some((Some(kind), rest)) if rest.iter().all(|k| *k == Some(*kind)) => {
                CliError::Refused {
                    kind: *kind,
                    message,
                }
            }
            _ => CliError::Failed(message),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(m) | CliError::Failed(m) | CliError::Refused { message: m, .. } => {
                f.write_str(m)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_have_codes_of_their_own() {
        let codes: Vec<u8> = [
            OpError::NoSuchFile,
            OpError::BadCredentials,
            OpError::FileExists,
            OpError::Transfer(TransferError::Exists),
            OpError::CannotShareWithSelf,
        ]
        .iter()
        .map(|e| CliError::op(e).exit_code())
        .collect();
        assert_eq!(codes, [3, 4, 6, 6, 1]);
        let same = [Some(Refusal::NotFound), Some(Refusal::NotFound)];
        assert_eq!(CliError::of_many(&same, "x".into()).exit_code(), 3);
        let mixed = [Some(Refusal::NotFound), None];
        assert_eq!(CliError::of_many(&mixed, "x".into()).exit_code(), 1);
    }
}
