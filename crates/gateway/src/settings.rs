//! The gateway's settings, and their defaults in one place: [`Settings::new`]
//! and the flags of [`crate::Config`] both take them from [`defaults`].

use std::time::Duration;

use crate::{DevLogin, TrustedProxies};

/// The default of each setting that has one; the flags' defaults are these.
pub mod defaults {
    use std::time::Duration;

    /// How often each socket is pinged.
    pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);
    /// How long a socket may stay unauthenticated.
    pub const AUTH_TIMEOUT: Duration = Duration::from_secs(5);
    /// Clock skew allowed past a token's `exp` (`--jwt-leeway`'s default in `pulse-auth`, held equal by a test).
    pub const TOKEN_LEEWAY: Duration = Duration::from_secs(30);
    /// The largest client message, in bytes.
    pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
    /// Messages that may wait for one socket.
    pub const OUTBOUND_QUEUE: usize = 256;
    /// How long one write may block.
    pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
    /// How long shutdown waits for sockets to close.
    pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);
    /// The window over which shutdown spreads closing sockets.
    pub const DRAIN_SPREAD: Duration = Duration::from_secs(5);
    /// How long the presence lease lasts without renewal: presence's own
    /// default (`--lease-ttl` goes into the Redis options, the one place
    /// the lease's length lives).
    pub const LEASE_TTL: Duration = pulse_presence::DEFAULT_LEASE_TTL;
    /// How often presence is re-synchronised when nothing seemed wrong.
    pub const RESYNC_INTERVAL: Duration = Duration::from_secs(60);
    /// Frames per second one connection may send.
    pub const MAX_MESSAGES_PER_SECOND: u32 = 50;
    /// Token refreshes per minute one connection may send.
    pub const MAX_TOKEN_REFRESHES_PER_MINUTE: u32 = 6;
    /// Connections one user may hold across every instance.
    pub const MAX_CONNECTIONS_PER_USER: usize = 100;
    /// Unauthenticated sockets per client.
    pub const MAX_UNAUTHENTICATED_PER_IP: usize = 64;
    /// How long a client may take over its request head.
    pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
    /// `--max-subscriptions-per-connection`.
    pub const MAX_SUBSCRIPTIONS_PER_CONNECTION: usize = 128;
}

/// Everything the gateway needs besides its authenticator, its presence store and its listener.
///
/// Built from [`Config`](crate::Config) by the binary, or directly by tests.
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
    /// The most channels one connection may be subscribed to at once (its
    /// personal channel not counted); one more is refused with
    /// `too_many_subscriptions`.
    pub max_subscriptions_per_connection: usize,
    /// The channel namespaces (`--config`); empty: only personal channels.
    pub namespaces: std::sync::Arc<pulse_presence::Namespaces>,
}

impl Settings {
    /// The defaults of the contract ([`defaults`]), for an instance id.
    pub fn new(instance_id: impl Into<String>) -> Self {
        Self {
            instance_id: instance_id.into(),
            heartbeat_interval: defaults::HEARTBEAT_INTERVAL,
            auth_timeout: defaults::AUTH_TIMEOUT,
            token_leeway: defaults::TOKEN_LEEWAY,
            max_message_bytes: defaults::MAX_MESSAGE_BYTES,
            outbound_queue: defaults::OUTBOUND_QUEUE,
            write_timeout: defaults::WRITE_TIMEOUT,
            drain_timeout: defaults::DRAIN_TIMEOUT,
            drain_spread: defaults::DRAIN_SPREAD,
            auth_url: None,
            resync_interval: defaults::RESYNC_INTERVAL,
            dev_login: None,
            max_messages_per_second: defaults::MAX_MESSAGES_PER_SECOND,
            max_token_refreshes_per_minute: defaults::MAX_TOKEN_REFRESHES_PER_MINUTE,
            max_connections_per_user: defaults::MAX_CONNECTIONS_PER_USER,
            max_unauthenticated_per_ip: defaults::MAX_UNAUTHENTICATED_PER_IP,
            handshake_timeout: defaults::HANDSHAKE_TIMEOUT,
            trusted_proxies: TrustedProxies::default(),
            proxy_protocol: false,
            allowed_origins: Vec::new(),
            echo_path: None,
            metrics: None,
            max_subscriptions_per_connection: defaults::MAX_SUBSCRIPTIONS_PER_CONNECTION,
            namespaces: std::sync::Arc::default(),
        }
    }
}
