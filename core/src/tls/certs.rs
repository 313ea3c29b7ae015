//! The cluster's certificate authority, the certificates it issues, and the
//! certificates peers make for themselves.
//!
//! Every key is Ed25519, made from 32 bytes of the caller's [`Entropy`]:
//! Ed25519 signs deterministically, so the simulator's certificates, and
//! every handshake signed with them, are the same for the same seed. Files
//! hold PEM: a certificate chain (the member's certificate, then the
//! authority's) and a PKCS#8 key.

use super::identity::{ClusterRole, Fingerprint};
use crate::entropy::Entropy;
use crate::time::Timestamp;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::fmt;

/// How long an authority is valid for; its members are issued for less.
const AUTHORITY_YEARS: i32 = 30;
/// How long a member's certificate is valid for. `ferry ca issue` again
/// renews one (docs/security.md).
const MEMBER_YEARS: i32 = 10;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertError(pub String);

impl fmt::Display for CertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CertError {}

impl From<rcgen::Error> for CertError {
    fn from(e: rcgen::Error) -> Self {
        CertError(format!("cannot make the certificate: {e}"))
    }
}

/// A certificate chain and its key: what one end presents.
pub struct Credentials {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivatePkcs8KeyDer<'static>,
}

impl Clone for Credentials {
    fn clone(&self) -> Self {
        Credentials {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({:?})", self.fingerprint())
    }
}

impl Credentials {
    /// The fingerprint of the certificate presented (the first of the chain).
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(self.chain.first().map(|c| c.as_ref()).unwrap_or(&[]))
    }

    pub fn chain_pem(&self) -> String {
        self.chain.iter().map(|c| pem("CERTIFICATE", c)).collect()
    }

    pub fn key_pem(&self) -> String {
        pem("PRIVATE KEY", self.key.secret_pkcs8_der())
    }

    /// Reads a chain file and a key file's contents.
    pub fn from_pem(chain: &str, key: &str) -> Result<Self, CertError> {
        let chain = certs_from_pem(chain)?;
        let key = key_from_pem(key)?;
        // Refuse a key that does not sign at all now, not at a handshake.
        KeyPair::try_from(key.secret_pkcs8_der())
            .map_err(|e| CertError(format!("the private key cannot be used: {e}")))?;
        Ok(Credentials { chain, key })
    }

    /// A certificate of its own, for a peer: what names it is its
    /// fingerprint, which the tracker lists beside the peer.
    pub fn self_signed(entropy: &mut Entropy, now: Timestamp) -> Result<Self, CertError> {
        let key = ed25519_key(entropy)?;
        let mut params = params(now, MEMBER_YEARS, "ferry peer")?;
        params.subject_alt_names = vec![rcgen::SanType::DnsName("ferry-peer".try_into()?)];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.self_signed(&key)?;
        Ok(Credentials {
            chain: vec![cert.der().clone()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        })
    }
}

/// The cluster's certificate authority: it issues the certificates of the
/// servers and the balancer, and clients trust it.
pub struct Authority {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl fmt::Debug for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Authority({})", self.fingerprint())
    }
}

impl Authority {
    pub fn generate(entropy: &mut Entropy, now: Timestamp) -> Result<Self, CertError> {
        let key = ed25519_key(entropy)?;
        let cert = authority_params(now)?.self_signed(&key)?;
        Ok(Authority {
            cert: cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        })
    }

    pub fn cert(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.cert)
    }

    pub fn cert_pem(&self) -> String {
        pem("CERTIFICATE", &self.cert)
    }

    pub fn key_pem(&self) -> String {
        pem("PRIVATE KEY", self.key.secret_pkcs8_der())
    }

    pub fn from_pem(cert: &str, key: &str) -> Result<Self, CertError> {
        let mut certs = certs_from_pem(cert)?;
        if certs.len() != 1 {
            return Err(CertError(format!(
                "an authority's certificate file holds one certificate, not {}",
                certs.len()
            )));
        }
        let key = key_from_pem(key)?;
        let pair = KeyPair::try_from(key.secret_pkcs8_der())
            .map_err(|e| CertError(format!("the authority's key cannot be used: {e}")))?;
        let cert = certs.remove(0);
        // The key must be the certificate's: else every certificate it
        // issued would fail to verify, far from here and much later.
        webpki::EndEntityCert::try_from(&cert)
            .map_err(|e| CertError(format!("the authority's certificate is unreadable: {e}")))?;
        if !cert_has_key(&cert, pair.public_key_raw()) {
            return Err(CertError(
                "the authority's key is not the key of its certificate".into(),
            ));
        }
        Ok(Authority { cert, key })
    }

    /// Issues the certificate of a server or the balancer, named `name`
    /// (for people: "server 2"). Its chain holds the authority's
    /// certificate too, so that a client trusting on first use learns it.
    pub fn issue(
        &self,
        role: ClusterRole,
        name: &str,
        entropy: &mut Entropy,
        now: Timestamp,
    ) -> Result<Credentials, CertError> {
        let ca_key = KeyPair::try_from(self.key.secret_pkcs8_der())
            .map_err(|e| CertError(format!("the authority's key cannot be used: {e}")))?;
        // The issuer is rebuilt from the same parameters the authority's
        // certificate was made with: its name and key identifier match.
        let issuer = Issuer::new(authority_params(Timestamp::ZERO)?, ca_key);
        let key = ed25519_key(entropy)?;
        let mut params = params(now, MEMBER_YEARS, name)?;
        params.subject_alt_names = vec![rcgen::SanType::DnsName(role.dns_name().try_into()?)];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &issuer)?;
        Ok(Credentials {
            chain: vec![cert.der().clone(), self.cert.clone()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        })
    }
}

