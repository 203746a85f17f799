//! The WebSocket edge of Pulse.
//!
//! `pulse-gateway` serves `/ws` with hyper and fastwebsockets: it authenticates
//! each socket (a `?token=` or a first `auth` message, within a deadline), runs
//! the per-connection state machine (awaiting auth, live, closing), keeps
//! sockets healthy with heartbeats, tracks every user's connections in the
//! local [`ConnectionManager`], registers them with presence, and cleans up on
//! every kind of end. Validation goes through `pulse-auth` (in-process or over
//! gRPC) and state through `pulse-presence` (Redis or in-memory).

#![forbid(unsafe_code)]

mod admission;
pub mod config;
pub mod connection_manager;
// Public only for the `frame` fuzz target (fuzz/); not part of the API.
mod admin;
#[doc(hidden)]
pub mod frame;
mod lease;
mod limits;
pub mod login;
mod mailbox;
pub mod proxy;
mod proxy_protocol;
pub mod readiness;
mod server;
pub mod session;
mod socket;
mod telemetry;

use std::time::Duration;

pub use config::{Config, ConfigError};
pub use connection_manager::{ConnectionManager, LocalConnection};
pub use login::DevLogin;
pub use mailbox::{Mailbox, PushError};
pub use proxy::TrustedProxies;
pub use server::{DrainReport, Gateway, run};

/// Everything the gateway needs besides its authenticator, its presence store and its listener.
///
/// Built from [`Config`] by the binary, or directly by tests.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This instance's id, as seen in `connected` messages and presence.
    pub instance_id: String,
    /// How often the server pings each socket; a socket whose pong has not
    /// come back by the next ping is closed.
    pub heartbeat_interval: Duration,
    /// How long a socket may stay unauthenticated.
    pub auth_timeout: Duration,
    /// Clock skew allowed past a token's `exp` before a live connection is closed.
    pub token_leeway: Duration,
    /// The largest message a client may send, in bytes.
    pub max_message_bytes: usize,
    /// How many messages may wait for a connection's socket before it is
    /// treated as too slow and closed.
    pub outbound_queue: usize,
    /// How long one write to a socket may block before the socket is dropped.
    pub write_timeout: Duration,
    /// How long shutdown waits for sockets to close and deregister.
    pub drain_timeout: Duration,
    /// The window over which shutdown spreads the closing of sockets, so that
    /// clients do not all reconnect in the same second. Shorter than `drain_timeout`.
    pub drain_spread: Duration,
    /// The `pulse-auth` endpoint, when tokens are validated remotely; `/readyz` checks it.
    pub auth_url: Option<String>,
    /// How often presence is re-synchronised with this instance's
    /// connections when nothing seemed wrong (zero: never).
    pub resync_interval: Duration,
    /// The dev login endpoint, when it is on.
    pub dev_login: Option<DevLogin>,
    /// Frames per second one connection may send on average (bursts of
    /// twice that): every frame but the close counts, each fragment, ping
    /// and pong, from the first frame on; over it, close 4429. 0: no limit.
    pub max_messages_per_second: u32,
    /// Token refreshes (`auth` on a live connection) one connection may
    /// send per minute on average (bursts of that many); one over it is
    /// refused with `error` `rate_limited` and the socket keeps its
    /// current token. 0: no limit.
    pub max_token_refreshes_per_minute: u32,
    /// Connections one user may hold across every instance; the next one is
    /// closed with 4429. 0: no limit.
    pub max_connections_per_user: usize,
    /// Sockets one client (an IPv4 address or an IPv6 /64; behind trusted
    /// proxies, the client they name) may hold before they authenticate;
    /// more get HTTP 429 at the upgrade. 0: no limit.
    pub max_unauthenticated_per_ip: usize,
    /// How long a client may take to send its HTTP request head, a PROXY
    /// protocol header, or the dev login's body (slowloris guard).
    pub handshake_timeout: Duration,
    /// Networks of the proxies whose word on the client's address is taken
    /// (`Forwarded`, `X-Forwarded-For`, the PROXY protocol). Empty: the TCP
    /// peer is the client.
    pub trusted_proxies: TrustedProxies,
    /// Connections from a trusted proxy start with a PROXY protocol header
    /// (v1 or v2) naming the client; one without a valid header is dropped.
    pub proxy_protocol: bool,
    /// Origins allowed to open sockets (`https://app.example.com`); a request
    /// with another `Origin` gets 403, one without is allowed. Empty: any.
    pub allowed_origins: Vec<String>,
    /// An unauthenticated echo endpoint with the gateway's framing, for
    /// WebSocket conformance runs only. Off when `None`.
    pub echo_path: Option<String>,
    /// Serves `GET /metrics` from this recorder when set (the binary installs one).
    pub metrics: Option<pulse_runtime::metrics::PrometheusHandle>,
}

impl Settings {
    /// The defaults of the contract, for an instance id.
    pub fn new(instance_id: impl Into<String>) -> Self {
        Self {
            instance_id: instance_id.into(),
            heartbeat_interval: Duration::from_secs(30),
            auth_timeout: Duration::from_secs(5),
            token_leeway: Duration::from_secs(30),
            max_message_bytes: 64 * 1024,
            outbound_queue: 256,
            write_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(20),
            drain_spread: Duration::from_secs(5),
            auth_url: None,
            resync_interval: Duration::from_secs(60),
            dev_login: None,
            max_messages_per_second: 50,
            max_token_refreshes_per_minute: 6,
            max_connections_per_user: 100,
            max_unauthenticated_per_ip: 64,
            handshake_timeout: Duration::from_secs(10),
            trusted_proxies: TrustedProxies::default(),
            proxy_protocol: false,
            allowed_origins: Vec::new(),
            echo_path: None,
            metrics: None,
        }
    }
}
