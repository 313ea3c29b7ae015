//! The account operations of a session: register, log in, log out, "who
//! am I", which proves a login to the session so that its file operations
//! act as that user, changing one's password, and deleting one's account. Registrations, logouts
//! and password changes are ordered through the master; logins and "who am
//! I" are answered from this server's state, once it has applied every
//! write acknowledged anywhere before the question arrived (read-your-
//! writes across servers: the master's read index).
//!
//! Failed logins are counted for the whole cluster, per account and per
//! source (`accounts::limiter`, `replication::logins`): a wrong password
//! is ordered as `LoginFailed` and answered once applied here, and a try
//! that must wait is refused ("try again in T") before any hashing, so a
//! throttled attacker costs no argon2 work. Until this server has applied
//! the failures it ordered itself, it counts them as if it had, so that a
//! second try through it cannot slip in between.

use super::config::ServerConfig;
use super::event::ServerEvent;
use super::messages::{OpCode, OpError, SessionMsg};
use super::sessions::{wrong_data, Sessions};
use crate::accounts::limiter::AccountLogins;
use crate::accounts::password::{self, PasswordHash, PasswordParams};
use crate::accounts::token::SessionToken;
use crate::accounts::username;
use crate::auth::ClusterSecret;
use crate::entropy::Entropy;
use crate::io::ConnId;
use crate::outbox::Outbox;
use crate::refusal::Refusal;
use crate::replication::entry::{Origin, Txn, TxnResult};
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
    id: u32,
    secret: ClusterSecret,
    password: PasswordParams,
    session_ttl: Duration,
    /// Failed logins this server ordered and has not applied yet.
    pending: Vec<Pending>,
    /// The session id and last request number of the entries this server
    /// orders on its own (`LoginSucceeded`, which no client waits for).
    own: Option<(u64, u64)>,
}

/// A failed login ordered here, not yet applied here.
struct Pending {
    origin: Origin,
    username: String,
    source: String,
    /// Unix seconds.
    at: u64,
}

/// How long a failure ordered here counts before it is applied; one not
/// applied by then (it was lost with a master, and the session's deadline
/// passed) is left to the log.
const PENDING_SECS: u64 = 60;

