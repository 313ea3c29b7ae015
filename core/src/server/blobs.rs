//! File content on this server: blobs named by their BLAKE3 digest.
//!
//! The catalogue (who owns what) is replicated through the master's log;
//! content is not. After applying the log, a server fetches every blob the
//! catalogue names that it lacks, from the server that received the upload
//! (or, failing that, any other), with the same transfer engine clients
//! use, and removes every blob no file names any more. A fetch is verified
//! against the digest the catalogue holds before it is kept.
//!
//! The fetch link: the fetching server dials and sends
//! `Fetch { from, digest, mac }` (MACed with the cluster secret, so only
//! servers can fetch); the holder answers as a transfer sender.

use super::config::ServerConfig;
use super::event::ServerEvent;
use super::scrub::{hex, says_damaged, Scrubber, Verdict};
use crate::auth::ClusterSecret;
use crate::frame::{self, FrameDecoder};
use crate::io::{ConnId, FileOp, FileRef};
use crate::outbox::{drain_messages, Outbox};
use crate::refusal::{Refusal, PROTOCOL_VERSION};
use crate::replication::catalogue::Catalogue;
use crate::replication::entry::Origin;
use crate::replication::Replica;
use crate::time::Timestamp;
use crate::transfer::{
    Receiver, ReceiverOutput, Sender, SenderConfig, SenderOutput, TransferError, TransferMsg,
};
use speedy::{Readable, Writable};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq, Readable, Writable)]
#[speedy(tag_type = u8)]
pub enum BlobMsg {
    #[speedy(tag = 60)]
    Fetch {
        version: u16,
        from: u32,
        digest: [u8; 32],
        mac: [u8; 32],
    },
    #[speedy(tag = 61)]
    Transfer(TransferMsg),
    #[speedy(tag = 62)]
    Refused(Refusal),
    /// The first frame of a copy of an upload sent to this server (see
    /// `copies`): the sender then offers it as a transfer.
    #[speedy(tag = 63)]
    Push {
        version: u16,
        from: u32,
        nonce: [u8; 16],
        mac: [u8; 32],
    },
}

/// The first frame's tag of a copy's connection.
pub const PUSH_TAG: u8 = 63;

pub const BLOB_TAGS: std::ops::Range<u8> = 60..80;

/// A whole [`BlobStore::sync`] runs at least this often while entries are
/// applied (see [`BlobStore::sync_applied`]).
const FULL_SYNC: Duration = Duration::from_secs(5);
/// Dial numbers of fetch connections.
const FETCH_DIALS: u64 = 1 << 61;
const RETRY: Duration = Duration::from_secs(1);
/// How often a download waiting for a fetch hears how far it has come.
const FETCH_TELL_EVERY: Duration = Duration::from_secs(1);

/// Who a read handle or temporary file belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    Session(ConnId),
    Fetch([u8; 32]),
    Serve(ConnId),
    /// An upload whose session ended while its blob was being persisted.
    Orphan,
    /// A fetch of this content let go of (no longer wanted, or its link
    /// failed) after its blob was sent to disk: the blob lands anyway, and
    /// then counts like any other (kept if named, else collected).
    Landing([u8; 32]),
    /// The reads of a check of this blob (see `scrub`).
    Check([u8; 32]),
    /// The reads of a copy of a blob, by the copy's transfer id (`copies`).
    Push(u64),
    /// The temporary file of a copy received on this connection.
    Copy(ConnId),
    /// The temporary file of an upload cut off, kept to resume
    /// (`partials`).
    Kept,
}

struct Fetch {
    /// Index into the peers tried, round robin from the holder.
    attempt: usize,
    link: Option<FetchLink>,
    retry_at: Timestamp,
    /// When downloads waiting for this content are next told how far the
    /// fetch has come.
    tell_at: Timestamp,
}

struct FetchLink {
    conn: ConnId,
    decoder: FrameDecoder,
    receiver: Option<Receiver>,
    temp: u64,
    /// The blob was sent to disk (`Persist`); no answer yet.
    persisting: bool,
}

/// A copy of another server's upload, kept until `until`, or until an
/// entry naming it past log index `after` is applied here: the upload's
/// own `PutFile`, ordered after the copy landed. (Being named is not
/// enough: the same content may be named already by an older file, whose
/// deletion must not take this copy with it.)
struct Kept {
    until: Timestamp,
    after: u64,
}

struct Serving {
    decoder: FrameDecoder,
    sender: Option<Sender>,
    handle: u64,
}

/// Downloads waiting for content this server is fetching.
pub(super) trait Waiting {
    /// The fetch of `d` has `bytes` so far (said at most once a second).
    fn fetch_moved(
        &mut self,
        now: Timestamp,
        d: [u8; 32],
        bytes: u64,
        out: &mut Outbox<ServerEvent>,
    );
}

