//! File operations of an established, logged-in session: upload, download,
//! list, share, unshare, delete. Uploads land in a temporary file, become a
//! blob named by their digest once verified and durable, and only then are
//! ordered through the master as `PutFile`; the client hears "stored" when
//! this server has applied it. Every operation acts as the session's proven
//! user; nothing a client says about who it is counts.

use super::blobs::{Owner, Waiting};
use super::scrub::says_damaged;
use super::{Conn, Op, OpCode, OpError, Server, ServerEvent, SessionMsg, Stage};
use crate::io::{ConnId, FileOp, FileRef};
use crate::outbox::Outbox;
use crate::replication::entry::{Txn, TxnResult};
use crate::server::messages::{FileOutcome, Listed};
use crate::time::Timestamp;
use crate::transfer::{
    Receiver, ReceiverOutput, Sender, SenderConfig, SenderOutput, TransferError, TransferMsg,
};
use std::collections::BTreeMap;
use std::time::Duration;

/// Longest file name, in bytes.
pub const MAX_NAME: usize = 255;

/// Why `name` cannot name a file, if it cannot. Names are single path
/// components: no separators, no `.` or `..`, no NUL or control characters,
/// and no bidirectional overrides: a name shared with someone else is shown
/// on their terminal, where U+202E would make `gpj.exe` read as `exe.jpg`.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    if name.len() > MAX_NAME {
        return Err(format!("names are at most {MAX_NAME} bytes"));
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not a file name"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| matches!(c, '/' | '\\') || c.is_control() || is_bidi_control(*c))
    {
        return Err(format!("names may not contain {c:?}"));
    }
    Ok(())
}

/// The Unicode bidirectional formatting characters (embeddings, overrides,
/// isolates and marks), which reorder how the rest of a line is displayed.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{061C}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

impl Server {
    /// The session's proven user id, if its token is still good.
    fn session_user(&self, now: Timestamp, conn: ConnId) -> Result<u64, OpError> {
        let token = match self.conns.get(&conn).map(|c| &c.stage) {
            Some(Stage::Established {
                user: Some(token), ..
            }) => token,
            _ => return Err(OpError::NotAuthenticated),
        };
        self.verify_token(now, token)
    }

    pub(super) fn on_file_op_data(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        op: OpCode,
        data: SessionMsg,
    ) {
        let user = match self.session_user(now, conn) {
            Ok(u) => u,
            Err(e) => return self.answer(conn, op, SessionMsg::Failed(e)),
        };
        let reply = match (op, data) {
            (
                OpCode::Upload | OpCode::UploadReplace,
                SessionMsg::Transfer(TransferMsg::Offer { id, name, size }),
            ) => {
                return self.begin_upload(
                    now,
                    conn,
                    user,
                    op == OpCode::UploadReplace,
                    id,
                    name,
                    size,
                );
            }
            (OpCode::Download, SessionMsg::FileName { owner, name }) => {
                return self.begin_download(now, conn, user, owner, name);
            }
            (OpCode::List, SessionMsg::ListAll) => Ok(Some(self.listing(user))),
            (
                OpCode::Share | OpCode::Unshare,
                SessionMsg::ShareWith {
                    name,
                    user: grantee,
                },
            ) => self.share(now, conn, op, user, name, grantee),
            (OpCode::Delete, SessionMsg::FileName { owner: None, name }) => {
                if self.replica.state().catalogue().get(user, &name).is_none() {
                    Err(OpError::NoSuchFile)
                } else {
                    self.order(now, conn, op, Txn::Delete { owner: user, name })
                }
            }
            (op, _) => return self.wrong_data(conn, op),
        };
        self.reply(conn, op, reply);
    }

