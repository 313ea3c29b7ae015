//! What more than one benchmark uses.

// Each benchmark is its own crate and uses only part of this.
#![allow(dead_code)]

pub mod cluster;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

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

/// Starts client command `ferry ARGS` as the user whose FERRY_HOME is
/// `home`, with `input` (if any) as a line on its standard input, and
/// reads its standard error to the end: the child (to be reaped by the
/// caller) and what it said. Standard output is thrown away.
pub fn client(ferry: &Path, args: &[&str], home: &Path, input: Option<&str>) -> (Child, String) {
    let mut child = Command::new(ferry)
        .args(args)
        .env("FERRY_HOME", home)
        .env_remove("RUST_LOG")
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ferry");
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        let _ = writeln!(stdin, "{text}");
    }
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    (child, stderr)
}

/// The arguments of `ferry put LOCAL` storing it as `name`: `--as NAME`,
/// or for a build from before `--as` (measured through `FERRY_BIN`), the
/// second argument it took then.
pub fn put_as<'a>(ferry: &Path, local: &'a str, name: &'a str) -> Vec<&'a str> {
    static HAS_AS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let has_as = *HAS_AS.get_or_init(|| {
        Command::new(ferry)
            .args(["put", "--help"])
            .output()
            .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("--as"))
    });
    match has_as {
        true => vec!["put", local, "--as", name],
        false => vec!["put", local, name],
    }
}
