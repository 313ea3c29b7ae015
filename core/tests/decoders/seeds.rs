//! The fuzz targets' seed corpus (`fuzz/corpus/<target>/seed-*`): valid
//! encodings drawn from the strategies above with a fixed seed. Written by
//!
//!     cargo test -p ferry-core --test decoders -- --ignored write_fuzz_seeds
//!
//! and checked on every run: a change to a message that leaves a seed
//! invalid fails here rather than quietly weakening the fuzzing.

use crate::gen;
use ferry_core::accounts::token::SessionToken;
use ferry_core::balancer::messages::{BalancerMsg, ProbeMsg};
use ferry_core::file_attrs::FileAttrs;
use ferry_core::frame::{self, PREFIX};
use ferry_core::replication::catalogue::FileMeta;
use ferry_core::replication::entry::Entry;
use ferry_core::replication::messages::ReplicaMsg;
use ferry_core::replication::state::User;
use ferry_core::server::{BlobMsg, SessionMsg};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use speedy::{LittleEndian, Readable, Writable};
use std::path::PathBuf;

/// Seeds per message target.
const EACH: usize = 8;

fn corpus(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../fuzz/corpus/{target}"))
}

fn draw<S: Strategy>(runner: &mut TestRunner, s: S, n: usize) -> Vec<S::Value> {
    (0..n)
        .map(|_| s.new_tree(runner).expect("strategy draws").current())
        .collect()
}

fn encoded<M: Writable<LittleEndian>>(msgs: Vec<M>) -> Vec<Vec<u8>> {
    msgs.iter()
        .map(|m| m.write_to_vec().expect("encodes"))
        .collect()
}

/// What each target is seeded with.
fn seeds() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    let mut r = TestRunner::deterministic();
    let stored = |kind: u8, v: Vec<Vec<u8>>| v.into_iter().map(move |b| [vec![kind], b].concat());
    let store: Vec<Vec<u8>> = stored(0, encoded(draw(&mut r, gen::entry(), 2)))
        .chain(stored(1, encoded(draw(&mut r, gen::user(), 2))))
        .chain(stored(2, encoded(draw(&mut r, gen::file_meta(), 2))))
        .chain(stored(3, encoded(draw(&mut r, gen::session_token(), 2))))
        .chain(stored(4, vec![7u64.to_le_bytes().to_vec()]))
        .chain(stored(5, encoded(draw(&mut r, gen::file_attrs(), 2))))
        .collect();
    let mut stream = Vec::new();
    for i in 0..4u8 {
        let mut s = vec![i, 0];
        let msgs = [
            encoded(draw(&mut r, gen::session_msg(), 2)),
            encoded(draw(&mut r, gen::replica_msg(), 1)),
            encoded(draw(&mut r, gen::probe_msg(), 1)),
        ];
        for m in msgs.concat() {
            s.extend_from_slice(&(m.len() as u32).to_le_bytes());
            s.extend_from_slice(&m);
        }
        stream.push(s);
    }
    vec![
        ("balancer", encoded(draw(&mut r, gen::balancer_msg(), EACH))),
        ("probe", encoded(draw(&mut r, gen::probe_msg(), EACH))),
        ("session", encoded(draw(&mut r, gen::session_msg(), EACH))),
        ("blob", encoded(draw(&mut r, gen::blob_msg(), EACH))),
        ("replica", encoded(draw(&mut r, gen::replica_msg(), EACH))),
        ("store", store),
        ("stream", stream),
    ]
}

#[test]
#[ignore = "writes fuzz/corpus; run by hand after a message changes"]
fn write_fuzz_seeds() {
    for (target, inputs) in seeds() {
        let dir = corpus(target);
        std::fs::create_dir_all(&dir).expect("corpus directory");
        for old in std::fs::read_dir(&dir).expect("corpus directory").flatten() {
            if old.file_name().to_string_lossy().starts_with("seed-") {
                std::fs::remove_file(old.path()).expect("old seed removed");
            }
        }
        for (i, input) in inputs.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), input).expect("seed written");
        }
    }
}

fn decodes<M>(payload: &[u8]) -> bool
where
    M: for<'a> Readable<'a, LittleEndian> + Writable<LittleEndian>,
{
    frame::decode::<M>(payload).is_ok()
}

/// Whether `input` is a valid seed of `target`, as its fuzz target reads it.
fn valid(target: &str, input: &[u8]) -> bool {
    match target {
        "balancer" => decodes::<BalancerMsg>(input),
        "probe" => decodes::<ProbeMsg>(input),
        "session" => decodes::<SessionMsg>(input),
        "blob" => decodes::<BlobMsg>(input),
        "replica" => decodes::<ReplicaMsg>(input),
        "store" => match input.split_first() {
            Some((0, r)) => decodes::<Entry>(r),
            Some((1, r)) => decodes::<User>(r),
            Some((2, r)) => decodes::<FileMeta>(r),
            Some((3, r)) => decodes::<SessionToken>(r),
            Some((4, r)) => decodes::<u64>(r),
            Some((5, r)) => decodes::<FileAttrs>(r),
            _ => false,
        },
        // Frames back to back after the two bytes that seed the read sizes.
        "stream" => {
            let mut rest = input.get(2..).unwrap_or_default();
            while rest.len() >= PREFIX {
                let (len, body) = rest.split_at(PREFIX);
                let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
                if body.len() < len {
                    return false;
                }
                rest = &body[len..];
            }
            rest.is_empty() && input.len() > 2
        }
        _ => false,
    }
}

#[test]
fn committed_fuzz_seeds_are_valid() {
    for (target, _) in seeds() {
        let dir = corpus(target);
        let mut n = 0;
        for f in std::fs::read_dir(&dir).expect("corpus directory").flatten() {
            if !f.file_name().to_string_lossy().starts_with("seed-") {
                continue;
            }
            let input = std::fs::read(f.path()).expect("seed readable");
            assert!(
                valid(target, &input),
                "{} no longer decodes: run `cargo test -p ferry-core --test decoders \
                 -- --ignored write_fuzz_seeds`",
                f.path().display()
            );
            n += 1;
        }
        assert!(n > 0, "no seeds in {}", dir.display());
    }
}
