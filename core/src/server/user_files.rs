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
use super::copies::Up;
use super::downloads::Sending;
use super::event::ServerEvent;
use super::messages::{FileOutcome, ListCursor, Listed, OpCode, OpError, SessionMsg};
use super::partials::{PartialKey, Partials};
use super::scrub::says_damaged;
use super::sessions::{wrong_data, Sessions};
use super::uploads::{Batch, Finished, Ordered, Put, Receiving, Room, Step, Stored};
use crate::file_attrs::FileAttrs;
use crate::io::{ConnId, FileOp, FileRef};
use crate::names::check_path;
use crate::outbox::Outbox;
use crate::refusal::Refusal;
use crate::replication::catalogue::FileMeta;
use crate::replication::entry::BATCH_FILES;
use crate::replication::entry::{name_key, Origin, Txn, TxnResult};
use crate::replication::Replica;
use crate::time::Timestamp;
use crate::transfer::{Receiver, Sender, SenderConfig, SenderOutput, TransferError, TransferMsg};
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
    /// Receiving an upload of `user`'s.
    Uploading {
        up: Receiving,
        replace: bool,
        user: u64,
    },
    /// An upload durable here, waiting for its copies on other servers;
    /// the furthest has had `copied` bytes acknowledged so far, and the
    /// client was last told how they come along at `told_at`.
    AwaitCopies {
        put: Put,
        replace: bool,
        copied: u64,
        told_at: Timestamp,
    },
    /// Receiving a batch of uploads.
    Batch(Box<Batch>),
    /// Sending a download, reading through `handle`; `attrs` follow its
    /// offer.
    Downloading {
        sender: Box<Sender>,
        handle: u64,
        attrs: Option<FileAttrs>,
    },
    /// A download whose content is still being fetched from a peer.
    AwaitBlob { meta: FileMeta, deadline: Timestamp },
    /// Sending a batch of downloads.
    Sending(Box<Sending>),
}

impl Transfer {
    fn deadline(&self) -> Option<Timestamp> {
        match self {
            Transfer::Uploading { up, .. } => up.receiver.poll_timeout(),
            Transfer::Downloading { sender, .. } => sender.poll_timeout(),
            Transfer::Batch(b) => b.deadline(),
            Transfer::AwaitBlob { deadline, .. } => Some(*deadline),
            Transfer::AwaitCopies { put, .. } => Some(put.deadline),
            Transfer::Sending(s) => s.deadline(),
        }
    }
}

fn upload_op(replace: bool) -> OpCode {
    if replace {
        OpCode::UploadReplace
    } else {
        OpCode::Upload
    }
}

