//! `ferry server`: answers the balancer's probes, serves clients, and takes
//! part in master replication.

use crate::addr;
use crate::error::CliError;
use crate::server_node;
use crate::{say, secret, tls_files};
use ferry_core::balancer::ServerAddr;
use ferry_core::replication::ReplicaConfig;
use ferry_core::server::{ServerConfig, SourceCaps};
use ferry_core::tls::ClusterRole;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// This server's id, as the balancer and the other servers know it.
    #[arg(long)]
    id: u32,
    /// Address to listen on for the balancer, clients and the other servers.
    #[arg(long, value_name = "ADDR", value_parser = addr::host_port)]
    listen: String,
    /// Directory for the server's data (created if missing): its store in
    /// `store`, file content in `blobs`, uploads in progress in `tmp`. A
    /// restarted server resumes from it.
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Clients served at once.
    #[arg(long, value_name = "N", default_value_t = 64)]
    max_clients: u32,
    /// Connections one address may hold that have not logged in (one
    /// machine's: an IPv4 address, or an IPv6 /64). More are refused at
    /// once. The cluster's servers and balancer are exempt.
    #[arg(long, value_name = "N", default_value_t = SourceCaps::default().unauthenticated,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_unauthenticated_per_source: u32,
    /// Connections one address may hold in all, logged-in ones included
    /// (raise it for many users behind one NAT).
    #[arg(long, value_name = "N", default_value_t = SourceCaps::default().all,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_per_source: u32,
    /// Seconds a connection may take, from its accept, to log in before it
    /// is closed.
    #[arg(long, value_name = "SECS", default_value_t = ServerConfig::new(0).login_timeout.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    login_timeout: u64,
    /// The id of the cluster's first master: this server's own id or one
    /// of --peers. If it is lost, the others elect another. Required with
    /// --peers; without --peers the server is a cluster of one and its own
    /// master.
    #[arg(long, value_name = "ID")]
    master: Option<u32>,
    /// The other servers of the cluster, comma-separated, as ID=ADDR. An
    /// entry with this server's own id is ignored, so every server can be
    /// given the same list.
    #[arg(long, value_name = "ID=ADDR,...", value_delimiter = ',',
          value_parser = addr::peer)]
    peers: Vec<ServerAddr>,
    #[arg(long, value_name = "PATH", help = secret::FILE_HELP)]
    secret_file: Option<PathBuf>,
    #[command(flatten)]
    tls: tls_files::MemberArgs,
    /// Bytes of files one user may own in all.
    #[arg(long, value_name = "BYTES", default_value_t = ServerConfig::new(0).quota)]
    quota: u64,
    /// Chunks of 4 KiB in flight when this server sends a file.
    #[arg(long, value_name = "N", default_value_t = ferry_core::transfer::sender::DEFAULT_WINDOW,
          value_parser = clap::value_parser!(u64).range(1..=65_536))]
    window: u64,
}

pub fn run(args: Args) -> Result<(), CliError> {
    let replica = replica_config(args.id, args.master, args.peers)?;
    let secret = secret::load(args.secret_file.as_deref())?;
    let tls = args
        .tls
        .config(ClusterRole::Server, &format!("server {}", args.id))?;
    let cfg = ServerConfig {
        max_clients: args.max_clients,
        per_source: SourceCaps {
            unauthenticated: args.max_unauthenticated_per_source,
            all: args.max_per_source,
        },
        login_timeout: Duration::from_secs(args.login_timeout),
        send_window: args.window,
        quota: args.quota,
        ..ServerConfig::new(args.id)
    };
    let driver = server_node::build(cfg, replica, secret, tls, &args.data)?;
    let (listener, local) = addr::bind(&args.listen)?;
    let driver = driver.listen(listener);
    say(format_args!(
        "ferry server {}: listening on {local}",
        args.id
    ));
    // The driver has logged the error already; this is the exit message.
    let Err(e) = driver.run();
    Err(CliError::Failed(e.to_string()))
}

/// Checks `--master` and `--peers` against `--id` (see their help).
fn replica_config(
    id: u32,
    master: Option<u32>,
    peers: Vec<ServerAddr>,
) -> Result<ReplicaConfig, CliError> {
    let peers_given = !peers.is_empty();
    let mut others: Vec<ServerAddr> = Vec::with_capacity(peers.len());
    for p in peers.into_iter().filter(|p| p.id != id) {
        if let Some(q) = others.iter().find(|q| q.id == p.id) {
            return Err(CliError::Usage(format!(
                "peer id {} is given twice (for {} and {})",
                p.id, q.addr, p.addr
            )));
        }
        others.push(p);
    }
    let master = match master {
        Some(m) if m == id || others.iter().any(|p| p.id == m) => m,
        Some(m) => {
            return Err(CliError::Usage(format!(
                "--master {m} is neither this server (--id {id}) nor one of --peers"
            )))
        }
        None if peers_given => {
            return Err(CliError::Usage(
                "--master ID is required with --peers".into(),
            ))
        }
        None => id,
    };
    Ok(ReplicaConfig::new(id, master, others))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(list: &[(u32, &str)]) -> Vec<ServerAddr> {
        list.iter()
            .map(|(id, addr)| ServerAddr {
                id: *id,
                addr: addr.to_string(),
            })
            .collect()
    }

    #[test]
    fn a_lone_server_is_its_own_master() {
        let cfg = replica_config(4, None, vec![]).unwrap();
        assert_eq!((cfg.me, cfg.master, cfg.peers.len()), (4, 4, 0));
        let err = replica_config(4, Some(5), vec![]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--master 5 is neither this server (--id 4) nor one of --peers"
        );
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn peers_need_a_master_among_them_and_drop_this_server() {
        let list = peers(&[(1, "a:1"), (2, "b:2"), (3, "c:3")]);
        let cfg = replica_config(2, Some(1), list.clone()).unwrap();
        assert_eq!(cfg.master, 1);
        assert_eq!(cfg.peers, peers(&[(1, "a:1"), (3, "c:3")]));
        assert!(replica_config(2, Some(2), list.clone()).is_ok());
        let err = replica_config(2, None, list.clone()).unwrap_err();
        assert_eq!(err.to_string(), "--master ID is required with --peers");
        assert!(replica_config(2, Some(9), list).is_err());
        let twice = peers(&[(1, "a:1"), (1, "b:2")]);
        let err = replica_config(2, Some(1), twice).unwrap_err();
        assert_eq!(
            err.to_string(),
            "peer id 1 is given twice (for a:1 and b:2)"
        );
    }
}
