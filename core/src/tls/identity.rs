//! Who is at the other end of a link, as its TLS handshake proved it.

use speedy::{Readable, Writable};
use std::fmt;

/// A BLAKE3 digest of a certificate (DER): what a person compares and what
/// a client remembers of a cluster's authority, and how a peer's own
/// certificate is named in the tracker's lists.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Readable, Writable)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    pub fn of(der: &[u8]) -> Self {
        Fingerprint(*blake3::hash(der).as_bytes())
    }

    /// Parses what [`Fingerprint`]'s `Display` wrote (64 hex digits, with
    /// or without the `blake3:` prefix and `:` separators).
    pub fn parse(text: &str) -> Option<Self> {
        let hex: String = text
            .trim()
            .trim_start_matches("blake3:")
            .chars()
            .filter(|c| *c != ':')
            .collect();
        if hex.len() != 64 || !hex.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Fingerprint(out))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("blake3:")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Short enough for a trace line, long enough to tell keys apart.
        write!(f, "fp:")?;
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// What a member of the cluster is, by the name its certificate was
/// issued for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClusterRole {
    Server,
    Balancer,
}

impl ClusterRole {
    /// The DNS name a member's certificate is issued for. Not a host's
    /// name: members move between addresses, and what a certificate
    /// vouches for is the role under the cluster's authority.
    pub fn dns_name(self) -> &'static str {
        match self {
            ClusterRole::Server => "ferry-server",
            ClusterRole::Balancer => "ferry-balancer",
        }
    }
}

/// The other end of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Identity {
    /// A link without TLS: only the core's in-memory tests run such links.
    /// Nodes treat it as whatever the link says it is, since no TLS layer
    /// could have told them otherwise.
    Unchecked,
    /// TLS, but no certificate: a client of the cluster.
    Anonymous,
    /// A certificate issued by the cluster's authority, whose fingerprint
    /// is `ca`.
    Cluster { role: ClusterRole, ca: Fingerprint },
    /// A certificate of its own (a peer's), which the handshake proved the
    /// other end holds the key of.
    Key(Fingerprint),
}

impl Identity {
    /// May this end be a server of the cluster?
    pub fn may_be(self, role: ClusterRole) -> bool {
        match self {
            Identity::Unchecked => true,
            Identity::Cluster { role: r, .. } => r == role,
            Identity::Anonymous | Identity::Key(_) => false,
        }
    }

    /// May this end be the peer whose certificate is `key`?
    pub fn may_hold(self, key: Option<Fingerprint>) -> bool {
        match (self, key) {
            (Identity::Unchecked, _) => true,
            (Identity::Key(k), Some(listed)) => k == listed,
            _ => false,
        }
    }

    /// The certificate of a peer's own, if that is what was presented.
    pub fn key(self) -> Option<Fingerprint> {
        match self {
            Identity::Key(k) => Some(k),
            _ => None,
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Unchecked => f.write_str("unchecked"),
            Identity::Anonymous => f.write_str("anonymous"),
            Identity::Cluster { role, .. } => write!(f, "{}", role.dns_name()),
            Identity::Key(k) => write!(f, "key {k:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_round_trip_through_text() {
        let fp = Fingerprint::of(b"a certificate");
        let text = fp.to_string();
        assert!(text.starts_with("blake3:"));
        assert_eq!(Fingerprint::parse(&text), Some(fp));
        assert_eq!(Fingerprint::parse(&text[7..]), Some(fp));
        assert_eq!(Fingerprint::parse("blake3:zz"), None);
        assert_eq!(Fingerprint::parse(&"é".repeat(32)), None);
    }
}
