//! Copies of an upload on other servers, made while it arrives.
//!
//! A put is answered "stored" only once its content is durable (written and
//! fsynced) on a majority of the servers: the one the client uploads to and
//! `majority - 1` others. So that this costs no second pass over the file,
//! the receiving server streams the content to the others while the
//! client's upload arrives, a pipeline: each copy is a transfer of the one
//! engine, whose sender reads from the upload's bytes held here in memory
//! instead of from a file.
//!
//! **Flow.** The client's acks are held back so that the upload runs at
//! most [`Copies::cap`] chunks ahead of the slowest copy: memory stays
//! bounded (a few MiB per upload), and a copy's speed becomes the upload's.
//! A copy that makes no progress for [`STALL`] while it has bytes to send
//! is dropped rather than allowed to hold the client back.
//!
//! **Small files** ([`SMALL`]) are copied to every server, not only to a
//! majority: the servers not copied to would fetch the file right after
//! its entry is applied, each on a connection of its own. The upload goes
//! on once a majority holds it; the other copies finish on their own.
//!
//! **After the upload.** If fewer copies than needed succeeded (a server was
//! down, fell behind, or ran out of space), copies are made from the blob,
//! now on disk, to the other servers in turn, until enough hold it or the
//! session's request times out. Only then is the `PutFile` ordered.
//!
//! **The receiving end** keeps a copy until the upload's `PutFile` is
//! applied there, or for `copy_keep` (60 s) if it never is
//! (`BlobStore::add_copy`); after a restart it holds whatever it finds
//! unnamed at least as long (`BlobStore::resume`). The uploading server
//! counts only copies confirmed within `copy_keep - request_timeout`, and
//! a session answers "stored" within `request_timeout` of ordering its
//! `PutFile` (after that it says "unavailable"): so every copy counted for
//! an answer is still on its disk when the answer is given, whether or not
//! that server has applied the entry naming it yet.
//!
//! **Links.** The sending server dials and sends `Push { from, nonce, mac }`
//! (MACed with the cluster secret, so only servers can push), then acts as
//! a transfer sender; the other end answers as a transfer receiver. A link
//! carries many copies, at once and one after another, told apart by their
//! transfer ids, and stays open a while after its last ([`IDLE_KEEP`]): a
//! batch of a thousand small files would otherwise pay a thousand
//! connections, TLS handshakes and proofs, each costing more than a small
//! file's whole transfer.

use super::blobs::{BlobMsg, BlobStore, Owner};
use super::config::ServerConfig;
use super::event::ServerEvent;
use crate::auth::ClusterSecret;
use crate::frame::{self, FrameDecoder};
use crate::io::{ConnId, FileOp, FileRef};
use crate::outbox::{drain_messages, Outbox};
use crate::refusal::{Refusal, PROTOCOL_VERSION};
use crate::replication::Replica;
use crate::time::Timestamp;
use crate::transfer::messages::{BLOCK_BYTES, BLOCK_CHUNKS};
use crate::transfer::{
    Receiver, ReceiverOutput, Sender, SenderConfig, SenderOutput, TransferError, TransferMsg,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// A live copy that has had bytes to send and made no progress for this
/// long is dropped (and made again from the blob after the upload).
pub const STALL: Duration = Duration::from_secs(2);
/// Wait before looking again for a server to copy to, when none is up or
/// a copy failed; doubled for each failure, up to [`RETRY_MAX`].
const RETRY: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// Dial numbers of copy connections.
const COPY_DIALS: u64 = 1 << 60;
/// An idle copy link is closed after this long unused (by its sender).
const IDLE_KEEP: Duration = Duration::from_secs(10);
/// Copies on one link at most; more go on another.
const PER_LINK: usize = 64;
/// Uploads of at most this many bytes are copied to every server, not
/// only to a majority.
pub const SMALL: u64 = 1 << 20;
/// The receiving end closes a link that has carried no copy for this long
/// (its sender forgot it, or is cut off).
const INCOMING_IDLE: Duration = Duration::from_secs(60);

/// An upload: its session's connection and its transfer's id (a session
/// uploading a batch has several at once).
pub(super) type Up = (ConnId, u64);

/// What became of uploads' copies, for the user files to act on.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum CopyNews {
    /// The upload may be acknowledged further.
    Moved(Up),
    /// Enough copies of the upload are durable.
    Enough(Up),
    /// A copy of the upload ended: see whether enough are durable now
    /// ([`Copies::settle`]).
    Settle(Up),
}

pub(super) struct Copies {
    id: u32,
    secret: ClusterSecret,
    transfer_timeout: Duration,
    send_window: u64,
    /// How long a copy's confirmation counts (see the module's notes).
    fresh_for: Duration,
    /// Uploads being copied, by their session's connection.
    pipes: BTreeMap<Up, Pipe>,
    /// Copies being sent, by their transfer's id.
    pushes: BTreeMap<u64, Push>,
    /// The ids of each upload's copies in `pushes`: several questions are
    /// asked of one upload's copies per message of it, and a batch has
    /// a hundred copies going at once.
    by_upload: BTreeMap<Up, BTreeSet<u64>>,
    /// Links copies are sent on, by their connection.
    links: BTreeMap<ConnId, CopyLink>,
    /// Copies being received, by their connection.
    incoming: BTreeMap<ConnId, Incoming>,
    /// Temporary files of copies received, sent to disk as these blobs.
    landing: BTreeMap<u64, ([u8; 32], u64)>,
    next_dial: u64,
    /// Ids of the copies' transfers: unique, so a late message of one copy
    /// is never taken for the next on the same link.
    next_transfer: u64,
    news: Vec<CopyNews>,
}

