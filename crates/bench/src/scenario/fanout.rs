//! `fanout`: publications to channels, each read by every subscriber of its
//! channel (issue 12). Connection `i` subscribes to channel `i % channels`
//! on server `i % servers`; publication `seq` goes to channel
//! `seq % channels` and carries its number and the moment its publish call
//! started, so every read is charged to its publication.
//!
//! Two phases, each its own result. **Rate**: publications at a fixed rate,
//! open loop (each call on its own task), measuring the publish call's
//! start to the first and to the last subscriber's read of each.
//! **Saturation**: a window of publications in flight; the next is made
//! when one has been read by all its subscribers, so the servers deliver as
//! fast as they can and no queue grows without bound; after a warm-up, the
//! deliveries per second and the servers' CPU and write calls per delivery
//! are taken over a fixed window.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    sync::{Semaphore, mpsc},
    time::{Instant, sleep, sleep_until},
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

/// After the last publication, deliveries are awaited as long as they keep
/// coming (a server behind its schedule drains a backlog: late is not
/// lost); once none came for this long, what is missing counts as lost.
const QUIET: Duration = Duration::from_secs(2);
/// The longest wait for a backlog to drain.
const MAX_DRAIN: Duration = Duration::from_secs(60);
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

/// Each publication's reads so far.
struct Tracker {
    /// Subscribers per channel: the reads that complete a publication.
    expected: u32,
    count: Vec<AtomicU32>,
    /// Call start to the earliest and the latest read, in microseconds.
    first: Vec<AtomicU64>,
    last: Vec<AtomicU64>,
    delivered: AtomicU64,
    /// Publications from this one on give a permit back once complete.
    windowed_from: AtomicU64,
    window: Semaphore,
}

impl Tracker {
    fn new(expected: usize, capacity: usize) -> Self {
        Self {
            expected: u32::try_from(expected).unwrap_or(u32::MAX),
            count: (0..capacity).map(|_| AtomicU32::new(0)).collect(),
            first: (0..capacity).map(|_| AtomicU64::new(u64::MAX)).collect(),
            last: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
            delivered: AtomicU64::new(0),
            windowed_from: AtomicU64::new(u64::MAX),
            window: Semaphore::new(0),
        }
    }

    fn record(&self, seq: u64, latency_micros: u64) {
        let Ok(at) = usize::try_from(seq) else { return };
        let Some(count) = self.count.get(at) else {
            return;
        };
        self.first[at].fetch_min(latency_micros, Ordering::Relaxed);
        self.last[at].fetch_max(latency_micros, Ordering::Relaxed);
        self.delivered.fetch_add(1, Ordering::Relaxed);
        if count.fetch_add(1, Ordering::AcqRel) + 1 == self.expected
            && seq >= self.windowed_from.load(Ordering::Relaxed)
        {
            self.window.add_permits(1);
        }
    }

    /// Waits until every publication in `seqs` is complete, or deliveries
    /// stopped coming for [`QUIET`], or [`MAX_DRAIN`] passed.
    async fn drain(&self, seqs: std::ops::Range<u64>) {
        let wanted = seqs.end - seqs.start;
        let deadline = Instant::now() + MAX_DRAIN;
        let mut seen = self.delivered.load(Ordering::Relaxed);
        let mut moved = Instant::now();
        while self.complete(seqs.clone()) < wanted && Instant::now() < deadline {
            sleep(Duration::from_millis(20)).await;
            let now = self.delivered.load(Ordering::Relaxed);
            if now != seen {
                (seen, moved) = (now, Instant::now());
            } else if moved.elapsed() >= QUIET {
                break;
            }
        }
    }

    fn complete(&self, seqs: std::ops::Range<u64>) -> u64 {
        seqs.filter(|&seq| self.count[seq as usize].load(Ordering::Acquire) >= self.expected)
            .count() as u64
    }

    fn delivered_in(&self, seqs: std::ops::Range<u64>) -> u64 {
        seqs.map(|seq| u64::from(self.count[seq as usize].load(Ordering::Acquire)))
            .sum()
    }

