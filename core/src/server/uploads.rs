//! Uploads as a server receives them: one file (`Upload`), or a batch of
//! files whose transfers overlap (`UploadMany`, what `ferry put` of many
//! files sends).
//!
//! **A batch.** The client says how many files follow (`Batch { files }`),
//! the server says it is ready (the same message back), and the client
//! offers its files as transfers with ids `0..files`, in order, several at
//! once. Each is received, verified, made durable and copied exactly as a
//! single upload is; nothing is ordered until every file of the batch has
//! ended, one way or the other. Then the files that arrived are ordered as
//! one `PutFiles` transaction, and the client hears what became of each
//! (`BatchDone`). So a thousand small files cost the log and its fsyncs a
//! few entries, and the client none of the round trips of a request per
//! file: only each file's own offer and acknowledgements, which overlap.
//!
//! A file refused at its offer (a bad name, a name taken or given twice in
//! the batch, the quota) or whose transfer fails is reported as failed;
//! the others are stored. A batch is bounded ([`BATCH_FILES`] files,
//! [`BATCH_NAME_BYTES`] of names) so that its entry fits a frame.

use super::blobs::{BlobStore, Owner};
use super::copies::{Copies, Up};
use super::event::ServerEvent;
use super::messages::{Landed, OpError};
use super::user_files::Ctx;
use crate::file_attrs::FileAttrs;
use crate::io::{ConnId, FileOp, FileRef};
use crate::names::{check_path, is_under};
use crate::outbox::Outbox;
use crate::replication::entry::{
    name_key, FileResult, NewFile, TxnResult, BATCH_FILES, BATCH_NAME_BYTES,
};
use crate::time::Timestamp;
use crate::transfer::messages::resume_point;
use crate::transfer::{Receiver, ReceiverOutput, TransferError, TransferMsg};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// An upload durable here, to order once its copies are durable.
pub(super) struct Put {
    /// The transfer's id (a file's place in its batch).
    pub(super) id: u64,
    pub(super) name: String,
    pub(super) size: u64,
    pub(super) digest: [u8; 32],
    /// The source file's modification time and mode, if the client sent
    /// them.
    pub(super) attrs: Option<FileAttrs>,
    /// When the client hears "unavailable" if the upload is not applied
    /// by then: one request timeout after the transfer ended, however the
    /// time went (making copies, waiting for the master). Copies are
    /// counted only while they are kept that long (see `copies`).
    pub(super) deadline: Timestamp,
}

/// What an upload stored, to tell the client once its entry is applied.
pub(super) struct Stored {
    pub(super) size: u64,
    pub(super) digest: [u8; 32],
}

/// What uploads ordered through the master stored, by their entry's origin.
pub(super) enum Ordered {
    One(Stored),
    /// A batch: its size, the names offered (by id), each file's
    /// failure, and the files ordered (their ids, in the transaction's
    /// order).
    Batch {
        files: u32,
        names: BTreeMap<u64, String>,
        failed: BTreeMap<u64, OpError>,
        stored: Vec<(u64, Stored)>,
    },
}

/// What a file of a `PutFiles` came to, as its client hears it.
fn landed(result: &TxnResult, size: u64, digest: [u8; 32]) -> Landed {
    match result {
        TxnResult::FileStored => Landed::Stored { size, digest },
        TxnResult::FileExists => Landed::Failed(OpError::FileExists),
        TxnResult::NameConflict { reason } => Landed::Failed(OpError::NameConflict {
            reason: reason.clone(),
        }),
        // The account was deleted meanwhile: what its sessions hear.
        TxnResult::NoSuchUser => Landed::Failed(OpError::InvalidSession {
            reason: "no such user".into(),
        }),
        other => Landed::Failed(OpError::Unavailable {
            reason: format!("unexpected result {other:?}"),
        }),
    }
}