/// One upload's copies.
struct Pipe {
    size: u64,
    /// Copies needed on other servers.
    needed: usize,
    /// Servers that hold a durable copy, with the digest they confirmed
    /// and when.
    durable: BTreeMap<u32, ([u8; 32], Timestamp)>,
    /// Copies started, so far: the next target is chosen past them.
    attempts: usize,
    /// The upload's bytes from block `first_block` on, one entry per block
    /// of [`BLOCK_BYTES`] (the last one filling up). Live copies read here.
    blocks: VecDeque<Vec<u8>>,
    first_block: u64,
    /// Bytes of the upload received, in order.
    received: u64,
    /// Some live copy still reads from the upload's bytes.
    live: bool,
    /// The upload's own blob is durable here, with this digest.
    stored: Option<[u8; 32]>,
    /// When to look again for a server to copy the blob to.
    retry_at: Option<Timestamp>,
    /// Copies that failed so far: the wait before the next grows with them.
    failures: u32,
    /// Enough copies were durable and the upload went on; copies still
    /// going (to the other servers, of a small file) finish on their own.
    answered: bool,
}

impl Pipe {
    /// Copies that count now: of the upload's content, and recent enough
    /// to be still kept when the upload is answered.
    fn confirmed(&mut self, now: Timestamp, fresh_for: Duration) -> usize {
        let Some(d) = self.stored else {
            return 0;
        };
        self.durable
            .retain(|_, (c, at)| *c == d && now.saturating_since(*at) < fresh_for);
        self.durable.len()
    }

    /// Bytes `offset..offset + len` of the upload, if still held.
    fn bytes(&self, offset: u64, len: usize) -> Option<&[u8]> {
        let index = offset / BLOCK_BYTES;
        let block = self
            .blocks
            .get(index.checked_sub(self.first_block)? as usize)?;
        let from = (offset % BLOCK_BYTES) as usize;
        block.get(from..from.checked_add(len)?)
    }

    fn append(&mut self, offset: u64, data: &[u8]) -> bool {
        if offset != self.received || offset + data.len() as u64 > self.size {
            return false;
        }
        let mut rest = data;
        while !rest.is_empty() {
            let full = self
                .blocks
                .back()
                .is_none_or(|b| b.len() as u64 == BLOCK_BYTES);
            if full {
                let cap = BLOCK_BYTES.min(self.size - self.received) as usize;
                self.blocks.push_back(Vec::with_capacity(cap));
            }
            let Some(last) = self.blocks.back_mut() else {
                return false;
            };
            let room = BLOCK_BYTES as usize - last.len();
            let n = room.min(rest.len());
            last.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            self.received += n as u64;
        }
        true
    }
}

/// A copy being sent.
struct Push {
    upload: Up,
    to: u32,
    /// The link it goes on.
    conn: ConnId,
    sender: Sender,
    source: Source,
    /// When the copy last moved, or last had something to do again.
    moved_at: Timestamp,
}

/// A link copies are sent on, to one server.
struct CopyLink {
    to: u32,
    decoder: FrameDecoder,
    connected: bool,
    nonce: [u8; 16],
    /// The copies on it now.
    pushes: BTreeSet<u64>,
    /// Since when it has carried no copy.
    idle_since: Timestamp,
}

enum Source {
    /// Reads served from the upload's bytes, in the order asked.
    Live { reads: VecDeque<(u64, usize)> },
    /// Reads of the blob on disk, through `handle`.
    Blob { handle: u64, digest: [u8; 32] },
}

/// A link copies are received on.
struct Incoming {
    decoder: FrameDecoder,
    /// The copies arriving, by transfer id, each with its temporary file.
    /// Each also with the applied index when it began (see
    /// `BlobStore::add_copy`).
    receivers: BTreeMap<u64, (Receiver, u64, u64)>,
    /// Since when the link has had no copy going.
    idle_since: Timestamp,
}

impl Copies {
    pub(super) fn new(cfg: &ServerConfig, secret: ClusterSecret) -> Self {
        Copies {
            id: cfg.id,
            secret,
            transfer_timeout: cfg.transfer_timeout,
            send_window: cfg.send_window,
            fresh_for: cfg.copy_keep.saturating_sub(cfg.request_timeout),
            pipes: BTreeMap::new(),
            pushes: BTreeMap::new(),
            by_upload: BTreeMap::new(),
            incoming: BTreeMap::new(),
            landing: BTreeMap::new(),
            links: BTreeMap::new(),
            next_dial: 0,
            next_transfer: 0,
            news: Vec::new(),
        }
    }

    pub(super) fn take_news(&mut self) -> Vec<CopyNews> {
        std::mem::take(&mut self.news)
    }

    pub(super) fn owns(&self, conn: ConnId) -> bool {
        self.links.contains_key(&conn) || self.incoming.contains_key(&conn)
    }

    /// Chunks the client's upload on `upload` may be acknowledged up to,
    /// if its copies hold it back.
    pub(super) fn cap(&self, upload: Up) -> Option<u64> {
        self.pipes.get(&upload).filter(|p| p.live)?;
        let slowest = self.live_pushes(upload).map(|p| p.sender.acked()).min()?;
        // Room for a copy to fill its window and read its blocks ahead,
        // and as much again so the client never waits on a copy's ack.
        let room = 2 * self.send_window.max(1) + 2 * BLOCK_CHUNKS;
        Some(slowest + room)
    }

