//! The property every fuzz target asserts, as `core/tests/decoders` does:
//! an input decodes to a message that re-encodes to exactly the input, or is
//! refused with an error; it never panics; no single allocation made while
//! decoding exceeds `MAX_FRAME` (through a `FrameDecoder`: one frame in
//! progress plus the last read).

use ferry_core::accounts::token::SessionToken;
use ferry_core::balancer::messages::{BalancerMsg, ProbeMsg, PROBE_TAGS};
use ferry_core::frame::{self, FrameDecoder, FrameError, MAX_FRAME, PREFIX};
use ferry_core::file_attrs::FileAttrs;
use ferry_core::replication::catalogue::FileMeta;
use ferry_core::replication::entry::Entry;
use ferry_core::replication::messages::{ReplicaMsg, REPLICA_TAGS};
use ferry_core::replication::state::User;
use ferry_core::server::{BlobMsg, SessionMsg, BLOB_TAGS, SESSION_TAGS};
use speedy::{LittleEndian, Readable, Writable};
use std::fmt::Debug;

// The same counting allocator the decoder property tests use: one copy.
#[path = "../../core/tests/decoders/alloc.rs"]
mod alloc;

use alloc::largest;

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

/// The property for one payload decoded as an `M`. Panics (a crash for
/// libFuzzer) when it does not hold.
pub fn check<M>(payload: &[u8])
where
    M: for<'a> Readable<'a, LittleEndian> + Writable<LittleEndian> + Debug,
{
    let (decoded, most) = largest(|| frame::decode::<M>(payload));
    assert!(
        most <= MAX_FRAME,
        "decoding {} bytes allocated {most} bytes at once",
        payload.len()
    );
    match decoded {
        Ok(msg) => {
            let wire = match frame::encode(&msg) {
                Ok(wire) => wire,
                Err(e) => panic!("{msg:?} decoded but does not encode: {e}"),
            };
            assert_eq!(wire[..PREFIX], (payload.len() as u32).to_le_bytes());
            assert!(
                wire[PREFIX..] == *payload,
                "{msg:?} decoded from {payload:02x?} but encodes as {:02x?}",
                &wire[PREFIX..]
            );
        }
        Err(FrameError::Malformed(_) | FrameError::Trailing { .. }) => {}
        Err(FrameError::TooLarge { .. }) if payload.len() > MAX_FRAME => {}
        Err(e) => panic!("decode failed with {e:?}"),
    }
}

/// What servers and the CLI read back from disk: the first byte says which
/// record the rest is.
pub fn check_store(data: &[u8]) {
    let Some((&kind, record)) = data.split_first() else {
        return;
    };
    match kind % 6 {
        0 => check::<Entry>(record),
        1 => check::<User>(record),
        2 => check::<FileMeta>(record),
        3 => check::<SessionToken>(record),
        4 => check::<u64>(record),
        _ => check::<FileAttrs>(record),
    }
}

/// Each payload decoded as a server's listener would its first frame (by
/// tag), anything else as the client ↔ balancer link.
fn check_by_tag(payload: &[u8]) {
    let tag = payload.first().copied().unwrap_or(0);
    if SESSION_TAGS.contains(&tag) {
        check::<SessionMsg>(payload);
    } else if PROBE_TAGS.contains(&tag) {
        check::<ProbeMsg>(payload);
    } else if BLOB_TAGS.contains(&tag) {
        check::<BlobMsg>(payload);
    } else if REPLICA_TAGS.contains(&tag) {
        check::<ReplicaMsg>(payload);
    } else {
        check::<BalancerMsg>(payload);
    }
}

/// A byte stream through a `FrameDecoder`: the first two bytes seed the
/// sizes of the reads it arrives in, the rest is the stream. The frames
/// must be those a plain walk of the stream finds, and the decoder's buffer
/// within one frame in progress plus the last read.
pub fn check_stream(data: &[u8]) {
    let [a, b, stream @ ..] = data else {
        return;
    };
    let mut want = Vec::new();
    let mut rest = stream;
    while let [l0, l1, l2, l3, body @ ..] = rest {
        let len = u32::from_le_bytes([*l0, *l1, *l2, *l3]) as usize;
        if len > MAX_FRAME {
            want.push(Err(FrameError::TooLarge {
                len,
                max: MAX_FRAME,
            }));
            break;
        }
        if body.len() < len {
            break;
        }
        want.push(Ok(&body[..len]));
        rest = &body[len..];
    }

    let mut seed = u32::from_le_bytes([*a, *b, 0x5f, 0x3a]);
    let mut d = FrameDecoder::default();
    let mut got = Vec::new();
    let mut at = 0;
    while at < stream.len() && !matches!(got.last(), Some(Err(_))) {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let n = (1 + (seed >> 16) as usize % 64).min(stream.len() - at);
        let ((), most) = largest(|| {
            d.push(&stream[at..at + n]);
            loop {
                match d.next_payload() {
                    Ok(Some(p)) => got.push(Ok(p.to_vec())),
                    Ok(None) => break,
                    Err(e) => {
                        got.push(Err(e));
                        break;
                    }
                }
            }
        });
        assert!(
            most <= PREFIX + MAX_FRAME + n,
            "a read of {n} bytes allocated {most}"
        );
        at += n;
    }
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        match (g, w) {
            (Ok(g), Ok(w)) => assert_eq!(g.as_slice(), *w),
            (g, w) => assert_eq!(g.as_ref().err(), w.as_ref().err()),
        }
    }
    for payload in got.iter().flatten() {
        check_by_tag(payload);
    }
}
