//! `ferry whoami`: asks a server who the saved session belongs to.

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
    let request = Request::WhoAmI { token: saved.token };
    let (_, response) = client_session::run_one(&args.client, Some(request))?;
    match ok(response)? {
        Response::Me { user_id, username } => {
            if args.client.json {
                crate::json::print(&crate::json::Me {
                    user: &username,
                    user_id,
                });
            } else {
                say(format_args!("{username} (user {user_id})"));
            }
            Ok(())
        }
        other => Err(unexpected(other)),
    }
}