    /// Bytes of the upload on `upload` that its furthest copy going has
    /// had acknowledged.
    pub(super) fn copied(&self, upload: Up) -> u64 {
        (self.pushes_of(upload))
            .map(|(_, p)| p.sender.acked_bytes())
            .max()
            .unwrap_or(0)
    }

    /// The copies of `upload` being sent, with their ids, in id order.
    fn pushes_of(&self, upload: Up) -> impl Iterator<Item = (u64, &Push)> {
        (self.by_upload.get(&upload).into_iter().flatten())
            .filter_map(|tid| Some((*tid, self.pushes.get(tid)?)))
    }

    fn live_pushes(&self, upload: Up) -> impl Iterator<Item = &Push> {
        (self.pushes_of(upload))
            .map(|(_, p)| p)
            .filter(|p| matches!(p.source, Source::Live { .. }))
    }

    /// Forgets copy `tid` of `upload` in the index.
    fn unindex(&mut self, upload: Up, tid: u64) {
        if let Some(tids) = self.by_upload.get_mut(&upload) {
            tids.remove(&tid);
            if tids.is_empty() {
                self.by_upload.remove(&upload);
            }
        }
    }

    /// A client's upload of `size` bytes starts on `upload`: copies of it
    /// start streaming to other servers.
    pub(super) fn open(
        &mut self,
        now: Timestamp,
        upload: Up,
        size: u64,
        replica: &Replica,
        blobs: &mut BlobStore,
        out: &mut Outbox<ServerEvent>,
    ) {
        self.open_as(now, upload, size, true, replica, blobs, out);
    }

    /// A client's upload of `size` bytes resumes on `upload`: its first
    /// bytes are on this disk only, so no copy can stream from what
    /// arrives; copies are made from the blob once it is stored (see
    /// *After the upload* in the module docs).
    pub(super) fn open_resumed(
        &mut self,
        now: Timestamp,
        upload: Up,
        size: u64,
        replica: &Replica,
        blobs: &mut BlobStore,
        out: &mut Outbox<ServerEvent>,
    ) {
        self.open_as(now, upload, size, false, replica, blobs, out);
    }

    #[allow(clippy::too_many_arguments)]
    fn open_as(
        &mut self,
        now: Timestamp,
        upload: Up,
        size: u64,
        live: bool,
        replica: &Replica,
        blobs: &mut BlobStore,
        out: &mut Outbox<ServerEvent>,
    ) {
        let needed = replica.majority().saturating_sub(1);
        if needed == 0 {
            return;
        }
        let mut pipe = Pipe {
            size,
            needed,
            durable: BTreeMap::new(),
            attempts: 0,
            blocks: VecDeque::new(),
            first_block: 0,
            received: 0,
            live,
            stored: None,
            retry_at: None,
            failures: 0,
            answered: false,
        };
        // A small file goes to every server while it arrives: the others
        // would fetch it on a link of their own right after, which costs
        // them more than the file (see the module's notes).
        let others = replica.live_peers().len();
        let n = match (live, size <= SMALL) {
            (false, _) => 0,
            (true, true) => others.max(needed),
            (true, false) => needed,
        };
        let targets = self.targets(&mut pipe, n, upload, replica);
        self.pipes.insert(upload, pipe);
        for to in targets {
            self.start_push(now, upload, to, size, None, replica, blobs, out);
        }
        self.settle_live(upload);
    }

    /// Up to `n` servers to copy to: up, not holding a copy, not being
    /// copied to, taken in turn past those tried before.
    fn targets(&self, pipe: &mut Pipe, n: usize, upload: Up, replica: &Replica) -> Vec<u32> {
        let busy: BTreeSet<u32> = self.pushes_of(upload).map(|(_, p)| p.to).collect();
        let live = replica.live_peers();
        let mut picked = Vec::new();
        for k in 0..live.len() {
            if picked.len() == n {
                break;
            }
            let to = live[(pipe.attempts + k) % live.len()];
            if !busy.contains(&to) && !pipe.durable.contains_key(&to) {
                picked.push(to);
            }
        }
        pipe.attempts += picked.len();
        picked
    }

    /// Starts a copy of the upload on `upload` to server `to`: live from the
    /// upload's bytes, or from `blob` on disk.
    #[allow(clippy::too_many_arguments)]
    fn start_push(
        &mut self,
        now: Timestamp,
        upload: Up,
        to: u32,
        size: u64,
        blob: Option<[u8; 32]>,
        replica: &Replica,
        blobs: &mut BlobStore,
        out: &mut Outbox<ServerEvent>,
    ) {
        let Some(addr) = replica.peers().iter().find(|p| p.id == to) else {
            return;
        };
        self.next_transfer += 1;
        let tid = self.next_transfer;
        // A link to that server with room, or a new one.
        let room = (self.links.iter()).find(|(_, l)| l.to == to && l.pushes.len() < PER_LINK);
        let conn = match room.map(|(c, _)| *c) {
            Some(conn) => conn,
            None => {
                let conn = ConnId::dialed(COPY_DIALS | self.next_dial);
                self.next_dial += 1;
                // Unique per dial of this run; the MAC, not the nonce, is
                // what an outsider cannot make.
                let mut nonce = [0u8; 16];
                nonce[..8].copy_from_slice(&conn.n.to_le_bytes());
                nonce[8..12].copy_from_slice(&self.id.to_le_bytes());
                nonce[12..].copy_from_slice(&to.to_le_bytes());
                let link = CopyLink {
                    to,
                    decoder: FrameDecoder::default(),
                    connected: false,
                    nonce,
                    pushes: BTreeSet::new(),
                    idle_since: now,
                };
                self.links.insert(conn, link);
                out.connect(conn, addr.addr.clone());
                conn
            }
        };
        let source = match blob {
            None => Source::Live {
                reads: VecDeque::new(),
            },
            Some(digest) => {
                let handle = blobs.new_handle(Owner::Push(tid));
                blobs.read_target(handle, digest);
                Source::Blob { handle, digest }
            }
        };
        let cfg = SenderConfig {
            give_up: self.transfer_timeout,
            window: self.send_window.max(1),
            ..SenderConfig::default()
        };
        let mut sender = Sender::new(now, tid, "copy".into(), size, cfg);
        if let Source::Blob { digest, .. } = &source {
            sender = sender.with_digest(*digest);
        }
        let push = Push {
            upload,
            to,
            conn,
            sender,
            source,
            moved_at: now,
        };
        self.pushes.insert(tid, push);
        self.by_upload.entry(upload).or_default().insert(tid);
        if let Some(link) = self.links.get_mut(&conn) {
            link.pushes.insert(tid);
        }
        // On a link that is up, the offer goes at once.
        self.pump(now, tid, blobs, out);
    }

