//! The sending side of one file transfer.
//!
//! OFFER(name, size) → ACCEPT → CHUNKS… each acknowledged → DONE(digest) →
//! DONE ACK. Up to `window` chunks are in flight; `window = 1` is the seeds'
//! stop-and-wait. Acks are cumulative, so a lost ack is repaired by the next
//! one; when acks stop arriving for `rto`, everything unacknowledged is sent
//! again from the first missing chunk (go-back-N), and after `give_up` with
//! no progress the transfer fails as timed out.
//!
//! **Backoff.** Each resend without progress since the last doubles the wait
//! for the next (`rto`, 2, 4, then 8 × `rto` at most), as TCP does (RFC
//! 6298 §5.5); progress resets it. A node whose disk is slow can spend
//! longer than `rto` reading the blocks of one window, and its driver fires
//! due timers before it takes the acks that arrived meanwhile: with a fixed
//! timer every resend re-read the window and the acks were never taken.
//!
//! The sender never touches the file: it asks for `Read`s and is handed the
//! bytes with [`Sender::on_read`], so memory is bounded, not by the file.
//!
//! **Blocks.** Reads are of whole aligned blocks of [`BLOCK_CHUNKS`] chunks
//! (128 KiB), whatever the window, and frames are carved out of the blocks
//! held. Two reasons, both measured at W = 1: BLAKE3 runs its SIMD lanes
//! over a large block about a third faster than over 4 KiB pieces, and the
//! sender reads one block ahead of the one it is sending from, so that the
//! read and the hash of the next block are done while an ack is on its way
//! rather than after it came. The digest is computed as each block is first
//! read, in order; a block read again to be resent is not hashed again. At
//! most [`BLOCKS_AHEAD`] blocks are held or being read.
//!
//! **Known content.** A sender made [`Sender::with_digest`] (a server
//! sending a blob, which is named by its digest) sends that digest with
//! DONE and hashes nothing. The receiver's check then covers the disk as
//! well as the link: a blob that rotted on the server's disk fails the
//! download instead of arriving with a digest computed over the damage.
//! It also takes a hash of the whole file off the server for every
//! download.
//!
//! **Resume.** A receiver that kept the first bytes of this file from an
//! interrupted transfer answers the offer with RESUME(from, prefix) instead
//! of ACCEPT. The sender then reads and hashes its own first `from` bytes
//! (the hash it needs for DONE anyway, so nothing is read twice on the way
//! to DONE): if they hash to `prefix`, it sends from chunk `from / CHUNK`
//! on; if not (the file changed since, or the receiver's copy did), it says
//! RESTART and, once ACCEPTed, sends the file from its start. While it
//! hashes, it repeats its OFFER as it would unanswered, which the receiver
//! answers with RESUME again: both ends see the other alive however long
//! the prefix takes. (A receiver still hashing its own copy of the prefix
//! answers a repeated OFFER with ACK(0): wait.)

use super::messages::{
    chunk_count, TransferError, TransferMsg, BLOCK_BYTES, BLOCK_CHUNKS, CHUNK, CHUNKS_PER_FRAME,
};
use crate::time::Timestamp;
use std::collections::VecDeque;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct SenderConfig {
    /// Chunks in flight at most.
    pub window: u64,
    /// Silence after which unacknowledged chunks are sent again.
    pub rto: Duration,
    /// Silence after which the transfer fails.
    pub give_up: Duration,
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            window: DEFAULT_WINDOW,
            rto: Duration::from_secs(1),
            give_up: Duration::from_secs(10),
        }
    }
}

/// Chunks in flight by default; chosen by `cargo bench` (see README).
pub const DEFAULT_WINDOW: u64 = 256;

/// Blocks held or being read at once: the one frames are carved from and
/// the next one.
pub const BLOCKS_AHEAD: u64 = 2;

