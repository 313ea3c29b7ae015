//! Password hashing with argon2id. Plain passwords exist only on the server a
//! client sent them to, for the duration of one request: what is replicated,
//! stored and logged is the salted hash.

use argon2::{Algorithm, Argon2, Params, Version};
use speedy::{Readable, Writable};
use std::fmt;

pub const MIN_PASSWORD: usize = 8;
pub const MAX_PASSWORD: usize = 1024;

/// argon2id cost parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Readable, Writable)]
pub struct PasswordParams {
    pub m_kib: u32,
    pub t: u32,
    pub p: u32,
}

impl PasswordParams {
    /// OWASP's recommended argon2id setting (19 MiB, 2 passes, 1 lane).
    pub const PRODUCTION: PasswordParams = PasswordParams {
        m_kib: 19 * 1024,
        t: 2,
        p: 1,
    };
    /// Cheap, for simulations and unit tests only.
    pub const TESTING: PasswordParams = PasswordParams {
        m_kib: 64,
        t: 1,
        p: 1,
    };
}

/// A salted argon2id hash and the parameters that made it.
#[derive(Clone, PartialEq, Eq, Readable, Writable)]
pub struct PasswordHash {
    pub params: PasswordParams,
    pub salt: [u8; 16],
    pub hash: [u8; 32],
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(argon2id, ..)")
    }
}

pub fn check_policy(password: &str) -> Result<(), String> {
    let n = password.len();
    if n < MIN_PASSWORD {
        return Err(format!("passwords are at least {MIN_PASSWORD} bytes long"));
    }
    if n > MAX_PASSWORD {
        return Err(format!("passwords are at most {MAX_PASSWORD} bytes long"));
    }
    Ok(())
}

fn raw_hash(params: PasswordParams, salt: &[u8; 16], password: &[u8]) -> Option<[u8; 32]> {
    let p = Params::new(params.m_kib, params.t, params.p, Some(32)).ok()?;
    let mut out = [0u8; 32];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, p)
        .hash_password_into(password, salt, &mut out)
        .ok()?;
    Some(out)
}

pub fn hash(params: PasswordParams, salt: [u8; 16], password: &str) -> Option<PasswordHash> {
    Some(PasswordHash {
        params,
        salt,
        hash: raw_hash(params, &salt, password.as_bytes())?,
    })
}

/// Constant-time check of `password` against `stored`.
pub fn verify(stored: &PasswordHash, password: &str) -> bool {
    match raw_hash(stored.params, &stored.salt, password.as_bytes()) {
        Some(h) => blake3::Hash::from(h) == blake3::Hash::from(stored.hash),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_the_right_password_only() {
        let h = hash(PasswordParams::TESTING, [1; 16], "correct horse").unwrap();
        assert!(verify(&h, "correct horse"));
        assert!(!verify(&h, "correct horsE"));
        let other_salt = hash(PasswordParams::TESTING, [2; 16], "correct horse").unwrap();
        assert_ne!(h.hash, other_salt.hash);
        assert_eq!(format!("{h:?}"), "PasswordHash(argon2id, ..)");
    }

    #[test]
    fn policy_bounds_length() {
        assert!(check_policy("short").is_err());
        assert!(check_policy(&"x".repeat(MAX_PASSWORD + 1)).is_err());
        assert!(check_policy("long enough").is_ok());
    }
}
