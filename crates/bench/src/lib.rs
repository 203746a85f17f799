//! Pulse's load generator and its floor.
//!
//! `pulse-bench` drives a running gateway (or the `pulse-echo` floor) through
//! the scenarios of `scripts/bench.sh`: a burst of authenticated connections
//! held idle while the server's memory and CPU are read (`connect`),
//! application ping round trips (`ping`), `Presence/Send` delivery across
//! gateways (`send`), presence propagation to a `Watch` stream
//! (`presence`), a gateway's memory while other instances hold many
//! connections (`fleet`), the per-user connection limit when one user
//! connects to several gateways at once (`user-limit`), and channels (issue 12): publications fanned out
//! to many subscribers or spread over many channels (`fanout`), the
//! subscribe round trip (`subscribe`), and the memory a subscription costs
//! (`subscriptions`); and history (issue 13): the publish call with and
//! without history and Redis alone (`publish`), a reconnection that
//! recovers what it missed (`recover`), and Redis memory per stored
//! publication (`history-memory`). Each prints human lines and one `RESULT {json}` line
//! (`fanout` one per phase); `report` turns those lines into the tables of
//! `BENCHMARKS.md`.
//!
//! The load generator shares the machine's cores with the servers it
//! measures, so it is built to be light: a small tokio runtime, fastwebsockets
//! framing straight on the `TcpStream`, no per-connection logging, every
//! sample kept in one `Vec` per task. Traffic goes to loopback only, and every
//! scenario is bounded in count and time.
//!
//! `pulse-echo` is the floor: a bare hyper + fastwebsockets echo server (see
//! [`echo`]); `pulse-fanout` is the floor of channel fan-out, the same stack
//! writing one encoded frame to every subscriber (see [`fanout_floor`]).

#![forbid(unsafe_code)]

pub mod client;
pub mod echo;
pub mod fanout_floor;
pub mod procfs;
pub mod report;
pub mod result;
pub mod scenario;
pub mod stats;

/// The floors' listener on `listen`, or the process ends with one line
/// naming the setting.
pub async fn bind_or_exit(listen: std::net::SocketAddr) -> tokio::net::TcpListener {
    match tokio::net::TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(error) => pulse_runtime::runtime::exit_with_config_error(&format!(
            "--listen / LISTEN_ADDR: cannot listen on {listen}: {error}"
        )),
    }
}