pub struct BlobStore {
    id: u32,
    secret: ClusterSecret,
    transfer_timeout: Duration,
    send_window: u64,
    have: BTreeSet<[u8; 32]>,
    /// Blobs stored by uploads not yet applied here: never garbage. Counted,
    /// since two uploads may store the same content; with the size, so the
    /// content can be served to a server whose catalogue names it before
    /// ours does (the master applies an upload before its own server).
    pins: BTreeMap<[u8; 32], (u32, u64)>,
    /// The pin of each upload sent to the master, released when its entry
    /// is applied here, whether or not its session still waits.
    ordered: BTreeMap<Origin, Vec<[u8; 32]>>,
    /// Collections run (`sync`), for tests that count them.
    pub(super) syncs: u64,
    /// Blobs found at start that nothing applied or logged names: perhaps
    /// uploads the previous run sent to the master, whose pins died with
    /// it. Kept until the replica says no such upload can still be ordered
    /// (`Replica::past_is_settled`), then collected like any garbage.
    held: BTreeSet<[u8; 32]>,
    /// The held blobs are kept at least until then: one may be a copy of
    /// an upload whose answer still counts on it (see `copies`). `None` once
    /// that time has passed (the hold then waits on the log alone, and a
    /// deadline in the past must not be offered as the next timeout).
    held_until: Option<Timestamp>,
    /// Blobs whose pin or read went since the last `tidy`: each may be
    /// garbage now. Only they are looked at (a scan of every blob per
    /// file made a batch of 1,000 small downloads spend two thirds of the
    /// server's time in it).
    unpinned: BTreeSet<[u8; 32]>,
    /// Copies of other servers' uploads, kept for a while even if nothing
    /// names them (see `copies`).
    kept: BTreeMap<[u8; 32], Kept>,
    /// How long a copy is kept, and what was found at start is held.
    copy_keep: Duration,
    next: u64,
    owners: BTreeMap<u64, Owner>,
    /// What each read handle reads: a blob being sent (a download, a copy
    /// to another server) is not garbage until the sending is over, so a
    /// file deleted or replaced meanwhile still arrives whole, as it was
    /// when it began.
    reads: BTreeMap<u64, [u8; 32]>,
    /// Temporary files of uploads, by the digest they will become.
    uploads: BTreeMap<u64, [u8; 32]>,
    fetches: BTreeMap<[u8; 32], Fetch>,
    serving: BTreeMap<ConnId, Serving>,
    /// Checks of blobs a receiver found damaged.
    scrub: Scrubber,
    next_dial: u64,
    /// Applied index at the last sync.
    synced_at: u64,
    /// When the last whole [`BlobStore::sync`] ran.
    full_at: Option<Timestamp>,
    /// Persists to a blob under way (a temporary file by the digest it
    /// becomes, and the removals of that blob issued before it): a
    /// damaged copy's removal queued behind one deletes what it persists
    /// (see [`BlobStore::persist_voided`]).
    persisting: BTreeMap<u64, ([u8; 32], u64)>,
    /// Removals of a damaged blob issued while a persist of it was under
    /// way, by digest.
    removals: BTreeMap<[u8; 32], u64>,
}

impl BlobStore {
    /// The store of a server whose disk holds `present`.
    pub fn new(cfg: &ServerConfig, secret: ClusterSecret, present: &[[u8; 32]]) -> Self {
        BlobStore {
            id: cfg.id,
            secret,
            transfer_timeout: cfg.transfer_timeout,
            send_window: cfg.send_window,
            have: present.iter().copied().collect(),
            pins: BTreeMap::new(),
            ordered: BTreeMap::new(),
            syncs: 0,
            held: BTreeSet::new(),
            held_until: None,
            unpinned: BTreeSet::new(),
            kept: BTreeMap::new(),
            copy_keep: cfg.copy_keep,
            // 0 is the client's one local file; servers start at 1.
            next: 1,
            owners: BTreeMap::new(),
            reads: BTreeMap::new(),
            uploads: BTreeMap::new(),
            fetches: BTreeMap::new(),
            serving: BTreeMap::new(),
            scrub: Scrubber::default(),
            next_dial: 0,
            synced_at: 0,
            full_at: None,
            persisting: BTreeMap::new(),
            removals: BTreeMap::new(),
        }
    }

    /// Temporary file `temp` is being persisted as blob `d` (by an
    /// upload, a copy that lands or a fetch).
    pub fn persist_begins(&mut self, temp: u64, d: [u8; 32]) {
        let removed = self.removals.get(&d).copied().unwrap_or(0);
        self.persisting.insert(temp, (d, removed));
    }

    /// The persist of `temp` is over (done or failed): true if the blob it
    /// made is gone already, removed as damaged by an operation issued
    /// after the persist (the disk runs them in order). A copy landing
    /// while its content's damaged copy was being removed: renamed into
    /// place (or kept out by the damaged file there), then deleted with it.
    pub fn persist_voided(&mut self, temp: u64) -> bool {
        let Some((d, removed)) = self.persisting.remove(&temp) else {
            return false;
        };
        let now_removed = self.removals.get(&d).copied().unwrap_or(0);
        if !self.persisting.values().any(|(p, _)| *p == d) {
            self.removals.remove(&d);
        }
        now_removed > removed
    }

    /// The applied index the blobs were last brought in line with.
    pub fn synced_at(&self) -> u64 {
        self.synced_at
    }

    pub fn has(&self, d: &[u8; 32]) -> bool {
        self.have.contains(d)
    }

    /// Blob `d` is no longer this server's (its file is being removed):
    /// a check of it has nothing left to say.
    pub fn lost(&mut self, d: &[u8; 32]) {
        self.have.remove(d);
        if self.persisting.values().any(|(p, _)| p == d) {
            *self.removals.entry(*d).or_default() += 1;
        }
        for h in self.scrub.drop_checks_of(d) {
            self.forget_handle(h);
        }
    }

    /// Upload temporary file `temp` is being persisted as blob `d`.
    pub fn expect_upload(&mut self, temp: u64, d: [u8; 32]) {
        self.uploads.insert(temp, d);
    }

    pub fn new_handle(&mut self, owner: Owner) -> u64 {
        let h = self.next;
        self.next += 1;
        self.owners.insert(h, owner);
        h
    }

    /// Hands handle `h` (a temporary file kept to resume, or taken up
    /// again by an upload) to `owner`.
    pub fn set_owner(&mut self, h: u64, owner: Owner) {
        self.owners.insert(h, owner);
    }

    pub fn owner(&self, h: u64) -> Option<Owner> {
        self.owners.get(&h).copied()
    }

    pub fn forget_handle(&mut self, h: u64) {
        self.owners.remove(&h);
        // The blob it read may be garbage now.
        if let Some(d) = self.reads.remove(&h) {
            self.unpinned.insert(d);
        }
        self.uploads.remove(&h);
    }

    pub fn read_target(&mut self, h: u64, d: [u8; 32]) {
        self.reads.insert(h, d);
    }

