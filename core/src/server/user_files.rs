//! Users' files: the file operations of an established, logged-in
//! session (upload, download, list, share, unshare, delete) on the
//! replicated catalogue of names, owners and shares. Uploads land in a
//! temporary file, become a blob named by their digest once verified and
//! durable here and copied to enough other servers to make a majority
//! (`copies`, streamed while the upload arrives), and only then are
//! ordered through the master as `PutFile`; the client hears "stored" when
//! this server has applied it. Downloads are
//! served from the blob store, waiting for a fetch if this server lacks the
//! content. Every operation acts as the session's proven user; nothing a
//! client says about who it is counts.

use super::accounts::Accounts;
use super::blobs::{BlobStore, Owner, Waiting};
use super::config::ServerConfig;
use super::copies::Copies;
use super::event::ServerEvent;
use super::messages::{FileOutcome, Listed, OpCode, OpError, SessionMsg};
use super::scrub::says_damaged;
use super::sessions::{wrong_data, Sessions};
use crate::io::{ConnId, FileOp, FileRef};
use crate::names::check_name;
use crate::outbox::Outbox;
use crate::refusal::Refusal;
use crate::replication::catalogue::FileMeta;
use crate::replication::entry::{Origin, Txn, TxnResult};
use crate::replication::Replica;
use crate::time::Timestamp;
use crate::transfer::{
    Receiver, ReceiverOutput, Sender, SenderConfig, SenderOutput, TransferError, TransferMsg,
};
use std::collections::BTreeMap;
use std::time::Duration;

/// What the file operations act through.
pub(super) struct Ctx<'a> {
    pub(super) now: Timestamp,
    pub(super) sessions: &'a mut Sessions,
    /// To check the session's login.
    pub(super) accounts: &'a Accounts,
    pub(super) blobs: &'a mut BlobStore,
    pub(super) copies: &'a mut Copies,
    pub(super) replica: &'a mut Replica,
    pub(super) out: &'a mut Outbox<ServerEvent>,
}

/// A session's file operation that moves content.
enum Transfer {
    /// Receiving an upload into temporary file `temp`.
    Uploading {
        receiver: Box<Receiver>,
        temp: u64,
        replace: bool,
        /// Chunks acknowledged to the client so far: the copies may hold
        /// the acks back (`Copies::cap`).
        acked: u64,
    },
    /// An upload durable here, waiting for its copies on other servers.
    AwaitCopies { put: Put, deadline: Timestamp },
    /// Sending a download, reading through `handle`.
    Downloading { sender: Box<Sender>, handle: u64 },
    /// A download whose content is still being fetched from a peer.
    AwaitBlob { meta: FileMeta, deadline: Timestamp },
}

impl Transfer {
    fn deadline(&self) -> Option<Timestamp> {
        match self {
            Transfer::Uploading { receiver, .. } => receiver.poll_timeout(),
            Transfer::Downloading { sender, .. } => sender.poll_timeout(),
            Transfer::AwaitBlob { deadline, .. } | Transfer::AwaitCopies { deadline, .. } => {
                Some(*deadline)
            }
        }
    }
}

/// An upload to order once its copies are durable.
pub(super) struct Put {
    name: String,
    size: u64,
    digest: [u8; 32],
    replace: bool,
    /// When the client hears "unavailable" if the upload is not applied
    /// by then: one request timeout after the transfer ended, however the
    /// time went (making copies, waiting for the master).
    deadline: Timestamp,
}

impl Put {
    fn op(&self) -> OpCode {
        if self.replace {
            OpCode::UploadReplace
        } else {
            OpCode::Upload
        }
    }
}

/// What an upload stored, to tell the client once its `PutFile` is applied.
pub(super) struct Stored {
    size: u64,
    digest: [u8; 32],
}

