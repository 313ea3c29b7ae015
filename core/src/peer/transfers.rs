//! The PUTs and GETs in progress on a peer's connections, each moved by the
//! one transfer engine: a [`Sender`] reads the file from the shared
//! directory, a [`Receiver`] writes it into a temporary file that is put in
//! place under its name — never over a file already there.
//!
//! Every operation starts with a listing of the directory (`FileOp::List`):
//! it tells whether the name is there and how large it is, without a second
//! kind of file query; a directory that peers share is small enough to list
//! per operation. Names from the other peer are checked as strictly as the
//! server checks names before anything is looked up.

use super::event::PeerEvent;
use super::messages::PeerMsg;
use crate::io::{ConnId, DirEntry, FileOp, FileRef};
use crate::outbox::Outbox;
use crate::replication::sync_round::Token;
use crate::server::check_name;
use crate::time::{earliest, Timestamp};
use crate::transfer::{
    Receiver, ReceiverOutput, Sender, SenderConfig, SenderOutput, TransferError, TransferMsg,
};
use std::collections::BTreeMap;
use std::time::Duration;

/// Transfers one connection may have going at once, both directions
/// together: what a peer holds for another is bounded.
pub const MAX_PER_LINK: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Key {
    conn: ConnId,
    /// This peer started it (its PUT or GET).
    ours: bool,
    id: u64,
}

/// An operation waiting for the directory's listing.
enum Pending {
    /// Our PUT: is the file there, and how large?
    PutOut,
    /// Our GET: is the name free here?
    GetOut,
    /// Their PUT: is the name free here? (`modified`: a SYNC write's
    /// modification time, which the copy keeps, and its token.)
    PutIn {
        size: u64,
        modified: Option<(u64, Token)>,
    },
    /// Their GET: is the file here?
    GetIn,
}

struct Waiting {
    key: Key,
    link: u32,
    name: String,
    pending: Pending,
}

enum Job {
    /// Our GET, asked: waiting for GET OK (the holder's offer) until then.
    AwaitOffer {
        until: Timestamp,
    },
    Send {
        sender: Box<Sender>,
        handle: u64,
    },
    Recv {
        receiver: Box<Receiver>,
        temp: u64,
    },
}

struct Active {
    link: u32,
    /// The name at the other end (and here, but for `local`).
    name: String,
    /// The file read here, if not `name` (a SYNC write under a conflict
    /// name).
    local: Option<String>,
    /// The token a SYNC write to this peer came under: a higher one heard
    /// since cancels it.
    fence: Option<Token>,
    job: Job,
}

pub(super) struct Transfers {
    window: u64,
    idle: Duration,
    next_id: u64,
    /// Read handles, temporary files and listings share one numbering, so
    /// an answer names one of them only.
    next_file: u64,
    listing: BTreeMap<u64, Waiting>,
    active: BTreeMap<Key, Active>,
    files: BTreeMap<u64, Key>,
    /// SYNC writes announced by the other end (`SyncPut`), by connection
    /// and transfer: the modification time to keep, or why it is refused.
    announced: BTreeMap<(ConnId, u64), Result<(u64, Token), String>>,
    /// This peer's SYNC writes in progress.
    sync_writes: std::collections::BTreeSet<Key>,
    /// This peer's SYNC writes that ended, for its turn: (connection,
    /// transfer, outcome).
    sync_ended: Vec<(ConnId, u64, Result<(), String>)>,
    /// Names files landed under since the last call, for SYNC's digests.
    landed: Vec<String>,
}

impl Transfers {
    pub(super) fn new(window: u64, idle: Duration) -> Self {
        Transfers {
            window,
            idle,
            next_id: 0,
            next_file: 0,
            listing: BTreeMap::new(),
            active: BTreeMap::new(),
            files: BTreeMap::new(),
            announced: BTreeMap::new(),
            sync_writes: std::collections::BTreeSet::new(),
            sync_ended: Vec::new(),
            landed: Vec::new(),
        }
    }

