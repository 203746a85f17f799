//! `fanout`: publications to channels, each read by every subscriber of its
//! channel (issue 12). Connection `i` subscribes to channel `i % channels`
//! on server `i % servers`; publication `seq` goes to channel
//! `seq % channels` and carries its number and the moment its publish call
//! started, so every read is charged to its publication.
//!
//! Two phases, each its own result. **Rate**: publications at a fixed rate,
//! open loop (each call on its own task, on the publisher's own thread:
//! [`Publisher::spawn`]), measuring the publish call's
//! start to the first and to the last subscriber's read of each.
//! **Saturation**: a window of publications in flight; the next is made
//! when one has been read by all its subscribers, so the servers deliver as
//! fast as they can and no queue grows without bound; after a warm-up, the
//! deliveries per second and the servers' CPU and write calls per delivery
//! are taken over a fixed window.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    sync::mpsc,
    time::{Instant, sleep_until},
};
use tokio_util::sync::CancellationToken;

use super::{
    ClientSetup,
    channels::{Crowd, Publisher, open_crowd, stamp_data, stamp_of, subscribe},
    clock_micros, due,
    marks::Marks,
};
use crate::{
    result::{FanoutPhase, FanoutResult},
    stats::{Samples, round3},
};

mod figures;
mod probe;
mod tracker;

use figures::{FiguresIn, figures, print_result};
use probe::Probe;
use tracker::Tracker;

/// A saturation run whose window has not moved for this long has lost a
/// delivery (a closed subscriber) and ends.
const STALL: Duration = Duration::from_secs(5);
/// Deliveries per second the saturation phase sizes its bookkeeping for;
/// several times what two cores reach.
const MAX_DELIVERIES_PER_SECOND: f64 = 2_000_000.0;
/// The most publications one run tracks.
const MAX_TRACKED: usize = 2_000_000;

/// What the `fanout` scenario is asked to do.
pub struct FanoutOptions {
    /// Which server and configuration, for the results.
    pub label: String,
    /// The subscribers' connections (`count` is set from the channels).
    pub crowd: Crowd,
    /// Where publications are made.
    pub publisher: Publisher,
    /// Channels are this prefix and a number.
    pub channel_prefix: String,
    /// How many channels.
    pub channels: usize,
    /// Subscribers of each channel.
    pub subscribers: usize,
    /// Publications per second of the rate phase (0: no rate phase).
    pub rate: f64,
    /// How long the rate phase publishes.
    pub duration: Duration,
    /// The saturation phase's measured window (zero: no saturation phase).
    pub saturate: Duration,
    /// Publications in flight at saturation.
    pub window: usize,
    /// Saturation before the window is measured.
    pub warmup: Duration,
    /// The server processes (the gateways, or the floor): their CPU and
    /// write calls are summed.
    pub server_pids: Vec<u32>,
    /// Other processes whose CPU per delivery to report (Redis, `pulse-presence`).
    pub watch_pids: Vec<(String, u32)>,
    /// Subscribes per second to fresh channels on the first server during
    /// the saturation window, each timed to its answer (0: none).
    pub probe_rate: f64,
}

/// Connections that subscribe during the saturation window, one after the
/// other each (a connection holds at most 128 subscriptions).
const PROBES: usize = 10;

/// The calls of one phase.
#[derive(Default)]
struct Calls {
    samples: Mutex<Samples>,
    errors: AtomicU64,
}

