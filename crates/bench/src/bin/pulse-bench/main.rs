//! `pulse-bench`: runs one scenario against running servers and prints human
//! lines plus one `RESULT {json}` line, or writes the report.

use std::{net::Ipv4Addr, net::SocketAddr, path::PathBuf, time::Duration};

mod channels;
mod events;
mod history;
mod user_limit;
mod write_report;

use clap::{Args, Parser, Subcommand};
use pulse_bench::{
    client::ClientKind,
    report::RunInfo,
    result::BenchResult,
    scenario::{
        ClientSetup, connect, ensure_loopback, fleet, loopback_sources, ping, presence, send,
    },
};

/// Pulse's load generator.
#[derive(Parser)]
#[command(name = "pulse-bench", version, about)]
struct Cli {
    /// Tokio worker threads for the load generator (it shares the cores with the servers).
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    /// The most a scenario may run before it is abandoned.
    #[arg(long, global = true, default_value = "5m")]
    time_limit: humantime::Duration,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Opens connections at a rate, holds them idle, reads the server's RSS and CPU.
    Connect {
        #[command(flatten)]
        clients: Clients,
        /// The server (`pulse-gateway` or `pulse-echo`).
        #[arg(long)]
        server: SocketAddr,
        /// The server's pid, for its RSS and CPU.
        #[arg(long)]
        server_pid: Option<u32>,
        /// Another process whose CPU during the burst to report, as NAME=PID
        /// (`redis=1234`); repeatable.
        #[arg(long = "watch-pid", value_parser = parse_named_pid)]
        watch_pids: Vec<(String, u32)>,
        /// Connections to open and hold.
        #[arg(long, default_value_t = 19_500)]
        connections: usize,
        /// Connections started per second.
        #[arg(long, default_value_t = 15_000.0)]
        rate: f64,
        /// At most this many connections between TCP connect and first message
        /// at once. The default matches the accept backlog both servers get from
        /// tokio (128): more overflows the kernel's accept queue in a burst, and
        /// each dropped handshake then waits out a 1 s SYN retransmit.
        #[arg(long, default_value_t = 128)]
        max_inflight: usize,
        /// Distinct users, shared round robin (0: one per connection).
        #[arg(long, default_value_t = 0)]
        users: usize,
        /// Pause after the burst before memory is read.
        #[arg(long, default_value = "2s")]
        settle: humantime::Duration,
        /// How long the server's idle CPU is watched.
        #[arg(long, default_value = "30s")]
        idle_window: humantime::Duration,
    },
    /// Application ping round trips at a fixed rate.
    Ping {
        #[command(flatten)]
        clients: Clients,
        /// The server.
        #[arg(long)]
        server: SocketAddr,
        /// Connections the pings are spread over.
        #[arg(long, default_value_t = 50)]
        connections: usize,
        /// Pings per second, in total.
        #[arg(long, default_value_t = 1_000.0)]
        rate: f64,
        /// How long to ping for.
        #[arg(long, default_value = "10s")]
        duration: humantime::Duration,
    },
    /// `Presence/Send` to users with a socket on each gateway; delivery latency.
    Send {
        #[command(flatten)]
        clients: Clients,
        /// A gateway; give it once per gateway.
        #[arg(long = "gateway", required = true)]
        gateways: Vec<SocketAddr>,
        /// The `pulse-presence` gRPC address.
        #[arg(long)]
        presence: SocketAddr,
        /// The API key for `pulse-presence` (`publish` / `presence:read`).
        #[arg(long, env = "PULSE_API_KEY", hide_env_values = true)]
        api_key: String,
        /// Users sent to, round robin.
        #[arg(long, default_value_t = 100)]
        users: usize,
        /// Send calls per second.
        #[arg(long, default_value_t = 1_000.0)]
        rate: f64,
        /// How long to send for.
        #[arg(long, default_value = "10s")]
        duration: humantime::Duration,
    },
    /// `connect` against a gateway after registering other instances'
    /// connections in its Redis namespace: its memory should not depend on them.
    Fleet {
        #[command(flatten)]
        clients: Clients,
        /// The gateway.
        #[arg(long)]
        server: SocketAddr,
        /// The gateway's pid, for its RSS.
        #[arg(long)]
        server_pid: Option<u32>,
        /// The gateway's Redis.
        #[arg(long)]
        redis_url: String,
        /// The gateway's Redis namespace.
        #[arg(long)]
        redis_namespace: String,
        /// Connections other instances hold.
        #[arg(long, default_value_t = 50_000)]
        others: usize,
        /// How many other instances hold them.
        #[arg(long, default_value_t = 19)]
        instances: usize,
        /// The gateway's own connections.
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// Own connections started per second.
        #[arg(long, default_value_t = 5_000.0)]
        rate: f64,
        /// At most this many own connections between TCP connect and first message.
        #[arg(long, default_value_t = 128)]
        max_inflight: usize,
        /// Pause after the burst before memory is read.
        #[arg(long, default_value = "2s")]
        settle: humantime::Duration,
    },
    /// A connect on a gateway to its `connected` event on a `Watch` stream.
    Presence {
        #[command(flatten)]
        clients: Clients,
        /// The gateway.
        #[arg(long)]
        server: SocketAddr,
        /// The `pulse-presence` gRPC address.
        #[arg(long)]
        presence: SocketAddr,
        /// The API key for `pulse-presence` (`publish` / `presence:read`).
        #[arg(long, env = "PULSE_API_KEY", hide_env_values = true)]
        api_key: String,
        /// Connections to open, each for a new user.
        #[arg(long, default_value_t = 2_000)]
        connects: usize,
        /// Connects per second.
        #[arg(long, default_value_t = 200.0)]
        rate: f64,
    },
    /// Publications to channels read by every subscriber: at a fixed rate
    /// (publish to first and last read), then at saturation (deliveries per
    /// second, server CPU and write calls per delivery). One result per phase.
    Fanout(channels::FanoutArgs),
    /// The round trip of a `subscribe` to its `subscribed`, each on a
    /// connection of its own, to a channel of its own.
    Subscribe(channels::SubscribeArgs),
    /// A gateway's RSS with connections and no subscription, then with
    /// several subscriptions each: bytes per subscription.
    Subscriptions(channels::SubscriptionsArgs),
    /// Publish calls at a fixed rate, each timed to its answer: with
    /// history, without, or Redis alone (`RPUSH` + `LTRIM` + `SPUBLISH`),
    /// the floor.
    Publish(history::PublishArgs),
    /// Reconnections to another gateway that recover the publications they
    /// missed with `subscribe` + `since`, beside plain subscribes.
    Recover(history::RecoverArgs),
    /// Redis memory per publication kept in channels' histories.
    HistoryMemory(history::HistoryMemoryArgs),
    /// A `Watch` that reconnects with `since` after missing events, to its
    /// first and last missed event; beside a unary call and a fresh `Watch`.
    WatchResume(events::WatchResumeArgs),
    /// Redis memory per presence event kept in the logs, beside bare `XADD`s.
    EventMemory(events::EventMemoryArgs),
    /// Presence events at a fixed rate to a webhook receiver in this
    /// process, beside the same events on a `Watch` stream.
    Webhooks(events::WebhooksArgs),
    /// One user's sockets at once on several gateways, over and at
    /// `--max-connections-per-user`: exactly the limit must go live, the
    /// rest be refused 4429 `too_many_connections`.
    UserLimit(user_limit::UserLimitArgs),
    /// Writes the tables of `RESULT` lines into BENCHMARKS.md between the markers.
    Report {
        /// Files holding `RESULT` lines (other lines are skipped).
        #[arg(long = "results", required = true)]
        results: Vec<PathBuf>,
        /// The Markdown file to update.
        #[arg(long, default_value = "BENCHMARKS.md")]
        benchmarks: PathBuf,
        /// The command that produced the results.
        #[arg(long, default_value = "scripts/bench.sh")]
        command: String,
        /// The machine, in words.
        #[arg(long, default_value = "")]
        machine: String,
        /// When.
        #[arg(long, default_value = "")]
        date: String,
        /// The load generator's set-up, in words.
        #[arg(long, default_value = "")]
        setup: String,
        /// Write only the history block (issue 13): the other blocks stay
        /// as they were, whatever other results the files hold.
        #[arg(long)]
        only_history: bool,
        /// Write only the presence events block (issue 17).
        #[arg(long, conflicts_with = "only_history")]
        only_events: bool,
        /// Write only the fleet block (issue 15: a gateway's memory beside
        /// the fleet, the per-user limit across gateways).
        #[arg(long, conflicts_with_all = ["only_history", "only_events"])]
        only_fleet: bool,
    },
}

