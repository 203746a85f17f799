//! `pulse-presence`: the presence gRPC service over Redis.

use pulse_presence::config::{Config, HttpListen};
use pulse_runtime::runtime::{
    exit_with_config_error, init_tracing, parse_or_exit, shutdown_signal,
};
use tokio::net::TcpListener;
use tracing::{error, info};

/// jemalloc, as in the gateway: every API call allocates and frees its
/// request, frame and answer across worker threads, where glibc's malloc
/// spent a tenth of the service's CPU (a profile at 5,000 publishes/s).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() {
    let config: Config = parse_or_exit();
    init_tracing();
    // The API settings first: building the backend starts its bus, which
    // would log before a bad key setting stopped the start.
    let mut api = config
        .api
        .api_config()
        .unwrap_or_else(|error| exit_with_config_error(&error));
    api.namespaces = std::sync::Arc::new(
        config
            .namespaces()
            .unwrap_or_else(|error| exit_with_config_error(&error)),
    );
    let targets = api
        .namespaces
        .webhooks
        .as_ref()
        .map(|webhooks| webhooks.targets())
        .transpose()
        .unwrap_or_else(|error| {
            exit_with_config_error(&format!("--config / PULSE_CONFIG: {error}"))
        })
        .unwrap_or_default();
    let presence = config
        .presence()
        .unwrap_or_else(|error| exit_with_config_error(&error));
    if let Some(history) = api.namespaces.personal.history() {
        presence.set_personal_history(history);
    }
    let listener = match TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(error) => exit_with_config_error(&format!("--listen {}: {error}", config.listen)),
    };
    let http_listener = match config.http_listen {
        HttpListen::Off => None,
        HttpListen::On(addr) => match TcpListener::bind(addr).await {
            Ok(listener) => Some(listener),
            Err(error) => exit_with_config_error(&format!("--http-listen {addr}: {error}")),
        },
    };
    let metrics = pulse_runtime::metrics::install();
    let metrics_listener = pulse_runtime::metrics::bind(config.metrics_listen)
        .await
        .unwrap_or_else(|error| exit_with_config_error(&error));
    if let Ok(metrics_addr) = metrics_listener.local_addr() {
        info!(%metrics_addr, "serving metrics");
    }
    let addr = listener.local_addr().unwrap_or(config.listen);
    info!(
        %addr,
        namespace = %config.redis_namespace,
        cluster = config.redis_cluster,
        tls = api.tls.is_some(),
        "pulse-presence listening"
    );

    // One signal stops the gRPC server, the reaper and the metrics server.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }
    };
    tokio::spawn({
        let presence = presence.clone();
        async move { presence.warn_if_redis_evicts().await }
    });
    let reaper = tokio::spawn(pulse_presence::run_reaper(
        presence.clone(),
        config.reap_interval.into(),
        stopped(),
    ));
    for target in &targets {
        info!(target = %target.name, url = %target.url, events = ?target.events, "webhook target");
    }
    let webhooks = tokio::spawn(pulse_presence::webhooks::run_webhooks(
        presence.clone(),
        targets,
        stopped(),
    ));
    let trimmer = tokio::spawn(pulse_presence::event_log::run_trimmer(
        presence.clone(),
        stopped(),
    ));
    tokio::spawn(pulse_runtime::metrics::serve(
        metrics_listener,
        metrics,
        stopped(),
    ));
    let http = http_listener.map(|listener| {
        if let Ok(http_addr) = listener.local_addr() {
            info!(%http_addr, tls = api.http_tls.is_some(), "serving the HTTP API");
        }
        tokio::spawn(pulse_presence::run_http(
            presence.clone(),
            api.clone(),
            listener,
            stopped(),
        ))
    });
    let shutdown = async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    };
    let served = pulse_presence::run(presence, api, listener, shutdown).await;
    let _ = reaper.await;
    let _ = trimmer.await;
    let _ = webhooks.await;
    if let Some(http) = http {
        let _ = http.await;
    }
    match served {
        Ok(()) => info!("pulse-presence stopped"),
        Err(error) => {
            error!(%error, "pulse-presence failed");
            std::process::exit(1);
        }
    }
}