fn batch_op(replace: bool) -> OpCode {
    if replace {
        OpCode::UploadManyReplace
    } else {
        OpCode::UploadMany
    }
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
    stored: BTreeMap<Origin, Ordered>,
    /// What was kept of uploads cut off, to resume them.
    partials: Partials,
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
            partials: Partials::new(cfg.partial_keep, cfg.partial_bytes, cfg.partial_user_bytes),
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
            (OpCode::UploadMany | OpCode::UploadManyReplace, SessionMsg::Batch { files }) => {
                if !Batch::fits(files) {
                    let what = format!("a batch of {files} files (1 to {BATCH_FILES})");
                    return Err(Refusal::Unexpected { what });
                }
                let replace = op == OpCode::UploadManyReplace;
                let (t, r) = (self.transfer_timeout, self.request_timeout);
                let batch = Batch::new(cx.now, replace, files, t, r);
                self.transfers
                    .insert(conn, Transfer::Batch(Box::new(batch)));
                cx.sessions.run_elsewhere(conn);
                // Ready: the files may come.
                cx.out.send(conn, &SessionMsg::Batch { files });
                return Ok(());
            }
            (OpCode::Download, SessionMsg::FileName { owner, name }) => {
                self.begin_download(cx, conn, user, owner, name);
                return Ok(());
            }
            (OpCode::DownloadMany, SessionMsg::FileNames { files }) => {
                if !Sending::fits(files.len()) {
                    let n = files.len();
                    let what = format!("a batch of {n} files (1 to {BATCH_FILES})");
                    return Err(Refusal::Unexpected { what });
                }
                let metas = (files.into_iter())
                    .map(|(owner, name)| {
                        readable(cx, user, owner, &name).ok_or(OpError::NoSuchFile)
                    })
                    .collect();
                let sending = Sending::new(metas, self.sender_config(), self.request_timeout);
                self.transfers
                    .insert(conn, Transfer::Sending(Box::new(sending)));
                cx.sessions.run_elsewhere(conn);
                self.pump(cx, conn);
                return Ok(());
            }
            (OpCode::List, SessionMsg::ListAll) => Ok(Some(listing(cx.replica, user, None, None))),
            (OpCode::List, SessionMsg::ListUnder { prefix }) => {
                Ok(Some(listing(cx.replica, user, Some(&prefix), None)))
            }
            (OpCode::List, SessionMsg::ListAfter { prefix, after }) => Ok(Some(listing(
                cx.replica,
                user,
                prefix.as_deref(),
                Some(&after),
            ))),
            (
                OpCode::Share | OpCode::Unshare,
                SessionMsg::ShareWith {
                    name,
                    user: grantee,
                },
            ) => share(cx, conn, op, user, name, grantee),
            (OpCode::Delete, SessionMsg::FileName { owner: None, name }) => {
                let catalogue = cx.replica.state().catalogue();
                if catalogue.get(user, &name).is_some() {
                    Self::order(cx, conn, op, Txn::Delete { owner: user, name }).map(|_| None)
                } else if catalogue.is_folder(user, &name) {
                    Err(OpError::IsAFolder)
                } else {
                    Err(OpError::NoSuchFile)
                }
            }
            (OpCode::DeleteFolder, SessionMsg::FileName { owner: None, name }) => {
                let catalogue = cx.replica.state().catalogue();
                let txn = if catalogue.get(user, &name).is_some() {
                    // `rm -r` of a file removes it, as `rm -r` does.
                    Txn::Delete { owner: user, name }
                } else {
                    // Nothing under it may still leave shares of it to
                    // remove: the master's apply decides.
                    Txn::DeleteFolder {
                        owner: user,
                        folder: name,
                    }
                };
                Self::order(cx, conn, op, txn).map(|_| None)
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
        let used = used_by(cx, user);
        let replaced = catalogue.get(user, &name).map_or(0, |f| f.size);
        let retried = cx.sessions.applied_before(conn, cx.replica).is_some();
        let refusal = if let Err(reason) = check_path(&name) {
            Some(TransferError::BadName { reason })
        } else if let Some(reason) = catalogue.conflict(user, &name).filter(|_| !retried) {
            // Checked again when the upload is applied, but refused here
            // before its content is sent.
            Some(TransferError::Conflict { reason })
        } else if catalogue.get(user, &name).is_some() && !replace && !retried {
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
        let key = PartialKey { user, name, size };
        let kept = match refusal {
            Some(_) => None,
            None => self.partials.take(&key),
        };
        let mut up = match (refusal, kept) {
            (Some(reason), _) => {
                receiver.reject(reason);
                Receiving::new(conn, receiver, cx.blobs)
            }
            // Tried before and cut off: the file kept is taken up again.
            (None, Some(kept)) => {
                cx.copies
                    .open_resumed(now, (conn, id), size, cx.replica, cx.blobs, cx.out);
                Receiving::resuming(now, conn, receiver, kept.temp, kept.bytes, cx.blobs)
            }
            (None, None) => {
                receiver.accept(now);
                cx.copies
                    .open(now, (conn, id), size, cx.replica, cx.blobs, cx.out);
                Receiving::new(conn, receiver, cx.blobs)
            }
        };
        up.resumable = true;
        self.transfers
            .insert(conn, Transfer::Uploading { up, replace, user });
        cx.sessions.run_elsewhere(conn);
        self.pump(cx, conn);
    }

    /// What an offer of `name` in a batch of `user`'s meets.
    fn room(cx: &Ctx<'_>, conn: ConnId, user: u64, quota: u64, name: &str) -> Room {
        let catalogue = cx.replica.state().catalogue();
        Room {
            used: used_by(cx, user),
            quota,
            existing: catalogue.get(user, name).map(|f| f.size),
            // A batch tried again whose first try's entry took this name:
            // the file there may be this one.
            retried: match cx.sessions.applied_before(conn, cx.replica) {
                Some(TxnResult::FilesOf(each)) => {
                    let key = name_key(name);
                    each.iter().any(|f| f.name == key)
                }
                first => first.is_some(),
            },
            conflict: catalogue.conflict(user, name),
        }
    }

    fn begin_download(
        &mut self,
        cx: &mut Ctx<'_>,
        conn: ConnId,
        user: u64,
        owner: Option<String>,
        name: String,
    ) {
        let meta = readable(cx, user, owner, &name);
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

    /// How this server sends a download.
    fn sender_config(&self) -> SenderConfig {
        SenderConfig {
            give_up: self.transfer_timeout,
            window: self.send_window.max(1),
            ..SenderConfig::default()
        }
    }

    fn start_sending(&mut self, cx: &mut Ctx<'_>, conn: ConnId, meta: &FileMeta) {
        let handle = cx.blobs.new_handle(Owner::Session(conn));
        cx.blobs.read_target(handle, meta.digest);
        let cfg = self.sender_config();
        // The blob is named by its digest: the client's check covers this
        // server's disk too, and nothing is hashed here.
        let sender =
            Sender::new(cx.now, handle, meta.name.clone(), meta.size, cfg).with_digest(meta.digest);
        self.transfers.insert(
            conn,
            Transfer::Downloading {
                sender: Box::new(sender),
                handle,
                attrs: meta.attrs,
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
        let batches: Vec<ConnId> = (self.transfers.iter())
            .filter(|(_, t)| matches!(t, Transfer::Sending(_)))
            .map(|(conn, _)| *conn)
            .collect();
        for conn in batches {
            if let Some(Transfer::Sending(s)) = self.transfers.get_mut(&conn) {
                s.arrived(cx, conn, d);
            }
            self.pump(cx, conn);
        }
    }

    /// The attributes of upload `id` on `conn`, which follow its offer:
    /// kept with it. Those of an upload refused or ended are dropped.
    pub(super) fn on_attrs(&mut self, conn: ConnId, id: u64, attrs: FileAttrs) {
        let attrs = attrs.sanitized();
        match self.transfers.get_mut(&conn) {
            Some(Transfer::Uploading { up, .. }) if up.receiver.id() == id => {
                up.attrs = Some(attrs)
            }
            Some(Transfer::Batch(b)) => b.set_attrs(id, attrs),
            _ => {}
        }
    }

    /// File content of the session's transfer, if one runs.
    pub(super) fn on_transfer(&mut self, cx: &mut Ctx<'_>, conn: ConnId, m: TransferMsg) {
        match self.transfers.get_mut(&conn) {
            Some(Transfer::Uploading { up, .. }) => up.receiver.on_msg(cx.now, m),
            Some(Transfer::Downloading { sender, .. }) => sender.on_msg(cx.now, m),
            Some(Transfer::Batch(b)) => {
                let Ok(user) = Self::session_user(cx, conn) else {
                    // The login went (revoked meanwhile): the batch's
                    // offers are refused by its order, which checks again.
                    return self.batch_over(cx, conn);
                };
                let room = match &m {
                    TransferMsg::Offer { name, .. } => {
                        Some(Self::room(cx, conn, user, self.quota, name))
                    }
                    _ => None,
                };
                b.on_msg(cx, conn, m, room);
                return self.batch_over(cx, conn);
            }
            Some(Transfer::Sending(s)) => s.on_msg(cx.now, m),
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
            Some(Transfer::Uploading { up, .. }) => up.receiver.handle_timeout(cx.now),
            Some(Transfer::Downloading { sender, .. }) => sender.handle_timeout(cx.now),
            Some(Transfer::Batch(b)) => {
                b.on_deadline(cx, conn);
                return self.batch_over(cx, conn);
            }
            Some(Transfer::Sending(s)) => s.on_deadline(cx.now),
            Some(Transfer::AwaitBlob { .. }) => {
                self.transfers.remove(&conn);
                // The fetch moved on nothing for a whole request timeout
                // (each move puts the deadline off): the servers holding
                // the content are down or cut off from this one.
                let reason = unfetched(self.request_timeout);
                let msg = SessionMsg::Failed(OpError::Unavailable { reason });
                return cx.sessions.answer(conn, OpCode::Download, msg, cx.out);
            }
            Some(Transfer::AwaitCopies { put, replace, .. }) => {
                let (d, op, up) = (put.digest, upload_op(*replace), (conn, put.id));
                self.transfers.remove(&conn);
                cx.copies.close(up, cx.blobs, cx.out);
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
        match self.transfers.get_mut(&conn) {
            Some(Transfer::Uploading { up, replace, user }) => {
                let (replace, user) = (*replace, *user);
                let id = up.receiver.id();
                match up.drive(cx, conn) {
                    Step::Going => {}
                    Step::Failed(_) => {
                        // The receiver told the client why.
                        cx.copies.close((conn, id), cx.blobs, cx.out);
                        if let Some(Transfer::Uploading { mut up, .. }) =
                            self.transfers.remove(&conn)
                        {
                            up.release_read(cx.blobs);
                            up.let_go(false, cx.blobs, cx.out);
                        }
                        cx.sessions.set_idle(conn);
                    }
                    Step::Interrupted(written) => {
                        // The client went silent or cancelled: what arrived
                        // is kept for the same upload to resume.
                        cx.copies.close((conn, id), cx.blobs, cx.out);
                        if let Some(Transfer::Uploading { up, .. }) = self.transfers.remove(&conn) {
                            self.keep_partial(up, user, written, cx.blobs, cx.out);
                        }
                        cx.sessions.set_idle(conn);
                    }
                    Step::Done(digest) => {
                        // The upload is over; its temporary file is a blob now.
                        let Some(Transfer::Uploading { mut up, .. }) = self.transfers.remove(&conn)
                        else {
                            return;
                        };
                        up.release_read(cx.blobs);
                        let name = up.receiver.name();
                        self.partials.completed(user, name, cx.blobs, cx.out);
                        let put = Put {
                            id,
                            name: up.receiver.name().to_string(),
                            size: up.receiver.size(),
                            digest,
                            attrs: up.attrs,
                            deadline: cx.now + self.request_timeout,
                        };
                        let now = cx.now;
                        if cx
                            .copies
                            .stored(now, (conn, id), digest, cx.replica, cx.blobs, cx.out)
                        {
                            self.order_upload(cx, conn, put, replace);
                        } else {
                            let copied = cx.copies.copied((conn, id));
                            let waiting = Transfer::AwaitCopies {
                                put,
                                replace,
                                copied,
                                told_at: now,
                            };
                            self.transfers.insert(conn, waiting);
                        }
                    }
                }
            }
            Some(Transfer::Sending(s)) => {
                s.pump(cx, conn);
                if s.is_over() {
                    let answer = s.answer();
                    if let Some(Transfer::Sending(s)) = self.transfers.remove(&conn) {
                        s.forget(cx.blobs);
                    }
                    cx.sessions
                        .answer(conn, OpCode::DownloadMany, answer, cx.out);
                }
            }
            Some(Transfer::Downloading {
                sender,
                handle,
                attrs,
            }) => {
                let (handle, attrs) = (*handle, *attrs);
                let file = cx.blobs.read_file(handle);
                let mut finished = false;
                // A download the client found damaged: this server's copy
                // is checked (see `scrub`).
                let mut damaged = None;
                let mut sends = Vec::new();
                let mut disk = Vec::new();
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
                        // The client says so; its download goes on as any.
                        SenderOutput::Progress { .. }
                        | SenderOutput::Resumed { .. }
                        | SenderOutput::StartedOver { .. } => {}
                        SenderOutput::Finished(result) => {
                            finished = true;
                            if says_damaged(&result) {
                                damaged = file.clone();
                            }
                        }
                    }
                }
                if let Some(FileRef::Blob(d)) = damaged {
                    cx.blobs.suspect(cx.now, d, cx.replica, cx.out);
                }
                for m in sends {
                    let offer = matches!(m, TransferMsg::Offer { .. });
                    cx.out.send(conn, &SessionMsg::Transfer(m));
                    if let Some(attrs) = attrs.filter(|_| offer) {
                        cx.out.send(conn, &SessionMsg::Attrs { id: handle, attrs });
                    }
                }
                for f in disk {
                    cx.out.file(f);
                }
                if finished {
                    self.transfers.remove(&conn);
                    cx.blobs.forget_handle(handle);
                    cx.sessions.set_idle(conn);
                }
            }
            _ => {}
        }
    }

    /// Sends a stored upload, with its copies made, to the master.
    fn order_upload(&mut self, cx: &mut Ctx<'_>, conn: ConnId, put: Put, replace: bool) {
        let op = upload_op(replace);
        let Put {
            name,
            size,
            digest,
            attrs,
            deadline,
            ..
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
            attrs,
        };
        let ordered = cx
            .sessions
            .order_by(cx.now, deadline, conn, op, txn, cx.replica, cx.out);
        match ordered {
            Ok(Some(origin)) => {
                let stored = Ordered::One(Stored { size, digest });
                self.stored.insert(origin, stored);
                cx.blobs.pin_until_applied(origin, vec![digest]);
            }
            // Not sent: nothing will release the pin later.
            Ok(None) => cx.blobs.unpin(&digest),
            Err(e) => {
                cx.blobs.unpin(&digest);
                cx.sessions.answer(conn, op, SessionMsg::Failed(e), cx.out);
            }
        }
    }

    /// If the session's batch has ended, orders what arrived of it (or
    /// answers at once if nothing did).
    fn batch_over(&mut self, cx: &mut Ctx<'_>, conn: ConnId) {
        let Some(Transfer::Batch(b)) = self.transfers.get_mut(&conn) else {
            return;
        };
        let Some(done) = b.finish() else {
            return;
        };
        let (op, replace) = (batch_op(b.replace), b.replace);
        self.transfers.remove(&conn);
        let digests: Vec<[u8; 32]> = done.puts.iter().map(|p| p.digest).collect();
        let unpin = |cx: &mut Ctx<'_>| {
            for d in &digests {
                cx.blobs.unpin(d);
            }
        };
        let stored_of = |puts: &[Put]| -> Vec<(u64, Stored)> {
            (puts.iter())
                .map(|p| {
                    let s = Stored {
                        size: p.size,
                        digest: p.digest,
                    };
                    (p.id, s)
                })
                .collect()
        };
        // A command's batch whose first try was applied (through this
        // server or another): answered as that try's entry did, file by
        // file, whatever arrived this time; nothing more to order.
        if let Some(first) = cx.sessions.applied_before(conn, cx.replica) {
            unpin(cx);
            let stored = stored_of(&done.puts);
            let outcomes = Ordered::outcomes(done.files, &done.names, done.failed, stored, &first);
            return cx
                .sessions
                .answer(conn, op, SessionMsg::BatchDone { outcomes }, cx.out);
        }
        if done.puts.is_empty() {
            let outcomes = Ordered::outcomes(
                done.files,
                &done.names,
                done.failed,
                Vec::new(),
                &TxnResult::Noop,
            );
            return cx
                .sessions
                .answer(conn, op, SessionMsg::BatchDone { outcomes }, cx.out);
        }
        // The login may have ended while the files arrived: the client
        // hears which way (logged out, a new password, the account
        // deleted), as a single upload's does.
        let owner = match Self::session_user(cx, conn) {
            Ok(owner) => owner,
            Err(e) => {
                unpin(cx);
                return cx.sessions.answer(conn, op, SessionMsg::Failed(e), cx.out);
            }
        };
        // Copies count while they are kept: the batch is answered within
        // a request timeout of its first file's copies.
        let deadline = done.puts.iter().map(|p| p.deadline).min();
        let deadline = deadline.unwrap_or(cx.now + self.request_timeout);
        if deadline <= cx.now {
            unpin(cx);
            let reason = "the batch took too long to arrive; nothing of it was stored".into();
            let msg = SessionMsg::Failed(OpError::Unavailable { reason });
            return cx.sessions.answer(conn, op, msg, cx.out);
        }
        let txn = Txn::PutFiles {
            owner,
            files: done.new_files(),
            replace,
            holder: self.id,
        };
        let Finished {
            files,
            names,
            puts,
            failed,
        } = done;
        let ordered = cx
            .sessions
            .order_by(cx.now, deadline, conn, op, txn, cx.replica, cx.out);
        match ordered {
            Ok(Some(origin)) => {
                let stored = stored_of(&puts);
                let batch = Ordered::Batch {
                    files,
                    names,
                    failed,
                    stored,
                };
                self.stored.insert(origin, batch);
                cx.blobs.pin_until_applied(origin, digests);
            }
            Ok(None) => unpin(cx),
            Err(e) => {
                unpin(cx);
                cx.sessions.answer(conn, op, SessionMsg::Failed(e), cx.out);
            }
        }
    }

    /// The copies of `up` moved: the client may be acknowledged further.
    /// Copies made from the blob once the upload is stored here (those of
    /// a resumed upload, whose first bytes no copy could stream, or those
    /// replacing a copy that failed) take as long as the file: they are
    /// waited for as long as the furthest moves further (a copy tried
    /// again from the start, as to a full disk, does not count), and the
    /// client is told so about once a second (`Fetching`, which keeps it
    /// waiting too).
    pub(super) fn copies_moved(&mut self, cx: &mut Ctx<'_>, up: Up) {
        let (conn, id) = (up.0, up.1);
        match self.transfers.get_mut(&conn) {
            Some(Transfer::Uploading { up, .. }) => up.ack_further(cx.copies, conn, cx.out),
            Some(Transfer::Batch(b)) => b.copies_moved(cx.copies, conn, id, cx.out),
            Some(Transfer::AwaitCopies {
                put,
                copied,
                told_at,
                ..
            }) if put.id == id => {
                let furthest = cx.copies.copied(up);
                if furthest <= *copied {
                    return;
                }
                *copied = furthest;
                put.deadline = put.deadline.max(cx.now + self.request_timeout);
                if cx.now.saturating_since(*told_at) >= TELL_EVERY {
                    *told_at = cx.now;
                    let size = put.size;
                    let msg = SessionMsg::Fetching {
                        bytes: furthest,
                        size,
                    };
                    cx.out.send(conn, &msg);
                }
            }
            _ => {}
        }
    }

    /// Enough copies of `up` are durable: order it.
    pub(super) fn copies_made(&mut self, cx: &mut Ctx<'_>, up: Up) {
        let (conn, id) = up;
        match self.transfers.get_mut(&conn) {
            Some(Transfer::AwaitCopies { put, .. }) if put.id == id => {
                if let Some(Transfer::AwaitCopies { put, replace, .. }) =
                    self.transfers.remove(&conn)
                {
                    self.order_upload(cx, conn, put, replace);
                }
            }
            Some(Transfer::Batch(b)) => {
                b.copies_made(id);
                self.batch_over(cx, conn);
            }
            _ => {}
        }
    }

    /// `origin`'s entry was applied here, whether or not its session still
    /// waits: what its uploads stored, if it was one of ours.
    pub(super) fn applied(&mut self, origin: &Origin) -> Option<Ordered> {
        self.stored.remove(origin)
    }

    /// A read of the session's transfer on `conn` came back: of a
    /// download (through `handle`, one of a batch's), or of the kept part
    /// of an upload resuming.
    pub(super) fn on_read(
        &mut self,
        cx: &mut Ctx<'_>,
        conn: ConnId,
        handle: u64,
        offset: u64,
        data: &[u8],
    ) {
        match self.transfers.get_mut(&conn) {
            Some(Transfer::Downloading { sender, .. }) => sender.on_read(offset, data),
            Some(Transfer::Sending(s)) => s.on_read(handle, offset, data),
            Some(Transfer::Uploading { up, .. }) => up.receiver.on_read(offset, data),
            _ => {}
        }
        self.pump(cx, conn);
    }

    /// An upload on `conn` is a blob now: temporary file `temp` persisted.
    pub(super) fn on_persisted(&mut self, cx: &mut Ctx<'_>, conn: ConnId, temp: u64) {
        match self.transfers.get_mut(&conn) {
            Some(Transfer::Uploading { up, .. }) => {
                up.receiver.committed();
                cx.blobs.arrived(temp);
            }
            Some(Transfer::Batch(b)) => {
                b.persisted(cx, conn, temp);
                return self.batch_over(cx, conn);
            }
            _ => {
                cx.blobs.arrived(temp);
            }
        }
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
            // The kept part could not be read back: it is not used.
            Some(Transfer::Uploading { up, .. }) if up.read == Some(handle) => {
                up.receiver.on_read_error()
            }
            Some(Transfer::Uploading { up, .. }) => up.receiver.fail(reason),
            Some(Transfer::Downloading { sender, .. }) => sender.fail(reason),
            Some(Transfer::Sending(s)) => s.file_failed(handle, reason),
            Some(Transfer::Batch(b)) => {
                b.file_failed(cx, conn, handle, reason);
                return self.batch_over(cx, conn);
            }
            _ => {}
        }
        self.pump(cx, conn);
    }

    /// Keeps the temporary file of upload `up` of `user`'s, cut off with
    /// `written` bytes from the start, for the same upload to resume.
    fn keep_partial(
        &mut self,
        mut up: Receiving,
        user: u64,
        written: u64,
        blobs: &mut BlobStore,
        out: &mut Outbox<ServerEvent>,
    ) {
        up.release_read(blobs);
        let r = &up.receiver;
        let key = PartialKey {
            user,
            name: r.name().to_string(),
            size: r.size(),
        };
        self.partials.keep(key, up.temp, written, blobs, out);
    }

    /// Dates and expires the partial uploads kept, and drops those of
    /// users that are gone.
    pub(super) fn tidy_partials(
        &mut self,
        now: Timestamp,
        replica: &Replica,
        blobs: &mut BlobStore,
        out: &mut Outbox<ServerEvent>,
    ) {
        if self.partials.len() == 0 {
            return;
        }
        let state = replica.state();
        let exists = |user| state.user(user).is_some();
        self.partials.tidy(now, exists, blobs, out);
    }

    /// When the next partial upload kept expires.
    pub(super) fn poll_timeout(&self) -> Option<Timestamp> {
        self.partials.poll_timeout()
    }

    /// A write to a kept partial upload's file failed: it is dropped.
    pub(super) fn partial_failed(
        &mut self,
        temp: u64,
        blobs: &mut BlobStore,
        out: &mut Outbox<ServerEvent>,
    ) {
        self.partials.failed(temp, blobs, out);
    }

    /// The session on `conn` is gone: a transfer cut short is done with,
    /// and an upload's temporary file is thrown away, or kept to resume.
    pub(super) fn forget(
        &mut self,
        conn: ConnId,
        blobs: &mut BlobStore,
        copies: &mut Copies,
        out: &mut Outbox<ServerEvent>,
    ) {
        match self.transfers.remove(&conn) {
            // Durable here, never ordered: nothing will name it.
            Some(Transfer::AwaitCopies { put, .. }) => {
                copies.close((conn, put.id), blobs, out);
                blobs.unpin(&put.digest);
            }
            Some(Transfer::Uploading { up, user, .. }) => {
                copies.close((conn, up.receiver.id()), blobs, out);
                match up.keepable() {
                    0 => {
                        let mut up = up;
                        up.release_read(blobs);
                        up.let_go(true, blobs, out);
                    }
                    // Cut off: kept for the same upload to resume.
                    written => self.keep_partial(up, user, written, blobs, out),
                }
            }
            Some(Transfer::Batch(mut b)) => b.forget(conn, blobs, copies, out),
            Some(Transfer::Downloading { handle, .. }) => blobs.forget_handle(handle),
            Some(Transfer::Sending(s)) => s.forget(blobs),
            _ => {}
        }
    }
}

/// Why a download of content this server lacks was refused: the fetch
/// moved on nothing for a whole request timeout (each move puts the
/// deadline off), so the servers holding it are down or cut off from here.
pub(super) fn unfetched(request_timeout: Duration) -> String {
    format!(
        "the file's content is not on this server yet, and no server holding it sent it within {} s",
        request_timeout.as_secs()
    )
}

/// What the catalogue says of `owner`'s (by default the user's own) file
/// `name`, if `user` may read it. "No such file" whether it is missing or
/// not shared: the answer must not reveal other users' file names.
fn readable(cx: &Ctx<'_>, user: u64, owner: Option<String>, name: &str) -> Option<FileMeta> {
    let state = cx.replica.state();
    let owner_id = match owner {
        None => Some(user),
        Some(o) => crate::accounts::username::normalize(&o)
            .ok()
            .and_then(|o| state.user_by_name(&o))
            .map(|u| u.id),
    };
    owner_id
        .filter(|o| state.catalogue().can_read(user, *o, name))
        .and_then(|o| state.catalogue().get(o, name))
        .cloned()
}

/// How often a client waiting for its upload's copies hears of them.
const TELL_EVERY: Duration = Duration::from_secs(1);

/// Bytes of the files `user` owns.
fn used_by(cx: &Ctx<'_>, user: u64) -> u64 {
    cx.replica.state().catalogue().bytes_of(user)
}

#[cfg(test)]
impl UserFiles {
    /// What is kept of uploads cut off.
    pub(super) fn partials(&self) -> &Partials {
        &self.partials
    }

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
            match t {
                Transfer::AwaitBlob { meta, deadline } if meta.digest == d => {
                    *deadline = now + self.request_timeout;
                    told.push((*conn, meta.size));
                }
                Transfer::Sending(s) => s.fetch_moved(now, d),
                _ => {}
            }
        }
        for (conn, size) in told {
            out.send(conn, &SessionMsg::Fetching { bytes, size });
        }
    }
}