/// Runs the scenario and returns one result per phase, printing progress lines.
pub async fn run(
    setup: ClientSetup,
    mut options: FanoutOptions,
) -> anyhow::Result<Vec<FanoutResult>> {
    anyhow::ensure!(
        options.channels > 0 && options.subscribers > 0,
        "--channels and --subscribers must be at least 1"
    );
    options.crowd.count = options.channels * options.subscribers;
    let rate_total = if options.rate > 0.0 {
        (options.rate * options.duration.as_secs_f64()).round() as u64
    } else {
        0
    };
    let saturation_capacity = if options.saturate.is_zero() {
        0
    } else {
        let seconds = (options.saturate + options.warmup + STALL).as_secs_f64();
        ((MAX_DELIVERIES_PER_SECOND * seconds / options.subscribers as f64) as usize)
            .max(options.window * 4)
    };
    let capacity = (rate_total as usize + saturation_capacity).min(MAX_TRACKED);
    let tracker = Arc::new(Tracker::new(options.subscribers, capacity));

    println!(
        "fanout [{}]: {} connections on {} server(s), {} channel(s) × {} subscribers",
        options.label,
        options.crowd.count,
        options.crowd.servers.len(),
        options.channels,
        options.subscribers
    );
    let stop = CancellationToken::new();
    let dropped = Arc::new(AtomicU64::new(0));
    let (ready_tx, mut ready) = mpsc::unbounded_channel::<Result<(), String>>();
    let body = {
        let (tracker, stop, dropped) = (tracker.clone(), stop.clone(), dropped.clone());
        let (prefix, channels) = (options.channel_prefix.clone(), options.channels);
        move |index: usize, mut conn: crate::client::Conn| {
            let (tracker, stop, dropped, ready_tx) = (
                tracker.clone(),
                stop.clone(),
                dropped.clone(),
                ready_tx.clone(),
            );
            let channel = format!("{prefix}{}", index % channels);
            async move {
                let subscribed = subscribe(&mut conn, 1, &channel, None).await;
                let ok = subscribed.is_ok();
                let _ = ready_tx.send(subscribed.map(|_| ()));
                if !ok {
                    return;
                }
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = async {
                        while let Ok(Some(text)) = conn.next_text().await {
                            if let Some((seq, at)) = stamp_of(&text) {
                                tracker.record(seq, clock_micros().saturating_sub(at));
                            }
                        }
                        dropped.fetch_add(1, Ordering::Relaxed);
                    } => {}
                }
            }
        }
    };
    let (tasks, mut failures) = open_crowd(&setup, &options.crowd, body).await?;
    let opened = options.crowd.count as u64 - failures.values().sum::<u64>();
    let mut subscribed = 0u64;
    for _ in 0..opened {
        match tokio::time::timeout(super::channels::ANSWER_TIMEOUT, ready.recv()).await {
            Ok(Some(Ok(()))) => subscribed += 1,
            Ok(Some(Err(code))) => *failures.entry(format!("subscribe: {code}")).or_insert(0) += 1,
            Ok(None) | Err(_) => break,
        }
    }
    println!(
        "fanout [{}]: {subscribed} subscribed; failures {failures:?}",
        options.label
    );
    anyhow::ensure!(
        subscribed == options.crowd.count as u64,
        "only {subscribed} of {} connections subscribed: {failures:?}",
        options.crowd.count
    );

    let mut probes = Vec::new();
    if options.probe_rate > 0.0 && !options.saturate.is_zero() {
        for index in 0..PROBES {
            let path = setup.path_for(&format!("{}-probe-{index}", options.crowd.user_prefix));
            let opened = super::open(&setup, options.crowd.servers[0], index, &path)
                .await
                .map_err(|reason| anyhow::anyhow!("opening a probe connection: {reason}"))?;
            probes.push(opened.conn);
        }
    }

    let mut results = Vec::new();
    if rate_total > 0 {
        results.push(rate_phase(&options, &tracker, rate_total).await?);
    }
    if !options.saturate.is_zero() {
        let probe = Probe::new(probes, &options);
        let mut result =
            saturation_phase(&options, &tracker, rate_total, capacity as u64, &probe).await?;
        result.subscribe_meanwhile = probe.finish().await?;
        results.push(result);
    }
    stop.cancel();
    for task in tasks {
        task.await?;
    }
    let dropped = dropped.load(Ordering::Relaxed);
    for result in &mut results {
        result.subscribed = subscribed;
        result.failures = failures.clone();
        if dropped > 0 {
            result
                .failures
                .insert("closed by the server while subscribed".to_owned(), dropped);
        }
    }
    Ok(results)
}

fn publish(
    options: &FanoutOptions,
    calls: &Arc<Calls>,
    tracker: &Arc<Tracker>,
    seq: u64,
) -> tokio::task::JoinHandle<()> {
    let publisher = options.publisher.clone();
    let channel = format!(
        "{}{}",
        options.channel_prefix,
        seq % options.channels as u64
    );
    let (calls, tracker) = (calls.clone(), tracker.clone());
    options.publisher.spawn(async move {
        let called = Instant::now();
        match publisher
            .publish(channel, stamp_data(seq, clock_micros()))
            .await
        {
            Ok(()) => calls
                .samples
                .lock()
                .expect("no panics while locked")
                .record(called.elapsed()),
            Err(reason) => {
                if calls.errors.fetch_add(1, Ordering::Relaxed) == 0 {
                    eprintln!("fanout: first failed publish: {reason}");
                }
                // A publication that was never made gives its slot back.
                if seq >= tracker.windowed_from.load(Ordering::Relaxed) {
                    tracker.window.add_permits(1);
                }
            }
        }
    })
}

