//! The figures of the history scenarios (issue 13): `publish` (the API
//! call with and without history, and Redis alone), `recover` (a
//! `subscribe` with `since` that replays the missed publications, beside a
//! plain one) and `history-memory` (Redis memory per stored publication).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::stats::Percentiles;

/// The `publish` scenario: publish calls at a fixed rate, each timed to its
/// answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishResult {
    /// Which configuration (`pulse-history`, `pulse`, `redis`).
    pub label: String,
    /// What was called: `grpc` (`Channels/Publish` on `pulse-presence`) or
    /// `redis` (`RPUSH`, `LTRIM` and `SPUBLISH`, pipelined: one round
    /// trip to Redis, the floor under any publication with history).
    pub path: String,
    /// Channels published to, round robin.
    pub channels: u64,
    /// The length of each publication's data (JSON text), in bytes.
    pub data_bytes: u64,
    /// Calls per second asked for.
    pub rate_target: f64,
    /// Calls per second made.
    pub rate_achieved: f64,
    /// Calls made.
    pub calls: u64,
    /// Calls that failed.
    pub errors: u64,
    /// Answers that carried an offset (a namespace with history answers
    /// every call with one; without history, none).
    pub with_offset: u64,
    /// A call's start to its answer.
    pub call: Percentiles,
    /// CPU of the processes watched (`pulse-presence`, Redis) per call, in
    /// microseconds, by name.
    pub cpu_us_per_call: BTreeMap<String, f64>,
    /// The load generator's own CPU per call, in microseconds.
    pub client_cpu_us_per_call: f64,
    /// CPU of processes outside the benchmark over the window, in percent
    /// of one core.
    pub foreign_cpu_percent: f64,
}

/// The `recover` scenario: reconnections to another gateway that send
/// `subscribe` with `since` and get the missed publications in the
/// `subscribed` answer, interleaved with plain subscribes (no `since`) to
/// channels in the same state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecoverResult {
    /// Which configuration.
    pub label: String,
    /// The channels' namespace.
    pub namespace: String,
    /// Publications made while the client was away, per channel.
    pub missed: u64,
    /// The length of each publication's data, in bytes.
    pub data_bytes: u64,
    /// Subscribes per second asked for, both kinds together.
    pub rate_target: f64,
    /// Subscribes with `since` sent (each on a connection of its own, to a
    /// channel of its own); as many plain ones were sent.
    pub samples: u64,
    /// `subscribe` with `since` written to its `subscribed` read, for those
    /// that recovered every missed publication.
    pub since: Percentiles,
    /// A plain `subscribe` written to its `subscribed` read.
    pub plain: Percentiles,
    /// Answers with `recovered: true` and every missed publication, in order.
    pub recovered: u64,
    /// Answers that did not recover, or recovered something else than the
    /// publications missed.
    pub not_recovered: u64,
    /// Failures by reason (connections, refusals, timeouts, wrong answers).
    pub failures: BTreeMap<String, u64>,
    /// The mean size of a recovering `subscribed` answer, in bytes.
    pub answer_bytes: f64,
    /// The gateway's CPU per subscribe (both kinds), in microseconds.
    pub server_cpu_us_per_subscribe: Option<f64>,
    /// CPU of the other processes watched, per subscribe, in microseconds.
    pub other_cpu_us_per_subscribe: BTreeMap<String, f64>,
    /// CPU of processes outside the benchmark over the window, in percent
    /// of one core.
    pub foreign_cpu_percent: f64,
}

/// The `history-memory` scenario: Redis memory per publication kept in
/// channels' histories.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryMemoryResult {
    /// Which configuration.
    pub label: String,
    /// Channels filled.
    pub channels: u64,
    /// Publications made per channel, at least (more than the history
    /// keeps: the stream is trimmed, as a live channel's is).
    pub per_channel: u64,
    /// Channel `i` got `i % stagger` more, so that the streams were caught
    /// at every point of their trimming cycle.
    #[serde(default)]
    pub stagger: u64,
    /// The length of each publication's data, in bytes.
    pub data_bytes: u64,
    /// Publications kept (the history lists' `LLEN`, summed).
    pub stored: u64,
    /// Redis's `list-max-listpack-size` during the run (how large a list's
    /// node grows: -1 to -5 for 4 to 64 KiB); `None` when Redis would not
    /// say, or for a run before histories were lists.
    #[serde(default)]
    pub list_node: Option<i64>,
    /// `MEMORY USAGE <key> SAMPLES 0` of the history lists, summed.
    pub hist_bytes: u64,
    /// The same of the channels' `meta` hashes (epoch, last offset).
    pub meta_bytes: u64,
    /// `used_memory` of `INFO memory` before the publications.
    pub used_memory_before: u64,
    /// `used_memory` after them.
    pub used_memory_after: u64,
    /// `MEMORY USAGE` of both keys per stored publication, in bytes.
    pub usage_per_publication: f64,
    /// The `used_memory` delta per stored publication, in bytes.
    pub info_per_publication: f64,
}

impl HistoryMemoryResult {
    /// The list node size the run had, as `list-max-listpack-size` means
    /// it: at most so many KiB (-1 to -5) or entries (positive).
    pub fn list_node_text(&self) -> Option<String> {
        self.list_node.map(|setting| match setting {
            -5..=-1 => format!("{} KiB", 4 << (-setting - 1)),
            entries => format!("{entries} entries"),
        })
    }

    /// What a stored publication costs beyond its data, the larger of the
    /// two readings, in bytes.
    pub fn overhead(&self) -> f64 {
        self.usage_per_publication.max(self.info_per_publication) - self.data_bytes as f64
    }
}
