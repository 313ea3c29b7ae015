//! The client's side of a batch of downloads (`DownloadMany`; see
//! `server::downloads`): the server offers the files as transfers whose id
//! is their place in the request, several at once; each is received into
//! temporary file `id` and persisted to `FileRef::Local`, whose place the
//! command's world knows by that handle. The answer, `SentAll`, comes once
//! every transfer has ended.

use crate::file_attrs::FileAttrs;
use crate::io::{ConnId, FileOp, FileRef};
use crate::outbox::Outbox;
use crate::server::messages::{Landed, OpError, SessionMsg};
use crate::time::Timestamp;
use crate::transfer::{Receiver, ReceiverOutput, TransferError, TransferMsg};
use std::collections::BTreeMap;
use std::time::Duration;

use super::ClientEvent;

pub(super) struct Incoming {
    /// How many files were asked for: ids are below.
    files: u64,
    give_up: Duration,
    /// Set the files' attributes (`ferry get` without `--no-preserve`).
    preserve: bool,
    receivers: BTreeMap<u64, Receiver>,
    /// The attributes that followed a file's offer.
    attrs: BTreeMap<u64, FileAttrs>,
    /// Files this side could not take (a write that failed), with why:
    /// said better here than by the server, which hears "cancelled".
    failed: BTreeMap<u64, TransferError>,
    /// Files this side received whole, checked and persisted (their DONE
    /// ACK sent), with their size and digest: received, whatever the
    /// server says of them. (Its sender may have given up waiting for the
    /// DONE ACK while this side's disk was slow to persist: the file is in
    /// place all the same, as a single download's is once `Downloaded`.)
    landed: BTreeMap<u64, (u64, [u8; 32])>,
}

impl Incoming {
    pub(super) fn new(files: usize, give_up: Duration, preserve: bool) -> Self {
        Incoming {
            files: files as u64,
            give_up,
            preserve,
            receivers: BTreeMap::new(),
            attrs: BTreeMap::new(),
            failed: BTreeMap::new(),
            landed: BTreeMap::new(),
        }
    }

    pub(super) fn on_msg(&mut self, now: Timestamp, m: TransferMsg) {
        match m {
            // An offer of a file not asked for, or one already offered,
            // is ignored: its sender gives up in time.
            TransferMsg::Offer { id, name, size }
                if id < self.files && !self.receivers.contains_key(&id) =>
            {
                let mut r = Receiver::new(now, id, name, size, self.give_up);
                r.accept(now);
                self.receivers.insert(id, r);
            }
            m => {
                if let Some(r) = self.receivers.get_mut(&m.id()) {
                    r.on_msg(now, m);
                }
            }
        }
    }

    /// The attributes of file `id`, which follow its offer.
    pub(super) fn set_attrs(&mut self, id: u64, attrs: FileAttrs) {
        if self.receivers.contains_key(&id) {
            self.attrs.insert(id, attrs.sanitized());
        }
    }

    pub(super) fn persisted(&mut self, temp: u64) {
        if let Some(r) = self.receivers.get_mut(&temp) {
            r.committed();
        }
    }

    pub(super) fn file_failed(&mut self, temp: u64, reason: TransferError) {
        if let Some(r) = self.receivers.get_mut(&temp) {
            r.fail(reason);
        }
    }

    pub(super) fn handle_timeout(&mut self, now: Timestamp) {
        for r in self.receivers.values_mut() {
            r.handle_timeout(now);
        }
    }

    pub(super) fn poll_timeout(&self) -> Option<Timestamp> {
        self.receivers
            .values()
            .filter_map(Receiver::poll_timeout)
            .min()
    }

    /// Carries out what the receivers ask for.
    pub(super) fn pump(&mut self, conn: ConnId, out: &mut Outbox<ClientEvent>) {
        let mut ended = Vec::new();
        for (id, r) in self.receivers.iter_mut() {
            let (temp, total) = (*id, r.size());
            while let Some(o) = r.poll_output() {
                match o {
                    ReceiverOutput::Send(m) => out.send(conn, &SessionMsg::Transfer(m)),
                    ReceiverOutput::Write { offset, data } => {
                        out.file(FileOp::Write { temp, offset, data })
                    }
                    ReceiverOutput::Commit { .. } => {
                        if let Some(attrs) = self.attrs.get(&temp).filter(|_| self.preserve) {
                            out.file(FileOp::SetAttrs {
                                temp,
                                attrs: *attrs,
                            });
                        }
                        out.file(FileOp::Persist {
                            temp,
                            to: FileRef::Local,
                        })
                    }
                    ReceiverOutput::Discard => out.file(FileOp::Discard { temp }),
                    ReceiverOutput::Progress { bytes } => out.event(ClientEvent::FileProgress {
                        file: temp,
                        bytes,
                        total,
                    }),
                    // A batch's files are received anew: nothing kept to
                    // read back or resume from.
                    ReceiverOutput::Read { .. }
                    | ReceiverOutput::Resumed { .. }
                    | ReceiverOutput::StartOver { .. } => {}
                    ReceiverOutput::Finished(Ok(d)) => ended.push((temp, total, Ok(d))),
                    ReceiverOutput::Finished(Err(e)) => ended.push((temp, total, Err(e))),
                }
            }
        }
        for (id, size, result) in ended {
            self.receivers.remove(&id);
            self.attrs.remove(&id);
            match result {
                Ok(digest) => {
                    self.landed.insert(id, (size, digest));
                }
                Err(e) => {
                    self.failed.insert(id, e);
                }
            }
        }
    }

    /// The server's answer, with what went wrong on this side told as this
    /// side knows it, and the files this side has in place told received.
    pub(super) fn outcomes(&self, mut outcomes: Vec<Landed>) -> Vec<Landed> {
        for (id, (size, digest)) in &self.landed {
            if let Some(o) = outcomes.get_mut(*id as usize) {
                *o = Landed::Stored {
                    size: *size,
                    digest: *digest,
                };
            }
        }
        for (id, e) in &self.failed {
            if let Some(o) = outcomes.get_mut(*id as usize) {
                if !matches!(e, TransferError::Cancelled) {
                    *o = Landed::Failed(OpError::Transfer(e.clone()));
                }
            }
        }
        outcomes
    }
}
