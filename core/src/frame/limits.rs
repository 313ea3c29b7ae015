//! speedy readers and writers that hold a payload to what a frame may be.
//!
//! speedy checks a collection's claimed length against the bytes present,
//! but not against what the decoded collection occupies in memory: an empty
//! `String` is 4 bytes on the wire and 24 in a `Vec<String>`, so a full
//! frame could make one allocation six times its size. Here a collection
//! (a `Vec`, a `String`) may hold at most `MAX_FRAME` bytes of values, when
//! read and when written, so whatever is sent is accepted.
//!
//! speedy also reads any non-zero byte as `true` (for `bool`s and the flag
//! of an `Option`), so a payload could decode to a message whose encoding
//! is other bytes; [`encodes_to`] lets the decoder refuse it.
//!
//! Maps and sets go through other reader methods, unbounded here: the
//! messages hold none.

use super::MAX_FRAME;
use speedy::{Error, LittleEndian, Readable, Reader, Writable, Writer};
use std::mem::size_of;

/// Whether `len` values of `T` are within a frame's worth of memory.
fn fits<T>(len: usize) -> bool {
    len <= MAX_FRAME
        && len
            .checked_mul(size_of::<T>())
            .is_some_and(|b| b <= MAX_FRAME)
}

fn too_large<T>(len: usize) -> Error {
    Error::custom(format!(
        "a collection of {len} values of {} bytes exceeds the frame limit",
        size_of::<T>()
    ))
}

fn end_of_input() -> Error {
    Error::custom("unexpected end of input")
}

/// Reads from a byte slice, checking each read against what is left.
struct Slice<'a> {
    rest: &'a [u8],
    ctx: LittleEndian,
}

impl<'a> Slice<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if n > self.rest.len() {
            return Err(end_of_input());
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }
}

impl<'a> Reader<'a, LittleEndian> for Slice<'a> {
    fn read_bytes(&mut self, out: &mut [u8]) -> Result<(), Error> {
        out.copy_from_slice(self.take(out.len())?);
        Ok(())
    }

    fn peek_bytes(&mut self, out: &mut [u8]) -> Result<(), Error> {
        let rest = self.rest;
        self.read_bytes(out)?;
        self.rest = rest;
        Ok(())
    }

    // speedy reads every number, and bytes into a new `Vec`, through these,
    // into memory not yet initialised; its defaults would make a `&mut [u8]`
    // of that memory, which Rust does not allow. Copy through the pointer.
    unsafe fn read_bytes_into_ptr(&mut self, out: *mut u8, n: usize) -> Result<(), Error> {
        let src = self.take(n)?;
        // SAFETY: `src` is `n` readable bytes of the payload; speedy's
        // contract for this method is that `out` is valid for `n` writes.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), out, n) };
        Ok(())
    }

    unsafe fn peek_bytes_into_ptr(&mut self, out: *mut u8, n: usize) -> Result<(), Error> {
        let rest = self.rest;
        // SAFETY: as for `read_bytes_into_ptr`, which this forwards.
        let read = unsafe { self.read_bytes_into_ptr(out, n) };
        self.rest = rest;
        read
    }

    fn skip_bytes(&mut self, n: usize) -> Result<(), Error> {
        self.take(n).map(|_| ())
    }

    fn can_read_at_least(&self, n: usize) -> Option<bool> {
        Some(n <= self.rest.len())
    }

    fn read_bytes_borrowed(&mut self, n: usize) -> Option<Result<&'a [u8], Error>> {
        Some(self.take(n))
    }

    fn context(&self) -> &LittleEndian {
        &self.ctx
    }

    fn context_mut(&mut self) -> &mut LittleEndian {
        &mut self.ctx
    }
}

/// A [`Slice`] whose collections are bounded by the frame limit.
pub(super) struct FrameReader<'a>(Slice<'a>);

impl<'a> FrameReader<'a> {
    pub(super) fn new(payload: &'a [u8]) -> Self {
        FrameReader(Slice {
            rest: payload,
            ctx: LittleEndian::default(),
        })
    }

    /// Bytes not read yet.
    pub(super) fn left(&self) -> usize {
        self.0.rest.len()
    }
}

