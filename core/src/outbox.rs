//! The queue of outputs a node builds up while it handles one input.

use crate::frame::{self, FrameDecoder, FrameError};
use crate::io::{ConnId, Output};
use speedy::{LittleEndian, Readable, Writable};
use std::collections::VecDeque;

#[derive(Debug)]
pub struct Outbox<E> {
    queue: VecDeque<Output<E>>,
}

impl<E> Default for Outbox<E> {
    fn default() -> Self {
        Outbox {
            queue: VecDeque::new(),
        }
    }
}

impl<E> Outbox<E> {
    /// Queues one framed message. Our own messages always fit a frame; if one
    /// ever does not, the connection is closed rather than sent half a story.
    pub fn send<M: Writable<LittleEndian>>(&mut self, conn: ConnId, msg: &M) {
        match frame::encode(msg) {
            Ok(bytes) => self.queue.push_back(Output::Transmit { conn, bytes }),
            Err(_) => self.close(conn),
        }
    }

    /// Queues bytes already framed (another node's, passed on).
    pub fn transmit(&mut self, conn: ConnId, bytes: Vec<u8>) {
        self.queue.push_back(Output::Transmit { conn, bytes });
    }

    pub fn connect(&mut self, conn: ConnId, addr: String) {
        self.queue.push_back(Output::Connect { conn, addr });
    }

    pub fn close(&mut self, conn: ConnId) {
        self.queue.push_back(Output::Close { conn });
    }

    pub fn persist(&mut self, token: u64, batch: crate::store::Batch) {
        self.queue.push_back(Output::Persist { token, batch });
    }

    pub fn file(&mut self, op: crate::io::FileOp) {
        self.queue.push_back(Output::File(op));
    }

    pub fn event(&mut self, e: E) {
        self.queue.push_back(Output::Event(e));
    }

    pub fn pop(&mut self) -> Option<Output<E>> {
        self.queue.pop_front()
    }
}

/// Decodes every complete message in `decoder` into `msgs`. On a framing or
/// decoding error, returns it: the caller refuses and closes the connection.
pub fn drain_messages<M>(decoder: &mut FrameDecoder, msgs: &mut Vec<M>) -> Result<(), FrameError>
where
    M: for<'a> Readable<'a, LittleEndian> + Writable<LittleEndian>,
{
    while let Some(payload) = decoder.next_payload()? {
        msgs.push(frame::decode(payload)?);
    }
    Ok(())
}