    pub fn read_file(&self, h: u64) -> Option<FileRef> {
        self.reads.get(&h).map(|d| FileRef::Blob(*d))
    }

    pub fn pin(&mut self, d: [u8; 32], size: u64) {
        self.pins.entry(d).or_insert((0, size)).0 += 1;
    }

    pub fn unpin(&mut self, d: &[u8; 32]) {
        if let Some((n, _)) = self.pins.get_mut(d) {
            *n -= 1;
            if *n == 0 {
                self.pins.remove(d);
                // A copy that landed is kept anyway: nothing to collect
                // (a collection per copy made batches of small files pay
                // a scan of every blob per file).
                if !self.kept.contains_key(d) {
                    self.unpinned.insert(*d);
                }
            }
        }
    }

    /// The size of pinned content (an upload not yet applied here).
    fn pinned_size(&self, d: &[u8; 32]) -> Option<u64> {
        self.pins.get(d).map(|(_, size)| *size)
    }

    /// The upload whose blob `d` is pinned was sent to the master as
    /// `origin`: its pin now lasts until that entry is applied here.
    pub fn pin_until_applied(&mut self, origin: Origin, ds: Vec<[u8; 32]>) {
        if let Some(old) = self.ordered.insert(origin, ds) {
            // An origin is used once; a second pin under it would leak.
            for d in old {
                self.unpin(&d);
            }
        }
    }

    /// `origin`'s entry was applied here: its upload's blob, if any, is
    /// named by the catalogue now or is garbage.
    pub fn applied(&mut self, origin: &Origin) {
        for d in self.ordered.remove(origin).unwrap_or_default() {
            self.unpin(&d);
        }
    }

    /// A copy of another server's upload is durable here as blob `d`: it
    /// is kept until `until` even if nothing names it by then, or until an
    /// entry applied since the copy began (`after`) names it. Counted from
    /// when the copy began, not from when it landed: the entry naming it
    /// may be applied here while it is still arriving (this disk the
    /// slowest of the majority), and the copy would otherwise outlive a
    /// file replaced at once by `copy_keep`. Whether the catalogue names
    /// it now says nothing: that may be another file of the same content,
    /// deleted before this upload's entry is ordered.
    pub fn add_copy(
        &mut self,
        now: Timestamp,
        d: [u8; 32],
        after: u64,
        out: &mut Outbox<ServerEvent>,
    ) {
        self.have.insert(d);
        // The entry naming it, applied while the copy was still arriving,
        // started a fetch of the same content: it has nothing left to do.
        self.drop_fetch(d, out);
        let kept = Kept {
            until: now + self.copy_keep,
            after,
        };
        self.kept.insert(d, kept);
    }

    /// An upload's temporary file became a blob.
    pub fn arrived(&mut self, temp: u64) -> Option<[u8; 32]> {
        let d = self.uploads.remove(&temp)?;
        self.have.insert(d);
        Some(d)
    }

    /// True if upload temp `temp` is being persisted as a blob.
    pub fn persisting(&self, temp: u64) -> bool {
        self.uploads.contains_key(&temp)
    }

    /// Upload temp `temp`'s blob could not be persisted (if it was being
    /// persisted at all): nothing will name it, so its pin goes.
    pub fn persist_failed(&mut self, temp: u64) {
        if let Some(d) = self.uploads.remove(&temp) {
            self.unpin(&d);
        }
    }

    /// The session of upload `temp` is gone while its blob is persisted:
    /// the blob will be unreferenced, and is collected once it lands.
    pub fn orphan(&mut self, temp: u64) {
        self.owners.insert(temp, Owner::Orphan);
    }

    pub fn want(&mut self, now: Timestamp, d: [u8; 32]) {
        // Pinned and not had: on its way to disk (an upload or a copy).
        // If it fails to land, its unpin brings a sync, and this again.
        if !self.have.contains(&d) && !self.pins.contains_key(&d) {
            self.fetches.entry(d).or_insert(Fetch {
                attempt: 0,
                link: None,
                retry_at: now,
                tell_at: now,
            });
        }
    }

    pub fn owns(&self, conn: ConnId) -> bool {
        self.serving.contains_key(&conn)
            || self
                .fetches
                .values()
                .any(|f| f.link.as_ref().is_some_and(|l| l.conn == conn))
    }

    fn fetch_of(&self, conn: ConnId) -> Option<[u8; 32]> {
        self.fetches
            .iter()
            .find(|(_, f)| f.link.as_ref().is_some_and(|l| l.conn == conn))
            .map(|(d, _)| *d)
    }

    pub fn poll_timeout(&self) -> Option<Timestamp> {
        // A fetch waits for `retry_at` to start again (no link), or to give
        // up on a link with no OFFER yet (dialed, or connected and asked):
        // a connection whose answer was lost must not wait forever.
        let retry = self
            .fetches
            .values()
            .filter(|f| f.link.as_ref().is_none_or(|l| l.receiver.is_none()))
            .map(|f| f.retry_at)
            .min();
        let recv = self
            .fetches
            .values()
            .filter_map(|f| f.link.as_ref()?.receiver.as_ref()?.poll_timeout())
            .min();
        let send = self
            .serving
            .values()
            .filter_map(|s| s.sender.as_ref()?.poll_timeout())
            .min();
        // Held and kept blobs are collected when their time is up.
        let held = self.held_until.filter(|_| !self.held.is_empty());
        let kept = self.kept.values().map(|k| k.until).min();
        [retry, recv, send, held, kept].into_iter().flatten().min()
    }
    /// At start: fetch what the applied catalogue names and the disk lacks
    /// (a fetch the crash cut short), without waiting for the log to move,
    /// and deal with content nothing names. Such a blob may be an upload
    /// the previous run sent to the master, whose `PutFile` this server has
    /// not received yet: removing it now could lose the content of a file
    /// about to be committed, keeping it for good would leak it. So it is
    /// held until no such upload can still be ordered, and then collected
    /// (see `Replica::past_is_settled`; a master knows at once).
    pub fn resume(&mut self, now: Timestamp, replica: &Replica, out: &mut Outbox<ServerEvent>) {
        let coming = coming(replica);
        let catalogue = replica.state().catalogue();
        let unnamed = (self.have.iter()).filter(|d| !catalogue.names(d) && !coming.contains(*d));
        self.held = unnamed.copied().collect();
        self.held_until = Some(now + self.copy_keep);
        self.sync(now, replica, out);
    }

