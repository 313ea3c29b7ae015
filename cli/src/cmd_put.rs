//! `ferry put LOCAL [NAME]`: uploads a file.
//!
//! A regular file of a real filesystem is read in place, through the
//! descriptor opened here, with the size it had then. Anything whose size
//! is not known in advance (a FIFO, a character device, a `/proc` or
//! `/sys` file, an empty-looking file) is first read to its end into a
//! private unnamed file of the system's temporary directory, and that copy
//! is sent: the file stored is exactly what was read. A file whose size
//! changes while it is sent fails at its last block, and is then sent the
//! same way, as a copy read to its end. See docs/decisions.md.

use crate::client_session::{self, unexpected, Plan};
use crate::error::CliError;
use crate::files_ui::{self, human_size, Bar};
use crate::{say, ClientArgs};
use ferry_core::server::messages::FileOutcome;
use ferry_core::server::OpError;
use ferry_core::server::{Request, Response};
use ferry_core::transfer::TransferError;
use ferry_runtime_smol::files::{local, CHANGED_WHILE_SENT};
use ferry_runtime_smol::Files;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct Args {
    /// The file to upload.
    local: PathBuf,
    /// The name to keep it under [default: LOCAL's file name]. One path
    /// component: no `/`, no `..`.
    name: Option<String>,
    /// Replace a file of that name if there is one.
    #[arg(long)]
    force: bool,
    /// Chunks of 4 KiB in flight at once (1 is stop-and-wait).
    #[arg(long, value_name = "N", default_value_t = ferry_core::transfer::sender::DEFAULT_WINDOW,
          value_parser = clap::value_parser!(u64).range(1..=65_536))]
    window: u64,
    #[command(flatten)]
    client: ClientArgs,
}

pub fn run(args: Args) -> Result<(), CliError> {
    let shown = args.local.display().to_string();
    let meta = std::fs::metadata(&args.local).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => CliError::Failed(format!("{shown}: no such file")),
        _ => CliError::Failed(format!("cannot read {shown}: {e}")),
    })?;
    if meta.is_dir() {
        return Err(CliError::Failed(format!(
            "{shown} is a directory; ferry uploads single files"
        )));
    }
    let name = match args.name.clone() {
        Some(name) => name,
        None => args
            .local
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
            .ok_or_else(|| {
                CliError::Failed(format!(
                    "{shown} has no usable file name; give NAME: ferry put {shown} NAME"
                ))
            })?,
    };
    let name = files_ui::name(&name)?;
    let token = files_ui::token()?;
    // Opening it before the session turns an unreadable file into a clear
    // error up front. (A FIFO waits here for its writer, as any reader of
    // one does.)
    let file = File::open(&args.local)
        .map_err(|e| CliError::Failed(format!("cannot read {shown}: {e}")))?;
    let known = local::size_known(&file)
        .map_err(|e| CliError::Failed(format!("cannot read {shown}: {e}")))?;
    let (file, size) = match known {
        Some(size) => (file, size),
        None => spool(file, &shown)?,
    };
    let answer = upload(&args, &name, &token, file, size);
    let answer = match answer {
        // It grew or shrank while it was sent, and nothing was stored:
        // send what it holds to its end, read once.
        Ok(Response::Failed(OpError::Transfer(TransferError::Io { detail })))
            if known.is_some() && detail.contains(CHANGED_WHILE_SENT) =>
        {
            eprintln!("ferry: {shown} {CHANGED_WHILE_SENT}; sending a copy read to its end");
            let file = File::open(&args.local)
                .map_err(|e| CliError::Failed(format!("cannot read {shown}: {e}")))?;
            let (file, size) = spool(file, &shown)?;
            upload(&args, &name, &token, file, size)
        }
        other => other,
    };
    match answer? {
        Response::File(FileOutcome::Stored { size, .. }) => {
            say(format_args!(
                "stored {} ({}, {size} bytes)",
                files_ui::shown(&name),
                human_size(size)
            ));
            Ok(())
        }
        Response::Failed(e) => Err(CliError::Failed(e.to_string())),
        other => Err(unexpected(other)),
    }
}

/// Reads `file` to its end into a private unnamed copy (see the module
/// docs), in the system's temporary directory.
fn spool(mut file: File, shown: &str) -> Result<(File, u64), CliError> {
    let dir = std::env::temp_dir();
    local::spool(&mut file, &dir).map_err(|e| {
        CliError::Failed(format!(
            "cannot copy {shown} to {} before sending it: {e}",
            dir.display()
        ))
    })
}

/// One upload of `file`, `size` bytes, as `name`.
fn upload(
    args: &Args,
    name: &str,
    token: &ferry_core::accounts::token::SessionToken,
    file: File,
    size: u64,
) -> Result<Response, CliError> {
    let mut bar = Bar::new(size, &files_ui::shown(name));
    let mut progress = |p| bar.show(p);
    let mut plan = Plan::new(&args.client);
    plan.cfg.window = args.window;
    let local = args.local.clone();
    // The file opened once: every try reads it through its descriptor
    // (reads are positioned, so they share nothing that matters).
    let file = Arc::new(file);
    plan.files = Some(Box::new(move || {
        Files::source_file(&local, Arc::clone(&file), size)
    }));
    plan.progress = Some(&mut progress);
    let request = Request::Upload {
        name: name.to_string(),
        size,
        replace: args.force,
    };
    let answer = client_session::run_as(&args.client, plan, token.clone(), request);
    bar.finish();
    answer
}
