//! Settings from flags with environment fallbacks, validated once at start.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};
use pulse_auth::{Authenticator, KeyArgs, RemoteValidator, Validator};
use pulse_presence::{Presence, RedisOptions};

use crate::{DevLogin, Settings, TrustedProxies};

/// How long one call to a remote `pulse-auth` may take.
const AUTH_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

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
    #[arg(long, env = "HEARTBEAT_INTERVAL", default_value = "30s")]
    pub heartbeat_interval: humantime::Duration,

    /// How long a socket may stay unauthenticated before it is closed with 4408.
    #[arg(long, env = "AUTH_TIMEOUT", default_value = "5s")]
    pub auth_timeout: humantime::Duration,

    /// Largest client message in bytes; larger ones close the socket with 1009.
    #[arg(long, env = "MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    pub max_message_bytes: usize,

    /// Messages that may wait for one slow socket before it is closed.
    #[arg(long, env = "OUTBOUND_QUEUE", default_value_t = 256)]
    pub outbound_queue: usize,

    /// How long one write may block on a client that does not read before its socket is dropped.
    #[arg(long, env = "WRITE_TIMEOUT", default_value = "10s")]
    pub write_timeout: humantime::Duration,

    /// How long shutdown waits for sockets to close and deregister.
    #[arg(long, env = "DRAIN_TIMEOUT", default_value = "20s")]
    pub drain_timeout: humantime::Duration,

    /// Window over which shutdown spreads closing sockets with 1001, so that
    /// clients do not all reconnect in the same second. Must be shorter than --drain-timeout.
    #[arg(long, env = "DRAIN_SPREAD", default_value = "5s")]
    pub drain_spread: humantime::Duration,

    /// How long this instance's presence lease lasts; it is renewed every
    /// third of it, and an instance that dies is reaped once it expires.
    #[arg(long, env = "LEASE_TTL", default_value = "3s")]
    pub lease_ttl: humantime::Duration,

    /// How often this instance re-synchronises presence with the
    /// connections it holds even when nothing went wrong that it could see
    /// (a Redis failover can lose the last writes without a sign). 0: only
    /// after an outage or a lost lease.
    #[arg(long, env = "RESYNC_INTERVAL", default_value = "60s")]
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
    #[arg(long, env = "MAX_MESSAGES_PER_SECOND", default_value_t = 50)]
    pub max_messages_per_second: u32,

    /// Token refreshes one connection may send per minute (bursts of that
    /// many); one over it is refused with `rate_limited` and the socket
    /// keeps its current token. 0: no limit.
    #[arg(long, env = "MAX_TOKEN_REFRESHES_PER_MINUTE", default_value_t = 6)]
    pub max_token_refreshes_per_minute: u32,

    /// Connections one user may hold across every instance; the next one
    /// closes with 4429. 0: no limit.
    #[arg(long, env = "MAX_CONNECTIONS_PER_USER", default_value_t = 100)]
    pub max_connections_per_user: usize,

    /// Sockets one client IP (one /64 for IPv6) may hold before they
    /// authenticate; more get HTTP 429. 0: no limit. Behind proxies, set
    /// --trusted-proxies so that each client is counted, not the proxy.
    #[arg(long, env = "MAX_UNAUTHENTICATED_PER_IP", default_value_t = 64)]
    pub max_unauthenticated_per_ip: usize,

    /// How long a client may take to send its HTTP request head, a PROXY
    /// protocol header, or the dev login's body (slowloris guard).
    #[arg(long, env = "HANDSHAKE_TIMEOUT", default_value = "10s")]
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

/// Everything `run` needs, built from a [`Config`].
pub struct Built {
    /// The address to bind.
    pub listen: SocketAddr,
    /// The admin address to bind, when the probes and metrics have their own.
    pub admin_listen: Option<SocketAddr>,
    /// The gateway's settings.
    pub settings: Settings,
    /// How tokens are validated.
    pub auth: Authenticator,
    /// Where presence lives.
    pub presence: Presence,
}

