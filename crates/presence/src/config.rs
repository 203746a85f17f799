//! `pulse-presence`'s settings: flags with environment fallbacks, checked
//! once at start into the values the service runs with. Every error names
//! its setting and never shows a key.

use std::{fmt, net::SocketAddr, path::PathBuf};

use clap::{Args, Parser};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tracing::warn;

use crate::{
    ApiConfig, ApiLimits, EventLogOptions, Presence, RedisOptions,
    access::{Access, load_keys},
};

/// Settings of `pulse-presence`; every flag also reads its environment variable.
#[derive(Parser)]
#[command(
    name = "pulse-presence",
    version,
    about = "Pulse's presence gRPC service"
)]
pub struct Config {
    /// The address to serve gRPC on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:50052")]
    pub listen: SocketAddr,
    /// The Redis that holds presence state; with `--redis-cluster`,
    /// comma-separated URLs of Redis Cluster nodes.
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    pub redis_url: String,
    /// `--redis-url` names Redis Cluster nodes (seeds; one is enough, more
    /// survive a node being down) instead of one Redis.
    #[arg(long, env = "REDIS_CLUSTER")]
    pub redis_cluster: bool,
    /// The prefix of every Redis key and channel (shared with the gateways).
    #[arg(long, env = "REDIS_NAMESPACE", default_value = "pulse")]
    pub redis_namespace: String,
    /// Where to serve Prometheus metrics (`GET /metrics`).
    #[arg(long, env = "METRICS_LISTEN", default_value = "0.0.0.0:9092")]
    pub metrics_listen: SocketAddr,
    /// How often to reap instances whose lease expired (died without saying goodbye).
    #[arg(long, env = "REAP_INTERVAL", default_value = "1s")]
    pub reap_interval: humantime::Duration,
    /// How long presence events are kept for `Watch` from a position (and
    /// webhook delivery): older ones are trimmed (each bucket keeps its
    /// newest). About 150 bytes of Redis per event.
    #[arg(long, env = "EVENT_RETENTION", default_value = "1h")]
    pub event_retention: humantime::Duration,
    /// How long `GetUser` of an offline user says when they were last online.
    #[arg(long, env = "LAST_SEEN", default_value = "30days")]
    pub last_seen: humantime::Duration,
    /// The config file shared with the gateways (channel namespaces); the
    /// server API refuses to publish to a namespace it does not configure.
    #[arg(long, env = "PULSE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where to serve the HTTP JSON API (`POST /api/v1/...`), or `off`.
    #[arg(long, env = "HTTP_LISTEN", default_value = "0.0.0.0:8052")]
    pub http_listen: HttpListen,
    /// Who may call the API, TLS, and limits.
    #[command(flatten)]
    pub api: ApiArgs,
}

/// `--http-listen`: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpListen {
    /// Serve the HTTP API here.
    On(SocketAddr),
    /// No HTTP API.
    Off,
}

impl std::str::FromStr for HttpListen {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "off" {
            return Ok(Self::Off);
        }
        text.parse()
            .map(Self::On)
            .map_err(|_| format!("{text:?} is not an address like 0.0.0.0:8052, or off"))
    }
}

impl Config {
    /// The namespaces of the config file (none without one: only personal
    /// channels are publishable), with the `PULSE_NS_*` overrides. The error is one line naming the file
    /// and the key.
    pub fn namespaces(&self) -> Result<crate::Namespaces, String> {
        crate::Namespaces::configure(self.config.as_deref(), pulse_runtime::runtime::env_vars())
            .map_err(|error| format!("--config / PULSE_CONFIG: {error}"))
    }
}