/// How the clients connect.
#[derive(Args)]
struct Clients {
    /// Which result this run is (`echo`, `pulse`, `pulse-grpc-auth`).
    #[arg(long, default_value = "pulse")]
    label: String,
    /// The WebSocket client implementation.
    #[arg(long, value_enum, default_value = "fws")]
    client: ClientKind,
    /// HS256 secret to mint a token per user with; no token without it.
    #[arg(long, env = "JWT_SECRET")]
    jwt_secret: Option<String>,
    /// First local source address; the others follow it.
    #[arg(long, default_value = "127.0.0.1")]
    source_base: Ipv4Addr,
    /// How many local source addresses to spread connections over
    /// (about 28,000 ports each toward one server port).
    #[arg(long, default_value_t = 8)]
    sources: u32,
    /// User ids are this prefix and a number.
    #[arg(long, default_value = "bench")]
    user_prefix: String,
}

impl Clients {
    fn setup(&self) -> anyhow::Result<ClientSetup> {
        Ok(ClientSetup {
            kind: self.client,
            jwt_secret: self.jwt_secret.clone(),
            sources: loopback_sources(self.source_base, self.sources)?,
        })
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Report {
        results,
        benchmarks,
        command,
        machine,
        date,
        setup,
        only_history,
        only_events,
        only_fleet,
    } = cli.command
    {
        return write_report::write_report(
            &results,
            &benchmarks,
            RunInfo {
                command,
                machine,
                date,
                setup,
            },
            write_report::Only {
                history: only_history,
                events: only_events,
                fleet: only_fleet,
            },
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()?;
    let limit: Duration = cli.time_limit.into();
    // The scenario runs on a worker, not in `block_on` on the main thread:
    // there, every connection's task would be injected into the pool with
    // a wake-up of the worker, two threads trading each connect.
    let results = runtime.block_on(async move {
        let scenario = tokio::spawn(tokio::time::timeout(limit, run(cli.command)));
        scenario
            .await
            .map_err(|error| anyhow::anyhow!("the scenario panicked: {error}"))?
            .map_err(|_| anyhow::anyhow!("the scenario ran past --time-limit"))?
    })?;
    for result in results {
        println!("{}", result.to_line());
    }
    // Open sockets and tasks go with the runtime; nothing to drain.
    runtime.shutdown_background();
    Ok(())
}

/// Runs one scenario: one result, or one per phase (`fanout`).
async fn run(command: Command) -> anyhow::Result<Vec<BenchResult>> {
    match command {
        Command::Connect {
            clients,
            server,
            server_pid,
            watch_pids,
            connections,
            rate,
            max_inflight,
            users,
            settle,
            idle_window,
        } => {
            ensure_loopback(server)?;
            let options = connect::ConnectOptions {
                label: clients.label.clone(),
                server,
                server_pid,
                watch_pids,
                connections,
                rate,
                max_inflight,
                user_prefix: clients.user_prefix.clone(),
                users,
                settle: settle.into(),
                idle_window: idle_window.into(),
            };
            Ok(vec![BenchResult::Connect(
                connect::run(clients.setup()?, options).await?,
            )])
        }
        Command::Fleet {
            clients,
            server,
            server_pid,
            redis_url,
            redis_namespace,
            others,
            instances,
            connections,
            rate,
            max_inflight,
            settle,
        } => {
            ensure_loopback(server)?;
            let registered = fleet::register_others(&fleet::FleetOptions {
                redis_url,
                namespace: redis_namespace,
                others,
                instances,
                user_prefix: format!("{}-other", clients.user_prefix),
            })
            .await?;
            let options = connect::ConnectOptions {
                label: clients.label.clone(),
                server,
                server_pid,
                watch_pids: Vec::new(),
                connections,
                rate,
                max_inflight,
                user_prefix: clients.user_prefix.clone(),
                users: 0,
                settle: settle.into(),
                idle_window: Duration::ZERO,
            };
            let mut result = connect::run(clients.setup()?, options).await?;
            result.other_instances_connections = Some(registered);
            Ok(vec![BenchResult::Connect(result)])
        }
        Command::Ping {
            clients,
            server,
            connections,
            rate,
            duration,
        } => {
            ensure_loopback(server)?;
            let options = ping::PingOptions {
                label: clients.label.clone(),
                server,
                connections,
                rate,
                duration: duration.into(),
                user_prefix: clients.user_prefix.clone(),
            };
            Ok(vec![BenchResult::Ping(
                ping::run(clients.setup()?, options).await?,
            )])
        }
        Command::Send {
            clients,
            gateways,
            presence,
            api_key,
            users,
            rate,
            duration,
        } => {
            for gateway in gateways.iter().chain([&presence]) {
                ensure_loopback(*gateway)?;
            }
            let options = send::SendOptions {
                label: clients.label.clone(),
                gateways,
                presence_url: format!("http://{presence}"),
                api_key,
                users,
                rate,
                duration: duration.into(),
                user_prefix: clients.user_prefix.clone(),
            };
            Ok(vec![BenchResult::Send(
                send::run(clients.setup()?, options).await?,
            )])
        }
        Command::Presence {
            clients,
            server,
            presence,
            api_key,
            connects,
            rate,
        } => {
            ensure_loopback(server)?;
            ensure_loopback(presence)?;
            let options = presence::PresenceOptions {
                label: clients.label.clone(),
                server,
                presence_url: format!("http://{presence}"),
                api_key,
                connects,
                rate,
                user_prefix: clients.user_prefix.clone(),
            };
            Ok(vec![BenchResult::Presence(
                presence::run(clients.setup()?, options).await?,
            )])
        }
        Command::Fanout(args) => args.run().await,
        Command::Subscribe(args) => args.run().await,
        Command::Subscriptions(args) => args.run().await,
        Command::Publish(args) => args.run().await,
        Command::Recover(args) => args.run().await,
        Command::HistoryMemory(args) => args.run().await,
        Command::WatchResume(args) => args.run().await,
        Command::EventMemory(args) => args.run().await,
        Command::Webhooks(args) => args.run().await,
        Command::UserLimit(args) => args.run().await,
        Command::Report { .. } => unreachable!("handled before the runtime starts"),
    }
}

fn parse_named_pid(text: &str) -> Result<(String, u32), String> {
    let (name, pid) = text
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=PID, got {text:?}"))?;
    let pid = pid
        .parse()
        .map_err(|error| format!("pid {pid:?}: {error}"))?;
    Ok((name.to_owned(), pid))
}
