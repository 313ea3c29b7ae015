//! What more than one benchmark uses.

// Each benchmark is its own crate and uses only part of this.
#![allow(dead_code)]

pub mod cluster;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The `ferry` binary: `FERRY_BIN` if set (to measure another build, an
/// earlier commit's say, with the same harness), else this package's.
pub fn ferry_binary(built: &'static str) -> PathBuf {
    std::env::var_os("FERRY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(built))
}

/// Makes a cluster authority under `dir` and hands it to every process
/// the benchmark starts (`FERRY_CA`, `FERRY_CA_KEY`): members issue
/// themselves certificates, clients trust it. A build before TLS ignores
/// both.
pub fn use_authority(ferry: &Path, dir: &Path) {
    let ca = dir.join("ca");
    if !ca.join("ca.pem").exists() {
        let out = Command::new(ferry)
            .args(["ca", "init", "--dir"])
            .arg(&ca)
            .output()
            .expect("run ferry ca init");
        // A build without `ferry ca` runs without TLS: nothing to hand out.
        if !out.status.success() {
            return;
        }
    }
    std::env::set_var("FERRY_CA", ca.join("ca.pem"));
    std::env::set_var("FERRY_CA_KEY", ca.join("ca.key"));
}