    /// Transfers on `conn`, started or asked for.
    pub(super) fn on_link(&self, conn: ConnId) -> usize {
        self.active.keys().filter(|k| k.conn == conn).count()
            + (self.listing.values())
                .filter(|w| w.key.conn == conn)
                .count()
    }

    fn file_number(&mut self) -> u64 {
        self.next_file += 1;
        self.next_file
    }

    /// Operation `key` waits for the directory's listing.
    fn list(
        &mut self,
        key: Key,
        link: u32,
        name: String,
        pending: Pending,
        out: &mut Outbox<PeerEvent>,
    ) {
        let handle = self.file_number();
        let w = Waiting {
            key,
            link,
            name,
            pending,
        };
        self.listing.insert(handle, w);
        out.file(FileOp::List { handle });
    }

    /// PUT `name` of this directory to the peer on `conn`.
    pub(super) fn put(
        &mut self,
        conn: ConnId,
        link: u32,
        name: String,
        out: &mut Outbox<PeerEvent>,
    ) {
        self.start(conn, link, name, Pending::PutOut, out);
    }

    /// GET `name` from the peer on `conn` into this directory.
    pub(super) fn get(
        &mut self,
        conn: ConnId,
        link: u32,
        name: String,
        out: &mut Outbox<PeerEvent>,
    ) {
        self.start(conn, link, name, Pending::GetOut, out);
    }

    /// One of this peer's own operations: numbered, then looked up.
    fn start(
        &mut self,
        conn: ConnId,
        link: u32,
        name: String,
        pending: Pending,
        out: &mut Outbox<PeerEvent>,
    ) {
        self.next_id += 1;
        let key = Key {
            conn,
            ours: true,
            id: self.next_id,
        };
        self.list(key, link, name, pending, out);
    }

    /// The other end announced SYNC write `id`: keep `modified_ms`, or
    /// refuse its offer for `refused`.
    pub(super) fn announce(
        &mut self,
        conn: ConnId,
        id: u64,
        outcome: Result<(u64, Token), String>,
    ) {
        self.announced.insert((conn, id), outcome);
    }

