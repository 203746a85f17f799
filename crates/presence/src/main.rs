//! `pulse-presence`: the presence gRPC service over Redis.

use std::net::SocketAddr;

use clap::{Parser, error::ErrorKind};
use pulse_presence::{Presence, RedisOptions};
use pulse_protocol::runtime::{exit_with_config_error, init_tracing, shutdown_signal};
use tokio::net::TcpListener;
use tracing::{error, info};

/// Settings; every flag also reads its environment variable.
#[derive(Debug, Parser)]
#[command(
    name = "pulse-presence",
    version,
    about = "Pulse's presence gRPC service"
)]
struct Config {
    /// The address to serve gRPC on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:50052")]
    listen: SocketAddr,
    /// The Redis that holds presence state; with `--redis-cluster`,
    /// comma-separated URLs of Redis Cluster nodes.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// `--redis-url` names Redis Cluster nodes (seeds; one is enough, more
    /// survive a node being down) instead of one Redis.
    #[arg(long, env = "REDIS_CLUSTER")]
    redis_cluster: bool,
    /// The prefix of every Redis key and channel (shared with the gateways).
    #[arg(long, env = "REDIS_NAMESPACE", default_value = "pulse")]
    redis_namespace: String,
    /// Where to serve Prometheus metrics (`GET /metrics`).
    #[arg(long, env = "METRICS_LISTEN", default_value = "0.0.0.0:9092")]
    metrics_listen: SocketAddr,
    /// How often to reap instances whose lease expired (died without saying goodbye).
    #[arg(long, env = "REAP_INTERVAL", default_value = "1s")]
    reap_interval: humantime::Duration,
}

#[tokio::main]
async fn main() {
    let config = Config::try_parse().unwrap_or_else(|error| match error.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => error.exit(),
        // clap names the flag in its first line; the rest is a usage hint.
        _ => {
            let text = error.to_string();
            let line = text.lines().next().unwrap_or_default();
            exit_with_config_error(&line.trim_start_matches("error: "))
        }
    });
    init_tracing();
    if config.reap_interval.is_zero() {
        exit_with_config_error(&"--reap-interval / REAP_INTERVAL: must be greater than zero");
    }

    if !config.redis_cluster && config.redis_url.contains(',') {
        exit_with_config_error(
            &"--redis-url / REDIS_URL: several URLs name Redis Cluster nodes; set --redis-cluster / REDIS_CLUSTER",
        );
    }
    let mut options = RedisOptions::new(&config.redis_url).with_namespace(&config.redis_namespace);
    options.cluster = config.redis_cluster;
    let presence = match Presence::redis(options) {
        Ok(presence) => presence,
        // The message names the setting; the URL itself may hold a password.
        Err(error) => exit_with_config_error(&format!("--redis-url / REDIS_URL: {error}")),
    };
    let listener = match TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(error) => exit_with_config_error(&format!("--listen {}: {error}", config.listen)),
    };
    let metrics = pulse_protocol::metrics::install();
    let metrics_listener = pulse_protocol::metrics::bind(config.metrics_listen)
        .await
        .unwrap_or_else(|error| exit_with_config_error(&error));
    if let Ok(metrics_addr) = metrics_listener.local_addr() {
        info!(%metrics_addr, "serving metrics");
    }
    let addr = listener.local_addr().unwrap_or(config.listen);
    info!(%addr, namespace = %config.redis_namespace, cluster = config.redis_cluster, "pulse-presence listening");

    // One signal stops both the gRPC server and the reaper.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let reaper = tokio::spawn(pulse_presence::run_reaper(
        presence.clone(),
        config.reap_interval.into(),
        async move {
            let mut stopped = stopped;
            let _ = stopped.wait_for(|stop| *stop).await;
        },
    ));
    let mut metrics_stopped = stop.subscribe();
    tokio::spawn(pulse_protocol::metrics::serve(
        metrics_listener,
        metrics,
        async move {
            let _ = metrics_stopped.wait_for(|stop| *stop).await;
        },
    ));
    let shutdown = async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    };
    let served = pulse_presence::run(presence, listener, shutdown).await;
    let _ = reaper.await;
    match served {
        Ok(()) => info!("pulse-presence stopped"),
        Err(error) => {
            error!(%error, "pulse-presence failed");
            std::process::exit(1);
        }
    }
}