impl Config {
    /// Checks every setting and builds the parts; must run inside a tokio runtime
    /// (the Redis backend starts its bus task).
    pub fn build(self) -> Result<Built, ConfigError> {
        let positive = |value: humantime::Duration, setting: &'static str| {
            let value: Duration = value.into();
            if value.is_zero() {
                Err(ConfigError::invalid(setting, "must be greater than zero"))
            } else {
                Ok(value)
            }
        };
        let heartbeat_interval = positive(
            self.heartbeat_interval,
            "--heartbeat-interval / HEARTBEAT_INTERVAL",
        )?;
        let auth_timeout = positive(self.auth_timeout, "--auth-timeout / AUTH_TIMEOUT")?;
        let drain_timeout = positive(self.drain_timeout, "--drain-timeout / DRAIN_TIMEOUT")?;
        let write_timeout = positive(self.write_timeout, "--write-timeout / WRITE_TIMEOUT")?;
        let handshake_timeout = positive(
            self.handshake_timeout,
            "--handshake-timeout / HANDSHAKE_TIMEOUT",
        )?;
        let allowed_origins: Vec<String> = self
            .allowed_origins
            .iter()
            .map(|origin| origin.trim().trim_end_matches('/').to_owned())
            .filter(|origin| !origin.is_empty())
            .collect();
        if let Some(bad) = allowed_origins
            .iter()
            .find(|origin| !(origin.starts_with("http://") || origin.starts_with("https://")))
        {
            return Err(ConfigError::invalid(
                "--allowed-origins / ALLOWED_ORIGINS",
                format!("{bad:?} is not an origin like https://app.example.com"),
            ));
        }
        if let Some(path) = &self.echo_path
            && (!path.starts_with('/')
                || ["/ws", "/healthz", "/readyz", "/auth/login"].contains(&path.as_str()))
        {
            return Err(ConfigError::invalid(
                "--echo-path / ECHO_PATH",
                format!("{path:?} must start with / and not be one of the gateway's own paths"),
            ));
        }
        let trusted_proxies = TrustedProxies::parse(&self.trusted_proxies).map_err(|reason| {
            ConfigError::invalid("--trusted-proxies / TRUSTED_PROXIES", reason)
        })?;
        if self.proxy_protocol && trusted_proxies.is_empty() {
            return Err(ConfigError::invalid(
                "--proxy-protocol / PROXY_PROTOCOL",
                "takes PROXY headers only from trusted proxies: set --trusted-proxies / TRUSTED_PROXIES",
            ));
        }
        if self.admin_listen == Some(self.listen) {
            return Err(ConfigError::invalid(
                "--admin-listen / ADMIN_LISTEN",
                format!("must differ from --listen ({})", self.listen),
            ));
        }
        if self.dev_login_concurrency == 0 {
            return Err(ConfigError::invalid(
                "--dev-login-concurrency / DEV_LOGIN_CONCURRENCY",
                "must be at least 1",
            ));
        }
        let lease_ttl: Duration = self.lease_ttl.into();
        if lease_ttl < pulse_presence::MIN_LEASE_TTL {
            let error = pulse_presence::RedisOptionsError::LeaseTtl;
            return Err(ConfigError::invalid(error.flag(), error.to_string()));
        }
        let drain_spread: Duration = self.drain_spread.into();
        if drain_spread >= drain_timeout {
            return Err(ConfigError::invalid(
                "--drain-spread / DRAIN_SPREAD",
                format!(
                    "must be shorter than --drain-timeout ({})",
                    self.drain_timeout
                ),
            ));
        }
        if self.max_message_bytes < 1024 {
            return Err(ConfigError::invalid(
                "--max-message-bytes / MAX_MESSAGE_BYTES",
                "must be at least 1024 (a token alone can be 8 KiB)",
            ));
        }
        if self.outbound_queue == 0 {
            return Err(ConfigError::invalid(
                "--outbound-queue / OUTBOUND_QUEUE",
                "must be at least 1",
            ));
        }
        let instance_id = match self.instance_id {
            Some(id) if id.trim().is_empty() || id.chars().any(char::is_whitespace) => {
                return Err(ConfigError::invalid(
                    "--instance-id / INSTANCE_ID",
                    "must be non-empty and without spaces",
                ));
            }
            Some(id) => id,
            None => default_instance_id(),
        };

        let key_settings = || self.keys.validator_settings();
        let auth = match &self.auth_url {
            Some(url) => {
                Authenticator::Remote(RemoteValidator::new(url, AUTH_REQUEST_TIMEOUT).map_err(
                    |error| ConfigError::invalid("--auth-url / AUTH_URL", error.to_string()),
                )?)
            }
            None => {
                // pulse-auth's errors already name their setting.
                let settings = key_settings().map_err(|error| match error {
                    pulse_auth::ConfigError::MissingKeySource => ConfigError::NoKeySource(error),
                    other => ConfigError::Auth(other),
                })?;
                Authenticator::Local(Validator::new(settings)?)
            }
        };

