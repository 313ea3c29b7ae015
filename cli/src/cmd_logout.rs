//! `ferry logout`: ends the saved session everywhere, then forgets it.

use crate::client_session::{self, ok, unexpected};
use crate::error::CliError;
use crate::session_file;
use crate::{say, ClientArgs};
use ferry_core::server::{Request, Response};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    client: ClientArgs,
}

pub fn run(args: Args) -> Result<(), CliError> {
    let path = session_file::path()?;
    let saved = session_file::load_required(&path)?;
    let request = Request::Logout { token: saved.token };
    let (_, response) = client_session::run_one(&args.client, Some(request))?;
    match ok(response)? {
        Response::LoggedOut => {
            session_file::remove(&path)?;
            say(format_args!("logged out"));
            Ok(())
        }
        other => Err(unexpected(other)),
    }
}
