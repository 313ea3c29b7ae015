//! What a server is configured with.

use crate::accounts::password::PasswordParams;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub id: u32,
    pub max_clients: u32,
    /// How long a slot reserved for a client stays reserved.
    pub reservation_ttl: Duration,
    /// How long each step of a handshake, and an operation's data, may take.
    pub handshake_timeout: Duration,
    /// How long a client waits for its transaction to be ordered and applied.
    pub request_timeout: Duration,
    /// Lifetime of a session token.
    pub session_ttl: Duration,
    pub password: PasswordParams,
    /// Silence after which an established session is closed and its slot
    /// freed. A client that vanished without a FIN (power loss, partition)
    /// must not hold a slot forever; live clients ping well within this.
    pub idle_timeout: Duration,
    /// Bytes of files one user may own in all.
    pub quota: u64,
    /// Silence after which a file transfer is abandoned.
    pub transfer_timeout: Duration,
    /// Chunks in flight when this server sends a file (downloads, and
    /// content fetched by other servers).
    pub send_window: u64,
    /// How long a copy of another server's upload is kept while nothing
    /// names it, and content found unnamed at start is held. An upload
    /// counts only copies confirmed within `copy_keep - request_timeout`
    /// (see `copies`), so that every copy counted for a "stored" is still
    /// kept when that answer is given.
    pub copy_keep: Duration,
}

impl ServerConfig {
    pub fn new(id: u32) -> Self {
        ServerConfig {
            id,
            max_clients: 64,
            reservation_ttl: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            session_ttl: Duration::from_secs(24 * 3600),
            password: PasswordParams::PRODUCTION,
            idle_timeout: Duration::from_secs(60),
            quota: 100 << 30,
            transfer_timeout: Duration::from_secs(10),
            send_window: crate::transfer::sender::DEFAULT_WINDOW,
            copy_keep: Duration::from_secs(60),
        }
    }
}
