//! `connect`: a burst of authenticated connections at a target rate, held idle
//! while the server's memory and CPU are read.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    sync::{Semaphore, mpsc},
    time::{Instant, sleep, sleep_until},
};
use tokio_util::sync::CancellationToken;

use super::{ClientSetup, due, open};
use crate::{
    procfs::{CpuMark, Process, cpu_percent, machine_busy},
    result::ConnectResult,
    stats::{Samples, round3},
};

/// What the `connect` scenario is asked to do.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Which server and configuration, for the result.
    pub label: String,
    /// The server's address.
    pub server: SocketAddr,
    /// The server's pid, to read its RSS and CPU; figures are `null` without it.
    pub server_pid: Option<u32>,
    /// Other processes whose CPU during the burst is reported (Redis, `pulse-auth`), by name.
    pub watch_pids: Vec<(String, u32)>,
    /// How many connections to open and hold.
    pub connections: usize,
    /// Connections started per second.
    pub rate: f64,
    /// At most this many connections between TCP connect and first message.
    pub max_inflight: usize,
    /// User ids are this prefix and a number.
    pub user_prefix: String,
    /// Distinct users, shared round robin; every connection its own user when 0.
    pub users: usize,
    /// Pause after the burst before memory is read.
    pub settle: Duration,
    /// How long the server's CPU is watched with every connection idle.
    pub idle_window: Duration,
}

struct Outcome {
    result: Result<Duration, String>,
    /// When the first message arrived (or the attempt failed).
    at: Instant,
    /// When the schedule said the connection should start.
    due: Instant,
}

