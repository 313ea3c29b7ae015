//! Who may be at the other end: the checks of certificates that rustls
//! delegates, and what they conclude ([`identify`]).
//!
//! A member of the cluster (a server, the balancer) presents a certificate
//! issued by the cluster's authority for its role's name. A peer presents a
//! certificate of its own, which says nothing by itself: the tracker lists
//! its fingerprint beside the peer, and nodes compare. A client presents
//! nothing. Which of these an end accepts is its [`Trust`] and whether it
//! takes keys of their own at all.

use super::identity::{ClusterRole, Fingerprint, Identity};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, OtherError, SignatureScheme,
};
use std::fmt;
use std::sync::Arc;

/// Which authority vouches for the members of the cluster.
#[derive(Clone, Debug)]
pub enum Trust {
    /// This authority's certificate (a member's, or a client's `--ca FILE`).
    Ca(CertificateDer<'static>),
    /// The authority whose certificate has this fingerprint, as remembered
    /// from a first use: the other end sends the authority's certificate
    /// after its own, and it must be this one.
    Pinned(Fingerprint),
    /// Whichever authority the other end names, for the first contact of a
    /// client that trusts on first use: the identity reported tells the
    /// client what to remember.
    FirstUse,
}

/// Why a certificate was refused, in words for the person who reads it.
#[derive(Debug)]
struct Refused(String);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

fn refuse(why: impl Into<String>) -> Error {
    Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(Refused(
        why.into(),
    )))))
}

/// What `end_entity` (with the certificates sent after it) proves, or why
/// it proves nothing acceptable. `client`: checked as a client's
/// certificate rather than a server's.
pub fn identify(
    trust: Option<&Trust>,
    accept_keys: bool,
    end_entity: &CertificateDer<'_>,
    rest: &[CertificateDer<'_>],
    now: UnixTime,
    client: bool,
    algs: &WebPkiSupportedAlgorithms,
) -> Result<Identity, Error> {
    if rest.is_empty() {
        // A certificate alone: a peer's own.
        if accept_keys {
            return Ok(Identity::Key(Fingerprint::of(end_entity)));
        }
        return Err(refuse(
            "it presents a certificate of its own, not one issued by the cluster's authority",
        ));
    }
    let Some(trust) = trust else {
        return Err(refuse(
            "a cluster member's certificate where a peer's own was expected",
        ));
    };
    let sent_ca = rest.last().map(|c| CertificateDer::from(c.as_ref()));
    let anchor_der: CertificateDer<'_> = match trust {
        Trust::Ca(ca) => CertificateDer::from(ca.as_ref()),
        Trust::Pinned(pin) => match sent_ca {
            Some(ca) if Fingerprint::of(&ca) == *pin => ca,
            Some(ca) => {
                return Err(refuse(format!(
                    "the cluster's authority has changed: this server's certificate is \
                     issued by {}, but the authority remembered for this address is {pin}",
                    Fingerprint::of(&ca)
                )))
            }
            None => return Err(refuse("no authority certificate was sent")),
        },
        Trust::FirstUse => match sent_ca {
            Some(ca) => ca,
            None => return Err(refuse("no authority certificate was sent")),
        },
    };
    let ca = Fingerprint::of(&anchor_der);
    let anchor = webpki::anchor_from_trusted_cert(&anchor_der)
        .map_err(|e| refuse(format!("the authority's certificate is unreadable: {e}")))?;
    let cert = webpki::EndEntityCert::try_from(end_entity)
        .map_err(|e| refuse(format!("the certificate is unreadable: {e}")))?;
    let anchors = [anchor];
    let verified = cert.verify_for_usage(
        algs.all,
        &anchors,
        rest,
        now,
        if client {
            webpki::KeyUsage::client_auth()
        } else {
            webpki::KeyUsage::server_auth()
        },
        None,
        None,
    );
    if let Err(e) = verified {
        return Err(match e {
            webpki::Error::UnknownIssuer | webpki::Error::InvalidSignatureForPublicKey => refuse(
                format!("its certificate is not issued by the cluster's authority {ca}"),
            ),
            webpki::Error::CertExpired { .. } => refuse("its certificate has expired"),
            webpki::Error::CertNotValidYet { .. } => {
                refuse("its certificate is not valid yet (is one of the two clocks wrong?)")
            }
            other => refuse(format!("its certificate is refused: {other:?}")),
        });
    }
    for role in [ClusterRole::Server, ClusterRole::Balancer] {
        let name = ServerName::try_from(role.dns_name()).map_err(|_| refuse("bad role name"))?;
        if cert.verify_is_valid_for_subject_name(&name).is_ok() {
            return Ok(Identity::Cluster { role, ca });
        }
    }
    Err(refuse(
        "its certificate is issued by the cluster's authority but names no role of the cluster",
    ))
}

/// The handshake's signature checks, the same for both directions: TLS 1.3
/// only, with the algorithms of `self.algs`.
macro_rules! signature_checks {
    () => {
        fn verify_tls12_signature(
            &self,
            _message: &[u8],
            _cert: &CertificateDer<'_>,
            _dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            Err(Error::General("TLS 1.2 is not spoken here".into()))
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.algs.supported_schemes()
        }
    };
}

/// How a dialing end checks the end it dialed.
#[derive(Debug)]
pub struct ServerCheck {
    pub trust: Trust,
    pub accept_keys: bool,
    pub algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ServerCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        identify(
            Some(&self.trust),
            self.accept_keys,
            end_entity,
            intermediates,
            now,
            false,
            &self.algs,
        )
        .map(|_| ServerCertVerified::assertion())
    }

    signature_checks!();
}

/// How an accepting end checks a certificate the dialing end presents.
/// None is refused: clients have none.
#[derive(Debug)]
pub struct ClientCheck {
    pub trust: Option<Trust>,
    pub accept_keys: bool,
    pub algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for ClientCheck {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        identify(
            self.trust.as_ref(),
            self.accept_keys,
            end_entity,
            intermediates,
            now,
            true,
            &self.algs,
        )
        .map(|_| ClientCertVerified::assertion())
    }

    signature_checks!();
}