/// A block of the file, read and held to carve frames from.
struct Block {
    /// Index of the block (its offset over [`BLOCK_BYTES`]).
    index: u64,
    data: Vec<u8>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SenderOutput {
    Send(TransferMsg),
    /// Read `len` bytes at `offset` and hand them to [`Sender::on_read`].
    Read {
        offset: u64,
        len: usize,
    },
    /// Acknowledged chunks so far (for a progress bar).
    Progress {
        bytes: u64,
    },
    /// The receiver held the first `from` bytes, and they are this file's:
    /// the transfer goes on from there.
    Resumed {
        from: u64,
    },
    /// The receiver held `from` bytes that are not this file's: the
    /// transfer starts over from the first byte.
    StartedOver {
        from: u64,
    },
    Finished(Result<[u8; 32], TransferError>),
}

#[derive(Debug, PartialEq, Eq)]
enum Stage {
    Offered,
    /// Hashing the first bytes, to compare with a receiver's RESUME.
    Verifying,
    /// RESTART said; waiting for ACCEPT.
    Restarting,
    Sending,
    AwaitDoneAck,
    Finished,
}

pub struct Sender {
    id: u64,
    size: u64,
    chunks: u64,
    cfg: SenderConfig,
    stage: Stage,
    /// Chunks before this one are acknowledged.
    acked: u64,
    /// The next chunk to send.
    next: u64,
    /// Blocks read and held, in order.
    held: VecDeque<Block>,
    /// Blocks asked for and not yet read, in the order asked (reads are
    /// answered in that order).
    reading: VecDeque<u64>,
    /// Bytes hashed so far; the hash only ever moves forward.
    hashed: u64,
    /// The digest is known (see [`Sender::with_digest`]): nothing is hashed.
    known: bool,
    /// Boxed: its state is 1.9 KiB, and transfers live in maps whose
    /// inserts and removals would move it.
    hasher: Box<blake3::Hasher>,
    digest: Option<[u8; 32]>,
    /// When to resend, and when to give up, absent progress.
    resend_at: Timestamp,
    /// Resends since the last progress (the backoff's exponent).
    resends: u32,
    give_up_at: Timestamp,
    /// The receiver's RESUME being checked: where, and its prefix's hash.
    verify: Option<(u64, [u8; 32])>,
    /// The time of the last input that told it (reads do not).
    last_now: Timestamp,
    out: VecDeque<SenderOutput>,
}

impl Sender {
    pub fn new(now: Timestamp, id: u64, name: String, size: u64, cfg: SenderConfig) -> Self {
        let mut s = Sender {
            id,
            size,
            chunks: chunk_count(size),
            stage: Stage::Offered,
            acked: 0,
            next: 0,
            held: VecDeque::new(),
            reading: VecDeque::new(),
            hashed: 0,
            known: false,
            hasher: Box::default(),
            digest: None,
            resend_at: now + cfg.rto,
            resends: 0,
            give_up_at: now + cfg.give_up,
            verify: None,
            last_now: now,
            cfg,
            out: VecDeque::new(),
        };
        s.out
            .push_back(SenderOutput::Send(TransferMsg::Offer { id, name, size }));
        s
    }

