//! Helpers shared by the core's unit tests.

use crate::auth::ClusterSecret;
use crate::frame::{self, FrameDecoder};
use crate::io::{ConnId, Node, Output};
use crate::time::Timestamp;
use speedy::{LittleEndian, Readable, Writable};

pub fn secret() -> ClusterSecret {
    ClusterSecret::from_bytes(b"unit-test-cluster-secret").unwrap()
}

pub fn ms(n: u64) -> Timestamp {
    Timestamp::from_micros(n * 1000)
}

pub fn drain<N: Node>(node: &mut N) -> Vec<Output<N::Event>> {
    std::iter::from_fn(|| node.poll_output()).collect()
}

/// Decodes every message transmitted on `conn` in `outs`.
pub fn sent<M, E>(outs: &[Output<E>], conn: ConnId) -> Vec<M>
where
    M: for<'a> Readable<'a, LittleEndian> + Writable<LittleEndian>,
{
    let mut d = FrameDecoder::default();
    for o in outs {
        if let Output::Transmit { conn: c, bytes } = o {
            if *c == conn {
                d.push(bytes);
            }
        }
    }
    let mut msgs = Vec::new();
    while let Some(p) = d.next_payload().unwrap() {
        msgs.push(frame::decode(p).unwrap());
    }
    msgs
}

pub fn closed<E>(outs: &[Output<E>], conn: ConnId) -> bool {
    outs.iter()
        .any(|o| matches!(o, Output::Close { conn: c } if *c == conn))
}

pub fn connects<E>(outs: &[Output<E>]) -> Vec<(ConnId, String)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Connect { conn, addr } => Some((*conn, addr.clone())),
            _ => None,
        })
        .collect()
}

pub fn events<E: Clone>(outs: &[Output<E>]) -> Vec<E> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

pub fn bytes_of<M: speedy::Writable<LittleEndian>>(msg: &M) -> Vec<u8> {
    frame::encode(msg).unwrap()
}
pub mod cluster;
mod conformance_tests;
pub mod peers;