async fn rate_phase(
    options: &FanoutOptions,
    tracker: &Arc<Tracker>,
    total: u64,
) -> anyhow::Result<FanoutResult> {
    println!(
        "fanout [{}]: {total} publications at {}/s",
        options.label, options.rate
    );
    let calls = Arc::new(Calls::default());
    let before = Marks::take(
        &options.server_pids,
        &options.watch_pids,
        tracker.delivered.load(Ordering::Relaxed),
    )?;
    let start = Instant::now() + Duration::from_millis(50);
    let mut inflight = Vec::with_capacity(total as usize);
    for seq in 0..total {
        sleep_until(due(start, seq, options.rate)).await;
        inflight.push(publish(options, &calls, tracker, seq));
    }
    let scheduled = start.elapsed().as_secs_f64();
    for call in inflight {
        call.await?;
    }
    tracker.drain(0..total).await;
    let after = Marks::take(
        &options.server_pids,
        &options.watch_pids,
        tracker.delivered.load(Ordering::Relaxed),
    )?;
    let (first, last) = tracker.latencies(0..total);
    let result = figures(
        options,
        FanoutPhase::Rate,
        &before,
        &after,
        FiguresIn {
            publications: total,
            complete: tracker.complete(0..total),
            deliveries: tracker.delivered_in(0..total),
            rate_achieved: if scheduled > 0.0 {
                round3(total as f64 / scheduled)
            } else {
                0.0
            },
            first,
            last,
            calls: &calls,
        },
    );
    print_result(&result);
    Ok(result)
}

async fn saturation_phase(
    options: &FanoutOptions,
    tracker: &Arc<Tracker>,
    first_seq: u64,
    capacity: u64,
    probe: &Probe,
) -> anyhow::Result<FanoutResult> {
    println!(
        "fanout [{}]: saturation, {} publications in flight, {} s warm-up, {} s measured",
        options.label,
        options.window,
        options.warmup.as_secs_f64(),
        options.saturate.as_secs_f64()
    );
    let calls = Arc::new(Calls::default());
    tracker.windowed_from.store(first_seq, Ordering::Relaxed);
    tracker.window.add_permits(options.window.max(1));
    let measure_from = Instant::now() + options.warmup;
    let end = measure_from + options.saturate;
    let mut before: Option<(Marks, u64)> = None;
    let mut seq = first_seq;
    let mut stalled = false;
    let mut inflight = Vec::new();
    loop {
        let permit = match tokio::time::timeout(STALL, tracker.window.acquire()).await {
            Ok(permit) => permit?,
            Err(_) => {
                stalled = true;
                break;
            }
        };
        permit.forget();
        let now = Instant::now();
        if now >= end || seq >= capacity {
            break;
        }
        if before.is_none() && now >= measure_from {
            probe.start();
            before = Some((
                Marks::take(
                    &options.server_pids,
                    &options.watch_pids,
                    tracker.delivered.load(Ordering::Relaxed),
                )?,
                seq,
            ));
        }
        inflight.push(publish(options, &calls, tracker, seq));
        seq += 1;
    }
    let after = Marks::take(
        &options.server_pids,
        &options.watch_pids,
        tracker.delivered.load(Ordering::Relaxed),
    )?;
    probe.stop.cancel();
    if stalled {
        eprintln!(
            "fanout [{}]: the window stalled for {} s (a delivery was lost); the figures stop there",
            options.label,
            STALL.as_secs()
        );
    } else if seq >= capacity {
        eprintln!(
            "fanout [{}]: reached the {capacity} publications tracked",
            options.label
        );
    }
    for call in inflight {
        call.await?;
    }
    // Let the window drain, so that the next phase or the close starts quiet.
    tracker.drain(first_seq..seq).await;
    let (before, measured_from) = before.unwrap_or_else(|| (after.clone(), seq));
    let (first, last) = tracker.latencies(measured_from..seq);
    let mut result = figures(
        options,
        FanoutPhase::Saturation,
        &before,
        &after,
        FiguresIn {
            publications: seq - measured_from,
            complete: tracker.complete(measured_from..seq),
            deliveries: after.delivered - before.delivered,
            rate_achieved: 0.0,
            first,
            last,
            calls: &calls,
        },
    );
    result.rate_achieved = if result.duration_s > 0.0 {
        round3(result.publications as f64 / result.duration_s)
    } else {
        0.0
    };
    print_result(&result);
    Ok(result)
}