impl Ordered {
    /// The answer to the batch whose `PutFiles` gave `result`: `names`
    /// are the names offered, by id; `stored`, the files this try had
    /// ordered.
    ///
    /// The result may be a first try's (the batch is a command's, tried
    /// again, and its entry applied as a duplicate of the first try's):
    /// then the files that reached the first try's entry are answered as
    /// it did, whatever became of them this time, and a file this try
    /// would have stored that the first did not is told so.
    pub(super) fn outcomes(
        files: u32,
        names: &BTreeMap<u64, String>,
        mut failed: BTreeMap<u64, OpError>,
        stored: Vec<(u64, Stored)>,
        result: &TxnResult,
    ) -> Vec<Landed> {
        let key_of = |id: &u64| names.get(id).map(|n| name_key(n));
        // This try's own entry (or a first try's that held the same
        // files, with the same content): each result is the file's at its
        // place.
        let same = |f: &FileResult, (id, s): &(u64, Stored)| {
            key_of(id) == Some(f.name) && f.size == s.size && f.digest == s.digest
        };
        let own: Option<Vec<&TxnResult>> = match result {
            TxnResult::FilesOf(each)
                if each.len() == stored.len()
                    && each.iter().zip(&stored).all(|(f, s)| same(f, s)) =>
            {
                Some(each.iter().map(|f| &f.result).collect())
            }
            // A store written before names were kept: by order.
            TxnResult::Files(results) => Some(results.iter().collect()),
            TxnResult::FilesOf(_) => None,
            _ => Some(Vec::new()),
        };
        let mut here: BTreeMap<u64, Landed> = BTreeMap::new();
        let mut first: BTreeMap<u64, &FileResult> = BTreeMap::new();
        match (own, result) {
            (Some(results), _) => {
                for (i, (id, s)) in stored.iter().enumerate() {
                    let r = results.get(i).copied().unwrap_or(&TxnResult::Noop);
                    here.insert(*id, landed(r, s.size, s.digest));
                }
            }
            (None, TxnResult::FilesOf(each)) => first.extend(each.iter().map(|f| (f.name, f))),
            (None, _) => {}
        }
        let ordered: BTreeSet<u64> = stored.iter().map(|(id, _)| *id).collect();
        (0..u64::from(files))
            .map(|id| {
                // Refused at its offer for what the batch itself holds (a
                // bad name, a name twice, a file and a folder): so on
                // every try.
                let fixed = matches!(
                    failed.get(&id),
                    Some(OpError::Transfer(
                        TransferError::BadName { .. }
                            | TransferError::Conflict { .. }
                            | TransferError::Protocol { .. }
                    ))
                );
                // What the first try's entry did with this name (once).
                let entry = (!fixed)
                    .then(|| key_of(&id).and_then(|k| first.remove(&k)))
                    .flatten();
                if let Some(f) = entry {
                    return landed(&f.result, f.size, f.digest);
                }
                if let Some(e) = failed.remove(&id) {
                    return Landed::Failed(e);
                }
                if let Some(l) = here.remove(&id) {
                    return l;
                }
                if ordered.contains(&id) {
                    let reason = "this batch was applied on an earlier try without this file; \
                                  it was not stored: put it again"
                        .into();
                    return Landed::Failed(OpError::Unavailable { reason });
                }
                Landed::Failed(OpError::Transfer(TransferError::Cancelled))
            })
            .collect()
    }
}

/// An upload being received into temporary file `temp`.
pub(super) struct Receiving {
    pub(super) receiver: Box<Receiver>,
    pub(super) temp: u64,
    /// The handle the kept part of a resumed upload is read back through.
    pub(super) read: Option<u64>,
    /// Cut off, its file is left to keep (a single upload; a batch's files
    /// are not kept).
    pub(super) resumable: bool,
    /// Chunks acknowledged to the client so far: the copies may hold the
    /// acks back (`Copies::cap`).
    acked: u64,
    /// What the client said of the file after its offer, if anything.
    pub(super) attrs: Option<FileAttrs>,
}

