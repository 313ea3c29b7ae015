//! Partial uploads: what a server keeps of an upload cut off, so that the
//! same upload tried again resumes instead of starting over.
//!
//! When a client's session ends in the middle of a single upload (the
//! client was killed, its connection broke) or its transfer times out or
//! is cancelled, the upload's temporary file is not thrown away: it is
//! kept here, under (user, name, size), with the number of bytes written
//! to it from the start. An upload of the same name and size by the same
//! user takes it up again ([`Partials::take`]); the transfer engine then
//! reads the kept bytes back, hashes them and offers them to the client
//! with RESUME, which compares them with its own file (see
//! `transfer::receiver`). Nothing of the kept bytes is trusted: what the
//! disk holds is hashed when they are offered, and DONE's digest covers
//! the whole file as always.
//!
//! Bounded: a partial upload is dropped `partial_keep` (an hour) after it
//! was kept, when a newer one of the same key replaces it, when an upload
//! of that name by that user completes here, when the user is gone
//! (account deleted), and, oldest first, when the bytes kept exceed
//! `partial_user_bytes` for its user or `partial_bytes` for the server.
//!
//! In memory only: temporary files are removed when a server starts, so a
//! restart drops every partial upload (the next try starts over). Nor are
//! they replicated: another server knows nothing of it, which is why a
//! client tries the server of its last interrupted upload first.

use super::blobs::{BlobStore, Owner};
use super::event::ServerEvent;
use crate::io::FileOp;
use crate::outbox::Outbox;
use crate::time::Timestamp;
use std::collections::BTreeMap;
use std::time::Duration;

/// Which upload a partial file is of.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct PartialKey {
    pub(super) user: u64,
    pub(super) name: String,
    pub(super) size: u64,
}

/// A partial upload kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Kept {
    /// Its temporary file.
    pub(super) temp: u64,
    /// Bytes written to it from the start (what the disk holds).
    pub(super) bytes: u64,
    /// When it was kept; `None` until the next input that tells the time
    /// (a session may end where no time is at hand).
    since: Option<Timestamp>,
    /// Order of keeping, for the oldest-first rule among equal times.
    order: u64,
}

pub(super) struct Partials {
    keep: Duration,
    max_bytes: u64,
    max_user_bytes: u64,
    kept: BTreeMap<PartialKey, Kept>,
    next_order: u64,
}

impl Partials {
    pub(super) fn new(keep: Duration, max_bytes: u64, max_user_bytes: u64) -> Self {
        Partials {
            keep,
            max_bytes,
            max_user_bytes,
            kept: BTreeMap::new(),
            next_order: 0,
        }
    }

    /// Bytes kept in all.
    pub(super) fn bytes(&self) -> u64 {
        self.kept.values().map(|k| k.bytes).sum()
    }

    /// Partial uploads kept.
    pub(super) fn len(&self) -> usize {
        self.kept.len()
    }

    /// The partial upload kept under `key`, if any (for tests).
    #[cfg(test)]
    pub(super) fn get(&self, key: &PartialKey) -> Option<&Kept> {
        self.kept.get(key)
    }

    /// Keeps temporary file `temp`, holding the first `bytes` of the
    /// upload `key`, then makes room (see the module docs). A partial
    /// upload of the same key kept before is replaced.
    pub(super) fn keep(
        &mut self,
        key: PartialKey,
        temp: u64,
        bytes: u64,
        blobs: &mut BlobStore,
        out: &mut Outbox<ServerEvent>,
    ) {
        blobs.set_owner(temp, Owner::Kept);
        out.event(ServerEvent::PartialKept {
            user: key.user,
            name: key.name.clone(),
            size: key.size,
            bytes,
        });
        self.next_order += 1;
        let kept = Kept {
            temp,
            bytes,
            since: None,
            order: self.next_order,
        };
        if let Some(old) = self.kept.insert(key.clone(), kept) {
            if old.temp != temp {
                let why = "a newer partial upload of the file replaced it";
                drop_file(&key, &old, why, blobs, out);
            }
        }
        self.make_room(key.user, blobs, out);
    }