    /// Bytes `offset..` of the upload on `upload` arrived (in order).
    pub(super) fn feed(
        &mut self,
        now: Timestamp,
        upload: Up,
        offset: u64,
        data: &[u8],
        blobs: &mut BlobStore,
        out: &mut Outbox<ServerEvent>,
    ) {
        let Some(pipe) = self.pipes.get_mut(&upload).filter(|p| p.live) else {
            return;
        };
        let before = pipe.received;
        if !pipe.append(offset, data) {
            // Not the next bytes: the live copies cannot be made.
            let why = "the upload's bytes came out of order";
            return self.drop_live(now, upload, why, blobs, out);
        }
        for tid in self.live_tids(upload) {
            if let Some(p) = self.pushes.get_mut(&tid) {
                // A copy that had sent everything is busy again from now:
                // its silence so far was the client's.
                if p.sender.acked_bytes() >= before {
                    p.moved_at = now;
                }
            }
            self.pump(now, tid, blobs, out);
        }
    }

    /// The upload on `upload` is on this server's disk as blob `digest`.
    /// True if enough copies are durable already; if not, the missing ones
    /// are made ([`CopyNews::Enough`] says when they are).
    pub(super) fn stored(
        &mut self,
        now: Timestamp,
        upload: Up,
        digest: [u8; 32],
        replica: &Replica,
        blobs: &mut BlobStore,
        out: &mut Outbox<ServerEvent>,
    ) -> bool {
        let Some(pipe) = self.pipes.get_mut(&upload) else {
            return true;
        };
        pipe.stored = Some(digest);
        self.check(now, upload, replica, blobs, out)
    }

    /// Whether the upload on `upload` has its copies; if not (and its own
    /// blob is durable), starts copies from the blob to make up the rest.
    fn check(
        &mut self,
        now: Timestamp,
        upload: Up,
        replica: &Replica,
        blobs: &mut BlobStore,
        out: &mut Outbox<ServerEvent>,
    ) -> bool {
        let going = self.by_upload.get(&upload).map_or(0, BTreeSet::len);
        let Some(pipe) = self.pipes.get_mut(&upload) else {
            return true;
        };
        if pipe.answered {
            // Said so already; the last copy going lets the pipe go.
            if going == 0 {
                self.pipes.remove(&upload);
            }
            return false;
        }
        let confirmed = pipe.confirmed(now, self.fresh_for);
        if confirmed >= pipe.needed {
            if going == 0 {
                self.close(upload, blobs, out);
            } else {
                pipe.answered = true;
            }
            return true;
        }
        let Some(digest) = pipe.stored else {
            return false;
        };
        if crate::sabotage::on(crate::sabotage::Sabotage::StoredOnOneDisk) {
            self.close(upload, blobs, out);
            return true;
        }
        let missing = pipe.needed - confirmed;
        if going >= missing || pipe.retry_at.is_some_and(|t| t > now) {
            return false;
        }
        let size = pipe.size;
        let mut pipe = match self.pipes.remove(&upload) {
            Some(p) => p,
            None => return true,
        };
        let targets = self.targets(&mut pipe, missing - going, upload, replica);
        if targets.is_empty() {
            pipe.retry_at = Some(now + RETRY);
        }
        self.pipes.insert(upload, pipe);
        for to in targets {
            self.start_push(now, upload, to, size, Some(digest), replica, blobs, out);
        }
        false
    }

    /// The upload on `upload` is over, whether stored or not: its copies
    /// still going are cancelled (their links go on).
    pub(super) fn close(
        &mut self,
        upload: Up,
        blobs: &mut BlobStore,
        out: &mut Outbox<ServerEvent>,
    ) {
        self.pipes.remove(&upload);
        let tids: Vec<u64> = self.pushes_of(upload).map(|(t, _)| t).collect();
        for tid in tids {
            self.end_push(tid, TransferError::Cancelled, blobs, out);
        }
    }

