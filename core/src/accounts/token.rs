//! Session tokens: proof that a user logged in, verifiable by every server.
//!
//! A token names the user and carries an expiry and a random id, MACed with a
//! key derived from the cluster secret, so any server can check it without
//! asking the one that issued it. Logout replicates the token's id into the
//! revoked table through the master's log, so a logged-out token is refused
//! everywhere once applied. Expiry is in Unix seconds, from the `now` every
//! driver passes in (the drivers' timestamps count from the Unix epoch).

use crate::auth::ClusterSecret;
use speedy::{Readable, Writable};

#[derive(Clone, Debug, PartialEq, Eq, Readable, Writable)]
pub struct SessionToken {
    pub user_id: u64,
    pub username: String,
    pub expires: u64,
    pub id: [u8; 16],
    pub mac: [u8; 32],
}

impl SessionToken {
    pub fn issue(
        secret: &ClusterSecret,
        user_id: u64,
        username: String,
        expires: u64,
        id: [u8; 16],
    ) -> Self {
        let mac = secret.token_mac(user_id, &username, expires, &id);
        SessionToken {
            user_id,
            username,
            expires,
            id,
            mac,
        }
    }

    /// True if the token was issued with this cluster's secret. Expiry and
    /// revocation are checked by the caller, which knows the time and state.
    pub fn authentic(&self, secret: &ClusterSecret) -> bool {
        let want = secret.token_mac(self.user_id, &self.username, self.expires, &self.id);
        blake3::Hash::from(want) == blake3::Hash::from(self.mac)
    }

    /// Hex of the encoded token, for the CLI's session file.
    pub fn to_hex(&self) -> String {
        let bytes = self.write_to_vec().unwrap_or_default();
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        let s = s.trim();
        if !s.len().is_multiple_of(2) || s.len() > 1024 {
            return None;
        }
        let bytes: Option<Vec<u8>> = (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
            .collect();
        crate::frame::decode(&bytes?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forged_fields_fail_and_hex_round_trips() {
        let s = ClusterSecret::from_bytes(b"token-test-secret-123").unwrap();
        let t = SessionToken::issue(&s, 7, "alice".into(), 1000, [3; 16]);
        assert!(t.authentic(&s));
        assert_eq!(SessionToken::from_hex(&t.to_hex()), Some(t.clone()));
        let mut other_user = t.clone();
        other_user.user_id = 8;
        assert!(!other_user.authentic(&s));
        let mut longer = t.clone();
        longer.expires = 10_000;
        assert!(!longer.authentic(&s));
        assert_eq!(SessionToken::from_hex("zz"), None);
        assert_eq!(SessionToken::from_hex("abc"), None);
    }
}
