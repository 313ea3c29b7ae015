//! OS randomness for the core's [`Entropy`].

use ferry_core::Entropy;
use std::io;

/// 32 random bytes from the operating system.
pub fn os_seed() -> io::Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| io::Error::other(format!("no OS randomness: {e}")))?;
    Ok(seed)
}

/// An [`Entropy`] stream seeded from the operating system.
pub fn os_entropy() -> io::Result<Entropy> {
    os_seed().map(Entropy::from_seed)
}