    /// Stops the copy `tid`, telling the other end why if its link is up.
    fn end_push(
        &mut self,
        tid: u64,
        why: TransferError,
        blobs: &mut BlobStore,
        out: &mut Outbox<ServerEvent>,
    ) -> Option<Push> {
        let mut p = self.pushes.remove(&tid)?;
        self.unindex(p.upload, tid);
        release(&p, blobs);
        let now_idle = match self.links.get_mut(&p.conn) {
            Some(link) => {
                link.pushes.remove(&tid);
                if link.connected {
                    p.sender.fail(why);
                    while let Some(o) = p.sender.poll_output() {
                        if let SenderOutput::Send(m) = o {
                            out.send(p.conn, &BlobMsg::Transfer(m));
                        }
                    }
                }
                link.pushes.is_empty()
            }
            None => false,
        };
        if now_idle {
            self.link_idle(p.conn, p.moved_at);
        }
        Some(p)
    }

    /// The link on `conn` carries no copy since `now`.
    fn link_idle(&mut self, conn: ConnId, now: Timestamp) {
        if let Some(link) = self.links.get_mut(&conn) {
            link.idle_since = now;
        }
    }

    fn live_tids(&self, upload: Up) -> Vec<u64> {
        (self.pushes_of(upload))
            .filter(|(_, p)| matches!(p.source, Source::Live { .. }))
            .map(|(t, _)| t)
            .collect()
    }

    /// Drops every live copy of `upload` (its bytes can no longer be
    /// served); copies from the blob make up for them after the upload.
    fn drop_live(
        &mut self,
        now: Timestamp,
        upload: Up,
        why: &str,
        blobs: &mut BlobStore,
        out: &mut Outbox<ServerEvent>,
    ) {
        for tid in self.live_tids(upload) {
            self.fail_push(now, tid, why, blobs, out);
        }
    }

    /// Gives up on the copy `tid`.
    fn fail_push(
        &mut self,
        now: Timestamp,
        tid: u64,
        why: &str,
        blobs: &mut BlobStore,
        out: &mut Outbox<ServerEvent>,
    ) {
        let detail = why.to_string();
        let Some(p) = self.end_push(tid, TransferError::Io { detail }, blobs, out) else {
            return;
        };
        out.event(ServerEvent::CopyFailed {
            to: p.to,
            why: why.to_string(),
        });
        self.back_off(now, p.upload);
        self.after_push(p.upload);
    }

    /// The link on `conn` is gone: every copy on it failed.
    fn fail_link(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        why: &str,
        blobs: &mut BlobStore,
        out: &mut Outbox<ServerEvent>,
    ) {
        let Some(link) = self.links.remove(&conn) else {
            return;
        };
        out.close(conn);
        for tid in link.pushes {
            self.fail_push(now, tid, why, blobs, out);
        }
    }

    /// A copy of `upload` failed: the next waits a while, longer each time
    /// (a server that refuses at once must not be asked again at once).
    fn back_off(&mut self, now: Timestamp, upload: Up) {
        if let Some(pipe) = self.pipes.get_mut(&upload) {
            let wait = RETRY
                .saturating_mul(1 << pipe.failures.min(4))
                .min(RETRY_MAX);
            pipe.failures = pipe.failures.saturating_add(1);
            pipe.retry_at = Some(now + wait);
        }
    }

    /// A copy of `upload` ended, or moved: what it no longer needs is let
    /// go of, and the upload may go on.
    fn after_push(&mut self, upload: Up) {
        self.settle_live(upload);
        if self.pipes.contains_key(&upload) {
            self.news.push(CopyNews::Moved(upload));
        }
    }

    /// Lets go of the upload's bytes no live copy can still ask for.
    fn settle_live(&mut self, upload: Up) {
        let slowest = self.live_pushes(upload).map(|p| p.sender.acked()).min();
        let Some(pipe) = self.pipes.get_mut(&upload) else {
            return;
        };
        match slowest {
            None => {
                pipe.live = false;
                pipe.blocks.clear();
            }
            Some(acked) => {
                // A resend goes back to the first unacknowledged chunk.
                let keep_from = acked / BLOCK_CHUNKS;
                while pipe.first_block < keep_from && pipe.blocks.pop_front().is_some() {
                    pipe.first_block += 1;
                }
            }
        }
    }

    /// A copy link's dial reached its server: introduce ourselves and offer.
    pub(super) fn on_connected(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        blobs: &mut BlobStore,
        out: &mut Outbox<ServerEvent>,
    ) {
        let Some(link) = self.links.get_mut(&conn) else {
            return;
        };
        link.connected = true;
        let mac = self.secret.peer_proof(self.id, link.to, &link.nonce);
        let hello = BlobMsg::Push {
            version: PROTOCOL_VERSION,
            from: self.id,
            nonce: link.nonce,
            mac,
        };
        out.send(conn, &hello);
        let tids: Vec<u64> = link.pushes.iter().copied().collect();
        for tid in tids {
            self.pump(now, tid, blobs, out);
        }
    }