/// How a received upload stands.
pub(super) enum Step {
    Going,
    Failed(TransferError),
    /// Cut off (the client went silent, or cancelled), with this many
    /// bytes written from the start: its temporary file is left for the
    /// caller to keep, or to discard.
    Interrupted(u64),
    /// Complete, verified and durable here as this blob.
    Done([u8; 32]),
}

impl Receiving {
    pub(super) fn new(conn: ConnId, receiver: Receiver, blobs: &mut BlobStore) -> Self {
        Receiving {
            receiver: Box::new(receiver),
            temp: blobs.new_handle(Owner::Session(conn)),
            read: None,
            resumable: false,
            acked: 0,
            attrs: None,
        }
    }

    /// An upload that takes up kept temporary file `temp` (see
    /// `partials`), whose first `held` bytes the receiver reads back.
    pub(super) fn resuming(
        now: Timestamp,
        conn: ConnId,
        mut receiver: Receiver,
        temp: u64,
        held: u64,
        blobs: &mut BlobStore,
    ) -> Self {
        blobs.set_owner(temp, Owner::Session(conn));
        receiver.resume(now, held);
        Receiving {
            receiver: Box::new(receiver),
            temp,
            read: Some(blobs.new_handle(Owner::Session(conn))),
            resumable: true,
            acked: 0,
            // They follow the offer, as a new upload's do.
            attrs: None,
        }
    }

    /// Lets go of the read handle, if any.
    pub(super) fn release_read(&mut self, blobs: &mut BlobStore) {
        if let Some(h) = self.read.take() {
            blobs.forget_handle(h);
        }
    }

    /// Bytes an owner may keep if the upload is cut off now (0: nothing
    /// worth keeping; see `transfer::messages::resume_point`).
    pub(super) fn keepable(&self) -> u64 {
        let r = &self.receiver;
        let written = r.written();
        let going = r.is_receiving() || r.is_rehashing();
        match self.resumable && going && resume_point(written, r.size()) > 0 {
            true => written,
            false => 0,
        }
    }

    fn up(&self, conn: ConnId) -> Up {
        (conn, self.receiver.id())
    }

    /// Carries out what the receiver asks for.
    pub(super) fn drive(&mut self, cx: &mut Ctx<'_>, conn: ConnId) -> Step {
        let up = self.up(conn);
        let temp = self.temp;
        let cap = cx.copies.cap(up);
        let mut step = Step::Going;
        let mut sends = Vec::new();
        let mut disk = Vec::new();
        let mut persisted = None;
        // Held back: an upload cut off keeps its file (see `partials`).
        let mut discard = false;
        while let Some(o) = self.receiver.poll_output() {
            match o {
                // Acks no further than the copies allow.
                ReceiverOutput::Send(TransferMsg::Ack { id, upto }) => {
                    let upto = cap.map_or(upto, |c| upto.min(c));
                    self.acked = self.acked.max(upto);
                    sends.push(TransferMsg::Ack { id, upto });
                }
                ReceiverOutput::Send(m) => sends.push(m),
                ReceiverOutput::Write { offset, data } => {
                    cx.copies.feed(cx.now, up, offset, &data, cx.blobs, cx.out);
                    disk.push(FileOp::Write { temp, offset, data })
                }
                ReceiverOutput::Commit { digest } => {
                    persisted = Some((digest, self.receiver.size()));
                    cx.blobs.persist_begins(temp, digest);
                    disk.push(FileOp::Persist {
                        temp,
                        to: FileRef::Blob(digest),
                    });
                }
                ReceiverOutput::Discard => discard = true,
                ReceiverOutput::Read { offset, len } => {
                    if let Some(handle) = self.read {
                        disk.push(FileOp::Read {
                            handle,
                            file: FileRef::Temp(temp),
                            offset,
                            len,
                        });
                    }
                }
                ReceiverOutput::Resumed { from } => {
                    cx.out.event(ServerEvent::UploadResumed { conn, from })
                }
                // Written over from the first byte; the file is as long
                // as the upload at most, so nothing of the old is left.
                ReceiverOutput::StartOver { .. } => {}
                ReceiverOutput::Progress { .. } => {}
                ReceiverOutput::Finished(Ok(digest)) => step = Step::Done(digest),
                ReceiverOutput::Finished(Err(e)) => step = Step::Failed(e),
            }
        }
        if let Some((d, size)) = persisted {
            cx.blobs.pin(d, size);
            cx.blobs.expect_upload(temp, d);
        }
        if discard {
            let written = self.receiver.written();
            let cut_off = matches!(
                &step,
                Step::Failed(TransferError::Timeout | TransferError::Cancelled)
            );
            // Not a file on its way to being a blob (the client gave up
            // waiting for its DONE ACK): that one lands, and is let go of
            // as any upload that fails then.
            let landing = cx.blobs.persisting(temp);
            let keep = cut_off && !landing && resume_point(written, self.receiver.size()) > 0;
            if self.resumable && keep {
                step = Step::Interrupted(written);
            } else {
                disk.push(FileOp::Discard { temp });
            }
        }
        for m in sends {
            cx.out.send(conn, &super::messages::SessionMsg::Transfer(m));
        }
        for f in disk {
            cx.out.file(f);
        }
        step
    }

