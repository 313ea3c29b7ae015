//! `ferry get NAME [DEST]`: downloads a file of one's own, or one shared by
//! `--owner`.
//!
//! The content goes to an unnamed temporary file in DEST's directory
//! (`O_TMPFILE`; where the filesystem cannot, a hidden
//! `.DEST.ferry-partial-PID`) and is linked in as DEST only once it is
//! complete, its digest checked and made durable. A failed or interrupted
//! download leaves nothing (an unnamed file goes with the process, even on
//! `kill -9`; a named one is removed on Ctrl-C or SIGTERM, and by the next
//! `get` into that directory after `kill -9`); DEST is never half written.
//!
//! An existing DEST is replaced only with `--force`, and then only if it
//! is a regular file (the new file keeps its mode and owner) or a symbolic
//! link (the link is replaced, never followed): a directory, a FIFO, a
//! socket or a device is refused before anything is downloaded, and again
//! just before the rename. See docs/security.md.

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
    if args.force {
        check_replaceable(&dest)?;
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
    // What a `get` killed with -9 left here, where it had to use a named
    // temporary file.
    ferry_runtime_smol::files::local::remove_stale_partials(dest.parent().unwrap_or(Path::new("")));
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

/// `--force` replaces only a regular file or a link, and a file only if
/// its owner can be kept: refused here, before anything is downloaded (and
/// looked at again just before the rename).
fn check_replaceable(dest: &Path) -> Result<(), CliError> {
    use ferry_runtime_smol::files::local::{replaceable, Target};
    match replaceable(dest).map_err(CliError::Failed)? {
        Target::Regular { uid, gid, .. } => {
            // SAFETY: geteuid cannot fail and touches no memory.
            let euid = unsafe { libc::geteuid() };
            if euid != 0 && uid != euid {
                return Err(CliError::Failed(format!(
                    "{} belongs to user {uid} (group {gid}), and ferry may not give the new \
                     file that owner; nothing was replaced (remove it first to replace it)",
                    dest.display()
                )));
            }
            Ok(())
        }
        Target::Absent | Target::Link => Ok(()),
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
