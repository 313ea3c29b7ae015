//! The client's side of a batch of uploads (`UploadMany`; see
//! `server::uploads`): once the server is ready, the files are offered in
//! order, several at once, each a transfer of the one engine whose id is
//! its place in the batch and whose reads go through handle = id. Small
//! files go back to back without waiting for one another; a large one
//! takes the room it needs ([`BYTES_IN_FLIGHT`]) and the window as a
//! single upload does.

use crate::file_attrs::FileAttrs;
use crate::io::{ConnId, FileOp, FileRef};
use crate::outbox::Outbox;
use crate::server::messages::{Landed, OpError, SessionMsg};
use crate::time::Timestamp;
use crate::transfer::{Sender, SenderConfig, SenderOutput, TransferError, TransferMsg};
use std::collections::BTreeMap;

use super::ClientEvent;

/// Files offered and not yet ended, at most.
pub const FILES_IN_FLIGHT: usize = 64;
/// Bytes of the files in flight not yet acknowledged, at most (but for
/// the first file, however large).
pub const BYTES_IN_FLIGHT: u64 = 8 << 20;

pub(super) struct Outgoing {
    files: Vec<(String, u64)>,
    /// `attrs[i]`: what follows file `i`'s offer, if anything.
    attrs: Vec<Option<FileAttrs>>,
    cfg: SenderConfig,
    /// The server said it is ready for the files.
    started: bool,
    /// The next file to offer.
    next: usize,
    senders: BTreeMap<u64, Sender>,
    /// Files this side could not send, with why (a file that could not be
    /// read): said better here than by the server, which hears "cancelled".
    failed: BTreeMap<u64, TransferError>,
}

impl Outgoing {
    pub(super) fn new(
        files: Vec<(String, u64)>,
        attrs: Vec<Option<FileAttrs>>,
        cfg: SenderConfig,
    ) -> Self {
        Outgoing {
            files,
            attrs,
            cfg,
            started: false,
            next: 0,
            senders: BTreeMap::new(),
            failed: BTreeMap::new(),
        }
    }

    /// The server is ready: the files may go.
    pub(super) fn start(&mut self, now: Timestamp) {
        self.started = true;
        self.fill(now);
    }

    /// Offers files while there is room.
    fn fill(&mut self, now: Timestamp) {
        if !self.started {
            return;
        }
        while let Some((name, size)) = self.files.get(self.next) {
            let in_flight: u64 = (self.senders.values())
                .map(|s| s.size().saturating_sub(s.acked_bytes()))
                .sum();
            let room = self.senders.is_empty()
                || (self.senders.len() < FILES_IN_FLIGHT && in_flight + size <= BYTES_IN_FLIGHT);
            if !room {
                return;
            }
            let id = self.next as u64;
            let sender = Sender::new(now, id, name.clone(), *size, self.cfg.clone());
            self.senders.insert(id, sender);
            self.next += 1;
        }
    }

    pub(super) fn on_msg(&mut self, now: Timestamp, m: TransferMsg) {
        if let Some(s) = self.senders.get_mut(&m.id()) {
            s.on_msg(now, m);
        }
    }

    pub(super) fn on_read(&mut self, handle: u64, offset: u64, data: &[u8]) {
        if let Some(s) = self.senders.get_mut(&handle) {
            s.on_read(offset, data);
        }
    }

    pub(super) fn on_read_error(&mut self, handle: u64, error: String) {
        if let Some(s) = self.senders.get_mut(&handle) {
            s.on_read_error(error);
        }
    }

    pub(super) fn handle_timeout(&mut self, now: Timestamp) {
        for s in self.senders.values_mut() {
            s.handle_timeout(now);
        }
    }

    pub(super) fn poll_timeout(&self) -> Option<Timestamp> {
        self.senders.values().filter_map(Sender::poll_timeout).min()
    }

    /// Carries out what the senders ask for; offers more as files end.
    pub(super) fn pump(&mut self, now: Timestamp, conn: ConnId, out: &mut Outbox<ClientEvent>) {
        loop {
            let mut ended = Vec::new();
            for (id, s) in self.senders.iter_mut() {
                let total = s.size();
                while let Some(o) = s.poll_output() {
                    match o {
                        SenderOutput::Send(m) => {
                            let offer = matches!(m, TransferMsg::Offer { .. });
                            out.send(conn, &SessionMsg::Transfer(m));
                            let attrs = self.attrs.get(*id as usize).copied().flatten();
                            if let Some(attrs) = attrs.filter(|_| offer) {
                                out.send(conn, &SessionMsg::Attrs { id: *id, attrs });
                            }
                        }
                        SenderOutput::Read { offset, len } => out.file(FileOp::Read {
                            handle: *id,
                            file: FileRef::Local,
                            offset,
                            len,
                        }),
                        SenderOutput::Progress { bytes } => out.event(ClientEvent::FileProgress {
                            file: *id,
                            bytes,
                            total,
                        }),
                        // A batch's files are not resumed (the server keeps
                        // no partial upload of a batch).
                        SenderOutput::Resumed { .. } | SenderOutput::StartedOver { .. } => {}
                        // Success is the server's, after replication.
                        SenderOutput::Finished(Ok(_)) => ended.push((*id, None)),
                        SenderOutput::Finished(Err(e)) => ended.push((*id, Some(e))),
                    }
                }
            }
            if ended.is_empty() {
                return;
            }
            for (id, e) in ended {
                self.senders.remove(&id);
                if let Some(e) = e {
                    self.failed.insert(id, e);
                }
            }
            self.fill(now);
        }
    }

    /// The server's answer, with what went wrong on this side told as this
    /// side knows it: where the server saw the file's transfer fail too.
    /// Where it went further (the file arrived whole, its entry was
    /// applied and refused it: the name taken meanwhile, say, while this
    /// side gave up waiting for its DONE ACK), the server's word is what
    /// became of the file.
    pub(super) fn outcomes(&self, mut outcomes: Vec<Landed>) -> Vec<Landed> {
        for (id, e) in &self.failed {
            if let Some(o) = outcomes.get_mut(*id as usize) {
                let in_transfer = matches!(o, Landed::Failed(OpError::Transfer(_)));
                if in_transfer && !matches!(e, TransferError::Cancelled) {
                    *o = Landed::Failed(OpError::Transfer(e.clone()));
                }
            }
        }
        outcomes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seed 245 of the files simulation: this side gave up on a file
    /// whose DONE ACK the server held back (its copies were cut off),
    /// but the server had it whole, ordered it, and the entry found the
    /// name taken. The user hears that, and a checker of the log finds
    /// the answer agrees with the entry.
    #[test]
    fn the_servers_word_on_a_file_it_ordered_stands_over_a_failure_here() {
        let mut batch = Outgoing::new(
            vec![("a".into(), 1), ("b".into(), 1), ("c".into(), 1)],
            vec![None; 3],
            SenderConfig::default(),
        );
        batch.failed.insert(1, TransferError::Timeout);
        batch.failed.insert(2, TransferError::Timeout);
        let cancelled = Landed::Failed(OpError::Transfer(TransferError::Cancelled));
        let server = vec![
            Landed::Stored {
                size: 1,
                digest: [0; 32],
            },
            Landed::Failed(OpError::FileExists),
            cancelled,
        ];
        let got = batch.outcomes(server);
        assert_eq!(got[1], Landed::Failed(OpError::FileExists));
        // Where the server saw the transfer fail, this side says better.
        assert_eq!(
            got[2],
            Landed::Failed(OpError::Transfer(TransferError::Timeout))
        );
    }
}