    fn share(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        op: OpCode,
        owner: u64,
        name: String,
        grantee: String,
    ) -> Result<Option<SessionMsg>, OpError> {
        let state = self.replica.state();
        if state.catalogue().get(owner, &name).is_none() {
            return Err(OpError::NoSuchFile);
        }
        let grantee =
            crate::accounts::username::normalize(&grantee).map_err(|_| OpError::NoSuchUser)?;
        match state.user_by_name(&grantee) {
            None => return Err(OpError::NoSuchUser),
            Some(u) if u.id == owner => return Err(OpError::CannotShareWithSelf),
            Some(_) => {}
        }
        let txn = if op == OpCode::Share {
            Txn::Share {
                owner,
                name,
                grantee,
            }
        } else {
            Txn::Unshare {
                owner,
                name,
                grantee,
            }
        };
        self.order(now, conn, op, txn)
    }

    fn listing(&self, user: u64) -> SessionMsg {
        let state = self.replica.state();
        let name_of = |id: u64| {
            state
                .user(id)
                .map_or_else(|| format!("user{id}"), |u| u.name.clone())
        };
        let files = state
            .catalogue()
            .visible_to(user)
            .into_iter()
            .map(|f| Listed {
                owner: name_of(f.owner),
                name: f.name.clone(),
                size: f.size,
                at: f.at,
                shared_with: if f.owner == user {
                    state
                        .catalogue()
                        .grantees(f.owner, &f.name)
                        .into_iter()
                        .map(name_of)
                        .collect()
                } else {
                    Vec::new()
                },
            })
            .collect();
        SessionMsg::Listing { files }
    }

    #[allow(clippy::too_many_arguments)]
    fn begin_upload(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        user: u64,
        replace: bool,
        id: u64,
        name: String,
        size: u64,
    ) {
        let mut receiver = Receiver::new(now, id, name.clone(), size, self.cfg.transfer_timeout);
        let catalogue = self.replica.state().catalogue();
        let used: u64 = catalogue
            .visible_to(user)
            .iter()
            .filter(|f| f.owner == user)
            .map(|f| f.size)
            .sum();
        let replaced = catalogue.get(user, &name).map_or(0, |f| f.size);
        let refusal = if let Err(reason) = check_name(&name) {
            Some(TransferError::BadName { reason })
        } else if catalogue.get(user, &name).is_some() && !replace {
            Some(TransferError::Exists)
        } else if used - replaced + size > self.cfg.quota {
            Some(TransferError::OverQuota {
                used: used - replaced,
                quota: self.cfg.quota,
                needed: size,
            })
        } else {
            None
        };
        match refusal {
            Some(reason) => receiver.reject(reason),
            None => receiver.accept(now),
        }
        let temp = self.blobs.new_handle(Owner::Session(conn));
        self.set_op(
            conn,
            Op::Uploading {
                receiver: Box::new(receiver),
                temp,
                replace,
            },
        );
        self.pump_session(now, conn);
    }

    fn begin_download(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        user: u64,
        owner: Option<String>,
        name: String,
    ) {
        let state = self.replica.state();
        let owner_id = match owner {
            None => Some(user),
            Some(o) => crate::accounts::username::normalize(&o)
                .ok()
                .and_then(|o| state.user_by_name(&o))
                .map(|u| u.id),
        };
        // "No such file" whether it is missing or not shared with us: the
        // answer must not reveal other users' file names.
        let meta = owner_id
            .filter(|o| state.catalogue().can_read(user, *o, &name))
            .and_then(|o| state.catalogue().get(o, &name))
            .cloned();
        let Some(meta) = meta else {
            return self.answer(
                conn,
                OpCode::Download,
                SessionMsg::Failed(OpError::NoSuchFile),
            );
        };
        if self.blobs.has(&meta.digest) {
            self.start_sending(now, conn, &meta);
        } else {
            self.blobs.want(now, meta.digest);
            let deadline = now + self.cfg.request_timeout;
            self.set_op(conn, Op::AwaitBlob { meta, deadline });
            self.blobs.sync(now, &self.replica, &mut self.out);
        }
    }

