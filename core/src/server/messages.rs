//! Messages of the client ↔ server session link.

use crate::accounts::token::SessionToken;
use crate::auth::AuthCode;
use crate::refusal::Refusal;
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
}

/// First tag byte of [`SessionMsg`] frames.
pub const SESSION_TAGS: std::ops::Range<u8> = 20..40;

/// The seeds' "request special codes".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Readable, Writable)]
#[speedy(tag_type = u8)]
pub enum OpCode {
    Register,
    Login,
    Logout,
    WhoAmI,
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
        }
    }
}

impl std::error::Error for OpError {}

/// What a client asks for.
#[derive(Clone, PartialEq, Eq)]
pub enum Request {
    Register { username: String, password: String },
    Login { username: String, password: String },
    Logout { token: SessionToken },
    WhoAmI { token: SessionToken },
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Passwords never reach a log or a trace.
        match self {
            Request::Register { username, .. } => write!(f, "Register({username})"),
            Request::Login { username, .. } => write!(f, "Login({username})"),
            Request::Logout { token } => write!(f, "Logout(user {})", token.user_id),
            Request::WhoAmI { token } => write!(f, "WhoAmI(user {})", token.user_id),
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
        }
    }

    /// The data message that follows `Proceed`.
    pub fn payload(&self) -> SessionMsg {
        match self {
            Request::Register { username, password } | Request::Login { username, password } => {
                SessionMsg::Credentials {
                    username: username.clone(),
                    password: password.clone(),
                }
            }
            Request::Logout { token } | Request::WhoAmI { token } => SessionMsg::Token {
                token: token.clone(),
            },
        }
    }
}

/// What a client gets back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    Registered { user_id: u64 },
    LoggedIn { user_id: u64, token: SessionToken },
    LoggedOut,
    Me { user_id: u64, username: String },
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
            Response::Failed(e) => write!(f, "failed: {e}"),
        }
    }
}
