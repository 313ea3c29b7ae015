//! CONNECT between two peers (the seeds' CONNECT OK / CONNECT FAIL): the
//! connecting peer presents its id and the ticket the tracker gave it; the
//! other admits it only if the tracker's last UPDATE lists that id with the
//! ticket's digest. Only registered peers talk to each other.

use super::messages::PEER_PROTOCOL_VERSION;
use crate::io::Identity;
use crate::server::messages::PeerInfo;
use speedy::{Readable, Writable};
use std::fmt;

/// Why a peer refuses a connection.
#[derive(Clone, Debug, PartialEq, Eq, Readable, Writable)]
#[speedy(tag_type = u8)]
pub enum ConnectFail {
    /// The other speaks another version.
    Version { ours: u16, theirs: u16 },
    /// This peer is not registered itself (it has no list to check with).
    NotRegistered,
    /// The tracker's list has no such peer (never registered, or gone).
    UnknownPeer { peer: u64 },
    /// The peer is listed, but the ticket is not its.
    BadTicket,
    /// The ticket is right, but the connection's certificate is not the
    /// one the peer registered with: someone who learnt the ticket.
    WrongKey,
}

impl fmt::Display for ConnectFail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectFail::Version { ours, theirs } => {
                write!(f, "protocol version {theirs}, this peer speaks {ours}")
            }
            ConnectFail::NotRegistered => f.write_str("this peer is not registered"),
            ConnectFail::UnknownPeer { peer } => {
                write!(f, "unknown peer {peer}: not on the tracker's list")
            }
            ConnectFail::BadTicket => f.write_str("the ticket is not that peer's"),
            ConnectFail::WrongKey => {
                f.write_str("the connection's certificate is not the one that peer registered with")
            }
        }
    }
}

/// The admitting side's answer to a `Connect`: the peer admitted, given
/// `me` (this peer's own id, if registered) and `list` (the last UPDATE).
pub fn admit(
    me: Option<u64>,
    list: &[PeerInfo],
    version: u16,
    peer: u64,
    ticket: &[u8; 32],
    identity: Identity,
) -> Result<u64, ConnectFail> {
    if version != PEER_PROTOCOL_VERSION {
        return Err(ConnectFail::Version {
            ours: PEER_PROTOCOL_VERSION,
            theirs: version,
        });
    }
    if me.is_none() {
        return Err(ConnectFail::NotRegistered);
    }
    let listed = list
        .iter()
        .find(|p| p.peer == peer)
        .ok_or(ConnectFail::UnknownPeer { peer })?;
    // Not a secret comparison that leaks through timing: the digest is
    // public (every peer's UPDATE carries it).
    if *blake3::hash(ticket).as_bytes() != listed.ticket_digest {
        return Err(ConnectFail::BadTicket);
    }
    match identity.may_hold(listed.key) {
        true => Ok(peer),
        false => Err(ConnectFail::WrongKey),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::messages::{PeerMsg, PEER_TAGS};

    use crate::tls::Fingerprint;

    fn key(peer: u64) -> Fingerprint {
        Fingerprint::of(&peer.to_le_bytes())
    }

    fn listed(peer: u64, ticket: &[u8; 32]) -> PeerInfo {
        PeerInfo {
            peer,
            user: format!("user{peer}"),
            addr: format!("10.0.0.{peer}:9000"),
            ticket_digest: *blake3::hash(ticket).as_bytes(),
            key: Some(key(peer)),
        }
    }

    #[test]
    fn only_a_listed_peer_with_its_own_ticket_and_key_is_admitted() {
        let list = [listed(3, &[3; 32]), listed(5, &[5; 32])];
        let v = PEER_PROTOCOL_VERSION;
        let five = Identity::Key(key(5));
        assert_eq!(admit(Some(3), &list, v, 5, &[5; 32], five), Ok(5));
        // Another listed peer's ticket is not yours.
        assert_eq!(
            admit(Some(3), &list, v, 5, &[3; 32], five),
            Err(ConnectFail::BadTicket)
        );
        // Peer 5's ticket, learnt by someone holding another key (peer
        // 3's, or none at all), is not enough.
        for other in [Identity::Key(key(3)), Identity::Anonymous] {
            assert_eq!(
                admit(Some(3), &list, v, 5, &[5; 32], other),
                Err(ConnectFail::WrongKey)
            );
        }
        assert_eq!(
            admit(Some(3), &list, v, 9, &[9; 32], five),
            Err(ConnectFail::UnknownPeer { peer: 9 })
        );
        assert_eq!(
            admit(None, &list, v, 5, &[5; 32], five),
            Err(ConnectFail::NotRegistered)
        );
        assert_eq!(
            admit(Some(3), &list, v + 1, 5, &[5; 32], five),
            Err(ConnectFail::Version {
                ours: v,
                theirs: v + 1
            })
        );
    }

    #[test]
    fn the_messages_round_trip_and_carry_their_tags() {
        let msgs = [
            PeerMsg::Connect {
                version: PEER_PROTOCOL_VERSION,
                peer: 5,
                ticket: [5; 32],
            },
            PeerMsg::ConnectOk { peer: 3 },
            PeerMsg::ConnectFail {
                reason: ConnectFail::UnknownPeer { peer: 9 },
            },
        ];
        for m in msgs {
            let bytes = m.write_to_vec().unwrap();
            assert!(PEER_TAGS.contains(&bytes[0]), "{m:?}");
            assert_eq!(PeerMsg::read_from_buffer(&bytes).unwrap(), m);
        }
    }
}