/// Runs the scenario and returns its figures, printing progress lines.
pub async fn run(setup: ClientSetup, options: ConnectOptions) -> anyhow::Result<ConnectResult> {
    let count = options.connections;
    let users = if options.users == 0 {
        count
    } else {
        options.users
    };
    println!(
        "connect [{}]: minting {count} tokens for {users} users",
        options.label
    );
    let paths: Vec<String> = (0..users)
        .map(|user| setup.path_for(&format!("{}-{user}", options.user_prefix)))
        .collect();
    let paths = Arc::new(paths);
    let setup = Arc::new(setup);
    let server = options.server_pid.map(Process::Pid);

    let server_rss_before = server.map(Process::rss_kib).transpose()?;
    let server_cpu_before = server.map(CpuMark::now).transpose()?;
    let client_rss_before = Process::OwnProcess.rss_kib()?;
    let client_cpu_before = CpuMark::now(Process::OwnProcess)?;
    let machine_before = machine_busy()?;
    let others_before = options
        .watch_pids
        .iter()
        .map(|(name, pid)| Ok((name.clone(), CpuMark::now(Process::Pid(*pid))?)))
        .collect::<std::io::Result<Vec<_>>>()?;

    println!(
        "connect [{}]: opening {count} connections at {}/s from {} source addresses",
        options.label,
        options.rate,
        setup.sources.len().max(1)
    );
    let stop = CancellationToken::new();
    let dropped = Arc::new(AtomicU64::new(0));
    let inflight = Arc::new(Semaphore::new(options.max_inflight.max(1)));
    let (outcomes_tx, mut outcomes) = mpsc::unbounded_channel();
    let start = Instant::now();
    for index in 0..count {
        let due_at = due(start, index as u64, options.rate);
        sleep_until(due_at).await;
        let permit = inflight.clone().acquire_owned().await?;
        let (setup, paths, stop, dropped, outcomes_tx) = (
            setup.clone(),
            paths.clone(),
            stop.clone(),
            dropped.clone(),
            outcomes_tx.clone(),
        );
        let server = options.server;
        tokio::spawn(async move {
            let path = &paths[index % paths.len()];
            let opened = open(&setup, server, index, path).await;
            drop(permit);
            let at = Instant::now();
            let mut conn = match opened {
                Ok(opened) => {
                    let _ = outcomes_tx.send(Outcome {
                        result: Ok(opened.latency),
                        at,
                        due: due_at,
                    });
                    opened.conn
                }
                Err(reason) => {
                    let _ = outcomes_tx.send(Outcome {
                        result: Err(reason),
                        at,
                        due: due_at,
                    });
                    return;
                }
            };
            drop(outcomes_tx);
            // Hold: keep reading so that heartbeats are answered, until told to stop.
            tokio::select! {
                () = stop.cancelled() => {}
                _ = async { while let Ok(Some(_)) = conn.next_text().await {} } => {
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    drop(outcomes_tx);

    let mut handshake = Samples::with_capacity(count);
    let mut from_schedule = Samples::with_capacity(count);
    let mut failures = BTreeMap::<String, u64>::new();
    let mut last_connected = start;
    while let Some(outcome) = outcomes.recv().await {
        match outcome.result {
            Ok(latency) => {
                handshake.record(latency);
                from_schedule.record(outcome.at.duration_since(outcome.due));
                last_connected = last_connected.max(outcome.at);
            }
            Err(reason) => *failures.entry(reason).or_default() += 1,
        }
    }
    let burst = last_connected.duration_since(start);
    let connected = handshake.len() as u64;
    let server_cpu_after_burst = server.map(CpuMark::now).transpose()?;
    let client_cpu_after_burst = CpuMark::now(Process::OwnProcess)?;
    let machine_after_burst = machine_busy()?;
    let mut others_cpu = Vec::with_capacity(others_before.len());
    for ((name, before), (_, pid)) in others_before.iter().zip(&options.watch_pids) {
        others_cpu.push((
            name.clone(),
            before.cpu_until(&CpuMark::now(Process::Pid(*pid))?),
        ));
    }
    // Whatever else ran during the burst: the machine's busy time less the
    // processes this run knows of. Other people's builds show up here.
    let known = server_cpu_before
        .zip(server_cpu_after_burst)
        .map_or(Duration::ZERO, |(before, after)| before.cpu_until(&after))
        + client_cpu_before.cpu_until(&client_cpu_after_burst)
        + others_cpu.iter().map(|(_, cpu)| *cpu).sum::<Duration>();
    let elapsed = start.elapsed();
    let foreign_cpu_percent = round3(cpu_percent(
        machine_after_burst
            .saturating_sub(machine_before)
            .saturating_sub(known),
        elapsed,
    ));
    if foreign_cpu_percent > 10.0 {
        println!(
            "connect [{}]: warning: other processes used {foreign_cpu_percent} % of a core during the burst",
            options.label
        );
    }
    let rate_achieved = if burst.is_zero() {
        0.0
    } else {
        connected as f64 / burst.as_secs_f64()
    };
    let summary = handshake.summary();
    let scheduled = from_schedule.summary();
    println!(
        "connect [{}]: {connected}/{count} connected in {:.2} s: {rate_achieved:.0}/s (target {}/s); failures {failures:?}",
        options.label,
        burst.as_secs_f64(),
        options.rate
    );
    println!(
        "connect [{}]: handshake+auth p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
        options.label, summary.p50_ms, summary.p90_ms, summary.p99_ms, summary.max_ms
    );
    println!(
        "connect [{}]: from the schedule (open loop, waiting for an in-flight slot included) p50 {} ms, p99 {} ms",
        options.label, scheduled.p50_ms, scheduled.p99_ms
    );

    sleep(options.settle).await;
    let per_connection = |before: u64, after: u64| {
        if connected == 0 {
            0.0
        } else {
            round3((after as f64 - before as f64) / connected as f64)
        }
    };
    let server_rss_after = server.map(Process::rss_kib).transpose()?;
    let client_rss_after = Process::OwnProcess.rss_kib()?;
    let server_rss_per_connection = server_rss_before
        .zip(server_rss_after)
        .map(|(before, after)| per_connection(before, after));
    if let (Some(before), Some(after), Some(each)) = (
        server_rss_before,
        server_rss_after,
        server_rss_per_connection,
    ) {
        println!(
            "connect [{}]: server RSS {before} KiB -> {after} KiB: {each} KiB per connection",
            options.label
        );
    }

    let mut server_idle_cpu = None;
    if !options.idle_window.is_zero() {
        println!(
            "connect [{}]: holding {connected} idle connections for {} s",
            options.label,
            options.idle_window.as_secs_f64()
        );
        let idle_start = server.map(CpuMark::now).transpose()?;
        sleep(options.idle_window).await;
        let idle_end = server.map(CpuMark::now).transpose()?;
        server_idle_cpu = idle_start
            .zip(idle_end)
            .map(|(start, end)| round3(start.percent_of_core_until(&end)));
        if let Some(percent) = server_idle_cpu {
            println!(
                "connect [{}]: server idle CPU {percent} % of one core",
                options.label
            );
        }
    }
    let dropped_while_held = dropped.load(Ordering::Relaxed);
    if dropped_while_held > 0 {
        println!(
            "connect [{}]: {dropped_while_held} connections were closed by the server while held",
            options.label
        );
    }
    stop.cancel();

    let micros_per_connection = |cpu: Duration| {
        if connected == 0 {
            0.0
        } else {
            round3(cpu.as_secs_f64() * 1e6 / connected as f64)
        }
    };
    Ok(ConnectResult {
        label: options.label,
        client: setup.kind.name().to_owned(),
        connections_target: count as u64,
        connected,
        failures,
        sources: setup.sources.len() as u32,
        rate_target: options.rate,
        rate_achieved: round3(rate_achieved),
        max_inflight: options.max_inflight as u64,
        foreign_cpu_percent,
        handshake: summary,
        handshake_from_schedule: scheduled,
        server_cpu_us_per_connection: server_cpu_before
            .zip(server_cpu_after_burst)
            .map(|(before, after)| micros_per_connection(before.cpu_until(&after))),
        server_rss_before_kib: server_rss_before,
        server_rss_after_kib: server_rss_after,
        server_rss_per_connection_kib: server_rss_per_connection,
        idle_window_s: options.idle_window.as_secs_f64(),
        server_idle_cpu_percent: server_idle_cpu,
        dropped_while_held,
        other_cpu_us_per_connection: others_cpu
            .into_iter()
            .map(|(name, cpu)| (name, micros_per_connection(cpu)))
            .collect(),
        client_cpu_us_per_connection: micros_per_connection(
            client_cpu_before.cpu_until(&client_cpu_after_burst),
        ),
        client_rss_per_connection_kib: per_connection(client_rss_before, client_rss_after),
        other_instances_connections: None,
    })
}
