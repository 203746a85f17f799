//! `pulse-gateway`: parse settings, bind, serve `/ws` until SIGTERM or Ctrl-C, drain.

use std::io::Read;

use pulse_gateway::{
    Gateway,
    config::{Command, Config},
};
use pulse_runtime::runtime::{
    exit_with_config_error, init_tracing, parse_or_exit, shutdown_signal,
};
use tracing::{info, warn};

/// jemalloc keeps small long-lived allocations (a connection's state) apart
/// from the large short-lived ones (a handshake's buffers), so idle sockets
/// do not pin the pages a burst of handshakes left behind. Its options are
/// built in (`.cargo/config.toml`): a background thread returns pages freed
/// after a burst within about a second; `_RJEM_MALLOC_CONF` overrides them.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() {
    let config: Config = parse_or_exit();
    if let Some(Command::HashPassword) = config.command {
        let mut password = String::new();
        if let Err(error) = std::io::stdin().read_to_string(&mut password) {
            exit_with_config_error(&format!("reading the password from stdin: {error}"));
        }
        println!(
            "{}",
            pulse_gateway::login::hash_password(password.trim_end_matches(['\r', '\n']))
        );
        return;
    }

    init_tracing();
    let metrics = pulse_runtime::metrics::install();
    let mut built = match config.build() {
        Ok(built) => built,
        Err(error) => exit_with_config_error(&error),
    };
    built.settings.metrics = Some(metrics);
    let listener = match bind(built.listen) {
        Ok(listener) => listener,
        Err(error) => exit_with_config_error(&format!(
            "--listen / LISTEN_ADDR: cannot listen on {}: {error}",
            built.listen
        )),
    };
    let admin = match built.admin_listen {
        Some(admin) => match tokio::net::TcpListener::bind(admin).await {
            Ok(listener) => Some(listener),
            Err(error) => exit_with_config_error(&format!(
                "--admin-listen / ADMIN_LISTEN: cannot listen on {admin}: {error}"
            )),
        },
        None => None,
    };
    let addr = listener.local_addr().unwrap_or(built.listen);
    let admin_addr = admin.as_ref().and_then(|admin| admin.local_addr().ok());
    info!(
        %addr,
        admin_addr = admin_addr.map(tracing::field::display),
        instance_id = %built.settings.instance_id,
        dev_login = built.settings.dev_login.is_some(),
        "pulse-gateway listening"
    );
    let mut gateway = Gateway::new(built.settings, built.auth, built.presence);
    if let Some(admin) = admin {
        gateway = gateway.with_admin_listener(admin);
    }
    // On a worker thread, not in `main`'s `block_on`: the accept loop then
    // spawns each connection's task into its own worker's queue instead of
    // injecting it from outside and waking a worker every time.
    let served = tokio::spawn(gateway.serve(listener, shutdown_signal()))
        .await
        .unwrap_or_else(|error| Err(std::io::Error::other(error)));
    match served {
        Ok(report) if report.completed => {
            info!(
                closed = report.open_at_shutdown,
                "drained, every socket closed"
            );
        }
        Ok(report) => {
            warn!(
                open = report.open_at_shutdown,
                "drain timed out; remaining sockets dropped"
            );
        }
        Err(error) => {
            eprintln!("error: {error}");
            std::process::exit(1);
        }
    }
}

/// Binds with a deep accept backlog: tokio's default of 128 drops SYNs during
/// a reconnect storm, and each dropped one waits a second to be retried.
fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}
