//! A file's modification time and permission bits: what `ferry put` reads
//! from the source file, the catalogue keeps beside the file's name, and
//! `ferry get` gives the file it writes (`--no-preserve` to skip). See
//! docs/transfer.md, "Attributes".
//!
//! The time is kept to the nanosecond, as the filesystem has it, so that a
//! file fetched back compares equal to its source (`make`, `rsync`, `cmp`
//! of `stat` output). The mode is the nine `rwx` bits only: set-user-ID,
//! set-group-ID and sticky are dropped when a file is put and again when
//! one is got. A file can be shared, and a set-ID program written by
//! `ferry get` would run with the rights of whoever got it (root, under
//! `sudo`), chosen by someone else; sticky means nothing on a file.

use speedy::{Readable, Writable};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Readable, Writable)]
pub struct FileAttrs {
    /// Modification time: whole seconds since the Unix epoch (negative
    /// before it)…
    pub mtime_secs: i64,
    /// …and nanoseconds into that second (below 10⁹).
    pub mtime_nanos: u32,
    /// Permission bits, within [`FileAttrs::MODE_BITS`].
    pub mode: u32,
}

impl FileAttrs {
    /// The mode bits that travel: read, write and execute for the owner,
    /// the group and others.
    pub const MODE_BITS: u32 = 0o777;

    /// Attributes as they are kept: the mode masked to [`Self::MODE_BITS`],
    /// the nanoseconds within a second. Whatever a peer sends goes through
    /// here, so nothing else is ever stored or applied.
    pub fn new(mtime_secs: i64, mtime_nanos: u32, mode: u32) -> FileAttrs {
        FileAttrs {
            mtime_secs,
            mtime_nanos: mtime_nanos.min(999_999_999),
            mode: mode & Self::MODE_BITS,
        }
    }

    /// The same attributes, made what [`FileAttrs::new`] makes.
    pub fn sanitized(self) -> FileAttrs {
        FileAttrs::new(self.mtime_secs, self.mtime_nanos, self.mode)
    }

    /// The modification time as Unix milliseconds (rounded down), for a
    /// listing that shows it.
    pub fn mtime_ms(&self) -> i64 {
        self.mtime_secs
            .saturating_mul(1000)
            .saturating_add(i64::from(self.mtime_nanos / 1_000_000))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_id_and_sticky_bits_and_impossible_nanoseconds_never_pass() {
        let a = FileAttrs::new(1, 2_000_000_000, 0o7755);
        assert_eq!(a.mode, 0o755);
        assert_eq!(a.mtime_nanos, 999_999_999);
        let sent = FileAttrs {
            mtime_secs: -5,
            mtime_nanos: u32::MAX,
            mode: u32::MAX,
        };
        assert_eq!(sent.sanitized(), FileAttrs::new(-5, 999_999_999, 0o777));
        assert_eq!(FileAttrs::new(-2, 500_000_000, 0).mtime_ms(), -1500);
    }
}