pub(super) struct UserFiles {
    /// This server, the holder of what is uploaded to it.
    id: u32,
    quota: u64,
    transfer_timeout: Duration,
    send_window: u64,
    request_timeout: Duration,
    /// The transfers of sessions, by connection.
    transfers: BTreeMap<ConnId, Transfer>,
    /// Uploads ordered through the master and not yet applied here.
    stored: BTreeMap<Origin, Stored>,
}

impl UserFiles {
    pub(super) fn new(cfg: &ServerConfig) -> Self {
        UserFiles {
            id: cfg.id,
            quota: cfg.quota,
            transfer_timeout: cfg.transfer_timeout,
            send_window: cfg.send_window,
            request_timeout: cfg.request_timeout,
            transfers: BTreeMap::new(),
            stored: BTreeMap::new(),
        }
    }

    /// The session's proven user id, if its token is still good.
    fn session_user(cx: &Ctx<'_>, conn: ConnId) -> Result<u64, OpError> {
        let Some(token) = cx.sessions.user(conn) else {
            return Err(OpError::NotAuthenticated);
        };
        cx.accounts.verify_token(cx.now, token, cx.replica.state())
    }

    /// Sends `txn` to the master for the session; answered once applied.
    fn order(
        cx: &mut Ctx<'_>,
        conn: ConnId,
        op: OpCode,
        txn: Txn,
    ) -> Result<Option<Origin>, OpError> {
        cx.sessions.order(cx.now, conn, op, txn, cx.replica, cx.out)
    }

    /// The data of file operation `op` arrived; data that is not the
    /// operation's is a refusal.
    pub(super) fn on_data(
        &mut self,
        cx: &mut Ctx<'_>,
        conn: ConnId,
        op: OpCode,
        data: SessionMsg,
    ) -> Result<(), Refusal> {
        let user = match Self::session_user(cx, conn) {
            Ok(u) => u,
            Err(e) => {
                cx.sessions.answer(conn, op, SessionMsg::Failed(e), cx.out);
                return Ok(());
            }
        };
        let reply = match (op, data) {
            (
                OpCode::Upload | OpCode::UploadReplace,
                SessionMsg::Transfer(TransferMsg::Offer { id, name, size }),
            ) => {
                let replace = op == OpCode::UploadReplace;
                self.begin_upload(cx, conn, user, replace, id, name, size);
                return Ok(());
            }
            (OpCode::Download, SessionMsg::FileName { owner, name }) => {
                self.begin_download(cx, conn, user, owner, name);
                return Ok(());
            }
            (OpCode::List, SessionMsg::ListAll) => Ok(Some(listing(cx.replica, user))),
            (
                OpCode::Share | OpCode::Unshare,
                SessionMsg::ShareWith {
                    name,
                    user: grantee,
                },
            ) => share(cx, conn, op, user, name, grantee),
            (OpCode::Delete, SessionMsg::FileName { owner: None, name }) => {
                if cx.replica.state().catalogue().get(user, &name).is_none() {
                    Err(OpError::NoSuchFile)
                } else {
                    Self::order(cx, conn, op, Txn::Delete { owner: user, name }).map(|_| None)
                }
            }
            (op, _) => return Err(wrong_data(op)),
        };
        cx.sessions.reply(conn, op, reply, cx.out);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn begin_upload(
        &mut self,
        cx: &mut Ctx<'_>,
        conn: ConnId,
        user: u64,
        replace: bool,
        id: u64,
        name: String,
        size: u64,
    ) {
        let now = cx.now;
        let mut receiver = Receiver::new(now, id, name.clone(), size, self.transfer_timeout);
        let catalogue = cx.replica.state().catalogue();
        let used: u64 = catalogue
            .visible_to(user)
            .iter()
            .filter(|f| f.owner == user)
            .map(|f| f.size)
            .sum();
        let replaced = catalogue.get(user, &name).map_or(0, |f| f.size);
        let refusal = if let Err(reason) = check_name(&name) {
            Some(TransferError::BadName { reason })
        } else if catalogue.get(user, &name).is_some()
            && !replace
            && cx.sessions.applied_before(conn, cx.replica).is_none()
        {
            // (Unless this is a command tried again, whose upload is the
            // one that took the name.)
            Some(TransferError::Exists)
        } else if used - replaced + size > self.quota {
            Some(TransferError::OverQuota {
                used: used - replaced,
                quota: self.quota,
                needed: size,
            })
        } else {
            None
        };
        match refusal {
            Some(reason) => receiver.reject(reason),
            None => {
                receiver.accept(now);
                cx.copies
                    .open(now, conn, size, cx.replica, cx.blobs, cx.out);
            }
        }
        let temp = cx.blobs.new_handle(Owner::Session(conn));
        self.transfers.insert(
            conn,
            Transfer::Uploading {
                receiver: Box::new(receiver),
                temp,
                replace,
                acked: 0,
            },
        );
        cx.sessions.run_elsewhere(conn);
        self.pump(cx, conn);
    }

    fn begin_download(
        &mut self,
        cx: &mut Ctx<'_>,
        conn: ConnId,
        user: u64,
        owner: Option<String>,
        name: String,
    ) {
        let state = cx.replica.state();
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
            let msg = SessionMsg::Failed(OpError::NoSuchFile);
            return cx.sessions.answer(conn, OpCode::Download, msg, cx.out);
        };
        if cx.blobs.has(&meta.digest) {
            self.start_sending(cx, conn, &meta);
        } else {
            cx.blobs.want(cx.now, meta.digest);
            let deadline = cx.now + self.request_timeout;
            self.transfers
                .insert(conn, Transfer::AwaitBlob { meta, deadline });
            cx.sessions.run_elsewhere(conn);
            cx.blobs.sync(cx.now, cx.replica, cx.out);
        }
    }

