//! rustls's cryptography with the host's randomness and the host's clock.
//!
//! The core reads no clock and draws no randomness of its own: both are
//! inputs. rustls asks for them from inside its calls (a client random, a
//! key share, a certificate's validity "now"), through objects fixed in its
//! configuration. So the host lends them for the length of each call: it
//! puts its [`Entropy`] and its node's time in a slot of this thread
//! ([`with_context`]), and the provider's [`SecureRandom`] and
//! [`TimeProvider`] read the slot. In production the entropy is seeded from
//! the operating system; in the simulator from the seed, so that the same
//! seed gives the same bytes on the wire. A call outside a host's context
//! gets an error, never a guess.
//!
//! ring supplies the ciphers and the signatures (Ed25519 signing is
//! deterministic; ring's own ECDSA signing would draw from the OS, which is
//! why every Ferry key is Ed25519). Key exchange is X25519 from
//! x25519-dalek, whose secret is drawn from the lent entropy: ring's
//! ephemeral keys come from the OS with no way to pass randomness in.

use crate::entropy::Entropy;
use crate::time::Timestamp;
use rustls::crypto::{
    ActiveKeyExchange, CryptoProvider, GetRandomFailed, SecureRandom, SharedSecret,
    SupportedKxGroup,
};
use rustls::pki_types::UnixTime;
use rustls::time_provider::TimeProvider;
use rustls::{Error, NamedGroup};
use std::cell::RefCell;
use std::sync::Arc;

struct Context {
    entropy: Entropy,
    now: Timestamp,
}

thread_local! {
    static CONTEXT: RefCell<Option<Context>> = const { RefCell::new(None) };
}

/// Runs `f` with `entropy` and `now` lent to the provider. Calls nest: an
/// inner context is restored when it ends.
pub fn with_context<R>(entropy: &mut Entropy, now: Timestamp, f: impl FnOnce() -> R) -> R {
    let lent = Context {
        entropy: std::mem::replace(entropy, Entropy::from_seed([0; 32])),
        now,
    };
    let outer = CONTEXT.with(|c| c.borrow_mut().replace(lent));
    // Give the entropy back even if `f` unwinds, so its stream never repeats.
    struct Restore<'a> {
        entropy: &'a mut Entropy,
        outer: Option<Option<Context>>,
    }
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            let outer = self.outer.take().flatten();
            if let Some(lent) = CONTEXT.with(|c| std::mem::replace(&mut *c.borrow_mut(), outer)) {
                *self.entropy = lent.entropy;
            }
        }
    }
    let _restore = Restore {
        entropy,
        outer: Some(outer),
    };
    f()
}

fn fill(buf: &mut [u8]) -> Result<(), GetRandomFailed> {
    CONTEXT.with(|c| match c.borrow_mut().as_mut() {
        Some(ctx) => {
            ctx.entropy.fill(buf);
            Ok(())
        }
        None => Err(GetRandomFailed),
    })
}

#[derive(Debug)]
struct LentRandom;

impl SecureRandom for LentRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        fill(buf)
    }
}

/// The host's clock, for certificate validity.
#[derive(Debug)]
pub struct LentClock;

impl TimeProvider for LentClock {
    fn current_time(&self) -> Option<UnixTime> {
        CONTEXT.with(|c| {
            c.borrow()
                .as_ref()
                .map(|ctx| UnixTime::since_unix_epoch(ctx.now.as_duration()))
        })
    }
}

#[derive(Debug)]
struct X25519;

struct X25519Share {
    secret: x25519_dalek::StaticSecret,
    public: x25519_dalek::PublicKey,
}

impl SupportedKxGroup for X25519 {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, Error> {
        let mut seed = [0u8; 32];
        fill(&mut seed).map_err(|_| Error::FailedToGetRandomBytes)?;
        let secret = x25519_dalek::StaticSecret::from(seed);
        let public = x25519_dalek::PublicKey::from(&secret);
        Ok(Box::new(X25519Share { secret, public }))
    }

    fn name(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

impl ActiveKeyExchange for X25519Share {
    fn complete(self: Box<Self>, peer_pub_key: &[u8]) -> Result<SharedSecret, Error> {
        let peer: [u8; 32] = peer_pub_key
            .try_into()
            .map_err(|_| Error::from(rustls::PeerMisbehaved::InvalidKeyShare))?;
        let shared = self
            .secret
            .diffie_hellman(&x25519_dalek::PublicKey::from(peer));
        // An all-zero secret means a low-order point from the peer (RFC 7748
        // section 6.1): refused, as ring refuses it.
        if !shared.was_contributory() {
            return Err(rustls::PeerMisbehaved::InvalidKeyShare.into());
        }
        Ok(SharedSecret::from(&shared.as_bytes()[..]))
    }

    fn pub_key(&self) -> &[u8] {
        self.public.as_bytes()
    }

    fn group(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

static LENT_RANDOM: LentRandom = LentRandom;
static X25519_GROUP: X25519 = X25519;

/// ring's provider, for its signature checks and key loading. rustls
/// deprecates it for lacking post-quantum key exchange; ours is X25519 of
/// our own (a hybrid with ML-KEM would need its randomness lent too: left
/// for later, docs/security.md).
#[allow(deprecated)]
fn ring() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The signature algorithms certificates and handshakes are checked with.
pub fn signature_algorithms() -> rustls::crypto::WebPkiSupportedAlgorithms {
    ring().signature_verification_algorithms
}

/// ring's TLS 1.3 ciphers and signature checks, with the lent randomness
/// and X25519 key exchange.
pub fn provider() -> Arc<CryptoProvider> {
    let ring = ring();
    Arc::new(CryptoProvider {
        cipher_suites: vec![
            rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
            rustls::crypto::ring::cipher_suite::TLS13_AES_256_GCM_SHA384,
            rustls::crypto::ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ],
        kx_groups: vec![&X25519_GROUP],
        signature_verification_algorithms: ring.signature_verification_algorithms,
        secure_random: &LENT_RANDOM,
        key_provider: ring.key_provider,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn randomness_only_inside_a_context_and_from_its_entropy() {
        let mut buf = [0u8; 16];
        assert!(LENT_RANDOM.fill(&mut buf).is_err());
        let mut a = Entropy::from_u64(3);
        let mut b = Entropy::from_u64(3);
        let mut first = [0u8; 16];
        with_context(&mut a, Timestamp::ZERO, || LENT_RANDOM.fill(&mut first)).unwrap();
        let mut again = [0u8; 16];
        with_context(&mut b, Timestamp::ZERO, || LENT_RANDOM.fill(&mut again)).unwrap();
        assert_eq!(first, again);
        // The stream moved on: the lent entropy was given back advanced.
        let mut second = [0u8; 16];
        with_context(&mut a, Timestamp::ZERO, || LENT_RANDOM.fill(&mut second)).unwrap();
        assert_ne!(first, second);
        assert!(LENT_RANDOM.fill(&mut buf).is_err());
    }

    #[test]
    fn the_clock_is_the_hosts() {
        let mut e = Entropy::from_u64(1);
        let at = Timestamp::from_micros(1_800_000_000_000_000);
        let t = with_context(&mut e, at, || LentClock.current_time()).unwrap();
        assert_eq!(t.as_secs(), 1_800_000_000);
        assert!(LentClock.current_time().is_none());
    }
}
