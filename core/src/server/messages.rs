//! Messages of the client ↔ server session link.

use crate::auth::AuthCode;
use crate::refusal::Refusal;
use speedy::{Readable, Writable};

/// Client ↔ server. The handshake is HELLO(code) → HELLO ACK → ACK; requests
/// follow on the same connection.
#[derive(Clone, Debug, PartialEq, Eq, Readable, Writable)]
#[speedy(tag_type = u8)]
pub enum SessionMsg {
    /// Client → server: the code the balancer gave me.
    #[speedy(tag = 20)]
    Hello { version: u16, code: AuthCode },
    /// Server → client: code accepted, your slot is held.
    #[speedy(tag = 21)]
    HelloAck { server_id: u32 },
    /// Client → server: the session is established.
    #[speedy(tag = 22)]
    Ack,
    #[speedy(tag = 23)]
    Refused(Refusal),
    /// Client → server, while idle: I am still here.
    #[speedy(tag = 33)]
    Ping,
    /// Server → client: so am I.
    #[speedy(tag = 34)]
    Pong,
}

/// First tag byte of [`SessionMsg`] frames.
pub const SESSION_TAGS: std::ops::Range<u8> = 20..40;
