//! `ferry share NAME USER` and `ferry unshare NAME USER`.

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
    /// The user to share it with (or to stop sharing it with).
    user: String,
    #[command(flatten)]
    client: ClientArgs,
}

pub fn share(args: Args) -> Result<(), CliError> {
    run(args, true)
}

pub fn unshare(args: Args) -> Result<(), CliError> {
    run(args, false)
}

fn run(args: Args, share: bool) -> Result<(), CliError> {
    files_ui::check_name(&args.name)?;
    let token = files_ui::token()?;
    let (name, user) = (args.name.clone(), args.user.clone());
    let request = if share {
        Request::Share {
            name: args.name,
            user: args.user,
        }
    } else {
        Request::Unshare {
            name: args.name,
            user: args.user,
        }
    };
    let plan = Plan::new(&args.client);
    match client_session::run_as(&args.client, plan, token, request)? {
        Response::File(FileOutcome::Shared) => {
            say(format_args!("shared {name} with {user}"));
            Ok(())
        }
        Response::File(FileOutcome::Unshared) => {
            say(format_args!("{name} is no longer shared with {user}"));
            Ok(())
        }
        Response::Failed(e) => Err(CliError::Failed(e.to_string())),
        other => Err(unexpected(other)),
    }
}
