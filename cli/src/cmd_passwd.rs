//! `ferry passwd`: changes the logged-in user's password. Every session of
//! the user issued before, on any machine, is refused from then on; this
//! one goes on with the new token the server answers with.

use crate::client_session::{self, unexpected};
use crate::error::CliError;
use crate::password::{self, PasswordArgs};
use crate::session_file::{self, Saved};
use crate::{say, ClientArgs};
use ferry_core::server::{OpError, Request, Response};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    password: PasswordArgs,
    #[command(flatten)]
    client: ClientArgs,
}

pub fn run(args: Args) -> Result<(), CliError> {
    let path = session_file::path()?;
    let saved = session_file::load_required(&path)?;
    let (current, new) = password::read_change(&args.password)?;
    let request = Request::ChangePassword {
        token: saved.token,
        current,
        new,
    };
    let (_, response) = client_session::run_one(&args.client, Some(request))?;
    match response {
        Some(Response::LoggedIn { user_id, token }) => {
            let saved = Saved {
                username: token.username.clone(),
                user_id,
                token,
            };
            session_file::save(&path, &saved)?;
            say(format_args!(
                "password changed for {}; every other session of {} is logged out",
                saved.username, saved.username
            ));
            Ok(())
        }
        Some(Response::Failed(OpError::BadCredentials)) => Err(CliError::Refused {
            kind: crate::error::Refusal::NotAllowed,
            message: "the current password is wrong".into(),
        }),
        other => client_session::ok(other).and_then(|r| Err(unexpected(r))),
    }
}