    /// Drops the oldest partial uploads while `user`'s, or all, take more
    /// than allowed.
    fn make_room(&mut self, user: u64, blobs: &mut BlobStore, out: &mut Outbox<ServerEvent>) {
        loop {
            let of_user: u64 = (self.kept.iter())
                .filter(|(k, _)| k.user == user)
                .map(|(_, v)| v.bytes)
                .sum();
            let (pick_user, why) = if of_user > self.max_user_bytes {
                (true, "the user's partial uploads took more than allowed")
            } else if self.bytes() > self.max_bytes {
                (false, "the server's partial uploads took more than allowed")
            } else {
                return;
            };
            // Oldest first: kept earliest (a time not told yet is now).
            let oldest = (self.kept.iter())
                .filter(|(k, _)| !pick_user || k.user == user)
                .min_by_key(|(_, v)| (v.since.is_none(), v.since, v.order))
                .map(|(k, _)| k.clone());
            let Some(key) = oldest else {
                return;
            };
            self.drop_key(&key, why, blobs, out);
        }
    }

    /// Takes the partial upload of `key` for an upload of it that begins:
    /// it is that upload's temporary file from now on.
    pub(super) fn take(&mut self, key: &PartialKey) -> Option<Kept> {
        self.kept.remove(key)
    }

    /// An upload of `name` by `user` completed: what was kept of it, of
    /// any size, is of no more use.
    pub(super) fn completed(
        &mut self,
        user: u64,
        name: &str,
        blobs: &mut BlobStore,
        out: &mut Outbox<ServerEvent>,
    ) {
        let keys: Vec<PartialKey> = (self.kept.keys())
            .filter(|k| k.user == user && k.name == name)
            .cloned()
            .collect();
        for key in keys {
            self.drop_key(&key, "an upload of that name completed", blobs, out);
        }
    }

    /// A write to kept temporary file `temp` failed: it has a hole. True
    /// if it was one of these.
    pub(super) fn failed(
        &mut self,
        temp: u64,
        blobs: &mut BlobStore,
        out: &mut Outbox<ServerEvent>,
    ) -> bool {
        let key = (self.kept.iter())
            .find(|(_, v)| v.temp == temp)
            .map(|(k, _)| k.clone());
        match key {
            Some(key) => {
                self.drop_key(&key, "a write of it failed", blobs, out);
                true
            }
            None => false,
        }
    }

    /// Dates what was kept since the last call, and drops what expired
    /// and what belongs to users that are gone.
    pub(super) fn tidy(
        &mut self,
        now: Timestamp,
        user_exists: impl Fn(u64) -> bool,
        blobs: &mut BlobStore,
        out: &mut Outbox<ServerEvent>,
    ) {
        let mut gone = Vec::new();
        for (k, v) in self.kept.iter_mut() {
            let since = *v.since.get_or_insert(now);
            if !user_exists(k.user) {
                gone.push((k.clone(), "its user is gone"));
            } else if now.saturating_since(since) >= self.keep {
                gone.push((k.clone(), "it expired"));
            }
        }
        for (key, why) in gone {
            self.drop_key(&key, why, blobs, out);
        }
    }

    /// When the next partial upload expires.
    pub(super) fn poll_timeout(&self) -> Option<Timestamp> {
        (self.kept.values())
            .filter_map(|v| v.since)
            .map(|t| t + self.keep)
            .min()
    }

    fn drop_key(
        &mut self,
        key: &PartialKey,
        why: &'static str,
        blobs: &mut BlobStore,
        out: &mut Outbox<ServerEvent>,
    ) {
        if let Some(kept) = self.kept.remove(key) {
            drop_file(key, &kept, why, blobs, out);
        }
    }
}

fn drop_file(
    key: &PartialKey,
    kept: &Kept,
    why: &'static str,
    blobs: &mut BlobStore,
    out: &mut Outbox<ServerEvent>,
) {
    out.file(FileOp::Discard { temp: kept.temp });
    blobs.forget_handle(kept.temp);
    out.event(ServerEvent::PartialDropped {
        user: key.user,
        name: key.name.clone(),
        bytes: kept.bytes,
        why,
    });
}
