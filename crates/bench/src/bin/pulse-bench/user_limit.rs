//! The `user-limit` command (issue 15): the per-user connection limit when
//! one user connects to several gateways at the same moment.

use std::net::SocketAddr;

use clap::Args;
use pulse_bench::{
    result::BenchResult,
    scenario::{ensure_loopback, user_limit},
};

use super::Clients;

/// The arguments of `user-limit`.
#[derive(Args)]
pub(crate) struct UserLimitArgs {
    #[command(flatten)]
    clients: Clients,
    /// A gateway; give it once per gateway. All must share one Redis
    /// namespace and one `--max-connections-per-user`.
    #[arg(long = "gateway", required = true)]
    gateways: Vec<SocketAddr>,
    /// The gateways' Redis, to read the user's connections from presence.
    #[arg(long)]
    redis_url: String,
    /// The gateways' Redis namespace.
    #[arg(long)]
    redis_namespace: String,
    /// The gateways' `--max-connections-per-user`.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    limit: u32,
    /// Sockets one user opens at once in each trial, round robin over the
    /// gateways (more than `--limit` to test it; as many for the control).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    connects: u32,
    /// Trials, each with a user of its own.
    #[arg(long, default_value_t = 200)]
    trials: usize,
    /// Trials (users) at once, each its own burst: load beside each.
    #[arg(long, default_value_t = 1)]
    concurrent_users: usize,
}

impl UserLimitArgs {
    pub(crate) async fn run(self) -> anyhow::Result<Vec<BenchResult>> {
        for gateway in &self.gateways {
            ensure_loopback(*gateway)?;
        }
        let options = user_limit::UserLimitOptions {
            label: self.clients.label.clone(),
            gateways: self.gateways,
            redis_url: self.redis_url,
            namespace: self.redis_namespace,
            limit: self.limit as usize,
            connects: self.connects as usize,
            trials: self.trials,
            concurrent_users: self.concurrent_users,
            user_prefix: self.clients.user_prefix.clone(),
        };
        Ok(vec![BenchResult::UserLimit(
            user_limit::run(self.clients.setup()?, options).await?,
        )])
    }
}