    pub(super) fn start_sending(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        meta: &crate::replication::catalogue::FileMeta,
    ) {
        let handle = self.blobs.new_handle(Owner::Session(conn));
        self.blobs.read_target(handle, meta.digest);
        let cfg = SenderConfig {
            give_up: self.cfg.transfer_timeout,
            window: self.cfg.send_window.max(1),
            ..SenderConfig::default()
        };
        // The blob is named by its digest: the client's check covers this
        // server's disk too, and nothing is hashed here.
        let sender =
            Sender::new(now, handle, meta.name.clone(), meta.size, cfg).with_digest(meta.digest);
        self.set_op(
            conn,
            Op::Downloading {
                sender: Box::new(sender),
                handle,
            },
        );
        self.pump_session(now, conn);
    }

    pub(super) fn on_session_transfer(&mut self, now: Timestamp, conn: ConnId, m: TransferMsg) {
        match self.op_mut(conn) {
            Some(Op::Uploading { receiver, .. }) => receiver.on_msg(now, m),
            Some(Op::Downloading { sender, .. }) => sender.on_msg(now, m),
            _ => return,
        }
        self.pump_session(now, conn);
    }

    pub(super) fn transfer_timeout(&mut self, now: Timestamp, conn: ConnId) {
        match self.op_mut(conn) {
            Some(Op::Uploading { receiver, .. }) => receiver.handle_timeout(now),
            Some(Op::Downloading { sender, .. }) => sender.handle_timeout(now),
            _ => return,
        }
        self.pump_session(now, conn);
    }

    fn op_mut(&mut self, conn: ConnId) -> Option<&mut Op> {
        match self.conns.get_mut(&conn) {
            Some(Conn {
                stage: Stage::Established { op, .. },
                ..
            }) => Some(op),
            _ => None,
        }
    }

    /// Carries out what the session's transfer asks for.
    pub(super) fn pump_session(&mut self, now: Timestamp, conn: ConnId) {
        enum Next {
            Stay,
            Idle,
            Order(String, u64, [u8; 32], bool),
        }
        let mut next = Next::Stay;
        let mut sends = Vec::new();
        let mut disk = Vec::new();
        let mut persisted_blob = None;
        let mut upload_temp = 0;
        // A download the client found damaged: this server's copy is
        // checked (see `scrub`).
        let mut damaged = None;
        let file = match self.op_mut(conn) {
            Some(Op::Downloading { handle, .. }) => {
                let h = *handle;
                self.blobs.read_file(h)
            }
            _ => None,
        };
        match self.op_mut(conn) {
            Some(Op::Uploading {
                receiver,
                temp,
                replace,
            }) => {
                let temp = *temp;
                upload_temp = temp;
                while let Some(o) = receiver.poll_output() {
                    match o {
                        ReceiverOutput::Send(m) => sends.push(m),
                        ReceiverOutput::Write { offset, data } => {
                            disk.push(FileOp::Write { temp, offset, data })
                        }
                        ReceiverOutput::Commit { digest } => {
                            persisted_blob = Some((digest, receiver.size()));
                            disk.push(FileOp::Persist {
                                temp,
                                to: FileRef::Blob(digest),
                            });
                        }
                        ReceiverOutput::Discard => disk.push(FileOp::Discard { temp }),
                        ReceiverOutput::Progress { .. } => {}
                        ReceiverOutput::Finished(Ok(digest)) => {
                            let name = receiver.name().to_string();
                            next = Next::Order(name, receiver.size(), digest, *replace);
                        }
                        ReceiverOutput::Finished(Err(_)) => next = Next::Idle,
                    }
                }
            }
            Some(Op::Downloading { sender, handle }) => {
                let handle = *handle;
                while let Some(o) = sender.poll_output() {
                    match o {
                        SenderOutput::Send(m) => sends.push(m),
                        SenderOutput::Read { offset, len } => {
                            if let Some(file) = file {
                                disk.push(FileOp::Read {
                                    handle,
                                    file,
                                    offset,
                                    len,
                                });
                            }
                        }
                        SenderOutput::Progress { .. } => {}
                        SenderOutput::Finished(result) => {
                            next = Next::Idle;
                            if says_damaged(&result) {
                                damaged = file;
                            }
                        }
                    }
                }
            }
            _ => return,
        }
        if let Some(FileRef::Blob(d)) = damaged {
            self.blobs.suspect(now, d, &self.replica, &mut self.out);
        }
        if let Some((d, size)) = persisted_blob {
            self.blobs.pin(d, size);
            self.blobs.expect_upload(upload_temp, d);
        }
        for m in sends {
            self.out.send(conn, &SessionMsg::Transfer(m));
        }
        for f in disk {
            self.out.file(f);
        }
        match next {
            Next::Stay => {}
            Next::Idle => {
                if let Some(Op::Downloading { handle, .. } | Op::Uploading { temp: handle, .. }) =
                    self.op_mut(conn)
                {
                    let h = *handle;
                    if self.blobs.persisting(h) {
                        // The upload failed after its blob was sent to disk:
                        // let it land, then collect it.
                        self.blobs.orphan(h);
                    } else {
                        self.blobs.forget_handle(h);
                    }
                }
                self.set_op(conn, Op::Idle);
            }
            Next::Order(name, size, digest, replace) => {
                let Ok(owner) = self.session_user(now, conn) else {
                    self.blobs.unpin(&digest);
                    return self.answer(
                        conn,
                        OpCode::Upload,
                        SessionMsg::Failed(OpError::NotAuthenticated),
                    );
                };
                let holder = self.cfg.id;
                let txn = Txn::PutFile {
                    owner,
                    name,
                    size,
                    digest,
                    replace,
                    holder,
                };
                let op = if replace {
                    OpCode::UploadReplace
                } else {
                    OpCode::Upload
                };
                match self.order(now, conn, op, txn) {
                    Ok(_) => match self.op_mut(conn) {
                        Some(Op::Ordering { stored, origin, .. }) => {
                            *stored = Some((size, digest));
                            let origin = *origin;
                            self.blobs.pin_until_applied(origin, digest);
                        }
                        // Not sent: nothing will release the pin later.
                        _ => self.blobs.unpin(&digest),
                    },
                    Err(e) => {
                        self.blobs.unpin(&digest);
                        self.answer(conn, op, SessionMsg::Failed(e));
                    }
                }
            }
        }
    }

