//! `ferry account delete`: the logged-in user deletes their account, after
//! giving its password again. Their files, the shares they granted and
//! were granted, their peers and every session of theirs go, on every
//! server; the name is free to register again.

use crate::client_session::{self, unexpected};
use crate::error::{CliError, Refusal};
use crate::password::{self, Confirm, PasswordArgs};
use crate::session_file;
use crate::{say, ClientArgs};
use ferry_core::server::{OpError, Request, Response};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Delete your account, with all your files and shares, everywhere.
    ///
    /// Asks for the password (with --password-stdin, reads it from the
    /// first line of standard input). The username is free again after.
    Delete(DeleteArgs),
}

#[derive(clap::Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    password: PasswordArgs,
    #[command(flatten)]
    client: ClientArgs,
}

pub fn run(args: Args) -> Result<(), CliError> {
    match args.command {
        Command::Delete(args) => delete(args),
    }
}

fn delete(args: DeleteArgs) -> Result<(), CliError> {
    let path = session_file::path()?;
    let saved = session_file::load_required(&path)?;
    let password = password::read(&args.password, Confirm::Once)?;
    let request = Request::DeleteAccount {
        token: saved.token,
        password,
    };
    let (_, response) = client_session::run_one(&args.client, Some(request))?;
    match response {
        // The account's sessions are all over: the answer is a logout's.
        Some(Response::LoggedOut) => {
            session_file::remove(&path)?;
            say(format_args!(
                "deleted the account {} (user {}), its files and its shares",
                saved.username, saved.user_id
            ));
            Ok(())
        }
        Some(Response::Failed(OpError::BadCredentials)) => Err(CliError::Refused {
            kind: Refusal::NotAllowed,
            message: "the password is wrong; the account is unchanged".into(),
        }),
        other => client_session::ok(other).and_then(|r| Err(unexpected(r))),
    }
}
