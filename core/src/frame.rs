//! Length-prefixed frames of speedy-encoded messages.
//!
//! A frame is `[u32 little-endian length][payload]`. The length is checked
//! against the link's maximum before a single payload byte is buffered, and a
//! payload is decoded only once it is complete, from a bounded buffer, with
//! speedy's buffer reader (which checks every claimed length against the bytes
//! that are really there before allocating). Trailing bytes are an error.

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
    let mut out = Vec::with_capacity(PREFIX + len);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    msg.write_to_stream(&mut out)
        .map_err(|e| FrameError::Encode(e.to_string()))?;
    Ok(out)
}

/// Decodes one complete payload (without its prefix).
pub fn decode<M>(payload: &[u8]) -> Result<M, FrameError>
where
    M: for<'a> Readable<'a, LittleEndian>,
{
    let (res, consumed) = M::read_with_length_from_buffer(payload);
    let msg = res.map_err(|e| FrameError::Malformed(e.to_string()))?;
    if consumed != payload.len() {
        return Err(FrameError::Trailing {
            consumed,
            len: payload.len(),
        });
    }
    Ok(msg)
}

/// Splits a byte stream into payloads, holding at most one frame's worth of
/// bytes (plus what arrived in the last read) at a time.
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
        // Compact only when the consumed prefix dominates, so pushes stay O(n).
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
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
    fn garbage_never_panics() {
        let mut e = crate::Entropy::from_u64(1);
        for _ in 0..2000 {
            let n = (e.next_u64() % 64) as usize;
            let mut bytes = vec![0u8; n];
            e.fill(&mut bytes);
            if bytes.len() >= 4 && e.next_u64().is_multiple_of(2) {
                // Make the prefix plausible so the payload decoder is exercised.
                let len = (n - 4) as u32;
                bytes[..4].copy_from_slice(&len.to_le_bytes());
            }
            let _ = frames(&bytes);
        }
    }

    #[test]
    fn encode_refuses_oversized_messages() {
        let big = Msg::Blob {
            v: vec![0; MAX_FRAME + 1],
        };
        assert!(matches!(encode(&big), Err(FrameError::TooLarge { .. })));
    }
}
