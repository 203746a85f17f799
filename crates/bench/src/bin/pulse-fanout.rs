//! `pulse-fanout`: the floor of channel fan-out, a bare hyper +
//! fastwebsockets server whose sockets subscribe to channels and which
//! writes each `POST /publish` to every subscriber (see
//! `pulse_bench::fanout_floor`). Reports its address in a `listening` log
//! line like the gateway's (`LOG_FORMAT=json` for JSON).

use std::net::SocketAddr;

use clap::Parser;
use pulse_bench::fanout_floor::{self, FloorOptions};
use pulse_runtime::runtime::{init_tracing, parse_or_exit, shutdown_signal};
use tracing::info;

/// jemalloc, as in the gateway, so that the floor and Pulse differ in their
/// code and not in their allocator.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A bare WebSocket fan-out server: the floor Pulse's channels are measured against.
#[derive(Parser)]
#[command(name = "pulse-fanout", version, about)]
struct Config {
    /// Address for WebSockets (`/ws`) and the trigger (`POST /publish`).
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Write every frame waiting for a socket in one vectored write, instead
    /// of one write per frame.
    #[arg(long)]
    coalesce: bool,
    /// The publisher writes a frame itself to a socket with nothing
    /// waiting, instead of waking the socket's task.
    #[arg(long)]
    direct: bool,
    /// Frames that may wait for one socket; one more closes it (the
    /// gateway's `--outbound-queue`).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    queue: u32,
}

#[tokio::main]
async fn main() {
    let config: Config = parse_or_exit();
    init_tracing();
    let listener = pulse_bench::bind_or_exit(config.listen).await;
    let addr = listener.local_addr().unwrap_or(config.listen);
    info!(%addr, coalesce = config.coalesce, direct = config.direct, "pulse-fanout listening");
    let options = FloorOptions {
        coalesce: config.coalesce,
        direct: config.direct,
        queue: config.queue as usize,
    };
    if let Err(error) = fanout_floor::run(listener, options, shutdown_signal()).await {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
    info!("pulse-fanout stopped");
}