    /// Carries out what the sender of the copy `tid` asks for.
    fn pump(
        &mut self,
        now: Timestamp,
        tid: u64,
        blobs: &mut BlobStore,
        out: &mut Outbox<ServerEvent>,
    ) {
        let mut ended = None;
        let mut moved = false;
        loop {
            let Some(p) = self.pushes.get_mut(&tid) else {
                return;
            };
            let conn = p.conn;
            if !self.links.get(&conn).is_some_and(|l| l.connected) {
                return;
            }
            // Live reads the upload's bytes can answer, in the order asked.
            if let Source::Live { reads } = &mut p.source {
                let pipe = self.pipes.get(&p.upload);
                while let Some((offset, len)) = reads.front().copied() {
                    match pipe.and_then(|pipe| pipe.bytes(offset, len)) {
                        Some(data) => {
                            reads.pop_front();
                            p.sender.on_read(offset, data);
                        }
                        None if pipe
                            .is_some_and(|pipe| offset / BLOCK_BYTES < pipe.first_block) =>
                        {
                            reads.pop_front();
                            p.sender
                                .on_read_error("bytes of the upload already let go of".into());
                        }
                        None => break,
                    }
                }
            }
            let mut any = false;
            while let Some(o) = p.sender.poll_output() {
                any = true;
                match o {
                    SenderOutput::Send(m) => out.send(conn, &BlobMsg::Transfer(m)),
                    SenderOutput::Read { offset, len } => match &mut p.source {
                        Source::Live { reads } => reads.push_back((offset, len)),
                        Source::Blob { handle, digest } => out.file(FileOp::Read {
                            handle: *handle,
                            file: FileRef::Blob(*digest),
                            offset,
                            len,
                        }),
                    },
                    SenderOutput::Progress { .. } => {
                        p.moved_at = now;
                        moved = true;
                    }
                    // The receiving end of a copy never offers to resume.
                    SenderOutput::Resumed { .. } | SenderOutput::StartedOver { .. } => {}
                    SenderOutput::Finished(result) => ended = Some(result),
                }
            }
            let waiting = matches!(&p.source, Source::Live { reads } if !reads.is_empty());
            if ended.is_some() || !any || !waiting {
                break;
            }
        }
        if let Some(result) = ended {
            return self.push_ended(now, tid, result, blobs, out);
        }
        if moved {
            if let Some(upload) = self.pushes.get(&tid).map(|p| p.upload) {
                self.after_push(upload);
            }
        }
    }

    /// The copy `tid` is over: durable there, or failed.
    fn push_ended(
        &mut self,
        now: Timestamp,
        tid: u64,
        result: Result<[u8; 32], TransferError>,
        blobs: &mut BlobStore,
        out: &mut Outbox<ServerEvent>,
    ) {
        let Some(p) = self.pushes.remove(&tid) else {
            return;
        };
        self.unindex(p.upload, tid);
        release(&p, blobs);
        let emptied = self.links.get_mut(&p.conn).is_some_and(|link| {
            link.pushes.remove(&tid);
            link.pushes.is_empty()
        });
        if emptied {
            self.link_idle(p.conn, now);
        }
        match result {
            Ok(digest) => {
                if let Some(pipe) = self.pipes.get_mut(&p.upload) {
                    pipe.durable.insert(p.to, (digest, now));
                }
                out.event(ServerEvent::Copied { to: p.to });
            }
            Err(e) => {
                // A link that stopped answering is of no use to the next.
                if e == TransferError::Timeout {
                    let why = "the link stopped answering";
                    self.fail_link(now, p.conn, why, blobs, out);
                }
                out.event(ServerEvent::CopyFailed {
                    to: p.to,
                    why: e.to_string(),
                });
                self.back_off(now, p.upload);
            }
        }
        self.after_push(p.upload);
        self.news.push(CopyNews::Settle(p.upload));
    }

    /// Bytes arrived on a copy's connection, either end.
    pub(super) fn on_bytes(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        bytes: &[u8],
        blobs: &mut BlobStore,
        out: &mut Outbox<ServerEvent>,
    ) {
        let mut msgs = Vec::new();
        let res = if let Some(l) = self.links.get_mut(&conn) {
            l.decoder.push(bytes);
            drain_messages::<BlobMsg>(&mut l.decoder, &mut msgs)
        } else if let Some(i) = self.incoming.get_mut(&conn) {
            i.decoder.push(bytes);
            drain_messages::<BlobMsg>(&mut i.decoder, &mut msgs)
        } else {
            return;
        };
        let sending = self.links.contains_key(&conn);
        for m in msgs {
            let BlobMsg::Transfer(t) = m else {
                return self.on_closed(now, conn, blobs, out);
            };
            if !sending {
                self.on_incoming(now, conn, t, blobs, out);
                continue;
            }
            let tid = t.id();
            match self.pushes.get_mut(&tid) {
                Some(p) if p.conn == conn => {
                    p.sender.on_msg(now, t);
                    self.pump(now, tid, blobs, out);
                }
                // A late answer to a copy cancelled or ended.
                _ => {}
            }
        }
        if res.is_err() {
            self.on_closed(now, conn, blobs, out);
        }
    }

    /// A copy's connection closed, broke or could not open.
    pub(super) fn on_closed(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        blobs: &mut BlobStore,
        out: &mut Outbox<ServerEvent>,
    ) {
        if self.links.contains_key(&conn) {
            return self.fail_link(now, conn, "the connection closed", blobs, out);
        }
        if let Some(i) = self.incoming.remove(&conn) {
            out.close(conn);
            for (_, (_, temp, _)) in i.receivers {
                self.let_go_incoming(temp, blobs, out);
            }
        }
    }

    /// A read of a copy from a blob came back.
    pub(super) fn on_read(
        &mut self,
        now: Timestamp,
        tid: u64,
        offset: u64,
        data: &[u8],
        blobs: &mut BlobStore,
        out: &mut Outbox<ServerEvent>,
    ) {
        if let Some(p) = self.pushes.get_mut(&tid) {
            p.sender.on_read(offset, data);
        }
        self.pump(now, tid, blobs, out);
    }

    /// A live copy that has not yet had acknowledged all the upload holds.
    fn behind(&self, p: &Push) -> bool {
        matches!(p.source, Source::Live { .. })
            && self
                .pipes
                .get(&p.upload)
                .is_some_and(|pipe| p.sender.acked_bytes() < pipe.received)
    }

