//! Checking a blob a receiver found damaged, and replacing it.
//!
//! A server sends the digest that names a blob rather than one of what it
//! read (see `transfer::sender`), so a receiver whose check fails
//! (`DigestMismatch`) says that the link or this server's disk changed the
//! content; and a sender whose read fails or comes back short (`Io`) says
//! the blob may be gone or cut short. The server does not take the receiver's word for it (a client
//! could say so of sound content): it reads the blob through once and
//! hashes it. If the digest is not the blob's name (or the file is shorter
//! than the content), the copy is removed and fetched again, like any
//! content this server lacks, from the other servers (downloads wait for
//! that fetch as for any other). A sound blob is left alone, and so is one
//! that cannot be read: a read can fail for reasons that say nothing of
//! the content (out of file descriptors, say), and removing the only copy
//! of sound content on such a failure would lose it. A blob whose file is
//! missing (removed behind the server's back) is gone for certain: it is
//! fetched again like a damaged one.
//!
//! Removing a damaged copy is right even when no other server holds the
//! content: a damaged copy can never be served, and while it is there an
//! upload of the same content would be taken as already stored.
//!
//! A check reads one block at a time and at most one runs per blob, so it
//! costs a server no more than a download of the blob would. A check whose
//! blob stops being this server's meanwhile (collected, say) is dropped
//! without a verdict: its reads no longer say anything about what the
//! server holds.

use crate::io::{FileOp, FileRef};
use crate::outbox::Outbox;
use crate::transfer::{TransferError, BLOCK_BYTES};
use std::collections::BTreeMap;

/// Whether a blob sender that ended so says its blob may be damaged: the
/// receiver's digest did not match, or a read failed or came back short.
pub fn says_damaged(result: &Result<[u8; 32], TransferError>) -> bool {
    matches!(
        result,
        Err(TransferError::DigestMismatch | TransferError::Io { .. })
    )
}

/// The reading and hashing of one blob.
pub struct Check {
    digest: [u8; 32],
    size: u64,
    /// Bytes hashed so far; the next read starts here.
    hashed: u64,
    /// A read is asked for and not answered yet.
    reading: bool,
    hasher: blake3::Hasher,
}

/// A read a check asks for: `len` bytes of the blob from `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Read {
    pub offset: u64,
    pub len: usize,
}

/// How a check ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Sound,
    Damaged {
        why: String,
    },
    /// A read failed: nothing is known, and nothing is done.
    Unreadable {
        error: String,
    },
}

impl Check {
    pub fn new(digest: [u8; 32], size: u64) -> Check {
        Check {
            digest,
            size,
            hashed: 0,
            reading: false,
            hasher: blake3::Hasher::new(),
        }
    }

    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }

    /// The next read to ask for, if one is due: one block at a time.
    pub fn next_read(&mut self) -> Option<Read> {
        if self.reading || self.hashed >= self.size {
            return None;
        }
        self.reading = true;
        let len = BLOCK_BYTES.min(self.size - self.hashed) as usize;
        Some(Read {
            offset: self.hashed,
            len,
        })
    }

    /// The verdict, once every byte is hashed.
    pub fn verdict(&self) -> Option<Verdict> {
        if self.hashed < self.size {
            return None;
        }
        let got = *self.hasher.clone().finalize().as_bytes();
        Some(if got == self.digest {
            Verdict::Sound
        } else {
            Verdict::Damaged {
                why: format!("its content hashes to {}", &hex(&got)[..16]),
            }
        })
    }

    /// The bytes of the read asked for. Anything but the block asked for
    /// (a short read: the file shrank) is damage.
    pub fn on_read(&mut self, offset: u64, data: &[u8]) -> Option<Verdict> {
        let want = BLOCK_BYTES.min(self.size.saturating_sub(self.hashed));
        if !self.reading || offset != self.hashed || data.len() as u64 != want {
            return Some(Verdict::Damaged {
                why: format!(
                    "a read at {offset} gave {} bytes where {want} at {} were asked for",
                    data.len(),
                    self.hashed
                ),
            });
        }
        self.reading = false;
        self.hasher.update(data);
        self.hashed += want;
        self.verdict()
    }
}

/// The checks running, by the read handle each reads its blob through.
#[derive(Default)]
pub(super) struct Scrubber {
    checks: BTreeMap<u64, Check>,
}

impl Scrubber {
    /// Whether a check of `d` runs.
    pub(super) fn checking(&self, d: &[u8; 32]) -> bool {
        self.checks.values().any(|c| c.digest() == *d)
    }

    /// Starts a check of blob `d`, `size` bytes, read through `handle`:
    /// asks for its first read, or returns its verdict (an empty blob).
    pub(super) fn start<E>(
        &mut self,
        handle: u64,
        d: [u8; 32],
        size: u64,
        out: &mut Outbox<E>,
    ) -> Option<Verdict> {
        self.checks.insert(handle, Check::new(d, size));
        self.pump(handle, out)
    }

