//! `ferry get NAME [DEST]`: downloads a file of one's own, or one shared by
//! `--owner`.
//!
//! The content goes to a hidden temporary file beside DEST
//! (`.DEST.ferry-partial-PID`) and is renamed onto DEST only once it is
//! complete, its digest checked and made durable. A failed or interrupted
//! (Ctrl-C, SIGTERM) download removes the temporary file; DEST is never
//! half written. An existing DEST is replaced only with `--force`.

use crate::client_session::{self, unexpected, Plan};
use crate::error::CliError;
use crate::files_ui::{self, human_size, Bar};
use crate::{say, ClientArgs};
use ferry_core::server::{OpError, Request, Response};
use ferry_core::transfer::TransferError;
use ferry_runtime_smol::Files;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// The file's name.
    name: String,
    /// Where to put it: a file, or a directory to put NAME in [default:
    /// NAME in the current directory].
    dest: Option<PathBuf>,
    /// Whose file it is, if not yours (it must be shared with you).
    #[arg(long, value_name = "USER")]
    owner: Option<String>,
    /// Replace DEST if it exists.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    client: ClientArgs,
}

pub fn run(args: Args) -> Result<(), CliError> {
    // A bad name names no file; checking it also keeps the default DEST
    // inside the current directory.
    let name = files_ui::name(&args.name)?;
    let dest = match args.dest {
        Some(d) if d.is_dir() => d.join(&name),
        Some(d) => d,
        None => PathBuf::from(&name),
    };
    let shown = dest.display().to_string();
    if !args.force && dest.symlink_metadata().is_ok() {
        return Err(CliError::Failed(format!(
            "{shown} exists; use --force to replace it"
        )));
    }
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            return Err(CliError::Failed(format!(
                "cannot write {shown}: {} is not a directory",
                dir.display()
            )));
        }
    }
    let token = files_ui::token()?;
    remove_on_interrupt(&ferry_runtime_smol::files::partial_path(&dest));
    let mut bar = Bar::new(0, &files_ui::shown(&name));
    let mut progress = |p| bar.show(p);
    let mut plan = Plan::new(&args.client);
    let force = args.force;
    let files_dest = dest.clone();
    plan.files = Some(Box::new(move || Files::destination(&files_dest, force)));
    plan.progress = Some(&mut progress);
    let request = Request::Download {
        owner: args.owner,
        name: name.clone(),
    };
    let answer = client_session::run_as(&args.client, plan, token, request);
    bar.finish();
    // However it went, no partial file stays behind (the executor removed
    // it already unless the session broke mid-transfer).
    let partial = ferry_runtime_smol::files::partial_path(&dest);
    let _ = std::fs::remove_file(&partial);
    match answer? {
        Response::Downloaded { size, .. } => {
            say(format_args!(
                "downloaded {} ({}, {size} bytes) to {shown}",
                files_ui::shown(&name),
                human_size(size)
            ));
            Ok(())
        }
        // The server checks its copy when told so, and replaces it if it
        // is damaged: asking again is likely to work.
        Response::Failed(e @ OpError::Transfer(TransferError::DigestMismatch)) => {
            Err(CliError::Failed(format!(
                "{e}; the server now checks its copy, try again shortly"
            )))
        }
        Response::Failed(e) => Err(CliError::Failed(e.to_string())),
        other => Err(unexpected(other)),
    }
}

/// On Ctrl-C or SIGTERM, removes the partial file and exits (130).
fn remove_on_interrupt(partial: &Path) {
    let partial = partial.to_path_buf();
    let installed = ctrlc::set_handler(move || {
        let _ = std::fs::remove_file(&partial);
        eprintln!("error: interrupted; nothing was kept");
        std::process::exit(130);
    });
    if let Err(e) = installed {
        tracing::warn!("cannot catch Ctrl-C: {e}");
    }
}
