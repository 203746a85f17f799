//! The presence-event targets (issue 17), in a block of their own: each
//! figure beside its floor from the same run and a verdict; then the runs
//! behind them (webhooks, Watch resumes, Watch propagation on this build
//! and on the build before issue 17, Redis memory per event).

mod tables;

use super::{
    floor_table::{self, Row, ms},
    number,
};
use crate::result::{
    BenchResult, ConnectResult, EventMemoryResult, PresenceResult, WatchResumeResult,
    WebhooksResult,
};

/// The label of the `presence` runs of this build in the events run.
pub const EVENTS_PRESENCE: &str = "events-current";
/// The label of the `presence` runs of the build before issue 17.
pub const EVENTS_PRE17: &str = "events-pre17";
/// The label of the `connect` runs against `pulse-echo` in the events run
/// (the handshake floor beside the propagation).
pub(crate) const EVENTS_ECHO: &str = "events-echo";

/// Event to the webhook receiver p99, at most (ms).
const WEBHOOK_P99_MS: f64 = 50.0;
/// Event to a Watch consumer p99, at most (ms).
const WATCH_P99_MS: f64 = 5.0;
/// A resumed Watch's first event, at most (ms).
const RESUME_FIRST_MS: f64 = 100.0;
/// Redis memory per retained event, at most (bytes).
const BYTES_PER_EVENT: f64 = 150.0;

/// Whether a result belongs to this block.
pub fn is_events_result(result: &BenchResult) -> bool {
    match result {
        BenchResult::WatchResume(_) | BenchResult::EventMemory(_) | BenchResult::Webhooks(_) => {
            true
        }
        BenchResult::Presence(run) => run.label.starts_with("events-"),
        BenchResult::Connect(run) => run.label.starts_with("events-"),
        _ => false,
    }
}

fn webhooks(results: &[BenchResult]) -> Option<&WebhooksResult> {
    results.iter().rev().find_map(|result| match result {
        BenchResult::Webhooks(run) => Some(run),
        _ => None,
    })
}

fn resumes(results: &[BenchResult]) -> Option<&WatchResumeResult> {
    results.iter().rev().find_map(|result| match result {
        BenchResult::WatchResume(run) => Some(run),
        _ => None,
    })
}

fn memory(results: &[BenchResult]) -> Option<&EventMemoryResult> {
    results.iter().rev().find_map(|result| match result {
        BenchResult::EventMemory(run) => Some(run),
        _ => None,
    })
}

fn presence_runs<'a>(results: &'a [BenchResult], label: &str) -> Vec<&'a PresenceResult> {
    results
        .iter()
        .filter_map(|result| match result {
            BenchResult::Presence(run) if run.label == label => Some(run),
            _ => None,
        })
        .collect()
}

fn echo_runs(results: &[BenchResult]) -> Vec<&ConnectResult> {
    results
        .iter()
        .filter_map(|result| match result {
            BenchResult::Connect(run) if run.label == EVENTS_ECHO => Some(run),
            _ => None,
        })
        .collect()
}

/// The median of `values` (of an even count, the mean of the two middle ones).
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let upper = *values.get(values.len() / 2)?;
    let lower = values[(values.len() - 1) / 2];
    Some(f64::midpoint(lower, upper))
}

/// The presence runs' median p99 (connect start → Watch event).
fn median_propagation(runs: &[&PresenceResult]) -> Option<f64> {
    median(runs.iter().map(|run| run.latency.p99_ms).collect())
}

