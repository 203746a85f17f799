//! `history-memory`: what Redis holds per publication kept in a channel's
//! history. `channels` channels of a namespace with history each get
//! `per_channel` publications of `data_bytes` bytes of data through the
//! gRPC API (the real path: `publish.lua`), plus `i % stagger` more for
//! channel `i`: more than the history keeps, so that every list has been
//! trimmed, as a live channel's is, and caught at every point of its
//! cycle (a list's last node fills and a new one starts, so one count
//! alone could flatter or wrong it). Then, for every channel,
//! `MEMORY USAGE <key> SAMPLES 0` (every node counted, not a sample) of
//! its history list and its `meta` hash, and `LLEN` of the list; and
//! `used_memory` of `INFO memory` before and after, which also counts what
//! no key's usage shows (the keyspace's and the expiry table's entries).
//! Redis's `list-max-listpack-size` (the node size) is read and kept with
//! the figures.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use redis::aio::MultiplexedConnection;
use tokio::{sync::Semaphore, task::JoinSet, time::Instant};

use super::{ChannelsApi, history_key, meta_key, padded_data, publish_answer};
use crate::{result::HistoryMemoryResult, stats::round3};

/// Publish calls in flight while the histories fill.
const PUBLISH_WINDOW: usize = 64;
/// Keys read per pipeline.
const KEYS_PER_PIPELINE: usize = 100;
/// A pause before each `INFO memory`, so that what the calls left in
/// client buffers is gone.
const SETTLE: Duration = Duration::from_millis(500);

/// What the `history-memory` scenario is asked to do.
pub struct MemoryOptions {
    /// Which configuration, for the result.
    pub label: String,
    /// Where the publications are made.
    pub api: ChannelsApi,
    /// The Redis `pulse-presence` writes to.
    pub redis: MultiplexedConnection,
    /// `pulse-presence`'s `--redis-namespace`.
    pub namespace: String,
    /// Channels are this prefix and a number.
    pub channel_prefix: String,
    /// Channels filled.
    pub channels: usize,
    /// Publications per channel, at least.
    pub per_channel: usize,
    /// Channel `i` gets `i % stagger` more (0 or 1: none).
    pub stagger: usize,
    /// The length of each publication's data, in bytes.
    pub data_bytes: usize,
}

/// Runs the scenario and returns its figures, printing progress lines.
pub async fn run(mut options: MemoryOptions) -> anyhow::Result<HistoryMemoryResult> {
    anyhow::ensure!(
        options.channels > 0 && options.per_channel > 0,
        "--channels and --per-channel must be at least 1"
    );
    let channels: Vec<String> = (0..options.channels)
        .map(|i| format!("{}{i}", options.channel_prefix))
        .collect();
    println!(
        "history-memory [{}]: {} channels × {} publications (plus up to {} more) of {} B",
        options.label,
        options.channels,
        options.per_channel,
        options.stagger.saturating_sub(1),
        options.data_bytes
    );
    let list_node = list_node(&mut options.redis).await;
    tokio::time::sleep(SETTLE).await;
    let used_memory_before = used_memory(&mut options.redis).await?;
    fill(&options, &channels).await?;
    tokio::time::sleep(SETTLE).await;
    let used_memory_after = used_memory(&mut options.redis).await?;
    let (mut hist_bytes, mut meta_bytes, mut stored) = (0u64, 0u64, 0u64);
    for chunk in channels.chunks(KEYS_PER_PIPELINE) {
        let mut pipe = redis::pipe();
        for channel in chunk {
            let (hist, meta) = (
                history_key(&options.namespace, channel),
                meta_key(&options.namespace, channel),
            );
            pipe.cmd("MEMORY")
                .arg("USAGE")
                .arg(&hist)
                .arg("SAMPLES")
                .arg(0)
                .cmd("MEMORY")
                .arg("USAGE")
                .arg(&meta)
                .arg("SAMPLES")
                .arg(0)
                .cmd("LLEN")
                .arg(&hist);
        }
        let figures: Vec<Option<u64>> = pipe.query_async(&mut options.redis).await?;
        for (channel, keys) in chunk.iter().zip(figures.chunks(3)) {
            let [Some(hist), Some(meta), Some(len)] = keys else {
                anyhow::bail!(
                    "{channel}: no history under {} (is --redis-namespace pulse-presence's, and does the namespace keep history?)",
                    history_key(&options.namespace, channel)
                );
            };
            hist_bytes += hist;
            meta_bytes += meta;
            stored += len;
        }
    }
    anyhow::ensure!(stored > 0, "the histories hold nothing");
    let per = |bytes: f64| round3(bytes / stored as f64);
    let result = HistoryMemoryResult {
        label: options.label,
        channels: options.channels as u64,
        per_channel: options.per_channel as u64,
        stagger: options.stagger as u64,
        data_bytes: options.data_bytes as u64,
        stored,
        list_node,
        hist_bytes,
        meta_bytes,
        used_memory_before,
        used_memory_after,
        usage_per_publication: per((hist_bytes + meta_bytes) as f64),
        info_per_publication: per(used_memory_after as f64 - used_memory_before as f64),
    };
    println!(
        "history-memory [{}]: {} stored; MEMORY USAGE {} B per publication, INFO memory {} B per publication, data {} B",
        result.label,
        result.stored,
        result.usage_per_publication,
        result.info_per_publication,
        result.data_bytes
    );
    Ok(result)
}