    fn start_sending(&mut self, cx: &mut Ctx<'_>, conn: ConnId, meta: &FileMeta) {
        let handle = cx.blobs.new_handle(Owner::Session(conn));
        cx.blobs.read_target(handle, meta.digest);
        let cfg = SenderConfig {
            give_up: self.transfer_timeout,
            window: self.send_window.max(1),
            ..SenderConfig::default()
        };
        // The blob is named by its digest: the client's check covers this
        // server's disk too, and nothing is hashed here.
        let sender =
            Sender::new(cx.now, handle, meta.name.clone(), meta.size, cfg).with_digest(meta.digest);
        self.transfers.insert(
            conn,
            Transfer::Downloading {
                sender: Box::new(sender),
                handle,
            },
        );
        cx.sessions.run_elsewhere(conn);
        self.pump(cx, conn);
    }

    /// Downloads waiting for content `d`, now on disk, can start.
    pub(super) fn start_waiting(&mut self, cx: &mut Ctx<'_>, d: [u8; 32]) {
        let waiting: Vec<(ConnId, FileMeta)> = self
            .transfers
            .iter()
            .filter_map(|(conn, t)| match t {
                Transfer::AwaitBlob { meta, .. } if meta.digest == d => Some((*conn, meta.clone())),
                _ => None,
            })
            .collect();
        for (conn, meta) in waiting {
            self.start_sending(cx, conn, &meta);
        }
    }

    /// File content of the session's transfer, if one runs.
    pub(super) fn on_transfer(&mut self, cx: &mut Ctx<'_>, conn: ConnId, m: TransferMsg) {
        match self.transfers.get_mut(&conn) {
            Some(Transfer::Uploading { receiver, .. }) => receiver.on_msg(cx.now, m),
            Some(Transfer::Downloading { sender, .. }) => sender.on_msg(cx.now, m),
            // A transfer message after its transfer ended (see
            // `Sessions::on_msg`).
            _ => return,
        }
        self.pump(cx, conn);
    }

    pub(super) fn deadline(&self, conn: ConnId) -> Option<Timestamp> {
        self.transfers.get(&conn).and_then(Transfer::deadline)
    }