fn rows(results: &[BenchResult]) -> Vec<Row> {
    let mut rows = Vec::new();
    let hooks = webhooks(results);
    rows.push(Row {
        target: format!(
            "event (its change acknowledged) → webhook receiver p99 at {} events/s: ≤ {} ms",
            number(hooks.map_or(1000.0, |r| r.rate_target)),
            number(WEBHOOK_P99_MS)
        ),
        measured: hooks.map(|r| r.latency.p99_ms),
        floor: hooks.map(|r| r.watch.p99_ms),
        floor_cell: format!(
            "{} the same events on a `Watch` stream",
            ms(hooks.map(|r| r.watch.p99_ms))
        ),
        unit: " ms",
        limit: WEBHOOK_P99_MS,
        broken: hooks
            .filter(|r| {
                r.received < r.expected
                    || r.bad_signatures > 0
                    || r.out_of_order_users > 0
                    || r.call_errors > 0
            })
            .map(|r| {
                format!(
                    "{} of {} received, {} bad signatures, {} users out of order, {} failed calls",
                    r.received, r.expected, r.bad_signatures, r.out_of_order_users, r.call_errors
                )
            }),
    });
    let current = presence_runs(results, EVENTS_PRESENCE);
    let pre17 = presence_runs(results, EVENTS_PRE17);
    let echo = median(
        echo_runs(results)
            .iter()
            .map(|run| run.handshake.p99_ms)
            .collect(),
    );
    let gateway_handshake = median(current.iter().map(|run| run.handshake.p99_ms).collect());
    rows.push(Row {
        target: format!(
            "event → a `Watch` consumer p99 (TCP connect start of a new user's socket → its `connected` on `Watch`, {}/s; median of {} runs): ≤ {} ms",
            number(current.first().map_or(200.0, |r| r.rate_target)),
            current.len(),
            number(WATCH_P99_MS)
        ),
        measured: median_propagation(&current),
        floor: echo,
        floor_cell: format!(
            "{} `pulse-echo`'s handshake; {} the gateway's own handshake; {} the build before issue 17",
            ms(echo),
            ms(gateway_handshake),
            ms(median_propagation(&pre17))
        ),
        unit: " ms",
        limit: WATCH_P99_MS,
        broken: None,
    });
    rows.push(Row {
        target: format!(
            "the same, from the client's `connected` message → the `Watch` event: ≤ {} ms",
            number(WATCH_P99_MS)
        ),
        measured: median(
            current
                .iter()
                .map(|run| run.after_connected_message.p99_ms)
                .collect(),
        ),
        floor: None,
        floor_cell: format!(
            "{} the build before issue 17",
            ms(median(
                pre17
                    .iter()
                    .map(|run| run.after_connected_message.p99_ms)
                    .collect()
            ))
        ),
        unit: " ms",
        limit: WATCH_P99_MS,
        broken: None,
    });
    rows.push(Row {
        target: format!(
            "event (registration acknowledged) → a `Watch` consumer p99 at {} events/s: ≤ {} ms",
            number(hooks.map_or(1000.0, |r| r.rate_target)),
            number(WATCH_P99_MS)
        ),
        measured: hooks.map(|r| r.watch.p99_ms),
        floor: None,
        floor_cell: "n/a".to_owned(),
        unit: " ms",
        limit: WATCH_P99_MS,
        broken: hooks
            .filter(|r| r.watch_received < r.expected)
            .map(|r| format!("{} of {} on the stream", r.watch_received, r.expected)),
    });
    if let Some(run) = resumes(results) {
        for resume in &run.resumes {
            rows.push(Row {
                target: format!(
                    "a `Watch` that reconnects with `since` after {} missed events: reconnect start → first event p99 ≤ {} ms",
                    resume.missed,
                    number(RESUME_FIRST_MS)
                ),
                measured: Some(resume.first.p99_ms),
                floor: Some(run.fresh_first.p99_ms),
                floor_cell: format!(
                    "{} a fresh `Watch` to its first live event; {} a unary call (`GetUser`), each on a new channel",
                    ms(Some(run.fresh_first.p99_ms)),
                    ms(Some(run.unary.p99_ms))
                ),
                unit: " ms",
                limit: RESUME_FIRST_MS,
                broken: (resume.exact < resume.first.count || resume.first.count < run.samples)
                    .then(|| {
                        format!(
                            "{} of {} resumes delivered exactly the missed events",
                            resume.exact, run.samples
                        )
                    }),
            });
        }
    } else {
        rows.push(Row {
            target: format!(
                "a `Watch` that reconnects with `since`: first event p99 ≤ {} ms",
                number(RESUME_FIRST_MS)
            ),
            measured: None,
            floor: None,
            floor_cell: "not run".to_owned(),
            unit: " ms",
            limit: RESUME_FIRST_MS,
            broken: None,
        });
    }
    let mem = memory(results);
    rows.push(Row {
        target: format!(
            "Redis memory per retained event (the larger of `MEMORY USAGE` and `INFO memory`): ≤ {} B",
            number(BYTES_PER_EVENT)
        ),
        measured: mem.map(|r| r.usage_per_event().max(r.info_per_event())),
        floor: mem.map(EventMemoryResult::floor_per_event),
        floor_cell: mem.map_or("not run".to_owned(), |r| {
            format!(
                "{} B the same entries in one bare stream (`XADD *`)",
                number(r.floor_per_event())
            )
        }),
        unit: " B",
        limit: BYTES_PER_EVENT,
        broken: None,
    });
    rows
}

/// Renders the block's tables, when the results have any of them.
pub(super) fn render(out: &mut String, results: &[BenchResult]) {
    if !floor_table::render(
        out,
        "Targets (issue 17: presence events and webhooks)",
        "measured",
        &rows(results),
        true,
    ) {
        return;
    }
    tables::webhooks(out, results);
    tables::resumes(out, results);
    tables::propagation(out, results);
    tables::memory(out, results);
}

#[cfg(test)]
#[path = "events_tests.rs"]
mod tests;
