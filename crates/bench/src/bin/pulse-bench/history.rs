//! The history commands (issue 13): `publish`, `recover`, `history-memory`.

use std::net::SocketAddr;

use clap::Args;
use pulse_bench::{
    result::BenchResult,
    scenario::{
        channels::Crowd,
        ensure_loopback,
        history::{self, memory, publish, recover},
    },
};

use super::{Clients, parse_named_pid};

/// The arguments of `publish`.
#[derive(Args)]
pub(crate) struct PublishArgs {
    /// Which configuration (`pulse-history`, `pulse`, `redis`).
    #[arg(long, default_value = "pulse-history")]
    label: String,
    /// Call `Channels/Publish` on `pulse-presence` at this address.
    #[arg(long, required_unless_present = "redis_url")]
    presence: Option<SocketAddr>,
    /// The API key for `pulse-presence` (`publish`).
    #[arg(long, env = "PULSE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// The floor instead: `RPUSH` + `LTRIM` + `SPUBLISH` pipelined on this
    /// Redis.
    #[arg(long, conflicts_with = "presence")]
    redis_url: Option<String>,
    /// The floor's key namespace (keys as `pulse-presence` names them).
    #[arg(long, default_value = "bench-floor")]
    redis_namespace: String,
    /// How many the floor's history lists keep (`LTRIM`).
    #[arg(long, default_value_t = 100)]
    history_size: u32,
    /// Channels are this prefix and a number.
    #[arg(long, default_value = "benchhist:pub-")]
    channel_prefix: String,
    /// Channels published to, round robin.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..))]
    channels: u32,
    /// Calls per second.
    #[arg(long, default_value_t = 1_000.0)]
    rate: f64,
    /// How long to publish for.
    #[arg(long, default_value = "10s")]
    duration: humantime::Duration,
    /// The length of each publication's data (JSON text), in bytes.
    #[arg(long, default_value_t = 100)]
    data_bytes: usize,
    /// A process whose CPU per call to report, as NAME=PID; repeatable.
    #[arg(long = "watch-pid", value_parser = parse_named_pid)]
    watch_pids: Vec<(String, u32)>,
    /// Every call carries an idempotency key of its own (`pulse-presence`
    /// only).
    #[arg(long, conflicts_with = "redis_url")]
    idempotency_keys: bool,
}

impl PublishArgs {
    pub(crate) async fn run(self) -> anyhow::Result<Vec<BenchResult>> {
        let target = match (self.presence, &self.redis_url) {
            (Some(presence), _) => {
                ensure_loopback(presence)?;
                publish::Target::Grpc(
                    history::channels_api(presence, &api_key(self.api_key)?).await?,
                )
            }
            (None, Some(url)) => publish::Target::Redis {
                conn: redis_connection(url).await?,
                namespace: self.redis_namespace,
                history_size: self.history_size,
            },
            (None, None) => anyhow::bail!("publish through --presence ADDR or --redis-url URL"),
        };
        let result = publish::run(publish::PublishOptions {
            label: self.label,
            target,
            channel_prefix: self.channel_prefix,
            channels: self.channels as usize,
            rate: self.rate,
            duration: self.duration.into(),
            data_bytes: self.data_bytes,
            watch_pids: self.watch_pids,
            idempotency_keys: self.idempotency_keys,
        })
        .await?;
        Ok(vec![BenchResult::Publish(result)])
    }
}

/// The arguments of `recover`.
#[derive(Args)]
pub(crate) struct RecoverArgs {
    #[command(flatten)]
    clients: Clients,
    /// The gateway the clients were on before (positions).
    #[arg(long)]
    first: SocketAddr,
    /// The gateway they reconnect to.
    #[arg(long)]
    second: SocketAddr,
    /// The second gateway's pid, for its CPU per subscribe.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Another process whose CPU per subscribe to report, as NAME=PID; repeatable.
    #[arg(long = "watch-pid", value_parser = parse_named_pid)]
    watch_pids: Vec<(String, u32)>,
    /// `pulse-presence`'s gRPC address, where the missed publications are made.
    #[arg(long)]
    presence: SocketAddr,
    /// The API key for `pulse-presence` (`publish`).
    #[arg(long, env = "PULSE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Channels are this prefix, `since-` or `plain-`, and a number; the
    /// namespace must keep at least --missed publications.
    #[arg(long, default_value = "benchhist:rec-")]
    channel_prefix: String,
    /// Subscribes with `since` (as many plain ones, interleaved).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..))]
    samples: u32,
    /// Publications missed per channel.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    missed: u32,
    /// The length of each publication's data (JSON text), in bytes.
    #[arg(long, default_value_t = 100)]
    data_bytes: usize,
    /// Subscribes per second, both kinds together.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Reconnections opened per second, before the subscribes.
    #[arg(long, default_value_t = 2_000.0)]
    open_rate: f64,
}