    /// The deadline of the session's transfer passed.
    pub(super) fn on_deadline(&mut self, cx: &mut Ctx<'_>, conn: ConnId) {
        match self.transfers.get_mut(&conn) {
            Some(Transfer::Uploading { receiver, .. }) => receiver.handle_timeout(cx.now),
            Some(Transfer::Downloading { sender, .. }) => sender.handle_timeout(cx.now),
            Some(Transfer::AwaitBlob { .. }) => {
                self.transfers.remove(&conn);
                let reason = "the file's content is not on this server yet; try again".into();
                let msg = SessionMsg::Failed(OpError::Unavailable { reason });
                return cx.sessions.answer(conn, OpCode::Download, msg, cx.out);
            }
            Some(Transfer::AwaitCopies { put, .. }) => {
                let (d, op) = (put.digest, put.op());
                self.transfers.remove(&conn);
                cx.copies.close(conn, cx.blobs, cx.out);
                cx.blobs.unpin(&d);
                let reason =
                    "the file could not be copied to a majority of the servers in time; nothing was stored"
                        .into();
                let msg = SessionMsg::Failed(OpError::Unavailable { reason });
                return cx.sessions.answer(conn, op, msg, cx.out);
            }
            None => return,
        }
        self.pump(cx, conn);
    }

    /// Carries out what the session's transfer asks for.
    fn pump(&mut self, cx: &mut Ctx<'_>, conn: ConnId) {
        enum Next {
            Stay,
            Idle,
            Stored(Put),
        }
        let mut next = Next::Stay;
        let mut sends = Vec::new();
        let mut disk = Vec::new();
        let mut persisted_blob = None;
        let mut upload_temp = 0;
        // A download the client found damaged: this server's copy is
        // checked (see `scrub`).
        let mut damaged = None;
        let file = match self.transfers.get(&conn) {
            Some(Transfer::Downloading { handle, .. }) => cx.blobs.read_file(*handle),
            _ => None,
        };
        match self.transfers.get_mut(&conn) {
            Some(Transfer::Uploading {
                receiver,
                temp,
                replace,
                acked,
            }) => {
                let temp = *temp;
                upload_temp = temp;
                let cap = cx.copies.cap(conn);
                while let Some(o) = receiver.poll_output() {
                    match o {
                        // Acks no further than the copies allow.
                        ReceiverOutput::Send(TransferMsg::Ack { id, upto }) => {
                            let upto = cap.map_or(upto, |c| upto.min(c));
                            *acked = (*acked).max(upto);
                            sends.push(TransferMsg::Ack { id, upto });
                        }
                        ReceiverOutput::Send(m) => sends.push(m),
                        ReceiverOutput::Write { offset, data } => {
                            cx.copies
                                .feed(cx.now, conn, offset, &data, cx.blobs, cx.out);
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
                            next = Next::Stored(Put {
                                name: receiver.name().to_string(),
                                size: receiver.size(),
                                digest,
                                replace: *replace,
                                deadline: cx.now + self.request_timeout,
                            });
                        }
                        ReceiverOutput::Finished(Err(_)) => next = Next::Idle,
                    }
                }
            }
            Some(Transfer::Downloading { sender, handle }) => {
                let handle = *handle;
                while let Some(o) = sender.poll_output() {
                    match o {
                        SenderOutput::Send(m) => sends.push(m),
                        SenderOutput::Read { offset, len } => {
                            if let Some(file) = &file {
                                disk.push(FileOp::Read {
                                    handle,
                                    file: file.clone(),
                                    offset,
                                    len,
                                });
                            }
                        }
                        SenderOutput::Progress { .. } => {}
                        SenderOutput::Finished(result) => {
                            next = Next::Idle;
                            if says_damaged(&result) {
                                damaged = file.clone();
                            }
                        }
                    }
                }
            }
            _ => return,
        }
        if let Some(FileRef::Blob(d)) = damaged {
            cx.blobs.suspect(cx.now, d, cx.replica, cx.out);
        }
        if let Some((d, size)) = persisted_blob {
            cx.blobs.pin(d, size);
            cx.blobs.expect_upload(upload_temp, d);
        }
        for m in sends {
            cx.out.send(conn, &SessionMsg::Transfer(m));
        }
        for f in disk {
            cx.out.file(f);
        }
        match next {
            Next::Stay => {}
            Next::Idle => {
                cx.copies.close(conn, cx.blobs, cx.out);
                if let Some(
                    Transfer::Downloading { handle, .. } | Transfer::Uploading { temp: handle, .. },
                ) = self.transfers.remove(&conn)
                {
                    if cx.blobs.persisting(handle) {
                        // The upload failed after its blob was sent to disk:
                        // let it land, then collect it.
                        cx.blobs.orphan(handle);
                    } else {
                        cx.blobs.forget_handle(handle);
                    }
                }
                cx.sessions.set_idle(conn);
            }
            Next::Stored(put) => {
                // The upload is over; its temporary file is a blob now.
                self.transfers.remove(&conn);
                let (now, d) = (cx.now, put.digest);
                if cx.copies.stored(now, conn, d, cx.replica, cx.blobs, cx.out) {
                    self.order_upload(cx, conn, put);
                } else {
                    let deadline = put.deadline;
                    self.transfers
                        .insert(conn, Transfer::AwaitCopies { put, deadline });
                }
            }
        }
    }