    /// The answer to a client whose file transaction was applied here.
    pub(super) fn file_result(&mut self, conn: ConnId, result: TxnResult) -> SessionMsg {
        // The upload's pin went with its entry's apply (`deliver`).
        let stored = match self.op_mut(conn) {
            Some(Op::Ordering { stored, .. }) => stored.take(),
            _ => None,
        };
        match result {
            TxnResult::FileStored => {
                let (size, digest) = stored.unwrap_or_default();
                SessionMsg::FileDone(FileOutcome::Stored { size, digest })
            }
            TxnResult::Shared => SessionMsg::FileDone(FileOutcome::Shared),
            TxnResult::Unshared => SessionMsg::FileDone(FileOutcome::Unshared),
            TxnResult::Deleted => SessionMsg::FileDone(FileOutcome::Deleted),
            TxnResult::FileExists => SessionMsg::Failed(OpError::FileExists),
            TxnResult::NoSuchFile => SessionMsg::Failed(OpError::NoSuchFile),
            TxnResult::NoSuchUser => SessionMsg::Failed(OpError::NoSuchUser),
            TxnResult::NotShared => SessionMsg::Failed(OpError::NotShared),
            TxnResult::CannotShareWithSelf => SessionMsg::Failed(OpError::CannotShareWithSelf),
            other => SessionMsg::Failed(OpError::Unavailable {
                reason: format!("unexpected result {other:?}"),
            }),
        }
    }

    pub(super) fn on_file_read(&mut self, now: Timestamp, handle: u64, offset: u64, data: &[u8]) {
        match self.blobs.owner(handle) {
            Some(Owner::Session(conn)) => {
                if let Some(Op::Downloading { sender, .. }) = self.op_mut(conn) {
                    sender.on_read(offset, data);
                }
                self.pump_session(now, conn);
            }
            _ => self
                .blobs
                .on_read(now, handle, offset, data, &self.replica, &mut self.out),
        }
    }

