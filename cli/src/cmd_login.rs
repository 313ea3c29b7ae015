//! `ferry login USER`: logs in and saves the session for later commands.
//!
//! A login saved before in the same place (another user's, or an earlier
//! one of the same user) is logged out on the servers before the new one
//! is saved: its token would otherwise stay valid, unseen, until it
//! expired. Stderr says so; if the servers cannot be told, stderr says
//! that instead and the new login is kept anyway.

use crate::client_session::{self, ok, unexpected};
use crate::error::CliError;
use crate::password::{self, Confirm, PasswordArgs};
use crate::session_file::{self, Saved};
use crate::{say, ClientArgs};
use ferry_core::server::{OpError, Request, Response};

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
            log_out_previous(&args.client, &path);
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

/// Ends the login saved at `path` before this one, if any, on the servers.
/// Never fails the command: what went wrong is said on stderr.
fn log_out_previous(client: &ClientArgs, path: &std::path::Path) {
    let previous = match session_file::load(path) {
        Ok(Some(p)) => p,
        // Nothing to end, or nothing that could be read back as a login.
        Ok(None) | Err(_) => return,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if previous.token.expires <= now {
        return;
    }
    let who = previous.username.clone();
    let request = Request::Logout {
        token: previous.token,
    };
    match client_session::run_one(client, Some(request)) {
        // On stderr: stdout is the command's result, the new login.
        Ok((_, Some(Response::LoggedOut))) => {
            eprintln!("ferry: logged out {who}, the login kept here before");
        }
        // Already logged out, expired, or its password changed: nothing
        // left to end.
        Ok((_, Some(Response::Failed(OpError::InvalidSession { .. })))) => {}
        Ok((_, other)) => eprintln!(
            "warning: could not log out {who} (the previous login here) on the servers: {}; \
             that session stays valid until it expires",
            other.map_or("no answer".to_string(), |r| r.to_string())
        ),
        Err(e) => eprintln!(
            "warning: could not log out {who} (the previous login here) on the servers: {e}; \
             that session stays valid until it expires"
        ),
    }
}