    /// The copies moved: the client may be acknowledged further.
    pub(super) fn ack_further(
        &mut self,
        copies: &Copies,
        conn: ConnId,
        out: &mut Outbox<ServerEvent>,
    ) {
        let cap = copies.cap(self.up(conn));
        let received = self.receiver.received();
        let upto = cap.map_or(received, |c| received.min(c));
        if upto > self.acked && !self.receiver.is_finished() {
            self.acked = upto;
            let id = self.receiver.id();
            let m = TransferMsg::Ack { id, upto };
            out.send(conn, &super::messages::SessionMsg::Transfer(m));
        }
    }

    /// Done with: a blob on its way to disk lands and is collected (nothing
    /// will name it); a temporary file still being written is thrown away
    /// if `discard` (the receiver has not said so itself).
    pub(super) fn let_go(
        &self,
        discard: bool,
        blobs: &mut BlobStore,
        out: &mut Outbox<ServerEvent>,
    ) {
        if blobs.persisting(self.temp) {
            blobs.orphan(self.temp);
        } else {
            if discard {
                out.file(FileOp::Discard { temp: self.temp });
            }
            blobs.forget_handle(self.temp);
        }
    }
}

/// A batch of uploads on one session.
pub(super) struct Batch {
    pub(super) replace: bool,
    pub(super) files: u32,
    /// Offers taken so far: the next must have this id.
    offered: u32,
    /// Every name offered, by id (refused ones too).
    offers: BTreeMap<u64, String>,
    names: BTreeSet<String>,
    name_bytes: usize,
    /// Bytes of the files accepted so far, for the quota.
    bytes: u64,
    receiving: BTreeMap<u64, Receiving>,
    /// Durable here, waiting for their copies.
    copying: BTreeMap<u64, Put>,
    /// Durable here and copied: to order.
    ready: BTreeMap<u64, Put>,
    failed: BTreeMap<u64, OpError>,
    /// The client must say something by then (the next offer, a chunk).
    deadline: Timestamp,
    transfer_timeout: Duration,
    request_timeout: Duration,
}

/// What a finished batch asks to be ordered.
pub(super) struct Finished {
    pub(super) files: u32,
    /// The names offered, by id.
    pub(super) names: BTreeMap<u64, String>,
    pub(super) puts: Vec<Put>,
    pub(super) failed: BTreeMap<u64, OpError>,
}