    /// After each input: the blobs held since start go once the past is
    /// settled, and a blob whose last pin went (a failed or abandoned
    /// upload) or whose last reader finished (a download of a file deleted
    /// meanwhile) is collected now rather than at the log's next move.
    pub fn tidy(&mut self, now: Timestamp, replica: &Replica, out: &mut Outbox<ServerEvent>) {
        self.release_held(now, replica, out);
        let unpinned = std::mem::take(&mut self.unpinned);
        if unpinned.is_empty() {
            return;
        }
        // A copy kept for a while is not garbage (`is_garbage`): it is let
        // go of when its time is up (`handle_timeout`) or once its entry is
        // applied (`sync_applied`), not looked for here as each copy lands.
        self.collect(unpinned, replica, out);
    }

    /// Removes those of `candidates` this server has that are garbage now.
    fn collect(
        &mut self,
        candidates: BTreeSet<[u8; 32]>,
        replica: &Replica,
        out: &mut Outbox<ServerEvent>,
    ) {
        let catalogue = replica.state().catalogue();
        let coming = Coming::of(replica, &self.reads);
        for d in candidates {
            if self.have.contains(&d) && self.is_garbage(&d, catalogue, &coming) {
                self.lost(&d);
                out.file(FileOp::Remove {
                    file: FileRef::Blob(d),
                });
            }
        }
    }

    /// Lets the blobs held since start go, once the past is settled.
    fn release_held(&mut self, now: Timestamp, replica: &Replica, out: &mut Outbox<ServerEvent>) {
        if self.held_until.is_some_and(|t| now >= t) {
            self.held_until = None;
        }
        if !self.held.is_empty() && replica.past_is_settled() && self.held_until.is_none() {
            self.held.clear();
            self.sync(now, replica, out);
        }
    }

    /// After entries were applied: fetch what they name and this server
    /// lacks, and drop what nobody names any more among `released` (the
    /// contents files stopped naming: `Replica::take_released`) and the
    /// copies let go of. The same as [`BlobStore::sync`] for what those
    /// entries changed, without looking at every file and every blob: a
    /// batch of uploads is several entries, and a server holds millions of
    /// files. A whole sync still runs at least every [`FULL_SYNC`], should
    /// anything have changed otherwise (entries logged and then replaced
    /// by a new master's, say).
    pub fn sync_applied(
        &mut self,
        now: Timestamp,
        replica: &Replica,
        released: Vec<[u8; 32]>,
        out: &mut Outbox<ServerEvent>,
    ) {
        if self.full_at.is_none_or(|at| now >= at + FULL_SYNC) {
            return self.sync(now, replica, out);
        }
        self.syncs += 1;
        let applied = replica.indexes().applied;
        let catalogue = replica.state().catalogue();
        let new = (replica.log().get(self.synced_at as usize..applied as usize)).unwrap_or(&[]);
        // What an entry named and the catalogue does not (a duplicate of
        // an entry applied before, a file refused as it was applied) may
        // be garbage now: a collection before that entry was applied kept
        // it, as an entry to come named it.
        let mut unnamed = BTreeSet::new();
        for e in new {
            for d in e.txn.contents() {
                match catalogue.names(&d) {
                    true => self.want(now, d),
                    false => {
                        unnamed.insert(d);
                    }
                }
            }
        }
        self.synced_at = applied;
        let mut candidates: BTreeSet<[u8; 32]> = released.into_iter().collect();
        candidates.extend(unnamed);
        candidates.extend(self.release_kept(now, replica));
        self.collect(candidates, replica, out);
        self.drop_unwanted(replica, out);
        self.start_fetches(now, replica, out);
    }

    /// Brings this server's blobs in line with the catalogue it has applied:
    /// fetch what is missing, drop what nobody names.
    pub fn sync(&mut self, now: Timestamp, replica: &Replica, out: &mut Outbox<ServerEvent>) {
        self.syncs += 1;
        self.full_at = Some(now);
        self.synced_at = replica.indexes().applied;
        let catalogue = replica.state().catalogue();
        for d in catalogue.contents() {
            self.want(now, *d);
        }
        let _ = self.release_kept(now, replica);
        let coming = Coming::of(replica, &self.reads);
        let garbage: Vec<[u8; 32]> = (self.have.iter())
            .filter(|d| self.is_garbage(d, catalogue, &coming))
            .copied()
            .collect();
        for d in garbage {
            self.lost(&d);
            out.file(FileOp::Remove {
                file: FileRef::Blob(d),
            });
        }
        self.drop_unwanted(replica, out);
        self.start_fetches(now, replica, out);
    }

    /// Drops the fetches of content nothing names any more, or had since.
    fn drop_unwanted(&mut self, replica: &Replica, out: &mut Outbox<ServerEvent>) {
        let catalogue = replica.state().catalogue();
        let unwanted: Vec<[u8; 32]> = self
            .fetches
            .keys()
            .filter(|d| !catalogue.names(d) || self.have.contains(*d))
            .copied()
            .collect();
        for d in unwanted {
            self.drop_fetch(d, out);
        }
    }

