//! Every decoder Ferry runs on bytes from the network or the disk, fed valid
//! encodings, damaged encodings and noise. For every input:
//!
//! - it decodes to a message that re-encodes to exactly the input, or it is
//!   refused with an error (never a panic);
//! - no single allocation made while decoding exceeds `MAX_FRAME`;
//! - through the streaming `FrameDecoder`, split into reads at any points,
//!   the same frames come out, and its buffer never takes more than one
//!   frame in progress plus the last read.
//!
//! Cases: 256 per decoder property, 32 to 64 for the frame-sized ones (a
//! few seconds in all); `PROPTEST_CASES` sets them all for a longer run,
//! e.g. `PROPTEST_CASES=100000` (see docs/fuzzing.md).

mod alloc;
mod gen;
mod seeds;

use ferry_core::accounts::token::SessionToken;
use ferry_core::balancer::messages::{BalancerMsg, ProbeMsg};
use ferry_core::file_attrs::FileAttrs;
use ferry_core::frame::{self, FrameDecoder, FrameError, MAX_FRAME, PREFIX};
use ferry_core::replication::catalogue::FileMeta;
use ferry_core::replication::entry::Entry;
use ferry_core::replication::messages::ReplicaMsg;
use ferry_core::replication::state::User;
use ferry_core::server::{BlobMsg, SessionMsg};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use speedy::{LittleEndian, Readable, Writable};
use std::fmt::Debug;

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

/// The runtime's read size: what one `push` into a `FrameDecoder` carries
/// at most (`ferry_runtime_smol::READ_BUFFER`; the simulator reads less).
const READ: usize = 64 * 1024;

fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        // A failure is a decoder bug to fix, found again by the test that
        // shows it; the generated cases are not kept in the tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// The property, for one payload decoded as an `M`.
fn check<M>(payload: &[u8]) -> Result<(), TestCaseError>
where
    M: for<'a> Readable<'a, LittleEndian> + Writable<LittleEndian> + Debug,
{
    let (decoded, largest) = alloc::largest(|| frame::decode::<M>(payload));
    prop_assert!(
        largest <= MAX_FRAME,
        "decoding {} bytes made an allocation of {largest} bytes",
        payload.len()
    );
    match decoded {
        Ok(msg) => {
            let wire = frame::encode(&msg);
            prop_assert!(
                wire.is_ok(),
                "{msg:?} decoded but does not encode: {wire:?}"
            );
            let wire = wire.unwrap_or_default();
            prop_assert_eq!(&wire[..PREFIX], &(payload.len() as u32).to_le_bytes()[..]);
            prop_assert!(
                wire[PREFIX..] == *payload,
                "{msg:?} decoded from {payload:02x?} but encodes as {:02x?}",
                &wire[PREFIX..]
            );
        }
        Err(FrameError::Malformed(_) | FrameError::Trailing { .. }) => {}
        Err(FrameError::TooLarge { .. }) if payload.len() > MAX_FRAME => {}
        Err(e) => prop_assert!(false, "decode failed with {e:?}"),
    }
    Ok(())
}

/// A valid message survives the trip through a frame unchanged.
fn round_trip<M>(msg: &M) -> Result<(), TestCaseError>
where
    M: for<'a> Readable<'a, LittleEndian> + Writable<LittleEndian> + Debug + PartialEq,
{
    let wire = frame::encode(msg);
    prop_assert!(wire.is_ok(), "{msg:?} does not encode: {wire:?}");
    let wire = wire.unwrap_or_default();
    let back = frame::decode::<M>(&wire[PREFIX..]);
    prop_assert_eq!(back.as_ref(), Ok(msg));
    Ok(())
}

macro_rules! family {
    ($name:ident, $msg:ty, $valid:expr, $tags:expr) => {
        mod $name {
            use super::*;

            proptest! {
                #![proptest_config(config(256))]

                #[test]
                fn decodes_to_its_own_encoding_or_refuses(
                    payload in gen::payloads($valid, $tags)
                ) {
                    check::<$msg>(&payload)?;
                }

                #[test]
                fn valid_messages_round_trip(msg in $valid) {
                    round_trip::<$msg>(&msg)?;
                }
            }
        }
    };
}

