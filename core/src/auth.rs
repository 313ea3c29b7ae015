//! The cluster secret and the auth codes the balancer hands to clients.
//!
//! An auth code names one server, one random nonce, when it was minted and
//! when it expires (Unix milliseconds, by the minting node's clock), and
//! carries a MAC over all of them made with a key derived from the cluster
//! secret. Only holders of the secret can mint one, a server accepts only
//! codes that name it, and the code says itself how long it is good for:
//! a server keeps nothing for a code until the client presents it. Single
//! use comes from the server remembering the nonces presented to it until
//! they expire (see `server::spent_codes`).
//!
//! The balancer's probe carries the code it will hand out, and a proof
//! ([`ClusterSecret::probe_proof`]) that the prober holds the secret: the
//! client is given the code but never the proof, so a client cannot pass
//! for the balancer.

use crate::time::Timestamp;
use speedy::{Readable, Writable};
use std::fmt;
use std::time::Duration;

/// How long a code is good for when it is minted, by default: long enough
/// for a client to connect and say HELLO across a slow network, short
/// enough that a code someone kept is soon worth nothing.
pub const CODE_TTL: Duration = Duration::from_secs(2);

/// Raw secrets shorter than this are refused: they could be guessed.
pub const MIN_SECRET_LEN: usize = 16;

/// The shared secret of the balancer and the servers of one cluster.
#[derive(Clone)]
pub struct ClusterSecret {
    auth_code_key: [u8; 32],
    probe_key: [u8; 32],
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
            // v2: the MAC covers the code's times too.
            auth_code_key: blake3::derive_key("ferry 2026 auth code mac v2", raw),
            probe_key: blake3::derive_key("ferry 2026 balancer probe proof v1", raw),
            token_key: blake3::derive_key("ferry 2026 session token mac v1", raw),
            peer_key: blake3::derive_key("ferry 2026 server peer proof v1", raw),
        })
    }

    /// A code for server `server_id` minted at `now` (the minting node's
    /// clock, Unix time), good for `ttl`.
    pub fn mint(&self, server_id: u32, nonce: [u8; 16], now: Timestamp, ttl: Duration) -> AuthCode {
        let issued_ms = now.as_micros() / 1000;
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let mut code = AuthCode {
            server_id,
            nonce,
            issued_ms,
            expires_ms: issued_ms.saturating_add(ttl_ms),
            mac: [0; 32],
        };
        code.mac = self.mac(&code);
        code
    }

    /// True if `code` was minted with this secret, its fields as they were
    /// minted. Constant-time comparison.
    pub fn verify(&self, code: &AuthCode) -> bool {
        blake3::Hash::from(code.mac) == blake3::Hash::from(self.mac(code))
    }

    /// Proof, sent with a probe, that the prober holds the cluster secret,
    /// bound to the probe's code (and so to its server and its expiry).
    pub fn probe_proof(&self, code: &AuthCode) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.probe_key);
        h.update(&code.mac);
        *h.finalize().as_bytes()
    }

    /// True if `proof` is [`ClusterSecret::probe_proof`] of `code`.
    /// Constant-time comparison.
    pub fn verify_probe(&self, code: &AuthCode, proof: &[u8; 32]) -> bool {
        blake3::Hash::from(*proof) == blake3::Hash::from(self.probe_proof(code))
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

    fn mac(&self, code: &AuthCode) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.auth_code_key);
        h.update(&code.server_id.to_le_bytes());
        h.update(&code.nonce);
        h.update(&code.issued_ms.to_le_bytes());
        h.update(&code.expires_ms.to_le_bytes());
        *h.finalize().as_bytes()
    }
}

/// A code that lets one client start one session on one server, until it
/// expires.
#[derive(Clone, Debug, PartialEq, Eq, Readable, Writable)]
pub struct AuthCode {
    pub server_id: u32,
    pub nonce: [u8; 16],
    /// When it was minted: Unix milliseconds, by the minting node's clock.
    pub issued_ms: u64,
    /// When it stops being good, on the same clock.
    pub expires_ms: u64,
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
        let now = Timestamp::from_micros(1_800_000_000_123_456);
        let code = s.mint(2, [7; 16], now, CODE_TTL);
        assert_eq!(code.issued_ms, 1_800_000_000_123);
        assert_eq!(code.expires_ms, 1_800_000_002_123);
        assert!(s.verify(&code));
        let mut other_server = code.clone();
        other_server.server_id = 3;
        assert!(!s.verify(&other_server));
        let mut other_nonce = code.clone();
        other_nonce.nonce[0] ^= 1;
        assert!(!s.verify(&other_nonce));
        let mut later = code.clone();
        later.expires_ms += 60_000;
        assert!(!s.verify(&later), "a code cannot be made to live longer");
        let mut earlier = code.clone();
        earlier.issued_ms -= 1;
        assert!(!s.verify(&earlier));
        assert!(!secret("another-secret-of-16+").verify(&code));
    }

    #[test]
    fn a_probe_proof_is_bound_to_its_code_and_the_secret() {
        let s = secret("0123456789abcdef-cluster");
        let now = Timestamp::from_micros(1_800_000_000_000_000);
        let code = s.mint(2, [7; 16], now, CODE_TTL);
        let proof = s.probe_proof(&code);
        assert!(s.verify_probe(&code, &proof));
        let other = s.mint(2, [8; 16], now, CODE_TTL);
        assert!(!s.verify_probe(&other, &proof));
        let forged = secret("another-secret-of-16+").probe_proof(&code);
        assert!(!s.verify_probe(&code, &forged));
        // The code's own MAC is no proof: clients hold it.
        assert!(!s.verify_probe(&code, &code.mac));
    }

    #[test]
    fn short_secrets_are_refused() {
        assert_eq!(
            ClusterSecret::from_bytes(b"short").unwrap_err(),
            SecretError::TooShort { len: 5 }
        );
    }
}
