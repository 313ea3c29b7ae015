//! TLS 1.3 on every link.
//!
//! rustls is itself sans-IO — bytes in, bytes out — so it runs inside the
//! one host ([`crate::host`]), between a node and its world: a node sees
//! plaintext and, when a connection opens, the [`Identity`] its other end
//! proved; the world sees only records. The simulator runs the same TLS as
//! production: the host lends its seeded randomness and its clock to the
//! cryptography ([`provider`]).
//!
//! Three kinds of ends, three configurations ([`TlsConfig`]):
//! - **a member of the cluster** (a server, the balancer) presents a
//!   certificate from the cluster's authority, accepts clients without a
//!   certificate, members with one from the same authority (mutual TLS
//!   between servers) and peers with one of their own (so that the tracker
//!   learns the key a peer registers with), and dials only members;
//! - **a client** presents nothing and dials only members, whose authority
//!   it was given (`--ca`) or remembers from a first use;
//! - **a peer** presents a certificate of its own, dials members as a
//!   client does and other peers, and accepts peers.

pub mod certs;
pub mod identity;
pub mod provider;
pub mod verify;

pub use certs::{Authority, CertError, Credentials};
pub use identity::{ClusterRole, Fingerprint, Identity};
pub use verify::Trust;

use rustls::client::Resumption;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::{ClientConfig, ServerConfig};
use std::sync::Arc;
use std::time::Duration;
use verify::{ClientCheck, ServerCheck};

/// How long a TLS handshake may take before the host gives the connection
/// up: an accepted connection that says nothing costs a socket and a few
/// kilobytes for this long, and no more.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Accepted connections from one source address (IP) whose handshakes may
/// be under way at once; more are closed at once. A client makes one at a
/// time; a whole `ferry up` cluster on one machine, a few.
pub const HANDSHAKES_PER_SOURCE: usize = 32;

/// The name a dialing end sends. Certificates are checked for a role of
/// the cluster, never for a host's name (see [`ClusterRole::dns_name`]).
const SERVER_NAME: &str = "ferry";

/// What one host's TLS runs with: how it dials, and how it accepts if it
/// listens.
#[derive(Clone, Debug)]
pub struct TlsConfig {
    pub(crate) dial: Arc<ClientConfig>,
    pub(crate) dial_check: Arc<ServerCheck>,
    pub(crate) accept: Option<Arc<ServerConfig>>,
    pub(crate) accept_check: Option<Arc<ClientCheck>>,
    pub(crate) handshake_timeout: Duration,
    pub(crate) handshakes_per_source: usize,
}

impl TlsConfig {
    /// A server or the balancer: `own` issued by the authority `ca`.
    pub fn member(own: &Credentials, ca: &CertificateDer<'static>) -> Result<Self, CertError> {
        let trust = Trust::Ca(ca.clone().into_owned());
        build(
            Some(own),
            ServerCheck {
                trust: trust.clone(),
                accept_keys: false,
                algs: algs(),
            },
            Some(ClientCheck {
                trust: Some(trust),
                accept_keys: true,
                algs: algs(),
            }),
        )
    }

    /// A client of the cluster.
    pub fn client(trust: Trust) -> Result<Self, CertError> {
        build(
            None,
            ServerCheck {
                trust,
                accept_keys: false,
                algs: algs(),
            },
            None,
        )
    }

    /// A peer with its own certificate `own`, trusting the cluster's
    /// members as `trust` says.
    pub fn peer(own: &Credentials, trust: Trust) -> Result<Self, CertError> {
        build(
            Some(own),
            ServerCheck {
                trust,
                accept_keys: true,
                algs: algs(),
            },
            Some(ClientCheck {
                trust: None,
                accept_keys: true,
                algs: algs(),
            }),
        )
    }

    /// The same configuration with another handshake deadline.
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// The same configuration with another cap on handshakes per source.
    pub fn with_handshakes_per_source(mut self, cap: usize) -> Self {
        self.handshakes_per_source = cap;
        self
    }

    /// What the certificates the other end presented prove (they passed
    /// the same check during the handshake): as a dialed end's, or an
    /// accepted one's.
    pub(crate) fn identity(
        &self,
        certs: Option<&[CertificateDer<'_>]>,
        now: UnixTime,
        accepted: bool,
    ) -> Identity {
        let (trust, accept_keys, algs) = match (accepted, &self.accept_check) {
            (false, _) => {
                let c = &self.dial_check;
                (Some(&c.trust), c.accept_keys, &c.algs)
            }
            (true, Some(c)) => (c.trust.as_ref(), c.accept_keys, &c.algs),
            (true, None) => return Identity::Anonymous,
        };
        match certs {
            Some([first, rest @ ..]) => {
                verify::identify(trust, accept_keys, first, rest, now, accepted, algs)
                    .unwrap_or(Identity::Anonymous)
            }
            _ => Identity::Anonymous,
        }
    }

    /// A TLS client connection of this configuration, for a test or a tool
    /// that drives rustls itself (inside [`provider::with_context`]).
    pub fn connect_raw(&self) -> Result<rustls::ClientConnection, rustls::Error> {
        rustls::ClientConnection::new(self.dial.clone(), Self::server_name())
    }

    pub(crate) fn server_name() -> rustls::pki_types::ServerName<'static> {
        rustls::pki_types::ServerName::try_from(SERVER_NAME).expect("a constant, valid DNS name")
    }
}

fn algs() -> rustls::crypto::WebPkiSupportedAlgorithms {
    provider::signature_algorithms()
}

fn build(
    own: Option<&Credentials>,
    dial_check: ServerCheck,
    accept_check: Option<ClientCheck>,
) -> Result<TlsConfig, CertError> {
    let provider = provider::provider();
    let clock = Arc::new(provider::LentClock);
    let tls_err = |e: rustls::Error| CertError(format!("cannot configure TLS: {e}"));
    let dial_check = Arc::new(dial_check);
    let dial_builder = ClientConfig::builder_with_details(provider.clone(), clock.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .dangerous()
        .with_custom_certificate_verifier(dial_check.clone());
    let mut dial = match own {
        Some(own) => dial_builder
            .with_client_auth_cert(own.chain.clone(), PrivateKeyDer::Pkcs8(own.key.clone_key()))
            .map_err(tls_err)?,
        None => dial_builder.with_no_client_auth(),
    };
    // Processes are short-lived clients or long-lived members with few
    // links: a resumed session would save one signature, and a ticket is
    // a secret more to keep.
    dial.resumption = Resumption::disabled();
    let (accept, accept_check) = match (own, accept_check) {
        (Some(own), Some(check)) => {
            let check = Arc::new(check);
            let mut accept = ServerConfig::builder_with_details(provider, clock)
                .with_protocol_versions(&[&rustls::version::TLS13])
                .map_err(tls_err)?
                .with_client_cert_verifier(check.clone())
                .with_single_cert(own.chain.clone(), PrivateKeyDer::Pkcs8(own.key.clone_key()))
                .map_err(tls_err)?;
            accept.send_tls13_tickets = 0;
            (Some(Arc::new(accept)), Some(check))
        }
        _ => (None, None),
    };
    Ok(TlsConfig {
        dial: Arc::new(dial),
        dial_check,
        accept,
        accept_check,
        handshake_timeout: HANDSHAKE_TIMEOUT,
        handshakes_per_source: HANDSHAKES_PER_SOURCE,
    })
}
