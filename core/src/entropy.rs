//! Random bytes for the core, from a seed the driver passes in.
//!
//! The stream is BLAKE3 in keyed XOF mode, so it is a CSPRNG when the seed
//! comes from the OS (production) and exactly reproducible when the seed comes
//! from a simulation seed.

/// A deterministic cryptographic byte stream.
pub struct Entropy {
    key: [u8; 32],
    counter: u64,
}

impl Entropy {
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Entropy {
            key: seed,
            counter: 0,
        }
    }

    /// Convenience for simulations: a 64-bit seed spread into a key.
    pub fn from_u64(seed: u64) -> Self {
        Self::from_seed(blake3::derive_key(
            "ferry entropy from u64 seed",
            &seed.to_le_bytes(),
        ))
    }

    pub fn fill(&mut self, out: &mut [u8]) {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        h.update(&self.counter.to_le_bytes());
        self.counter = self.counter.wrapping_add(1);
        h.finalize_xof().fill(out);
    }

    pub fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        self.fill(&mut out);
        out
    }

    pub fn next_u64(&mut self) -> u64 {
        u64::from_le_bytes(self.bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_draws_differ() {
        let mut a = Entropy::from_u64(7);
        let mut b = Entropy::from_u64(7);
        let a1: [u8; 16] = a.bytes();
        let a2: [u8; 16] = a.bytes();
        assert_eq!(a1, b.bytes::<16>());
        assert_ne!(a1, a2);
        assert_ne!(
            Entropy::from_u64(8).next_u64(),
            Entropy::from_u64(7).next_u64()
        );
    }
}
