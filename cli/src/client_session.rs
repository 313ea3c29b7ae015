//! What every client command does: get a session on some server through the
//! balancer, then run at most one operation on it.

use crate::error::CliError;
use crate::ClientArgs;
use ferry_core::client::{Client, ClientConfig, ClientError, ClientEvent};
use ferry_core::server::{Request, Response};
use ferry_runtime_smol::Driver;
use std::ops::ControlFlow;
use std::time::Duration;

/// How long to wait, at exit, for the last messages (the session ACK) to go
/// out.
const FLUSH_PATIENCE: Duration = Duration::from_secs(1);

/// The server a session was established with.
pub struct Session {
    pub server_id: u32,
    pub addr: String,
}

/// Gets a session and, if `request` is given, runs it. Returns the session
/// and the server's answer. An answer of `Failed` is returned as it is (the
/// caller may want to look at it); see [`ok`] to turn it into an error.
/// With `--verbose`, tells stderr which server the session is with.
pub fn run_one(
    args: &ClientArgs,
    request: Option<Request>,
) -> Result<(Session, Option<Response>), CliError> {
    let cfg = ClientConfig::new(args.balancer.clone());
    let mut driver = Driver::new(Client::new(cfg)).named("client");
    let now = driver.now();
    driver.node_mut().start(now);
    smol::block_on(async {
        let result = async {
            let session = driver
                .run_until(|event| match event {
                    ClientEvent::Connected { server_id, addr } => {
                        ControlFlow::Break(Ok(Session { server_id, addr }))
                    }
                    ClientEvent::Failed(error) => ControlFlow::Break(Err(error)),
                    _ => ControlFlow::Continue(()),
                })
                .await
                .map_err(|e| CliError::Failed(e.to_string()))?
                .map_err(failed)?;
            if args.verbose {
                eprintln!("via server {} at {}", session.server_id, session.addr);
            }
            let Some(request) = request else {
                return Ok((session, None));
            };
            let op = request.op();
            let now = driver.now();
            driver.node_mut().request(now, request).map_err(|e| {
                CliError::Failed(format!("cannot start {op:?} on the session: {e:?}"))
            })?;
            let response = driver
                .run_until(|event| match event {
                    ClientEvent::Response(r) => ControlFlow::Break(Ok(r)),
                    ClientEvent::Failed(error) => ControlFlow::Break(Err(failed(error))),
                    ClientEvent::Disconnected => ControlFlow::Break(Err(CliError::Failed(
                        format!("server {} closed the session", session.server_id),
                    ))),
                    _ => ControlFlow::Continue(()),
                })
                .await
                .map_err(|e| CliError::Failed(e.to_string()))??;
            Ok((session, Some(response)))
        }
        .await;
        driver.close(FLUSH_PATIENCE).await;
        result
    })
}

/// The server's answer, or its `Failed` reason as the command's error.
pub fn ok(response: Option<Response>) -> Result<Response, CliError> {
    match response {
        Some(Response::Failed(e)) => Err(CliError::Failed(e.to_string())),
        Some(r) => Ok(r),
        None => Err(CliError::Failed("the server gave no answer".into())),
    }
}

/// An answer that does not belong to the request.
pub fn unexpected(response: Response) -> CliError {
    CliError::Failed(format!("unexpected answer from the server: {response}"))
}

fn failed(error: ClientError) -> CliError {
    CliError::Failed(error.to_string())
}
