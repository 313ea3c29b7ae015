//! The cluster secret: from `--secret-file`, from `FERRY_SECRET`, or made up
//! by `ferry up` and kept in its data directory.

use crate::error::CliError;
use ferry_core::auth::ClusterSecret;
use std::path::Path;

pub const ENV: &str = "FERRY_SECRET";

/// `--help` text of `--secret-file`.
pub const FILE_HELP: &str = "File holding the cluster secret (surrounding whitespace is \
    ignored; at least 16 bytes). Without it, the secret is read from FERRY_SECRET";

/// The secret from `file` if given, else from `FERRY_SECRET`; an error if
/// neither is there.
pub fn load(file: Option<&Path>) -> Result<ClusterSecret, CliError> {
    load_optional(file)?.ok_or_else(|| {
        CliError::Usage(format!(
            "no cluster secret: pass --secret-file PATH or set {ENV}"
        ))
    })
}

/// Like [`load`], but if none is configured: the secret kept in `kept`, or
/// a fresh random one written there (mode 0600). So a later run with the same
/// data directory is the same cluster, and its session tokens stay valid.
pub fn load_or_keep(file: Option<&Path>, kept: &Path) -> Result<ClusterSecret, CliError> {
    if let Some(secret) = load_optional(file)? {
        return Ok(secret);
    }
    if kept.exists() {
        return load(Some(kept));
    }
    let (secret, hex) = generate()?;
    write_new_private(kept, hex.as_bytes()).map_err(|e| {
        CliError::Failed(format!(
            "cannot keep the cluster secret in {}: {e}",
            kept.display()
        ))
    })?;
    Ok(secret)
}

/// Creates `path` readable by its owner only and writes `bytes` to it.
fn write_new_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn load_optional(file: Option<&Path>) -> Result<Option<ClusterSecret>, CliError> {
    let (source, raw) = if let Some(path) = file {
        let raw = std::fs::read(path).map_err(|e| {
            CliError::Usage(format!("cannot read secret file {}: {e}", path.display()))
        })?;
        (format!("secret file {}", path.display()), raw)
    } else if let Some(value) = std::env::var_os(ENV) {
        let value = value
            .into_string()
            .map_err(|_| CliError::Usage(format!("{ENV} is not valid UTF-8")))?;
        (ENV.to_string(), value.into_bytes())
    } else {
        return Ok(None);
    };
    ClusterSecret::from_bytes(raw.trim_ascii())
        .map(Some)
        .map_err(|e| CliError::Usage(format!("{source}: {e}")))
}

/// 32 random bytes, hex-encoded, as secret material; and the hex.
fn generate() -> Result<(ClusterSecret, String), CliError> {
    let bytes = ferry_runtime_smol::os_seed()
        .map_err(|e| CliError::Failed(format!("cannot make a cluster secret: {e}")))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let secret = ClusterSecret::from_bytes(hex.as_bytes())
        .map_err(|e| CliError::Failed(format!("cannot make a cluster secret: {e}")))?;
    Ok((secret, hex))
}
