//! `ferry connect`: gets a session on some server through the balancer.

use crate::client_session;
use crate::error::CliError;
use crate::{say, ClientArgs};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    client: ClientArgs,
}

pub fn run(args: Args) -> Result<(), CliError> {
    let (session, _) = client_session::run_one(&args.client, None)?;
    say(format_args!(
        "connected to server {} at {}",
        session.server_id, session.addr
    ));
    Ok(())
}
