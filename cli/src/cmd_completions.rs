//! `ferry completions SHELL`: the shell's completion script for ferry, on
//! standard output.

use crate::error::CliError;
use clap_complete::Shell;

#[derive(clap::Args)]
pub struct Args {
    /// The shell: bash, zsh, fish, elvish or powershell.
    shell: Shell,
}

pub fn run(args: Args, mut command: clap::Command) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    clap_complete::generate(args.shell, &mut command, "ferry", &mut out);
    Ok(())
}