fn authority_params(now: Timestamp) -> Result<CertificateParams, CertError> {
    let mut params = params(now, AUTHORITY_YEARS, "Ferry cluster authority")?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

fn params(now: Timestamp, years: i32, common_name: &str) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    // A day's margin for clocks that disagree with the one that issued it.
    let (y, m, d) = civil_date(now.as_duration().as_secs() / 86_400);
    let (y0, m0, d0) = civil_date((now.as_duration().as_secs() / 86_400).saturating_sub(1));
    params.not_before = rcgen::date_time_ymd(y0, m0, d0);
    params.not_after = rcgen::date_time_ymd(y + years, m, d.min(28));
    Ok(params)
}

/// The (year, month, day) of a count of days since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_date(days: u64) -> (i32, u8, u8) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let y = (yoe + era * 400 + i64::from(m <= 2)) as i32;
    (y, m, d)
}

/// An Ed25519 key from 32 bytes of `entropy`, as PKCS#8 (RFC 8410).
fn ed25519_key(entropy: &mut Entropy) -> Result<KeyPair, CertError> {
    const PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    let seed: [u8; 32] = entropy.bytes();
    let mut der = PREFIX.to_vec();
    der.extend_from_slice(&seed);
    let key = PrivatePkcs8KeyDer::from(der);
    KeyPair::from_pkcs8_der_and_sign_algo(&key, &rcgen::PKCS_ED25519)
        .map_err(|e| CertError(format!("cannot make a key: {e}")))
}

/// Does `cert` carry the public key `raw`? (Its bytes appear in the
/// certificate's subject public key info; an Ed25519 key is 32 bytes of
/// high entropy, so a chance match elsewhere in the DER does not happen.)
fn cert_has_key(cert: &CertificateDer<'_>, raw: &[u8]) -> bool {
    !raw.is_empty() && cert.windows(raw.len()).any(|w| w == raw)
}

fn pem(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len() * 4 / 3 + 4);
    for chunk in der.chunks(3) {
        let n = chunk.len();
        let v = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= n {
                b64.push(ALPHABET[(v >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

pub fn certs_from_pem(text: &str) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let certs = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError(format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(CertError("no certificate in the file".into()));
    }
    Ok(certs)
}

fn key_from_pem(text: &str) -> Result<PrivatePkcs8KeyDer<'static>, CertError> {
    match PrivateKeyDer::from_pem_slice(text.as_bytes()) {
        Ok(PrivateKeyDer::Pkcs8(key)) => Ok(key),
        Ok(_) => Err(CertError(
            "the key is not PKCS#8 (Ferry's keys are Ed25519 in PKCS#8)".into(),
        )),
        Err(e) => Err(CertError(format!("not a PEM private key file: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp::from_micros(1_800_000_000_000_000);

    #[test]
    fn civil_dates() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(19_723), (2024, 1, 1));
        assert_eq!(civil_date(19_782), (2024, 2, 29));
    }

    #[test]
    fn same_entropy_same_certificates() {
        let a = Authority::generate(&mut Entropy::from_u64(5), NOW).unwrap();
        let b = Authority::generate(&mut Entropy::from_u64(5), NOW).unwrap();
        assert_eq!(a.cert(), b.cert());
        let c = Authority::generate(&mut Entropy::from_u64(6), NOW).unwrap();
        assert_ne!(a.fingerprint(), c.fingerprint());
        let s1 = a
            .issue(
                ClusterRole::Server,
                "server 1",
                &mut Entropy::from_u64(9),
                NOW,
            )
            .unwrap();
        let s2 = b
            .issue(
                ClusterRole::Server,
                "server 1",
                &mut Entropy::from_u64(9),
                NOW,
            )
            .unwrap();
        assert_eq!(s1.chain, s2.chain);
        assert_eq!(s1.chain.len(), 2);
        assert_eq!(&s1.chain[1], a.cert());
    }

    #[test]
    fn pem_round_trips_and_bad_files_are_refused() {
        let ca = Authority::generate(&mut Entropy::from_u64(1), NOW).unwrap();
        let back = Authority::from_pem(&ca.cert_pem(), &ca.key_pem()).unwrap();
        assert_eq!(back.cert(), ca.cert());
        let member = ca
            .issue(
                ClusterRole::Balancer,
                "balancer",
                &mut Entropy::from_u64(2),
                NOW,
            )
            .unwrap();
        let again = Credentials::from_pem(&member.chain_pem(), &member.key_pem()).unwrap();
        assert_eq!(again.chain, member.chain);
        // Another authority's key with this certificate.
        let other = Authority::generate(&mut Entropy::from_u64(3), NOW).unwrap();
        let err = Authority::from_pem(&ca.cert_pem(), &other.key_pem()).unwrap_err();
        assert!(err.0.contains("not the key"), "{err}");
        assert!(Authority::from_pem("garbage", &ca.key_pem()).is_err());
        assert!(Credentials::from_pem(&member.chain_pem(), "garbage").is_err());
        assert!(Credentials::from_pem("", &member.key_pem()).is_err());
    }
}