    pub(super) fn poll_timeout(&self) -> Option<Timestamp> {
        // The stall deadline only counts while the copy is behind the upload:
        // a copy that has caught up waits for the client, not for itself.
        let sends = self.pushes.values().filter_map(|p| {
            let stall = (self.behind(p)).then_some(p.moved_at + STALL);
            crate::time::earliest(p.sender.poll_timeout(), stall)
        });
        let receives = (self.incoming.values())
            .flat_map(|i| i.receivers.values().filter_map(|(r, ..)| r.poll_timeout()));
        let retries = self.pipes.values().filter_map(|p| p.retry_at);
        let idle = (self.links.values())
            .filter(|l| l.pushes.is_empty())
            .map(|l| l.idle_since + IDLE_KEEP);
        let forgotten = (self.incoming.values())
            .filter(|i| i.receivers.is_empty())
            .map(|i| i.idle_since + INCOMING_IDLE);
        let all = sends.chain(receives).chain(retries).chain(idle);
        all.chain(forgotten).min()
    }

    pub(super) fn handle_timeout(
        &mut self,
        now: Timestamp,
        replica: &Replica,
        blobs: &mut BlobStore,
        out: &mut Outbox<ServerEvent>,
    ) {
        let unused: Vec<ConnId> = (self.links.iter())
            .filter(|(_, l)| l.pushes.is_empty() && now.saturating_since(l.idle_since) >= IDLE_KEEP)
            .map(|(c, _)| *c)
            .collect();
        for conn in unused {
            self.links.remove(&conn);
            out.close(conn);
        }
        let forgotten: Vec<ConnId> = (self.incoming.iter())
            .filter(|(_, i)| {
                i.receivers.is_empty() && now.saturating_since(i.idle_since) >= INCOMING_IDLE
            })
            .map(|(c, _)| *c)
            .collect();
        for conn in forgotten {
            self.on_closed(now, conn, blobs, out);
        }
        let tids: Vec<u64> = self.pushes.keys().copied().collect();
        for tid in tids {
            let stalled = self
                .pushes
                .get(&tid)
                .is_some_and(|p| self.behind(p) && now.saturating_since(p.moved_at) >= STALL);
            if stalled {
                self.fail_push(now, tid, "it fell behind the upload", blobs, out);
                continue;
            }
            let Some(p) = self.pushes.get_mut(&tid) else {
                continue;
            };
            p.sender.handle_timeout(now);
            self.pump(now, tid, blobs, out);
        }
        let conns: Vec<ConnId> = self.incoming.keys().copied().collect();
        for conn in conns {
            let ids: Vec<u64> = (self.incoming.get(&conn))
                .map(|i| i.receivers.keys().copied().collect())
                .unwrap_or_default();
            for id in ids {
                if let Some((r, ..)) =
                    (self.incoming.get_mut(&conn)).and_then(|i| i.receivers.get_mut(&id))
                {
                    r.handle_timeout(now);
                }
                self.pump_incoming(now, conn, id, blobs, out);
            }
        }
        let due: Vec<Up> = self
            .pipes
            .iter()
            .filter(|(_, p)| p.retry_at.is_some_and(|t| t <= now))
            .map(|(c, _)| *c)
            .collect();
        for upload in due {
            if let Some(p) = self.pipes.get_mut(&upload) {
                p.retry_at = None;
            }
            if self.check(now, upload, replica, blobs, out) {
                self.news.push(CopyNews::Enough(upload));
            }
        }
    }

    /// A copy of `upload` ended: if enough are durable now, the upload
    /// can be ordered; if not, more are made from the blob.
    pub(super) fn settle(
        &mut self,
        now: Timestamp,
        upload: Up,
        replica: &Replica,
        blobs: &mut BlobStore,
        out: &mut Outbox<ServerEvent>,
    ) -> bool {
        self.pipes.contains_key(&upload) && self.check(now, upload, replica, blobs, out)
    }

    // ----- The receiving end -----

    /// A connection whose first frame is a `Push`: a copy to receive.
    pub(super) fn adopt(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        decoder: FrameDecoder,
        first: &[u8],
        out: &mut Outbox<ServerEvent>,
    ) {
        let refuse = |out: &mut Outbox<ServerEvent>, r: Refusal| {
            out.send(conn, &BlobMsg::Refused(r));
            out.close(conn);
        };
        let (from, nonce, mac) = match frame::decode::<BlobMsg>(first) {
            Ok(BlobMsg::Push { version, .. }) if version != PROTOCOL_VERSION => {
                let r = Refusal::VersionMismatch {
                    ours: PROTOCOL_VERSION,
                    theirs: version,
                };
                return refuse(out, r);
            }
            Ok(BlobMsg::Push {
                from, nonce, mac, ..
            }) => (from, nonce, mac),
            Ok(other) => {
                let what = format!("{other:?}");
                return refuse(out, Refusal::Unexpected { what });
            }
            Err(e) => {
                let detail = e.to_string();
                return refuse(out, Refusal::Malformed { detail });
            }
        };
        let want = self.secret.peer_proof(from, self.id, &nonce);
        if blake3::Hash::from(want) != blake3::Hash::from(mac) {
            return refuse(out, Refusal::BadCode);
        }
        let incoming = Incoming {
            decoder,
            receivers: BTreeMap::new(),
            idle_since: now,
        };
        self.incoming.insert(conn, incoming);
    }

