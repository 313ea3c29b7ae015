//! `ferry server`: answers the balancer's probes and serves clients.

use crate::addr;
use crate::error::CliError;
use crate::{say, secret};
use ferry_core::server::{Server, ServerConfig};
use ferry_runtime_smol::Driver;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// This server's id, as the balancer knows it.
    #[arg(long)]
    id: u32,
    /// Address to listen on for the balancer and clients.
    #[arg(long, value_name = "ADDR", value_parser = addr::host_port)]
    listen: String,
    /// Directory for the server's data (created if missing).
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Clients served at once.
    #[arg(long, value_name = "N", default_value_t = 64)]
    max_clients: u32,
    #[arg(long, value_name = "PATH", help = secret::FILE_HELP)]
    secret_file: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<(), CliError> {
    let secret = secret::load(args.secret_file.as_deref())?;
    create_data_dir(&args.data)?;
    let cfg = ServerConfig {
        max_clients: args.max_clients,
        ..ServerConfig::new(args.id)
    };
    smol::block_on(async {
        let (listener, local) = addr::bind(&args.listen).await?;
        let driver = Driver::new(Server::new(cfg, secret))
            .named(format!("server-{}", args.id))
            .listen(listener);
        say(format_args!(
            "ferry server {}: listening on {local}",
            args.id
        ));
        match driver.run().await {}
    })
}

/// The server's data directory. Nothing is stored there yet.
pub fn create_data_dir(dir: &Path) -> Result<(), CliError> {
    std::fs::create_dir_all(dir).map_err(|e| {
        CliError::Failed(format!(
            "cannot create data directory {}: {e}",
            dir.display()
        ))
    })
}