    /// Lets go of the kept copies whose time is up, or whose upload's entry
    /// was applied. The entries applied since the oldest copy's are looked
    /// at once, not once per copy: a batch of small files keeps hundreds.
    /// Returns the copies let go of.
    fn release_kept(&mut self, now: Timestamp, replica: &Replica) -> Vec<[u8; 32]> {
        let Some(oldest) = self.kept.values().map(|k| k.after).min() else {
            return Vec::new();
        };
        let applied = replica.indexes().applied as usize;
        let log = replica.log();
        // Where each content is last named, from `oldest` on (positions in
        // the log: entry `after + 1` is at `after`).
        let mut named: BTreeMap<[u8; 32], u64> = BTreeMap::new();
        let since = log.get(oldest as usize..applied).unwrap_or(&[]);
        for (i, e) in since.iter().enumerate() {
            for d in e.txn.contents() {
                named.insert(d, oldest + i as u64);
            }
        }
        let mut gone = Vec::new();
        self.kept.retain(|d, k| {
            let named_since = named.get(d).is_some_and(|&at| at >= k.after);
            let keep = k.until > now && !named_since;
            if !keep {
                gone.push(*d);
            }
            keep
        });
        gone
    }

    /// Whether blob `d` is named by nothing: not by the catalogue nor an
    /// entry to come, and no read, pin, hold or kept copy needs it.
    fn is_garbage(&self, d: &[u8; 32], catalogue: &Catalogue, coming: &Coming) -> bool {
        !catalogue.names(d)
            && !coming.logged.contains(d)
            && !coming.reading.contains(d)
            && !self.pins.contains_key(d)
            && !self.held.contains(d)
            && !self.kept.contains_key(d)
    }

    fn drop_fetch(&mut self, d: [u8; 32], out: &mut Outbox<ServerEvent>) {
        if let Some(f) = self.fetches.remove(&d) {
            if let Some(link) = f.link {
                self.let_go(d, link, out);
            }
        }
    }

    /// Closes a fetch's link and throws its temporary file away; unless
    /// its blob is already on its way to disk: then it lands, and
    /// [`BlobStore::landed`] decides what becomes of it. Forgetting it
    /// instead would leave content on disk that this server does not know
    /// it has, and so never collects.
    fn let_go(&mut self, d: [u8; 32], link: FetchLink, out: &mut Outbox<ServerEvent>) {
        out.close(link.conn);
        if link.persisting {
            self.owners.insert(link.temp, Owner::Landing(d));
        } else {
            out.file(FileOp::Discard { temp: link.temp });
            self.forget_handle(link.temp);
        }
    }

    fn start_fetches(&mut self, now: Timestamp, replica: &Replica, out: &mut Outbox<ServerEvent>) {
        let due: Vec<[u8; 32]> = self
            .fetches
            .iter()
            .filter(|(_, f)| f.link.is_none() && f.retry_at <= now)
            .map(|(d, _)| *d)
            .collect();
        let peers = replica.peers().to_vec();
        if peers.is_empty() {
            // Nobody to fetch from (a cluster of one whose copy was lost):
            // look again later rather than at once, forever.
            for d in due {
                if let Some(f) = self.fetches.get_mut(&d) {
                    f.retry_at = now + RETRY;
                }
            }
            return;
        }
        for d in due {
            let holder = replica.state().catalogue().with_content(&d);
            let holder = holder.map(|f| f.holder);
            let Some(f) = self.fetches.get_mut(&d) else {
                continue;
            };
            // The holder first, then every other server in turn.
            let start = peers.iter().position(|p| Some(p.id) == holder).unwrap_or(0);
            let peer = &peers[(start + f.attempt) % peers.len()];
            f.attempt += 1;
            let conn = ConnId::dialed(FETCH_DIALS | self.next_dial);
            self.next_dial += 1;
            let temp = self.new_handle(Owner::Fetch(d));
            if let Some(f) = self.fetches.get_mut(&d) {
                f.link = Some(FetchLink {
                    conn,
                    decoder: FrameDecoder::default(),
                    receiver: None,
                    temp,
                    persisting: false,
                });
                f.retry_at = now + self.transfer_timeout;
            }
            out.connect(conn, peer.addr.clone());
        }
    }

    /// A fetch's dial reached its server: ask for the content.
    pub fn on_connected(&mut self, conn: ConnId, replica: &Replica, out: &mut Outbox<ServerEvent>) {
        let Some(d) = self.fetch_of(conn) else {
            return;
        };
        let Some(to) = self.peer_of_fetch(d, replica) else {
            return;
        };
        let mut challenge = [0u8; 16];
        challenge.copy_from_slice(&d[..16]);
        let mac = self.secret.peer_proof(self.id, to, &challenge);
        let msg = BlobMsg::Fetch {
            version: PROTOCOL_VERSION,
            from: self.id,
            digest: d,
            mac,
        };
        out.send(conn, &msg);
    }

    fn peer_of_fetch(&self, d: [u8; 32], replica: &Replica) -> Option<u32> {
        let f = self.fetches.get(&d)?;
        let peers = replica.peers();
        let holder = replica.state().catalogue().with_content(&d);
        let holder = holder.map(|m| m.holder);
        let start = peers.iter().position(|p| Some(p.id) == holder).unwrap_or(0);
        peers
            .get((start + f.attempt.saturating_sub(1)) % peers.len().max(1))
            .map(|p| p.id)
    }

    /// A fetch connection broke, closed or could not open: try again later,
    /// from the next server.
    pub fn on_closed(&mut self, now: Timestamp, conn: ConnId, out: &mut Outbox<ServerEvent>) {
        if let Some(d) = self.fetch_of(conn) {
            return self.fetch_failed(now, d, out);
        }
        if let Some(s) = self.serving.remove(&conn) {
            self.forget_handle(s.handle);
        }
    }

    fn fetch_failed(&mut self, now: Timestamp, d: [u8; 32], out: &mut Outbox<ServerEvent>) {
        let Some(f) = self.fetches.get_mut(&d) else {
            return;
        };
        f.retry_at = now + RETRY;
        if let Some(link) = f.link.take() {
            self.let_go(d, link, out);
        }
    }

