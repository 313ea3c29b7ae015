//! The opening of one connection between two peers (the seeds' CONNECT):
//! the dialing peer presents its id and ticket; the other admits it only if
//! the tracker's last UPDATE lists that id with the ticket's digest
//! ([`super::connect::admit`]). Each step has a deadline; the connection
//! carries PUTs and GETs once open.

use super::connect::{admit, ConnectFail};
use super::messages::{PeerMsg, PEER_PROTOCOL_VERSION};
use crate::frame::FrameDecoder;
use crate::io::Identity;
use crate::server::messages::PeerInfo;
use crate::time::Timestamp;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stage {
    /// Dialed; the connection is not open yet.
    Dialing,
    /// CONNECT sent; waiting for CONNECT OK or FAIL.
    Hello,
    /// Accepted; waiting for the other's CONNECT.
    Admitting,
    Open {
        peer: u64,
    },
}

pub(super) struct Link {
    /// The number the user knows it by.
    pub(super) id: u32,
    pub(super) addr: String,
    pub(super) dialed: bool,
    pub(super) stage: Stage,
    pub(super) decoder: FrameDecoder,
    /// The opening must be over by then.
    pub(super) deadline: Option<Timestamp>,
    /// What the other end's TLS handshake proved (once open).
    pub(super) identity: Identity,
}

/// What the opening asks of the node after a message.
pub(super) enum Step {
    /// Send this; the link is open to `peer`.
    Open { peer: u64, reply: Option<PeerMsg> },
    /// The opening failed: send the reply (if any), report, close.
    Fail {
        reason: String,
        refused: Option<ConnectFail>,
        reply: Option<PeerMsg>,
    },
    /// Not an opening message: the open link's business.
    Pass(PeerMsg),
}

impl Link {
    pub(super) fn new(id: u32, addr: String, dialed: bool, deadline: Timestamp) -> Self {
        Link {
            id,
            addr,
            dialed,
            stage: if dialed {
                Stage::Dialing
            } else {
                Stage::Admitting
            },
            decoder: FrameDecoder::default(),
            deadline: Some(deadline),
            identity: Identity::Anonymous,
        }
    }

    pub(super) fn peer(&self) -> Option<u64> {
        match self.stage {
            Stage::Open { peer } => Some(peer),
            _ => None,
        }
    }

    /// The dialed connection is open: present ourselves (`me`: our id and
    /// ticket, if registered).
    pub(super) fn connected(&mut self, me: Option<(u64, [u8; 32])>) -> Result<PeerMsg, String> {
        let (peer, ticket) = me.ok_or("this peer is not registered (run `register` first)")?;
        self.stage = Stage::Hello;
        Ok(PeerMsg::Connect {
            version: PEER_PROTOCOL_VERSION,
            peer,
            ticket,
        })
    }

    /// A message while the link opens (or after).
    pub(super) fn on_msg(&mut self, msg: PeerMsg, me: Option<u64>, list: &[PeerInfo]) -> Step {
        match (self.stage, msg) {
            (
                Stage::Admitting,
                PeerMsg::Connect {
                    version,
                    peer,
                    ticket,
                },
            ) => match admit(me, list, version, peer, &ticket, self.identity) {
                Ok(peer) => {
                    self.stage = Stage::Open { peer };
                    self.deadline = None;
                    let me = me.unwrap_or_default();
                    Step::Open {
                        peer,
                        reply: Some(PeerMsg::ConnectOk { peer: me }),
                    }
                }
                Err(reason) => Step::Fail {
                    reason: reason.to_string(),
                    refused: Some(reason.clone()),
                    reply: Some(PeerMsg::ConnectFail { reason }),
                },
            },
            (Stage::Hello, PeerMsg::ConnectOk { peer }) => {
                // Its TLS handshake proved the key: it must be the key the
                // tracker lists for the peer it says it is.
                let Some(listed) = list.iter().find(|p| p.peer == peer) else {
                    return Step::Fail {
                        reason: format!(
                            "{} answered as peer {peer}, which the tracker does not list",
                            self.addr
                        ),
                        refused: None,
                        reply: None,
                    };
                };
                if !self.identity.may_hold(listed.key) {
                    return Step::Fail {
                        reason: format!(
                            "{} answered as peer {peer}, but its certificate is not the one \
                             peer {peer} registered with",
                            self.addr
                        ),
                        refused: None,
                        reply: None,
                    };
                }
                self.stage = Stage::Open { peer };
                self.deadline = None;
                Step::Open { peer, reply: None }
            }
            (Stage::Hello, PeerMsg::ConnectFail { reason }) => Step::Fail {
                reason: reason.to_string(),
                refused: None,
                reply: None,
            },
            (Stage::Open { .. }, msg) => Step::Pass(msg),
            (_, msg) => Step::Fail {
                reason: format!("unexpected message while connecting: {}", describe(&msg)),
                refused: None,
                reply: None,
            },
        }
    }
}

fn describe(msg: &PeerMsg) -> &'static str {
    match msg {
        PeerMsg::Connect { .. } => "CONNECT",
        PeerMsg::ConnectOk { .. } => "CONNECT OK",
        PeerMsg::ConnectFail { .. } => "CONNECT FAIL",
        PeerMsg::Get { .. } => "GET",
        PeerMsg::GetFail { .. } => "GET FAIL",
        PeerMsg::Xfer { .. } => "a transfer",
        PeerMsg::SyncList { .. }
        | PeerMsg::SyncListing { .. }
        | PeerMsg::SyncPut { .. }
        | PeerMsg::SyncYield { .. }
        | PeerMsg::SyncYielded { .. }
        | PeerMsg::SyncRefused { .. } => "a SYNC message",
    }
}
