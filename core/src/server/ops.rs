//! The operations of an established session: register, login, logout, whoami.

use super::{Confirm, Conn, Link, Op, OpCode, OpError, Server, ServerEvent, SessionMsg, Stage};
use crate::accounts::password::{self, PasswordHash};
use crate::accounts::token::SessionToken;
use crate::accounts::username;
use crate::io::ConnId;
use crate::refusal::Refusal;
use crate::replication::entry::{Origin, Txn, TxnResult};
use crate::time::Timestamp;

impl Server {
    /// The data of operation `op` arrived.
    pub(super) fn on_op_data(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        op: OpCode,
        data: SessionMsg,
    ) {
        let reply = match (op, data) {
            (OpCode::Register, SessionMsg::Credentials { username, password }) => {
                self.register(now, conn, &username, &password)
            }
            (OpCode::Login, SessionMsg::Credentials { username, password }) => {
                self.login(now, conn, &username, &password, false)
            }
            (OpCode::Logout, SessionMsg::Token { token }) => self.logout(now, conn, token),
            (OpCode::WhoAmI, SessionMsg::Token { token })
                if self.replica.state().user(token.user_id).is_none() =>
            {
                self.confirm(now, conn, OpCode::WhoAmI, Confirm::WhoAmI { token })
            }
            (OpCode::WhoAmI, SessionMsg::Token { token }) => {
                self.verify_token(now, &token).map(|_| {
                    let me = SessionMsg::Me {
                        user_id: token.user_id,
                        username: token.username.clone(),
                    };
                    // The session now acts as this user, and only this one.
                    if let Some(Conn {
                        stage: Stage::Established { user, .. },
                        ..
                    }) = self.conns.get_mut(&conn)
                    {
                        *user = Some(token);
                    }
                    Some(me)
                })
            }
            (op, data) if op.needs_login() => {
                return self.on_file_op_data(now, conn, op, data);
            }
            (op, _) => return self.wrong_data(conn, op),
        };
        self.reply(conn, op, reply);
    }

    /// Answers now, or not yet (`Ok(None)`: ordered through the master, or
    /// waiting for a transfer; answered later).
    pub(super) fn reply(
        &mut self,
        conn: ConnId,
        op: OpCode,
        reply: Result<Option<SessionMsg>, OpError>,
    ) {
        match reply {
            Ok(None) => {}
            Ok(Some(msg)) => self.answer(conn, op, msg),
            Err(e) => self.answer(conn, op, SessionMsg::Failed(e)),
        }
    }

    pub(super) fn wrong_data(&mut self, conn: ConnId, op: OpCode) {
        let what = format!("data that does not belong to {op:?}");
        self.refuse(conn, Refusal::Unexpected { what }, Link::Session);
    }

    pub(super) fn answer(&mut self, conn: ConnId, op: OpCode, msg: SessionMsg) {
        let outcome = match &msg {
            SessionMsg::Failed(e) => e.to_string(),
            SessionMsg::LoggedIn { user_id, .. } => format!("logged in user {user_id}"),
            other => format!("{other:?}"),
        };
        self.out.send(conn, &msg);
        self.set_op(conn, Op::Idle);
        self.out.event(ServerEvent::Answered { conn, op, outcome });
    }

    /// Sends `txn` to the master on behalf of the session on `conn`.
    pub(super) fn order(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        op: OpCode,
        txn: Txn,
    ) -> Result<Option<SessionMsg>, OpError> {
        let Some(Conn {
            stage: Stage::Established {
                session, requests, ..
            },
            ..
        }) = self.conns.get_mut(&conn)
        else {
            return Ok(None);
        };
        *requests += 1;
        let origin = Origin {
            server: self.cfg.id,
            session: *session,
            request: *requests,
        };
        if self
            .replica
            .submit(now, origin, txn, &mut self.out)
            .is_err()
        {
            return Err(OpError::Unavailable {
                reason: "too many requests are waiting for the master".into(),
            });
        }
        let deadline = now + self.cfg.request_timeout;
        self.set_op(
            conn,
            Op::Ordering {
                op,
                origin,
                deadline,
                stored: None,
            },
        );
        Ok(None)
    }

