//! `ferry man`: the manual page (roff), on standard output, or with `--dir
//! DIR` one page per command written there (`ferry.1`, `ferry-put.1`, …).

use crate::error::CliError;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Write ferry.1 and a page for each command (ferry-put.1, …) into DIR
    /// instead.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

pub fn run(args: Args, command: clap::Command) -> Result<(), CliError> {
    let Some(dir) = args.dir else {
        let mut out = std::io::stdout().lock();
        return clap_mangen::Man::new(command)
            .render(&mut out)
            .map_err(|e| CliError::Failed(format!("cannot write the page: {e}")));
    };
    let failed =
        |e: std::io::Error| CliError::Failed(format!("cannot write {}: {e}", dir.display()));
    std::fs::create_dir_all(&dir).map_err(failed)?;
    clap_mangen::generate_to(command, &dir).map_err(failed)?;
    Ok(())
}