    fn fetched(&mut self, temp: u64, d: [u8; 32], out: &mut Outbox<ServerEvent>) {
        self.forget_handle(temp);
        self.have.insert(d);
        if let Some(f) = self.fetches.remove(&d) {
            if let Some(mut link) = f.link {
                if let Some(r) = link.receiver.as_mut() {
                    r.committed();
                    while let Some(o) = r.poll_output() {
                        if let ReceiverOutput::Send(m) = o {
                            out.send(link.conn, &BlobMsg::Transfer(m));
                        }
                    }
                }
                out.close(link.conn);
            }
        }
    }

    /// The blob of a fetch let go of while it was persisted is on disk
    /// (see [`BlobStore::let_go`]): it is this server's now, collected at
    /// once if nothing names it; a fetch of it still going on is dropped.
    /// True if it stays, and downloads waiting for it can start.
    fn landed(
        &mut self,
        now: Timestamp,
        temp: u64,
        d: [u8; 32],
        replica: &Replica,
        out: &mut Outbox<ServerEvent>,
    ) -> bool {
        self.forget_handle(temp);
        self.have.insert(d);
        self.sync(now, replica, out);
        self.has(&d)
    }

    /// Holder side: a connection whose first frame is a fetch request.
    pub fn adopt(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        decoder: FrameDecoder,
        first: &[u8],
        replica: &Replica,
        out: &mut Outbox<ServerEvent>,
    ) {
        let refuse = |out: &mut Outbox<ServerEvent>, r: Refusal| {
            out.send(conn, &BlobMsg::Refused(r));
            out.close(conn);
        };
        let (from, digest, mac) = match frame::decode::<BlobMsg>(first) {
            Ok(BlobMsg::Fetch { version, .. }) if version != PROTOCOL_VERSION => {
                return refuse(
                    out,
                    Refusal::VersionMismatch {
                        ours: PROTOCOL_VERSION,
                        theirs: version,
                    },
                )
            }
            Ok(BlobMsg::Fetch {
                from, digest, mac, ..
            }) => (from, digest, mac),
            Ok(other) => {
                return refuse(
                    out,
                    Refusal::Unexpected {
                        what: format!("{other:?}"),
                    },
                )
            }
            Err(e) => {
                return refuse(
                    out,
                    Refusal::Malformed {
                        detail: e.to_string(),
                    },
                )
            }
        };
        let mut challenge = [0u8; 16];
        challenge.copy_from_slice(&digest[..16]);
        let want = self.secret.peer_proof(from, self.id, &challenge);
        if blake3::Hash::from(want) != blake3::Hash::from(mac) {
            return refuse(out, Refusal::BadCode);
        }
        let handle = self.new_handle(Owner::Serve(conn));
        let mut serving = Serving {
            decoder,
            sender: None,
            handle,
        };
        if self.has(&digest) {
            self.read_target(handle, digest);
            let cfg = SenderConfig {
                give_up: self.transfer_timeout,
                window: self.send_window.max(1),
                ..SenderConfig::default()
            };
            match self.content_size(&digest, replica) {
                Some(size) => {
                    serving.sender =
                        Some(Sender::new(now, handle, hex(&digest), size, cfg).with_digest(digest))
                }
                None => {
                    let m = TransferMsg::Reject {
                        id: handle,
                        reason: TransferError::NotFound,
                    };
                    out.send(conn, &BlobMsg::Transfer(m));
                }
            }
        } else {
            let m = TransferMsg::Reject {
                id: handle,
                reason: TransferError::NotFound,
            };
            out.send(conn, &BlobMsg::Transfer(m));
        }
        self.serving.insert(conn, serving);
        self.pump_serving(now, conn, replica, out);
    }

    pub fn on_bytes(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        bytes: &[u8],
        replica: &Replica,
        out: &mut Outbox<ServerEvent>,
        waiting: &mut dyn Waiting,
    ) {
        let mut msgs = Vec::new();
        let res = if let Some(s) = self.serving.get_mut(&conn) {
            s.decoder.push(bytes);
            drain_messages::<BlobMsg>(&mut s.decoder, &mut msgs)
        } else if let Some(d) = self.fetch_of(conn) {
            let Some(link) = self.fetches.get_mut(&d).and_then(|f| f.link.as_mut()) else {
                return;
            };
            link.decoder.push(bytes);
            drain_messages::<BlobMsg>(&mut link.decoder, &mut msgs)
        } else {
            return;
        };
        for m in msgs {
            match m {
                BlobMsg::Transfer(t) => self.on_transfer(now, conn, t, replica, out, waiting),
                _ => return self.on_closed(now, conn, out),
            }
        }
        if res.is_err() {
            out.close(conn);
            self.on_closed(now, conn, out);
        }
    }

    fn on_transfer(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        t: TransferMsg,
        replica: &Replica,
        out: &mut Outbox<ServerEvent>,
        waiting: &mut dyn Waiting,
    ) {
        if let Some(s) = self.serving.get_mut(&conn) {
            if let Some(sender) = s.sender.as_mut() {
                sender.on_msg(now, t);
            }
            return self.pump_serving(now, conn, replica, out);
        }
        let Some(d) = self.fetch_of(conn) else {
            return;
        };
        let timeout = self.transfer_timeout;
        let Some(link) = self.fetches.get_mut(&d).and_then(|f| f.link.as_mut()) else {
            return;
        };
        match (&mut link.receiver, t) {
            (None, TransferMsg::Offer { id, name, size }) => {
                let mut r = Receiver::new(now, id, name, size, timeout);
                r.accept(now);
                link.receiver = Some(r);
            }
            (Some(r), t) => r.on_msg(now, t),
            (None, _) => return self.fetch_failed(now, d, out),
        }
        self.pump_fetch(now, d, out, waiting);
    }

