//! The presence-event commands (issue 17): `watch-resume`, `event-memory`,
//! `webhooks`.

use std::net::SocketAddr;

use clap::Args;
use pulse_bench::{
    result::BenchResult,
    scenario::{
        ensure_loopback,
        events::{memory, resume, webhooks},
    },
};

use super::{history::redis_connection, parse_named_pid};

/// Where `pulse-presence` and its Redis are.
#[derive(Args)]
pub(crate) struct Target {
    /// Which build and configuration.
    #[arg(long, default_value = "pulse")]
    label: String,
    /// `pulse-presence`'s gRPC address.
    #[arg(long)]
    presence: SocketAddr,
    /// The API key for `pulse-presence` (`presence:read`).
    #[arg(long, env = "PULSE_API_KEY", hide_env_values = true)]
    api_key: String,
    /// The Redis `pulse-presence` uses: the events are made there, through
    /// `pulse-presence`'s library.
    #[arg(long)]
    redis_url: String,
    /// `pulse-presence`'s `--redis-namespace`; nothing else may write there.
    #[arg(long)]
    redis_namespace: String,
    /// User ids are this prefix and a number.
    #[arg(long, default_value = "evbench")]
    user_prefix: String,
}

impl Target {
    async fn check(&self) -> anyhow::Result<()> {
        ensure_loopback(self.presence)?;
        redis_connection(&self.redis_url).await?;
        Ok(())
    }
}

/// The arguments of `watch-resume`.
#[derive(Args)]
pub(crate) struct WatchResumeArgs {
    #[command(flatten)]
    target: Target,
    /// Samples of each kind (each resume kind, the unary call, the fresh Watch).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    samples: u32,
    /// Events missed before a resume; repeat for several kinds (even numbers).
    #[arg(long = "missed", default_values_t = [10, 100])]
    missed: Vec<usize>,
    /// A pause after each sample.
    #[arg(long, default_value = "10ms")]
    pause: humantime::Duration,
}

impl WatchResumeArgs {
    pub(crate) async fn run(self) -> anyhow::Result<Vec<BenchResult>> {
        self.target.check().await?;
        let result = resume::run(resume::ResumeOptions {
            label: self.target.label,
            presence_url: format!("http://{}", self.target.presence),
            api_key: self.target.api_key,
            redis_url: self.target.redis_url,
            namespace: self.target.redis_namespace,
            user_prefix: self.target.user_prefix,
            samples: self.samples as usize,
            missed: self.missed,
            pause: self.pause.into(),
        })
        .await?;
        Ok(vec![BenchResult::WatchResume(result)])
    }
}

/// The arguments of `event-memory`.
#[derive(Args)]
pub(crate) struct EventMemoryArgs {
    /// Which build.
    #[arg(long, default_value = "pulse")]
    label: String,
    /// The Redis to write to.
    #[arg(long)]
    redis_url: String,
    /// A namespace nothing else writes to.
    #[arg(long)]
    redis_namespace: String,
    /// The floor's bare stream.
    #[arg(long, default_value = "bench-floor:events")]
    floor_key: String,
    /// User ids are this prefix and a number.
    #[arg(long, default_value = "evmem")]
    user_prefix: String,
    /// Users.
    #[arg(long, default_value_t = 5_000)]
    users: u64,
    /// Extra connections each user opens and closes (two events each).
    #[arg(long, default_value_t = 9)]
    cycles: u64,
}

impl EventMemoryArgs {
    pub(crate) async fn run(self) -> anyhow::Result<Vec<BenchResult>> {
        let redis = redis_connection(&self.redis_url).await?;
        let result = memory::run(
            memory::MemoryOptions {
                label: self.label,
                redis_url: self.redis_url,
                namespace: self.redis_namespace,
                floor_key: self.floor_key,
                user_prefix: self.user_prefix,
                users: self.users,
                cycles: self.cycles,
            },
            redis,
        )
        .await?;
        Ok(vec![BenchResult::EventMemory(result)])
    }
}

/// The arguments of `webhooks`.
#[derive(Args)]
pub(crate) struct WebhooksArgs {
    #[command(flatten)]
    target: Target,
    /// Where the receiver listens: the `[webhooks]` url's address.
    #[arg(long)]
    listen: SocketAddr,
    /// The `[webhooks]` secret.
    #[arg(long, env = "PULSE_WEBHOOK_SECRET", hide_env_values = true)]
    secret: String,
    /// Events per second (a quarter as many users, four events each).
    #[arg(long, default_value_t = 1_000.0)]
    rate: f64,
    /// How long to make events for.
    #[arg(long, default_value = "20s")]
    duration: humantime::Duration,
    /// A user's registration to its unregistration.
    #[arg(long, default_value = "1s")]
    hold: humantime::Duration,
    /// A process whose CPU per event to report, as NAME=PID; repeatable.
    #[arg(long = "watch-pid", value_parser = parse_named_pid)]
    watch_pids: Vec<(String, u32)>,
}

impl WebhooksArgs {
    pub(crate) async fn run(self) -> anyhow::Result<Vec<BenchResult>> {
        self.target.check().await?;
        ensure_loopback(self.listen)?;
        let result = webhooks::run(webhooks::WebhooksOptions {
            label: self.target.label,
            presence_url: format!("http://{}", self.target.presence),
            api_key: self.target.api_key,
            redis_url: self.target.redis_url,
            namespace: self.target.redis_namespace,
            listen: self.listen,
            secret: self.secret,
            user_prefix: self.target.user_prefix,
            rate: self.rate,
            duration: self.duration.into(),
            hold: self.hold.into(),
            watch_pids: self.watch_pids,
        })
        .await?;
        Ok(vec![BenchResult::Webhooks(result)])
    }
}
