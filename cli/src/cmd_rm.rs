//! `ferry rm NAME` deletes one of your files, everywhere; `ferry rm -r
//! NAME` a folder: every file under it, and its shares.

use crate::client_session::{self, unexpected, Plan};
use crate::error::CliError;
use crate::files_ui;
use crate::{say, ClientArgs};
use ferry_core::server::messages::FileOutcome;
use ferry_core::server::{OpError, Request, Response};

#[derive(clap::Args)]
pub struct Args {
    /// One of your files, or with -r one of your folders.
    name: String,
    /// Remove a folder and everything under it (and whom it is shared with).
    #[arg(short, long)]
    recursive: bool,
    #[command(flatten)]
    client: ClientArgs,
}

pub fn run(args: Args) -> Result<(), CliError> {
    let name = match args.recursive {
        true => files_ui::folder(&args.name)?,
        false => files_ui::name(&args.name)?,
    };
    let token = files_ui::token()?;
    let request = match args.recursive {
        true => Request::DeleteFolder { name: name.clone() },
        false => Request::Delete { name: name.clone() },
    };
    let plan = Plan::new(&args.client);
    let shown = files_ui::shown(&name);
    match client_session::run_as(&args.client, plan, token, request)? {
        Response::File(FileOutcome::Deleted) => {
            say(format_args!("deleted {shown}"));
            Ok(())
        }
        Response::File(FileOutcome::FolderDeleted { files }) => {
            say(format_args!("deleted folder {shown} ({files} files)"));
            Ok(())
        }
        // A usage error, as `rm` of a directory is: the command line
        // lacks -r.
        Response::Failed(OpError::IsAFolder) => Err(CliError::Usage(format!(
            "{shown} is a folder; remove it and everything under it with: ferry rm -r {shown}"
        ))),
        Response::Failed(e) => Err(CliError::op(&e)),
        other => Err(unexpected(other)),
    }
}