    fn on_incoming(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        t: TransferMsg,
        blobs: &mut BlobStore,
        out: &mut Outbox<ServerEvent>,
    ) {
        let timeout = self.transfer_timeout;
        let Some(i) = self.incoming.get_mut(&conn) else {
            return;
        };
        let id = t.id();
        match (i.receivers.get_mut(&id), t) {
            (None, TransferMsg::Offer { id, name, size }) => {
                let mut r = Receiver::new(now, id, name, size, timeout);
                r.accept(now);
                let temp = blobs.new_handle(Owner::Copy(conn));
                i.receivers.insert(id, (r, temp, blobs.synced_at()));
            }
            (Some((r, ..)), t) => r.on_msg(now, t),
            // A late message of a copy whose answer was given (a DONE sent
            // again).
            (None, _) => return,
        }
        self.pump_incoming(now, conn, id, blobs, out);
    }

    fn pump_incoming(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        id: u64,
        blobs: &mut BlobStore,
        out: &mut Outbox<ServerEvent>,
    ) {
        let Some(i) = self.incoming.get_mut(&conn) else {
            return;
        };
        let Some((r, temp, after)) = i.receivers.get_mut(&id) else {
            return;
        };
        let (temp, after) = (*temp, *after);
        let size = r.size();
        let mut over = false;
        while let Some(o) = r.poll_output() {
            match o {
                ReceiverOutput::Send(m) => out.send(conn, &BlobMsg::Transfer(m)),
                ReceiverOutput::Write { offset, data } => {
                    out.file(FileOp::Write { temp, offset, data })
                }
                ReceiverOutput::Commit { digest } => {
                    // Pinned while it lands: a collection meanwhile would
                    // queue the blob's removal behind this persist.
                    blobs.pin(digest, size);
                    blobs.persist_begins(temp, digest);
                    self.landing.insert(temp, (digest, after));
                    out.file(FileOp::Persist {
                        temp,
                        to: FileRef::Blob(digest),
                    });
                }
                ReceiverOutput::Discard => out.file(FileOp::Discard { temp }),
                // A copy never resumes: nothing is read back.
                ReceiverOutput::Progress { .. }
                | ReceiverOutput::Read { .. }
                | ReceiverOutput::Resumed { .. }
                | ReceiverOutput::StartOver { .. } => {}
                ReceiverOutput::Finished(_) => over = true,
            }
        }
        if over {
            // The link waits for the sender's next copy, or its close.
            i.receivers.remove(&id);
            if i.receivers.is_empty() {
                i.idle_since = now;
            }
            if !self.landing.contains_key(&temp) {
                blobs.forget_handle(temp);
            }
        }
    }

    /// The temporary file of a copy whose connection is gone: thrown away,
    /// unless it is on its way to disk (then it lands and is kept like any
    /// other copy).
    fn let_go_incoming(&mut self, temp: u64, blobs: &mut BlobStore, out: &mut Outbox<ServerEvent>) {
        if !self.landing.contains_key(&temp) {
            out.file(FileOp::Discard { temp });
            blobs.forget_handle(temp);
        }
    }

    /// A copy received is durable here as a blob.
    pub(super) fn on_persisted(
        &mut self,
        now: Timestamp,
        temp: u64,
        blobs: &mut BlobStore,
        out: &mut Outbox<ServerEvent>,
    ) {
        let conn = match blobs.owner(temp) {
            Some(Owner::Copy(conn)) => conn,
            _ => return,
        };
        blobs.forget_handle(temp);
        if let Some((d, after)) = self.landing.remove(&temp) {
            blobs.add_copy(now, d, after, out);
            blobs.unpin(&d);
        }
        let Some(id) = self.receiving(conn, temp) else {
            return;
        };
        if let Some((r, ..)) = (self.incoming.get_mut(&conn)).and_then(|i| i.receivers.get_mut(&id))
        {
            r.committed();
        }
        self.pump_incoming(now, conn, id, blobs, out);
    }

    /// The copy on `conn` whose temporary file is `temp`.
    fn receiving(&self, conn: ConnId, temp: u64) -> Option<u64> {
        let i = self.incoming.get(&conn)?;
        (i.receivers.iter())
            .find(|(_, (_, t, _))| *t == temp)
            .map(|(id, _)| *id)
    }

    /// A file operation of a copy failed: a read of a blob being sent, or
    /// the write or persist of one being received.
    pub(super) fn on_failed(
        &mut self,
        now: Timestamp,
        handle: u64,
        reason: TransferError,
        blobs: &mut BlobStore,
        out: &mut Outbox<ServerEvent>,
    ) {
        match blobs.owner(handle) {
            Some(Owner::Push(tid)) => {
                let why = format!("reading the blob: {reason}");
                self.fail_push(now, tid, &why, blobs, out);
            }
            Some(Owner::Copy(conn)) => {
                if let Some((d, _)) = self.landing.remove(&handle) {
                    blobs.unpin(&d);
                }
                let Some(id) = self.receiving(conn, handle) else {
                    return blobs.forget_handle(handle);
                };
                if let Some((r, ..)) =
                    (self.incoming.get_mut(&conn)).and_then(|i| i.receivers.get_mut(&id))
                {
                    r.fail(reason);
                }
                self.pump_incoming(now, conn, id, blobs, out);
            }
            _ => {}
        }
    }
}

/// A copy's blob handle, forgotten with the copy.
fn release(push: &Push, blobs: &mut BlobStore) {
    if let Source::Blob { handle, .. } = push.source {
        blobs.forget_handle(handle);
    }
}
