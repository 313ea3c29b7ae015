//! The receiving side of one file transfer.
//!
//! Created when an OFFER arrives; its owner decides whether and where to
//! store the file and calls [`Receiver::accept`] or [`Receiver::reject`].
//! Chunks are taken strictly in order: the next expected chunk is
//! acknowledged and kept, anything else (a duplicate, or a chunk past a gap) is answered
//! with the current cumulative ack so the sender repairs it. Kept chunks are
//! hashed and handed out to be written a block ([`BLOCK_BYTES`]) at a time:
//! BLAKE3 is a third faster over large blocks than over 4 KiB pieces, and a
//! stop-and-wait transfer would otherwise hash and write per chunk. On DONE the
//! digest is compared; only a complete file with a matching digest is
//! committed (the owner renames its temporary file into place and calls
//! [`Receiver::committed`]), and only then is DONE acknowledged. A receiver
//! that hears nothing for `idle_timeout` gives up and discards what it got.
//!
//! **Resume.** An owner that kept the first bytes of this file from an
//! interrupted transfer (in the temporary file it writes to) calls
//! [`Receiver::resume`] instead of [`Receiver::accept`]. The receiver reads
//! those bytes back ([`ReceiverOutput::Read`], a block at a time) and hashes
//! them: the hash of what the disk holds now, not of what arrived then, so
//! a prefix damaged meanwhile is caught by the sender's comparison (it
//! starts over) and could not pass DONE's digest either. Then it says
//! RESUME(from, prefix) and takes chunks from `from` on, or, told RESTART,
//! everything from the start ([`ReceiverOutput::StartOver`]). A read that
//! fails or comes back short starts over as well. While it hashes, a
//! repeated OFFER is answered with ACK(0): wait.

use super::messages::{chunk_count, resume_point, TransferError, TransferMsg, BLOCK_BYTES, CHUNK};
use super::sender::kind;
use crate::time::Timestamp;
use std::collections::VecDeque;
use std::time::Duration;

#[derive(Debug, PartialEq, Eq)]
pub enum ReceiverOutput {
    Send(TransferMsg),
    /// Write `data` at `offset` of the temporary file.
    Write {
        offset: u64,
        data: Vec<u8>,
    },
    /// Content complete and verified: make the file durable and visible,
    /// then call [`Receiver::committed`].
    Commit {
        digest: [u8; 32],
    },
    /// Throw the temporary file away.
    Discard,
    Progress {
        bytes: u64,
    },
    /// Read `len` bytes at `offset` of the temporary file (the prefix kept
    /// to resume) and hand them to [`Receiver::on_read`].
    Read {
        offset: u64,
        len: usize,
    },
    /// The sender took the RESUME: the first chunk past the kept `from`
    /// bytes arrived.
    Resumed {
        from: u64,
    },
    /// The kept prefix is not used (it did not read back whole, or the
    /// sender's first bytes differ): the file is received from its first
    /// byte, written over whatever the temporary file holds. `from`: the
    /// bytes that were to be resumed from.
    StartOver {
        from: u64,
    },
    Finished(Result<[u8; 32], TransferError>),
}

#[derive(Debug, PartialEq, Eq)]
enum Stage {
    /// Waiting for the owner's decision.
    Offered,
    /// Reading back and hashing the kept prefix, before RESUME.
    Rehashing,
    Receiving,
    /// Commit asked for; waiting for the owner.
    Committing,
    Done,
    Failed,
}

pub struct Receiver {
    id: u64,
    name: String,
    size: u64,
    chunks: u64,
    idle_timeout: Duration,
    stage: Stage,
    expected: u64,
    /// Boxed: its state is 1.9 KiB, and transfers live in maps whose
    /// inserts and removals would move it.
    hasher: Box<blake3::Hasher>,
    /// Chunks taken, neither hashed nor written yet, from `pending_at`:
    /// less than a block, but for the last frame taken.
    pending: Vec<u8>,
    pending_at: u64,
    /// Bytes handed out to be written (hashed first), from the start.
    written: u64,
    /// The kept prefix: its length, and how far it has been read back.
    rehash: Option<Rehash>,
    /// RESUME said and not yet taken or refused: where, and its hash.
    resumed: Option<(u64, [u8; 32])>,
    digest: Option<[u8; 32]>,
    deadline: Timestamp,
    out: VecDeque<ReceiverOutput>,
}

