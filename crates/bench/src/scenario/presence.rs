//! `presence`: how long a connect on a gateway takes to show up as a
//! `connected` event on a `Watch` stream of `pulse-presence`.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::StreamExt;
use pulse_protocol::proto::presence::v1::{
    EventKind, WatchRequest, presence_client::PresenceClient,
};
use tokio::time::{Instant, sleep, sleep_until};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use super::{ClientSetup, bearer, due, open};
use crate::{result::PresenceResult, stats::Samples};

/// How long events may trail the last connect before the count is taken.
const GRACE: Duration = Duration::from_secs(2);

/// What the `presence` scenario is asked to do.
#[derive(Debug, Clone)]
pub struct PresenceOptions {
    /// Which servers and configuration, for the result.
    pub label: String,
    /// The gateway the connections are opened on.
    pub server: SocketAddr,
    /// The `pulse-presence` gRPC endpoint (`http://127.0.0.1:PORT`).
    pub presence_url: String,
    /// The API key every call to `pulse-presence` carries.
    pub api_key: String,
    /// Connections to open, each for a new user.
    pub connects: usize,
    /// Connects per second.
    pub rate: f64,
    /// User ids are this prefix and a number; make it unique per run.
    pub user_prefix: String,
}

/// When one connection started and when its `connected` message arrived.
type Opens = HashMap<String, (Instant, Instant)>;

/// Runs the scenario and returns its figures, printing progress lines.
pub async fn run(setup: ClientSetup, options: PresenceOptions) -> anyhow::Result<PresenceResult> {
    let channel = Channel::from_shared(options.presence_url.clone())?
        .connect()
        .await?;
    let mut stream = PresenceClient::with_interceptor(channel, bearer(&options.api_key)?)
        .watch(WatchRequest {
            user_ids: vec![],
            all: true,
            since: String::new(),
        })
        .await?
        .into_inner();
    let events: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let prefix = format!("{}-", options.user_prefix);
    let watcher = {
        let events = events.clone();
        tokio::spawn(async move {
            while let Some(Ok(event)) = stream.next().await {
                let at = Instant::now();
                if event.kind == EventKind::Connected as i32 && event.user_id.starts_with(&prefix) {
                    events
                        .lock()
                        .expect("no panics while locked")
                        .entry(event.user_id)
                        .or_insert(at);
                }
            }
        })
    };
    // The Watch stream is open once its headers came back; give the server a
    // moment to subscribe before the first connect.
    sleep(Duration::from_millis(200)).await;

    println!(
        "presence [{}]: {} connects at {}/s, watched on {}",
        options.label, options.connects, options.rate, options.presence_url
    );
    let paths: Vec<(String, String)> = (0..options.connects)
        .map(|index| {
            let user = format!("{}-{index}", options.user_prefix);
            let path = setup.path_for(&user);
            (user, path)
        })
        .collect();
    let setup = Arc::new(setup);
    let opens: Arc<Mutex<Opens>> = Arc::default();
    let stop = CancellationToken::new();
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(paths.len());
    for (index, (user, path)) in paths.into_iter().enumerate() {
        sleep_until(due(start, index as u64, options.rate)).await;
        let (setup, opens, stop, server) =
            (setup.clone(), opens.clone(), stop.clone(), options.server);
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let Ok(opened) = open(&setup, server, index, &path).await else {
                return;
            };
            opens
                .lock()
                .expect("no panics while locked")
                .insert(user, (started, started + opened.latency));
            // Held until the end, so that no disconnect events mix in.
            let mut conn = opened.conn;
            tokio::select! {
                () = stop.cancelled() => {}
                _ = async { while let Ok(Some(_)) = conn.next_text().await {} } => {}
            }
        }));
    }
    let deadline = Instant::now() + GRACE;
    loop {
        let seen = events.lock().expect("no panics while locked").len();
        if seen >= options.connects || Instant::now() >= deadline {
            break;
        }
        sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    for task in tasks {
        task.await?;
    }
    watcher.abort();

    let opens = opens.lock().expect("no panics while locked");
    let events = events.lock().expect("no panics while locked");
    let mut latency = Samples::with_capacity(opens.len());
    let mut after_message = Samples::with_capacity(opens.len());
    let mut handshake = Samples::with_capacity(opens.len());
    for (user, (started, connected)) in opens.iter() {
        handshake.record(connected.duration_since(*started));
        if let Some(event) = events.get(user) {
            latency.record(event.saturating_duration_since(*started));
            after_message.record(event.saturating_duration_since(*connected));
        }
    }
    let summary = latency.summary();
    println!(
        "presence [{}]: {} events for {} connects; connect to event p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
        options.label,
        latency.len(),
        opens.len(),
        summary.p50_ms,
        summary.p90_ms,
        summary.p99_ms,
        summary.max_ms
    );
    Ok(PresenceResult {
        label: options.label,
        rate_target: options.rate,
        connects: opens.len() as u64,
        events: latency.len() as u64,
        latency: summary,
        after_connected_message: after_message.summary(),
        handshake: handshake.summary(),
    })
}
