//! TLS in the simulator: every host runs the same TLS as production, with
//! certificates and handshake randomness drawn from the seed.
//!
//! Each seed has its cluster authority; each member host (a server, the
//! balancer) a certificate it issued, made the first time the host starts
//! and kept across its restarts; each peer a certificate of its own.
//! Clients trust the authority as `--ca` would make them. The host's
//! randomness comes from the seed, the host's name and how many times it
//! started, so that the same seed puts the same bytes on the wire.

use ferry_core::host::tls::TlsLinks;
use ferry_core::tls::{Authority, ClusterRole, Credentials, TlsConfig, Trust};
use ferry_core::{Entropy, Timestamp};
use std::cell::RefCell;
use std::collections::BTreeMap;

/// What TLS a kind of node runs in the simulator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimTls {
    /// No TLS (the driver's own tests, whose nodes speak raw bytes).
    Plain,
    Member(ClusterRole),
    Client,
    Peer,
}

/// Which TLS a node type runs (see [`SimTls`]).
pub trait TlsRole {
    fn tls_role() -> SimTls {
        SimTls::Plain
    }
}

impl TlsRole for ferry_core::server::Server {
    fn tls_role() -> SimTls {
        SimTls::Member(ClusterRole::Server)
    }
}

impl TlsRole for ferry_core::balancer::Balancer {
    fn tls_role() -> SimTls {
        SimTls::Member(ClusterRole::Balancer)
    }
}

impl TlsRole for ferry_core::client::Client {
    fn tls_role() -> SimTls {
        SimTls::Client
    }
}

impl TlsRole for ferry_core::peer::PeerNode {
    fn tls_role() -> SimTls {
        SimTls::Peer
    }
}

struct Pki {
    seed: u64,
    authority: Authority,
    /// Each host's configuration, made at its first start.
    configs: BTreeMap<String, TlsConfig>,
    /// How many times each host's TLS was made (its starts).
    starts: BTreeMap<String, u64>,
}

thread_local! {
    static PKI: RefCell<Option<Pki>> = const { RefCell::new(None) };
}

/// The time certificates are issued at: the simulation's epoch.
fn issued_at() -> Timestamp {
    Timestamp::from_duration(std::time::Duration::from_secs(crate::harness::EPOCH_SECS))
}

fn draw(seed: u64, what: &str, n: u64) -> Entropy {
    let mut h = blake3::Hasher::new_derive_key("ferry sim tls v1");
    h.update(&seed.to_le_bytes());
    h.update(what.as_bytes());
    h.update(&n.to_le_bytes());
    Entropy::from_seed(*h.finalize().as_bytes())
}

/// Starts the certificates of the run of `seed` (the harness calls it when
/// it makes a simulation): an authority of its own, no host's yet.
pub fn begin(seed: u64) {
    let authority = Authority::generate(&mut draw(seed, "authority", 0), issued_at())
        .expect("an authority from fixed parameters");
    PKI.with(|p| {
        *p.borrow_mut() = Some(Pki {
            seed,
            authority,
            configs: BTreeMap::new(),
            starts: BTreeMap::new(),
        })
    });
}

/// The TLS of `host`, a node of kind `role`, at one of its starts; `None`
/// for a node without TLS.
pub fn links(host: &str, role: SimTls) -> Option<TlsLinks> {
    if role == SimTls::Plain {
        return None;
    }
    PKI.with(|p| {
        let mut p = p.borrow_mut();
        // A simulation made without the harness (a unit test of one
        // scenario's parts) gets an authority of seed 0.
        let pki = p.get_or_insert_with(|| {
            let authority = Authority::generate(&mut draw(0, "authority", 0), issued_at())
                .expect("an authority from fixed parameters");
            Pki {
                seed: 0,
                authority,
                configs: BTreeMap::new(),
                starts: BTreeMap::new(),
            }
        });
        let seed = pki.seed;
        let config = match pki.configs.get(host) {
            Some(config) => config.clone(),
            None => {
                let mut e = draw(seed, host, u64::MAX);
                let trust = || Trust::Ca(pki.authority.cert().clone());
                let config = match role {
                    SimTls::Member(r) => {
                        let own = pki
                            .authority
                            .issue(r, host, &mut e, issued_at())
                            .expect("a member's certificate");
                        TlsConfig::member(&own, pki.authority.cert())
                    }
                    SimTls::Client => TlsConfig::client(trust()),
                    SimTls::Peer => {
                        let own = Credentials::self_signed(&mut e, issued_at())
                            .expect("a peer's certificate");
                        TlsConfig::peer(&own, trust())
                    }
                    SimTls::Plain => unreachable!("handled above"),
                }
                .expect("a TLS configuration");
                pki.configs.insert(host.to_string(), config.clone());
                config
            }
        };
        let start = pki.starts.entry(host.to_string()).or_insert(0);
        *start += 1;
        Some(TlsLinks::new(config, draw(seed, host, *start)))
    })
}
