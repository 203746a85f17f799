//! The gateway's metrics. Handles for the per-message counters are looked up
//! once, so the hot path increments an atomic and nothing more; the rarer
//! events go through the `metrics` macros with their labels.
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `pulse_gateway_connections` | gauge | open authenticated connections |
//! | `pulse_gateway_connects_total` | counter | authenticated connections opened |
//! | `pulse_gateway_disconnects_total` | counter | `phase` (auth, live), `reason`, `close_code` |
//! | `pulse_gateway_auth_seconds` | histogram | token validation latency |
//! | `pulse_gateway_auth_failures_total` | counter | `reason` |
//! | `pulse_gateway_messages_in_total` | counter | client messages read |
//! | `pulse_gateway_messages_out_total` | counter | server messages written |
//! | `pulse_gateway_queue_overflows_total` | counter | pushes that found a full outbound queue |
//! | `pulse_gateway_publications_delivered_total` | counter | channel publications queued for a local subscriber |
//! | `pulse_gateway_stream_holes_total` | counter | holes found in a channel's live stream (its subscribers told to recover) |
//! | `pulse_gateway_hook_failures_total` | counter | `reason` (timeout, status): hook calls that refused for want of an answer |
//! | `pulse_gateway_limit_rejections_total` | counter | `limit` |
//! | `pulse_gateway_proxy_header_errors_total` | counter | `reason` (missing, malformed, timeout, closed) |
//! | `pulse_gateway_resync_seconds` | histogram | `reason` (periodic, repair), `outcome` (ok, failed): each re-sync, from queueing for its lock to letting it go |
//!
//! Presence (Redis) latency, errors and events are `pulse_presence_*`, recorded
//! by the presence library.

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};
use pulse_protocol::CloseCode;

/// Counters on the per-message path.
#[derive(Clone)]
pub(crate) struct Metrics {
    pub(crate) connections: Gauge,
    pub(crate) connects: Counter,
    pub(crate) messages_in: Counter,
    pub(crate) messages_out: Counter,
    pub(crate) queue_overflows: Counter,
    pub(crate) publications_delivered: Counter,
    pub(crate) stream_holes: Counter,
    pub(crate) auth_seconds: Histogram,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        Self {
            connections: gauge!("pulse_gateway_connections"),
            connects: counter!("pulse_gateway_connects_total"),
            messages_in: counter!("pulse_gateway_messages_in_total"),
            messages_out: counter!("pulse_gateway_messages_out_total"),
            queue_overflows: counter!("pulse_gateway_queue_overflows_total"),
            publications_delivered: counter!("pulse_gateway_publications_delivered_total"),
            stream_holes: counter!("pulse_gateway_stream_holes_total"),
            auth_seconds: histogram!("pulse_gateway_auth_seconds"),
        }
    }
}

/// Counts a session's end.
pub(crate) fn disconnect(phase: &'static str, reason: &str, close_code: Option<CloseCode>) {
    let close_code = close_code.map_or_else(|| "none".to_owned(), |code| code.code().to_string());
    counter!(
        "pulse_gateway_disconnects_total",
        "phase" => phase,
        "reason" => reason.to_owned(),
        "close_code" => close_code
    )
    .increment(1);
}

/// Times one re-sync of presence with this instance's connections: from
/// queueing for the re-sync lock to letting it go, the longest that a join,
/// a leave or an admission waited for it. `periodic`: every
/// `--resync-interval`; `repair`: at start, after an outage or a lost lease.
pub(crate) fn resync(reason: &'static str, ok: bool, took: std::time::Duration) {
    histogram!(
        "pulse_gateway_resync_seconds",
        "reason" => reason,
        "outcome" => if ok { "ok" } else { "failed" }
    )
    .record(took.as_secs_f64());
}

/// Counts a limit that turned something away.
pub(crate) fn limit_rejection(limit: &'static str) {
    counter!("pulse_gateway_limit_rejections_total", "limit" => limit).increment(1);
}
