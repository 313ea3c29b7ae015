//! What a server is configured with.

use super::source_caps::SourceCaps;
use crate::accounts::password::PasswordParams;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub id: u32,
    pub max_clients: u32,
    /// How long the auth codes this server mints itself (GET SERVER asked
    /// of it) are good for.
    pub code_ttl: Duration,
    /// How far the clocks of the cluster's members may be apart: an auth
    /// code is honoured this long after its expiry (see `spent_codes`).
    pub clock_skew: Duration,
    /// How long each step of a handshake, and an operation's data, may take.
    pub handshake_timeout: Duration,
    /// How long a client connection may go, from its accept, without
    /// proving a login (`Login`, or `WhoAmI` with a token); then it is
    /// closed. An operation running then ends first.
    pub login_timeout: Duration,
    /// Connections one source address may hold (see `source_caps`).
    pub per_source: SourceCaps,
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
    /// How long the part of an upload cut off is kept for the same upload
    /// to resume from (see `partials`).
    pub partial_keep: Duration,
    /// Bytes of partial uploads kept at most, in all and per user; the
    /// oldest go first.
    pub partial_bytes: u64,
    pub partial_user_bytes: u64,
}

impl ServerConfig {
    pub fn new(id: u32) -> Self {
        ServerConfig {
            id,
            max_clients: 64,
            code_ttl: crate::auth::CODE_TTL,
            clock_skew: Duration::from_millis(500),
            handshake_timeout: Duration::from_secs(5),
            login_timeout: Duration::from_secs(10),
            per_source: SourceCaps::default(),
            request_timeout: Duration::from_secs(10),
            session_ttl: Duration::from_secs(24 * 3600),
            password: PasswordParams::PRODUCTION,
            idle_timeout: Duration::from_secs(60),
            quota: 100 << 30,
            transfer_timeout: Duration::from_secs(10),
            send_window: crate::transfer::sender::DEFAULT_WINDOW,
            copy_keep: Duration::from_secs(60),
            partial_keep: Duration::from_secs(3600),
            partial_bytes: 32 << 30,
            partial_user_bytes: 8 << 30,
        }
    }
}
