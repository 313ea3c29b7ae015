//! `ferry balancer`: hands each client a server with a free slot.

use crate::addr::{self, ServerItem};
use crate::error::CliError;
use crate::{say, secret, tls_files};
use ferry_core::balancer::{Balancer, BalancerConfig, ServerAddr};
use ferry_core::tls::ClusterRole;
use ferry_runtime_smol::Driver;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on for clients.
    #[arg(long, value_name = "ADDR", value_parser = addr::host_port)]
    listen: String,
    /// The servers, comma-separated, as ADDR (numbered 1, 2, ... in list
    /// order) or ID=ADDR.
    #[arg(long, value_name = "ADDR,...", required = true, value_delimiter = ',',
          value_parser = addr::server_item)]
    servers: Vec<ServerItem>,
    #[arg(long, value_name = "PATH", help = secret::FILE_HELP)]
    secret_file: Option<PathBuf>,
    #[command(flatten)]
    tls: tls_files::MemberArgs,
}

pub fn run(args: Args) -> Result<(), CliError> {
    let servers = addr::number_servers(args.servers)?;
    let secret = secret::load(args.secret_file.as_deref())?;
    let tls = args.tls.config(ClusterRole::Balancer, "balancer")?;
    let tls_entropy = ferry_runtime_smol::os_entropy()
        .map_err(|e| CliError::Failed(format!("cannot seed the balancer: {e}")))?;
    let entropy = ferry_runtime_smol::os_entropy()
        .map_err(|e| CliError::Failed(format!("cannot seed the balancer: {e}")))?;
    let n = servers.len();
    let cfg = BalancerConfig::new(
        servers
            .into_iter()
            .map(|(id, addr)| ServerAddr { id, addr })
            .collect(),
    );
    let (listener, local) = addr::bind(&args.listen)?;
    let driver = Driver::new(Balancer::new(cfg, secret, entropy))
        .with_tls(tls, tls_entropy)
        .named("balancer")
        .listen(listener);
    say(format_args!(
        "ferry balancer: listening on {local} with {n} servers"
    ));
    // The driver has logged the error already; this is the exit message.
    let Err(e) = driver.run();
    Err(CliError::Failed(e.to_string()))
}
