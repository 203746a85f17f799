//! Settings from flags with environment fallbacks, their defaults taken
//! from [`crate::settings::defaults`]; checking them and building the
//! gateway's parts from them is in `config/build.rs`.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Parser, Subcommand};
use pulse_auth::KeyArgs;

use crate::settings::defaults;

mod build;

pub use build::Built;

/// A setting that cannot be used; its message names the setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A setting's value is not acceptable.
    #[error("{setting}: {reason}")]
    Invalid {
        /// The flag and environment variable.
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A key or token setting shared with `pulse-auth`; the message names it.
    #[error("{0}")]
    Auth(#[from] pulse_auth::ConfigError),
    /// No way to validate tokens at all.
    #[error("{0} (or set --auth-url / AUTH_URL to validate with pulse-auth)")]
    NoKeySource(pulse_auth::ConfigError),
}

impl ConfigError {
    fn invalid(setting: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            setting,
            reason: reason.into(),
        }
    }
}

/// `pulse-gateway`: the WebSocket edge of Pulse.
#[derive(Debug, Parser)]
#[command(name = "pulse-gateway", version, about)]
pub struct Config {
    /// A helper command instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address to listen on for WebSockets (`/ws`) and the dev login.
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:3000")]
    pub listen: SocketAddr,

    /// Address for `/healthz`, `/readyz` and `/metrics`, which then leave
    /// the public listener (404 there). Unset: they are served on --listen.
    #[arg(long, env = "ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,

    /// `pulse-auth` gRPC endpoint, such as http://pulse-auth:50051. Without it,
    /// tokens are validated in-process with the key flags.
    #[arg(long, env = "AUTH_URL")]
    pub auth_url: Option<String>,

    /// Redis for shared presence, such as redis://127.0.0.1:6379. Without it,
    /// presence is in memory and this is the only instance. With
    /// `--redis-cluster`, comma-separated URLs of Redis Cluster nodes.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,

    /// `--redis-url` names Redis Cluster nodes (seeds; one is enough, more
    /// survive a node being down) instead of one Redis.
    #[arg(long, env = "REDIS_CLUSTER")]
    pub redis_cluster: bool,

    /// Prefix of every Redis key and channel, so deployments can share a Redis.
    #[arg(long, env = "REDIS_NAMESPACE", default_value = "pulse")]
    pub redis_namespace: String,

    /// This instance's id in presence; host name plus a random suffix when unset.
    /// Keep it stable across restarts of the same pod to clear its old connections at once.
    #[arg(long, env = "INSTANCE_ID")]
    pub instance_id: Option<String>,

    /// How often the server pings each socket; one without a pong by the next ping is closed.
    #[arg(long, env = "HEARTBEAT_INTERVAL", default_value_t = defaults::HEARTBEAT_INTERVAL.into())]
    pub heartbeat_interval: humantime::Duration,

    /// How long a socket may stay unauthenticated before it is closed with 4408.
    #[arg(long, env = "AUTH_TIMEOUT", default_value_t = defaults::AUTH_TIMEOUT.into())]
    pub auth_timeout: humantime::Duration,

    /// Largest client message in bytes; larger ones close the socket with 1009.
    #[arg(long, env = "MAX_MESSAGE_BYTES", default_value_t = defaults::MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,

    /// Messages that may wait for one slow socket before it is closed.
    #[arg(long, env = "OUTBOUND_QUEUE", default_value_t = defaults::OUTBOUND_QUEUE)]
    pub outbound_queue: usize,

    /// How long one write may block on a client that does not read before its socket is dropped.
    #[arg(long, env = "WRITE_TIMEOUT", default_value_t = defaults::WRITE_TIMEOUT.into())]
    pub write_timeout: humantime::Duration,

    /// How long shutdown waits for sockets to close and deregister.
    #[arg(long, env = "DRAIN_TIMEOUT", default_value_t = defaults::DRAIN_TIMEOUT.into())]
    pub drain_timeout: humantime::Duration,

    /// Window over which shutdown spreads closing sockets with 1001, so that
    /// clients do not all reconnect in the same second. Must be shorter than --drain-timeout.
    #[arg(long, env = "DRAIN_SPREAD", default_value_t = defaults::DRAIN_SPREAD.into())]
    pub drain_spread: humantime::Duration,

    /// How long this instance's presence lease lasts; it is renewed every
    /// third of it, and an instance that dies is reaped once it expires.
    #[arg(long, env = "LEASE_TTL", default_value_t = defaults::LEASE_TTL.into())]
    pub lease_ttl: humantime::Duration,

    /// How often this instance re-synchronises presence with the
    /// connections it holds even when nothing went wrong that it could see
    /// (a Redis failover can lose the last writes without a sign). 0: only
    /// after an outage or a lost lease.
    #[arg(long, env = "RESYNC_INTERVAL", default_value_t = defaults::RESYNC_INTERVAL.into())]
    pub resync_interval: humantime::Duration,

    /// JSON file of dev users ({"users":[{"email","user_id","password_hash"}]},
    /// argon2 hashes); turns on `POST /auth/login`. Needs --jwt-secret to sign tokens.
    #[arg(long = "dev-users", env = "DEV_USERS_FILE")]
    pub dev_users: Option<PathBuf>,

    /// Lifetime of tokens minted by the dev login.
    #[arg(long, env = "DEV_TOKEN_TTL", default_value = "1h")]
    pub dev_token_ttl: humantime::Duration,

    /// Password checks (argon2, costly in CPU and memory) the dev login runs
    /// at once; a login beyond them gets 503 at once.
    #[arg(long, env = "DEV_LOGIN_CONCURRENCY", default_value_t = crate::login::DEFAULT_MAX_VERIFICATIONS)]
    pub dev_login_concurrency: usize,

