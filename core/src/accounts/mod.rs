//! Accounts: the username policy, password hashing, session tokens and the
//! per-server login rate limiter.

pub mod limiter;
pub mod password;
pub mod token;
pub mod username;
