//! `ferry share NAME USER` and `ferry unshare NAME USER`. NAME may be a
//! folder: the share covers every file under it, now and later (the
//! servers tell a file from a folder: a name is never both).

use crate::client_session::{self, unexpected, Plan};
use crate::error::CliError;
use crate::files_ui;
use crate::{say, ClientArgs};
use ferry_core::server::messages::FileOutcome;
use ferry_core::server::{Request, Response};

#[derive(clap::Args)]
pub struct Args {
    /// One of your files, or one of your folders (everything under it, now
    /// and later).
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
    let name = files_ui::folder(&args.name)?;
    let token = files_ui::token()?;
    let user = args.user.clone();
    let request = if share {
        Request::Share {
            name: name.clone(),
            user: args.user,
        }
    } else {
        Request::Unshare {
            name: name.clone(),
            user: args.user,
        }
    };
    let (name, user) = (files_ui::shown(&name), files_ui::shown(&user));
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
        Response::Failed(e) => Err(CliError::op(&e)),
        other => Err(unexpected(other)),
    }
}
