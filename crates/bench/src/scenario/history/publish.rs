//! `publish`: publish calls at a fixed rate, open loop (each call on its
//! own task), each timed from its start to its answer: `Channels/Publish`
//! on `pulse-presence` to a namespace with history or without, or, as the
//! floor under both, Redis alone: the `RPUSH` of the publication to its
//! channel's history list, its `LTRIM` and the `SPUBLISH` of its frame,
//! pipelined in one round trip, the writes a publication with history
//! cannot do without.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use redis::aio::MultiplexedConnection;
use tokio::time::{Instant, sleep_until};

use super::{ChannelsApi, history_key, padded_data, publications_key, publish_answer_once};
use crate::{
    result::PublishResult,
    scenario::{clock_micros, due, marks::Marks},
    stats::{Samples, round3},
};

/// Where the calls go.
#[derive(Clone)]
pub enum Target {
    /// `Channels/Publish` on `pulse-presence`.
    Grpc(ChannelsApi),
    /// Redis alone, under a namespace of the bench's own.
    Redis {
        /// One multiplexed connection, as `pulse-presence` holds.
        conn: MultiplexedConnection,
        /// The key namespace.
        namespace: String,
        /// How many the history lists keep (`LTRIM`).
        history_size: u32,
    },
}

/// What the `publish` scenario is asked to do.
pub struct PublishOptions {
    /// Which configuration, for the result.
    pub label: String,
    /// Where the calls go.
    pub target: Target,
    /// Channels are this prefix and a number.
    pub channel_prefix: String,
    /// Channels published to, round robin.
    pub channels: usize,
    /// Calls per second.
    pub rate: f64,
    /// How long to publish for.
    pub duration: Duration,
    /// The length of each publication's data, in bytes.
    pub data_bytes: usize,
    /// Processes whose CPU per call to report (`pulse-presence`, Redis).
    pub watch_pids: Vec<(String, u32)>,
    /// Every call carries an idempotency key of its own (a first call: the
    /// key is looked up, then stored with the answer), as a service that
    /// retries would send.
    pub idempotency_keys: bool,
}

#[derive(Default)]
struct Calls {
    samples: Mutex<Samples>,
    errors: AtomicU64,
    with_offset: AtomicU64,
}

/// Runs the scenario and returns its figures, printing progress lines.
pub async fn run(options: PublishOptions) -> anyhow::Result<PublishResult> {
    anyhow::ensure!(options.channels > 0, "--channels must be at least 1");
    anyhow::ensure!(options.rate > 0.0, "--rate must be above 0");
    let total = (options.rate * options.duration.as_secs_f64()).round() as u64;
    let path = match options.target {
        Target::Grpc(_) => "grpc",
        Target::Redis { .. } => "redis",
    };
    println!(
        "publish [{}]: {total} calls ({path}) at {}/s to {} channel(s), {} B of data each",
        options.label, options.rate, options.channels, options.data_bytes
    );
    let calls = Arc::new(Calls::default());
    let before = Marks::take(&[], &options.watch_pids, 0)?;
    let start = Instant::now() + Duration::from_millis(50);
    let mut inflight = Vec::with_capacity(total as usize);
    for seq in 0..total {
        sleep_until(due(start, seq, options.rate)).await;
        let channel = format!(
            "{}{}",
            options.channel_prefix,
            seq % options.channels as u64
        );
        let (target, calls, bytes) = (options.target.clone(), calls.clone(), options.data_bytes);
        let key = options.idempotency_keys.then(|| format!("bench-{seq}"));
        inflight.push(tokio::spawn(async move {
            let data = padded_data(seq, clock_micros(), bytes);
            let called = Instant::now();
            match call(&target, channel, data, key).await {
                Ok(offset) => {
                    calls
                        .samples
                        .lock()
                        .expect("no panics while locked")
                        .record(called.elapsed());
                    if offset {
                        calls.with_offset.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(reason) => {
                    if calls.errors.fetch_add(1, Ordering::Relaxed) == 0 {
                        eprintln!("publish: first failed call: {reason}");
                    }
                }
            }
        }));
    }
    let scheduled = start.elapsed().as_secs_f64();
    for call in inflight {
        call.await?;
    }
    let after = Marks::take(&[], &options.watch_pids, total)?;
    let per_call = |cpu: Duration| {
        if total == 0 {
            0.0
        } else {
            round3(cpu.as_secs_f64() * 1e6 / total as f64)
        }
    };
    let summary = calls
        .samples
        .lock()
        .expect("no panics while locked")
        .summary();
    let result = PublishResult {
        label: options.label,
        path: path.to_owned(),
        channels: options.channels as u64,
        data_bytes: options.data_bytes as u64,
        rate_target: options.rate,
        rate_achieved: if scheduled > 0.0 {
            round3(total as f64 / scheduled)
        } else {
            0.0
        },
        calls: total,
        errors: calls.errors.load(Ordering::Relaxed),
        with_offset: calls.with_offset.load(Ordering::Relaxed),
        call: summary,
        cpu_us_per_call: before
            .others_until(&after)
            .into_iter()
            .map(|(name, cpu)| (name, per_call(cpu)))
            .collect::<BTreeMap<_, _>>(),
        client_cpu_us_per_call: per_call(before.client_cpu_until(&after)),
        foreign_cpu_percent: round3(before.foreign_percent_until(&after)),
    };
    println!(
        "publish [{}]: {} calls, {} failed, {} with an offset; p50 {} ms, p99 {} ms, max {} ms; others {} %",
        result.label,
        result.calls,
        result.errors,
        result.with_offset,
        summary.p50_ms,
        summary.p99_ms,
        summary.max_ms,
        result.foreign_cpu_percent
    );
    Ok(result)
}

/// One call; `Ok(true)` when its answer carried an offset.
async fn call(
    target: &Target,
    channel: String,
    data: String,
    idempotency_key: Option<String>,
) -> Result<bool, String> {
    match target {
        Target::Grpc(api) => publish_answer_once(api, channel, data, idempotency_key)
            .await
            .map(|answer| answer.offset > 0),
        Target::Redis {
            conn,
            namespace,
            history_size,
        } => {
            let raw = serde_json::value::RawValue::from_string(data.clone())
                .map_err(|error| error.to_string())?;
            let frame = pulse_protocol::channel::publication_frame(&channel, None, &raw);
            let key = history_key(namespace, &channel);
            let (len, (), _receivers): (u64, (), u64) = redis::pipe()
                .cmd("RPUSH")
                .arg(&key)
                .arg(data)
                .cmd("LTRIM")
                .arg(&key)
                .arg(-i64::from(*history_size))
                .arg(-1)
                .cmd("SPUBLISH")
                .arg(publications_key(namespace, &channel))
                .arg(frame)
                .query_async(&mut conn.clone())
                .await
                .map_err(|error| format!("redis: {error}"))?;
            Ok(len > 0)
        }
    }
}
