//! `ferry login USER`: logs in and saves the session for later commands.

use crate::client_session::{self, ok, unexpected};
use crate::error::CliError;
use crate::password::{self, Confirm, PasswordArgs};
use crate::session_file::{self, Saved};
use crate::{say, ClientArgs};
use ferry_core::server::{Request, Response};

#[derive(clap::Args)]
pub struct Args {
    /// The account's name.
    username: String,
    #[command(flatten)]
    password: PasswordArgs,
    #[command(flatten)]
    client: ClientArgs,
}

pub fn run(args: Args) -> Result<(), CliError> {
    // Known before the password is typed: a bad location fails early.
    let path = session_file::path()?;
    let password = password::read(&args.password, Confirm::Once)?;
    let request = Request::Login {
        username: args.username,
        password,
    };
    let (_, response) = client_session::run_one(&args.client, Some(request))?;
    match ok(response)? {
        Response::LoggedIn { user_id, token } => {
            let saved = Saved {
                username: token.username.clone(),
                user_id,
                token,
            };
            session_file::save(&path, &saved)?;
            say(format_args!(
                "logged in as {} (user {user_id})",
                saved.username
            ));
            Ok(())
        }
        other => Err(unexpected(other)),
    }
}