/// What the quota and the catalogue say of an offered name.
pub(super) struct Room {
    /// Bytes the user's files take now.
    pub(super) used: u64,
    pub(super) quota: u64,
    /// Bytes of the file of that name, if there is one.
    pub(super) existing: Option<u64>,
    /// The batch is a command tried again, whose files may be the ones
    /// holding their names.
    pub(super) retried: bool,
    /// Why the name cannot be a file's (it is a folder, or under a file).
    pub(super) conflict: Option<String>,
}

impl Batch {
    pub(super) fn new(
        now: Timestamp,
        replace: bool,
        files: u32,
        transfer_timeout: Duration,
        request_timeout: Duration,
    ) -> Self {
        Batch {
            replace,
            files,
            offered: 0,
            offers: BTreeMap::new(),
            names: BTreeSet::new(),
            name_bytes: 0,
            bytes: 0,
            receiving: BTreeMap::new(),
            copying: BTreeMap::new(),
            ready: BTreeMap::new(),
            failed: BTreeMap::new(),
            deadline: now + transfer_timeout,
            transfer_timeout,
            request_timeout,
        }
    }

    /// Is `files` a batch a server takes?
    pub(super) fn fits(files: u32) -> bool {
        (1..=BATCH_FILES as u64).contains(&u64::from(files))
    }

    /// A transfer message of the batch; `room`: what an offer meets.
    pub(super) fn on_msg(
        &mut self,
        cx: &mut Ctx<'_>,
        conn: ConnId,
        m: TransferMsg,
        room: Option<Room>,
    ) {
        self.deadline = cx.now + self.transfer_timeout;
        match m {
            TransferMsg::Offer { id, name, size } => self.offer(cx, conn, id, name, size, room),
            m => {
                let id = m.id();
                if let Some(r) = self.receiving.get_mut(&id) {
                    r.receiver.on_msg(cx.now, m);
                    self.drive(cx, conn, id);
                }
            }
        }
    }

    fn offer(
        &mut self,
        cx: &mut Ctx<'_>,
        conn: ConnId,
        id: u64,
        name: String,
        size: u64,
        room: Option<Room>,
    ) {
        let now = cx.now;
        let mut receiver = Receiver::new(now, id, name.clone(), size, self.transfer_timeout);
        if id != u64::from(self.offered) || self.offered >= self.files {
            // Out of order, or past the batch: not one of its files. Its
            // sender hears so; the batch goes on without it.
            let detail = format!(
                "offer {id} does not belong to this batch (next is {} of {})",
                self.offered, self.files
            );
            receiver.reject(TransferError::Protocol { detail });
            return send_all(&mut receiver, conn, cx.out);
        }
        self.offered += 1;
        self.offers.insert(id, name.clone());
        let room = room.unwrap_or(Room {
            used: 0,
            quota: 0,
            existing: None,
            retried: false,
            conflict: None,
        });
        let replaced = if self.replace {
            room.existing.unwrap_or(0)
        } else {
            0
        };
        let used = room.used.saturating_sub(replaced) + self.bytes;
        // A name of the batch that would make this one a folder's, or that
        // this one would make a file's (`a` and `a/b`).
        let clash = (self.names.iter()).find(|m| is_under(&name, m) || is_under(m, &name));
        let refusal = if let Err(reason) = check_path(&name) {
            Some(TransferError::BadName { reason })
        } else if let Some(reason) = room.conflict.clone().filter(|_| !room.retried) {
            // Checked again when the batch is applied, but refused here
            // before its content is sent.
            Some(TransferError::Conflict { reason })
        } else if let Some(m) = clash {
            let reason = format!("the batch holds both {m} and {name}");
            Some(TransferError::Conflict { reason })
        } else if self.names.contains(&name) {
            let reason = "the batch names this file twice".to_string();
            Some(TransferError::BadName { reason })
        } else if self.name_bytes + name.len() > BATCH_NAME_BYTES {
            let detail = format!("a batch's names take at most {BATCH_NAME_BYTES} bytes");
            Some(TransferError::Protocol { detail })
        } else if room.existing.is_some() && !self.replace && !room.retried {
            Some(TransferError::Exists)
        } else if used.saturating_add(size) > room.quota {
            Some(TransferError::OverQuota {
                used,
                quota: room.quota,
                needed: size,
            })
        } else {
            None
        };
        if let Some(reason) = refusal {
            self.failed.insert(id, OpError::Transfer(reason.clone()));
            receiver.reject(reason);
            return send_all(&mut receiver, conn, cx.out);
        }
        self.names.insert(name.clone());
        self.name_bytes += name.len();
        self.bytes += size;
        receiver.accept(now);
        cx.copies
            .open(now, (conn, id), size, cx.replica, cx.blobs, cx.out);
        let r = Receiving::new(conn, receiver, cx.blobs);
        self.receiving.insert(id, r);
        self.drive(cx, conn, id);
    }

