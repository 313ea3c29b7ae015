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
use std::collections::BTreeMap;
use std::time::Duration;

/// What the account operations act through.
pub(super) struct Ctx<'a> {
    pub(super) now: Timestamp,
    pub(super) sessions: &'a mut Sessions,
    pub(super) replica: &'a mut Replica,
    pub(super) entropy: &'a mut Entropy,
    pub(super) out: &'a mut Outbox<ServerEvent>,
}

/// A read to run again once this server has caught up with the master's
/// commit index as of the moment the read arrived.
enum Confirm {
    Login { name: String, password: String },
    WhoAmI { token: SessionToken },
}

/// A session waiting for the master's read index before its answer.
struct Confirming {
    op: OpCode,
    read: u64,
    again: Confirm,
    deadline: Timestamp,
}

pub(super) struct Accounts {
    secret: ClusterSecret,
    password: PasswordParams,
    session_ttl: Duration,
    request_timeout: Duration,
    limiter: LoginLimiter,
    confirming: BTreeMap<ConnId, Confirming>,
}

impl Accounts {
    pub(super) fn new(cfg: &ServerConfig, secret: ClusterSecret) -> Self {
        Accounts {
            secret,
            password: cfg.password,
            session_ttl: cfg.session_ttl,
            request_timeout: cfg.request_timeout,
            limiter: LoginLimiter::default(),
            confirming: BTreeMap::new(),
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
                self.login(cx, conn, &username, &password, false)
            }
            (OpCode::Logout, SessionMsg::Token { token }) => self.logout(cx, conn, token),
            (OpCode::WhoAmI, SessionMsg::Token { token })
                if cx.replica.state().user(token.user_id).is_none() =>
            {
                self.confirm(cx, conn, OpCode::WhoAmI, Confirm::WhoAmI { token })
            }
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

    /// `confirmed`: this server has applied every write acknowledged before
    /// the request arrived (see [`Confirming`]).
    fn login(
        &mut self,
        cx: &mut Ctx<'_>,
        conn: ConnId,
        raw_name: &str,
        pass: &str,
        confirmed: bool,
    ) -> Result<Option<SessionMsg>, OpError> {
        let now = cx.now;
        let Ok(name) = username::normalize(raw_name) else {
            return Err(OpError::BadCredentials);
        };
        self.limiter
            .check(now, &name)
            .map_err(|retry_after_secs| OpError::RateLimited { retry_after_secs })?;
        let user = cx.replica.state().user_by_name(&name).cloned();
        if user.is_none() && !confirmed {
            // Unknown here may only mean "registered elsewhere a moment ago":
            // ask the master how far the log goes and look again once
            // applied that far (read-your-writes across servers).
            let again = Confirm::Login {
                name: raw_name.to_string(),
                password: pass.to_string(),
            };
            return self.confirm(cx, conn, OpCode::Login, again);
        }
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
            _ => Err(invalid("this server does not know the user yet")),
        }
    }

    /// Waits for the master's read index before answering `again`.
    fn confirm(
        &mut self,
        cx: &mut Ctx<'_>,
        conn: ConnId,
        op: OpCode,
        again: Confirm,
    ) -> Result<Option<SessionMsg>, OpError> {
        match cx.replica.ask_read_index(cx.now, cx.out) {
            Some(read) => {
                let deadline = cx.now + self.request_timeout;
                self.confirming.insert(
                    conn,
                    Confirming {
                        op,
                        read,
                        again,
                        deadline,
                    },
                );
                cx.sessions.run_elsewhere(conn);
                self.answer_confirmed(cx);
                Ok(None)
            }
            None => Err(OpError::Unavailable {
                reason: "this server cannot reach the master to confirm".into(),
            }),
        }
    }

    /// Answers every session whose read index has been reached.
    pub(super) fn answer_confirmed(&mut self, cx: &mut Ctx<'_>) {
        let ready: Vec<(ConnId, u64)> = self
            .confirming
            .iter()
            .filter(|(_, c)| cx.replica.read_index_ready(c.read))
            .map(|(conn, c)| (*conn, c.read))
            .collect();
        for (conn, read) in ready {
            cx.replica.forget_read_index(read);
            let Some(Confirming {
                op: code, again, ..
            }) = self.confirming.remove(&conn)
            else {
                continue;
            };
            cx.sessions.set_idle(conn);
            let reply = match again {
                Confirm::Login { name, password } => self.login(cx, conn, &name, &password, true),
                Confirm::WhoAmI { token } => self.who_am_i(cx, conn, token),
            };
            cx.sessions.reply(conn, code, reply, cx.out);
        }
    }

    /// Whether the session on `conn` waits for a read index here.
    pub(super) fn holds(&self, conn: ConnId) -> bool {
        self.confirming.contains_key(&conn)
    }

    pub(super) fn deadline(&self, conn: ConnId) -> Option<Timestamp> {
        self.confirming.get(&conn).map(|c| c.deadline)
    }

    /// The session on `conn` waited for its read index in vain.
    pub(super) fn on_deadline(&mut self, cx: &mut Ctx<'_>, conn: ConnId) {
        let Some(Confirming { op, read, .. }) = self.confirming.remove(&conn) else {
            return;
        };
        cx.replica.forget_read_index(read);
        let reason = "could not confirm with the master in time".into();
        let msg = SessionMsg::Failed(OpError::Unavailable { reason });
        cx.sessions.answer(conn, op, msg, cx.out);
    }

    /// The session on `conn` is gone.
    pub(super) fn forget(&mut self, conn: ConnId) {
        self.confirming.remove(&conn);
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