    /// Sends a stored upload, with its copies made, to the master.
    fn order_upload(&mut self, cx: &mut Ctx<'_>, conn: ConnId, put: Put) {
        let op = put.op();
        let Put {
            name,
            size,
            digest,
            replace,
            deadline,
        } = put;
        // The login may have ended while the content arrived (logged out,
        // a new password, the account deleted): the client hears which.
        let owner = match Self::session_user(cx, conn) {
            Ok(owner) => owner,
            Err(e) => {
                cx.blobs.unpin(&digest);
                return cx.sessions.answer(conn, op, SessionMsg::Failed(e), cx.out);
            }
        };
        let txn = Txn::PutFile {
            owner,
            name,
            size,
            digest,
            replace,
            holder: self.id,
        };
        let ordered = cx
            .sessions
            .order_by(cx.now, deadline, conn, op, txn, cx.replica, cx.out);
        match ordered {
            Ok(Some(origin)) => {
                self.stored.insert(origin, Stored { size, digest });
                cx.blobs.pin_until_applied(origin, digest);
            }
            // Not sent: nothing will release the pin later.
            Ok(None) => cx.blobs.unpin(&digest),
            Err(e) => {
                cx.blobs.unpin(&digest);
                cx.sessions.answer(conn, op, SessionMsg::Failed(e), cx.out);
            }
        }
    }

    /// The copies of the upload on `conn` moved: the client may be
    /// acknowledged further.
    pub(super) fn copies_moved(&mut self, cx: &mut Ctx<'_>, conn: ConnId) {
        let cap = cx.copies.cap(conn);
        if let Some(Transfer::Uploading {
            receiver, acked, ..
        }) = self.transfers.get_mut(&conn)
        {
            let upto = cap.map_or(receiver.received(), |c| receiver.received().min(c));
            if upto > *acked && !receiver.is_finished() {
                *acked = upto;
                let id = receiver.id();
                cx.out
                    .send(conn, &SessionMsg::Transfer(TransferMsg::Ack { id, upto }));
            }
        }
    }

    /// Enough copies of the upload on `conn` are durable: order it.
    pub(super) fn copies_made(&mut self, cx: &mut Ctx<'_>, conn: ConnId) {
        if let Some(Transfer::AwaitCopies { .. }) = self.transfers.get(&conn) {
            if let Some(Transfer::AwaitCopies { put, .. }) = self.transfers.remove(&conn) {
                self.order_upload(cx, conn, put);
            }
        }
    }

    /// `origin`'s entry was applied here, whether or not its session still
    /// waits: what its upload stored, if it was one of ours.
    pub(super) fn applied(&mut self, origin: &Origin) -> Option<Stored> {
        self.stored.remove(origin)
    }