    /// Carries out what file `id`'s receiver asks for, and takes it out
    /// of the receiving once it has ended.
    fn drive(&mut self, cx: &mut Ctx<'_>, conn: ConnId, id: u64) {
        let Some(r) = self.receiving.get_mut(&id) else {
            return;
        };
        match r.drive(cx, conn) {
            Step::Going => {}
            // Not said of a batch's file (see `Receiving::resumable`),
            // but were it: nothing is kept of it.
            Step::Interrupted(_) => {
                if let Some(r) = self.receiving.remove(&id) {
                    cx.copies.close((conn, id), cx.blobs, cx.out);
                    r.let_go(true, cx.blobs, cx.out);
                }
                let e = OpError::Transfer(TransferError::Timeout);
                self.failed.insert(id, e);
            }
            Step::Failed(e) => {
                if let Some(r) = self.receiving.remove(&id) {
                    cx.copies.close((conn, id), cx.blobs, cx.out);
                    r.let_go(false, cx.blobs, cx.out);
                }
                self.failed.insert(id, OpError::Transfer(e));
            }
            Step::Done(digest) => {
                let Some(r) = self.receiving.remove(&id) else {
                    return;
                };
                let put = Put {
                    id,
                    name: r.receiver.name().to_string(),
                    size: r.receiver.size(),
                    digest,
                    attrs: r.attrs,
                    deadline: cx.now + self.request_timeout,
                };
                let (now, up) = (cx.now, (conn, id));
                if cx
                    .copies
                    .stored(now, up, digest, cx.replica, cx.blobs, cx.out)
                {
                    self.ready.insert(id, put);
                } else {
                    self.copying.insert(id, put);
                }
            }
        }
    }

    /// File `id`'s attributes, which follow its offer (dropped if it was
    /// refused).
    pub(super) fn set_attrs(&mut self, id: u64, attrs: FileAttrs) {
        if let Some(r) = self.receiving.get_mut(&id) {
            r.attrs = Some(attrs);
        }
    }

    /// Enough copies of file `id` are durable.
    pub(super) fn copies_made(&mut self, id: u64) {
        if let Some(put) = self.copying.remove(&id) {
            self.ready.insert(id, put);
        }
    }

    /// The copies of file `id` moved: its client may hear more acks.
    pub(super) fn copies_moved(
        &mut self,
        copies: &Copies,
        conn: ConnId,
        id: u64,
        out: &mut Outbox<ServerEvent>,
    ) {
        if let Some(r) = self.receiving.get_mut(&id) {
            r.ack_further(copies, conn, out);
        }
    }

    /// The receiving file whose temporary file is `temp`.
    fn by_temp(&self, temp: u64) -> Option<u64> {
        (self.receiving.iter())
            .find(|(_, r)| r.temp == temp)
            .map(|(id, _)| *id)
    }

    /// A file's temporary file is a blob now.
    pub(super) fn persisted(&mut self, cx: &mut Ctx<'_>, conn: ConnId, temp: u64) {
        if let Some(id) = self.by_temp(temp) {
            if let Some(r) = self.receiving.get_mut(&id) {
                r.receiver.committed();
            }
            cx.blobs.arrived(temp);
            self.drive(cx, conn, id);
        } else {
            cx.blobs.arrived(temp);
        }
    }

