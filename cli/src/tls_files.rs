//! Where TLS's certificates and keys come from: the cluster's authority and
//! its members' certificates on disk, and a client's memory of the
//! authorities it trusted on first use (`known_hosts`, as ssh keeps).
//!
//! A member (a server, the balancer) is given the authority's certificate
//! and either its own certificate and key (`ferry ca issue`), or the
//! authority's key, with which it issues itself one at start. The second is
//! what `ferry up` does for the members it runs, and what a single operator
//! may do; a member that holds the authority's key can mint any member, so
//! separate machines should get issued certificates instead.

use crate::error::CliError;
use ferry_core::tls::{Authority, ClusterRole, Credentials, Fingerprint, TlsConfig, Trust};
use ferry_core::{Entropy, Timestamp};
use ferry_runtime_smol::Clock;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The files of an authority in its directory.
pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca.key";

/// TLS options of a server or the balancer.
#[derive(clap::Args, Clone, Debug)]
pub struct MemberArgs {
    /// The cluster authority's certificate (PEM; `ferry ca init` makes it).
    #[arg(long, value_name = "FILE", env = "FERRY_CA")]
    ca: Option<PathBuf>,
    /// This member's certificate chain (PEM; `ferry ca issue` makes it).
    #[arg(long, value_name = "FILE", env = "FERRY_CERT", requires = "key")]
    cert: Option<PathBuf>,
    /// This member's private key (PEM).
    #[arg(long, value_name = "FILE", env = "FERRY_KEY", requires = "cert")]
    key: Option<PathBuf>,
    /// The authority's private key: without --cert and --key, issue this
    /// member a certificate at start (with them, it is not read). Anyone
    /// holding it can mint members: give separate machines issued
    /// certificates instead.
    #[arg(long, value_name = "FILE", env = "FERRY_CA_KEY")]
    ca_key: Option<PathBuf>,
}

fn failed(what: String) -> CliError {
    CliError::Failed(what)
}

fn read(path: &Path, what: &str) -> Result<String, CliError> {
    fs::read_to_string(path)
        .map_err(|e| failed(format!("cannot read {what} {}: {e}", path.display())))
}

fn entropy() -> Result<Entropy, CliError> {
    ferry_runtime_smol::os_entropy().map_err(|e| failed(format!("cannot make a key: {e}")))
}

fn now() -> Timestamp {
    Clock::new().now()
}

impl MemberArgs {
    /// The member's TLS configuration, as `role` named `name`.
    pub fn config(&self, role: ClusterRole, name: &str) -> Result<TlsConfig, CliError> {
        let Some(ca_path) = &self.ca else {
            return Err(failed(
                "no cluster authority: pass --ca FILE (or set FERRY_CA), and --cert and \
                 --key, or --ca-key (`ferry ca init` makes an authority)"
                    .into(),
            ));
        };
        let ca_pem = read(ca_path, "the authority's certificate")?;
        let own = match (&self.cert, &self.key, &self.ca_key) {
            (Some(cert), Some(key), _) => {
                let chain = read(cert, "the certificate")?;
                let key = read(key, "the key")?;
                Credentials::from_pem(&chain, &key)
                    .map_err(|e| failed(format!("{}: {e}", cert.display())))?
            }
            (_, _, Some(ca_key)) => {
                let authority = Authority::from_pem(&ca_pem, &read(ca_key, "the authority's key")?)
                    .map_err(|e| failed(format!("{}: {e}", ca_key.display())))?;
                issue(&authority, role, name)?
            }
            _ => {
                return Err(failed(
                    "no certificate: pass --cert FILE and --key FILE (`ferry ca issue` makes \
                     them), or --ca-key FILE to issue one at start"
                        .into(),
                ))
            }
        };
        member_config(&own, &ca_pem)
    }
}

/// The TLS configuration of a member presenting `own` under the authority
/// whose certificate is `ca_pem`.
pub fn member_config(own: &Credentials, ca_pem: &str) -> Result<TlsConfig, CliError> {
    let ca = ferry_core::tls::certs::certs_from_pem(ca_pem)
        .map_err(|e| failed(format!("the authority's certificate: {e}")))?;
    TlsConfig::member(own, &ca[0]).map_err(|e| failed(e.to_string()))
}

/// Issues a member's certificate.
pub fn issue(
    authority: &Authority,
    role: ClusterRole,
    name: &str,
) -> Result<Credentials, CliError> {
    authority
        .issue(role, name, &mut entropy()?, now())
        .map_err(|e| failed(e.to_string()))
}

/// The authority whose certificate and key are these files.
pub fn authority_from(cert: &Path, key: &Path) -> Result<Authority, CliError> {
    Authority::from_pem(
        &read(cert, "the authority's certificate")?,
        &read(key, "the authority's key")?,
    )
    .map_err(|e| failed(format!("{}: {e}", key.display())))
}

/// The authority kept in `dir`, made there first if it is not.
pub fn authority_in(dir: &Path) -> Result<(Authority, bool), CliError> {
    let cert = dir.join(CA_CERT);
    let key = dir.join(CA_KEY);
    if cert.exists() || key.exists() {
        let authority = Authority::from_pem(
            &read(&cert, "the authority's certificate")?,
            &read(&key, "the authority's key")?,
        )
        .map_err(|e| failed(format!("{}: {e}", dir.display())))?;
        return Ok((authority, false));
    }
    fs::create_dir_all(dir).map_err(|e| failed(format!("cannot create {}: {e}", dir.display())))?;
    let authority =
        Authority::generate(&mut entropy()?, now()).map_err(|e| failed(e.to_string()))?;
    write_new(&key, authority.key_pem().as_bytes(), true)?;
    write_new(&cert, authority.cert_pem().as_bytes(), false)?;
    Ok((authority, true))
}

