//! `pulse-auth`: serves `pulse.auth.v1.Auth`, or mints a development token.

use std::{pin::pin, time::Duration};

use clap::{Args, Parser, Subcommand};
use pulse_auth::{ConfigError, KeyArgs, ServeArgs, Validator, mint_token, run};
use pulse_runtime::runtime::{
    exit_with_config_error, init_tracing, parse_or_exit, shutdown_signal,
};
use tokio::{net::TcpListener, sync::oneshot};
use tracing::{error, info, warn};

/// How long in-flight calls may take to finish after a shutdown signal;
/// shorter than Kubernetes' default 30s grace period.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// Pulse's token validation service. Serves by default.
#[derive(Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the gRPC API (the default)
    Serve(ServeArgs),
    /// Print a development token for a user on stdout
    Mint(MintArgs),
}

#[derive(Args)]
struct MintArgs {
    /// The token's subject (`sub`)
    #[arg(long)]
    user: String,
    /// How long the token is valid
    #[arg(long, default_value = "1h")]
    ttl: humantime::Duration,
    #[command(flatten)]
    keys: KeyArgs,
}

#[tokio::main]
async fn main() {
    // A parse error is one line naming the flag, exit 2, like every other bad setting.
    let cli: Cli = parse_or_exit();
    match cli.command {
        Some(Command::Mint(mint)) => {
            let secret = mint.keys.signing_secret().unwrap_or_else(|e| exit(&e));
            println!("{}", mint_token(&secret, &mint.user, *mint.ttl));
        }
        Some(Command::Serve(serve)) => serve_until_signal(serve).await,
        None => serve_until_signal(cli.serve).await,
    }
}

async fn serve_until_signal(args: ServeArgs) {
    init_tracing();
    let settings = args.keys.validator_settings().unwrap_or_else(|e| exit(&e));
    let validator = Validator::new(settings).unwrap_or_else(|e| exit(&e));
    let listener = TcpListener::bind(args.listen)
        .await
        .unwrap_or_else(|source| {
            exit(&ConfigError::Bind {
                addr: args.listen,
                source,
            })
        });
    let metrics = pulse_runtime::metrics::install();
    let metrics_listener = pulse_runtime::metrics::bind(args.metrics_listen)
        .await
        .unwrap_or_else(|error| exit_with_config_error(&error));
    if let Ok(metrics_addr) = metrics_listener.local_addr() {
        info!(%metrics_addr, "serving metrics");
    }
    let addr = listener.local_addr().unwrap_or(args.listen);
    info!(%addr, "pulse-auth listening");

    // The signal both starts the drain and starts the clock on it.
    let (signalled_tx, signalled_rx) = oneshot::channel();
    let (stop_metrics, metrics_stopped) = oneshot::channel::<()>();
    tokio::spawn(pulse_runtime::metrics::serve(
        metrics_listener,
        metrics,
        async move {
            let _ = metrics_stopped.await;
        },
    ));
    let shutdown = async move {
        shutdown_signal().await;
        let _ = signalled_tx.send(());
        let _ = stop_metrics.send(());
    };
    let mut server = pin!(run(validator, listener, shutdown));
    let result = tokio::select! {
        result = &mut server => result,
        Ok(()) = signalled_rx => match tokio::time::timeout(DRAIN_DEADLINE, &mut server).await {
            Ok(result) => result,
            Err(_) => {
                warn!(deadline = ?DRAIN_DEADLINE, "drain deadline passed, closing open calls");
                Ok(())
            }
        },
    };
    match result {
        Ok(()) => info!("pulse-auth stopped"),
        Err(err) => {
            error!(error = %err, "pulse-auth server failed");
            std::process::exit(1);
        }
    }
}

fn exit(err: &ConfigError) -> ! {
    exit_with_config_error(err)
}
