//! The cluster secret and the auth codes the balancer hands to clients.
//!
//! An auth code names one server and one random nonce, and carries a MAC over
//! both made with a key derived from the cluster secret. Only holders of the
//! secret can mint one, and a server accepts only codes that name it. That
//! alone would make a code reusable; single use and expiry come from the
//! server's reservation table (see `server::reservations`): the balancer's
//! probe reserves the nonce, the client's HELLO consumes it, and an unused
//! reservation lapses after a timeout.

use speedy::{Readable, Writable};
use std::fmt;

/// Raw secrets shorter than this are refused: they could be guessed.
pub const MIN_SECRET_LEN: usize = 16;

/// The shared secret of the balancer and the servers of one cluster.
#[derive(Clone)]
pub struct ClusterSecret {
    auth_code_key: [u8; 32],
    token_key: [u8; 32],
    peer_key: [u8; 32],
}

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretError {
    TooShort { len: usize },
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretError::TooShort { len } => write!(
                f,
                "cluster secret is {len} bytes; at least {MIN_SECRET_LEN} are required"
            ),
        }
    }
}

impl std::error::Error for SecretError {}

impl ClusterSecret {
    /// Derives purpose-specific keys from raw secret material (for example
    /// the contents of a secret file, whitespace trimmed by the caller).
    pub fn from_bytes(raw: &[u8]) -> Result<Self, SecretError> {
        if raw.len() < MIN_SECRET_LEN {
            return Err(SecretError::TooShort { len: raw.len() });
        }
        Ok(ClusterSecret {
            auth_code_key: blake3::derive_key("ferry 2026 auth code mac v1", raw),
            token_key: blake3::derive_key("ferry 2026 session token mac v1", raw),
            peer_key: blake3::derive_key("ferry 2026 server peer proof v1", raw),
        })
    }

    pub fn mint(&self, server_id: u32, nonce: [u8; 16]) -> AuthCode {
        AuthCode {
            server_id,
            nonce,
            mac: self.mac(server_id, &nonce),
        }
    }

    /// True if `code` was minted with this secret. Constant-time comparison.
    pub fn verify(&self, code: &AuthCode) -> bool {
        blake3::Hash::from(code.mac) == blake3::Hash::from(self.mac(code.server_id, &code.nonce))
    }

    /// MAC of a session token's fields (see `accounts::token`).
    ///
    /// `epoch`: the user's password epoch (how many times they changed
    /// their password). Epoch 0 is MACed as before epochs existed, so the
    /// tokens of users who never changed theirs stay valid; a later epoch
    /// is appended, so a token of an earlier one no longer verifies.
    pub fn token_mac(
        &self,
        user_id: u64,
        username: &str,
        expires: u64,
        id: &[u8; 16],
        epoch: u32,
    ) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.token_key);
        h.update(&user_id.to_le_bytes());
        h.update(&(username.len() as u64).to_le_bytes());
        h.update(username.as_bytes());
        h.update(&expires.to_le_bytes());
        h.update(id);
        if epoch > 0 {
            h.update(&epoch.to_le_bytes());
        }
        *h.finalize().as_bytes()
    }

    /// Proof that server `from` holds the cluster secret, bound to the server
    /// it connects to and to that server's challenge nonce, so it cannot be
    /// replayed on another connection.
    pub fn peer_proof(&self, from: u32, to: u32, challenge: &[u8; 16]) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.peer_key);
        h.update(&from.to_le_bytes());
        h.update(&to.to_le_bytes());
        h.update(challenge);
        *h.finalize().as_bytes()
    }

    fn mac(&self, server_id: u32, nonce: &[u8; 16]) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.auth_code_key);
        h.update(&server_id.to_le_bytes());
        h.update(nonce);
        *h.finalize().as_bytes()
    }
}

/// A code that lets one client start one session on one server.
#[derive(Clone, Debug, PartialEq, Eq, Readable, Writable)]
pub struct AuthCode {
    pub server_id: u32,
    pub nonce: [u8; 16],
    pub mac: [u8; 32],
}

impl AuthCode {
    /// A short, non-secret label for logs and traces.
    pub fn label(&self) -> String {
        format!(
            "s{}:{:02x}{:02x}{:02x}",
            self.server_id, self.nonce[0], self.nonce[1], self.nonce[2]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> ClusterSecret {
        ClusterSecret::from_bytes(s.as_bytes()).unwrap()
    }

    #[test]
    fn minted_code_verifies_and_tampering_fails() {
        let s = secret("0123456789abcdef-cluster");
        let code = s.mint(2, [7; 16]);
        assert!(s.verify(&code));
        let mut other_server = code.clone();
        other_server.server_id = 3;
        assert!(!s.verify(&other_server));
        let mut other_nonce = code.clone();
        other_nonce.nonce[0] ^= 1;
        assert!(!s.verify(&other_nonce));
        assert!(!secret("another-secret-of-16+").verify(&code));
    }

    #[test]
    fn short_secrets_are_refused() {
        assert_eq!(
            ClusterSecret::from_bytes(b"short").unwrap_err(),
            SecretError::TooShort { len: 5 }
        );
    }
}