    fn pump_fetch(
        &mut self,
        now: Timestamp,
        d: [u8; 32],
        out: &mut Outbox<ServerEvent>,
        waiting: &mut dyn Waiting,
    ) {
        let Some(link) = self.fetches.get_mut(&d).and_then(|f| f.link.as_mut()) else {
            return;
        };
        let (conn, temp) = (link.conn, link.temp);
        let Some(r) = link.receiver.as_mut() else {
            return;
        };
        let mut failed = false;
        let mut arrived = None;
        let mut persisting = false;
        while let Some(o) = r.poll_output() {
            match o {
                ReceiverOutput::Send(m) => out.send(conn, &BlobMsg::Transfer(m)),
                ReceiverOutput::Write { offset, data } => {
                    out.file(FileOp::Write { temp, offset, data })
                }
                // Only the content the catalogue names is kept.
                ReceiverOutput::Commit { digest } if digest == d => {
                    persisting = true;
                    out.file(FileOp::Persist {
                        temp,
                        to: FileRef::Blob(d),
                    })
                }
                ReceiverOutput::Commit { .. } => {
                    r.fail(TransferError::DigestMismatch);
                }
                // A fetch never resumes: nothing is read back.
                ReceiverOutput::Discard
                | ReceiverOutput::Read { .. }
                | ReceiverOutput::Resumed { .. }
                | ReceiverOutput::StartOver { .. } => {}
                ReceiverOutput::Progress { bytes } => arrived = Some(bytes),
                ReceiverOutput::Finished(Ok(_)) => {}
                ReceiverOutput::Finished(Err(_)) => failed = true,
            }
        }
        if persisting {
            link.persisting = true;
            self.persist_begins(temp, d);
        }
        if failed {
            return self.fetch_failed(now, d, out);
        }
        if let Some(bytes) = arrived {
            self.tell_waiting(now, d, bytes, out, waiting);
        }
    }

    /// The fetch of `d` moved: downloads waiting for it hear how far it
    /// has come, at most once a second.
    fn tell_waiting(
        &mut self,
        now: Timestamp,
        d: [u8; 32],
        bytes: u64,
        out: &mut Outbox<ServerEvent>,
        waiting: &mut dyn Waiting,
    ) {
        let Some(fetch) = self.fetches.get_mut(&d) else {
            return;
        };
        if now < fetch.tell_at {
            return;
        }
        fetch.tell_at = now + FETCH_TELL_EVERY;
        waiting.fetch_moved(now, d, bytes, out);
    }

    /// The size of content `d`, from the catalogue or an upload's pin.
    fn content_size(&self, d: &[u8; 32], replica: &Replica) -> Option<u64> {
        let catalogue = replica.state().catalogue();
        let named = catalogue.with_content(d).map(|f| f.size);
        named.or_else(|| self.pinned_size(d))
    }

    fn pump_serving(
        &mut self,
        now: Timestamp,
        conn: ConnId,
        replica: &Replica,
        out: &mut Outbox<ServerEvent>,
    ) {
        let Some(s) = self.serving.get_mut(&conn) else {
            return;
        };
        let handle = s.handle;
        let file = self.reads.get(&handle).map(|d| FileRef::Blob(*d));
        let Some(sender) = s.sender.as_mut() else {
            return;
        };
        let mut done = false;
        let mut damaged = false;
        while let Some(o) = sender.poll_output() {
            match o {
                SenderOutput::Send(m) => out.send(conn, &BlobMsg::Transfer(m)),
                SenderOutput::Read { offset, len } => {
                    if let Some(file) = &file {
                        out.file(FileOp::Read {
                            handle,
                            file: file.clone(),
                            offset,
                            len,
                        });
                    }
                }
                // A fetching server never offers to resume.
                SenderOutput::Progress { .. }
                | SenderOutput::Resumed { .. }
                | SenderOutput::StartedOver { .. } => {}
                SenderOutput::Finished(result) => {
                    done = true;
                    damaged = says_damaged(&result);
                }
            }
        }
        if done {
            self.serving.remove(&conn);
            self.forget_handle(handle);
            out.close(conn);
        }
        if let (true, Some(FileRef::Blob(d))) = (damaged, file) {
            self.suspect(now, d, replica, out);
        }
    }

    pub fn handle_timeout(
        &mut self,
        now: Timestamp,
        replica: &Replica,
        out: &mut Outbox<ServerEvent>,
        waiting: &mut dyn Waiting,
    ) {
        let fetching: Vec<[u8; 32]> = self.fetches.keys().copied().collect();
        for d in fetching {
            let expired = match self.fetches.get_mut(&d).and_then(|f| f.link.as_mut()) {
                Some(FetchLink {
                    receiver: Some(r), ..
                }) => {
                    r.handle_timeout(now);
                    false
                }
                // Connected but no offer in time.
                Some(_) => self.fetches.get(&d).is_some_and(|f| f.retry_at <= now),
                None => false,
            };
            if expired {
                self.fetch_failed(now, d, out);
            } else {
                self.pump_fetch(now, d, out, waiting);
            }
        }
        let serving: Vec<ConnId> = self.serving.keys().copied().collect();
        for conn in serving {
            if let Some(sender) = self.serving.get_mut(&conn).and_then(|s| s.sender.as_mut()) {
                sender.handle_timeout(now);
            }
            self.pump_serving(now, conn, replica, out);
        }
        self.start_fetches(now, replica, out);
        if self.kept.values().any(|k| k.until <= now) {
            self.sync(now, replica, out);
        }
    }

    /// A read of a handle that is not a session's came back.
    pub fn on_read(
        &mut self,
        now: Timestamp,
        handle: u64,
        offset: u64,
        data: &[u8],
        replica: &Replica,
        out: &mut Outbox<ServerEvent>,
    ) {
        match self.owner(handle) {
            Some(Owner::Serve(conn)) => {
                if let Some(sender) = self.serving.get_mut(&conn).and_then(|s| s.sender.as_mut()) {
                    sender.on_read(offset, data);
                }
                self.pump_serving(now, conn, replica, out);
            }
            Some(Owner::Check(_)) => {
                if let Some(verdict) = self.scrub.on_read(handle, offset, data, out) {
                    self.check_done(now, handle, verdict, replica, out);
                }
            }
            _ => {}
        }
    }