    /// Asks for the check's next read, or returns its verdict.
    fn pump<E>(&mut self, handle: u64, out: &mut Outbox<E>) -> Option<Verdict> {
        let check = self.checks.get_mut(&handle)?;
        let d = check.digest();
        if let Some(Read { offset, len }) = check.next_read() {
            out.file(FileOp::Read {
                handle,
                file: FileRef::Blob(d),
                offset,
                len,
            });
            None
        } else {
            check.verdict()
        }
    }

    /// The bytes of a read of the check through `handle`: its verdict, or
    /// the next read asked for.
    pub(super) fn on_read<E>(
        &mut self,
        handle: u64,
        offset: u64,
        data: &[u8],
        out: &mut Outbox<E>,
    ) -> Option<Verdict> {
        let check = self.checks.get_mut(&handle)?;
        match check.on_read(offset, data) {
            Some(verdict) => Some(verdict),
            None => self.pump(handle, out),
        }
    }

    /// A read of the check through `handle` failed: a missing file is gone
    /// for certain, anything else may pass.
    pub(super) fn on_failed(&self, handle: u64, error: String, missing: bool) -> Option<Verdict> {
        if !self.checks.contains_key(&handle) {
            return None;
        }
        Some(if missing {
            Verdict::Damaged {
                why: "its file is missing".into(),
            }
        } else {
            Verdict::Unreadable { error }
        })
    }

    /// Ends the check read through `handle`; the digest of its blob.
    pub(super) fn finish(&mut self, handle: u64) -> Option<[u8; 32]> {
        self.checks.remove(&handle).map(|c| c.digest())
    }

    /// Drops every check of blob `d` (it is no longer this server's, so
    /// its reads say nothing); the read handles they held.
    pub(super) fn drop_checks_of(&mut self, d: &[u8; 32]) -> Vec<u64> {
        let handles: Vec<u64> = self
            .checks
            .iter()
            .filter(|(_, c)| c.digest() == *d)
            .map(|(h, _)| *h)
            .collect();
        for h in &handles {
            self.checks.remove(h);
        }
        handles
    }
}

/// A digest (or any bytes) in hex, as the server's events show them.
pub fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(len: usize) -> (Vec<u8>, [u8; 32]) {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let d = *blake3::hash(&data).as_bytes();
        (data, d)
    }

    /// Runs a check over `disk`, answering each read from it.
    fn run(disk: &[u8], d: [u8; 32], size: u64) -> (Verdict, usize) {
        let mut c = Check::new(d, size);
        let mut reads = 0;
        loop {
            if let Some(v) = c.verdict() {
                return (v, reads);
            }
            let Some(Read { offset, len }) = c.next_read() else {
                panic!("no read and no verdict");
            };
            assert_eq!(c.next_read(), None, "one read at a time");
            reads += 1;
            let from = (offset as usize).min(disk.len());
            let to = (from + len).min(disk.len());
            if let Some(v) = c.on_read(offset, &disk[from..to]) {
                return (v, reads);
            }
        }
    }

    #[test]
    fn a_sound_blob_of_any_size_is_sound_after_one_pass() {
        let block = BLOCK_BYTES as usize;
        for len in [0, 1, 4096, block - 1, block, block + 1, 3 * block + 17] {
            let (data, d) = blob(len);
            let (v, reads) = run(&data, d, len as u64);
            assert_eq!(v, Verdict::Sound, "{len} bytes");
            assert_eq!(reads, len.div_ceil(block), "{len} bytes");
        }
    }

    #[test]
    fn a_flipped_bit_or_a_shrunk_file_is_damage() {
        let len = 2 * BLOCK_BYTES as usize + 99;
        let (data, d) = blob(len);
        for at in [0, len / 2, len - 1] {
            let mut rotten = data.clone();
            rotten[at] ^= 0x10;
            let (v, _) = run(&rotten, d, len as u64);
            assert!(matches!(v, Verdict::Damaged { .. }), "bit {at}");
        }
        let (v, reads) = run(&data[..len - 50], d, len as u64);
        assert!(matches!(v, Verdict::Damaged { .. }), "shrunk");
        assert_eq!(reads, 3, "found at the short read");
    }

    #[test]
    fn a_read_that_was_not_asked_for_is_damage_not_a_panic() {
        let (data, d) = blob(100);
        let mut c = Check::new(d, 100);
        assert!(matches!(c.on_read(0, &data), Some(Verdict::Damaged { .. })));
        let mut c = Check::new(d, 100);
        assert_eq!(
            c.next_read(),
            Some(Read {
                offset: 0,
                len: 100
            })
        );
        assert!(matches!(
            c.on_read(50, &data[..50]),
            Some(Verdict::Damaged { .. })
        ));
    }
}