impl Accounts {
    pub(super) fn new(cfg: &ServerConfig, secret: ClusterSecret) -> Self {
        Accounts {
            id: cfg.id,
            secret,
            password: cfg.password,
            session_ttl: cfg.session_ttl,
            pending: Vec::new(),
            own: None,
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
                self.login(cx, conn, &username, &password)
            }
            (
                OpCode::ChangePassword,
                SessionMsg::ChangePassword {
                    token,
                    current,
                    new,
                },
            ) => self.change_password(cx, conn, token, &current, &new),
            (OpCode::DeleteAccount, SessionMsg::DeleteAccount { token, password }) => {
                self.delete_account(cx, conn, token, &password)
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
    /// through another server a moment ago is seen, and so are the failed
    /// logins counted anywhere before.
    fn login(
        &mut self,
        cx: &mut Ctx<'_>,
        conn: ConnId,
        raw_name: &str,
        pass: &str,
    ) -> Result<Option<SessionMsg>, OpError> {
        let Ok(name) = username::normalize(raw_name) else {
            return Err(OpError::BadCredentials);
        };
        let source = cx.sessions.source(conn).to_string();
        let record = self.throttle(cx, &name, &source)?;
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
            return self.count_failure(cx, conn, OpCode::Login, name, source);
        };
        if record.success_changes(&source, unix_secs(cx.now)) {
            // Clears the source's failures and trusts it; nobody waits.
            let origin = self.own_origin(cx.entropy);
            let txn = Txn::LoginSucceeded {
                username: name,
                source,
            };
            let _ = cx.replica.submit(cx.now, origin, txn, cx.out);
        }
        let epoch = cx.replica.state().epoch(user.id);
        Ok(Some(self.logged_in(cx, epoch, user.id, user.name)))
    }

    /// `username`'s login record as this server must count it, the
    /// failures it ordered itself included; `RateLimited` while `source`
    /// must wait.
    fn throttle(
        &mut self,
        cx: &Ctx<'_>,
        username: &str,
        source: &str,
    ) -> Result<AccountLogins, OpError> {
        let now = unix_secs(cx.now);
        let state = cx.replica.state();
        self.pending
            .retain(|p| !state.has_applied(&p.origin) && now < p.at.saturating_add(PENDING_SECS));
        let mut record = state.logins().account(username);
        for p in self.pending.iter().filter(|p| p.username == username) {
            record.fail(&p.source, p.at);
        }
        record
            .check(source, now)
            .map_err(|retry_after_secs| OpError::RateLimited { retry_after_secs })?;
        Ok(record)
    }

    /// A wrong password for `username` from `source`: ordered, and answered
    /// "invalid username or password" once applied here.
    fn count_failure(
        &mut self,
        cx: &mut Ctx<'_>,
        conn: ConnId,
        op: OpCode,
        username: String,
        source: String,
    ) -> Result<Option<SessionMsg>, OpError> {
        let txn = Txn::LoginFailed {
            username: username.clone(),
            source: source.clone(),
        };
        let origin = cx
            .sessions
            .order(cx.now, conn, op, txn, cx.replica, cx.out)?;
        if let Some(origin) = origin {
            self.pending.push(Pending {
                origin,
                username,
                source,
                at: unix_secs(cx.now),
            });
        }
        Ok(None)
    }

    /// The next origin of an entry this server orders on its own.
    fn own_origin(&mut self, entropy: &mut Entropy) -> Origin {
        let id = self.id;
        let (session, request) = self
            .own
            .get_or_insert_with(|| (entropy.next_u64() & !Origin::CLIENT_CHOSEN, 0));
        *request += 1;
        Origin {
            server: id,
            session: *session,
            request: *request,
        }
    }

    /// A new session token for `user_id` (`name`), of password epoch
    /// `epoch`.
    fn logged_in(&self, cx: &mut Ctx<'_>, epoch: u32, user_id: u64, name: String) -> SessionMsg {
        let expires = unix_secs(cx.now) + self.session_ttl.as_secs();
        let id = cx.entropy.bytes();
        let token = SessionToken::issue_in(&self.secret, epoch, user_id, name, expires, id);
        SessionMsg::LoggedIn { user_id, token }
    }

    /// `ferry passwd`: the token's user, who knows the password now, sets
    /// a new one. A wrong current password counts as a failed login.
    fn change_password(
        &mut self,
        cx: &mut Ctx<'_>,
        conn: ConnId,
        token: SessionToken,
        current: &str,
        new: &str,
    ) -> Result<Option<SessionMsg>, OpError> {
        let user_id = self.verify_token(cx.now, &token, cx.replica.state())?;
        password::check_policy(new).map_err(|reason| OpError::InvalidPassword { reason })?;
        let Some(user) = cx.replica.state().user(user_id).cloned() else {
            return Err(OpError::NoSuchUser);
        };
        let source = cx.sessions.source(conn).to_string();
        self.throttle(cx, &user.name, &source)?;
        if !password::verify(&user.password, current) {
            return self.count_failure(cx, conn, OpCode::ChangePassword, user.name, source);
        }
        let hash = password::hash(self.password, cx.entropy.bytes(), new).ok_or_else(|| {
            OpError::Unavailable {
                reason: "password hashing failed".into(),
            }
        })?;
        let txn = Txn::ChangePassword {
            user: user_id,
            password: hash,
        };
        Self::order(cx, conn, OpCode::ChangePassword, txn)
    }

    /// The answer to a password change of one of this server's sessions,
    /// now applied here: a token of the new epoch.
    pub(super) fn password_changed(
        &self,
        cx: &mut Ctx<'_>,
        user_id: u64,
        epoch: u32,
    ) -> SessionMsg {
        match cx.replica.state().user(user_id).map(|u| u.name.clone()) {
            Some(name) => self.logged_in(cx, epoch, user_id, name),
            None => SessionMsg::Failed(OpError::NoSuchUser),
        }
    }

    /// `ferry account delete`: the token's user, who gives the password
    /// again, deletes their account everywhere. A wrong password counts as
    /// a failed login (and is answered "invalid username or password").
    fn delete_account(
        &mut self,
        cx: &mut Ctx<'_>,
        conn: ConnId,
        token: SessionToken,
        pass: &str,
    ) -> Result<Option<SessionMsg>, OpError> {
        let user_id = self.verify_token(cx.now, &token, cx.replica.state())?;
        let Some(user) = cx.replica.state().user(user_id).cloned() else {
            return Err(OpError::NoSuchUser);
        };
        let source = cx.sessions.source(conn).to_string();
        self.throttle(cx, &user.name, &source)?;
        if !password::verify(&user.password, pass) {
            return self.count_failure(cx, conn, OpCode::DeleteAccount, user.name, source);
        }
        let txn = Txn::DeleteAccount { user: user_id };
        Self::order(cx, conn, OpCode::DeleteAccount, txn)
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
        let epoch = state.epoch(token.user_id);
        if !token.authentic(&self.secret, epoch) {
            // Tokens of the user's earlier passwords (a few back; each
            // costs one keyed hash) are told apart from forgeries.
            let mut earlier = (0..epoch).rev().take(16);
            let reason = match earlier.any(|e| token.authentic(&self.secret, e)) {
                true => "the password was changed since this login",
                false => "the session was not issued by this cluster",
            };
            return Err(invalid(reason));
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
        TxnResult::LoginFailed => SessionMsg::Failed(OpError::BadCredentials),
        // Every session of the account is over, this one's login included.
        TxnResult::AccountDeleted { .. } => SessionMsg::LoggedOut,
        _ => return None,
    })
}

/// The drivers' timestamps count from the Unix epoch.
pub fn unix_secs(now: Timestamp) -> u64 {
    now.as_micros() / 1_000_000
}