    /// A read of the download on `conn` came back.
    pub(super) fn on_read(&mut self, cx: &mut Ctx<'_>, conn: ConnId, offset: u64, data: &[u8]) {
        if let Some(Transfer::Downloading { sender, .. }) = self.transfers.get_mut(&conn) {
            sender.on_read(offset, data);
        }
        self.pump(cx, conn);
    }

    /// The upload on `conn` is a blob now: temporary file `temp` persisted.
    pub(super) fn on_persisted(&mut self, cx: &mut Ctx<'_>, conn: ConnId, temp: u64) {
        if let Some(Transfer::Uploading { receiver, .. }) = self.transfers.get_mut(&conn) {
            receiver.committed();
        }
        cx.blobs.arrived(temp);
        self.pump(cx, conn);
    }

    /// A file operation of the transfer on `conn`, through `handle`, failed.
    pub(super) fn on_failed(
        &mut self,
        cx: &mut Ctx<'_>,
        conn: ConnId,
        handle: u64,
        reason: TransferError,
    ) {
        // An upload's blob that will not land: nothing will name it.
        cx.blobs.persist_failed(handle);
        match self.transfers.get_mut(&conn) {
            Some(Transfer::Uploading { receiver, .. }) => receiver.fail(reason),
            Some(Transfer::Downloading { sender, .. }) => sender.fail(reason),
            _ => {}
        }
        self.pump(cx, conn);
    }

    /// The session on `conn` is gone: a transfer cut short is done with,
    /// and an upload's temporary file is thrown away.
    pub(super) fn forget(
        &mut self,
        conn: ConnId,
        blobs: &mut BlobStore,
        copies: &mut Copies,
        out: &mut Outbox<ServerEvent>,
    ) {
        copies.close(conn, blobs, out);
        match self.transfers.remove(&conn) {
            // Durable here, never ordered: nothing will name it.
            Some(Transfer::AwaitCopies { put, .. }) => blobs.unpin(&put.digest),
            // Its blob is already on its way: let it land, then collect it
            // (no PutFile will name it).
            Some(Transfer::Uploading { temp, .. }) if blobs.persisting(temp) => blobs.orphan(temp),
            Some(Transfer::Uploading { temp, .. }) => {
                out.file(FileOp::Discard { temp });
                blobs.forget_handle(temp);
            }
            Some(Transfer::Downloading { handle, .. }) => blobs.forget_handle(handle),
            _ => {}
        }
    }
}

#[cfg(test)]
impl UserFiles {
    /// Tests change the quota of a running server.
    pub(super) fn set_quota(&mut self, quota: u64) {
        self.quota = quota;
    }
}

impl Waiting for UserFiles {
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
        for (conn, t) in self.transfers.iter_mut() {
            if let Transfer::AwaitBlob { meta, deadline } = t {
                if meta.digest == d {
                    *deadline = now + self.request_timeout;
                    told.push((*conn, meta.size));
                }
            }
        }
        for (conn, size) in told {
            out.send(conn, &SessionMsg::Fetching { bytes, size });
        }
    }
}

/// The answer to a file transaction of a session, now applied here;
/// `stored`: what its upload stored.
pub(super) fn answer_to(result: TxnResult, stored: Option<Stored>) -> SessionMsg {
    match result {
        TxnResult::FileStored => {
            let (size, digest) = stored.map_or_else(Default::default, |s| (s.size, s.digest));
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

fn share(
    cx: &mut Ctx<'_>,
    conn: ConnId,
    op: OpCode,
    owner: u64,
    name: String,
    grantee: String,
) -> Result<Option<SessionMsg>, OpError> {
    let state = cx.replica.state();
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
    UserFiles::order(cx, conn, op, txn).map(|_| None)
}

fn listing(replica: &Replica, user: u64) -> SessionMsg {
    let state = replica.state();
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