    /// A SYNC write: this peer's `local` (of `size` bytes, content `digest`)
    /// sent to be stored as `remote`, announced under `token`. Its id.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn put_sync(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        link: u32,
        local: &super::sync_plan::SyncEntry,
        remote: String,
        token: Token,
        out: &mut Outbox<PeerEvent>,
    ) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        let key = Key {
            conn,
            ours: true,
            id,
        };
        let modified_ms = local.modified_ms;
        out.send(
            conn,
            &PeerMsg::SyncPut {
                token,
                id,
                modified_ms,
            },
        );
        let cfg = SenderConfig {
            window: self.window,
            ..SenderConfig::default()
        };
        // The digest listed: content changed since is caught at the other end.
        let sender =
            Sender::new(now, id, remote.clone(), local.size, cfg).with_digest(local.digest);
        let handle = self.file_number();
        self.files.insert(handle, key);
        let job = Job::Send {
            sender: Box::new(sender),
            handle,
        };
        let active = Active {
            link,
            name: remote,
            local: Some(local.name.clone()),
            fence: None,
            job,
        };
        self.active.insert(key, active);
        self.sync_writes.insert(key);
        self.pump(key, out);
        id
    }

    /// A token `highest` was heard: SYNC writes coming in under a lower
    /// one are cancelled (their temporary files discarded), so that no
    /// write of a fenced-off writer lands.
    pub(super) fn fence(&mut self, highest: Token, out: &mut Outbox<PeerEvent>) {
        let stale: Vec<Key> = (self.active.iter())
            .filter(|(_, a)| a.fence.is_some_and(|t| t < highest))
            .map(|(k, _)| *k)
            .collect();
        for key in stale {
            if let Some(Active {
                job: Job::Recv { receiver, .. },
                ..
            }) = self.active.get_mut(&key)
            {
                receiver.fail(TransferError::Protocol {
                    detail: "stale write token: a later writer has the turn".into(),
                });
            }
            self.pump(key, out);
        }
    }

    /// Names files landed under since the last call.
    pub(super) fn take_landed(&mut self) -> Vec<String> {
        std::mem::take(&mut self.landed)
    }

    /// SYNC writes of this peer that ended since the last call.
    pub(super) fn take_sync_ended(&mut self) -> Vec<(ConnId, u64, Result<(), String>)> {
        std::mem::take(&mut self.sync_ended)
    }

    /// A file message from the admitted peer on `conn`.
    pub(super) fn on_msg(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        link: u32,
        msg: PeerMsg,
        out: &mut Outbox<PeerEvent>,
    ) {
        match msg {
            PeerMsg::Get { id, name } => {
                let key = Key {
                    conn,
                    ours: false,
                    id,
                };
                if self.active.contains_key(&key) {
                    return;
                }
                if let Err(reason) = self.admissible(conn, &name) {
                    out.send(conn, &PeerMsg::GetFail { id, reason });
                    return;
                }
                let pending = Pending::GetIn;
                self.list(key, link, name, pending, out);
            }
            PeerMsg::GetFail { id, reason } => {
                let key = Key {
                    conn,
                    ours: true,
                    id,
                };
                if let Some(a) = self.active.remove(&key) {
                    out.event(PeerEvent::GetFailed {
                        link,
                        name: a.name,
                        reason: told(&reason),
                    });
                }
            }
            PeerMsg::Xfer { mine, msg } => self.on_xfer(now, conn, link, !mine, msg, out),
            // The opening's messages are the link's business, SYNC's the
            // round's.
            _ => {}
        }
    }

    /// Is a request for `name` on `conn` one to look into?
    fn admissible(&self, conn: ConnId, name: &str) -> Result<(), TransferError> {
        check_name(name).map_err(|reason| TransferError::BadName { reason })?;
        if self.on_link(conn) >= MAX_PER_LINK {
            return Err(TransferError::Protocol {
                detail: format!("more than {MAX_PER_LINK} transfers at once on one connection"),
            });
        }
        Ok(())
    }

    fn on_xfer(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        link: u32,
        ours: bool,
        msg: TransferMsg,
        out: &mut Outbox<PeerEvent>,
    ) {
        let key = Key {
            conn,
            ours,
            id: msg.id(),
        };
        let Some(a) = self.active.get_mut(&key) else {
            // Their PUT: PUT FILENAME SIZE.
            if let (false, TransferMsg::Offer { id, name, size }) = (ours, msg) {
                if let Err(reason) = self.admissible(conn, &name) {
                    let msg = TransferMsg::Reject { id, reason };
                    out.send(conn, &PeerMsg::Xfer { mine: false, msg });
                    return;
                }
                let modified = match self.announced.remove(&(conn, id)) {
                    None => None,
                    Some(Ok(m)) => Some(m),
                    Some(Err(detail)) => {
                        let reason = TransferError::Protocol { detail };
                        let msg = TransferMsg::Reject { id, reason };
                        out.send(conn, &PeerMsg::Xfer { mine: false, msg });
                        return;
                    }
                };
                let pending = Pending::PutIn { size, modified };
                self.list(key, link, name, pending, out);
            }
            // Otherwise a late word of a transfer that is over.
            return;
        };
        match (&mut a.job, msg) {
            (Job::Send { sender, .. }, m) => sender.on_msg(now, m),
            (Job::Recv { receiver, .. }, m) => receiver.on_msg(now, m),
            // GET OK: the holder offers the file.
            (Job::AwaitOffer { .. }, TransferMsg::Offer { id, name, size }) if name == a.name => {
                let mut receiver = Receiver::new(now, id, name, size, self.idle);
                receiver.accept(now);
                let temp = self.next_file + 1;
                self.next_file = temp;
                self.files.insert(temp, key);
                a.job = Job::Recv {
                    receiver: Box::new(receiver),
                    temp,
                };
            }
            (Job::AwaitOffer { .. }, _) => {
                let msg = TransferMsg::Abort {
                    id: key.id,
                    reason: TransferError::Protocol {
                        detail: "the offer is not of the file asked for".into(),
                    },
                };
                out.send(conn, &PeerMsg::Xfer { mine: true, msg });
                self.finish(key, Err("the other peer offered another file".into()), out);
                return;
            }
        }
        self.pump(key, out);
    }

    /// The directory's listing for operation `handle`.
    pub(super) fn on_listed(
        &mut self,
        now: Timestamp,
        handle: u64,
        entries: Result<&[DirEntry], String>,
        links: &dyn Fn(ConnId) -> bool,
        out: &mut Outbox<PeerEvent>,
    ) {
        let Some(w) = self.listing.remove(&handle) else {
            return;
        };
        let Waiting {
            key,
            link,
            name,
            pending,
        } = w;
        if !links(key.conn) {
            return;
        }
        let conn = key.conn;
        let entries = match entries {
            Ok(e) => e,
            Err(error) => {
                let reason = TransferError::Io { detail: error };
                return self.refuse(key, link, name, pending, reason, out);
            }
        };
        // A file whose name on disk is another normal form of `name` (a
        // file made by a program that writes NFD) is the same name.
        let found = (entries.iter())
            .find(|e| e.name == name)
            .or_else(|| {
                entries
                    .iter()
                    .find(|e| crate::names::normalize(&e.name) == name)
            })
            .map(|e| (e.size, (e.name != name).then(|| e.name.clone())));
        let local = found.as_ref().and_then(|(_, l)| l.clone());
        let found = found.map(|(size, _)| size);
        match (pending, found) {
            (Pending::PutOut, Some(size)) | (Pending::GetIn, Some(size)) => {
                let cfg = SenderConfig {
                    window: self.window,
                    ..SenderConfig::default()
                };
                let sender = Sender::new(now, key.id, name.clone(), size, cfg);
                let handle = self.file_number();
                self.files.insert(handle, key);
                let job = Job::Send {
                    sender: Box::new(sender),
                    handle,
                };
                self.active.insert(
                    key,
                    Active {
                        link,
                        name,
                        local,
                        fence: None,
                        job,
                    },
                );
                self.pump(key, out);
            }
            (Pending::GetOut, None) => {
                out.send(
                    conn,
                    &PeerMsg::Get {
                        id: key.id,
                        name: name.clone(),
                    },
                );
                let job = Job::AwaitOffer {
                    until: now + self.idle,
                };
                self.active.insert(
                    key,
                    Active {
                        link,
                        name,
                        local: None,
                        fence: None,
                        job,
                    },
                );
            }
            (Pending::PutIn { size, modified }, None) => {
                let mut receiver = Receiver::new(now, key.id, name.clone(), size, self.idle);
                receiver.accept(now);
                let temp = self.file_number();
                self.files.insert(temp, key);
                if let Some((modified_ms, _)) = modified {
                    out.file(FileOp::SetModified { temp, modified_ms });
                }
                let fence = modified.map(|(_, t)| t);
                let job = Job::Recv {
                    receiver: Box::new(receiver),
                    temp,
                };
                let active = Active {
                    link,
                    name,
                    local: None,
                    fence,
                    job,
                };
                self.active.insert(key, active);
                self.pump(key, out);
            }
            (p @ (Pending::PutOut | Pending::GetIn), None) => {
                self.refuse(key, link, name, p, TransferError::NotFound, out)
            }
            (p @ (Pending::GetOut | Pending::PutIn { .. }), Some(_)) => {
                self.refuse(key, link, name, p, TransferError::Exists, out)
            }
        }
    }

    /// Operation `key` cannot go ahead: the other peer hears why (theirs),
    /// the user hears why (ours).
    fn refuse(
        &mut self,
        key: Key,
        link: u32,
        name: String,
        pending: Pending,
        reason: TransferError,
        out: &mut Outbox<PeerEvent>,
    ) {
        let conn = key.conn;
        let reason_text = match &reason {
            TransferError::Exists => "a file of that name is already in this directory".into(),
            TransferError::NotFound => "no such file in this directory".into(),
            other => other.to_string(),
        };
        match pending {
            Pending::PutOut => out.event(PeerEvent::PutFailed {
                link,
                name,
                reason: reason_text,
            }),
            Pending::GetOut => out.event(PeerEvent::GetFailed {
                link,
                name,
                reason: reason_text,
            }),
            Pending::PutIn { .. } => {
                let msg = TransferMsg::Reject { id: key.id, reason };
                out.send(conn, &PeerMsg::Xfer { mine: false, msg });
            }
            Pending::GetIn => out.send(conn, &PeerMsg::GetFail { id: key.id, reason }),
        }
    }

    /// A file answer: a read, a persist, or a failure of either.
    pub(super) fn on_read(
        &mut self,
        handle: u64,
        offset: u64,
        data: &[u8],
        out: &mut Outbox<PeerEvent>,
    ) {
        let Some(key) = self.files.get(&handle).copied() else {
            return;
        };
        if let Some(Active {
            job: Job::Send { sender, .. },
            ..
        }) = self.active.get_mut(&key)
        {
            sender.on_read(offset, data);
        }
        self.pump(key, out);
    }

    pub(super) fn on_persisted(&mut self, temp: u64, out: &mut Outbox<PeerEvent>) {
        let Some(key) = self.files.get(&temp).copied() else {
            return;
        };
        if let Some(Active {
            job: Job::Recv { receiver, .. },
            ..
        }) = self.active.get_mut(&key)
        {
            receiver.committed();
        }
        self.pump(key, out);
    }

    pub(super) fn on_file_failed(
        &mut self,
        handle: u64,
        error: String,
        no_space: bool,
        out: &mut Outbox<PeerEvent>,
    ) {
        let Some(key) = self.files.get(&handle).copied() else {
            return;
        };
        match self.active.get_mut(&key).map(|a| &mut a.job) {
            Some(Job::Send { sender, .. }) => sender.on_read_error(error),
            Some(Job::Recv { receiver, .. }) => receiver.fail(if no_space {
                TransferError::NoSpace {
                    needed: 0,
                    available: 0,
                }
            } else {
                TransferError::Io { detail: error }
            }),
            _ => {}
        }
        self.pump(key, out);
    }

    /// The connection closed: everything on it ends.
    pub(super) fn link_closed(&mut self, conn: ConnId, out: &mut Outbox<PeerEvent>) {
        self.listing.retain(|_, w| w.key.conn != conn);
        self.announced.retain(|(c, _), _| *c != conn);
        let keys: Vec<Key> = self
            .active
            .keys()
            .filter(|k| k.conn == conn)
            .copied()
            .collect();
        for key in keys {
            match self.active.get_mut(&key).map(|a| &mut a.job) {
                Some(Job::Send { sender, .. }) => sender.fail(TransferError::Cancelled),
                Some(Job::Recv { receiver, .. }) => receiver.fail(TransferError::Cancelled),
                Some(Job::AwaitOffer { .. }) => {
                    let why = "the connection closed".to_string();
                    self.finish(key, Err(why), out);
                    continue;
                }
                None => continue,
            }
            self.pump(key, out);
        }
    }

    pub(super) fn handle_timeout(&mut self, now: Timestamp, out: &mut Outbox<PeerEvent>) {
        let due: Vec<Key> = (self.active.iter())
            .filter(|(_, a)| job_timeout(&a.job).is_some_and(|t| t <= now))
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            match self.active.get_mut(&key).map(|a| &mut a.job) {
                Some(Job::Send { sender, .. }) => sender.handle_timeout(now),
                Some(Job::Recv { receiver, .. }) => receiver.handle_timeout(now),
                Some(Job::AwaitOffer { .. }) => {
                    let why = TransferError::Timeout.to_string();
                    self.finish(key, Err(why), out);
                    continue;
                }
                None => continue,
            }
            self.pump(key, out);
        }
    }

    pub(super) fn poll_timeout(&self) -> Option<Timestamp> {
        (self.active.values()).fold(None, |t, a| earliest(t, job_timeout(&a.job)))
    }

    /// Carries out what transfer `key`'s engine asks for.
    fn pump(&mut self, key: Key, out: &mut Outbox<PeerEvent>) {
        let Some(a) = self.active.get_mut(&key) else {
            return;
        };
        let conn = key.conn;
        let mine = key.ours;
        let mut finished = None;
        match &mut a.job {
            Job::Send { sender, handle } => {
                while let Some(o) = sender.poll_output() {
                    match o {
                        SenderOutput::Send(msg) => out.send(conn, &PeerMsg::Xfer { mine, msg }),
                        SenderOutput::Read { offset, len } => out.file(FileOp::Read {
                            handle: *handle,
                            file: FileRef::Named(a.local.clone().unwrap_or_else(|| a.name.clone())),
                            offset,
                            len,
                        }),
                        // A peer never offers to resume.
                        SenderOutput::Progress { .. }
                        | SenderOutput::Resumed { .. }
                        | SenderOutput::StartedOver { .. } => {}
                        SenderOutput::Finished(r) => finished = Some(r),
                    }
                }
            }
            Job::Recv { receiver, temp } => {
                while let Some(o) = receiver.poll_output() {
                    match o {
                        ReceiverOutput::Send(msg) => out.send(conn, &PeerMsg::Xfer { mine, msg }),
                        ReceiverOutput::Write { offset, data } => out.file(FileOp::Write {
                            temp: *temp,
                            offset,
                            data,
                        }),
                        ReceiverOutput::Commit { .. } => out.file(FileOp::Persist {
                            temp: *temp,
                            to: FileRef::Named(a.name.clone()),
                        }),
                        ReceiverOutput::Discard => out.file(FileOp::Discard { temp: *temp }),
                        // It never resumes: nothing is read back.
                        ReceiverOutput::Progress { .. }
                        | ReceiverOutput::Read { .. }
                        | ReceiverOutput::Resumed { .. }
                        | ReceiverOutput::StartOver { .. } => {}
                        ReceiverOutput::Finished(r) => finished = Some(r),
                    }
                }
            }
            Job::AwaitOffer { .. } => {}
        }
        if let Some(r) = finished {
            self.finish(key, r.map(|_| ()).map_err(|e| told(&e)), out);
        }
    }

    fn finish(&mut self, key: Key, result: Result<(), String>, out: &mut Outbox<PeerEvent>) {
        let Some(a) = self.active.remove(&key) else {
            return;
        };
        let (size, sending) = match &a.job {
            Job::Send { sender, handle } => {
                self.files.remove(handle);
                (sender.acked_bytes(), true)
            }
            Job::Recv { receiver, temp } => {
                self.files.remove(temp);
                (receiver.size(), false)
            }
            Job::AwaitOffer { .. } => (0, false),
        };
        if self.sync_writes.remove(&key) {
            self.sync_ended.push((key.conn, key.id, result.clone()));
        }
        let (link, name, token) = (a.link, a.name, a.fence);
        if !sending && result.is_ok() {
            self.landed.push(name.clone());
        }
        out.event(match (key.ours, sending, result) {
            (true, true, Ok(_)) => PeerEvent::PutDone { link, name, size },
            (true, true, Err(reason)) => PeerEvent::PutFailed { link, name, reason },
            (true, false, Ok(_)) => PeerEvent::GetDone { link, name, size },
            (true, false, Err(reason)) => PeerEvent::GetFailed { link, name, reason },
            (false, false, Ok(_)) => PeerEvent::Received {
                link,
                name,
                size,
                token,
            },
            (false, false, Err(reason)) => PeerEvent::ReceiveFailed { link, name, reason },
            (false, true, Ok(_)) => PeerEvent::Served { link, name, size },
            // The other peer hears of its failed GET; nothing was changed here.
            (false, true, Err(_)) => return,
        });
    }
}

/// A transfer's failure as this peer's user hears it: the engine's words
/// are the server's, whose advice (`--force`) means nothing here.
fn told(e: &TransferError) -> String {
    match e {
        TransferError::Exists => "the other peer already has a file of that name".into(),
        TransferError::NotFound => "no such file in the other peer's directory".into(),
        other => other.to_string(),
    }
}

fn job_timeout(job: &Job) -> Option<Timestamp> {
    match job {
        Job::Send { sender, .. } => sender.poll_timeout(),
        Job::Recv { receiver, .. } => receiver.poll_timeout(),
        Job::AwaitOffer { until } => Some(*until),
    }
}