        let dev_login = match &self.dev_users {
            Some(path) => {
                let secret = self.keys.signing_secret().map_err(|_| {
                    ConfigError::invalid(
                        "--dev-users / DEV_USERS_FILE",
                        "the dev login signs tokens with --jwt-secret / JWT_SECRET, which is not set",
                    )
                })?;
                Some(
                    DevLogin::load(
                        path,
                        &secret,
                        positive(self.dev_token_ttl, "--dev-token-ttl / DEV_TOKEN_TTL")?,
                    )?
                    .with_max_verifications(self.dev_login_concurrency),
                )
            }
            None => None,
        };

        let presence = match self.redis_url {
            Some(url) => {
                let mut options = RedisOptions::new(url).with_namespace(self.redis_namespace);
                options.cluster = self.redis_cluster;
                options.lease_ttl = lease_ttl;
                options
                    .validate()
                    .map_err(|error| ConfigError::invalid(error.flag(), error.to_string()))?;
                // A gateway needs only its commands from the bus: nothing in
                // it reads other instances' events.
                options.subscribe_events = false;
                Presence::redis(options).map_err(|error| {
                    ConfigError::invalid("--redis-url / REDIS_URL", error.to_string())
                })?
            }
            None if self.redis_cluster => {
                return Err(ConfigError::invalid(
                    "--redis-cluster / REDIS_CLUSTER",
                    "needs --redis-url / REDIS_URL with the cluster's node URLs",
                ));
            }
            None => Presence::in_memory(),
        };

        let settings = Settings {
            instance_id,
            heartbeat_interval,
            auth_timeout,
            token_leeway: self.keys.jwt_leeway.into(),
            max_message_bytes: self.max_message_bytes,
            outbound_queue: self.outbound_queue,
            write_timeout,
            drain_timeout,
            drain_spread,
            auth_url: self.auth_url.clone(),
            resync_interval: self.resync_interval.into(),
            max_messages_per_second: self.max_messages_per_second,
            max_token_refreshes_per_minute: self.max_token_refreshes_per_minute,
            max_connections_per_user: self.max_connections_per_user,
            max_unauthenticated_per_ip: self.max_unauthenticated_per_ip,
            handshake_timeout,
            trusted_proxies,
            proxy_protocol: self.proxy_protocol,
            allowed_origins,
            echo_path: self.echo_path.clone(),
            metrics: None,
            dev_login,
        };
        Ok(Built {
            listen: self.listen,
            admin_listen: self.admin_listen,
            settings,
            auth,
            presence,
        })
    }
}

/// The host name plus a random suffix, so two processes on one host differ.
fn default_instance_id() -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..6];
    format!("{host}-{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one line a bad setting stops the binary with.
    fn error(args: &[&str]) -> String {
        let mut argv = vec!["pulse-gateway", "--jwt-secret", "a-test-secret"];
        argv.extend_from_slice(args);
        match Config::try_parse_from(argv).unwrap().build() {
            Ok(_) => panic!("{args:?} was accepted"),
            Err(error) => error.to_string(),
        }
    }

    #[tokio::test]
    async fn the_edge_settings_are_checked_and_named() {
        for (args, says) in [
            (
                &["--trusted-proxies", "10.0.0.0/8,proxy.internal"][..],
                "--trusted-proxies / TRUSTED_PROXIES: \"proxy.internal\" is not an IP network",
            ),
            (
                &["--trusted-proxies", "10.0.0.1/8"],
                "did you mean 10.0.0.0/8",
            ),
            (
                &["--proxy-protocol"],
                "--proxy-protocol / PROXY_PROTOCOL: takes PROXY headers only from trusted proxies",
            ),
            (
                &[
                    "--listen",
                    "127.0.0.1:3000",
                    "--admin-listen",
                    "127.0.0.1:3000",
                ],
                "--admin-listen / ADMIN_LISTEN: must differ from --listen",
            ),
            (
                &["--dev-login-concurrency", "0"],
                "--dev-login-concurrency / DEV_LOGIN_CONCURRENCY: must be at least 1",
            ),
        ] {
            let error = error(args);
            assert!(error.contains(says), "{args:?}: {error}");
            assert!(!error.contains('\n'), "one line: {error}");
        }
        let built = Config::try_parse_from([
            "pulse-gateway",
            "--jwt-secret",
            "a-test-secret",
            "--trusted-proxies",
            "10.0.0.0/8, fd00::/8",
            "--proxy-protocol",
            "--admin-listen",
            "127.0.0.1:9090",
        ])
        .unwrap()
        .build()
        .map_err(|error| error.to_string())
        .unwrap();
        assert!(built.settings.proxy_protocol);
        assert!(
            built
                .settings
                .trusted_proxies
                .contains("fd00::7".parse().unwrap())
        );
        assert_eq!(built.admin_listen, Some("127.0.0.1:9090".parse().unwrap()));
    }
}