impl RecoverArgs {
    pub(crate) async fn run(self) -> anyhow::Result<Vec<BenchResult>> {
        for server in [self.first, self.second, self.presence] {
            ensure_loopback(server)?;
        }
        anyhow::ensure!(self.rate > 0.0, "--rate must be above 0");
        let options = recover::RecoverOptions {
            label: self.clients.label.clone(),
            first: self.first,
            crowd: Crowd {
                servers: vec![self.second],
                count: 0,
                rate: self.open_rate,
                max_inflight: 128,
                user_prefix: self.clients.user_prefix.clone(),
            },
            api: history::channels_api(self.presence, &api_key(self.api_key)?).await?,
            channel_prefix: self.channel_prefix,
            samples: self.samples as usize,
            missed: self.missed as usize,
            data_bytes: self.data_bytes,
            rate: self.rate,
            server_pid: self.server_pid,
            watch_pids: self.watch_pids,
        };
        let result = recover::run(self.clients.setup()?, options).await?;
        Ok(vec![BenchResult::Recover(result)])
    }
}

/// The arguments of `history-memory`.
#[derive(Args)]
pub(crate) struct HistoryMemoryArgs {
    /// Which configuration.
    #[arg(long, default_value = "pulse")]
    label: String,
    /// `pulse-presence`'s gRPC address.
    #[arg(long)]
    presence: SocketAddr,
    /// The API key for `pulse-presence` (`publish`).
    #[arg(long, env = "PULSE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// The Redis `pulse-presence` writes to.
    #[arg(long)]
    redis_url: String,
    /// `pulse-presence`'s `--redis-namespace`.
    #[arg(long)]
    redis_namespace: String,
    /// Channels are this prefix and a number (a namespace with history).
    #[arg(long, default_value = "benchmem:m-")]
    channel_prefix: String,
    /// Channels filled.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    channels: u32,
    /// Publications per channel (more than the history keeps, so that the
    /// streams are trimmed as a live channel's are).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    per_channel: u32,
    /// Channel `i` gets `i % stagger` more publications, so that the
    /// streams are caught at every point of their trimming cycle (the
    /// history's size is a good value).
    #[arg(long, default_value_t = 100)]
    stagger: u32,
    /// The length of each publication's data (JSON text), in bytes.
    #[arg(long, default_value_t = 100)]
    data_bytes: usize,
}

impl HistoryMemoryArgs {
    pub(crate) async fn run(self) -> anyhow::Result<Vec<BenchResult>> {
        ensure_loopback(self.presence)?;
        let result = memory::run(memory::MemoryOptions {
            label: self.label,
            api: history::channels_api(self.presence, &api_key(self.api_key)?).await?,
            redis: redis_connection(&self.redis_url).await?,
            namespace: self.redis_namespace,
            channel_prefix: self.channel_prefix,
            channels: self.channels as usize,
            per_channel: self.per_channel as usize,
            stagger: self.stagger as usize,
            data_bytes: self.data_bytes,
        })
        .await?;
        Ok(vec![BenchResult::HistoryMemory(result)])
    }
}

fn api_key(key: Option<String>) -> anyhow::Result<String> {
    key.ok_or_else(|| anyhow::anyhow!("--api-key / PULSE_API_KEY: needed with --presence"))
}

pub(crate) async fn redis_connection(
    url: &str,
) -> anyhow::Result<redis::aio::MultiplexedConnection> {
    let host = url
        .strip_prefix("redis://")
        .map(|rest| rest.rsplit_once('@').map_or(rest, |(_, host)| host))
        .unwrap_or_default();
    anyhow::ensure!(
        ["127.", "localhost", "[::1]"]
            .iter()
            .any(|local| host.starts_with(local)),
        "--redis-url: the bench only talks to a Redis on loopback (redis://127.0.0.1:PORT)"
    );
    // With TCP_NODELAY, as Pulse's own connections (redis-rs leaves Nagle's
    // algorithm on by default), so that the floor is not held by it either.
    let info = redis::IntoConnectionInfo::into_connection_info(url)?
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
    Ok(redis::Client::open(info)?
        .get_multiplexed_async_connection()
        .await?)
}
