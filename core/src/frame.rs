//! Length-prefixed frames of speedy-encoded messages.
//!
//! A frame is `[u32 little-endian length][payload]`. The length is checked
//! against the link's maximum before a single payload byte is buffered, and a
//! payload is decoded only once it is complete, from a bounded buffer. Every
//! claimed length is checked against the bytes that are really there, and
//! every collection against the frame limit, before anything is allocated
//! (see `limits`). A payload is accepted only if it is exactly the encoding
//! of the message it decodes to: trailing bytes, and bytes speedy would read
//! leniently (a `bool` of 2), are errors.

mod limits;

use speedy::{LittleEndian, Readable, Writable};
use std::fmt;

/// Bytes in the length prefix.
pub const PREFIX: usize = 4;

/// The largest payload any Ferry link accepts. Control messages are tiny;
/// the budget leaves room for batches of 4 KiB file chunks.
pub const MAX_FRAME: usize = 256 * 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The prefix claims more than the link allows; nothing was allocated.
    TooLarge { len: usize, max: usize },
    /// The payload is not a valid message of this link.
    Malformed(String),
    /// The payload decoded but bytes were left over.
    Trailing { consumed: usize, len: usize },
    /// The message could not be encoded (a length over a field's bound).
    Encode(String),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the limit of {max}")
            }
            FrameError::Malformed(e) => write!(f, "malformed frame: {e}"),
            FrameError::Trailing { consumed, len } => {
                write!(f, "frame has {} trailing bytes", len - consumed)
            }
            FrameError::Encode(e) => write!(f, "cannot encode message: {e}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Encodes one message as a complete frame, prefix included.
pub fn encode<M: Writable<LittleEndian>>(msg: &M) -> Result<Vec<u8>, FrameError> {
    let len = msg
        .bytes_needed()
        .map_err(|e| FrameError::Encode(e.to_string()))?;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME,
        });
    }
    limits::check(msg).map_err(|e| FrameError::Encode(e.to_string()))?;
    let mut out = Vec::with_capacity(PREFIX + len);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    msg.write_to_stream(&mut out)
        .map_err(|e| FrameError::Encode(e.to_string()))?;
    Ok(out)
}

/// Decodes one complete payload (without its prefix).
pub fn decode<M>(payload: &[u8]) -> Result<M, FrameError>
where
    M: for<'a> Readable<'a, LittleEndian> + Writable<LittleEndian>,
{
    if payload.len() > MAX_FRAME {
        // Nothing larger can be sent (`encode`), so nothing larger is read.
        return Err(FrameError::TooLarge {
            len: payload.len(),
            max: MAX_FRAME,
        });
    }
    let mut reader = limits::FrameReader::new(payload);
    let msg = M::read_from(&mut reader).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if reader.left() > 0 {
        return Err(FrameError::Trailing {
            consumed: payload.len() - reader.left(),
            len: payload.len(),
        });
    }
    if !limits::encodes_to(&msg, payload) {
        // Two payloads must never mean one message: a peer could otherwise
        // vary bytes that MACs, digests or dedup of the payload rely on.
        let detail = "not the canonical encoding of its message".to_string();
        return Err(FrameError::Malformed(detail));
    }
    Ok(msg)
}

/// Splits a byte stream into payloads. Drained after every push, it holds
/// at most one frame in progress plus what arrived in the last read, in a
/// buffer of at most that size (or one frame, if larger).
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    start: usize,
    max: usize,
    failed: Option<FrameError>,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(MAX_FRAME)
    }
}

