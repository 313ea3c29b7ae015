//! The client-session steps the replication and files clients share:
//! connecting through the balancer, running one request to its end, and
//! closing.

use crate::driver::{Driver, Flow};
use ferry_core::client::{Client, ClientError, ClientEvent};
use ferry_core::server::{Request, Response};

/// How one request ended.
pub(crate) enum OpEnd {
    /// The server answered.
    Answer(Response),
    /// It failed on the client's side (a timeout, a refusal).
    Failed(ClientError),
    /// The session ended before the answer came.
    Lost,
}

/// Starts the client of `driver` and waits until it is connected to a
/// server (its id) or has failed.
pub(crate) async fn connect(
    mut driver: Driver<Client>,
) -> (Driver<Client>, Result<u32, ClientError>) {
    driver.with_node(|n, now| n.start(now));
    let mut result = Err(ClientError::Timeout {
        peer: ferry_core::client::Peer::Balancer,
        step: "the simulation",
    });
    driver
        .run(None, |_, ev| match ev {
            ClientEvent::Connected { server_id, .. } => {
                result = Ok(*server_id);
                Flow::Stop
            }
            ClientEvent::Failed(e) => {
                result = Err(e.clone());
                Flow::Stop
            }
            _ => Flow::Continue,
        })
        .await;
    (driver, result)
}

/// Runs one operation and waits for its end.
pub(crate) async fn request(driver: &mut Driver<Client>, request: Request) -> OpEnd {
    request_watching(driver, request, |_| {}).await
}

/// Runs one operation and waits for its end; `watch` sees every event of
/// the client meanwhile.
pub(crate) async fn request_watching(
    driver: &mut Driver<Client>,
    request: Request,
    mut watch: impl FnMut(&ClientEvent),
) -> OpEnd {
    if driver.with_node(|n, now| n.request(now, request)).is_err() {
        return OpEnd::Lost;
    }
    let mut result = OpEnd::Lost;
    driver
        .run(None, |_, ev| match ev {
            ClientEvent::Response(r) => {
                result = OpEnd::Answer(r.clone());
                Flow::Stop
            }
            ClientEvent::Failed(e) => {
                result = OpEnd::Failed(e.clone());
                Flow::Stop
            }
            ClientEvent::Disconnected => {
                result = OpEnd::Lost;
                Flow::Stop
            }
            other => {
                watch(other);
                Flow::Continue
            }
        })
        .await;
    result
}

/// Runs one operation until it ends or `stop` says to stop it where it is
/// (a client that dies mid-way: the caller then drops the session as it
/// stands). `OpEnd::Lost` if stopped.
pub(crate) async fn request_until(
    driver: &mut Driver<Client>,
    request: Request,
    mut stop: impl FnMut(&ClientEvent) -> bool,
) -> OpEnd {
    if driver.with_node(|n, now| n.request(now, request)).is_err() {
        return OpEnd::Lost;
    }
    let mut result = OpEnd::Lost;
    driver
        .run(None, |_, ev| match ev {
            ClientEvent::Response(r) => {
                result = OpEnd::Answer(r.clone());
                Flow::Stop
            }
            ClientEvent::Failed(e) => {
                result = OpEnd::Failed(e.clone());
                Flow::Stop
            }
            ClientEvent::Disconnected => Flow::Stop,
            other if stop(other) => Flow::Stop,
            _ => Flow::Continue,
        })
        .await;
    result
}

/// Closes the session and shuts its driver down.
pub(crate) async fn close(mut driver: Driver<Client>) {
    driver.with_node(|n, _| n.close());
    driver.shutdown().await;
}