    /// A sender of content whose digest is `digest`: it sends that with
    /// DONE instead of hashing what it reads, so the receiver's check also
    /// catches content that changed on the sender's disk.
    pub fn with_digest(mut self, digest: [u8; 32]) -> Self {
        self.known = true;
        self.digest = Some(digest);
        self
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn is_finished(&self) -> bool {
        self.stage == Stage::Finished
    }

    /// Chunks acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// The file's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes acknowledged so far.
    pub fn acked_bytes(&self) -> u64 {
        (self.acked * CHUNK as u64).min(self.size)
    }

    pub fn poll_output(&mut self) -> Option<SenderOutput> {
        self.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Timestamp> {
        match self.stage {
            Stage::Finished => None,
            _ => Some(self.resend_at.min(self.give_up_at)),
        }
    }

    fn progressed(&mut self, now: Timestamp) {
        self.last_now = self.last_now.max(now);
        self.resends = 0;
        self.resend_at = now + self.cfg.rto;
        self.give_up_at = now + self.cfg.give_up;
    }

    pub fn on_msg(&mut self, now: Timestamp, msg: TransferMsg) {
        self.last_now = self.last_now.max(now);
        match (&self.stage, msg) {
            (Stage::Offered | Stage::Restarting, TransferMsg::Accept { .. }) => {
                self.stage = Stage::Sending;
                self.progressed(now);
                self.fill_window();
            }
            // The receiver is still hashing what it kept: wait.
            (Stage::Offered, TransferMsg::Ack { upto: 0, .. }) => self.progressed(now),
            (Stage::Offered, TransferMsg::Resume { from, prefix, .. }) => {
                self.progressed(now);
                let resumable = from > 0 && from < self.size && from.is_multiple_of(BLOCK_BYTES);
                if !resumable {
                    // Not a point this engine resumes at: the whole file.
                    return self.restart(from);
                }
                self.stage = Stage::Verifying;
                self.verify = Some((from, prefix));
                self.read_prefix();
            }
            // The receiver's answer to an OFFER repeated while hashing:
            // it is there.
            (Stage::Verifying, TransferMsg::Resume { .. }) => self.progressed(now),
            (Stage::Sending, TransferMsg::Ack { upto, .. }) => {
                if upto > self.next || upto > self.chunks {
                    return self.fail(TransferError::Protocol {
                        detail: format!("ack of chunk {upto}, not sent yet"),
                    });
                }
                if upto > self.acked {
                    self.acked = upto;
                    self.progressed(now);
                    let bytes = (upto * CHUNK as u64).min(self.size);
                    self.out.push_back(SenderOutput::Progress { bytes });
                    self.fill_window();
                }
            }
            (Stage::AwaitDoneAck, TransferMsg::DoneAck { .. }) => {
                self.stage = Stage::Finished;
                let d = self.digest.unwrap_or_default();
                self.out.push_back(SenderOutput::Finished(Ok(d)));
            }
            // Late duplicates of earlier answers.
            (
                Stage::Sending | Stage::AwaitDoneAck,
                TransferMsg::Accept { .. } | TransferMsg::Ack { .. } | TransferMsg::Resume { .. },
            ) => {}
            (Stage::Restarting, TransferMsg::Resume { .. } | TransferMsg::Ack { .. }) => {}
            (Stage::Finished, _) => {}
            (_, TransferMsg::Reject { reason, .. } | TransferMsg::Abort { reason, .. }) => {
                self.stage = Stage::Finished;
                self.out.push_back(SenderOutput::Finished(Err(reason)));
            }
            (_, other) => self.fail(TransferError::Protocol {
                detail: format!("unexpected {}", kind(&other)),
            }),
        }
    }

    /// Says RESTART: the receiver's `from` bytes are not this file's.
    fn restart(&mut self, from: u64) {
        self.verify = None;
        self.stage = Stage::Restarting;
        self.out.push_back(SenderOutput::StartedOver { from });
        let id = self.id;
        self.out
            .push_back(SenderOutput::Send(TransferMsg::Restart { id }));
    }

    /// Asks for the blocks of the prefix to check not yet asked for.
    fn read_prefix(&mut self) {
        let Some((from, _)) = self.verify else {
            return;
        };
        let mut next = self.hashed + self.reading.len() as u64 * BLOCK_BYTES;
        while (self.reading.len() as u64) < BLOCKS_AHEAD && next < from {
            self.reading.push_back(next / BLOCK_BYTES);
            self.out.push_back(SenderOutput::Read {
                offset: next,
                len: BLOCK_BYTES as usize,
            });
            next += BLOCK_BYTES;
        }
    }

    /// A block of the prefix a RESUME names: hashed, and once all are,
    /// compared.
    fn on_prefix_read(&mut self, offset: u64, data: &[u8]) {
        let Some((from, prefix)) = self.verify else {
            return;
        };
        if self.reading.pop_front() != Some(offset / BLOCK_BYTES) || offset != self.hashed {
            return self.fail(TransferError::Io {
                detail: format!("a read at {offset} that was not the one asked for"),
            });
        }
        if data.len() as u64 != BLOCK_BYTES {
            return self.fail(TransferError::Io {
                detail: "the file changed while it was being sent".into(),
            });
        }
        self.hasher.update(data);
        self.hashed += BLOCK_BYTES;
        if self.hashed < from {
            return self.read_prefix();
        }
        self.verify = None;
        // Constant time, though nothing secret rides on it.
        if self.hasher.finalize() != blake3::Hash::from(prefix) {
            return self.restart(from);
        }
        self.stage = Stage::Sending;
        self.acked = from / CHUNK as u64;
        self.next = self.acked;
        self.out.push_back(SenderOutput::Resumed { from });
        self.out.push_back(SenderOutput::Progress { bytes: from });
        self.progressed(self.last_now);
        self.fill_window();
    }

    /// The bytes of a `Read` the sender asked for.
    pub fn on_read(&mut self, offset: u64, data: &[u8]) {
        if self.stage == Stage::Verifying {
            return self.on_prefix_read(offset, data);
        }
        if self.stage != Stage::Sending {
            return;
        }
        let index = offset / BLOCK_BYTES;
        // Reads are answered in the order asked: anything else is a
        // driver's bug, better failed clearly than sent wrong.
        if self.reading.pop_front() != Some(index) {
            return self.fail(TransferError::Io {
                detail: format!("a read at {offset} that was not the one asked for"),
            });
        }
        let want = BLOCK_BYTES.min(self.size.saturating_sub(offset));
        if !offset.is_multiple_of(BLOCK_BYTES) || data.len() as u64 != want || want == 0 {
            return self.fail(TransferError::Io {
                detail: "the file changed while it was being sent".into(),
            });
        }
        match offset.cmp(&self.hashed) {
            _ if self.known => {}
            std::cmp::Ordering::Equal => {
                self.hasher.update(data);
                self.hashed += want;
            }
            std::cmp::Ordering::Less => {}
            // Blocks are asked for in order, so this cannot be.
            std::cmp::Ordering::Greater => {
                return self.fail(TransferError::Io {
                    detail: format!("read at {offset} before {} was hashed", self.hashed),
                })
            }
        }
        if self.wanted(index) {
            self.held.push_back(Block {
                index,
                data: data.to_vec(),
            });
        }
        self.fill_window();
    }

    /// The file could not be read.
    pub fn on_read_error(&mut self, detail: String) {
        self.fail(TransferError::Io { detail });
    }

    /// Whether block `index` is one of those to hold: the one the next
    /// chunk is in, and the one after.
    fn wanted(&self, index: u64) -> bool {
        let first = self.next / BLOCK_CHUNKS;
        let start = index.saturating_mul(BLOCK_CHUNKS);
        let end = start.saturating_add(BLOCK_CHUNKS).min(self.chunks);
        let unsent = start < self.chunks && end > self.next;
        (first..first + BLOCKS_AHEAD).contains(&index) && unsent
    }

    /// Sends what the window allows from the blocks held, then asks for the
    /// blocks wanted next.
    fn fill_window(&mut self) {
        let limit = (self.acked + self.cfg.window.max(1)).min(self.chunks);
        while self.next < limit {
            let index = self.next / BLOCK_CHUNKS;
            let Some(at) = self.held.iter().position(|b| b.index == index) else {
                break;
            };
            let block_end = (index + 1) * BLOCK_CHUNKS;
            let n = (limit.min(block_end) - self.next).min(CHUNKS_PER_FRAME);
            let from = ((self.next - index * BLOCK_CHUNKS) * CHUNK as u64) as usize;
            let len = self.held[at].data.len();
            let to = (from + (n * CHUNK as u64) as usize).min(len);
            // A frame of a whole block takes it rather than copy it: the
            // next chunk is past it, and a resend reads again.
            let data = if from == 0 && to == len {
                self.held.remove(at).map(|b| b.data).unwrap_or_default()
            } else {
                self.held[at].data[from..to].to_vec()
            };
            let msg = TransferMsg::Chunks {
                id: self.id,
                seq: self.next,
                data,
            };
            self.out.push_back(SenderOutput::Send(msg));
            self.next += n;
        }
        let first = self.next / BLOCK_CHUNKS;
        // Blocks behind the next chunk are done with: a resend reads again.
        self.held.retain(|b| b.index >= first);
        for index in first..first + BLOCKS_AHEAD {
            let offset = index * BLOCK_BYTES;
            if !self.wanted(index)
                || self.held.iter().any(|b| b.index == index)
                || self.reading.contains(&index)
                || self.reading.len() as u64 >= BLOCKS_AHEAD
            {
                continue;
            }
            let len = BLOCK_BYTES.min(self.size - offset) as usize;
            self.reading.push_back(index);
            self.out.push_back(SenderOutput::Read { offset, len });
        }
        if self.acked == self.chunks && self.stage == Stage::Sending {
            self.send_done();
        }
    }

    fn send_done(&mut self) {
        if !self.known && self.hashed != self.size {
            return self.fail(TransferError::Io {
                detail: format!("only {} of {} bytes were hashed", self.hashed, self.size),
            });
        }
        let digest = *self.digest.get_or_insert_with(|| {
            let digest = *self.hasher.finalize().as_bytes();
            self.hasher.reset();
            digest
        });
        self.stage = Stage::AwaitDoneAck;
        let id = self.id;
        self.out
            .push_back(SenderOutput::Send(TransferMsg::Done { id, digest }));
    }

    pub fn handle_timeout(&mut self, now: Timestamp) {
        if self.stage == Stage::Finished {
            return;
        }
        self.last_now = self.last_now.max(now);
        if now >= self.give_up_at {
            return self.fail(TransferError::Timeout);
        }
        if now < self.resend_at {
            return;
        }
        self.resends = self.resends.saturating_add(1);
        self.resend_at = now + self.cfg.rto * (1 << self.resends.min(3));
        match self.stage {
            // While hashing the prefix, the offer is repeated too: the
            // receiver answers it, and so both know the other is there.
            Stage::Offered | Stage::Verifying => {
                // Offers are idempotent by id: ask again.
                let size = self.size;
                let id = self.id;
                // The name is not kept; a repeated offer carries none and the
                // receiver matches it by id.
                self.out.push_back(SenderOutput::Send(TransferMsg::Offer {
                    id,
                    name: String::new(),
                    size,
                }));
            }
            Stage::Restarting => {
                let id = self.id;
                self.out
                    .push_back(SenderOutput::Send(TransferMsg::Restart { id }));
            }
            Stage::Sending => {
                // Go back to the first unacknowledged chunk.
                self.next = self.acked;
                self.fill_window();
            }
            Stage::AwaitDoneAck => {
                if let Some(digest) = self.digest {
                    let id = self.id;
                    self.out
                        .push_back(SenderOutput::Send(TransferMsg::Done { id, digest }));
                }
            }
            Stage::Finished => {}
        }
    }

    /// Gives up: tells the receiver and reports the reason.
    pub fn fail(&mut self, reason: TransferError) {
        if self.stage == Stage::Finished {
            return;
        }
        self.stage = Stage::Finished;
        let id = self.id;
        self.out.push_back(SenderOutput::Send(TransferMsg::Abort {
            id,
            reason: reason.clone(),
        }));
        self.out.push_back(SenderOutput::Finished(Err(reason)));
    }
}

pub(super) fn kind(msg: &TransferMsg) -> &'static str {
    match msg {
        TransferMsg::Offer { .. } => "OFFER",
        TransferMsg::Accept { .. } => "ACCEPT",
        TransferMsg::Reject { .. } => "REJECT",
        TransferMsg::Chunks { .. } => "CHUNKS",
        TransferMsg::Ack { .. } => "ACK",
        TransferMsg::Done { .. } => "DONE",
        TransferMsg::DoneAck { .. } => "DONE ACK",
        TransferMsg::Abort { .. } => "ABORT",
        TransferMsg::Resume { .. } => "RESUME",
        TransferMsg::Restart { .. } => "RESTART",
    }
}
