//! Session tokens: proof that a user logged in, verifiable by every server.
//!
//! A token names the user and carries an expiry and a random id, MACed with a
//! key derived from the cluster secret, so any server can check it without
//! asking the one that issued it. Logout replicates the token's id into the
//! revoked table through the master's log, so a logged-out token is refused
//! everywhere once applied. The MAC also covers the user's password epoch
//! (how many times they changed their password; not carried in the token,
//! but read from the replicated state), so a change of password makes
//! every token issued before it fail to verify, on every server. Expiry is in Unix seconds, from the `now` every
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
    /// A token for a user who never changed their password (epoch 0).
    pub fn issue(
        secret: &ClusterSecret,
        user_id: u64,
        username: String,
        expires: u64,
        id: [u8; 16],
    ) -> Self {
        Self::issue_in(secret, 0, user_id, username, expires, id)
    }

    /// A token of password epoch `epoch`.
    pub fn issue_in(
        secret: &ClusterSecret,
        epoch: u32,
        user_id: u64,
        username: String,
        expires: u64,
        id: [u8; 16],
    ) -> Self {
        let mac = secret.token_mac(user_id, &username, expires, &id, epoch);
        SessionToken {
            user_id,
            username,
            expires,
            id,
            mac,
        }
    }

    /// True if the token was issued with this cluster's secret in password
    /// epoch `epoch`. Expiry and revocation are checked by the caller, which
    /// knows the time and state.
    pub fn authentic(&self, secret: &ClusterSecret, epoch: u32) -> bool {
        let want = secret.token_mac(self.user_id, &self.username, self.expires, &self.id, epoch);
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
        assert!(t.authentic(&s, 0));
        assert!(!t.authentic(&s, 1), "an earlier epoch's token fails");
        let later = SessionToken::issue_in(&s, 2, 7, "alice".into(), 1000, [3; 16]);
        assert!(later.authentic(&s, 2) && !later.authentic(&s, 0) && !later.authentic(&s, 1));
        assert_eq!(SessionToken::from_hex(&t.to_hex()), Some(t.clone()));
        let mut other_user = t.clone();
        other_user.user_id = 8;
        assert!(!other_user.authentic(&s, 0));
        let mut longer = t.clone();
        longer.expires = 10_000;
        assert!(!longer.authentic(&s, 0));
        assert_eq!(SessionToken::from_hex("zz"), None);
        assert_eq!(SessionToken::from_hex("abc"), None);
    }
}
