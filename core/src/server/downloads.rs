//! A batch of downloads (`DownloadMany`): the files one session asked for,
//! sent as transfers of the one engine whose id is the file's place in the
//! request, several at once, the way `uploads` receives a batch. Small
//! files go back to back without a round trip of their own; a large one
//! takes the room it needs and the window as a single download does. A
//! file this server lacks the content of is fetched meanwhile, as a single
//! download's is; the others do not wait for it. The batch ends with one
//! answer, `SentAll`, which says what became of each file.

use super::blobs::{BlobStore, Owner};
use super::messages::{Landed, OpError, SessionMsg};
use super::scrub::says_damaged;
use super::user_files::Ctx;
use crate::client::{BYTES_IN_FLIGHT, FILES_IN_FLIGHT};
use crate::io::{ConnId, FileOp};
use crate::replication::catalogue::FileMeta;
use crate::replication::entry::BATCH_FILES;
use crate::time::Timestamp;
use crate::transfer::{Sender, SenderConfig, SenderOutput, TransferError, TransferMsg};
use std::collections::BTreeMap;
use std::time::Duration;

/// One file being sent: its sender, and the handle its reads go through.
struct Going {
    sender: Box<Sender>,
    handle: u64,
    meta: FileMeta,
}

pub(super) struct Sending {
    /// Each file asked for: what the catalogue says of it, or why it is
    /// refused (not there, or not the user's to read: the same answer).
    files: Vec<Result<FileMeta, OpError>>,
    cfg: SenderConfig,
    request_timeout: Duration,
    /// The next file to start.
    next: usize,
    going: BTreeMap<u64, Going>,
    /// Files whose content is being fetched, with when to give up on it
    /// (put off each time the fetch moves).
    waiting: BTreeMap<u64, Timestamp>,
    outcomes: Vec<Option<Landed>>,
}

impl Sending {
    /// Can a request name this many files?
    pub(super) fn fits(files: usize) -> bool {
        (1..=BATCH_FILES).contains(&files)
    }

    pub(super) fn new(
        files: Vec<Result<FileMeta, OpError>>,
        cfg: SenderConfig,
        request_timeout: Duration,
    ) -> Self {
        let outcomes = vec![None; files.len()];
        Sending {
            files,
            cfg,
            request_timeout,
            next: 0,
            going: BTreeMap::new(),
            waiting: BTreeMap::new(),
            outcomes,
        }
    }

    /// Every file has its outcome.
    pub(super) fn is_over(&self) -> bool {
        self.outcomes.iter().all(Option::is_some)
    }

    /// The answer: each file's outcome, by id.
    pub(super) fn answer(&self) -> SessionMsg {
        let outcomes = (self.outcomes.iter())
            .map(|o| {
                o.clone()
                    .unwrap_or(Landed::Failed(OpError::Transfer(TransferError::Cancelled)))
            })
            .collect();
        SessionMsg::SentAll { outcomes }
    }

    pub(super) fn deadline(&self) -> Option<Timestamp> {
        let sending = self.going.values().filter_map(|g| g.sender.poll_timeout());
        sending.chain(self.waiting.values().copied()).min()
    }

    /// Starts files while there is room: files in flight (sent or waited
    /// for) and bytes not yet acknowledged, as the client's batch of
    /// uploads counts them.
    fn fill(&mut self, cx: &mut Ctx<'_>, conn: ConnId) {
        let mut fetch = false;
        while let Some(file) = self.files.get(self.next) {
            let id = self.next as u64;
            let meta = match file {
                Ok(meta) => meta.clone(),
                Err(e) => {
                    self.outcomes[self.next] = Some(Landed::Failed(e.clone()));
                    self.next += 1;
                    continue;
                }
            };
            let in_flight: u64 = (self.going.values())
                .map(|g| g.sender.size().saturating_sub(g.sender.acked_bytes()))
                .sum();
            let files = self.going.len() + self.waiting.len();
            let room =
                files == 0 || (files < FILES_IN_FLIGHT && in_flight + meta.size <= BYTES_IN_FLIGHT);
            if !room {
                break;
            }
            self.next += 1;
            if cx.blobs.has(&meta.digest) {
                self.start(cx, conn, id, meta);
            } else {
                cx.blobs.want(cx.now, meta.digest);
                self.waiting.insert(id, cx.now + self.request_timeout);
                fetch = true;
            }
        }
        if fetch {
            cx.blobs.sync(cx.now, cx.replica, cx.out);
        }
    }

    fn start(&mut self, cx: &mut Ctx<'_>, conn: ConnId, id: u64, meta: FileMeta) {
        let handle = cx.blobs.new_handle(Owner::Session(conn));
        cx.blobs.read_target(handle, meta.digest);
        // Named by its digest: the client's check covers this disk too.
        let sender = Sender::new(cx.now, id, meta.name.clone(), meta.size, self.cfg.clone())
            .with_digest(meta.digest);
        let sender = Box::new(sender);
        self.going.insert(
            id,
            Going {
                sender,
                handle,
                meta,
            },
        );
    }