/// Publications per channel, round after round: `per_channel` to every
/// one, and `i % stagger` more to channel `i`.
async fn fill(options: &MemoryOptions, channels: &[String]) -> anyhow::Result<()> {
    let started = Instant::now();
    let window = Arc::new(Semaphore::new(PUBLISH_WINDOW));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    let mut seq = 0u64;
    let stagger = options.stagger.max(1);
    for round in 0..options.per_channel + stagger - 1 {
        for (i, channel) in channels.iter().enumerate() {
            if round >= options.per_channel + i % stagger {
                continue;
            }
            let permit = window.clone().acquire_owned().await?;
            let (api, errors, channel) = (options.api.clone(), errors.clone(), channel.clone());
            let data = padded_data(seq, 0, options.data_bytes);
            seq += 1;
            tasks.spawn(async move {
                let _permit = permit;
                let answer = publish_answer(&api, channel, data).await;
                if !matches!(answer, Ok(ref answer) if answer.offset > 0)
                    && errors.fetch_add(1, Ordering::Relaxed) == 0
                {
                    eprintln!(
                        "history-memory: a failed publish or one without an offset: {answer:?}"
                    );
                }
            });
            while tasks.try_join_next().is_some() {}
        }
    }
    while tasks.join_next().await.is_some() {}
    let errors = errors.load(Ordering::Relaxed);
    anyhow::ensure!(
        errors == 0,
        "{errors} of {seq} publications failed or carried no offset"
    );
    println!(
        "history-memory: {seq} publications made in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Redis's `list-max-listpack-size`, when it says (a managed Redis may
/// refuse `CONFIG`).
async fn list_node(redis: &mut MultiplexedConnection) -> Option<i64> {
    let reply: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("list-max-listpack-size")
        .query_async(redis)
        .await
        .ok()?;
    reply.get(1)?.parse().ok()
}

/// `used_memory` of `INFO memory`.
async fn used_memory(redis: &mut MultiplexedConnection) -> anyhow::Result<u64> {
    let info: String = redis::cmd("INFO").arg("memory").query_async(redis).await?;
    parse_used_memory(&info).ok_or_else(|| anyhow::anyhow!("INFO memory without used_memory"))
}

fn parse_used_memory(info: &str) -> Option<u64> {
    info.lines()
        .find_map(|line| line.trim().strip_prefix("used_memory:"))
        .and_then(|value| value.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn used_memory_is_read_from_info() {
        let info = "# Memory\r\nused_memory:1033496\r\nused_memory_human:1009.27K\r\nused_memory_rss:7110656\r\n";
        assert_eq!(parse_used_memory(info), Some(1_033_496));
        assert_eq!(parse_used_memory("# Memory\r\n"), None);
    }
}