/// The answer to a file transaction of a session, now applied here;
/// `stored`: what its upload stored.
pub(super) fn answer_to(result: TxnResult, stored: Option<Ordered>) -> SessionMsg {
    match (result, stored) {
        (
            result,
            Some(Ordered::Batch {
                files,
                names,
                failed,
                stored,
            }),
        ) => SessionMsg::BatchDone {
            outcomes: Ordered::outcomes(files, &names, failed, stored, &result),
        },
        // An upload applied after its owner's account was deleted: what
        // the account's sessions hear (`Accounts::verify_token`).
        (TxnResult::NoSuchUser, Some(Ordered::One(_))) => {
            SessionMsg::Failed(OpError::InvalidSession {
                reason: "no such user".into(),
            })
        }
        (result, stored) => answer_one(result, stored),
    }
}

fn answer_one(result: TxnResult, stored: Option<Ordered>) -> SessionMsg {
    match result {
        TxnResult::FileStored => {
            let (size, digest) = match stored {
                Some(Ordered::One(s)) => (s.size, s.digest),
                _ => Default::default(),
            };
            SessionMsg::FileDone(FileOutcome::Stored { size, digest })
        }
        TxnResult::Shared => SessionMsg::FileDone(FileOutcome::Shared),
        TxnResult::Unshared => SessionMsg::FileDone(FileOutcome::Unshared),
        TxnResult::Deleted => SessionMsg::FileDone(FileOutcome::Deleted),
        TxnResult::FolderDeleted { files } => {
            SessionMsg::FileDone(FileOutcome::FolderDeleted { files })
        }
        TxnResult::NameConflict { reason } => SessionMsg::Failed(OpError::NameConflict { reason }),
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
    let catalogue = state.catalogue();
    // A name is a file or a folder, never both (`catalogue`); a name that
    // is no file is taken for a folder. A folder's share outlives the
    // files under it, so one emptied since can still be unshared.
    let folder = catalogue.get(owner, &name).is_none();
    let shared_folder = |g: Option<u64>| {
        let grantees = catalogue.folder_grantees(owner, &name);
        g.map_or(!grantees.is_empty(), |g| grantees.contains(&g))
    };
    // Neither a file, nor a folder, nor (for an unshare) a share of one:
    // nothing to order.
    let none = |g| folder && !catalogue.is_folder(owner, &name) && !shared_folder(g);
    if none(None) || (op == OpCode::Share && folder && !catalogue.is_folder(owner, &name)) {
        return Err(OpError::NoSuchFile);
    }
    let grantee =
        crate::accounts::username::normalize(&grantee).map_err(|_| OpError::NoSuchUser)?;
    match state.user_by_name(&grantee) {
        None => return Err(OpError::NoSuchUser),
        Some(u) if u.id == owner => return Err(OpError::CannotShareWithSelf),
        Some(u) if none(Some(u.id)) => return Err(OpError::NoSuchFile),
        Some(_) => {}
    }
    let txn = if folder {
        match op {
            OpCode::Share => Txn::ShareFolder {
                owner,
                folder: name,
                grantee,
            },
            _ => Txn::UnshareFolder {
                owner,
                folder: name,
                grantee,
            },
        }
    } else if op == OpCode::Share {
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

/// About this many bytes of files go in one page of a listing: a frame
/// holds at most [`crate::frame::MAX_FRAME`], and a user may have any
/// number of files.
const PAGE_BYTES: usize = 128 * 1024;

/// Grantees shown of one file, at most: a file shared with more users than
/// a page holds names is listed with the first of them.
const SHOWN_GRANTEES: usize = 1024;

/// A page of what `user` may see, or of that only what is under folder
/// `prefix`, starting after `after`: a `Listing` if it is the last page,
/// else a `ListingPart` that says where the next one starts.
fn listing(
    replica: &Replica,
    user: u64,
    prefix: Option<&str>,
    after: Option<&ListCursor>,
) -> SessionMsg {
    let state = replica.state();
    let name_of = |id: u64| {
        state
            .user(id)
            .map_or_else(|| format!("user{id}"), |u| u.name.clone())
    };
    let after = after.map(|c| (c.owner, c.name.as_str()));
    let mut visible = state.catalogue().visible_after(user, prefix, after);
    let mut files = Vec::new();
    let mut bytes = 0;
    let mut last = None;
    for f in visible.by_ref() {
        let shared_with: Vec<String> = match f.owner == user {
            true => (state.catalogue().readers(f.owner, &f.name).into_iter())
                .take(SHOWN_GRANTEES)
                .map(name_of)
                .collect(),
            false => Vec::new(),
        };
        let listed = Listed {
            owner: name_of(f.owner),
            name: f.name.clone(),
            size: f.size,
            at: f.at,
            attrs: f.attrs,
            shared_with,
        };
        // Lengths, counts and numbers: a bound on the encoding's size.
        bytes += 64
            + listed.owner.len()
            + listed.name.len()
            + (listed.shared_with.iter())
                .map(|g| g.len() + 4)
                .sum::<usize>();
        files.push(listed);
        last = Some(f);
        if bytes >= PAGE_BYTES {
            break;
        }
    }
    match (last, visible.next()) {
        (Some(f), Some(_)) => {
            let next = ListCursor {
                owner: f.owner,
                name: f.name.clone(),
            };
            SessionMsg::ListingPart { files, next }
        }
        _ => SessionMsg::Listing { files },
    }
}
