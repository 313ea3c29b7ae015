//! `ferry rm NAME`: deletes one of your files, everywhere.

use crate::client_session::{self, unexpected, Plan};
use crate::error::CliError;
use crate::files_ui;
use crate::{say, ClientArgs};
use ferry_core::server::messages::FileOutcome;
use ferry_core::server::{Request, Response};

#[derive(clap::Args)]
pub struct Args {
    /// One of your files.
    name: String,
    #[command(flatten)]
    client: ClientArgs,
}

pub fn run(args: Args) -> Result<(), CliError> {
    let name = files_ui::name(&args.name)?;
    let token = files_ui::token()?;
    let request = Request::Delete { name: name.clone() };
    let plan = Plan::new(&args.client);
    match client_session::run_as(&args.client, plan, token, request)? {
        Response::File(FileOutcome::Deleted) => {
            say(format_args!("deleted {}", files_ui::shown(&name)));
            Ok(())
        }
        Response::Failed(e) => Err(CliError::op(&e)),
        other => Err(unexpected(other)),
    }
}
