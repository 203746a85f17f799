//! `event-memory`: what Redis holds per presence event kept in the logs.
//!
//! In a namespace of its own, `users` users each get one connection that
//! stays, then `cycles` extra connections each registered and
//! unregistered (a `connected` and a `disconnected` per cycle), through
//! `pulse-presence`'s library: the scripts a gateway runs. Users come and
//! go at the end (`online`, `offline`) too. Then `XLEN` and
//! `MEMORY USAGE <log> SAMPLES 0` (every node counted) of every bucket's
//! log `<ns>:{b<k>}:events`, and `used_memory` of `INFO memory` before and
//! after, which also counts what the calls left besides the logs (the
//! offline users' "last seen").
//!
//! The floor, in the same run: as many `XADD <key> * k .. u .. c .. i ..
//! t .. h ..` of the same values into one bare stream (Redis's own ids,
//! one key): what the entries cost without the log's per-bucket keys and
//! its ids.

use futures_util::{StreamExt, stream};
use redis::aio::MultiplexedConnection;

use super::{INSTANCE_ID, Writer, connection_id, user_id};
use crate::result::EventMemoryResult;

/// Calls in flight while the logs fill.
const WINDOW: usize = 64;
/// Entries per pipeline of the floor's `XADD`s.
const PIPELINE: usize = 500;
/// A pause before each `INFO memory`.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(500);

/// What the `event-memory` scenario is asked to do.
pub struct MemoryOptions {
    /// Which build.
    pub label: String,
    /// The Redis, and a namespace nothing else writes to.
    pub redis_url: String,
    /// See `redis_url`.
    pub namespace: String,
    /// A key outside the namespace for the floor's stream.
    pub floor_key: String,
    /// User ids are this prefix and a number.
    pub user_prefix: String,
    /// Users.
    pub users: u64,
    /// Extra connections registered and unregistered per user.
    pub cycles: u64,
}

/// Runs the scenario and returns its figures, printing progress lines.
pub async fn run(
    options: MemoryOptions,
    mut redis: MultiplexedConnection,
) -> anyhow::Result<EventMemoryResult> {
    anyhow::ensure!(options.users > 0, "--users must be at least 1");
    let writer = Writer::new(&options.redis_url, &options.namespace)?;
    println!(
        "event-memory [{}]: {} users × {} connection cycles, then each user offline",
        options.label, options.users, options.cycles
    );
    tokio::time::sleep(SETTLE).await;
    let used_memory_before = used_memory(&mut redis).await?;
    let started = std::time::Instant::now();
    // Each step is one call per user; the user's own calls stay in order.
    let mut calls = 0u64;
    let steps = 2 + 2 * options.cycles;
    for step in 0..steps {
        let (writer, prefix) = (writer.clone(), options.user_prefix.clone());
        stream::iter(0..options.users)
            .map(move |n| {
                let (writer, user) = (writer.clone(), user_id(&prefix, n));
                async move {
                    let (connection, connect) = match step {
                        0 => (connection_id(n), true),
                        last if last == steps - 1 => (connection_id(n), false),
                        middle => (
                            connection_id(((middle - 1) / 2 + 1) * 1_000_000 + n),
                            middle % 2 == 1,
                        ),
                    };
                    if connect {
                        writer.connect(&user, &connection).await
                    } else {
                        writer.disconnect(&user, &connection).await
                    }
                }
            })
            .buffer_unordered(WINDOW)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<()>>()?;
        calls += options.users;
    }
    println!(
        "event-memory: {calls} calls in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(SETTLE).await;
    let used_memory_after = used_memory(&mut redis).await?;
    let (mut log_bytes, mut events, mut logs) = (0u64, 0u64, 0u64);
    let mut pipe = redis::pipe();
    for bucket in 0..pulse_presence::BUCKETS {
        let key = format!("{}:{{b{bucket}}}:events", options.namespace);
        pipe.cmd("MEMORY")
            .arg("USAGE")
            .arg(&key)
            .arg("SAMPLES")
            .arg(0)
            .cmd("XLEN")
            .arg(&key);
    }
    let figures: Vec<Option<u64>> = pipe.query_async(&mut redis).await?;
    for pair in figures.chunks(2) {
        if let [Some(bytes), Some(len)] = pair
            && *len > 0
        {
            log_bytes += bytes;
            events += len;
            logs += 1;
        }
    }
    anyhow::ensure!(
        events > 0,
        "no event in {}:{{b*}}:events (is --redis-namespace the writer's?)",
        options.namespace
    );
    let sample_user = user_id(&options.user_prefix, options.users - 1);
    let sample_connection = connection_id(options.cycles * 1_000_000 + options.users - 1);
    let (floor_bytes, floor_used_memory) = floor(
        &mut redis,
        &options.floor_key,
        events,
        &sample_user,
        &sample_connection,
    )
    .await?;
    let result = EventMemoryResult {
        label: options.label,
        calls,
        events,
        logs,
        field_bytes: [
            sample_user.len() as u64,
            sample_connection.len() as u64,
            INSTANCE_ID.len() as u64,
        ],
        log_bytes,
        used_memory_before,
        used_memory_after,
        floor_bytes,
        floor_used_memory,
        floor_events: events,
    };
    println!(
        "event-memory [{}]: {} events in {} logs; MEMORY USAGE {:.1} B per event, INFO memory {:.1} B per event; floor (one bare stream) {:.1} B, {:.1} B",
        result.label,
        result.events,
        result.logs,
        result.usage_per_event(),
        result.info_per_event(),
        result.floor_per_event(),
        result.floor_info_per_event()
    );
    Ok(result)
}

/// `count` bare `XADD`s of the same field sizes into `key`: its
/// `MEMORY USAGE` and the `used_memory` delta. The key is deleted after.
async fn floor(
    redis: &mut MultiplexedConnection,
    key: &str,
    count: u64,
    user: &str,
    connection: &str,
) -> anyhow::Result<(u64, u64)> {
    let _: () = redis::cmd("DEL").arg(key).query_async(redis).await?;
    tokio::time::sleep(SETTLE).await;
    let before = used_memory(redis).await?;
    let at_ms = pulse_protocol::event::now_ms().to_string();
    let mut written = 0;
    while written < count {
        let mut pipe = redis::pipe();
        for _ in 0..PIPELINE.min((count - written) as usize) {
            // The kinds a log holds most: `c` and `d` (connected,
            // disconnected), alternating.
            let kind = if written % 2 == 0 { "c" } else { "d" };
            pipe.cmd("XADD")
                .arg(key)
                .arg("*")
                .arg("k")
                .arg(kind)
                .arg("u")
                .arg(user)
                .arg("c")
                .arg(connection)
                .arg("i")
                .arg(INSTANCE_ID)
                .arg("t")
                .arg(&at_ms)
                .arg("h")
                .arg("")
                .ignore();
            written += 1;
        }
        let _: () = pipe.query_async(redis).await?;
    }
    tokio::time::sleep(SETTLE).await;
    let after = used_memory(redis).await?;
    let usage: u64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(key)
        .arg("SAMPLES")
        .arg(0)
        .query_async(redis)
        .await?;
    let _: () = redis::cmd("DEL").arg(key).query_async(redis).await?;
    Ok((usage, after.saturating_sub(before)))
}

/// `used_memory` of `INFO memory`.
async fn used_memory(redis: &mut MultiplexedConnection) -> anyhow::Result<u64> {
    let info: String = redis::cmd("INFO").arg("memory").query_async(redis).await?;
    info.lines()
        .find_map(|line| line.trim().strip_prefix("used_memory:"))
        .and_then(|value| value.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("INFO memory without used_memory"))
}
