//! What every Pulse binary does the same way: logging, the shutdown signal and
//! start-up errors that name the bad setting on one line.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Installs the global `tracing` subscriber: `RUST_LOG` filters (default
/// `info`), and `LOG_FORMAT=json` switches to one JSON object per line.
pub fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|format| format.eq_ignore_ascii_case("json"));
    let registry = tracing_subscriber::registry().with(filter);
    if json {
        registry
            .with(fmt::layer().json().flatten_event(true))
            .init();
    } else {
        registry.with(fmt::layer()).init();
    }
}

/// Completes on SIGTERM (what Kubernetes sends) or Ctrl-C, whichever comes first.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("received Ctrl-C, shutting down"),
        () = terminate => tracing::info!("received SIGTERM, shutting down"),
    }
}

/// Prints a start-up error as one line on stderr and exits with status 2.
///
/// Binaries call this for a bad setting so that an operator reads one line
/// naming the setting, never a panic trace.
pub fn exit_with_config_error(error: &dyn std::fmt::Display) -> ! {
    eprintln!("error: {error}");
    std::process::exit(2)
}

/// Parses the command line (with environment fallbacks) or exits.
///
/// `--help` and `--version` print as usual; any other error prints clap's
/// message on one line, naming the setting, and exits with status 2.
pub fn parse_or_exit<C: clap::Parser>() -> C {
    match C::try_parse() {
        Ok(config) => config,
        Err(error) if !error.use_stderr() => {
            // --help / --version: print them, successfully.
            let _ = error.print();
            std::process::exit(0)
        }
        Err(error) => {
            // clap's message runs until the first blank line (the usage hint
            // follows it); fold it into one line so the setting stays named.
            let rendered = error.to_string();
            let line: Vec<&str> = rendered
                .lines()
                .take_while(|line| !line.trim().is_empty())
                .map(str::trim)
                .collect();
            eprintln!("{}", line.join(" "));
            std::process::exit(2)
        }
    }
}

/// The process's environment variables whose names and values are UTF-8
/// (`std::env::vars` panics on any other; a setting never is one).
pub fn env_vars() -> impl Iterator<Item = (String, String)> {
    std::env::vars_os()
        .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)))
}
