//! How a command fails, and the exit code each failure gets.

use std::fmt;

#[derive(Debug)]
pub enum CliError {
    /// The command line or the configuration is wrong (exit code 2, like
    /// clap's own usage errors).
    Usage(String),
    /// The command ran and failed (exit code 1).
    Failed(String),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Failed(_) => 1,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(m) | CliError::Failed(m) => f.write_str(m),
        }
    }
}