    /// A file operation on a file's temporary file failed.
    pub(super) fn file_failed(
        &mut self,
        cx: &mut Ctx<'_>,
        conn: ConnId,
        temp: u64,
        reason: TransferError,
    ) {
        if let Some(id) = self.by_temp(temp) {
            if let Some(r) = self.receiving.get_mut(&id) {
                r.receiver.fail(reason);
            }
            self.drive(cx, conn, id);
        }
    }

    pub(super) fn deadline(&self) -> Option<Timestamp> {
        let receiving = self
            .receiving
            .values()
            .filter_map(|r| r.receiver.poll_timeout());
        let copying = self.copying.values().map(|p| p.deadline);
        let offers = (self.offered < self.files).then_some(self.deadline);
        receiving.chain(copying).chain(offers).min()
    }

    pub(super) fn on_deadline(&mut self, cx: &mut Ctx<'_>, conn: ConnId) {
        let now = cx.now;
        let ids: Vec<u64> = self.receiving.keys().copied().collect();
        for id in ids {
            if let Some(r) = self.receiving.get_mut(&id) {
                r.receiver.handle_timeout(now);
            }
            self.drive(cx, conn, id);
        }
        let late: Vec<u64> = (self.copying.iter())
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            if let Some(put) = self.copying.remove(&id) {
                cx.copies.close((conn, id), cx.blobs, cx.out);
                cx.blobs.unpin(&put.digest);
                let reason =
                    "the file could not be copied to a majority of the servers in time; it was not stored"
                        .into();
                self.failed.insert(id, OpError::Unavailable { reason });
            }
        }
        if self.offered < self.files && self.deadline <= now {
            // The client stopped offering: what it did not offer failed.
            for id in u64::from(self.offered)..u64::from(self.files) {
                let e = OpError::Transfer(TransferError::Timeout);
                self.failed.insert(id, e);
            }
            self.offered = self.files;
        }
    }

    /// Every file has ended: what to order, and what failed.
    pub(super) fn finish(&mut self) -> Option<Finished> {
        let over =
            self.offered == self.files && self.receiving.is_empty() && self.copying.is_empty();
        if !over {
            return None;
        }
        Some(Finished {
            files: self.files,
            names: std::mem::take(&mut self.offers),
            puts: std::mem::take(&mut self.ready).into_values().collect(),
            failed: std::mem::take(&mut self.failed),
        })
    }

    /// The session is gone: every file is let go of.
    pub(super) fn forget(
        &mut self,
        conn: ConnId,
        blobs: &mut BlobStore,
        copies: &mut Copies,
        out: &mut Outbox<ServerEvent>,
    ) {
        for (id, r) in std::mem::take(&mut self.receiving) {
            copies.close((conn, id), blobs, out);
            r.let_go(true, blobs, out);
        }
        // Durable here, never ordered: nothing will name them.
        let durable = std::mem::take(&mut self.copying).into_iter();
        for (id, put) in durable.chain(std::mem::take(&mut self.ready)) {
            copies.close((conn, id), blobs, out);
            blobs.unpin(&put.digest);
        }
    }
}

impl Finished {
    /// The transaction's files, in order.
    pub(super) fn new_files(&self) -> Vec<NewFile> {
        (self.puts.iter())
            .map(|p| NewFile {
                name: p.name.clone(),
                size: p.size,
                digest: p.digest,
                attrs: p.attrs,
            })
            .collect()
    }
}

/// Sends what a receiver refused with.
fn send_all(receiver: &mut Receiver, conn: ConnId, out: &mut Outbox<ServerEvent>) {
    while let Some(o) = receiver.poll_output() {
        if let ReceiverOutput::Send(m) = o {
            out.send(conn, &super::messages::SessionMsg::Transfer(m));
        }
    }
}
