//! The channel commands (issue 12): `fanout`, `subscribe`, `subscriptions`.

use std::net::SocketAddr;

use clap::Args;
use pulse_bench::{
    result::BenchResult,
    scenario::{
        channels::{Crowd, Publisher},
        ensure_loopback, fanout, subscribe, subscriptions,
    },
};

use super::{Clients, parse_named_pid};

/// The arguments of `fanout`.
#[derive(Args)]
pub(crate) struct FanoutArgs {
    #[command(flatten)]
    clients: Clients,
    /// A server (gateway, or `pulse-fanout`); give it once per server.
    /// Connections are spread over them round robin.
    #[arg(long = "server", required = true)]
    servers: Vec<SocketAddr>,
    /// A server's pid, for CPU and write calls (summed); repeatable.
    #[arg(long = "server-pid")]
    server_pids: Vec<u32>,
    /// Another process whose CPU per delivery to report, as NAME=PID; repeatable.
    #[arg(long = "watch-pid", value_parser = parse_named_pid)]
    watch_pids: Vec<(String, u32)>,
    /// Publish through `pulse-presence`'s gRPC API at this address.
    #[arg(long)]
    presence: Option<SocketAddr>,
    /// The API key for `pulse-presence` (`publish`).
    #[arg(long, env = "PULSE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Publish through the floor's `POST /publish` on the (first) server.
    #[arg(long, conflicts_with = "presence")]
    floor: bool,
    /// Channels are this prefix and a number.
    #[arg(long, default_value = "bench:fan-")]
    channel_prefix: String,
    /// Channels published to, round robin.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    channels: u32,
    /// Subscribers of each channel (a connection each).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    subscribers: u32,
    /// Connections opened per second.
    #[arg(long, default_value_t = 5_000.0)]
    open_rate: f64,
    /// At most this many connections between TCP connect and first message.
    #[arg(long, default_value_t = 128)]
    max_inflight: usize,
    /// Publications per second of the fixed-rate phase (0: none).
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// How long the fixed-rate phase publishes.
    #[arg(long, default_value = "20s")]
    duration: humantime::Duration,
    /// The saturation phase's measured window (0s: none).
    #[arg(long, default_value = "0s")]
    saturate: humantime::Duration,
    /// Publications in flight at saturation.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    window: u32,
    /// Saturation before the window is measured.
    #[arg(long, default_value = "2s")]
    warmup: humantime::Duration,
    /// Subscribes per second to fresh channels on the first server during
    /// the saturation window, each timed (0: none).
    #[arg(long, default_value_t = 0.0)]
    probe_rate: f64,
}

impl FanoutArgs {
    pub(crate) async fn run(self) -> anyhow::Result<Vec<BenchResult>> {
        for server in self.servers.iter().chain(self.presence.iter()) {
            ensure_loopback(*server)?;
        }
        let publisher = match (self.presence, self.floor) {
            (Some(presence), _) => {
                let key = self.api_key.as_deref().ok_or_else(|| {
                    anyhow::anyhow!("--api-key / PULSE_API_KEY: needed with --presence")
                })?;
                Publisher::grpc(presence, key).await?
            }
            (None, true) => Publisher::floor(self.servers[0])?,
            (None, false) => anyhow::bail!("publish through --presence ADDR or --floor"),
        };
        let options = fanout::FanoutOptions {
            label: self.clients.label.clone(),
            crowd: crowd(
                &self.clients,
                self.servers,
                0,
                self.open_rate,
                self.max_inflight,
            ),
            publisher,
            channel_prefix: self.channel_prefix,
            channels: self.channels as usize,
            subscribers: self.subscribers as usize,
            rate: self.rate,
            duration: self.duration.into(),
            saturate: self.saturate.into(),
            window: self.window as usize,
            warmup: self.warmup.into(),
            probe_rate: self.probe_rate,
            server_pids: self.server_pids,
            watch_pids: self.watch_pids,
        };
        let results = fanout::run(self.clients.setup()?, options).await?;
        Ok(results.into_iter().map(BenchResult::Fanout).collect())
    }
}