/// The internal API's settings.
#[derive(Args)]
pub struct ApiArgs {
    /// An API key with every permission (at least 16 characters). Repeat the
    /// flag, or comma-separate keys in `API_KEYS`, to accept several at once
    /// while rotating.
    #[arg(
        long = "api-key",
        env = "API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,
    /// A TOML file of scoped keys: `[[keys]]` with `name`, `key` and
    /// `permissions` (`presence:read`, `publish`, `connections:manage`).
    #[arg(long, env = "API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,
    /// Serve the API to anyone who can reach it, without keys (logged as a
    /// warning). Only for a closed development machine.
    #[arg(long, env = "INSECURE_OPEN_API")]
    pub insecure_open_api: bool,
    /// PEM certificate chain: serve the API over TLS (with `--tls-key`).
    #[arg(long, env = "TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates: callers must present a client certificate
    /// signed by one of them (mutual TLS). Needs `--tls-cert`.
    #[arg(long, env = "TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// HTTP/2 streams (calls) one connection may have open at once.
    #[arg(long, env = "MAX_CONCURRENT_STREAMS", default_value_t = ApiLimits::default().max_concurrent_streams)]
    pub max_concurrent_streams: u32,
    /// `Watch` streams one API key may hold open at once (one client
    /// address, when the API is open); 0: no limit.
    #[arg(long, env = "MAX_WATCHES_PER_KEY", default_value_t = ApiLimits::default().max_watches_per_key)]
    pub max_watches_per_key: usize,
    /// The largest request message, in bytes.
    #[arg(long, env = "MAX_REQUEST_BYTES", default_value_t = ApiLimits::default().max_request_bytes)]
    pub max_request_bytes: usize,
    /// How long a `Publish`/`Broadcast` `idempotency_key` is remembered: a
    /// retry within it returns the first call's result and publishes nothing.
    #[arg(long, env = "IDEMPOTENCY_WINDOW", default_value = "5m")]
    pub idempotency_window: humantime::Duration,
}

/// Never shows keys.
impl fmt::Debug for ApiArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiArgs")
            .field(
                "api_keys",
                &format_args!("[{} hidden]", self.api_keys.len()),
            )
            .field("api_keys_file", &self.api_keys_file)
            .field("insecure_open_api", &self.insecure_open_api)
            .field("tls_cert", &self.tls_cert)
            .finish_non_exhaustive()
    }
}

impl ApiArgs {
    /// Checks the settings and loads keys and certificates. The error is one
    /// line naming the setting.
    pub fn api_config(&self) -> Result<ApiConfig, String> {
        let keys = load_keys(&self.api_keys, self.api_keys_file.as_deref())
            .map_err(|error| error.to_string())?;
        let access = match (keys.is_empty(), self.insecure_open_api) {
            (true, false) => {
                return Err("--api-key / API_KEYS or --api-keys-file / API_KEYS_FILE: \
                            the internal API needs keys (or run with --insecure-open-api \
                            on a closed development machine)"
                    .into());
            }
            (false, true) => {
                return Err(
                    "--insecure-open-api / INSECURE_OPEN_API: cannot be combined \
                            with API keys; choose one"
                        .into(),
                );
            }
            (true, true) => {
                warn!(
                    "the internal API is OPEN (--insecure-open-api): anyone who reaches this \
                     port can read presence, send to any user and disconnect anyone"
                );
                Access::Open
            }
            (false, false) => Access::Keys(keys.into()),
        };
        if self.max_concurrent_streams == 0 {
            return Err(
                "--max-concurrent-streams / MAX_CONCURRENT_STREAMS: must be at least 1".into(),
            );
        }
        if self.idempotency_window.as_secs() < 1 {
            return Err("--idempotency-window / IDEMPOTENCY_WINDOW: at least 1s".into());
        }
        if self.max_request_bytes < 1024 {
            return Err("--max-request-bytes / MAX_REQUEST_BYTES: must be at least 1024".into());
        }
        Ok(ApiConfig {
            access,
            tls: self.tls()?,
            http_tls: self.http_tls()?,
            limits: ApiLimits {
                max_concurrent_streams: self.max_concurrent_streams,
                max_watches_per_key: self.max_watches_per_key,
                max_request_bytes: self.max_request_bytes,
                idempotency_window: self.idempotency_window.into(),
            },
            namespaces: std::sync::Arc::default(),
        })
    }

