//! A [`Config`] checked once, every bad setting named in one line, and
//! turned into the parts `run` needs.

use std::{net::SocketAddr, time::Duration};

use pulse_auth::{Authenticator, RemoteValidator, Validator};
use pulse_presence::{Presence, RedisOptions};

use super::{Config, ConfigError};
use crate::{DevLogin, Settings, TrustedProxies};

/// How long one call to a remote `pulse-auth` may take.
const AUTH_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

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
            None => {
                let presence = Presence::in_memory();
                // One gateway alone serves no presence API, so nothing can
                // read its event log or "last seen": keep neither.
                presence.set_event_log_options(pulse_presence::EventLogOptions {
                    retention: std::time::Duration::ZERO,
                    last_seen: std::time::Duration::ZERO,
                });
                presence
            }
        };

        let namespaces = pulse_presence::Namespaces::configure(
            self.config.as_deref(),
            pulse_runtime::runtime::env_vars(),
        )
        .map_err(|error| ConfigError::invalid("--config / PULSE_CONFIG", error.to_string()))?;
        if let Some(hooks) = &namespaces.hooks {
            // What the gateway will build: a CA file that is not PEM stops
            // the start here, not the first hook subscription.
            crate::hooks::Hook::new(hooks)
                .map_err(|error| ConfigError::invalid("--config / PULSE_CONFIG", error))?;
        }
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
            max_subscriptions_per_connection: self.max_subscriptions_per_connection,
            namespaces: std::sync::Arc::new(namespaces),
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
    use clap::Parser;

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
