//! `ferry connect`: gets a session on some server through the balancer.

use crate::error::CliError;
use crate::{say, ClientArgs};
use ferry_core::client::{Client, ClientConfig, ClientEvent};
use ferry_runtime_smol::Driver;
use std::ops::ControlFlow;
use std::time::Duration;

/// How long to wait, at exit, for the last messages (the session ACK) to go
/// out.
const FLUSH_PATIENCE: Duration = Duration::from_secs(1);

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    client: ClientArgs,
}

pub fn run(args: Args) -> Result<(), CliError> {
    let cfg = ClientConfig::new(args.client.balancer);
    let mut driver = Driver::new(Client::new(cfg)).named("client");
    let now = driver.now();
    driver.node_mut().start(now);
    let outcome = smol::block_on(async {
        let outcome = driver
            .run_until(|event| match event {
                ClientEvent::Connected { server_id, addr } => {
                    ControlFlow::Break(Ok((server_id, addr)))
                }
                ClientEvent::Failed(error) => ControlFlow::Break(Err(error)),
                _ => ControlFlow::Continue(()),
            })
            .await;
        driver.close(FLUSH_PATIENCE).await;
        outcome
    });
    match outcome {
        Ok((server_id, addr)) => {
            say(format_args!("connected to server {server_id} at {addr}"));
            Ok(())
        }
        Err(error) => Err(CliError::Failed(error.to_string())),
    }
}