/// The kept prefix being read back.
struct Rehash {
    len: u64,
    /// Bytes asked for so far (they come back in order).
    asked: u64,
}

/// Reads of the kept prefix in flight at most.
const REHASH_AHEAD: u64 = 2;

impl Receiver {
    /// A receiver for an OFFER just received.
    pub fn new(now: Timestamp, id: u64, name: String, size: u64, idle_timeout: Duration) -> Self {
        Receiver {
            id,
            name,
            size,
            chunks: chunk_count(size),
            idle_timeout,
            stage: Stage::Offered,
            expected: 0,
            hasher: Box::default(),
            pending: Vec::new(),
            pending_at: 0,
            written: 0,
            rehash: None,
            resumed: None,
            digest: None,
            deadline: now + idle_timeout,
            out: VecDeque::new(),
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Chunks received so far, in order.
    pub fn received(&self) -> u64 {
        self.expected
    }

    /// Bytes from the start that were hashed and handed out to be written
    /// (or, while a kept prefix is read back, that prefix, which the file
    /// still holds): what an owner may keep of an interrupted transfer
    /// (see [`super::messages::resume_point`]).
    pub fn written(&self) -> u64 {
        match &self.rehash {
            Some(r) => r.len,
            None => self.written,
        }
    }

    /// Still taking content (not failed, not complete): an owner may keep
    /// what was written if the transfer is cut off now.
    pub fn is_receiving(&self) -> bool {
        self.stage == Stage::Receiving
    }

    /// Reading back a kept prefix (see [`Receiver::resume`]).
    pub fn is_rehashing(&self) -> bool {
        self.stage == Stage::Rehashing
    }

    pub fn is_finished(&self) -> bool {
        matches!(self.stage, Stage::Done | Stage::Failed)
    }

    pub fn poll_output(&mut self) -> Option<ReceiverOutput> {
        self.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Timestamp> {
        match self.stage {
            Stage::Receiving | Stage::Offered | Stage::Rehashing => Some(self.deadline),
            _ => None,
        }
    }

    pub fn accept(&mut self, now: Timestamp) {
        if self.stage != Stage::Offered {
            return;
        }
        self.stage = Stage::Receiving;
        self.deadline = now + self.idle_timeout;
        self.send(TransferMsg::Accept { id: self.id });
        if self.chunks == 0 {
            // Nothing to wait for but DONE.
            self.send(TransferMsg::Ack {
                id: self.id,
                upto: 0,
            });
        }
    }

    /// Like [`Receiver::accept`], but the owner's temporary file holds the
    /// first `held` bytes of the offered file already (kept from an
    /// interrupted transfer): they are read back and hashed, then offered
    /// to the sender with RESUME. With nothing to resume (see
    /// [`super::messages::resume_point`]) it is an accept, after a
    /// [`ReceiverOutput::StartOver`].
    pub fn resume(&mut self, now: Timestamp, held: u64) {
        if self.stage != Stage::Offered {
            return;
        }
        let len = resume_point(held, self.size);
        if len == 0 {
            self.out.push_back(ReceiverOutput::StartOver { from: 0 });
            return self.accept(now);
        }
        self.stage = Stage::Rehashing;
        self.deadline = now + self.idle_timeout;
        self.rehash = Some(Rehash { len, asked: 0 });
        self.read_prefix();
    }

    fn read_prefix(&mut self) {
        let Some(r) = self.rehash.as_mut() else {
            return;
        };
        while r.asked < r.len && r.asked < self.written + REHASH_AHEAD * BLOCK_BYTES {
            self.out.push_back(ReceiverOutput::Read {
                offset: r.asked,
                len: BLOCK_BYTES as usize,
            });
            r.asked += BLOCK_BYTES;
        }
    }

    /// The bytes of a [`ReceiverOutput::Read`] (answered in the order
    /// asked).
    pub fn on_read(&mut self, offset: u64, data: &[u8]) {
        if self.stage != Stage::Rehashing {
            return;
        }
        // Short: the file holds less than the owner thought.
        if offset != self.written || data.len() as u64 != BLOCK_BYTES {
            return self.start_over();
        }
        self.hasher.update(data);
        self.written += BLOCK_BYTES;
        let len = self.rehash.as_ref().map_or(0, |r| r.len);
        if self.written < len {
            return self.read_prefix();
        }
        self.rehash = None;
        let prefix = *self.hasher.finalize().as_bytes();
        self.stage = Stage::Receiving;
        self.expected = len / CHUNK as u64;
        self.pending_at = len;
        self.resumed = Some((len, prefix));
        let id = self.id;
        self.send(TransferMsg::Resume {
            id,
            from: len,
            prefix,
        });
    }

    /// A read of the kept prefix failed: it is not used.
    pub fn on_read_error(&mut self) {
        if self.stage == Stage::Rehashing {
            self.start_over();
        }
    }

    /// Receives the file from its first byte after all (see
    /// [`ReceiverOutput::StartOver`]), and says so to the sender.
    fn start_over(&mut self) {
        let from = match (&self.resumed, &self.rehash) {
            (Some((from, _)), _) => *from,
            (None, Some(r)) => r.len,
            (None, None) => 0,
        };
        self.rehash = None;
        self.resumed = None;
        self.hasher.reset();
        self.expected = 0;
        self.written = 0;
        self.pending.clear();
        self.pending_at = 0;
        self.stage = Stage::Receiving;
        self.out.push_back(ReceiverOutput::StartOver { from });
        self.send(TransferMsg::Accept { id: self.id });
    }

    pub fn reject(&mut self, reason: TransferError) {
        if self.stage != Stage::Offered {
            return;
        }
        self.stage = Stage::Failed;
        let id = self.id;
        self.send(TransferMsg::Reject {
            id,
            reason: reason.clone(),
        });
        self.out.push_back(ReceiverOutput::Finished(Err(reason)));
    }

    fn send(&mut self, msg: TransferMsg) {
        self.out.push_back(ReceiverOutput::Send(msg));
    }

    pub fn on_msg(&mut self, now: Timestamp, msg: TransferMsg) {
        if matches!(
            self.stage,
            Stage::Receiving | Stage::Offered | Stage::Rehashing
        ) {
            self.deadline = now + self.idle_timeout;
        }
        match (&self.stage, msg) {
            // Still hashing the kept prefix: wait.
            (Stage::Rehashing, TransferMsg::Offer { .. }) => {
                let id = self.id;
                self.send(TransferMsg::Ack { id, upto: 0 });
            }
            (Stage::Receiving, TransferMsg::Offer { .. }) if self.resumed.is_some() => {
                if let Some((from, prefix)) = self.resumed {
                    let id = self.id;
                    self.send(TransferMsg::Resume { id, from, prefix });
                }
            }
            // The sender's first bytes are not the kept ones. Only before
            // anything past them was taken: a sender that resumed never
            // restarts.
            (Stage::Receiving, TransferMsg::Restart { .. }) => match self.resumed {
                Some((from, _)) if self.expected * CHUNK as u64 == from => self.start_over(),
                Some(_) => {}
                // A repeated RESTART (our ACCEPT lost, or late): a sender
                // sending already ignores the ACCEPT.
                None => self.send(TransferMsg::Accept { id: self.id }),
            },
            (Stage::Receiving, TransferMsg::Chunks { seq, data, .. }) => self.on_chunks(seq, data),
            (Stage::Receiving, TransferMsg::Done { digest, .. }) => {
                if self.expected != self.chunks {
                    return self.fail(TransferError::Protocol {
                        detail: format!("DONE after {} of {} chunks", self.expected, self.chunks),
                    });
                }
                let got = *self.hasher.finalize().as_bytes();
                self.hasher.reset();
                // Constant time, though nothing secret rides on it.
                if blake3::Hash::from(got) != blake3::Hash::from(digest) {
                    return self.fail(TransferError::DigestMismatch);
                }
                self.digest = Some(got);
                self.stage = Stage::Committing;
                self.out.push_back(ReceiverOutput::Commit { digest: got });
            }
            // A repeated OFFER (the sender did not hear our answer).
            (Stage::Receiving, TransferMsg::Offer { .. }) => {
                self.send(TransferMsg::Accept { id: self.id });
            }
            (Stage::Offered, TransferMsg::Offer { .. }) => {}
            // A repeated DONE: our DONE ACK was lost, or is being made.
            (Stage::Done, TransferMsg::Done { digest, .. }) if Some(digest) == self.digest => {
                self.send(TransferMsg::DoneAck { id: self.id });
            }
            (Stage::Committing, TransferMsg::Done { .. }) => {}
            (Stage::Done | Stage::Failed, _) => {}
            (_, TransferMsg::Abort { reason, .. }) => {
                self.stage = Stage::Failed;
                self.out.push_back(ReceiverOutput::Discard);
                self.out.push_back(ReceiverOutput::Finished(Err(reason)));
            }
            (Stage::Committing, TransferMsg::Chunks { .. }) => {}
            (_, other) => self.fail(TransferError::Protocol {
                detail: format!("unexpected {}", kind(&other)),
            }),
        }
    }

    fn on_chunks(&mut self, seq: u64, data: Vec<u8>) {
        let id = self.id;
        if seq != self.expected {
            // A duplicate, or chunks past a gap: say where we are.
            let upto = self.expected;
            return self.send(TransferMsg::Ack { id, upto });
        }
        let offset = seq * CHUNK as u64;
        let end = offset + data.len() as u64;
        let whole = data.len().is_multiple_of(CHUNK) || end == self.size;
        if data.is_empty() || end > self.size || !whole {
            return self.fail(TransferError::Protocol {
                detail: format!("chunks at {seq} do not fit a file of {} bytes", self.size),
            });
        }
        if let Some((from, _)) = self.resumed.take() {
            self.out.push_back(ReceiverOutput::Resumed { from });
        }
        self.expected = seq + chunk_count(data.len() as u64);
        let upto = self.expected;
        // The ack first: it is what the sender waits for.
        self.send(TransferMsg::Ack { id, upto });
        if self.pending.is_empty() {
            self.pending_at = offset;
            if data.len() as u64 >= BLOCK_BYTES {
                self.pending = data;
            } else {
                self.pending = Vec::with_capacity(BLOCK_BYTES as usize);
                self.pending.extend_from_slice(&data);
            }
        } else {
            self.pending.extend_from_slice(&data);
        }
        // A frame from another sender may straddle blocks: hold no more
        // than about a block anyway.
        let full = self.pending.len() as u64 >= BLOCK_BYTES;
        if full || end.is_multiple_of(BLOCK_BYTES) || end == self.size {
            self.write_pending();
        }
        self.out.push_back(ReceiverOutput::Progress { bytes: end });
    }

    fn write_pending(&mut self) {
        let data = std::mem::take(&mut self.pending);
        self.hasher.update(&data);
        self.written = self.pending_at + data.len() as u64;
        self.out.push_back(ReceiverOutput::Write {
            offset: self.pending_at,
            data,
        });
    }

    /// The owner made the file durable and visible.
    pub fn committed(&mut self) {
        if self.stage != Stage::Committing {
            return;
        }
        self.stage = Stage::Done;
        self.send(TransferMsg::DoneAck { id: self.id });
        let d = self.digest.unwrap_or_default();
        self.out.push_back(ReceiverOutput::Finished(Ok(d)));
    }

    pub fn handle_timeout(&mut self, now: Timestamp) {
        let waiting = matches!(
            self.stage,
            Stage::Receiving | Stage::Offered | Stage::Rehashing
        );
        if waiting && now >= self.deadline {
            self.fail(TransferError::Timeout);
        }
    }

    /// Gives up (a write failed, the disk filled, a timeout…): the sender is
    /// told, the temporary file discarded.
    pub fn fail(&mut self, reason: TransferError) {
        if matches!(self.stage, Stage::Done | Stage::Failed) {
            return;
        }
        let was_offered = self.stage == Stage::Offered;
        self.stage = Stage::Failed;
        let id = self.id;
        self.send(TransferMsg::Abort {
            id,
            reason: reason.clone(),
        });
        if !was_offered {
            self.out.push_back(ReceiverOutput::Discard);
        }
        self.out.push_back(ReceiverOutput::Finished(Err(reason)));
    }
}
