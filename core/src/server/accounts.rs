//! The account operations of a session: register, log in, log out, and
//! "who am I", which proves a login to the session so that its file
//! operations act as that user. Registrations and logouts are ordered
//! through the master; logins and "who am I" are answered from this
//! server's state, once it has applied every write acknowledged anywhere
//! before the question arrived (read-your-writes across servers: the
//! master's read index). Failed logins are rate-limited per username.

use super::config::ServerConfig;
use super::event::ServerEvent;
use super::messages::{OpCode, OpError, SessionMsg};
use super::sessions::{wrong_data, Sessions};
use crate::accounts::limiter::LoginLimiter;
use crate::accounts::password::{self, PasswordHash, PasswordParams};
use crate::accounts::token::SessionToken;
use crate::accounts::username;
use crate::auth::ClusterSecret;
use crate::entropy::Entropy;
use crate::io::ConnId;
use crate::outbox::Outbox;
use crate::refusal::Refusal;
use crate::replication::entry::{Txn, TxnResult};
use crate::replication::state::State;
use crate::replication::Replica;
use crate::time::Timestamp;
use std::time::Duration;

/// What the account operations act through.
pub(super) struct Ctx<'a> {
    pub(super) now: Timestamp,
    pub(super) sessions: &'a mut Sessions,
    pub(super) replica: &'a mut Replica,
    pub(super) entropy: &'a mut Entropy,
    pub(super) out: &'a mut Outbox<ServerEvent>,
}

pub(super) struct Accounts {
    secret: ClusterSecret,
    password: PasswordParams,
    session_ttl: Duration,
    limiter: LoginLimiter,
}

impl Accounts {
    pub(super) fn new(cfg: &ServerConfig, secret: ClusterSecret) -> Self {
        Accounts {
            secret,
            password: cfg.password,
            session_ttl: cfg.session_ttl,
            limiter: LoginLimiter::default(),
        }
    }

    /// The data of account operation `op` arrived; data that is not the
    /// operation's is a refusal.
    pub(super) fn on_data(
        &mut self,
        cx: &mut Ctx<'_>,
        conn: ConnId,
        op: OpCode,
        data: SessionMsg,
    ) -> Result<(), Refusal> {
        let reply = match (op, data) {
            (OpCode::Register, SessionMsg::Credentials { username, password }) => {
                self.register(cx, conn, &username, &password)
            }
            (OpCode::Login, SessionMsg::Credentials { username, password }) => {
                self.login(cx, &username, &password)
            }
            (OpCode::Logout, SessionMsg::Token { token }) => self.logout(cx, conn, token),
            (OpCode::WhoAmI, SessionMsg::Token { token }) => self.who_am_i(cx, conn, token),
            (op, _) => return Err(wrong_data(op)),
        };
        cx.sessions.reply(conn, op, reply, cx.out);
        Ok(())
    }

    /// Sends `txn` to the master for the session; answered once applied.
    fn order(
        cx: &mut Ctx<'_>,
        conn: ConnId,
        op: OpCode,
        txn: Txn,
    ) -> Result<Option<SessionMsg>, OpError> {
        cx.sessions
            .order(cx.now, conn, op, txn, cx.replica, cx.out)
            .map(|_| None)
    }

    fn register(
        &mut self,
        cx: &mut Ctx<'_>,
        conn: ConnId,
        raw_name: &str,
        pass: &str,
    ) -> Result<Option<SessionMsg>, OpError> {
        let name =
            username::normalize(raw_name).map_err(|reason| OpError::InvalidUsername { reason })?;
        password::check_policy(pass).map_err(|reason| OpError::InvalidPassword { reason })?;
        // A fast answer for the common case; the master's order decides races.
        if cx.replica.state().user_by_name(&name).is_some() {
            return Err(OpError::UsernameTaken);
        }
        let hash = password::hash(self.password, cx.entropy.bytes(), pass).ok_or_else(|| {
            OpError::Unavailable {
                reason: "password hashing failed".into(),
            }
        })?;
        let txn = Txn::Register {
            username: name,
            password: hash,
        };
        Self::order(cx, conn, OpCode::Register, txn)
    }

