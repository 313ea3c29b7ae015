//! `ferry ca`: make the cluster's certificate authority, and issue the
//! certificates of its servers and balancer.

use crate::error::CliError;
use crate::say;
use crate::tls_files::{self, CA_CERT, CA_KEY};
use ferry_core::tls::ClusterRole;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Make a new authority in DIR (ca.pem, and ca.key readable by you only).
    Init {
        /// Where the authority's files go (made if missing).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Issue a server's or the balancer's certificate: OUT.pem (the chain)
    /// and OUT.key.
    Issue {
        /// The authority's directory (`ferry ca init`).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// What the certificate is for.
        #[arg(long, value_enum)]
        role: Role,
        /// A name for people ("server 2"); it is not checked.
        #[arg(long, default_value = "ferry member")]
        name: String,
        /// Where to write, without extension: OUT.pem and OUT.key.
        #[arg(long, value_name = "OUT")]
        out: PathBuf,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Role {
    Server,
    Balancer,
}

pub fn run(args: Args) -> Result<(), CliError> {
    match args.command {
        Command::Init { dir } => {
            if dir.join(CA_CERT).exists() || dir.join(CA_KEY).exists() {
                return Err(CliError::Failed(format!(
                    "{} already holds an authority; a second would not be trusted by \
                     anything the first issued",
                    dir.display()
                )));
            }
            let (authority, _) = tls_files::authority_in(&dir)?;
            say(format_args!(
                "authority {}\n  certificate {} (give it to clients: --ca)\n  key {} (keep it secret)",
                authority.fingerprint(),
                dir.join(CA_CERT).display(),
                dir.join(CA_KEY).display()
            ));
            Ok(())
        }
        Command::Issue {
            dir,
            role,
            name,
            out,
        } => {
            if !dir.join(CA_CERT).exists() {
                return Err(CliError::Failed(format!(
                    "no authority in {}: run `ferry ca init --dir {}` first",
                    dir.display(),
                    dir.display()
                )));
            }
            let (authority, _) = tls_files::authority_in(&dir)?;
            let role = match role {
                Role::Server => ClusterRole::Server,
                Role::Balancer => ClusterRole::Balancer,
            };
            let own = tls_files::issue(&authority, role, &name)?;
            let with = |ext: &str| {
                let mut p = out.clone().into_os_string();
                p.push(ext);
                PathBuf::from(p)
            };
            let (cert, key) = (with(".pem"), with(".key"));
            tls_files::write_new(&key, own.key_pem().as_bytes(), true)?;
            tls_files::write_new(&cert, own.chain_pem().as_bytes(), false)?;
            say(format_args!(
                "issued {} for {}\n  certificate {}\n  key {}",
                own.fingerprint(),
                role.dns_name(),
                cert.display(),
                key.display()
            ));
            Ok(())
        }
    }
}