    /// The HTTP API's TLS: the same certificate, key and client CA as
    /// gRPC's, for rustls under hyper.
    fn http_tls(&self) -> Result<Option<std::sync::Arc<rustls::ServerConfig>>, String> {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let certs = CertificateDer::pem_file_iter(cert)
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(|error| format!("--tls-cert / TLS_CERT {}: {error}", cert.display()))?;
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|error| format!("--tls-key / TLS_KEY {}: {error}", key.display()))?;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|error| format!("--tls-cert / TLS_CERT: {error}"))?;
        let builder = match &self.tls_client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let fail = |error: &dyn std::fmt::Display| {
                    format!("--tls-client-ca / TLS_CLIENT_CA {}: {error}", ca.display())
                };
                let mut roots = rustls::RootCertStore::empty();
                for root in CertificateDer::pem_file_iter(ca).map_err(|e| fail(&e))? {
                    roots
                        .add(root.map_err(|e| fail(&e))?)
                        .map_err(|e| fail(&e))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    roots.into(),
                    provider,
                )
                .build()
                .map_err(|e| fail(&e))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(|error| format!("--tls-cert / --tls-key: {error}"))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Some(std::sync::Arc::new(config)))
    }

    fn tls(&self) -> Result<Option<ServerTlsConfig>, String> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let read = |setting: &str, path: &PathBuf| {
            std::fs::read(path).map_err(|error| format!("{setting} {}: {error}", path.display()))
        };
        let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(
            read("--tls-cert / TLS_CERT", cert)?,
            read("--tls-key / TLS_KEY", key)?,
        ));
        if let Some(ca) = &self.tls_client_ca {
            tls = tls.client_ca_root(Certificate::from_pem(read(
                "--tls-client-ca / TLS_CLIENT_CA",
                ca,
            )?));
        }
        // Parse now, so that a bad certificate or key stops the start with
        // one line instead of failing the server later.
        Server::builder().tls_config(tls.clone()).map_err(|error| {
            format!(
                "--tls-cert / --tls-key{}: {}",
                if self.tls_client_ca.is_some() {
                    " / --tls-client-ca"
                } else {
                    ""
                },
                std::error::Error::source(&error)
                    .map_or_else(|| error.to_string(), ToString::to_string)
            )
        })?;
        Ok(Some(tls))
    }
}

impl Config {
    /// The presence backend these settings name.
    pub fn presence(&self) -> Result<Presence, String> {
        if self.reap_interval.is_zero() {
            return Err("--reap-interval / REAP_INTERVAL: must be greater than zero".into());
        }
        let mut options = RedisOptions::new(&self.redis_url).with_namespace(&self.redis_namespace);
        options.cluster = self.redis_cluster;
        // Events are taken off the bus only while a Watch stream or a
        // webhook target reads them.
        options.events_on_demand = true;
        options
            .validate()
            .map_err(|error| format!("{}: {error}", error.flag()))?;
        let events = self.event_log_options()?;
        // The message names the setting; the URL itself may hold a password.
        let presence = Presence::redis(options)
            .map_err(|error| format!("--redis-url / REDIS_URL: {error}"))?;
        presence.set_event_log_options(events);
        Ok(presence)
    }

    /// How long events and "last seen" are kept.
    pub fn event_log_options(&self) -> Result<EventLogOptions, String> {
        if self.event_retention.as_secs() < 1 {
            return Err("--event-retention / EVENT_RETENTION: at least 1s".into());
        }
        if self.last_seen.as_secs() < 1 {
            return Err("--last-seen / LAST_SEEN: at least 1s".into());
        }
        Ok(EventLogOptions {
            retention: self.event_retention.into(),
            last_seen: self.last_seen.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Redis settings are judged by `RedisOptions::validate`, and the
    /// one line names the flag.
    #[test]
    fn bad_redis_settings_name_their_flag() {
        for (args, says) in [
            (
                &["--redis-url", "redis://a:1,redis://b:2"][..],
                "--redis-url / REDIS_URL: several URLs name Redis Cluster nodes; set --redis-cluster",
            ),
            (
                &["--redis-namespace", "a{b}"],
                "--redis-namespace / REDIS_NAMESPACE: must be non-empty and without braces",
            ),
            (
                &["--redis-namespace", ""],
                "--redis-namespace / REDIS_NAMESPACE",
            ),
            (&["--redis-url", "not a url"], "--redis-url / REDIS_URL"),
            (
                &["--reap-interval", "0s"],
                "--reap-interval / REAP_INTERVAL",
            ),
        ] {
            let config =
                Config::try_parse_from(["pulse-presence"].iter().chain(args)).expect("parses");
            let error = config.presence().expect_err("refused");
            assert!(error.starts_with(says), "{args:?}: {error}");
        }
    }
}
