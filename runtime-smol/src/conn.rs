//! Sockets: the accept loop, dialing, and the reader and writer of each
//! connection.
//!
//! Every task runs on its driver's own executor, which the driver runs
//! while it runs (see `Driver::run_until`): so a connection's reader and
//! writer run on the thread of the node they serve, and a message passes
//! from the socket to the node and back without waking another thread.
//! Tasks hold the executor weakly, so dropping the driver cancels them.
//!
//! Every task reports to the driver through one channel of [`Inbound`]
//! events. A connection's events are sent in the order they happened
//! (accepted or connected first, then bytes, then closed), because the task
//! that reports a connection's opening starts its reader only afterwards.
//! The driver writes to a connection through its [`Writer`]. Every writer
//! task holds a clone of the driver's [`Flushing`] token, so the driver can
//! tell when every socket has been flushed and shut.

use async_channel::{Receiver, Sender};
use ferry_core::ConnId;
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use smol::net::{TcpListener, TcpStream};
use smol::{Executor, Task, Timer};

/// A driver's executor, as its tasks hold it.
pub type Spawner = Weak<Executor<'static>>;
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How long dialing may take before it is reported as failed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes read from a socket at a time.
pub const READ_BUFFER: usize = 64 * 1024;

/// How long a closed connection waits for the peer to hang up before it is
/// torn down. Closing a socket with unread input makes the kernel reset the
/// connection, which can destroy the last bytes sent (a refusal, say) before
/// the peer reads them; so the writer half-closes, the reader drains, and the
/// socket goes once the peer hangs up or this time is up.
const LINGER: Duration = Duration::from_secs(2);

/// Pause after a failed accept (for example, out of file descriptors), so a
/// persistent error does not spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// What the socket tasks report to the driver.
#[derive(Debug)]
pub enum Inbound {
    Accepted {
        conn: ConnId,
        peer: String,
        writer: Writer,
    },
    Connected {
        conn: ConnId,
    },
    ConnectFailed {
        conn: ConnId,
        reason: String,
    },
    Received {
        conn: ConnId,
        bytes: Vec<u8>,
    },
    Closed {
        conn: ConnId,
    },
}

/// Held by every writer task until its socket is shut.
pub type Flushing = Sender<()>;

#[derive(Debug)]
enum WriteCmd {
    Bytes(Vec<u8>),
    Close,
}

/// The sending side of one connection. Writes are queued and done in order.
/// Dropping every clone of a writer closes the connection after the queue is
/// flushed, like [`Writer::close`].
#[derive(Clone, Debug)]
pub struct Writer(Sender<WriteCmd>);

impl Writer {
    fn new() -> (Writer, Receiver<WriteCmd>) {
        let (tx, rx) = async_channel::unbounded();
        (Writer(tx), rx)
    }

    /// Queues bytes. After the connection broke they are dropped: the reader
    /// reports the break.
    pub fn send(&self, bytes: Vec<u8>) {
        let _ = self.0.try_send(WriteCmd::Bytes(bytes));
    }

    /// Flushes what was queued, then shuts the socket down.
    pub fn close(&self) {
        let _ = self.0.try_send(WriteCmd::Close);
    }
}

/// Accepts connections until the returned task is dropped, numbering them
/// `ConnId::accepted(n)` with `n` taken from `next`.
pub fn accept_loop(
    ex: &Arc<Executor<'static>>,
    listener: TcpListener,
    next: Arc<AtomicU64>,
    inbound: Sender<Inbound>,
    flushing: Flushing,
) -> Task<()> {
    let spawner = Arc::downgrade(ex);
    ex.spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    Timer::after(ACCEPT_RETRY).await;
                    continue;
                }
            };
            let conn = ConnId::accepted(next.fetch_add(1, Ordering::Relaxed));
            let (writer, queue) = Writer::new();
            let peer = peer.to_string();
            if inbound
                .send(Inbound::Accepted { conn, peer, writer })
                .await
                .is_err()
            {
                return; // The driver is gone.
            }
            start_io(
                &spawner,
                conn,
                stream,
                inbound.clone(),
                queue,
                flushing.clone(),
            );
        }
    })
}

/// Dials `addr` in the background and reports `Connected` or
/// `ConnectFailed`. Bytes sent to the writer meanwhile wait for the socket.
pub fn dial(
    ex: &Arc<Executor<'static>>,
    conn: ConnId,
    addr: String,
    inbound: Sender<Inbound>,
    flushing: Flushing,
) -> Writer {
    let (writer, queue) = Writer::new();
    let spawner = Arc::downgrade(ex);
    ex.spawn(async move {
        let timeout = async {
            Timer::after(CONNECT_TIMEOUT).await;
            Err(format!(
                "{addr}: no connection after {}s",
                CONNECT_TIMEOUT.as_secs()
            ))
        };
        let connect = async {
            TcpStream::connect(addr.as_str())
                .await
                .map_err(|e| format!("{addr}: {e}"))
        };
        match future::or(connect, timeout).await {
            Ok(stream) => {
                if inbound.send(Inbound::Connected { conn }).await.is_ok() {
                    start_io(&spawner, conn, stream, inbound, queue, flushing);
                }
            }
            Err(reason) => {
                let _ = inbound.send(Inbound::ConnectFailed { conn, reason }).await;
            }
        }
    })
    .detach();
    writer
}

fn start_io(
    spawner: &Spawner,
    conn: ConnId,
    stream: TcpStream,
    inbound: Sender<Inbound>,
    queue: Receiver<WriteCmd>,
    flushing: Flushing,
) {
    // The driver is gone: so is the connection.
    let Some(ex) = spawner.upgrade() else {
        return;
    };
    // Control messages are small; do not let Nagle hold them back.
    let _ = stream.set_nodelay(true);
    // Dropped by the reader when it ends, which the writer sees as closed.
    let (reading, read_done) = async_channel::bounded::<()>(1);
    ex.spawn(read_loop(conn, stream.clone(), inbound, reading))
        .detach();
    ex.spawn(write_loop(conn, stream, queue, read_done, flushing))
        .detach();
}

async fn read_loop(
    conn: ConnId,
    mut stream: TcpStream,
    inbound: Sender<Inbound>,
    _reading: Sender<()>,
) {
    let mut buf = vec![0u8; READ_BUFFER];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                tracing::debug!("{conn}: read failed: {e}");
                break;
            }
        };
        let bytes = buf[..n].to_vec();
        if inbound
            .send(Inbound::Received { conn, bytes })
            .await
            .is_err()
        {
            return;
        }
    }
    let _ = inbound.send(Inbound::Closed { conn }).await;
}

async fn write_loop(
    conn: ConnId,
    mut stream: TcpStream,
    queue: Receiver<WriteCmd>,
    read_done: Receiver<()>,
    _flushing: Flushing,
) {
    while let Ok(cmd) = queue.recv().await {
        let WriteCmd::Bytes(bytes) = cmd else {
            break;
        };
        if let Err(e) = stream.write_all(&bytes).await {
            tracing::debug!("{conn}: write failed: {e}");
            break;
        }
    }
    let _ = stream.flush().await;
    let _ = stream.shutdown(Shutdown::Write);
    future::or(
        async {
            let _ = read_done.recv().await;
        },
        async {
            Timer::after(LINGER).await;
        },
    )
    .await;
    // Ends the reader if it still runs; it reports `Closed`, which the
    // driver passes on only if the node has not closed the connection.
    let _ = stream.shutdown(Shutdown::Both);
}