    /// A temporary file that is not a session's became a blob. `Some(d)` if
    /// content `d` is this server's now, and downloads waiting for it can
    /// start.
    pub fn on_persisted(
        &mut self,
        now: Timestamp,
        temp: u64,
        replica: &Replica,
        out: &mut Outbox<ServerEvent>,
    ) -> Option<[u8; 32]> {
        match self.owner(temp) {
            Some(Owner::Fetch(d)) => {
                self.fetched(temp, d, out);
                Some(d)
            }
            Some(Owner::Landing(d)) => self.landed(now, temp, d, replica, out).then_some(d),
            Some(Owner::Orphan) => {
                if let Some(d) = self.arrived(temp) {
                    self.unpin(&d);
                }
                self.forget_handle(temp);
                self.sync(now, replica, out);
                None
            }
            _ => None,
        }
    }

    /// A file operation of a handle that is not a session's failed.
    #[allow(clippy::too_many_arguments)]
    pub fn on_failed(
        &mut self,
        now: Timestamp,
        handle: u64,
        reason: TransferError,
        error: String,
        missing: bool,
        replica: &Replica,
        out: &mut Outbox<ServerEvent>,
    ) {
        match self.owner(handle) {
            Some(Owner::Fetch(d)) => self.fetch_failed(now, d, out),
            Some(Owner::Serve(conn)) => {
                if let Some(sender) = self.serving.get_mut(&conn).and_then(|s| s.sender.as_mut()) {
                    sender.fail(reason);
                }
                self.pump_serving(now, conn, replica, out);
            }
            Some(Owner::Check(_)) => {
                if let Some(verdict) = self.scrub.on_failed(handle, error, missing) {
                    self.check_done(now, handle, verdict, replica, out);
                }
            }
            Some(Owner::Orphan) => {
                self.persist_failed(handle);
                self.forget_handle(handle);
            }
            // The fetch was let go of already (and tried again if the
            // content is still wanted).
            Some(Owner::Landing(_)) => self.forget_handle(handle),
            Some(Owner::Session(_) | Owner::Push(_) | Owner::Copy(_) | Owner::Kept) | None => {}
        }
    }

    /// A receiver of blob `d` from this server found it damaged: check it,
    /// unless a check of it already runs (see `scrub`).
    pub fn suspect(
        &mut self,
        now: Timestamp,
        d: [u8; 32],
        replica: &Replica,
        out: &mut Outbox<ServerEvent>,
    ) {
        if !self.has(&d) || self.scrub.checking(&d) {
            return;
        }
        let Some(size) = self.content_size(&d, replica) else {
            return;
        };
        let handle = self.new_handle(Owner::Check(d));
        self.read_target(handle, d);
        if let Some(verdict) = self.scrub.start(handle, d, size, out) {
            self.check_done(now, handle, verdict, replica, out);
        }
    }

    /// A check is over: a damaged copy is removed, and fetched again if the
    /// catalogue names it.
    fn check_done(
        &mut self,
        now: Timestamp,
        handle: u64,
        verdict: Verdict,
        replica: &Replica,
        out: &mut Outbox<ServerEvent>,
    ) {
        let Some(d) = self.scrub.finish(handle) else {
            return;
        };
        self.forget_handle(handle);
        let damaged = matches!(verdict, Verdict::Damaged { .. });
        out.event(ServerEvent::BlobChecked {
            digest: hex(&d)[..16].to_string(),
            verdict,
        });
        if damaged && self.has(&d) {
            self.lost(&d);
            out.file(FileOp::Remove {
                file: FileRef::Blob(d),
            });
            self.sync(now, replica, out);
        }
    }
}

/// The digests that logged but not yet applied uploads name: kept like
/// those the catalogue names (a restarted master holds such entries, and
/// its pins were lost with its memory).
/// What a blob may still be needed for besides the catalogue: the entries
/// logged and not yet applied, and the reads under way.
struct Coming {
    logged: BTreeSet<[u8; 32]>,
    reading: BTreeSet<[u8; 32]>,
}

impl Coming {
    fn of(replica: &Replica, reads: &BTreeMap<u64, [u8; 32]>) -> Self {
        Coming {
            logged: coming(replica),
            reading: reads.values().copied().collect(),
        }
    }
}

fn coming(replica: &Replica) -> BTreeSet<[u8; 32]> {
    let applied = replica.indexes().applied as usize;
    let log = replica.log().iter().skip(applied);
    log.flat_map(|e| e.txn.contents()).collect()
}

#[cfg(test)]
mod persist_tests {
    use super::*;

    fn store() -> BlobStore {
        let secret = ClusterSecret::from_bytes(b"a-cluster-secret-for-tests-only").unwrap();
        BlobStore::new(&ServerConfig::new(1), secret, &[[7; 32]])
    }

    /// A damaged copy's removal issued while a persist of the same
    /// content is under way deletes what that persist makes (the disk
    /// runs them in order): the persist must not count. One issued after
    /// the removal stands. (Found by a files seed with a rot and a slow
    /// disk: an upload answered "stored" on the strength of a copy that
    /// landed on a server and was deleted at once with the damaged copy
    /// it replaced.)
    #[test]
    fn a_persist_under_way_when_its_blob_is_removed_as_damaged_does_not_count() {
        let mut s = store();
        let d = [7; 32];
        s.persist_begins(10, d);
        s.persist_begins(11, [8; 32]);
        s.lost(&d);
        s.persist_begins(12, d);
        assert!(s.persist_voided(10), "issued before the removal");
        assert!(!s.persist_voided(11), "another blob's");
        assert!(!s.persist_voided(12), "issued after the removal");
        assert!(!s.persist_voided(10), "told once");
        assert!(
            s.removals.is_empty() && s.persisting.is_empty(),
            "nothing kept"
        );
    }
}
