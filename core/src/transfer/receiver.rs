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

use super::messages::{chunk_count, TransferError, TransferMsg, BLOCK_BYTES, CHUNK};
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
    Finished(Result<[u8; 32], TransferError>),
}

#[derive(Debug, PartialEq, Eq)]
enum Stage {
    /// Waiting for the owner's decision.
    Offered,
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
    hasher: blake3::Hasher,
    /// Chunks taken, neither hashed nor written yet, from `pending_at`:
    /// less than a block, but for the last frame taken.
    pending: Vec<u8>,
    pending_at: u64,
    digest: Option<[u8; 32]>,
    deadline: Timestamp,
    out: VecDeque<ReceiverOutput>,
}

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
            hasher: blake3::Hasher::new(),
            pending: Vec::new(),
            pending_at: 0,
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

    pub fn is_finished(&self) -> bool {
        matches!(self.stage, Stage::Done | Stage::Failed)
    }

    pub fn poll_output(&mut self) -> Option<ReceiverOutput> {
        self.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Timestamp> {
        match self.stage {
            Stage::Receiving | Stage::Offered => Some(self.deadline),
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
        if matches!(self.stage, Stage::Receiving | Stage::Offered) {
            self.deadline = now + self.idle_timeout;
        }
        match (&self.stage, msg) {
            (Stage::Receiving, TransferMsg::Chunks { seq, data, .. }) => self.on_chunks(seq, data),
            (Stage::Receiving, TransferMsg::Done { digest, .. }) => {
                if self.expected != self.chunks {
                    return self.fail(TransferError::Protocol {
                        detail: format!("DONE after {} of {} chunks", self.expected, self.chunks),
                    });
                }
                let got = std::mem::replace(&mut self.hasher, blake3::Hasher::new());
                let got = *got.finalize().as_bytes();
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
        if matches!(self.stage, Stage::Receiving | Stage::Offered) && now >= self.deadline {
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