/// The arguments of `subscribe`.
#[derive(Args)]
pub(crate) struct SubscribeArgs {
    #[command(flatten)]
    clients: Clients,
    /// The gateway.
    #[arg(long)]
    server: SocketAddr,
    /// The gateway's pid, for its CPU per subscribe.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Another process whose CPU per subscribe to report, as NAME=PID; repeatable.
    #[arg(long = "watch-pid", value_parser = parse_named_pid)]
    watch_pids: Vec<(String, u32)>,
    /// Channels are this prefix and a number; their namespace is what is measured.
    #[arg(long, default_value = "bench:sub-")]
    channel_prefix: String,
    /// Each subscribe carries a subscription token, minted with --jwt-secret.
    #[arg(long)]
    token: bool,
    /// Subscribes (and connections).
    #[arg(long, default_value_t = 2_000)]
    subscribes: usize,
    /// Subscribes per second.
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    /// Connections opened per second, before the subscribes.
    #[arg(long, default_value_t = 5_000.0)]
    open_rate: f64,
}

impl SubscribeArgs {
    pub(crate) async fn run(self) -> anyhow::Result<Vec<BenchResult>> {
        ensure_loopback(self.server)?;
        let token_secret = match (self.token, &self.clients.jwt_secret) {
            (false, _) => None,
            (true, Some(secret)) => Some(secret.clone()),
            (true, None) => {
                anyhow::bail!(
                    "--token: subscription tokens are signed with --jwt-secret, which is not set"
                )
            }
        };
        let options = subscribe::SubscribeOptions {
            label: self.clients.label.clone(),
            crowd: crowd(
                &self.clients,
                vec![self.server],
                self.subscribes,
                self.open_rate,
                128,
            ),
            channel_prefix: self.channel_prefix,
            token_secret,
            rate: self.rate,
            server_pid: self.server_pid,
            watch_pids: self.watch_pids,
        };
        let result = subscribe::run(self.clients.setup()?, options).await?;
        Ok(vec![BenchResult::Subscribe(result)])
    }
}

/// The arguments of `subscriptions`.
#[derive(Args)]
pub(crate) struct SubscriptionsArgs {
    #[command(flatten)]
    clients: Clients,
    /// The gateway.
    #[arg(long)]
    server: SocketAddr,
    /// The gateway's pid, for its RSS.
    #[arg(long)]
    server_pid: u32,
    /// Channels are this prefix and a number.
    #[arg(long, default_value = "bench:mem-")]
    channel_prefix: String,
    /// Connections held.
    #[arg(long, default_value_t = 5_000)]
    connections: usize,
    /// Subscriptions per connection.
    #[arg(long, default_value_t = 10)]
    per_connection: usize,
    /// A channel per subscription, instead of the same channels for every connection.
    #[arg(long)]
    distinct: bool,
    /// Connections opened per second.
    #[arg(long, default_value_t = 5_000.0)]
    open_rate: f64,
    /// Connections per second that start subscribing.
    #[arg(long, default_value_t = 1_000.0)]
    subscribe_rate: f64,
    /// Pause before each RSS reading.
    #[arg(long, default_value = "3s")]
    settle: humantime::Duration,
}

impl SubscriptionsArgs {
    pub(crate) async fn run(self) -> anyhow::Result<Vec<BenchResult>> {
        ensure_loopback(self.server)?;
        let options = subscriptions::SubscriptionsOptions {
            label: self.clients.label.clone(),
            crowd: crowd(
                &self.clients,
                vec![self.server],
                self.connections,
                self.open_rate,
                128,
            ),
            channel_prefix: self.channel_prefix,
            per_connection: self.per_connection,
            distinct: self.distinct,
            subscribe_rate: self.subscribe_rate,
            server_pid: self.server_pid,
            settle: self.settle.into(),
        };
        let result = subscriptions::run(self.clients.setup()?, options).await?;
        Ok(vec![BenchResult::Subscriptions(result)])
    }
}

fn crowd(
    clients: &Clients,
    servers: Vec<SocketAddr>,
    count: usize,
    rate: f64,
    max_inflight: usize,
) -> Crowd {
    Crowd {
        servers,
        count,
        rate,
        max_inflight,
        user_prefix: clients.user_prefix.clone(),
    }
}