impl FrameDecoder {
    pub fn new(max: usize) -> Self {
        FrameDecoder {
            buf: Vec::new(),
            start: 0,
            max,
            failed: None,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        // Compact when the consumed prefix dominates, so pushes stay O(n),
        // and before the buffer grows, so consumed bytes are never copied.
        let grows = self.buf.len() + bytes.len() > self.buf.capacity();
        if self.start > 0 && (grows || self.start * 2 >= self.buf.len()) {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let need = self.buf.len() + bytes.len();
        if need > self.buf.capacity() {
            // Doubling, as `Vec` would, but never past one whole frame
            // unless the bytes held need more: otherwise a frame near the
            // limit would take a buffer of twice the limit.
            let cap = (self.buf.capacity() * 2).min(PREFIX + self.max).max(need);
            self.buf.reserve_exact(cap - self.buf.len());
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete payload, `Ok(None)` if more bytes are needed.
    /// After an error the stream is unusable and every call repeats it.
    pub fn next_payload(&mut self) -> Result<Option<&[u8]>, FrameError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let avail = &self.buf[self.start..];
        if avail.len() < PREFIX {
            return Ok(None);
        }
        let len = u32::from_le_bytes([avail[0], avail[1], avail[2], avail[3]]) as usize;
        if len > self.max {
            let e = FrameError::TooLarge { len, max: self.max };
            self.failed = Some(e.clone());
            self.buf = Vec::new();
            self.start = 0;
            return Err(e);
        }
        if avail.len() < PREFIX + len {
            return Ok(None);
        }
        let begin = self.start + PREFIX;
        self.start = begin + len;
        Ok(Some(&self.buf[begin..begin + len]))
    }

    /// Bytes buffered but not yet returned.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Readable, Writable)]
    #[speedy(tag_type = u8)]
    enum Msg {
        Ping { n: u32 },
        Name { s: String },
        Blob { v: Vec<u8> },
        Flags { on: bool, owner: Option<u8> },
        Names { v: Vec<String> },
    }

    fn frames(bytes: &[u8]) -> Vec<Result<Msg, FrameError>> {
        let mut d = FrameDecoder::default();
        d.push(bytes);
        let mut out = Vec::new();
        loop {
            match d.next_payload() {
                Ok(Some(p)) => out.push(decode::<Msg>(p)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e));
                    break;
                }
            }
        }
        out
    }

    #[test]
    fn round_trips_through_split_reads() {
        let mut wire = encode(&Msg::Ping { n: 7 }).unwrap();
        wire.extend(encode(&Msg::Name { s: "héllo".into() }).unwrap());
        let mut d = FrameDecoder::default();
        let mut got = Vec::new();
        for b in &wire {
            d.push(std::slice::from_ref(b));
            while let Some(p) = d.next_payload().unwrap() {
                got.push(decode::<Msg>(p).unwrap());
            }
        }
        assert_eq!(
            got,
            vec![Msg::Ping { n: 7 }, Msg::Name { s: "héllo".into() }]
        );
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn oversized_prefix_is_refused_before_buffering() {
        let mut d = FrameDecoder::new(1024);
        d.push(&(1025u32).to_le_bytes());
        assert_eq!(
            d.next_payload(),
            Err(FrameError::TooLarge {
                len: 1025,
                max: 1024
            })
        );
        // The decoder stays failed: no later bytes are taken as a frame.
        d.push(&[0; 8]);
        assert!(d.next_payload().is_err());
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn truncated_frame_waits_for_more() {
        let wire = encode(&Msg::Name { s: "abc".into() }).unwrap();
        let mut d = FrameDecoder::default();
        d.push(&wire[..wire.len() - 1]);
        assert_eq!(d.next_payload(), Ok(None));
    }

    #[test]
    fn unknown_tag_is_malformed() {
        let out = frames(&[1, 0, 0, 0, 99]);
        assert!(matches!(out[0], Err(FrameError::Malformed(_))));
    }

    #[test]
    fn huge_inner_length_is_malformed_without_allocation() {
        // Blob claims 4 GiB of content inside a 6-byte payload.
        let mut wire = vec![6, 0, 0, 0, 2];
        wire.extend_from_slice(&u32::MAX.to_le_bytes());
        wire.push(0);
        let out = frames(&wire);
        assert!(matches!(out[0], Err(FrameError::Malformed(_))));
    }

    #[test]
    fn truncated_payload_is_malformed() {
        // Name claims 10 bytes of string but the frame holds 2.
        let mut wire = vec![7, 0, 0, 0, 1];
        wire.extend_from_slice(&10u32.to_le_bytes());
        wire.extend_from_slice(b"ab");
        assert!(matches!(frames(&wire)[0], Err(FrameError::Malformed(_))));
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut wire = encode(&Msg::Ping { n: 1 }).unwrap();
        wire.push(0xff);
        wire[0] += 1;
        assert!(matches!(frames(&wire)[0], Err(FrameError::Trailing { .. })));
    }

    #[test]
    fn invalid_utf8_is_malformed() {
        let mut wire = vec![7, 0, 0, 0, 1];
        wire.extend_from_slice(&2u32.to_le_bytes());
        wire.extend_from_slice(&[0xff, 0xfe]);
        assert!(matches!(frames(&wire)[0], Err(FrameError::Malformed(_))));
    }

    #[test]
    fn lenient_flags_are_refused() {
        // speedy reads any non-zero byte as `true` or `Some`.
        assert_eq!(
            decode::<Msg>(&[3, 1, 0]),
            Ok(Msg::Flags {
                on: true,
                owner: None
            })
        );
        assert!(matches!(
            decode::<Msg>(&[3, 2, 0]),
            Err(FrameError::Malformed(_))
        ));
        assert!(matches!(
            decode::<Msg>(&[3, 0, 7, 1]),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn collections_larger_than_a_frame_in_memory_are_refused_both_ways() {
        // An empty string is 4 bytes on the wire and 24 in memory.
        let n = MAX_FRAME / std::mem::size_of::<String>() + 1;
        let crowded = Msg::Names {
            v: vec![String::new(); n],
        };
        let payload = crowded.write_to_vec().unwrap();
        assert!(payload.len() < MAX_FRAME);
        assert!(matches!(
            decode::<Msg>(&payload),
            Err(FrameError::Malformed(_))
        ));
        assert!(matches!(encode(&crowded), Err(FrameError::Encode(_))));
        let fits = Msg::Names {
            v: vec![String::new(); n - 1],
        };
        let wire = encode(&fits).unwrap();
        assert_eq!(decode::<Msg>(&wire[PREFIX..]), Ok(fits));
    }

    #[test]
    fn payloads_over_the_limit_are_refused() {
        let mut payload = Msg::Blob {
            v: vec![0; MAX_FRAME],
        }
        .write_to_vec()
        .unwrap();
        assert!(matches!(
            decode::<Msg>(&payload),
            Err(FrameError::TooLarge { .. })
        ));
        payload.truncate(MAX_FRAME);
        assert!(matches!(
            decode::<Msg>(&payload),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn a_frame_at_the_limit_takes_no_larger_buffer() {
        let wire = encode(&Msg::Blob {
            v: vec![7; MAX_FRAME - 5],
        })
        .unwrap();
        let mut d = FrameDecoder::default();
        for piece in wire.chunks(1000) {
            d.push(piece);
            assert!(d.buf.capacity() <= PREFIX + MAX_FRAME + 1000);
            if let Some(p) = d.next_payload().unwrap() {
                assert_eq!(p.len(), MAX_FRAME);
            }
        }
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn encode_refuses_oversized_messages() {
        let big = Msg::Blob {
            v: vec![0; MAX_FRAME + 1],
        };
        assert!(matches!(encode(&big), Err(FrameError::TooLarge { .. })));
    }
}
