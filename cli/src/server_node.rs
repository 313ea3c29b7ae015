//! Making a server's driver: its store opened and read back, its node
//! resumed from it. Shared by `ferry server` and `ferry up`.

use crate::error::CliError;
use ferry_core::auth::ClusterSecret;
use ferry_core::replication::ReplicaConfig;
use ferry_core::server::{Server, ServerConfig};
use ferry_core::store::Store;
use ferry_core::tls::TlsConfig;
use ferry_runtime_smol::store::HeedStore;
use ferry_runtime_smol::{Clock, Driver, Files};
use std::path::Path;

/// The store's directory under a server's data directory.
pub const STORE_DIR: &str = "store";

/// A driver for server `cfg.id`, resumed from the store under `data`
/// (created if missing), with its files under `data` too: content in
/// `data/blobs`, uploads in progress in `data/tmp` (see
/// `ferry_runtime_smol::files`). It has no listener yet.
pub fn build(
    cfg: ServerConfig,
    replica: ReplicaConfig,
    secret: ClusterSecret,
    tls: TlsConfig,
    data: &Path,
) -> Result<Driver<Server>, CliError> {
    let id = cfg.id;
    create_data_dir(data)?;
    let dir = data.join(STORE_DIR);
    let cannot = |what: &str, e: &dyn std::fmt::Display| {
        CliError::Failed(format!(
            "server {id} cannot {what} its store in {}: {e}",
            dir.display()
        ))
    };
    let store = HeedStore::open(&dir).map_err(|e| cannot("open", &e))?;
    let mut recovered = store.load().map_err(|e| cannot("read", &e))?;
    let (files, blobs) = Files::server(data).map_err(|e| {
        CliError::Failed(format!(
            "server {id} cannot set up its files in {}: {e}",
            data.display()
        ))
    })?;
    recovered.blobs = blobs;
    let entropy = ferry_runtime_smol::os_entropy()
        .map_err(|e| CliError::Failed(format!("cannot seed server {id}: {e}")))?;
    let tls_entropy = ferry_runtime_smol::os_entropy()
        .map_err(|e| CliError::Failed(format!("cannot seed server {id}: {e}")))?;
    let clock = Clock::new();
    let master = replica.master;
    let server = Server::new(cfg, replica, secret, entropy, &recovered, clock.now())
        .map_err(|e| cannot("resume from", &e))?;
    let indexes = server.replica().indexes();
    let (log, applied) = (indexes.durable, indexes.applied);
    let role = if master == id {
        "master".to_string()
    } else {
        format!("follower of server {master}")
    };
    tracing::info!(
        "server {id}: {role}; log holds {log} entries, {applied} applied; {} blobs",
        recovered.blobs.len()
    );
    Ok(Driver::new(server)
        .with_tls(tls, tls_entropy)
        .with_clock(clock)
        .with_store(Box::new(store))
        .with_files(files)
        .named(format!("server-{id}")))
}

/// Creates a server's data directory if it is missing.
pub fn create_data_dir(dir: &Path) -> Result<(), CliError> {
    std::fs::create_dir_all(dir).map_err(|e| {
        CliError::Failed(format!(
            "cannot create data directory {}: {e}",
            dir.display()
        ))
    })
}
