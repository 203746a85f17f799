//! `webhooks`: presence events made at a fixed rate, each timed from the
//! moment its change was acknowledged (the registration's or the
//! unregistration's answer) to its arrival at a webhook receiver
//! ([`super::receiver`]) that `pulse-presence` POSTs to; the floor is the
//! same events' arrival on a `Watch` stream (of everyone) in the same run.
//!
//! Each user of the run makes four events: a registration (`connected`,
//! `online`), then `hold` later an unregistration (`disconnected`,
//! `offline`), through `pulse-presence`'s library into its namespace. Users
//! start at a quarter of the asked event rate, on an open-loop schedule.
//! `pulse-presence` must be configured to POST every kind to the receiver
//! (`events = ["connected", "disconnected", "online", "offline"]`).

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::StreamExt;
use pulse_protocol::proto::presence::v1::{EventKind, WatchRequest};
use tokio::time::{Instant, sleep, sleep_until};

use super::{Writer, connection_id, kind_name, presence_api, receiver::Receiver, user_id};
use crate::{
    result::WebhooksResult,
    scenario::{due, marks::Marks},
    stats::Samples,
};

/// How long the run waits, after the schedule, for the last events.
const GRACE: Duration = Duration::from_secs(10);
/// How long the first (warm-up) event may take to reach the receiver.
const WARM_UP: Duration = Duration::from_secs(15);

/// The kinds in the order one user makes them.
const KINDS: [&str; 4] = ["connected", "online", "disconnected", "offline"];

/// What the `webhooks` scenario is asked to do.
#[derive(Debug, Clone)]
pub struct WebhooksOptions {
    /// Which build, for the result.
    pub label: String,
    /// `pulse-presence`'s gRPC endpoint, for the floor's `Watch`.
    pub presence_url: String,
    /// The API key.
    pub api_key: String,
    /// The Redis `pulse-presence` uses, and its namespace.
    pub redis_url: String,
    /// See `redis_url`.
    pub namespace: String,
    /// Where the receiver listens (the `url` of `[webhooks]`).
    pub listen: SocketAddr,
    /// The webhook secret.
    pub secret: String,
    /// User ids are this prefix and a number.
    pub user_prefix: String,
    /// Events per second.
    pub rate: f64,
    /// How long the schedule runs.
    pub duration: Duration,
    /// A user's registration to its unregistration.
    pub hold: Duration,
    /// Processes whose CPU per event to report, as name and pid.
    pub watch_pids: Vec<(String, u32)>,
}

/// When each change was asked for and acknowledged, by (user, kind).
type Made = HashMap<(String, String), (Instant, Instant)>;