impl<'a> Reader<'a, LittleEndian> for FrameReader<'a> {
    fn read_bytes(&mut self, out: &mut [u8]) -> Result<(), Error> {
        self.0.read_bytes(out)
    }

    fn peek_bytes(&mut self, out: &mut [u8]) -> Result<(), Error> {
        self.0.peek_bytes(out)
    }

    unsafe fn read_bytes_into_ptr(&mut self, out: *mut u8, n: usize) -> Result<(), Error> {
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { self.0.read_bytes_into_ptr(out, n) }
    }

    unsafe fn peek_bytes_into_ptr(&mut self, out: *mut u8, n: usize) -> Result<(), Error> {
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { self.0.peek_bytes_into_ptr(out, n) }
    }

    fn skip_bytes(&mut self, n: usize) -> Result<(), Error> {
        self.0.skip_bytes(n)
    }

    fn can_read_at_least(&self, n: usize) -> Option<bool> {
        self.0.can_read_at_least(n)
    }

    fn read_bytes_borrowed(&mut self, n: usize) -> Option<Result<&'a [u8], Error>> {
        self.0.read_bytes_borrowed(n)
    }

    fn context(&self) -> &LittleEndian {
        self.0.context()
    }

    fn context_mut(&mut self) -> &mut LittleEndian {
        self.0.context_mut()
    }

    fn read_vec<T>(&mut self, len: usize) -> Result<Vec<T>, Error>
    where
        T: Readable<'a, LittleEndian>,
    {
        if !fits::<T>(len) {
            return Err(too_large::<T>(len));
        }
        if size_of::<T>() == 1 {
            // Nothing one byte wide owns memory, so speedy's own reading
            // (one copy for bytes and strings) has nothing left to bound.
            return self.0.read_vec(len);
        }
        let least = T::minimum_bytes_needed().checked_mul(len);
        if least.is_none_or(|n| n > self.left()) {
            return Err(end_of_input());
        }
        let mut v = Vec::with_capacity(len);
        for _ in 0..len {
            v.push(T::read_from(self)?);
        }
        Ok(v)
    }
}

/// Writes nothing; refuses collections the reader would refuse.
struct Limits {
    ctx: LittleEndian,
}

impl Writer<LittleEndian> for Limits {
    fn write_bytes(&mut self, _: &[u8]) -> Result<(), Error> {
        Ok(())
    }

    fn write_slice<T>(&mut self, slice: &[T]) -> Result<(), Error>
    where
        T: Writable<LittleEndian>,
    {
        if !fits::<T>(slice.len()) {
            return Err(too_large::<T>(slice.len()));
        }
        if size_of::<T>() > 1 {
            for v in slice {
                v.write_to(self)?;
            }
        }
        Ok(())
    }

    fn context(&self) -> &LittleEndian {
        &self.ctx
    }

    fn context_mut(&mut self) -> &mut LittleEndian {
        &mut self.ctx
    }
}

/// Whether `msg` can be sent: its collections fit what a reader accepts.
pub(super) fn check<M: Writable<LittleEndian>>(msg: &M) -> Result<(), Error> {
    msg.write_to(&mut Limits {
        ctx: LittleEndian::default(),
    })
}

/// Compares what is written with the bytes expected, without copying.
struct Matcher<'a> {
    expect: &'a [u8],
    ctx: LittleEndian,
}

impl Writer<LittleEndian> for Matcher<'_> {
    fn write_bytes(&mut self, bytes: &[u8]) -> Result<(), Error> {
        match self.expect.strip_prefix(bytes) {
            Some(rest) => {
                self.expect = rest;
                Ok(())
            }
            None => Err(Error::custom("differs")),
        }
    }

    fn context(&self) -> &LittleEndian {
        &self.ctx
    }

    fn context_mut(&mut self) -> &mut LittleEndian {
        &mut self.ctx
    }
}

/// Whether `msg` encodes to exactly `bytes`.
pub(super) fn encodes_to<M: Writable<LittleEndian>>(msg: &M, bytes: &[u8]) -> bool {
    let mut m = Matcher {
        expect: bytes,
        ctx: LittleEndian::default(),
    };
    msg.write_to(&mut m).is_ok() && m.expect.is_empty()
}