    /// Call start to first read of every publication read at all, and to
    /// last read of every complete one.
    fn latencies(&self, seqs: std::ops::Range<u64>) -> (Samples, Samples) {
        let (mut first, mut last) = (Samples::default(), Samples::default());
        for seq in seqs {
            let at = seq as usize;
            let count = self.count[at].load(Ordering::Acquire);
            if count > 0 {
                first.record_micros(self.first[at].load(Ordering::Relaxed));
            }
            if count >= self.expected {
                last.record_micros(self.last[at].load(Ordering::Relaxed));
            }
        }
        (first, last)
    }
}

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
    tokio::spawn(async move {
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

/// The probe connections' subscribes during the saturation window.
struct Probe {
    conns: Mutex<Vec<crate::client::Conn>>,
    rate: f64,
    prefix: String,
    tasks: Mutex<Vec<tokio::task::JoinHandle<Samples>>>,
    stop: CancellationToken,
}

impl Probe {
    fn new(conns: Vec<crate::client::Conn>, options: &FanoutOptions) -> Self {
        Self {
            conns: Mutex::new(conns),
            rate: options.probe_rate,
            prefix: format!("{}probe-{}-", options.channel_prefix, std::process::id()),
            tasks: Mutex::default(),
            stop: CancellationToken::new(),
        }
    }

    /// Starts subscribing, each connection at its share of the rate.
    fn start(&self) {
        let conns = std::mem::take(&mut *self.conns.lock().expect("no panics while locked"));
        let count = conns.len().max(1) as u64;
        let start = Instant::now();
        let mut tasks = self.tasks.lock().expect("no panics while locked");
        for (index, mut conn) in conns.into_iter().enumerate() {
            let (stop, prefix, rate) = (self.stop.clone(), self.prefix.clone(), self.rate);
            tasks.push(tokio::spawn(async move {
                let mut samples = Samples::default();
                for n in 0..128u64 {
                    let at = due(start, n * count + index as u64, rate);
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = sleep_until(at) => {}
                    }
                    let channel = format!("{prefix}{index}-{n}");
                    match subscribe(&mut conn, n + 1, &channel, None).await {
                        Ok(rtt) => samples.record(rtt),
                        Err(_) => break,
                    }
                }
                samples
            }));
        }
    }

    /// Stops the probes; their round trips, when there were probes.
    async fn finish(&self) -> anyhow::Result<Option<crate::stats::Percentiles>> {
        self.stop.cancel();
        let tasks = std::mem::take(&mut *self.tasks.lock().expect("no panics while locked"));
        if tasks.is_empty() {
            return Ok(None);
        }
        let mut all = Samples::default();
        for task in tasks {
            all.merge(task.await?);
        }
        Ok(Some(all.summary()))
    }
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

struct FiguresIn<'a> {
    publications: u64,
    complete: u64,
    deliveries: u64,
    rate_achieved: f64,
    first: Samples,
    last: Samples,
    calls: &'a Calls,
}

fn figures(
    options: &FanoutOptions,
    phase: FanoutPhase,
    before: &Marks,
    after: &Marks,
    input: FiguresIn<'_>,
) -> FanoutResult {
    let wall = after.at.duration_since(before.at);
    let deliveries = input.deliveries;
    let per_delivery = |cpu: Duration| {
        if deliveries == 0 {
            0.0
        } else {
            round3(cpu.as_secs_f64() * 1e6 / deliveries as f64)
        }
    };
    let server_cpu = before.server_cpu_until(after);
    FanoutResult {
        label: options.label.clone(),
        phase,
        servers: options.crowd.servers.len() as u64,
        channels: options.channels as u64,
        subscribers_per_channel: options.subscribers as u64,
        subscribed: 0,
        failures: BTreeMap::new(),
        rate_target: if phase == FanoutPhase::Rate {
            options.rate
        } else {
            0.0
        },
        rate_achieved: input.rate_achieved,
        window: if phase == FanoutPhase::Saturation {
            options.window as u64
        } else {
            0
        },
        duration_s: round3(wall.as_secs_f64()),
        publications: input.publications,
        publish_errors: input.calls.errors.load(Ordering::Relaxed),
        complete: input.complete,
        deliveries,
        deliveries_expected: input.publications * options.subscribers as u64,
        deliveries_per_second: if wall.is_zero() {
            0.0
        } else {
            round3(deliveries as f64 / wall.as_secs_f64())
        },
        last_read: input.last.summary(),
        first_read: input.first.summary(),
        publish_call: input
            .calls
            .samples
            .lock()
            .expect("no panics while locked")
            .summary(),
        server_cpu_us_per_delivery: server_cpu.map(per_delivery),
        server_cpu_percent: server_cpu.map(|cpu| round3(crate::procfs::cpu_percent(cpu, wall))),
        server_writes_per_delivery: before
            .server_writes_until(after)
            .filter(|_| deliveries > 0)
            .map(|writes| round3(writes as f64 / deliveries as f64)),
        other_cpu_us_per_delivery: before
            .others_until(after)
            .into_iter()
            .map(|(name, cpu)| (name, per_delivery(cpu)))
            .collect(),
        client_cpu_us_per_delivery: per_delivery(before.client_cpu_until(after)),
        foreign_cpu_percent: round3(before.foreign_percent_until(after)),
        subscribe_meanwhile: None,
    }
}

fn print_result(result: &FanoutResult) {
    println!(
        "fanout [{}] {:?}: {} publications ({} complete, {} failed calls), {} deliveries of {} expected, {}/s; \
         last read p50 {} ms p99 {} ms max {} ms; server CPU {:?} µs/delivery, {:?} writes/delivery; load generator {} µs/delivery; others {} %",
        result.label,
        result.phase,
        result.publications,
        result.complete,
        result.publish_errors,
        result.deliveries,
        result.deliveries_expected,
        result.deliveries_per_second,
        result.last_read.p50_ms,
        result.last_read.p99_ms,
        result.last_read.max_ms,
        result.server_cpu_us_per_delivery,
        result.server_writes_per_delivery,
        result.client_cpu_us_per_delivery,
        result.foreign_cpu_percent
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publication_is_complete_once_every_subscriber_read_it() {
        let tracker = Tracker::new(3, 4);
        tracker.windowed_from.store(2, Ordering::Relaxed);
        for latency in [500, 200, 900] {
            tracker.record(0, latency);
        }
        tracker.record(1, 100);
        for _ in 0..3 {
            tracker.record(2, 50);
        }
        tracker.record(9, 1);
        assert_eq!(tracker.complete(0..4), 2);
        assert_eq!(tracker.delivered_in(0..4), 7);
        assert_eq!(
            tracker.delivered.load(Ordering::Relaxed),
            7,
            "out of range is not counted"
        );
        assert_eq!(
            tracker.window.available_permits(),
            1,
            "only windowed publications give permits"
        );
        let (first, last) = tracker.latencies(0..3);
        assert_eq!(first.summary().count, 3);
        assert_eq!(last.summary().count, 2);
        assert_eq!(last.summary().max_ms, 0.9);
        assert_eq!(first.summary().p50_ms, 0.1);
    }
}