    fn register(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        raw_name: &str,
        pass: &str,
    ) -> Result<Option<SessionMsg>, OpError> {
        let name =
            username::normalize(raw_name).map_err(|reason| OpError::InvalidUsername { reason })?;
        password::check_policy(pass).map_err(|reason| OpError::InvalidPassword { reason })?;
        // A fast answer for the common case; the master's order decides races.
        if self.replica.state().user_by_name(&name).is_some() {
            return Err(OpError::UsernameTaken);
        }
        let hash =
            password::hash(self.cfg.password, self.entropy.bytes(), pass).ok_or_else(|| {
                OpError::Unavailable {
                    reason: "password hashing failed".into(),
                }
            })?;
        let txn = Txn::Register {
            username: name,
            password: hash,
        };
        self.order(now, conn, OpCode::Register, txn)
    }

    /// `confirmed`: this server has applied every write acknowledged before
    /// the request arrived (see `Op::Confirming`).
    pub(super) fn login(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        raw_name: &str,
        pass: &str,
        confirmed: bool,
    ) -> Result<Option<SessionMsg>, OpError> {
        let Ok(name) = username::normalize(raw_name) else {
            return Err(OpError::BadCredentials);
        };
        self.limiter
            .check(now, &name)
            .map_err(|retry_after_secs| OpError::RateLimited { retry_after_secs })?;
        let user = self.replica.state().user_by_name(&name).cloned();
        if user.is_none() && !confirmed {
            // Unknown here may only mean "registered elsewhere a moment ago":
            // ask the master how far the log goes and look again once
            // applied that far (read-your-writes across servers).
            let again = Confirm::Login {
                name: raw_name.to_string(),
                password: pass.to_string(),
            };
            return self.confirm(now, conn, OpCode::Login, again);
        }
        // Unknown users cost one hash too, so timing does not tell them apart.
        let ok = match &user {
            Some(u) => password::verify(&u.password, pass),
            None => {
                let dummy = PasswordHash {
                    params: self.cfg.password,
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
        let expires = unix_secs(now) + self.cfg.session_ttl.as_secs();
        let token = SessionToken::issue(
            &self.secret,
            user.id,
            user.name,
            expires,
            self.entropy.bytes(),
        );
        Ok(Some(SessionMsg::LoggedIn {
            user_id: user.id,
            token,
        }))
    }

    fn logout(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        token: SessionToken,
    ) -> Result<Option<SessionMsg>, OpError> {
        self.verify_token(now, &token)?;
        let txn = Txn::Revoke {
            token_id: token.id,
            expires: token.expires,
        };
        self.order(now, conn, OpCode::Logout, txn)
    }

    /// The user a token proves, if it is authentic, unexpired, not revoked,
    /// and names a user this server knows.
    pub(super) fn verify_token(
        &self,
        now: Timestamp,
        token: &SessionToken,
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
        let state = self.replica.state();
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
        now: Timestamp,
        conn: ConnId,
        op: OpCode,
        again: Confirm,
    ) -> Result<Option<SessionMsg>, OpError> {
        match self.replica.ask_read_index(&mut self.out) {
            Some(read) => {
                let deadline = now + self.cfg.request_timeout;
                self.set_op(
                    conn,
                    Op::Confirming {
                        op,
                        read,
                        again,
                        deadline,
                    },
                );
                self.answer_confirmed(now);
                Ok(None)
            }
            None => Err(OpError::Unavailable {
                reason: "this server cannot reach the master to confirm".into(),
            }),
        }
    }

    /// Answers every session whose read index has been reached.
    pub(super) fn answer_confirmed(&mut self, now: Timestamp) {
        let ready: Vec<(ConnId, u64)> = self
            .conns
            .iter()
            .filter_map(|(c, conn)| match &conn.stage {
                Stage::Established {
                    op: Op::Confirming { read, .. },
                    ..
                } if self.replica.read_index_ready(*read) => Some((*c, *read)),
                _ => None,
            })
            .collect();
        for (conn, read) in ready {
            self.replica.forget_read_index(read);
            let Some(Conn {
                stage: Stage::Established { op, .. },
                ..
            }) = self.conns.get_mut(&conn)
            else {
                continue;
            };
            let Op::Confirming {
                op: code, again, ..
            } = std::mem::replace(op, Op::Idle)
            else {
                continue;
            };
            let reply = match again {
                Confirm::Login { name, password } => self.login(now, conn, &name, &password, true),
                Confirm::WhoAmI { token } => self.verify_token(now, &token).map(|_| {
                    let me = SessionMsg::Me {
                        user_id: token.user_id,
                        username: token.username.clone(),
                    };
                    // The session now acts as this user, and only this one.
                    if let Some(Conn {
                        stage: Stage::Established { user, .. },
                        ..
                    }) = self.conns.get_mut(&conn)
                    {
                        *user = Some(token);
                    }
                    Some(me)
                }),
            };
            match reply {
                Ok(Some(msg)) => self.answer(conn, code, msg),
                Ok(None) => {}
                Err(e) => self.answer(conn, code, SessionMsg::Failed(e)),
            }
        }
    }

    /// A transaction of one of our sessions is applied here: answer it.
    pub(super) fn deliver(&mut self, origin: Origin, result: TxnResult) {
        self.blobs.applied(&origin);
        let found = self.conns.iter().find_map(|(id, c)| match &c.stage {
            Stage::Established {
                op: Op::Ordering { op, origin: o, .. },
                ..
            } if *o == origin => Some((*id, *op)),
            _ => None,
        });
        let Some((conn, op)) = found else {
            // The client left or gave up; the transaction stands.
            return;
        };
        let msg = match result {
            TxnResult::Registered { user_id } => SessionMsg::Registered { user_id },
            TxnResult::UsernameTaken => SessionMsg::Failed(OpError::UsernameTaken),
            TxnResult::Revoked => SessionMsg::LoggedOut,
            other => self.file_result(conn, other),
        };
        self.answer(conn, op, msg);
    }

    pub(super) fn on_deadline(&mut self, now: Timestamp, conn: ConnId) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        match &c.stage {
            // The operation's own deadline, if it has one, comes first.
            Stage::Established {
                op, idle_deadline, ..
            } if op.deadline().is_none_or(|d| d > now) => {
                if *idle_deadline <= now {
                    let step = "any message from an idle session".into();
                    self.refuse(conn, Refusal::Timeout { step }, Link::Session);
                }
            }
            Stage::Established {
                op: Op::Uploading { .. } | Op::Downloading { .. },
                ..
            } => self.transfer_timeout(now, conn),
            Stage::Established {
                op: Op::AwaitBlob { .. },
                ..
            } => {
                let reason = "the file's content is not on this server yet; try again".into();
                self.answer(
                    conn,
                    OpCode::Download,
                    SessionMsg::Failed(OpError::Unavailable { reason }),
                );
            }
            Stage::Established {
                op: Op::Confirming { op, read, .. },
                ..
            } => {
                let (op, read) = (*op, *read);
                self.replica.forget_read_index(read);
                let reason = "could not confirm with the master in time".into();
                self.answer(
                    conn,
                    op,
                    SessionMsg::Failed(OpError::Unavailable { reason }),
                );
            }
            Stage::Established {
                op: Op::Ordering { op, .. },
                ..
            } => {
                let op = *op;
                let reason =
                    "the master did not order the request in time; it may still take effect".into();
                self.answer(
                    conn,
                    op,
                    SessionMsg::Failed(OpError::Unavailable { reason }),
                );
            }
            Stage::Established {
                op: Op::AwaitData { .. },
                ..
            } => {
                let step = "the operation's data".into();
                self.refuse(conn, Refusal::Timeout { step }, Link::Session);
            }
            Stage::Established { op: Op::Idle, .. } => {
                let step = "any message from an idle session".into();
                self.refuse(conn, Refusal::Timeout { step }, Link::Session);
            }
            Stage::AwaitAck { .. } => {
                let step = "the client's ACK".into();
                self.refuse(conn, Refusal::Timeout { step }, Link::Session);
            }
            _ => {
                let step = "the first message".into();
                self.refuse(conn, Refusal::Timeout { step }, Link::Session);
            }
        }
    }
}

/// The drivers' timestamps count from the Unix epoch.
pub fn unix_secs(now: Timestamp) -> u64 {
    now.as_micros() / 1_000_000
}
