//! The executor's buffers: read-ahead for read handles, and coalescing of
//! contiguous writes to temporary files. Both exist to save system calls:
//! a stop-and-wait transfer reads and writes 4 KiB at a time, and each
//! `pread` or `pwrite` costs more than the copy it makes.

use std::collections::HashMap;
use std::io;

/// Bytes read ahead at once for small reads.
pub const READ_AHEAD: usize = 256 << 10;

/// Read-ahead buffers kept at most (the least recently used is reused).
pub const AHEAD_SLOTS: usize = 8;

/// Bytes of contiguous writes gathered per temporary file before a write.
pub const COALESCE: usize = 256 << 10;

/// Writes this large or larger are not gathered: one `pwrite` each costs
/// little next to their bytes, and gathering would copy them once more.
pub const GATHER_BELOW: usize = 64 << 10;

/// Temporary files with gathered writes at most; past that, writes to
/// other files go straight to disk.
pub const COALESCING_FILES: usize = 16;

/// Read-ahead buffers, each owned by one opened file (an id that changes
/// whenever the file is opened again, so a buffer never outlives what it
/// was read from).
#[derive(Default)]
pub struct ReadAhead {
    slots: Vec<Slot>,
    clock: u64,
}

struct Slot {
    owner: Option<u64>,
    /// File offset of `data[0]`.
    start: u64,
    data: Vec<u8>,
    /// The read that filled `data` hit the end of the file.
    eof: bool,
    used: u64,
}

impl ReadAhead {
    /// Whether a buffer holds the bytes `[offset, offset + len)` of
    /// `owner`'s file (or those of them before the end of the file).
    pub fn holds(&self, owner: u64, offset: u64, len: usize) -> bool {
        self.slots.iter().any(|s| s.holds(owner, offset, len))
    }

    /// Those bytes, if [`ReadAhead::holds`]; none otherwise.
    pub fn get(&mut self, owner: u64, offset: u64, len: usize) -> &[u8] {
        let Some(i) = self.slots.iter().position(|s| s.holds(owner, offset, len)) else {
            return &[];
        };
        self.clock += 1;
        let slot = &mut self.slots[i];
        slot.used = self.clock;
        slot.serve(offset, len)
    }

    /// Fills a buffer for `owner` with `READ_AHEAD` bytes from `offset`
    /// (fewer at the end of the file) with `read_at`, and returns the
    /// first `len` of them.
    pub fn fill(
        &mut self,
        owner: u64,
        offset: u64,
        len: usize,
        mut read_at: impl FnMut(&mut [u8], u64) -> io::Result<usize>,
    ) -> io::Result<&[u8]> {
        self.clock += 1;
        let i = match self.slots.iter().position(|s| s.owner == Some(owner)) {
            Some(i) => i,
            None if self.slots.len() < AHEAD_SLOTS => {
                self.slots.push(Slot {
                    owner: None,
                    start: 0,
                    data: Vec::new(),
                    eof: false,
                    used: 0,
                });
                self.slots.len() - 1
            }
            None => {
                let mut lru = 0;
                for (i, s) in self.slots.iter().enumerate() {
                    if s.owner.is_none() {
                        lru = i;
                        break;
                    }
                    if s.used < self.slots[lru].used {
                        lru = i;
                    }
                }
                lru
            }
        };
        let slot = &mut self.slots[i];
        // Not this file's until the read succeeded.
        slot.owner = None;
        slot.data.resize(READ_AHEAD, 0);
        let mut got = 0;
        while got < READ_AHEAD {
            match read_at(&mut slot.data[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        slot.data.truncate(got);
        slot.owner = Some(owner);
        slot.start = offset;
        slot.eof = got < READ_AHEAD;
        slot.used = self.clock;
        Ok(slot.serve(offset, len))
    }

    /// Drops `owner`'s buffer (its file was closed or may have changed).
    pub fn forget(&mut self, owner: u64) {
        for s in &mut self.slots {
            if s.owner == Some(owner) {
                s.owner = None;
            }
        }
    }
}

impl Slot {
    fn holds(&self, owner: u64, offset: u64, len: usize) -> bool {
        if self.owner != Some(owner) || offset < self.start {
            return false;
        }
        let end = self.start + self.data.len() as u64;
        offset + len as u64 <= end || (self.eof && offset <= end)
    }

    fn serve(&self, offset: u64, len: usize) -> &[u8] {
        let from = ((offset - self.start) as usize).min(self.data.len());
        let to = from.saturating_add(len).min(self.data.len());
        &self.data[from..to]
    }
}

/// Contiguous bytes of one temporary file not yet written.
pub struct Gathered {
    pub offset: u64,
    pub data: Vec<u8>,
}

/// Writes of temporary files gathered until [`COALESCE`] bytes, a write
/// that does not continue them, or until the executor needs them on disk.
#[derive(Default)]
pub struct WriteBuffers {
    gathered: HashMap<u64, Gathered>,
}

impl WriteBuffers {
    /// Gathers `data` for `temp` if it continues what is gathered and
    /// fits, or starts gathering if nothing is; false if it must wait for
    /// the gathered bytes to be written (or go straight to disk).
    pub fn gather(
        &mut self,
        temp: u64,
        offset: u64,
        data: &[u8],
        new_buffer: impl FnOnce() -> Vec<u8>,
    ) -> bool {
        if data.len() >= GATHER_BELOW {
            return false;
        }
        if let Some(g) = self.gathered.get_mut(&temp) {
            let continues = g.offset + g.data.len() as u64 == offset;
            if continues && g.data.len() + data.len() <= COALESCE {
                g.data.extend_from_slice(data);
                return true;
            }
            return false;
        }
        if self.gathered.len() >= COALESCING_FILES {
            return false;
        }
        let mut buf = new_buffer();
        buf.clear();
        buf.reserve_exact(COALESCE);
        buf.extend_from_slice(data);
        self.gathered.insert(temp, Gathered { offset, data: buf });
        true
    }

    /// Takes what is gathered for `temp`, to be written.
    pub fn take(&mut self, temp: u64) -> Option<Gathered> {
        self.gathered.remove(&temp)
    }

    /// Drops what is gathered for `temp` unwritten (its file is going).
    pub fn discard(&mut self, temp: u64) {
        self.gathered.remove(&temp);
    }
}
