//! `ferry up`: a balancer and its servers in one process, for trying Ferry
//! out on one machine. Server 1 is the master; each server keeps its store
//! under DATA/server-N, so running `ferry up` again with the same data
//! resumes the same cluster (a made-up cluster secret is kept in
//! DATA/secret for that). Each node runs on a thread of its own; the first
//! to stop (a fatal error) ends the process.

use crate::addr;
use crate::error::CliError;
use crate::server_node::{self, create_data_dir};
use crate::{say, secret, tls_files};
use ferry_core::balancer::{Balancer, BalancerConfig, ServerAddr};
use ferry_core::replication::ReplicaConfig;
use ferry_core::server::ServerConfig;
use ferry_core::tls::ClusterRole;
use ferry_runtime_smol::{Driver, Group};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// How many servers to run.
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    servers: u32,
    /// Address the balancer listens on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7000",
          value_parser = addr::host_port)]
    listen: String,
    /// Data directory; server N uses its subdirectory server-N [default:
    /// ferry-data under the platform's data directory]
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    #[arg(long, value_name = "PATH", help = secret::FILE_HELP)]
    secret_file: Option<PathBuf>,
    /// The certificate of an existing cluster authority to issue the
    /// members' certificates with (with --ca-key). Without it, the
    /// authority kept in DATA/tls is used, made there the first time.
    #[arg(long, value_name = "FILE", env = "FERRY_CA", requires = "ca_key")]
    ca: Option<PathBuf>,
    /// That authority's private key.
    #[arg(long, value_name = "FILE", env = "FERRY_CA_KEY", requires = "ca")]
    ca_key: Option<PathBuf>,
    /// Chunks of 4 KiB in flight when a server sends a file.
    #[arg(long, value_name = "N", default_value_t = ferry_core::transfer::sender::DEFAULT_WINDOW,
          value_parser = clap::value_parser!(u64).range(1..=65_536))]
    window: u64,
}

/// The file in the data directory that keeps a made-up cluster secret.
const SECRET_FILE: &str = "secret";

/// The directory in the data directory that keeps the cluster's authority.
const TLS_DIR: &str = "tls";

/// Server 1 is the master.
const MASTER: u32 = 1;

pub fn run(args: Args) -> Result<(), CliError> {
    let data = args.data.unwrap_or_else(default_data_dir);
    create_data_dir(&data)?;
    let secret = secret::load_or_keep(args.secret_file.as_deref(), &data.join(SECRET_FILE))?;
    // The cluster's authority is kept with its data, so that clients who
    // trusted it go on trusting a restarted cluster; members are issued
    // certificates afresh at each start.
    let (authority, ca_path) = match (&args.ca, &args.ca_key) {
        (Some(cert), Some(key)) => (tls_files::authority_from(cert, key)?, cert.clone()),
        _ => {
            let tls_dir = data.join(TLS_DIR);
            let (authority, _) = tls_files::authority_in(&tls_dir)?;
            (authority, tls_dir.join(tls_files::CA_CERT))
        }
    };
    let ca_pem = authority.cert_pem();
    let member = |role, name: &str| -> Result<_, CliError> {
        let own = tls_files::issue(&authority, role, name)?;
        tls_files::member_config(&own, &ca_pem)
    };
    let entropy = ferry_runtime_smol::os_entropy()
        .map_err(|e| CliError::Failed(format!("cannot seed the balancer: {e}")))?;
    // The balancer's address is the one that may be taken: try it first.
    let (balancer_listener, balancer_addr) = addr::bind(&args.listen)?;
    // Every server's address first, so each can be told the others'.
    let mut listeners = Vec::new();
    for id in 1..=args.servers {
        let (listener, local) = addr::bind("127.0.0.1:0")?;
        listeners.push((id, listener, local));
    }
    let servers: Vec<ServerAddr> = listeners
        .iter()
        .map(|(id, _, local)| ServerAddr {
            id: *id,
            addr: local.to_string(),
        })
        .collect();
    let cannot_start =
        |e: std::io::Error| CliError::Failed(format!("cannot start a thread for a node: {e}"));
    let mut group = Group::new();
    for (id, listener, local) in listeners {
        let peers = servers.iter().filter(|s| s.id != id).cloned().collect();
        let replica = ReplicaConfig::new(id, MASTER, peers);
        let dir = data.join(format!("server-{id}"));
        let cfg = ServerConfig {
            send_window: args.window,
            ..ServerConfig::new(id)
        };
        let tls = member(ClusterRole::Server, &format!("server {id}"))?;
        let driver = server_node::build(cfg, replica, secret.clone(), tls, &dir)?;
        group.spawn(driver.listen(listener)).map_err(cannot_start)?;
        let role = if id == MASTER { " (master)" } else { "" };
        say(format_args!(
            "ferry up: server {id} listening on {local}{role}"
        ));
    }
    let balancer = Balancer::new(BalancerConfig::new(servers), secret, entropy);
    let tls_entropy = ferry_runtime_smol::os_entropy()
        .map_err(|e| CliError::Failed(format!("cannot seed the balancer: {e}")))?;
    let driver = Driver::new(balancer)
        .with_tls(member(ClusterRole::Balancer, "balancer")?, tls_entropy)
        .named("balancer")
        .listen(balancer_listener);
    group.spawn(driver).map_err(cannot_start)?;
    say(format_args!(
        "ferry up: balancer listening on {balancer_addr} with {} servers",
        args.servers
    ));
    say(format_args!(
        "ferry up: data in {}; cluster authority {} ({})",
        data.display(),
        authority.fingerprint(),
        ca_path.display()
    ));
    // Runs until the process is killed (Ctrl-C), or a node stops.
    let Err(e) = group.wait();
    Err(CliError::Failed(e.to_string()))
}

/// `ferry-data` under the platform's data directory, or `./ferry-data`.
fn default_data_dir() -> PathBuf {
    let env_dir = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let base = if cfg!(windows) {
        env_dir("LOCALAPPDATA").map(PathBuf::from)
    } else if cfg!(target_os = "macos") {
        env_dir("HOME").map(|h| PathBuf::from(h).join("Library/Application Support"))
    } else {
        env_dir("XDG_DATA_HOME")
            .map(PathBuf::from)
            .or_else(|| env_dir("HOME").map(|h| PathBuf::from(h).join(".local/share")))
    };
    base.unwrap_or_else(|| PathBuf::from("."))
        .join("ferry-data")
}
