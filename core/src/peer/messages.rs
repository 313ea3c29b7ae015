//! Peer ↔ peer messages: the opening of a connection (CONNECT), and the
//! file operations on an open one (PUT, GET) whose content moves through
//! the one transfer engine.
//!
//! The seeds' words map onto them as follows: PUT FILENAME SIZE is the
//! transfer's `Offer` from the peer that puts; PUT OK is `Accept`, PUT FAIL
//! `Reject` with the reason. GET FILENAME is [`PeerMsg::Get`]; GET OK is the
//! holder's `Offer` (name and size), GET FAIL is [`PeerMsg::GetFail`].

use super::connect::ConnectFail;
use super::sync_plan::SyncEntry;
use crate::replication::sync_round::Token;
use crate::transfer::{TransferError, TransferMsg};
use speedy::{Readable, Writable};

/// The version of the peer-to-peer messages, checked at CONNECT. 2: peers
/// speak TLS and CONNECT FAIL may say `WrongKey`.
pub const PEER_PROTOCOL_VERSION: u16 = 2;

/// First tag byte of [`PeerMsg`] frames.
pub const PEER_TAGS: std::ops::Range<u8> = 100..120;

#[derive(Clone, Debug, PartialEq, Eq, Readable, Writable)]
#[speedy(tag_type = u8)]
pub enum PeerMsg {
    /// The connecting peer: who it is, and its proof.
    #[speedy(tag = 100)]
    Connect {
        version: u16,
        peer: u64,
        ticket: [u8; 32],
    },
    /// CONNECT OK, naming the admitting peer.
    #[speedy(tag = 101)]
    ConnectOk { peer: u64 },
    /// CONNECT FAIL, with the reason.
    #[speedy(tag = 102)]
    ConnectFail { reason: ConnectFail },
    /// GET: send me the file `name` of your directory, as transfer `id`.
    #[speedy(tag = 103)]
    Get { id: u64, name: String },
    /// GET FAIL: transfer `id` will not happen, and why.
    #[speedy(tag = 104)]
    GetFail { id: u64, reason: TransferError },
    /// A message of transfer `id`. Either end starts transfers (its PUTs
    /// and GETs), each numbering its own; `mine` says the transfer is one
    /// the message's sender started, so the two numberings never mix.
    #[speedy(tag = 105)]
    Xfer { mine: bool, msg: TransferMsg },
    /// SYNC, writer → reader: your listing, please (with digests).
    #[speedy(tag = 106)]
    SyncList { token: Token },
    /// A page of the listing; `more` says another follows (a listing of
    /// many files would not fit one frame).
    #[speedy(tag = 107)]
    SyncListing {
        token: Token,
        entries: Vec<SyncEntry>,
        more: bool,
    },
    /// SYNC, writer → reader: transfer `id` (my next offer) is a write of
    /// the round under `token`; keep its modification time.
    #[speedy(tag = 108)]
    SyncPut {
        token: Token,
        id: u64,
        modified_ms: u64,
    },
    /// SYNC, writer → reader: move your `name` (if it still holds
    /// `digest`) to its conflict name; my version takes the name.
    #[speedy(tag = 109)]
    SyncYield {
        token: Token,
        name: String,
        digest: [u8; 32],
    },
    /// The reader made room (or had nothing to move).
    #[speedy(tag = 110)]
    SyncYielded { token: Token, name: String },
    /// The reader refuses a SYNC message: a later writer's token is
    /// `highest`, or (same token) it could not do what was asked.
    #[speedy(tag = 111)]
    SyncRefused { highest: Token, reason: String },
}
