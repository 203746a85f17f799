//! The figures of the presence-event scenarios (issue 17): `watch-resume`
//! (a `Watch` that reconnects with `since`, beside a unary call and a fresh
//! `Watch` on a fresh channel), `event-memory` (Redis memory per retained
//! event, beside bare `XADD`s) and `webhooks` (event to the receiver, beside
//! the same events on a `Watch` stream).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::stats::Percentiles;

/// `watch-resume`: reconnections of a `Watch` consumer that missed events,
/// interleaved with its floors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchResumeResult {
    /// Which build and configuration.
    pub label: String,
    /// Samples of each kind asked for.
    pub samples: u64,
    /// One entry per number of missed events, in the order asked.
    pub resumes: Vec<ResumeFigures>,
    /// A new gRPC channel + `GetUser` to its answer: the floor.
    pub unary: Percentiles,
    /// A new gRPC channel + `Watch` (no `since`) to its response headers.
    pub fresh_open: Percentiles,
    /// A new gRPC channel + `Watch` (no `since`) to its first live event,
    /// made (one registration) as soon as the headers came back.
    pub fresh_first: Percentiles,
    /// Samples that failed, by reason.
    pub failures: BTreeMap<String, u64>,
    /// CPU of processes outside the benchmark over the run, in percent of
    /// one core.
    pub foreign_cpu_percent: f64,
}

/// The resumes after `missed` events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResumeFigures {
    /// Events made while the consumer was away.
    pub missed: u64,
    /// Reconnect start (new gRPC channel + `Watch` with `since`) to its
    /// response headers.
    pub open: Percentiles,
    /// Reconnect start to the first event received.
    pub first: Percentiles,
    /// Reconnect start to the last missed event received.
    pub last: Percentiles,
    /// Resumes that delivered exactly the missed events (each once, none
    /// else first).
    pub exact: u64,
}

/// `event-memory`: what Redis holds per event kept in the logs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventMemoryResult {
    /// Which build.
    pub label: String,
    /// Registrations and unregistrations made (each one call).
    pub calls: u64,
    /// Events in the logs (`XLEN` of every bucket's log, summed).
    pub events: u64,
    /// Logs (buckets) that hold them.
    pub logs: u64,
    /// The lengths of the fields written: user id, connection id, instance
    /// id, in bytes.
    pub field_bytes: [u64; 3],
    /// `MEMORY USAGE <log> SAMPLES 0`, summed over the logs.
    pub log_bytes: u64,
    /// `used_memory` before the events and after them.
    pub used_memory_before: u64,
    /// See `used_memory_before`.
    pub used_memory_after: u64,
    /// The floor: as many `XADD <key> * k .. u .. c .. i .. t .. h ..` of the
    /// same values into one bare stream: its `MEMORY USAGE`.
    pub floor_bytes: u64,
    /// The floor's `used_memory` delta.
    pub floor_used_memory: u64,
    /// Entries of the floor's stream.
    pub floor_events: u64,
}

impl EventMemoryResult {
    /// `MEMORY USAGE` of the logs per event.
    pub fn usage_per_event(&self) -> f64 {
        per(self.log_bytes as f64, self.events)
    }

    /// The `used_memory` delta per event (with whatever else the calls
    /// left: the users' `last seen` entries).
    pub fn info_per_event(&self) -> f64 {
        per(
            self.used_memory_after as f64 - self.used_memory_before as f64,
            self.events,
        )
    }

    /// The floor's `MEMORY USAGE` per entry.
    pub fn floor_per_event(&self) -> f64 {
        per(self.floor_bytes as f64, self.floor_events)
    }

    /// The floor's `used_memory` delta per entry.
    pub fn floor_info_per_event(&self) -> f64 {
        per(self.floor_used_memory as f64, self.floor_events)
    }
}

fn per(bytes: f64, count: u64) -> f64 {
    if count == 0 {
        f64::NAN
    } else {
        bytes / count as f64
    }
}

/// `webhooks`: events made at a fixed rate, timed to their arrival at a
/// webhook receiver and, the floor, on a `Watch` stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhooksResult {
    /// Which build and configuration.
    pub label: String,
    /// Events per second asked for.
    pub rate_target: f64,
    /// Events per second made: the events over the schedule's window (the
    /// users' starts; each user's last two events come `hold` later).
    pub rate_achieved: f64,
    /// The schedule's window, in seconds.
    pub duration_s: f64,
    /// Events the calls made (acknowledged).
    pub expected: u64,
    /// Of them, received by the webhook receiver (each counted once).
    pub received: u64,
    /// Events received again (same id).
    pub repeats: u64,
    /// POSTs whose signature did not verify (answered 401; their events
    /// not counted).
    pub bad_signatures: u64,
    /// POSTs received.
    pub posts: u64,
    /// Users whose events came to the receiver in another order than made.
    pub out_of_order_users: u64,
    /// The change acknowledged (the call's answer) to the event's arrival at
    /// the receiver (its POST's body read).
    pub latency: Percentiles,
    /// The call's start to the same arrival.
    pub latency_from_call: Percentiles,
    /// The floor: acknowledgement to the same event on a `Watch` stream.
    pub watch: Percentiles,
    /// Events the `Watch` stream delivered, of those expected.
    pub watch_received: u64,
    /// Calls that failed.
    pub call_errors: u64,
    /// CPU of the watched processes per event, in microseconds, by name.
    pub cpu_us_per_event: BTreeMap<String, f64>,
    /// CPU of processes outside the benchmark over the window, in percent
    /// of one core.
    pub foreign_cpu_percent: f64,
}
