//! A peer's listing with digests, for SYNC: the directory listed, then
//! every file whose size or modification time changed since it was last
//! hashed read through once (in large reads) and hashed with BLAKE3. One
//! scan at a time; whoever asks while one runs waits for it.

use super::sync_plan::SyncEntry;
use crate::io::{DirEntry, FileOp, FileRef};
use std::collections::{BTreeMap, VecDeque};

/// File handles of SYNC's own work (listings, reads, renames) start here,
/// clear of the transfers'.
pub(super) const SYNC_FILES: u64 = 1 << 60;
/// How much one read of a file being hashed asks for.
const READ: usize = 256 * 1024;

struct Hashing {
    entry: DirEntry,
    handle: u64,
    hasher: blake3::Hasher,
    offset: u64,
}

enum State {
    Idle,
    Listing {
        handle: u64,
    },
    Hashing {
        todo: VecDeque<DirEntry>,
        current: Box<Hashing>,
        done: Vec<SyncEntry>,
    },
}

pub(super) struct Scanner {
    next: u64,
    cache: BTreeMap<String, SyncEntry>,
    state: State,
}

impl Scanner {
    pub(super) fn new() -> Self {
        Scanner {
            next: SYNC_FILES,
            cache: BTreeMap::new(),
            state: State::Idle,
        }
    }

    /// A fresh handle of SYNC's range.
    pub(super) fn handle(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    pub(super) fn is_running(&self) -> bool {
        !matches!(self.state, State::Idle)
    }

    /// Starts a scan unless one runs; its end comes from `on_*`.
    pub(super) fn start(&mut self, ops: &mut Vec<FileOp>) {
        if self.is_running() {
            return;
        }
        let handle = self.handle();
        self.state = State::Listing { handle };
        ops.push(FileOp::List { handle });
    }

    /// The node changed `name` itself (a file landed under it, or it was
    /// renamed or removed): its digest is computed again at the next scan.
    /// Size and modification time alone cannot tell: a SYNC copy keeps its
    /// original's modification time, so a version that takes a name may
    /// match the one set aside in both.
    pub(super) fn forget(&mut self, name: &str) {
        self.cache.remove(name);
    }

    /// The digest last computed for `name`, if it is still current.
    pub(super) fn known(&self, name: &str) -> Option<&SyncEntry> {
        self.cache.get(name)
    }

    /// The directory's listing: `Some(entries)` when the scan is done.
    pub(super) fn on_listed(
        &mut self,
        handle: u64,
        entries: &[DirEntry],
        ops: &mut Vec<FileOp>,
    ) -> Option<Vec<SyncEntry>> {
        if !matches!(self.state, State::Listing { handle: h } if h == handle) {
            return None;
        }
        let mut done = Vec::new();
        let mut todo = VecDeque::new();
        // A name other peers would refuse (not NFC, invisible characters)
        // is not offered in a round: it could never be sent.
        let entries: Vec<&DirEntry> = (entries.iter())
            .filter(|e| crate::server::check_name(&e.name).is_ok())
            .collect();
        for e in entries.iter().copied() {
            match self.cache.get(&e.name) {
                Some(c) if c.size == e.size && c.modified_ms == e.modified_ms => {
                    done.push(c.clone())
                }
                _ => todo.push_back(e.clone()),
            }
        }
        // Names gone from the directory are gone from the cache.
        self.cache
            .retain(|n, _| entries.iter().any(|e| &e.name == n));
        self.next_file(todo, done, ops)
    }

    fn next_file(
        &mut self,
        mut todo: VecDeque<DirEntry>,
        done: Vec<SyncEntry>,
        ops: &mut Vec<FileOp>,
    ) -> Option<Vec<SyncEntry>> {
        let Some(entry) = todo.pop_front() else {
            self.state = State::Idle;
            let mut done = done;
            done.sort_by(|a, b| a.name.cmp(&b.name));
            return Some(done);
        };
        let handle = self.handle();
        ops.push(FileOp::Read {
            handle,
            file: FileRef::Named(entry.name.clone()),
            offset: 0,
            len: READ,
        });
        let current = Box::new(Hashing {
            entry,
            handle,
            hasher: blake3::Hasher::new(),
            offset: 0,
        });
        self.state = State::Hashing {
            todo,
            current,
            done,
        };
        None
    }

    /// Bytes of the file being hashed.
    pub(super) fn on_read(
        &mut self,
        handle: u64,
        data: &[u8],
        ops: &mut Vec<FileOp>,
    ) -> Option<Vec<SyncEntry>> {
        let State::Hashing { current, .. } = &mut self.state else {
            return None;
        };
        if current.handle != handle {
            return None;
        }
        current.hasher.update(data);
        current.offset += data.len() as u64;
        if data.len() == READ {
            let handle = current.handle;
            let (name, offset) = (current.entry.name.clone(), current.offset);
            ops.push(FileOp::Read {
                handle,
                file: FileRef::Named(name),
                offset,
                len: READ,
            });
            return None;
        }
        // The end of the file: as read, whatever the listing said.
        let State::Hashing {
            todo,
            current,
            mut done,
        } = std::mem::replace(&mut self.state, State::Idle)
        else {
            return None;
        };
        let e = SyncEntry {
            name: current.entry.name,
            size: current.offset,
            modified_ms: current.entry.modified_ms,
            digest: *current.hasher.finalize().as_bytes(),
        };
        // Cached only if the listing's size held: a file that changed
        // while read is hashed again next time.
        if e.size == current.entry.size {
            self.cache.insert(e.name.clone(), e.clone());
        }
        done.push(e);
        self.next_file(todo, done, ops)
    }

    /// A listing or read that failed: a file that went away is left out;
    /// a directory that cannot be listed lists as empty.
    pub(super) fn on_failed(
        &mut self,
        handle: u64,
        ops: &mut Vec<FileOp>,
    ) -> Option<Vec<SyncEntry>> {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Listing { handle: h } if h == handle => Some(Vec::new()),
            State::Hashing {
                todo,
                current,
                done,
            } if current.handle == handle => {
                self.cache.remove(&current.entry.name);
                self.next_file(todo, done, ops)
            }
            other => {
                self.state = other;
                None
            }
        }
    }
}