/// Writes a file that must not exist yet; a secret one readable by its
/// owner only from the start.
pub fn write_new(path: &Path, bytes: &[u8], secret: bool) -> Result<(), CliError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    options.mode(if secret { 0o600 } else { 0o644 });
    let mut file = options
        .open(path)
        .map_err(|e| failed(format!("cannot create {}: {e}", path.display())))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| failed(format!("cannot write {}: {e}", path.display())))
}

/// How a client trusts the cluster at `balancer`: the authority in
/// `ca`, else the one remembered for that address, else the first one met.
pub fn client_trust(ca: Option<&Path>, balancer: &str) -> Result<Trust, CliError> {
    if let Some(ca) = ca {
        let pem = read(ca, "the authority's certificate")?;
        let certs = ferry_core::tls::certs::certs_from_pem(&pem)
            .map_err(|e| failed(format!("{}: {e}", ca.display())))?;
        return Ok(Trust::Ca(certs[0].clone()));
    }
    Ok(match known_hosts::lookup(balancer)? {
        Some(fp) => Trust::Pinned(fp),
        None => Trust::FirstUse,
    })
}

/// A client's configuration for `trust`.
pub fn client_config(trust: Trust) -> Result<TlsConfig, CliError> {
    TlsConfig::client(trust).map_err(|e| failed(e.to_string()))
}

/// A peer's own certificate, made afresh for this run, and its
/// configuration.
pub fn peer_config(trust: Trust) -> Result<TlsConfig, CliError> {
    let own =
        Credentials::self_signed(&mut entropy()?, now()).map_err(|e| failed(e.to_string()))?;
    TlsConfig::peer(&own, trust).map_err(|e| failed(e.to_string()))
}

/// An error that says the cluster's authority changed, with what to do
/// about it.
pub fn explain_untrusted(e: CliError, trust: &Trust) -> CliError {
    match (e, trust) {
        (CliError::Failed(msg), Trust::Pinned(_)) if msg.contains("authority has changed") => {
            let where_ = known_hosts::path()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| "known_hosts".into());
            CliError::Failed(format!(
                "{msg}\nIf the cluster was made anew on purpose, remove its line from {where_} \
                 (or pass --ca with its authority's certificate); otherwise someone may be \
                 impersonating it."
            ))
        }
        (e, _) => e,
    }
}

/// After a run that trusted on first use: remember the authority met.
pub fn remember_first_use(trust: &Trust, balancer: &str, met: Option<Fingerprint>) {
    if let (Trust::FirstUse, Some(fp)) = (trust, met) {
        match known_hosts::add(balancer, fp) {
            Ok(path) => eprintln!(
                "ferry: trusting the cluster at {balancer} on first use: its authority is\n  \
                 {fp}\nremembered in {}; a cluster there with another authority will be refused",
                path.display()
            ),
            Err(e) => eprintln!("ferry: could not remember the cluster's authority: {e}"),
        }
    }
}

/// The authorities a client trusted, by balancer address: one line each,
/// `ADDR FINGERPRINT`, in the same directory as the session.
pub mod known_hosts {
    use super::*;

    pub fn path() -> Result<PathBuf, CliError> {
        let session = crate::session_file::path()?;
        Ok(session.with_file_name("known_hosts"))
    }

    /// Every remembered (address, authority), in the file's order; none
    /// if there is no file yet.
    fn entries() -> Result<Vec<(String, Fingerprint)>, CliError> {
        let path = path()?;
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(failed(format!("cannot read {}: {e}", path.display()))),
        };
        let mut entries = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let mut words = line.split_whitespace();
            let (Some(addr), Some(fp)) = (words.next(), words.next()) else {
                continue;
            };
            let fp = Fingerprint::parse(fp).ok_or_else(|| {
                failed(format!(
                    "{} line {}: not a fingerprint: {fp}",
                    path.display(),
                    n + 1
                ))
            })?;
            entries.push((addr.to_string(), fp));
        }
        Ok(entries)
    }

    pub fn lookup(addr: &str) -> Result<Option<Fingerprint>, CliError> {
        Ok(entries()?
            .into_iter()
            .find(|(a, _)| a == addr)
            .map(|(_, fp)| fp))
    }

    /// The authority remembered, if every remembered address names the
    /// same one (a person who uses one cluster).
    pub fn the_one() -> Result<Option<Fingerprint>, CliError> {
        let entries = entries()?;
        let first = entries.first().map(|(_, fp)| *fp);
        Ok(first.filter(|fp| entries.iter().all(|(_, f)| f == fp)))
    }

    pub fn add(addr: &str, fp: Fingerprint) -> Result<PathBuf, CliError> {
        let path = path()?;
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)
                .map_err(|e| failed(format!("cannot create {}: {e}", dir.display())))?;
        }
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| failed(format!("cannot open {}: {e}", path.display())))?;
        writeln!(file, "{addr} {fp}")
            .map_err(|e| failed(format!("cannot write {}: {e}", path.display())))?;
        Ok(path)
    }
}