    /// Carries out what the senders ask for; starts more as files end.
    pub(super) fn pump(&mut self, cx: &mut Ctx<'_>, conn: ConnId) {
        self.fill(cx, conn);
        loop {
            let mut ended = Vec::new();
            for (id, g) in self.going.iter_mut() {
                while let Some(o) = g.sender.poll_output() {
                    match o {
                        SenderOutput::Send(m) => {
                            let offer = matches!(m, TransferMsg::Offer { .. });
                            cx.out.send(conn, &SessionMsg::Transfer(m));
                            // Right after its offer, as a single download's.
                            if let Some(attrs) = g.meta.attrs.filter(|_| offer) {
                                cx.out.send(conn, &SessionMsg::Attrs { id: *id, attrs });
                            }
                        }
                        SenderOutput::Read { offset, len } => cx.out.file(FileOp::Read {
                            handle: g.handle,
                            file: crate::io::FileRef::Blob(g.meta.digest),
                            offset,
                            len,
                        }),
                        // The batch's client keeps nothing to resume from.
                        SenderOutput::Progress { .. }
                        | SenderOutput::Resumed { .. }
                        | SenderOutput::StartedOver { .. } => {}
                        SenderOutput::Finished(result) => ended.push((*id, result)),
                    }
                }
            }
            if ended.is_empty() {
                return;
            }
            for (id, result) in ended {
                let Some(g) = self.going.remove(&id) else {
                    continue;
                };
                cx.blobs.forget_handle(g.handle);
                if says_damaged(&result) {
                    // The client found it damaged: this copy is checked.
                    cx.blobs.suspect(cx.now, g.meta.digest, cx.replica, cx.out);
                }
                self.outcomes[id as usize] = Some(match result {
                    Ok(digest) => Landed::Stored {
                        size: g.meta.size,
                        digest,
                    },
                    Err(e) => Landed::Failed(OpError::Transfer(e)),
                });
            }
            self.fill(cx, conn);
        }
    }

    pub(super) fn on_msg(&mut self, now: Timestamp, m: TransferMsg) {
        // A message of a file already ended (a DONE ACK resent) is late.
        if let Some(g) = self.going.get_mut(&m.id()) {
            g.sender.on_msg(now, m);
        }
    }

    fn by_handle(&mut self, handle: u64) -> Option<&mut Going> {
        self.going.values_mut().find(|g| g.handle == handle)
    }

    pub(super) fn on_read(&mut self, handle: u64, offset: u64, data: &[u8]) {
        if let Some(g) = self.by_handle(handle) {
            g.sender.on_read(offset, data);
        }
    }

    pub(super) fn file_failed(&mut self, handle: u64, reason: TransferError) {
        if let Some(g) = self.by_handle(handle) {
            g.sender.fail(reason);
        }
    }

    pub(super) fn on_deadline(&mut self, now: Timestamp) {
        for g in self.going.values_mut() {
            g.sender.handle_timeout(now);
        }
        let late: Vec<u64> = (self.waiting.iter())
            .filter(|(_, t)| **t <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            self.waiting.remove(&id);
            let reason = super::user_files::unfetched(self.request_timeout);
            self.outcomes[id as usize] = Some(Landed::Failed(OpError::Unavailable { reason }));
        }
    }

    /// Content `d` is on disk now: the files waiting for it go.
    pub(super) fn arrived(&mut self, cx: &mut Ctx<'_>, conn: ConnId, d: [u8; 32]) {
        let ready: Vec<u64> = (self.waiting.keys())
            .filter(|id| self.meta(**id).is_some_and(|m| m.digest == d))
            .copied()
            .collect();
        for id in ready {
            self.waiting.remove(&id);
            if let Some(meta) = self.meta(id).cloned() {
                self.start(cx, conn, id, meta);
            }
        }
    }

    /// The fetch of `d` moved: the files waiting for it wait on.
    pub(super) fn fetch_moved(&mut self, now: Timestamp, d: [u8; 32]) {
        let timeout = self.request_timeout;
        let files = &self.files;
        for (id, t) in self.waiting.iter_mut() {
            let of_d = matches!(files.get(*id as usize), Some(Ok(m)) if m.digest == d);
            if of_d {
                *t = now + timeout;
            }
        }
    }

    fn meta(&self, id: u64) -> Option<&FileMeta> {
        self.files.get(id as usize)?.as_ref().ok()
    }

    /// The session is gone: its reads are let go.
    pub(super) fn forget(self, blobs: &mut BlobStore) {
        for g in self.going.into_values() {
            blobs.forget_handle(g.handle);
        }
    }
}
