//! `pulse-echo`: the benchmark's floor, a bare hyper + fastwebsockets echo
//! server at `/ws`. Reports its address in a `listening` log line like the
//! gateway's (`LOG_FORMAT=json` for JSON).

use std::net::SocketAddr;

use clap::Parser;
use pulse_runtime::runtime::{init_tracing, parse_or_exit, shutdown_signal};
use tracing::info;

/// A bare WebSocket echo server: the floor Pulse is measured against.
#[derive(Parser)]
#[command(name = "pulse-echo", version, about)]
struct Config {
    /// Address to listen on for WebSockets (`/ws`).
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() {
    let config: Config = parse_or_exit();
    init_tracing();
    let listener = pulse_bench::bind_or_exit(config.listen).await;
    let addr = listener.local_addr().unwrap_or(config.listen);
    info!(%addr, "pulse-echo listening");
    if let Err(error) = pulse_bench::echo::run(listener, shutdown_signal()).await {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
    info!("pulse-echo stopped");
}