    /// Frames per second one connection may send on average (bursts of
    /// twice that): messages, each fragment, pings and pongs; over it the
    /// socket closes with 4429. 0: no limit.
    #[arg(long, env = "MAX_MESSAGES_PER_SECOND", default_value_t = defaults::MAX_MESSAGES_PER_SECOND)]
    pub max_messages_per_second: u32,

    /// Token refreshes one connection may send per minute (bursts of that
    /// many); one over it is refused with `rate_limited` and the socket
    /// keeps its current token. 0: no limit.
    #[arg(long, env = "MAX_TOKEN_REFRESHES_PER_MINUTE", default_value_t = defaults::MAX_TOKEN_REFRESHES_PER_MINUTE)]
    pub max_token_refreshes_per_minute: u32,

    /// Channels one connection may be subscribed to at once (its personal
    /// channel not counted); one more is refused with `too_many_subscriptions`.
    #[arg(long, env = "MAX_SUBSCRIPTIONS_PER_CONNECTION", default_value_t = defaults::MAX_SUBSCRIPTIONS_PER_CONNECTION)]
    pub max_subscriptions_per_connection: usize,

    /// The config file shared with pulse-presence: channel namespaces.
    /// Without one, only personal channels exist.
    #[arg(long, env = "PULSE_CONFIG")]
    pub config: Option<std::path::PathBuf>,

    /// Connections one user may hold across every instance; the next one
    /// closes with 4429. 0: no limit.
    #[arg(long, env = "MAX_CONNECTIONS_PER_USER", default_value_t = defaults::MAX_CONNECTIONS_PER_USER)]
    pub max_connections_per_user: usize,

    /// Sockets one client IP (one /64 for IPv6) may hold before they
    /// authenticate; more get HTTP 429. 0: no limit. Behind proxies, set
    /// --trusted-proxies so that each client is counted, not the proxy.
    #[arg(long, env = "MAX_UNAUTHENTICATED_PER_IP", default_value_t = defaults::MAX_UNAUTHENTICATED_PER_IP)]
    pub max_unauthenticated_per_ip: usize,

    /// How long a client may take to send its HTTP request head, a PROXY
    /// protocol header, or the dev login's body (slowloris guard).
    #[arg(long, env = "HANDSHAKE_TIMEOUT", default_value_t = defaults::HANDSHAKE_TIMEOUT.into())]
    pub handshake_timeout: humantime::Duration,

    /// Comma-separated networks (`10.0.0.0/8`, `fd00::/8`, or single
    /// addresses) of the proxies in front of the gateway. Only a peer in
    /// them is believed about the client's address (`Forwarded`,
    /// `X-Forwarded-For`, a PROXY header). Unset: the TCP peer is the client.
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,

    /// Connections from a trusted proxy start with a PROXY protocol header
    /// (v1 or v2) naming the client; one without a valid header within
    /// --handshake-timeout is dropped. Needs --trusted-proxies.
    #[arg(long, env = "PROXY_PROTOCOL")]
    pub proxy_protocol: bool,

    /// Comma-separated origins allowed to open sockets (`https://app.example.com`);
    /// a request with another Origin gets 403, one without is allowed. Unset: any.
    #[arg(long, env = "ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Mounts an unauthenticated echo endpoint at this path, with the
    /// gateway's framing, for WebSocket conformance runs only. Off by default.
    #[arg(long, env = "ECHO_PATH")]
    pub echo_path: Option<String>,

    /// Keys for in-process validation (and for signing dev-login tokens).
    #[command(flatten)]
    pub keys: KeyArgs,
}

/// Helper commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Reads a password on stdin and prints its argon2 hash, for the dev users file.
    HashPassword,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::Settings;

    /// The flags' defaults are the library's: a setting left unset means
    /// the same from the command line as from `Settings::new`.
    #[test]
    fn the_flag_defaults_are_the_library_defaults() {
        let config = Config::try_parse_from(["pulse-gateway"]).unwrap();
        let library = Settings::new("any");
        let duration = |value: humantime::Duration| Duration::from(value);
        assert_eq!(
            duration(config.heartbeat_interval),
            library.heartbeat_interval
        );
        assert_eq!(duration(config.auth_timeout), library.auth_timeout);
        assert_eq!(duration(config.keys.jwt_leeway), library.token_leeway);
        assert_eq!(config.max_message_bytes, library.max_message_bytes);
        assert_eq!(config.outbound_queue, library.outbound_queue);
        assert_eq!(duration(config.write_timeout), library.write_timeout);
        assert_eq!(duration(config.drain_timeout), library.drain_timeout);
        assert_eq!(duration(config.drain_spread), library.drain_spread);
        assert_eq!(
            duration(config.lease_ttl),
            pulse_presence::RedisOptions::new("redis://127.0.0.1").lease_ttl
        );
        assert_eq!(duration(config.resync_interval), library.resync_interval);
        assert_eq!(
            config.max_messages_per_second,
            library.max_messages_per_second
        );
        assert_eq!(
            config.max_token_refreshes_per_minute,
            library.max_token_refreshes_per_minute
        );
        assert_eq!(
            config.max_connections_per_user,
            library.max_connections_per_user
        );
        assert_eq!(
            config.max_subscriptions_per_connection,
            library.max_subscriptions_per_connection
        );
        assert_eq!(
            config.max_unauthenticated_per_ip,
            library.max_unauthenticated_per_ip
        );
        assert_eq!(
            duration(config.handshake_timeout),
            library.handshake_timeout
        );
        assert_eq!(config.proxy_protocol, library.proxy_protocol);
        assert_eq!(config.allowed_origins, library.allowed_origins);
        assert_eq!(config.echo_path, library.echo_path);
        assert_eq!(config.auth_url, library.auth_url);
    }
}
