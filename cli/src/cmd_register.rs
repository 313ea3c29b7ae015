//! `ferry register USER`: creates an account.

use crate::client_session::{self, ok, unexpected};
use crate::error::CliError;
use crate::password::{self, Confirm, PasswordArgs};
use crate::{say, ClientArgs};
use ferry_core::accounts::username;
use ferry_core::server::{OpError, Request, Response};

#[derive(clap::Args)]
pub struct Args {
    /// The account's name: 3 to 32 of a-z, 0-9, '_', '-', '.', starting with
    /// a letter or digit (case-insensitive).
    username: String,
    #[command(flatten)]
    password: PasswordArgs,
    #[command(flatten)]
    client: ClientArgs,
}

pub fn run(args: Args) -> Result<(), CliError> {
    // The server checks it too; checking first spares a password prompt.
    let name = username::normalize(&args.username)
        .map_err(|reason| CliError::Failed(OpError::InvalidUsername { reason }.to_string()))?;
    let password = password::read(&args.password, Confirm::Twice)?;
    let request = Request::Register {
        username: name.clone(),
        password,
    };
    let (_, response) = client_session::run_one(&args.client, Some(request))?;
    match ok(response)? {
        Response::Registered { user_id } => {
            say(format_args!("registered {name} as user {user_id}"));
            Ok(())
        }
        other => Err(unexpected(other)),
    }
}
