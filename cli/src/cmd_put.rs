//! `ferry put LOCAL [NAME]`: uploads a file.

use crate::client_session::{self, unexpected, Plan};
use crate::error::CliError;
use crate::files_ui::{self, human_size, Bar};
use crate::{say, ClientArgs};
use ferry_core::server::messages::FileOutcome;
use ferry_core::server::{Request, Response};
use ferry_runtime_smol::Files;
use std::path::PathBuf;

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
    if !meta.is_file() {
        return Err(CliError::Failed(format!("{shown} is not a regular file")));
    }
    // Opening it now turns an unreadable file into a clear error up front.
    std::fs::File::open(&args.local)
        .map_err(|e| CliError::Failed(format!("cannot read {shown}: {e}")))?;
    let name = match args.name {
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
    let size = meta.len();
    let mut bar = Bar::new(size, &files_ui::shown(&name));
    let mut progress = |p| bar.show(p);
    let mut plan = Plan::new(&args.client);
    plan.cfg.window = args.window;
    let local = args.local.clone();
    plan.files = Some(Box::new(move || Files::source(&local)));
    plan.progress = Some(&mut progress);
    let request = Request::Upload {
        name: name.clone(),
        size,
        replace: args.force,
    };
    let answer = client_session::run_as(&args.client, plan, token, request);
    bar.finish();
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