    /// Runs once this server has applied every write acknowledged before
    /// the request arrived (the server's read gate), so a registration made
    /// through another server a moment ago is seen.
    fn login(
        &mut self,
        cx: &mut Ctx<'_>,
        raw_name: &str,
        pass: &str,
    ) -> Result<Option<SessionMsg>, OpError> {
        let now = cx.now;
        let Ok(name) = username::normalize(raw_name) else {
            return Err(OpError::BadCredentials);
        };
        self.limiter
            .check(now, &name)
            .map_err(|retry_after_secs| OpError::RateLimited { retry_after_secs })?;
        let user = cx.replica.state().user_by_name(&name).cloned();
        // Unknown users cost one hash too, so timing does not tell them apart.
        let ok = match &user {
            Some(u) => password::verify(&u.password, pass),
            None => {
                let dummy = PasswordHash {
                    params: self.password,
                    salt: [0; 16],
                    hash: [0; 32],
                };
                let _ = password::verify(&dummy, pass);
                false
            }
        };
        let Some(user) = user.filter(|_| ok) else {
            self.limiter.failed(now, &name);
            return Err(OpError::BadCredentials);
        };
        self.limiter.succeeded(&name);
        let expires = unix_secs(now) + self.session_ttl.as_secs();
        let token = SessionToken::issue(
            &self.secret,
            user.id,
            user.name,
            expires,
            cx.entropy.bytes(),
        );
        Ok(Some(SessionMsg::LoggedIn {
            user_id: user.id,
            token,
        }))
    }

    fn logout(
        &mut self,
        cx: &mut Ctx<'_>,
        conn: ConnId,
        token: SessionToken,
    ) -> Result<Option<SessionMsg>, OpError> {
        self.verify_token(cx.now, &token, cx.replica.state())?;
        let txn = Txn::Revoke {
            token_id: token.id,
            expires: token.expires,
        };
        Self::order(cx, conn, OpCode::Logout, txn)
    }

    /// The user `token` proves, which the session acts as from now on.
    fn who_am_i(
        &mut self,
        cx: &mut Ctx<'_>,
        conn: ConnId,
        token: SessionToken,
    ) -> Result<Option<SessionMsg>, OpError> {
        self.verify_token(cx.now, &token, cx.replica.state())
            .map(|_| {
                let me = SessionMsg::Me {
                    user_id: token.user_id,
                    username: token.username.clone(),
                };
                // The session now acts as this user, and only this one.
                cx.sessions.prove(conn, token);
                Some(me)
            })
    }

    /// The user a token proves, if it is authentic, unexpired, not revoked,
    /// and names a user this server knows.
    pub(super) fn verify_token(
        &self,
        now: Timestamp,
        token: &SessionToken,
        state: &State,
    ) -> Result<u64, OpError> {
        let invalid = |reason: &str| OpError::InvalidSession {
            reason: reason.into(),
        };
        if !token.authentic(&self.secret) {
            return Err(invalid("the session was not issued by this cluster"));
        }
        if token.expires <= unix_secs(now) {
            return Err(invalid("the session expired"));
        }
        if state.is_revoked(&token.id) {
            return Err(invalid("the session was logged out"));
        }
        match state.user(token.user_id) {
            Some(u) if u.name == token.username => Ok(u.id),
            _ => Err(invalid("no such user")),
        }
    }
}

/// The answer to an account transaction of a session, now applied here;
/// `None` if the result is not an account transaction's.
pub(super) fn answer_to(result: &TxnResult) -> Option<SessionMsg> {
    Some(match result {
        TxnResult::Registered { user_id } => SessionMsg::Registered { user_id: *user_id },
        TxnResult::UsernameTaken => SessionMsg::Failed(OpError::UsernameTaken),
        TxnResult::Revoked => SessionMsg::LoggedOut,
        _ => return None,
    })
}

/// The drivers' timestamps count from the Unix epoch.
pub fn unix_secs(now: Timestamp) -> u64 {
    now.as_micros() / 1_000_000
}