    pub(super) fn on_file_persisted(&mut self, now: Timestamp, temp: u64) {
        match self.blobs.owner(temp) {
            Some(Owner::Session(conn)) => {
                if let Some(Op::Uploading { receiver, .. }) = self.op_mut(conn) {
                    receiver.committed();
                }
                self.blobs.arrived(temp);
                self.pump_session(now, conn);
            }
            _ => {
                let arrived = self
                    .blobs
                    .on_persisted(now, temp, &self.replica, &mut self.out);
                if let Some(d) = arrived {
                    self.start_waiting(now, d);
                }
            }
        }
    }

    pub(super) fn on_file_failed(
        &mut self,
        now: Timestamp,
        handle: u64,
        error: String,
        no_space: bool,
        missing: bool,
    ) {
        // The disk's own words (paths, errno) are for this server's log;
        // a peer hears only what went wrong.
        let reason = if no_space {
            TransferError::NoSpace {
                needed: 0,
                available: 0,
            }
        } else {
            TransferError::Io {
                detail: "the server's disk failed".into(),
            }
        };
        let owner = self.blobs.owner(handle);
        if owner.is_some() && !no_space {
            self.out.event(ServerEvent::FileFailed {
                error: error.clone(),
            });
        }
        match owner {
            Some(Owner::Session(conn)) => {
                // An upload's blob that will not land: nothing will name it.
                self.blobs.persist_failed(handle);
                match self.op_mut(conn) {
                    Some(Op::Uploading { receiver, .. }) => receiver.fail(reason),
                    Some(Op::Downloading { sender, .. }) => sender.fail(reason),
                    _ => {}
                }
                self.pump_session(now, conn);
            }
            _ => self.blobs.on_failed(
                now,
                handle,
                reason,
                error,
                missing,
                &self.replica,
                &mut self.out,
            ),
        }
    }
}

impl Server {
    /// Downloads waiting for content `d`, now on disk, can start.
    pub(super) fn start_waiting(&mut self, now: Timestamp, d: [u8; 32]) {
        let waiting: Vec<(ConnId, crate::replication::catalogue::FileMeta)> = self
            .conns
            .iter()
            .filter_map(|(c, conn)| match &conn.stage {
                Stage::Established {
                    op: Op::AwaitBlob { meta, .. },
                    ..
                } if meta.digest == d => Some((*c, meta.clone())),
                _ => None,
            })
            .collect();
        for (conn, meta) in waiting {
            self.start_sending(now, conn, &meta);
        }
    }
}

/// The downloads waiting for content being fetched, among the sessions.
pub(super) struct AwaitingDownloads<'a> {
    pub(super) conns: &'a mut BTreeMap<ConnId, Conn>,
    pub(super) patience: Duration,
}

impl Waiting for AwaitingDownloads<'_> {
    /// Downloads waiting for `d` wait on (their deadline is pushed back)
    /// and are told how far the fetch has come.
    fn fetch_moved(
        &mut self,
        now: Timestamp,
        d: [u8; 32],
        bytes: u64,
        out: &mut Outbox<ServerEvent>,
    ) {
        let mut told = Vec::new();
        for (conn, c) in self.conns.iter_mut() {
            if let Stage::Established {
                op: Op::AwaitBlob { meta, deadline },
                ..
            } = &mut c.stage
            {
                if meta.digest == d {
                    *deadline = now + self.patience;
                    told.push((*conn, meta.size));
                }
            }
        }
        for (conn, size) in told {
            out.send(conn, &SessionMsg::Fetching { bytes, size });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::check_name;

    #[test]
    fn names_are_single_safe_components() {
        for ok in [
            "a",
            "report 2026.pdf",
            "naïve—ñ.txt",
            &"x".repeat(255),
            "..hidden",
            "a..b",
            "ünïcødé 🚀",
            "مرحبا.txt",
        ] {
            assert!(check_name(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "/etc/passwd",
            "..\\x",
            "a\0b",
            "a\nb",
            "\u{1b}]0;owned\u{7}",
            "photo\u{202E}gpj.exe",
            "a\u{2066}b",
            &"x".repeat(256),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