// The links, by what each end decodes (see `docs/protocol.md`).
family!(balancer, BalancerMsg, gen::balancer_msg(), 1..5);
family!(probe, ProbeMsg, gen::probe_msg(), 10..14);
family!(session, SessionMsg, gen::session_msg(), 20..42);
family!(blob, BlobMsg, gen::blob_msg(), 60..63);
family!(replica, ReplicaMsg, gen::replica_msg(), 49..89);
// What servers read back from their stores, and the CLI from its session file.
family!(log_entry, Entry, gen::entry(), 1..7);
family!(user_row, User, gen::user(), 0..4);
family!(file_row, FileMeta, gen::file_meta(), 0..4);
family!(attrs_row, FileAttrs, gen::file_attrs(), 0..4);
family!(session_file, SessionToken, gen::session_token(), 0..4);

proptest! {
    #![proptest_config(config(32))]

    /// Collections as long as a frame allows cost no more than a frame.
    #[test]
    fn crowded_session_messages_stay_within_the_frame_limit(
        msg in gen::crowded_session_msg()
    ) {
        check::<SessionMsg>(&msg.write_to_vec().unwrap_or_default())?;
    }

    #[test]
    fn crowded_replica_messages_stay_within_the_frame_limit(
        msg in gen::crowded_replica_msg()
    ) {
        check::<ReplicaMsg>(&msg.write_to_vec().unwrap_or_default())?;
    }
}

/// One frame of a stream: a payload, and whether its prefix is honest.
#[derive(Clone, Debug)]
enum Piece {
    Frame(Vec<u8>),
    /// Payload of `len` bytes of `fill`: large frames without generating
    /// every byte.
    Filled {
        len: usize,
        fill: u8,
    },
    /// A prefix claiming more than `MAX_FRAME`, then some bytes.
    Oversized {
        claim: u32,
        rest: Vec<u8>,
    },
}

fn piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        4 => gen::payloads(gen::session_msg(), 20..42).prop_map(Piece::Frame),
        2 => (0..=MAX_FRAME, any::<u8>()).prop_map(|(len, fill)| Piece::Filled { len, fill }),
        1 => ((MAX_FRAME as u32 + 1)..=u32::MAX, prop::collection::vec(any::<u8>(), 0..8))
            .prop_map(|(claim, rest)| Piece::Oversized { claim, rest }),
    ]
}

proptest! {
    #![proptest_config(config(64))]

    /// A link's receive path (`outbox::drain_messages`) over a stream cut
    /// into reads of arbitrary sizes: the frames come out whole and in
    /// order, each decoded as the property above says, until the first
    /// oversized prefix, after which the stream stays refused.
    #[test]
    fn streams_split_anywhere_yield_the_same_frames(
        pieces in prop::collection::vec(piece(), 1..5),
        reads in prop::collection::vec(1..=READ, 1..64),
    ) {
        let mut wire = Vec::new();
        let mut want = Vec::new();
        for p in &pieces {
            match p {
                Piece::Frame(payload) => {
                    wire.extend_from_slice(&(payload.len() as u32).to_le_bytes());
                    wire.extend_from_slice(payload);
                    want.push(Ok(payload.clone()));
                }
                Piece::Filled { len, fill } => {
                    wire.extend_from_slice(&(*len as u32).to_le_bytes());
                    wire.resize(wire.len() + len, *fill);
                    want.push(Ok(vec![*fill; *len]));
                }
                Piece::Oversized { claim, rest } => {
                    wire.extend_from_slice(&claim.to_le_bytes());
                    wire.extend_from_slice(rest);
                    want.push(Err(FrameError::TooLarge { len: *claim as usize, max: MAX_FRAME }));
                    break;
                }
            }
        }
        let mut d = FrameDecoder::default();
        let mut got: Vec<Result<Vec<u8>, FrameError>> = Vec::new();
        let mut at = 0;
        let mut sizes = reads.iter().cycle();
        while at < wire.len() {
            let n = (*sizes.next().unwrap_or(&READ)).min(wire.len() - at);
            let ((), largest) = alloc::largest(|| {
                d.push(&wire[at..at + n]);
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
            // `got` holds copies made for the test; they are frames, so
            // within the bound anyway.
            prop_assert!(
                largest <= PREFIX + MAX_FRAME + n,
                "a read of {n} bytes made the decoder allocate {largest} bytes"
            );
            at += n;
            if matches!(got.last(), Some(Err(_))) {
                break;
            }
        }
        prop_assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            prop_assert!(g == w, "frame differs: {} bytes vs {} bytes", g.as_ref().map_or(0, Vec::len), w.as_ref().map_or(0, Vec::len));
        }
        if matches!(want.last(), Some(Err(_))) {
            d.push(&[0; 8]);
            prop_assert!(d.next_payload().is_err());
        } else {
            prop_assert_eq!(d.buffered(), 0);
        }
    }
}