/// Runs the scenario and returns its figures, printing progress lines.
pub async fn run(options: WebhooksOptions) -> anyhow::Result<WebhooksResult> {
    anyhow::ensure!(options.rate >= 4.0, "--rate: at least 4 events/s");
    let receiver = Receiver::start(options.listen, options.secret.clone()).await?;
    let writer = Writer::new(&options.redis_url, &options.namespace)?;

    // The floor: a Watch of everyone, open before any event.
    let mut api = presence_api(&options.presence_url, &options.api_key).await?;
    let mut stream = api
        .watch(WatchRequest {
            user_ids: vec![],
            all: true,
            since: String::new(),
        })
        .await?
        .into_inner();
    let watched: Arc<Mutex<HashMap<(String, String), Instant>>> = Arc::default();
    let prefix = format!("{}-", options.user_prefix);
    let watcher = {
        let watched = watched.clone();
        tokio::spawn(async move {
            while let Some(Ok(event)) = stream.next().await {
                let at = Instant::now();
                if event.user_id.starts_with(&prefix)
                    && let Ok(kind) = EventKind::try_from(event.kind)
                {
                    watched
                        .lock()
                        .expect("no panics while locked")
                        .entry((event.user_id, kind_name(kind).to_owned()))
                        .or_insert(at);
                }
            }
        })
    };

    // Warm-up: delivery to the target has started once an event arrived.
    let warm_user = format!("{}-warmup", options.user_prefix);
    let warm_started = Instant::now();
    let mut round = 0u64;
    loop {
        let connection = connection_id(900_000_000 + round);
        writer.connect(&warm_user, &connection).await?;
        writer.disconnect(&warm_user, &connection).await?;
        round += 1;
        sleep(Duration::from_millis(200)).await;
        if !receiver
            .inbox
            .lock()
            .expect("no panics while locked")
            .arrivals
            .is_empty()
        {
            break;
        }
        anyhow::ensure!(
            warm_started.elapsed() < WARM_UP,
            "no webhook POST reached {} within {WARM_UP:?} (is pulse-presence's [webhooks] url this address?)",
            options.listen
        );
    }
    sleep(Duration::from_millis(500)).await;
    let warm_posts = receiver.inbox.lock().expect("no panics while locked").posts;

    let users = ((options.rate / 4.0) * options.duration.as_secs_f64()).ceil() as u64;
    println!(
        "webhooks [{}]: {} events/s for {:?} ({users} users × 4 events, each held {:?}), to a receiver on {}",
        options.label, options.rate, options.duration, options.hold, options.listen
    );
    let made: Arc<Mutex<Made>> = Arc::default();
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let before = Marks::take(&[], &options.watch_pids, 0)?;
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(users as usize);
    for n in 0..users {
        sleep_until(due(start, n, options.rate / 4.0)).await;
        let (writer, made, errors, hold) =
            (writer.clone(), made.clone(), errors.clone(), options.hold);
        let user = user_id(&options.user_prefix, n);
        tasks.push(tokio::spawn(async move {
            let connection = connection_id(n);
            for (connect, kinds) in [(true, &KINDS[..2]), (false, &KINDS[2..])] {
                let asked = Instant::now();
                let outcome = if connect {
                    writer.connect(&user, &connection).await
                } else {
                    writer.disconnect(&user, &connection).await
                };
                let acknowledged = Instant::now();
                if outcome.is_err() {
                    errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return;
                }
                {
                    let mut made = made.lock().expect("no panics while locked");
                    for kind in kinds {
                        made.insert((user.clone(), (*kind).to_owned()), (asked, acknowledged));
                    }
                }
                if connect {
                    sleep(hold).await;
                }
            }
        }));
    }
    // The schedule's window: the last user's start is a quarter-rate
    // period before its end.
    let window = start.elapsed() + Duration::from_secs_f64(4.0 / options.rate);
    for task in tasks {
        task.await?;
    }
    // The last events: until the receiver has them all, or GRACE.
    let deadline = Instant::now() + GRACE;
    loop {
        let all_in = {
            let made = made.lock().expect("no panics while locked");
            let inbox = receiver.inbox.lock().expect("no panics while locked");
            made.keys().all(|key| inbox.arrivals.contains_key(key))
        };
        if all_in || Instant::now() >= deadline {
            break;
        }
        sleep(Duration::from_millis(50)).await;
    }
    let after = Marks::take(&[], &options.watch_pids, 0)?;
    watcher.abort();

    let made = made.lock().expect("no panics while locked");
    let watched = watched.lock().expect("no panics while locked");
    let inbox = receiver.inbox.lock().expect("no panics while locked");
    let (mut latency, mut from_call, mut watch) =
        (Samples::default(), Samples::default(), Samples::default());
    for (key, (asked, acknowledged)) in made.iter() {
        if let Some(arrived) = inbox.arrivals.get(key) {
            latency.record(arrived.saturating_duration_since(*acknowledged));
            from_call.record(arrived.saturating_duration_since(*asked));
        }
        if let Some(arrived) = watched.get(key) {
            watch.record(arrived.saturating_duration_since(*acknowledged));
        }
    }
    let out_of_order_users = inbox
        .order
        .iter()
        .filter(|(user, kinds)| {
            user.starts_with(&format!("{}-", options.user_prefix))
                && *user != &warm_user
                && kinds.iter().map(String::as_str).ne(KINDS.iter().copied())
        })
        .count() as u64;
    let events = made.len() as f64;
    let result = WebhooksResult {
        label: options.label,
        rate_target: options.rate,
        rate_achieved: crate::stats::round3(events / window.as_secs_f64()),
        duration_s: crate::stats::round3(window.as_secs_f64()),
        expected: made.len() as u64,
        received: latency.len() as u64,
        repeats: inbox.repeats,
        bad_signatures: inbox.bad_signatures,
        posts: inbox.posts - warm_posts,
        out_of_order_users,
        latency: latency.summary(),
        latency_from_call: from_call.summary(),
        watch: watch.summary(),
        watch_received: watch.len() as u64,
        call_errors: errors.load(std::sync::atomic::Ordering::Relaxed),
        cpu_us_per_event: before
            .others_until(&after)
            .into_iter()
            .map(|(name, cpu)| {
                (
                    name,
                    crate::stats::round3(cpu.as_secs_f64() * 1e6 / events.max(1.0)),
                )
            })
            .collect(),
        foreign_cpu_percent: crate::stats::round3(before.foreign_percent_until(&after)),
    };
    println!(
        "webhooks [{}]: {} / {} events received ({} repeats, {} bad signatures, {} POSTs, {} users out of order); ack → receiver p50 {} ms, p99 {} ms; ack → Watch p99 {} ms",
        result.label,
        result.received,
        result.expected,
        result.repeats,
        result.bad_signatures,
        result.posts,
        result.out_of_order_users,
        result.latency.p50_ms,
        result.latency.p99_ms,
        result.watch.p99_ms
    );
    Ok(result)
}
